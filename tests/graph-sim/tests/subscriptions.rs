//! Subscription creation with the validation handshake, Graph's limits for users, 409 on
//! duplicates, renew/delete/reauthorize, and expiry in simulated time.

mod common;

use std::time::Duration;

use common::*;
use graph_sim::SimConfig;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn correct_handshake_creates_subscription() {
    let (_sim, client) = start_sim(fast_config()).await;
    let rx = start_receiver().await;
    let (status, sub) = subscribe(&client, &rx, 60).await;
    assert_eq!(status, 201, "{sub}");
    for f in [
        "id",
        "resource",
        "applicationId",
        "changeType",
        "clientState",
        "notificationUrl",
        "lifecycleNotificationUrl",
        "expirationDateTime",
    ] {
        assert!(!sub[f].is_null(), "{f} missing in {sub}");
    }
    assert_eq!(sub["changeType"], "updated,deleted");
    assert_eq!(sub["clientState"], "s3cret-state");
    // Both URLs were validated, with a token that needed URL-decoding.
    let validations = rx.validations.lock().unwrap().clone();
    assert_eq!(validations.len(), 2);
    assert!(validations[0].starts_with("Validation: ") && validations[0].contains(' '));
    let log = client.delivery_log().await.unwrap();
    assert_eq!(
        log.iter()
            .filter(|r| r["kind"] == "validation" && r["outcome"] == "validated")
            .count(),
        2
    );
}

#[tokio::test]
async fn wrong_handshake_answers_fail_with_400() {
    let config = SimConfig {
        validation_timeout: Duration::from_millis(300),
        ..fast_config()
    };
    let (_sim, client) = start_sim(config).await;
    for handshake in [
        Handshake::WrongBody,
        Handshake::Html,
        Handshake::NotDecoded,
        Handshake::Fail,
        Handshake::Slow(800),
    ] {
        let rx = start_receiver().await;
        rx.set(|b| b.handshake = handshake);
        let (status, body) = subscribe(&client, &rx, 60).await;
        assert_eq!(status, 400, "{handshake:?}: {body}");
        assert_eq!(graph_error_code(&body), "InvalidRequest");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Subscription validation request failed."),
            "{body}"
        );
    }
    let resp = client
        .graph(Method::GET, "/v1.0/subscriptions", None)
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["value"], json!([]));
}

