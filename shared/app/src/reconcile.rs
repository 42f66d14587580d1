//! The reconciler: the safety net that makes shadowsync correct when change notifications are
//! lost, late or forged. It never converges anything itself; it only puts converge jobs on the
//! queue, and the workers decide what each guest's account should be.
//!
//! - [`Reconciler::run_delta`]: Graph delta query over users. The first round (no checkpoint,
//!   or an expired delta token) enumerates every user; later rounds start from the stored
//!   deltaLink and see only what changed. A round saves its position as it goes
//!   ([`DeltaResumePoint`]), so one stopped by a deadline or a crash goes on from there.
//! - [`Reconciler::sweep`]: looks at AD instead of Graph. Every anchored account in the managed
//!   OUs gets a job, so orphans (guest gone), accounts out of scope and accounts past their
//!   retention are found even if Graph never reports them again. With a scope group, guests
//!   without an account are enqueued too, because joining a group (directly or nested) changes
//!   no user property and is therefore invisible to users/delta.
//! - [`Reconciler::scheduled_run`]: the one schedule every host follows.

use crate::access::GraphAccess;
use crate::error::{AppError, Doing};
use chrono::{DateTime, Utc};
use serde::Serialize;
use shadowsync_core::{Clock, ObjectId, Policy};
use shadowsync_ports::{DeltaCursor, DeltaItem, Directory, Graph};
use shadowsync_queue::{ChangeType, Job, JobSource, Queue};
use shadowsync_state::records::{CHECKPOINTS, LAST_SWEEP, USERS_DELTA, USERS_DELTA_RESUME};
use shadowsync_state::{
    get_json, put_json, DeltaCheckpoint, DeltaResumePoint, GuestRecord, KeyValueStore, LastSweep,
};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Jobs per `send_batch` (SQS takes 10 per call; the adapter splits, the embedded queue writes
/// one transaction per batch).
pub const JOB_BATCH: usize = 100;

/// Full rounds started in one run when Graph keeps losing their state.
const FULL_ROUND_ATTEMPTS: u32 = 3;

/// How often a round saves its position (after sending the jobs of the pages read since). Not
/// every page: that is a durable write per 100 to 999 users, more than the jobs' own batches of
/// 100 (a third of a tenant's users may be guests), and those batches are what a round costs on
/// the embedded store (BENCHMARKS.md, section 4). A crash makes the next run read again at most
/// this much of the round (its jobs are idempotent). A round also saves when it stops for its
/// deadline, and when Graph fails it.
const RESUME_SAVE_INTERVAL: chrono::Duration = chrono::Duration::seconds(10);

/// A saved round older than this starts over instead. Graph keeps delta state 7 days for
/// directory objects (documented for deltaLinks; nothing is documented for a round's nextLinks).
/// An older position is not tried at all: Graph might answer a link it forgot otherwise than as
/// stale (a 5xx, say), and every run would fail on it.
const RESUME_MAX_AGE: chrono::Duration = chrono::Duration::days(6);

/// Recent ids a round remembers to fold Graph's repeats (see [`Reconciler::follow`]): a couple
/// of MB at most, whatever the tenant's size.
const RECENT_IDS: usize = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeltaReport {
    /// The round enumerated every user (first run, or the delta token was lost). A full round
    /// is followed by a sweep.
    pub full: bool,
    pub reason_for_full: Option<String>,
    pub pages: usize,
    /// Items in the pages, `@removed` ones included.
    pub users_seen: usize,
    pub jobs_enqueued: usize,
    /// Items that were `@removed` (soft- or permanently deleted).
    pub removed: usize,
    /// Items that could not be read (no usable id) and were left out.
    pub skipped: usize,
    /// The round reached its deltaLink. `false`: it stopped for its deadline with its position
    /// saved; the next run resumes it.
    pub complete: bool,
    /// The round went on from where an earlier run left it; the counts include that run's.
    pub resumed: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// User objects found in the managed OUs.
    pub accounts: usize,
    pub jobs_enqueued: usize,
    /// DNs of objects in the managed OUs without a valid anchor: not ours, never touched.
    pub unmanaged: Vec<String>,
    /// Guests enumerated from Graph.
    pub guests_checked: usize,
    /// Guests were not enumerated: a full delta round completed since the last sweep had
    /// already queued a job for every user (the sweep that round makes due would queue every
    /// guest a second time).
    pub guests_covered_by_full_round: bool,
    /// Accounts of ours that gained the indexed anchor (see [`Directory::stamp_indexed_anchors`]).
    pub anchors_stamped: usize,
}

/// Whether a sweep lists the tenant's guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GuestSweep {
    Enumerate,
    /// A full delta round since the last sweep has queued every user.
    CoveredByFullRound,
}

