//! Image registries (the OCI distribution API), through oci-client.
//!
//! A pull fetches the documents here (the manifest the reference names; for a multi-arch index,
//! the host's platform manifest, picked exactly as for an archive; the config) and hands the
//! importer one opener per layer. The importer opens several layers at once and streams each
//! straight into containerd and its snapshot, so downloads, hashing and unpacking overlap; no
//! layer is written to a temporary file. oci-client verifies each layer's digest at the end of its
//! stream and the importer verifies it again, with the size and the diff ID.
//!
//! Transport: HTTPS with the system's CA store. A registry on loopback, or one listed in
//! `insecure_registries` in the TPCM config file, is retried over plain HTTP when HTTPS cannot
//! connect, as docker does. Credentials come from the command line or, failing that, from the
//! docker config (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`); basic and bearer-token
//! authentication are both handled by oci-client.
//!
//! A pull that must leave from a source VRF or address goes through a [`Relay`]: oci-client cannot
//! bind its own sockets, but takes a proxy.

use super::relay::Relay;
use super::{Egress, Error, Timeouts};
use crate::archive::resolve::pick_platform;
use crate::archive::scan::MAX_METADATA_FILE;
use crate::runtime::{ByteCounter, PulledDocument, PulledImage, PulledLayer};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{ImageIndex, ImageManifest};
use std::net::IpAddr;
use tokio::runtime::Handle;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// What to pull and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct RegistryRequest {
    /// The image reference as the user wrote it (`host:5000/app:1.0`, `app@sha256:…`).
    pub reference: String,
    /// User name and password; `None` looks in the docker config, then goes anonymous.
    pub credentials: Option<(String, String)>,
    /// Registries that may be reached over plain HTTP (besides loopback ones).
    pub insecure_registries: Vec<String>,
    /// Connection and read timeouts (the read timeout applies to each read, not to the pull).
    pub timeouts: Timeouts,
    /// Where the pull's connections leave from.
    pub egress: Egress,
}

/// Parses an image reference; a missing tag means `latest`.
pub fn parse_reference(reference: &str) -> Result<Reference, Error> {
    reference.parse::<Reference>().map_err(|e| Error::Registry {
        reference: reference.to_string(),
        reason: format!("not an image reference: {e}"),
    })
}

/// Whether a location reads as an image reference (and is therefore pulled from a registry).
pub fn is_image_reference(location: &str) -> bool {
    !location.contains("://") && parse_reference(location).is_ok()
}

/// A pulled image ready for the importer, and the bytes its layers hold (for progress).
pub struct Pull {
    /// The image, with one opener per layer.
    pub image: PulledImage,
    /// Sum of the layer sizes.
    pub layer_bytes: u64,
}

