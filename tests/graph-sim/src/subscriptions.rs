//! `/v1.0/subscriptions`: create (with the documented validation handshake), list, get, renew
//! (PATCH), delete and reauthorize, with Graph's limits for the directory resources `users` and
//! `groups`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::clock::graph_time_precise;
use crate::delivery::{DeliveryRecord, QueuedNotification};
use crate::error::{GraphError, GraphResult};
use crate::state::{Collection, Subscription};
use crate::Sim;

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/v1.0/subscriptions", get(list).post(create))
        .route(
            "/v1.0/subscriptions/{id}",
            get(get_one).patch(renew).delete(remove),
        )
        .route("/v1.0/subscriptions/{id}/reauthorize", post(reauthorize))
}

/// Shortest subscription lifetime Graph grants; shorter requests are raised to it.
pub const MIN_SUBSCRIPTION_MINUTES: i64 = 45;

/// Graph's quota for directory (users, groups) subscriptions "per app and tenant combination:
/// 100 total subscriptions" (change-notifications-api-overview, the `user` and `group` rows;
/// older revisions state it once for "Azure AD based resources (users, groups)"). The
/// simulator has one app and one tenant, so the per-tenant (1,000) and per-app (50,000) quotas
/// can never be reached first.
pub const MAX_DIRECTORY_SUBSCRIPTIONS: usize = 100;

/// The collection a subscription resource names: `users`, `users/{id}`, `groups`,
/// `groups/{id}` (leading slash optional, no query options).
fn subscribed_collection(resource: &str) -> GraphResult<Collection> {
    let normalized = resource.trim_start_matches('/').to_ascii_lowercase();
    let (head, rest) = match normalized.split_once('/') {
        Some((head, id)) => (head, Some(id)),
        None => (normalized.as_str(), None),
    };
    let collection = match head {
        "users" => Some(Collection::Users),
        "groups" => Some(Collection::Groups),
        _ => None,
    };
    let plain_id = rest.is_none_or(|id| !id.is_empty() && !id.contains(['/', '?', '$']));
    match collection {
        Some(c) if plain_id => Ok(c),
        _ => Err(GraphError::invalid_request(format!(
            "Resource '{resource}' is not supported by this simulator; use '/users', '/users/{{id}}', '/groups' or '/groups/{{id}}' (no query options)."
        ))),
    }
}

fn quota_reached(sim: &Sim) -> GraphError {
    GraphError::new(
        StatusCode::FORBIDDEN,
        "ExtensionError",
        format!(
            "Operation: Create; Exception: [Status Code: Forbidden; Reason: App '{}' has reached its limit of '{MAX_DIRECTORY_SUBSCRIPTIONS}' directory (users, groups) subscriptions on tenant '{}'.]",
            sim.config.client_id, sim.config.tenant_id
        ),
    )
}

fn not_found() -> GraphError {
    GraphError::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "The object was not found.",
    )
}

pub fn subscription_json(sim: &Sim, s: &Subscription) -> Value {
    json!({
        "@odata.context": format!("{}/v1.0/$metadata#subscriptions/$entity", sim.base_url),
        "id": s.id,
        "resource": s.resource,
        "applicationId": sim.config.client_id,
        "changeType": s.change_types.join(","),
        "clientState": s.client_state,
        "notificationUrl": s.notification_url,
        "notificationQueryOptions": null,
        "lifecycleNotificationUrl": s.lifecycle_url,
        "expirationDateTime": graph_time_precise(s.expiration),
        "creatorId": sim.config.client_id,
        "includeResourceData": false,
        "latestSupportedTlsVersion": s.latest_tls,
        "encryptionCertificate": null,
        "encryptionCertificateId": null,
        "notificationUrlAppId": null,
    })
}

