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

/// The subject (DER) of a certificate, to match CRL issuers against.
fn subject(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.subject().as_raw().to_vec())
}

/// Reads the CRLs and checks that every client CA has one: with CRLs configured, a certificate
/// whose issuer has none would be refused, which is better said at load than at each handshake.
fn crls(
    path: &Path,
    cas: &[CertificateDer<'static>],
) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let pem = read(path, "client CRL file")?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the client CRL file {}: {e}", path.display()))?;
    if crls.is_empty() {
        return Err(format!(
            "the client CRL file {} holds no PEM CRL (BEGIN X509 CRL)",
            path.display()
        ));
    }
    let mut issuers = Vec::new();
    for (i, crl) in crls.iter().enumerate() {
        let (_, parsed) = x509_parser::parse_x509_crl(crl.as_ref())
            .map_err(|e| format!("CRL {} in {}: {e}", i + 1, path.display()))?;
        issuers.push(parsed.issuer().as_raw().to_vec());
    }
    for ca in cas {
        let Some(name) = subject(ca) else { continue };
        if !issuers.contains(&name) {
            let shown = x509_parser::parse_x509_certificate(ca.as_ref())
                .map(|(_, c)| c.subject().to_string())
                .unwrap_or_default();
            return Err(format!(
                "the client CRL file {} has no CRL issued by the client CA {shown:?}; every CA in \
                 the client CA file needs one (an empty CRL will do), or its clients are refused",
                path.display()
            ));
        }
    }
    Ok(crls)
}

impl TlsFiles {
    /// Reads every file and builds the settings; the error names the file and what is wrong.
    pub fn load(&self) -> Result<Tls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = certificates(&self.cert, "TLS certificate")?;
        let key_pem = read(&self.key, "TLS key")?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| format!("the TLS key {}: {e}", self.key.display()))?;
        let cas = certificates(&self.client_ca, "client CA")?;
        let mut roots = RootCertStore::empty();
        for ca in &cas {
            roots
                .add(ca.clone())
                .map_err(|e| format!("the client CA {}: {e}", self.client_ca.display()))?;
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
