//! Users, invitations, deleted items and groups, with Graph's request and response shapes.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::clock::graph_time;
use crate::error::{GraphError, GraphResult};
use crate::query::{parse_filter, FilterExpr, QueryOptions};
use crate::state::{
    blank_user, compact_props, full_props, project_user, stored_value, ChangeKind, GroupChangeKind,
    GroupRecord, UserRecord, World, USER_ALL_PROPERTIES, USER_SYNC_MASTERED_PROPERTIES,
    USER_WRITABLE_PROPERTIES,
};
use crate::Sim;

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route(
            "/v1.0/invitations",
            post(crate::invitations::create_invitation),
        )
        .route("/v1.0/users", get(list_users).post(create_user))
        .route(
            "/v1.0/users/{id}",
            get(get_user).patch(patch_user).delete(delete_user),
        )
        .route(
            "/v1.0/users/{id}/checkMemberGroups",
            post(check_member_groups),
        )
        .route(
            "/v1.0/directory/deletedItems/microsoft.graph.user",
            get(list_deleted_users),
        )
        .route(
            "/v1.0/directory/deletedItems/microsoft.graph.user/{id}",
            get(get_deleted_item),
        )
        .route(
            "/v1.0/directory/deletedItems/{id}",
            get(get_deleted_item).delete(purge_deleted_item),
        )
        .route(
            "/v1.0/directory/deletedItems/{id}/restore",
            post(restore_deleted_item),
        )
        .route("/v1.0/groups", get(list_groups).post(create_group))
        .route("/v1.0/groups/{id}", get(get_group).delete(delete_group))
        .route("/v1.0/groups/{id}/members", get(list_members))
        .route("/v1.0/groups/{id}/members/$ref", post(add_member))
        .route(
            "/v1.0/groups/{id}/members/{member_id}/$ref",
            delete(remove_member),
        )
}

pub(crate) fn context(sim: &Sim, fragment: &str) -> String {
    format!("{}/v1.0/$metadata#{fragment}", sim.base_url)
}

fn user_entity(sim: &Sim, props: &Map<String, Value>, select: Option<&[String]>) -> Value {
    let mut out = project_user(props, select);
    out.insert(
        "@odata.context".into(),
        json!(context(sim, "users/$entity")),
    );
    Value::Object(out)
}

pub(crate) fn body_object(body: Option<Json<Value>>) -> GraphResult<Map<String, Value>> {
    match body {
        Some(Json(Value::Object(m))) => Ok(m),
        _ => Err(GraphError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Empty Payload. JSON content expected.",
        )),
    }
}

pub(crate) fn str_field<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    m.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// A guest as an invitation creates it: UPN `<address with _ for @>#EXT#@<tenant domain>`,
/// `mail` = `otherMails[0]` = the address, `externalUserState` PendingAcceptance, `creationType`
/// Invitation.
pub(crate) fn new_guest(
    sim: &Sim,
    id: &str,
    email: &str,
    display_name: &str,
    user_type: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Map<String, Value> {
    let flattened = email.replace('@', "_");
    let mut props = blank_user(id, now);
    props.insert(
        "userPrincipalName".into(),
        json!(format!("{flattened}#EXT#@{}", sim.config.tenant_domain)),
    );
    props.insert("displayName".into(), json!(display_name));
    props.insert("mail".into(), json!(email));
    props.insert("otherMails".into(), json!([email]));
    props.insert("mailNickname".into(), json!(format!("{flattened}#EXT#")));
    props.insert("userType".into(), json!(user_type));
    props.insert("externalUserState".into(), json!("PendingAcceptance"));
    props.insert(
        "externalUserStateChangeDateTime".into(),
        json!(graph_time(now)),
    );
    props.insert("creationType".into(), json!("Invitation"));
    props
}

pub(crate) fn insert_user(
    w: &mut World,
    mut props: Map<String, Value>,
    now: chrono::DateTime<chrono::Utc>,
    tenant_id: &str,
) {
    let id = props["id"].as_str().unwrap_or_default().to_string();
    compact_props(&mut props);
    let seq = w.bump_seq();
    w.insert_user(
        id.clone(),
        UserRecord {
            props,
            created_seq: seq,
            soft_deleted_at: None,
            changed_at: now,
        },
    );
    w.record_change(&id, ChangeKind::Created, now, tenant_id);
}

/// What `POST /_sim/users/bulk` creates: many users at once, for benchmarks (creating them one
/// by one through Graph's routes costs a scan of the tenant each).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BulkUsers {
    /// Guests, shaped as `POST /invitations` makes them, mailed `g<i>.<prefix>@<domain>`.
    pub guests: usize,
    /// Members, `m<i>.<prefix>@<tenant domain>`; spread evenly among the guests.
    pub members: usize,
    /// Whether the guests have accepted their invitation.
    pub accepted: bool,
    /// Keeps addresses apart between calls.
    pub prefix: String,
    /// The guests' mail domain.
    pub domain: String,
}