fn parse_expiration(sim: &Sim, v: Option<&Value>) -> GraphResult<DateTime<Utc>> {
    let raw = v.and_then(Value::as_str).ok_or_else(|| {
        GraphError::invalid_request(
            "expirationDateTime is a required property for subscription creation.",
        )
    })?;
    let t = DateTime::parse_from_rfc3339(raw)
        .map_err(|_| GraphError::invalid_request(format!("Invalid expirationDateTime '{raw}'.")))?
        .with_timezone(&Utc);
    let now = sim.now();
    if t <= now {
        return Err(GraphError::invalid_request(
            "Subscription expiration can only be in the future.",
        ));
    }
    let max = sim.config.max_subscription_minutes;
    if t > now + ChronoDuration::minutes(max) {
        return Err(GraphError::invalid_request(format!(
            "Subscription expiration can only be {max} minutes in the future."
        )));
    }
    // Graph raises a lifetime under 45 minutes to 45 minutes (the answer carries the
    // expiration actually granted).
    Ok(t.max(now + ChronoDuration::minutes(MIN_SUBSCRIPTION_MINUTES)))
}

fn check_url(sim: &Sim, raw: &str, what: &str) -> GraphResult<()> {
    let url = url::Url::parse(raw)
        .map_err(|_| GraphError::invalid_request(format!("Invalid {what} '{raw}'.")))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        // Real Graph demands HTTPS; the simulator relaxes that for loopback receivers.
        "http" if loopback || sim.config.allow_insecure_notification_urls => Ok(()),
        _ => Err(GraphError::invalid_request(format!(
            "The {what} '{raw}' must be an HTTPS url."
        ))),
    }
}

/// The validation handshake: POST `url?validationToken=<url-encoded token>` with a text/plain
/// content type; the endpoint must answer 200, `text/plain`, and the decoded token, within the
/// validation timeout (10 s). Every attempt is written to the delivery log.
pub async fn validate_endpoint(sim: &Sim, url: &str) -> Result<(), String> {
    // The token Graph sends contains spaces and colons, so a receiver that does not URL-decode fails.
    let token = format!(
        "Validation: Testing client application reachability for subscription Request-Id: {}",
        Uuid::new_v4()
    );
    let mut target = url::Url::parse(url).map_err(|e| e.to_string())?;
    target
        .query_pairs_mut()
        .append_pair("validationToken", &token);
    let started = Instant::now();
    let result = sim
        .http
        .post(target.as_str())
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .timeout(sim.config.validation_timeout)
        .send()
        .await;
    let latency = started.elapsed();
    let (status, outcome, verdict) = match result {
        Err(e) if e.is_timeout() => (None, "timeout", Err("Request timed out.".to_string())),
        Err(_) => (
            None,
            "error",
            Err("Remote server could not be reached.".to_string()),
        ),
        Ok(resp) => {
            let status = resp.status();
            let content_type = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_ascii_lowercase();
            let body = resp.text().await.unwrap_or_default();
            let verdict = if status != StatusCode::OK {
                Err(format!("Notification endpoint must respond with 200 OK to validation request. HTTP status code is '{}'.", status.as_u16()))
            } else if !content_type.starts_with("text/plain") {
                Err("Notification endpoint must respond with Content-Type text/plain.".to_string())
            } else if body != token {
                Err("Response must exactly match validationToken query parameter.".to_string())
            } else {
                Ok(())
            };
            let outcome = if verdict.is_ok() {
                "validated"
            } else {
                "rejected"
            };
            (Some(status.as_u16()), outcome, verdict)
        }
    };
    let now = sim.now();
    let mut w = sim.world();
    let id = w.delivery.next_record_id();
    let mut rec = DeliveryRecord::unsent(
        id,
        now,
        target.as_str(),
        "validation",
        Value::String(token),
        outcome,
    );
    rec.status = status;
    rec.latency_ms = Some(latency.as_millis() as u64);
    rec.attempt = 1;
    w.delivery.log.push(rec);
    verdict
}

