//! Property: whatever consumers do (receive, ack, hand back, let visibility expire), jobs of a
//! group are delivered only when they are the group's oldest unacknowledged job, never while
//! another delivery of the group is valid, and every job is eventually acknowledged exactly once.

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use shadowsync_core::ManualClock;
use shadowsync_queue::{Delivery, Disposition, EmbeddedQueue, Job, JobSource, Queue, QueueError};
use shadowsync_state::EmbeddedStore;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

const VISIBILITY: i64 = 10;

#[derive(Debug, Clone)]
enum Op {
    Send(Vec<u8>),
    Receive(usize),
    Ack(usize),
    Retry(usize, bool),
    Advance(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        prop::collection::vec(0u8..4, 1..4).prop_map(Op::Send),
        (1usize..4).prop_map(Op::Receive),
        any::<usize>().prop_map(Op::Ack),
        (any::<usize>(), any::<bool>()).prop_map(|(i, d)| Op::Retry(i, d)),
        (1i64..15).prop_map(Op::Advance),
    ]
}

fn job(group: u8, n: i64) -> Job {
    Job::Converge {
        user_id: shadowsync_core::ObjectId::from_label(&format!("u{group}")),
        change_type: None,
        subscription_id: None,
        received_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap() + chrono::Duration::seconds(n),
        source: JobSource::Notification,
    }
}

/// What the test knows: each group's unacknowledged jobs in send order, and the deliveries it
/// holds with the (model) time their visibility ends.
#[derive(Default)]
struct Model {
    pending: HashMap<String, VecDeque<Job>>,
    held: Vec<(Delivery, i64)>,
    now: i64,
    sent: i64,
}

impl Model {
    fn check_delivery(&self, d: &Delivery) -> Result<(), TestCaseError> {
        let group = d.job.group();
        prop_assert_eq!(
            self.pending.get(&group).and_then(|q| q.front()),
            Some(&d.job),
            "delivered job is not its group's oldest"
        );
        prop_assert!(
            !self
                .held
                .iter()
                .any(|(h, until)| h.job.group() == group && *until > self.now),
            "a second job of {} while one is in flight",
            group
        );
        Ok(())
    }

    /// A held delivery was acknowledged successfully: it must have been its group's oldest.
    fn acked(&mut self, d: &Delivery) -> Result<(), TestCaseError> {
        let q = self.pending.get_mut(&d.job.group()).unwrap();
        let front = q.pop_front();
        prop_assert_eq!(front.as_ref(), Some(&d.job));
        Ok(())
    }
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("s.redb")).unwrap();
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let queue = EmbeddedQueue::with_clock(&store, 1000, clock.clone()).unwrap();
    let mut m = Model::default();
    let visibility = Duration::from_secs(VISIBILITY as u64);

    for op in ops {
        match op {
            Op::Send(groups) => {
                let jobs: Vec<Job> = groups
                    .into_iter()
                    .map(|g| {
                        m.sent += 1;
                        job(g, m.sent)
                    })
                    .collect();
                for j in &jobs {
                    m.pending.entry(j.group()).or_default().push_back(j.clone());
                }
                queue.send_batch(jobs).await.unwrap();
            }
            Op::Receive(max) => {
                let got = queue.receive(max, visibility).await.unwrap();
                prop_assert!(got.len() <= max);
                for d in got {
                    m.check_delivery(&d)?;
                    // Any earlier delivery of this job is stale now.
                    m.held.retain(|(h, _)| h.job != d.job);
                    m.held.push((d, m.now + VISIBILITY));
                }
            }
            Op::Ack(i) | Op::Retry(i, _) if m.held.is_empty() => {
                let _ = i;
            }
            Op::Ack(i) => {
                let (d, until) = m.held.remove(i % m.held.len());
                match queue.ack(&d.receipt).await {
                    Ok(()) => m.acked(&d)?,
                    // Only allowed once the visibility has ended (then it may be redelivered).
                    Err(QueueError::UnknownReceipt(_)) => prop_assert!(until <= m.now),
                    Err(e) => panic!("{e}"),
                }
            }
            Op::Retry(i, delayed) => {
                let (d, until) = m.held.remove(i % m.held.len());
                let delay = Duration::from_secs(if delayed { 5 } else { 0 });
                match queue.retry_later(&d.receipt, delay, "again").await {
                    Ok(disposition) => {
                        prop_assert_eq!(disposition, Disposition::Retrying { attempt: d.attempt })
                    }
                    Err(QueueError::UnknownReceipt(_)) => prop_assert!(until <= m.now),
                    Err(e) => panic!("{e}"),
                }
            }
            Op::Advance(secs) => {
                clock.advance(chrono::Duration::seconds(secs));
                m.now += secs;
            }
        }
    }

    // Drain: every job still pending is delivered, in order, and acknowledged.
    m.held.clear();
    for _ in 0..1000 {
        if m.pending.values().all(VecDeque::is_empty) {
            break;
        }
        clock.advance(chrono::Duration::seconds(VISIBILITY + 10));
        m.now += VISIBILITY + 10;
        for d in queue.receive(10, visibility).await.unwrap() {
            m.check_delivery(&d)?;
            queue.ack(&d.receipt).await.unwrap();
            m.acked(&d)?;
        }
    }
    prop_assert!(
        m.pending.values().all(VecDeque::is_empty),
        "jobs lost: {:?}",
        m.pending
    );
    prop_assert_eq!(queue.stats().await.unwrap().depth, 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn groups_are_delivered_in_order_one_at_a_time(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops))?;
    }
}
