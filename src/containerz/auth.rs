//! Who may call what (containerz R-AUTH, R-SCOPE). TLS with a client certificate signed by the
//! configured client CA is enforced by the transport (no certificate, no handshake); this module
//! turns the verified certificate into an identity — its subject CN and every DNS SAN — and
//! looks the identity's scopes up in the authz file:
//!
//! ```toml
//! [scopes]
//! "ops-robot" = ["read", "write"]
//! "dashboard" = ["read"]
//! ```
//!
//! A certificate whose names match several entries gets the union of their scopes. `write` does
//! not imply `read`: an entry lists every scope it grants.
//!
//! Every call also runs the client-certificate check of the current TLS settings again (the
//! chain, the validity dates and the CRLs), so after a SIGHUP that revoked a certificate, a
//! connection it opened before is refused at its next call, while the calls already running
//! (followed logs) go on.

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, RwLock};
use tonic::{Request, Status};

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Listings and logs: ListImage, ListContainer, Log, ListVolume, ListPlugins.
    Read,
    /// Everything that changes the device.
    Write,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::Read => "read",
            Scope::Write => "write",
        })
    }
}

/// The authz file's shape.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthzFile {
    scopes: BTreeMap<String, BTreeSet<Scope>>,
}

/// Identities and the scopes they hold, and the certificate check calls pass again. Clones share
/// one state, which [`Authz::replace`] swaps as a whole (on SIGHUP).
#[derive(Debug, Clone, Default)]
pub struct Authz {
    state: Arc<RwLock<State>>,
}

#[derive(Debug, Default)]
struct State {
    scopes: BTreeMap<String, BTreeSet<Scope>>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
}

impl Authz {
    /// Reads and checks an authz file; the error names the file and what is wrong.
    pub fn load(path: &Path) -> Result<Authz, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read the authz file (--authz or [serve] authz) {}: {e}",
                path.display()
            )
        })?;
        Authz::parse(&text).map_err(|e| {
            format!(
                "the authz file (--authz or [serve] authz) {}: {e}",
                path.display()
            )
        })
    }

    /// Parses authz TOML (see the module docs).
    pub fn parse(text: &str) -> Result<Authz, String> {
        let file: AuthzFile = toml::from_str(text).map_err(|e| e.message().to_string())?;
        Ok(Authz {
            state: Arc::new(RwLock::new(State {
                scopes: file.scopes,
                verifier: None,
            })),
        })
    }

    /// Makes every call check the client's certificate chain with `verifier` too (the one the
    /// TLS settings use).
    pub fn with_verifier(self, verifier: Arc<dyn ClientCertVerifier>) -> Authz {
        self.state.write().expect("never poisoned").verifier = Some(verifier);
        self
    }

    /// Takes `other`'s scopes and verifier, for every clone of `self` at once.
    pub fn replace(&self, other: Authz) {
        let new = std::mem::take(&mut *other.state.write().expect("never poisoned"));
        *self.state.write().expect("never poisoned") = new;
    }

    /// The scopes of a certificate holding these names.
    fn scopes_of<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> (Option<String>, BTreeSet<Scope>) {
        let state = self.state.read().expect("never poisoned");
        let mut first = None;
        let mut granted = BTreeSet::new();
        for name in names {
            if let Some(s) = state.scopes.get(name) {
                first.get_or_insert_with(|| name.to_string());
                granted.extend(s.iter().copied());
            }
        }
        (first, granted)
    }

    /// Checks that the caller of `rpc` holds `needed`; returns the identity it was granted under
    /// (for the audit log) or PERMISSION_DENIED naming what is missing.
    pub fn authorize<T>(&self, request: &Request<T>, needed: Scope, rpc: &str) -> Result<String, Status> {
        let chain = request.peer_certs();
        if let Some(chain) = &chain {
            self.still_valid(chain, rpc)?;
        }
        let names = chain
            .and_then(|certs| certs.first().map(|c| certificate_names(c.as_ref())))
            .unwrap_or_default();
        if names.is_empty() {
            return Err(Status::permission_denied(format!(
                "{rpc}: the client certificate names no identity (subject CN or DNS SAN)"
            )));
        }
        let (identity, granted) = self.scopes_of(names.iter().map(String::as_str));
        match identity {
            None => Err(Status::permission_denied(format!(
                "{rpc}: client identity {} is not in the authz file",
                names.join(", ")
            ))),
            Some(id) if !granted.contains(&needed) => Err(Status::permission_denied(format!(
                "{rpc}: client {id} lacks the {needed} scope"
            ))),
            Some(id) => {
                if needed == Scope::Write {
                    tracing::info!(client = %id, rpc, "containerz write call");
                }
                Ok(id)
            }
        }
    }
}

impl Authz {
    /// UNAUTHENTICATED unless the client's chain (end entity first, as the handshake received
    /// it) passes the current certificate check.
    fn still_valid(&self, chain: &[CertificateDer<'static>], rpc: &str) -> Result<(), Status> {
        let verifier = self.state.read().expect("never poisoned").verifier.clone();
        let (Some(verifier), Some((leaf, intermediates))) = (verifier, chain.split_first()) else {
            return Ok(());
        };
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map(|_| ())
            .map_err(|e| {
                Status::unauthenticated(format!(
                    "{rpc}: the client certificate is no longer accepted: {e}"
                ))
            })
    }
}

/// The subject CN(s) and DNS SANs of a DER certificate, CN first; empty if it does not parse.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_string());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_unioned_over_matching_names_and_strict() {
        let a = Authz::parse(
            "[scopes]\n\"ops\" = [\"read\", \"write\"]\n\"dash\" = [\"read\"]\n\"w\" = [\"write\"]\n",
        )
        .unwrap();
        assert_eq!(a.scopes_of(["dash"]).1, BTreeSet::from([Scope::Read]));
        assert_eq!(
            a.scopes_of(["x", "dash", "w"]).1,
            BTreeSet::from([Scope::Read, Scope::Write])
        );
        assert_eq!(a.scopes_of(["x", "dash", "w"]).0.as_deref(), Some("dash"));
        assert_eq!(a.scopes_of(["nobody"]).0, None);
        assert!(Authz::parse("[scopes]\n\"a\" = [\"admin\"]\n").is_err());
        assert!(Authz::parse("[scope]\n").is_err());
    }
}
