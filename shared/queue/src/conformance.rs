//! The behaviour every [`Queue`] must have, as a check each implementation's tests run against a
//! real instance (the embedded queue here; the SQS adapter against moto in its own crate).
//!
//! Written against the trait only, with real (short) timeouts chosen by the caller. The queue must
//! be fresh (empty, no dead letters) and have no other consumer while the check runs. Negative
//! checks ("nothing is delivered now") use one `receive` call, so a queue that may return fewer
//! jobs than are visible (SQS short polling) makes them weaker but never flaky.

use crate::{Delivery, Disposition, Job, JobSource, Queue, QueueError, QueueStats, Receipt};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// What the suite needs to know about the queue under test.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// The queue's `max_attempts` (at least 2).
    pub max_attempts: u32,
    /// A short duration the suite's visibility timeouts and retry delays are multiples of (they
    /// leave the suite at least 2 ticks of slack before a negative check could flake, and the
    /// whole check sleeps about 15 ticks). 300 ms suits the embedded queue; SQS counts whole
    /// seconds, so use at least 1 s there.
    pub tick: Duration,
}

/// Panics with a message naming the broken rule.
pub async fn check(queue: &dyn Queue, params: Params) {
    assert!(
        params.max_attempts >= 2,
        "the suite needs max_attempts >= 2"
    );
    let suite = Suite {
        q: queue,
        p: params,
        // Part of every job's dedup key, so jobs of this run never collide with earlier runs.
        base: Utc::now(),
    };
    assert_eq!(
        stats(queue).await,
        QueueStats::default(),
        "a fresh queue is empty"
    );
    suite.order_and_groups().await;
    suite.interleaved_groups().await;
    suite.visibility().await;
    suite.retry_delay().await;
    suite.dead_letters().await;
    suite.dedup().await;
    assert_eq!(
        stats(queue).await,
        QueueStats::default(),
        "when every job is acknowledged and every dead letter dropped, the queue is empty"
    );
}

struct Suite<'a> {
    q: &'a dyn Queue,
    p: Params,
    base: DateTime<Utc>,
}

async fn stats(q: &dyn Queue) -> QueueStats {
    q.stats().await.expect("stats")
}

fn is_unknown_receipt<T: std::fmt::Debug>(r: Result<T, QueueError>) -> bool {
    matches!(r, Err(QueueError::UnknownReceipt(_)))
}

fn is_unknown_dead_letter<T: std::fmt::Debug>(r: Result<T, QueueError>) -> bool {
    matches!(r, Err(QueueError::UnknownDeadLetter(_)))
}

