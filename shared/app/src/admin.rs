//! The administrator's operations: status, one guest's report, plan, sync, dead letters. The
//! CLI calls them on the store directly, or through a running `serve`'s admin API; both print
//! the same reports.

use crate::access::{self, AccessReport};
use crate::converge::{Hint, Outcome};
use crate::error::Doing;
use crate::partners::{PartnerOutcome, PartnerReport};
use crate::safety::{self, SafetyReport};
use crate::{App, AppError};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use shadowsync_core::partner::ObjectGuid;
use shadowsync_core::{ActualAccount, GraphUser, ObjectId, Operation, UserLookup};
use shadowsync_ports::{AnchorLookup, Directory, GraphIdentity};
use shadowsync_queue::{Job, JobSource, Queue, QueueStats};
use shadowsync_state::records::{
    CHECKPOINTS, GUESTS, HELD, LAST_SWEEP, PARTNERS, PARTNER_WATERMARK, USERS_DELTA,
    USERS_DELTA_RESUME,
};
use shadowsync_state::{
    get_json, put_json, DeltaCheckpoint, DeltaResumePoint, GuestRecord, HeldChange, KeyValueStore,
    LastSweep, PartnerRecord, PartnerWatermark, SubscriptionRecord,
};
use std::collections::{BTreeMap, BTreeSet};

/// Guests converged (or planned) at once by the admin operations.
const CONCURRENCY: usize = 8;

#[derive(Debug, Serialize, Deserialize)]
pub struct StatusReport {
    pub subscription: Option<SubscriptionRecord>,
    /// When the reconciler last completed a delta round.
    pub delta_checkpoint: Option<DateTime<Utc>>,
    /// A delta round under way, or stopped (a deadline, a crash) where the next run resumes it.
    #[serde(default)]
    pub delta_round_in_progress: Option<RoundInProgress>,
    /// When the managed OUs were last swept.
    #[serde(default)]
    pub last_sweep: Option<DateTime<Utc>>,
    pub queue: QueueStats,
    pub accounts: BTreeMap<String, u64>,
    /// `(objectId, reason)` of every guest in conflict.
    pub conflicts: Vec<(String, String)>,
    /// Whether Graph refuses access (403), and the jobs parked until it answers.
    #[serde(default)]
    pub graph_access: AccessReport,
    /// The accidental-change threshold and the disables and deletes it holds.
    #[serde(default)]
    pub safety: SafetyReport,
    /// What the running `serve`'s webhook received since it started; `None` when the command
    /// read the store itself (no webhook runs).
    #[serde(default)]
    pub webhook: Option<WebhookReport>,
    /// Microsoft Graph's clock minus this host's, in seconds, when they differ by a minute or
    /// more (what the running `serve` last saw in Graph's `Date` header; `None` otherwise).
    #[serde(default)]
    pub clock_offset_seconds: Option<i64>,
    /// Partner accounts by where their guest stands (the partner direction; empty when off).
    #[serde(default)]
    pub partners: BTreeMap<String, u64>,
    /// `(objectGUID, reason)` of every partner account in conflict.
    #[serde(default)]
    pub partner_conflicts: Vec<(String, String)>,
    /// Where the AD watcher's next round starts, and its last full comparison.
    #[serde(default)]
    pub partner_watermark: Option<PartnerWatermark>,
    /// How shadow accounts are looked up in AD, as the directory last reported it.
    #[serde(default)]
    pub anchor_lookup: Option<AnchorLookupRecord>,
}

/// Key in [`CHECKPOINTS`] of the [`AnchorLookupRecord`].
pub const ANCHOR_LOOKUP: &str = "anchor_lookup";

/// The anchor lookup a host found when it reached AD, for `status` (which reads state alone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorLookupRecord {
    #[serde(flatten)]
    pub lookup: AnchorLookup,
    pub at: DateTime<Utc>,
}

/// Records how `directory` looks accounts up, when it has been reached. Only for `status`: a
/// failure is logged and changes nothing else.
pub async fn record_anchor_lookup(state: &dyn KeyValueStore, directory: &dyn Directory) {
    let Some(lookup) = directory.anchor_lookup() else {
        return;
    };
    let record = AnchorLookupRecord {
        lookup,
        at: Utc::now(),
    };
    // The newest report wins: written over whatever version is there.
    let version = state
        .get(CHECKPOINTS, ANCHOR_LOOKUP)
        .await
        .ok()
        .flatten()
        .map(|c| c.version);
    if let Err(e) = put_json(state, CHECKPOINTS, ANCHOR_LOOKUP, &record, version).await {
        tracing::warn!(error = %e, "could not record the directory's anchor lookup for status");
    }
}

