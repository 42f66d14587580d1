//! The webhook Microsoft Graph delivers change and lifecycle notifications to.
//!
//! It answers the validation handshake, authenticates each item (`clientState`, `tenantId`),
//! turns the good ones into jobs and stores them with one durable `send_batch` before it answers
//! `202`; a notification whose job still waits, not started, is folded into it ([`PendingJobs`]). It never calls Graph or LDAP: the provisioner re-reads the user, so a notification is
//! only a hint. An axum [`Router`], so the same code serves a local listener and Lambda.

mod metrics;
mod payload;

pub use metrics::{MetricsSnapshot, RejectReason, WebhookMetrics};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use secrecy::SecretString;
use shadowsync_queue::{PendingJobs, Queue};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};
use uuid::Uuid;

pub const NOTIFICATIONS_PATH: &str = "/api/notifications";
pub const LIFECYCLE_PATH: &str = "/api/lifecycle";

/// Graph's batches are far smaller; anything bigger is not from Graph.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Graph's validation tokens are short opaque strings. A longer one is not Graph's, and echoing
/// it would make the webhook a mirror for whatever someone puts in a link.
pub const MAX_VALIDATION_TOKEN_BYTES: usize = 1024;

/// Graph counts a delivery as failed after 3 s and marks endpoints slower than 10 s for drop, so a
/// stuck queue is answered with a 503 (Graph retries) well before either.
pub const DEFAULT_ENQUEUE_TIMEOUT: Duration = Duration::from_millis(2500);

/// Rejected items logged one by one per request; the rest only in a summary line, so that one
/// forged 1 MiB body cannot write tens of thousands of log lines.
const MAX_REJECTION_WARNINGS: usize = 10;

pub struct WebhookState {
    pub queue: Arc<dyn Queue>,
    /// Folds a redelivered notification into the job that waits for it.
    pub pending: Arc<PendingJobs>,
    /// The `clientState` our subscriptions are created with.
    pub client_state: SecretString,
    /// The `clientState` being rotated out: accepted too while set, so that notifications of
    /// the subscription being replaced are not lost.
    pub previous_client_state: Option<SecretString>,
    /// Our Entra tenant; items from any other are discarded.
    pub tenant_id: Uuid,
    pub metrics: Arc<WebhookMetrics>,
    pub enqueue_timeout: Duration,
}

impl WebhookState {
    pub fn new(
        queue: Arc<dyn Queue>,
        pending: Arc<PendingJobs>,
        client_state: SecretString,
        tenant_id: Uuid,
    ) -> Self {
        Self {
            queue,
            pending,
            client_state,
            previous_client_state: None,
            tenant_id,
            metrics: Arc::new(WebhookMetrics::new()),
            enqueue_timeout: DEFAULT_ENQUEUE_TIMEOUT,
        }
    }
}

/// `POST /api/notifications` and `POST /api/lifecycle`.
///
/// Both accept both kinds of item: Graph allows the lifecycle URL to equal the notification URL,
/// and an authenticated `reauthorizationRequired` is worth keeping whichever URL it reached. The
/// paths differ only in logs.
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route(NOTIFICATIONS_PATH, post(notifications))
        .route(LIFECYCLE_PATH, post(lifecycle))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(state))
}

async fn notifications(State(state): State<Arc<WebhookState>>, request: Request) -> Response {
    handle(&state, "notifications", request).await
}

async fn lifecycle(State(state): State<Arc<WebhookState>>, request: Request) -> Response {
    handle(&state, "lifecycle", request).await
}

