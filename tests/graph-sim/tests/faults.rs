//! Fault injection (429 + Retry-After, 5xx, latency; counted, per path, or random with a seed)
//! and the rest of the control API.

mod common;

use std::time::{Duration, Instant};

use common::*;
use graph_sim::{DeltaQuirks, FaultRule, RetryAfterStyle, SimConfig, StaleDeltaTokens};
use reqwest::Method;
use serde_json::Value;

#[tokio::test]
async fn throttles_the_next_n_matching_requests_with_retry_after() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    // The rules' answers one after another, not how a client waits.
    allow_early_retries(&client).await;
    let id = client.invite("t@fabrikam.com", "T").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    client
        .set_fault(FaultRule::throttle_next("/v1.0/users/*", 7, 2))
        .await
        .unwrap();
    // Other routes are not affected.
    assert_eq!(
        client
            .graph(Method::GET, "/v1.0/subscriptions", None)
            .await
            .unwrap()
            .status(),
        200
    );
    for _ in 0..2 {
        let resp = client
            .graph(Method::GET, &format!("/v1.0/users/{id}"), None)
            .await
            .unwrap();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "7");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(graph_error_code(&body), "TooManyRequests");
    }
    assert_eq!(
        client
            .graph(Method::GET, &format!("/v1.0/users/{id}"), None)
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn server_errors_latency_and_method_filters() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    client
        .set_fault(FaultRule {
            method: Some("POST".into()),
            ..FaultRule::fail_next("/v1.0/invitations", 503, 1)
        })
        .await
        .unwrap();
    assert_eq!(
        client
            .graph(Method::GET, "/v1.0/invitations", None)
            .await
            .unwrap()
            .status(),
        405,
        "GET not affected"
    );
    assert!(
        client.invite("a@fabrikam.com", "A").await.is_err(),
        "the POST fails once"
    );
    client.invite("a@fabrikam.com", "A").await.unwrap();

    client
        .set_fault(FaultRule {
            latency_ms: Some(300),
            count: Some(1),
            ..FaultRule {
                path: "/v1.0/users".into(),
                ..Default::default()
            }
        })
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        client
            .graph(Method::GET, "/v1.0/users", None)
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(300));

    client
        .set_fault(FaultRule::fail_next("/v1.0/users", 500, 1))
        .await
        .unwrap();
    let resp = client
        .graph(Method::GET, "/v1.0/users", None)
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(
        graph_error_code(&resp.json().await.unwrap()),
        "generalException"
    );
}

