//! Delta rounds that stop (a deadline, a Graph error) and go on from where they stopped in a
//! later run, against the fakes.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::*;
use shadowsync_app::reconcile::DeltaReport;
use shadowsync_app::{admin, AppError, Roles};
use shadowsync_core::ObjectId;
use shadowsync_ports::GraphError;
use shadowsync_queue::Job;
use shadowsync_state::records::{CHECKPOINTS, USERS_DELTA, USERS_DELTA_RESUME};
use shadowsync_state::{get_json, put_json, DeltaResumePoint, KeyValueStore};
use shadowsync_testkit::GraphOp;
use std::collections::BTreeMap;

async fn resume_point(w: &World) -> Option<DeltaResumePoint> {
    get_json(w.store.as_ref(), CHECKPOINTS, USERS_DELTA_RESUME)
        .await
        .unwrap()
        .map(|v| v.value)
}

/// How many converge jobs the queue holds for each user (taken off it).
async fn jobs_per_user(w: &World) -> BTreeMap<ObjectId, usize> {
    let mut count = BTreeMap::new();
    for job in w.drain().await {
        let Job::Converge { user_id, .. } = job else {
            panic!("{job:?}");
        };
        *count.entry(user_id).or_default() += 1;
    }
    count
}

fn once_each(ids: &[ObjectId]) -> BTreeMap<ObjectId, usize> {
    ids.iter().map(|id| (id.clone(), 1)).collect()
}

/// `n` guests, and a member before every second one (members get no job).
fn tenant(w: &World, n: usize) -> Vec<ObjectId> {
    (0..n)
        .map(|i| {
            if i % 2 == 1 {
                w.graph.add_member(&format!("m{i}@contoso.com"), "Employee");
            }
            w.graph.invite_guest(&format!("g{i}@fabrikam.com"))
        })
        .collect()
}

/// Each users delta page takes a minute of the reconciler's clock.
fn pages_take_a_minute(w: &World) {
    w.graph
        .set_delta_page_time(w.clock.clone(), Duration::minutes(1));
}

fn in_minutes(w: &World, minutes: i64) -> Option<DateTime<Utc>> {
    Some(now(w) + Duration::minutes(minutes))
}

/// A delta round with its deadline `minutes` away.
async fn run_for(w: &World, minutes: i64) -> Result<DeltaReport, AppError> {
    w.app
        .reconciler
        .run_delta_until(in_minutes(w, minutes))
        .await
}

#[tokio::test]
async fn a_full_round_stopped_by_its_deadline_goes_on_at_the_next_page_and_queues_everyone_once() {
    let w = World::new();
    w.graph.set_delta_page_size(2);
    let guests = tenant(&w, 6); // 9 users in 5 pages
    pages_take_a_minute(&w);
    let started = now(&w);

    // Two pages fit before the deadline.
    let r = run_for(&w, 2).await.unwrap();
    assert!(r.full && !r.complete && !r.resumed, "{r:?}");
    assert_eq!((r.pages, r.users_seen, r.jobs_enqueued), (2, 4, 3));
    assert!(
        checkpoint(&w).await.is_none(),
        "the round has not completed"
    );
    let point = resume_point(&w).await.expect("the round's position");
    assert!(
        point.full && point.next_link.contains("$skiptoken="),
        "{point:?}"
    );
    assert_eq!(
        (point.pages, point.users_seen, point.jobs_enqueued),
        (2, 4, 3)
    );
    assert_eq!((point.started_at, point.saved_at), (started, now(&w)));
    let status = admin::status(w.store.as_ref(), w.queue.as_ref())
        .await
        .unwrap();
    let shown = status.delta_round_in_progress.expect("a round in progress");
    assert_eq!(
        (shown.full, shown.pages, shown.users_seen, shown.started_at),
        (true, 2, 4, started)
    );
    assert_eq!(status.delta_checkpoint, None);

    w.clock.advance(Duration::minutes(15));
    w.graph.clear_calls();
    let r = w.app.reconciler.run_delta().await.unwrap();
    assert!(r.full && r.complete && r.resumed, "{r:?}");
    assert_eq!(
        r.reason_for_full.as_deref(),
        Some("no delta checkpoint (first run)")
    );
    assert_eq!(
        (r.pages, r.users_seen, r.jobs_enqueued),
        (5, 9, 6),
        "the whole round's counts"
    );
    let calls = w.graph.calls(GraphOp::UsersDelta);
    assert_eq!(calls.len(), 3, "pages 3 to 5: {calls:?}");
    assert_eq!(calls[0], point.next_link, "page 3 first");
    assert_eq!(jobs_per_user(&w).await, once_each(&guests));

    let cp = checkpoint(&w).await.expect("the round completed").value;
    assert_eq!((cp.completed_at, cp.full_sync_at), (now(&w), now(&w)));
    assert!(resume_point(&w).await.is_none(), "the position is gone");
    let status = admin::status(w.store.as_ref(), w.queue.as_ref())
        .await
        .unwrap();
    assert!(status.delta_round_in_progress.is_none());
}

