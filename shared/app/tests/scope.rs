//! Scope-group changes over the fakes: the tree of nested groups, each group's delta, and the
//! converge jobs a change becomes.

mod common;

use common::*;
use shadowsync_app::JobHandler;
use shadowsync_app::ScopeGroups;
use shadowsync_core::ObjectId;
use shadowsync_queue::Job;
use shadowsync_state::{AccountStatus, KeyValueStore};
use std::collections::BTreeSet;
use std::sync::Arc;

fn world() -> World {
    Setup {
        scope_group: true,
        ..Setup::default()
    }
    .build()
}

fn scope(w: &World) -> Arc<ScopeGroups> {
    w.app.scope_groups.clone().expect("a scope group")
}

fn groups_changed(jobs: &[Job]) -> BTreeSet<ObjectId> {
    jobs.iter()
        .filter_map(|j| match j {
            Job::GroupChanged { group_id, .. } => Some(group_id.clone()),
            _ => None,
        })
        .collect()
}

/// The tree checked and every group's first round read: what is queued after is a change's.
async fn settled(w: &World) -> (ObjectId, ObjectId) {
    let root = w.scope_group.clone().unwrap();
    let nested = w.graph.create_group();
    w.graph.add_to_group(&root, &nested);
    let s = scope(w);
    let tree = s.ensure_tree().await.unwrap();
    assert_eq!((tree.groups, tree.joined), (2, 2));
    let jobs = w.drain().await;
    assert_eq!(
        groups_changed(&jobs),
        BTreeSet::from([root.clone(), nested.clone()])
    );
    for group in [&root, &nested] {
        let first = s.changed(group).await.unwrap();
        assert!(first.full_round);
    }
    w.drain().await;
    (root, nested)
}

#[tokio::test]
async fn a_guest_added_to_the_scope_group_or_a_nested_one_is_converged_at_once() {
    let w = world();
    let (root, nested) = settled(&w).await;
    let ada = w.graph.invite_guest("ada@fabrikam.com");
    let bob = w.graph.invite_guest("bob@fabrikam.com");
    w.graph.add_to_group(&root, &ada);
    w.graph.add_to_group(&nested, &bob);

    let report = scope(&w).changed(&root).await.unwrap();
    assert_eq!(report.users, 1);
    assert!(!report.full_round);
    let jobs = w.drain().await;
    assert_eq!(converge_ids(&jobs), std::slice::from_ref(&ada));
    for job in &jobs {
        w.app.jobs.handle(job).await.unwrap();
    }
    assert_eq!(
        w.record(&ada).await.unwrap().value.status,
        AccountStatus::Enabled
    );

    scope(&w).changed(&nested).await.unwrap();
    let jobs = w.drain().await;
    assert_eq!(converge_ids(&jobs), std::slice::from_ref(&bob));
    w.app.jobs.handle(&jobs[0]).await.unwrap();
    assert_eq!(
        w.record(&bob).await.unwrap().value.status,
        AccountStatus::Enabled
    );

    // Removed from the scope group: converged again, and disabled (out of scope).
    w.graph.remove_from_group(&root, &ada);
    scope(&w).changed(&root).await.unwrap();
    let jobs = w.drain().await;
    assert_eq!(converge_ids(&jobs), std::slice::from_ref(&ada));
    w.app.jobs.handle(&jobs[0]).await.unwrap();
    assert_eq!(
        w.record(&ada).await.unwrap().value.status,
        AccountStatus::Disabled
    );
    // Nothing since: nothing queued.
    assert_eq!(scope(&w).changed(&root).await.unwrap().users, 0);
    assert!(w.drain().await.is_empty());
}

#[tokio::test]
async fn a_nested_group_added_brings_its_guests_in_and_removed_takes_them_out() {
    let w = world();
    let (root, _) = settled(&w).await;
    let team = w.graph.create_group();
    let inner = w.graph.create_group();
    let (cy, dee) = (
        w.graph.invite_guest("cy@fabrikam.com"),
        w.graph.invite_guest("dee@fabrikam.com"),
    );
    w.graph.add_to_group(&team, &cy);
    w.graph.add_to_group(&team, &inner);
    w.graph.add_to_group(&inner, &dee);

    w.graph.add_to_group(&root, &team);
    let report = scope(&w).changed(&root).await.unwrap();
    assert_eq!(report.groups_joined, 1);
    let jobs = w.drain().await;
    assert_eq!(groups_changed(&jobs), BTreeSet::from([team.clone()]));
    // The group's first round: its guests, and its own nested group joining.
    scope(&w).changed(&team).await.unwrap();
    let jobs = w.drain().await;
    assert_eq!(converge_ids(&jobs), std::slice::from_ref(&cy));
    assert_eq!(groups_changed(&jobs), BTreeSet::from([inner.clone()]));
    scope(&w).changed(&inner).await.unwrap();
    assert_eq!(converge_ids(&w.drain().await), std::slice::from_ref(&dee));

    w.graph.remove_from_group(&root, &team);
    let report = scope(&w).changed(&root).await.unwrap();
    assert_eq!(report.groups_left, 2, "the group and the one nested in it");
    let jobs = w.drain().await;
    assert_eq!(converge_ids(&jobs), sorted(vec![cy.clone(), dee.clone()]));
    // Its notifications no longer count.
    w.graph
        .add_to_group(&team, &w.graph.invite_guest("eve@fabrikam.com"));
    assert!(scope(&w).changed(&team).await.unwrap().ignored);
    assert!(w.drain().await.is_empty());
}

