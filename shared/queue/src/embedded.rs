//! The durable embedded queue: SQS FIFO semantics on redb tables kept in the state store's file
//! (redb allows one open handle per file).
//!
//! Every operation is one redb write transaction, so it is atomic, durable once it returns, and
//! serialised against every other operation (redb has one writer at a time). `send_batch` calls
//! that arrive while the writer is busy share one transaction and its fsync (group commit, see
//! [`Sends`]): each caller is still answered only once that commit is durable.
//!
//! A send only appends to `queue_inbox`, at the right edge of one B-tree: a commit then writes a
//! few pages, where filing each job in the tables below (its group, the ready heads, the dedup
//! keys, several of them random leaves) wrote tens of pages per commit and cost four times as
//! much fsync'd. Jobs are filed from the inbox, in the order they were sent, by the next
//! operation that needs them: `receive` and `stats`, up to [`FILED_PER_RECEIVE`] per call, so
//! that a burst never makes one transaction long. Tables:
//!
//! - `queue_inbox`: sent jobs not filed yet, in sending order (keys order sends only: they
//!   restart when the inbox is empty). Dedup is applied when they are filed.
//! - `queue_jobs`: seq → job record (JSON). `seq` comes from a persistent counter that is never
//!   reused, so it is the global FIFO order and receipts of deleted jobs can never match new ones.
//! - `queue_groups`: (group, seq) → (): each group's jobs in order; the first is the group's head.
//! - `queue_ready`: seq → (): group heads that can be delivered now.
//! - `queue_waiting`: (visible_at µs, seq) → (): group heads that are in flight or delayed, ordered
//!   by when they become visible again.
//! - `queue_dedup` / `queue_dedup_expiry`: dedup keys sent within the window, and the same keys
//!   ordered by time so that expired ones are purged without a scan.
//! - `queue_dead`: seq → dead letter (JSON).
//! - `queue_unreadable`: seq → a stored job that cannot be read (written by a later version,
//!   or damaged), with the reason: taken out of its group so that it blocks nothing, kept for a
//!   person, counted with the dead letters.
//! - `queue_meta`: the sequence counter.
//!
//! Only group heads are ever in `queue_ready` or `queue_waiting`, so a later job of a group cannot
//! be delivered while an earlier one exists: per-group order and one job in flight per group
//! follow from the layout, not from a check at receive time. It also makes `receive` cost
//! O((delivered + newly expired) · log n), independent of how many jobs wait.

use crate::{DeadLetter, Delivery, Disposition, Job, Queue, QueueError, QueueStats, Receipt};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shadowsync_core::{Clock, SystemClock};
use shadowsync_state::redb::{
    self, Database, ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction,
};
use shadowsync_state::EmbeddedStore;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;

const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("queue_jobs");
const GROUPS: TableDefinition<(&str, u64), ()> = TableDefinition::new("queue_groups");
const READY: TableDefinition<u64, ()> = TableDefinition::new("queue_ready");
const WAITING: TableDefinition<(i64, u64), ()> = TableDefinition::new("queue_waiting");
const DEDUP: TableDefinition<&str, i64> = TableDefinition::new("queue_dedup");
const DEDUP_EXPIRY: TableDefinition<(i64, &str), ()> = TableDefinition::new("queue_dedup_expiry");
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("queue_dead");
const UNREADABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("queue_unreadable");
const META: TableDefinition<&str, u64> = TableDefinition::new("queue_meta");
const INBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("queue_inbox");

const NEXT_SEQ: &str = "next_seq";

/// How long a dedup key suppresses a resend (SQS's deduplication interval).
pub const DEDUP_WINDOW: Duration = Duration::from_secs(5 * 60);

/// How many sent jobs one `receive` files at most: enough to keep up with any burst the webhook
/// takes (workers receive many times a second), small enough that one transaction stays short.
pub const FILED_PER_RECEIVE: usize = 1024;

fn storage(e: impl Into<crate::BoxError>) -> QueueError {
    QueueError::storage(e)
}

// `?` on redb and serde errors inside transactions.
macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for QueueError {
            fn from(e: $t) -> Self {
                storage(e)
            }
        }
    )*};
}
storage_from!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    serde_json::Error
);

/// A job as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    job: Job,
    enqueued_at: DateTime<Utc>,
    /// How many times it has been received.
    attempt: u32,
    /// While the job is in `queue_waiting`: its key's time there (µs since the epoch).
    visible_at: i64,
    /// The handle of the latest delivery's receipt; `None` once handed back with `retry_later`.
    receipt: Option<String>,
}