#[tokio::test]
async fn a_round_too_long_for_one_run_completes_over_several() {
    let w = World::new();
    w.graph.set_delta_page_size(3);
    let guests = tenant(&w, 10); // 15 users in 5 pages
    pages_take_a_minute(&w);

    // Each run has a minute: one page (the first page of a run is always read).
    let mut runs = Vec::new();
    loop {
        let r = run_for(&w, 1).await.unwrap();
        runs.push((r.pages, r.complete, r.resumed));
        if r.complete {
            assert!(r.full);
            assert_eq!((r.users_seen, r.jobs_enqueued), (15, 10));
            break;
        }
        assert!(runs.len() < 10, "{runs:?}");
        w.clock.advance(Duration::minutes(15));
    }
    assert_eq!(
        runs,
        vec![
            (1, false, false),
            (2, false, true),
            (3, false, true),
            (4, false, true),
            (5, true, true)
        ]
    );
    assert_eq!(jobs_per_user(&w).await, once_each(&guests));
    assert_eq!(w.graph.call_count(GraphOp::UsersDelta), 5, "no page twice");
}

#[tokio::test]
async fn a_round_failing_on_a_page_goes_on_from_that_page_not_the_first() {
    let w = World::new();
    w.graph.set_delta_page_size(1);
    let guests = tenant(&w, 4); // 6 users in 6 pages
    w.graph.fail_after(GraphOp::UsersDelta, 3, 1, server_error);
    let e = w.app.reconciler.run_delta().await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    let point = resume_point(&w).await.expect("the pages read are kept");
    assert_eq!(
        (point.pages, point.users_seen, point.jobs_enqueued),
        (3, 3, 2)
    );
    let failed = w.graph.calls(GraphOp::UsersDelta).pop().unwrap();
    assert_eq!(point.next_link, failed, "the page that failed comes next");

    w.clock.advance(Duration::minutes(15));
    w.graph.clear_calls();
    let r = w.app.reconciler.run_delta().await.unwrap();
    assert!(r.full && r.complete && r.resumed, "{r:?}");
    assert_eq!((r.pages, r.users_seen, r.jobs_enqueued), (6, 6, 4));
    let calls = w.graph.calls(GraphOp::UsersDelta);
    assert_eq!((calls.len(), &calls[0]), (3, &failed), "{calls:?}");
    assert_eq!(jobs_per_user(&w).await, once_each(&guests));
}

#[tokio::test]
async fn a_saved_position_graph_refuses_or_too_old_starts_the_full_round_over() {
    for case in ["links expired", "410", "6 days old"] {
        let w = World::new();
        w.graph.set_delta_page_size(1);
        let guests = tenant(&w, 3); // 4 users in 4 pages
        pages_take_a_minute(&w);
        let r = run_for(&w, 1).await.unwrap();
        assert_eq!((r.pages, r.complete), (1, false), "{case}");
        let first = jobs_per_user(&w).await;
        assert_eq!(first, once_each(&guests[..1]), "{case}");
        let saved = resume_point(&w).await.unwrap().next_link;

        match case {
            "links expired" => w.graph.expire_delta_links(),
            "410" => w.graph.fail(GraphOp::UsersDelta, 1, || {
                GraphError::client(410, "syncStateNotFound", "expired")
            }),
            // Older than Graph keeps a round's state: not even tried.
            _ => w.clock.advance(Duration::days(6)),
        }
        w.clock.advance(Duration::minutes(15));
        w.graph.clear_calls();
        let r = w.app.reconciler.run_delta().await.unwrap();
        assert!(r.full && r.complete && !r.resumed, "{case}: {r:?}");
        assert_eq!((r.pages, r.jobs_enqueued), (4, 3), "{case}: from the start");
        let calls = w.graph.calls(GraphOp::UsersDelta);
        let from_start = match case {
            "6 days old" => &calls[..],
            _ => {
                assert_eq!(calls[0], saved, "{case}: tried first");
                &calls[1..]
            }
        };
        assert_eq!(from_start.len(), 4, "{case}: {calls:?}");
        assert_eq!(from_start[0], "start", "{case}");
        assert_eq!(jobs_per_user(&w).await, once_each(&guests), "{case}");
        assert!(checkpoint(&w).await.is_some(), "{case}");
        assert!(resume_point(&w).await.is_none(), "{case}");
    }
}

