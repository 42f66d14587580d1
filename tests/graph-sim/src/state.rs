//! The simulated tenant: users, groups, the directory change log behind delta queries,
//! subscriptions, and the notification outbox. One mutex guards all of it: the simulator is a
//! test fixture, and a single lock makes every operation atomic (a change and the notification
//! it triggers are recorded together, as in Graph's own change feed).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::{json, Map, Value};

use crate::clock::graph_time;
use crate::delivery::{DeliveryRecord, DeliveryState, QueuedNotification};

/// Properties Graph v1.0 returns for a user when the request has no `$select`
/// (the "Returned by default" set of the user resource). Notably `userType`, `accountEnabled`,
/// `externalUserState`, `otherMails` and `creationType` are NOT in it.
pub const USER_DEFAULT_PROPERTIES: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

/// Every user property the simulator knows; `$select` of anything else is a 400, as in Graph.
pub const USER_ALL_PROPERTIES: &[&str] = &[
    "id",
    "accountEnabled",
    "businessPhones",
    "city",
    "companyName",
    "country",
    "createdDateTime",
    "creationType",
    "deletedDateTime",
    "department",
    "displayName",
    "employeeId",
    "externalUserState",
    "externalUserStateChangeDateTime",
    "givenName",
    "jobTitle",
    "mail",
    "mailNickname",
    "mobilePhone",
    "officeLocation",
    "onPremisesDistinguishedName",
    "onPremisesDomainName",
    "onPremisesImmutableId",
    "onPremisesLastSyncDateTime",
    "onPremisesSamAccountName",
    "onPremisesSyncEnabled",
    "onPremisesUserPrincipalName",
    "otherMails",
    "preferredLanguage",
    "surname",
    "usageLocation",
    "userPrincipalName",
    "userType",
    "onPremisesExtensionAttributes",
];

/// Properties a client may change with `PATCH /users/{id}`.
pub const USER_WRITABLE_PROPERTIES: &[&str] = &[
    "accountEnabled",
    "businessPhones",
    "city",
    "companyName",
    "country",
    "department",
    "displayName",
    "employeeId",
    "givenName",
    "jobTitle",
    "mail",
    "mailNickname",
    "mobilePhone",
    "officeLocation",
    "otherMails",
    "preferredLanguage",
    "surname",
    "usageLocation",
    "userPrincipalName",
    "userType",
    "onPremisesExtensionAttributes",
];

/// Properties Microsoft Entra Connect writes from on-premises AD: for a user with
/// `onPremisesSyncEnabled: true`, a Graph `PATCH` naming any of them is refused (the next sync
/// would overwrite the change). `userType`, `otherMails` and `usageLocation` stay writable, as
/// Entra Connect's default rules do not flow them.
pub const USER_SYNC_MASTERED_PROPERTIES: &[&str] = &[
    "accountEnabled",
    "businessPhones",
    "city",
    "companyName",
    "country",
    "department",
    "displayName",
    "employeeId",
    "givenName",
    "jobTitle",
    "mail",
    "mailNickname",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "onPremisesExtensionAttributes",
];

/// The `onPremises*` properties only Entra Connect writes (read-only in Graph; the control API's
/// synced-user routes set them).
pub const USER_ON_PREMISES_PROPERTIES: &[&str] = &[
    "onPremisesDistinguishedName",
    "onPremisesDomainName",
    "onPremisesImmutableId",
    "onPremisesLastSyncDateTime",
    "onPremisesSamAccountName",
    "onPremisesSyncEnabled",
    "onPremisesUserPrincipalName",
];

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub props: Map<String, Value>,
    /// Creation order, so listings page deterministically.
    pub created_seq: u64,
    pub soft_deleted_at: Option<DateTime<Utc>>,
    /// Simulated time of the last change the simulator recorded for this user (creation,
    /// profile change, soft delete, restore, group membership). With the `replicationLagSeconds`
    /// switch, reads of the user answer 404 until this plus the lag.
    pub changed_at: DateTime<Utc>,
}

