//! The safety rails end to end: `shadowsync serve` on the test DC and the simulator, a mass
//! change held by the threshold and released with `shadowsync held`. The upstream faults (a
//! deleted scope group, another tenant, a removed permission, a clock jump) are in the chaos
//! suite (chaos.rs).

use serde_json::Value;
use shadowsync_e2e::host::{Host, SETTLE};
use shadowsync_e2e::serve::wait_until;

const BIN: &str = env!("CARGO_BIN_EXE_shadowsync");

async fn enabled_count(h: &mut Host, ids: &[String]) -> usize {
    let enabled = h.enabled_in_guests();
    let mut n = 0;
    for id in ids {
        n += usize::from(enabled(h.account(id).await.as_ref()));
    }
    n
}

async fn guests(h: &mut Host, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(h.invite(&format!("{prefix}{i}")).await);
    }
    for id in &ids {
        h.wait_for(id, "an account", h.enabled_in_guests()).await;
    }
    ids
}

async fn held_count(h: &Host) -> u64 {
    let status: Value = h.status().await;
    status["safety"]["held"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn a_mass_disable_stops_at_the_threshold_until_an_administrator_releases_it() {
    let mut h = Host::start(BIN, "[safety]\nmax_disables_per_hour = 2\n").await;
    let ids = guests(&mut h, "mass", 5).await;
    for id in &ids {
        h.graph.delete_user(id).await.unwrap();
    }
    wait_until(SETTLE, || async { held_count(&h).await == 3 })
        .await
        .expect("three disables held");
    assert_eq!(
        enabled_count(&mut h, &ids).await,
        3,
        "two disabled, three held"
    );
    let status = h.status().await;
    let reason = status["safety"]["tripped"]["reason"].as_str().unwrap();
    assert!(reason.contains("max_disables_per_hour is 2"), "{reason}");

    let cli = &h.serve.cli;
    let list = cli.run(&["held", "list"], &[]).await.unwrap();
    assert_eq!(list.matches(" disable held ").count(), 3, "{list}");
    let text = cli.run(&["status"], &[]).await.unwrap();
    assert!(text.contains("THRESHOLD      tripped"), "{text}");
    let plan = cli.run(&["plan"], &[]).await.unwrap();
    assert_eq!(plan.matches("HELD: ").count(), 3, "{plan}");

    let released = cli.run(&["held", "release"], &[]).await.unwrap();
    assert!(released.contains("3 held changes released"), "{released}");
    for id in &ids {
        h.wait_for(id, "disabled once released", h.disabled_in_disabled_ou())
            .await;
    }
    let status = h.status().await;
    assert_eq!(status["safety"]["held"], 0, "{status}");
    assert!(status["safety"]["tripped"].is_null(), "{status}");
    assert_eq!(status["queue"]["dead_letters"], 0, "{status}");
}
