use chrono::{TimeZone, Utc};
use shadowsync_core::ManualClock;
use shadowsync_queue::{
    conformance, Delivery, EmbeddedQueue, Job, JobSource, Queue, QueueError, QueueStats,
    DEDUP_WINDOW,
};
use shadowsync_state::EmbeddedStore;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn job(user: &str, n: i64) -> Job {
    Job::Converge {
        user_id: shadowsync_core::ObjectId::from_label(user),
        change_type: None,
        subscription_id: None,
        received_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap() + chrono::Duration::seconds(n),
        source: JobSource::Reconciler,
    }
}

fn open(path: &Path, max_attempts: u32) -> (EmbeddedStore, EmbeddedQueue) {
    let store = EmbeddedStore::open(path).unwrap();
    let queue = EmbeddedQueue::new(&store, max_attempts).unwrap();
    (store, queue)
}

fn manual(path: &Path, max_attempts: u32) -> (EmbeddedStore, EmbeddedQueue, Arc<ManualClock>) {
    let store = EmbeddedStore::open(path).unwrap();
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let queue = EmbeddedQueue::with_clock(&store, max_attempts, clock.clone()).unwrap();
    (store, queue, clock)
}

const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn embedded_queue_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, queue) = open(&dir.path().join("s.redb"), 3);
    conformance::check(
        &queue,
        conformance::Params {
            max_attempts: 3,
            tick: Duration::from_millis(300),
        },
    )
    .await;
}

#[tokio::test]
async fn shares_the_file_with_the_state_store() {
    use shadowsync_state::KeyValueStore;
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = open(&dir.path().join("s.redb"), 3);
    store.put("t", "k", b"v".to_vec(), None).await.unwrap();
    queue.send_batch(vec![job("a", 1)]).await.unwrap();
    assert_eq!(store.get("t", "k").await.unwrap().unwrap().value, b"v");
    assert_eq!(queue.stats().await.unwrap().depth, 1);
}

#[tokio::test]
async fn survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/s.redb");
    let received = {
        let (_store, queue) = open(&path, 3);
        queue
            .send_batch(vec![job("a", 1), job("a", 2), job("b", 3), job("c", 4)])
            .await
            .unwrap();
        let got = queue.receive(1, Duration::from_secs(1)).await.unwrap();
        assert_eq!(got[0].job, job("a", 1));
        let c = queue.receive(3, LONG).await.unwrap();
        let c = c.iter().find(|d| d.job == job("c", 4)).unwrap();
        queue.dead_letter(&c.receipt, "poison").await.unwrap();
        got[0].clone()
        // queue and store dropped here: the process "dies" without acknowledging a1 or b3
    };

    let (_store, queue) = open(&path, 3);
    assert_eq!(
        queue.stats().await.unwrap(),
        QueueStats {
            depth: 3,
            in_flight: 2,
            dead_letters: 1,
        },
        "jobs, deliveries in flight and dead letters survive"
    );
    assert!(
        queue.receive(10, LONG).await.unwrap().is_empty(),
        "deliveries made before the restart still hold their groups"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = queue.receive(10, LONG).await.unwrap();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(
        again[0].job,
        job("a", 1),
        "a1 comes back after its visibility"
    );
    assert_eq!(again[0].attempt, 2, "attempts survive");
    assert!(matches!(
        queue.ack(&received.receipt).await,
        Err(QueueError::UnknownReceipt(_))
    ));
    queue.ack(&again[0].receipt).await.unwrap();
    let next = queue.receive(10, LONG).await.unwrap();
    assert_eq!(next[0].job, job("a", 2), "order within the group survives");
    assert_eq!(queue.dead_letters().await.unwrap()[0].reason, "poison");

    // Dedup keys and the sequence survive too.
    queue.send_batch(vec![job("a", 1)]).await.unwrap();
    assert_eq!(
        queue.stats().await.unwrap().depth,
        2,
        "a1 was acked; its resend is a duplicate"
    );
}

#[tokio::test]
async fn dedup_window_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, queue, clock) = manual(&dir.path().join("s.redb"), 3);
    queue.send_batch(vec![job("a", 1)]).await.unwrap();
    clock.advance(chrono::Duration::from_std(DEDUP_WINDOW).unwrap() - chrono::Duration::seconds(1));
    queue.send_batch(vec![job("a", 1)]).await.unwrap();
    assert_eq!(queue.stats().await.unwrap().depth, 1, "within the window");
    clock.advance(chrono::Duration::seconds(2));
    queue.send_batch(vec![job("a", 1)]).await.unwrap();
    assert_eq!(queue.stats().await.unwrap().depth, 2, "after the window");
    // The window restarts from the accepted resend.
    clock.advance(chrono::Duration::seconds(60));
    queue.send_batch(vec![job("a", 1)]).await.unwrap();
    assert_eq!(queue.stats().await.unwrap().depth, 2);
}