/// A delta round not completed yet, as far as its last saved position tells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundInProgress {
    /// It enumerates every user.
    pub full: bool,
    pub started_at: DateTime<Utc>,
    /// When its position was last saved: the counts are as of then.
    pub saved_at: DateTime<Utc>,
    pub pages: usize,
    pub users_seen: usize,
    pub jobs_enqueued: usize,
}

/// The offset worth reporting between Graph's clock and the local one: a minute or more.
pub fn clock_offset(graph_now: DateTime<Utc>, local_now: DateTime<Utc>) -> Option<i64> {
    let seconds = (graph_now - local_now).num_seconds();
    (seconds.abs() >= 60).then_some(seconds)
}

/// A running webhook's counters since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookReport {
    pub since: DateTime<Utc>,
    pub notifications_received: u64,
    pub jobs_enqueued: u64,
    /// Repeats folded into the job that waited for the same change (Graph's redeliveries).
    #[serde(default)]
    pub folded: u64,
    /// Discarded items and refused requests, by counter name (`RejectedBadClientState`,
    /// `RejectedWrongTenant`, …); only those that happened.
    pub rejected: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UserReport {
    pub object_id: ObjectId,
    /// `active`, `soft-deleted` or `not found`.
    pub graph_state: String,
    pub graph: Option<GraphUser>,
    pub directory: Vec<ActualAccount>,
    pub record: Option<GuestRecord>,
    /// What converging this guest now would do.
    pub plan: Vec<Operation>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SyncReport {
    pub guests: u64,
    pub changed: u64,
    pub by_status: BTreeMap<String, u64>,
    pub conflicts: Vec<(String, String)>,
    /// Guests not acted on yet: Graph answers 404 and it is not confirmed (see
    /// [`crate::converge::NOT_FOUND_CONFIRMATION`]); the next sync, or the workers, decide.
    #[serde(default)]
    pub waiting: Vec<(String, String)>,
    /// `(objectId, reason)` of every disable or delete the safety rails held.
    #[serde(default)]
    pub held: Vec<(String, String)>,
    pub errors: Vec<(String, String)>,
}

/// The subscription, the last delta round, the queue and the accounts by status: read from
/// state and the queue alone, so it works with Graph and AD out of reach.
pub async fn status(
    state: &dyn KeyValueStore,
    queue: &dyn Queue,
) -> Result<StatusReport, AppError> {
    let subscription = SubscriptionRecord::load(state).await?.map(|v| v.value);
    let checkpoint = get_json::<DeltaCheckpoint>(state, CHECKPOINTS, USERS_DELTA)
        .await
        .ok()
        .flatten()
        .map(|v| v.value);
    let delta_checkpoint = checkpoint.as_ref().map(|cp| cp.completed_at);
    let delta_round_in_progress =
        get_json::<DeltaResumePoint>(state, CHECKPOINTS, USERS_DELTA_RESUME)
            .await
            .ok()
            .flatten()
            .map(|v| v.value)
            // One a crash left behind after its round completed is no round in progress.
            .filter(|point| point.continues(checkpoint.as_ref()))
            .map(|point| RoundInProgress {
                full: point.full,
                started_at: point.started_at,
                saved_at: point.saved_at,
                pages: point.pages,
                users_seen: point.users_seen,
                jobs_enqueued: point.jobs_enqueued,
            });
    let last_sweep = get_json::<LastSweep>(state, CHECKPOINTS, LAST_SWEEP)
        .await
        .ok()
        .flatten()
        .map(|v| v.value.at);
    let (partners, partner_conflicts) = tally(state, PARTNERS, |r: PartnerRecord| {
        (r.status.as_str(), r.conflict)
    })
    .await?;
    let partner_watermark = get_json::<PartnerWatermark>(state, CHECKPOINTS, PARTNER_WATERMARK)
        .await?
        .map(|w| w.value);
    let anchor_lookup = get_json::<AnchorLookupRecord>(state, CHECKPOINTS, ANCHOR_LOOKUP)
        .await
        .ok()
        .flatten()
        .map(|r| r.value);
    let (accounts, conflicts) = tally(state, GUESTS, |r: GuestRecord| {
        (r.status.as_str(), r.conflict)
    })
    .await?;
    Ok(StatusReport {
        subscription,
        delta_checkpoint,
        delta_round_in_progress,
        last_sweep,
        queue: queue.stats().await?,
        accounts,
        conflicts,
        graph_access: access::report(state).await?,
        safety: safety::report(state, Utc::now()).await?,
        webhook: None,
        clock_offset_seconds: None,
        partners,
        partner_conflicts,
        partner_watermark,
        anchor_lookup,
    })
}

/// The records of `table` counted by status (`status_and_conflict` says each one's), with the
/// conflicts among them by key. One damaged record must not hide everything else: it is counted
/// (`unreadable`) and listed.
async fn tally<T: serde::de::DeserializeOwned>(
    state: &dyn KeyValueStore,
    table: &str,
    status_and_conflict: impl Fn(T) -> (&'static str, Option<String>),
) -> Result<(BTreeMap<String, u64>, Vec<(String, String)>), AppError> {
    let mut counts = BTreeMap::new();
    let mut conflicts = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = state.scan(table, after.as_deref(), 500).await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (key, raw) in page {
            let (status, conflict) = match serde_json::from_slice::<T>(&raw.value) {
                Ok(record) => status_and_conflict(record),
                Err(e) => (
                    "unreadable",
                    Some(format!("the state record cannot be read: {e}")),
                ),
            };
            *counts.entry(status.to_string()).or_insert(0) += 1;
            if let Some(reason) = conflict {
                conflicts.push((key, reason));
            }
        }
    }
    Ok((counts, conflicts))
}

/// Which held changes an administrator acts on: all, or the guests named by objectId or
/// userPrincipalName (as `held list` shows them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HeldSelection {
    /// Empty: all.
    pub users: Vec<String>,
}

