//! The reconciler: delta rounds, sweeps and their schedule, against the fakes.

mod common;

use chrono::Duration;
use common::*;
use shadowsync_app::{AppError, Roles};
use shadowsync_ports::GraphError;
use shadowsync_queue::{ChangeType, Job, JobSource};
use shadowsync_state::put_json;
use shadowsync_state::records::{CHECKPOINTS, USERS_DELTA};
use shadowsync_testkit::GraphOp;

/// `(user, change type)` of every converge job on the queue (taken off it), sorted.
async fn jobs(w: &World) -> Vec<(shadowsync_core::ObjectId, Option<ChangeType>)> {
    let mut out: Vec<_> = w
        .drain()
        .await
        .into_iter()
        .map(|job| match job {
            Job::Converge {
                user_id,
                change_type,
                source,
                ..
            } => {
                assert_eq!(source, JobSource::Reconciler);
                (user_id, change_type)
            }
            other => panic!("{other:?}"),
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test]
async fn the_first_round_is_full_pages_through_and_enqueues_guests_only() {
    let w = World::new();
    w.graph.set_delta_page_size(2);
    let a = w.graph.invite_guest("a@fabrikam.com");
    let b = w.graph.invite_guest("b@fabrikam.com");
    let c = w.graph.invite_guest("c@fabrikam.com");
    w.graph.add_member("m@contoso.com", "Employee");

    let r = w.app.reconciler.run_delta().await.unwrap();
    assert!(r.full);
    assert_eq!(
        r.reason_for_full.as_deref(),
        Some("no delta checkpoint (first run)")
    );
    assert_eq!(
        (r.pages, r.users_seen, r.jobs_enqueued, r.removed, r.skipped),
        (2, 4, 3, 0, 0)
    );
    assert_eq!(
        jobs(&w).await,
        sorted(vec![a, b, c])
            .into_iter()
            .map(|id| (id, Some(ChangeType::Updated)))
            .collect::<Vec<_>>()
    );
    let cp = checkpoint(&w).await.expect("a checkpoint").value;
    assert!(cp.delta_link.contains("$deltatoken="), "{}", cp.delta_link);
    assert_eq!((cp.completed_at, cp.full_sync_at), (now(&w), now(&w)));
}

#[tokio::test]
async fn an_incremental_round_sees_only_what_changed() {
    let w = World::new();
    let a = w.graph.invite_guest("a@fabrikam.com");
    w.graph.invite_guest("b@fabrikam.com");
    w.app.reconciler.run_delta().await.unwrap();
    w.drain().await;
    let first = now(&w);

    w.clock.advance(Duration::minutes(15));
    w.graph
        .update_user(&a, |u| u.display_name = Some("A. New Name".into()));
    let r = w.app.reconciler.run_delta().await.unwrap();
    assert!(!r.full && r.reason_for_full.is_none());
    assert_eq!((r.users_seen, r.jobs_enqueued), (1, 1));
    assert_eq!(jobs(&w).await, vec![(a, Some(ChangeType::Updated))]);
    let cp = checkpoint(&w).await.unwrap().value;
    assert_eq!(cp.completed_at, now(&w));
    assert_eq!(cp.full_sync_at, first, "the last full round is remembered");

    let r = w.app.reconciler.run_delta().await.unwrap();
    assert_eq!((r.users_seen, r.jobs_enqueued), (0, 0));
}

#[tokio::test]
async fn a_former_guest_with_a_record_gets_a_job_a_member_without_one_does_not() {
    let w = World::new();
    let former = w.graph.invite_guest("former@fabrikam.com");
    let member = w.graph.add_member("m@contoso.com", "Employee");
    w.converge(&former).await;
    w.app.reconciler.run_delta().await.unwrap();
    w.drain().await;
    w.clock.advance(Duration::minutes(1));

    w.graph
        .update_user(&former, |u| u.user_type = Some("Member".into()));
    w.graph
        .update_user(&member, |u| u.display_name = Some("Renamed".into()));
    let r = w.app.reconciler.run_delta().await.unwrap();
    assert_eq!((r.users_seen, r.jobs_enqueued), (2, 1));
    assert_eq!(jobs(&w).await, vec![(former, Some(ChangeType::Updated))]);
}

#[tokio::test]
async fn an_item_without_user_type_is_left_to_converge() {
    let w = World::new();
    let member = w.graph.add_member("m@contoso.com", "Employee");
    w.app.reconciler.run_delta().await.unwrap();
    w.graph.set_partial_delta_items(true);
    w.graph
        .update_user(&member, |u| u.display_name = Some("Renamed".into()));
    let r = w.app.reconciler.run_delta().await.unwrap();
    assert_eq!(r.jobs_enqueued, 1, "it could be a guest");
    assert_eq!(jobs(&w).await, vec![(member, Some(ChangeType::Updated))]);
}

#[tokio::test]
async fn removed_items_are_updates_when_soft_and_deletions_when_permanent() {
    let w = World::new();
    let soft = w.graph.invite_guest("soft@fabrikam.com");
    let gone = w.graph.invite_guest("gone@fabrikam.com");
    w.app.reconciler.run_delta().await.unwrap();
    w.drain().await;
    w.clock.advance(Duration::minutes(1));
    w.graph.soft_delete(&soft);
    w.graph.delete_permanently(&gone);
    let r = w.app.reconciler.run_delta().await.unwrap();
    assert_eq!((r.removed, r.jobs_enqueued), (2, 2));
    let mut want = vec![
        (soft, Some(ChangeType::Updated)),
        (gone, Some(ChangeType::Deleted)),
    ];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(jobs(&w).await, want);
}

#[tokio::test]
async fn an_expired_delta_token_starts_a_full_round_and_says_why() {
    let w = World::new();
    let a = w.graph.invite_guest("a@fabrikam.com");
    w.app.reconciler.run_delta().await.unwrap();
    w.drain().await;

    w.graph.expire_delta_links();
    w.clock.advance(Duration::minutes(1));
    let r = w.app.reconciler.run_delta().await.unwrap();
    assert!(r.full);
    let reason = r.reason_for_full.unwrap();
    assert!(
        reason.starts_with("delta token expired") && reason.contains("syncStateNotFound"),
        "{reason}"
    );
    assert_eq!(jobs(&w).await, vec![(a.clone(), Some(ChangeType::Updated))]);
    assert_eq!(checkpoint(&w).await.unwrap().value.full_sync_at, now(&w));

    // The same code with a plain 400, as the docs also describe it.
    w.graph.fail(GraphOp::UsersDelta, 1, || {
        GraphError::client(400, "syncStateNotFound", "expired")
    });
    w.clock.advance(Duration::minutes(1));
    assert!(w.app.reconciler.run_delta().await.unwrap().full);

    // Tokens live 7 days of Graph's time.
    w.graph.clock().advance(Duration::days(7));
    w.clock.advance(Duration::minutes(1));
    let r = w.app.reconciler.run_delta().await.unwrap();
    assert!(r.full && r.reason_for_full.unwrap().contains("410"));
}

#[tokio::test]
async fn a_delta_link_of_another_graph_endpoint_starts_a_full_round() {
    let w = World::new();
    let a = w.graph.invite_guest("a@fabrikam.com");
    w.app.reconciler.run_delta().await.unwrap();
    w.drain().await;
    // The configuration moved to another endpoint (another tenant's simulator, a national
    // cloud): the kept link is not sent the token, and is no use there.
    let kept = checkpoint(&w).await.unwrap();
    let mut moved = kept.value.clone();
    moved.delta_link = "https://graph.elsewhere.test/v1.0/users/delta?$deltatoken=1".into();
    put_json(
        w.store.as_ref(),
        CHECKPOINTS,
        USERS_DELTA,
        &moved,
        Some(kept.version),
    )
    .await
    .unwrap();
    w.clock.advance(Duration::minutes(1));
    let r = w.app.reconciler.run_delta().await.unwrap();
    assert!(r.full, "{r:?}");
    assert!(
        r.reason_for_full
            .unwrap()
            .contains("another Graph endpoint"),
        "the reason says why"
    );
    assert_eq!(jobs(&w).await, vec![(a, Some(ChangeType::Updated))]);
}

#[tokio::test]
async fn an_unreadable_item_is_skipped_and_counted() {
    let w = World::new();
    let a = w.graph.invite_guest("a@fabrikam.com");
    w.graph.add_unreadable_delta_item();
    let r = w.app.reconciler.run_delta().await.unwrap();
    assert_eq!((r.users_seen, r.skipped, r.jobs_enqueued), (2, 1, 1));
    assert_eq!(jobs(&w).await, vec![(a, Some(ChangeType::Updated))]);
}

#[tokio::test]
async fn a_round_that_fails_half_way_leaves_the_checkpoint_where_it_was() {
    let w = World::new();
    w.graph.set_delta_page_size(1);
    let guests: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| w.graph.invite_guest(&format!("{n}@fabrikam.com")))
        .collect();

    // A first round that fails leaves no checkpoint.
    w.graph.fail_after(GraphOp::UsersDelta, 1, 1, server_error);
    let e = w.app.reconciler.run_delta().await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(checkpoint(&w).await.is_none());

    w.app.reconciler.run_delta().await.unwrap();
    w.drain().await;
    let before = checkpoint(&w).await.unwrap();
    for id in &guests {
        w.graph
            .update_user(id, |u| u.display_name = Some("Changed".into()));
    }
    w.clock.advance(Duration::minutes(15));
    w.graph.fail_after(GraphOp::UsersDelta, 1, 1, server_error);
    let e = w.app.reconciler.run_delta().await.unwrap_err();
    assert!(e.is_retryable() && e.kind() == "Graph", "{e}");
    assert_eq!(checkpoint(&w).await.unwrap(), before, "not moved");

    // The next run goes on from the page that failed; the round sees every change.
    let r = w.app.reconciler.run_delta().await.unwrap();
    assert!(!r.full && r.resumed);
    assert_eq!((r.pages, r.jobs_enqueued), (3, 3), "the round's, both runs");
    assert_eq!(
        jobs(&w).await,
        sorted(guests)
            .into_iter()
            .map(|id| (id, Some(ChangeType::Updated)))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_sweep_enqueues_every_anchored_account_and_reports_the_others() {
    let w = World::new();
    let enabled = w.graph.invite_guest("a@fabrikam.com");
    let disabled = w.graph.invite_guest("b@fabrikam.com");
    let no_account = w.graph.invite_guest("no-account@fabrikam.com");
    w.converge(&enabled).await;
    w.converge(&disabled).await;
    w.graph.soft_delete(&disabled);
    w.converge(&disabled).await;
    let stray = w
        .directory
        .add_employee(
            GUESTS_OU,
            "Stray Employee",
            "stray",
            "stray@corp.example.test",
        )
        .unwrap();
    let bad = w
        .directory
        .add_anchored_user(
            DISABLED_OU,
            "Bad Anchor",
            "badanchor",
            "User_alice@fabrikam.com",
        )
        .unwrap();
    let before = w.directory.objects();

    let r = w.app.reconciler.sweep().await.unwrap();
    assert_eq!((r.accounts, r.jobs_enqueued, r.guests_checked), (4, 3, 2));
    assert_eq!(r.unmanaged, vec![stray, bad]);
    assert_eq!(
        jobs(&w).await,
        sorted(vec![enabled, disabled, no_account])
            .into_iter()
            .map(|id| (id, None))
            .collect::<Vec<_>>(),
        "every anchored account, and the guest without one (no scope group needed)"
    );
    assert_eq!(w.directory.objects(), before, "a sweep writes nothing");
}

#[tokio::test]
async fn a_guest_invited_while_ad_was_down_gets_an_account_from_the_next_sweep() {
    let w = World::new();
    let reconciler = &w.app.reconciler;
    reconciler.scheduled_run(Roles::ALL, DAY).await.unwrap();
    let late = w.graph.invite_guest("during-the-reboot@fabrikam.com");
    // The round reports the guest; its job fails for good while the DC reboots (dead letter),
    // and the checkpoint moves on: delta will not report the guest again.
    w.clock.advance(Duration::hours(1));
    assert_eq!(reconciler.run_delta().await.unwrap().jobs_enqueued, 1);
    w.drain().await;
    assert_eq!(
        reconciler.run_delta().await.unwrap().jobs_enqueued,
        0,
        "delta is done with it"
    );
    w.clock.advance(Duration::days(1));
    let r = reconciler.scheduled_run(Roles::ALL, DAY).await.unwrap();
    assert!(r.sweep.is_some());
    let ids: Vec<_> = jobs(&w).await.into_iter().map(|(id, _)| id).collect();
    assert!(ids.contains(&late), "{ids:?}");
}

#[tokio::test]
async fn a_due_sweep_runs_even_when_the_delta_round_fails() {
    let w = World::new();
    let id = w.graph.invite_guest("a@fabrikam.com");
    w.converge(&id).await;
    w.graph.fail(GraphOp::UsersDelta, 1, || GraphError::Server {
        status: 503,
        code: "serviceUnavailable".into(),
        message: "down".into(),
    });
    let e = w
        .app
        .reconciler
        .scheduled_run(Roles::ALL, DAY)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("down"), "{e}");
    let ids: Vec<_> = jobs(&w).await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![id], "swept although the round failed");
}

#[tokio::test]
async fn with_a_scope_group_a_sweep_enqueues_guests_without_an_account() {
    let w = Setup {
        scope_group: true,
        ..Setup::default()
    }
    .build();
    let group = w.scope_group.clone().unwrap();
    w.graph.set_guests_page_size(2);
    let direct = w.graph.invite_guest("direct@fabrikam.com");
    let nested = w.graph.invite_guest("nested@fabrikam.com");
    let outside = w.graph.invite_guest("outside@fabrikam.com");
    w.graph.add_member("m@contoso.com", "Employee");
    w.graph.add_to_group(&group, &direct);
    w.converge(&direct).await;
    // Joining through a nested group changes nothing users delta would report.
    let team = w.graph.create_group();
    w.graph.add_to_group(&group, &team);
    w.graph.add_to_group(&team, &nested);

    let r = w.app.reconciler.sweep().await.unwrap();
    assert_eq!((r.accounts, r.guests_checked, r.jobs_enqueued), (1, 3, 3));
    let ids: Vec<_> = jobs(&w).await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, sorted(vec![direct, nested.clone(), outside.clone()]));
    assert_eq!(w.graph.call_count(GraphOp::Guests), 2, "two pages");

    w.converge(&nested).await;
    w.converge(&outside).await;
    assert!(w.account_of(&nested).is_some(), "provisioned");
    assert!(
        w.account_of(&outside).is_none(),
        "converge checks the group"
    );
}

