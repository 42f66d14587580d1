//! `/_sim`: the control API for what Graph has no API for — simulated time, faults, accepting
//! invitations, users synced from on-premises AD, lifecycle events, the unkind switches, the
//! delivery log, reset. No auth.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::clock::graph_time_precise;
use crate::error::{GraphError, GraphResult};
use crate::faults::{FaultRule, FaultStats};
use crate::query::QueryOptions;
use crate::state::Switches;
use crate::synced::SyncedUser;
use crate::Sim;

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/_sim/health", get(|| async { "ok" }))
        .route("/_sim/time", get(time))
        .route("/_sim/time/advance", post(advance))
        .route(
            "/_sim/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_sim/faults/stats", get(fault_stats))
        .route("/_sim/faults/{id}", delete(remove_fault))
        .route("/_sim/users/bulk", post(bulk_users))
        .route("/_sim/users/synced", post(create_synced_user))
        .route("/_sim/users/{id}/synced", patch(sync_user))
        .route("/_sim/users/{id}", get(raw_user))
        .route("/_sim/users/{id}/accept-invitation", post(accept))
        .route("/_sim/switches", get(get_switches).post(set_switches))
        .route("/_sim/subscriptions", get(list_subscriptions))
        .route("/_sim/subscriptions/{id}/lifecycle", post(lifecycle))
        .route("/_sim/deliveries", get(deliveries).delete(clear_deliveries))
        .route("/_sim/endpoint-health", get(endpoint_health))
        .route("/_sim/reset", post(reset))
}

fn time_body(sim: &Sim) -> Value {
    json!({ "now": graph_time_precise(sim.now()), "offsetSeconds": sim.clock.offset_seconds() })
}

async fn time(State(sim): State<Arc<Sim>>) -> Json<Value> {
    Json(time_body(&sim))
}

/// `POST /_sim/time/advance {"seconds": N}`: everything that expires follows.
async fn advance(State(sim): State<Arc<Sim>>, Json(body): Json<Value>) -> GraphResult<Json<Value>> {
    let seconds = body
        .get("seconds")
        .and_then(Value::as_f64)
        .filter(|s| *s >= 0.0)
        .ok_or_else(|| {
            GraphError::bad_request("Body must be {\"seconds\": <non-negative number>}.")
        })?;
    sim.clock.advance(seconds);
    // Apply what the jump made due (expiry, purges, spontaneous reauthorizations) before
    // answering, so the caller observes it at once.
    drop(sim.world());
    sim.wakeup.notify_one();
    Ok(Json(time_body(&sim)))
}

async fn list_faults(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let f = sim.faults.lock().unwrap_or_else(|e| e.into_inner());
    Json(json!({ "value": f.rules }))
}

async fn fault_stats(State(sim): State<Arc<Sim>>) -> Json<FaultStats> {
    Json(sim.faults.lock().unwrap_or_else(|e| e.into_inner()).stats)
}

async fn add_fault(State(sim): State<Arc<Sim>>, Json(rule): Json<FaultRule>) -> Response {
    let id = sim
        .faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .add(rule);
    (StatusCode::CREATED, Json(json!({ "id": id }))).into_response()
}

async fn clear_faults(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.faults.lock().unwrap_or_else(|e| e.into_inner()).clear();
    StatusCode::NO_CONTENT
}

