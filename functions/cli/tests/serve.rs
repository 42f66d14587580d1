//! `shadowsync serve` as a real process: Graph simulator → notifications → webhook → embedded
//! queue → provisioner → real Samba AD DC, and the subscription keeper.

use graph_sim::{FaultRule, RunningSim, SimClient, SimConfig};
use serde_json::{json, Value};
use shadowsync_e2e::host::{Host, SETTLE};
use shadowsync_e2e::serve::{wait_until, Change, CLIENT_STATE};
use shadowsync_e2e::{samba, text, AdProbe};
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_shadowsync");

#[tokio::test]
async fn a_guest_lives_its_whole_lifecycle_through_notifications() {
    let mut h = Host::start(BIN, "").await;
    let id = h.invite("lifecycle").await;
    let took = h
        .wait_for(&id, "invitation → account", h.enabled_in_guests())
        .await;
    println!("invitation to AD account: {} ms", took.as_millis());

    h.graph
        .patch_user(&id, json!({"displayName": "Renamed Guest"}))
        .await
        .unwrap();
    h.wait_for(&id, "update", |a| {
        a.is_some_and(|(_, e)| text(e, "displayName").as_deref() == Some("Renamed Guest"))
    })
    .await;

    h.graph
        .patch_user(&id, json!({"accountEnabled": false}))
        .await
        .unwrap();
    h.wait_for(&id, "disable", h.disabled_in_disabled_ou())
        .await;
    h.graph
        .patch_user(&id, json!({"accountEnabled": true}))
        .await
        .unwrap();
    h.wait_for(&id, "enable", h.enabled_in_guests()).await;

    h.graph.delete_user(&id).await.unwrap();
    h.wait_for(&id, "soft delete", h.disabled_in_disabled_ou())
        .await;
    h.graph.restore_user(&id).await.unwrap();
    h.wait_for(&id, "restore", h.enabled_in_guests()).await;

    h.graph.delete_user(&id).await.unwrap();
    h.graph.purge_user(&id).await.unwrap();
    h.wait_for(&id, "permanent delete", |a| a.is_none()).await;
}

#[tokio::test]
async fn duplicated_and_reordered_notifications_still_converge_to_graph() {
    let mut h = Host::start(BIN, "").await;
    h.graph
        .set_switches(json!({"duplicateNotifications": true, "reorderNotifications": true}))
        .await
        .unwrap();
    let id = h.invite("reorder").await;
    for name in ["First", "Second", "Third", "Final"] {
        h.graph
            .patch_user(&id, json!({"displayName": name}))
            .await
            .unwrap();
    }
    h.wait_for(&id, "final name", |a| {
        a.is_some_and(|(_, e)| text(e, "displayName").as_deref() == Some("Final"))
    })
    .await;
    let log = h.graph.delivery_log().await.unwrap();
    assert!(
        log.len() >= 2,
        "the simulator delivered notifications: {log:?}"
    );
}

#[tokio::test]
async fn forged_notifications_change_nothing() {
    let mut h = Host::start(BIN, "").await;
    h.graph.set_notifications_lost(true).await.unwrap();
    let id = h.invite("forged").await;
    assert_eq!(h.post_notification(&id, "not-the-client-state").await, 202);
    assert_eq!(
        shadowsync_e2e::serve::post_notification(
            h.serve.listen,
            h.subscriptions().await[0]["id"].as_str().unwrap(),
            (&id, Change::Updated),
            CLIENT_STATE,
            "11111111-2222-3333-4444-555555555555"
        )
        .await
        .unwrap(),
        202
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        h.account(&id).await.is_none(),
        "a forged notification must not be acted on"
    );
    // And an operator sees them: `status` says what the webhook rejected, and why.
    let status = h.status().await;
    let rejected = &status["webhook"]["rejected"];
    assert_eq!(rejected["RejectedBadClientState"], 1, "{status}");
    assert_eq!(rejected["RejectedWrongTenant"], 1, "{status}");
    let text = h.serve.cli.run(&["status"], &[]).await.unwrap();
    assert!(
        text.contains("REJECTED       1 RejectedBadClientState"),
        "{text}"
    );
    // The same notification, genuine, is acted on: the negative result above means something.
    assert_eq!(h.post_notification(&id, CLIENT_STATE).await, 202);
    h.wait_for(&id, "genuine notification", h.enabled_in_guests())
        .await;
}