#[tokio::test]
async fn a_job_that_keeps_timing_out_is_dead_lettered() {
    // A consumer that dies on a job never calls retry_later: the visibility expiries count.
    let dir = tempfile::tempdir().unwrap();
    let (_store, queue, clock) = manual(&dir.path().join("s.redb"), 2);
    queue
        .send_batch(vec![job("a", 1), job("a", 2)])
        .await
        .unwrap();
    for attempt in 1..=2 {
        let got = queue.receive(10, Duration::from_secs(10)).await.unwrap();
        assert_eq!((got[0].job.clone(), got[0].attempt), (job("a", 1), attempt));
        clock.advance(chrono::Duration::seconds(11));
    }
    let got = queue.receive(10, LONG).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].job, job("a", 2), "the group moves on");
    let dead = queue.dead_letters().await.unwrap();
    assert_eq!((dead[0].job.clone(), dead[0].attempts), (job("a", 1), 2));
    assert!(
        dead[0].reason.contains("without being acknowledged"),
        "{}",
        dead[0].reason
    );
}

#[tokio::test]
async fn a_late_ack_is_accepted_while_nobody_else_has_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, queue, clock) = manual(&dir.path().join("s.redb"), 3);
    queue.send_batch(vec![job("a", 1)]).await.unwrap();
    let got = queue.receive(1, Duration::from_secs(10)).await.unwrap();
    clock.advance(chrono::Duration::seconds(11));
    assert_eq!(
        queue.stats().await.unwrap().in_flight,
        0,
        "expired is not in flight"
    );
    queue.ack(&got[0].receipt).await.unwrap();
    assert!(
        queue.receive(1, LONG).await.unwrap().is_empty(),
        "acked, not redelivered"
    );
}

#[tokio::test]
async fn retry_delay_and_extend_follow_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, queue, clock) = manual(&dir.path().join("s.redb"), 5);
    queue
        .send_batch(vec![job("a", 1), job("b", 2)])
        .await
        .unwrap();
    let got = queue.receive(10, Duration::from_secs(10)).await.unwrap();
    let (a, b) = (&got[0], &got[1]);
    queue
        .retry_later(&a.receipt, Duration::from_secs(30), "later")
        .await
        .unwrap();
    queue
        .extend(&b.receipt, Duration::from_secs(100))
        .await
        .unwrap();
    clock.advance(chrono::Duration::seconds(29));
    assert!(queue.receive(10, LONG).await.unwrap().is_empty());
    clock.advance(chrono::Duration::seconds(2));
    let got = queue.receive(10, LONG).await.unwrap();
    assert_eq!(got.len(), 1, "a is back after 30 s, b is extended to 100 s");
    assert_eq!(got[0].job, job("a", 1));
    queue.ack(&got[0].receipt).await.unwrap();
    clock.advance(chrono::Duration::seconds(68));
    assert!(queue.receive(10, LONG).await.unwrap().is_empty());
    clock.advance(chrono::Duration::seconds(2));
    let got = queue.receive(10, LONG).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].job.clone(), got[0].attempt), (job("b", 2), 2));
}

