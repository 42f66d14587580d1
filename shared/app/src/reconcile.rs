//! The reconciler: the safety net that makes shadowsync correct when change notifications are
//! lost, late or forged. It never converges anything itself; it only puts converge jobs on the
//! queue, and the workers decide what each guest's account should be.
//!
//! - [`Reconciler::run_delta`]: Graph delta query over users. The first round (no checkpoint,
//!   or an expired delta token) enumerates every user; later rounds start from the stored
//!   deltaLink and see only what changed.
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
use shadowsync_state::records::{CHECKPOINTS, LAST_SWEEP, USERS_DELTA};
use shadowsync_state::{
    get_json, put_json, DeltaCheckpoint, GuestRecord, KeyValueStore, LastSweep,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Jobs per `send_batch` (SQS takes 10 per call; the adapter splits, the embedded queue writes
/// one transaction per batch).
pub const JOB_BATCH: usize = 100;

/// Full rounds started in one run when Graph keeps losing their state.
const FULL_ROUND_ATTEMPTS: u32 = 3;

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
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// User objects found in the managed OUs.
    pub accounts: usize,
    pub jobs_enqueued: usize,
    /// DNs of objects in the managed OUs without a valid anchor: not ours, never touched.
    pub unmanaged: Vec<String>,
    /// Guests enumerated from Graph (only with a scope group).
    pub guests_checked: usize,
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

impl Reconciler {
    /// One delta round over users; see the module docs. The checkpoint moves only when the round
    /// reached its deltaLink, so a failed round is simply repeated (jobs are idempotent).
    pub async fn run_delta(&self) -> Result<DeltaReport, AppError> {
        let (checkpoint, mut version) = self.load_checkpoint().await?;
        let reason = match &checkpoint {
            None if version.is_some() => "the delta checkpoint is unreadable".to_string(),
            None => "no delta checkpoint (first run)".to_string(),
            Some(cp) => match self.round(DeltaCursor::Link(cp.delta_link.clone())).await {
                Ok((report, link)) => {
                    self.save_checkpoint(link, Some(cp.full_sync_at), version)
                        .await?;
                    info!(
                        pages = report.pages,
                        users_seen = report.users_seen,
                        jobs = report.jobs_enqueued,
                        removed = report.removed,
                        "incremental delta round complete"
                    );
                    return Ok(report);
                }
                Err(e) => {
                    let Some(why) = e.graph_error().and_then(stale_link) else {
                        return Err(e);
                    };
                    warn!(error = %e, "{why}; starting a full sync");
                    self.state.delete(CHECKPOINTS, USERS_DELTA, version).await?;
                    version = None;
                    format!("{why} ({e})")
                }
            },
        };
        // Graph may lose a round's state mid-round too (a nextLink answered 410): start over,
        // a few times; the jobs already sent are idempotent.
        let mut attempt = 1;
        let (mut report, link) = loop {
            match self.round(DeltaCursor::Start).await {
                Err(e)
                    if attempt < FULL_ROUND_ATTEMPTS
                        && e.graph_error().is_some_and(|g| g.is_sync_state_lost()) =>
                {
                    warn!(error = %e, attempt, "Graph lost the full round's state; starting it over");
                    attempt += 1;
                }
                other => break other?,
            }
        };
        report.full = true;
        report.reason_for_full = Some(reason);
        self.save_checkpoint(link, None, version).await?;
        info!(
            pages = report.pages,
            users_seen = report.users_seen,
            jobs = report.jobs_enqueued,
            reason = report.reason_for_full.as_deref().unwrap_or(""),
            "full delta round complete"
        );
        Ok(report)
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

    /// Follows one round page by page, enqueueing as it goes, so memory stays flat whatever
    /// the tenant's size. Returns the report and the round's deltaLink.
    async fn round(&self, start: DeltaCursor) -> Result<(DeltaReport, Option<String>), AppError> {
        let full = start == DeltaCursor::Start;
        let mut cursor = start;
        let mut report = DeltaReport::default();
        let mut jobs = Batch::new(self.queue.as_ref());
        // Graph may return an object more than once in a round: one job each.
        let mut enqueued = HashSet::new();
        loop {
            let page = self
                .graph
                .users_delta(&cursor)
                .await
                .doing("reading users delta")?;
            report.pages += 1;
            report.users_seen += page.items.len() + page.skipped;
            report.skipped += page.skipped;
            for item in page.items {
                match item {
                    DeltaItem::Removed { id, permanently } => {
                        report.removed += 1;
                        // `deleted` is permanent: the worker may then delete the account.
                        // `changed` is a soft delete: converge disables (Graph still has them).
                        let change = if permanently {
                            ChangeType::Deleted
                        } else {
                            ChangeType::Updated
                        };
                        if enqueued.insert((id.clone(), change)) {
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
                        if enqueued.contains(&key) {
                            continue;
                        }
                        let wanted = match full {
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
                            enqueued.insert(key);
                        }
                    }
                }
            }
            if let Some(next) = page.next_link {
                cursor = DeltaCursor::Link(next);
                continue;
            }
            report.jobs_enqueued = jobs.finish().await?;
            return Ok((report, page.delta_link));
        }
    }

    /// Converge jobs for every anchored account in the managed OUs and, with a scope group, for
    /// every guest without one; see the module docs.
    pub async fn sweep(&self) -> Result<SweepReport, AppError> {
        let Some(ManagedDirectory { directory, policy }) = &self.managed else {
            return Err(AppError::Missing(
                "the directory (the sweep runs where AD is)",
            ));
        };
        let mut report = SweepReport::default();
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
        let mut guests = Guests::new(self.graph.as_ref());
        while let Some(page) = guests.next_page().await? {
            for id in page {
                report.guests_checked += 1;
                if !anchored.contains(&id) {
                    jobs.push(self.job(id, None)).await?;
                }
            }
        }
        report.jobs_enqueued = jobs.finish().await?;
        info!(
            accounts = report.accounts,
            jobs = report.jobs_enqueued,
            unmanaged = report.unmanaged.len(),
            guests_checked = report.guests_checked,
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
        match self.run_scheduled(roles, sweep_interval).await {
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
    ) -> Result<RunReport, AppError> {
        // A failed delta round does not stop a sweep that is due: the sweep is the net under
        // what the rounds miss, outages included. The round's error is reported after it.
        let (delta, resumed, rechecked, delta_failed) = match roles.delta {
            true => match self.run_delta().await {
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
            .sweep_if_due(roles, sweep_interval, delta, resumed, rechecked)
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
        delta: Option<DeltaReport>,
        resumed: usize,
        rechecked: usize,
    ) -> Result<RunReport, AppError> {
        if !roles.sweep {
            return Ok(RunReport {
                delta,
                sweep: None,
                resumed,
                rechecked,
            });
        }
        let last = get_json::<LastSweep>(self.state.as_ref(), CHECKPOINTS, LAST_SWEEP).await?;
        let now = self.clock.now();
        let full_round_at =
            get_json::<DeltaCheckpoint>(self.state.as_ref(), CHECKPOINTS, USERS_DELTA)
                .await
                .ok()
                .flatten()
                .map(|cp| cp.value.full_sync_at);
        let due = match &last {
            None => true,
            Some(last) => {
                let elapsed = (now - last.value.at).to_std().unwrap_or_default();
                elapsed >= sweep_interval
                    || full_round_at.is_some_and(|full| full > last.value.at)
                    || delta.as_ref().is_some_and(|d| d.full)
            }
        };
        if !due {
            return Ok(RunReport {
                delta,
                sweep: None,
                resumed,
                rechecked,
            });
        }
        let sweep = self.sweep().await?;
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

    async fn flush(&mut self) -> Result<(), AppError> {
        if !self.pending.is_empty() {
            let jobs = std::mem::replace(&mut self.pending, Vec::with_capacity(JOB_BATCH));
            self.sent += jobs.len();
            self.queue.send_batch(jobs).await?;
        }
        Ok(())
    }

    /// Sends the rest; returns how many jobs were sent in all.
    pub(crate) async fn finish(mut self) -> Result<usize, AppError> {
        self.flush().await?;
        Ok(self.sent)
    }
}
