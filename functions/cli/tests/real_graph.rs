//! `shadowsync serve` against the simulator's harsher, production-like behaviours, one test per
//! `/_sim` switch (and certificate authentication under simulated time): each fails on a client
//! that trusts Graph to be kinder than it is.

use graph_sim::{DeltaQuirks, FaultRule, RetryAfterStyle, SimConfig, StaleDeltaTokens};
use serde_json::json;
use shadowsync_e2e::host::{Host, HostOptions};
use shadowsync_e2e::serve::{wait_until, CLIENT_STATE};
use shadowsync_e2e::text;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_shadowsync");
/// Delta rounds every two seconds: the tests where notifications are lost rely on them.
const FAST_ROUNDS: &str = "[reconciler]\ninterval = \"2s\"\n";

fn display_name_is(
    name: &'static str,
) -> impl Fn(Option<&(String, shadowsync_e2e::RawEntry)>) -> bool {
    move |a| a.is_some_and(|(_, e)| text(e, "displayName").as_deref() == Some(name))
}

async fn assert_no_dead_letters(h: &Host) {
    let status = h.status().await;
    assert_eq!(status["queue"]["dead_letters"], 0, "{status}");
}

#[tokio::test]
async fn replication_lag_delays_a_new_guest_and_never_disables_a_known_one() {
    let mut h = Host::start(BIN, "").await;
    h.graph.set_replication_lag(4.0).await.unwrap();

    // The notification comes at once; reading the user answers 404 for 4 seconds.
    let id = h.invite("lagged").await;
    let took = h
        .wait_for(
            &id,
            "an account once Graph shows the guest",
            h.enabled_in_guests(),
        )
        .await;
    assert!(
        took >= Duration::from_secs(3),
        "created before Graph showed it? {took:?}"
    );

    // A change to a known guest: 404 again for a while; the account stays enabled throughout.
    h.graph
        .patch_user(&id, json!({"displayName": "Lagged Rename"}))
        .await
        .unwrap();
    let enabled = h.enabled_in_guests();
    let renamed = display_name_is("Lagged Rename");
    let start = std::time::Instant::now();
    loop {
        let account = h.account(&id).await;
        assert!(
            enabled(account.as_ref()),
            "disabled on a 404 from a replica behind"
        );
        if renamed(account.as_ref()) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "never renamed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_no_dead_letters(&h).await;
}

#[tokio::test]
async fn fractional_and_missing_retry_after_are_survived() {
    let mut h = Host::start(BIN, "").await;
    for (style, name) in [
        (RetryAfterStyle::Fractional, "Fractional Wait"),
        (RetryAfterStyle::Missing, "Missing Wait"),
    ] {
        h.graph.set_retry_after_style(style).await.unwrap();
        let id = h.invite_quietly(name).await;
        h.graph
            .set_fault(FaultRule {
                method: Some("GET".into()),
                ..FaultRule::throttle_next("/v1.0/users/*", 1, 3)
            })
            .await
            .unwrap();
        h.notify(&id).await;
        h.wait_for(&id, name, h.enabled_in_guests()).await;
    }
    assert_no_dead_letters(&h).await;
}

#[tokio::test]
async fn spontaneous_reauthorization_keeps_notifications_flowing() {
    // An hour between delta rounds: only notifications can explain the accounts.
    let mut h = Host::start(BIN, "[reconciler]\ninterval = \"1h\"\n").await;
    tokio::time::sleep(Duration::from_secs(1)).await; // the round at start is done
    h.graph.set_spontaneous_reauthorization(2.0).await.unwrap();
    for n in 0..3 {
        let id = h.invite(&format!("reauth{n}")).await;
        h.wait_for(
            &id,
            "delivered after reauthorization",
            h.enabled_in_guests(),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let subs = h.sim_subscriptions().await;
    assert_eq!(subs.len(), 1, "{subs:?}");
    assert_eq!(subs[0]["withheld"], 0, "nothing left undelivered: {subs:?}");
    // Graph asked several times; each answer was a bodiless POST, which Graph refuses (411)
    // without `Content-Length`.
    let asked = h
        .graph
        .delivery_log()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r["kind"] == "lifecycle" && r["outcome"] == "delivered")
        .count();
    assert!(asked >= 2, "Graph asked for reauthorization {asked} times");
}

#[tokio::test]
async fn delta_duplicates_partial_items_and_empty_pages_converge_exactly() {
    let mut h = Host::start(BIN, FAST_ROUNDS).await;
    h.graph.set_notifications_lost(true).await.unwrap();
    h.graph
        .set_delta_quirks(DeltaQuirks {
            duplicates: true,
            partial_items: true,
            empty_pages: true,
        })
        .await
        .unwrap();
    let kept = h.invite("quirk-kept").await;
    let left = h.invite("quirk-left").await;
    h.wait_for(&kept, "first round", h.enabled_in_guests())
        .await;
    h.wait_for(&left, "first round", h.enabled_in_guests())
        .await;

    // Incremental items carry only what changed: no userType on a rename.
    h.graph
        .patch_user(&kept, json!({"displayName": "Quirk Renamed"}))
        .await
        .unwrap();
    h.graph.delete_user(&left).await.unwrap();
    h.wait_for(
        &kept,
        "rename via a partial item",
        display_name_is("Quirk Renamed"),
    )
    .await;
    h.wait_for(&left, "soft delete via delta", h.disabled_in_disabled_ou())
        .await;
    assert_no_dead_letters(&h).await;
}

#[tokio::test]
async fn stale_delta_tokens_of_every_kind_restart_a_full_round() {
    let mut h = Host::start(BIN, FAST_ROUNDS).await;
    h.graph.set_notifications_lost(true).await.unwrap();
    let first = h.invite("before-stale").await;
    h.wait_for(&first, "first round", h.enabled_in_guests())
        .await;
    for (stale, name) in [
        (StaleDeltaTokens::Gone, "after-gone"),
        (StaleDeltaTokens::BadRequest, "after-bad-request"),
        (StaleDeltaTokens::ResyncRequired, "after-resync"),
    ] {
        h.graph.set_stale_delta_tokens(Some(stale)).await.unwrap();
        let id = h.invite(name).await;
        h.wait_for(&id, name, h.enabled_in_guests()).await;
    }
    assert_no_dead_letters(&h).await;
}

#[tokio::test]
async fn a_removed_permission_parks_work_reports_it_and_resumes_when_restored() {
    let mut h = Host::start(BIN, FAST_ROUNDS).await;
    let id = h.invite("refused").await;
    h.wait_for(&id, "account", h.enabled_in_guests()).await;

    // The guest leaves; its notification is late, and by the time it comes the permission is
    // gone (Graph itself then sends nothing): the job is refused.
    h.graph.set_notifications_lost(true).await.unwrap();
    h.graph.delete_user(&id).await.unwrap();
    h.graph.set_permission_removed(true).await.unwrap();
    h.notify(&id).await;
    wait_until(Duration::from_secs(60), || async {
        let s = h.status().await;
        s["graph_access"]["denied"].is_object() && s["graph_access"]["parked_jobs"] == 1
    })
    .await
    .expect("the refusal and the parked job are reported");
    let status = h.status().await;
    assert!(
        status["graph_access"]["denied"]["message"]
            .as_str()
            .unwrap()
            .contains("Authorization_RequestDenied"),
        "{status}"
    );
    let text = h.serve.cli.run(&["status"], &[]).await.unwrap();
    assert!(
        text.contains("GRAPH REFUSES") && text.contains("parked         1 jobs"),
        "{text}"
    );
    // A few refused rounds later: nothing changed in AD, nothing dead-lettered.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        h.enabled_in_guests()(h.account(&id).await.as_ref()),
        "a refusal disabled an account"
    );
    assert_no_dead_letters(&h).await;

    h.graph.set_permission_removed(false).await.unwrap();
    h.wait_for(
        &id,
        "acted on once Graph answers",
        h.disabled_in_disabled_ou(),
    )
    .await;
    let status = h.status().await;
    assert_eq!(
        status["graph_access"],
        json!({"denied": null, "parked_jobs": 0}),
        "{status}"
    );
}

#[tokio::test]
async fn the_client_state_rotates_without_losing_a_notification() {
    const NEW_STATE: &str = "e2e-rotated-client-state-0b5e7a";
    let mut h = Host::start(BIN, "").await;
    let before = h.subscriptions().await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Restart with the new secret, and the old one accepted during the overlap.
    h.serve.stop().await.unwrap();
    h.serve.cli.env = vec![
        (
            "SHADOWSYNC_WEBHOOK_CLIENT_STATE".into(),
            Some(NEW_STATE.into()),
        ),
        (
            "SHADOWSYNC_WEBHOOK_PREVIOUS_CLIENT_STATE".into(),
            Some(CLIENT_STATE.into()),
        ),
    ];
    h.serve.spawn().await.unwrap();
    // A notification Graph sent with the old secret before the subscription was replaced.
    let old = h.invite_quietly("rotated-old").await;
    assert_eq!(h.post_notification(&old, CLIENT_STATE).await, 202);
    h.wait_for(
        &old,
        "old secret, during the overlap",
        h.enabled_in_guests(),
    )
    .await;
    // The keeper replaces the subscription (Graph never shows its clientState).
    wait_until(Duration::from_secs(60), || async {
        let subs = h.sim_subscriptions().await;
        subs.len() == 1 && subs[0]["id"] != before.as_str() && subs[0]["clientState"] == NEW_STATE
    })
    .await
    .expect("the subscription carries the new secret");
    let new = h.invite("rotated-new").await;
    h.wait_for(
        &new,
        "Graph's notification with the new secret",
        h.enabled_in_guests(),
    )
    .await;

    // The overlap ends: the old secret is refused.
    h.serve.stop().await.unwrap();
    h.serve.cli.env.truncate(1);
    h.serve.spawn().await.unwrap();
    let late = h.invite_quietly("rotated-late").await;
    assert_eq!(h.post_notification(&late, CLIENT_STATE).await, 202);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        h.account(&late).await.is_none(),
        "the retired secret was accepted"
    );
    assert_eq!(h.post_notification(&late, NEW_STATE).await, 202);
    h.wait_for(&late, "new secret", h.enabled_in_guests()).await;
}