#[tokio::test]
async fn scheduled_runs_sweep_when_due_and_after_a_full_round() {
    let w = World::new();
    w.graph.invite_guest("a@fabrikam.com");
    let reconciler = &w.app.reconciler;

    let r = reconciler.scheduled_run(Roles::ALL, DAY).await.unwrap();
    assert!(r.delta.unwrap().full);
    let sweep = r.sweep.expect("never swept");
    // The full round queued every user: the sweep does not list the guests again.
    assert!(sweep.guests_covered_by_full_round);
    assert_eq!((sweep.guests_checked, sweep.jobs_enqueued), (0, 0));
    assert_eq!(w.graph.call_count(GraphOp::Guests), 0);
    assert_eq!(jobs(&w).await.len(), 1, "one job for the one guest");

    w.clock.advance(Duration::hours(1));
    let r = reconciler.scheduled_run(Roles::ALL, DAY).await.unwrap();
    assert!(!r.delta.unwrap().full);
    assert!(r.sweep.is_none(), "swept an hour ago");

    w.clock.advance(Duration::hours(23) - Duration::seconds(1));
    let r = reconciler.scheduled_run(Roles::ALL, DAY).await.unwrap();
    assert!(r.sweep.is_none(), "not yet");
    w.clock.advance(Duration::seconds(1));
    let r = reconciler.scheduled_run(Roles::ALL, DAY).await.unwrap();
    let sweep = r.sweep.expect("a day since the last sweep");
    assert!(!sweep.guests_covered_by_full_round, "no full round since");
    assert_eq!(sweep.guests_checked, 1);

    w.clock.advance(Duration::hours(1));
    w.graph.expire_delta_links();
    let r = reconciler.scheduled_run(Roles::ALL, DAY).await.unwrap();
    assert!(r.delta.unwrap().full);
    let sweep = r.sweep.expect("after a full round");
    assert!(sweep.guests_covered_by_full_round);
}

