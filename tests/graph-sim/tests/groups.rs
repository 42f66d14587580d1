//! Groups: change notifications for `/groups` and `/groups/{id}` subscriptions (membership
//! changes fire `updated` for the group whose direct members changed), `groups/delta` with
//! `members@delta`, `$filter` by id, expiry, and Graph's subscription rules and quota.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use graph_sim::{SimClient, SimConfig};
use reqwest::Method;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(3);
const USER: &str = "#microsoft.graph.user";
const GROUP: &str = "#microsoft.graph.group";

async fn group(client: &SimClient, name: &str) -> String {
    id_of(&client.create_group(name).await.unwrap())
}

async fn guest(client: &SimClient, name: &str) -> String {
    id_of(
        &client
            .invite(&format!("{name}@fabrikam.com"), name)
            .await
            .unwrap(),
    )
}

fn by_id(items: &[Value]) -> BTreeMap<String, Value> {
    items
        .iter()
        .map(|i| (i["id"].as_str().unwrap().to_string(), i.clone()))
        .collect()
}

/// `members@delta` as (type, id, removed) triples; empty when absent.
fn members(item: &Value) -> BTreeSet<(String, String, bool)> {
    item["members@delta"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let removed = match m.get("@removed") {
                None => false,
                Some(r) => {
                    assert_eq!(r, &json!({"reason": "deleted"}), "{m}");
                    true
                }
            };
            (
                m["@odata.type"].as_str().unwrap().to_string(),
                m["id"].as_str().unwrap().to_string(),
                removed,
            )
        })
        .collect()
}