async fn create(State(sim): State<Arc<Sim>>, body: Option<Json<Value>>) -> GraphResult<Response> {
    let body = match body {
        Some(Json(Value::Object(m))) => m,
        _ => {
            return Err(GraphError::invalid_request(
                "Empty Payload. JSON content expected.",
            ))
        }
    };
    let field = |name: &str| -> GraphResult<String> {
        body.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .ok_or_else(|| {
                GraphError::invalid_request(format!(
                    "{name} is a required property for subscription creation."
                ))
            })
    };
    let change_type_raw = field("changeType")?;
    let notification_url = field("notificationUrl")?;
    let resource = field("resource")?;
    let lifecycle_url = body
        .get("lifecycleNotificationUrl")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(String::from);
    let normalized = resource.trim_start_matches('/').to_ascii_lowercase();
    let collection = subscribed_collection(&resource)?.segment();
    // Graph documents only `updated` and `deleted` for user and group notifications.
    let mut change_types = Vec::new();
    for c in change_type_raw.split(',').map(str::trim) {
        match c {
            "updated" | "deleted" => {
                if !change_types.iter().any(|x: &String| x == c) {
                    change_types.push(c.to_string());
                }
            }
            other => {
                return Err(GraphError::invalid_request(format!(
                    "ChangeType '{other}' is not supported for resource '{collection}'. Supported change types are: updated, deleted."
                )))
            }
        }
    }
    if body.get("includeResourceData").and_then(Value::as_bool) == Some(true) {
        return Err(GraphError::invalid_request(format!(
            "Rich notifications (includeResourceData) are not supported for resource '{collection}'."
        )));
    }
    let client_state = body
        .get("clientState")
        .and_then(Value::as_str)
        .map(String::from);
    if client_state.as_ref().is_some_and(|c| c.len() > 128) {
        return Err(GraphError::invalid_request(
            "clientState must be at most 128 characters.",
        ));
    }
    check_url(&sim, &notification_url, "notificationUrl")?;
    if let Some(l) = &lifecycle_url {
        check_url(&sim, l, "lifecycleNotificationUrl")?;
    }
    let expiration = parse_expiration(&sim, body.get("expirationDateTime"))?;
    let latest_tls = body
        .get("latestSupportedTlsVersion")
        .and_then(Value::as_str)
        .unwrap_or("v1_2")
        .to_string();

    // Judged before the handshake and again after it (another creation may have won meanwhile).
    let admissible = |sim: &Sim| -> GraphResult<()> {
        let w = sim.world();
        let mut wanted = change_types.clone();
        wanted.sort();
        let existing = w.subscriptions.values().find(|s| {
            let mut have = s.change_types.clone();
            have.sort();
            s.resource
                .trim_start_matches('/')
                .eq_ignore_ascii_case(&normalized)
                && have == wanted
        });
        if let Some(s) = existing {
            return Err(GraphError::new(
                StatusCode::CONFLICT,
                "ObjectIdentifierInUse",
                format!(
                    "Subscription Id {} already exists for the requested combination",
                    s.id
                ),
            ));
        }
        if w.subscriptions.len() >= MAX_DIRECTORY_SUBSCRIPTIONS {
            return Err(quota_reached(sim));
        }
        Ok(())
    };
    admissible(&sim)?;

    for url in std::iter::once(&notification_url).chain(lifecycle_url.iter()) {
        if let Err(reason) = validate_endpoint(&sim, url).await {
            return Err(GraphError::invalid_request(format!(
                "Subscription validation request failed. {reason}"
            )));
        }
    }
    admissible(&sim)?;

    let sub = Subscription {
        id: Uuid::new_v4().to_string(),
        resource,
        change_types,
        notification_url,
        lifecycle_url,
        client_state,
        expiration,
        latest_tls,
        needs_reauthorization: false,
        paused: false,
        authorized_at: sim.now(),
        withheld: Vec::new(),
    };
    let out = subscription_json(&sim, &sub);
    sim.world().subscriptions.insert(sub.id.clone(), sub);
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// The list never carries `clientState` ("not returned for security purposes", as Graph's docs
/// say): it is `null` there.
async fn list(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let w = sim.world();
    let mut subs: Vec<&Subscription> = w.subscriptions.values().collect();
    subs.sort_by(|a, b| a.id.cmp(&b.id));
    let value: Vec<Value> = subs
        .iter()
        .map(|s| {
            let mut v = subscription_json(&sim, s);
            if let Some(o) = v.as_object_mut() {
                o.remove("@odata.context");
                o.insert("clientState".into(), Value::Null);
            }
            v
        })
        .collect();
    Json(json!({
        "@odata.context": format!("{}/v1.0/$metadata#subscriptions", sim.base_url),
        "value": value,
    }))
}

async fn get_one(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> GraphResult<Json<Value>> {
    let w = sim.world();
    let s = w.subscriptions.get(&id).ok_or_else(not_found)?;
    Ok(Json(subscription_json(&sim, s)))
}

/// Renewal: a new `expirationDateTime` (same limits as creation). Renewing also reauthorizes.
/// An expired subscription is gone: 404.
async fn renew(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    body: Option<Json<Value>>,
) -> GraphResult<Json<Value>> {
    let body: Map<String, Value> = match body {
        Some(Json(Value::Object(m))) => m,
        _ => {
            return Err(GraphError::invalid_request(
                "Empty Payload. JSON content expected.",
            ))
        }
    };
    if !sim.world().subscriptions.contains_key(&id) {
        return Err(not_found());
    }
    let expiration = match body.get("expirationDateTime") {
        Some(v) => Some(parse_expiration(&sim, Some(v))?),
        None => None,
    };
    let new_url = body
        .get("notificationUrl")
        .and_then(Value::as_str)
        .map(String::from);
    if let Some(u) = &new_url {
        check_url(&sim, u, "notificationUrl")?;
        if let Err(reason) = validate_endpoint(&sim, u).await {
            return Err(GraphError::invalid_request(format!(
                "Subscription validation request failed. {reason}"
            )));
        }
    }
    let now = sim.now();
    let mut w = sim.world();
    let s = w.subscriptions.get_mut(&id).ok_or_else(not_found)?;
    if let Some(e) = expiration {
        s.expiration = e;
    }
    if let Some(u) = new_url {
        s.notification_url = u;
    }
    let withheld = s.reauthorize(now);
    let out = subscription_json(&sim, s);
    release(&sim, &mut w, withheld);
    Ok(Json(out))
}

async fn remove(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> GraphResult<Response> {
    sim.world()
        .subscriptions
        .remove(&id)
        .ok_or_else(not_found)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn reauthorize(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> GraphResult<Response> {
    let now = sim.now();
    let mut w = sim.world();
    let s = w.subscriptions.get_mut(&id).ok_or_else(not_found)?;
    let withheld = s.reauthorize(now);
    release(&sim, &mut w, withheld);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Queues the change notifications withheld while a subscription was paused (delivery resumes
/// with them, in the order they happened), unless they are lost or denied by the switches now.
fn release(sim: &Sim, w: &mut crate::state::World, withheld: Vec<QueuedNotification>) {
    if withheld.is_empty() {
        return;
    }
    let now = sim.now();
    for mut q in withheld {
        q.paused = false;
        w.dispatch(q, now);
    }
    sim.wakeup.notify_one();
}

/// Sends a lifecycle notification (control API). `reauthorizationRequired` marks the
/// subscription as needing reauthorization and, with `pause`, withholds change notifications
/// until the app reauthorizes or renews (Graph's eventual behaviour); they are delivered then.
/// `subscriptionRemoved` deletes it.
pub fn trigger_lifecycle(sim: &Sim, id: &str, event: &str, pause: bool) -> GraphResult<Value> {
    let mut w = sim.world();
    let s = w.subscriptions.get(id).ok_or_else(not_found)?;
    if s.lifecycle_url.is_none() {
        return Err(GraphError::invalid_request(
            "The subscription has no lifecycleNotificationUrl.",
        ));
    }
    let item = w
        .lifecycle_event(id, event, pause, &sim.config.tenant_id)
        .map_err(GraphError::invalid_request)?;
    drop(w);
    sim.wakeup.notify_one();
    Ok(item)
}