impl UserRecord {
    pub fn id(&self) -> &str {
        self.props.get("id").and_then(Value::as_str).unwrap_or("")
    }
    pub fn upn(&self) -> &str {
        self.props
            .get("userPrincipalName")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// Kept in step from on-premises AD by Entra Connect (`onPremisesSyncEnabled: true`).
    pub fn is_synced(&self) -> bool {
        self.props.get("onPremisesSyncEnabled") == Some(&Value::Bool(true))
    }

    /// A B2B collaboration user: invited, or converted by an invitation (`externalUserState`
    /// set), whatever its `userType`.
    pub fn is_external(&self) -> bool {
        self.props
            .get("externalUserState")
            .is_some_and(|s| !s.is_null())
    }

    /// Whether `address` is the user's `mail` (case-insensitive, as Entra compares addresses).
    pub fn has_mail(&self, address: &str) -> bool {
        self.props
            .get("mail")
            .and_then(Value::as_str)
            .is_some_and(|m| m.eq_ignore_ascii_case(address))
    }

    /// Whether `address` is the user's `mail` or one of its `otherMails`.
    pub fn has_address(&self, address: &str) -> bool {
        self.has_mail(address)
            || self
                .props
                .get("otherMails")
                .and_then(Value::as_array)
                .is_some_and(|all| {
                    all.iter()
                        .filter_map(Value::as_str)
                        .any(|m| m.eq_ignore_ascii_case(address))
                })
    }
}

/// A blank user with every known property present (null or empty), so projections are uniform.
pub fn blank_user(id: &str, now: DateTime<Utc>) -> Map<String, Value> {
    let mut props = Map::new();
    for p in USER_ALL_PROPERTIES {
        props.insert((*p).to_string(), Value::Null);
    }
    props.insert("id".into(), json!(id));
    props.insert("businessPhones".into(), json!([]));
    props.insert("otherMails".into(), json!([]));
    props.insert(
        "onPremisesExtensionAttributes".into(),
        Value::Object(no_extension_attributes()),
    );
    props.insert("accountEnabled".into(), json!(true));
    props.insert("createdDateTime".into(), json!(graph_time(now)));
    props
}

/// `extensionAttribute1` … `extensionAttribute15`, all null: Graph always returns the fifteen.
pub fn no_extension_attributes() -> Map<String, Value> {
    (1..=15)
        .map(|n| (format!("extensionAttribute{n}"), Value::Null))
        .collect()
}

const EXTENSION_ATTRIBUTES: &str = "onPremisesExtensionAttributes";

/// The stored form of a new user's properties: those never set (null, and the fifteen null
/// extension attributes) are left out, which [`stored_value`] and [`full_props`] put back. A
/// user is then a fraction of its full map: a simulated tenant of a million users fits in a
/// few GiB.
pub fn compact_props(props: &mut Map<String, Value>) {
    props.retain(|k, v| match v {
        Value::Null => false,
        Value::Object(o) if k == EXTENSION_ATTRIBUTES => o.values().any(|a| !a.is_null()),
        _ => true,
    });
}

/// A stored property as the full map has it: null when left out, the fifteen null extension
/// attributes for `onPremisesExtensionAttributes`.
pub fn stored_value(props: &Map<String, Value>, name: &str) -> Value {
    match props.get(name) {
        Some(v) => v.clone(),
        None if name == EXTENSION_ATTRIBUTES => Value::Object(no_extension_attributes()),
        None => Value::Null,
    }
}

/// Every property of a stored user, those left out by [`compact_props`] put back: what the
/// user's full map was before it was stored.
pub fn full_props(props: &Map<String, Value>) -> Map<String, Value> {
    let mut out = props.clone();
    for p in USER_ALL_PROPERTIES {
        if !out.contains_key(*p) {
            out.insert((*p).to_string(), stored_value(props, p));
        }
    }
    out
}

/// Projects a user for a response: `$select`ed properties (plus `id`, which Graph always
/// returns) or the default set.
pub fn project_user(props: &Map<String, Value>, select: Option<&[String]>) -> Map<String, Value> {
    let mut out = Map::new();
    match select {
        Some(fields) => {
            for f in fields {
                out.insert(f.clone(), stored_value(props, f));
            }
        }
        None => {
            for f in USER_DEFAULT_PROPERTIES {
                out.insert((*f).to_string(), stored_value(props, f));
            }
        }
    }
    out.insert("id".into(), props.get("id").cloned().unwrap_or(Value::Null));
    out
}

/// A delta item: like [`project_user`], but with `omit_null` the properties that were never set
/// (null) are left out, and with `only` just `id` and those properties are kept (Graph's
/// "only the changed properties" in incremental rounds).
pub fn project_delta_user(
    props: &Map<String, Value>,
    select: Option<&[String]>,
    only: Option<&HashSet<String>>,
    omit_null: bool,
) -> Map<String, Value> {
    let mut out = project_user(props, select);
    out.retain(|k, v| {
        k == "id" || (only.is_none_or(|o| o.contains(k)) && !(omit_null && v.is_null()))
    });
    out
}

/// The directory collections the simulator serves delta queries and subscriptions for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    Users,
    Groups,
}

