//! The admin API: what `shadowsync serve` answers on `[admin] listen` (loopback only), so that
//! the admin commands work while it holds the store (redb lets one process open it), and its
//! client. Both sides use the application's admin operations and print the same reports.
//!
//! Loopback is not a door of its own: any local user, or a web page through DNS rebinding, can
//! reach it. So every request carries a token `serve` writes at start into a file only its
//! user can read ([`token_path`], mode 0600, beside the store); the admin commands read it from
//! there. A browser cannot read the file, nor send the header to another origin unasked.

use anyhow::{anyhow, bail, Context, Result};
use axum::extract::{Path, Request, State};
use axum::http::{header::AUTHORIZATION, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;
use shadowsync_app::admin::{self, HeldSelection, StatusReport, UserReport, WebhookReport};
use shadowsync_app::partners::PartnerReport;
use shadowsync_app::{App, Outcome, PartnerOutcome};
use shadowsync_queue::DeadLetter;
use shadowsync_state::HeldChange;
use std::sync::Arc;

type AdminState = Arc<App>;

/// The running webhook's counters, and since when.
#[derive(Clone)]
pub struct WebhookCounters {
    pub metrics: Arc<shadowsync_notifications::WebhookMetrics>,
    pub since: chrono::DateTime<chrono::Utc>,
}

impl WebhookCounters {
    fn report(&self) -> WebhookReport {
        let now = self.metrics.snapshot();
        WebhookReport {
            since: self.since,
            notifications_received: now.items_received,
            jobs_enqueued: now.jobs_enqueued,
            folded: now.folded,
            rejected: now
                .counters()
                .into_iter()
                .filter(|(name, n)| *n > 0 && name.contains("Rejected"))
                .map(|(name, n)| (name.to_string(), n))
                .collect(),
        }
    }
}

struct ApiError(anyhow::Error);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({"error": format!("{:#}", self.0)}));
        (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
    }
}

impl<E: Into<anyhow::Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

type ApiResult<T> = std::result::Result<Json<T>, ApiError>;

/// Where `serve` writes the admin API's token: beside the store, `<store file>.admin-token`.
pub fn token_path(store: &std::path::Path) -> std::path::PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".admin-token");
    name.into()
}

/// A fresh random token (256 bits from the OS's CSPRNG, hex), written to `path` for the
/// service's user only (0600), replacing what an earlier run wrote.
pub fn write_token(path: &std::path::Path) -> Result<String> {
    use rand::RngCore;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // Removed first: an existing file keeps its mode whatever `mode` says.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("replacing {}", path.display()))
        }
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing the admin token to {}", path.display()))?;
    file.write_all(token.as_bytes())?;
    Ok(token)
}

/// The admin API; `serve` binds it to loopback only, and every request must carry `token`.
pub fn router(admin: AdminState, token: String, webhook: WebhookCounters) -> Router {
    let expected = digest(&token);
    Router::new()
        .route("/admin/status", get(api_status))
        .route("/admin/users/{key}", get(api_user))
        .route("/admin/plan", get(api_plan))
        .route("/admin/plan/partners", get(api_plan_partners))
        .route("/admin/partners/{key}", get(api_partner))
        .route("/admin/sync", post(api_sync))
        .route("/admin/dead-letters", get(api_dead_letters))
        .route("/admin/dead-letters/{id}/retry", post(api_retry))
        .route("/admin/dead-letters/{id}", axum::routing::delete(api_drop))
        .route("/admin/held", get(api_held))
        .route("/admin/held/release", post(api_release))
        .route("/admin/held/discard", post(api_discard))
        .layer(axum::Extension(webhook))
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| {
                let expected = expected.clone();
                async move { authorized(request, next, &expected).await }
            },
        ))
        .with_state(admin)
}

fn digest(token: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).to_vec()
}

/// Lets through a request with `Authorization: Bearer <token>`. Digests are compared, so the
/// comparison's time says nothing about the token.
async fn authorized(request: Request, next: Next, expected: &[u8]) -> Response {
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(token) if digest(token) == expected => next.run(request).await,
        _ => {
            let body = Json(serde_json::json!({
                "error": "the admin API needs the token serve wrote beside its store (<state path>.admin-token): run the command as the service's user"
            }));
            (StatusCode::UNAUTHORIZED, body).into_response()
        }
    }
}

