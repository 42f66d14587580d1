//! The identity platform's client-credentials token endpoint and the bearer-token check in
//! front of every Graph route.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use uuid::Uuid;
use x509_parser::public_key::PublicKey;

use crate::error::{GraphError, TokenError};
use crate::Sim;

pub const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

pub fn routes() -> Router<Arc<Sim>> {
    Router::new().route("/{tenant}/oauth2/v2.0/token", post(token))
}

/// Clock skew Entra ID allows on a client assertion's `nbf`, `exp` and `iat` (5 minutes).
pub const ASSERTION_CLOCK_SKEW_SECONDS: i64 = 300;

/// A certificate registered on the app registration: its SHA-1 thumbprint (what `x5t` carries),
/// its SHA-256 thumbprint (what `x5t#S256` carries) and its RSA public key.
#[derive(Clone)]
pub struct RegisteredCert {
    pub x5t: String,
    /// base64url of the SHA-256 of the certificate's DER.
    pub x5t_s256: String,
    pub thumbprint_hex: String,
    key: DecodingKey,
}

impl std::fmt::Debug for RegisteredCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredCert")
            .field("x5t", &self.x5t)
            .finish()
    }
}

impl RegisteredCert {
    /// From the first certificate in a PEM text (which may also hold the private key).
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
            pem::Error::NoItemsFound => "no CERTIFICATE block in PEM".to_string(),
            e => format!("bad certificate PEM: {e}"),
        })?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let spki = cert.public_key();
        if !matches!(spki.parsed(), Ok(PublicKey::RSA(_))) {
            return Err(
                "the certificate's key is not RSA (client assertions are RS256 or PS256)".into(),
            );
        }
        let digest = Sha1::digest(&der);
        Ok(RegisteredCert {
            x5t: URL_SAFE_NO_PAD.encode(digest),
            x5t_s256: URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&der)),
            thumbprint_hex: digest.iter().map(|b| format!("{b:02X}")).collect(),
            // An RSA subjectPublicKey is the PKCS#1 RSAPublicKey that jsonwebtoken verifies with.
            key: DecodingKey::from_rsa_der(&spki.subject_public_key.data),
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub appid: String,
    pub azp: String,
    pub tid: String,
    pub oid: String,
    pub sub: String,
    pub idtyp: String,
    pub roles: Vec<String>,
    pub ver: String,
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    aud: Option<Value>,
    iss: Option<String>,
    sub: Option<String>,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
}

fn missing_parameter(name: &str) -> TokenError {
    TokenError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{name}'."),
    )
}

/// `POST /{tenant}/oauth2/v2.0/token` — client credentials with a secret or a certificate
/// assertion. Checks are ordered roughly as Entra ID applies them.
pub async fn token(
    State(sim): State<Arc<Sim>>,
    Path(tenant): Path<String>,
    form: Result<Form<HashMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    match issue_token(&sim, &tenant, form.map(|f| f.0).unwrap_or_default()) {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

fn issue_token(
    sim: &Sim,
    tenant: &str,
    form: HashMap<String, String>,
) -> Result<Value, TokenError> {
    let cfg = &sim.config;
    if !tenant.eq_ignore_ascii_case(&cfg.tenant_id)
        && !tenant.eq_ignore_ascii_case(&cfg.tenant_domain)
    {
        return Err(TokenError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."),
        ));
    }
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| missing_parameter("grant_type"))?;
    if grant_type != "client_credentials" {
        return Err(TokenError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        ));
    }
    let client_id = form
        .get("client_id")
        .ok_or_else(|| missing_parameter("client_id"))?;
    if !client_id.eq_ignore_ascii_case(&cfg.client_id) {
        return Err(TokenError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!("Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.", cfg.tenant_domain),
        ));
    }
    let scope = form
        .get("scope")
        .ok_or_else(|| missing_parameter("scope"))?;
    let resource = scope.strip_suffix("/.default").ok_or_else(|| {
        TokenError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        )
    })?;
    let resource = resource.trim_end_matches('/');
    // The simulator stands in for Graph, so its own base URL names the Graph resource too (as
    // `https://graph.microsoft.us` does in a national cloud): clients derive the scope from the
    // Graph endpoint they are configured with.
    let own_base = sim.base_url.trim_end_matches('/');
    if resource != GRAPH_AUDIENCE && resource != GRAPH_APP_ID && resource != own_base {
        return Err(TokenError::new(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            format!("The resource principal named {resource} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.", cfg.tenant_domain),
        ));
    }

    if let Some(secret) = form.get("client_secret") {
        if secret != &cfg.client_secret {
            return Err(TokenError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.", cfg.client_id),
            ));
        }
    } else if let Some(assertion) = form.get("client_assertion") {
        if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER) {
            return Err(TokenError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                700023,
                format!("Client assertion type must be '{JWT_BEARER}'."),
            ));
        }
        verify_assertion(sim, tenant, assertion)?;
    } else {
        return Err(TokenError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ));
    }

    let now = sim.now().timestamp();
    let lifetime = cfg.token_lifetime.as_secs() as i64;
    let claims = AccessClaims {
        aud: GRAPH_AUDIENCE.into(),
        iss: format!("https://sts.windows.net/{}/", cfg.tenant_id),
        iat: now,
        nbf: now,
        exp: now + lifetime,
        appid: cfg.client_id.clone(),
        azp: cfg.client_id.clone(),
        tid: cfg.tenant_id.clone(),
        oid: Uuid::new_v4().to_string(),
        sub: cfg.client_id.clone(),
        idtyp: "app".into(),
        roles: vec![
            "User.ReadWrite.All".into(),
            "Group.ReadWrite.All".into(),
            "User.Invite.All".into(),
        ],
        ver: "1.0".into(),
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&sim.signing_key),
    )
    .map_err(|e| {
        TokenError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            50000,
            e.to_string(),
        )
    })?;
    Ok(json!({
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": token,
    }))
}

