//! Change notification delivery: documented shape, which changes fire what, batching, retries
//! with backoff in simulated time, the retry horizon, slow/drop marking, and the unkind
//! switches (lost, duplicated, reordered).

mod common;

use std::time::Duration;

use common::*;
use graph_sim::SimConfig;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn user_changes_are_notified_in_documented_shape() {
    let (_sim, client) = start_sim(fast_config()).await;
    let rx = start_receiver().await;
    let (_, sub) = subscribe(&client, &rx, 60).await;
    let sub_id = sub["id"].as_str().unwrap();

    let id = client.invite("n@fabrikam.com", "N").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let items = rx.wait_items("/notify", 1, WAIT).await;
    assert_eq!(items.len(), 1, "creation fires one notification");
    let n = &items[0];
    assert_eq!(n["subscriptionId"], sub_id);
    assert_eq!(
        n["changeType"], "updated",
        "creation is 'updated' for users"
    );
    assert_eq!(n["resource"], format!("Users/{id}"));
    assert_eq!(n["resourceData"]["@odata.type"], "#Microsoft.Graph.User");
    assert_eq!(n["resourceData"]["@odata.id"], format!("Users/{id}"));
    assert_eq!(n["resourceData"]["id"], id.as_str());
    assert_eq!(n["clientState"], "s3cret-state");
    assert_eq!(n["tenantId"], SimConfig::default().tenant_id);
    assert!(n["subscriptionExpirationDateTime"].is_string());

    client
        .patch_user(&id, json!({"displayName": "N2"}))
        .await
        .unwrap();
    client.delete_user(&id).await.unwrap();
    rx.wait_items("/notify", 3, WAIT).await;
    client.restore_user(&id).await.unwrap();
    rx.wait_items("/notify", 4, WAIT).await;
    client.delete_user(&id).await.unwrap();
    client.purge_user(&id).await.unwrap();
    let items = rx.wait_items("/notify", 6, WAIT).await;
    let types: Vec<&str> = items
        .iter()
        .map(|i| i["changeType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["updated", "updated", "updated", "updated", "updated", "deleted"]
    );
    // Several changes in quick succession arrive in one POST.
    assert!(
        rx.notifications()
            .iter()
            .any(|r| r.body["value"].as_array().unwrap().len() >= 2),
        "batched"
    );
}

#[tokio::test]
async fn single_user_subscription_only_sees_that_user() {
    let (_sim, client) = start_sim(fast_config()).await;
    let rx = start_receiver().await;
    let watched = client.invite("w@fabrikam.com", "W").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let body = json!({
        "changeType": "updated", "notificationUrl": rx.url("/one"), "resource": format!("/users/{watched}"),
        "expirationDateTime": expiry_in(&client, 60).await, "clientState": "c",
    });
    assert_eq!(
        client
            .graph(reqwest::Method::POST, "/v1.0/subscriptions", Some(&body))
            .await
            .unwrap()
            .status(),
        201
    );
    client.invite("other@fabrikam.com", "Other").await.unwrap();
    client
        .patch_user(&watched, json!({"surname": "S"}))
        .await
        .unwrap();
    let items = rx.wait_items("/one", 1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let items2 = rx.items("/one");
    assert_eq!(items2.len(), 1, "{items:?}");
    assert_eq!(items2[0]["resourceData"]["id"], watched.as_str());
}

fn attempts(log: &[Value]) -> Vec<Value> {
    log.iter()
        .filter(|r| {
            r["kind"] == "notification"
                && r["attempt"].as_u64().unwrap_or(0) > 0
                && r["status"].is_u64()
        })
        .cloned()
        .collect()
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(250)).await;
}

#[tokio::test]
async fn failed_deliveries_retry_with_exponential_backoff_in_simulated_time() {
    let (_sim, client) = start_sim(fast_config()).await;
    let rx = start_receiver().await;
    subscribe(&client, &rx, 60 * 24).await;
    rx.set(|b| b.status = 500);
    client.invite("r@fabrikam.com", "R").await.unwrap();
    client
        .wait_for_log(WAIT, |l| attempts(l).len() == 1)
        .await
        .unwrap();

    // Default backoff: 30 s, then 60 s, ... of simulated time.
    settle().await;
    assert_eq!(
        attempts(&client.delivery_log().await.unwrap()).len(),
        1,
        "no retry before the backoff"
    );
    client.advance_time(28.0).await.unwrap();
    settle().await;
    assert_eq!(
        attempts(&client.delivery_log().await.unwrap()).len(),
        1,
        "no retry at 28 s"
    );
    client.advance_time(3.0).await.unwrap();
    client
        .wait_for_log(WAIT, |l| attempts(l).len() == 2)
        .await
        .unwrap();
    client.advance_time(55.0).await.unwrap();
    settle().await;
    assert_eq!(
        attempts(&client.delivery_log().await.unwrap()).len(),
        2,
        "second backoff is longer (60 s)"
    );
    client.advance_time(6.0).await.unwrap();
    client
        .wait_for_log(WAIT, |l| attempts(l).len() == 3)
        .await
        .unwrap();

    rx.set(|b| b.status = 202);
    client.advance_time(121.0).await.unwrap();
    let log = client
        .wait_for_log(WAIT, |l| attempts(l).len() == 4)
        .await
        .unwrap();
    let a = attempts(&log);
    assert_eq!(a[3]["outcome"], "delivered");
    assert_eq!(
        a.iter()
            .map(|r| r["attempt"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(
        a.iter().all(|r| r["batchId"] == a[0]["batchId"]),
        "the same notification is retried"
    );
    assert_eq!(
        rx.items("/notify").len(),
        4,
        "every attempt reached the receiver"
    );
}

#[tokio::test]
async fn retries_stop_after_the_four_hour_horizon() {
    let (_sim, client) = start_sim(fast_config()).await;
    let rx = start_receiver().await;
    subscribe(&client, &rx, 60 * 24).await;
    rx.set(|b| b.status = 503);
    client.invite("h@fabrikam.com", "H").await.unwrap();
    client
        .wait_for_log(WAIT, |l| attempts(l).len() == 1)
        .await
        .unwrap();
    let mut abandoned = false;
    for _ in 0..20 {
        client.advance_time(1800.0).await.unwrap();
        settle().await;
        let log = client.delivery_log().await.unwrap();
        if log.iter().any(|r| r["outcome"] == "abandoned") {
            abandoned = true;
            break;
        }
    }
    assert!(abandoned, "delivery is given up after the horizon");
    let log = client.delivery_log().await.unwrap();
    let a = attempts(&log);
    let t = |r: &Value| chrono::DateTime::parse_from_rfc3339(r["time"].as_str().unwrap()).unwrap();
    let span = t(a.last().unwrap()) - t(&a[0]);
    assert!(a.len() > 3, "several retries were made");
    assert!(
        span <= chrono::Duration::hours(4),
        "no attempt after 4 h: {span}"
    );
    assert!(
        span >= chrono::Duration::hours(3),
        "retries continued for hours: {span}"
    );
    let n = a.len();
    client.advance_time(3600.0).await.unwrap();
    settle().await;
    assert_eq!(
        attempts(&client.delivery_log().await.unwrap()).len(),
        n,
        "nothing after abandonment"
    );
}

#[tokio::test]
async fn answers_slower_than_the_timeout_count_as_failures() {
    let config = SimConfig {
        delivery_timeout: Duration::from_millis(300),
        ..fast_config()
    };
    let (_sim, client) = start_sim(config).await;
    let rx = start_receiver().await;
    subscribe(&client, &rx, 60).await;
    rx.set(|b| b.delay_ms = 700);
    client.invite("t@fabrikam.com", "T").await.unwrap();
    let log = client
        .wait_for_log(WAIT, |l| {
            l.iter()
                .any(|r| r["kind"] == "notification" && r["outcome"] == "timeout")
        })
        .await
        .unwrap();
    assert!(!log.iter().any(|r| r["outcome"] == "delivered"));
    rx.set(|b| b.delay_ms = 0);
    client.advance_time(31.0).await.unwrap();
    client
        .wait_for_log(WAIT, |l| l.iter().any(|r| r["outcome"] == "delivered"))
        .await
        .unwrap();
}

#[tokio::test]
async fn slow_endpoints_are_delayed_then_dropped() {
    let config = SimConfig {
        health_min_samples: 10,
        slow_threshold: Duration::from_millis(150),
        health_window: Duration::from_secs(3600),
        ..fast_config()
    };
    let (_sim, client) = start_sim(config).await;
    let rx = start_receiver().await;
    subscribe(&client, &rx, 60 * 24).await;
    let health = || async {
        let url = rx.url("/notify");
        let v: Value = client
            .http()
            .get(format!("{}/_sim/endpoint-health", client.base_url()))
            .query(&[("url", url)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["health"].as_str().unwrap().to_string()
    };
    // 9 fast deliveries, then 1 slow one: 10% slow → marked slow.
    for i in 0..9 {
        client
            .invite(&format!("f{i}@fabrikam.com"), "F")
            .await
            .unwrap();
        rx.wait_items("/notify", i + 1, WAIT).await;
    }
    rx.set(|b| b.delay_ms = 300);
    client.invite("slow1@fabrikam.com", "S").await.unwrap();
    rx.wait_items("/notify", 10, WAIT).await;
    client
        .wait_for_log(WAIT, |l| {
            l.iter().filter(|r| r["outcome"] == "delivered").count() == 10
        })
        .await
        .unwrap();
    assert_eq!(health().await, "slow");

    // Deliveries to a slow endpoint are delayed 10 minutes.
    client.invite("delayed@fabrikam.com", "D").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.items("/notify").len(), 10, "held back");
    client.advance_time(601.0).await.unwrap();
    rx.wait_items("/notify", 11, WAIT).await;
    client
        .wait_for_log(WAIT, |l| {
            l.iter().filter(|r| r["outcome"] == "delivered").count() == 11
        })
        .await
        .unwrap();
    // 2 of 11 slow (18%) ≥ 15% → notifications are dropped.
    assert_eq!(health().await, "drop");
    client.invite("dropped@fabrikam.com", "X").await.unwrap();
    client
        .wait_for_log(WAIT, |l| l.iter().any(|r| r["outcome"] == "dropped"))
        .await
        .unwrap();
    client.advance_time(3600.0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rx.items("/notify").len(),
        11,
        "dropped notifications never arrive"
    );
}

#[tokio::test]
async fn lost_notifications_switch_still_leaves_changes_in_delta() {
    let (_sim, client) = start_sim(fast_config()).await;
    let rx = start_receiver().await;
    subscribe(&client, &rx, 60).await;
    let resp = client
        .graph(
            reqwest::Method::GET,
            "/v1.0/users/delta?$deltatoken=latest",
            None,
        )
        .await
        .unwrap();
    let link = resp.json::<Value>().await.unwrap()["@odata.deltaLink"]
        .as_str()
        .unwrap()
        .to_string();
    client.set_notifications_lost(true).await.unwrap();
    let id = client.invite("lost@fabrikam.com", "Lost").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    client
        .wait_for_log(WAIT, |l| l.iter().any(|r| r["outcome"] == "lost"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.items("/notify").is_empty());
    let page: Value = client
        .graph(reqwest::Method::GET, &link, None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        page["value"][0]["id"],
        id.as_str(),
        "the reconciler can still find it"
    );
    client.set_notifications_lost(false).await.unwrap();
    client
        .patch_user(&id, json!({"displayName": "Found"}))
        .await
        .unwrap();
    assert_eq!(rx.wait_items("/notify", 1, WAIT).await.len(), 1);
}

#[tokio::test]
async fn duplicate_and_reorder_switches() {
    let (_sim, client) = start_sim(SimConfig {
        batch_window: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    let rx = start_receiver().await;
    subscribe(&client, &rx, 60).await;
    let a = client.invite("a@fabrikam.com", "A").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = client.invite("b@fabrikam.com", "B").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    rx.wait_items("/notify", 2, WAIT).await;
    client
        .set_switches(json!({"duplicateNotifications": true, "reorderNotifications": true}))
        .await
        .unwrap();
    client
        .patch_user(&a, json!({"displayName": "A2"}))
        .await
        .unwrap();
    client
        .patch_user(&b, json!({"displayName": "B2"}))
        .await
        .unwrap();
    let items = rx.wait_items("/notify", 6, WAIT).await;
    let later: Vec<&str> = items[2..]
        .iter()
        .map(|i| i["resourceData"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        later,
        [b.as_str(), a.as_str(), b.as_str(), a.as_str()],
        "reversed, and delivered twice"
    );
}

fn reauthorization_events(rx: &Receiver) -> usize {
    rx.items("/lifecycle")
        .iter()
        .filter(|i| i["lifecycleEvent"] == "reauthorizationRequired")
        .count()
}

#[tokio::test]
async fn spontaneous_reauthorization_pauses_delivery_until_the_app_reauthorizes() {
    let (_sim, client) = start_sim(fast_config()).await;
    client
        .set_spontaneous_reauthorization(3600.0)
        .await
        .unwrap();
    let rx = start_receiver().await;
    let (_, sub) = subscribe(&client, &rx, 60 * 24).await;
    let sub_id = sub["id"].as_str().unwrap().to_string();
    let id = client.invite("sr@fabrikam.com", "SR").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(rx.wait_items("/notify", 1, WAIT).await.len(), 1);

    client.advance_time(3590.0).await.unwrap();
    settle().await;
    assert_eq!(reauthorization_events(&rx), 0, "not before the hour");
    client.advance_time(11.0).await.unwrap();
    let items = rx.wait_items("/lifecycle", 1, WAIT).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["lifecycleEvent"], "reauthorizationRequired");
    assert_eq!(items[0]["subscriptionId"], sub_id.as_str());
    assert_eq!(items[0]["clientState"], "s3cret-state");
    let s = sim_subscription(&client, &sub_id).await;
    assert_eq!(s["needsReauthorization"], true);
    assert_eq!(s["paused"], true);

    // Changes while paused are withheld (logged `paused`) ...
    client
        .patch_user(&id, json!({"displayName": "While Paused"}))
        .await
        .unwrap();
    client
        .wait_for_log(WAIT, |l| l.iter().any(|r| r["outcome"] == "paused"))
        .await
        .unwrap();
    settle().await;
    assert_eq!(rx.items("/notify").len(), 1, "withheld");
    assert_eq!(sim_subscription(&client, &sub_id).await["withheld"], 1);
    // ... and no second challenge comes while the first is unanswered.
    client.advance_time(3700.0).await.unwrap();
    settle().await;
    assert_eq!(reauthorization_events(&rx), 1);

    // Reauthorizing delivers what was withheld.
    let resp = client
        .graph(
            reqwest::Method::POST,
            &format!("/v1.0/subscriptions/{sub_id}/reauthorize"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let items = rx.wait_items("/notify", 2, WAIT).await;
    assert_eq!(items.len(), 2);
    assert_eq!(items[1]["resourceData"]["id"], id.as_str());
    let s = sim_subscription(&client, &sub_id).await;
    assert_eq!(s["paused"], false);
    assert_eq!(s["withheld"], 0);

    // The clock restarts at the reauthorization; a renewal restarts it too.
    client.advance_time(3000.0).await.unwrap();
    let resp = client
        .graph(
            reqwest::Method::PATCH,
            &format!("/v1.0/subscriptions/{sub_id}"),
            Some(&json!({"expirationDateTime": expiry_in(&client, 60 * 24).await})),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    client.advance_time(3000.0).await.unwrap();
    settle().await;
    assert_eq!(reauthorization_events(&rx), 1, "renewed 3000 s ago");
    client.advance_time(700.0).await.unwrap();
    assert_eq!(rx.wait_items("/lifecycle", 2, WAIT).await.len(), 2);
    client
        .patch_user(&id, json!({"displayName": "Paused Again"}))
        .await
        .unwrap();
    client
        .wait_for_log(WAIT, |l| {
            l.iter().filter(|r| r["outcome"] == "paused").count() == 2
        })
        .await
        .unwrap();
    // Renewing releases the withheld notification as well.
    let resp = client
        .graph(
            reqwest::Method::PATCH,
            &format!("/v1.0/subscriptions/{sub_id}"),
            Some(&json!({"expirationDateTime": expiry_in(&client, 60 * 24).await})),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let items = rx.wait_items("/notify", 3, WAIT).await;
    assert_eq!(items.len(), 3);
}

#[tokio::test]
async fn spontaneous_reauthorization_comes_as_real_time_passes() {
    let (_sim, client) = start_sim(fast_config()).await;
    client.set_spontaneous_reauthorization(1.0).await.unwrap();
    let rx = start_receiver().await;
    let (_, sub) = subscribe(&client, &rx, 60).await;
    // Nobody touches the control API from here: the simulator's own tick sends it.
    let items = rx.wait_items("/lifecycle", 1, Duration::from_secs(5)).await;
    assert_eq!(
        items.len(),
        1,
        "a reauthorizationRequired within a few real seconds"
    );
    assert_eq!(items[0]["lifecycleEvent"], "reauthorizationRequired");
    assert_eq!(items[0]["subscriptionId"], sub["id"]);
}
