//! The workers' loop on the real embedded queue, with a handler that records what it is given
//! and fails on demand.

use async_trait::async_trait;
use shadowsync_app::worker::run;
use shadowsync_app::{JobError, JobHandler, WorkerConfig};
use shadowsync_core::{Backoff, ObjectId};
use shadowsync_queue::{EmbeddedQueue, Job, JobSource, Queue};
use shadowsync_state::EmbeddedStore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The users of these tests, by label (jobs carry object ids).
const USERS: [&str; 7] = ["a", "b", "c", "flaky", "broken", "stubborn", "slow"];

fn label(id: &ObjectId) -> String {
    USERS
        .iter()
        .find(|u| ObjectId::from_label(u) == *id)
        .map_or_else(|| id.to_string(), |u| u.to_string())
}

fn job(user: &str, n: u32) -> Job {
    Job::Converge {
        user_id: ObjectId::from_label(user),
        change_type: None,
        subscription_id: Some(format!("{n}")),
        received_at: chrono::Utc::now(),
        source: JobSource::Admin,
    }
}

/// Records `(user, n)` in the order jobs are handled; fails the first `fail[user]` attempts
/// (retryable) or always (`permanent`).
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(String, String)>>,
    running: Mutex<HashMap<String, u32>>,
    max_parallel_per_user: Mutex<u32>,
    fail: Mutex<HashMap<String, u32>>,
    permanent: Vec<String>,
    delay: Duration,
    /// Until then every job fails for want of a dependency.
    down_until: Mutex<Option<std::time::Instant>>,
    /// Jobs handed over while the dependency was down.
    tried_while_down: Mutex<u32>,
}

#[async_trait]
impl JobHandler for Recorder {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        let Job::Converge {
            user_id,
            subscription_id,
            ..
        } = job
        else {
            unreachable!()
        };
        let user_id = &label(user_id);
        {
            let mut running = self.running.lock().unwrap();
            let n = running.entry(user_id.clone()).or_default();
            *n += 1;
            let mut max = self.max_parallel_per_user.lock().unwrap();
            *max = (*max).max(*n);
        }
        tokio::time::sleep(self.delay).await;
        *self.running.lock().unwrap().get_mut(user_id).unwrap() -= 1;
        if self
            .down_until
            .lock()
            .unwrap()
            .is_some_and(|t| std::time::Instant::now() < t)
        {
            *self.tried_while_down.lock().unwrap() += 1;
            return Err(JobError::unavailable("directory: server down"));
        }
        if self.permanent.contains(user_id) {
            return Err(JobError {
                retryable: false,
                ..JobError::retryable("cannot ever work")
            });
        }
        if let Some(left) = self
            .fail
            .lock()
            .unwrap()
            .get_mut(user_id)
            .filter(|n| **n > 0)
        {
            *left -= 1;
            return Err(JobError::retryable("not yet"));
        }
        self.seen
            .lock()
            .unwrap()
            .push((user_id.clone(), subscription_id.clone().unwrap()));
        Ok(())
    }
}

fn config() -> WorkerConfig {
    WorkerConfig {
        workers: 4,
        visibility: Duration::from_secs(5),
        poll_interval: Duration::from_millis(10),
        retry: Backoff::new(Duration::from_millis(50), Duration::from_millis(200)),
        retry_for: Duration::from_secs(600),
        outage: Backoff::new(Duration::from_millis(50), Duration::from_millis(200)),
    }
}

async fn queue(dir: &tempfile::TempDir, max_attempts: u32) -> Arc<EmbeddedQueue> {
    let store = EmbeddedStore::open(dir.path().join("q.redb")).unwrap();
    Arc::new(EmbeddedQueue::new(&store, max_attempts).unwrap())
}

/// Runs the workers on `q` until it is empty, then stops them.
async fn run_until_empty(q: &Arc<EmbeddedQueue>, handler: Arc<Recorder>, config: WorkerConfig) {
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(q.clone(), handler, config, stop.clone()));
    until_empty(q).await;
    stop.cancel();
    task.await.unwrap();
}

async fn until_empty(q: &EmbeddedQueue) {
    for _ in 0..400 {
        if q.stats().await.unwrap().depth == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("queue never drained: {:?}", q.stats().await.unwrap());
}

#[tokio::test]
async fn users_run_concurrently_each_in_order_and_failures_are_retried_or_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir, 5).await;
    let mut jobs = Vec::new();
    for n in 0..5 {
        for user in ["a", "b", "c", "flaky", "broken"] {
            jobs.push(job(user, n));
        }
    }
    q.send_batch(jobs).await.unwrap();
    let handler = Arc::new(Recorder {
        delay: Duration::from_millis(20),
        fail: Mutex::new(HashMap::from([("flaky".to_string(), 2)])),
        permanent: vec!["broken".into()],
        ..Default::default()
    });
    run_until_empty(&q, handler.clone(), config()).await;

    let seen = handler.seen.lock().unwrap().clone();
    for user in ["a", "b", "c", "flaky"] {
        let order: Vec<_> = seen
            .iter()
            .filter(|(u, _)| u == user)
            .map(|(_, n)| n.as_str())
            .collect();
        assert_eq!(
            order,
            ["0", "1", "2", "3", "4"],
            "{user}'s jobs in order, each once"
        );
    }
    assert_eq!(
        *handler.max_parallel_per_user.lock().unwrap(),
        1,
        "one job per user at a time"
    );
    let dead = q.dead_letters().await.unwrap();
    assert_eq!(
        dead.len(),
        5,
        "every job of the broken user is dead-lettered"
    );
    assert!(dead
        .iter()
        .all(|d| d.reason == "cannot ever work" && d.attempts == 1));
}

