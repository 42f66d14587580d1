//! `GET /v1.0/users/delta` and `GET /v1.0/groups/delta`: the full-then-incremental change
//! feeds, paged with `$skiptoken`, ending in a `$deltatoken` link. Tokens are opaque
//! server-side state remembering their collection, `$select` and (groups) `$filter` by id; they
//! expire after `delta_token_max_age` of simulated time (7 days for directory objects), and an
//! expired token answers `410 Gone` with `syncStateNotFound` and a `Location` of a fresh initial
//! request. Switches add Graph's other quirks to both: replays, duplicates, partial items, empty
//! pages, and stale links answering 410/400 `syncStateNotFound` or 410 `resyncRequired`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::error::{GraphError, GraphResult};
use crate::query::{parse_id_filter, QueryOptions};
use crate::state::{
    project_delta_user, ChangeKind, Collection, DeltaRemaining, DeltaScope, DeltaSession,
    DeltaToken, GroupChangeKind, GroupRecord, StaleDeltaTokens, World, GROUP_PROPERTIES,
};
use crate::{chrono_duration, Sim};

pub fn routes() -> Router<Arc<Sim>> {
    let mut router = Router::new();
    for function in [
        "delta",
        "delta()",
        "microsoft.graph.delta",
        "microsoft.graph.delta()",
    ] {
        router = router
            .route(&format!("/v1.0/users/{function}"), get(users_delta))
            .route(&format!("/v1.0/groups/{function}"), get(groups_delta));
    }
    router
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
fn delta_url(sim: &Sim, scope: &DeltaScope, param: &str, token: &str) -> String {
    format!(
        "{}/v1.0/{}/delta?{param}={token}",
        sim.base_url,
        scope.collection.segment()
    )
}

/// The initial request of a new round with the same `$select` and `$filter`.
fn initial_location(sim: &Sim, scope: &DeltaScope, select: Option<&[String]>) -> String {
    let mut params = Vec::new();
    if let Some(s) = select {
        params.push(format!("$select={}", s.join(",")));
    }
    if let Some(ids) = &scope.ids {
        let filter: Vec<String> = ids.iter().map(|id| format!("id eq '{id}'")).collect();
        let encoded: String =
            url::form_urlencoded::byte_serialize(filter.join(" or ").as_bytes()).collect();
        params.push(format!("$filter={encoded}"));
    }
    let mut location = format!("{}/v1.0/{}/delta", sim.base_url, scope.collection.segment());
    if !params.is_empty() {
        location.push('?');
        location.push_str(&params.join("&"));
    }
    location
}

fn sync_state_not_found(sim: &Sim, scope: &DeltaScope, select: Option<&[String]>) -> GraphError {
    GraphError::new(
        StatusCode::GONE,
        "syncStateNotFound",
        SYNC_STATE_NOT_FOUND_MESSAGE,
    )
    .with_header(header::LOCATION, initial_location(sim, scope, select))
}

const SYNC_STATE_NOT_FOUND_MESSAGE: &str = "The sync state generation is not found. The delta token is expired and data must be synchronized again.";

/// The answer to a link minted before `staleDeltaTokens` was set.
fn stale(
    sim: &Sim,
    kind: StaleDeltaTokens,
    scope: &DeltaScope,
    select: Option<&[String]>,
) -> GraphError {
    match kind {
        StaleDeltaTokens::Gone => sync_state_not_found(sim, scope, select),
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
        .with_header(header::LOCATION, initial_location(sim, scope, select)),
    }
}

/// The stale-link error for a link minted in `epoch`, if `staleDeltaTokens` makes it stale.
fn check_stale(
    w: &World,
    sim: &Sim,
    epoch: u64,
    scope: &DeltaScope,
    select: Option<&[String]>,
) -> GraphResult<()> {
    match w.switches.stale_delta_tokens {
        Some(kind) if epoch < w.delta_epoch => Err(stale(sim, kind, scope, select)),
        _ => Ok(()),
    }
}

fn unsupported_option(opts: &QueryOptions, names: &[&str], allowed: &str) -> GraphResult<()> {
    if names.iter().any(|n| opts.get(n).is_some()) {
        return Err(GraphError::new(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            format!("Unsupported query option for delta: only {allowed} are supported by this simulator."),
        ));
    }
    Ok(())
}

async fn users_delta(
    State(sim): State<Arc<Sim>>,
    RawQuery(q): RawQuery,
) -> GraphResult<Json<Value>> {
    let opts = QueryOptions::from_raw(q.as_deref());
    let select = opts.user_select()?;
    unsupported_option(
        &opts,
        &["$filter", "$orderby", "$expand"],
        "$select, $deltatoken and $skiptoken",
    )?;
    let scope = DeltaScope {
        collection: Collection::Users,
        ids: None,
    };
    delta_page(&sim, &opts, scope, select).map(Json)
}

/// `groups/delta`: `$select` (with `members` for membership changes) and `$filter=id eq '…'
/// [or id eq '…']` (at most 50), as Graph documents.
async fn groups_delta(
    State(sim): State<Arc<Sim>>,
    RawQuery(q): RawQuery,
) -> GraphResult<Json<Value>> {
    let opts = QueryOptions::from_raw(q.as_deref());
    let select = opts.group_select()?;
    unsupported_option(
        &opts,
        &["$orderby", "$expand", "$top", "$search"],
        "$select, $filter by id, $deltatoken and $skiptoken",
    )?;
    let ids = opts.get("$filter").map(parse_id_filter).transpose()?;
    let scope = DeltaScope {
        collection: Collection::Groups,
        ids,
    };
    delta_page(&sim, &opts, scope, select).map(Json)
}

/// One page of a delta round for either collection: starts a round (initial request,
/// `$deltatoken=latest` or a deltaLink) or continues one (a nextLink), and ends it with a
/// deltaLink. `requested` is the request's own scope; links carry theirs.
fn delta_page(
    sim: &Sim,
    opts: &QueryOptions,
    requested: DeltaScope,
    requested_select: Option<Vec<String>>,
) -> GraphResult<Value> {
    let now = sim.now();
    let mut w = sim.world();
    let epoch = w.delta_epoch;
    let partial = w.switches.delta_partial_items;
    let collection = requested.collection;

    let mut session = if let Some(skip) = opts.get("$skiptoken") {
        let session = w
            .delta_sessions
            .get(skip)
            .filter(|s| s.scope.collection == collection)
            .ok_or_else(|| {
                GraphError::new(
                    StatusCode::BAD_REQUEST,
                    "Directory_ExpiredPageToken",
                    "The specified page token value has expired and can no longer be included in your request.",
                )
            })?;
        check_stale(
            &w,
            sim,
            session.epoch,
            &session.scope,
            session.select.as_deref(),
        )?;
        w.delta_sessions.remove(skip).expect("found above")
    } else {
        match opts.get("$deltatoken").filter(|t| !t.is_empty()) {
            Some(t) if t.eq_ignore_ascii_case("latest") => DeltaSession {
                scope: requested,
                remaining: DeltaRemaining::Items(VecDeque::new()),
                end_seq: w.current_seq(),
                start_seq: w.current_seq(),
                select: requested_select,
                epoch,
                empty_page_due: true,
            },
            Some(t) => {
                let token = w
                    .delta_tokens
                    .get(t)
                    .filter(|token| token.scope.collection == collection)
                    .cloned()
                    .ok_or_else(|| {
                        sync_state_not_found(sim, &requested, requested_select.as_deref())
                    })?;
                // A $select on a deltaLink changes the tracked properties from now on.
                let select = requested_select.or(token.select.clone());
                check_stale(&w, sim, token.epoch, &token.scope, select.as_deref())?;
                if token.issued_at + chrono_duration(sim.config.delta_token_max_age) <= now {
                    w.delta_tokens.remove(t);
                    return Err(sync_state_not_found(sim, &token.scope, select.as_deref()));
                }
                let since = if w.switches.delta_replays {
                    token.prev_seq
                } else {
                    token.seq
                };
                let end = w.current_seq();
                let remaining = match collection {
                    Collection::Users => changes_since(&w, since, end, select.as_deref(), partial),
                    Collection::Groups => group_changes_since(
                        &w,
                        &token.scope,
                        since,
                        end,
                        select.as_deref(),
                        partial,
                    ),
                };
                DeltaSession {
                    scope: token.scope,
                    remaining: DeltaRemaining::Items(remaining),
                    end_seq: end,
                    start_seq: token.seq,
                    select,
                    epoch,
                    empty_page_due: true,
                }
            }
            None => {
                let select = requested_select;
                let remaining = match collection {
                    // A cursor, not a copy of the tenant: pages are read as they are served.
                    Collection::Users => DeltaRemaining::Users {
                        after: 0,
                        passes: if w.switches.delta_duplicates { 2 } else { 1 },
                    },
                    Collection::Groups => DeltaRemaining::Items(current_groups(
                        &w,
                        &requested,
                        select.as_deref(),
                        partial,
                    )),
                };
                DeltaSession {
                    scope: requested,
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

    let fresh = opts.get("$skiptoken").is_none();
    if let (true, true, DeltaRemaining::Items(items)) =
        (fresh, w.switches.delta_duplicates, &mut session.remaining)
    {
        // Every item comes again later in the round: on the same page or a following one.
        // (A first round of users does the same with a second pass of its cursor.)
        let copies: Vec<Value> = items.iter().cloned().collect();
        items.extend(copies);
    }
    let segment = collection.segment();
    let context = match &session.select {
        Some(s) => format!("{}/v1.0/$metadata#{segment}({})", sim.base_url, s.join(",")),
        None => format!("{}/v1.0/$metadata#{segment}", sim.base_url),
    };
    let empty_page = w.switches.delta_empty_pages && session.empty_page_due;
    let page: Vec<Value> = if empty_page {
        // An empty page with a nextLink, before (and between) the real ones.
        session.empty_page_due = false;
        Vec::new()
    } else {
        session.empty_page_due = true;
        let size = sim.config.delta_page_size.max(1);
        match &mut session.remaining {
            DeltaRemaining::Items(items) => {
                let take = size.min(items.len());
                items.drain(..take).collect()
            }
            DeltaRemaining::Users { after, passes } => {
                let select = session.select.as_deref();
                let mut page = Vec::new();
                while page.len() < size && *passes > 0 {
                    match w.next_live_user(*after, session.end_seq) {
                        Some(u) => {
                            page.push(Value::Object(project_delta_user(
                                &u.props, select, None, partial,
                            )));
                            *after = u.created_seq;
                        }
                        None => {
                            *passes -= 1;
                            *after = 0;
                        }
                    }
                }
                page
            }
        }
    };
    let done = match &mut session.remaining {
        DeltaRemaining::Items(items) => items.is_empty(),
        DeltaRemaining::Users { after, passes } => {
            // Whether a user is left in this pass or a following one.
            while *passes > 0 && w.next_live_user(*after, session.end_seq).is_none() {
                *passes -= 1;
                *after = 0;
            }
            *passes == 0
        }
    };
    let mut body = json!({ "@odata.context": context, "value": page });
    let token = new_token();
    if !empty_page && done {
        body["@odata.deltaLink"] = json!(delta_url(sim, &session.scope, "$deltatoken", &token));
        w.delta_tokens.insert(
            token,
            DeltaToken {
                scope: session.scope,
                seq: session.end_seq,
                prev_seq: session.start_seq,
                issued_at: now,
                select: session.select,
                epoch,
            },
        );
    } else {
        body["@odata.nextLink"] = json!(delta_url(sim, &session.scope, "$skiptoken", &token));
        w.delta_sessions.insert(token, session);
    }
    Ok(body)
}

/// The entries of a change log (in sequence order) with a sequence number in (since, end],
/// found by binary search: an incremental round reads only what changed since its token.
fn log_since<T>(
    log: &[T],
    seq: impl Fn(&T) -> u64,
    since: u64,
    end: u64,
) -> impl Iterator<Item = &T> {
    let start = log.partition_point(|c| seq(c) <= since);
    log[start..].iter().take_while(move |c| seq(c) <= end)
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
    for c in log_since(&w.changes, |c| c.seq, since, end) {
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
            // Everything is new: as if every property had changed.
            (ChangeKind::Created | ChangeKind::Restored, e) => *e = None,
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

/// Whether a `$select` asks for membership changes (no `$select` includes them too).
fn tracks_members(select: Option<&[String]>) -> bool {
    select.is_none_or(|s| s.iter().any(|f| f == "members"))
}

/// `{"@odata.type", "id"}`, as `members@delta` names a member.
fn member_ref(odata_type: &str, id: &str) -> Value {
    json!({ "@odata.type": odata_type, "id": id })
}

/// A group as delta returns it: the selected properties (all without `$select`; with `partial`
/// only `id`, and never-set ones omitted) and, when given and not empty, `members@delta`.
fn group_item(
    g: &GroupRecord,
    select: Option<&[String]>,
    partial: bool,
    members: Option<Vec<Value>>,
) -> Value {
    let mut out = Map::new();
    if !partial {
        let wanted: Vec<&str> = match select {
            Some(fields) => fields.iter().map(String::as_str).collect(),
            None => GROUP_PROPERTIES.to_vec(),
        };
        for f in wanted.into_iter().filter(|f| *f != "members") {
            out.insert(
                f.to_string(),
                g.props.get(f).cloned().unwrap_or(Value::Null),
            );
        }
    }
    out.insert("id".into(), json!(g.id()));
    if let Some(members) = members.filter(|m| !m.is_empty()) {
        out.insert("members@delta".into(), Value::Array(members));
    }
    Value::Object(out)
}

/// A group with all its current members as `members@delta` (when they are tracked): what the
/// first round returns, and later rounds for a group created since.
fn full_group_item(
    w: &World,
    g: &GroupRecord,
    select: Option<&[String]>,
    omit_null: bool,
) -> Value {
    let members = tracks_members(select).then(|| {
        g.members
            .iter()
            .map(|m| member_ref(w.member_odata_type(m), m))
            .collect()
    });
    let mut item = group_item(g, select, false, members);
    if omit_null {
        if let Some(o) = item.as_object_mut() {
            o.retain(|_, v| !v.is_null());
        }
    }
    item
}

/// The first round of `groups/delta`: the groups in scope, in creation order.
fn current_groups(
    w: &World,
    scope: &DeltaScope,
    select: Option<&[String]>,
    partial: bool,
) -> VecDeque<Value> {
    let mut groups: Vec<&GroupRecord> = w
        .groups
        .values()
        .filter(|g| scope.includes(g.id()))
        .collect();
    groups.sort_by_key(|g| g.created_seq);
    groups
        .into_iter()
        .map(|g| full_group_item(w, g, select, partial))
        .collect()
}

/// The groups in scope that changed in (since, end], each once, in the order of their latest
/// change: deleted ones as `@removed` (`deleted`: security groups are deleted for good), created
/// ones with all their members, the others with `members@delta` holding the net membership
/// changes — added members as references, removed ones with `"@removed": {"reason":
/// "deleted"}` (Graph's shape whether the membership or the member went). Without `members` in
/// `$select`, membership changes are not tracked.
fn group_changes_since(
    w: &World,
    scope: &DeltaScope,
    since: u64,
    end: u64,
    select: Option<&[String]>,
    partial: bool,
) -> VecDeque<Value> {
    let members_tracked = tracks_members(select);
    let mut last_seq: HashMap<&str, u64> = HashMap::new();
    let mut created: HashSet<&str> = HashSet::new();
    // Per group and member: whether it was a member before the interval (known from its first
    // change in the interval), and its type.
    let mut touched: HashMap<&str, Vec<(&str, bool, &str)>> = HashMap::new();
    for c in
        log_since(&w.group_changes, |c| c.seq, since, end).filter(|c| scope.includes(&c.group_id))
    {
        let group = c.group_id.as_str();
        let (member, was_member, odata_type) = match &c.kind {
            GroupChangeKind::Created => {
                created.insert(group);
                last_seq.insert(group, c.seq);
                continue;
            }
            GroupChangeKind::Deleted => {
                last_seq.insert(group, c.seq);
                continue;
            }
            GroupChangeKind::MemberAdded {
                member_id,
                odata_type,
            } => (member_id.as_str(), false, *odata_type),
            GroupChangeKind::MemberRemoved {
                member_id,
                odata_type,
            } => (member_id.as_str(), true, *odata_type),
        };
        if !members_tracked {
            continue;
        }
        last_seq.insert(group, c.seq);
        let members = touched.entry(group).or_default();
        if !members.iter().any(|(m, _, _)| *m == member) {
            members.push((member, was_member, odata_type));
        }
    }
    let mut ids: Vec<(&str, u64)> = last_seq.into_iter().collect();
    ids.sort_by_key(|(_, s)| *s);
    ids.into_iter()
        .map(|(id, _)| match w.groups.get(id) {
            None => json!({ "id": id, "@removed": { "reason": "deleted" } }),
            Some(g) if created.contains(id) => full_group_item(w, g, select, partial),
            Some(g) => {
                let changes = touched
                    .get(id)
                    .into_iter()
                    .flatten()
                    .filter_map(|(member, was_member, odata_type)| {
                        let is_member = g.members.iter().any(|m| m == member);
                        match (*was_member, is_member) {
                            (false, true) => Some(member_ref(odata_type, member)),
                            (true, false) => {
                                let mut gone = member_ref(odata_type, member);
                                gone["@removed"] = json!({ "reason": "deleted" });
                                Some(gone)
                            }
                            _ => None,
                        }
                    })
                    .collect();
                group_item(g, select, partial, Some(changes))
            }
        })
        .collect()
}
