//! users/delta: paging, incremental rounds, @removed reasons, $deltatoken=latest, $select
//! tracking, replays, and the 410 syncStateNotFound on expired tokens.

mod common;

use std::collections::BTreeMap;

use common::*;
use graph_sim::{SimClient, SimConfig};
use reqwest::Method;
use serde_json::{json, Value};

/// Follows nextLinks from `url` to the deltaLink; returns (items, pages, deltaLink).
async fn round(client: &SimClient, url: &str) -> (Vec<Value>, usize, String) {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut next = url.to_string();
    loop {
        let resp = client.graph(Method::GET, &next, None).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        pages += 1;
        items.extend(body["value"].as_array().unwrap().iter().cloned());
        match (body.get("@odata.nextLink"), body.get("@odata.deltaLink")) {
            (Some(n), None) => next = n.as_str().unwrap().to_string(),
            (None, Some(d)) => return (items, pages, d.as_str().unwrap().to_string()),
            other => panic!("a page must carry exactly one of nextLink/deltaLink: {other:?}"),
        }
    }
}

fn by_id(items: &[Value]) -> BTreeMap<String, Value> {
    items
        .iter()
        .map(|i| (i["id"].as_str().unwrap().to_string(), i.clone()))
        .collect()
}

#[tokio::test]
async fn initial_round_pages_then_later_rounds_return_only_changes() {
    let config = SimConfig {
        delta_page_size: 2,
        ..SimConfig::default()
    };
    let (_sim, client) = start_sim(config).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            client
                .invite(&format!("d{i}@fabrikam.com"), &format!("D {i}"))
                .await
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let (items, pages, delta_link) =
        round(&client, "/v1.0/users/delta?$select=displayName,userType").await;
    assert_eq!(items.len(), 5);
    assert_eq!(pages, 3, "5 users in pages of 2");
    assert!(delta_link.contains("$deltatoken="));
    assert!(items
        .iter()
        .all(|u| u["userType"] == "Guest" && u.get("mail").is_none()));

    client
        .patch_user(&ids[0], json!({"displayName": "Renamed"}))
        .await
        .unwrap();
    client.delete_user(&ids[1]).await.unwrap();
    client.delete_user(&ids[2]).await.unwrap();
    client.purge_user(&ids[2]).await.unwrap();
    let new_id = client.invite("new@fabrikam.com", "New").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let (items, _, delta_link2) = round(&client, &delta_link).await;
    let got = by_id(&items);
    assert_eq!(got.len(), 4, "{items:?}");
    assert_eq!(got[&ids[0]]["displayName"], "Renamed");
    assert_eq!(got[&ids[1]]["@removed"], json!({"reason": "changed"}));
    assert_eq!(got[&ids[2]]["@removed"], json!({"reason": "deleted"}));
    assert_eq!(got[&new_id]["displayName"], "New");
    assert!(!got.contains_key(&ids[3]));

    // Restore shows up as a plain object again; nothing else changed.
    client.restore_user(&ids[1]).await.unwrap();
    let (items, _, _) = round(&client, &delta_link2).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], ids[1].as_str());
    assert!(items[0].get("@removed").is_none());
}

#[tokio::test]
async fn deltatoken_latest_starts_from_now() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    client.invite("old@fabrikam.com", "Old").await.unwrap();
    let resp = client
        .graph(Method::GET, "/v1.0/users/delta?$deltatoken=latest", None)
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["value"], json!([]));
    let link = body["@odata.deltaLink"].as_str().unwrap().to_string();
    let fresh = client.invite("fresh@fabrikam.com", "Fresh").await.unwrap();
    let (items, _, _) = round(&client, &link).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], fresh["id"]);
}

#[tokio::test]
async fn select_limits_which_changes_are_tracked() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let id = client.invite("sel@fabrikam.com", "Sel").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, _, link) = round(&client, "/v1.0/users/delta?$select=displayName").await;
    client
        .patch_user(&id, json!({"jobTitle": "Engineer"}))
        .await
        .unwrap();
    let (items, _, link) = round(&client, &link).await;
    assert!(
        items.is_empty(),
        "a change to an unselected property is not reported: {items:?}"
    );
    client
        .patch_user(&id, json!({"displayName": "Sel 2"}))
        .await
        .unwrap();
    let (items, _, _) = round(&client, &link).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["displayName"], "Sel 2");
}

#[tokio::test]
async fn expired_delta_token_is_410_sync_state_not_found() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    client.invite("exp@fabrikam.com", "Exp").await.unwrap();
    let (_, _, link) = round(&client, "/v1.0/users/delta?$select=displayName").await;
    client.advance_time(7.0 * 86400.0 - 60.0).await.unwrap();
    let (_, _, link2) = round(&client, &link).await; // still valid just before 7 days
    client.advance_time(120.0).await.unwrap();
    let resp = client.graph(Method::GET, &link, None).await.unwrap();
    assert_eq!(resp.status(), 410);
    let location = resp
        .headers()
        .get("location")
        .expect("Location header")
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        location.contains("/v1.0/users/delta") && !location.contains("deltatoken"),
        "{location}"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(graph_error_code(&body), "syncStateNotFound");
    // The newer link is still within its own 7 days.
    assert_eq!(
        client
            .graph(Method::GET, &link2, None)
            .await
            .unwrap()
            .status(),
        200
    );
    // Starting over from the Location works.
    let (items, _, _) = round(&client, &location).await;
    assert_eq!(items.len(), 1);
}

#[tokio::test]
async fn replays_repeat_the_previous_rounds_changes() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let (_, _, link) = round(&client, "/v1.0/users/delta").await;
    let id = client.invite("rep@fabrikam.com", "Rep").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (items, _, link2) = round(&client, &link).await;
    assert_eq!(items.len(), 1);
    let (items, _, _) = round(&client, &link2).await;
    assert!(items.is_empty(), "without replays nothing new");
    client
        .set_switches(json!({"deltaReplays": true}))
        .await
        .unwrap();
    let (items, _, _) = round(&client, &link2).await;
    assert_eq!(items.len(), 1, "the change is delivered again");
    assert_eq!(items[0]["id"], id.as_str());
}
