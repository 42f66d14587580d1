//! The records shadowsync keeps, and where. Each is an index or a checkpoint: the truth is in
//! Graph and in AD's anchors, and every record can be rebuilt from them.

use crate::{get_json, put_json, KeyValueStore, StateError, Versioned};
use chrono::{DateTime, DurationRound, Utc};
use serde::{Deserialize, Serialize};
use shadowsync_core::partner::ObjectGuid;
use shadowsync_core::ObjectId;

/// Table of per-guest records, keyed by objectId.
pub const GUESTS: &str = "guests";
/// Table of the subscriptions the keeper maintains.
pub const SUBSCRIPTIONS: &str = "subscriptions";
/// Key of the one subscription on users in [`SUBSCRIPTIONS`].
pub const USERS_KEY: &str = "users";
/// Table of the reconciler's checkpoints.
pub const CHECKPOINTS: &str = "checkpoints";
/// Key of the users delta checkpoint in [`CHECKPOINTS`].
pub const USERS_DELTA: &str = "users_delta";
/// Key of the users delta round in progress ([`DeltaResumePoint`]) in [`CHECKPOINTS`].
pub const USERS_DELTA_RESUME: &str = "users_delta_resume";
/// Key of the last sweep's time in [`CHECKPOINTS`].
pub const LAST_SWEEP: &str = "last_sweep";
/// Key of [`GraphAccessDenied`] in [`CHECKPOINTS`].
pub const GRAPH_ACCESS: &str = "graph_access";
/// Table of the jobs parked while Graph refuses access, keyed by the job's group (the user, or
/// the subscription): one per group, the latest.
pub const PARKED: &str = "parked";
/// Table of the disables and deletes the safety rails hold, keyed by objectId: one per guest.
pub const HELD: &str = "held";
/// Key of [`SafetyGuard`] in [`CHECKPOINTS`].
pub const SAFETY_GUARD: &str = "safety_guard";
/// Key of [`RecordedIdentity`] in [`CHECKPOINTS`].
pub const GRAPH_IDENTITY: &str = "graph_identity";
/// Table of per-partner-account records, keyed by the account's objectGUID.
pub const PARTNERS: &str = "partners";
/// Table of the groups of the scope tree (the scope group and the groups nested in it), keyed
/// by group id: [`ScopeGroupRecord`].
pub const SCOPE_GROUPS: &str = "scope_groups";
/// Key of [`PartnerWatermark`] in [`CHECKPOINTS`].
pub const PARTNER_WATERMARK: &str = "partner_watermark";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Enabled,
    Disabled,
    Deleted,
    /// Nothing was done; `conflict` says why.
    Conflict,
    /// The guest is out of scope and never had an account.
    NotProvisioned,
}

impl AccountStatus {
    /// The name used in reports (`not_provisioned`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
            Self::Deleted => "deleted",
            Self::Conflict => "conflict",
            Self::NotProvisioned => "not_provisioned",
        }
    }
}

/// What shadowsync last did for one guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRecord {
    pub object_id: ObjectId,
    pub dn: Option<String>,
    pub object_guid: Option<String>,
    pub sam_account_name: Option<String>,
    pub status: AccountStatus,
    /// When shadowsync disabled the account; retention counts from here.
    pub disabled_at: Option<DateTime<Utc>>,
    /// [`shadowsync_core`]'s fingerprint of the state last applied.
    pub applied_fingerprint: Option<String>,
    pub conflict: Option<String>,
    /// When Graph first answered 404 for this guest (and found nothing in deleted items), while
    /// an account exists: a 404 acts only once confirmed by a later read.
    #[serde(default)]
    pub not_found_since: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl GuestRecord {
    /// A record with nothing known but the guest, a status and the time.
    pub fn new(object_id: ObjectId, status: AccountStatus, now: DateTime<Utc>) -> Self {
        Self {
            object_id,
            dn: None,
            object_guid: None,
            sam_account_name: None,
            status,
            disabled_at: None,
            applied_fingerprint: None,
            conflict: None,
            not_found_since: None,
            updated_at: now,
        }
    }

    pub async fn load(
        store: &dyn KeyValueStore,
        object_id: &ObjectId,
    ) -> Result<Option<Versioned<GuestRecord>>, StateError> {
        get_json(store, GUESTS, object_id).await
    }

    /// Saves with compare-and-set: `expected` is the version loaded (`None` if there was none).
    pub async fn save(
        &self,
        store: &dyn KeyValueStore,
        expected: Option<u64>,
    ) -> Result<u64, StateError> {
        put_json(store, GUESTS, &self.object_id, self, expected).await
    }
}

