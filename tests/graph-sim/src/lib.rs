//! graph-sim: a stand-in for Microsoft Graph and the Microsoft identity platform token endpoint,
//! faithful to the documented behaviour shadowsync depends on — including the unpleasant parts
//! (expiring tokens and delta links, throttling, late, duplicated, reordered or lost
//! notifications, slow/drop endpoint marking, 411 for bodiless POSTs without a length) — and,
//! behind switches (`/_sim/switches`), what Graph does only sometimes (replication lag,
//! fractional or missing `Retry-After`, spontaneous reauthorization, delta quirks, stale delta
//! links, removed permissions).
//!
//! Start it in-process with [`start`] (port 0 picks a free port) or run the `graph-sim` binary.
//! See README.md for the routes, the `/_sim` control API and what is *not* imitated.

pub mod auth;
pub mod certs;
pub mod client;
pub mod clock;
pub mod control;
pub mod delivery;
pub mod delta;
pub mod error;
pub mod faults;
pub mod invitations;
pub mod query;
pub mod state;
pub mod subscriptions;
pub mod synced;
pub mod users;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::Duration as ChronoDuration;

pub use client::{DeltaQuirks, DeltaRound, SimClient};
pub use faults::{FaultRule, FaultStats};
pub use state::{RetryAfterStyle, StaleDeltaTokens, Switches};
pub use synced::SyncedUser;

use crate::clock::SimClock;
use crate::error::GraphError;
use crate::state::World;

/// Everything configurable about the simulated tenant and its behaviour.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub tenant_id: String,
    pub tenant_domain: String,
    pub client_id: String,
    pub client_secret: String,
    /// PEM of the certificate registered on the app (for JWT client assertions). May also contain
    /// the private key; only the first CERTIFICATE block is read.
    pub certificate_pem: Option<String>,
    /// Access token lifetime (`expires_in`); Entra ID issues 60–90 minute tokens.
    pub token_lifetime: Duration,
    /// Users per delta page (Graph decides this itself; `$top` is not supported on users/delta).
    pub delta_page_size: usize,
    /// Delta tokens for directory objects expire after 7 days.
    pub delta_token_max_age: Duration,
    /// Changes queued within this window go out in one notification POST per endpoint.
    pub batch_window: Duration,
    /// A notification POST must be answered with 2xx within this time (3 s in Graph).
    pub delivery_timeout: Duration,
    /// The validation handshake must be answered within this time (10 s in Graph).
    pub validation_timeout: Duration,
    /// First retry delay after a failed delivery (simulated time); doubles per attempt.
    pub retry_initial_backoff: Duration,
    pub retry_max_backoff: Duration,
    /// Retries stop after this much simulated time since the first attempt (4 hours in Graph).
    pub retry_horizon: Duration,
    /// A delivery answered slower than this counts as slow (2900 ms in Graph).
    pub slow_threshold: Duration,
    /// Window over which slow responses are counted (10 minutes in Graph).
    pub health_window: Duration,
    /// Endpoints are judged only after this many deliveries in the window (100 in Graph).
    pub health_min_samples: usize,
    /// Share of slow responses (percent) that marks an endpoint slow (10 in Graph).
    pub slow_percent: f64,
    /// Share of slow responses (percent) at which notifications are dropped (15 in Graph).
    pub drop_percent: f64,
    /// How long deliveries to a slow endpoint are delayed (10 minutes in Graph).
    pub slow_delay: Duration,
    /// Maximum subscription lifetime for users and groups, in minutes (41,760 in Graph).
    pub max_subscription_minutes: i64,
    /// How long soft-deleted users stay restorable (30 days in Entra ID).
    pub deleted_retention: Duration,
    /// Graph requires HTTPS notification URLs; the simulator accepts `http://` on loopback, and on
    /// any host when this is set (for containers talking to each other).
    pub allow_insecure_notification_urls: bool,
    /// Seed for random faults.
    pub fault_seed: u64,
    /// Base URL written into `@odata.nextLink`/`@odata.deltaLink`; default `http://<listen addr>`.
    pub public_base_url: Option<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            tenant_id: "8a3f6c2e-5b1d-4e7a-9c0f-2d4b6e8a1c3f".into(),
            tenant_domain: "contoso.onmicrosoft.com".into(),
            client_id: "3c9e1a7b-6d2f-4b8e-a5c1-9f0d2e4b7a6c".into(),
            client_secret: "sim~Qw8Xk3.Lp9_Zr2-Vt5Nb7Hy4Jm6Gc1Df0Sa".into(),
            certificate_pem: None,
            token_lifetime: Duration::from_secs(3599),
            delta_page_size: 100,
            delta_token_max_age: Duration::from_secs(7 * 24 * 3600),
            batch_window: Duration::from_millis(100),
            delivery_timeout: Duration::from_secs(3),
            validation_timeout: Duration::from_secs(10),
            retry_initial_backoff: Duration::from_secs(30),
            retry_max_backoff: Duration::from_secs(30 * 60),
            retry_horizon: Duration::from_secs(4 * 3600),
            slow_threshold: Duration::from_millis(2900),
            health_window: Duration::from_secs(600),
            health_min_samples: 100,
            slow_percent: 10.0,
            drop_percent: 15.0,
            slow_delay: Duration::from_secs(600),
            max_subscription_minutes: 41_760,
            deleted_retention: Duration::from_secs(30 * 24 * 3600),
            allow_insecure_notification_urls: false,
            fault_seed: 42,
            public_base_url: None,
        }
    }
}