/// Which parts of reconciliation a host does: delta rounds need Graph, sweeps need AD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub delta: bool,
    pub sweep: bool,
}

impl Roles {
    /// A host that reaches both Graph and AD (serve; the Lambda reconciler in lambda mode).
    pub const ALL: Roles = Roles {
        delta: true,
        sweep: true,
    };
    /// The Lambda reconciler in connector mode: AD is out of reach, the connector sweeps.
    pub const DELTA: Roles = Roles {
        delta: true,
        sweep: false,
    };
    /// The on-premises connector: delta rounds run in the cloud.
    pub const SWEEP: Roles = Roles {
        delta: false,
        sweep: true,
    };
}

/// What one scheduled run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    /// `None` when this host does no delta rounds.
    pub delta: Option<DeltaReport>,
    /// `None` when no sweep was due, or this host does not sweep.
    pub sweep: Option<SweepReport>,
    /// Jobs parked while Graph refused access, back on the queue now that it answers.
    pub resumed: usize,
    /// Guests whose held disable or delete is converged again (see [`Reconciler::recheck_held`]).
    pub rechecked: usize,
}

pub struct Reconciler {
    pub graph: Arc<dyn Graph>,
    pub queue: Arc<dyn Queue>,
    pub state: Arc<dyn KeyValueStore>,
    /// What the sweep reads; `None` where AD is out of reach.
    pub managed: Option<ManagedDirectory>,
    /// Where refusals (403) are recorded, and parked jobs resumed from.
    pub access: Arc<GraphAccess>,
    pub clock: Arc<dyn Clock>,
}

/// The directory and the policy that names its managed OUs.
pub struct ManagedDirectory {
    pub directory: Arc<dyn Directory>,
    pub policy: Policy,
}

/// Why a kept delta link can only start a full round, if it can: Graph lost its state, or the
/// link was kept from the Graph endpoint configured before.
fn stale_link(error: &shadowsync_ports::GraphError) -> Option<&'static str> {
    if error.is_sync_state_lost() {
        Some("delta token expired")
    } else if error.is_foreign_link() {
        Some("the delta link belongs to another Graph endpoint (the configuration changed)")
    } else {
        None
    }
}

/// Whether a saved nextLink is no use: stale as a delta link is, or refused outright (a 4xx
/// other than an access refusal, such as `Directory_ExpiredPageToken`: trying it again would
/// fail every run).
fn resume_link_refused(error: &shadowsync_ports::GraphError) -> bool {
    stale_link(error).is_some()
        || (matches!(error, shadowsync_ports::GraphError::Client { .. })
            && !error.is_access_denied())
}

/// A users delta round being followed: where it is, and its counts (an earlier run's included
/// when it was resumed).
struct Round {
    cursor: DeltaCursor,
    report: DeltaReport,
    started_at: DateTime<Utc>,
    /// `completed_at` of the checkpoint the round started from.
    checkpoint_at: Option<DateTime<Utc>>,
    /// When the last full round completed, for an incremental round (the checkpoint keeps it).
    previous_full: Option<DateTime<Utc>>,
}

impl Round {
    fn full(reason: String, now: DateTime<Utc>) -> Self {
        Self {
            cursor: DeltaCursor::Start,
            report: DeltaReport {
                full: true,
                reason_for_full: Some(reason),
                ..DeltaReport::default()
            },
            started_at: now,
            checkpoint_at: None,
            previous_full: None,
        }
    }

    fn incremental(checkpoint: &DeltaCheckpoint, now: DateTime<Utc>) -> Self {
        Self {
            cursor: DeltaCursor::Link(checkpoint.delta_link.clone()),
            report: DeltaReport::default(),
            started_at: now,
            checkpoint_at: Some(checkpoint.completed_at),
            previous_full: Some(checkpoint.full_sync_at),
        }
    }