async fn remove_fault(State(sim): State<Arc<Sim>>, Path(id): Path<u64>) -> StatusCode {
    if sim
        .faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id)
    {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

/// Every stored property of a user, live or soft-deleted (for assertions in tests), plus the
/// simulator's `visibleFrom`: the simulated time from which single-user reads see the user's
/// last change (its last change plus `replicationLagSeconds`).
async fn raw_user(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> GraphResult<Json<Value>> {
    let w = sim.world();
    let u = w
        .users
        .get(&id)
        .ok_or_else(|| GraphError::resource_not_found(&id))?;
    let mut props = crate::state::full_props(&u.props);
    props.insert(
        "visibleFrom".into(),
        json!(graph_time_precise(w.visible_from(u))),
    );
    Ok(Json(Value::Object(props)))
}

/// `POST /_sim/users/bulk {"guests": N, "members": M, "accepted": true, "prefix": "p",
/// "domain": "d"}`
async fn bulk_users(
    State(sim): State<Arc<Sim>>,
    Json(spec): Json<crate::users::BulkUsers>,
) -> Json<crate::users::BulkCreated> {
    Json(crate::users::bulk_create(&sim, &spec))
}

/// `POST /_sim/users/synced`: a user as Entra Connect provisions it (see [`SyncedUser`]) → 201
/// with every stored property.
async fn create_synced_user(
    State(sim): State<Arc<Sim>>,
    Json(spec): Json<SyncedUser>,
) -> GraphResult<Response> {
    let user = crate::synced::create_synced_user(&sim, &spec)?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

/// `PATCH /_sim/users/{id}/synced`: an AD change arriving with the next sync cycle.
async fn sync_user(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> GraphResult<Json<Value>> {
    let changes = body
        .as_object()
        .ok_or_else(|| GraphError::bad_request("Body must be a JSON object."))?;
    crate::synced::apply_sync_update(&sim, &id, changes).map(Json)
}

async fn accept(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> GraphResult<Json<Value>> {
    crate::users::accept_invitation(&sim, &id).map(Json)
}

async fn get_switches(State(sim): State<Arc<Sim>>) -> Json<Switches> {
    Json(sim.world().switches.clone())
}

/// Sets any subset of the switches; the others keep their values. Setting `staleDeltaTokens` to
/// a non-null value (again or for the first time) makes every delta link minted so far stale.
async fn set_switches(
    State(sim): State<Arc<Sim>>,
    Json(body): Json<Value>,
) -> GraphResult<Json<Switches>> {
    let mut w = sim.world();
    let mut current = serde_json::to_value(&w.switches).expect("serializable");
    let patch = body
        .as_object()
        .ok_or_else(|| GraphError::bad_request("Body must be a JSON object."))?;
    for (k, v) in patch {
        if current.get(k).is_none() {
            return Err(GraphError::bad_request(format!("Unknown switch '{k}'.")));
        }
        current[k] = v.clone();
    }
    let switches: Switches =
        serde_json::from_value(current).map_err(|e| GraphError::bad_request(e.to_string()))?;
    if patch.contains_key("staleDeltaTokens") && switches.stale_delta_tokens.is_some() {
        w.delta_epoch += 1;
    }
    w.switches = switches;
    Ok(Json(w.switches.clone()))
}

async fn list_subscriptions(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let w = sim.world();
    let value: Vec<Value> = w
        .subscriptions
        .values()
        .map(|s| {
            let mut v = crate::subscriptions::subscription_json(&sim, s);
            v["needsReauthorization"] = json!(s.needs_reauthorization);
            v["paused"] = json!(s.paused);
            v["withheld"] = json!(s.withheld.len());
            v["lastAuthorizedDateTime"] = json!(graph_time_precise(s.authorized_at));
            v
        })
        .collect();
    Json(json!({ "value": value }))
}

/// `POST /_sim/subscriptions/{id}/lifecycle {"lifecycleEvent": "reauthorizationRequired", "pauseDelivery": false}`
async fn lifecycle(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> GraphResult<Json<Value>> {
    let event = body
        .get("lifecycleEvent")
        .and_then(Value::as_str)
        .unwrap_or("reauthorizationRequired");
    let pause = body
        .get("pauseDelivery")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    crate::subscriptions::trigger_lifecycle(&sim, &id, event, pause).map(Json)
}

/// `GET /_sim/deliveries[?kind=notification&url=...&outcome=...]`
async fn deliveries(State(sim): State<Arc<Sim>>, RawQuery(q): RawQuery) -> Json<Value> {
    let opts = QueryOptions::from_raw(q.as_deref());
    let w = sim.world();
    let value: Vec<Value> = w
        .delivery
        .log
        .iter()
        .filter(|r| opts.get("kind").is_none_or(|k| r.kind == k))
        .filter(|r| opts.get("url").is_none_or(|u| r.url.starts_with(u)))
        .filter(|r| opts.get("outcome").is_none_or(|o| r.outcome == o))
        .map(|r| serde_json::to_value(r).expect("serializable"))
        .collect();
    Json(json!({ "value": value, "backlog": w.delivery.backlog() }))
}

async fn clear_deliveries(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.world().delivery.clear_log();
    StatusCode::NO_CONTENT
}

async fn endpoint_health(
    State(sim): State<Arc<Sim>>,
    RawQuery(q): RawQuery,
) -> GraphResult<Json<Value>> {
    let opts = QueryOptions::from_raw(q.as_deref());
    let url = opts
        .get("url")
        .ok_or_else(|| GraphError::bad_request("Query parameter 'url' is required."))?;
    let health = sim.world().delivery.health(url);
    Ok(Json(json!({ "url": url, "health": health })))
}

/// Empties the tenant, subscriptions, logs, faults and switches, and resets simulated time.
async fn reset(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.reset();
    StatusCode::NO_CONTENT
}
