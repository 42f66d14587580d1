//! Configuration of the Graph client.

use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;
use url::{Host, Url};

use crate::error::GraphError;

/// The public-cloud identity platform.
pub const DEFAULT_LOGIN_ENDPOINT: &str = "https://login.microsoftonline.com";
/// The public-cloud Microsoft Graph.
pub const DEFAULT_GRAPH_ENDPOINT: &str = "https://graph.microsoft.com";

/// How the application proves its identity to the token endpoint.
///
/// `Debug` never shows the secret or the private key.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A client secret.
    Secret(SecretString),
    /// A certificate registered on the app; the client signs a JWT assertion with its private key.
    Certificate {
        /// PEM text holding the certificate (the first `CERTIFICATE` block is used).
        certificate_pem: String,
        /// PEM text holding the unencrypted RSA private key (PKCS#8 `PRIVATE KEY` or PKCS#1
        /// `RSA PRIVATE KEY`); may be the same text as the certificate.
        private_key_pem: SecretString,
    },
}

impl Credential {
    pub fn secret(secret: impl Into<String>) -> Self {
        Credential::Secret(SecretString::from(secret.into()))
    }

    /// Reads the certificate and the private key from PEM files (the same file may hold both).
    pub fn certificate_from_files(
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<Self, GraphError> {
        let read = |p: &Path, what: &str| {
            std::fs::read_to_string(p)
                .map_err(|e| GraphError::Config(format!("cannot read {what} {}: {e}", p.display())))
        };
        Ok(Credential::Certificate {
            certificate_pem: read(cert_path.as_ref(), "certificate")?,
            private_key_pem: SecretString::from(read(key_path.as_ref(), "private key")?),
        })
    }
}

/// Everything the Graph client needs. Build with [`GraphConfig::new`], then adjust fields.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    pub tenant_id: String,
    /// The application (client) id.
    pub client_id: String,
    pub credential: Credential,
    /// Default `https://login.microsoftonline.com`.
    pub login_endpoint: Url,
    /// Default `https://graph.microsoft.com`. Also decides the token scope (`{graph}/.default`).
    pub graph_endpoint: Url,
    /// Per-request timeout (connect, send and read the body). Default 30 s.
    pub request_timeout: Duration,
    /// How long one call may spend retrying throttling, 5xx, timeouts and network errors, waits
    /// included. A time, not a count: a count of retries bounds nothing when Graph asks to wait
    /// (`Retry-After`), and the callers have deadlines (a Lambda function's timeout, a job's
    /// visibility). Past it the error goes to the caller, whose job is retried later. Default
    /// 30 s.
    pub retry_budget: Duration,
    /// Base of the exponential backoff (full jitter). Default 500 ms.
    pub base_backoff: Duration,
    /// Cap of one backoff sleep. Default 60 s.
    pub max_backoff: Duration,
}

impl GraphConfig {
    pub fn new(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        credential: Credential,
    ) -> Self {
        GraphConfig {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            credential,
            login_endpoint: Url::parse(DEFAULT_LOGIN_ENDPOINT).expect("valid default URL"),
            graph_endpoint: Url::parse(DEFAULT_GRAPH_ENDPOINT).expect("valid default URL"),
            request_timeout: Duration::from_secs(30),
            retry_budget: Duration::from_secs(30),
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// `url` without its trailing slashes, for appending paths.
pub(crate) fn base_str(url: &Url) -> &str {
    url.as_str().trim_end_matches('/')
}

pub(crate) fn check_endpoint(url: &Url, what: &str) -> Result<(), GraphError> {
    match endpoint_problem(url) {
        Some(problem) => Err(GraphError::Config(format!("{what} {problem}"))),
        None => Ok(()),
    }
}

/// What is wrong with `url` as a login or Graph endpoint, or `None`. The one rule, which the
/// configuration applies too (naming its key): an https URL with a host and no query or
/// fragment; plain http only to this machine (a simulator), since the secret, the tokens and
/// every guest's data would otherwise cross the network in the clear.
pub fn endpoint_problem(url: &Url) -> Option<String> {
    if !matches!(url.scheme(), "https" | "http") || url.cannot_be_a_base() || url.host().is_none() {
        return Some(format!("must be an https URL, got {url}"));
    }
    if url.scheme() == "http" && !is_loopback(url) {
        return Some(format!(
            "must be an https URL (http only on loopback: 127.0.0.0/8, ::1, localhost), got {url}"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Some(format!("must not have a query or fragment: {url}"));
    }
    None
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        // The URL parser lowercases domains.
        Some(Host::Domain(name)) => name == "localhost",
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn defaults() {
        let c = GraphConfig::new("t", "c", Credential::secret("s3cr3t-value"));
        assert_eq!(
            base_str(&c.login_endpoint),
            "https://login.microsoftonline.com"
        );
        assert_eq!(base_str(&c.graph_endpoint), "https://graph.microsoft.com");
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.retry_budget, Duration::from_secs(30));
        assert_eq!(c.max_backoff, Duration::from_secs(60));
        match &c.credential {
            Credential::Secret(s) => assert_eq!(s.expose_secret(), "s3cr3t-value"),
            _ => panic!(),
        }
    }

    #[test]
    fn rejects_odd_endpoints() {
        assert!(check_endpoint(&Url::parse("https://graph.microsoft.com").unwrap(), "g").is_ok());
        assert!(check_endpoint(&Url::parse("http://127.0.0.1:9/sim/").unwrap(), "g").is_ok());
        assert!(check_endpoint(&Url::parse("ftp://x").unwrap(), "g").is_err());
        assert!(check_endpoint(&Url::parse("mailto:a@b").unwrap(), "g").is_err());
        assert!(check_endpoint(&Url::parse("https://x/?a=b").unwrap(), "g").is_err());
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let check = |url: &str| check_endpoint(&Url::parse(url).unwrap(), "Graph endpoint");
        for loopback in [
            "http://127.0.0.1:9/sim/",
            "http://127.255.0.1/",
            "http://[::1]:9",
            "http://localhost:9",
            "http://LOCALHOST",
        ] {
            assert!(check(loopback).is_ok(), "{loopback}");
        }
        for remote in [
            "http://graph.microsoft.com",
            "http://10.0.0.1:9",
            "http://0.0.0.0",
            "http://[::]:9",
            "http://[::ffff:10.0.0.1]",
            "http://localhost.example.com",
            "http://128.0.0.1",
        ] {
            let error = check(remote).expect_err(remote).to_string();
            assert!(
                error.contains("Graph endpoint") && error.contains("https"),
                "{remote}: {error}"
            );
        }
    }
}
