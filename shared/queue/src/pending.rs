//! Folding a redelivered notification into the job that already waits for it.
//!
//! Graph redelivers a notification it thinks failed (our answer came after 3 s, or was lost),
//! and a user notification carries no id of its own: two deliveries of one change and two
//! changes in a row look the same. Dropping a repeat is safe only while the job made from the
//! first one has not started, because that job re-reads the user from Graph when it runs and
//! sees both. So a job made from a notification is marked in the state store while it waits:
//!
//! 1. before sending, the webhook marks its fold key *sending* (a create, or a compare-and-set
//!    over a mark that cannot fold);
//! 2. once the queue holds the job, the mark becomes *queued* (compare-and-set on the version
//!    written in 1, so it fails harmlessly if the job has already started);
//! 3. the worker deletes the mark when it starts the job, before it reads Graph.
//!
//! A repeat folds only into a *queued* mark younger than [`FOLD_WINDOW`]. Every failure leans to
//! a duplicate job (which converge tolerates), never to a lost one: a mark that cannot be
//! written or read means "send"; a *sending* mark (another request is storing it, or failed to)
//! means "send"; a failed send removes the mark it wrote. What is left is a mark that outlives
//! its job without being deleted (the worker's delete is part of the job, so only a job that is
//! never started leaves one, such as one set aside as unreadable); the window bounds the harm,
//! and the delta round reads every change anyway.

use crate::{Job, JobSource, Queue, QueueError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shadowsync_state::{KeyValueStore, MemoryStore, StateError};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// The state store's table of marks, keyed by [`Job::fold_key`].
pub const PENDING: &str = "pending";

/// How long a queued mark folds repeats: SQS's deduplication interval. A job that waits longer
/// (a backlog, an outage) may be joined by a duplicate; nothing is lost.
pub const FOLD_WINDOW: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    Sending,
    Queued,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Mark {
    phase: Phase,
    at: DateTime<Utc>,
}

/// What [`PendingJobs::send`] did with a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Jobs the queue now holds.
    pub sent: usize,
    /// Jobs folded into one that waits (or into another of the same batch).
    pub folded: usize,
}

enum Claim {
    /// An identical job waits, not started: this one is not needed.
    Folded,
    /// Marked *sending* at this version.
    Marked(u64),
    /// Not marked (the store failed): sent all the same.
    Unmarked,
}

/// The marks of jobs that wait, on a state store: DynamoDB where the webhook and the workers are
/// separate functions or hosts; in memory in `serve`, whose webhook and workers are one process
/// (a crash loses the marks and the jobs' starts together, which can only cost a duplicate).
pub struct PendingJobs {
    store: Arc<dyn KeyValueStore>,
    window: Duration,
}

impl PendingJobs {
    pub fn new(store: Arc<dyn KeyValueStore>) -> Self {
        Self {
            store,
            window: FOLD_WINDOW,
        }
    }

    /// The marks in this process's memory ([`MemoryStore`]), for a host whose webhook and
    /// workers are one process (`serve`): a mark costs a map operation under a lock, where a
    /// store with transactions would cost two of them per job.
    pub fn in_process() -> Self {
        Self::new(Arc::new(MemoryStore::new()))
    }

    /// Stores `jobs` in `queue`, except those an identical waiting job already covers. On
    /// `Err`, nothing it marked stays marked (best effort: a mark left over only folds within
    /// the window).
    pub async fn send(&self, queue: &dyn Queue, jobs: Vec<Job>) -> Result<Sent, QueueError> {
        let now = Utc::now();
        let mut seen = HashSet::new();
        let mut folded = 0;
        let mut unique = Vec::with_capacity(jobs.len());
        for job in jobs {
            if job.fold_key().is_some_and(|key| !seen.insert(key)) {
                folded += 1;
            } else {
                unique.push(job);
            }
        }
        let claims = futures::future::join_all(unique.iter().map(|job| self.claim(job, now))).await;
        let mut to_send = Vec::with_capacity(unique.len());
        let mut marked = Vec::new();
        for (job, claim) in unique.into_iter().zip(claims) {
            match claim {
                Claim::Folded => {
                    folded += 1;
                    continue;
                }
                Claim::Marked(version) => marked.push((job.fold_key(), version)),
                Claim::Unmarked => {}
            }
            to_send.push(job);
        }
        let sent = to_send.len();
        if sent > 0 {
            if let Err(e) = queue.send_batch(to_send).await {
                futures::future::join_all(marked.iter().map(|(key, version)| async move {
                    if let Some(key) = key {
                        let _ = self.store.delete(PENDING, key, Some(*version)).await;
                    }
                }))
                .await;
                return Err(e);
            }
        }
        let queued = Mark {
            phase: Phase::Queued,
            at: now,
        };
        futures::future::join_all(marked.iter().map(|(key, version)| {
            let queued = &queued;
            async move {
                if let Some(key) = key {
                    // Fails when the job has already started (its mark deleted): as it should.
                    let _ = self.write(key, queued, Some(*version)).await;
                }
            }
        }))
        .await;
        Ok(Sent { sent, folded })
    }

