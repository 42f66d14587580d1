//! `GET /v1.0/users/delta`: the full-then-incremental change feed, paged with `$skiptoken`,
//! ending in a `$deltatoken` link. Tokens are opaque server-side state; they expire after
//! `delta_token_max_age` of simulated time (7 days for directory objects), and an expired token
//! answers `410 Gone` with `syncStateNotFound` and a `Location` of a fresh initial request.
//! Switches add Graph's other quirks: replays, duplicates, partial items, empty pages, and stale
//! links answering 410/400 `syncStateNotFound` or 410 `resyncRequired`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::{GraphError, GraphResult};
use crate::query::QueryOptions;
use crate::state::{
    project_delta_user, ChangeKind, DeltaSession, DeltaToken, StaleDeltaTokens, World,
};
use crate::{chrono_duration, Sim};

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/v1.0/users/delta", get(users_delta))
        .route("/v1.0/users/delta()", get(users_delta))
        .route("/v1.0/users/microsoft.graph.delta", get(users_delta))
        .route("/v1.0/users/microsoft.graph.delta()", get(users_delta))
}

fn new_token() -> String {
    // Long and opaque like Graph's; the content means nothing to clients.
    let raw: Vec<u8> = Uuid::new_v4()
        .as_bytes()
        .iter()
        .chain(Uuid::new_v4().as_bytes())
        .copied()
        .collect();
    URL_SAFE_NO_PAD.encode(raw)
}

/// Links look like Graph's: a literal `$deltatoken=`/`$skiptoken=` (tokens are URL-safe).
fn delta_url(sim: &Sim, param: &str, token: &str) -> String {
    format!("{}/v1.0/users/delta?{param}={token}", sim.base_url)
}

fn initial_location(sim: &Sim, select: Option<&[String]>) -> String {
    let mut location = format!("{}/v1.0/users/delta", sim.base_url);
    if let Some(s) = select {
        location.push_str(&format!("?$select={}", s.join(",")));
    }
    location
}

fn sync_state_not_found(sim: &Sim, select: Option<&[String]>) -> GraphError {
    GraphError::new(
        StatusCode::GONE,
        "syncStateNotFound",
        SYNC_STATE_NOT_FOUND_MESSAGE,
    )
    .with_header(header::LOCATION, initial_location(sim, select))
}

const SYNC_STATE_NOT_FOUND_MESSAGE: &str = "The sync state generation is not found. The delta token is expired and data must be synchronized again.";

/// The answer to a link minted before `staleDeltaTokens` was set.
fn stale(sim: &Sim, kind: StaleDeltaTokens, select: Option<&[String]>) -> GraphError {
    match kind {
        StaleDeltaTokens::Gone => sync_state_not_found(sim, select),
        StaleDeltaTokens::BadRequest => GraphError::new(
            StatusCode::BAD_REQUEST,
            "syncStateNotFound",
            SYNC_STATE_NOT_FOUND_MESSAGE,
        ),
        StaleDeltaTokens::ResyncRequired => GraphError::new(
            StatusCode::GONE,
            "resyncRequired",
            "Resync required. The delta token is no longer valid: replace local state with a new full synchronization starting at the Location URL.",
        )
        .with_header(header::LOCATION, initial_location(sim, select)),
    }
}

/// The stale-link error for a link minted in `epoch`, if `staleDeltaTokens` makes it stale.
fn check_stale(w: &World, sim: &Sim, epoch: u64, select: Option<&[String]>) -> GraphResult<()> {
    match w.switches.stale_delta_tokens {
        Some(kind) if epoch < w.delta_epoch => Err(stale(sim, kind, select)),
        _ => Ok(()),
    }
}