fn member(odata_type: &str, id: &str, removed: bool) -> (String, String, bool) {
    (odata_type.to_string(), id.to_string(), removed)
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn membership_changes_notify_the_group_as_updated() {
    let (_sim, client) = start_sim(fast_config()).await;
    let scope = group(&client, "Scope").await;
    let nested = group(&client, "Nested").await;
    let alice = guest(&client, "alice").await;

    let rx = start_receiver().await;
    let (status, sub) = subscribe_to(
        &client,
        &rx,
        &format!("/groups/{scope}"),
        "updated,deleted",
        60,
    )
    .await;
    assert_eq!(status, 201, "{sub}");
    assert_eq!(sub["resource"], format!("/groups/{scope}"));
    assert_eq!(
        rx.validations.lock().unwrap().len(),
        2,
        "notification and lifecycle URLs are validated"
    );
    let everything = start_receiver().await;
    let (status, _) = subscribe_to(&client, &everything, "/groups", "updated,deleted", 60).await;
    assert_eq!(status, 201);

    client.add_member(&scope, &alice).await.unwrap();
    let items = rx.wait_items("/notify", 1, WAIT).await;
    assert_eq!(items.len(), 1, "{items:?}");
    let n = &items[0];
    assert_eq!(n["subscriptionId"], sub["id"]);
    assert_eq!(n["changeType"], "updated");
    assert_eq!(n["resource"], format!("Groups/{scope}"));
    assert_eq!(
        n["resourceData"],
        json!({
            "@odata.type": "#Microsoft.Graph.Group",
            "@odata.id": format!("Groups/{scope}"),
            "id": scope,
            "organizationId": SimConfig::default().tenant_id,
        })
    );
    assert_eq!(n["clientState"], "s3cret-state");
    assert!(n["subscriptionExpirationDateTime"].is_string());

    client.remove_member(&scope, &alice).await.unwrap();
    client.add_member(&scope, &nested).await.unwrap();
    let items = rx.wait_items("/notify", 3, WAIT).await;
    assert_eq!(items.len(), 3, "{items:?}");
    assert!(items
        .iter()
        .all(|i| i["changeType"] == "updated" && i["resource"] == format!("Groups/{scope}")));

    // A member added to the nested group changes the nested group's members only: Graph
    // notifies that group, not the groups it belongs to.
    client.add_member(&nested, &alice).await.unwrap();
    let all = everything.wait_items("/notify", 4, WAIT).await;
    assert_eq!(all.len(), 4, "{all:?}");
    assert_eq!(all[3]["resource"], format!("Groups/{nested}"));
    settle().await;
    assert_eq!(rx.items("/notify").len(), 3);

    // Deleting the nested group takes it out of the scope group (updated) and deletes it.
    client.delete_group(&nested).await.unwrap();
    let items = rx.wait_items("/notify", 4, WAIT).await;
    assert_eq!(items.len(), 4, "{items:?}");
    assert_eq!(items[3]["changeType"], "updated");
    let all = everything.wait_items("/notify", 6, WAIT).await;
    let tail: BTreeSet<(String, String)> = all[4..]
        .iter()
        .map(|i| {
            (
                i["changeType"].as_str().unwrap().to_string(),
                i["resource"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        tail,
        BTreeSet::from([
            ("updated".to_string(), format!("Groups/{scope}")),
            ("deleted".to_string(), format!("Groups/{nested}")),
        ])
    );

    // The delivery log has them, and group subscriptions get lifecycle events like any other.
    let log = client.delivery_log().await.unwrap();
    let delivered = log
        .iter()
        .filter(|r| {
            r["kind"] == "notification"
                && r["outcome"] == "delivered"
                && r["url"] == rx.url("/notify")
        })
        .flat_map(|r| r["body"]["value"].as_array().cloned().unwrap_or_default())
        .count();
    assert_eq!(delivered, 4);
    client
        .trigger_lifecycle(sub["id"].as_str().unwrap(), "reauthorizationRequired")
        .await
        .unwrap();
    let lifecycle = rx.wait_items("/lifecycle", 1, WAIT).await;
    assert_eq!(lifecycle[0]["lifecycleEvent"], "reauthorizationRequired");
    assert_eq!(lifecycle[0]["subscriptionId"], sub["id"]);
}

#[tokio::test]
async fn groups_delta_lists_members_first_then_only_membership_changes() {
    let config = SimConfig {
        delta_page_size: 2,
        ..SimConfig::default()
    };
    let (_sim, client) = start_sim(config).await;
    let scope = group(&client, "Scope").await;
    let nested = group(&client, "Nested").await;
    let empty = group(&client, "Empty").await;
    let mut g = Vec::new();
    for i in 0..5 {
        g.push(guest(&client, &format!("g{i}")).await);
    }
    client.add_member(&scope, &g[0]).await.unwrap();
    client.add_member(&scope, &g[1]).await.unwrap();
    client.add_member(&scope, &nested).await.unwrap();
    client.add_member(&nested, &g[2]).await.unwrap();

    let first = client
        .groups_delta(Some("displayName,members"), &[])
        .await
        .unwrap();
    assert!(first.delta_link.contains("/v1.0/groups/delta?$deltatoken="));
    let got = by_id(&first.items);
    assert_eq!(got.len(), 3, "{:?}", first.items);
    assert_eq!(got[&scope]["displayName"], "Scope");
    assert!(got[&scope].get("mailNickname").is_none(), "only $select");
    assert_eq!(
        members(&got[&scope]),
        BTreeSet::from([
            member(USER, &g[0], false),
            member(USER, &g[1], false),
            member(GROUP, &nested, false),
        ])
    );
    assert_eq!(
        members(&got[&nested]),
        BTreeSet::from([member(USER, &g[2], false)])
    );
    assert!(
        got[&empty].get("members@delta").is_none(),
        "a group without members has no members@delta"
    );

    client.add_member(&scope, &g[3]).await.unwrap();
    client.remove_member(&scope, &g[1]).await.unwrap();
    // Added and removed again within the round: no net change.
    client.add_member(&scope, &g[4]).await.unwrap();
    client.remove_member(&scope, &g[4]).await.unwrap();
    client.delete_group(&empty).await.unwrap();
    // Soft-deleted users keep their memberships: no change for the group.
    client.delete_user(&g[0]).await.unwrap();

    let second = client.delta_round(&first.delta_link).await.unwrap();
    let got = by_id(&second.items);
    assert_eq!(got.len(), 2, "{:?}", second.items);
    assert_eq!(
        members(&got[&scope]),
        BTreeSet::from([member(USER, &g[3], false), member(USER, &g[1], true)])
    );
    assert_eq!(
        got[&scope]["displayName"], "Scope",
        "unchanged selected properties come too"
    );
    assert_eq!(
        got[&empty],
        json!({"id": empty, "@removed": {"reason": "deleted"}})
    );

    let third = client.delta_round(&second.delta_link).await.unwrap();
    assert_eq!(third.items, Vec::<Value>::new(), "nothing changed since");

    // A permanently deleted user leaves its groups; a new group comes whole.
    client.purge_user(&g[0]).await.unwrap();
    let late = group(&client, "Late").await;
    client.add_member(&late, &g[3]).await.unwrap();
    let fourth = client.delta_round(&third.delta_link).await.unwrap();
    let got = by_id(&fourth.items);
    assert_eq!(got.len(), 2, "{:?}", fourth.items);
    assert_eq!(
        members(&got[&scope]),
        BTreeSet::from([member(USER, &g[0], true)])
    );
    assert_eq!(got[&late]["displayName"], "Late");
    assert_eq!(
        members(&got[&late]),
        BTreeSet::from([member(USER, &g[3], false)])
    );
}

#[tokio::test]
async fn groups_delta_without_select_includes_members_and_properties() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let scope = group(&client, "Scope").await;
    let alice = guest(&client, "alice").await;
    client.add_member(&scope, &alice).await.unwrap();
    let first = client.groups_delta(None, &[]).await.unwrap();
    assert_eq!(first.items.len(), 1);
    let item = &first.items[0];
    for p in [
        "displayName",
        "mailNickname",
        "securityEnabled",
        "groupTypes",
    ] {
        assert!(item.get(p).is_some(), "{p} missing in {item}");
    }
    assert_eq!(members(item), BTreeSet::from([member(USER, &alice, false)]));
    client.remove_member(&scope, &alice).await.unwrap();
    let second = client.delta_round(&first.delta_link).await.unwrap();
    assert_eq!(
        members(&second.items[0]),
        BTreeSet::from([member(USER, &alice, true)])
    );
}

#[tokio::test]
async fn groups_delta_tracks_membership_only_when_members_is_selected() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let scope = group(&client, "Scope").await;
    let alice = guest(&client, "alice").await;
    client.add_member(&scope, &alice).await.unwrap();
    let first = client.groups_delta(Some("displayName"), &[]).await.unwrap();
    assert_eq!(
        first.items,
        vec![json!({"displayName": "Scope", "id": scope})]
    );
    client.remove_member(&scope, &alice).await.unwrap();
    let second = client.delta_round(&first.delta_link).await.unwrap();
    assert_eq!(second.items, Vec::<Value>::new());
    client.delete_group(&scope).await.unwrap();
    let third = client.delta_round(&second.delta_link).await.unwrap();
    assert_eq!(
        third.items,
        vec![json!({"id": scope, "@removed": {"reason": "deleted"}})]
    );
}

#[tokio::test]
async fn groups_delta_filter_by_id_limits_the_rounds() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let a = group(&client, "A").await;
    let b = group(&client, "B").await;
    let c = group(&client, "C").await;
    let alice = guest(&client, "alice").await;

    let first = client
        .groups_delta(Some("members"), &[&a, &b])
        .await
        .unwrap();
    assert_eq!(
        by_id(&first.items).keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([a.clone(), b.clone()])
    );
    assert!(first
        .items
        .iter()
        .all(|i| i.as_object().unwrap().len() == 1));

    client.add_member(&c, &alice).await.unwrap();
    let second = client.delta_round(&first.delta_link).await.unwrap();
    assert_eq!(second.items, Vec::<Value>::new(), "c is not tracked");
    client.add_member(&b, &alice).await.unwrap();
    let third = client.delta_round(&second.delta_link).await.unwrap();
    assert_eq!(
        third.items,
        vec![json!({"id": b, "members@delta": [{"@odata.type": USER, "id": alice}]})]
    );

    // Keywords and ids are case-insensitive; one id needs no `or`.
    let (status, body) = call(
        &client,
        Method::GET,
        &format!(
            "/v1.0/groups/delta?$select=members&$filter=ID%20EQ%20'{}'",
            c.to_uppercase()
        ),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"].as_array().unwrap().len(), 1);
    assert_eq!(body["value"][0]["id"], c.as_str());

    // At most 50 ids.
    let fifty: Vec<String> = (0..50).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let refs: Vec<&str> = fifty.iter().map(String::as_str).collect();
    assert_eq!(
        client.groups_delta(None, &refs).await.unwrap().items.len(),
        0
    );
    let fifty_one: Vec<String> = (0..51).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let filter: Vec<String> = fifty_one.iter().map(|id| format!("id eq '{id}'")).collect();
    let too_many = format!(
        "/v1.0/groups/delta?$filter={}",
        graph_sim::client::encode_segment(&filter.join(" or "))
    );
    for (path, code) in [
        (too_many.as_str(), "Request_UnsupportedQuery"),
        (
            "/v1.0/groups/delta?$filter=displayName%20eq%20'A'",
            "Request_UnsupportedQuery",
        ),
        (
            "/v1.0/groups/delta?$filter=startsWith(id,'a')",
            "Request_UnsupportedQuery",
        ),
        (
            "/v1.0/groups/delta?$expand=members",
            "Request_UnsupportedQuery",
        ),
        ("/v1.0/groups/delta?$select=owners", "Request_BadRequest"),
    ] {
        let (status, body) = call(&client, Method::GET, path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(graph_error_code(&body), code, "{path}");
    }
}

#[tokio::test]
async fn groups_delta_links_expire_and_belong_to_their_collection() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let a = group(&client, "A").await;
    let first = client
        .groups_delta(Some("displayName,members"), &[&a])
        .await
        .unwrap();

    // A users deltaLink's token means nothing to groups/delta.
    let users = client.delta_round("/v1.0/users/delta").await.unwrap();
    let crossed = users.delta_link.replace("/users/delta", "/groups/delta");
    let (status, body) = call(&client, Method::GET, &crossed, None).await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(graph_error_code(&body), "syncStateNotFound");

    client.advance_time(8.0 * 86400.0).await.unwrap();
    let resp = client
        .graph(Method::GET, &first.delta_link, None)
        .await
        .unwrap();
    assert_eq!(resp.status(), 410);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(graph_error_code(&body), "syncStateNotFound");
    // The fresh start repeats the round's $select and $filter.
    let url = url::Url::parse(&location).unwrap();
    assert_eq!(url.path(), "/v1.0/groups/delta");
    let query: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(query["$select"], "displayName,members");
    assert_eq!(query["$filter"], format!("id eq '{a}'"));
    let again = client.delta_round(&location).await.unwrap();
    assert_eq!(again.items, vec![json!({"displayName": "A", "id": a})]);
}

#[tokio::test]
async fn group_subscriptions_follow_graph_rules() {
    let (_sim, client) = start_sim(fast_config()).await;
    let rx = start_receiver().await;
    let id = uuid::Uuid::new_v4();
    let ok_exp = expiry_in(&client, 41_700).await;
    let body = |change: &str, resource: &str, exp: &str| {
        json!({
            "changeType": change, "notificationUrl": rx.url("/n"), "resource": resource,
            "expirationDateTime": exp, "clientState": "x",
        })
    };
    let mut rich = body("updated", "/groups", &ok_exp);
    rich["includeResourceData"] = json!(true);
    let refused = vec![
        body("created", "/groups", &ok_exp),
        body("created", &format!("/groups/{id}"), &ok_exp),
        body("updated,created", "/groups", &ok_exp),
        rich,
        body("updated", &format!("/groups/{id}/members"), &ok_exp),
        body(
            "updated",
            "/groups?$filter=securityEnabled eq true",
            &ok_exp,
        ),
        body("updated", "/groups", &expiry_in(&client, 41_761).await),
    ];
    for b in refused {
        let (status, err) = call(
            &client,
            Method::POST,
            "/v1.0/subscriptions",
            Some(b.clone()),
        )
        .await;
        assert_eq!(status, 400, "{b}: {err}");
        assert_eq!(graph_error_code(&err), "InvalidRequest", "{b}");
    }
    assert_eq!(
        rx.validations.lock().unwrap().len(),
        0,
        "refused before any handshake"
    );
    for b in [
        body("updated", "groups", &ok_exp),
        body("deleted", &format!("/groups/{id}"), &ok_exp),
    ] {
        let (status, sub) = call(&client, Method::POST, "/v1.0/subscriptions", Some(b)).await;
        assert_eq!(status, 201, "{sub}");
    }
    let (status, err) = call(
        &client,
        Method::POST,
        "/v1.0/subscriptions",
        Some(body("updated", "/groups", &ok_exp)),
    )
    .await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(graph_error_code(&err), "ObjectIdentifierInUse");
}

#[tokio::test]
async fn directory_subscriptions_are_limited_to_100_per_app_and_tenant() {
    let (_sim, client) = start_sim(fast_config()).await;
    let rx = start_receiver().await;
    let exp = expiry_in(&client, 60).await;
    let body = |resource: String| {
        json!({
            "changeType": "updated", "notificationUrl": rx.url("/n"), "resource": resource,
            "expirationDateTime": exp, "clientState": "x",
        })
    };
    let mut ids = Vec::new();
    for i in 0..100 {
        // Users and groups count against the same quota.
        let collection = if i % 2 == 0 { "users" } else { "groups" };
        let resource = format!("/{collection}/{}", uuid::Uuid::new_v4());
        let (status, sub) = call(
            &client,
            Method::POST,
            "/v1.0/subscriptions",
            Some(body(resource)),
        )
        .await;
        assert_eq!(status, 201, "subscription {i}: {sub}");
        ids.push(id_of(&sub));
    }
    let (status, err) = call(
        &client,
        Method::POST,
        "/v1.0/subscriptions",
        Some(body("/groups".into())),
    )
    .await;
    assert_eq!(status, 403, "{err}");
    assert_eq!(graph_error_code(&err), "ExtensionError");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("'100'"),
        "{err}"
    );
    assert_eq!(
        rx.validations.lock().unwrap().len(),
        100,
        "no handshake for the refused one"
    );

    let (status, _) = call(
        &client,
        Method::DELETE,
        &format!("/v1.0/subscriptions/{}", ids[0]),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, sub) = call(
        &client,
        Method::POST,
        "/v1.0/subscriptions",
        Some(body("/groups".into())),
    )
    .await;
    assert_eq!(status, 201, "a freed slot can be used: {sub}");
}
