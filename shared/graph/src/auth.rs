//! Client-credentials tokens from the Microsoft identity platform, with a client secret or a
//! certificate-signed JWT assertion, cached and refreshed before they expire.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pkcs8::{ObjectIdentifier, PrivateKeyInfoRef};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tracing::{debug, warn};

use crate::config::{base_str, Credential, GraphConfig};
use crate::error::GraphError;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// rsaEncryption (RFC 8017), the algorithm of an RSA key in PKCS#8.
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// Lifetime of a client assertion (Microsoft: "5-10 minutes after nbf").
const ASSERTION_LIFETIME_SECS: i64 = 600;
/// Refresh a token when less than this, or 10% of its lifetime if smaller, remains.
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// A bearer token. `Debug` is redacted; compare to tell tokens apart.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AccessToken(Arc<str>);

impl AccessToken {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken([REDACTED])")
    }
}

struct CachedToken {
    token: AccessToken,
    refresh_at: Instant,
    expires_at: Instant,
}

enum Method {
    Secret(SecretString),
    /// The key and `x5t#S256`, the certificate's SHA-256 thumbprint.
    Certificate {
        key: EncodingKey,
        x5t_s256: String,
    },
}

/// Fetches and caches the app-only token for Graph. One refresh at a time: callers wait on the
/// cache lock while a token request is in flight and then share its result.
pub(crate) struct TokenProvider {
    http: reqwest::Client,
    token_url: String,
    scope: String,
    client_id: String,
    method: Method,
    cache: Mutex<Option<CachedToken>>,
}

impl TokenProvider {
    pub(crate) fn new(config: &GraphConfig, http: reqwest::Client) -> Result<Self, GraphError> {
        let tenant = config.tenant_id.trim();
        if tenant.is_empty()
            || !tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(GraphError::Config(format!(
                "tenant id must be a GUID or a domain name, got {tenant:?}"
            )));
        }
        if config.client_id.trim().is_empty() {
            return Err(GraphError::Config("client id is empty".into()));
        }
        let method = match &config.credential {
            Credential::Secret(s) => {
                if s.expose_secret().is_empty() {
                    return Err(GraphError::Config("client secret is empty".into()));
                }
                Method::Secret(s.clone())
            }
            Credential::Certificate {
                certificate_pem,
                private_key_pem,
            } => {
                let der = certificate_der(certificate_pem)?;
                let key = private_key(private_key_pem.expose_secret())?;
                Method::Certificate {
                    key,
                    x5t_s256: thumbprint(der.as_ref()),
                }
            }
        };
        let provider = TokenProvider {
            http,
            token_url: token_url(&config.login_endpoint, tenant),
            scope: scope(&config.graph_endpoint),
            client_id: config.client_id.trim().to_owned(),
            method,
            cache: Mutex::new(None),
        };
        // Sign once now so a key that parses but cannot sign fails at start-up, not at first use.
        if let Method::Certificate { key, x5t_s256 } = &provider.method {
            provider.assertion(key, x5t_s256)?;
        }
        Ok(provider)
    }

    /// A token valid for a while yet: the cached one, or a fresh one.
    pub(crate) async fn token(&self) -> Result<AccessToken, GraphError> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref() {
            if Instant::now() < cached.refresh_at {
                return Ok(cached.token.clone());
            }
        }
        match self.fetch().await {
            Ok(fresh) => {
                let token = fresh.token.clone();
                *cache = Some(fresh);
                Ok(token)
            }
            Err(e) => match cache.as_ref() {
                // Refreshing early failed, but the old token has not expired: keep using it.
                Some(cached) if Instant::now() < cached.expires_at => {
                    warn!(error = %e, "token refresh failed; using the cached token until it expires");
                    Ok(cached.token.clone())
                }
                _ => Err(e),
            },
        }
    }

    /// Forgets `used` (Graph answered 401 with it). A token fetched meanwhile by another task is kept.
    pub(crate) async fn invalidate(&self, used: &AccessToken) {
        let mut cache = self.cache.lock().await;
        if cache.as_ref().is_some_and(|c| &c.token == used) {
            *cache = None;
        }
    }

    async fn fetch(&self) -> Result<CachedToken, GraphError> {
        let started = Instant::now();
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "client_credentials".into()),
            ("client_id", self.client_id.clone()),
            ("scope", self.scope.clone()),
        ];
        match &self.method {
            Method::Secret(secret) => {
                form.push(("client_secret", secret.expose_secret().to_owned()));
            }
            Method::Certificate { key, x5t_s256 } => {
                form.push(("client_assertion_type", JWT_BEARER.into()));
                form.push(("client_assertion", self.assertion(key, x5t_s256)?));
            }
        }
        let response = self
            .http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(crate::error::from_reqwest)?;
        let status = response.status();
        let body = response.bytes().await.map_err(crate::error::from_reqwest)?;
        if !status.is_success() {
            return Err(self.token_error(status.as_u16(), &body));
        }
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            // Never include serde's message: it may quote the body, which holds the token.
            GraphError::Decode(
                format!(
                    "token response is not the expected JSON (line {}, column {})",
                    e.line(),
                    e.column()
                )
                .into(),
            )
        })?;
        if parsed.access_token.is_empty() {
            return Err(GraphError::Decode(
                "token response has an empty access_token".into(),
            ));
        }
        let lifetime = Duration::from_secs(parsed.expires_in);
        debug!(
            expires_in = parsed.expires_in,
            "fetched a Graph access token"
        );
        let expires_at = started + lifetime;
        Ok(CachedToken {
            token: AccessToken(parsed.access_token.into()),
            refresh_at: expires_at - refresh_margin(lifetime),
            expires_at,
        })
    }

    fn token_error(&self, status: u16, body: &[u8]) -> GraphError {
        #[derive(Deserialize)]
        struct ErrorBody {
            #[serde(default)]
            error: String,
            #[serde(default)]
            error_description: String,
        }
        let (error, description) = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) => (b.error, b.error_description),
            Err(_) => (
                String::new(),
                String::from_utf8_lossy(body).chars().take(200).collect(),
            ),
        };
        let redact = |s: String| match &self.method {
            Method::Secret(secret) if s.contains(secret.expose_secret()) => {
                s.replace(secret.expose_secret(), "[REDACTED]")
            }
            _ => s,
        };
        GraphError::Token {
            status: Some(status),
            error: redact(error),
            description: redact(description),
        }
    }

    /// The client assertion: PS256 with the certificate's `x5t#S256`, Entra's current
    /// recommendation (RS256 with the SHA-1 `x5t` is still accepted, but legacy). Its times
    /// come from the local clock, as Entra checks them against real time (with a few minutes of
    /// skew), never from Graph's `Date` header.
    fn assertion(&self, key: &EncodingKey, x5t_s256: &str) -> Result<String, GraphError> {
        #[derive(Serialize)]
        struct Claims<'a> {
            aud: &'a str,
            iss: &'a str,
            sub: &'a str,
            jti: String,
            nbf: i64,
            iat: i64,
            exp: i64,
        }
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            aud: &self.token_url,
            iss: &self.client_id,
            sub: &self.client_id,
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: now,
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        };
        let mut header = Header::new(Algorithm::PS256);
        header.x5t_s256 = Some(x5t_s256.to_owned());
        jsonwebtoken::encode(&header, &claims, key)
            .map_err(|e| GraphError::Config(format!("cannot sign the client assertion: {e}")))
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(deserialize_with = "number_or_string")]
    expires_in: u64,
}