#[tokio::test]
async fn a_job_failing_every_time_is_dead_lettered_after_max_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir, 3).await;
    q.send_batch(vec![job("stubborn", 0)]).await.unwrap();
    let handler = Arc::new(Recorder {
        fail: Mutex::new(HashMap::from([("stubborn".to_string(), u32::MAX)])),
        ..Default::default()
    });
    run_until_empty(&q, handler, config()).await;
    let dead = q.dead_letters().await.unwrap();
    assert_eq!(
        (dead.len(), dead[0].attempts, dead[0].reason.as_str()),
        (1, 3, "not yet")
    );
}

#[tokio::test]
async fn shutdown_finishes_the_job_in_hand() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir, 3).await;
    q.send_batch(vec![job("slow", 0)]).await.unwrap();
    let handler = Arc::new(Recorder {
        delay: Duration::from_millis(500),
        ..Default::default()
    });
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(q.clone(), handler.clone(), config(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(150)).await; // the job is in hand
    stop.cancel();
    task.await.unwrap();
    assert_eq!(
        handler.seen.lock().unwrap().len(),
        1,
        "finished, not abandoned"
    );
    assert_eq!(q.stats().await.unwrap().depth, 0, "and acknowledged");
}

#[test]
fn backoff_grows_is_capped_and_never_comes_too_soon() {
    let c = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
    for attempt in 1..12 {
        let exp = (2u64 << (attempt - 1)).min(60);
        let d = c.delay(attempt);
        assert!(
            d >= Duration::from_secs(exp) / 2 && d <= Duration::from_secs(exp),
            "attempt {attempt}: {d:?}"
        );
    }
}

#[tokio::test]
async fn an_outage_loses_nothing_and_the_workers_wait_it_out_together() {
    let dir = tempfile::tempdir().unwrap();
    // A handful of attempts, as before this was fixed: the outage must not exhaust them.
    let q = queue(&dir, 3).await;
    let users: Vec<String> = (0..20).map(|n| format!("user{n}")).collect();
    q.send_batch(users.iter().map(|u| job(u, 0)).collect())
        .await
        .unwrap();
    let down = std::time::Instant::now() + Duration::from_millis(1500);
    let handler = Arc::new(Recorder {
        down_until: Mutex::new(Some(down)),
        ..Default::default()
    });
    run_until_empty(&q, handler.clone(), config()).await;

    assert!(q.dead_letters().await.unwrap().is_empty(), "nothing lost");
    let mut seen: Vec<String> = handler
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(u, _)| u.clone())
        .collect();
    seen.sort();
    let mut expected: Vec<String> = users
        .iter()
        .map(|u| ObjectId::from_label(u).to_string())
        .collect();
    expected.sort();
    assert_eq!(
        seen, expected,
        "every job applied once the dependency is back"
    );
    let tried = *handler.tried_while_down.lock().unwrap();
    // Alone, 4 workers would try every job every backoff (60 tries and 20 dead letters);
    // together they probe one job per pause.
    assert!(tried <= 30, "{tried} jobs tried during the outage");
}

#[tokio::test]
async fn dead_letters_of_an_outage_go_back_on_the_queue_once_it_is_over() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir, 1).await;
    q.send_batch(vec![job("a", 0), job("broken", 0)])
        .await
        .unwrap();
    let handler = Arc::new(Recorder {
        down_until: Mutex::new(Some(std::time::Instant::now() + Duration::from_secs(60))),
        permanent: vec!["broken".into()],
        ..Default::default()
    });
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(q.clone(), handler.clone(), config(), stop.clone()));
    until_empty(&q).await;
    let dead = q.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 2, "one attempt each: {dead:?}");
    assert!(dead
        .iter()
        .all(|d| d.reason.starts_with(shadowsync_app::worker::UNAVAILABLE)));

    // The dependency is back; a new job succeeds and ends the outage.
    *handler.down_until.lock().unwrap() = None;
    q.send_batch(vec![job("c", 0)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    until_empty(&q).await;
    stop.cancel();
    task.await.unwrap();
    let dead = q.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0].reason, "cannot ever work",
        "only the real failure stays"
    );
    let seen = handler.seen.lock().unwrap().clone();
    assert!(seen.iter().any(|(u, _)| u == "a"), "{seen:?}");
}

#[tokio::test]
async fn retries_are_bounded_by_the_jobs_age_not_a_handful_of_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir, 1000).await;
    q.send_batch(vec![job("stubborn", 0)]).await.unwrap();
    let handler = Arc::new(Recorder {
        fail: Mutex::new(HashMap::from([("stubborn".to_string(), u32::MAX)])),
        ..Default::default()
    });
    let config = WorkerConfig {
        retry_for: Duration::from_millis(1200),
        ..config()
    };
    run_until_empty(&q, handler, config).await;
    let dead = q.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].attempts > 3,
        "more than a handful: {}",
        dead[0].attempts
    );
    assert_eq!(dead[0].reason, "retried for 1s 200ms: not yet");
}