async fn random_pattern(seed: u64) -> Vec<u16> {
    let (_sim, client) = start_sim(SimConfig {
        fault_seed: seed,
        ..SimConfig::default()
    })
    .await;
    client
        .set_fault(FaultRule {
            path: "/v1.0/users*".into(),
            status: Some(503),
            probability: Some(0.5),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    for _ in 0..40 {
        out.push(
            client
                .graph(Method::GET, "/v1.0/users", None)
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    out
}

#[tokio::test]
async fn random_faults_are_reproducible_by_seed() {
    let a = random_pattern(7).await;
    let b = random_pattern(7).await;
    let c = random_pattern(8).await;
    assert_eq!(a, b, "same seed, same faults");
    assert_ne!(a, c, "another seed, other faults");
    let failures = a.iter().filter(|s| **s == 503).count();
    assert!((8..=32).contains(&failures), "about half fail: {failures}");
}

#[tokio::test]
async fn token_endpoint_can_be_throttled_too() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    // The rules' answers one after another, not how a client waits.
    allow_early_retries(&client).await;
    client
        .set_fault(FaultRule::throttle_next("/*/oauth2/v2.0/token", 3, 1))
        .await
        .unwrap();
    let err = client.fetch_token().await.unwrap_err().to_string();
    assert!(err.contains("429"), "{err}");
    client.fetch_token().await.unwrap();
}

#[tokio::test]
async fn faults_can_be_listed_removed_and_reset() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let id = client
        .set_fault(FaultRule::fail_next("/v1.0/users", 500, 5))
        .await
        .unwrap();
    let list: Value = client.sim_get("/_sim/faults").await.unwrap();
    assert_eq!(list["value"][0]["id"], id);
    let resp = client
        .http()
        .delete(format!("{}/_sim/faults/{id}", client.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        client
            .graph(Method::GET, "/v1.0/users", None)
            .await
            .unwrap()
            .status(),
        200
    );

    client.invite("x@fabrikam.com", "X").await.unwrap();
    client.advance_time(100.0).await.unwrap();
    client.reset().await.unwrap();
    let users: Value = client
        .graph(Method::GET, "/v1.0/users", None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(users["value"].as_array().unwrap().len(), 0);
    let t: Value = client.sim_get("/_sim/time").await.unwrap();
    assert_eq!(t["offsetSeconds"], 0.0);
}

async fn retry_after_of(client: &graph_sim::SimClient, status: u16) -> Option<String> {
    let resp = client
        .graph(Method::GET, "/v1.0/users", None)
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), status);
    resp.headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn retry_after_can_be_fractional_or_missing() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    // The rules' answers one after another, not how a client waits.
    allow_early_retries(&client).await;
    let throttle = |secs| FaultRule::throttle_next("/v1.0/users", secs, 1);
    let unavailable = FaultRule {
        retry_after_seconds: Some(2),
        ..FaultRule::fail_next("/v1.0/users", 503, 1)
    };
    let default_429 = FaultRule::fail_next("/v1.0/users", 429, 1);

    // Default: whole seconds, as configured (10 when the rule names none).
    client.set_fault(throttle(7)).await.unwrap();
    assert_eq!(retry_after_of(&client, 429).await.as_deref(), Some("7"));
    client.set_fault(default_429.clone()).await.unwrap();
    assert_eq!(retry_after_of(&client, 429).await.as_deref(), Some("10"));

    client
        .set_retry_after_style(RetryAfterStyle::Fractional)
        .await
        .unwrap();
    client.set_fault(throttle(7)).await.unwrap();
    assert_eq!(retry_after_of(&client, 429).await.as_deref(), Some("7.128"));
    client.set_fault(default_429.clone()).await.unwrap();
    assert_eq!(
        retry_after_of(&client, 429).await.as_deref(),
        Some("10.128")
    );
    client.set_fault(unavailable.clone()).await.unwrap();
    assert_eq!(retry_after_of(&client, 503).await.as_deref(), Some("2.128"));
    // A 503 whose rule names no delay has no header, whatever the style.
    client
        .set_fault(FaultRule::fail_next("/v1.0/users", 503, 1))
        .await
        .unwrap();
    assert_eq!(retry_after_of(&client, 503).await, None);

    client
        .set_retry_after_style(RetryAfterStyle::Missing)
        .await
        .unwrap();
    client.set_fault(throttle(7)).await.unwrap();
    assert_eq!(retry_after_of(&client, 429).await, None);
    client.set_fault(unavailable).await.unwrap();
    let resp = client
        .graph(Method::GET, "/v1.0/users", None)
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_none());
    assert_eq!(
        graph_error_code(&resp.json().await.unwrap()),
        "serviceNotAvailable"
    );
    // The token endpoint's throttling follows the style too.
    client
        .set_fault(FaultRule::throttle_next("/*/oauth2/v2.0/token", 3, 1))
        .await
        .unwrap();
    let resp = client
        .http()
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            client.base_url(),
            SimConfig::default().tenant_id
        ))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("retry-after").is_none());

    client
        .set_retry_after_style(RetryAfterStyle::Seconds)
        .await
        .unwrap();
    client.set_fault(throttle(7)).await.unwrap();
    assert_eq!(retry_after_of(&client, 429).await.as_deref(), Some("7"));
}

#[tokio::test]
async fn fault_rules_take_fractional_retry_after_seconds() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    // The rules' answers one after another, not how a client waits.
    allow_early_retries(&client).await;
    let post = |rule: Value| {
        let client = &client;
        async move {
            client
                .http()
                .post(format!("{}/_sim/faults", client.base_url()))
                .json(&rule)
                .send()
                .await
                .unwrap()
        }
    };
    let resp = post(serde_json::json!({"path": "/v1.0/users", "status": 429, "retryAfterSeconds": 2.128, "count": 1})).await;
    assert_eq!(resp.status(), 201);
    let list: Value = client.sim_get("/_sim/faults").await.unwrap();
    assert_eq!(list["value"][0]["retryAfterMs"], 2128);
    assert_eq!(list["value"][0]["retryAfterSeconds"], 2);
    assert_eq!(retry_after_of(&client, 429).await.as_deref(), Some("2.128"));
    // Integers keep working as before.
    let resp = post(serde_json::json!({"path": "/v1.0/users", "status": 429, "retryAfterSeconds": 3, "count": 1})).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(retry_after_of(&client, 429).await.as_deref(), Some("3"));
    // From Rust: milliseconds.
    client
        .set_fault(FaultRule {
            retry_after_ms: Some(1500),
            ..FaultRule::fail_next("/v1.0/users", 503, 1)
        })
        .await
        .unwrap();
    assert_eq!(retry_after_of(&client, 503).await.as_deref(), Some("1.5"));
    // A fractional value is not made more fractional by the `fractional` style.
    client
        .set_retry_after_style(RetryAfterStyle::Fractional)
        .await
        .unwrap();
    post(serde_json::json!({"path": "/v1.0/users", "status": 429, "retryAfterSeconds": 0.75, "count": 1})).await;
    assert_eq!(retry_after_of(&client, 429).await.as_deref(), Some("0.75"));
    // Nonsense is refused.
    let resp =
        post(serde_json::json!({"path": "/v1.0/users", "status": 429, "retryAfterSeconds": -1}))
            .await;
    assert!(resp.status().is_client_error(), "{}", resp.status());
}