/// Shared state of one running simulator.
pub struct Sim {
    pub config: SimConfig,
    pub clock: SimClock,
    pub base_url: String,
    /// Key for the HS256 access tokens the simulator issues (Graph's are RS256, but clients must
    /// treat access tokens for Graph as opaque anyway).
    pub signing_key: Vec<u8>,
    pub cert: Option<auth::RegisteredCert>,
    world: Mutex<World>,
    pub faults: Mutex<faults::Faults>,
    pub http: reqwest::Client,
    /// Wakes the delivery loop when something was queued or time was advanced.
    pub wakeup: tokio::sync::Notify,
}

impl Sim {
    /// Locks the tenant state after applying everything simulated time has made due.
    pub fn world(&self) -> MutexGuard<'_, World> {
        let mut w = self.world.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.now();
        w.housekeeping(
            now,
            chrono_duration(self.config.deleted_retention),
            &self.config.tenant_id,
        );
        if w.spontaneous_reauthorizations(now, &self.config.tenant_id) {
            self.wakeup.notify_one();
        }
        w
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// The token endpoint URL a client assertion's `aud` must name.
    pub fn token_endpoint(&self, tenant: &str) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.base_url, tenant)
    }

    pub fn reset(&self) {
        let mut w = self.world.lock().unwrap_or_else(|e| e.into_inner());
        *w = World::default();
        drop(w);
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.clock.reset();
    }
}

pub fn chrono_duration(d: Duration) -> ChronoDuration {
    ChronoDuration::milliseconds(d.as_millis() as i64)
}

/// A simulator serving on a local port until [`RunningSim::shutdown`] (or drop).
pub struct RunningSim {
    sim: Arc<Sim>,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    delivery: tokio::task::JoinHandle<()>,
}

impl RunningSim {
    /// `http://127.0.0.1:PORT` (or the configured public base URL).
    pub fn base_url(&self) -> String {
        self.sim.base_url.clone()
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn config(&self) -> &SimConfig {
        &self.sim.config
    }
    /// Direct access to the shared state, for tests that want to peek.
    pub fn sim(&self) -> Arc<Sim> {
        self.sim.clone()
    }
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.delivery.abort();
        let _ = (&mut self.server).await;
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.delivery.abort();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts the simulator on `listen` (port 0 = a free port) and returns once it accepts requests.
pub async fn start(config: SimConfig, listen: SocketAddr) -> std::io::Result<RunningSim> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let base_url = match &config.public_base_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let host = if addr.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else if addr.is_ipv6() {
                format!("[{}]", addr.ip())
            } else {
                addr.ip().to_string()
            };
            format!("http://{host}:{}", addr.port())
        }
    };
    let cert = match &config.certificate_pem {
        Some(pem) => Some(
            auth::RegisteredCert::from_pem(pem)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        ),
        None => None,
    };
    let signing_key: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(std::io::Error::other)?;
    let sim = Arc::new(Sim {
        faults: Mutex::new(faults::Faults::new(config.fault_seed)),
        config,
        clock: SimClock::default(),
        base_url,
        signing_key,
        cert,
        world: Mutex::new(World::default()),
        http,
        wakeup: tokio::sync::Notify::new(),
    });
    let app = router(sim.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    let delivery = tokio::spawn(delivery::run(sim.clone()));
    Ok(RunningSim {
        sim,
        addr,
        shutdown: Some(tx),
        server,
        delivery,
    })
}

/// All routes: the token endpoint, Graph v1.0 (behind bearer-token checks), and `/_sim`.
pub fn router(sim: Arc<Sim>) -> Router {
    let graph = users::routes()
        .merge(delta::routes())
        .merge(subscriptions::routes())
        .route_layer(middleware::from_fn_with_state(
            sim.clone(),
            auth::require_token,
        ));
    Router::new()
        .merge(auth::routes())
        .merge(graph)
        .merge(control::routes())
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(sim.clone(), faults::inject))
        .layer(middleware::from_fn(length_required))
        .layer(middleware::from_fn_with_state(sim.clone(), simulated_date))
        .with_state(sim)
}

/// Graph's front ends answer `411 Length Required` to a `POST`, `PUT` or `PATCH` that carries
/// neither `Content-Length` nor `Transfer-Encoding` (a bodiless `POST` must say
/// `Content-Length: 0`), before anything else: no auth check, no throttling, no effect. Judged on
/// the request's own headers (hyper adds none to what the server sees).
async fn length_required(req: Request, next: middleware::Next) -> Response {
    use axum::http::{header, Method};
    let graph = req.uri().path() == "/v1.0" || req.uri().path().starts_with("/v1.0/");
    let needs_length = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
    let headers = req.headers();
    if graph
        && needs_length
        && !headers.contains_key(header::CONTENT_LENGTH)
        && !headers.contains_key(header::TRANSFER_ENCODING)
    {
        return GraphError::new(
            StatusCode::LENGTH_REQUIRED,
            "LengthRequired",
            "Length Required: a POST, PUT or PATCH request must carry a Content-Length header (Content-Length: 0 for an empty body) or use chunked Transfer-Encoding.",
        )
        .into_response();
    }
    next.run(req).await
}

/// Every response carries a `Date` header, as Graph's do, in simulated time: clients that judge
/// expiry by the server's clock follow `/_sim/time/advance`.
async fn simulated_date(
    State(sim): State<Arc<Sim>>,
    req: Request,
    next: middleware::Next,
) -> Response {
    let mut response = next.run(req).await;
    let date = sim.now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    if let Ok(value) = axum::http::HeaderValue::from_str(&date) {
        response
            .headers_mut()
            .insert(axum::http::header::DATE, value);
    }
    response
}

async fn fallback(req: Request) -> Response {
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/v1.0/") {
        let segment = rest.split('/').next_back().unwrap_or(rest);
        GraphError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("Resource not found for the segment '{segment}'."),
        )
        .into_response()
    } else {
        (StatusCode::NOT_FOUND, "not found").into_response()
    }
}
