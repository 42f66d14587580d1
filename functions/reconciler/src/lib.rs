//! The reconciler: the safety net that makes shadowsync correct when change notifications are
//! lost, late or forged. It never converges anything itself; it only puts converge jobs on the
//! queue, and the provisioner decides what each guest's account should be.
//!
//! - [`Reconciler::run_delta`] (frequent schedule): Graph delta query over users. The first round
//!   (no checkpoint, or an expired delta token) enumerates every user; later rounds start from
//!   the stored `@odata.deltaLink` and see only what changed.
//! - [`Reconciler::sweep`] (slow schedule, and after a full sync): looks at AD instead of Graph.
//!   Every anchored account in the managed OUs gets a job, so orphans (guest gone), accounts out
//!   of scope and accounts past their retention are found even if Graph never reports them again.
//!   With a scope group, guests without an account are enqueued too, because joining a group
//!   (directly or nested) changes no user property and is therefore invisible to users/delta.

mod scheduled;

pub use scheduled::{RunReport, LAST_SWEEP};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shadowsync_core::user::USER_SELECT;
use shadowsync_core::{Clock, Policy};
use shadowsync_directory::{Directory, DirectoryError};
use shadowsync_graph::{GraphClient, GraphError};
use shadowsync_queue::{ChangeType, Job, JobSource, Queue, QueueError};
use shadowsync_state::{put_json, GuestRecord, KeyValueStore, StateError};
use std::collections::HashSet;
use std::sync::Arc;
use thiserror::Error;
use tracing::{info, warn};

/// State table of checkpoints.
pub const CHECKPOINTS: &str = "checkpoints";
/// Key of the users delta checkpoint in [`CHECKPOINTS`].
pub const USERS_DELTA: &str = "users_delta";
/// Jobs per `send_batch` (SQS takes 10 per call; the adapter splits, the embedded queue writes
/// one transaction per batch).
pub const JOB_BATCH: usize = 100;