fn invalid_client(code: u32, description: impl Into<String>) -> TokenError {
    TokenError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        code,
        description,
    )
}

/// Verifies a JWT client assertion: RS256 or PS256, signed by the registered certificate (found
/// by its `x5t#S256` thumbprint when the header has one, else by `x5t`), `aud` = this token
/// endpoint, `iss` = `sub` = client id, and `nbf`/`exp`/`iat` within 5 minutes of skew of REAL
/// time (the assertion is made by the client's clock, which simulated time does not move).
fn verify_assertion(sim: &Sim, tenant: &str, assertion: &str) -> Result<(), TokenError> {
    let cfg = &sim.config;
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|_| invalid_client(50027, "JWT token is invalid or malformed."))?;
    let key_not_found = |presented: &str| {
        invalid_client(
            700027,
            format!("Client assertion failed signature validation. [Reason - The key was not found., Thumbprint of key used by client: '{presented}'. Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{}'.]", cfg.client_id),
        )
    };
    // Entra ID looks the key up by `x5t#S256` when present (the current recommendation), else
    // by the SHA-1 `x5t`; an assertion with neither names no key.
    let (presented, found) = match (&header.x5t_s256, &header.x5t) {
        (Some(s256), _) => (
            s256.clone(),
            sim.cert.as_ref().filter(|c| c.x5t_s256 == *s256),
        ),
        (None, Some(x5t)) => (x5t.clone(), sim.cert.as_ref().filter(|c| c.x5t == *x5t)),
        (None, None) => {
            return Err(invalid_client(
                700027,
                format!("Client assertion contains no key identifier: the JWT header must carry 'x5t#S256' or 'x5t' naming a certificate registered on app Id '{}'.", cfg.client_id),
            ))
        }
    };
    let cert = found.ok_or_else(|| key_not_found(&presented))?;
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256) {
        return Err(invalid_client(
            50027,
            format!(
                "JWT token is invalid or malformed. Unsupported algorithm {:?}.",
                header.alg
            ),
        ));
    }
    let mut validation = Validation::new(header.alg);
    // Time claims are checked below, with Entra's clock skew.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<AssertionClaims>(assertion, &cert.key, &validation).map_err(
        |e| {
            invalid_client(
                700027,
                format!("Client assertion failed signature validation. [Reason - {e}]"),
            )
        },
    )?;
    let claims = data.claims;

    let aud_ok = |aud: &str| {
        let aud = aud.trim_end_matches('/');
        [tenant, cfg.tenant_id.as_str(), cfg.tenant_domain.as_str()]
            .iter()
            .any(|t| {
                aud.eq_ignore_ascii_case(&sim.token_endpoint(t))
                    || aud.eq_ignore_ascii_case(&format!(
                        "https://login.microsoftonline.com/{t}/oauth2/v2.0/token"
                    ))
            })
    };
    let audiences: Vec<String> = match &claims.aud {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => vec![],
    };
    if !audiences.iter().any(|a| aud_ok(a)) {
        return Err(invalid_client(
            50013,
            format!("Assertion audience claim does not match the required value. The audience in the assertion was '{}' and the expected audience is '{}'.", audiences.join(","), sim.token_endpoint(tenant)),
        ));
    }
    if claims.iss.as_deref() != Some(cfg.client_id.as_str())
        || claims.sub.as_deref() != Some(cfg.client_id.as_str())
    {
        return Err(invalid_client(
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
        ));
    }
    let now = chrono::Utc::now().timestamp();
    let skew = ASSERTION_CLOCK_SKEW_SECONDS;
    let exp = claims.exp.ok_or_else(|| {
        invalid_client(
            50027,
            "JWT token is invalid or malformed. Missing 'exp' claim.",
        )
    })?;
    let nbf = claims.nbf.unwrap_or(i64::MIN);
    if now >= exp.saturating_add(skew) || now < nbf.saturating_sub(skew) {
        return Err(invalid_client(
            700024,
            format!("Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .", fmt_ts(now), fmt_ts(nbf), fmt_ts(exp)),
        ));
    }
    if let Some(iat) = claims.iat {
        if iat > now.saturating_add(skew) {
            return Err(invalid_client(
                700024,
                format!("Client assertion is not within its valid time range. Current time: {}, assertion issued at {}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .", fmt_ts(now), fmt_ts(iat)),
            ));
        }
    }
    Ok(())
}