/// A sent job in `queue_inbox`, not filed yet.
#[derive(Debug, Serialize, Deserialize)]
struct Unfiled {
    job: Job,
    sent_at: DateTime<Utc>,
    /// Filed even if its dedup key was sent within the window: an administrator's redrive.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    redriven: bool,
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn later(now: i64, by: Duration) -> i64 {
    now.saturating_add(i64::try_from(by.as_micros()).unwrap_or(i64::MAX))
}

/// A receipt names the job and the delivery: `seq` is never reused and `attempt` grows with each
/// delivery, so a receipt from an earlier delivery never matches the current one.
fn receipt_for(seq: u64, attempt: u32) -> Receipt {
    Receipt {
        message_id: seq.to_string(),
        handle: attempt.to_string(),
        attempt,
        body: None,
    }
}

/// The queue's tables, open in one write transaction.
struct Tables<'t> {
    jobs: Table<'t, u64, &'static [u8]>,
    groups: Table<'t, (&'static str, u64), ()>,
    ready: Table<'t, u64, ()>,
    waiting: Table<'t, (i64, u64), ()>,
    dedup: Table<'t, &'static str, i64>,
    dedup_expiry: Table<'t, (i64, &'static str), ()>,
    dead: Table<'t, u64, &'static [u8]>,
    unreadable: Table<'t, u64, &'static [u8]>,
    meta: Table<'t, &'static str, u64>,
    inbox: Table<'t, u64, &'static [u8]>,
}

/// A stored job that cannot be read, as kept in `queue_unreadable`.
#[derive(Debug, Serialize, Deserialize)]
struct Unreadable {
    reason: String,
    /// The stored bytes, as text (lossy).
    stored: String,
    dead_at: DateTime<Utc>,
}

impl<'t> Tables<'t> {
    fn open(tx: &'t WriteTransaction) -> Result<Self, QueueError> {
        Ok(Self {
            jobs: tx.open_table(JOBS)?,
            groups: tx.open_table(GROUPS)?,
            ready: tx.open_table(READY)?,
            waiting: tx.open_table(WAITING)?,
            dedup: tx.open_table(DEDUP)?,
            dedup_expiry: tx.open_table(DEDUP_EXPIRY)?,
            dead: tx.open_table(DEAD)?,
            unreadable: tx.open_table(UNREADABLE)?,
            meta: tx.open_table(META)?,
            inbox: tx.open_table(INBOX)?,
        })
    }