/// `expires_in` is a number in v2.0 responses but a string in some older ones.
fn number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Num(u64),
        Str(String),
    }
    match N::deserialize(d)? {
        N::Num(n) => Ok(n),
        N::Str(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}

/// `{login}/{tenant}/oauth2/v2.0/token`: also the `aud` of the client assertion.
pub(crate) fn token_url(login_endpoint: &url::Url, tenant: &str) -> String {
    format!("{}/{tenant}/oauth2/v2.0/token", base_str(login_endpoint))
}

/// `{graph}/.default`: all the application permissions granted to the app on that resource.
pub(crate) fn scope(graph_endpoint: &url::Url) -> String {
    format!("{}/.default", base_str(graph_endpoint))
}

/// How long before expiry a token is refreshed: 5 minutes, or 10% of its lifetime if smaller.
pub(crate) fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(MAX_REFRESH_MARGIN)
}

/// `x5t#S256`: the base64url SHA-256 of the certificate's DER.
fn thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

/// The DER bytes of the first certificate in the PEM text (which may also hold the key).
fn certificate_der(pem: &str) -> Result<CertificateDer<'static>, GraphError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            GraphError::Config("no CERTIFICATE block in the certificate PEM".into())
        }
        e => GraphError::Config(format!("cannot read the certificate PEM: {e}")),
    })
}

