//! The admin API: what `shadowsync serve` answers on `[admin] listen` (loopback only), so that
//! the admin commands work while it holds the store (redb lets one process open it), and its
//! client. Both sides use the application's admin operations and print the same reports.

use anyhow::{anyhow, bail, Context, Result};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;
use shadowsync_app::admin::{self, StatusReport, UserReport};
use shadowsync_app::{App, Outcome};
use shadowsync_queue::DeadLetter;
use std::sync::Arc;

type AdminState = Arc<App>;

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

/// The admin API; `serve` binds it to loopback only.
pub fn router(admin: AdminState) -> Router {
    Router::new()
        .route("/admin/status", get(api_status))
        .route("/admin/users/{key}", get(api_user))
        .route("/admin/plan", get(api_plan))
        .route("/admin/sync", post(api_sync))
        .route("/admin/dead-letters", get(api_dead_letters))
        .route("/admin/dead-letters/{id}/retry", post(api_retry))
        .route("/admin/dead-letters/{id}", axum::routing::delete(api_drop))
        .with_state(admin)
}

async fn api_status(State(a): State<AdminState>) -> ApiResult<StatusReport> {
    Ok(Json(
        admin::status(a.state.as_ref(), a.queue.as_ref()).await?,
    ))
}

async fn api_user(State(a): State<AdminState>, Path(key): Path<String>) -> ApiResult<UserReport> {
    Ok(Json(a.user_report(&key).await?))
}

async fn api_plan(State(a): State<AdminState>) -> ApiResult<Vec<Outcome>> {
    Ok(Json(a.plan(|_, _| {}).await?))
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

/// A client of a running host's admin API.
pub struct Remote {
    base: String,
    http: reqwest::Client,
}

impl Remote {
    pub fn new(listen: std::net::SocketAddr) -> Self {
        Self {
            base: format!("http://{listen}"),
            http: reqwest::Client::new(),
        }
    }

    /// Calls `/admin/<segments…>`; each segment is percent-encoded as needed.
    pub async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        segments: &[&str],
    ) -> Result<T> {
        let mut url = reqwest::Url::parse(&self.base)?;
        url.path_segments_mut()
            .map_err(|_| anyhow!("bad admin URL {}", self.base))?
            .push("admin")
            .extend(segments);
        let response = self
            .http
            .request(method, url)
            .send()
            .await
            .with_context(|| {
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