/// What the subscription keeper last knew about its subscription. The client state is
/// deliberately not stored: it is a secret, and the live subscription is compared with the
/// configuration instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// Graph's subscription id.
    pub id: String,
    pub resource: String,
    pub change_type: String,
    pub notification_url: String,
    pub lifecycle_url: Option<String>,
    /// A fingerprint of the client state the subscription was created with (see the keeper):
    /// Graph does not return the client state, so this is how a rotation is noticed. `None` in
    /// records of older versions: unknown, so the subscription is replaced once.
    #[serde(default)]
    pub client_state_sha256: Option<String>,
    /// Expiry as Graph last reported it.
    pub expiration: DateTime<Utc>,
    /// When the keeper created (or adopted) this subscription.
    pub created_at: DateTime<Utc>,
    pub renewed_at: Option<DateTime<Utc>>,
    pub reauthorized_at: Option<DateTime<Utc>>,
}

impl SubscriptionRecord {
    /// The subscription on users.
    pub async fn load(
        store: &dyn KeyValueStore,
    ) -> Result<Option<Versioned<SubscriptionRecord>>, StateError> {
        Self::load_for(store, USERS_KEY).await
    }

    /// The subscription recorded under `key` (see [`subscription_key`]).
    pub async fn load_for(
        store: &dyn KeyValueStore,
        key: &str,
    ) -> Result<Option<Versioned<SubscriptionRecord>>, StateError> {
        get_json(store, SUBSCRIPTIONS, key).await
    }

    /// Saves under `key` with compare-and-set: `expected` is the version loaded (`None` if
    /// there was none).
    pub async fn save_for(
        &self,
        store: &dyn KeyValueStore,
        key: &str,
        expected: Option<u64>,
    ) -> Result<u64, StateError> {
        put_json(store, SUBSCRIPTIONS, key, self, expected).await
    }

    /// Saves the subscription on users.
    pub async fn save(
        &self,
        store: &dyn KeyValueStore,
        expected: Option<u64>,
    ) -> Result<u64, StateError> {
        self.save_for(store, USERS_KEY, expected).await
    }
}

/// Where the subscription on `resource` is recorded in [`SUBSCRIPTIONS`]: `users` for `/users`
/// (as ever), `group:<id>` for `/groups/{id}`.
pub fn subscription_key(resource: &str) -> String {
    let r = resource.trim_matches('/');
    match r.split_once('/') {
        Some((kind, id)) if kind.eq_ignore_ascii_case("groups") => format!("group:{id}"),
        _ if r.eq_ignore_ascii_case("users") => USERS_KEY.to_string(),
        _ => r.to_ascii_lowercase(),
    }
}

/// Where the next users delta round starts ([`CHECKPOINTS`] / [`USERS_DELTA`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaCheckpoint {
    pub delta_link: String,
    /// When the round that produced `delta_link` completed.
    pub completed_at: DateTime<Utc>,
    /// When the last full round completed.
    pub full_sync_at: DateTime<Utc>,
}

/// A users delta round in progress ([`CHECKPOINTS`] / [`USERS_DELTA_RESUME`]): where it goes on
/// after a deadline or a crash, and what it did so far; removed when the round completes. Kept
/// beside [`DeltaCheckpoint`], not in it: a tenant's first round (the longest) has no deltaLink
/// to keep yet, and the checkpoint stays what older hosts read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaResumePoint {
    /// The `@odata.nextLink` after the last page whose jobs were all sent.
    pub next_link: String,
    /// The round enumerates every user: its deltaLink marks a full sync.
    pub full: bool,
    /// Why the round is a full one, for its report.
    #[serde(default)]
    pub reason_for_full: Option<String>,
    /// `completed_at` of the [`DeltaCheckpoint`] the round started from (`None`: there was
    /// none). Another value there means the round is over (it completed, or another did).
    pub checkpoint_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub saved_at: DateTime<Utc>,
    /// The round's counts so far, earlier runs included.
    pub pages: usize,
    pub users_seen: usize,
    pub jobs_enqueued: usize,
    #[serde(default)]
    pub removed: usize,
    #[serde(default)]
    pub skipped: usize,
}