    /// The worker starts `job`: a repeat from now on needs a job of its own. An error fails the
    /// job (it is retried), so that no mark outlives a job that ran.
    pub async fn started(&self, job: &Job) -> Result<(), StateError> {
        let Some(key) = job.fold_key() else {
            return Ok(());
        };
        let Some(mark) = self.store.get(PENDING, &key).await? else {
            return Ok(());
        };
        match self.store.delete(PENDING, &key, Some(mark.version)).await {
            // Rewritten since the read: only a request that did not fold rewrites a mark, so it
            // marks a newer job, which stays marked.
            Err(e) if e.is_conflict() => Ok(()),
            other => other,
        }
    }

    async fn claim(&self, job: &Job, now: DateTime<Utc>) -> Claim {
        let Some(key) = job.fold_key() else {
            return Claim::Unmarked;
        };
        let sending = Mark {
            phase: Phase::Sending,
            at: now,
        };
        let result = match self.write(&key, &sending, None).await {
            Err(e) if e.is_conflict() => match self.store.get(PENDING, &key).await {
                Ok(Some(existing)) => {
                    // An unreadable mark folds nothing: overwrite it.
                    let mark = serde_json::from_slice::<Mark>(&existing.value).ok();
                    if mark.is_some_and(|m| self.folds(&m, now)) {
                        return Claim::Folded;
                    }
                    self.write(&key, &sending, Some(existing.version)).await
                }
                // Deleted in between: the job started; this one is new.
                Ok(None) => self.write(&key, &sending, None).await,
                Err(e) => Err(e),
            },
            other => other,
        };
        match result {
            Ok(version) => Claim::Marked(version),
            Err(e) => {
                warn!(error = %e, "could not mark a pending job; sending it without folding");
                Claim::Unmarked
            }
        }
    }

    fn folds(&self, mark: &Mark, now: DateTime<Utc>) -> bool {
        let age = (now - mark.at).to_std().unwrap_or_default();
        mark.phase == Phase::Queued && age < self.window
    }

    async fn write(
        &self,
        key: &str,
        mark: &Mark,
        expected: Option<u64>,
    ) -> Result<u64, StateError> {
        let bytes = serde_json::to_vec(mark).map_err(StateError::storage)?;
        self.store.put(PENDING, key, bytes, expected).await
    }
}