impl HeldSelection {
    fn all(&self) -> bool {
        self.users.is_empty()
    }

    /// The held changes chosen; an error naming a key that matches none.
    async fn chosen(&self, state: &dyn KeyValueStore) -> Result<Vec<HeldChange>, AppError> {
        let held = safety::held_changes(state).await?;
        if let Some(key) = self
            .users
            .iter()
            .find(|key| !held.iter().any(|c| names(c, key)))
        {
            return Err(AppError::NotFound(format!("no held change for {key}")));
        }
        Ok(held
            .into_iter()
            .filter(|c| self.all() || self.users.iter().any(|key| names(c, key)))
            .collect())
    }
}

/// Whether `key` names the guest of `change` (objectId or userPrincipalName, any case).
fn names(change: &HeldChange, key: &str) -> bool {
    change.object_id.as_str().eq_ignore_ascii_case(key)
        || change
            .partner
            .is_some_and(|guid| guid.to_string().eq_ignore_ascii_case(key))
        || change
            .user_principal_name
            .as_deref()
            .is_some_and(|upn| upn.eq_ignore_ascii_case(key))
}

/// Lets the chosen held changes through: each is marked released and its guest converged
/// again (a job on `queue`). Released in full, the threshold is reset and `identity` accepted
/// as the accounts' tenant and application. Returns the guests released.
pub async fn release_held(
    state: &dyn KeyValueStore,
    queue: &dyn Queue,
    identity: GraphIdentity,
    selection: &HeldSelection,
) -> Result<Vec<HeldChange>, AppError> {
    let now = Utc::now();
    let chosen = selection.chosen(state).await?;
    let mut jobs = crate::reconcile::Batch::new(queue);
    for change in &chosen {
        let stored = state.get(HELD, &change.key()).await?;
        let released = HeldChange {
            released_at: Some(now),
            ..change.clone()
        };
        put_json(
            state,
            HELD,
            &change.key(),
            &released,
            stored.map(|s| s.version),
        )
        .await?;
        jobs.push(match change.partner {
            Some(guid) => Job::Partner {
                guid,
                received_at: now,
                source: JobSource::Admin,
            },
            None => admin_job(change.object_id.clone(), now),
        })
        .await?;
    }
    jobs.finish().await?;
    if selection.all() {
        safety::reset(state).await?;
        safety::accept_identity(state, identity, now).await?;
    }
    tracing::warn!(
        released = chosen.len(),
        all = selection.all(),
        "held changes released by an administrator"
    );
    Ok(chosen)
}

