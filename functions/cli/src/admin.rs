//! The administrator's commands: `plan`, `sync`, `status`, `dead-letters`.
//!
//! redb lets one process open the store, so while `serve` runs these commands go through its
//! admin API (loopback only); otherwise they open the store themselves. Both paths call the same
//! functions here and print the same reports.

use anyhow::{anyhow, bail, Context, Result};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shadowsync_converge::{Converger, Hint, Outcome};
use shadowsync_core::{ActualAccount, GraphUser, Operation, UserLookup};
use shadowsync_queue::{DeadLetter, Job, JobSource, Queue, QueueStats};
use shadowsync_state::records::GUESTS;
use shadowsync_state::{AccountStatus, GuestRecord, KeyValueStore};
use shadowsync_subscriptions::SubscriptionRecord;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Guests converged (or planned) at once by the admin commands.
const CONCURRENCY: usize = 8;

#[derive(Debug, Serialize, Deserialize)]
pub struct StatusReport {
    pub subscription: Option<SubscriptionRecord>,
    /// When the reconciler last completed a delta round.
    pub delta_checkpoint: Option<DateTime<Utc>>,
    pub queue: QueueStats,
    pub accounts: BTreeMap<String, u64>,
    /// `(objectId, reason)` of every guest in conflict.
    pub conflicts: Vec<(String, String)>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UserReport {
    pub object_id: String,
    /// `active`, `soft-deleted` or `not found`.
    pub graph_state: String,
    pub graph: Option<GraphUser>,
    pub directory: Vec<ActualAccount>,
    pub record: Option<GuestRecord>,
    /// What converging this guest now would do.
    pub plan: Vec<Operation>,
}

pub async fn status(state: &dyn KeyValueStore, queue: &dyn Queue) -> Result<StatusReport> {
    let subscription = SubscriptionRecord::load(state).await?.map(|v| v.value);
    let delta_checkpoint = shadowsync_state::get_json::<Value>(state, "checkpoints", "users_delta")
        .await?
        .and_then(|v| {
            v.value["completed_at"]
                .as_str()
                .and_then(|t| t.parse().ok())
        });
    let mut accounts = BTreeMap::new();
    let mut conflicts = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = state.scan(GUESTS, after.as_deref(), 500).await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (key, raw) in page {
            let record: GuestRecord = serde_json::from_slice(&raw.value)
                .with_context(|| format!("guest record {key}"))?;
            *accounts.entry(status_name(record.status)).or_insert(0) += 1;
            if let Some(reason) = record.conflict {
                conflicts.push((record.object_id, reason));
            }
        }
    }
    Ok(StatusReport {
        subscription,
        delta_checkpoint,
        queue: queue.stats().await?,
        accounts,
        conflicts,
    })
}