#[derive(Debug, Error)]
pub enum ReconcileError {
    #[error("Graph: {0}")]
    Graph(#[from] GraphError),
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    #[error("state: {0}")]
    State(#[from] StateError),
    #[error("directory: {0}")]
    Directory(#[from] DirectoryError),
    #[error("no directory here: the sweep runs where AD can be reached (the connector, in connector mode)")]
    NoDirectory,
    /// Graph answered 2xx with something that is not a delta or list page.
    #[error("unexpected Graph response: {0}")]
    Protocol(String),
}

impl ReconcileError {
    /// Can the same run succeed later without anyone changing anything? Nothing is lost by
    /// retrying: the checkpoint only moves when a round completes, and jobs are idempotent.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Graph(e) => e.is_retryable(),
            Self::Directory(e) => e.is_retryable(),
            Self::Queue(e) => matches!(e, QueueError::Storage(_)),
            // A lost compare-and-set means another reconciler ran at the same time.
            Self::State(e) => !matches!(e, StateError::Corrupt { .. }),
            Self::Protocol(_) | Self::NoDirectory => false,
        }
    }

    /// Graph no longer knows the delta token: the documented answer is `410 Gone` with
    /// `syncStateNotFound` (the docs also mention the code with a plain 400).
    fn is_sync_state_lost(&self) -> bool {
        match self {
            Self::Graph(e) => {
                e.status() == Some(410)
                    || e.code()
                        .is_some_and(|c| c.eq_ignore_ascii_case("syncStateNotFound"))
            }
            _ => false,
        }
    }
}

/// Where the next delta round starts (state table [`CHECKPOINTS`], key [`USERS_DELTA`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaCheckpoint {
    pub delta_link: String,
    /// When the round that produced `delta_link` completed.
    pub completed_at: DateTime<Utc>,
    /// When the last full round completed.
    pub full_sync_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeltaReport {
    /// The round enumerated every user (first run, or the delta token was lost). The host
    /// should follow a full round with a [`Reconciler::sweep`].
    pub full: bool,
    pub reason_for_full: Option<String>,
    pub pages: usize,
    /// Items in the pages, `@removed` ones included.
    pub users_seen: usize,
    pub jobs_enqueued: usize,
    /// Items that were `@removed` (soft- or permanently deleted).
    pub removed: usize,
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

pub struct Reconciler {
    pub graph: Arc<GraphClient>,
    pub queue: Arc<dyn Queue>,
    pub state: Arc<dyn KeyValueStore>,
    /// What the sweep reads; `None` where AD is out of reach (the Lambda reconciler in
    /// connector mode runs delta rounds only, and the connector sweeps).
    pub managed: Option<ManagedDirectory>,
    pub clock: Arc<dyn Clock>,
}

/// The directory and the policy that names its managed OUs.
pub struct ManagedDirectory {
    pub directory: Arc<Directory>,
    pub policy: Policy,
}

/// Whether a round starts from scratch or from a deltaLink.
enum Start<'a> {
    Full,
    From(&'a str),
}

impl Reconciler {
    /// One delta round over users; see the crate docs. The checkpoint moves only when the round
    /// reached its deltaLink, so a failed round is simply repeated (jobs are idempotent).
    pub async fn run_delta(&self) -> Result<DeltaReport, ReconcileError> {
        let (checkpoint, mut version) = self.load_checkpoint().await?;
        let reason = match &checkpoint {
            None if version.is_some() => "the delta checkpoint is unreadable".to_string(),
            None => "no delta checkpoint (first run)".to_string(),
            Some(cp) => match self.round(Start::From(&cp.delta_link)).await {
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
                Err(e) if e.is_sync_state_lost() => {
                    warn!(error = %e, "delta token expired; starting a full sync");
                    self.state.delete(CHECKPOINTS, USERS_DELTA, version).await?;
                    version = None;
                    format!("delta token expired ({e})")
                }
                Err(e) => return Err(e),
            },
        };
        let (mut report, link) = self.round(Start::Full).await?;
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
    async fn load_checkpoint(
        &self,
    ) -> Result<(Option<DeltaCheckpoint>, Option<u64>), ReconcileError> {
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
    ) -> Result<(), ReconcileError> {
        let delta_link = delta_link.ok_or_else(|| {
            ReconcileError::Protocol("the last delta page has no @odata.deltaLink".into())
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
    async fn round(
        &self,
        start: Start<'_>,
    ) -> Result<(DeltaReport, Option<String>), ReconcileError> {
        let full = matches!(start, Start::Full);
        let mut url = match start {
            Start::Full => format!("/v1.0/users/delta?$select={USER_SELECT}"),
            // The deltaLink remembers the `$select` of the round that produced it.
            Start::From(link) => link.to_string(),
        };
        let mut report = DeltaReport::default();
        let mut jobs = Batch::new(self.queue.as_ref());
        loop {
            let page: Value = self.graph.get_json(&url).await?;
            report.pages += 1;
            let items = page["value"]
                .as_array()
                .ok_or_else(|| ReconcileError::Protocol("delta page without `value`".into()))?;
            for item in items {
                report.users_seen += 1;
                let Some(id) = item["id"].as_str().filter(|id| !id.is_empty()) else {
                    warn!(%item, "delta item without an id; skipped");
                    continue;
                };
                if let Some(removed) = item.get("@removed") {
                    report.removed += 1;
                    // `deleted` is permanent: the provisioner may then delete the account.
                    // `changed` is a soft delete: converge disables (Graph still has the user).
                    let deleted = removed["reason"]
                        .as_str()
                        .is_some_and(|r| r.eq_ignore_ascii_case("deleted"));
                    let change = if deleted {
                        ChangeType::Deleted
                    } else {
                        ChangeType::Updated
                    };
                    jobs.push(self.job(id, Some(change))).await?;
                    continue;
                }
                // Graph may leave properties out of a delta item; an unknown userType could be
                // a guest, so let converge look.
                let guest = match item["userType"].as_str() {
                    Some(t) => t.eq_ignore_ascii_case("Guest"),
                    None => true,
                };
                if full {
                    if guest {
                        jobs.push(self.job(id, None)).await?;
                    }
                } else if guest
                    // A former guest (turned Member) must have their account disabled.
                    || GuestRecord::load(self.state.as_ref(), id).await?.is_some()
                {
                    jobs.push(self.job(id, Some(ChangeType::Updated))).await?;
                }
            }
            if let Some(next) = page["@odata.nextLink"].as_str() {
                url = next.to_string();
                continue;
            }
            let delta_link = page["@odata.deltaLink"].as_str().map(str::to_string);
            report.jobs_enqueued = jobs.finish().await?;
            return Ok((report, delta_link));
        }
    }

    /// Converge jobs for every anchored account in the managed OUs and, with a scope group, for
    /// every guest without one; see the crate docs.
    pub async fn sweep(&self) -> Result<SweepReport, ReconcileError> {
        let Some(ManagedDirectory { directory, policy }) = &self.managed else {
            return Err(ReconcileError::NoDirectory);
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
                let id = account
                    .anchor
                    .as_deref()
                    .and_then(|v| policy.anchor.object_id(v))
                    .filter(|id| is_object_id(id));
                match id {
                    Some(id) => {
                        if anchored.insert(id.to_ascii_lowercase()) {
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
        if policy.scope_group_id.is_some() {
            // Joining the scope group (directly or through a nested group) changes nothing on
            // the user, so delta never reports it: look for guests that have no account yet.
            // Converge checks the transitive membership.
            let mut url =
                "/v1.0/users?$filter=userType%20eq%20'Guest'&$select=id&$top=999".to_string();
            loop {
                let page: Value = self.graph.get_json(&url).await?;
                let items = page["value"].as_array().ok_or_else(|| {
                    ReconcileError::Protocol("user list page without `value`".into())
                })?;
                for id in items.iter().filter_map(|u| u["id"].as_str()) {
                    report.guests_checked += 1;
                    if !anchored.contains(&id.to_ascii_lowercase()) {
                        jobs.push(self.job(id, None)).await?;
                    }
                }
                match page["@odata.nextLink"].as_str() {
                    Some(next) => url = next.to_string(),
                    None => break,
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

    fn job(&self, user_id: &str, change_type: Option<ChangeType>) -> Job {
        Job::Converge {
            user_id: user_id.to_string(),
            change_type,
            subscription_id: None,
            received_at: self.clock.now(),
            source: JobSource::Reconciler,
        }
    }
}

/// Jobs waiting to be sent in batches of [`JOB_BATCH`].
struct Batch<'a> {
    queue: &'a dyn Queue,
    pending: Vec<Job>,
    sent: usize,
}

impl<'a> Batch<'a> {
    fn new(queue: &'a dyn Queue) -> Self {
        Self {
            queue,
            pending: Vec::with_capacity(JOB_BATCH),
            sent: 0,
        }
    }

    async fn push(&mut self, job: Job) -> Result<(), ReconcileError> {
        self.pending.push(job);
        if self.pending.len() >= JOB_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ReconcileError> {
        if !self.pending.is_empty() {
            let jobs = std::mem::replace(&mut self.pending, Vec::with_capacity(JOB_BATCH));
            self.sent += jobs.len();
            self.queue.send_batch(jobs).await?;
        }
        Ok(())
    }

    /// Sends the rest; returns how many jobs were sent in all.
    async fn finish(mut self) -> Result<usize, ReconcileError> {
        self.flush().await?;
        Ok(self.sent)
    }
}

/// An Entra objectId: a hyphenated GUID. Anything else after the anchor prefix is not ours (and
/// must never reach Graph, where `/users/{x}` also accepts a UPN).
fn is_object_id(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_ids_are_hyphenated_guids() {
        assert!(is_object_id("4f8a2c1e-9b3d-4e5f-8a7b-6c5d4e3f2a1b"));
        assert!(is_object_id("4F8A2C1E-9B3D-4E5F-8A7B-6C5D4E3F2A1B"));
        assert!(!is_object_id("4f8a2c1e9b3d4e5f8a7b6c5d4e3f2a1b"));
        assert!(!is_object_id("alice@contoso.com"));
        assert!(!is_object_id("4f8a2c1e-9b3d-4e5f-8a7b-6c5d4e3f2a1g"));
        assert!(!is_object_id(""));
    }

    #[test]
    fn expired_sync_state_is_recognised() {
        let gone = ReconcileError::Graph(GraphError::Client {
            status: 410,
            code: "syncStateNotFound".into(),
            message: String::new(),
        });
        assert!(gone.is_sync_state_lost());
        assert!(!gone.is_retryable());
        let bad = ReconcileError::Graph(GraphError::Client {
            status: 400,
            code: "SyncStateNotFound".into(),
            message: String::new(),
        });
        assert!(bad.is_sync_state_lost());
        let other = ReconcileError::Graph(GraphError::Client {
            status: 400,
            code: "Request_BadRequest".into(),
            message: String::new(),
        });
        assert!(!other.is_sync_state_lost());
        assert!(ReconcileError::Graph(GraphError::Timeout).is_retryable());
    }
}