#[tokio::test]
async fn a_group_outside_the_tree_is_ignored_and_a_lost_store_is_caught_up() {
    let w = world();
    let (root, nested) = settled(&w).await;
    let other = w.graph.create_group();
    assert!(scope(&w).changed(&other).await.unwrap().ignored);

    // The state store forgets the tree: the next check rebuilds it, and each group's first
    // round lists its members again.
    for g in [&root, &nested] {
        let v = w
            .store
            .get("scope_groups", g.as_str())
            .await
            .unwrap()
            .unwrap()
            .version;
        w.store
            .delete("scope_groups", g.as_str(), Some(v))
            .await
            .unwrap();
    }
    let ada = w.graph.invite_guest("ada@fabrikam.com");
    w.graph.add_to_group(&nested, &ada);
    assert_eq!(scope(&w).ensure_tree().await.unwrap().joined, 2);
    w.drain().await;
    let report = scope(&w).changed(&nested).await.unwrap();
    assert!(report.full_round);
    assert_eq!(converge_ids(&w.drain().await), [ada]);
}

#[tokio::test]
async fn the_scope_group_deleted_disables_nobody() {
    let w = world();
    let (root, _) = settled(&w).await;
    let ada = w.graph.invite_guest("ada@fabrikam.com");
    w.graph.add_to_group(&root, &ada);
    scope(&w).changed(&root).await.unwrap();
    for job in w.drain().await {
        w.app.jobs.handle(&job).await.unwrap();
    }
    assert_eq!(
        w.record(&ada).await.unwrap().value.status,
        AccountStatus::Enabled
    );
    w.graph.delete_group(&root);
    assert_eq!(scope(&w).ensure_tree().await.unwrap().left, 0, "kept");
    scope(&w).changed(&root).await.unwrap();
    w.converge(&ada).await;
    assert!(
        w.account_of(&ada).unwrap().is_enabled(),
        "held by the pre-flight"
    );
}

#[tokio::test]
async fn every_group_of_the_tree_gets_a_subscription_and_loses_it_when_it_leaves() {
    use shadowsync_app::keeper::{GroupSubscriptions, Outcome};
    use shadowsync_ports::Graph;
    use shadowsync_queue::LifecycleEvent;
    let w = Setup {
        scope_group: true,
        keeper: Some(keeper_config()),
        ..Setup::default()
    }
    .build();
    let (root, nested) = settled(&w).await;
    let keeper = w.app.keeper().unwrap().clone();
    keeper.ensure().await.unwrap();
    let report = keeper.ensure_groups().await.unwrap();
    assert_eq!(
        report,
        GroupSubscriptions {
            kept: 2,
            ..GroupSubscriptions::default()
        }
    );
    let resources = |subs: Vec<shadowsync_ports::Subscription>| -> BTreeSet<String> {
        subs.into_iter().map(|s| s.resource).collect()
    };
    assert_eq!(
        resources(w.graph.subscriptions().await.unwrap()),
        BTreeSet::from([
            "/users".to_string(),
            format!("/groups/{root}"),
            format!("/groups/{nested}")
        ])
    );
    // Checked again: nothing new.
    assert_eq!(keeper.ensure_groups().await.unwrap().kept, 2);
    assert_eq!(w.graph.subscriptions().await.unwrap().len(), 3);

    // A lifecycle event for a group's subscription reaches that subscription.
    let nested_sub = w
        .graph
        .subscriptions()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.resource == format!("/groups/{nested}"))
        .unwrap();
    let outcome = keeper
        .handle_any_lifecycle(
            LifecycleEvent::ReauthorizationRequired,
            nested_sub.id.as_str(),
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome, Outcome::Reauthorized { .. }),
        "{outcome:?}"
    );

    // The nested group leaves: its subscription goes.
    w.graph.remove_from_group(&root, &nested);
    scope(&w).changed(&root).await.unwrap();
    let report = keeper.ensure_groups().await.unwrap();
    assert_eq!((report.kept, report.removed), (1, 1));
    assert_eq!(
        resources(w.graph.subscriptions().await.unwrap()),
        BTreeSet::from(["/users".to_string(), format!("/groups/{root}")])
    );
}

#[tokio::test]
async fn an_emptied_scope_group_is_held_by_the_threshold() {
    let w = Setup {
        scope_group: true,
        safety: shadowsync_app::SafetyLimits {
            max_disables_per_hour: 1,
            max_deletes_per_hour: 1,
        },
        ..Setup::default()
    }
    .build();
    let (root, _) = settled(&w).await;
    let guests: Vec<ObjectId> = (0..3)
        .map(|i| w.graph.invite_guest(&format!("g{i}@fabrikam.com")))
        .collect();
    for g in &guests {
        w.graph.add_to_group(&root, g);
    }
    scope(&w).changed(&root).await.unwrap();
    for job in w.drain().await {
        w.app.jobs.handle(&job).await.unwrap();
    }
    for g in &guests {
        w.graph.remove_from_group(&root, g);
    }
    scope(&w).changed(&root).await.unwrap();
    let jobs = w.drain().await;
    assert_eq!(converge_ids(&jobs).len(), 3);
    for job in &jobs {
        w.app.jobs.handle(job).await.unwrap();
    }
    let enabled = guests
        .iter()
        .filter(|g| w.account_of(g).is_some_and(|a| a.is_enabled()))
        .count();
    assert_eq!(enabled, 2, "one disable let through, the rest held");
    let held = shadowsync_app::safety::held_changes(w.store.as_ref())
        .await
        .unwrap();
    assert_eq!(held.len(), 2);
}