/// Drops the chosen held changes unapplied. The threshold stays as it is: tripped, it holds
/// the same changes again when the next sweep finds them (the cause remains), and only
/// `release` (with nothing left held, it simply resumes) lets disables and deletes through
/// again. Returns the guests dropped.
pub async fn discard_held(
    state: &dyn KeyValueStore,
    selection: &HeldSelection,
) -> Result<Vec<HeldChange>, AppError> {
    let chosen = selection.chosen(state).await?;
    for change in &chosen {
        if let Some(stored) = state.get(HELD, &change.key()).await? {
            state
                .delete(HELD, &change.key(), Some(stored.version))
                .await?;
        }
    }
    tracing::warn!(
        discarded = chosen.len(),
        all = selection.all(),
        "held changes discarded by an administrator"
    );
    Ok(chosen)
}

impl App {
    /// Finds a guest by objectId, userPrincipalName or sAMAccountName. Only an objectId (a
    /// GUID) is ever looked up as an id; a UPN goes to Graph's UPN lookup, and a
    /// sAMAccountName to AD, whose anchor must then hold a GUID.
    pub async fn resolve_user(&self, key: &str) -> Result<ObjectId, AppError> {
        if let Ok(id) = ObjectId::parse(key) {
            return Ok(id);
        }
        if key.contains('@') {
            return match self
                .graph
                .user_by_principal_name(key)
                .await
                .doing("looking up the user")?
            {
                Some(user) => Ok(user.id),
                None => Err(AppError::NotFound(format!("no user {key} in Graph"))),
            };
        }
        let converger = self.converger()?;
        let object = converger
            .directory
            .find_by_sam_account_name(key)
            .await?
            .ok_or_else(|| {
                AppError::NotFound(format!(
                    "no object with sAMAccountName {key} in the directory"
                ))
            })?;
        object
            .anchor
            .as_deref()
            .and_then(|a| converger.policy.anchor.object_id(a))
            .ok_or_else(|| {
                AppError::NotFound(format!(
                    "{} is not a shadow account (no shadowsync anchor)",
                    object.dn
                ))
            })
    }