#[tokio::test]
async fn a_sweeping_host_sweeps_after_a_full_round_elsewhere() {
    let w = World::new();
    w.graph.invite_guest("a@fabrikam.com");
    let reconciler = &w.app.reconciler;
    let r = reconciler.scheduled_run(Roles::SWEEP, DAY).await.unwrap();
    assert!(r.delta.is_none() && r.sweep.is_some());
    assert_eq!(w.graph.call_count(GraphOp::UsersDelta), 0);

    w.clock.advance(Duration::hours(1));
    assert!(reconciler
        .scheduled_run(Roles::SWEEP, DAY)
        .await
        .unwrap()
        .sweep
        .is_none());

    // The cloud's reconciler (same state) completes a full round.
    w.clock.advance(Duration::hours(1));
    assert!(reconciler.run_delta().await.unwrap().full);
    w.clock.advance(Duration::hours(1));
    let r = reconciler.scheduled_run(Roles::SWEEP, DAY).await.unwrap();
    assert!(r.sweep.is_some());
}

#[tokio::test]
async fn a_host_without_the_directory_cannot_sweep() {
    let w = Setup {
        directory: false,
        ..Setup::default()
    }
    .build();
    let e = w
        .app
        .reconciler
        .scheduled_run(Roles::SWEEP, DAY)
        .await
        .unwrap_err();
    assert!(matches!(e, AppError::Missing(_)), "{e}");
    assert!(!e.is_retryable());
    let r = w
        .app
        .reconciler
        .scheduled_run(Roles::DELTA, DAY)
        .await
        .unwrap();
    assert!(r.delta.is_some() && r.sweep.is_none());
}

