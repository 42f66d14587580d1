//! The safety rails against the fakes: the accidental-change threshold, pre-flight (tenant,
//! scope group), and what an administrator does with held changes.

mod common;

use chrono::Duration;
use common::*;
use shadowsync_app::admin::{self, HeldSelection};
use shadowsync_app::safety::held_changes;
use shadowsync_app::{Hint, JobHandler, SafetyLimits};
use shadowsync_core::{ObjectId, Operation};
use shadowsync_ports::{Graph, GraphIdentity};
use shadowsync_state::records::{CHECKPOINTS, SAFETY_GUARD};
use shadowsync_state::{AccountStatus, Destructive, SafetyGuard};
use shadowsync_testkit::GraphOp;

fn limits(disables: u32, deletes: u32) -> SafetyLimits {
    SafetyLimits {
        max_disables_per_hour: disables,
        max_deletes_per_hour: deletes,
    }
}

fn world(limits: SafetyLimits) -> World {
    Setup {
        safety: limits,
        ..Setup::default()
    }
    .build()
}

fn scoped(limits: SafetyLimits) -> World {
    Setup {
        safety: limits,
        scope_group: true,
        ..Setup::default()
    }
    .build()
}

/// `n` guests with enabled accounts (in the scope group, when there is one).
async fn guests(w: &World, n: usize) -> Vec<ObjectId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = w.graph.invite_guest(&format!("partner{i}@fabrikam.com"));
        if let Some(group) = &w.scope_group {
            w.graph.add_to_group(group, &id);
        }
        let out = w.converge(&id).await;
        assert_eq!(out.status, AccountStatus::Enabled);
        ids.push(id);
    }
    ids
}

fn enabled(w: &World, ids: &[ObjectId]) -> usize {
    ids.iter()
        .filter(|id| w.account_of(id).is_some_and(|a| a.is_enabled()))
        .count()
}

/// `held release` of everything; how many were released.
async fn release_all(w: &World) -> usize {
    admin::release_held(
        w.store.as_ref(),
        w.queue.as_ref(),
        w.graph.identity(),
        &HeldSelection::default(),
    )
    .await
    .unwrap()
    .len()
}

async fn status(w: &World) -> admin::StatusReport {
    admin::status(w.store.as_ref(), w.queue.as_ref())
        .await
        .unwrap()
}