/// Fetches the documents of `request.reference` and prepares its layers for streaming. Layer
/// bytes are counted into `progress` as they arrive.
pub async fn pull(request: &RegistryRequest, progress: ByteCounter) -> Result<Pull, Error> {
    super::install_tls_provider();
    let reference = parse_reference(&request.reference)?;
    let fail = |reason: String| Error::Registry {
        reference: reference.whole(),
        reason,
    };
    let auth = credentials(&reference, request.credentials.clone());
    let registry = reference.resolve_registry().to_string();
    let may_use_http = is_loopback(&registry) || request.insecure_registries.contains(&registry);

    // Kept alive by the layer openers too: layers are fetched after this returns.
    let relay = if request.egress.is_set() {
        let relay = Relay::start(request.egress.clone(), request.timeouts.connect).await;
        Some(std::sync::Arc::new(relay.map_err(&fail)?))
    } else {
        None
    };
    let relay_url = relay.as_ref().map(|r| r.url());
    let explain = |e| explain_via(e, relay.as_deref());
    let mut client = client(&registry, false, &request.timeouts, relay_url)?;
    let accepted = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
    let top = match client.pull_manifest_raw(&reference, &auth, &accepted).await {
        Err(OciDistributionError::RequestError(e)) if may_use_http => {
            tracing::debug!("HTTPS to {registry} failed ({e}); trying plain HTTP");
            client = self::client(&registry, true, &request.timeouts, relay_url)?;
            client.pull_manifest_raw(&reference, &auth, &accepted).await
        }
        other => other,
    }
    .map_err(|e| fail(explain(e)))?;
    let top = document(top.0.to_vec()).map_err(fail)?;

    let mut documents = Vec::new();
    let manifest_doc = if is_index(&top.media_type) {
        let index: ImageIndex =
            serde_json::from_slice(&top.bytes).map_err(|e| fail(format!("bad index: {e}")))?;
        let chosen = pick_platform("the index", index.manifests()).map_err(|e| fail(e.to_string()))?;
        let by_digest = reference.clone_with_digest(chosen.digest().to_string());
        let (bytes, _) = client
            .pull_manifest_raw(&by_digest, &auth, &[OCI_MANIFEST, DOCKER_MANIFEST])
            .await
            .map_err(|e| fail(explain(e)))?;
        let doc = document(bytes.to_vec()).map_err(fail)?;
        documents.push(doc.clone());
        doc
    } else {
        top.clone()
    };
    let manifest: ImageManifest =
        serde_json::from_slice(&manifest_doc.bytes).map_err(|e| fail(format!("bad manifest: {e}")))?;

    let config = manifest.config();
    if config.size() > MAX_METADATA_FILE {
        return Err(fail(format!(
            "the image config is {} bytes; at most {MAX_METADATA_FILE} are accepted",
            config.size()
        )));
    }
    // Streamed with a bound: a registry that sends more than the config's declared size is cut
    // off (the importer then refuses the digest), not buffered.
    let mut stream = client
        .pull_blob_stream(&reference, config.digest().as_ref())
        .await
        .map_err(|e| fail(format!("image config: {}", explain(e))))?
        .stream;
    let mut config_bytes = Vec::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(|e| fail(format!("image config: {}", super::reasons(&e))))?;
        config_bytes.extend_from_slice(&chunk);
        if config_bytes.len() as u64 > config.size() {
            return Err(fail(format!(
                "the registry sent more than the image config's {} bytes",
                config.size()
            )));
        }
    }
    documents.push(PulledDocument {
        media_type: config.media_type().to_string(),
        bytes: config_bytes,
    });

    let handle = Handle::current();
    let mut layers = Vec::new();
    for layer in manifest.layers() {
        let media_type = layer.media_type().to_string();
        // Refused before a byte is downloaded; the importer decides the rest (gzip or zstd,
        // detected from the content, as containerd does).
        if !crate::archive::resolve::is_layer_type(&media_type) {
            return Err(fail(format!(
                "layer {} has media type {media_type}, which is not an image layer type",
                layer.digest()
            )));
        }
        let (client, reference, handle) = (client.clone(), reference.clone(), handle.clone());
        let relay = relay.clone();
        let digest = layer.digest().to_string();
        let opened_digest = digest.clone();
        layers.push(PulledLayer {
            digest,
            size: layer.size(),
            open: Box::new(move || {
                let stream = handle
                    .block_on(client.pull_blob_stream(&reference, opened_digest.as_str()))
                    .map_err(|e| {
                        format!(
                            "cannot pull layer {opened_digest} of {}: {}",
                            reference.whole(),
                            explain_via(e, relay.as_deref())
                        )
                    })?;
                let reader = tokio_util::io::StreamReader::new(stream.stream);
                let reader = tokio_util::io::SyncIoBridge::new_with_handle(reader, handle);
                let what = format!("download of layer {opened_digest}");
                // The relay, if any, lives as long as the layer is read.
                let reader = KeepRelay {
                    reader,
                    _relay: relay,
                };
                Ok(Box::new(super::Interruptible::new(reader, what)) as Box<dyn std::io::Read + Send>)
            }),
        });
    }
    let layer_bytes = layers.iter().map(|l| l.size).sum();
    Ok(Pull {
        image: PulledImage {
            name: reference.whole(),
            top,
            documents,
            layers,
            progress,
        },
        layer_bytes,
    })
}

/// A layer's stream with the relay its connections go through.
struct KeepRelay<R> {
    reader: R,
    _relay: Option<std::sync::Arc<Relay>>,
}

impl<R: std::io::Read> std::io::Read for KeepRelay<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reader.read(buf)
    }
}

/// An oci-client for `registry`; with `relay`, every connection goes through it (SOCKS5, for
/// http and https alike).
fn client(
    registry: &str,
    plain_http: bool,
    timeouts: &Timeouts,
    relay: Option<&str>,
) -> Result<Client, Error> {
    let config = ClientConfig {
        protocol: if plain_http {
            ClientProtocol::HttpsExcept(vec![registry.to_string()])
        } else {
            ClientProtocol::Https
        },
        connect_timeout: Some(timeouts.connect),
        read_timeout: Some(timeouts.idle),
        user_agent: concat!("tpcm/", env!("CARGO_PKG_VERSION")),
        http_proxy: relay.map(str::to_string),
        https_proxy: relay.map(str::to_string),
        ..ClientConfig::default()
    };
    // try_from reports a client that cannot be built (Client::new would fall back silently).
    Client::try_from(config).map_err(|e| Error::Registry {
        reference: registry.to_string(),
        reason: format!("cannot set up the HTTP client: {e}"),
    })
}