#[tokio::test]
async fn certificate_authentication_holds_across_simulated_days() {
    let cert = graph_sim::certs::rsa_certificate("shadowsync-e2e");
    let dir = tempfile::tempdir().unwrap();
    let cert_file = dir.path().join("graph.crt");
    let key_file = dir.path().join("graph.key");
    std::fs::write(&cert_file, &cert.certificate_pem).unwrap();
    std::fs::write(&key_file, &cert.private_key_pem).unwrap();
    let file = |p: &std::path::Path| Some(p.display().to_string());
    let mut h = Host::start_with(
        BIN,
        HostOptions {
            sim: SimConfig {
                certificate_pem: Some(cert.certificate_pem.clone()),
                ..SimConfig::default()
            },
            env: vec![
                ("SHADOWSYNC_GRAPH_CLIENT_SECRET".into(), None),
                ("SHADOWSYNC_GRAPH_CERTIFICATE_FILE".into(), file(&cert_file)),
                ("SHADOWSYNC_GRAPH_PRIVATE_KEY_FILE".into(), file(&key_file)),
            ],
            ..HostOptions::default()
        },
    )
    .await;
    let first = h.invite("cert-first").await;
    h.wait_for(&first, "with a certificate", h.enabled_in_guests())
        .await;

    // Two days of Graph's time: every access token expired; new assertions are checked against
    // real time, so they must carry real times, whatever Graph's clock says.
    h.graph.advance_time(2.0 * 86_400.0).await.unwrap();
    let later = h.invite("cert-later").await;
    h.wait_for(&later, "two simulated days later", h.enabled_in_guests())
        .await;
}