#[tokio::test]
async fn repeated_items_and_empty_pages_make_one_job_each() {
    let w = World::new();
    w.graph.set_delta_page_size(2);
    w.graph.set_duplicate_delta_items(true);
    w.graph.set_empty_delta_pages(true);
    let a = w.graph.invite_guest("a@fabrikam.com");
    let b = w.graph.invite_guest("b@fabrikam.com");
    let c = w.graph.invite_guest("c@fabrikam.com");

    let r = w.app.reconciler.run_delta().await.unwrap();
    // 6 items (each twice) in 3 pages, each after an empty one.
    assert_eq!((r.pages, r.users_seen, r.jobs_enqueued), (6, 6, 3));
    let want: Vec<_> = sorted(vec![a.clone(), b, c])
        .into_iter()
        .map(|id| (id, Some(ChangeType::Updated)))
        .collect();
    assert_eq!(jobs(&w).await, want);

    w.clock.advance(Duration::minutes(1));
    w.graph
        .update_user(&a, |u| u.display_name = Some("A".into()));
    w.graph.soft_delete(&a);
    let r = w.app.reconciler.run_delta().await.unwrap();
    assert_eq!(r.jobs_enqueued, 1, "{r:?}");
    assert_eq!(jobs(&w).await, vec![(a, Some(ChangeType::Updated))]);
}