#[tokio::test]
async fn switches_merge_and_typed_helpers_change_only_their_own() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let all = client.switches().await.unwrap();
    assert!(!all.notifications_lost && !all.permission_removed && !all.delta_duplicates);
    assert_eq!(all.retry_after, RetryAfterStyle::Seconds);
    assert_eq!(all.stale_delta_tokens, None);
    assert_eq!(all.replication_lag_seconds, 0.0);
    assert_eq!(all.spontaneous_reauthorization_seconds, 0.0);

    client.set_notifications_lost(true).await.unwrap();
    client.set_replication_lag(12.5).await.unwrap();
    client
        .set_retry_after_style(RetryAfterStyle::Fractional)
        .await
        .unwrap();
    client.set_spontaneous_reauthorization(900.0).await.unwrap();
    client
        .set_delta_quirks(DeltaQuirks {
            duplicates: true,
            partial_items: false,
            empty_pages: true,
        })
        .await
        .unwrap();
    client
        .set_stale_delta_tokens(Some(StaleDeltaTokens::ResyncRequired))
        .await
        .unwrap();
    client.set_permission_removed(true).await.unwrap();
    let raw: Value = client.sim_get("/_sim/switches").await.unwrap();
    assert_eq!(
        raw,
        serde_json::json!({
            "earlyRetriesAllowed": false,
            "notificationsLost": true,
            "duplicateNotifications": false,
            "reorderNotifications": false,
            "deltaReplays": false,
            "replicationLagSeconds": 12.5,
            "retryAfter": "fractional",
            "spontaneousReauthorizationSeconds": 900.0,
            "deltaDuplicates": true,
            "deltaPartialItems": false,
            "deltaEmptyPages": true,
            "staleDeltaTokens": "resyncRequired",
            "permissionRemoved": true,
        })
    );
    client.set_stale_delta_tokens(None).await.unwrap();
    client.set_permission_removed(false).await.unwrap();
    let all = client.switches().await.unwrap();
    assert_eq!(all.stale_delta_tokens, None);
    assert!(all.notifications_lost && all.delta_empty_pages && !all.permission_removed);

    // Unknown names and ill-typed values are refused, changing nothing.
    for bad in [
        serde_json::json!({"noSuchSwitch": true}),
        serde_json::json!({"retryAfter": "sometimes"}),
        serde_json::json!({"staleDeltaTokens": "expired"}),
    ] {
        let resp = client.set_switches(bad.clone()).await;
        assert!(resp.is_err(), "{bad}");
    }
    assert_eq!(
        client.switches().await.unwrap().retry_after,
        RetryAfterStyle::Fractional
    );
    // Reset turns everything off.
    client.reset().await.unwrap();
    let all = client.switches().await.unwrap();
    assert!(!all.notifications_lost && !all.delta_empty_pages);
    assert_eq!(all.retry_after, RetryAfterStyle::Seconds);
}

#[tokio::test]
async fn a_retry_before_retry_after_is_throttled_again_and_counted() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    client
        .set_fault(FaultRule {
            retry_after_ms: Some(400),
            ..FaultRule::fail_next("/v1.0/users", 503, 1)
        })
        .await
        .unwrap();
    assert_eq!(retry_after_of(&client, 503).await.as_deref(), Some("0.4"));
    // At once: throttled again, told to wait what is left.
    let left = retry_after_of(&client, 429).await.unwrap();
    assert!(left.parse::<f64>().unwrap() <= 0.4, "{left}");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(retry_after_of(&client, 200).await, None);
    let stats = client.fault_stats().await.unwrap();
    assert_eq!(
        (stats.injected, stats.with_retry_after, stats.early_retries),
        (2, 2, 1)
    );
}
