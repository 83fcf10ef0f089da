//! The server's TLS settings, built from PEM files: its certificate chain and key, the CA that
//! signs client certificates, and (optionally) that CA's certificate revocation lists. `tpcm
//! serve` builds them at start and again on SIGHUP, so an operator rotates certificates, keys
//! and CRLs without a restart; connections already open keep the session they made.
//!
//! Revocation is checked by rustls' webpki verifier: a client certificate listed in a CRL of
//! its issuer fails the handshake, and so does one whose issuer has no CRL in the file (fail
//! closed: a CA left out of the file cannot be checked). The CRLs' nextUpdate is not enforced: a
//! stale list still revokes what it lists, and a switch that missed an update keeps serving.

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// ALPN protocol of gRPC.
const ALPN_H2: &[u8] = b"h2";

/// Where the server's TLS material is.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// The CA(s) that sign client certificates (PEM).
    pub client_ca: PathBuf,
    /// CRLs of the client CA(s) (PEM), if revocation is checked.
    pub client_crl: Option<PathBuf>,
}

/// TLS settings built from [`TlsFiles`].
pub struct Tls {
    /// What the acceptor hands to each new connection.
    pub config: Arc<rustls::ServerConfig>,
    /// The client-certificate check inside `config`; the authorizer runs it again on every call,
    /// so a certificate revoked (or expired) after its connection was made is refused too.
    pub verifier: Arc<dyn ClientCertVerifier>,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the {what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("the {what} {} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// Reads the CRLs and checks them against the client CAs: each must be issued and signed by
/// one, and each CA must have one (with CRLs configured, a certificate whose issuer has none is
/// refused, which is better said at load than at every handshake).
fn crls(
    path: &Path,
    cas: &[CertificateDer<'static>],
) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let pem = read(path, "client CRL file (--client-crl or [serve] client_crl)")?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "the client CRL file (--client-crl or [serve] client_crl) {}: {e}",
                path.display()
            )
        })?;
    if crls.is_empty() {
        return Err(format!(
            "the client CRL file (--client-crl or [serve] client_crl) {} holds no PEM CRL (BEGIN X509 CRL)",
            path.display()
        ));
    }
    let parsed_cas = cas
        .iter()
        .map(|c| x509_parser::parse_x509_certificate(c.as_ref()).map(|(_, c)| c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("a client CA certificate: {e}"))?;
    let mut covered = vec![false; cas.len()];
    for (i, crl) in crls.iter().enumerate() {
        let (_, parsed) = x509_parser::parse_x509_crl(crl.as_ref())
            .map_err(|e| format!("CRL {} in {}: {e}", i + 1, path.display()))?;
        let signer = parsed_cas.iter().position(|ca| {
            ca.subject().as_raw() == parsed.issuer().as_raw()
                && parsed.verify_signature(ca.public_key()).is_ok()
        });
        match signer {
            Some(k) => covered[k] = true,
            None => {
                return Err(format!(
                    "CRL {} in {} (issuer {:?}) is not signed by a client CA",
                    i + 1,
                    path.display(),
                    parsed.issuer().to_string()
                ));
            }
        }
    }
    if let Some(k) = covered.iter().position(|c| !c) {
        return Err(format!(
            "the client CRL file (--client-crl or [serve] client_crl) {} has no CRL issued by the client CA {:?}; every CA in the \
             client CA file needs one (an empty CRL will do), or its clients are refused",
            path.display(),
            parsed_cas[k].subject().to_string()
        ));
    }
    Ok(crls)
}

impl TlsFiles {
    /// Reads every file and builds the settings; the error names the file and what is wrong.
    pub fn load(&self) -> Result<Tls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = certificates(&self.cert, "TLS certificate (--tls-cert or [serve] tls_cert)")?;
        let key_pem = read(&self.key, "TLS key (--tls-key or [serve] tls_key)")?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            format!(
                "the TLS key (--tls-key or [serve] tls_key) {}: {e}",
                self.key.display()
            )
        })?;
        let cas = certificates(&self.client_ca, "client CA (--client-ca or [serve] client_ca)")?;
        let mut roots = RootCertStore::empty();
        for ca in &cas {
            roots.add(ca.clone()).map_err(|e| {
                format!(
                    "the client CA (--client-ca or [serve] client_ca) {}: {e}",
                    self.client_ca.display()
                )
            })?;
        }
        let crls = match &self.client_crl {
            Some(path) => crls(path, &cas)?,
            None => Vec::new(),
        };
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .with_crls(crls)
            .build()
            .map_err(|e| format!("client certificate checks: {e}"))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(chain, key)
            .map_err(|e| {
                format!(
                    "the TLS certificate {} and key {}: {e}",
                    self.cert.display(),
                    self.key.display()
                )
            })?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Tls {
            config: Arc::new(config),
            verifier,
        })
    }
}
