//! users/delta: paging, incremental rounds, @removed reasons, $deltatoken=latest, $select
//! tracking, replays, and the 410 syncStateNotFound on expired tokens.

mod common;

use std::collections::BTreeMap;

use common::*;
use graph_sim::{DeltaQuirks, SimClient, SimConfig, StaleDeltaTokens};
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

/// Every page of a round from `url`: (items per page, deltaLink).
async fn pages(client: &SimClient, url: &str) -> (Vec<Vec<Value>>, String) {
    let mut out = Vec::new();
    let mut next = url.to_string();
    loop {
        let resp = client.graph(Method::GET, &next, None).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        out.push(body["value"].as_array().unwrap().clone());
        match (body.get("@odata.nextLink"), body.get("@odata.deltaLink")) {
            (Some(n), None) => next = n.as_str().unwrap().to_string(),
            (None, Some(d)) => return (out, d.as_str().unwrap().to_string()),
            other => panic!("a page must carry exactly one of nextLink/deltaLink: {other:?}"),
        }
    }
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

async fn invite_n(client: &SimClient, n: usize, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(
            client
                .invite(
                    &format!("{prefix}{i}@fabrikam.com"),
                    &format!("{prefix} {i}"),
                )
                .await
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    out
}

#[tokio::test]
async fn delta_duplicates_repeat_items_within_a_round() {
    let (_sim, client) = start_sim(SimConfig {
        delta_page_size: 2,
        ..SimConfig::default()
    })
    .await;
    let users = invite_n(&client, 3, "dup").await;
    client
        .set_delta_quirks(DeltaQuirks {
            duplicates: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let (items, pages, link) = round(&client, "/v1.0/users/delta").await;
    assert_eq!(pages, 3, "6 items in pages of 2");
    let got = ids(&items);
    assert_eq!(got.len(), 6);
    for u in &users {
        assert_eq!(
            got.iter().filter(|i| *i == u).count(),
            2,
            "{u} twice: {got:?}"
        );
    }
    client
        .patch_user(&users[1], json!({"displayName": "Changed"}))
        .await
        .unwrap();
    let (items, _, _) = round(&client, &link).await;
    assert_eq!(ids(&items), [users[1].clone(), users[1].clone()]);
    assert!(items.iter().all(|i| i["displayName"] == "Changed"));
}

#[tokio::test]
async fn delta_partial_items_carry_only_changed_properties() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let id = invite_n(&client, 1, "part").await.remove(0);
    client
        .set_delta_quirks(DeltaQuirks {
            partial_items: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let select = "/v1.0/users/delta?$select=displayName,userType,jobTitle,mail,accountEnabled";
    let (items, _, link) = round(&client, select).await;
    let u = items[0].as_object().unwrap();
    // Never-set properties are left out instead of null.
    assert!(!u.contains_key("jobTitle"), "{u:?}");
    assert_eq!(u["userType"], "Guest");
    assert_eq!(u["mail"], "part0@fabrikam.com");

    client
        .patch_user(&id, json!({"displayName": "Renamed"}))
        .await
        .unwrap();
    let (items, _, link) = round(&client, &link).await;
    assert_eq!(
        items,
        [json!({"id": id, "displayName": "Renamed"})],
        "only id and what changed: userType is absent"
    );

    client
        .patch_user(
            &id,
            json!({"jobTitle": "Engineer", "accountEnabled": false}),
        )
        .await
        .unwrap();
    let (items, _, link) = round(&client, &link).await;
    assert_eq!(
        items,
        [json!({"id": id, "jobTitle": "Engineer", "accountEnabled": false})]
    );

    // A user created since the last round comes with everything it has.
    let new = invite_n(&client, 1, "fresh").await.remove(0);
    client.delete_user(&id).await.unwrap();
    let (items, _, _) = round(&client, &link).await;
    let got = by_id(&items);
    assert_eq!(got[&new]["userType"], "Guest");
    assert!(got[&new].get("jobTitle").is_none());
    assert_eq!(
        got[&id],
        json!({"id": id, "@removed": {"reason": "changed"}})
    );

    // Without the switch: every selected property, null included.
    client
        .set_delta_quirks(DeltaQuirks::default())
        .await
        .unwrap();
    let (items, _, _) = round(&client, select).await;
    assert!(items[0].as_object().unwrap().contains_key("jobTitle"));
}

#[tokio::test]
async fn delta_empty_pages_come_before_and_between_real_pages() {
    let (_sim, client) = start_sim(SimConfig {
        delta_page_size: 2,
        ..SimConfig::default()
    })
    .await;
    let users = invite_n(&client, 3, "empty").await;
    client
        .set_delta_quirks(DeltaQuirks {
            empty_pages: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let (got, link) = pages(&client, "/v1.0/users/delta").await;
    let sizes: Vec<usize> = got.iter().map(Vec::len).collect();
    assert_eq!(sizes, [0, 2, 0, 1], "empty, real, empty, real + deltaLink");
    let all: Vec<String> = got.iter().flat_map(|p| ids(p)).collect();
    assert_eq!(all, users);
    // An incremental round with nothing new: an empty page with a nextLink first.
    let (got, link) = pages(&client, &link).await;
    assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [0, 0]);
    client
        .patch_user(&users[0], json!({"surname": "S"}))
        .await
        .unwrap();
    let (got, _) = pages(&client, &link).await;
    assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [0, 1]);
}

#[tokio::test]
async fn stale_delta_tokens_answer_the_configured_error() {
    let (_sim, client) = start_sim(SimConfig {
        delta_page_size: 1,
        ..SimConfig::default()
    })
    .await;
    invite_n(&client, 2, "stale").await;
    for kind in [
        StaleDeltaTokens::Gone,
        StaleDeltaTokens::BadRequest,
        StaleDeltaTokens::ResyncRequired,
    ] {
        // A finished round (deltaLink) and one in progress (nextLink), both minted now.
        let (_, _, delta_link) = round(&client, "/v1.0/users/delta?$select=displayName").await;
        let first: Value = client
            .graph(Method::GET, "/v1.0/users/delta?$select=displayName", None)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let next_link = first["@odata.nextLink"].as_str().unwrap().to_string();

        client.set_stale_delta_tokens(Some(kind)).await.unwrap();
        for link in [&delta_link, &next_link] {
            let resp = client.graph(Method::GET, link, None).await.unwrap();
            let status = resp.status().as_u16();
            let location = resp
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_string());
            let body: Value = resp.json().await.unwrap();
            let code = graph_error_code(&body);
            match kind {
                StaleDeltaTokens::Gone => {
                    assert_eq!((status, code.as_str()), (410, "syncStateNotFound"));
                }
                StaleDeltaTokens::BadRequest => {
                    assert_eq!((status, code.as_str()), (400, "syncStateNotFound"));
                    assert_eq!(location, None);
                }
                StaleDeltaTokens::ResyncRequired => {
                    assert_eq!((status, code.as_str()), (410, "resyncRequired"));
                }
            }
            if kind != StaleDeltaTokens::BadRequest {
                let location = location.expect("Location header");
                assert!(
                    location.ends_with("/v1.0/users/delta?$select=displayName"),
                    "{location}"
                );
                // Starting over from the Location works: links minted now are good.
                let (items, _, fresh) = round(&client, &location).await;
                assert_eq!(items.len(), 2);
                let (items, _, _) = round(&client, &fresh).await;
                assert!(items.is_empty());
            }
        }
        // A link minted after the switch was set works; setting it again makes it stale too.
        let (_, _, after) = round(&client, "/v1.0/users/delta").await;
        round(&client, &after).await;
        client.set_stale_delta_tokens(Some(kind)).await.unwrap();
        let status = client
            .graph(Method::GET, &after, None)
            .await
            .unwrap()
            .status();
        assert!(status == 400 || status == 410, "{status}");
        client.set_stale_delta_tokens(None).await.unwrap();
    }
}
