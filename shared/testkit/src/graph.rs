//! [`FakeGraph`]: Microsoft Graph in memory, answering the [`Graph`] port the way the real
//! client maps Graph's answers (the simulator in `tests/graph-sim` imitates the HTTP side):
//! users active, soft-deleted (in deleted items) or gone; transitive group membership like
//! `checkMemberGroups`; users delta with paging, opaque links and tokens that expire (`410
//! syncStateNotFound`); guests paging; subscriptions with Graph's 409 on a second one for the
//! same resource and change types, and expiry by the fake's own clock. Every method can be made
//! to fail, and every call is recorded.

use crate::faults::{lock, Faults, MakeError};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use shadowsync_core::{Clock, GraphUser, ManualClock, ObjectId, UserLookup};
use shadowsync_ports::{
    DeltaCursor, DeltaItem, Graph, GraphError, GraphIdentity, GroupChange, Member, MemberKind,
    NewSubscription, Page, Subscription, SubscriptionId,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// The tenant's initial domain, in guests' userPrincipalNames.
pub const TENANT_DOMAIN: &str = "contoso.onmicrosoft.com";
/// Graph's cap on a subscription's lifetime for users (minutes).
pub const MAX_SUBSCRIPTION_MINUTES: i64 = 41_760;
/// How long a delta token stays usable (directory objects: 7 days).
pub const DELTA_TOKEN_DAYS: i64 = 7;
const LINKS: &str = "https://graph.fake.test/v1.0";

/// The port's methods, for fault injection and call counts. `Any` matches every method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GraphOp {
    Any,
    User,
    UserByPrincipalName,
    IsMemberOf,
    GroupExists,
    UsersDelta,
    Guests,
    GroupMembers,
    GroupDelta,
    CreateSubscription,
    Subscription,
    Subscriptions,
    RenewSubscription,
    ReauthorizeSubscription,
    DeleteSubscription,
}

struct Stored {
    user: GraphUser,
    soft_deleted: bool,
    /// Creation order: Graph lists users in a stable order.
    created: u64,
}

enum Session {
    Delta {
        remaining: VecDeque<DeltaItem>,
        end_seq: u64,
        /// The page that gave this link was an empty one (see `empty_delta_pages`).
        after_empty: bool,
    },
    Guests {
        remaining: VecDeque<ObjectId>,
    },
}

/// One entry of the groups' change log.
struct GroupEvent {
    seq: u64,
    group: ObjectId,
    /// `None`: the group itself was deleted.
    member: Option<(ObjectId, MemberKind)>,
    added: bool,
}

struct DeltaToken {
    seq: u64,
    issued_at: DateTime<Utc>,
}

struct World {
    users: BTreeMap<ObjectId, Stored>,
    /// Group id → member ids (users or groups).
    groups: BTreeMap<ObjectId, BTreeSet<ObjectId>>,
    /// Every membership change and group deletion, in order (on `seq`): what a groups
    /// deltaLink returns is computed from it.
    group_log: Vec<GroupEvent>,
    ids: u64,
    /// Every change to a user, in order: what a deltaLink returns is computed from it.
    seq: u64,
    changes: Vec<(u64, ObjectId)>,
    delta_tokens: HashMap<String, DeltaToken>,
    sessions: HashMap<String, Session>,
    tokens: u64,
    delta_page_size: usize,
    guests_page_size: usize,
    partial_delta_items: bool,
    duplicate_delta_items: bool,
    empty_delta_pages: bool,
    unreadable_delta_items: usize,
    /// A clock each users delta call moves on, and by how much (see `set_delta_page_time`).
    delta_page_time: Option<(Arc<ManualClock>, Duration)>,
    subscriptions: BTreeMap<String, Subscription>,
    reauthorizations: HashMap<String, usize>,
    faults: Faults<GraphOp, GraphError>,
    calls: Vec<(GraphOp, String)>,
    throttled: u64,
    /// Users the replica that answers reads does not show yet (Entra is eventually consistent):
    /// reads of them answer as if they did not exist; lists and delta show them.
    lagging: BTreeSet<ObjectId>,
    identity: GraphIdentity,
}

/// Microsoft Graph in memory. Cheap to share behind an `Arc`. The port's methods answer
/// errors as Graph would; the test helpers panic on an id the fake does not hold (a mistake in
/// the test, not an answer Graph gives).
pub struct FakeGraph {
    world: Mutex<World>,
    clock: Arc<ManualClock>,
}

/// Where the fakes' clocks start: a fixed time, so tests are the same every run.
pub fn epoch() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2030-01-07T09:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

impl Default for FakeGraph {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeGraph {
    /// A Graph with its own clock, starting at [`epoch`].
    pub fn new() -> Self {
        Self::with_clock(Arc::new(ManualClock::new(epoch())))
    }

    /// A Graph whose time is `clock` (share it with the application to move both at once).
    pub fn with_clock(clock: Arc<ManualClock>) -> Self {
        Self {
            world: Mutex::new(World {
                users: BTreeMap::new(),
                groups: BTreeMap::new(),
                group_log: Vec::new(),
                ids: 0,
                seq: 0,
                changes: Vec::new(),
                delta_tokens: HashMap::new(),
                sessions: HashMap::new(),
                tokens: 0,
                delta_page_size: 100,
                guests_page_size: 999,
                partial_delta_items: false,
                duplicate_delta_items: false,
                empty_delta_pages: false,
                unreadable_delta_items: 0,
                delta_page_time: None,
                subscriptions: BTreeMap::new(),
                reauthorizations: HashMap::new(),
                faults: Faults::default(),
                lagging: BTreeSet::new(),
                calls: Vec::new(),
                throttled: 0,
                identity: GraphIdentity {
                    tenant: "8a3f6c2e-5b1d-4e7a-9c0f-2d4b6e8a1c3f".into(),
                    client_id: "f1e2d3c4-b5a6-4978-8a9b-0c1d2e3f4a5b".into(),
                },
            }),
            clock,
        }
    }