/// The credentials to present: the command line's, else the docker config's, else none.
fn credentials(reference: &Reference, given: Option<(String, String)>) -> RegistryAuth {
    if let Some((user, password)) = given {
        return RegistryAuth::Basic(user, password);
    }
    // Docker keys Docker Hub's credentials by its v1 URL; other registries by host[:port].
    let server = match reference.registry() {
        "docker.io" | "index.docker.io" => "https://index.docker.io/v1/",
        other => other,
    };
    match docker_credential::get_credential(server) {
        Ok(docker_credential::DockerCredential::UsernamePassword(user, password)) => {
            RegistryAuth::Basic(user, password)
        }
        Ok(docker_credential::DockerCredential::IdentityToken(_)) => {
            tracing::debug!(
                "docker config holds an identity token for {server}; not supported, pulling anonymously"
            );
            RegistryAuth::Anonymous
        }
        Err(e) => {
            tracing::debug!("no docker credentials for {server}: {e}");
            RegistryAuth::Anonymous
        }
    }
}

fn is_loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        // `[::1]:5000` or `host:5000`; a bare IPv6 address has more than one colon.
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// A manifest or index as served, with its media type from its own `mediaType` field (or, for
/// an OCI document without one, from its shape).
fn document(bytes: Vec<u8>) -> Result<PulledDocument, String> {
    if bytes.len() as u64 > MAX_METADATA_FILE {
        return Err(format!("the manifest is larger than {MAX_METADATA_FILE} bytes"));
    }
    #[derive(serde::Deserialize)]
    struct Shape {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
    }
    let shape: Shape = serde_json::from_slice(&bytes).map_err(|e| format!("bad manifest: {e}"))?;
    let media_type = match (shape.media_type, shape.manifests) {
        (Some(mt), _) => mt,
        (None, Some(_)) => OCI_INDEX.to_string(),
        (None, None) => OCI_MANIFEST.to_string(),
    };
    Ok(PulledDocument { media_type, bytes })
}

/// As [`explain`]; when a request failed and so did a connection of the relay, the relay's
/// reason (which address, from where, why) says more than the client's "error connecting to
/// socks proxy".
fn explain_via(e: OciDistributionError, relay: Option<&Relay>) -> String {
    match (&e, relay.and_then(Relay::last_failure)) {
        (OciDistributionError::RequestError(_), Some(why)) => why,
        _ => explain(e),
    }
}

/// One line saying what went wrong, with the fix where there is one.
fn explain(e: OciDistributionError) -> String {
    match e {
        OciDistributionError::UnauthorizedError { .. } => {
            "the registry refused access (401): the user name or password is wrong or missing; \
             give --username and --password"
                .into()
        }
        OciDistributionError::AuthenticationFailure(reason) => format!("authentication failed: {reason}"),
        OciDistributionError::RegistryError { envelope, .. } => {
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::NotFound
                )
            }) {
                "no such image or tag in the registry".into()
            } else {
                let all: Vec<String> = envelope.errors.iter().map(|e| e.to_string()).collect();
                format!("the registry answered: {}", all.join("; "))
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => "no such image or tag in the registry".into(),
        OciDistributionError::ServerError { code, message, .. } => {
            format!("the registry answered {code}: {message}")
        }
        OciDistributionError::RequestError(e) => super::reasons(&e),
        other => super::reasons(&other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_get_the_latest_tag_and_keep_their_registry() {
        let r = parse_reference("127.0.0.1:5000/app").expect("parses");
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "app");
        assert_eq!(r.tag(), Some("latest"));
        assert!(parse_reference("bad ref").is_err());
        assert!(parse_reference("app:bad!tag").is_err());
    }

    #[test]
    fn locations_are_told_apart() {
        assert!(is_image_reference("127.0.0.1:5000/app:1.0"));
        assert!(is_image_reference("busybox"));
        assert!(!is_image_reference("http://h/x.tar"));
        assert!(!is_image_reference("./x.tar"));
    }

    #[test]
    fn only_loopback_registries_may_use_http_by_default() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(is_loopback("127.0.0.1"));
        assert!(!is_loopback("registry.example:5000"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }

    #[test]
    fn document_media_types_come_from_the_document() {
        let d = document(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#
                .to_vec(),
        )
        .unwrap();
        assert_eq!(d.media_type, DOCKER_MANIFEST);
        let d = document(br#"{"schemaVersion":2,"manifests":[]}"#.to_vec()).unwrap();
        assert_eq!(d.media_type, OCI_INDEX);
        let d = document(br#"{"schemaVersion":2,"config":{}}"#.to_vec()).unwrap();
        assert_eq!(d.media_type, OCI_MANIFEST);
        assert!(document(b"not json".to_vec()).is_err());
    }
}
