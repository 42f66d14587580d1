//! Token endpoint (client secret and certificate assertion), token expiry by simulated time,
//! and Graph's 401 for missing or bad tokens.

mod common;

use std::time::Duration;

use common::*;
use graph_sim::certs::rsa_certificate;
use graph_sim::SimConfig;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

async fn token_request(base: &str, tenant: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{base}/{tenant}/oauth2/v2.0/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn assert_identity_error(body: &Value, error: &str, code: u64) {
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    let d = body["error_description"].as_str().unwrap();
    assert!(d.starts_with(&format!("AADSTS{code}: ")), "{d}");
    assert!(
        d.contains("Trace ID: ") && d.contains("Correlation ID: ") && d.contains("Timestamp: "),
        "{d}"
    );
    for f in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(body[f].is_string(), "{f} missing in {body}");
    }
}

#[tokio::test]
async fn client_secret_grant_returns_bearer_token() {
    let (sim, _) = start_sim(SimConfig::default()).await;
    let c = sim.config().clone();
    for tenant in [c.tenant_id.as_str(), c.tenant_domain.as_str()] {
        let (status, body) = token_request(
            &sim.base_url(),
            tenant,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &c.client_id),
                ("client_secret", &c.client_secret),
                ("scope", "https://graph.microsoft.com/.default"),
            ],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3599);
        assert_eq!(body["access_token"].as_str().unwrap().split('.').count(), 3);
    }
}

#[tokio::test]
async fn token_errors_have_identity_platform_shape() {
    let (sim, _) = start_sim(SimConfig::default()).await;
    let c = sim.config().clone();
    let base = sim.base_url();
    let good = |secret: &'static str, scope: &'static str| {
        vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", c.client_id.clone()),
            ("client_secret", secret.to_string()),
            ("scope", scope.to_string()),
        ]
    };
    let send = |tenant: String, form: Vec<(&'static str, String)>| {
        let base = base.clone();
        async move {
            let f: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            token_request(&base, &tenant, &f).await
        }
    };
    let (s, b) = send(
        c.tenant_id.clone(),
        good("wrong", "https://graph.microsoft.com/.default"),
    )
    .await;
    assert_eq!(s, 401);
    assert_identity_error(&b, "invalid_client", 7000215);

    let (s, b) = send(
        "not-a-tenant.example".into(),
        good("x", "https://graph.microsoft.com/.default"),
    )
    .await;
    assert_eq!(s, 400);
    assert_identity_error(&b, "invalid_request", 90002);

    let (s, b) = send(
        c.tenant_id.clone(),
        good("x", "https://graph.microsoft.com/User.Read.All"),
    )
    .await;
    assert_eq!(s, 400);
    assert_identity_error(&b, "invalid_scope", 1002012);

    let (s, b) = token_request(&base, &c.tenant_id, &[("client_id", &c.client_id)]).await;
    assert_eq!(s, 400);
    assert_identity_error(&b, "invalid_request", 900144);
}

#[tokio::test]
async fn graph_rejects_missing_and_garbage_tokens_with_graph_error_shape() {
    let (sim, _) = start_sim(SimConfig::default()).await;
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{}/v1.0/users", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("www-authenticate").is_some());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(graph_error_code(&body), "InvalidAuthenticationToken");

    let resp = http
        .get(format!("{}/v1.0/users", sim.base_url()))
        .bearer_auth("a.b.c")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        graph_error_code(&resp.json().await.unwrap()),
        "InvalidAuthenticationToken"
    );
}