impl Collection {
    /// The path segment: `users`, `groups`.
    pub fn segment(self) -> &'static str {
        match self {
            Collection::Users => "users",
            Collection::Groups => "groups",
        }
    }

    /// How change notifications name the resource (`Users/{id}`, `Groups/{id}`) and its type,
    /// as Graph sends them.
    fn notification_names(self) -> (&'static str, &'static str) {
        match self {
            Collection::Users => ("Users", "#Microsoft.Graph.User"),
            Collection::Groups => ("Groups", "#Microsoft.Graph.Group"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GroupRecord {
    pub props: Map<String, Value>,
    /// Direct members (user or group ids), in insertion order.
    pub members: Vec<String>,
    /// Creation order, so listings and delta rounds are deterministic.
    pub created_seq: u64,
}

impl GroupRecord {
    pub fn id(&self) -> &str {
        self.props.get("id").and_then(Value::as_str).unwrap_or("")
    }
}

/// What happened to a group, as recorded in the change log that `groups/delta` reads. Members
/// keep their `@odata.type` so a removal can still name it after the member is gone.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupChangeKind {
    Created,
    MemberAdded {
        member_id: String,
        odata_type: &'static str,
    },
    MemberRemoved {
        member_id: String,
        odata_type: &'static str,
    },
    /// Groups are deleted for good (security groups have no soft delete).
    Deleted,
}

#[derive(Debug, Clone)]
pub struct GroupChangeEntry {
    pub seq: u64,
    pub group_id: String,
    pub kind: GroupChangeKind,
}

/// Every group property the simulator keeps (all returned without `$select`).
pub const GROUP_PROPERTIES: &[&str] = &[
    "id",
    "createdDateTime",
    "description",
    "displayName",
    "groupTypes",
    "mailEnabled",
    "mailNickname",
    "securityEnabled",
];

pub const USER_ODATA_TYPE: &str = "#microsoft.graph.user";
pub const GROUP_ODATA_TYPE: &str = "#microsoft.graph.group";

/// What happened to a user, as recorded in the change log that delta queries read.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeKind {
    /// Created: every property is new (kept apart from `Upsert` so a creation does not store
    /// every property name: a tenant of a million users would hold a million such lists).
    Created,
    /// Updated; the names of the properties that changed.
    Upsert(Vec<String>),
    SoftDeleted,
    Restored,
    Purged,
}

#[derive(Debug, Clone)]
pub struct ChangeEntry {
    pub seq: u64,
    pub user_id: String,
    pub kind: ChangeKind,
}

/// What a delta link tracks: its collection and, for `groups/delta?$filter=id eq …`, the
/// (lower-cased) ids it is limited to.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaScope {
    pub collection: Collection,
    pub ids: Option<Vec<String>>,
}

impl DeltaScope {
    pub fn includes(&self, id: &str) -> bool {
        self.ids
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|i| i.eq_ignore_ascii_case(id)))
    }
}

/// Server-side state behind an opaque `$deltatoken`.
#[derive(Debug, Clone)]
pub struct DeltaToken {
    pub scope: DeltaScope,
    /// Changes with a sequence number above this are "new" for the holder.
    pub seq: u64,
    /// The sequence the previous round started from; used to replay changes when replays are on.
    pub prev_seq: u64,
    pub issued_at: DateTime<Utc>,
    pub select: Option<Vec<String>>,
    /// [`World::delta_epoch`] when the link was minted; see `staleDeltaTokens`.
    pub epoch: u64,
}