    /// `checkpoint`: the one the round started from ([`DeltaResumePoint::continues`] it).
    fn resumed(point: DeltaResumePoint, checkpoint: Option<&DeltaCheckpoint>) -> Self {
        Self {
            cursor: DeltaCursor::Link(point.next_link),
            report: DeltaReport {
                full: point.full,
                reason_for_full: point.reason_for_full,
                pages: point.pages,
                users_seen: point.users_seen,
                jobs_enqueued: point.jobs_enqueued,
                removed: point.removed,
                skipped: point.skipped,
                complete: false,
                resumed: true,
            },
            started_at: point.started_at,
            checkpoint_at: point.checkpoint_at,
            previous_full: checkpoint.filter(|_| !point.full).map(|cp| cp.full_sync_at),
        }
    }

    fn resume_point(&self, next_link: String, now: DateTime<Utc>) -> DeltaResumePoint {
        let r = &self.report;
        DeltaResumePoint {
            next_link,
            full: r.full,
            reason_for_full: r.reason_for_full.clone(),
            checkpoint_at: self.checkpoint_at,
            started_at: self.started_at,
            saved_at: now,
            pages: r.pages,
            users_seen: r.users_seen,
            jobs_enqueued: r.jobs_enqueued,
            removed: r.removed,
            skipped: r.skipped,
        }
    }
}

/// How [`Reconciler::follow`] left a round.
enum Followed {
    /// At its last page, with the page's deltaLink (`None` when Graph gave none).
    Ended(Option<String>),
    /// Stopped for the deadline, its position saved.
    Stopped,
}

/// The last `capacity` keys inserted: folds repeats close together without keeping every key.
struct RecentIds {
    order: VecDeque<(ObjectId, ChangeType)>,
    keys: HashSet<(ObjectId, ChangeType)>,
    capacity: usize,
}

impl RecentIds {
    fn new(capacity: usize) -> Self {
        Self {
            order: VecDeque::new(),
            keys: HashSet::new(),
            capacity,
        }
    }

    fn contains(&self, key: &(ObjectId, ChangeType)) -> bool {
        self.keys.contains(key)
    }

    /// `false` when `key` is among the recent ones already.
    fn insert(&mut self, key: (ObjectId, ChangeType)) -> bool {
        if !self.keys.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.keys.remove(&oldest);
            }
        }
        true
    }
}

impl Reconciler {
    /// One delta round over users; see the module docs. The checkpoint moves only when the round
    /// reached its deltaLink; until then the round saves where it is as it goes, so a failed
    /// round goes on from there (jobs are idempotent). No deadline: see [`Self::run_delta_until`].
    pub async fn run_delta(&self) -> Result<DeltaReport, AppError> {
        self.run_delta_until(None).await
    }