#[tokio::test]
async fn a_job_interrupted_by_a_crash_is_applied_after_restart() {
    let mut h = Host::start(BIN, "").await;
    let id = h.invite_quietly("crash").await;
    // Graph answers user reads slowly, so the provisioner is mid-job when the process dies.
    h.graph
        .set_fault(FaultRule {
            path: "/v1.0/users/*".into(),
            method: Some("GET".into()),
            latency_ms: Some(4_000),
            ..Default::default()
        })
        .await
        .unwrap();
    h.notify(&id).await; // 202: the job is durably enqueued
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.serve.kill().await.unwrap();
    assert!(
        h.account(&id).await.is_none(),
        "the job had not been applied yet"
    );
    h.graph.clear_faults().await.unwrap();
    h.serve.spawn().await.unwrap();
    let took = h
        .wait_for(&id, "after restart", h.enabled_in_guests())
        .await;
    println!("applied {} ms after the restart", took.as_millis());
}

#[tokio::test]
async fn graph_throttling_and_errors_delay_but_lose_nothing() {
    let mut h = Host::start(BIN, "").await;
    let id = h.invite_quietly("throttled").await;
    h.graph
        .set_fault(FaultRule::throttle_next("/v1.0/users/*", 1, 4))
        .await
        .unwrap();
    h.notify(&id).await;
    h.wait_for(&id, "despite 429s", h.enabled_in_guests()).await;
    h.graph
        .set_fault(FaultRule {
            method: Some("GET".into()),
            ..FaultRule::fail_next("/v1.0/users/*", 500, 6)
        })
        .await
        .unwrap();
    h.graph
        .set_fault(FaultRule {
            method: Some("GET".into()),
            retry_after_seconds: Some(1),
            ..FaultRule::fail_next("/v1.0/users/*", 503, 3)
        })
        .await
        .unwrap();
    h.graph
        .patch_user(&id, json!({"displayName": "After Errors"}))
        .await
        .unwrap();
    h.wait_for(&id, "despite 5xx", |a| {
        a.is_some_and(|(_, e)| text(e, "displayName").as_deref() == Some("After Errors"))
    })
    .await;
    let faults: Value = reqwest::get(format!("{}/_sim/faults", h.sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        faults
            .as_array()
            .or(faults["value"].as_array())
            .map(Vec::len),
        Some(0),
        "every fault was met: {faults}"
    );
}

#[tokio::test]
async fn the_subscription_is_renewed_before_it_expires_and_reauthorized_on_request() {
    let h = Host::start(
        BIN,
        "[subscriptions]\ncheck_interval_minutes = 0.02\nrenew_margin_hours = 72\n",
    )
    .await;
    let sub = h.subscriptions().await.remove(0);
    let expires = |s: &Value| {
        chrono::DateTime::parse_from_rfc3339(s["expirationDateTime"].as_str().unwrap()).unwrap()
    };
    let first = expires(&sub);
    // Move Graph's clock to two days before expiry: inside the 72-hour renewal margin.
    let now = h.sim.sim().now();
    let until_margin = (first.with_timezone(&chrono::Utc) - now) - chrono::Duration::hours(48);
    h.graph
        .advance_time(until_margin.num_seconds() as f64)
        .await
        .unwrap();
    wait_until(SETTLE, || async {
        h.subscriptions()
            .await
            .first()
            .is_some_and(|s| expires(s) > first)
    })
    .await
    .expect("renewed before expiry");
    assert_eq!(
        h.subscriptions().await[0]["id"],
        sub["id"],
        "renewed, not recreated"
    );

    let id = sub["id"].as_str().unwrap();
    h.graph
        .trigger_lifecycle(id, "reauthorizationRequired")
        .await
        .unwrap();
    let needs_reauth = || async {
        h.sim_subscriptions()
            .await
            .iter()
            .any(|s| s["needsReauthorization"] == true)
    };
    wait_until(SETTLE, || async { !needs_reauth().await })
        .await
        .expect("reauthorized");
}

#[tokio::test]
async fn sigterm_stops_cleanly() {
    let mut h = Host::start(BIN, "").await;
    let status = h.serve.stop().await.unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn the_reconciler_catches_what_notifications_lost_on_its_schedule() {
    let mut h = Host::start(BIN, "[reconciler]\ninterval = \"2s\"\n").await;
    h.graph.set_notifications_lost(true).await.unwrap();
    let id = h.invite("scheduled").await;
    h.wait_for(&id, "delta round on schedule", h.enabled_in_guests())
        .await;
    h.graph
        .patch_user(&id, json!({"displayName": "Seen By Delta"}))
        .await
        .unwrap();
    h.wait_for(&id, "update via delta", |a| {
        a.is_some_and(|(_, e)| text(e, "displayName").as_deref() == Some("Seen By Delta"))
    })
    .await;
}

#[tokio::test]
async fn a_missed_lifecycle_event_runs_the_reconciler_at_once() {
    // An hour between scheduled rounds: only the lifecycle event can explain a quick account.
    let mut h = Host::start(BIN, "[reconciler]\ninterval = \"1h\"\n").await;
    h.graph.set_notifications_lost(true).await.unwrap();
    let id = h.invite("missed").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        h.account(&id).await.is_none(),
        "nothing told shadowsync yet"
    );
    h.graph.set_notifications_lost(false).await.unwrap();
    let sub = h.subscriptions().await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    h.graph.trigger_lifecycle(&sub, "missed").await.unwrap();
    h.wait_for(&id, "reconciled after missed", h.enabled_in_guests())
        .await;
}

/// `serve --log-format json` on OUs of its own, its log (standard error) piped; with the
/// simulator it talks to and the directory probe that made the OUs.
async fn serve_with_json_logs(
    name: &str,
) -> (
    tokio::process::Child,
    RunningSim,
    AdProbe,
    tempfile::TempDir,
) {
    let sim = graph_sim::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut probe = AdProbe::connect(samba()).await.unwrap();
    let guests = probe.ou(&format!("{name} Guests")).await.unwrap();
    let disabled = probe.ou(&format!("{name} Disabled")).await.unwrap();
    let cli = shadowsync_e2e::serve::Cli::new(
        Path::new(BIN),
        &sim,
        samba(),
        (&guests, &disabled),
        dir.path(),
        "",
    )
    .unwrap();
    let child = cli
        .command(&["--log-format", "json", "serve"], &[])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    (child, sim, probe, dir)
}

#[tokio::test]
async fn log_format_json_writes_one_json_object_per_line() {
    use tokio::io::AsyncBufReadExt;
    let (mut child, _sim, _probe, _dir) = serve_with_json_logs("Log").await;
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let first = tokio::time::timeout(SETTLE, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let event: Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(event["level"], "INFO", "{event}");
    assert!(
        event["message"].is_string() && event["timestamp"].is_string(),
        "{event}"
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn counters_are_published_in_the_log() {
    use tokio::io::AsyncBufReadExt;
    let (mut child, sim, mut probe, _dir) = serve_with_json_logs("Counted").await;
    // Read the log as it comes, so that a full pipe never stalls serve.
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let log = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            events.extend(serde_json::from_str::<Value>(&line).ok());
        }
        events
    });
    let graph = SimClient::new(sim.base_url(), sim.config());
    let shared = sim.sim();
    wait_until(SETTLE, || {
        let shared = shared.clone();
        async move { !shared.world().subscriptions.is_empty() }
    })
    .await
    .expect("serve creates its subscription");
    let id = shadowsync_e2e::invite_guest(&graph, "counted", "Counted Guest")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + SETTLE;
    while probe.by_anchor(&id).await.unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the notification becomes an account"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Stopping publishes the counters of the last minute.
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    let stopped = tokio::time::timeout(SETTLE, child.wait()).await.unwrap();
    assert!(stopped.unwrap().success());
    let events = log.await.unwrap();
    let webhook = events
        .iter()
        .find(|e| e["message"] == "webhook counters")
        .expect("a webhook counters line");
    let counters = webhook["counters"].as_str().unwrap();
    assert!(counters.contains("JobsEnqueued=1 "), "{counters}");
    assert!(counters.contains("RejectedBadClientState=0 "), "{counters}");
    let jobs = events
        .iter()
        .find(|e| e["message"] == "job counters")
        .unwrap_or_else(|| panic!("a job counters line in {events:#?}"));
    assert_eq!(jobs["applied"], 1, "{jobs}");
}