impl Default for BulkUsers {
    fn default() -> Self {
        Self {
            guests: 0,
            members: 0,
            accepted: true,
            prefix: "bulk".into(),
            domain: "partner.example".into(),
        }
    }
}

/// The ids `POST /_sim/users/bulk` created, in creation order.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct BulkCreated {
    pub guests: Vec<String>,
    pub members: Vec<String>,
}

/// Creates `spec.guests` guests and `spec.members` members in one lock, each recorded as a
/// change (delta sees them; subscriptions are notified as for any new user).
pub fn bulk_create(sim: &Sim, spec: &BulkUsers) -> BulkCreated {
    let now = sim.now();
    let total = spec.guests + spec.members;
    let mut created = BulkCreated::default();
    let mut w = sim.world();
    for i in 0..total {
        let id = Uuid::new_v4().to_string();
        let mut props = blank_user(&id, now);
        // Guest number g is due when the running share of guests passes it.
        let is_guest = (i + 1) * spec.guests / total > i * spec.guests / total;
        if is_guest {
            let n = created.guests.len();
            let email = format!("g{n}.{}@{}", spec.prefix, spec.domain);
            let name = format!("Guest {n} {}", spec.prefix);
            props = new_guest(sim, &id, &email, &name, "Guest", now);
            props.insert("givenName".into(), json!("Guest"));
            props.insert("surname".into(), json!(format!("{n} {}", spec.prefix)));
            if spec.accepted {
                props.insert("externalUserState".into(), json!("Accepted"));
            }
            created.guests.push(id);
        } else {
            let n = created.members.len();
            let nickname = format!("m{n}.{}", spec.prefix);
            props.insert(
                "userPrincipalName".into(),
                json!(format!("{nickname}@{}", sim.config.tenant_domain)),
            );
            props.insert(
                "displayName".into(),
                json!(format!("Member {n} {}", spec.prefix)),
            );
            props.insert("mailNickname".into(), json!(nickname));
            props.insert("userType".into(), json!("Member"));
            created.members.push(id);
        }
        insert_user(&mut w, props, now, &sim.config.tenant_id);
    }
    drop(w);
    sim.wakeup.notify_one();
    created
}

/// Marks an invitation redeemed (the control API's stand-in for the guest clicking the link).
pub fn accept_invitation(sim: &Sim, id: &str) -> GraphResult<Value> {
    let now = sim.now();
    let mut w = sim.world();
    let uid = w
        .find_user_id(id)
        .ok_or_else(|| GraphError::resource_not_found(id))?;
    let user = w.users.get_mut(&uid).expect("found above");
    user.props
        .insert("externalUserState".into(), json!("Accepted"));
    user.props.insert(
        "externalUserStateChangeDateTime".into(),
        json!(graph_time(now)),
    );
    let props = full_props(&user.props);
    w.record_change(
        &uid,
        ChangeKind::Upsert(vec![
            "externalUserState".into(),
            "externalUserStateChangeDateTime".into(),
        ]),
        now,
        &sim.config.tenant_id,
    );
    drop(w);
    sim.wakeup.notify_one();
    Ok(Value::Object(props))
}

