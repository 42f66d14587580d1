//! A small local imitation of the identity platform's token endpoint and of the Graph routes the
//! client uses, with counters and a script of canned responses for the retry tests.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Form, OriginalUri, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{json, Value};
use shadowsync_graph::{Credential, GraphConfig, Url};

pub const TENANT: &str = "contoso.onmicrosoft.com";
pub const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const SECRET: &str = "s3cr3t~Value.that-must-never-leak";

/// How the token endpoint authenticates the app.
pub enum Expect {
    Secret(String),
    Certificate { public_key_pem: String, x5t: String },
}

/// One canned Graph response.
#[derive(Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Canned {
    pub fn new(status: u16, body: Value) -> Self {
        Canned {
            status,
            headers: vec![],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
    pub fn error(status: u16, code: &str) -> Self {
        Canned::new(
            status,
            json!({"error": {"code": code, "message": format!("{code} from the test server")}}),
        )
    }
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

pub struct SimState {
    pub base: String,
    pub expect: Expect,
    /// The scope the token endpoint accepts (`{graph}/.default`).
    pub scope: Mutex<String>,
    pub expires_in: AtomicU64,
    pub token_delay: Mutex<Duration>,
    pub token_requests: AtomicUsize,
    pub token_forms: Mutex<Vec<HashMap<String, String>>>,
    /// Why the token endpoint refused, per refusal.
    pub token_refusals: Mutex<Vec<String>>,
    pub seen_jti: Mutex<HashSet<String>>,
    pub issued: Mutex<HashMap<String, Instant>>,
    pub reject_all_tokens: AtomicBool,
    pub graph_requests: AtomicUsize,
    /// `path?query` of each Graph request, as received (still percent-encoded).
    pub graph_uris: Mutex<Vec<String>>,
    pub users: Mutex<HashMap<String, Value>>,
    pub deleted: Mutex<HashMap<String, Value>>,
    /// user id -> group ids (transitive)
    pub member_of: Mutex<HashMap<String, Vec<String>>>,
    pub script: Mutex<VecDeque<Canned>>,
    pub fallback: Mutex<Canned>,
    /// (arrival, method, body) of each `/v1.0/script` request.
    pub script_calls: Mutex<Vec<(Instant, String, String)>>,
    /// The headers of each `/v1.0/script` request, as they arrived.
    pub script_headers: Mutex<Vec<HeaderMap>>,
}

pub struct Sim {
    pub base: String,
    pub state: Arc<SimState>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Sim {
    pub async fn start(expect: Expect) -> Sim {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(SimState {
            base: base.clone(),
            expect,
            scope: Mutex::new(format!("{base}/.default")),
            expires_in: AtomicU64::new(3599),
            token_delay: Mutex::new(Duration::ZERO),
            token_requests: AtomicUsize::new(0),
            token_forms: Mutex::default(),
            token_refusals: Mutex::default(),
            seen_jti: Mutex::default(),
            issued: Mutex::default(),
            reject_all_tokens: AtomicBool::new(false),
            graph_requests: AtomicUsize::new(0),
            graph_uris: Mutex::default(),
            users: Mutex::default(),
            deleted: Mutex::default(),
            member_of: Mutex::default(),
            script: Mutex::default(),
            fallback: Mutex::new(Canned::new(200, json!({"ok": true}))),
            script_calls: Mutex::default(),
            script_headers: Mutex::default(),
        });
        let app = Router::new()
            .route(&format!("/{TENANT}/oauth2/v2.0/token"), post(token))
            .route("/v1.0/users/{id}", get(user))
            .route(
                "/v1.0/directory/deletedItems/microsoft.graph.user/{id}",
                get(deleted_user),
            )
            .route(
                "/v1.0/users/{id}/checkMemberGroups",
                post(check_member_groups),
            )
            .route("/v1.0/script", any(script))
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Sim {
            base,
            state,
            server,
        }
    }

    pub async fn with_secret() -> Sim {
        Sim::start(Expect::Secret(SECRET.into())).await
    }

    /// A config pointing at this server, with fast retries (10 ms base backoff, at most 50 ms
    /// between tries, a 2 s retry budget).
    pub fn config(&self, credential: Credential) -> GraphConfig {
        let mut c = GraphConfig::new(TENANT, CLIENT_ID, credential);
        c.login_endpoint = Url::parse(&self.base).unwrap();
        c.graph_endpoint = Url::parse(&self.base).unwrap();
        c.base_backoff = Duration::from_millis(10);
        c.max_backoff = Duration::from_millis(50);
        c.retry_budget = Duration::from_secs(2);
        c.request_timeout = Duration::from_secs(5);
        c
    }

    pub fn token_url(&self) -> String {
        format!("{}/{TENANT}/oauth2/v2.0/token", self.base)
    }

    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    pub fn graph_requests(&self) -> usize {
        self.state.graph_requests.load(Ordering::SeqCst)
    }

    pub fn refusals(&self) -> Vec<String> {
        self.state.token_refusals.lock().unwrap().clone()
    }

    /// Every issued token becomes invalid (as after a key rollover).
    pub fn revoke_all_tokens(&self) {
        self.state.issued.lock().unwrap().clear();
    }

    pub fn script(&self, responses: impl IntoIterator<Item = Canned>) {
        self.state.script.lock().unwrap().extend(responses);
    }

    pub fn set_fallback(&self, canned: Canned) {
        *self.state.fallback.lock().unwrap() = canned;
    }

    pub fn add_user(&self, user: Value) {
        let id = user["id"].as_str().unwrap().to_owned();
        self.state.users.lock().unwrap().insert(id, user);
    }

    pub fn add_deleted_user(&self, user: Value) {
        let id = user["id"].as_str().unwrap().to_owned();
        self.state.deleted.lock().unwrap().insert(id, user);
    }
}

fn refuse(state: &SimState, status: StatusCode, code: &str, why: String) -> Response {
    state.token_refusals.lock().unwrap().push(why.clone());
    (
        status,
        Json(json!({
            "error": code,
            "error_description": format!("{why}\r\nTrace ID: 0000\r\nTimestamp: 2026-01-01 00:00:00Z"),
            "error_codes": [7000215],
        })),
    )
        .into_response()
}

async fn token(
    State(state): State<Arc<SimState>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    state.token_forms.lock().unwrap().push(form.clone());
    let delay = *state.token_delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if field("grant_type") != "client_credentials" {
        return refuse(
            &state,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: bad grant_type".into(),
        );
    }
    if field("client_id") != CLIENT_ID {
        return refuse(
            &state,
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            format!("AADSTS700016: unknown client_id {:?}", field("client_id")),
        );
    }
    let scope = state.scope.lock().unwrap().clone();
    if field("scope") != scope {
        return refuse(
            &state,
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            format!("AADSTS70011: scope {:?} is not {scope:?}", field("scope")),
        );
    }
    match &state.expect {
        Expect::Secret(secret) => {
            if form.contains_key("client_assertion") {
                return refuse(
                    &state,
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "AADSTS90014: unexpected client_assertion".into(),
                );
            }
            if field("client_secret") != secret {
                // Deliberately echo the presented secret: the client must redact it.
                return refuse(
                    &state,
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    format!(
                        "AADSTS7000215: Invalid client secret provided: {}",
                        field("client_secret")
                    ),
                );
            }
        }
        Expect::Certificate {
            public_key_pem,
            x5t,
        } => {
            if form.contains_key("client_secret") {
                return refuse(
                    &state,
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "AADSTS90014: unexpected client_secret".into(),
                );
            }
            if field("client_assertion_type")
                != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            {
                return refuse(
                    &state,
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    format!(
                        "AADSTS50027: client_assertion_type {:?}",
                        field("client_assertion_type")
                    ),
                );
            }
            let token_url = format!("{}/{TENANT}/oauth2/v2.0/token", state.base);
            if let Err(why) = verify_assertion(
                &state,
                field("client_assertion"),
                public_key_pem,
                x5t,
                &token_url,
            ) {
                return refuse(
                    &state,
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    format!("AADSTS700027: {why}"),
                );
            }
        }
    }
    let access_token = format!("at-{}", uuid::Uuid::new_v4());
    let expires_in = state.expires_in.load(Ordering::SeqCst);
    state.issued.lock().unwrap().insert(
        access_token.clone(),
        Instant::now() + Duration::from_secs(expires_in),
    );
    Json(json!({
        "token_type": "Bearer",
        "expires_in": expires_in,
        "ext_expires_in": expires_in,
        "access_token": access_token,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct AssertionClaims {
    aud: String,
    iss: String,
    sub: String,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

fn verify_assertion(
    state: &SimState,
    jwt: &str,
    public_key_pem: &str,
    x5t: &str,
    token_url: &str,
) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| format!("bad JWT header: {e}"))?;
    // Entra's current recommendation, which shadowsync follows: PS256 with x5t#S256.
    if header.alg != Algorithm::PS256 {
        return Err(format!("alg {:?}", header.alg));
    }
    if header.typ.as_deref() != Some("JWT") {
        return Err(format!("typ {:?}", header.typ));
    }
    if header.x5t_s256.as_deref() != Some(x5t) {
        return Err(format!("x5t#S256 {:?}, expected {x5t:?}", header.x5t_s256));
    }
    let key = DecodingKey::from_rsa_pem(public_key_pem.as_bytes()).unwrap();
    let mut validation = Validation::new(Algorithm::PS256);
    validation.set_audience(&[token_url]);
    validation.set_issuer(&[CLIENT_ID]);
    validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = 5;
    let claims = jsonwebtoken::decode::<AssertionClaims>(jwt, &key, &validation)
        .map_err(|e| format!("JWT rejected: {e}"))?
        .claims;
    if claims.aud != token_url || claims.iss != CLIENT_ID || claims.sub != CLIENT_ID {
        return Err("aud/iss/sub".into());
    }
    let now = chrono::Utc::now().timestamp();
    if (claims.iat - now).abs() > 30 || claims.nbf > now + 5 {
        return Err(format!(
            "iat {} / nbf {} not now ({now})",
            claims.iat, claims.nbf
        ));
    }
    if claims.exp - claims.nbf > 600 || claims.exp <= now {
        return Err(format!("exp {} outside (now, nbf + 10 min]", claims.exp));
    }
    if uuid::Uuid::parse_str(&claims.jti).is_err() {
        return Err(format!("jti {:?} is not a GUID", claims.jti));
    }
    if !state.seen_jti.lock().unwrap().insert(claims.jti.clone()) {
        return Err(format!("jti {} replayed", claims.jti));
    }
    Ok(())
}

/// Checks the bearer token; counts and records the request. `Some` is the refusal to send.
fn graph_auth(state: &SimState, headers: &HeaderMap, uri: &OriginalUri) -> Option<Response> {
    state.graph_requests.fetch_add(1, Ordering::SeqCst);
    state.graph_uris.lock().unwrap().push(uri.0.to_string());
    let unauthorized = || {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"code": "InvalidAuthenticationToken",
                "message": "Access token has expired or is not yet valid."}})),
        )
            .into_response()
    };
    if state.reject_all_tokens.load(Ordering::SeqCst) {
        return Some(unauthorized());
    }
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Some(unauthorized());
    };
    match state.issued.lock().unwrap().get(token) {
        Some(expiry) if Instant::now() < *expiry => None,
        _ => Some(unauthorized()),
    }
}

