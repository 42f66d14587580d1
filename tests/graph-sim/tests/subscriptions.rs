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
        base("updated", "/applications", rx.url("/n"), ok_exp.clone()),
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
    let (_, sub) = subscribe(&client, &rx, 60).await;
    let id = sub["id"].as_str().unwrap();
    client.advance_time(61.0 * 60.0).await.unwrap();
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
    let subs: Value = client.sim_get("/_sim/subscriptions").await.unwrap();
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
    let subs: Value = client.sim_get("/_sim/subscriptions").await.unwrap();
    assert_eq!(subs["value"][0]["needsReauthorization"], false);
}

async fn sim_now(client: &graph_sim::SimClient) -> chrono::DateTime<chrono::Utc> {
    let t: Value = client.sim_get("/_sim/time").await.unwrap();
    chrono::DateTime::parse_from_rfc3339(t["now"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc)
}

fn minutes_after(granted: &Value, now: chrono::DateTime<chrono::Utc>) -> f64 {
    let t = chrono::DateTime::parse_from_rfc3339(granted.as_str().unwrap()).unwrap();
    (t.with_timezone(&chrono::Utc) - now).num_milliseconds() as f64 / 60_000.0
}

#[tokio::test]
async fn lifetimes_under_45_minutes_are_raised_to_45() {
    let (_sim, client) = start_sim(fast_config()).await;
    let rx = start_receiver().await;
    let now = sim_now(&client).await;
    let (status, sub) = subscribe(&client, &rx, 10).await;
    assert_eq!(status, 201, "{sub}");
    let granted = minutes_after(&sub["expirationDateTime"], now);
    assert!((44.9..45.1).contains(&granted), "granted {granted} minutes");
    let id = sub["id"].as_str().unwrap().to_string();

    // Renewal alike.
    client.advance_time(20.0 * 60.0).await.unwrap();
    let now = sim_now(&client).await;
    let resp = client
        .graph(
            Method::PATCH,
            &format!("/v1.0/subscriptions/{id}"),
            Some(&json!({"expirationDateTime": expiry_in(&client, 1).await})),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let renewed: Value = resp.json().await.unwrap();
    let granted = minutes_after(&renewed["expirationDateTime"], now);
    assert!(
        (44.9..45.1).contains(&granted),
        "renewed for {granted} minutes"
    );

    // Still in the past: 400 as before, on creation and renewal.
    for (method, path) in [
        (Method::PATCH, format!("/v1.0/subscriptions/{id}")),
        (Method::POST, "/v1.0/subscriptions".to_string()),
    ] {
        let body = json!({
            "changeType": "deleted", "notificationUrl": rx.url("/n"), "resource": "/users",
            "expirationDateTime": expiry_in(&client, -1).await, "clientState": "x",
        });
        let resp = client
            .graph(method.clone(), &path, Some(&body))
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{method} {path}");
        assert_eq!(
            graph_error_code(&resp.json().await.unwrap()),
            "InvalidRequest"
        );
    }

    // It lives the 45 minutes granted, not the 1 asked for.
    client.advance_time(44.0 * 60.0).await.unwrap();
    let get = |id: String| {
        let client = &client;
        async move {
            client
                .graph(Method::GET, &format!("/v1.0/subscriptions/{id}"), None)
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(get(id.clone()).await, 200);
    client.advance_time(2.0 * 60.0).await.unwrap();
    assert_eq!(get(id).await, 404);
}

#[tokio::test]
async fn listing_subscriptions_never_returns_client_state() {
    let (_sim, client) = start_sim(fast_config()).await;
    let rx = start_receiver().await;
    let (_, sub) = subscribe(&client, &rx, 60).await;
    let id = sub["id"].as_str().unwrap();
    assert_eq!(
        sub["clientState"], "s3cret-state",
        "the creation answer has it"
    );
    let list: Value = client
        .graph(Method::GET, "/v1.0/subscriptions", None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = &list["value"][0];
    assert_eq!(listed["id"], id);
    assert!(
        listed.as_object().unwrap().contains_key("clientState") && listed["clientState"].is_null(),
        "{listed}"
    );
    // GET by id still returns it (the docs do not say otherwise; clients should not rely on it).
    let got: Value = client
        .graph(Method::GET, &format!("/v1.0/subscriptions/{id}"), None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["clientState"], "s3cret-state");
}