pub(crate) fn check_upn(sim: &Sim, w: &World, upn: &str, except: Option<&str>) -> GraphResult<()> {
    let domain = upn.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    if !domain.eq_ignore_ascii_case(&sim.config.tenant_domain) {
        return Err(GraphError::bad_request(
            "The domain portion of the userPrincipalName property is invalid. You must use one of the verified domain names in your organization.",
        ));
    }
    if let Some(other) = w.find_user_id(upn) {
        if Some(other.as_str()) != except {
            return Err(GraphError::bad_request(
                "Another object with the same value for property userPrincipalName already exists.",
            ));
        }
    }
    Ok(())
}

/// Checks a value's type for a writable property, as Graph's model binding does.
pub(crate) fn check_value(name: &str, v: &Value) -> GraphResult<()> {
    let ok = match name {
        "accountEnabled" => v.is_boolean(),
        "otherMails" | "businessPhones" => {
            v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
        }
        "userType" => matches!(v.as_str(), Some("Member") | Some("Guest")),
        "displayName" | "userPrincipalName" | "mailNickname" => v.is_string(),
        // Up to 1024 characters each (the onPremisesExtensionAttributes resource).
        "onPremisesExtensionAttributes" => v.as_object().is_some_and(|attributes| {
            attributes.iter().all(|(name, value)| {
                extension_attribute_number(name).is_some()
                    && (value.is_null()
                        || value.as_str().is_some_and(|s| s.chars().count() <= 1024))
            })
        }),
        _ => v.is_string() || v.is_null(),
    };
    if ok {
        Ok(())
    } else {
        Err(GraphError::bad_request(format!(
            "Invalid value specified for property '{name}' of resource 'User'."
        )))
    }
}

