//! Users, invitations, deleted items and groups against Graph's documented shapes.

mod common;

use std::collections::BTreeSet;

use common::*;
use graph_sim::client::encode_segment;
use graph_sim::SimConfig;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn invitation_creates_pending_guest_and_accept_marks_it_accepted() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let (status, inv) = call(
        &client,
        Method::POST,
        "/v1.0/invitations",
        Some(json!({
            "invitedUserEmailAddress": "alice@fabrikam.com",
            "invitedUserDisplayName": "Alice Adams",
            "inviteRedirectUrl": "https://myapps.microsoft.com",
        })),
    )
    .await;
    assert_eq!(status, 201, "{inv}");
    assert_eq!(inv["status"], "PendingAcceptance");
    assert_eq!(inv["invitedUserEmailAddress"], "alice@fabrikam.com");
    assert!(inv["inviteRedeemUrl"].is_string());
    let id = inv["invitedUser"]["id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok());

    let user = client.get_user(&id).await.unwrap().unwrap();
    assert_eq!(
        user["userPrincipalName"],
        "alice_fabrikam.com#EXT#@contoso.onmicrosoft.com"
    );
    assert_eq!(user["userType"], "Guest");
    assert_eq!(user["externalUserState"], "PendingAcceptance");
    assert_eq!(user["creationType"], "Invitation");
    assert_eq!(user["mail"], "alice@fabrikam.com");
    assert_eq!(user["displayName"], "Alice Adams");
    assert_eq!(user["accountEnabled"], true);

    // Found by UPN too (the '#' must be percent-encoded in the path).
    let by_upn = client
        .get_user("alice_fabrikam.com#EXT#@contoso.onmicrosoft.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_upn["id"], id.as_str());

    // externalUserState is read-only in Graph; acceptance goes through the control API.
    let (status, body) = call(
        &client,
        Method::PATCH,
        &format!("/v1.0/users/{id}"),
        Some(json!({"externalUserState": "Accepted"})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(graph_error_code(&body), "Request_BadRequest");
    client.accept_invitation(&id).await.unwrap();
    assert_eq!(
        client.get_user(&id).await.unwrap().unwrap()["externalUserState"],
        "Accepted"
    );
}

#[tokio::test]
async fn get_user_returns_default_set_without_select_and_honours_select() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let guest = client.invite("bob@fabrikam.com", "Bob").await.unwrap();
    let id = guest["id"].as_str().unwrap();
    let (status, body) = call(&client, Method::GET, &format!("/v1.0/users/{id}"), None).await;
    assert_eq!(status, 200);
    let keys: BTreeSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected: BTreeSet<&str> = [
        "@odata.context",
        "businessPhones",
        "displayName",
        "givenName",
        "jobTitle",
        "mail",
        "mobilePhone",
        "officeLocation",
        "preferredLanguage",
        "surname",
        "userPrincipalName",
        "id",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, expected, "default property set");
    assert!(body.get("userType").is_none() && body.get("accountEnabled").is_none());

    let (_, body) = call(
        &client,
        Method::GET,
        &format!("/v1.0/users/{id}?$select=userType,accountEnabled"),
        None,
    )
    .await;
    let keys: BTreeSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["@odata.context", "accountEnabled", "id", "userType"]
            .into_iter()
            .collect()
    );

    let (status, body) = call(
        &client,
        Method::GET,
        &format!("/v1.0/users/{id}?$select=noSuchThing"),
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(graph_error_code(&body), "Request_BadRequest");
}

#[tokio::test]
async fn unknown_user_is_404_request_resource_not_found() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let missing = uuid::Uuid::new_v4().to_string();
    for path in [
        format!("/v1.0/users/{missing}"),
        format!("/v1.0/directory/deletedItems/{missing}"),
    ] {
        let (status, body) = call(&client, Method::GET, &path, None).await;
        assert_eq!(status, 404);
        assert_eq!(graph_error_code(&body), "Request_ResourceNotFound");
    }
}

#[tokio::test]
async fn list_users_filters_guests_and_pages_with_next_link() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    for i in 0..3 {
        client
            .invite(&format!("g{i}@fabrikam.com"), &format!("Guest {i}"))
            .await
            .unwrap();
    }
    client.create_member("m1", "Member 1").await.unwrap();
    client.create_member("m2", "Member 2").await.unwrap();

    let (status, page1) = call(
        &client,
        Method::GET,
        "/v1.0/users?$filter=userType%20eq%20'Guest'&$top=2&$select=id,userType",
        None,
    )
    .await;
    assert_eq!(status, 200, "{page1}");
    assert_eq!(page1["value"].as_array().unwrap().len(), 2);
    let next = page1["@odata.nextLink"]
        .as_str()
        .expect("nextLink")
        .to_string();
    let (_, page2) = call(&client, Method::GET, &next, None).await;
    assert_eq!(page2["value"].as_array().unwrap().len(), 1);
    assert!(page2.get("@odata.nextLink").is_none());
    let all: Vec<&Value> = page1["value"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["value"].as_array().unwrap())
        .collect();
    assert!(all.iter().all(|u| u["userType"] == "Guest"));
    let ids: BTreeSet<&str> = all.iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3);

    let (_, all_users) = call(&client, Method::GET, "/v1.0/users", None).await;
    assert_eq!(all_users["value"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn patch_updates_writable_properties_and_rejects_unknown_ones() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let id = client.invite("carol@fabrikam.com", "Carol").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = call(
        &client,
        Method::PATCH,
        &format!("/v1.0/users/{id}"),
        Some(json!({"displayName": "Carol C", "givenName": "Carol", "surname": "C", "accountEnabled": false, "otherMails": ["c@x.org"], "mail": null})),
    )
    .await;
    assert_eq!(status, 204);
    let u = client.get_user(&id).await.unwrap().unwrap();
    assert_eq!(u["displayName"], "Carol C");
    assert_eq!(u["accountEnabled"], false);
    assert_eq!(u["otherMails"], json!(["c@x.org"]));
    assert_eq!(u["mail"], Value::Null);

    let (status, body) = call(
        &client,
        Method::PATCH,
        &format!("/v1.0/users/{id}"),
        Some(json!({"favouriteColour": "red"})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(graph_error_code(&body), "Request_BadRequest");
    let (status, _) = call(
        &client,
        Method::PATCH,
        &format!("/v1.0/users/{id}"),
        Some(json!({"userType": "Alien"})),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn create_member_validates_like_graph() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let m = client.create_member("dave", "Dave").await.unwrap();
    assert_eq!(m["userPrincipalName"], "dave@contoso.onmicrosoft.com");
    let full = client
        .get_user(m["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(full["userType"], "Member");
    assert!(
        client.create_member("dave", "Dave again").await.is_err(),
        "duplicate UPN"
    );
    let (status, body) = call(
        &client,
        Method::POST,
        "/v1.0/users",
        Some(json!({"accountEnabled": true, "displayName": "E", "mailNickname": "e", "userPrincipalName": "e@unverified.example", "passwordProfile": {"password": "x"}})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(graph_error_code(&body), "Request_BadRequest");
    let (status, _) = call(
        &client,
        Method::POST,
        "/v1.0/users",
        Some(json!({"displayName": "no upn"})),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn soft_delete_restore_and_permanent_delete() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let id = client.invite("erin@fabrikam.com", "Erin").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    client.delete_user(&id).await.unwrap();
    assert!(
        client.get_user(&id).await.unwrap().is_none(),
        "soft-deleted users are 404 on /users"
    );

    let (status, list) = call(
        &client,
        Method::GET,
        "/v1.0/directory/deletedItems/microsoft.graph.user",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let item = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == id.as_str())
        .expect("in deleted items")
        .clone();
    assert!(item["deletedDateTime"].is_string());
    let (status, one) = call(
        &client,
        Method::GET,
        &format!("/v1.0/directory/deletedItems/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(one["id"], id.as_str());

    let restored = client.restore_user(&id).await.unwrap();
    assert_eq!(restored["id"], id.as_str());
    let u = client.get_user(&id).await.unwrap().expect("restored");
    assert_eq!(u["deletedDateTime"], Value::Null);

    client.delete_user(&id).await.unwrap();
    client.purge_user(&id).await.unwrap();
    let (status, _) = call(
        &client,
        Method::GET,
        &format!("/v1.0/directory/deletedItems/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert!(client.restore_user(&id).await.is_err());
}

#[tokio::test]
async fn soft_deleted_users_are_purged_after_30_days() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let id = client.invite("fay@fabrikam.com", "Fay").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    client.delete_user(&id).await.unwrap();
    client.advance_time(29.0 * 86400.0).await.unwrap();
    let (status, _) = call(
        &client,
        Method::GET,
        &format!("/v1.0/directory/deletedItems/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    client.advance_time(1.0 * 86400.0 + 1.0).await.unwrap();
    let (status, _) = call(
        &client,
        Method::GET,
        &format!("/v1.0/directory/deletedItems/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn nested_groups_and_check_member_groups_are_transitive() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let user = client.invite("gil@fabrikam.com", "Gil").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let outer = client.create_group("Outer").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let inner = client.create_group("Inner").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = client.create_group("Other").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    client.add_member(&outer, &inner).await.unwrap();
    client.add_member(&inner, &user).await.unwrap();
    assert!(
        client.add_member(&inner, &user).await.is_err(),
        "duplicate member is a 400"
    );

    let check = |ids: Vec<&str>| {
        let body = json!({ "groupIds": ids });
        let client = &client;
        let user = user.clone();
        async move {
            call(
                client,
                Method::POST,
                &format!("/v1.0/users/{}/checkMemberGroups", encode_segment(&user)),
                Some(body),
            )
            .await
        }
    };
    let (status, body) = check(vec![&outer, &inner, &other]).await;
    assert_eq!(status, 200);
    let got: BTreeSet<&str> = body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(got, [outer.as_str(), inner.as_str()].into_iter().collect());

    client.remove_member(&inner, &user).await.unwrap();
    let (_, body) = check(vec![&outer, &inner]).await;
    assert_eq!(body["value"], json!([]));
    assert!(
        client.remove_member(&inner, &user).await.is_err(),
        "removing a non-member is a 404"
    );
}

#[tokio::test]
async fn bulk_creation_makes_guests_and_members_that_delta_and_lookups_see() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let spec = graph_sim::users::BulkUsers {
        guests: 3,
        members: 4,
        prefix: "b1".into(),
        ..Default::default()
    };
    let created = client.bulk_users(&spec).await.unwrap();
    assert_eq!((created.guests.len(), created.members.len()), (3, 4));

    let guest = client.get_user(&created.guests[2]).await.unwrap().unwrap();
    assert_eq!(
        guest["userPrincipalName"],
        "g2.b1_partner.example#EXT#@contoso.onmicrosoft.com"
    );
    assert_eq!(guest["userType"], "Guest");
    assert_eq!(guest["externalUserState"], "Accepted");
    assert_eq!(guest["creationType"], "Invitation");
    assert_eq!(guest["mail"], "g2.b1@partner.example");
    let member = client.get_user(&created.members[0]).await.unwrap().unwrap();
    assert_eq!(member["userType"], "Member");
    assert_eq!(member["userPrincipalName"], "m0.b1@contoso.onmicrosoft.com");

    // Delta's first round lists all seven, members spread among the guests.
    let (status, page) = call(
        &client,
        Method::GET,
        "/v1.0/users/delta?$select=id,userType",
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let types: Vec<&str> = page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userType"].as_str().unwrap())
        .collect();
    assert_eq!(types.len(), 7);
    assert_ne!(types[..3], ["Guest", "Guest", "Guest"]);
    assert!(page["@odata.deltaLink"].is_string());
}

#[tokio::test]
async fn replication_lag_hides_recent_changes_from_single_user_reads() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let group = client.create_group("Lag").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    client.set_replication_lag(30.0).await.unwrap();
    let guest = client.invite("lag@fabrikam.com", "Lag").await.unwrap();
    let id = guest["id"].as_str().unwrap().to_string();
    let upn = guest["userPrincipalName"].as_str().unwrap().to_string();
    let raw = client.sim_user(&id).await.unwrap();
    let created =
        chrono::DateTime::parse_from_rfc3339(raw["createdDateTime"].as_str().unwrap()).unwrap();
    let visible =
        chrono::DateTime::parse_from_rfc3339(raw["visibleFrom"].as_str().unwrap()).unwrap();
    let lag = (visible - created).num_milliseconds();
    assert!(
        (29_000..=31_000).contains(&lag),
        "visibleFrom {lag} ms after creation"
    );

    let check = |groups: Vec<String>| json!({ "groupIds": groups });
    let assert_not_found = |(status, body): (u16, Value), what: &str| {
        assert_eq!(status, 404, "{what}: {body}");
        assert_eq!(
            graph_error_code(&body),
            "Request_ResourceNotFound",
            "{what}"
        );
    };
    let user_path = format!("/v1.0/users/{id}");
    let upn_path = format!("/v1.0/users/{}", encode_segment(&upn));
    let check_path = format!("/v1.0/users/{id}/checkMemberGroups");
    assert_not_found(call(&client, Method::GET, &user_path, None).await, "by id");
    assert_not_found(call(&client, Method::GET, &upn_path, None).await, "by UPN");
    assert_not_found(
        call(
            &client,
            Method::POST,
            &check_path,
            Some(check(vec![group.clone()])),
        )
        .await,
        "checkMemberGroups",
    );
    assert_eq!(client.get_user(&id).await.unwrap(), None);
    // Listings and delta see it at once.
    let (status, list) = call(&client, Method::GET, "/v1.0/users", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["value"][0]["id"], id.as_str());
    let (_, delta) = call(&client, Method::GET, "/v1.0/users/delta", None).await;
    assert_eq!(delta["value"][0]["id"], id.as_str());

    client.advance_time(31.0).await.unwrap();
    assert_eq!(call(&client, Method::GET, &user_path, None).await.0, 200);
    assert_eq!(call(&client, Method::GET, &upn_path, None).await.0, 200);

    // A profile change hides it again for the lag.
    client
        .patch_user(&id, json!({"displayName": "Lag 2"}))
        .await
        .unwrap();
    assert_not_found(
        call(&client, Method::GET, &user_path, None).await,
        "after PATCH",
    );
    client.advance_time(31.0).await.unwrap();
    let (status, body) = call(&client, Method::GET, &user_path, None).await;
    assert_eq!((status, &body["displayName"]), (200, &json!("Lag 2")));

    // So does a group membership change.
    client.add_member(&group, &id).await.unwrap();
    assert_not_found(
        call(
            &client,
            Method::POST,
            &check_path,
            Some(check(vec![group.clone()])),
        )
        .await,
        "after add_member",
    );
    client.advance_time(31.0).await.unwrap();
    let (status, body) = call(
        &client,
        Method::POST,
        &check_path,
        Some(check(vec![group.clone()])),
    )
    .await;
    assert_eq!((status, &body["value"]), (200, &json!([group])));

    // Soft delete: the deleted item is not there yet on the replica read.
    client.delete_user(&id).await.unwrap();
    for path in [
        format!("/v1.0/directory/deletedItems/{id}"),
        format!("/v1.0/directory/deletedItems/microsoft.graph.user/{id}"),
    ] {
        assert_not_found(call(&client, Method::GET, &path, None).await, &path);
    }
    let (_, deleted) = call(
        &client,
        Method::GET,
        "/v1.0/directory/deletedItems/microsoft.graph.user",
        None,
    )
    .await;
    assert_eq!(deleted["value"][0]["id"], id.as_str(), "the list sees it");
    client.advance_time(31.0).await.unwrap();
    assert_eq!(
        call(
            &client,
            Method::GET,
            &format!("/v1.0/directory/deletedItems/{id}"),
            None
        )
        .await
        .0,
        200
    );
    // Restore: 404 for the lag, then the user again.
    client.restore_user(&id).await.unwrap();
    assert_not_found(
        call(&client, Method::GET, &user_path, None).await,
        "after restore",
    );
    client.advance_time(31.0).await.unwrap();
    assert_eq!(call(&client, Method::GET, &user_path, None).await.0, 200);

    // Off: reads see changes at once.
    client.set_replication_lag(0.0).await.unwrap();
    client
        .patch_user(&id, json!({"displayName": "Lag 3"}))
        .await
        .unwrap();
    let (status, body) = call(&client, Method::GET, &user_path, None).await;
    assert_eq!((status, &body["displayName"]), (200, &json!("Lag 3")));
}

#[tokio::test]
async fn patch_of_profile_fields_is_recorded_for_delta_and_notifications() {
    let (_sim, client) = start_sim(fast_config()).await;
    let id = client.create_member("hank", "Hank").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let select = "companyName,jobTitle,department,userType,mail,otherMails";
    let (_, page) = call(
        &client,
        Method::GET,
        &format!("/v1.0/users/delta?$select={select}"),
        None,
    )
    .await;
    let delta_link = page["@odata.deltaLink"].as_str().unwrap().to_string();
    let rx = start_receiver().await;
    let (status, _) = subscribe(&client, &rx, 60).await;
    assert_eq!(status, 201);

    let changes = json!({
        "companyName": "Partner Ltd",
        "jobTitle": "Engineer",
        "department": "R&D",
        "userType": "Guest",
        "mail": "hank@partner.example",
        "otherMails": ["hank@partner.example"],
    });
    let (status, body) = call(
        &client,
        Method::PATCH,
        &format!("/v1.0/users/{id}"),
        Some(changes.clone()),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let user = client.get_user_select(&id, select).await.unwrap().unwrap();
    for (k, v) in changes.as_object().unwrap() {
        assert_eq!(&user[k], v, "{k}");
    }
    let (_, page) = call(&client, Method::GET, &delta_link, None).await;
    let mut expected = changes.clone();
    expected["id"] = json!(id);
    assert_eq!(page["value"], json!([expected]));
    let items = rx
        .wait_items("/notify", 1, std::time::Duration::from_secs(3))
        .await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["resourceData"]["id"], id.as_str());

    // userType is Member or Guest only.
    let (status, body) = call(
        &client,
        Method::PATCH,
        &format!("/v1.0/users/{id}"),
        Some(json!({"userType": "Partner"})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(graph_error_code(&body), "Request_BadRequest");
}

async fn list(client: &graph_sim::SimClient, query: &str, advanced: bool) -> (u16, Value) {
    let headers: &[(&str, &str)] = if advanced {
        &[("ConsistencyLevel", "eventual")]
    } else {
        &[]
    };
    let resp = client
        .graph_with_headers(Method::GET, &format!("/v1.0/users?{query}"), None, headers)
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn ids(page: &Value) -> BTreeSet<String> {
    page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn filters_find_users_by_mail_other_mails_type_and_invitation_state() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let pending = client.invite("ann@partner.example", "Ann").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let accepted = client.invite("bo@partner.example", "Bo").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    client.accept_invitation(&accepted).await.unwrap();
    let member = client.create_member("cy", "Cy").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    client
        .patch_user(
            &member,
            json!({"mail": "cy@contoso.example", "otherMails": ["cy@home.example"]}),
        )
        .await
        .unwrap();
    let one = |id: &str| [id.to_string()].into_iter().collect::<BTreeSet<_>>();

    // All of these work by default (no advanced query parameters), as Graph documents.
    for (filter, expected) in [
        ("mail eq 'ANN@partner.example'", one(&pending)),
        ("otherMails/any(x:x eq 'cy@home.example')", one(&member)),
        (
            "otherMails/any(m: m eq 'bo@partner.example')",
            one(&accepted),
        ),
        ("externalUserState eq 'Accepted'", one(&accepted)),
        (
            "userType eq 'Guest' and externalUserState eq 'PendingAcceptance'",
            one(&pending),
        ),
        (
            "mail eq 'cy@home.example' or otherMails/any(x:x eq 'cy@home.example')",
            one(&member),
        ),
        (
            "userType eq 'Member' or externalUserState eq 'Accepted'",
            [member.clone(), accepted.clone()].into_iter().collect(),
        ),
    ] {
        let (status, page) = list(
            &client,
            &format!("$filter={}", encode_segment(filter)),
            false,
        )
        .await;
        assert_eq!(status, 200, "{filter}: {page}");
        assert_eq!(ids(&page), expected, "{filter}");
        assert!(page.get("@odata.count").is_none(), "{filter}");
    }

    // A collection compares only through any().
    let (status, body) = list(
        &client,
        &format!(
            "$filter={}",
            encode_segment("otherMails eq 'cy@home.example'")
        ),
        false,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(graph_error_code(&body), "Request_UnsupportedQuery");

    // ne, endsWith and null comparisons need ConsistencyLevel: eventual and $count=true.
    for filter in [
        "endsWith(mail,'@partner.example')",
        "userType ne 'Member'",
        "mail eq null",
    ] {
        let query = format!("$filter={}", encode_segment(filter));
        let (status, body) = list(&client, &query, false).await;
        assert_eq!(status, 400, "{filter}: {body}");
        assert_eq!(graph_error_code(&body), "Request_UnsupportedQuery");
        // $count=true alone is not enough: without the header Graph ignores it.
        let (status, _) = list(&client, &format!("{query}&$count=true"), false).await;
        assert_eq!(status, 400, "{filter} with $count only");
        let (status, _) = list(&client, &query, true).await;
        assert_eq!(status, 400, "{filter} with the header only");
        let (status, page) = list(&client, &format!("{query}&$count=true"), true).await;
        assert_eq!(status, 200, "{filter}: {page}");
        assert_eq!(
            page["@odata.count"],
            json!(page["value"].as_array().unwrap().len())
        );
    }
    let (_, page) = list(
        &client,
        &format!(
            "$filter={}&$count=true",
            encode_segment("endsWith(mail,'@partner.example')")
        ),
        true,
    )
    .await;
    assert_eq!(ids(&page), [pending, accepted].into_iter().collect());
    assert_eq!(page["@odata.count"], 2);
}
