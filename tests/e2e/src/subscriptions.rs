//! The subscription keeper's test world: the Graph simulator in-process, a real HTTP receiver
//! that answers Graph's validation handshake, and an embedded store in a temporary directory.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use graph_sim::state::Subscription;
use graph_sim::{RunningSim, Sim, SimClient, SimConfig};
use secrecy::SecretString;
use shadowsync_app::{KeeperConfig, SubscriptionKeeper};
use shadowsync_core::Clock;
use shadowsync_graph::GraphClient;
use shadowsync_state::{EmbeddedStore, SubscriptionRecord};

pub const CLIENT_STATE: &str = "test-client-state-7Qx9";

/// The simulator's clock: subscription expiry in the simulator follows simulated time, so the
/// keeper must judge "close to expiry" by the same clock.
pub struct SimTime(pub Arc<Sim>);

impl fmt::Debug for SimTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SimTime")
    }
}

impl Clock for SimTime {
    fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }
}

/// A notification endpoint: echoes the decoded `validationToken` as text/plain (as Graph
/// demands), or answers the handshake wrongly while `wrong_handshake` is set; 202 otherwise.
#[derive(Clone)]
pub struct Receiver {
    pub base: String,
    pub wrong_handshake: Arc<AtomicBool>,
}

async fn receive(
    State(wrong): State<Arc<AtomicBool>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(token) = query.get("validationToken") else {
        return StatusCode::ACCEPTED.into_response();
    };
    let body = if wrong.load(Ordering::SeqCst) {
        format!("<p>{token}</p>")
    } else {
        token.clone()
    };
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

impl Receiver {
    pub async fn start() -> Receiver {
        let wrong = Arc::new(AtomicBool::new(false));
        let app = Router::new()
            .route("/{*path}", post(receive))
            .with_state(wrong.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            base: format!("http://{addr}"),
            wrong_handshake: wrong,
        }
    }
}

pub struct World {
    pub sim: RunningSim,
    pub client: SimClient,
    pub receiver: Receiver,
    pub graph: Arc<GraphClient>,
    pub state: Arc<EmbeddedStore>,
    dir: tempfile::TempDir,
}

impl World {
    pub async fn start() -> World {
        let sim = graph_sim::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
            .await
            .expect("simulator starts");
        let client = SimClient::new(sim.base_url(), sim.config());
        let graph = Arc::new(crate::graph_client(&sim).expect("a Graph client"));
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(EmbeddedStore::open(dir.path().join("state.redb")).unwrap());
        World {
            client,
            receiver: Receiver::start().await,
            graph,
            state,
            sim,
            dir,
        }
    }

    pub fn config(&self) -> KeeperConfig {
        KeeperConfig::new(
            format!("{}/notify", self.receiver.base),
            format!("{}/lifecycle", self.receiver.base),
            SecretString::from(CLIENT_STATE),
        )
    }

    pub fn keeper(&self) -> SubscriptionKeeper {
        self.keeper_with(self.config())
    }

    pub fn keeper_with(&self, config: KeeperConfig) -> SubscriptionKeeper {
        self.keeper_on(config, self.state.clone())
    }

    pub fn keeper_on(&self, config: KeeperConfig, state: Arc<EmbeddedStore>) -> SubscriptionKeeper {
        SubscriptionKeeper {
            graph: self.graph.clone(),
            state,
            config,
            clock: Arc::new(SimTime(self.sim.sim())),
        }
    }

    /// A second, empty store (as after state loss).
    pub fn fresh_store(&self, name: &str) -> Arc<EmbeddedStore> {
        Arc::new(EmbeddedStore::open(self.dir.path().join(name)).unwrap())
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.sim.sim().now()
    }

    /// Moves simulated time forward to `t`.
    pub async fn advance_to(&self, t: DateTime<Utc>) {
        let seconds = (t - self.now()).num_milliseconds() as f64 / 1000.0;
        assert!(seconds > 0.0, "time only moves forward");
        self.client.advance_time(seconds).await.unwrap();
    }

    /// The live subscriptions in the simulator (expired ones are swept on access).
    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.sim
            .sim()
            .world()
            .subscriptions
            .values()
            .cloned()
            .collect()
    }

    pub fn only_subscription(&self) -> Subscription {
        let mut subs = self.subscriptions();
        assert_eq!(subs.len(), 1, "exactly one subscription expected: {subs:?}");
        subs.pop().unwrap()
    }

    pub async fn record(&self) -> Option<(SubscriptionRecord, u64)> {
        SubscriptionRecord::load(&*self.state)
            .await
            .unwrap()
            .map(|v| (v.value, v.version))
    }

    /// Validation handshakes the simulator logged, as (url, outcome).
    pub async fn validations(&self) -> Vec<(String, String)> {
        self.client
            .delivery_log()
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e["kind"] == "validation")
            .map(|e| {
                (
                    e["url"].as_str().unwrap_or_default().to_string(),
                    e["outcome"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}