/// A full round, then `changed` guests renamed; returns when the full round completed.
async fn full_round_then_changes(w: &World, changed: &[ObjectId]) -> DateTime<Utc> {
    w.app.reconciler.run_delta().await.unwrap();
    w.drain().await;
    let full = now(w);
    w.clock.advance(Duration::hours(1));
    for id in changed {
        w.graph
            .update_user(id, |u| u.display_name = Some("Renamed".into()));
    }
    full
}

#[tokio::test]
async fn an_incremental_round_stopped_and_resumed_keeps_the_last_full_sync() {
    let w = World::new();
    w.graph.set_delta_page_size(1);
    let guests = tenant(&w, 4);
    let full = full_round_then_changes(&w, &guests).await;
    let before = checkpoint(&w).await.unwrap();
    pages_take_a_minute(&w);

    let r = run_for(&w, 2).await.unwrap();
    assert!(!r.full && !r.complete, "{r:?}");
    assert_eq!((r.pages, r.jobs_enqueued), (2, 2));
    assert_eq!(checkpoint(&w).await.unwrap(), before, "not moved");
    let point = resume_point(&w).await.unwrap();
    assert!(!point.full && point.reason_for_full.is_none());
    assert_eq!(point.checkpoint_at, Some(before.value.completed_at));

    w.clock.advance(Duration::minutes(15));
    let r = w.app.reconciler.run_delta().await.unwrap();
    assert!(!r.full && r.complete && r.resumed, "{r:?}");
    assert_eq!((r.pages, r.jobs_enqueued), (4, 4));
    let cp = checkpoint(&w).await.unwrap().value;
    assert_eq!(cp.completed_at, now(&w));
    assert_eq!(cp.full_sync_at, full, "the last full round is remembered");
    assert_eq!(jobs_per_user(&w).await, once_each(&guests));
}

#[tokio::test]
async fn an_incremental_round_whose_saved_position_is_refused_starts_again_from_the_checkpoint() {
    let w = World::new();
    w.graph.set_delta_page_size(1);
    let guests = tenant(&w, 3);
    let full = full_round_then_changes(&w, &guests).await;
    pages_take_a_minute(&w);
    run_for(&w, 1).await.unwrap();
    w.drain().await;

    w.graph.fail(GraphOp::UsersDelta, 1, || {
        GraphError::client(
            400,
            "Directory_ExpiredPageToken",
            "The specified page token value has expired.",
        )
    });
    w.clock.advance(Duration::minutes(15));
    let r = w.app.reconciler.run_delta().await.unwrap();
    assert!(!r.full && r.complete && !r.resumed, "no full round: {r:?}");
    assert_eq!((r.pages, r.jobs_enqueued), (3, 3));
    assert_eq!(checkpoint(&w).await.unwrap().value.full_sync_at, full);
    assert_eq!(jobs_per_user(&w).await, once_each(&guests));
}

#[tokio::test]
async fn a_position_left_by_a_round_that_completed_is_not_resumed() {
    let w = World::new();
    w.graph.set_delta_page_size(1);
    let guests = tenant(&w, 2);
    pages_take_a_minute(&w);
    run_for(&w, 1).await.unwrap();
    let stale = resume_point(&w).await.unwrap();
    w.app.reconciler.run_delta().await.unwrap();
    // A crash between the checkpoint's write and the position's removal.
    put_json(
        w.store.as_ref(),
        CHECKPOINTS,
        USERS_DELTA_RESUME,
        &stale,
        None,
    )
    .await
    .unwrap();
    let status = admin::status(w.store.as_ref(), w.queue.as_ref())
        .await
        .unwrap();
    assert!(status.delta_round_in_progress.is_none(), "not in progress");
    w.drain().await;

    w.clock.advance(Duration::minutes(15));
    w.graph
        .update_user(&guests[0], |u| u.display_name = Some("Renamed".into()));
    w.graph.clear_calls();
    let r = w.app.reconciler.run_delta().await.unwrap();
    assert!(!r.full && r.complete && !r.resumed, "{r:?}");
    assert_ne!(w.graph.calls(GraphOp::UsersDelta)[0], stale.next_link);
    assert_eq!(jobs_per_user(&w).await, once_each(&guests[..1]));
    assert!(
        resume_point(&w).await.is_none(),
        "removed at the round's end"
    );
}

