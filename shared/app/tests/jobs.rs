//! Jobs through the dispatcher and the workers, on the embedded queue in memory.

mod common;

use chrono::Duration;
use common::*;
use shadowsync_app::worker::{process, Settled};
use shadowsync_app::Roles;
use shadowsync_core::{Clock, ObjectId};
use shadowsync_ports::GraphError;
use shadowsync_queue::{ChangeType, Job, JobSource, LifecycleEvent, Queue};
use shadowsync_state::AccountStatus;
use shadowsync_testkit::GraphOp;
use tokio_util::sync::CancellationToken;

const VISIBILITY: std::time::Duration = std::time::Duration::from_secs(60);

fn converge_job(w: &World, user_id: &ObjectId) -> Job {
    Job::Converge {
        user_id: user_id.clone(),
        change_type: Some(ChangeType::Updated),
        subscription_id: None,
        received_at: w.clock.now(),
        source: JobSource::Notification,
    }
}

fn lifecycle_job(w: &World, event: LifecycleEvent, subscription_id: &str) -> Job {
    Job::Lifecycle {
        event,
        subscription_id: subscription_id.into(),
        received_at: w.clock.now(),
    }
}

/// Takes the one job waiting and runs it through the dispatcher, as a worker does.
async fn run_one(w: &World) -> Settled {
    let mut batch = w.queue.receive(1, VISIBILITY).await.unwrap();
    assert_eq!(batch.len(), 1, "one job waiting");
    let delivery = batch.remove(0);
    process(
        w.queue.as_ref(),
        w.app.jobs.as_ref(),
        &w.app.workers,
        delivery,
    )
    .await
}

fn throttled() -> GraphError {
    GraphError::Throttled {
        retry_after: Some(std::time::Duration::from_secs(1)),
    }
}

#[tokio::test(start_paused = true)]
async fn the_workers_converge_a_job_and_acknowledge_it() {
    let w = World::new();
    let id = w.graph.invite_guest("alice@fabrikam.com");
    w.queue
        .send_batch(vec![converge_job(&w, &id)])
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let workers = {
        let (app, token) = (&w.app, shutdown.clone());
        async move { app.run_workers(token).await }
    };
    let watch = async {
        // Paused time: each sleep lets the workers run, without waiting for real.
        for _ in 0..1000 {
            if w.queue.stats().await.unwrap().depth == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        shutdown.cancel();
    };
    tokio::join!(workers, watch);
    assert_eq!(w.queue.stats().await.unwrap().depth, 0, "acknowledged");
    assert_eq!(
        w.record(&id).await.unwrap().value.status,
        AccountStatus::Enabled
    );
    assert!(w.account_of(&id).is_some());
    let metrics = w.app.metrics.snapshot();
    assert_eq!((metrics.applied, metrics.retries), (1, 0));
}

#[tokio::test]
async fn a_retryable_failure_is_retried_after_a_delay_then_succeeds() {
    let w = World::new();
    let id = w.graph.invite_guest("alice@fabrikam.com");
    w.queue
        .send_batch(vec![converge_job(&w, &id)])
        .await
        .unwrap();
    w.graph.fail(GraphOp::User, 1, throttled);
    assert_eq!(run_one(&w).await, Settled::Retrying);
    assert!(w.account_of(&id).is_none());
    assert!(
        w.queue.receive(1, VISIBILITY).await.unwrap().is_empty(),
        "held back by the backoff"
    );
    w.clock.advance(Duration::seconds(2));
    let delivery = w.queue.receive(1, VISIBILITY).await.unwrap().remove(0);
    assert_eq!(delivery.attempt, 2);
    let settled = process(
        w.queue.as_ref(),
        w.app.jobs.as_ref(),
        &w.app.workers,
        delivery,
    )
    .await;
    assert_eq!(settled, Settled::Done);
    assert!(w.account_of(&id).is_some());
    let stats = w.queue.stats().await.unwrap();
    assert_eq!((stats.depth, stats.dead_letters), (0, 0));
    let metrics = w.app.metrics.snapshot();
    assert_eq!((metrics.retries, metrics.applied), (1, 1));
}

#[tokio::test]
async fn a_permanent_failure_is_dead_lettered_with_its_reason() {
    let w = World::new();
    let id = w.graph.invite_guest("alice@fabrikam.com");
    let job = converge_job(&w, &id);
    w.queue.send_batch(vec![job.clone()]).await.unwrap();
    w.graph.fail(GraphOp::User, 1, || {
        GraphError::client(
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges",
        )
    });
    assert_eq!(run_one(&w).await, Settled::DeadLettered);
    let dead = w.queue.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job, job);
    assert_eq!(dead[0].attempts, 1);
    assert!(
        dead[0].reason.contains("reading the user")
            && dead[0].reason.contains("Authorization_RequestDenied"),
        "{}",
        dead[0].reason
    );
    assert_eq!(w.queue.stats().await.unwrap().depth, 0);
    assert_eq!(w.app.metrics.snapshot().dead_letters, 1);
}