fn status_name(status: AccountStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Finds a guest by objectId, userPrincipalName or sAMAccountName.
pub async fn resolve_user(converger: &Converger, key: &str) -> Result<String> {
    if uuid::Uuid::parse_str(key).is_ok() {
        return Ok(key.to_lowercase());
    }
    if key.contains('@') {
        // Graph's `/users/{id | userPrincipalName}` takes a UPN as it is.
        return match converger.graph.user(key).await? {
            UserLookup::Active(user) => Ok(user.id),
            _ => bail!("no user {key} in Graph"),
        };
    }
    let object = converger
        .directory
        .find_by_sam_account_name(key)
        .await?
        .ok_or_else(|| anyhow!("no object with sAMAccountName {key} in the directory"))?;
    object
        .anchor
        .as_deref()
        .and_then(|a| converger.policy.anchor.object_id(a))
        .map(str::to_string)
        .ok_or_else(|| {
            anyhow!(
                "{} is not a shadow account (no shadowsync anchor)",
                object.dn
            )
        })
}

pub async fn user_report(converger: &Converger, key: &str) -> Result<UserReport> {
    let object_id = resolve_user(converger, key).await?;
    let (graph_state, graph) = match converger.graph.user(&object_id).await? {
        UserLookup::Active(u) => ("active", Some(u)),
        UserLookup::SoftDeleted(u) => ("soft-deleted", Some(u)),
        UserLookup::Gone => ("not found", None),
    };
    let directory = converger
        .directory
        .find_by_anchor(&converger.policy.anchor.value_for(&object_id))
        .await?;
    let record = GuestRecord::load(converger.state.as_ref(), &object_id)
        .await?
        .map(|r| r.value);
    let plan = converger.dry_run(&object_id, Hint::default()).await?.plan;
    Ok(UserReport {
        object_id,
        graph_state: graph_state.into(),
        graph,
        directory,
        record,
        plan,
    })
}

/// Everyone a full sync looks at: every guest in Graph, and every account carrying an anchor in
/// the managed OUs (whose guest may be gone or out of scope).
pub async fn candidates(converger: &Converger) -> Result<Vec<String>> {
    let mut ids = BTreeSet::new();
    let mut next = Some("/v1.0/users?$filter=userType eq 'Guest'&$select=id&$top=999".to_string());
    while let Some(url) = next {
        let page: Value = converger.graph.get_json(&url).await?;
        for user in page["value"].as_array().into_iter().flatten() {
            if let Some(id) = user["id"].as_str() {
                ids.insert(id.to_lowercase());
            }
        }
        next = page["@odata.nextLink"].as_str().map(str::to_string);
    }
    let policy = &converger.policy;
    for ou in [&policy.guests_ou, &policy.disabled_ou] {
        for account in converger.directory.list_accounts(ou).await? {
            if let Some(id) = account
                .anchor
                .as_deref()
                .and_then(|a| policy.anchor.object_id(a))
            {
                ids.insert(id.to_lowercase());
            }
        }
    }
    Ok(ids.into_iter().collect())
}

/// What a full sync would do, per guest, changing nothing.
pub async fn plan(converger: &Converger, progress: impl Fn(u64, u64)) -> Result<Vec<Outcome>> {
    let ids = candidates(converger).await?;
    let total = ids.len() as u64;
    let mut outcomes = Vec::with_capacity(ids.len());
    let mut runs = futures::stream::iter(ids)
        .map(|id| async move { converger.dry_run(&id, Hint::default()).await })
        .buffer_unordered(CONCURRENCY);
    while let Some(outcome) = runs.next().await {
        outcomes.push(outcome?);
        progress(outcomes.len() as u64, total);
    }
    outcomes.sort_by(|a, b| {
        (&a.user_principal_name, &a.user_id).cmp(&(&b.user_principal_name, &b.user_id))
    });
    Ok(outcomes)
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SyncReport {
    pub guests: u64,
    pub changed: u64,
    pub by_status: BTreeMap<String, u64>,
    pub conflicts: Vec<(String, String)>,
    pub errors: Vec<(String, String)>,
}

/// A full sync now, in this process.
pub async fn sync(converger: &Converger, progress: impl Fn(u64, u64)) -> Result<SyncReport> {
    let ids = candidates(converger).await?;
    let mut report = SyncReport {
        guests: ids.len() as u64,
        ..Default::default()
    };
    let mut done = 0;
    let mut runs = futures::stream::iter(ids)
        .map(|id| async move { (id.clone(), converger.converge(&id, Hint::default()).await) })
        .buffer_unordered(CONCURRENCY);
    while let Some((id, result)) = runs.next().await {
        match result {
            Ok(outcome) => {
                report.changed +=
                    u64::from(!outcome.plan.is_empty() && outcome.conflict().is_none());
                *report
                    .by_status
                    .entry(status_name(outcome.status))
                    .or_insert(0) += 1;
                if let Some(reason) = outcome.conflict() {
                    report.conflicts.push((id, reason.to_string()));
                }
            }
            Err(e) => report.errors.push((id, e.to_string())),
        }
        done += 1;
        progress(done, report.guests);
    }
    Ok(report)
}

/// A full sync by the running host: a job per guest on its queue. Returns how many.
pub async fn enqueue_sync(converger: &Converger, queue: &dyn Queue) -> Result<usize> {
    let ids = candidates(converger).await?;
    let now = Utc::now();
    let count = ids.len();
    for chunk in ids.chunks(100) {
        let jobs = chunk
            .iter()
            .map(|id| Job::Converge {
                user_id: id.clone(),
                change_type: None,
                subscription_id: None,
                received_at: now,
                source: JobSource::Admin,
            })
            .collect();
        queue.send_batch(jobs).await?;
    }
    Ok(count)
}

/// What `serve`'s admin API works with.
#[derive(Clone)]
pub struct AdminState {
    pub state: Arc<dyn KeyValueStore>,
    pub queue: Arc<dyn Queue>,
    pub converger: Arc<Converger>,
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
    Ok(Json(status(a.state.as_ref(), a.queue.as_ref()).await?))
}

async fn api_user(State(a): State<AdminState>, Path(key): Path<String>) -> ApiResult<UserReport> {
    Ok(Json(user_report(&a.converger, &key).await?))
}

async fn api_plan(State(a): State<AdminState>) -> ApiResult<Vec<Outcome>> {
    Ok(Json(plan(&a.converger, |_, _| {}).await?))
}

async fn api_sync(State(a): State<AdminState>) -> ApiResult<Value> {
    let enqueued = enqueue_sync(&a.converger, a.queue.as_ref()).await?;
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