    /// [`Self::run_delta`] that stops by `deadline` (on the reconciler's clock): a round still
    /// going then saves where it is after the page in hand and reports itself incomplete; the
    /// next run resumes it. The first page is always read, so every run makes progress.
    pub async fn run_delta_until(
        &self,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<DeltaReport, AppError> {
        let (mut checkpoint, mut version) = self.load_checkpoint().await?;
        let (saved_point, mut saved) = self.load_resume_point(checkpoint.as_ref()).await?;
        let now = self.clock.now();
        let mut round = match (saved_point, &checkpoint) {
            (Some(point), _) => Round::resumed(point, checkpoint.as_ref()),
            (None, Some(cp)) => Round::incremental(cp, now),
            (None, None) if version.is_some() => {
                Round::full("the delta checkpoint is unreadable".into(), now)
            }
            (None, None) => Round::full("no delta checkpoint (first run)".into(), now),
        };
        let mut full_rounds = 0;
        loop {
            if round.report.full {
                full_rounds += 1;
            }
            let pages_before = round.report.pages;
            let error = match self.follow(&mut round, &mut saved, deadline).await {
                Ok(Followed::Ended(delta_link)) => {
                    return self.complete(round, delta_link, version, saved).await;
                }
                Ok(Followed::Stopped) => {
                    info!(
                        full = round.report.full,
                        pages = round.report.pages,
                        users_seen = round.report.users_seen,
                        jobs = round.report.jobs_enqueued,
                        "delta round stopped for the deadline; the next run resumes it"
                    );
                    return Ok(round.report);
                }
                Err(e) => e,
            };
            let Some(graph) = error.graph_error() else {
                return Err(error);
            };
            let now = self.clock.now();
            round = if round.report.resumed
                && round.report.pages == pages_before
                && resume_link_refused(graph)
            {
                // The saved link is no use: the round starts as it would have without it.
                warn!(error = %error, "Graph refused the saved position of the delta round; starting the round over");
                match &checkpoint {
                    Some(cp) => Round::incremental(cp, now),
                    None => Round::full(round.report.reason_for_full.unwrap_or_default(), now),
                }
            } else if let Some(why) = stale_link(graph).filter(|_| !round.report.full) {
                warn!(error = %error, "{why}; starting a full sync");
                self.state.delete(CHECKPOINTS, USERS_DELTA, version).await?;
                (checkpoint, version) = (None, None);
                Round::full(format!("{why} ({error})"), now)
            } else if round.report.full
                && graph.is_sync_state_lost()
                && full_rounds < FULL_ROUND_ATTEMPTS
            {
                // Graph may lose a round's state mid-round too (a nextLink answered 410): start
                // over, a few times; the jobs already sent are idempotent.
                warn!(error = %error, attempt = full_rounds, "Graph lost the full round's state; starting it over");
                Round::full(round.report.reason_for_full.unwrap_or_default(), now)
            } else {
                return Err(error);
            };
            // A position in the abandoned round is no use to the next run.
            if saved.is_some() {
                self.state
                    .delete(CHECKPOINTS, USERS_DELTA_RESUME, saved.take())
                    .await?;
            }
        }
    }

    /// The round reached its deltaLink: the checkpoint moves there, then the saved position
    /// goes (one a crash leaves behind no longer [`DeltaResumePoint::continues`]: ignored).
    async fn complete(
        &self,
        mut round: Round,
        delta_link: Option<String>,
        version: Option<u64>,
        saved: Option<u64>,
    ) -> Result<DeltaReport, AppError> {
        self.save_checkpoint(delta_link, round.previous_full, version)
            .await?;
        if saved.is_some() {
            self.state
                .delete(CHECKPOINTS, USERS_DELTA_RESUME, saved)
                .await?;
        }
        let report = &mut round.report;
        report.complete = true;
        match report.full {
            true => info!(
                pages = report.pages,
                users_seen = report.users_seen,
                jobs = report.jobs_enqueued,
                resumed = report.resumed,
                reason = report.reason_for_full.as_deref().unwrap_or(""),
                "full delta round complete"
            ),
            false => info!(
                pages = report.pages,
                users_seen = report.users_seen,
                jobs = report.jobs_enqueued,
                removed = report.removed,
                resumed = report.resumed,
                "incremental delta round complete"
            ),
        }
        Ok(round.report)
    }

    /// The checkpoint and the version it is stored at. An unreadable checkpoint is `None` with
    /// its version, so the next round is a full one that overwrites it: state is a checkpoint
    /// that can always be rebuilt from Graph.
    async fn load_checkpoint(&self) -> Result<(Option<DeltaCheckpoint>, Option<u64>), AppError> {
        let Some(raw) = self.state.get(CHECKPOINTS, USERS_DELTA).await? else {
            return Ok((None, None));
        };
        match serde_json::from_slice(&raw.value) {
            Ok(cp) => Ok((Some(cp), Some(raw.version))),
            Err(e) => {
                warn!(error = %e, "delta checkpoint unreadable; starting a full sync");
                Ok((None, Some(raw.version)))
            }
        }
    }

    /// The saved position of an unfinished round, when it can be resumed, and the version of
    /// the stored record (kept even when it cannot: the next save or the round's end replaces
    /// it).
    async fn load_resume_point(
        &self,
        checkpoint: Option<&DeltaCheckpoint>,
    ) -> Result<(Option<DeltaResumePoint>, Option<u64>), AppError> {
        let Some(raw) = self.state.get(CHECKPOINTS, USERS_DELTA_RESUME).await? else {
            return Ok((None, None));
        };
        let age = |point: &DeltaResumePoint| self.clock.now() - point.started_at;
        let why_not = match serde_json::from_slice::<DeltaResumePoint>(&raw.value) {
            Err(e) => format!("the saved position is unreadable: {e}"),
            Ok(point) if !point.continues(checkpoint) => {
                "a round completed since the saved one started".into()
            }
            Ok(point) if age(&point) >= RESUME_MAX_AGE => format!(
                "the saved round started {} h ago; Graph may have lost its state",
                age(&point).num_hours()
            ),
            Ok(point) => {
                info!(
                    full = point.full,
                    started_at = %point.started_at,
                    pages = point.pages,
                    users_seen = point.users_seen,
                    "resuming the delta round where it stopped"
                );
                return Ok((Some(point), Some(raw.version)));
            }
        };
        warn!(reason = %why_not, "not resuming the saved delta round");
        Ok((None, Some(raw.version)))
    }

    /// `previous_full`: when the last full round completed, for an incremental round; `None`
    /// after a full round (it completed now).
    async fn save_checkpoint(
        &self,
        delta_link: Option<String>,
        previous_full: Option<DateTime<Utc>>,
        version: Option<u64>,
    ) -> Result<(), AppError> {
        let delta_link = delta_link.ok_or(AppError::Unexpected {
            action: "reading users delta",
            detail: "the last page has no @odata.deltaLink".into(),
        })?;
        let now = self.clock.now();
        let checkpoint = DeltaCheckpoint {
            delta_link,
            completed_at: now,
            full_sync_at: previous_full.unwrap_or(now),
        };
        put_json(
            self.state.as_ref(),
            CHECKPOINTS,
            USERS_DELTA,
            &checkpoint,
            version,
        )
        .await?;
        Ok(())
    }

    /// Follows `round` page by page from where it is, enqueueing as it goes, so memory stays
    /// flat whatever the tenant's size, until its last page or `deadline`. `saved`: the version
    /// of the stored position.
    async fn follow(
        &self,
        round: &mut Round,
        saved: &mut Option<u64>,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<Followed, AppError> {
        let mut jobs = Batch::new(self.queue.as_ref());
        let jobs_before = round.report.jobs_enqueued;
        // Graph may return an object more than once in a round: one job each, as far as a
        // bounded window of recent ids can tell (every id of the round would grow with the
        // tenant). A repeat further apart, or across runs of a resumed round, makes a second
        // job for the user: jobs are idempotent (the worker re-reads the guest from Graph and
        // finds nothing more to change), so it costs a read, never a wrong result.
        let mut recent = RecentIds::new(RECENT_IDS);
        let mut last_save = self.clock.now();
        let mut unsaved_pages = 0;
        loop {
            let page = match self
                .graph
                .users_delta(&round.cursor)
                .await
                .doing("reading users delta")
            {
                Ok(page) => page,
                Err(e) => {
                    // Keep the pages read so far, unless the link that failed is no use.
                    let refused = e.graph_error().is_some_and(resume_link_refused);
                    if unsaved_pages > 0 && !refused {
                        let saving = self.save_position(round, &mut jobs, jobs_before, saved);
                        if let Err(save) = saving.await {
                            warn!(error = %save, "could not save the delta round's position");
                        }
                    }
                    return Err(e);
                }
            };
            round.report.pages += 1;
            round.report.users_seen += page.items.len() + page.skipped;
            round.report.skipped += page.skipped;
            for item in page.items {
                match item {
                    DeltaItem::Removed { id, permanently } => {
                        round.report.removed += 1;
                        // `deleted` is permanent: the worker may then delete the account.
                        // `changed` is a soft delete: converge disables (Graph still has them).
                        let change = if permanently {
                            ChangeType::Deleted
                        } else {
                            ChangeType::Updated
                        };
                        if recent.insert((id.clone(), change)) {
                            jobs.push(self.job(id, Some(change))).await?;
                        }
                    }
                    DeltaItem::Changed { id, user_type } => {
                        // Graph may leave properties out of a delta item; an unknown userType
                        // could be a guest, so let converge look.
                        let guest = user_type
                            .as_deref()
                            .is_none_or(|t| t.eq_ignore_ascii_case("Guest"));
                        let key = (id, ChangeType::Updated);
                        if recent.contains(&key) {
                            continue;
                        }
                        let wanted = match round.report.full {
                            true => guest,
                            // A former guest (turned Member) must have their account disabled.
                            false => {
                                guest
                                    || GuestRecord::load(self.state.as_ref(), &key.0)
                                        .await?
                                        .is_some()
                            }
                        };
                        if wanted {
                            jobs.push(self.job(key.0.clone(), Some(ChangeType::Updated)))
                                .await?;
                            recent.insert(key);
                        }
                    }
                }
            }
            let Some(next) = page.next_link else {
                jobs.flush().await?;
                round.report.jobs_enqueued = jobs_before + jobs.sent();
                return Ok(Followed::Ended(page.delta_link));
            };
            round.cursor = DeltaCursor::Link(next);
            unsaved_pages += 1;
            let now = self.clock.now();
            let stop = deadline.is_some_and(|d| now >= d);
            if stop || now - last_save >= RESUME_SAVE_INTERVAL {
                self.save_position(round, &mut jobs, jobs_before, saved)
                    .await?;
                (last_save, unsaved_pages) = (now, 0);
            }
            if stop {
                return Ok(Followed::Stopped);
            }
        }
    }

    /// Sends the jobs of the pages read, then saves the round's position after them: never
    /// before, or a crash between would skip users whose jobs were not sent. A compare-and-set
    /// on `saved`, so two reconcilers cannot both move the round silently.
    async fn save_position(
        &self,
        round: &mut Round,
        jobs: &mut Batch<'_>,
        jobs_before: usize,
        saved: &mut Option<u64>,
    ) -> Result<(), AppError> {
        jobs.flush().await?;
        round.report.jobs_enqueued = jobs_before + jobs.sent();
        let DeltaCursor::Link(next_link) = &round.cursor else {
            return Ok(()); // No page read yet: nothing to save.
        };
        let point = round.resume_point(next_link.clone(), self.clock.now());
        *saved = Some(
            put_json(
                self.state.as_ref(),
                CHECKPOINTS,
                USERS_DELTA_RESUME,
                &point,
                *saved,
            )
            .await?,
        );
        Ok(())
    }

    /// Converge jobs for every anchored account in the managed OUs and for every guest without
    /// one; see the module docs.
    pub async fn sweep(&self) -> Result<SweepReport, AppError> {
        self.sweep_accounts_and(GuestSweep::Enumerate).await
    }

    async fn sweep_accounts_and(&self, guests: GuestSweep) -> Result<SweepReport, AppError> {
        let Some(ManagedDirectory { directory, policy }) = &self.managed else {
            return Err(AppError::Missing(
                "the directory (the sweep runs where AD is)",
            ));
        };
        let mut report = SweepReport {
            // Accounts an older version made since the last check would escape the indexed
            // lookup.
            anchors_stamped: directory.stamp_indexed_anchors().await?,
            ..SweepReport::default()
        };
        let mut jobs = Batch::new(self.queue.as_ref());
        // Lower-cased DNs (one OU may lie inside the other) and object ids (one job per guest,
        // even if two objects carry the same anchor: converge reports that as a conflict).
        let mut seen_dns = HashSet::new();
        let mut anchored = HashSet::new();
        for ou in [&policy.guests_ou, &policy.disabled_ou] {
            for account in directory.list_accounts(ou).await? {
                if !seen_dns.insert(account.dn.to_lowercase()) {
                    continue;
                }
                report.accounts += 1;
                match account
                    .anchor
                    .as_deref()
                    .and_then(|v| policy.anchor.object_id(v))
                {
                    Some(id) => {
                        if anchored.insert(id.clone()) {
                            jobs.push(self.job(id, None)).await?;
                        }
                    }
                    None => {
                        // Invariant 3: shadowsync never modifies an object it does not own.
                        warn!(dn = %account.dn, anchor = account.anchor.as_deref().unwrap_or(""),
                            "object in a managed OU without shadowsync's anchor; left alone");
                        report.unmanaged.push(account.dn);
                    }
                }
            }
        }
        // Every guest without an account yet. Joining the scope group (directly or through a
        // nested group) changes nothing on the user, so delta never reports it; and a guest
        // invited while AD was down, whose jobs failed after the delta checkpoint moved on, is
        // reported by nothing else either. Converge checks the scope.
        match guests {
            GuestSweep::CoveredByFullRound => report.guests_covered_by_full_round = true,
            GuestSweep::Enumerate => {
                let mut guests = Guests::new(self.graph.as_ref());
                while let Some(page) = guests.next_page().await? {
                    for id in page {
                        report.guests_checked += 1;
                        if !anchored.contains(&id) {
                            jobs.push(self.job(id, None)).await?;
                        }
                    }
                }
            }
        }
        report.jobs_enqueued = jobs.finish().await?;
        info!(
            accounts = report.accounts,
            jobs = report.jobs_enqueued,
            unmanaged = report.unmanaged.len(),
            guests_checked = report.guests_checked,
            guests_covered_by_full_round = report.guests_covered_by_full_round,
            "sweep complete"
        );
        Ok(report)
    }

    /// The one schedule, for every host: a delta round where this host does them, then, where
    /// it sweeps, a sweep when one is due: never swept, `sweep_interval` passed since the last
    /// sweep, or a full delta round (here or in another host of the deployment) completed
    /// since. Times are recorded in state, so the schedule holds across restarts and across
    /// Lambda invocations, and a full round in the cloud leads the connector to sweep.
    /// A refusal (403) is recorded for `status`; the first delta round after it puts the jobs
    /// parked meanwhile back on the queue.
    pub async fn scheduled_run(
        &self,
        roles: Roles,
        sweep_interval: Duration,
    ) -> Result<RunReport, AppError> {
        self.scheduled_run_until(roles, sweep_interval, None).await
    }

    /// [`Self::scheduled_run`] within `deadline` (the reconciler Lambda's, less a margin): a
    /// delta round still going then saves its position for the next run
    /// ([`Self::run_delta_until`]), and a sweep due waits for a run with time left.
    pub async fn scheduled_run_until(
        &self,
        roles: Roles,
        sweep_interval: Duration,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<RunReport, AppError> {
        match self.run_scheduled(roles, sweep_interval, deadline).await {
            Err(e) if GraphAccess::is_denied(&e) => {
                self.access.refused(&e).await?;
                Err(e)
            }
            other => other,
        }
    }

    async fn run_scheduled(
        &self,
        roles: Roles,
        sweep_interval: Duration,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<RunReport, AppError> {
        // A failed delta round does not stop a sweep that is due: the sweep is the net under
        // what the rounds miss, outages included. The round's error is reported after it.
        let (delta, resumed, rechecked, delta_failed) = match roles.delta {
            true => match self.run_delta_until(deadline).await {
                Ok(report) => (
                    Some(report),
                    self.access.restored(self.queue.as_ref()).await?,
                    self.recheck_held().await?,
                    None,
                ),
                Err(e) if GraphAccess::is_denied(&e) => return Err(e),
                Err(e) => (None, 0, 0, Some(e)),
            },
            false => (None, 0, 0, None),
        };
        let report = self
            .sweep_if_due(roles, sweep_interval, deadline, delta, resumed, rechecked)
            .await;
        match delta_failed {
            Some(e) => {
                if let Ok(RunReport { sweep: Some(s), .. }) = &report {
                    info!(
                        jobs = s.jobs_enqueued,
                        "swept although the delta round failed"
                    );
                }
                Err(e)
            }
            None => report,
        }
    }

    async fn sweep_if_due(
        &self,
        roles: Roles,
        sweep_interval: Duration,
        deadline: Option<DateTime<Utc>>,
        delta: Option<DeltaReport>,
        resumed: usize,
        rechecked: usize,
    ) -> Result<RunReport, AppError> {
        let no_sweep = |delta| {
            Ok(RunReport {
                delta,
                sweep: None,
                resumed,
                rechecked,
            })
        };
        if !roles.sweep {
            return no_sweep(delta);
        }
        let last = get_json::<LastSweep>(self.state.as_ref(), CHECKPOINTS, LAST_SWEEP).await?;
        let now = self.clock.now();
        let full_round_at =
            get_json::<DeltaCheckpoint>(self.state.as_ref(), CHECKPOINTS, USERS_DELTA)
                .await
                .ok()
                .flatten()
                .map(|cp| cp.value.full_sync_at);
        // A full round (here or elsewhere) completed since the last sweep, or before the first.
        let full_round_since = match &last {
            None => full_round_at.is_some(),
            Some(last) => full_round_at.is_some_and(|full| full > last.value.at),
        };
        let due = match &last {
            None => true,
            Some(last) => {
                let elapsed = (now - last.value.at).to_std().unwrap_or_default();
                elapsed >= sweep_interval
                    || full_round_since
                    // A full round stopped for its deadline has not enumerated everyone yet.
                    || delta.as_ref().is_some_and(|d| d.full && d.complete)
            }
        };
        if !due {
            return no_sweep(delta);
        }
        // A round that stopped for the deadline left no time (it stops only then): the sweep
        // stays due, and a later run makes it.
        if deadline.is_some_and(|d| now >= d) {
            info!("a sweep is due, but the run's deadline has passed; a later run sweeps");
            return no_sweep(delta);
        }
        // Every user that full round listed has a job already.
        let guests = match full_round_since {
            true => GuestSweep::CoveredByFullRound,
            false => GuestSweep::Enumerate,
        };
        let sweep = self.sweep_accounts_and(guests).await?;
        put_json(
            self.state.as_ref(),
            CHECKPOINTS,
            LAST_SWEEP,
            &LastSweep { at: now },
            last.map(|l| l.version),
        )
        .await?;
        Ok(RunReport {
            delta,
            sweep: Some(sweep),
            resumed,
            rechecked,
        })
    }

    /// A change held by a failed pre-flight (a scope group deleted, another tenant) is
    /// decided again each round, so that the list clears soon after the cause is fixed (its
    /// guests then need no disable) instead of at the next sweep. Not while the threshold is
    /// tripped: then an administrator decides.
    pub async fn recheck_held(&self) -> Result<usize, AppError> {
        let guard = crate::safety::load_guard(self.state.as_ref()).await?;
        if guard.is_some_and(|g| g.value.tripped.is_some()) {
            return Ok(0);
        }
        let held = crate::safety::held_changes(self.state.as_ref()).await?;
        let mut jobs = Batch::new(self.queue.as_ref());
        let mut count = 0;
        for change in held.into_iter().filter(|c| c.released_at.is_none()) {
            jobs.push(self.job(change.object_id, None)).await?;
            count += 1;
        }
        jobs.finish().await?;
        Ok(count)
    }

    fn job(&self, user_id: ObjectId, change_type: Option<ChangeType>) -> Job {
        reconciler_job(user_id, change_type, self.clock.now())
    }
}

/// A converge job the reconciler's side of shadowsync makes (a delta item, a sweep, a scope
/// group's change): `change_type` when Graph said what changed.
pub(crate) fn reconciler_job(
    user_id: ObjectId,
    change_type: Option<ChangeType>,
    at: DateTime<Utc>,
) -> Job {
    Job::Converge {
        user_id,
        change_type,
        subscription_id: None,
        received_at: at,
        source: JobSource::Reconciler,
    }
}

/// Every guest's id, a page at a time (memory stays flat whatever the tenant's size).
pub(crate) struct Guests<'a> {
    graph: &'a dyn Graph,
    /// `None` once the last page was read; `Some(None)` before the first.
    next: Option<Option<String>>,
}

impl<'a> Guests<'a> {
    pub(crate) fn new(graph: &'a dyn Graph) -> Self {
        Self {
            graph,
            next: Some(None),
        }
    }

    pub(crate) async fn next_page(&mut self) -> Result<Option<Vec<ObjectId>>, AppError> {
        let Some(link) = self.next.take() else {
            return Ok(None);
        };
        let page = self
            .graph
            .guests(link.as_deref())
            .await
            .doing("listing guests")?;
        self.next = page.next_link.map(Some);
        Ok(Some(page.items))
    }
}

/// Jobs waiting to be sent in batches of [`JOB_BATCH`].
pub(crate) struct Batch<'a> {
    queue: &'a dyn Queue,
    pending: Vec<Job>,
    sent: usize,
}

impl<'a> Batch<'a> {
    pub(crate) fn new(queue: &'a dyn Queue) -> Self {
        Self {
            queue,
            pending: Vec::with_capacity(JOB_BATCH),
            sent: 0,
        }
    }

    pub(crate) async fn push(&mut self, job: Job) -> Result<(), AppError> {
        self.pending.push(job);
        if self.pending.len() >= JOB_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends the jobs waiting.
    pub(crate) async fn flush(&mut self) -> Result<(), AppError> {
        if !self.pending.is_empty() {
            let jobs = std::mem::replace(&mut self.pending, Vec::with_capacity(JOB_BATCH));
            self.sent += jobs.len();
            self.queue.send_batch(jobs).await?;
        }
        Ok(())
    }

    /// Jobs sent so far.
    pub(crate) fn sent(&self) -> usize {
        self.sent
    }

    /// Sends the rest; returns how many jobs were sent in all.
    pub(crate) async fn finish(mut self) -> Result<usize, AppError> {
        self.flush().await?;
        Ok(self.sent)
    }
}