impl Suite<'_> {
    /// A converge job for `user`; `n` makes it distinct from the user's other jobs.
    fn job(&self, user: &str, n: i64) -> Job {
        Job::Converge {
            user_id: shadowsync_core::ObjectId::from_label(user),
            change_type: None,
            subscription_id: None,
            received_at: self.base + chrono::Duration::microseconds(n),
            source: JobSource::Notification,
        }
    }

    /// Long enough that nothing expires while a section works.
    fn long(&self) -> Duration {
        self.p.tick * 20
    }

    fn patience(&self) -> Duration {
        (self.p.tick * 10).max(Duration::from_secs(2))
    }

    /// Receives until at least `want` jobs arrived (or patience ran out); returns all received.
    async fn poll(&self, want: usize, visibility: Duration) -> Vec<Delivery> {
        self.poll_for(want, visibility, self.patience()).await
    }

    async fn poll_for(
        &self,
        want: usize,
        visibility: Duration,
        patience: Duration,
    ) -> Vec<Delivery> {
        let deadline = Instant::now() + patience;
        let mut got = Vec::new();
        while got.len() < want && Instant::now() < deadline {
            let batch = self.q.receive(10, visibility).await.expect("receive");
            if batch.is_empty() {
                tokio::time::sleep(self.p.tick / 10).await;
            }
            got.extend(batch);
        }
        got
    }

    /// Receives exactly one job, which must be `job`, on its `attempt`th delivery.
    async fn one(&self, job: &Job, attempt: u32, visibility: Duration, rule: &str) -> Delivery {
        let mut got = self.poll(1, visibility).await;
        assert_eq!(
            got.len(),
            1,
            "{rule}: expected exactly one delivery, got {got:?}"
        );
        let d = got.remove(0);
        assert_eq!(&d.job, job, "{rule}: wrong job delivered");
        assert_eq!(d.attempt, attempt, "{rule}: wrong attempt number");
        d
    }

    async fn nothing(&self, rule: &str) {
        let got = self.q.receive(10, self.long()).await.expect("receive");
        assert!(got.is_empty(), "{rule}: but received {got:?}");
    }

    async fn ack(&self, receipt: &Receipt) {
        self.q.ack(receipt).await.expect("ack");
    }

    /// Jobs of one group come one at a time, in order; other groups are not held up.
    async fn order_and_groups(&self) {
        let (a1, a2, a3, b1) = (
            self.job("a", 1),
            self.job("a", 2),
            self.job("a", 3),
            self.job("b", 4),
        );
        self.q
            .send_batch(vec![a1.clone(), a2.clone(), b1.clone(), a3.clone()])
            .await
            .expect("send_batch");
        let s = stats(self.q).await;
        assert_eq!((s.depth, s.in_flight), (4, 0), "depth counts sent jobs");

        let got = self.poll(2, self.long()).await;
        let jobs: HashSet<_> = got.iter().map(|d| d.job.dedup_key()).collect();
        assert_eq!(
            (got.len(), jobs),
            (2, HashSet::from([a1.dedup_key(), b1.dedup_key()])),
            "the first job of each group is delivered, one per group: {got:?}"
        );
        assert!(
            got.iter().all(|d| d.attempt == 1),
            "first delivery is attempt 1"
        );
        assert_ne!(got[0].receipt, got[1].receipt, "receipts are distinct");
        self.nothing("a group with a job in flight delivers nothing else")
            .await;
        let s = stats(self.q).await;
        assert_eq!(
            (s.depth, s.in_flight),
            (4, 2),
            "received jobs are in flight"
        );

        let receipt = |job: &Job| got.iter().find(|d| &d.job == job).unwrap().receipt.clone();
        self.ack(&receipt(&a1)).await;
        let d2 = self
            .one(
                &a2,
                1,
                self.long(),
                "acknowledging a job releases its group's next",
            )
            .await;
        self.nothing("b is still in flight and a's next job too")
            .await;
        self.ack(&receipt(&b1)).await;
        self.ack(&d2.receipt).await;
        let d3 = self.one(&a3, 1, self.long(), "the group's last job").await;
        self.ack(&d3.receipt).await;
        assert!(
            is_unknown_receipt(self.q.ack(&d3.receipt).await),
            "a receipt of an acknowledged job is unknown"
        );
        assert!(
            is_unknown_receipt(
                self.q
                    .ack(&Receipt {
                        message_id: "not-a-receipt".into(),
                        handle: "1".into(),
                        attempt: 1,
                        body: None,
                    })
                    .await
            ),
            "a made-up receipt is unknown"
        );
        assert_eq!(stats(self.q).await, QueueStats::default());
    }

    /// Several groups' jobs sent interleaved in one batch: every group's jobs are delivered in
    /// order, never two of a group at once, and the groups progress side by side.
    async fn interleaved_groups(&self) {
        let groups = ["g0", "g1", "g2", "g3"];
        let mut expected: HashMap<String, Vec<Job>> = HashMap::new();
        let mut batch = Vec::new();
        for n in 0..4 {
            for g in groups {
                let job = self.job(g, 100 + n);
                expected.entry(job.group()).or_default().push(job.clone());
                batch.push(job);
            }
        }
        let total = batch.len();
        self.q.send_batch(batch).await.expect("send_batch");

        let mut delivered: HashMap<String, Vec<Job>> = HashMap::new();
        let mut count = 0;
        let deadline = Instant::now() + self.patience() * 2;
        while count < total && Instant::now() < deadline {
            let got = self.q.receive(10, self.long()).await.expect("receive");
            let in_batch: HashSet<_> = got.iter().map(|d| d.job.group()).collect();
            assert_eq!(
                in_batch.len(),
                got.len(),
                "two jobs of one group at once: {got:?}"
            );
            if got.is_empty() {
                tokio::time::sleep(self.p.tick / 10).await;
            }
            for d in got {
                delivered.entry(d.job.group()).or_default().push(d.job);
                self.ack(&d.receipt).await;
                count += 1;
            }
        }
        assert_eq!(
            delivered, expected,
            "each group's jobs arrive once each, in order"
        );
    }

    /// A received job that is neither acknowledged nor retried comes back after its visibility
    /// timeout; the old receipt is then stale. `extend` keeps a job invisible for longer.
    async fn visibility(&self) {
        let tick = self.p.tick;
        let x = self.job("x", 200);
        self.q
            .send_batch(vec![x.clone()])
            .await
            .expect("send_batch");
        // Three ticks, so that a stall of the test machine between this and the next receive
        // does not make the negative check below flaky.
        let visibility = tick * 3;
        let d1 = self.one(&x, 1, visibility, "first delivery").await;
        self.nothing("a received job is invisible during its visibility timeout")
            .await;
        let d2 = self
            .one(
                &x,
                2,
                visibility,
                "a job not acknowledged in time is delivered again",
            )
            .await;
        assert_ne!(d1.receipt, d2.receipt, "each delivery has its own receipt");
        assert!(
            is_unknown_receipt(self.q.ack(&d1.receipt).await),
            "the receipt of an earlier delivery is stale"
        );
        assert!(
            is_unknown_receipt(self.q.extend(&d1.receipt, tick).await),
            "a stale receipt cannot extend"
        );

        self.q.extend(&d2.receipt, tick * 10).await.expect("extend");
        tokio::time::sleep(visibility + tick * 2).await;
        self.nothing("an extended job stays invisible past its first timeout")
            .await;
        self.ack(&d2.receipt).await;
        assert_eq!(stats(self.q).await, QueueStats::default());
    }

    /// A job handed back waits for its delay, and its group's later jobs wait behind it.
    async fn retry_delay(&self) {
        let tick = self.p.tick;
        let (y1, y2) = (self.job("y", 300), self.job("y", 301));
        self.q
            .send_batch(vec![y1.clone(), y2.clone()])
            .await
            .expect("send_batch");
        let d = self.one(&y1, 1, self.long(), "first delivery").await;
        let delay = tick * 5;
        let handed_back = Instant::now();
        let disposition = self
            .q
            .retry_later(&d.receipt, delay, "try again")
            .await
            .expect("retry_later");
        assert_eq!(disposition, Disposition::Retrying { attempt: 1 });
        assert!(
            is_unknown_receipt(self.q.ack(&d.receipt).await),
            "a receipt handed back with retry_later is spent"
        );
        self.nothing(
            "a delayed job is not delivered, nor does a later job of its group overtake it",
        )
        .await;
        tokio::time::sleep(tick).await;
        self.nothing("still within the retry delay").await;
        assert_eq!(stats(self.q).await.depth, 2, "a delayed job still counts");

        let d = self
            .one(&y1, 2, self.long(), "the job comes back after its delay")
            .await;
        // visible_at is set after `handed_back`, so the full delay must have passed (a little
        // slack for clock granularity).
        assert!(
            handed_back.elapsed() + Duration::from_millis(5) >= delay,
            "redelivered after {:?}, before the retry delay {delay:?}",
            handed_back.elapsed()
        );
        self.ack(&d.receipt).await;
        let d = self
            .one(&y2, 1, self.long(), "then the group's next job")
            .await;
        self.ack(&d.receipt).await;
    }

    /// Dead letters: after max_attempts, or directly; redrive puts one back at the end of its
    /// group as a fresh job; drop discards one.
    async fn dead_letters(&self) {
        let max = self.p.max_attempts;
        let (z1, z2, z3, w1) = (
            self.job("z", 400),
            self.job("z", 401),
            self.job("z", 402),
            self.job("w", 403),
        );
        self.q
            .send_batch(vec![z1.clone(), z2.clone()])
            .await
            .expect("send_batch");
        for attempt in 1..=max {
            let d = self.one(&z1, attempt, self.long(), "retried job").await;
            let disposition = self
                .q
                .retry_later(&d.receipt, Duration::ZERO, &format!("boom {attempt}"))
                .await
                .expect("retry_later");
            let expected = if attempt < max {
                Disposition::Retrying { attempt }
            } else {
                Disposition::DeadLettered
            };
            assert_eq!(disposition, expected, "attempt {attempt} of {max}");
        }
        let d = self
            .one(
                &z2,
                1,
                self.long(),
                "a dead-lettered job releases its group",
            )
            .await;
        self.ack(&d.receipt).await;
        let dead = self.q.dead_letters().await.expect("dead_letters");
        assert_eq!(dead.len(), 1, "one dead letter: {dead:?}");
        assert_eq!(dead[0].job, z1);
        assert_eq!(dead[0].attempts, max, "a dead letter records its attempts");
        assert!(
            dead[0].reason.contains(&format!("boom {max}")),
            "a dead letter records the last failure's reason: {:?}",
            dead[0].reason
        );
        let z_id = dead[0].id.clone();
        assert_eq!(
            stats(self.q).await,
            QueueStats {
                depth: 0,
                in_flight: 0,
                dead_letters: 1
            }
        );

        self.q
            .send_batch(vec![w1.clone()])
            .await
            .expect("send_batch");
        let d = self.one(&w1, 1, self.long(), "job to dead-letter").await;
        self.q
            .dead_letter(&d.receipt, "poison")
            .await
            .expect("dead_letter");
        assert!(
            is_unknown_receipt(self.q.ack(&d.receipt).await),
            "a dead-lettered job's receipt is spent"
        );
        let dead = self.q.dead_letters().await.expect("dead_letters");
        let w = dead.iter().find(|d| d.job == w1).expect("w1 is dead");
        assert_eq!((w.attempts, w.reason.as_str()), (1, "poison"));
        let w_id = w.id.clone();
        assert_eq!(dead.len(), 2);

        self.q
            .send_batch(vec![z3.clone()])
            .await
            .expect("send_batch");
        self.q.redrive(&z_id).await.expect("redrive");
        let dead = self.q.dead_letters().await.expect("dead_letters");
        assert!(
            dead.iter().all(|d| d.id != z_id),
            "a redriven job is no longer a dead letter"
        );
        assert_eq!(stats(self.q).await.depth, 2);
        let d = self
            .one(
                &z3,
                1,
                self.long(),
                "a redriven job goes to the end of its group",
            )
            .await;
        self.ack(&d.receipt).await;
        let d = self
            .one(&z1, 1, self.long(), "a redriven job is fresh (attempt 1)")
            .await;
        self.ack(&d.receipt).await;
        assert!(
            is_unknown_dead_letter(self.q.redrive(&z_id).await),
            "a dead letter can be redriven once"
        );

        self.q
            .drop_dead_letter(&w_id)
            .await
            .expect("drop_dead_letter");
        assert!(self
            .q
            .dead_letters()
            .await
            .expect("dead_letters")
            .is_empty());
        assert!(
            is_unknown_dead_letter(self.q.drop_dead_letter(&w_id).await),
            "a dropped dead letter is gone"
        );
        assert_eq!(stats(self.q).await, QueueStats::default());
    }

    /// A job sent again within the dedup window (same dedup key) is accepted but stored once,
    /// even after the first copy was acknowledged; a different key is a different job.
    async fn dedup(&self) {
        let d1 = self.job("d", 500);
        let other = self.job("d", 501);
        self.q
            .send_batch(vec![d1.clone(), d1.clone()])
            .await
            .expect("send_batch");
        self.q
            .send_batch(vec![d1.clone()])
            .await
            .expect("send_batch");
        assert_eq!(stats(self.q).await.depth, 1, "duplicates are stored once");
        let d = self.one(&d1, 1, self.long(), "the deduplicated job").await;
        self.nothing("no second copy").await;
        self.ack(&d.receipt).await;

        self.q
            .send_batch(vec![d1.clone()])
            .await
            .expect("send_batch");
        assert_eq!(
            stats(self.q).await.depth,
            0,
            "a resend within the window is dropped even after the first copy was processed"
        );
        self.q
            .send_batch(vec![other.clone()])
            .await
            .expect("send_batch");
        let d = self
            .one(&other, 1, self.long(), "a different dedup key is a new job")
            .await;
        self.ack(&d.receipt).await;
    }
}