#[tokio::test]
async fn a_job_failing_every_attempt_is_dead_lettered_at_the_last() {
    let w = World::new(); // three attempts
    let id = w.graph.invite_guest("alice@fabrikam.com");
    w.queue
        .send_batch(vec![converge_job(&w, &id)])
        .await
        .unwrap();
    w.graph.fail(GraphOp::User, 3, throttled);
    assert_eq!(run_one(&w).await, Settled::Retrying);
    w.clock.advance(Duration::minutes(1));
    assert_eq!(run_one(&w).await, Settled::Retrying);
    w.clock.advance(Duration::minutes(1));
    assert_eq!(run_one(&w).await, Settled::DeadLettered);
    let dead = w.queue.dead_letters().await.unwrap();
    assert_eq!(dead[0].attempts, 3);
    assert!(dead[0].reason.contains("throttled"), "{}", dead[0].reason);
}

#[tokio::test]
async fn a_reauthorization_job_reauthorizes() {
    let w = Setup {
        keeper: Some(keeper_config()),
        ..Setup::default()
    }
    .build();
    let id = w.app.keeper().unwrap().ensure().await.unwrap().record.id;
    w.queue
        .send_batch(vec![lifecycle_job(
            &w,
            LifecycleEvent::ReauthorizationRequired,
            &id,
        )])
        .await
        .unwrap();
    assert_eq!(run_one(&w).await, Settled::Done);
    assert_eq!(w.graph.reauthorizations(&id), 1);
}

#[tokio::test]
async fn a_host_without_a_keeper_hands_lifecycle_jobs_back() {
    let w = World::new();
    w.queue
        .send_batch(vec![lifecycle_job(
            &w,
            LifecycleEvent::ReauthorizationRequired,
            "0b9a8c7d-0000-4000-8000-000000000000",
        )])
        .await
        .unwrap();
    assert_eq!(run_one(&w).await, Settled::Retrying);
    let stats = w.queue.stats().await.unwrap();
    assert_eq!(
        (stats.depth, stats.dead_letters),
        (1, 0),
        "kept for another host"
    );
    assert_eq!(w.graph.call_count(GraphOp::Any), 0);
}

#[tokio::test]
async fn a_host_without_the_directory_hands_converge_jobs_back() {
    let w = Setup {
        directory: false,
        ..Setup::default()
    }
    .build();
    let id = w.graph.invite_guest("alice@fabrikam.com");
    w.queue
        .send_batch(vec![converge_job(&w, &id)])
        .await
        .unwrap();
    assert_eq!(run_one(&w).await, Settled::Retrying);
    assert_eq!(w.queue.stats().await.unwrap().depth, 1);
    assert_eq!(w.graph.call_count(GraphOp::Any), 0);
}

#[tokio::test(start_paused = true)]
async fn missed_wakes_the_schedule_at_once() {
    let w = Setup {
        keeper: Some(keeper_config()),
        ..Setup::default()
    }
    .build();
    let interval = w.app.schedule.interval;
    let started = tokio::time::Instant::now();
    let shutdown = CancellationToken::new();
    let schedule = {
        let (app, token) = (&w.app, shutdown.clone());
        async move { app.run_schedule(Roles::DELTA, token).await }
    };
    let rounds = || w.graph.call_count(GraphOp::UsersDelta);
    let test = async {
        while rounds() == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        w.queue
            .send_batch(vec![lifecycle_job(&w, LifecycleEvent::Missed, "any")])
            .await
            .unwrap();
        assert_eq!(run_one(&w).await, Settled::Done);
        while rounds() == 1 && started.elapsed() < interval {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let elapsed = started.elapsed();
        shutdown.cancel();
        elapsed
    };
    let ((), elapsed) = tokio::join!(schedule, test);
    assert_eq!(rounds(), 2);
    assert!(
        elapsed < std::time::Duration::from_secs(1),
        "woken, not waiting for the interval ({elapsed:?})"
    );
}