    /// Graph's clock, to move Graph's time (subscription expiry, delta token age). Shadows the
    /// port's `clock()`, which returns the same clock as `Arc<dyn Clock>`.
    pub fn clock(&self) -> Arc<ManualClock> {
        self.clock.clone()
    }

    // ---- users and groups -----------------------------------------------------------------

    /// Invites `email` as a B2B guest, as Graph's invitation API makes one: userType Guest,
    /// enabled, PendingAcceptance, UPN `alice_fabrikam.com#EXT#@contoso.onmicrosoft.com`, display
    /// name from the address.
    pub fn invite_guest(&self, email: &str) -> ObjectId {
        let name = email.split('@').next().unwrap_or(email);
        self.invite_guest_as(email, name)
    }

    /// [`FakeGraph::invite_guest`] with a display name.
    pub fn invite_guest_as(&self, email: &str, display_name: &str) -> ObjectId {
        self.insert(GraphUser {
            user_principal_name: Some(format!("{}#EXT#@{TENANT_DOMAIN}", email.replace('@', "_"))),
            display_name: Some(display_name.into()),
            mail: Some(email.into()),
            other_mails: vec![email.into()],
            user_type: Some("Guest".into()),
            external_user_state: Some("PendingAcceptance".into()),
            account_enabled: Some(true),
            creation_type: Some("Invitation".into()),
            ..Default::default()
        })
    }

    /// An employee (userType Member).
    pub fn add_member(&self, upn: &str, display_name: &str) -> ObjectId {
        self.insert(GraphUser {
            user_principal_name: Some(upn.into()),
            display_name: Some(display_name.into()),
            mail: Some(upn.into()),
            user_type: Some("Member".into()),
            account_enabled: Some(true),
            ..Default::default()
        })
    }

    /// Adds `user` as given, with a new id.
    pub fn insert(&self, user: GraphUser) -> ObjectId {
        let mut w = lock(&self.world);
        let id = new_id(&mut w);
        let created = w.ids;
        w.users.insert(
            id.clone(),
            Stored {
                user: GraphUser {
                    id: id.clone(),
                    ..user
                },
                soft_deleted: false,
                created,
            },
        );
        changed(&mut w, &id);
        id
    }

    /// Changes a user (active or soft-deleted); recorded as a change for users delta.
    pub fn update_user(&self, id: &ObjectId, change: impl FnOnce(&mut GraphUser)) {
        let mut w = lock(&self.world);
        let stored = w
            .users
            .get_mut(id)
            .unwrap_or_else(|| panic!("FakeGraph: no user {id}"));
        change(&mut stored.user);
        stored.user.id = id.clone();
        changed(&mut w, id);
    }

    /// The invitation was redeemed.
    pub fn accept_invitation(&self, id: &ObjectId) {
        self.update_user(id, |u| u.external_user_state = Some("Accepted".into()));
    }

    /// `DELETE /users/{id}`: into deleted items, restorable.
    pub fn soft_delete(&self, id: &ObjectId) {
        let now = self.clock.now();
        self.set_deleted(id, true, Some(now));
    }

    /// Restores a soft-deleted user.
    pub fn restore(&self, id: &ObjectId) {
        self.set_deleted(id, false, None);
    }

    fn set_deleted(&self, id: &ObjectId, deleted: bool, at: Option<DateTime<Utc>>) {
        let mut w = lock(&self.world);
        let stored = w
            .users
            .get_mut(id)
            .unwrap_or_else(|| panic!("FakeGraph: no user {id}"));
        stored.soft_deleted = deleted;
        stored.user.deleted_date_time = at;
        changed(&mut w, id);
    }

    /// Gone for good (purged from deleted items, or never restorable); memberships go too.
    pub fn delete_permanently(&self, id: &ObjectId) {
        let mut w = lock(&self.world);
        if w.users.remove(id).is_some() {
            for members in w.groups.values_mut() {
                members.remove(id);
            }
            changed(&mut w, id);
        }
    }

    /// The user as stored (active or soft-deleted), without counting a call.
    pub fn stored_user(&self, id: &ObjectId) -> Option<GraphUser> {
        lock(&self.world).users.get(id).map(|s| s.user.clone())
    }

    pub fn create_group(&self) -> ObjectId {
        let mut w = lock(&self.world);
        let id = new_id(&mut w);
        w.groups.insert(id.clone(), BTreeSet::new());
        id
    }

    /// Adds a user or a group to `group`. Membership is not a user property: users delta does
    /// not report it; groups delta does.
    pub fn add_to_group(&self, group: &ObjectId, member: &ObjectId) {
        let mut w = lock(&self.world);
        let members = w
            .groups
            .get_mut(group)
            .unwrap_or_else(|| panic!("FakeGraph: no group {group}"));
        if members.insert(member.clone()) {
            w.log_membership(group, member, true);
        }
    }