#[tokio::test]
async fn access_token_expires_in_simulated_time() {
    let config = SimConfig {
        token_lifetime: Duration::from_secs(600),
        ..SimConfig::default()
    };
    let (sim, client) = start_sim(config).await;
    let token = client.fetch_token().await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/v1.0/users", sim.base_url());
    assert_eq!(
        http.get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    client.advance_time(599.0).await.unwrap();
    assert_eq!(
        http.get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    client.advance_time(2.0).await.unwrap();
    let resp = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(graph_error_code(&body), "InvalidAuthenticationToken");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
    // A fresh token works again.
    let fresh = client.fetch_token().await.unwrap();
    assert_eq!(
        http.get(&url)
            .bearer_auth(&fresh)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

fn assertion(key_pem: &str, x5t: &str, claims: Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.x5t = Some(x5t.to_string());
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(key_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn certificate_assertion_is_verified() {
    // Two keys for the whole test (RSA keys take a while to make), not one per assertion.
    let registered = rsa_certificate("registered");
    let other = rsa_certificate("other");
    let config = SimConfig {
        certificate_pem: Some(registered.certificate_pem.clone()),
        ..SimConfig::default()
    };
    let (sim, client) = start_sim(config).await;
    let c = sim.config().clone();
    let aud = format!("{}/{}/oauth2/v2.0/token", sim.base_url(), c.tenant_id);
    let now = chrono::Utc::now().timestamp();
    let claims = |aud: &str, nbf: i64, exp: i64| json!({ "aud": aud, "iss": c.client_id, "sub": c.client_id, "jti": uuid::Uuid::new_v4().to_string(), "nbf": nbf, "exp": exp });
    let request = |jwt: String| {
        let base = sim.base_url();
        let tenant = c.tenant_id.clone();
        let client_id = c.client_id.clone();
        async move {
            token_request(
                &base,
                &tenant,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &client_id),
                    ("scope", "https://graph.microsoft.com/.default"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &jwt),
                ],
            )
            .await
        }
    };

    let (s, b) = request(assertion(
        &registered.private_key_pem,
        &registered.x5t,
        claims(&aud, now, now + 600),
    ))
    .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["access_token"].is_string());

    // Signed by another key while claiming the registered thumbprint.
    let (s, b) = request(assertion(
        &other.private_key_pem,
        &registered.x5t,
        claims(&aud, now, now + 600),
    ))
    .await;
    assert_eq!(s, 401);
    assert_identity_error(&b, "invalid_client", 700027);

    // A certificate that is not registered.
    let (s, b) = request(assertion(
        &other.private_key_pem,
        &other.x5t,
        claims(&aud, now, now + 600),
    ))
    .await;
    assert_eq!(s, 401);
    assert_identity_error(&b, "invalid_client", 700027);

    // Wrong audience.
    let (s, b) = request(assertion(
        &registered.private_key_pem,
        &registered.x5t,
        claims("https://example.com/token", now, now + 600),
    ))
    .await;
    assert_eq!(s, 401);
    assert_identity_error(&b, "invalid_client", 50013);

    // Assertions are made by the client's clock: simulated time does not expire them (access
    // tokens do follow it).
    client.advance_time(3600.0).await.unwrap();
    let (s, b) = request(assertion(
        &registered.private_key_pem,
        &registered.x5t,
        claims(&aud, now, now + 600),
    ))
    .await;
    assert_eq!(s, 200, "{b}");
}

struct AssertionRig {
    sim: graph_sim::RunningSim,
    registered: graph_sim::certs::RsaCertificate,
    aud: String,
}

impl AssertionRig {
    async fn start() -> Self {
        let registered = rsa_certificate("registered");
        let config = SimConfig {
            certificate_pem: Some(registered.certificate_pem.clone()),
            ..SimConfig::default()
        };
        let (sim, _) = start_sim(config).await;
        let aud = format!(
            "{}/{}/oauth2/v2.0/token",
            sim.base_url(),
            sim.config().tenant_id
        );
        AssertionRig {
            sim,
            registered,
            aud,
        }
    }

    fn claims(&self, nbf: i64, exp: i64, iat: Option<i64>) -> Value {
        let c = self.sim.config();
        let mut v = json!({ "aud": self.aud, "iss": c.client_id, "sub": c.client_id, "jti": uuid::Uuid::new_v4().to_string(), "nbf": nbf, "exp": exp });
        if let Some(iat) = iat {
            v["iat"] = json!(iat);
        }
        v
    }

    fn sign(&self, header: Header, claims: &Value, key_pem: &str) -> String {
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_rsa_pem(key_pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    async fn request(&self, jwt: &str) -> (u16, Value) {
        let c = self.sim.config();
        token_request(
            &self.sim.base_url(),
            &c.tenant_id,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &c.client_id),
                ("scope", "https://graph.microsoft.com/.default"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", jwt),
            ],
        )
        .await
    }
}

fn header(alg: Algorithm, x5t: Option<&str>, x5t_s256: Option<&str>) -> Header {
    let mut h = Header::new(alg);
    h.x5t = x5t.map(String::from);
    h.x5t_s256 = x5t_s256.map(String::from);
    h
}

#[tokio::test]
async fn ps256_and_x5t_s256_assertions_are_accepted() {
    let rig = AssertionRig::start().await;
    let other = rsa_certificate("other");
    let cert = &rig.registered;
    let key = cert.private_key_pem.as_str();
    let now = chrono::Utc::now().timestamp();
    let claims = rig.claims(now, now + 600, Some(now));
    let ok = [
        header(Algorithm::PS256, None, Some(&cert.x5t_s256)),
        header(Algorithm::PS256, Some(&cert.x5t), None),
        header(Algorithm::RS256, None, Some(&cert.x5t_s256)),
        header(Algorithm::RS256, Some(&cert.x5t), Some(&cert.x5t_s256)),
    ];
    for h in ok {
        let what = format!("{:?} x5t={:?} x5t#S256={:?}", h.alg, h.x5t, h.x5t_s256);
        let (s, b) = rig.request(&rig.sign(h, &claims, key)).await;
        assert_eq!(s, 200, "{what}: {b}");
        assert!(b["access_token"].is_string());
    }
    let refused = [
        // Neither thumbprint: no key named.
        (header(Algorithm::PS256, None, None), key, 700027),
        // x5t#S256 is what is looked up when present: a wrong one fails even with a right x5t.
        (
            header(Algorithm::PS256, Some(&cert.x5t), Some(&other.x5t_s256)),
            key,
            700027,
        ),
        // A SHA-1 thumbprint where the SHA-256 one belongs.
        (header(Algorithm::PS256, None, Some(&cert.x5t)), key, 700027),
        // Signed by another key while naming the registered certificate.
        (
            header(Algorithm::PS256, None, Some(&cert.x5t_s256)),
            other.private_key_pem.as_str(),
            700027,
        ),
        // Only RS256 and PS256.
        (header(Algorithm::RS512, Some(&cert.x5t), None), key, 50027),
    ];
    for (h, key, code) in refused {
        let what = format!("{:?} x5t={:?} x5t#S256={:?}", h.alg, h.x5t, h.x5t_s256);
        let (s, b) = rig.request(&rig.sign(h, &claims, key)).await;
        assert_eq!(s, 401, "{what}: {b}");
        assert_identity_error(&b, "invalid_client", code);
    }
}

#[tokio::test]
async fn assertion_times_are_checked_by_real_time_with_five_minutes_of_skew() {
    let rig = AssertionRig::start().await;
    let client = graph_sim::SimClient::new(rig.sim.base_url(), rig.sim.config());
    let cert = &rig.registered;
    let key = cert.private_key_pem.as_str();
    let h = || header(Algorithm::PS256, None, Some(&cert.x5t_s256));
    let now = chrono::Utc::now().timestamp();
    let cases = [
        // (nbf, exp, iat, accepted)
        (now - 60, now + 600, Some(now), true),
        (now - 900, now - 200, None, true), // expired 200 s ago: within the skew
        (now - 900, now - 400, None, false), // expired 400 s ago: beyond it
        (now + 200, now + 800, None, true), // valid 200 s from now: within the skew
        (now + 400, now + 1000, None, false), // valid 400 s from now: beyond it
        (now, now + 600, Some(now + 200), true), // issued slightly in the future
        (now, now + 600, Some(now + 400), false), // issued too far in the future
    ];
    for (nbf, exp, iat, accepted) in cases {
        let (s, b) = rig
            .request(&rig.sign(h(), &rig.claims(nbf, exp, iat), key))
            .await;
        let what = format!(
            "nbf {} exp {} iat {:?}",
            nbf - now,
            exp - now,
            iat.map(|i| i - now)
        );
        if accepted {
            assert_eq!(s, 200, "{what}: {b}");
        } else {
            assert_eq!(s, 401, "{what}: {b}");
            assert_identity_error(&b, "invalid_client", 700024);
        }
    }
    // Simulated time has nothing to do with it: a week later by the simulator's clock, a fresh
    // assertion is fine and a stale one is still refused.
    client.advance_time(7.0 * 86400.0).await.unwrap();
    let (s, b) = rig
        .request(&rig.sign(h(), &rig.claims(now, now + 600, Some(now)), key))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = rig
        .request(&rig.sign(h(), &rig.claims(now - 900, now - 400, None), key))
        .await;
    assert_eq!(s, 401, "{b}");
    assert_identity_error(&b, "invalid_client", 700024);
}