    /// One guest as Graph, AD and state see it, and what converging would do.
    pub async fn user_report(&self, key: &str) -> Result<UserReport, AppError> {
        let converger = self.converger()?;
        let object_id = self.resolve_user(key).await?;
        let (graph_state, graph) = match self
            .graph
            .user(&object_id)
            .await
            .doing("reading the user")?
        {
            UserLookup::Active(u) => ("active", Some(u)),
            UserLookup::SoftDeleted(u) => ("soft-deleted", Some(u)),
            UserLookup::Gone => ("not found", None),
        };
        let directory = converger
            .directory
            .find_by_anchor(&converger.policy.anchor.value_for(&object_id))
            .await?;
        let record = GuestRecord::load(self.state.as_ref(), &object_id)
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

    /// Everyone a full sync looks at: every guest in Graph, and every account carrying an
    /// anchor in the managed OUs (whose guest may be gone or out of scope).
    pub async fn candidates(&self) -> Result<Vec<ObjectId>, AppError> {
        let converger = self.converger()?;
        let mut ids = BTreeSet::new();
        let mut guests = crate::reconcile::Guests::new(self.graph.as_ref());
        while let Some(page) = guests.next_page().await? {
            ids.extend(page);
        }
        let policy = &converger.policy;
        for ou in [&policy.guests_ou, &policy.disabled_ou] {
            for account in converger.directory.list_accounts(ou).await? {
                ids.extend(
                    account
                        .anchor
                        .as_deref()
                        .and_then(|a| policy.anchor.object_id(a)),
                );
            }
        }
        Ok(ids.into_iter().collect())
    }

    /// What a full sync would do, per guest, changing nothing.
    pub async fn plan(&self, progress: impl Fn(u64, u64)) -> Result<Vec<Outcome>, AppError> {
        let converger = self.converger()?;
        let ids = self.candidates().await?;
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

    /// A full sync now, in this process.
    pub async fn sync(&self, progress: impl Fn(u64, u64)) -> Result<SyncReport, AppError> {
        let converger = self.converger()?;
        let ids = self.candidates().await?;
        let mut report = SyncReport {
            guests: ids.len() as u64,
            ..Default::default()
        };
        let mut done = 0;
        let mut runs = futures::stream::iter(ids)
            .map(|id| async move {
                let result = converger.converge(&id, Hint::default()).await;
                (id, result)
            })
            .buffer_unordered(CONCURRENCY);
        while let Some((id, result)) = runs.next().await {
            match result {
                Ok(outcome) => {
                    report.changed += u64::from(outcome.changed());
                    if let Some(reason) = &outcome.held {
                        report.held.push((id.to_string(), reason.clone()));
                    }
                    *report
                        .by_status
                        .entry(outcome.status.as_str().to_string())
                        .or_insert(0) += 1;
                    if let Some(reason) = outcome.conflict() {
                        report.conflicts.push((id.to_string(), reason.to_string()));
                    }
                }
                Err(
                    e @ (AppError::NotFoundUnconfirmed { .. } | AppError::NotVisibleYet { .. }),
                ) => report.waiting.push((id.to_string(), e.to_string())),
                Err(e) => report.errors.push((id.to_string(), e.to_string())),
            }
            done += 1;
            progress(done, report.guests);
        }
        Ok(report)
    }

    /// A full sync by the running host: a job per guest and per partner account on its
    /// queue. Returns how many.
    pub async fn enqueue_sync(&self) -> Result<usize, AppError> {
        let ids = self.candidates().await?;
        let partners = self.partner_candidates().await?;
        let now = Utc::now();
        let count = ids.len() + partners.len();
        let mut jobs = crate::reconcile::Batch::new(self.queue.as_ref());
        for user_id in ids {
            jobs.push(admin_job(user_id, now)).await?;
        }
        for guid in partners {
            jobs.push(Job::Partner {
                guid,
                received_at: now,
                source: JobSource::Admin,
            })
            .await?;
        }
        jobs.finish().await?;
        Ok(count)
    }

    /// The partner account `name` names (objectGUID, sAMAccountName, UPN or mail), as AD,
    /// Entra and state see it; `None` when the partner direction is off or it names none.
    pub async fn partner_report(&self, name: &str) -> Result<Option<PartnerReport>, AppError> {
        match &self.partners {
            Some(partners) => partners.report(name).await,
            None => Ok(None),
        }
    }

    /// Every partner account a full sync looks at (none where the direction is off).
    pub async fn partner_candidates(&self) -> Result<Vec<ObjectGuid>, AppError> {
        match &self.partner_watcher {
            Some((watcher, _)) => Ok(watcher.everyone().await?.into_iter().collect()),
            None => Ok(Vec::new()),
        }
    }

    /// What a full sync would do, per partner account, changing nothing.
    pub async fn plan_partners(
        &self,
        progress: impl Fn(u64, u64),
    ) -> Result<Vec<PartnerOutcome>, AppError> {
        let Some(partners) = &self.partners else {
            return Ok(Vec::new());
        };
        let guids = self.partner_candidates().await?;
        let total = guids.len() as u64;
        let mut outcomes = Vec::with_capacity(guids.len());
        let mut runs = futures::stream::iter(guids)
            .map(|guid| async move { partners.dry_run(&guid).await })
            .buffer_unordered(CONCURRENCY);
        while let Some(outcome) = runs.next().await {
            outcomes.push(outcome?);
            progress(outcomes.len() as u64, total);
        }
        outcomes.sort_by_key(|o| (o.name(), o.guid));
        Ok(outcomes)
    }

    /// A full sync of the partner accounts now, in this process.
    pub async fn sync_partners(&self, progress: impl Fn(u64, u64)) -> Result<SyncReport, AppError> {
        let Some(partners) = &self.partners else {
            return Ok(SyncReport::default());
        };
        let guids = self.partner_candidates().await?;
        let mut report = SyncReport {
            guests: guids.len() as u64,
            ..Default::default()
        };
        let mut done = 0;
        let mut runs = futures::stream::iter(guids)
            .map(|guid| async move { (guid, partners.converge(&guid).await) })
            .buffer_unordered(CONCURRENCY);
        while let Some((guid, result)) = runs.next().await {
            match result {
                Ok(outcome) => {
                    report.changed += u64::from(outcome.changed());
                    if let Some(reason) = &outcome.held {
                        report.held.push((outcome.name(), reason.clone()));
                    }
                    *report
                        .by_status
                        .entry(outcome.status.as_str().to_string())
                        .or_insert(0) += 1;
                    if let Some(reason) = &outcome.conflict {
                        report.conflicts.push((outcome.name(), reason.clone()));
                    }
                }
                Err(e @ (AppError::NotVisibleYet { .. } | AppError::NotSyncedYet(_))) => {
                    report.waiting.push((guid.to_string(), e.to_string()))
                }
                Err(e) => report.errors.push((guid.to_string(), e.to_string())),
            }
            done += 1;
            progress(done, report.guests);
        }
        Ok(report)
    }
}

/// A converge an administrator asked for.
fn admin_job(user_id: ObjectId, now: DateTime<Utc>) -> Job {
    Job::Converge {
        user_id,
        change_type: None,
        subscription_id: None,
        received_at: now,
        source: JobSource::Admin,
    }
}