    /// The job at `seq`, or `None` if there is none or it cannot be read; then it is moved to
    /// `queue_unreadable` with the reason, and its group's next job is ready.
    fn load_readable(
        &mut self,
        seq: u64,
        now: DateTime<Utc>,
    ) -> Result<Option<Record>, QueueError> {
        let Some(raw) = self.jobs.get(seq)? else {
            return Ok(None);
        };
        let error = match serde_json::from_slice::<Record>(raw.value()) {
            Ok(record) => return Ok(Some(record)),
            Err(e) => e,
        };
        // Copied only now, to be kept: the tables change below.
        let stored = raw.value().to_vec();
        drop(raw);
        let reason = format!("the stored job cannot be read: {error}");
        let group = self
            .groups
            .iter()?
            .find_map(|entry| match entry {
                Ok((k, _)) if k.value().1 == seq => Some(Ok(k.value().0.to_string())),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .transpose()?;
        self.jobs.remove(seq)?;
        self.ready.remove(seq)?;
        if let Some(group) = group {
            self.groups.remove((group.as_str(), seq))?;
            if let Some(next) = self.group_head(&group)? {
                self.ready.insert(next, ())?;
            }
        }
        self.set_aside(seq, &reason, &stored, now)?;
        Ok(None)
    }

    /// Keeps bytes that cannot be read as a job in `queue_unreadable`, with the reason.
    fn set_aside(
        &mut self,
        seq: u64,
        reason: &str,
        stored: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        tracing::error!(seq, %reason, "an unreadable job is set aside; it blocks nothing");
        let kept = Unreadable {
            reason: reason.to_string(),
            stored: String::from_utf8_lossy(stored).into_owned(),
            dead_at: now,
        };
        self.unreadable
            .insert(seq, serde_json::to_vec(&kept)?.as_slice())?;
        Ok(())
    }

    fn load(&self, seq: u64) -> Result<Option<Record>, QueueError> {
        match self.jobs.get(seq)? {
            Some(raw) => Ok(Some(serde_json::from_slice(raw.value())?)),
            None => Ok(None),
        }
    }

    fn save(&mut self, seq: u64, record: &Record) -> Result<(), QueueError> {
        self.jobs
            .insert(seq, serde_json::to_vec(record)?.as_slice())?;
        Ok(())
    }

    /// The job a receipt was issued for, if that delivery is still the job's latest.
    fn current(&self, receipt: &Receipt) -> Result<(u64, Record), QueueError> {
        let unknown = || QueueError::UnknownReceipt(receipt.message_id.clone());
        let seq: u64 = receipt.message_id.parse().map_err(|_| unknown())?;
        let record = self.load(seq)?.ok_or_else(unknown)?;
        if record.receipt.as_deref() != Some(receipt.handle.as_str()) {
            return Err(unknown());
        }
        Ok((seq, record))
    }

    fn next_seq(&mut self) -> Result<u64, QueueError> {
        let seq = self.meta.get(NEXT_SEQ)?.map_or(1, |v| v.value());
        self.meta.insert(NEXT_SEQ, seq + 1)?;
        Ok(seq)
    }

    fn group_head(&self, group: &str) -> Result<Option<u64>, QueueError> {
        let mut range = self.groups.range((group, 0)..=(group, u64::MAX))?;
        Ok(range.next().transpose()?.map(|(k, _)| k.value().1))
    }

    /// Appends a job at the end of its group; it is ready at once if the group was empty.
    fn push(&mut self, job: Job, now: DateTime<Utc>) -> Result<(), QueueError> {
        let seq = self.next_seq()?;
        let group = job.group();
        let record = Record {
            job,
            enqueued_at: now,
            attempt: 0,
            visible_at: micros(now),
            receipt: None,
        };
        self.save(seq, &record)?;
        self.groups.insert((group.as_str(), seq), ())?;
        if self.group_head(&group)? == Some(seq) {
            self.ready.insert(seq, ())?;
        }
        Ok(())
    }

    /// Files up to `max` sent jobs from the inbox, in the order they were sent, except jobs whose
    /// dedup key was sent within the window (by an earlier job of the inbox, or before). A sent
    /// job that cannot be read is set aside in `queue_unreadable`. Returns how many were taken
    /// from the inbox.
    fn file(&mut self, max: usize, now: DateTime<Utc>) -> Result<usize, QueueError> {
        let taken = self
            .inbox
            .extract_if(|_, _| true)?
            .take(max)
            .map(|entry| entry.map(|(_, v)| v.value().to_vec()))
            .collect::<Result<Vec<_>, _>>()?;
        if taken.is_empty() {
            return Ok(0);
        }
        self.purge_dedup(micros(now))?;
        let window = later(0, DEDUP_WINDOW);
        for raw in &taken {
            let sent = match serde_json::from_slice::<Unfiled>(raw) {
                Ok(sent) => sent,
                Err(error) => {
                    let seq = self.next_seq()?;
                    self.set_aside(
                        seq,
                        &format!("the sent job cannot be read: {error}"),
                        raw,
                        now,
                    )?;
                    continue;
                }
            };
            // The window counts from when the jobs were sent, not filed (as SQS's does).
            let key = sent.job.dedup_key();
            let sent_us = micros(sent.sent_at);
            let before = self.dedup.get(key.as_str())?.map(|v| v.value());
            if let Some(before) = before {
                if !sent.redriven && before.saturating_add(window) > sent_us {
                    continue;
                }
                self.dedup_expiry.remove((before, key.as_str()))?;
            }
            self.dedup.insert(key.as_str(), sent_us)?;
            self.dedup_expiry.insert((sent_us, key.as_str()), ())?;
            self.push(sent.job, sent.sent_at)?;
        }
        Ok(taken.len())
    }

    /// Makes a head invisible until `visible_at` (in flight or delayed).
    fn hide(&mut self, seq: u64, record: &mut Record, visible_at: i64) -> Result<(), QueueError> {
        self.ready.remove(seq)?;
        self.waiting.remove((record.visible_at, seq))?;
        record.visible_at = visible_at;
        self.waiting.insert((visible_at, seq), ())?;
        self.save(seq, record)
    }

    /// Deletes a job (always its group's head) and makes the group's next job ready.
    fn remove(&mut self, seq: u64, record: &Record) -> Result<(), QueueError> {
        let group = record.job.group();
        self.jobs.remove(seq)?;
        self.groups.remove((group.as_str(), seq))?;
        self.ready.remove(seq)?;
        self.waiting.remove((record.visible_at, seq))?;
        if let Some(next) = self.group_head(&group)? {
            self.ready.insert(next, ())?;
        }
        Ok(())
    }

    fn bury(
        &mut self,
        seq: u64,
        record: &Record,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        let dead = DeadLetter {
            id: seq.to_string(),
            job: record.job.clone(),
            attempts: record.attempt,
            reason: reason.to_string(),
            dead_at: now,
        };
        self.dead
            .insert(seq, serde_json::to_vec(&dead)?.as_slice())?;
        self.remove(seq, record)
    }

    /// Moves heads whose visibility timeout or retry delay has passed to `queue_ready`.
    fn wake(&mut self, now: i64) -> Result<(), QueueError> {
        let due = self
            .waiting
            .extract_from_if(..=(now, u64::MAX), |_, _| true)?
            .map(|entry| entry.map(|(k, _)| k.value().1))
            .collect::<Result<Vec<_>, _>>()?;
        for seq in due {
            self.ready.insert(seq, ())?;
        }
        Ok(())
    }

    /// Forgets dedup keys older than the window.
    fn purge_dedup(&mut self, now: i64) -> Result<(), QueueError> {
        let cutoff = now.saturating_sub(later(0, DEDUP_WINDOW));
        let expired = self
            .dedup_expiry
            .extract_from_if(..(cutoff, ""), |_, _| true)?
            .map(|entry| entry.map(|(k, _)| k.value().1.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        for key in expired {
            self.dedup.remove(key.as_str())?;
        }
        Ok(())
    }
}

/// One `send_batch` call waiting for the commit that will hold its jobs.
struct Waiting {
    jobs: Vec<Job>,
    answer: oneshot::Sender<Result<(), QueueError>>,
}

#[derive(Default)]
struct SendState {
    waiting: Vec<Waiting>,
    /// A committer runs: it will take whatever waits, so no other is started.
    committing: bool,
}

/// Group commit of `send_batch`: a call adds its batch to `waiting` and, if no committer runs,
/// starts one. The committer takes every batch waiting once it holds the write lock, writes them
/// in one transaction in the order they arrived (so dedup and per-group order are as if they
/// had been sent one after another), commits once, answers each caller, and goes on while more
/// wait. A commit is as durable as before (redb's default, `Durability::Immediate`: fsync'd
/// before `commit` returns); only its cost is shared.
///
/// The committer is a blocking task of its own, not one of the callers, so that a caller whose
/// request is dropped (a client that hangs up) strands nobody.
#[derive(Default)]
struct Sends {
    state: Mutex<SendState>,
    /// Transactions that stored sends.
    commits: AtomicU64,
}

impl Sends {
    fn state(&self) -> std::sync::MutexGuard<'_, SendState> {
        // Never held across anything that can panic: a poisoned lock has consistent contents.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs until nothing waits.
    fn commit_all(&self, db: &Database, clock: &dyn Clock) {
        loop {
            {
                let mut state = self.state();
                if state.waiting.is_empty() {
                    state.committing = false;
                    return;
                }
            }
            // Taken only once the write lock is ours: batches that arrive while another
            // operation (or the previous group) writes join this transaction.
            let tx = db.begin_write();
            let group = std::mem::take(&mut self.state().waiting);
            let (jobs, answers): (Vec<_>, Vec<_>) =
                group.into_iter().map(|w| (w.jobs, w.answer)).unzip();
            let stored = match tx {
                Err(e) => Err(e.into()),
                // A panic is this group's failure, as it was a failed send before; the committer
                // must go on, or every later call would wait for ever.
                Ok(tx) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    write_group(tx, jobs, clock)
                }))
                .unwrap_or_else(|_| Err(storage("the queue's commit panicked"))),
            };
            match stored {
                Ok(()) => {
                    self.commits.fetch_add(1, Ordering::Relaxed);
                    for answer in answers {
                        // A caller that went away needs no answer; its jobs are stored.
                        let _ = answer.send(Ok(()));
                    }
                }
                Err(e) => {
                    let e = Arc::new(e);
                    for answer in answers {
                        let _ = answer.send(Err(shared(&e)));
                    }
                }
            }
        }
    }
}

/// Appends the batches of one group, in order, to the inbox in `tx`, and commits.
fn write_group(
    tx: WriteTransaction,
    batches: Vec<Vec<Job>>,
    clock: &dyn Clock,
) -> Result<(), QueueError> {
    {
        let mut inbox = tx.open_table(INBOX)?;
        let now = clock.now();
        for jobs in batches {
            append(&mut inbox, jobs, now, false)?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Appends jobs to the inbox, after whatever it holds.
fn append(
    inbox: &mut Table<'_, u64, &'static [u8]>,
    jobs: Vec<Job>,
    sent_at: DateTime<Utc>,
    redriven: bool,
) -> Result<(), QueueError> {
    let next = inbox.last()?.map_or(0, |(k, _)| k.value() + 1);
    for (key, job) in (next..).zip(jobs) {
        let sent = Unfiled {
            job,
            sent_at,
            redriven,
        };
        inbox.insert(key, serde_json::to_vec(&sent)?.as_slice())?;
    }
    Ok(())
}

/// One failure told to every caller of a group; the cause is kept as the source.
fn shared(e: &Arc<QueueError>) -> QueueError {
    let message = match &**e {
        QueueError::Storage { message, .. } => message.clone(),
        other => other.to_string(),
    };
    QueueError::Storage {
        message,
        source: Box::new(e.clone()),
    }
}

/// The durable queue of the all-in-one host.
#[derive(Clone)]
pub struct EmbeddedQueue {
    db: Arc<Database>,
    max_attempts: u32,
    clock: Arc<dyn Clock>,
    sends: Arc<Sends>,
}

impl std::fmt::Debug for EmbeddedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedQueue")
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl EmbeddedQueue {
    /// A queue in the store's file; jobs already there (from an earlier run) are kept, and jobs
    /// that were in flight become visible again when their visibility timeout passes.
    /// `max_attempts` counts deliveries (at least 1): a job is dead-lettered when it fails, or its
    /// visibility expires, on that delivery.
    pub fn new(store: &EmbeddedStore, max_attempts: u32) -> Result<Self, QueueError> {
        Self::with_clock(store, max_attempts, Arc::new(SystemClock))
    }

    /// Makes every job in flight visible again at once, and returns how many there were. For a
    /// host that is the queue's only consumer, at start: whatever was in flight belonged to a run
    /// that died, so waiting for its visibility timeout would only delay those users. Jobs held
    /// back by `retry_later` keep their delay.
    pub async fn release_in_flight(&self) -> Result<usize, QueueError> {
        self.write(|t, at| {
            let now = micros(at);
            let invisible = t
                .waiting
                .range((now.saturating_add(1), 0)..)?
                .map(|entry| entry.map(|(k, _)| k.value()))
                .collect::<Result<Vec<_>, _>>()?;
            let mut released = 0;
            for (visible_at, seq) in invisible {
                let Some(mut record) = t.load_readable(seq, at)? else {
                    t.waiting.remove((visible_at, seq))?;
                    continue;
                };
                if record.receipt.is_none() {
                    continue;
                }
                t.waiting.remove((visible_at, seq))?;
                record.visible_at = now;
                record.receipt = None;
                t.save(seq, &record)?;
                t.ready.insert(seq, ())?;
                released += 1;
            }
            Ok(released)
        })
        .await
    }

    pub fn with_clock(
        store: &EmbeddedStore,
        max_attempts: u32,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, QueueError> {
        Self::on(store.database(), max_attempts, clock)
    }

    fn on(db: Arc<Database>, max_attempts: u32, clock: Arc<dyn Clock>) -> Result<Self, QueueError> {
        // Create the tables up front so that read-only transactions can always open them.
        let tx = db.begin_write()?;
        drop(Tables::open(&tx)?);
        tx.commit()?;
        Ok(Self {
            db,
            max_attempts: max_attempts.max(1),
            clock,
            sends: Arc::default(),
        })
    }

    /// How many transactions `send_batch` calls have been stored in so far (by this queue and
    /// its clones): fewer than the calls when group commit joined some.
    pub fn send_commits(&self) -> u64 {
        self.sends.commits.load(Ordering::Relaxed)
    }

    /// Runs `work` in one write transaction off the async runtime; commits only if it succeeds.
    /// The time is read after the write lock is taken, so it never goes backwards between
    /// operations (given a monotonic clock).
    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Tables<'_>, DateTime<Utc>) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let db = self.db.clone();
        let clock = self.clock.clone();
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_write()?;
            let out = {
                let mut tables = Tables::open(&tx)?;
                work(&mut tables, clock.now())?
            };
            tx.commit()?;
            Ok(out)
        })
        .await
        .map_err(storage)?
    }

    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&redb::ReadTransaction, DateTime<Utc>) -> Result<T, QueueError>
            + Send
            + 'static,
    ) -> Result<T, QueueError> {
        let db = self.db.clone();
        let clock = self.clock.clone();
        tokio::task::spawn_blocking(move || work(&db.begin_read()?, clock.now()))
            .await
            .map_err(storage)?
    }
}

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn send_batch(&self, jobs: Vec<Job>) -> Result<(), QueueError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut state = self.sends.state();
            state.waiting.push(Waiting { jobs, answer });
            !std::mem::replace(&mut state.committing, true)
        };
        if start {
            let (db, clock, sends) = (self.db.clone(), self.clock.clone(), self.sends.clone());
            tokio::task::spawn_blocking(move || sends.commit_all(&db, clock.as_ref()));
        }
        answered
            .await
            .unwrap_or_else(|_| Err(storage("the queue's committer stopped")))
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let max_attempts = self.max_attempts;
        self.write(move |t, now| {
            let now_us = micros(now);
            t.file(FILED_PER_RECEIVE, now)?;
            t.wake(now_us)?;
            let mut out = Vec::new();
            // Oldest ready head first; a delivered head moves to `queue_waiting`, so the loop
            // never sees it twice, and its group's later jobs are not heads.
            while out.len() < max {
                let Some(seq) = t.ready.pop_first()?.map(|(k, _)| k.value()) else {
                    break;
                };
                // An index entry without a job cannot be delivered; an unreadable job is set
                // aside.
                let Some(mut record) = t.load_readable(seq, now)? else {
                    continue;
                };
                if record.attempt >= max_attempts {
                    // Received max_attempts times and never acknowledged nor handed back: the
                    // consumer probably dies on it, so it must not block its group forever.
                    let reason = format!(
                        "received {} times without being acknowledged (visibility timeout expired)",
                        record.attempt
                    );
                    t.bury(seq, &record, &reason, now)?;
                    continue;
                }
                record.attempt += 1;
                let receipt = receipt_for(seq, record.attempt);
                record.receipt = Some(receipt.handle.clone());
                t.hide(seq, &mut record, later(now_us, visibility))?;
                out.push(Delivery {
                    receipt,
                    job: record.job,
                    attempt: record.attempt,
                    enqueued_at: record.enqueued_at,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn ack(&self, receipt: &Receipt) -> Result<(), QueueError> {
        let receipt = receipt.clone();
        self.write(move |t, _| {
            let (seq, record) = t.current(&receipt)?;
            t.remove(seq, &record)
        })
        .await
    }

    async fn retry_later(
        &self,
        receipt: &Receipt,
        delay: Duration,
        reason: &str,
    ) -> Result<Disposition, QueueError> {
        let (receipt, reason, max_attempts) =
            (receipt.clone(), reason.to_string(), self.max_attempts);
        self.write(move |t, now| {
            let (seq, mut record) = t.current(&receipt)?;
            if record.attempt >= max_attempts {
                t.bury(seq, &record, &reason, now)?;
                return Ok(Disposition::DeadLettered);
            }
            // Dropping the receipt: the failed delivery is over, the next one gets a new one.
            record.receipt = None;
            t.hide(seq, &mut record, later(micros(now), delay))?;
            Ok(Disposition::Retrying {
                attempt: record.attempt,
            })
        })
        .await
    }

    async fn dead_letter(&self, receipt: &Receipt, reason: &str) -> Result<(), QueueError> {
        let (receipt, reason) = (receipt.clone(), reason.to_string());
        self.write(move |t, now| {
            let (seq, record) = t.current(&receipt)?;
            t.bury(seq, &record, &reason, now)
        })
        .await
    }

    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> Result<(), QueueError> {
        let receipt = receipt.clone();
        self.write(move |t, now| {
            let (seq, mut record) = t.current(&receipt)?;
            t.hide(seq, &mut record, later(micros(now), visibility))
        })
        .await
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        // Sent jobs are filed first (a resent one is no job), as many as a receive files: the
        // count is exact unless a burst left more, whose resent ones are then counted too, until
        // filed. A status never holds the writer long, and takes it (a commit) only when there
        // is something to file.
        let unfiled = self.read(|tx, _| Ok(tx.open_table(INBOX)?.len()?)).await?;
        if unfiled > 0 {
            self.write(|t, now| t.file(FILED_PER_RECEIVE, now)).await?;
        }
        self.read(|tx, now| {
            let jobs = tx.open_table(JOBS)?;
            let waiting = tx.open_table(WAITING)?;
            // In flight: heads still invisible that hold a receipt (delayed ones hold none).
            // Costs one lookup per invisible head, not per job.
            let mut in_flight = 0;
            for entry in waiting.range((micros(now).saturating_add(1), 0)..)? {
                let seq = entry?.0.value().1;
                if let Some(raw) = jobs.get(seq)? {
                    // One that cannot be read is set aside at its next receive.
                    let record = serde_json::from_slice::<Record>(raw.value()).ok();
                    in_flight += u64::from(record.is_some_and(|r| r.receipt.is_some()));
                }
            }
            Ok(QueueStats {
                depth: jobs.len()? + tx.open_table(INBOX)?.len()?,
                in_flight,
                dead_letters: tx.open_table(DEAD)?.len()? + tx.open_table(UNREADABLE)?.len()?,
            })
        })
        .await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        self.read(|tx, _| {
            tx.open_table(DEAD)?
                .iter()?
                .map(|entry| Ok(serde_json::from_slice(entry?.1.value())?))
                .collect()
        })
        .await
    }

    async fn redrive(&self, id: &str) -> Result<(), QueueError> {
        let id = id.to_string();
        self.write(move |t, now| {
            let unknown = || QueueError::UnknownDeadLetter(id.clone());
            let seq: u64 = id.parse().map_err(|_| unknown())?;
            let raw = t.dead.remove(seq)?.ok_or_else(unknown)?;
            let dead: DeadLetter = serde_json::from_slice(raw.value())?;
            drop(raw);
            // A fresh job at the end of its group, after every job sent before; not subject to
            // dedup, since the administrator asked for it explicitly.
            append(&mut t.inbox, vec![dead.job], now, true)
        })
        .await
    }

    async fn drop_dead_letter(&self, id: &str) -> Result<(), QueueError> {
        let id = id.to_string();
        self.write(move |t, _| {
            let unknown = || QueueError::UnknownDeadLetter(id.clone());
            let seq: u64 = id.parse().map_err(|_| unknown())?;
            t.dead.remove(seq)?.ok_or_else(unknown)?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JobSource;
    use shadowsync_core::ObjectId;
    use shadowsync_state::redb::backends::InMemoryBackend;
    use shadowsync_state::redb::StorageBackend;
    use std::collections::HashMap;
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;

    fn job(user: &str, n: i64) -> Job {
        Job::Converge {
            user_id: ObjectId::from_label(user),
            change_type: None,
            subscription_id: None,
            received_at: DateTime::from_timestamp(1_700_000_000 + n, 0).unwrap(),
            source: JobSource::Reconciler,
        }
    }

    /// Waits until `n` sends wait for a commit (the write lock is held elsewhere).
    async fn waiting(queue: &EmbeddedQueue, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while queue.sends.state().waiting.len() < n {
            assert!(Instant::now() < deadline, "{n} sends never waited together");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Starts `send_batch(jobs)` once each earlier one waits, while the write lock is held, so
    /// that all of them land in the next commit in this order.
    async fn send_together(
        queue: &EmbeddedQueue,
        batches: Vec<Vec<Job>>,
    ) -> Vec<Result<(), QueueError>> {
        let hold = queue.db.begin_write().unwrap();
        let mut calls = Vec::new();
        for (i, jobs) in batches.into_iter().enumerate() {
            let q = queue.clone();
            calls.push(tokio::spawn(async move { q.send_batch(jobs).await }));
            waiting(queue, i + 1).await;
        }
        // Aborted: the committer's transaction comes next.
        drop(hold);
        let mut results = Vec::new();
        for call in calls {
            results.push(call.await.unwrap());
        }
        results
    }

    /// Receives and acknowledges every job; returns each group's jobs in delivery order.
    async fn drain(queue: &EmbeddedQueue) -> HashMap<String, Vec<Job>> {
        let mut groups: HashMap<String, Vec<Job>> = HashMap::new();
        loop {
            let got = queue.receive(100, Duration::from_secs(60)).await.unwrap();
            if got.is_empty() {
                return groups;
            }
            for d in got {
                queue.ack(&d.receipt).await.unwrap();
                groups.entry(d.job.group()).or_default().push(d.job);
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_sends_share_commits_each_stored_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("s.redb")).unwrap();
        let queue = EmbeddedQueue::new(&store, 3).unwrap();
        const SENDERS: usize = 64;
        const EACH: i64 = 3;
        // Each sender owns a group and sends one job at a time, waiting for each answer: its
        // group's order is the order it sent them.
        let senders: Vec<_> = (0..SENDERS)
            .map(|k| {
                let q = queue.clone();
                tokio::spawn(async move {
                    for n in 0..EACH {
                        q.send_batch(vec![job(&format!("u{k}"), n)]).await.unwrap();
                    }
                })
            })
            .collect();
        for s in senders {
            s.await.unwrap();
        }
        let calls = SENDERS as u64 * EACH as u64;
        let commits = queue.send_commits();
        assert!(
            commits < SENDERS as u64,
            "{commits} commits for {calls} concurrent sends of {SENDERS} senders"
        );
        assert_eq!(queue.stats().await.unwrap().depth, calls);
        let groups = drain(&queue).await;
        assert_eq!(groups.len(), SENDERS);
        for k in 0..SENDERS {
            let user = format!("u{k}");
            let want: Vec<Job> = (0..EACH).map(|n| job(&user, n)).collect();
            assert_eq!(groups[&job(&user, 0).group()], want, "group {user}");
        }
    }

    #[tokio::test]
    async fn one_commit_for_sends_that_wait_together_deduplicated_as_if_sent_in_turn() {
        let store = EmbeddedStore::in_memory().unwrap();
        let queue = EmbeddedQueue::new(&store, 3).unwrap();
        let (a1, a2, b, c) = (job("a", 1), job("a", 2), job("b", 1), job("c", 1));
        let results = send_together(
            &queue,
            vec![
                vec![a1.clone(), b.clone()],
                // b again, from another caller: stored once, as if sent after the first.
                vec![b.clone(), a2.clone()],
                vec![c.clone(), c.clone(), a1.clone()],
            ],
        )
        .await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(queue.send_commits(), 1, "three waiting sends, one commit");
        assert_eq!(queue.stats().await.unwrap().depth, 4);
        let groups = drain(&queue).await;
        assert_eq!(groups[&a1.group()], vec![a1.clone(), a2], "callers' order");
        assert_eq!(groups[&b.group()], vec![b]);
        assert_eq!(groups[&c.group()], vec![c]);

        // The keys stay within the window after the group, as after any send.
        queue.send_batch(vec![a1]).await.unwrap();
        assert_eq!(queue.stats().await.unwrap().depth, 0);
        assert_eq!(queue.send_commits(), 2);
    }

    /// Memory that fails every write while `fail` is set (a disk that went away).
    #[derive(Debug)]
    struct Flaky {
        memory: Arc<InMemoryBackend>,
        fail: Arc<AtomicBool>,
    }

    impl StorageBackend for Flaky {
        fn len(&self) -> Result<u64, std::io::Error> {
            self.memory.len()
        }
        fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, std::io::Error> {
            self.memory.read(offset, len)
        }
        fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
            self.memory.set_len(len)
        }
        fn sync_data(&self, eventual: bool) -> Result<(), std::io::Error> {
            self.memory.sync_data(eventual)
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("injected write failure"));
            }
            self.memory.write(offset, data)
        }
    }

    fn flaky_queue(memory: &Arc<InMemoryBackend>, fail: &Arc<AtomicBool>) -> EmbeddedQueue {
        let backend = Flaky {
            memory: memory.clone(),
            fail: fail.clone(),
        };
        let db = Database::builder().create_with_backend(backend).unwrap();
        EmbeddedQueue::on(Arc::new(db), 3, Arc::new(SystemClock)).unwrap()
    }

    #[tokio::test]
    async fn a_failed_commit_fails_every_caller_of_its_group_and_stores_none() {
        let memory = Arc::new(InMemoryBackend::new());
        let fail = Arc::new(AtomicBool::new(false));
        let queue = flaky_queue(&memory, &fail);
        let before = job("z", 0);
        queue.send_batch(vec![before.clone()]).await.unwrap();

        let hold = queue.db.begin_write().unwrap();
        let calls: Vec<_> = (0..5)
            .map(|k| {
                let q = queue.clone();
                tokio::spawn(async move { q.send_batch(vec![job(&format!("f{k}"), 1)]).await })
            })
            .collect();
        waiting(&queue, 5).await;
        fail.store(true, Ordering::SeqCst);
        drop(hold);
        for call in calls {
            let e = call
                .await
                .unwrap()
                .expect_err("a caller of the failed commit");
            assert!(e.is_retryable(), "{e}");
            assert!(
                e.to_string().contains("injected"),
                "the commit's own failure: {e}"
            );
        }
        assert_eq!(queue.send_commits(), 1, "only the send before the failure");

        // redb refuses a database whose I/O failed: open what the memory holds afresh.
        let db = Arc::downgrade(&queue.db);
        drop(queue);
        let deadline = Instant::now() + Duration::from_secs(10);
        while db.strong_count() > 0 {
            assert!(Instant::now() < deadline, "the committer kept the database");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        fail.store(false, Ordering::SeqCst);
        let reopened = flaky_queue(&memory, &fail);
        let stored: Vec<Job> = drain(&reopened).await.into_values().flatten().collect();
        assert_eq!(stored, vec![before], "none of the failed group");
    }
}