/// What a delta round in progress has left to serve.
#[derive(Debug, Clone)]
pub enum DeltaRemaining {
    /// Items worked out when the round started: incremental rounds (as many as changed since
    /// the token) and the first round of `groups/delta`.
    Items(VecDeque<Value>),
    /// The first round of `users/delta`, read from the tenant page by page rather than copied
    /// when it starts, so a page costs O(page) whatever the tenant's size: the live users
    /// created up to the session's `end_seq` ([`World::user_order`]), in creation order, after
    /// the one created at `after` (0: from the start). `passes` is how many times the round
    /// goes through them still, this pass included: 2 with `deltaDuplicates` (every item comes
    /// again later in the round), else 1; 0 once the round is done. Users are read as they are
    /// when their page is served.
    Users { after: u64, passes: u8 },
}

/// Server-side state behind an opaque `$skiptoken` of a delta round in progress.
#[derive(Debug, Clone)]
pub struct DeltaSession {
    pub scope: DeltaScope,
    pub remaining: DeltaRemaining,
    pub end_seq: u64,
    pub start_seq: u64,
    pub select: Option<Vec<String>>,
    /// [`World::delta_epoch`] when the round started; see `staleDeltaTokens`.
    pub epoch: u64,
    /// With `deltaEmptyPages`: the next page served is an empty one (with a nextLink).
    pub empty_page_due: bool,
}

#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    pub resource: String,
    pub change_types: Vec<String>,
    pub notification_url: String,
    pub lifecycle_url: Option<String>,
    pub client_state: Option<String>,
    pub expiration: DateTime<Utc>,
    pub latest_tls: String,
    /// Set when a `reauthorizationRequired` challenge was sent; cleared by reauthorize or renew.
    pub needs_reauthorization: bool,
    /// Graph eventually pauses delivery until the app reauthorizes; the control API can ask for it.
    pub paused: bool,
    /// Simulated time of creation, the last reauthorization or the last renewal (what
    /// `spontaneousReauthorizationSeconds` counts from).
    pub authorized_at: DateTime<Utc>,
    /// Change notifications withheld while paused; queued for delivery on reauthorize/renew.
    pub withheld: Vec<QueuedNotification>,
}

impl Subscription {
    /// Reauthorization or renewal: delivery resumes, and what was withheld while paused is
    /// handed back for delivery (so a client that reauthorizes promptly loses nothing).
    pub fn reauthorize(&mut self, now: DateTime<Utc>) -> Vec<QueuedNotification> {
        self.needs_reauthorization = false;
        self.paused = false;
        self.authorized_at = now;
        std::mem::take(&mut self.withheld)
            .into_iter()
            .map(|mut q| {
                q.paused = false;
                q
            })
            .collect()
    }

    /// Whether a change of `change_type` to object `id` of `collection` falls under this
    /// subscription (`/users`, `/users/{id}`, `/groups`, `/groups/{id}`).
    pub fn matches(&self, collection: Collection, id: &str, change_type: &str) -> bool {
        if !self.change_types.iter().any(|c| c == change_type) {
            return false;
        }
        let resource = self.resource.trim_start_matches('/').to_ascii_lowercase();
        let segment = collection.segment();
        resource == segment || resource == format!("{segment}/{}", id.to_ascii_lowercase())
    }
}

/// How the `Retry-After` header of 429 and 503 answers is written (switch `retryAfter`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RetryAfterStyle {
    /// The configured value as is: whole seconds (`"7"`), or a fraction when the fault rule
    /// asked for one (`"2.128"`).
    #[default]
    Seconds,
    /// A fractional number of seconds: whole configured values get 0.128 s added (`"7.128"`).
    Fractional,
    /// No `Retry-After` header at all.
    Missing,
}

/// What delta links minted before `staleDeltaTokens` was set answer (switch `staleDeltaTokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StaleDeltaTokens {
    /// `410 Gone`, `syncStateNotFound`, `Location` = a fresh initial delta URL.
    Gone,
    /// `400 Bad Request`, `syncStateNotFound`, no `Location`.
    BadRequest,
    /// `410 Gone`, `resyncRequired`, `Location` = a fresh initial delta URL.
    ResyncRequired,
}

