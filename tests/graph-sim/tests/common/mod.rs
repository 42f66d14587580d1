//! Shared test fixtures: an in-process simulator, and a small axum notification receiver whose
//! behaviour (handshake answer, status, latency) tests can change while it runs.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use graph_sim::{RunningSim, SimClient, SimConfig};
use serde_json::Value;

pub async fn start_sim(config: SimConfig) -> (RunningSim, SimClient) {
    let sim = graph_sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts");
    let client = SimClient::new(sim.base_url(), sim.config());
    (sim, client)
}

/// A config with a short batch window so tests run fast.
pub fn fast_config() -> SimConfig {
    SimConfig {
        batch_window: Duration::from_millis(50),
        ..SimConfig::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Handshake {
    /// 200, text/plain, the decoded token: correct.
    Echo,
    /// 200 text/plain but a different body.
    WrongBody,
    /// The token as HTML (wrong content type).
    Html,
    /// The raw, still URL-encoded query value.
    NotDecoded,
    /// 500.
    Fail,
    /// Answers correctly but too late.
    Slow(u64),
}

#[derive(Debug, Clone)]
pub struct Behaviour {
    pub handshake: Handshake,
    /// Status for notification POSTs.
    pub status: u16,
    pub delay_ms: u64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            handshake: Handshake::Echo,
            status: 202,
            delay_ms: 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub body: Value,
}

#[derive(Clone)]
pub struct Receiver {
    pub base: String,
    pub behaviour: Arc<Mutex<Behaviour>>,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Decoded validation tokens received.
    pub validations: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
    pub fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.behaviour.lock().unwrap());
    }
    pub fn notifications(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
    /// All `value` items received on `path`, flattened.
    pub fn items(&self, path: &str) -> Vec<Value> {
        self.notifications()
            .into_iter()
            .filter(|r| r.path == path)
            .flat_map(|r| r.body["value"].as_array().cloned().unwrap_or_default())
            .collect()
    }
    pub async fn wait_items(&self, path: &str, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let items = self.items(path);
            if items.len() >= n || tokio::time::Instant::now() >= deadline {
                return items;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(
    State(r): State<Receiver>,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let behaviour = r.behaviour.lock().unwrap().clone();
    if let Some(token) = q.get("validationToken") {
        r.validations.lock().unwrap().push(token.clone());
        let raw = uri
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("validationToken="))
            .unwrap_or("")
            .to_string();
        return match behaviour.handshake {
            Handshake::Echo => {
                ([(header::CONTENT_TYPE, "text/plain")], token.clone()).into_response()
            }
            Handshake::WrongBody => {
                ([(header::CONTENT_TYPE, "text/plain")], "nope").into_response()
            }
            Handshake::Html => (
                [(header::CONTENT_TYPE, "text/html")],
                format!("<p>{token}</p>"),
            )
                .into_response(),
            Handshake::NotDecoded => ([(header::CONTENT_TYPE, "text/plain")], raw).into_response(),
            Handshake::Fail => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            Handshake::Slow(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ([(header::CONTENT_TYPE, "text/plain")], token.clone()).into_response()
            }
        };
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.received.lock().unwrap().push(Received {
        path: uri.path().to_string(),
        body,
    });
    if behaviour.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(behaviour.delay_ms)).await;
    }
    StatusCode::from_u16(behaviour.status)
        .unwrap()
        .into_response()
}

/// Starts a receiver on a random loopback port; it accepts POSTs on any path.
pub async fn start_receiver() -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let receiver = Receiver {
        base: format!("http://{addr}"),
        behaviour: Arc::new(Mutex::new(Behaviour::default())),
        received: Arc::new(Mutex::new(Vec::new())),
        validations: Arc::new(Mutex::new(Vec::new())),
    };
    let app = Router::new()
        .route("/{*path}", post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    receiver
}

/// An expiration `minutes` ahead of the simulator's clock, in Graph's format.
pub async fn expiry_in(client: &SimClient, minutes: i64) -> String {
    let t: Value = client.sim_get("/_sim/time").await.unwrap();
    let now = chrono::DateTime::parse_from_rfc3339(t["now"].as_str().unwrap()).unwrap();
    (now + chrono::Duration::minutes(minutes))
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Creates a `/users` subscription for `updated,deleted`, returning the response.
pub async fn subscribe(
    client: &SimClient,
    receiver: &Receiver,
    minutes: i64,
) -> (StatusCode, Value) {
    subscribe_to(client, receiver, "/users", "updated,deleted", minutes).await
}

/// Creates a subscription on `resource` delivering to the receiver's `/notify` and `/lifecycle`,
/// returning the response.
pub async fn subscribe_to(
    client: &SimClient,
    receiver: &Receiver,
    resource: &str,
    change_type: &str,
    minutes: i64,
) -> (StatusCode, Value) {
    let body = serde_json::json!({
        "changeType": change_type,
        "notificationUrl": receiver.url("/notify"),
        "lifecycleNotificationUrl": receiver.url("/lifecycle"),
        "resource": resource,
        "expirationDateTime": expiry_in(client, minutes).await,
        "clientState": "s3cret-state",
    });
    let resp = client
        .graph(reqwest::Method::POST, "/v1.0/subscriptions", Some(&body))
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Asserts Graph's error body shape and returns the code.
pub fn graph_error_code(body: &Value) -> String {
    let e = &body["error"];
    assert!(e["message"].is_string(), "error.message missing in {body}");
    assert!(
        e["innerError"]["request-id"].is_string(),
        "innerError.request-id missing in {body}"
    );
    assert!(
        e["innerError"]["date"].is_string(),
        "innerError.date missing in {body}"
    );
    e["code"].as_str().expect("error.code").to_string()
}

/// One subscription as the simulator sees it (see `SimClient::sim_subscriptions`).
pub async fn sim_subscription(client: &graph_sim::SimClient, id: &str) -> serde_json::Value {
    client
        .sim_subscriptions()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s["id"] == id)
        .expect("subscription listed")
}

/// For tests of what the simulator answers in a row, not of how a client waits: a request
/// repeated before its `Retry-After` is served like any other.
pub async fn allow_early_retries(client: &graph_sim::SimClient) {
    client
        .set_switches(serde_json::json!({"earlyRetriesAllowed": true}))
        .await
        .unwrap();
}

/// A Graph request through the client: the status and the JSON body (null when there is none).
pub async fn call(
    client: &graph_sim::SimClient,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let resp = client.graph(method, path, body.as_ref()).await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The `id` of a user or invitation answer.
pub fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}