impl Job {
    /// What identifies a notification's content, for [`PendingJobs`]: the user and what
    /// happened, or the subscription and its event. `None` for jobs that are not made from a
    /// notification (the reconciler's, an administrator's), which nobody redelivers.
    pub fn fold_key(&self) -> Option<String> {
        match self {
            Job::Converge {
                user_id,
                change_type,
                source: JobSource::Notification,
                ..
            } => Some(format!("user:{user_id}|{change_type:?}")),
            // A group's job reads what changed when it starts: a repeat folds into a waiting one.
            Job::GroupChanged {
                group_id,
                source: JobSource::Notification,
                ..
            } => Some(format!("group:{group_id}")),
            Job::Converge { .. } | Job::Partner { .. } | Job::GroupChanged { .. } => None,
            Job::Lifecycle {
                event,
                subscription_id,
                ..
            } => Some(format!("subscription:{subscription_id}|{event:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChangeType, EmbeddedQueue};
    use shadowsync_state::EmbeddedStore;

    fn notification(user: &str, change: ChangeType) -> Job {
        Job::Converge {
            user_id: user.parse().unwrap(),
            change_type: Some(change),
            subscription_id: Some("sub".into()),
            received_at: Utc::now(),
            source: JobSource::Notification,
        }
    }

    const U1: &str = "00000000-0000-4000-8000-000000000001";
    const U2: &str = "00000000-0000-4000-8000-000000000002";

    /// Each test runs over both kinds of mark store: a store with transactions (as DynamoDB
    /// is for the AWS deployment, here the embedded one) and the in-process map `serve` uses.
    fn setups() -> Vec<(PendingJobs, EmbeddedQueue, Arc<dyn KeyValueStore>)> {
        let stores: [Arc<dyn KeyValueStore>; 2] = [
            Arc::new(EmbeddedStore::in_memory().unwrap()),
            Arc::new(MemoryStore::new()),
        ];
        stores
            .into_iter()
            .map(|store| {
                let queue = EmbeddedQueue::new(&EmbeddedStore::in_memory().unwrap(), 5).unwrap();
                (PendingJobs::new(store.clone()), queue, store)
            })
            .collect()
    }

    #[tokio::test]
    async fn a_repeat_folds_into_the_waiting_job_until_it_starts() {
        for (pending, queue, _) in setups() {
            let first = pending
                .send(&queue, vec![notification(U1, ChangeType::Updated)])
                .await
                .unwrap();
            assert_eq!(first, Sent { sent: 1, folded: 0 });
            let again = pending
                .send(
                    &queue,
                    vec![
                        notification(U1, ChangeType::Updated),
                        notification(U1, ChangeType::Deleted),
                        notification(U2, ChangeType::Updated),
                        notification(U2, ChangeType::Updated),
                    ],
                )
                .await
                .unwrap();
            // U1 updated folds; U1 deleted says something else; U2's second copy folds into
            // the first.
            assert_eq!(again, Sent { sent: 2, folded: 2 });
            assert_eq!(queue.stats().await.unwrap().depth, 3);

            let delivered = queue.receive(1, Duration::from_secs(30)).await.unwrap();
            pending.started(&delivered[0].job).await.unwrap();
            let after_start = pending
                .send(&queue, vec![notification(U1, ChangeType::Updated)])
                .await
                .unwrap();
            assert_eq!(
                after_start,
                Sent { sent: 1, folded: 0 },
                "a change after the read"
            );
        }
    }

    #[tokio::test]
    async fn jobs_not_made_from_notifications_are_never_folded() {
        for (pending, queue, _) in setups() {
            let sweep = Job::Converge {
                user_id: U1.parse().unwrap(),
                change_type: None,
                subscription_id: None,
                received_at: Utc::now(),
                source: JobSource::Reconciler,
            };
            pending.send(&queue, vec![sweep.clone()]).await.unwrap();
            let again = pending.send(&queue, vec![sweep]).await.unwrap();
            assert_eq!(again, Sent { sent: 1, folded: 0 });
        }
    }

    #[tokio::test]
    async fn an_old_or_unfinished_mark_folds_nothing() {
        for (mut pending, queue, store) in setups() {
            pending.window = Duration::ZERO;
            pending
                .send(&queue, vec![notification(U1, ChangeType::Updated)])
                .await
                .unwrap();
            let again = pending
                .send(&queue, vec![notification(U1, ChangeType::Updated)])
                .await
                .unwrap();
            assert_eq!(again.sent, 1, "past the window");

            pending.window = FOLD_WINDOW;
            let key = notification(U2, ChangeType::Updated).fold_key().unwrap();
            let sending = serde_json::to_vec(&Mark {
                phase: Phase::Sending,
                at: Utc::now(),
            })
            .unwrap();
            store.put(PENDING, &key, sending, None).await.unwrap();
            let racing = pending
                .send(&queue, vec![notification(U2, ChangeType::Updated)])
                .await
                .unwrap();
            assert_eq!(racing.sent, 1, "another request still storing its job");

            let damaged = notification(U1, ChangeType::Created);
            let key = damaged.fold_key().unwrap();
            store.put(PENDING, &key, b"{".to_vec(), None).await.unwrap();
            let over = pending.send(&queue, vec![damaged]).await.unwrap();
            assert_eq!(over.sent, 1, "an unreadable mark folds nothing");
        }
    }
}