fn fmt_ts(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(crate::clock::graph_time_precise)
        .unwrap_or_else(|| "unset".into())
}

/// Bearer-token check in front of every Graph route: a missing, malformed, foreign or expired
/// token (by simulated time) gets Graph's 401 `InvalidAuthenticationToken`.
pub async fn require_token(State(sim): State<Arc<Sim>>, req: Request, next: Next) -> Response {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .unwrap_or("")
        .trim();
    if token.is_empty() {
        return GraphError::unauthorized("Access token is empty.").into_response();
    }
    if token.split('.').count() != 3 {
        return GraphError::unauthorized("IDX14100: JWT is not well formed, there are no dots (.).\nThe token needs to be in JWS or JWE Compact Serialization Format. (JWS): 'EncodedHeader.EndcodedPayload.EncodedSignature'. (JWE): 'EncodedProtectedHeader.EncodedEncryptedKey.EncodedInitializationVector.EncodedCiphertext.EncodedAuthenticationTag'.").into_response();
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = match jsonwebtoken::decode::<AccessClaims>(
        token,
        &DecodingKey::from_secret(&sim.signing_key),
        &validation,
    ) {
        Ok(d) => d.claims,
        Err(_) => {
            return GraphError::unauthorized("Access token validation failure. Invalid signature.")
                .into_response()
        }
    };
    if claims.aud != GRAPH_AUDIENCE && claims.aud != GRAPH_APP_ID {
        return GraphError::unauthorized("Access token validation failure. Invalid audience.")
            .into_response();
    }
    if claims.tid != sim.config.tenant_id {
        return GraphError::unauthorized("Access token validation failure. Invalid issuer.")
            .into_response();
    }
    let now = sim.now().timestamp();
    if now >= claims.exp || now < claims.nbf {
        return GraphError::unauthorized("Lifetime validation failed, the token is expired.")
            .into_response();
    }
    // A valid token of an app whose permission (consent) was removed: Graph's 403.
    if sim.world().switches.permission_removed {
        return GraphError::new(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_certificate_from_pem() {
        let made = crate::certs::rsa_certificate("registered");
        // The key may come first in the same text: only the certificate is read.
        let pem = format!("{}{}", made.private_key_pem, made.certificate_pem);
        let registered = RegisteredCert::from_pem(&pem).unwrap();
        assert_eq!(registered.x5t, made.x5t);
        assert_eq!(registered.x5t_s256, made.x5t_s256);
        assert_eq!(registered.x5t_s256.len(), 43, "32 bytes, base64url");
        assert_eq!(registered.thumbprint_hex.len(), 40);
        let (_, cert) = x509_parser::parse_x509_certificate(&made.certificate_der).unwrap();
        assert!(
            matches!(cert.public_key().parsed(), Ok(PublicKey::RSA(k)) if k.key_size() == 2048)
        );
        assert!(
            cert.is_ca(),
            "usable as a trust anchor, like `openssl req -x509`"
        );
        // The public key read from the certificate verifies what the private key signed.
        let jwt = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &json!({"sub": "x"}),
            &EncodingKey::from_rsa_pem(made.private_key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(&jwt, &registered.key, &validation).unwrap();

        assert!(RegisteredCert::from_pem(&made.private_key_pem).is_err());
        let ec = rcgen::generate_simple_self_signed(vec!["ec.example".into()]).unwrap();
        let err = RegisteredCert::from_pem(&ec.cert.pem()).unwrap_err();
        assert!(err.contains("not RSA"), "{err}");
    }
}