    /// Deletes `group` (its members stay; memberships in it end).
    pub fn delete_group(&self, group: &ObjectId) {
        let mut w = lock(&self.world);
        let parents: Vec<ObjectId> = w
            .groups
            .iter()
            .filter(|(_, members)| members.contains(group))
            .map(|(id, _)| id.clone())
            .collect();
        for parent in parents {
            w.log_membership(&parent, group, false);
            if let Some(members) = w.groups.get_mut(&parent) {
                members.remove(group);
            }
        }
        w.groups.remove(group);
        w.seq += 1;
        let seq = w.seq;
        w.group_log.push(GroupEvent {
            seq,
            group: group.clone(),
            member: None,
            added: false,
        });
    }

    /// Points this Graph at another tenant or application, as a changed configuration would.
    pub fn set_identity(&self, identity: GraphIdentity) {
        lock(&self.world).identity = identity;
    }

    pub fn remove_from_group(&self, group: &ObjectId, member: &ObjectId) {
        let mut w = lock(&self.world);
        let removed = w
            .groups
            .get_mut(group)
            .is_some_and(|members| members.remove(member));
        if removed {
            w.log_membership(group, member, false);
        }
    }

    // ---- delta and paging -----------------------------------------------------------------

    /// Reads of `id` answer as if it did not exist (a replica behind) while `lagging` is set.
    pub fn set_lagging(&self, id: &ObjectId, lagging: bool) {
        let mut w = lock(&self.world);
        if lagging {
            w.lagging.insert(id.clone());
        } else {
            w.lagging.remove(id);
        }
    }

    /// Items per users delta page (at least 1).
    pub fn set_delta_page_size(&self, n: usize) {
        lock(&self.world).delta_page_size = n.max(1);
    }

    /// Ids per guests page (at least 1).
    pub fn set_guests_page_size(&self, n: usize) {
        lock(&self.world).guests_page_size = n.max(1);
    }

    /// Incremental delta items carry only changed properties: no userType.
    pub fn set_partial_delta_items(&self, partial: bool) {
        lock(&self.world).partial_delta_items = partial;
    }

    /// Every delta round repeats its items after the originals (Graph may return an object
    /// more than once in a round).
    pub fn set_duplicate_delta_items(&self, duplicate: bool) {
        lock(&self.world).duplicate_delta_items = duplicate;
    }

    /// An empty page with a nextLink comes before every page with items.
    pub fn set_empty_delta_pages(&self, empty: bool) {
        lock(&self.world).empty_delta_pages = empty;
    }

    /// The next delta page also holds an item the client cannot read (no usable id): counted
    /// in the page's `skipped`.
    pub fn add_unreadable_delta_item(&self) {
        lock(&self.world).unreadable_delta_items += 1;
    }

    /// Every users delta call takes `per_call` of `clock`'s time (the application's clock, so
    /// that a round reaches a deadline set on it). Calls that fail by an injected fault take
    /// none.
    pub fn set_delta_page_time(&self, clock: Arc<ManualClock>, per_call: Duration) {
        lock(&self.world).delta_page_time = Some((clock, per_call));
    }

    /// Forgets every delta token and nextLink: following a deltaLink answers `410
    /// syncStateNotFound`, a nextLink `400 Directory_ExpiredPageToken` (as the simulator).
    pub fn expire_delta_links(&self) {
        let mut w = lock(&self.world);
        w.delta_tokens.clear();
        w.sessions
            .retain(|_, s| matches!(s, Session::Guests { .. }));
    }

    // ---- subscriptions --------------------------------------------------------------------

    /// A subscription made by someone else (or by an earlier run), without any check.
    pub fn add_subscription(&self, request: &NewSubscription) -> SubscriptionId {
        let mut w = lock(&self.world);
        let id = new_subscription_id(&mut w);
        w.subscriptions
            .insert(id.to_string(), subscription(&id, request));
        id
    }

    /// The subscriptions Graph holds now (expired ones are gone).
    pub fn live_subscriptions(&self) -> Vec<Subscription> {
        let mut w = lock(&self.world);
        purge_expired(&mut w, self.clock.now());
        w.subscriptions.values().cloned().collect()
    }

    /// Changes a subscription behind the application's back (another notification URL, say).
    pub fn edit_subscription(&self, id: &str, change: impl FnOnce(&mut Subscription)) {
        let mut w = lock(&self.world);
        let s = w
            .subscriptions
            .get_mut(id)
            .unwrap_or_else(|| panic!("FakeGraph: no subscription {id}"));
        change(s);
    }

    /// Graph loses the subscription (deleted out of band, or `subscriptionRemoved`).
    pub fn remove_subscription(&self, id: &str) -> bool {
        lock(&self.world).subscriptions.remove(id).is_some()
    }

