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
        GraphError::client(400, "Request_BadRequest", "Invalid object identifier")
    });
    assert_eq!(run_one(&w).await, Settled::DeadLettered);
    let dead = w.queue.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job, job);
    assert_eq!(dead[0].attempts, 1);
    assert!(
        dead[0].reason.contains("reading the user")
            && dead[0].reason.contains("Request_BadRequest"),
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

fn refused() -> GraphError {
    GraphError::client(
        403,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    )
}

#[tokio::test]
async fn a_refused_job_is_parked_reported_and_resumed_when_graph_answers_again() {
    let w = World::new();
    let kept = w.graph.invite_guest("kept@fabrikam.com");
    w.converge(&kept).await;
    let new = w.graph.invite_guest("new@fabrikam.com");
    // Kept's guest leaves while the permission is gone: nothing may happen to its account.
    w.graph.soft_delete(&kept);
    w.graph.fail(GraphOp::User, 100, refused);
    w.queue
        .send_batch(vec![converge_job(&w, &kept), converge_job(&w, &new)])
        .await
        .unwrap();
    assert_eq!(run_one(&w).await, Settled::Done);
    assert_eq!(run_one(&w).await, Settled::Done);

    let stats = w.queue.stats().await.unwrap();
    assert_eq!(
        (stats.depth, stats.dead_letters),
        (0, 0),
        "off the queue, not dead"
    );
    assert!(
        w.account_of(&kept).unwrap().is_enabled(),
        "a refusal disables nothing"
    );
    assert!(w.account_of(&new).is_none());
    assert_eq!(w.app.metrics.snapshot().parked, 2);
    let status = shadowsync_app::admin::status(w.store.as_ref(), w.queue.as_ref())
        .await
        .unwrap();
    let denied = status.graph_access.denied.expect("the refusal is reported");
    assert_eq!((denied.refusals, status.graph_access.parked_jobs), (2, 2));
    assert_eq!(denied.action, "reading the user");
    assert!(
        denied.message.contains("Authorization_RequestDenied"),
        "{}",
        denied.message
    );

    // A delta round refused too: still parked, still reported, nothing enqueued.
    w.graph.fail(GraphOp::UsersDelta, 1, refused);
    w.clock.advance(Duration::minutes(15));
    assert!(w
        .app
        .reconciler
        .scheduled_run(Roles::ALL, DAY)
        .await
        .is_err());
    let status = shadowsync_app::admin::status(w.store.as_ref(), w.queue.as_ref())
        .await
        .unwrap();
    assert_eq!(status.graph_access.denied.unwrap().refusals, 3);
    assert_eq!(status.queue.depth, 0);

    // The permission is back: the next round resumes the parked jobs.
    w.graph.clear_faults();
    w.clock.advance(Duration::minutes(15));
    let report = w
        .app
        .reconciler
        .scheduled_run(Roles::ALL, DAY)
        .await
        .unwrap();
    assert_eq!(report.resumed, 2);
    let status = shadowsync_app::admin::status(w.store.as_ref(), w.queue.as_ref())
        .await
        .unwrap();
    assert_eq!(status.graph_access, Default::default());
    while w.queue.stats().await.unwrap().depth > 0 {
        run_one(&w).await;
    }
    assert!(
        !w.account_of(&kept).unwrap().is_enabled(),
        "now Graph says it: disabled"
    );
    assert!(w.account_of(&new).is_some());
    assert_eq!(w.queue.stats().await.unwrap().dead_letters, 0);
}

#[tokio::test]
async fn a_refused_group_check_disables_no_one() {
    let w = Setup {
        scope_group: true,
        ..Setup::default()
    }
    .build();
    let id = w.graph.invite_guest("alice@fabrikam.com");
    w.graph.add_to_group(w.scope_group.as_ref().unwrap(), &id);
    w.converge(&id).await;
    w.graph.fail(GraphOp::IsMemberOf, 100, refused);
    w.queue
        .send_batch(vec![converge_job(&w, &id)])
        .await
        .unwrap();
    assert_eq!(run_one(&w).await, Settled::Done);
    assert!(w.account_of(&id).unwrap().is_enabled());
    assert_eq!(w.app.metrics.snapshot().parked, 1);
}

#[tokio::test]
async fn an_unconfirmed_404_comes_back_when_the_second_read_is_due() {
    let w = World::new();
    let id = w.graph.invite_guest("alice@fabrikam.com");
    w.converge(&id).await;
    w.graph.delete_permanently(&id);
    // A sweep's job: nothing reported this user lately, so no visibility window first.
    let job = Job::Converge {
        user_id: id.clone(),
        change_type: None,
        subscription_id: None,
        received_at: w.clock.now(),
        source: JobSource::Reconciler,
    };
    w.queue.send_batch(vec![job]).await.unwrap();
    assert_eq!(run_one(&w).await, Settled::Retrying);
    assert!(
        w.account_of(&id).unwrap().is_enabled(),
        "one 404 changes nothing"
    );

    // Not after the backoff (2 s): when the confirmation is due.
    w.clock.advance(Duration::seconds(10));
    assert!(w.queue.receive(1, VISIBILITY).await.unwrap().is_empty());
    w.clock.advance(Duration::seconds(21));
    assert_eq!(run_one(&w).await, Settled::Done);
    assert!(
        w.account_of(&id).is_none_or(|a| !a.is_enabled()),
        "confirmed: acted on"
    );
}

#[tokio::test]
async fn a_refused_credential_parks_jobs_too() {
    let w = World::new();
    let id = w.graph.invite_guest("alice@fabrikam.com");
    // An expired client secret: the token endpoint refuses it.
    w.graph.fail(GraphOp::User, 1, || GraphError::Token {
        status: Some(401),
        error: "invalid_client".into(),
        description: "AADSTS7000222: The provided client secret keys are expired.".into(),
    });
    w.queue
        .send_batch(vec![converge_job(&w, &id)])
        .await
        .unwrap();
    assert_eq!(run_one(&w).await, Settled::Done);
    let stats = w.queue.stats().await.unwrap();
    assert_eq!((stats.depth, stats.dead_letters), (0, 0));
    assert_eq!(w.app.metrics.snapshot().parked, 1);
    // An outage of the token endpoint is not a refusal: retried as usual.
    w.graph.fail(GraphOp::User, 1, || GraphError::Token {
        status: Some(503),
        error: "temporarily_unavailable".into(),
        description: "AADSTS90033".into(),
    });
    let other = w.graph.invite_guest("bob@fabrikam.com");
    w.queue
        .send_batch(vec![converge_job(&w, &other)])
        .await
        .unwrap();
    assert_eq!(run_one(&w).await, Settled::Retrying);
}

#[tokio::test]
async fn a_job_starting_takes_its_mark_so_the_next_notification_is_queued() {
    let w = World::new();
    let id = w.graph.invite_guest("alice@fabrikam.com");
    let pending = &w.app.pending;
    let first = pending
        .send(w.queue.as_ref(), vec![converge_job(&w, &id)])
        .await
        .unwrap();
    let repeat = pending
        .send(w.queue.as_ref(), vec![converge_job(&w, &id)])
        .await
        .unwrap();
    assert_eq!((first.sent, repeat.folded), (1, 1), "folded while it waits");

    assert_eq!(run_one(&w).await, Settled::Done);
    // A later notification (the queue's own deduplication keys on the time received).
    w.advance(Duration::seconds(1));
    let after = pending
        .send(w.queue.as_ref(), vec![converge_job(&w, &id)])
        .await
        .unwrap();
    assert_eq!(
        after.sent, 1,
        "the dispatcher cleared the mark as the job started"
    );
    assert_eq!(w.queue.stats().await.unwrap().depth, 1);
}