/// The RSA signing key from the first private-key block (the text may also hold certificates).
fn private_key(pem: &str) -> Result<EncodingKey, GraphError> {
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        // The PEM reader skips sections it does not know, encrypted keys among them: this check
        // only words the error for that common mistake.
        pem::Error::NoItemsFound if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") => {
            GraphError::Config(
                "the private key is encrypted; provide an unencrypted PEM key".into(),
            )
        }
        pem::Error::NoItemsFound => GraphError::Config(
            "no PRIVATE KEY or RSA PRIVATE KEY block in the private key PEM".into(),
        ),
        e => GraphError::Config(format!("cannot read the private key PEM: {e}")),
    })?;
    let not_rsa =
        || GraphError::Config("the private key is not an RSA key (RS256 needs one)".into());
    // jsonwebtoken signs with a PKCS#1 RSAPrivateKey: as is, or unwrapped from PKCS#8.
    let pkcs1 = match &key {
        PrivateKeyDer::Pkcs1(k) => k.secret_pkcs1_der(),
        PrivateKeyDer::Pkcs8(k) => {
            let info = PrivateKeyInfoRef::try_from(k.secret_pkcs8_der()).map_err(|e| {
                GraphError::Config(format!("cannot read the PKCS#8 private key: {e}"))
            })?;
            if info.algorithm.oid != RSA_ENCRYPTION {
                return Err(not_rsa());
            }
            info.private_key.as_bytes()
        }
        _ => return Err(not_rsa()),
    };
    Ok(EncodingKey::from_rsa_der(pkcs1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use url::Url;

    #[test]
    fn endpoints_for_the_public_cloud() {
        let c = GraphConfig::new("contoso.onmicrosoft.com", "app", Credential::secret("x"));
        assert_eq!(
            token_url(&c.login_endpoint, &c.tenant_id),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(
            scope(&c.graph_endpoint),
            "https://graph.microsoft.com/.default"
        );
        assert_eq!(
            scope(&Url::parse("http://127.0.0.1:8080/").unwrap()),
            "http://127.0.0.1:8080/.default"
        );
    }

    #[test]
    fn refresh_margin_is_five_minutes_or_ten_percent() {
        assert_eq!(
            refresh_margin(Duration::from_secs(3599)),
            Duration::from_secs(300)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(1)),
            Duration::from_millis(100)
        );
        assert_eq!(refresh_margin(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn expires_in_number_or_string() {
        let a: TokenResponse =
            serde_json::from_str(r#"{"access_token":"t","expires_in":3599,"token_type":"Bearer"}"#)
                .unwrap();
        let b: TokenResponse =
            serde_json::from_str(r#"{"access_token":"t","expires_in":"3599"}"#).unwrap();
        assert_eq!((a.expires_in, b.expires_in), (3599, 3599));
    }

    #[test]
    fn certificate_der_and_private_key_from_pem() {
        let pem = "junk\n-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n\
                   -----BEGIN CERTIFICATE-----\nAQID\nBA==\n-----END CERTIFICATE-----\n";
        assert_eq!(certificate_der(pem).unwrap().as_ref(), &[1, 2, 3, 4]);
        assert!(certificate_der("nothing").is_err());
        assert!(matches!(
            private_key("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAA==\n-----END ENCRYPTED PRIVATE KEY-----"),
            Err(GraphError::Config(m)) if m.contains("encrypted")
        ));
        assert!(matches!(
            private_key(pem),
            Err(GraphError::Config(m)) if m.contains("no PRIVATE KEY")
        ));
        // An EC key (PKCS#8, P-256, made for this test) cannot sign RS256.
        let ec = "-----BEGIN PRIVATE KEY-----\n\
            MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQguYjz0C7B2/zpamZX\n\
            rqGOhzZ4KLa/yFgjNh2q4LvjIUehRANCAAQO0I8DxOpTGp4Sxa0qHbXAnWy/isYY\n\
            yqEEqmB2R3DJgP3R8wRltThlGXfvAQDQJh2GbcLRhZhIR1JlqJbD/nUK\n\
            -----END PRIVATE KEY-----\n";
        assert!(matches!(
            private_key(ec),
            Err(GraphError::Config(m)) if m.contains("not an RSA key")
        ));
    }

    #[test]
    fn rsa_keys_in_pkcs8_and_pkcs1_sign_alike() {
        let made = graph_sim::certs::rsa_certificate("auth-unit-test");
        let sign = |pem: &str| {
            // RS256 (PKCS#1 v1.5) signatures are deterministic: same key, same token.
            jsonwebtoken::encode(
                &Header::new(Algorithm::RS256),
                &serde_json::json!({"sub": "x"}),
                &private_key(pem).unwrap(),
            )
            .unwrap()
        };
        // Either form may follow the certificate in one text.
        let pkcs8 = sign(&format!("{}{}", made.certificate_pem, made.private_key_pem));
        let pkcs1 = sign(&made.private_key_pkcs1_pem);
        assert_eq!(pkcs8, pkcs1);
        let der = certificate_der(&made.certificate_pem).unwrap();
        assert_eq!(der.as_ref(), made.certificate_der.as_slice());
        assert_eq!(thumbprint(der.as_ref()).len(), 43, "32 bytes, base64url");
    }

    #[test]
    fn access_token_debug_is_redacted() {
        let t = AccessToken("eyJsecret".into());
        assert!(!format!("{t:?}").contains("eyJsecret"));
    }
}
