//! http(s) downloads, streamed straight into the importer (no temporary copy: every archive
//! format tpcm reads is read front to back).
//!
//! TLS is rustls with the platform verifier, which trusts the system's CA store: a CA added with
//! `update-ca-certificates` is trusted, as with curl. Redirects are followed (at most 10; a loop
//! is an error); any non-2xx answer is an error naming the URL and the status.

use super::{Body, Egress, Error, Source, Timeouts, reasons};
use std::net::IpAddr;
use std::sync::Arc;

/// Whether a location is a URL this source handles.
pub fn is_http_url(location: &str) -> bool {
    location.starts_with("http://") || location.starts_with("https://")
}

fn error(url: &str, reason: impl std::fmt::Display) -> Error {
    Error::Http {
        url: url.to_string(),
        reason: reason.to_string(),
    }
}

/// A user name and password for HTTP basic authentication.
pub type Login = (String, String);

/// Starts the download of `url` and returns its body as a stream. Blocking: call it from a thread
/// that may block (reqwest's blocking client cannot run on an async worker).
/// Waits are bounded by `timeouts` (the blocking client applies the idle timeout to each read,
/// not to the whole transfer). With `login`, the request carries basic authentication (reqwest
/// drops it when a redirect leads to another host). Every connection, redirects included, leaves
/// from `egress`.
pub fn open_http(
    url: &str,
    timeouts: &Timeouts,
    login: Option<&Login>,
    egress: &Egress,
) -> Result<Source, Error> {
    super::install_tls_provider();
    let mut builder = reqwest::blocking::Client::builder()
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.idle)
        .user_agent(concat!("tpcm/", env!("CARGO_PKG_VERSION")));
    if let Some(device) = egress.device() {
        builder = builder.interface(device);
    }
    if let Some(address) = egress.address() {
        // A host named by address skips the resolver: check its family here.
        if let Some(host) = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            && let Ok(ip) = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
            && !egress.reaches(ip)
        {
            return Err(error(
                url,
                format!("{ip} cannot be reached from source address {address}"),
            ));
        }
        builder = builder
            .local_address(address)
            .dns_resolver(Arc::new(SameFamily(egress.clone())));
    }
    let client = builder.build().map_err(|e| error(url, reasons(&e)))?;
    let mut request = client.get(url);
    if let Some((user, password)) = login {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().map_err(|e| error(url, reasons(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(error(url, format!("the server answered {status}")));
    }
    Ok(Source {
        size: response.content_length(),
        description: url.to_string(),
        body: Body::Stream(Box::new(super::Interruptible::new(
            response,
            format!("download of {url}"),
        ))),
    })
}

/// Resolves names to the addresses of the source address's family only: the HTTP client binds
/// the source address to connections of its family and leaves the others unbound.
struct SameFamily(Egress);

impl reqwest::dns::Resolve for SameFamily {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let egress = self.0.clone();
        Box::pin(async move {
            // The HTTP client bounds the whole connect phase; this bound only keeps a hung
            // resolver from outliving it.
            let limit = std::time::Duration::from_secs(300);
            let found = egress.resolve(name.as_str(), 0, limit).await?;
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_are_taken() {
        assert!(is_http_url("http://h/x.tar"));
        assert!(is_http_url("https://h/x.tar"));
        assert!(!is_http_url("/tmp/x.tar"));
        assert!(!is_http_url("busybox:1.0"));
    }

    #[test]
    fn an_unreachable_server_is_a_clear_error() {
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let err = open_http(
            "http://127.0.0.1:1/x.tar",
            &Timeouts::default(),
            None,
            &Egress::default(),
        )
        .err()
        .expect("refused")
        .to_string();
        assert!(err.contains("http://127.0.0.1:1/x.tar"), "{err}");
    }

    #[test]
    fn a_host_of_the_other_family_than_the_source_address_is_refused() {
        // An address literal skips the resolver, which would otherwise leave it out.
        let egress = Egress::new(None, Some("127.0.0.1")).unwrap();
        let err = open_http("http://[::1]:1/x.tar", &Timeouts::default(), None, &egress)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("::1 cannot be reached from source address 127.0.0.1"),
            "{err}"
        );
    }
}