async fn api_status(
    State(a): State<AdminState>,
    axum::Extension(webhook): axum::Extension<WebhookCounters>,
) -> ApiResult<StatusReport> {
    let mut report = admin::status(a.state.as_ref(), a.queue.as_ref()).await?;
    report.webhook = Some(webhook.report());
    report.clock_offset_seconds = admin::clock_offset(a.graph.clock().now(), chrono::Utc::now());
    Ok(Json(report))
}

async fn api_user(State(a): State<AdminState>, Path(key): Path<String>) -> ApiResult<UserReport> {
    Ok(Json(a.user_report(&key).await?))
}

async fn api_plan(State(a): State<AdminState>) -> ApiResult<Vec<Outcome>> {
    Ok(Json(a.plan(|_, _| {}).await?))
}

async fn api_plan_partners(State(a): State<AdminState>) -> ApiResult<Vec<PartnerOutcome>> {
    Ok(Json(a.plan_partners(|_, _| {}).await?))
}

/// The partner account `key` names; `null` when it names none (or the direction is off).
async fn api_partner(
    State(a): State<AdminState>,
    Path(key): Path<String>,
) -> ApiResult<Option<PartnerReport>> {
    Ok(Json(a.partner_report(&key).await?))
}

async fn api_sync(State(a): State<AdminState>) -> ApiResult<Value> {
    let enqueued = a.enqueue_sync().await?;
    Ok(Json(serde_json::json!({ "enqueued": enqueued })))
}

async fn api_dead_letters(State(a): State<AdminState>) -> ApiResult<Vec<DeadLetter>> {
    Ok(Json(a.queue.dead_letters().await?))
}

async fn api_retry(State(a): State<AdminState>, Path(id): Path<String>) -> ApiResult<Value> {
    a.queue.redrive(&id).await?;
    Ok(Json(Value::Null))
}

async fn api_drop(State(a): State<AdminState>, Path(id): Path<String>) -> ApiResult<Value> {
    a.queue.drop_dead_letter(&id).await?;
    Ok(Json(Value::Null))
}

async fn api_held(State(a): State<AdminState>) -> ApiResult<Vec<HeldChange>> {
    Ok(Json(
        shadowsync_app::safety::held_changes(a.state.as_ref()).await?,
    ))
}

async fn api_release(
    State(a): State<AdminState>,
    Json(selection): Json<HeldSelection>,
) -> ApiResult<Vec<HeldChange>> {
    let identity = a.graph.identity();
    Ok(Json(
        admin::release_held(a.state.as_ref(), a.queue.as_ref(), identity, &selection).await?,
    ))
}

async fn api_discard(
    State(a): State<AdminState>,
    Json(selection): Json<HeldSelection>,
) -> ApiResult<Vec<HeldChange>> {
    Ok(Json(
        admin::discard_held(a.state.as_ref(), &selection).await?,
    ))
}

/// A client of a running host's admin API.
pub struct Remote {
    base: String,
    http: reqwest::Client,
    token: String,
}

impl Remote {
    /// A client of the serve listening on `listen`, with the token it wrote beside `store`.
    pub fn new(listen: std::net::SocketAddr, store: &std::path::Path) -> Result<Self> {
        let path = token_path(store);
        let token = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "the store is in use (is `shadowsync serve` running?), and its admin token {} cannot be read: run the command as the service's user",
                path.display()
            )
        })?;
        Ok(Self {
            base: format!("http://{listen}"),
            http: reqwest::Client::new(),
            token: token.trim().to_string(),
        })
    }

    /// Calls `/admin/<segments…>`; each segment is percent-encoded as needed.
    pub async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        segments: &[&str],
    ) -> Result<T> {
        self.request(method, segments, None::<&()>).await
    }

    /// Like [`Remote::call`], with `body` as JSON.
    pub async fn send<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        body: &impl serde::Serialize,
    ) -> Result<T> {
        self.request(method, segments, Some(body)).await
    }

    async fn request<T: serde::de::DeserializeOwned, B: serde::Serialize>(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        body: Option<&B>,
    ) -> Result<T> {
        let mut url = reqwest::Url::parse(&self.base)?;
        url.path_segments_mut()
            .map_err(|_| anyhow!("bad admin URL {}", self.base))?
            .push("admin")
            .extend(segments);
        let mut request = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.with_context(|| {
            format!(
                "the store is in use, but no shadowsync serve answers at {}",
                self.base
            )
        })?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .context("reading the admin API's answer")?;
        if !status.is_success() {
            bail!(
                "{}",
                body["error"].as_str().unwrap_or("the admin API failed")
            );
        }
        Ok(serde_json::from_value(body)?)
    }
}
