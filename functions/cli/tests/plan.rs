//! `shadowsync plan` on a tenant of 200 guests lists exactly the expected changes and writes
//! nothing. Managed OUs of its own, so other tests' accounts do not count.

use serde_json::{json, Value};
use shadowsync_app::Hint;
use shadowsync_core::Policy;
use shadowsync_e2e::serve::Cli;
use shadowsync_e2e::{samba, text, unique, AdProbe, World};
use std::collections::BTreeMap;
use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_shadowsync");

/// `dn → uSNChanged` of everything in the OUs.
async fn usns(probe: &mut AdProbe, ous: &[&str]) -> BTreeMap<String, String> {
    probe
        .search("(objectClass=user)")
        .await
        .unwrap()
        .into_iter()
        .filter(|(dn, _)| ous.iter().any(|ou| shadowsync_core::dn::is_within(dn, ou)))
        .map(|(dn, e)| (dn, text(&e, "uSNChanged").unwrap()))
        .collect()
}

#[tokio::test]
async fn plan_lists_exactly_the_expected_changes_and_changes_nothing() {
    let mut probe = AdProbe::connect(samba()).await.unwrap();
    let guests_ou = probe.ou("Plan Guests").await.unwrap();
    let disabled_ou = probe.ou("Plan Disabled").await.unwrap();
    let w = World::with_policy(Policy::new(&guests_ou, &disabled_ou))
        .await
        .unwrap();

    let tag = unique();
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(
            w.invite(&format!("p{i}x{tag}"), &format!("Plan Guest {i}"))
                .await
                .unwrap(),
        );
    }
    // 120 already have accounts; then Graph changes under some of them.
    for id in &ids[..120] {
        w.converger.converge(id, Hint::default()).await.unwrap();
    }
    for id in &ids[..20] {
        w.graph
            .patch_user(id, json!({"displayName": "Renamed"}))
            .await
            .unwrap();
    }
    for id in &ids[20..30] {
        w.graph
            .patch_user(id, json!({"accountEnabled": false}))
            .await
            .unwrap();
    }
    for id in &ids[30..35] {
        w.graph
            .patch_user(id, json!({"userType": "Member"}))
            .await
            .unwrap();
    }
    let before = usns(&mut probe, &[&guests_ou, &disabled_ou]).await;
    assert_eq!(before.len(), 120);

    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(
        Path::new(BIN),
        &w.sim,
        samba(),
        (&guests_ou, &disabled_ou),
        dir.path(),
        "",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out: Vec<Value> =
        serde_json::from_str(&cli.run(&["plan"], &["--json"]).await.unwrap()).unwrap();
    println!("plan of 200 guests: {} ms", started.elapsed().as_millis());

    let ops = |v: &Value| -> Vec<String> {
        v["plan"]
            .as_array()
            .unwrap()
            .iter()
            .map(|op| op["op"].as_str().unwrap().to_string())
            .collect()
    };
    let by_id: BTreeMap<String, Vec<String>> = out
        .iter()
        .map(|v| (v["user_id"].as_str().unwrap().to_string(), ops(v)))
        .collect();
    // Every guest of this tenant is listed once (the sim holds only these 200, minus the 5 members
    // who are no longer guests but still have accounts).
    assert_eq!(by_id.len(), 200, "{}", by_id.len());
    for (i, id) in ids.iter().enumerate() {
        let expected: &[&str] = match i {
            0..=19 => &["update", "move"],
            20..=34 => &["disable"],
            35..=119 => &[],
            _ => &["create"],
        };
        assert_eq!(by_id[id.as_str()], expected, "guest {i}");
    }
    let renamed = out
        .iter()
        .find(|v| v["user_id"] == ids[0].as_str())
        .unwrap();
    assert_eq!(renamed["plan"][0]["changes"][0]["attribute"], "displayName");
    assert_eq!(
        usns(&mut probe, &[&guests_ou, &disabled_ou]).await,
        before,
        "plan wrote to AD"
    );

    let human = cli.run(&["plan"], &[]).await.unwrap();
    assert!(human.contains("200 guests: 80 create, 15 disable, 20 move, 85 unchanged, 20 update. Nothing was changed."), "{human}");
}