#[tokio::test]
async fn failing_lifecycle_url_also_fails_creation() {
    let (_sim, client) = start_sim(fast_config()).await;
    let good = start_receiver().await;
    let bad = start_receiver().await;
    bad.set(|b| b.handshake = Handshake::WrongBody);
    let body = json!({
        "changeType": "updated",
        "notificationUrl": good.url("/notify"),
        "lifecycleNotificationUrl": bad.url("/lifecycle"),
        "resource": "users",
        "expirationDateTime": expiry_in(&client, 60).await,
        "clientState": "x",
    });
    let resp = client
        .graph(Method::POST, "/v1.0/subscriptions", Some(&body))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn users_subscriptions_enforce_graph_limits() {
    let (_sim, client) = start_sim(fast_config()).await;
    let rx = start_receiver().await;
    let base = |change: &str, resource: &str, url: String, exp: String| json!({ "changeType": change, "notificationUrl": url, "resource": resource, "expirationDateTime": exp, "clientState": "x" });
    let ok_exp = expiry_in(&client, 41_700).await;
    let cases = vec![
        base("created", "/users", rx.url("/n"), ok_exp.clone()),
        base("updated,created", "/users", rx.url("/n"), ok_exp.clone()),
        base("updated", "/groups", rx.url("/n"), ok_exp.clone()),
        base(
            "updated",
            "/users?$filter=userType eq 'Guest'",
            rx.url("/n"),
            ok_exp.clone(),
        ),
        base(
            "updated",
            "/users",
            "http://example.com/notify".into(),
            ok_exp.clone(),
        ),
        base(
            "updated",
            "/users",
            rx.url("/n"),
            expiry_in(&client, 41_761).await,
        ),
        base(
            "updated",
            "/users",
            rx.url("/n"),
            expiry_in(&client, -5).await,
        ),
    ];
    for body in cases {
        let resp = client
            .graph(Method::POST, "/v1.0/subscriptions", Some(&body))
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let err: Value = resp.json().await.unwrap();
        graph_error_code(&err);
    }
    let resp = client
        .graph(
            Method::POST,
            "/v1.0/subscriptions",
            Some(&base("updated", "/users", rx.url("/n"), ok_exp.clone())),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let single = json!({ "changeType": "deleted", "notificationUrl": rx.url("/n"), "resource": format!("/users/{}", uuid::Uuid::new_v4()), "expirationDateTime": ok_exp, "clientState": "x" });
    let resp = client
        .graph(Method::POST, "/v1.0/subscriptions", Some(&single))
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}

#[tokio::test]
async fn duplicate_subscription_is_409() {
    let (_sim, client) = start_sim(fast_config()).await;
    let rx = start_receiver().await;
    let (status, first) = subscribe(&client, &rx, 60).await;
    assert_eq!(status, 201);
    let (status, body) = subscribe(&client, &rx, 60).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(graph_error_code(&body), "ObjectIdentifierInUse");
    let msg = body["error"]["message"].as_str().unwrap();
    assert_eq!(
        msg,
        format!(
            "Subscription Id {} already exists for the requested combination",
            first["id"].as_str().unwrap()
        )
    );
}

#[tokio::test]
async fn list_get_renew_reauthorize_delete() {
    let (_sim, client) = start_sim(fast_config()).await;
    let rx = start_receiver().await;
    let (_, sub) = subscribe(&client, &rx, 60).await;
    let id = sub["id"].as_str().unwrap();
    let list: Value = client
        .graph(Method::GET, "/v1.0/subscriptions", None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["value"].as_array().unwrap().len(), 1);
    let got: Value = client
        .graph(Method::GET, &format!("/v1.0/subscriptions/{id}"), None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["id"], id);

    let new_exp = expiry_in(&client, 40_000).await;
    let resp = client
        .graph(
            Method::PATCH,
            &format!("/v1.0/subscriptions/{id}"),
            Some(&json!({"expirationDateTime": new_exp})),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let renewed: Value = resp.json().await.unwrap();
    assert!(renewed["expirationDateTime"]
        .as_str()
        .unwrap()
        .starts_with(&new_exp[..19]));
    let too_far = expiry_in(&client, 50_000).await;
    let resp = client
        .graph(
            Method::PATCH,
            &format!("/v1.0/subscriptions/{id}"),
            Some(&json!({"expirationDateTime": too_far})),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    let resp = client
        .graph(
            Method::POST,
            &format!("/v1.0/subscriptions/{id}/reauthorize"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = client
        .graph(Method::DELETE, &format!("/v1.0/subscriptions/{id}"), None)
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = client
        .graph(Method::GET, &format!("/v1.0/subscriptions/{id}"), None)
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = client
        .graph(Method::DELETE, &format!("/v1.0/subscriptions/{id}"), None)
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn subscriptions_expire_in_simulated_time_and_stop_delivering() {
    let (_sim, client) = start_sim(fast_config()).await;
    let rx = start_receiver().await;
    let (_, sub) = subscribe(&client, &rx, 10).await;
    let id = sub["id"].as_str().unwrap();
    client.advance_time(11.0 * 60.0).await.unwrap();
    let resp = client
        .graph(Method::GET, &format!("/v1.0/subscriptions/{id}"), None)
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = client
        .graph(
            Method::PATCH,
            &format!("/v1.0/subscriptions/{id}"),
            Some(&json!({"expirationDateTime": expiry_in(&client, 60).await})),
        )
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        404,
        "an expired subscription cannot be renewed"
    );
    client.invite("late@fabrikam.com", "Late").await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(rx.items("/notify").is_empty());
    // After expiry the same combination can be created again.
    let (status, _) = subscribe(&client, &rx, 60).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn reauthorization_required_lifecycle_notification() {
    let (_sim, client) = start_sim(fast_config()).await;
    let rx = start_receiver().await;
    let (_, sub) = subscribe(&client, &rx, 60).await;
    let id = sub["id"].as_str().unwrap();
    client
        .trigger_lifecycle(id, "reauthorizationRequired")
        .await
        .unwrap();
    let items = rx.wait_items("/lifecycle", 1, Duration::from_secs(3)).await;
    assert_eq!(items.len(), 1);
    let n = &items[0];
    assert_eq!(n["lifecycleEvent"], "reauthorizationRequired");
    assert_eq!(n["subscriptionId"], id);
    assert_eq!(n["clientState"], "s3cret-state");
    assert_eq!(n["tenantId"], SimConfig::default().tenant_id);
    assert!(n["subscriptionExpirationDateTime"].is_string());
    let subs: Value = client
        .http()
        .get(format!("{}/_sim/subscriptions", client.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(subs["value"][0]["needsReauthorization"], true);
    let resp = client
        .graph(
            Method::POST,
            &format!("/v1.0/subscriptions/{id}/reauthorize"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let subs: Value = client
        .http()
        .get(format!("{}/_sim/subscriptions", client.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(subs["value"][0]["needsReauthorization"], false);
}