/// Switches for the deliberately unkind behaviours. All are off by default; `POST
/// /_sim/switches` changes only the fields it names.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Switches {
    /// Drop every change notification silently (they still appear in the delivery log as `lost`).
    #[serde(default)]
    pub notifications_lost: bool,
    /// Deliver every notification batch twice.
    #[serde(default)]
    pub duplicate_notifications: bool,
    /// Deliver the items of a batch in reverse order, and batches out of order.
    #[serde(default)]
    pub reorder_notifications: bool,
    /// Delta rounds also repeat the changes of the previous round.
    #[serde(default)]
    pub delta_replays: bool,
    /// Eventual consistency: reads of a single user (`GET /users/{id}`, deleted item by id,
    /// `checkMemberGroups`) answer 404 for this many simulated seconds after the user was
    /// created or changed. 0 = off. Listings and delta are not affected.
    #[serde(default)]
    pub replication_lag_seconds: f64,
    /// How `Retry-After` is written on 429/503 answers.
    #[serde(default)]
    pub retry_after: RetryAfterStyle,
    /// Every live subscription is sent `reauthorizationRequired` (and its delivery paused) this
    /// many simulated seconds after its creation, last reauthorization or renewal. 0 = off.
    #[serde(default)]
    pub spontaneous_reauthorization_seconds: f64,
    /// Delta rounds repeat every item (later in the round, on the same or the next page).
    #[serde(default)]
    pub delta_duplicates: bool,
    /// Delta items omit never-set (null) properties; in incremental rounds they carry only `id`
    /// and the properties changed since the last round.
    #[serde(default)]
    pub delta_partial_items: bool,
    /// Delta rounds include empty pages (`"value": []` with a nextLink) before and between the
    /// real ones.
    #[serde(default)]
    pub delta_empty_pages: bool,
    /// When set, every delta link (deltaLink and nextLink) minted before it was set answers this
    /// error; links minted afterwards work. Setting it again invalidates again.
    #[serde(default)]
    pub stale_delta_tokens: Option<StaleDeltaTokens>,
    /// The app's permission (admin consent) was taken away: every Graph call answers 403
    /// `Authorization_RequestDenied`, and no change notification is delivered. Tokens are still
    /// issued.
    #[serde(default)]
    pub permission_removed: bool,
    /// A request repeated before the `Retry-After` of its last answer is served like any other.
    /// Off (the default), it is throttled again for the rest of the wait, as Graph does (and
    /// counted in `GET /_sim/faults/stats`).
    #[serde(default)]
    pub early_retries_allowed: bool,
}

#[derive(Debug, Default)]
pub struct World {
    pub users: HashMap<String, UserRecord>,
    /// Every user's id by its `created_seq` (soft-deleted users too, until purged): the order
    /// of listings and of the first delta round, which pages through it with a cursor.
    pub user_order: BTreeMap<u64, String>,
    /// Ids of the soft-deleted users (kept by [`World::record_change`]): what housekeeping,
    /// which runs on every lock of the tenant, looks through, rather than every user.
    pub soft_deleted: HashSet<String>,
    pub groups: HashMap<String, GroupRecord>,
    pub next_seq: u64,
    pub changes: Vec<ChangeEntry>,
    pub group_changes: Vec<GroupChangeEntry>,
    pub delta_tokens: HashMap<String, DeltaToken>,
    pub delta_sessions: HashMap<String, DeltaSession>,
    pub subscriptions: HashMap<String, Subscription>,
    pub switches: Switches,
    pub delivery: DeliveryState,
    /// Incremented each time `staleDeltaTokens` is set; delta links remember the epoch they were
    /// minted in.
    pub delta_epoch: u64,
}

impl World {
    pub fn bump_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    pub fn current_seq(&self) -> u64 {
        self.next_seq
    }

    /// Finds a live (not soft-deleted) user by object id or UPN (case-insensitive, as Graph).
    pub fn find_user_id(&self, key: &str) -> Option<String> {
        if let Some(u) = self.users.get(key) {
            return (u.soft_deleted_at.is_none()).then(|| u.id().to_string());
        }
        let lower = key.to_ascii_lowercase();
        self.users
            .values()
            .find(|u| {
                u.soft_deleted_at.is_none()
                    && (u.id().eq_ignore_ascii_case(key) || u.upn().to_ascii_lowercase() == lower)
            })
            .map(|u| u.id().to_string())
    }

    pub fn live_users_sorted(&self) -> Vec<&UserRecord> {
        self.user_order
            .values()
            .filter_map(|id| self.users.get(id))
            .filter(|u| u.soft_deleted_at.is_none())
            .collect()
    }

    /// Adds a new user (its `created_seq` set by the caller) to the tenant and its order.
    pub fn insert_user(&mut self, id: String, user: UserRecord) {
        self.user_order.insert(user.created_seq, id.clone());
        if let Some(old) = self.users.insert(id, user) {
            self.user_order.remove(&old.created_seq);
        }
    }