    /// How many times the subscription was reauthorized.
    pub fn reauthorizations(&self, id: &str) -> usize {
        lock(&self.world)
            .reauthorizations
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    // ---- faults and calls -----------------------------------------------------------------

    /// The next `times` calls of `op` fail with `make()`.
    pub fn fail(
        &self,
        op: GraphOp,
        times: usize,
        make: impl Fn() -> GraphError + Send + Sync + 'static,
    ) {
        self.fail_after(op, 0, times, make);
    }

    /// Lets `pass` calls of `op` through, then fails the next `times` (mid-round failures).
    pub fn fail_after(
        &self,
        op: GraphOp,
        pass: usize,
        times: usize,
        make: impl Fn() -> GraphError + Send + Sync + 'static,
    ) {
        let make: MakeError<GraphError> = Arc::new(make);
        lock(&self.world).faults.add(op, pass, times, make);
    }

    pub fn clear_faults(&self) {
        lock(&self.world).faults.clear();
    }

    /// The arguments of every call of `op` so far (an id, a UPN, a link, `start`…).
    pub fn calls(&self, op: GraphOp) -> Vec<String> {
        lock(&self.world)
            .calls
            .iter()
            .filter(|(o, _)| op == GraphOp::Any || *o == op)
            .map(|(_, a)| a.clone())
            .collect()
    }

    pub fn call_count(&self, op: GraphOp) -> usize {
        self.calls(op).len()
    }

    pub fn clear_calls(&self) {
        lock(&self.world).calls.clear();
    }

    /// Records the call and answers an injected fault, if one is due.
    fn begin(
        &self,
        op: GraphOp,
        arg: impl Into<String>,
    ) -> Result<std::sync::MutexGuard<'_, World>, GraphError> {
        let mut w = lock(&self.world);
        w.calls.push((op, arg.into()));
        if let Some(e) = w.faults.check(&[op, GraphOp::Any]) {
            if matches!(e, GraphError::Throttled { .. }) {
                w.throttled += 1;
            }
            return Err(e);
        }
        purge_expired(&mut w, self.clock.now());
        Ok(w)
    }
}

fn new_id(w: &mut World) -> ObjectId {
    w.ids += 1;
    ObjectId::from_label(&format!("fake-graph-object-{}", w.ids))
}

fn new_subscription_id(w: &mut World) -> SubscriptionId {
    w.ids += 1;
    let id = ObjectId::from_label(&format!("fake-graph-subscription-{}", w.ids));
    // A GUID is always a valid subscription id.
    SubscriptionId::parse(&id).unwrap_or_else(|e| unreachable!("{e}"))
}

fn subscription(id: &SubscriptionId, r: &NewSubscription) -> Subscription {
    Subscription {
        id: id.clone(),
        resource: r.resource.clone(),
        change_type: r.change_type.clone(),
        notification_url: r.notification_url.clone(),
        lifecycle_notification_url: Some(r.lifecycle_url.clone()),
        client_state: Some(r.client_state.clone()),
        expiration_date_time: r.expiration,
    }
}

fn changed(w: &mut World, id: &ObjectId) {
    w.seq += 1;
    let seq = w.seq;
    w.changes.push((seq, id.clone()));
}

/// Opaque, like Graph's: the counter is scrambled so nobody can construct one.
impl World {
    fn member_kind(&self, id: &ObjectId) -> MemberKind {
        if self.groups.contains_key(id) {
            MemberKind::Group
        } else if self.users.contains_key(id) {
            MemberKind::User
        } else {
            MemberKind::Other
        }
    }

    fn log_membership(&mut self, group: &ObjectId, member: &ObjectId, added: bool) {
        self.seq += 1;
        let event = GroupEvent {
            seq: self.seq,
            group: group.clone(),
            member: Some((member.clone(), self.member_kind(member))),
            added,
        };
        self.group_log.push(event);
    }