async fn users_delta(
    State(sim): State<Arc<Sim>>,
    RawQuery(q): RawQuery,
) -> GraphResult<Json<Value>> {
    let opts = QueryOptions::from_raw(q.as_deref());
    let requested_select = opts.user_select()?;
    if opts.get("$filter").is_some()
        || opts.get("$orderby").is_some()
        || opts.get("$expand").is_some()
    {
        return Err(GraphError::new(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            "Unsupported query option for delta: only $select, $deltatoken and $skiptoken are supported by this simulator.",
        ));
    }
    let now = sim.now();
    let mut w = sim.world();
    let epoch = w.delta_epoch;
    let partial = w.switches.delta_partial_items;

    let session = if let Some(skip) = opts.get("$skiptoken") {
        let session = w.delta_sessions.get(skip).ok_or_else(|| {
            GraphError::new(
                StatusCode::BAD_REQUEST,
                "Directory_ExpiredPageToken",
                "The specified page token value has expired and can no longer be included in your request.",
            )
        })?;
        check_stale(&w, &sim, session.epoch, session.select.as_deref())?;
        w.delta_sessions.remove(skip).expect("found above")
    } else {
        match opts.get("$deltatoken").filter(|t| !t.is_empty()) {
            Some(t) if t.eq_ignore_ascii_case("latest") => DeltaSession {
                remaining: VecDeque::new(),
                end_seq: w.current_seq(),
                start_seq: w.current_seq(),
                select: requested_select.clone(),
                epoch,
                empty_page_due: true,
            },
            Some(t) => {
                let token = w
                    .delta_tokens
                    .get(t)
                    .cloned()
                    .ok_or_else(|| sync_state_not_found(&sim, requested_select.as_deref()))?;
                // A $select on a deltaLink changes the tracked properties from now on.
                let select = requested_select.clone().or(token.select.clone());
                check_stale(&w, &sim, token.epoch, select.as_deref())?;
                if token.issued_at + chrono_duration(sim.config.delta_token_max_age) <= now {
                    w.delta_tokens.remove(t);
                    return Err(sync_state_not_found(&sim, select.as_deref()));
                }
                let since = if w.switches.delta_replays {
                    token.prev_seq
                } else {
                    token.seq
                };
                let end = w.current_seq();
                DeltaSession {
                    remaining: changes_since(&w, since, end, select.as_deref(), partial),
                    end_seq: end,
                    start_seq: token.seq,
                    select,
                    epoch,
                    empty_page_due: true,
                }
            }
            None => {
                let select = requested_select.clone();
                let remaining = w
                    .live_users_sorted()
                    .into_iter()
                    .map(|u| {
                        Value::Object(project_delta_user(
                            &u.props,
                            select.as_deref(),
                            None,
                            partial,
                        ))
                    })
                    .collect();
                DeltaSession {
                    remaining,
                    end_seq: w.current_seq(),
                    start_seq: 0,
                    select,
                    epoch,
                    empty_page_due: true,
                }
            }
        }
    };

    let mut session = session;
    let fresh = opts.get("$skiptoken").is_none();
    if fresh && w.switches.delta_duplicates {
        // Every item comes again later in the round: on the same page or a following one.
        let copies: Vec<Value> = session.remaining.iter().cloned().collect();
        session.remaining.extend(copies);
    }
    let context = match &session.select {
        Some(s) => format!("{}/v1.0/$metadata#users({})", sim.base_url, s.join(",")),
        None => format!("{}/v1.0/$metadata#users", sim.base_url),
    };
    let empty_page = w.switches.delta_empty_pages && session.empty_page_due;
    let page: Vec<Value> = if empty_page {
        // An empty page with a nextLink, before (and between) the real ones.
        session.empty_page_due = false;
        Vec::new()
    } else {
        session.empty_page_due = true;
        let take = sim
            .config
            .delta_page_size
            .max(1)
            .min(session.remaining.len());
        session.remaining.drain(..take).collect()
    };
    let mut body = json!({ "@odata.context": context, "value": page });
    if !empty_page && session.remaining.is_empty() {
        let token = new_token();
        w.delta_tokens.insert(
            token.clone(),
            DeltaToken {
                seq: session.end_seq,
                prev_seq: session.start_seq,
                issued_at: now,
                select: session.select.clone(),
                epoch,
            },
        );
        body["@odata.deltaLink"] = json!(delta_url(&sim, "$deltatoken", &token));
    } else {
        let token = new_token();
        w.delta_sessions.insert(token.clone(), session);
        body["@odata.nextLink"] = json!(delta_url(&sim, "$skiptoken", &token));
    }
    Ok(Json(body))
}

/// The users that changed in (since, end], each once, in the order of their latest change,
/// in their current state: the object (selected properties), or `@removed` with `changed`
/// (soft-deleted, restorable) or `deleted` (gone for good). With `$select`, updates touching
/// only unselected properties are left out, as Graph documents. With `partial` (switch
/// `deltaPartialItems`), objects carry only `id` and the properties changed in the interval,
/// never-set ones left out.
fn changes_since(
    w: &World,
    since: u64,
    end: u64,
    select: Option<&[String]>,
    partial: bool,
) -> VecDeque<Value> {
    let mut relevant: HashMap<&str, bool> = HashMap::new();
    let mut last_seq: HashMap<&str, u64> = HashMap::new();
    // Properties changed per user; `None` = everything (creation, restore).
    let mut changed: HashMap<&str, Option<HashSet<String>>> = HashMap::new();
    for c in w.changes.iter().filter(|c| c.seq > since && c.seq <= end) {
        let counts = match (&c.kind, select) {
            (ChangeKind::Upsert(props), Some(sel)) => props.iter().any(|p| sel.contains(p)),
            _ => true,
        };
        *relevant.entry(&c.user_id).or_insert(false) |= counts;
        last_seq.insert(&c.user_id, c.seq);
        let entry = changed
            .entry(&c.user_id)
            .or_insert_with(|| Some(HashSet::new()));
        match (&c.kind, entry) {
            (ChangeKind::Upsert(props), Some(set)) => set.extend(props.iter().cloned()),
            (ChangeKind::Restored, e) => *e = None,
            _ => {}
        }
    }
    let mut ids: Vec<(&str, u64)> = last_seq.into_iter().collect();
    ids.sort_by_key(|(_, s)| *s);
    ids.into_iter()
        .filter(|(id, _)| relevant.get(id).copied().unwrap_or(false))
        .map(|(id, _)| match w.users.get(id) {
            Some(u) if u.soft_deleted_at.is_none() => {
                let only = if partial {
                    changed.get(id).and_then(Option::as_ref)
                } else {
                    None
                };
                Value::Object(project_delta_user(&u.props, select, only, partial))
            }
            Some(_) => json!({ "id": id, "@removed": { "reason": "changed" } }),
            None => json!({ "id": id, "@removed": { "reason": "deleted" } }),
        })
        .collect()
}