    /// The first live user created in (`after`, `end`], in creation order.
    pub fn next_live_user(&self, after: u64, end: u64) -> Option<&UserRecord> {
        if after >= end {
            return None;
        }
        self.user_order
            .range(after + 1..=end)
            .filter_map(|(_, id)| self.users.get(id))
            .find(|u| u.soft_deleted_at.is_none())
    }

    pub fn deleted_users_sorted(&self) -> Vec<&UserRecord> {
        self.user_order
            .values()
            .filter_map(|id| self.users.get(id))
            .filter(|u| u.soft_deleted_at.is_some())
            .collect()
    }

    /// Records a change for delta queries and queues change notifications for every matching,
    /// live subscription. Creation, update, soft deletion and restore are `updated` for users;
    /// only permanent deletion is `deleted` (Graph's documented behaviour for `users`).
    pub fn record_change(
        &mut self,
        user_id: &str,
        kind: ChangeKind,
        now: DateTime<Utc>,
        tenant_id: &str,
    ) {
        self.touch_user(user_id, now);
        match kind {
            ChangeKind::SoftDeleted => {
                self.soft_deleted.insert(user_id.to_string());
            }
            ChangeKind::Restored | ChangeKind::Purged => {
                self.soft_deleted.remove(user_id);
            }
            ChangeKind::Created | ChangeKind::Upsert(_) => {}
        }
        let seq = self.bump_seq();
        self.changes.push(ChangeEntry {
            seq,
            user_id: user_id.to_string(),
            kind: kind.clone(),
        });
        let change_type = if kind == ChangeKind::Purged {
            "deleted"
        } else {
            "updated"
        };
        self.notify(Collection::Users, user_id, change_type, now, tenant_id);
    }

    /// Records a group change for `groups/delta` and notifies the matching subscriptions:
    /// `deleted` for a deletion, `updated` for everything else — creation and membership
    /// changes included, as Graph documents for groups.
    pub fn record_group_change(
        &mut self,
        group_id: &str,
        kind: GroupChangeKind,
        now: DateTime<Utc>,
        tenant_id: &str,
    ) {
        let seq = self.bump_seq();
        let change_type = if kind == GroupChangeKind::Deleted {
            "deleted"
        } else {
            "updated"
        };
        self.group_changes.push(GroupChangeEntry {
            seq,
            group_id: group_id.to_string(),
            kind,
        });
        self.notify(Collection::Groups, group_id, change_type, now, tenant_id);
    }

    /// Queues a basic change notification for every live subscription matching the change.
    fn notify(
        &mut self,
        collection: Collection,
        id: &str,
        change_type: &str,
        now: DateTime<Utc>,
        tenant_id: &str,
    ) {
        let (resource_name, resource_type) = collection.notification_names();
        let mut matching: Vec<&Subscription> = self
            .subscriptions
            .values()
            .filter(|s| s.expiration > now && s.matches(collection, id, change_type))
            .collect();
        matching.sort_by(|a, b| a.id.cmp(&b.id));
        let mut queued = Vec::new();
        for sub in matching {
            let item = json!({
                "subscriptionId": sub.id,
                "subscriptionExpirationDateTime": crate::clock::graph_time_precise(sub.expiration),
                "changeType": change_type,
                "resource": format!("{resource_name}/{id}"),
                "resourceData": {
                    "@odata.type": resource_type,
                    "@odata.id": format!("{resource_name}/{id}"),
                    "id": id,
                    "organizationId": tenant_id,
                },
                "clientState": sub.client_state,
                "tenantId": tenant_id,
            });
            queued.push(QueuedNotification {
                url: sub.notification_url.clone(),
                subscription_id: sub.id.clone(),
                item,
                paused: sub.paused,
            });
        }
        for q in queued {
            self.dispatch(q, now);
        }
    }

    /// Queues `q` for delivery, or logs why it is not sent: the switches (`denied`, `lost`), or
    /// its subscription paused (`paused`: withheld until reauthorization).
    pub fn dispatch(&mut self, q: QueuedNotification, now: DateTime<Utc>) {
        let outcome = if self.switches.permission_removed {
            "denied"
        } else if self.switches.notifications_lost {
            "lost"
        } else if q.paused {
            "paused"
        } else {
            self.delivery.enqueue(q);
            return;
        };
        let id = self.delivery.next_record_id();
        self.delivery.log.push(DeliveryRecord::unsent(
            id,
            now,
            &q.url,
            "notification",
            json!({ "value": [q.item] }),
            outcome,
        ));
        if outcome == "paused" {
            if let Some(sub) = self.subscriptions.get_mut(&q.subscription_id) {
                sub.withheld.push(q);
            }
        }
    }