impl DeltaResumePoint {
    /// Whether the round still goes on from `checkpoint` (the one stored now). Otherwise it is
    /// over (it completed, or another round did since it started) and this position is stale.
    pub fn continues(&self, checkpoint: Option<&DeltaCheckpoint>) -> bool {
        self.checkpoint_at == checkpoint.map(|cp| cp.completed_at)
    }
}

/// When the managed OUs were last swept ([`CHECKPOINTS`] / [`LAST_SWEEP`]): recorded so that
/// every host keeps the same schedule across restarts and invocations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSweep {
    pub at: DateTime<Utc>,
}

/// Graph answered 403 ([`CHECKPOINTS`] / [`GRAPH_ACCESS`]); removed once Graph answers again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphAccessDenied {
    /// The first refusal since access last worked.
    pub since: DateTime<Utc>,
    /// The latest refusal, what was being done, and Graph's words.
    pub last_at: DateTime<Utc>,
    pub action: String,
    pub message: String,
    /// Refusals since `since`.
    pub refusals: u64,
}

/// A change that cannot be undone by running shadowsync again: the safety rails count these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Destructive {
    /// Locks a partner out of every on-premises application at once.
    Disable,
    /// Removes the account, its SID and every ACL entry naming it.
    Delete,
}

impl Destructive {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Delete => "delete",
        }
    }
}

/// The accidental-change threshold's state ([`CHECKPOINTS`] / [`SAFETY_GUARD`]), shared by
/// every host of a deployment: the destructive changes of the last hour, and whether the
/// threshold tripped (then every disable and delete is held until an administrator acts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafetyGuard {
    /// The disables and deletes let through lately, per minute: at most an hour's worth of
    /// entries whatever the limits (a DynamoDB item holds 400 KB at most).
    pub minutes: Vec<MinuteCount>,
    pub tripped: Option<Tripped>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteCount {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    pub disables: u64,
    pub deletes: u64,
}

impl SafetyGuard {
    /// The `change`s let through in the minutes that started after `since`.
    pub fn count(&self, change: Destructive, since: DateTime<Utc>) -> u64 {
        self.minutes
            .iter()
            .filter(|m| m.minute > since)
            .map(|m| match change {
                Destructive::Disable => m.disables,
                Destructive::Delete => m.deletes,
            })
            .sum()
    }

    /// Counts one `change` at `at`, and forgets the minutes that started at or before `since`.
    pub fn add(&mut self, change: Destructive, at: DateTime<Utc>, since: DateTime<Utc>) {
        self.minutes.retain(|m| m.minute > since);
        let minute = at
            .duration_trunc(chrono::Duration::minutes(1))
            .unwrap_or(at);
        let entry = match self.minutes.iter_mut().find(|m| m.minute == minute) {
            Some(entry) => entry,
            None => {
                self.minutes.push(MinuteCount {
                    minute,
                    disables: 0,
                    deletes: 0,
                });
                self.minutes.last_mut().expect("just pushed")
            }
        };
        match change {
            Destructive::Disable => entry.disables += 1,
            Destructive::Delete => entry.deletes += 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tripped {
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// A disable or delete the safety rails hold ([`HELD`]): not applied, not dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldChange {
    /// The guest: whose shadow account it changes, or (with `partner`) the partner's guest
    /// it blocks or deletes.
    pub object_id: ObjectId,
    /// The partner account whose guest it changes (the partner direction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner: Option<ObjectGuid>,
    pub user_principal_name: Option<String>,
    /// The account it would change.
    pub dn: Option<String>,
    pub change: Destructive,
    /// The plan, in words.
    pub plan: String,
    /// Why it is held.
    pub reason: String,
    /// When it was first held.
    pub held_at: DateTime<Utc>,
    /// When an administrator released it: the next converge of this guest applies it.
    pub released_at: Option<DateTime<Utc>>,
}

impl HeldChange {
    /// Its key in [`HELD`]: one per guest, and one per partner account.
    pub fn key(&self) -> String {
        held_key(&self.object_id, self.partner.as_ref())
    }
}

/// The key in [`HELD`] of a guest's held change, or of a partner account's.
pub fn held_key(object_id: &ObjectId, partner: Option<&ObjectGuid>) -> String {
    match partner {
        Some(guid) => format!("partner:{guid}"),
        None => object_id.to_string(),
    }
}

/// Where a partner account's guest stands ([`PartnerRecord::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartnerStatus {
    /// A guest that may sign in.
    Active,
    /// A guest whose sign-in is blocked (the account is disabled in AD).
    Blocked,
    /// The account left scope or was deleted: the guest is blocked, and deleted after the
    /// retention.
    Gone,
    /// The guest was deleted (restorable in Entra for 30 days).
    Deleted,
    /// Nothing was done; `conflict` says why.
    Conflict,
    /// The account is not a partner and never had a guest.
    NotPartner,
}

impl PartnerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Blocked => "blocked",
            Self::Gone => "gone",
            Self::Deleted => "deleted",
            Self::Conflict => "conflict",
            Self::NotPartner => "not_partner",
        }
    }
}