fn not_found(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {"code": "Request_ResourceNotFound",
            "message": format!("Resource '{id}' does not exist or one of its queried reference-property objects are not present.")}})),
    )
        .into_response()
}

fn check_select(query: &HashMap<String, String>) -> Option<Response> {
    match query.get("$select") {
        Some(s) if s == shadowsync_graph::USER_SELECT => None,
        other => Some((StatusCode::BAD_REQUEST, format!("bad $select: {other:?}")).into_response()),
    }
}

async fn user(
    State(state): State<Arc<SimState>>,
    UrlPath(id): UrlPath<String>,
    Query(query): Query<HashMap<String, String>>,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = graph_auth(&state, &headers, &uri) {
        return r;
    }
    if let Some(r) = check_select(&query) {
        return r;
    }
    match state.users.lock().unwrap().get(&id) {
        Some(u) => Json(u.clone()).into_response(),
        None => not_found(&id),
    }
}

async fn deleted_user(
    State(state): State<Arc<SimState>>,
    UrlPath(id): UrlPath<String>,
    Query(query): Query<HashMap<String, String>>,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = graph_auth(&state, &headers, &uri) {
        return r;
    }
    if let Some(r) = check_select(&query) {
        return r;
    }
    match state.deleted.lock().unwrap().get(&id) {
        Some(u) => Json(u.clone()).into_response(),
        None => not_found(&id),
    }
}