/// `POST /v1.0/users`: creates a member user (`accountEnabled`, `displayName`, `mailNickname`,
/// `userPrincipalName` and `passwordProfile` are required, as in Graph).
async fn create_user(
    State(sim): State<Arc<Sim>>,
    body: Option<Json<Value>>,
) -> GraphResult<Response> {
    let body = body_object(body)?;
    for required in [
        "accountEnabled",
        "displayName",
        "mailNickname",
        "userPrincipalName",
        "passwordProfile",
    ] {
        if body.get(required).is_none_or(Value::is_null) {
            return Err(GraphError::bad_request(format!(
                "Invalid value specified for property '{required}' of resource 'User'."
            )));
        }
    }
    let now = sim.now();
    let id = Uuid::new_v4().to_string();
    let mut props = blank_user(&id, now);
    props.insert("userType".into(), json!("Member"));
    for (k, v) in &body {
        if k == "passwordProfile" || k == "identities" {
            continue;
        }
        let name = USER_WRITABLE_PROPERTIES
            .iter()
            .find(|p| p.eq_ignore_ascii_case(k))
            .ok_or_else(|| GraphError::bad_request(format!("Invalid property '{k}'.")))?;
        check_value(name, v)?;
        props.insert((*name).to_string(), v.clone());
    }
    let mut w = sim.world();
    let upn = props["userPrincipalName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    check_upn(&sim, &w, &upn, None)?;
    insert_user(&mut w, props.clone(), now, &sim.config.tenant_id);
    drop(w);
    sim.wakeup.notify_one();
    Ok((StatusCode::CREATED, Json(user_entity(&sim, &props, None))).into_response())
}

/// `GET /v1.0/users/{id | userPrincipalName}` with optional `$select`.
async fn get_user(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> GraphResult<Json<Value>> {
    let q = QueryOptions::from_raw(q.as_deref());
    let select = q.user_select()?;
    let now = sim.now();
    let w = sim.world();
    let uid = w
        .find_user_id(&id)
        .filter(|uid| w.replicated(uid, now))
        .ok_or_else(|| GraphError::resource_not_found(&id))?;
    Ok(Json(user_entity(
        &sim,
        &w.users[&uid].props,
        select.as_deref(),
    )))
}

/// Opaque-enough paging token for `GET /users`: the offset, base64url encoded.
fn encode_skip(offset: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("X'{offset:016x}'"))
}

fn decode_skip(token: &str) -> GraphResult<usize> {
    use base64::Engine;
    let bad = || {
        GraphError::new(StatusCode::BAD_REQUEST, "Directory_ExpiredPageToken", "The specified page token value has expired and can no longer be included in your request.")
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let s = String::from_utf8(raw).map_err(|_| bad())?;
    let hex = s
        .strip_prefix("X'")
        .and_then(|s| s.strip_suffix('\''))
        .ok_or_else(bad)?;
    usize::from_str_radix(hex, 16).map_err(|_| bad())
}

/// `GET /v1.0/users` with `$filter`, `$select`, `$top` (1–999, default 100) and
/// `@odata.nextLink` paging. Filters that Graph serves only as advanced queries need
/// `ConsistencyLevel: eventual` and `$count=true`; with both, the answer carries `@odata.count`.
async fn list_users(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> GraphResult<Json<Value>> {
    let opts = QueryOptions::from_raw(q.as_deref());
    let select = opts.user_select()?;
    let filter = match opts.get("$filter") {
        Some(f) => parse_filter(f)?,
        None => FilterExpr::default(),
    };
    let advanced = opts.advanced_query(&headers);
    if let Some(refusal) = filter.advanced_requirement().filter(|_| !advanced) {
        return Err(refusal);
    }
    let top = match opts.get("$top") {
        Some(t) => match t.parse::<usize>() {
            Ok(n) if (1..=999).contains(&n) => n,
            _ => {
                return Err(GraphError::bad_request(
                    "Invalid page size specified: '".to_string()
                        + t
                        + "'. Must be between 1 and 999 inclusive.",
                ))
            }
        },
        None => 100,
    };
    let offset = match opts.get("$skiptoken") {
        Some(t) => decode_skip(t)?,
        None => 0,
    };
    let w = sim.world();
    let matching: Vec<&UserRecord> = w
        .live_users_sorted()
        .into_iter()
        .filter(|u| filter.matches(&u.props))
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(top)
        .map(|u| Value::Object(project_user(&u.props, select.as_deref())))
        .collect();
    let mut body = json!({
        "@odata.context": context(&sim, "users"),
        "value": page,
    });
    if advanced {
        body["@odata.count"] = json!(matching.len());
    }
    if offset + top < matching.len() {
        // The next link repeats the query and adds the skip token, like Graph's.
        let mut params: Vec<String> = opts
            .0
            .iter()
            .filter(|(k, _)| *k != "$skiptoken")
            .map(|(k, v)| format!("{k}={}", crate::client::encode_segment(v)))
            .collect();
        params.sort();
        params.push(format!("$skiptoken={}", encode_skip(offset + top)));
        body["@odata.nextLink"] =
            json!(format!("{}/v1.0/users?{}", sim.base_url, params.join("&")));
    }
    Ok(Json(body))
}

/// `PATCH /v1.0/users/{id}` → 204. Read-only properties (such as `externalUserState` and the
/// `onPremises*` ones) and unknown ones are rejected, and so are AD-mastered properties of a
/// synced user.
async fn patch_user(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    body: Option<Json<Value>>,
) -> GraphResult<Response> {
    let body = body_object(body)?;
    let mut updates = Vec::new();
    for (k, v) in &body {
        if let Some(name) = USER_WRITABLE_PROPERTIES
            .iter()
            .find(|p| p.eq_ignore_ascii_case(k))
        {
            check_value(name, v)?;
            updates.push(((*name).to_string(), v.clone()));
        } else if USER_ALL_PROPERTIES
            .iter()
            .any(|p| p.eq_ignore_ascii_case(k))
        {
            return Err(GraphError::bad_request(format!(
                "Property '{k}' is read-only and cannot be set."
            )));
        } else {
            return Err(GraphError::bad_request(format!("Invalid property '{k}'.")));
        }
    }
    let now = sim.now();
    let mut w = sim.world();
    let uid = w
        .find_user_id(&id)
        .ok_or_else(|| GraphError::resource_not_found(&id))?;
    if w.users[&uid].is_synced() {
        check_not_sync_mastered(&updates)?;
    }
    if let Some((_, Value::String(upn))) = updates.iter().find(|(k, _)| k == "userPrincipalName") {
        check_upn(&sim, &w, upn, Some(&uid))?;
    }
    let user = w.users.get_mut(&uid).expect("found above");
    let changed = set_properties(user, updates);
    if !changed.is_empty() {
        w.record_change(
            &uid,
            ChangeKind::Upsert(changed),
            now,
            &sim.config.tenant_id,
        );
        drop(w);
        sim.wakeup.notify_one();
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Sets `updates` on `user`; the names of the properties whose value changed. The fifteen
/// extension attributes are one complex value: an update names those it changes.
pub(crate) fn set_properties(user: &mut UserRecord, updates: Vec<(String, Value)>) -> Vec<String> {
    let mut changed = Vec::new();
    for (k, mut v) in updates {
        let current = stored_value(&user.props, &k);
        if let (Value::Object(current), Value::Object(given)) = (&current, &v) {
            let mut merged = current.clone();
            for (name, value) in given {
                if let Some(n) = extension_attribute_number(name) {
                    merged.insert(format!("extensionAttribute{n}"), value.clone());
                }
            }
            v = Value::Object(merged);
        }
        if current != v {
            user.props.insert(k.clone(), v);
            changed.push(k);
        }
    }
    changed
}

/// `extensionAttribute7` (any case) → 7, for the fifteen of `onPremisesExtensionAttributes`.
pub(crate) fn extension_attribute_number(name: &str) -> Option<u8> {
    let n: u8 = name
        .get(..18)
        .filter(|p| p.eq_ignore_ascii_case("extensionAttribute"))
        .and_then(|_| name[18..].parse().ok())?;
    (1..=15).contains(&n).then_some(n)
}

/// A synced user's AD-mastered properties cannot be changed through Graph (the next sync would
/// undo it); Graph's answer, whatever else the PATCH names.
fn check_not_sync_mastered(updates: &[(String, Value)]) -> GraphResult<()> {
    if updates
        .iter()
        .any(|(k, _)| USER_SYNC_MASTERED_PROPERTIES.contains(&k.as_str()))
    {
        return Err(GraphError::bad_request(
            "Unable to update the specified properties for on-premises mastered Directory Sync objects or objects currently undergoing migration.",
        ));
    }
    Ok(())
}

/// `DELETE /v1.0/users/{id}` → 204; the user moves to deleted items (restorable for 30 days).
async fn delete_user(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> GraphResult<Response> {
    let now = sim.now();
    let mut w = sim.world();
    let uid = w
        .find_user_id(&id)
        .ok_or_else(|| GraphError::resource_not_found(&id))?;
    let user = w.users.get_mut(&uid).expect("found above");
    user.soft_deleted_at = Some(now);
    user.props
        .insert("deletedDateTime".into(), json!(graph_time(now)));
    w.record_change(&uid, ChangeKind::SoftDeleted, now, &sim.config.tenant_id);
    drop(w);
    sim.wakeup.notify_one();
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn deleted_entity(props: &Map<String, Value>, select: Option<&[String]>) -> Value {
    let mut out = project_user(props, select);
    out.insert("@odata.type".into(), json!("#microsoft.graph.user"));
    out.insert(
        "deletedDateTime".into(),
        props.get("deletedDateTime").cloned().unwrap_or(Value::Null),
    );
    Value::Object(out)
}

async fn list_deleted_users(
    State(sim): State<Arc<Sim>>,
    RawQuery(q): RawQuery,
) -> GraphResult<Json<Value>> {
    let select = QueryOptions::from_raw(q.as_deref()).user_select()?;
    let w = sim.world();
    let value: Vec<Value> = w
        .deleted_users_sorted()
        .into_iter()
        .map(|u| deleted_entity(&u.props, select.as_deref()))
        .collect();
    Ok(Json(json!({
        "@odata.context": context(&sim, "directory/deletedItems/microsoft.graph.user"),
        "value": value,
    })))
}

fn find_deleted<'a>(w: &'a World, id: &str) -> GraphResult<&'a UserRecord> {
    w.users
        .get(id)
        .filter(|u| u.soft_deleted_at.is_some())
        .ok_or_else(|| GraphError::resource_not_found(id))
}

async fn get_deleted_item(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> GraphResult<Json<Value>> {
    let select = QueryOptions::from_raw(q.as_deref()).user_select()?;
    let now = sim.now();
    let w = sim.world();
    let user = find_deleted(&w, &id)?;
    // Eventual consistency: a replica that has not seen the deletion yet knows no deleted item.
    if !w.replicated(user.id(), now) {
        return Err(GraphError::resource_not_found(&id));
    }
    let mut v = deleted_entity(&user.props, select.as_deref());
    v["@odata.context"] = json!(context(&sim, "directory/deletedItems/$entity"));
    Ok(Json(v))
}

/// `POST /v1.0/directory/deletedItems/{id}/restore` → 200 with the restored user.
async fn restore_deleted_item(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
) -> GraphResult<Json<Value>> {
    let now = sim.now();
    let mut w = sim.world();
    let upn = find_deleted(&w, &id)?.upn().to_string();
    if w.find_user_id(&upn).is_some() {
        return Err(GraphError::bad_request(
            "Another object with the same value for property userPrincipalName already exists.",
        ));
    }
    let user = w.users.get_mut(&id).expect("found above");
    user.soft_deleted_at = None;
    user.props.insert("deletedDateTime".into(), Value::Null);
    let props = user.props.clone();
    w.record_change(&id, ChangeKind::Restored, now, &sim.config.tenant_id);
    drop(w);
    sim.wakeup.notify_one();
    let mut out = project_user(&props, None);
    out.insert(
        "@odata.context".into(),
        json!(context(&sim, "directoryObjects/$entity")),
    );
    out.insert("@odata.type".into(), json!("#microsoft.graph.user"));
    Ok(Json(Value::Object(out)))
}

/// `DELETE /v1.0/directory/deletedItems/{id}` → 204; gone for good.
async fn purge_deleted_item(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
) -> GraphResult<Response> {
    let now = sim.now();
    let mut w = sim.world();
    find_deleted(&w, &id)?;
    w.purge_user(&id, now, &sim.config.tenant_id);
    drop(w);
    sim.wakeup.notify_one();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1.0/users/{id}/checkMemberGroups` → the given group ids the user is a member of,
/// directly or through nested groups.
async fn check_member_groups(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    body: Option<Json<Value>>,
) -> GraphResult<Json<Value>> {
    let body = body_object(body)?;
    let ids: Vec<String> = body
        .get("groupIds")
        .and_then(Value::as_array)
        .ok_or_else(|| GraphError::bad_request("Invalid value specified for property 'groupIds'."))?
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    if ids.len() > 20 {
        return Err(GraphError::bad_request(
            "The number of groupIds must be at most 20.",
        ));
    }
    let now = sim.now();
    let w = sim.world();
    let uid = w
        .find_user_id(&id)
        .filter(|uid| w.replicated(uid, now))
        .ok_or_else(|| GraphError::resource_not_found(&id))?;
    let groups = w.transitive_groups(&uid);
    let value: Vec<String> = ids.into_iter().filter(|g| groups.contains(g)).collect();
    Ok(Json(json!({
        "@odata.context": context(&sim, "Collection(Edm.String)"),
        "value": value,
    })))
}

async fn create_group(
    State(sim): State<Arc<Sim>>,
    body: Option<Json<Value>>,
) -> GraphResult<Response> {
    let body = body_object(body)?;
    for required in [
        "displayName",
        "mailEnabled",
        "mailNickname",
        "securityEnabled",
    ] {
        if body.get(required).is_none_or(Value::is_null) {
            return Err(GraphError::bad_request(format!(
                "Invalid value specified for property '{required}' of resource 'Group'."
            )));
        }
    }
    let id = Uuid::new_v4().to_string();
    let now = sim.now();
    let mut props = Map::new();
    props.insert("id".into(), json!(id));
    props.insert("createdDateTime".into(), json!(graph_time(now)));
    props.insert(
        "description".into(),
        body.get("description").cloned().unwrap_or(Value::Null),
    );
    props.insert(
        "groupTypes".into(),
        body.get("groupTypes").cloned().unwrap_or(json!([])),
    );
    for k in [
        "displayName",
        "mailEnabled",
        "mailNickname",
        "securityEnabled",
    ] {
        props.insert(k.into(), body[k].clone());
    }
    let mut w = sim.world();
    let created_seq = w.bump_seq();
    w.groups.insert(
        id.clone(),
        GroupRecord {
            props: props.clone(),
            members: Vec::new(),
            created_seq,
        },
    );
    w.record_group_change(&id, GroupChangeKind::Created, now, &sim.config.tenant_id);
    drop(w);
    sim.wakeup.notify_one();
    props.insert(
        "@odata.context".into(),
        json!(context(&sim, "groups/$entity")),
    );
    Ok((StatusCode::CREATED, Json(Value::Object(props))).into_response())
}

async fn list_groups(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let w = sim.world();
    let mut groups: Vec<&GroupRecord> = w.groups.values().collect();
    groups.sort_by_key(|g| g.created_seq);
    let value: Vec<Value> = groups
        .iter()
        .map(|g| Value::Object(g.props.clone()))
        .collect();
    Json(json!({ "@odata.context": context(&sim, "groups"), "value": value }))
}

async fn get_group(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
) -> GraphResult<Json<Value>> {
    let w = sim.world();
    let g = w
        .groups
        .get(&id)
        .ok_or_else(|| GraphError::resource_not_found(&id))?;
    let mut v = Value::Object(g.props.clone());
    v["@odata.context"] = json!(context(&sim, "groups/$entity"));
    Ok(Json(v))
}

/// `DELETE /v1.0/groups/{id}` → 204. Groups are deleted for good (security groups have no
/// deleted-items stage); a recorded change for the group and for the groups it was a member of.
async fn delete_group(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
) -> GraphResult<Response> {
    let now = sim.now();
    let mut w = sim.world();
    if !w.delete_group(&id, now, &sim.config.tenant_id) {
        return Err(GraphError::resource_not_found(&id));
    }
    drop(w);
    sim.wakeup.notify_one();
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_members(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
) -> GraphResult<Json<Value>> {
    let w = sim.world();
    let g = w
        .groups
        .get(&id)
        .ok_or_else(|| GraphError::resource_not_found(&id))?;
    let value: Vec<Value> = g
        .members
        .iter()
        .filter_map(|m| {
            if let Some(u) = w.users.get(m).filter(|u| u.soft_deleted_at.is_none()) {
                let mut p = project_user(&u.props, None);
                p.insert("@odata.type".into(), json!("#microsoft.graph.user"));
                Some(Value::Object(p))
            } else {
                w.groups.get(m).map(|g| {
                    let mut p = g.props.clone();
                    p.insert("@odata.type".into(), json!("#microsoft.graph.group"));
                    Value::Object(p)
                })
            }
        })
        .collect();
    Ok(Json(
        json!({ "@odata.context": context(&sim, "directoryObjects"), "value": value }),
    ))
}

/// `POST /v1.0/groups/{id}/members/$ref` with `{"@odata.id": ".../directoryObjects/{id}"}`.
async fn add_member(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    body: Option<Json<Value>>,
) -> GraphResult<Response> {
    let body = body_object(body)?;
    let reference = str_field(&body, "@odata.id").ok_or_else(|| {
        GraphError::bad_request("Invalid value specified for property '@odata.id'.")
    })?;
    let member_id = reference
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut w = sim.world();
    if !w.groups.contains_key(&id) {
        return Err(GraphError::resource_not_found(&id));
    }
    let is_user = w
        .users
        .get(&member_id)
        .is_some_and(|u| u.soft_deleted_at.is_none());
    if !is_user && !w.groups.contains_key(&member_id) {
        return Err(GraphError::resource_not_found(&member_id));
    }
    if !w.add_member(&id, &member_id, sim.now(), &sim.config.tenant_id) {
        return Err(GraphError::bad_request(
            "One or more added object references already exist for the following modified properties: 'members'.",
        ));
    }
    drop(w);
    sim.wakeup.notify_one();
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove_member(
    State(sim): State<Arc<Sim>>,
    Path((id, member_id)): Path<(String, String)>,
) -> GraphResult<Response> {
    let mut w = sim.world();
    if !w.groups.contains_key(&id) {
        return Err(GraphError::resource_not_found(&id));
    }
    if !w.remove_member(&id, &member_id, sim.now(), &sim.config.tenant_id) {
        return Err(GraphError::resource_not_found(&member_id));
    }
    drop(w);
    sim.wakeup.notify_one();
    Ok(StatusCode::NO_CONTENT.into_response())
}