/// What shadowsync last did for one partner account ([`PARTNERS`], keyed by objectGUID). An
/// index only: the link on the guest (`Partner_<objectGUID>`) or its immutable id rebuilds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerRecord {
    pub guid: ObjectGuid,
    pub sam_account_name: Option<String>,
    pub user_principal_name: Option<String>,
    /// The partner's address the guest was invited (or converted, or reset) with.
    pub address: Option<String>,
    /// The guest in Entra ID.
    pub guest_id: Option<ObjectId>,
    pub status: PartnerStatus,
    /// Since when the account has been out of scope or deleted: retention counts from here.
    pub gone_since: Option<DateTime<Utc>>,
    pub conflict: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl PartnerRecord {
    pub async fn load(
        store: &dyn KeyValueStore,
        guid: &ObjectGuid,
    ) -> Result<Option<Versioned<PartnerRecord>>, StateError> {
        get_json(store, PARTNERS, &guid.to_string()).await
    }

    /// Saves with compare-and-set: `expected` is the version loaded (`None` if there was none).
    pub async fn save(
        &self,
        store: &dyn KeyValueStore,
        expected: Option<u64>,
    ) -> Result<u64, StateError> {
        put_json(store, PARTNERS, &self.guid.to_string(), self, expected).await
    }
}

/// One group of the scope tree ([`SCOPE_GROUPS`]): where its next groups delta round starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeGroupRecord {
    /// The deltaLink of its last round; `None` before the first.
    pub delta_link: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// Where the AD watcher's next round starts ([`CHECKPOINTS`] / [`PARTNER_WATERMARK`]): a
/// `uSNChanged` is only meaningful on the DC (`invocation_id`) that gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerWatermark {
    pub usn: u64,
    pub invocation_id: String,
    /// When the last full comparison (every partner account, record and linked guest) ran.
    pub full_at: DateTime<Utc>,
}

/// The Graph tenant and application the accounts were made from ([`CHECKPOINTS`] /
/// [`GRAPH_IDENTITY`]): a configuration pointed elsewhere must not disable them all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedIdentity {
    pub tenant: String,
    pub client_id: String,
    pub since: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_count_stays_small_whatever_the_limits() {
        let start = DateTime::parse_from_rfc3339("2030-01-07T09:00:30Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut guard = SafetyGuard::default();
        // 10,000 disables over two hours, one every 0.72 s.
        for n in 0..10_000i64 {
            let at = start + chrono::Duration::milliseconds(n * 720);
            guard.add(Destructive::Disable, at, at - chrono::Duration::hours(1));
        }
        let end = start + chrono::Duration::milliseconds(9_999 * 720);
        assert!(guard.minutes.len() <= 61, "{} entries", guard.minutes.len());
        let last_hour = guard.count(Destructive::Disable, end - chrono::Duration::hours(1));
        // Counted in whole minutes: the oldest, partial minute may be left out.
        assert!((4_900..=5_000).contains(&last_hour), "{last_hour}");
        assert_eq!(
            guard.count(Destructive::Delete, end - chrono::Duration::hours(1)),
            0
        );
        assert!(
            serde_json::to_vec(&guard).unwrap().len() < 8_000,
            "one small item"
        );
    }
}