/// Many consumers at once: never two jobs of one group in flight, never one job twice, every job
/// processed once, each group in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_consumers_keep_groups_exclusive_and_ordered() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, queue) = open(&dir.path().join("s.redb"), 3);
    let queue = Arc::new(queue);
    const GROUPS: i64 = 20;
    const PER_GROUP: i64 = 10;
    // Each group's jobs sent back to back, so that a queue ignoring groups would hand out a
    // group's jobs together.
    let mut jobs = Vec::new();
    for g in 0..GROUPS {
        for n in 0..PER_GROUP {
            jobs.push(job(&format!("u{g}"), n * GROUPS + g));
        }
    }
    for chunk in jobs.chunks(25) {
        queue.send_batch(chunk.to_vec()).await.unwrap();
    }

    #[derive(Default)]
    struct Seen {
        groups_in_flight: HashSet<String>,
        processed: HashMap<String, Vec<Job>>,
        count: usize,
        violations: Vec<String>,
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let total = jobs.len();
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let (queue, seen) = (queue.clone(), seen.clone());
            tokio::spawn(async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                while seen.lock().unwrap().count < total && std::time::Instant::now() < deadline {
                    let got: Vec<Delivery> = queue.receive(3, LONG).await.unwrap();
                    if got.is_empty() {
                        tokio::task::yield_now().await;
                        continue;
                    }
                    for d in &got {
                        let mut s = seen.lock().unwrap();
                        if !s.groups_in_flight.insert(d.job.group()) {
                            s.violations
                                .push(format!("two of {} at once", d.job.group()));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    for d in got {
                        {
                            // Released before the ack: once acked, another worker may take
                            // the group's next job at once.
                            let mut s = seen.lock().unwrap();
                            s.groups_in_flight.remove(&d.job.group());
                            s.processed
                                .entry(d.job.group())
                                .or_default()
                                .push(d.job.clone());
                            s.count += 1;
                        }
                        queue.ack(&d.receipt).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.violations.is_empty(), "{:?}", seen.violations);
    assert_eq!(seen.count, total, "every job processed exactly once");
    for g in 0..GROUPS {
        let expected: Vec<Job> = (0..PER_GROUP)
            .map(|n| job(&format!("u{g}"), n * GROUPS + g))
            .collect();
        assert_eq!(
            seen.processed[&expected[0].group()],
            expected,
            "group u{g} in order"
        );
    }
    assert_eq!(queue.stats().await.unwrap(), QueueStats::default());
}

#[tokio::test]
async fn release_in_flight_hands_out_jobs_of_a_dead_consumer_at_once() {
    use shadowsync_queue::{Job, JobSource, Queue};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.redb");
    let job = |user: &str| Job::Converge {
        user_id: shadowsync_core::ObjectId::from_label(user),
        change_type: None,
        subscription_id: None,
        received_at: chrono::Utc::now(),
        source: JobSource::Admin,
    };
    {
        let store = shadowsync_state::EmbeddedStore::open(&path).unwrap();
        let q = shadowsync_queue::EmbeddedQueue::new(&store, 5).unwrap();
        q.send_batch(vec![job("a"), job("b")]).await.unwrap();
        let held = q
            .receive(1, std::time::Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(held.len(), 1);
        let delayed = q
            .receive(1, std::time::Duration::from_secs(3600))
            .await
            .unwrap();
        q.retry_later(
            &delayed[0].receipt,
            std::time::Duration::from_secs(3600),
            "later",
        )
        .await
        .unwrap();
    } // the consumer dies holding one job, the other is waiting out its retry delay
    let store = shadowsync_state::EmbeddedStore::open(&path).unwrap();
    let q = shadowsync_queue::EmbeddedQueue::new(&store, 5).unwrap();
    assert!(q
        .receive(10, std::time::Duration::from_secs(60))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(q.release_in_flight().await.unwrap(), 1);
    let again = q
        .receive(10, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        again.len(),
        1,
        "only the job in flight is released; the retry keeps its delay"
    );
    assert_eq!(again[0].attempt, 2);
}

#[tokio::test]
async fn an_unreadable_job_is_set_aside_and_blocks_nothing() {
    use shadowsync_state::redb::{ReadableTable, TableDefinition};
    let dir = tempfile::tempdir().unwrap();
    let (store, q) = open(&dir.path().join("q.redb"), 5);
    q.send_batch(vec![job("a", 0), job("a", 1), job("b", 0)])
        .await
        .unwrap();
    // Filed from the inbox (what the next receive would do), then the head of a's group
    // becomes unreadable (a later version's kind of job, or damage).
    assert_eq!(q.stats().await.unwrap().depth, 3);
    let jobs: TableDefinition<u64, &[u8]> = TableDefinition::new("queue_jobs");
    let db = store.database();
    let tx = db.begin_write().unwrap();
    {
        let mut table = tx.open_table(jobs).unwrap();
        let first = table.first().unwrap().unwrap().0.value();
        table
            .insert(first, br#"{"job":{"kind":"from_the_future"}}"#.as_slice())
            .unwrap();
    }
    tx.commit().unwrap();

    let mut received = Vec::new();
    for _ in 0..3 {
        for d in q.receive(10, LONG).await.expect("receive goes on") {
            received.push(d.job.clone());
            q.ack(&d.receipt).await.unwrap();
        }
    }
    assert_eq!(received.len(), 2, "a's next job and b's: {received:?}");
    assert!(received.contains(&job("a", 1)) && received.contains(&job("b", 0)));
    let stats = q.stats().await.unwrap();
    assert_eq!(
        (stats.depth, stats.dead_letters),
        (0, 1),
        "kept and counted"
    );
}

/// The tables of the queue, as stored: how many entries each holds.
fn stored(store: &EmbeddedStore, table: &str) -> u64 {
    use shadowsync_state::redb::{ReadableTableMetadata, TableDefinition};
    let definition: TableDefinition<u64, &[u8]> = TableDefinition::new(table);
    let db = store.database();
    let tx = db.begin_read().unwrap();
    tx.open_table(definition).unwrap().len().unwrap()
}

#[tokio::test]
async fn a_send_only_appends_to_the_inbox_and_survives_until_filed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.redb");
    {
        let (store, q) = open(&path, 5);
        q.send_batch(vec![job("a", 0), job("b", 0)]).await.unwrap();
        q.send_batch(vec![job("a", 1)]).await.unwrap();
        // What makes a send's commit cheap: one B-tree, appended to.
        assert_eq!(stored(&store, "queue_inbox"), 3);
        assert_eq!(stored(&store, "queue_jobs"), 0);
    } // the process dies before anything filed them
      // The committer lets go of the file just after answering.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let store = loop {
        match EmbeddedStore::open(&path) {
            Ok(store) => break store,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("still open: {e}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let q = EmbeddedQueue::new(&store, 5).unwrap();
    let first = q.receive(10, LONG).await.unwrap();
    assert_eq!(stored(&store, "queue_inbox"), 0, "filed by the receive");
    let jobs: Vec<Job> = first.iter().map(|d| d.job.clone()).collect();
    assert_eq!(
        jobs,
        vec![job("a", 0), job("b", 0)],
        "one per group, in order"
    );
    for d in first {
        q.ack(&d.receipt).await.unwrap();
    }
    let next = q.receive(10, LONG).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].job, job("a", 1), "the group's order across sends");
}

#[tokio::test]
async fn a_receive_files_a_bounded_number_of_sent_jobs_in_sending_order() {
    use shadowsync_queue::FILED_PER_RECEIVE;
    let dir = tempfile::tempdir().unwrap();
    let (store, q) = open(&dir.path().join("q.redb"), 5);
    let total = FILED_PER_RECEIVE + 10;
    let jobs: Vec<Job> = (0..total).map(|k| job(&format!("u{k}"), 0)).collect();
    q.send_batch(jobs.clone()).await.unwrap();
    let first = q.receive(total, LONG).await.unwrap();
    assert_eq!(
        first.len(),
        FILED_PER_RECEIVE,
        "one receive files at most so many"
    );
    assert_eq!(stored(&store, "queue_inbox"), 10);
    let second = q.receive(total, LONG).await.unwrap();
    let delivered: Vec<Job> = first.iter().chain(&second).map(|d| d.job.clone()).collect();
    assert_eq!(delivered, jobs, "every job once, oldest first");
}

#[tokio::test]
async fn the_dedup_window_counts_from_sending_however_late_jobs_are_filed() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, queue, clock) = manual(&dir.path().join("s.redb"), 3);
    let window = chrono::Duration::from_std(DEDUP_WINDOW).unwrap();
    queue.send_batch(vec![job("a", 1)]).await.unwrap();
    clock.advance(window - chrono::Duration::seconds(1));
    queue.send_batch(vec![job("a", 1)]).await.unwrap(); // within the window of the first
    clock.advance(chrono::Duration::seconds(2));
    queue.send_batch(vec![job("a", 1)]).await.unwrap(); // after it
    clock.advance(window);
    // Nothing filed them until now, long after every window.
    assert_eq!(queue.stats().await.unwrap().depth, 2);
}

#[tokio::test]
async fn a_sent_job_that_cannot_be_read_is_set_aside_when_filed() {
    use shadowsync_state::redb::TableDefinition;
    let dir = tempfile::tempdir().unwrap();
    let (store, q) = open(&dir.path().join("q.redb"), 5);
    q.send_batch(vec![job("a", 0)]).await.unwrap();
    // Sent by a later version (a kind of job this one does not know), or damaged.
    let inbox: TableDefinition<u64, &[u8]> = TableDefinition::new("queue_inbox");
    let db = store.database();
    let tx = db.begin_write().unwrap();
    tx.open_table(inbox)
        .unwrap()
        .insert(0, br#"{"job":{"kind":"from_the_future"}}"#.as_slice())
        .unwrap();
    tx.commit().unwrap();
    q.send_batch(vec![job("b", 0)]).await.unwrap();

    let got = q.receive(10, LONG).await.expect("receive goes on");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].job, job("b", 0));
    let stats = q.stats().await.unwrap();
    assert_eq!(
        (stats.depth, stats.dead_letters),
        (1, 1),
        "kept and counted"
    );
}

#[tokio::test]
async fn stats_files_what_a_receive_would_and_counts_the_rest_as_sent() {
    use shadowsync_queue::FILED_PER_RECEIVE;
    let dir = tempfile::tempdir().unwrap();
    let (store, q) = open(&dir.path().join("q.redb"), 5);
    let total = FILED_PER_RECEIVE + 10;
    let mut jobs: Vec<Job> = (0..total).map(|k| job(&format!("u{k}"), 0)).collect();
    // A resend of the first job, past what one call files: counted until filed.
    jobs.push(job("u0", 0));
    q.send_batch(jobs).await.unwrap();
    assert_eq!(q.stats().await.unwrap().depth, total as u64 + 1);
    assert_eq!(stored(&store, "queue_inbox"), 11, "one bounded transaction");
    assert_eq!(
        q.stats().await.unwrap().depth,
        total as u64,
        "filed: a duplicate"
    );
}