#[tokio::test]
async fn a_full_round_whose_state_is_lost_midway_starts_over() {
    let w = World::new();
    w.graph.set_delta_page_size(1);
    let a = w.graph.invite_guest("a@fabrikam.com");
    let b = w.graph.invite_guest("b@fabrikam.com");
    // The second page of the first attempt answers 410 resyncRequired.
    w.graph.fail_after(GraphOp::UsersDelta, 1, 1, || {
        GraphError::client(410, "resyncRequired", "start again")
    });
    let r = w.app.reconciler.run_delta().await.unwrap();
    assert!(r.full);
    assert_eq!(r.pages, 2, "the round that completed");
    assert!(checkpoint(&w).await.is_some());
    let ids: Vec<_> = jobs(&w).await.into_iter().map(|(id, _)| id).collect();
    // The first attempt's job for the first page, then both again (same clock: the queue's
    // deduplication folds the repeat).
    assert_eq!(ids, sorted(vec![a, b]));

    // Graph that keeps losing it: the run fails, nothing is recorded, the next run tries again.
    let w = World::new();
    w.graph.set_delta_page_size(1);
    w.graph.invite_guest("a@fabrikam.com");
    w.graph.invite_guest("b@fabrikam.com");
    for _ in 0..3 {
        w.graph.fail_after(GraphOp::UsersDelta, 1, 1, || {
            GraphError::client(400, "syncStateNotFound", "expired")
        });
    }
    let e = w.app.reconciler.run_delta().await.unwrap_err();
    assert!(e.graph_error().unwrap().is_sync_state_lost(), "{e}");
    assert!(checkpoint(&w).await.is_none());
}