async fn handle(state: &WebhookState, endpoint: &'static str, request: Request) -> Response {
    // The handshake comes first and touches nothing else: Graph wants it within 10 s, and its
    // body (if any) is irrelevant.
    if let Some(token) = validation_token(request.uri()) {
        if token.len() > MAX_VALIDATION_TOKEN_BYTES {
            return refuse(
                state,
                endpoint,
                StatusCode::BAD_REQUEST,
                "validationToken too long",
            );
        }
        state.metrics.handshake();
        info!(endpoint, "answered Graph's validation handshake");
        return handshake(token);
    }

    if !is_json(request.headers()) {
        return refuse(
            state,
            endpoint,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected application/json",
        );
    }
    // Honours `DefaultBodyLimit`: 413 beyond MAX_BODY_BYTES.
    let body = match Bytes::from_request(request, &()).await {
        Ok(body) => body,
        Err(rejection) => return refuse(state, endpoint, rejection.status(), "unreadable body"),
    };
    let collection: payload::Collection = match serde_json::from_slice(&body) {
        Ok(collection) => collection,
        Err(_) => {
            return refuse(
                state,
                endpoint,
                StatusCode::BAD_REQUEST,
                "expected {\"value\": [...]}",
            )
        }
    };

    let received_at = Utc::now();
    let expected = payload::Expected {
        client_state: &state.client_state,
        previous_client_state: state.previous_client_state.as_ref(),
        tenant_id: state.tenant_id,
    };
    state.metrics.items_received(collection.value.len());
    let mut jobs = Vec::new();
    let mut subscriptions = BTreeSet::new();
    let mut rejected = 0;
    for (index, raw) in collection.value.into_iter().enumerate() {
        match payload::classify(raw, &expected) {
            Ok(item) => {
                subscriptions.extend(item.subscription_id().map(str::to_owned));
                jobs.push(item.into_job(received_at));
            }
            Err(rejection) => {
                state.metrics.rejected(rejection.reason);
                rejected += 1;
                if rejected <= MAX_REJECTION_WARNINGS {
                    // Never the clientState: a near-miss would help whoever is guessing it.
                    warn!(
                        endpoint,
                        index,
                        reason = %rejection.reason,
                        subscription_id = ?rejection.subscription_id,
                        "discarded notification item"
                    );
                }
            }
        }
    }
    if rejected > MAX_REJECTION_WARNINGS {
        warn!(
            endpoint,
            rejected,
            "discarded notification items (only the first {MAX_REJECTION_WARNINGS} logged)"
        );
    }

    // Nothing valid: 202 all the same. Graph retries only non-2xx, and a retry of forged or
    // foreign items could never succeed; the same answer for every outcome also gives whoever
    // forges items no oracle for guessing the clientState.
    if jobs.is_empty() {
        return StatusCode::ACCEPTED.into_response();
    }

    let count = jobs.len();
    let send = state.pending.send(&*state.queue, jobs);
    match tokio::time::timeout(state.enqueue_timeout, send).await {
        Ok(Ok(sent)) => {
            state.metrics.jobs_enqueued(sent.sent);
            state.metrics.folded(sent.folded);
            info!(
                endpoint,
                count = sent.sent,
                folded = sent.folded,
                ?subscriptions,
                "enqueued notification batch"
            );
            StatusCode::ACCEPTED.into_response()
        }
        // 503 so Graph retries the whole batch (for up to 4 hours). Items that were stored in
        // spite of a timeout are then enqueued twice, which converge tolerates.
        Ok(Err(e)) => enqueue_failed(state, endpoint, count, &e.to_string()),
        Err(_) => enqueue_failed(state, endpoint, count, "timed out"),
    }
}

/// `validationToken` from the query, form-decoded (`+` is a space, `%2B` a plus), as Graph expects.
fn validation_token(uri: &Uri) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(name, _)| name == "validationToken")
        .map(|(_, token)| token.into_owned())
}

/// The token back as plain text, never HTML: `nosniff` stops a browser from rendering a
/// `<script>` someone put in a crafted link.
fn handshake(token: String) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/plain")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        token,
    )
        .into_response()
}

/// Graph sends `application/json`, possibly with parameters such as a charset.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

fn refuse(
    state: &WebhookState,
    endpoint: &'static str,
    status: StatusCode,
    why: &'static str,
) -> Response {
    state.metrics.request_rejected();
    warn!(endpoint, status = status.as_u16(), why, "refused request");
    (status, why).into_response()
}

fn enqueue_failed(
    state: &WebhookState,
    endpoint: &'static str,
    count: usize,
    error: &str,
) -> Response {
    state.metrics.enqueue_failed(count);
    error!(
        endpoint,
        count, error, "enqueueing failed; answering 503 so Graph retries"
    );
    StatusCode::SERVICE_UNAVAILABLE.into_response()
}