#[tokio::test]
async fn two_reconcilers_cannot_both_move_a_round() {
    let w = World::new();
    w.graph.set_delta_page_size(1);
    tenant(&w, 3);
    pages_take_a_minute(&w);
    run_for(&w, 1).await.unwrap();
    let ours = resume_point(&w).await.unwrap();

    // Another reconciler resumes the same round and saves its next page first.
    let mut theirs = ours.clone();
    theirs.pages += 1;
    w.store.race_next_put(
        CHECKPOINTS,
        USERS_DELTA_RESUME,
        serde_json::to_vec(&theirs).unwrap(),
    );
    let e = run_for(&w, 1).await.unwrap_err();
    assert!(matches!(&e, AppError::State(s) if s.is_conflict()), "{e}");
    assert_eq!(resume_point(&w).await.unwrap(), theirs, "theirs stands");
}

#[tokio::test]
async fn a_sweep_waiting_for_a_full_round_waits_until_it_completes() {
    let w = World::new();
    w.graph.set_delta_page_size(1);
    tenant(&w, 3);
    let reconciler = &w.app.reconciler;
    let r = reconciler.scheduled_run(Roles::ALL, DAY).await.unwrap();
    assert!(r.sweep.is_some(), "never swept");

    w.clock.advance(Duration::hours(1));
    w.graph.expire_delta_links();
    pages_take_a_minute(&w);
    let r = reconciler
        .scheduled_run_until(Roles::ALL, DAY, in_minutes(&w, 1))
        .await
        .unwrap();
    let delta = r.delta.unwrap();
    assert!(delta.full && !delta.complete, "{delta:?}");
    assert!(
        r.sweep.is_none(),
        "the full round has not enumerated everyone"
    );

    w.clock.advance(Duration::minutes(15));
    let r = reconciler.scheduled_run(Roles::ALL, DAY).await.unwrap();
    let delta = r.delta.unwrap();
    assert!(delta.full && delta.complete && delta.resumed, "{delta:?}");
    assert!(r.sweep.is_some(), "after the full round");
}

#[tokio::test]
async fn a_sweep_due_waits_for_a_run_with_time_left() {
    let w = World::new();
    w.graph.set_delta_page_size(1);
    tenant(&w, 3);
    pages_take_a_minute(&w);
    let reconciler = &w.app.reconciler;
    let r = reconciler
        .scheduled_run_until(Roles::ALL, DAY, in_minutes(&w, 1))
        .await
        .unwrap();
    assert!(!r.delta.unwrap().complete);
    assert!(r.sweep.is_none(), "no time left");
    let r = reconciler
        .scheduled_run_until(Roles::ALL, DAY, in_minutes(&w, 60))
        .await
        .unwrap();
    assert!(r.delta.unwrap().complete);
    assert!(r.sweep.is_some(), "never swept");
}

#[tokio::test]
async fn a_checkpoint_stored_before_resumable_rounds_still_loads() {
    let w = World::new();
    let guest = w.graph.invite_guest("a@fabrikam.com");
    w.app.reconciler.run_delta().await.unwrap();
    w.drain().await;
    let kept = checkpoint(&w).await.unwrap();
    // As an earlier version wrote it, with no round in progress beside it.
    let earlier = format!(
        r#"{{"delta_link":"{}","completed_at":"2030-01-07T09:00:00Z","full_sync_at":"2030-01-01T00:00:00Z"}}"#,
        kept.value.delta_link
    );
    w.store
        .put(
            CHECKPOINTS,
            USERS_DELTA,
            earlier.into_bytes(),
            Some(kept.version),
        )
        .await
        .unwrap();

    w.clock.advance(Duration::minutes(15));
    w.graph
        .update_user(&guest, |u| u.display_name = Some("Renamed".into()));
    let r = w.app.reconciler.run_delta().await.unwrap();
    assert!(!r.full && r.complete && !r.resumed, "{r:?}");
    assert_eq!(r.jobs_enqueued, 1);
    let cp = checkpoint(&w).await.unwrap().value;
    assert_eq!(cp.full_sync_at.to_rfc3339(), "2030-01-01T00:00:00+00:00");
}