    /// Notes a change to a user that reads must catch up with (replication lag).
    pub fn touch_user(&mut self, user_id: &str, now: DateTime<Utc>) {
        if let Some(u) = self.users.get_mut(user_id) {
            u.changed_at = now;
        }
    }

    /// Simulated time from which single-user reads see the user's last change.
    pub fn visible_from(&self, user: &UserRecord) -> DateTime<Utc> {
        let lag = self.switches.replication_lag_seconds;
        if lag > 0.0 {
            user.changed_at + ChronoDuration::milliseconds((lag * 1000.0) as i64)
        } else {
            user.changed_at
        }
    }

    /// Whether a single-user read at `now` sees the user (see `replicationLagSeconds`).
    pub fn replicated(&self, user_id: &str, now: DateTime<Utc>) -> bool {
        self.users
            .get(user_id)
            .is_none_or(|u| self.visible_from(u) <= now)
    }

    /// Sends a lifecycle notification for a subscription. `reauthorizationRequired` marks it
    /// as needing reauthorization and, with `pause`, withholds its change notifications until
    /// the app reauthorizes or renews; `subscriptionRemoved` deletes it; `missed` only notifies.
    /// Without a lifecycle URL the state changes but nothing is sent.
    pub fn lifecycle_event(
        &mut self,
        id: &str,
        event: &str,
        pause: bool,
        tenant_id: &str,
    ) -> Result<Value, String> {
        let s = self
            .subscriptions
            .get_mut(id)
            .ok_or_else(|| "not found".to_string())?;
        let url = s.lifecycle_url.clone();
        let item = json!({
            "subscriptionId": s.id,
            "subscriptionExpirationDateTime": crate::clock::graph_time_precise(s.expiration),
            "tenantId": tenant_id,
            "clientState": s.client_state,
            "lifecycleEvent": event,
        });
        match event {
            "reauthorizationRequired" => {
                s.needs_reauthorization = true;
                s.paused = s.paused || pause;
            }
            "subscriptionRemoved" => {
                self.subscriptions.remove(id);
            }
            "missed" => {}
            other => return Err(format!("Unknown lifecycleEvent '{other}'.")),
        }
        if let Some(url) = url {
            self.delivery.enqueue(QueuedNotification {
                url,
                subscription_id: id.to_string(),
                item: item.clone(),
                paused: false,
            });
        }
        Ok(item)
    }

    /// `spontaneousReauthorizationSeconds`: every live subscription not already waiting for
    /// reauthorization whose last authorization is that old gets `reauthorizationRequired`
    /// with delivery paused. Returns whether anything was queued.
    pub fn spontaneous_reauthorizations(&mut self, now: DateTime<Utc>, tenant_id: &str) -> bool {
        let after = self.switches.spontaneous_reauthorization_seconds;
        if after <= 0.0 {
            return false;
        }
        let after = ChronoDuration::milliseconds((after * 1000.0) as i64);
        let mut due: Vec<String> = self
            .subscriptions
            .values()
            .filter(|s| s.expiration > now && !s.needs_reauthorization)
            .filter(|s| s.authorized_at + after <= now)
            .map(|s| s.id.clone())
            .collect();
        due.sort();
        for id in &due {
            let _ = self.lifecycle_event(id, "reauthorizationRequired", true, tenant_id);
        }
        !due.is_empty()
    }

    /// Time-driven state changes: expired subscriptions disappear, and soft-deleted users are
    /// purged after the retention period (30 days in Entra ID), which is a permanent deletion.
    pub fn housekeeping(&mut self, now: DateTime<Utc>, retention: ChronoDuration, tenant_id: &str) {
        self.subscriptions.retain(|_, s| s.expiration > now);
        let mut expired: Vec<String> = self
            .soft_deleted
            .iter()
            .filter_map(|id| self.users.get(id))
            .filter(|u| u.soft_deleted_at.is_some_and(|t| t + retention <= now))
            .map(|u| u.id().to_string())
            .collect();
        // In creation order, so purges (and their recorded changes) come in a stable order.
        expired.sort_by_key(|id| self.users.get(id).map(|u| u.created_seq));
        for id in expired {
            self.purge_user(&id, now, tenant_id);
        }
    }