async fn check_member_groups(
    State(state): State<Arc<SimState>>,
    UrlPath(id): UrlPath<String>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = graph_auth(&state, &headers, &uri) {
        return r;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let Some(asked) = body["groupIds"].as_array() else {
        return (StatusCode::BAD_REQUEST, "groupIds missing").into_response();
    };
    if !state.users.lock().unwrap().contains_key(&id) {
        return not_found(&id);
    }
    let member_of = state
        .member_of
        .lock()
        .unwrap()
        .get(&id)
        .cloned()
        .unwrap_or_default();
    let value: Vec<&Value> = asked
        .iter()
        .filter(|g| g.as_str().is_some_and(|g| member_of.iter().any(|m| m == g)))
        .collect();
    Json(json!({ "value": value })).into_response()
}

async fn script(
    State(state): State<Arc<SimState>>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = graph_auth(&state, &headers, &uri) {
        return r;
    }
    state.script_calls.lock().unwrap().push((
        Instant::now(),
        method.to_string(),
        String::from_utf8_lossy(&body).into_owned(),
    ));
    state.script_headers.lock().unwrap().push(headers.clone());
    let canned = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| state.fallback.lock().unwrap().clone());
    tokio::time::sleep(canned.delay).await;
    let mut response = (
        StatusCode::from_u16(canned.status).unwrap(),
        [("content-type", "application/json")],
        canned.body,
    )
        .into_response();
    for (name, value) in canned.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

/// A self-signed certificate and its key (files, as the client reads them), with what the server
/// needs to check assertions: the public key and the expected `x5t#S256` (SHA-256 thumbprint).
pub struct TestCert {
    pub dir: tempfile::TempDir,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub public_key_pem: String,
    pub x5t: String,
}

pub fn make_cert() -> TestCert {
    let made = graph_sim::certs::rsa_certificate("shadowsync-graph-test");
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, &made.certificate_pem).unwrap();
    std::fs::write(&key_path, &made.private_key_pem).unwrap();
    TestCert {
        dir,
        cert_path,
        key_path,
        public_key_pem: made.public_key_pem,
        x5t: {
            use base64::Engine;
            use sha2::Digest;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(&made.certificate_der))
        },
    }
}

/// A second, unrelated RSA key (PKCS#8 PEM).
pub fn other_key(dir: &Path) -> PathBuf {
    let path = dir.join("other.pem");
    std::fs::write(
        &path,
        graph_sim::certs::rsa_certificate("other").private_key_pem,
    )
    .unwrap();
    path
}

/// The Graph simulator on a random port, a control client for it, and a `GraphClient`
/// configured for it (the partner and scope-group calls' tests).
pub async fn simulator() -> (
    graph_sim::RunningSim,
    graph_sim::SimClient,
    shadowsync_graph::GraphClient,
) {
    let sim = graph_sim::start(
        graph_sim::SimConfig::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let c = sim.config();
    let mut config = GraphConfig::new(
        &c.tenant_id,
        &c.client_id,
        Credential::secret(&c.client_secret),
    );
    config.login_endpoint = sim.base_url().parse().unwrap();
    config.graph_endpoint = sim.base_url().parse().unwrap();
    let client = shadowsync_graph::GraphClient::new(config).unwrap();
    let control = graph_sim::SimClient::new(sim.base_url(), sim.config());
    (sim, control, client)
}
