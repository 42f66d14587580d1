//! Fault injection (429 + Retry-After, 5xx, latency; counted, per path, or random with a seed)
//! and the rest of the control API.

mod common;

use std::time::{Duration, Instant};

use common::*;
use graph_sim::{FaultRule, SimConfig};
use reqwest::Method;
use serde_json::Value;

#[tokio::test]
async fn throttles_the_next_n_matching_requests_with_retry_after() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
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
    let list: Value = client
        .http()
        .get(format!("{}/_sim/faults", client.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    let t: Value = client
        .http()
        .get(format!("{}/_sim/time", client.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(t["offsetSeconds"], 0.0);
}