    /// Permanent deletion: the user leaves its groups (soft-deleted users keep their
    /// memberships, as in Entra ID), each a recorded group change.
    pub fn purge_user(&mut self, id: &str, now: DateTime<Utc>, tenant_id: &str) {
        if self.users.contains_key(id) {
            for group_id in self.groups_with_member(id) {
                self.remove_member(&group_id, id, now, tenant_id);
            }
            if let Some(u) = self.users.remove(id) {
                self.user_order.remove(&u.created_seq);
            }
            self.record_change(id, ChangeKind::Purged, now, tenant_id);
        }
    }

    /// `#microsoft.graph.user` or `#microsoft.graph.group`, as `members@delta` names members.
    pub fn member_odata_type(&self, member_id: &str) -> &'static str {
        if self.groups.contains_key(member_id) {
            GROUP_ODATA_TYPE
        } else {
            USER_ODATA_TYPE
        }
    }

    /// Ids of the groups `member_id` is a direct member of, in creation order.
    pub fn groups_with_member(&self, member_id: &str) -> Vec<String> {
        let mut found: Vec<&GroupRecord> = self
            .groups
            .values()
            .filter(|g| g.members.iter().any(|m| m == member_id))
            .collect();
        found.sort_by_key(|g| g.created_seq);
        found.iter().map(|g| g.id().to_string()).collect()
    }

    /// Adds a direct member (a recorded group change); false when it already was one.
    pub fn add_member(
        &mut self,
        group_id: &str,
        member_id: &str,
        now: DateTime<Utc>,
        tenant_id: &str,
    ) -> bool {
        let odata_type = self.member_odata_type(member_id);
        let Some(group) = self.groups.get_mut(group_id) else {
            return false;
        };
        if group.members.iter().any(|m| m == member_id) {
            return false;
        }
        group.members.push(member_id.to_string());
        self.touch_user(member_id, now);
        self.record_group_change(
            group_id,
            GroupChangeKind::MemberAdded {
                member_id: member_id.to_string(),
                odata_type,
            },
            now,
            tenant_id,
        );
        true
    }

    /// Removes a direct member (a recorded group change); false when it was none.
    pub fn remove_member(
        &mut self,
        group_id: &str,
        member_id: &str,
        now: DateTime<Utc>,
        tenant_id: &str,
    ) -> bool {
        let odata_type = self.member_odata_type(member_id);
        let Some(group) = self.groups.get_mut(group_id) else {
            return false;
        };
        let before = group.members.len();
        group.members.retain(|m| m != member_id);
        if group.members.len() == before {
            return false;
        }
        self.touch_user(member_id, now);
        self.record_group_change(
            group_id,
            GroupChangeKind::MemberRemoved {
                member_id: member_id.to_string(),
                odata_type,
            },
            now,
            tenant_id,
        );
        true
    }

    /// Deletes a group for good: it leaves the groups it was a member of (each a change for
    /// them), and its own deletion is a `deleted` change. False when there is no such group.
    pub fn delete_group(&mut self, group_id: &str, now: DateTime<Utc>, tenant_id: &str) -> bool {
        if !self.groups.contains_key(group_id) {
            return false;
        }
        for parent in self.groups_with_member(group_id) {
            self.remove_member(&parent, group_id, now, tenant_id);
        }
        let removed = self.groups.remove(group_id).expect("checked above");
        // Their memberships changed: reads of them catch up after the replication lag.
        for member in &removed.members {
            self.touch_user(member, now);
        }
        self.record_group_change(group_id, GroupChangeKind::Deleted, now, tenant_id);
        true
    }

    /// Ids of all groups `member_id` belongs to, directly or through nested groups.
    pub fn transitive_groups(&self, member_id: &str) -> HashSet<String> {
        let mut found = HashSet::new();
        let mut frontier = vec![member_id.to_string()];
        while let Some(current) = frontier.pop() {
            for (gid, g) in &self.groups {
                if g.members.iter().any(|m| m == &current) && found.insert(gid.clone()) {
                    frontier.push(gid.clone());
                }
            }
        }
        found
    }
}