    /// What changed in `group` after `after` (net: a member added and removed again is no
    /// change), as a groups delta item; `None` when nothing did.
    fn group_changes_since(&self, group: &ObjectId, after: u64) -> Option<GroupChange> {
        let events: Vec<&GroupEvent> = self
            .group_log
            .iter()
            .filter(|e| e.seq > after && e.group == *group)
            .collect();
        if events.is_empty() {
            return None;
        }
        if events.iter().any(|e| e.member.is_none()) {
            return Some(GroupChange {
                group: group.clone(),
                deleted: true,
                added: vec![],
                removed: vec![],
            });
        }
        let mut first: BTreeMap<&ObjectId, (bool, MemberKind)> = BTreeMap::new();
        for e in &events {
            if let Some((member, kind)) = &e.member {
                first.entry(member).or_insert((e.added, *kind));
            }
        }
        let now = self.groups.get(group);
        let mut change = GroupChange {
            group: group.clone(),
            deleted: false,
            added: vec![],
            removed: vec![],
        };
        for (member, (first_added, kind)) in first {
            // The first event after the token says what it was before: added means it was not.
            let was = !first_added;
            let is = now.is_some_and(|m| m.contains(member));
            let m = Member {
                id: member.clone(),
                kind,
            };
            match (was, is) {
                (false, true) => change.added.push(m),
                (true, false) => change.removed.push(m),
                _ => {}
            }
        }
        (!change.added.is_empty() || !change.removed.is_empty()).then_some(change)
    }
}

fn new_token(w: &mut World) -> String {
    w.tokens += 1;
    format!("{:016x}", w.tokens.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn purge_expired(w: &mut World, now: DateTime<Utc>) {
    w.subscriptions.retain(|_, s| s.expiration_date_time > now);
}

fn token_in<'a>(link: &'a str, param: &str) -> Option<&'a str> {
    link.split_once(&format!("{param}=")).map(|(_, t)| t)
}

fn sync_state_not_found() -> GraphError {
    GraphError::client(
        410,
        "syncStateNotFound",
        "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
    )
}

fn expired_page_token() -> GraphError {
    GraphError::client(
        400,
        "Directory_ExpiredPageToken",
        "The specified page token value has expired and can no longer be included in your request.",
    )
}

fn not_found(id: &str) -> GraphError {
    GraphError::client(
        404,
        "Request_ResourceNotFound",
        format!("Resource '{id}' does not exist."),
    )
}

fn check_expiration(expiration: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), GraphError> {
    if expiration <= now {
        return Err(GraphError::client(
            400,
            "InvalidRequest",
            "Subscription expiration can only be in the future.",
        ));
    }
    if expiration > now + Duration::minutes(MAX_SUBSCRIPTION_MINUTES) {
        return Err(GraphError::client(
            400,
            "InvalidRequest",
            format!("Subscription expiration can only be {MAX_SUBSCRIPTION_MINUTES} minutes in the future."),
        ));
    }
    Ok(())
}

/// `updated, deleted` and `deleted,updated` are the same change types.
fn change_types(raw: &str) -> BTreeSet<String> {
    raw.split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

fn same_resource(a: &str, b: &str) -> bool {
    a.trim_matches('/')
        .eq_ignore_ascii_case(b.trim_matches('/'))
}

impl World {
    fn live(&self, id: &ObjectId) -> Option<&GraphUser> {
        self.users
            .get(id)
            .filter(|s| !s.soft_deleted)
            .map(|s| &s.user)
    }

    fn live_sorted(&self) -> Vec<&GraphUser> {
        let mut v: Vec<&Stored> = self.users.values().filter(|s| !s.soft_deleted).collect();
        v.sort_by_key(|s| s.created);
        v.into_iter().map(|s| &s.user).collect()
    }

    /// Whether `member` is in `group` directly or through nested groups (cycles allowed).
    fn transitively_in(&self, member: &ObjectId, group: &ObjectId) -> bool {
        let mut seen = BTreeSet::new();
        let mut frontier = vec![group.clone()];
        while let Some(g) = frontier.pop() {
            if !seen.insert(g.clone()) {
                continue;
            }
            let Some(members) = self.groups.get(&g) else {
                continue;
            };
            if members.contains(member) {
                return true;
            }
            frontier.extend(
                members
                    .iter()
                    .filter(|m| self.groups.contains_key(*m))
                    .cloned(),
            );
        }
        false
    }

    /// The users that changed after `since`, each once, in the order of their latest change,
    /// as they are now.
    fn changes_since(&self, since: u64) -> VecDeque<DeltaItem> {
        let mut last: BTreeMap<&ObjectId, u64> = BTreeMap::new();
        for (seq, id) in self.changes.iter().filter(|(s, _)| *s > since) {
            last.insert(id, *seq);
        }
        let mut ids: Vec<(&ObjectId, u64)> = last.into_iter().collect();
        ids.sort_by_key(|(_, s)| *s);
        ids.into_iter()
            .map(|(id, _)| match self.users.get(id) {
                Some(s) if !s.soft_deleted => DeltaItem::Changed {
                    id: id.clone(),
                    user_type: if self.partial_delta_items {
                        None
                    } else {
                        s.user.user_type.clone()
                    },
                },
                Some(_) => DeltaItem::Removed {
                    id: id.clone(),
                    permanently: false,
                },
                None => DeltaItem::Removed {
                    id: id.clone(),
                    permanently: true,
                },
            })
            .collect()
    }

    /// Serves one page of a delta round, keeping the rest behind a nextLink.
    /// The first page of a round: duplicated where Graph would.
    fn delta_round(
        &mut self,
        mut remaining: VecDeque<DeltaItem>,
        end_seq: u64,
        now: DateTime<Utc>,
    ) -> Page<DeltaItem> {
        if self.duplicate_delta_items {
            let again = remaining.clone();
            remaining.extend(again);
        }
        self.delta_page(remaining, end_seq, false, now)
    }

    fn delta_page(
        &mut self,
        mut remaining: VecDeque<DeltaItem>,
        end_seq: u64,
        after_empty: bool,
        now: DateTime<Utc>,
    ) -> Page<DeltaItem> {
        if self.empty_delta_pages && !after_empty && !remaining.is_empty() {
            let token = new_token(self);
            self.sessions.insert(
                token.clone(),
                Session::Delta {
                    remaining,
                    end_seq,
                    after_empty: true,
                },
            );
            return Page {
                items: Vec::new(),
                next_link: Some(format!("{LINKS}/users/delta?$skiptoken={token}")),
                delta_link: None,
                skipped: 0,
            };
        }
        let items: Vec<DeltaItem> = remaining
            .drain(..self.delta_page_size.min(remaining.len()))
            .collect();
        let skipped = std::mem::take(&mut self.unreadable_delta_items);
        let token = new_token(self);
        if remaining.is_empty() {
            self.delta_tokens.insert(
                token.clone(),
                DeltaToken {
                    seq: end_seq,
                    issued_at: now,
                },
            );
            Page {
                items,
                next_link: None,
                delta_link: Some(format!("{LINKS}/users/delta?$deltatoken={token}")),
                skipped,
            }
        } else {
            self.sessions.insert(
                token.clone(),
                Session::Delta {
                    remaining,
                    end_seq,
                    after_empty: false,
                },
            );
            Page {
                items,
                next_link: Some(format!("{LINKS}/users/delta?$skiptoken={token}")),
                delta_link: None,
                skipped,
            }
        }
    }
}

#[async_trait]
impl Graph for FakeGraph {
    async fn user(&self, id: &ObjectId) -> Result<UserLookup, GraphError> {
        let w = self.begin(GraphOp::User, id.as_str())?;
        if w.lagging.contains(id) {
            return Ok(UserLookup::Gone);
        }
        Ok(match w.users.get(id) {
            Some(s) if s.soft_deleted => UserLookup::SoftDeleted(s.user.clone()),
            Some(s) => UserLookup::Active(s.user.clone()),
            None => UserLookup::Gone,
        })
    }

    async fn user_by_principal_name(&self, upn: &str) -> Result<Option<GraphUser>, GraphError> {
        let w = self.begin(GraphOp::UserByPrincipalName, upn)?;
        if upn.trim().is_empty() {
            return Err(GraphError::Config("userPrincipalName is empty".into()));
        }
        // `/users/{upn}` finds active users only, whatever the case.
        Ok(w.live_sorted()
            .into_iter()
            .find(|u| {
                u.user_principal_name
                    .as_deref()
                    .is_some_and(|p| p.to_lowercase() == upn.to_lowercase())
            })
            .cloned())
    }

    async fn is_member_of(&self, user: &ObjectId, group: &ObjectId) -> Result<bool, GraphError> {
        let w = self.begin(GraphOp::IsMemberOf, format!("{user} in {group}"))?;
        // checkMemberGroups is under /users/{id}: a user not active there is a 404.
        if w.live(user).is_none() {
            return Err(not_found(user));
        }
        Ok(w.transitively_in(user, group))
    }

    async fn group_exists(&self, group: &ObjectId) -> Result<bool, GraphError> {
        let w = self.begin(GraphOp::GroupExists, group.as_str())?;
        Ok(w.groups.contains_key(group))
    }

    async fn group_members(&self, group: &ObjectId) -> Result<Vec<Member>, GraphError> {
        let w = self.begin(GraphOp::GroupMembers, group.as_str())?;
        let members = w.groups.get(group).ok_or_else(|| not_found(group))?;
        Ok(members
            .iter()
            // A soft-deleted user is not listed (and keeps the membership).
            .filter(|m| w.users.get(*m).is_none_or(|u| !u.soft_deleted))
            .map(|m| Member {
                id: m.clone(),
                kind: w.member_kind(m),
            })
            .collect())
    }

    /// One page always: a full round lists the current members, a link the changes since its
    /// token (`g<seq>`); group tokens do not expire in the fake.
    async fn group_delta(
        &self,
        group: &ObjectId,
        from: &DeltaCursor,
    ) -> Result<Page<GroupChange>, GraphError> {
        let arg = match from {
            DeltaCursor::Start => format!("{group} start"),
            DeltaCursor::Link(l) => l.clone(),
        };
        let w = self.begin(GraphOp::GroupDelta, arg)?;
        let items = match from {
            DeltaCursor::Start => w
                .groups
                .get(group)
                .map(|members| GroupChange {
                    group: group.clone(),
                    deleted: false,
                    added: members
                        .iter()
                        .map(|m| Member {
                            id: m.clone(),
                            kind: w.member_kind(m),
                        })
                        .collect(),
                    removed: vec![],
                })
                .into_iter()
                .collect(),
            DeltaCursor::Link(link) => {
                let after = token_in(link, "$deltatoken")
                    .and_then(|t| t.strip_prefix('g'))
                    .and_then(|t| t.parse::<u64>().ok())
                    .ok_or_else(expired_page_token)?;
                w.group_changes_since(group, after).into_iter().collect()
            }
        };
        Ok(Page {
            items,
            next_link: None,
            delta_link: Some(format!(
                "{LINKS}/groups/delta?$filter=id%20eq%20'{group}'&$deltatoken=g{}",
                w.seq
            )),
            skipped: 0,
        })
    }

    async fn users_delta(&self, from: &DeltaCursor) -> Result<Page<DeltaItem>, GraphError> {
        let arg = match from {
            DeltaCursor::Start => "start".to_string(),
            DeltaCursor::Link(l) => l.clone(),
        };
        let mut w = self.begin(GraphOp::UsersDelta, arg)?;
        if let Some((clock, per_call)) = &w.delta_page_time {
            clock.advance(*per_call);
        }
        let now = self.clock.now();
        match from {
            DeltaCursor::Start => {
                let remaining = w
                    .live_sorted()
                    .into_iter()
                    .map(|u| DeltaItem::Changed {
                        id: u.id.clone(),
                        user_type: u.user_type.clone(),
                    })
                    .collect();
                let end = w.seq;
                Ok(w.delta_round(remaining, end, now))
            }
            DeltaCursor::Link(link) => {
                // As the real client: the token goes nowhere but the configured endpoint.
                if !link.starts_with(LINKS) {
                    return Err(GraphError::ForeignLink {
                        origin: link.split("/v1.0").next().unwrap_or(link).to_string(),
                        endpoint: LINKS.to_string(),
                    });
                }
                if let Some(token) = token_in(link, "$deltatoken") {
                    let Some(t) = w.delta_tokens.get(token) else {
                        return Err(sync_state_not_found());
                    };
                    if t.issued_at + Duration::days(DELTA_TOKEN_DAYS) <= now {
                        w.delta_tokens.remove(token);
                        return Err(sync_state_not_found());
                    }
                    let since = t.seq;
                    let remaining = w.changes_since(since);
                    let end = w.seq;
                    return Ok(w.delta_round(remaining, end, now));
                }
                let session = token_in(link, "$skiptoken").and_then(|t| w.sessions.remove(t));
                match session {
                    Some(Session::Delta {
                        remaining,
                        end_seq,
                        after_empty,
                    }) => Ok(w.delta_page(remaining, end_seq, after_empty, now)),
                    _ => Err(expired_page_token()),
                }
            }
        }
    }

    async fn guests(&self, next: Option<&str>) -> Result<Page<ObjectId>, GraphError> {
        let mut w = self.begin(GraphOp::Guests, next.unwrap_or("first"))?;
        let mut remaining: VecDeque<ObjectId> = match next {
            None => w
                .live_sorted()
                .into_iter()
                .filter(|u| u.is_guest())
                .map(|u| u.id.clone())
                .collect(),
            Some(link) => match token_in(link, "$skiptoken").and_then(|t| w.sessions.remove(t)) {
                Some(Session::Guests { remaining }) => remaining,
                _ => return Err(expired_page_token()),
            },
        };
        let items: Vec<ObjectId> = remaining
            .drain(..w.guests_page_size.min(remaining.len()))
            .collect();
        let next_link = if remaining.is_empty() {
            None
        } else {
            let token = new_token(&mut w);
            w.sessions
                .insert(token.clone(), Session::Guests { remaining });
            Some(format!(
                "{LINKS}/users?$filter=userType%20eq%20'Guest'&$select=id&$skiptoken={token}"
            ))
        };
        Ok(Page {
            items,
            next_link,
            delta_link: None,
            skipped: 0,
        })
    }

    async fn create_subscription(
        &self,
        request: &NewSubscription,
    ) -> Result<Subscription, GraphError> {
        let mut w = self.begin(GraphOp::CreateSubscription, request.resource.as_str())?;
        check_expiration(request.expiration, self.clock.now())?;
        let wanted = change_types(&request.change_type);
        let existing = w.subscriptions.values().find(|s| {
            same_resource(&s.resource, &request.resource) && change_types(&s.change_type) == wanted
        });
        if let Some(s) = existing {
            return Err(GraphError::client(
                409,
                "ObjectIdentifierInUse",
                format!(
                    "Subscription Id {} already exists for the requested combination",
                    s.id
                ),
            ));
        }
        let id = new_subscription_id(&mut w);
        let created = subscription(&id, request);
        w.subscriptions.insert(id.to_string(), created.clone());
        Ok(created)
    }

    async fn subscription(&self, id: &SubscriptionId) -> Result<Option<Subscription>, GraphError> {
        let w = self.begin(GraphOp::Subscription, id.as_str())?;
        Ok(w.subscriptions.get(id.as_str()).cloned())
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>, GraphError> {
        let w = self.begin(GraphOp::Subscriptions, "")?;
        Ok(w.subscriptions.values().cloned().collect())
    }

    async fn renew_subscription(
        &self,
        id: &SubscriptionId,
        expiration: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, GraphError> {
        let mut w = self.begin(GraphOp::RenewSubscription, id.as_str())?;
        if !w.subscriptions.contains_key(id.as_str()) {
            return Ok(None);
        }
        check_expiration(expiration, self.clock.now())?;
        if let Some(s) = w.subscriptions.get_mut(id.as_str()) {
            s.expiration_date_time = expiration;
        }
        Ok(Some(expiration))
    }

    async fn reauthorize_subscription(&self, id: &SubscriptionId) -> Result<bool, GraphError> {
        let mut w = self.begin(GraphOp::ReauthorizeSubscription, id.as_str())?;
        if !w.subscriptions.contains_key(id.as_str()) {
            return Ok(false);
        }
        *w.reauthorizations.entry(id.to_string()).or_insert(0) += 1;
        Ok(true)
    }

    async fn delete_subscription(&self, id: &SubscriptionId) -> Result<(), GraphError> {
        let mut w = self.begin(GraphOp::DeleteSubscription, id.as_str())?;
        w.subscriptions.remove(id.as_str());
        Ok(())
    }

    fn identity(&self) -> GraphIdentity {
        lock(&self.world).identity.clone()
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    fn take_throttled(&self) -> u64 {
        std::mem::take(&mut lock(&self.world).throttled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    async fn round(
        g: &FakeGraph,
        from: DeltaCursor,
    ) -> Result<(Vec<DeltaItem>, String), GraphError> {
        let mut cursor = from;
        let mut items = Vec::new();
        loop {
            let page = g.users_delta(&cursor).await?;
            items.extend(page.items);
            match (page.next_link, page.delta_link) {
                (Some(next), _) => cursor = DeltaCursor::Link(next),
                (None, Some(delta)) => return Ok((items, delta)),
                (None, None) => panic!("a last page without a deltaLink"),
            }
        }
    }

    #[test]
    fn users_delta_pages_then_reports_changes_and_expires() {
        rt().block_on(async {
            let g = FakeGraph::new();
            g.set_delta_page_size(2);
            let a = g.invite_guest("a@x.com");
            let b = g.invite_guest("b@x.com");
            let c = g.add_member("c@contoso.com", "C");
            let first = g.users_delta(&DeltaCursor::Start).await.unwrap();
            assert_eq!(first.items.len(), 2);
            assert!(first.next_link.is_some() && first.delta_link.is_none());
            let (items, link) = round(&g, DeltaCursor::Start).await.unwrap();
            assert_eq!(
                items.iter().map(DeltaItem::id).collect::<Vec<_>>(),
                vec![&a, &b, &c]
            );
            g.soft_delete(&a);
            g.delete_permanently(&b);
            g.update_user(&c, |u| u.user_type = Some("Guest".into()));
            let (items, link2) = round(&g, DeltaCursor::Link(link.clone())).await.unwrap();
            assert_eq!(
                items,
                vec![
                    DeltaItem::Removed {
                        id: a.clone(),
                        permanently: false
                    },
                    DeltaItem::Removed {
                        id: b,
                        permanently: true
                    },
                    DeltaItem::Changed {
                        id: c,
                        user_type: Some("Guest".into())
                    },
                ]
            );
            assert!(round(&g, DeltaCursor::Link(link2.clone()))
                .await
                .unwrap()
                .0
                .is_empty());
            g.clock().advance(Duration::days(DELTA_TOKEN_DAYS));
            let e = round(&g, DeltaCursor::Link(link2)).await.unwrap_err();
            assert!(e.is_sync_state_lost() && e.status() == Some(410), "{e}");
            g.expire_delta_links();
            assert!(round(&g, DeltaCursor::Link(link))
                .await
                .unwrap_err()
                .is_sync_state_lost());
        });
    }

    #[test]
    fn group_members_and_group_delta_as_graph_reports_them() {
        rt().block_on(async {
            let g = FakeGraph::new();
            let scope = g.create_group();
            let nested = g.create_group();
            let (a, b, c) = (
                g.invite_guest("a@x.com"),
                g.invite_guest("b@x.com"),
                g.invite_guest("c@x.com"),
            );
            g.add_to_group(&scope, &a);
            g.add_to_group(&scope, &nested);
            g.add_to_group(&nested, &b);
            let user = |id: &ObjectId| Member {
                id: id.clone(),
                kind: MemberKind::User,
            };
            let group = Member {
                id: nested.clone(),
                kind: MemberKind::Group,
            };
            assert_eq!(
                g.group_members(&scope).await.unwrap(),
                vec![user(&a), group.clone()]
                    .into_iter()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect::<Vec<_>>()
            );
            let first = g.group_delta(&scope, &DeltaCursor::Start).await.unwrap();
            assert_eq!(first.items.len(), 1);
            let link = first.delta_link.unwrap();
            g.add_to_group(&scope, &c);
            g.remove_from_group(&scope, &a);
            // Added and removed again: no net change; a nested group's change is its own.
            g.add_to_group(&scope, &b);
            g.remove_from_group(&scope, &b);
            g.remove_from_group(&nested, &b);
            let next = g
                .group_delta(&scope, &DeltaCursor::Link(link))
                .await
                .unwrap();
            assert_eq!(next.items.len(), 1);
            assert_eq!(next.items[0].added, [user(&c)]);
            assert_eq!(next.items[0].removed, [user(&a)]);
            let link = next.delta_link.unwrap();
            g.delete_group(&nested);
            let last = g
                .group_delta(&scope, &DeltaCursor::Link(link.clone()))
                .await
                .unwrap();
            assert_eq!(last.items[0].removed, [group]);
            let gone = g
                .group_delta(&nested, &DeltaCursor::Link(link))
                .await
                .unwrap();
            assert!(gone.items[0].deleted);
            assert!(g.group_members(&nested).await.unwrap_err().is_not_found());
        });
    }

    #[test]
    fn lookups_membership_and_faults() {
        rt().block_on(async {
            let g = FakeGraph::new();
            let a = g.invite_guest("alice@fabrikam.com");
            let user = match g.user(&a).await.unwrap() {
                UserLookup::Active(u) => u,
                other => panic!("{other:?}"),
            };
            assert_eq!(user.user_principal_name.as_deref(), Some("alice_fabrikam.com#EXT#@contoso.onmicrosoft.com"));
            assert!(user.is_guest() && user.is_enabled());
            let found = g.user_by_principal_name("ALICE_fabrikam.com#EXT#@contoso.onmicrosoft.com").await.unwrap();
            assert_eq!(found.map(|u| u.id), Some(a.clone()));
            let (outer, inner) = (g.create_group(), g.create_group());
            g.add_to_group(&outer, &inner);
            g.add_to_group(&inner, &outer); // a cycle must not hang
            assert!(!g.is_member_of(&a, &outer).await.unwrap());
            g.add_to_group(&inner, &a);
            assert!(g.is_member_of(&a, &outer).await.unwrap());
            g.soft_delete(&a);
            assert!(matches!(g.user(&a).await.unwrap(), UserLookup::SoftDeleted(u) if u.deleted_date_time.is_some()));
            assert!(g.is_member_of(&a, &outer).await.unwrap_err().is_not_found());
            g.restore(&a);
            g.fail(GraphOp::User, 1, || GraphError::Throttled { retry_after: None });
            assert!(g.user(&a).await.unwrap_err().is_retryable());
            assert_eq!(g.take_throttled(), 1);
            g.delete_permanently(&a);
            assert_eq!(g.user(&a).await.unwrap(), UserLookup::Gone);
            assert_eq!(g.calls(GraphOp::User), vec![a.to_string(); 4]);
        });
    }

    #[test]
    fn subscriptions_conflict_renew_and_expire() {
        rt().block_on(async {
            let g = FakeGraph::new();
            let now = g.clock().now();
            let request = NewSubscription {
                resource: "/users".into(),
                change_type: "updated,deleted".into(),
                notification_url: "https://a.example/n".into(),
                lifecycle_url: "https://a.example/l".into(),
                client_state: SecretString::from("state"),
                expiration: now + Duration::days(3),
            };
            let s = g.create_subscription(&request).await.unwrap();
            let again = NewSubscription {
                resource: "users".into(),
                change_type: "deleted, updated".into(),
                ..request.clone()
            };
            assert_eq!(
                g.create_subscription(&again).await.unwrap_err().status(),
                Some(409)
            );
            let too_long = now + Duration::minutes(MAX_SUBSCRIPTION_MINUTES + 1);
            assert_eq!(
                g.renew_subscription(&s.id, too_long)
                    .await
                    .unwrap_err()
                    .status(),
                Some(400)
            );
            let later = now + Duration::days(5);
            assert_eq!(
                g.renew_subscription(&s.id, later).await.unwrap(),
                Some(later)
            );
            assert!(g.reauthorize_subscription(&s.id).await.unwrap());
            g.clock().advance(Duration::days(5));
            assert!(g.subscription(&s.id).await.unwrap().is_none(), "expired");
            assert_eq!(g.renew_subscription(&s.id, later).await.unwrap(), None);
            assert!(!g.reauthorize_subscription(&s.id).await.unwrap());
            g.delete_subscription(&s.id).await.unwrap();
        });
    }
}
