//! Scope-group changes in seconds, through a real `shadowsync serve`, the Samba DC and the
//! simulator: a guest added to the scope group or a group nested in it, a nested group added
//! and removed, each reflected in AD by the group's change notification, with no sweep.

use serde_json::Value;
use shadowsync_e2e::host::{Host, SETTLE};
use shadowsync_e2e::serve::wait_until;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_shadowsync");

fn id(v: &Value) -> String {
    v["invitedUser"]["id"]
        .as_str()
        .or(v["id"].as_str())
        .unwrap()
        .to_string()
}

/// Restarts serve with `scope_group_id` set, and waits until it keeps a subscription on each
/// group of the tree (`groups` of them) beside the one on users.
async fn scoped(h: &mut Host, root: &str, groups: usize) {
    h.serve.stop().await.unwrap();
    let path = h.serve.cli.config_path.clone();
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{config}\n[policy]\nscope_group_id = \"{root}\"\n"),
    )
    .unwrap();
    h.serve.spawn().await.unwrap();
    wait_until(SETTLE, || async {
        let subs = h.sim_subscriptions().await;
        subs.iter()
            .filter(|s| s["resource"].as_str().unwrap_or("").contains("roups/"))
            .count()
            == groups
    })
    .await
    .expect("a subscription on every group of the tree");
}

#[tokio::test]
async fn membership_changes_reach_ad_in_seconds_nested_groups_included() {
    let mut h = Host::start(BIN, "").await;
    let root = id(&h.graph.create_group("Intranet users").await.unwrap());
    let nested = id(&h.graph.create_group("Intranet partners").await.unwrap());
    h.graph.add_member(&root, &nested).await.unwrap();
    scoped(&mut h, &root, 2).await;

    // Invited while in no scope group: no account.
    let ada = h.invite("ada").await;
    let bob = h.invite("bob").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(h.account(&ada).await.is_none());

    let started = Instant::now();
    h.graph.add_member(&root, &ada).await.unwrap();
    let enabled = h.enabled_in_guests();
    h.wait_for(&ada, "added to the scope group", &enabled).await;
    println!(
        "added to the scope group → account: {} ms",
        started.elapsed().as_millis()
    );

    let started = Instant::now();
    h.graph.add_member(&nested, &bob).await.unwrap();
    h.wait_for(&bob, "added to a nested group", &enabled).await;
    println!(
        "added to a nested group → account: {} ms",
        started.elapsed().as_millis()
    );

    // A group with a guest in it joins the tree, then leaves it.
    let team = id(&h.graph.create_group("Project team").await.unwrap());
    let cy = h.invite("cy").await;
    h.graph.add_member(&team, &cy).await.unwrap();
    let started = Instant::now();
    h.graph.add_member(&root, &team).await.unwrap();
    h.wait_for(&cy, "a nested group added", &enabled).await;
    println!(
        "nested group added → its guest's account: {} ms",
        started.elapsed().as_millis()
    );
    wait_until(SETTLE, || async {
        h.sim_subscriptions()
            .await
            .iter()
            .any(|s| s["resource"].as_str().is_some_and(|r| r.ends_with(&team)))
    })
    .await
    .expect("the new group's subscription");

    let disabled = h.disabled_in_disabled_ou();
    let started = Instant::now();
    h.graph.remove_member(&root, &team).await.unwrap();
    h.wait_for(&cy, "a nested group removed", &disabled).await;
    println!(
        "nested group removed → its guest's account disabled: {} ms",
        started.elapsed().as_millis()
    );

    h.graph.remove_member(&root, &ada).await.unwrap();
    h.wait_for(&ada, "removed from the scope group", &disabled)
        .await;
    // Bob is still in scope through the nested group.
    assert!(enabled(h.account(&bob).await.as_ref()));
    let status = h.status().await;
    assert_eq!(status["queue"]["dead_letters"], 0, "{status}");
}