#[tokio::test]
async fn past_the_threshold_disables_are_held_not_applied_and_not_dropped() {
    let w = world(limits(3, 100));
    let ids = guests(&w, 6).await;
    for id in &ids {
        w.graph.soft_delete(id);
    }
    let mut held = 0;
    for id in &ids {
        let out = w.converge(id).await;
        if let Some(reason) = &out.held {
            held += 1;
            assert!(reason.contains("max_disables_per_hour is 3"), "{reason}");
            assert!(!out.applied);
            assert_eq!(out.status, AccountStatus::Enabled, "left as it is");
            assert!(matches!(out.plan.as_slice(), [Operation::Disable { .. }]));
        }
    }
    assert_eq!(held, 3);
    assert_eq!(enabled(&w, &ids), 3, "three disabled, three held");

    let report = status(&w).await;
    assert_eq!(report.safety.held, 3);
    assert_eq!(report.safety.disables_last_hour, 3);
    assert!(report.safety.tripped.is_some());
    let list = held_changes(w.store.as_ref()).await.unwrap();
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|c| c.change == Destructive::Disable));

    // Converging again holds again: nothing leaks through, one record per guest.
    for id in &ids {
        w.converge(id).await;
    }
    assert_eq!(enabled(&w, &ids), 3);
    assert_eq!(held_changes(w.store.as_ref()).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_tripped_threshold_holds_everything_until_an_administrator_acts_not_just_this_hour() {
    let w = world(limits(1, 100));
    let ids = guests(&w, 4).await;
    for id in &ids {
        w.graph.soft_delete(id);
    }
    w.converge(&ids[0]).await;
    assert!(
        w.converge(&ids[1]).await.held.is_some(),
        "the second trips it"
    );
    // An hour later the window is empty, but the threshold stays tripped: a mass change does
    // not trickle through at the threshold's pace.
    w.advance(Duration::hours(2));
    assert!(w.converge(&ids[2]).await.held.is_some());
    assert_eq!(enabled(&w, &ids), 3);
}

#[tokio::test]
async fn within_the_threshold_the_window_rolls() {
    let w = world(limits(2, 100));
    let ids = guests(&w, 4).await;
    for id in &ids {
        w.graph.soft_delete(id);
    }
    w.converge(&ids[0]).await;
    w.converge(&ids[1]).await;
    w.advance(Duration::minutes(61));
    assert!(
        w.converge(&ids[2]).await.held.is_none(),
        "the first two are an hour old"
    );
    assert_eq!(status(&w).await.safety.disables_last_hour, 1);
}

#[tokio::test]
async fn creates_updates_and_enables_go_on_while_the_threshold_is_tripped() {
    let w = world(limits(0, 100));
    let ids = guests(&w, 1).await;
    w.graph.soft_delete(&ids[0]);
    assert!(w.converge(&ids[0]).await.held.is_some());

    let newcomer = w.graph.invite_guest("new@fabrikam.com");
    let out = w.converge(&newcomer).await;
    assert_eq!(out.status, AccountStatus::Enabled);
    assert!(out.held.is_none());
}

#[tokio::test]
async fn deletes_have_their_own_limit() {
    let w = world(limits(100, 1));
    let ids = guests(&w, 3).await;
    for id in &ids {
        w.graph.soft_delete(id);
        w.converge(id).await;
    }
    w.advance(Duration::days(31));
    let outcomes = [
        w.converge(&ids[0]).await,
        w.converge(&ids[1]).await,
        w.converge(&ids[2]).await,
    ];
    assert!(matches!(
        outcomes[0].plan.as_slice(),
        [Operation::Delete { .. }]
    ));
    assert!(outcomes[0].held.is_none());
    let reason = outcomes[1].held.as_deref().expect("held");
    assert!(reason.contains("max_deletes_per_hour is 1"), "{reason}");
    assert_eq!(outcomes[1].status, AccountStatus::Disabled);
    assert!(outcomes[2].held.is_some());
    assert!(w.account_of(&ids[1]).is_some() && w.account_of(&ids[2]).is_some());
}

#[tokio::test]
async fn a_held_change_no_longer_needed_is_forgotten() {
    let w = world(limits(0, 100));
    let ids = guests(&w, 1).await;
    w.graph.soft_delete(&ids[0]);
    assert!(w.converge(&ids[0]).await.held.is_some());
    w.graph.restore(&ids[0]);
    let out = w.converge(&ids[0]).await;
    assert!(out.held.is_none() && out.plan.is_empty());
    assert!(held_changes(w.store.as_ref()).await.unwrap().is_empty());
}

#[tokio::test]
async fn release_applies_the_held_changes_and_resets_the_threshold() {
    let w = world(limits(1, 100));
    let ids = guests(&w, 3).await;
    for id in &ids {
        w.graph.soft_delete(id);
        w.converge(id).await;
    }
    assert_eq!(enabled(&w, &ids), 2);
    w.drain().await;

    assert_eq!(release_all(&w).await, 2);
    let jobs = w.drain().await;
    assert_eq!(
        converge_ids(&jobs),
        sorted(ids[1..].to_vec()),
        "one job each"
    );
    for id in &ids[1..] {
        let out = w.converge(id).await;
        assert!(out.held.is_none() && out.applied, "{out:?}");
    }
    assert_eq!(enabled(&w, &ids), 0);
    let report = status(&w).await;
    assert_eq!(report.safety.held, 0);
    assert!(report.safety.tripped.is_none(), "reset");
    assert_eq!(
        report.safety.disables_last_hour, 0,
        "released ones are not counted"
    );
}

#[tokio::test]
async fn release_by_upn_lets_only_that_guest_through() {
    let w = world(limits(0, 100));
    let ids = guests(&w, 2).await;
    for id in &ids {
        w.graph.soft_delete(id);
        w.converge(id).await;
    }
    let upn = w.graph.stored_user(&ids[1]).unwrap().user_principal_name;
    let selection = HeldSelection {
        users: vec![upn.unwrap().to_uppercase()],
    };
    let released = admin::release_held(
        w.store.as_ref(),
        w.queue.as_ref(),
        w.graph.identity(),
        &selection,
    )
    .await
    .unwrap();
    assert_eq!(released.len(), 1);
    assert!(w.converge(&ids[1]).await.applied);
    assert!(
        w.converge(&ids[0]).await.held.is_some(),
        "the other stays held"
    );
    assert!(status(&w).await.safety.tripped.is_some(), "not reset");

    let unknown = HeldSelection {
        users: vec!["nobody@fabrikam.com".into()],
    };
    let e = admin::discard_held(w.store.as_ref(), &unknown)
        .await
        .unwrap_err();
    assert!(e
        .to_string()
        .contains("no held change for nobody@fabrikam.com"));
}

#[tokio::test]
async fn discard_drops_held_changes_and_the_threshold_still_holds_new_ones() {
    let w = world(limits(0, 100));
    let ids = guests(&w, 2).await;
    for id in &ids {
        w.graph.soft_delete(id);
        w.converge(id).await;
    }
    let dropped = admin::discard_held(w.store.as_ref(), &HeldSelection::default())
        .await
        .unwrap();
    assert_eq!(dropped.len(), 2);
    assert!(held_changes(w.store.as_ref()).await.unwrap().is_empty());
    assert_eq!(enabled(&w, &ids), 2, "nothing applied");
    // The cause remains: the next converge holds it again.
    assert!(w.converge(&ids[0]).await.held.is_some());
}

#[tokio::test]
async fn a_deleted_scope_group_disables_nobody() {
    let w = scoped(SafetyLimits::default());
    let ids = guests(&w, 3).await;
    w.graph.delete_group(w.scope_group.as_ref().unwrap());
    for id in &ids {
        let out = w.converge(id).await;
        let reason = out.held.as_deref().expect("held");
        assert!(reason.contains("scope group"), "{reason}");
    }
    assert_eq!(enabled(&w, &ids), 3);
    let report = status(&w).await;
    assert_eq!(report.safety.held, 3);
    assert!(
        report.safety.tripped.is_none(),
        "a pre-flight hold is not counted"
    );
    assert_eq!(
        w.graph.call_count(GraphOp::GroupExists),
        1,
        "pre-flight is asked once a minute, not per guest"
    );
}

#[tokio::test]
async fn a_scope_group_that_exists_lets_out_of_scope_guests_be_disabled() {
    let w = scoped(SafetyLimits::default());
    let ids = guests(&w, 2).await;
    w.graph
        .remove_from_group(w.scope_group.as_ref().unwrap(), &ids[0]);
    let out = w.converge(&ids[0]).await;
    assert!(out.held.is_none() && out.applied);
    assert!(!w.account_of(&ids[0]).unwrap().is_enabled());
}

#[tokio::test]
async fn another_tenant_disables_nobody_until_an_administrator_accepts_it() {
    let w = world(SafetyLimits::default());
    let ids = guests(&w, 2).await;
    // The first disable records the tenant the accounts belong to.
    w.graph.soft_delete(&ids[0]);
    assert!(w.converge(&ids[0]).await.held.is_none());

    w.graph.set_identity(GraphIdentity {
        tenant: "0b7e1c44-2f0a-4b55-9d1e-7c3a5f6e8d90".into(),
        client_id: w.graph.identity().client_id,
    });
    w.advance(Duration::minutes(2));
    w.graph.soft_delete(&ids[1]);
    let out = w.converge(&ids[1]).await;
    let reason = out.held.as_deref().expect("held");
    assert!(
        reason.contains("0b7e1c44-2f0a-4b55-9d1e-7c3a5f6e8d90"),
        "{reason}"
    );
    assert!(w.account_of(&ids[1]).unwrap().is_enabled());

    release_all(&w).await;
    assert!(w.converge(&ids[1]).await.applied);
    // Accepted: the next one goes through too.
    w.advance(Duration::minutes(2));
    let third = w.graph.invite_guest("third@fabrikam.com");
    w.converge(&third).await;
    w.graph.soft_delete(&third);
    assert!(w.converge(&third).await.held.is_none());
}

#[tokio::test]
async fn a_dry_run_shows_what_would_be_held_and_writes_nothing() {
    let w = world(limits(0, 100));
    let ids = guests(&w, 1).await;
    w.graph.soft_delete(&ids[0]);
    let out = w
        .converger()
        .dry_run(&ids[0], Hint::default())
        .await
        .unwrap();
    assert!(
        out.held.is_none(),
        "the hour's count is not judged in a dry run"
    );
    w.converge(&ids[0]).await;
    let out = w
        .converger()
        .dry_run(&ids[0], Hint::default())
        .await
        .unwrap();
    assert!(out.held.is_some());
    assert_eq!(out.status, AccountStatus::Enabled);
    assert_eq!(held_changes(w.store.as_ref()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn workers_hold_and_count_held_changes() {
    let w = world(limits(0, 100));
    let ids = guests(&w, 1).await;
    w.graph.soft_delete(&ids[0]);
    w.app
        .jobs
        .handle(&shadowsync_queue::Job::Converge {
            user_id: ids[0].clone(),
            change_type: None,
            subscription_id: None,
            received_at: now(&w),
            source: shadowsync_queue::JobSource::Reconciler,
        })
        .await
        .expect("a hold is not a failure: the job is done");
    assert_eq!(w.app.metrics.snapshot().held, 1);
    assert!(w.account_of(&ids[0]).unwrap().is_enabled());
}

#[tokio::test]
async fn two_workers_counting_at_once_both_count() {
    let w = world(limits(2, 100));
    let ids = guests(&w, 3).await;
    for id in &ids {
        w.graph.soft_delete(id);
    }
    w.converge(&ids[0]).await;
    // Another worker counts a disable just before ours is written.
    let mut theirs = SafetyGuard::default();
    for _ in 0..2 {
        theirs.add(Destructive::Disable, now(&w), now(&w) - Duration::hours(1));
    }
    w.store.race_next_put(
        CHECKPOINTS,
        SAFETY_GUARD,
        serde_json::to_vec(&theirs).unwrap(),
    );
    let out = w.converge(&ids[1]).await;
    assert!(
        out.held.is_some(),
        "counted again after losing the race: the limit holds"
    );
}

#[tokio::test]
async fn each_round_decides_pre_flight_holds_again_and_leaves_a_tripped_threshold_to_people() {
    let w = scoped(SafetyLimits::default());
    let ids = guests(&w, 2).await;
    let group = w.scope_group.clone().unwrap();
    w.graph.delete_group(&group);
    for id in &ids {
        assert!(w.converge(id).await.held.is_some());
    }
    w.drain().await;
    let rechecked = w.app.reconciler.recheck_held().await.unwrap();
    assert_eq!(rechecked, 2);
    assert_eq!(converge_ids(&w.drain().await), sorted(ids.clone()));

    // Tripped: nothing is sent again.
    let w = world(limits(0, 100));
    let ids = guests(&w, 1).await;
    w.graph.soft_delete(&ids[0]);
    w.converge(&ids[0]).await;
    w.drain().await;
    assert_eq!(w.app.reconciler.recheck_held().await.unwrap(), 0);
    assert!(w.drain().await.is_empty());
}
