//! Users synced from on-premises AD by Entra Connect: created and changed through the control
//! API, their `onPremises*` properties, Graph's refusal to change AD-mastered properties, finding
//! them with `$filter`, and why they can or cannot be converted to B2B collaboration.

mod common;

use common::*;
use graph_sim::{SimConfig, SyncedUser};
use reqwest::Method;
use serde_json::{json, Value};

const SYNC_SELECT: &str = "id,userPrincipalName,displayName,mail,userType,accountEnabled,onPremisesSyncEnabled,onPremisesImmutableId,onPremisesSamAccountName,onPremisesUserPrincipalName,externalUserState";

const MASTERED_MESSAGE: &str = "Unable to update the specified properties for on-premises mastered Directory Sync objects or objects currently undergoing migration.";

/// A partner's AD account: sAMAccountName `sam`, mail `<sam>@partner.example`.
fn partner(sam: &str, object_guid: &str) -> SyncedUser {
    SyncedUser {
        on_premises_sam_account_name: sam.into(),
        object_guid: Some(object_guid.into()),
        display_name: Some(format!("Partner {sam}")),
        mail: Some(format!("{sam}@partner.example")),
        company_name: Some("Partner Ltd".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn synced_user_carries_on_premises_properties_returned_on_select() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let spec = SyncedUser {
        on_premises_user_principal_name: Some("amy@corp.example".into()),
        ..partner("amy", "00112233-4455-6677-8899-aabbccddeeff")
    };
    let created = client.create_synced_user(&spec).await.unwrap();
    let id = id_of(&created);
    let user = client
        .get_user_select(&id, SYNC_SELECT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user["onPremisesSyncEnabled"], true);
    // base64 of the objectGUID's bytes in AD order (first three fields little-endian).
    assert_eq!(user["onPremisesImmutableId"], "MyIRAFVEd2aImaq7zN3u/w==");
    assert_eq!(user["onPremisesSamAccountName"], "amy");
    assert_eq!(user["onPremisesUserPrincipalName"], "amy@corp.example");
    assert_eq!(user["userPrincipalName"], "amy@contoso.onmicrosoft.com");
    assert_eq!(user["mail"], "amy@partner.example");
    assert_eq!(user["userType"], "Member");
    assert_eq!(user["accountEnabled"], true);
    assert_eq!(user["externalUserState"], Value::Null);
    let raw = client.sim_user(&id).await.unwrap();
    assert!(raw["onPremisesLastSyncDateTime"].is_string());

    // Not in Graph's default property set.
    let (_, plain) = call(&client, Method::GET, &format!("/v1.0/users/{id}"), None).await;
    assert!(plain.get("onPremisesSyncEnabled").is_none(), "{plain}");

    // A second object with the same source anchor is refused.
    let twin = SyncedUser {
        on_premises_immutable_id: Some("MyIRAFVEd2aImaq7zN3u/w==".into()),
        ..partner("amy2", "00112233-4455-6677-8899-aabbccddeeff")
    };
    assert!(client.create_synced_user(&twin).await.is_err());
    let bad = SyncedUser {
        on_premises_immutable_id: Some("not_valid$".into()),
        object_guid: None,
        ..partner("amy3", "00000000-0000-0000-0000-000000000000")
    };
    assert!(client.create_synced_user(&bad).await.is_err());
}

#[tokio::test]
async fn graph_refuses_to_change_ad_mastered_properties_of_synced_users() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let id = id_of(
        &client
            .create_synced_user(&partner("ben", "2a5c9e7d-1b3f-4c8a-9d6e-0f1a2b3c4d5e"))
            .await
            .unwrap(),
    );
    let path = format!("/v1.0/users/{id}");
    for change in [
        json!({"displayName": "B"}),
        json!({"givenName": "B"}),
        json!({"surname": "B"}),
        json!({"mail": "ben@elsewhere.example"}),
        json!({"accountEnabled": false}),
        json!({"companyName": "Other"}),
        json!({"jobTitle": "Boss"}),
        json!({"department": "Sales"}),
        json!({"userPrincipalName": "ben2@contoso.onmicrosoft.com"}),
        json!({"userType": "Guest", "displayName": "B"}),
    ] {
        let (status, body) = call(&client, Method::PATCH, &path, Some(change.clone())).await;
        assert_eq!(status, 400, "{change}: {body}");
        assert_eq!(graph_error_code(&body), "Request_BadRequest");
        assert_eq!(body["error"]["message"], MASTERED_MESSAGE, "{change}");
    }
    let user = client.sim_user(&id).await.unwrap();
    assert_eq!(
        (&user["displayName"], &user["userType"]),
        (&json!("Partner ben"), &json!("Member")),
        "a refused PATCH changes nothing"
    );

    // userType (and otherMails) are not AD-mastered.
    let (status, body) = call(
        &client,
        Method::PATCH,
        &path,
        Some(json!({"userType": "Guest", "otherMails": ["ben@partner.example"]})),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(client.sim_user(&id).await.unwrap()["userType"], "Guest");

    // onPremises* properties are read-only for everyone.
    let (status, body) = call(
        &client,
        Method::PATCH,
        &path,
        Some(json!({"onPremisesSyncEnabled": false})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["message"],
        "Property 'onPremisesSyncEnabled' is read-only and cannot be set."
    );

    // A cloud-only user is not restricted.
    let cloud = id_of(&client.create_member("cleo", "Cleo").await.unwrap());
    client
        .patch_user(
            &cloud,
            json!({"displayName": "Cleo C", "companyName": "Contoso"}),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn sync_updates_change_mastered_properties_as_a_recorded_change() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let id = id_of(
        &client
            .create_synced_user(&partner("cat", "3b6d0f8e-2c4a-4d9b-8e7f-1a2b3c4d5e6f"))
            .await
            .unwrap(),
    );
    let (_, page) = call(
        &client,
        Method::GET,
        "/v1.0/users/delta?$select=displayName,mail",
        None,
    )
    .await;
    let delta_link = page["@odata.deltaLink"].as_str().unwrap().to_string();
    let updated = client
        .update_synced_user(
            &id,
            json!({"displayName": "Cat Renamed", "mail": "cat@new.example"}),
        )
        .await
        .unwrap();
    assert_eq!(updated["displayName"], "Cat Renamed");
    let (_, page) = call(&client, Method::GET, &delta_link, None).await;
    assert_eq!(
        page["value"],
        json!([{ "id": id, "displayName": "Cat Renamed", "mail": "cat@new.example" }])
    );
    // Unknown properties, and users that are not synced, are refused.
    assert!(client
        .update_synced_user(&id, json!({"favouriteColour": "red"}))
        .await
        .is_err());
    let cloud = id_of(&client.create_member("dot", "Dot").await.unwrap());
    assert!(client
        .update_synced_user(&cloud, json!({"displayName": "X"}))
        .await
        .is_err());
}

#[tokio::test]
async fn synced_users_are_found_by_immutable_id_and_sam_account_name() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let id = id_of(
        &client
            .create_synced_user(&partner("dan", "00112233-4455-6677-8899-aabbccddeeff"))
            .await
            .unwrap(),
    );
    client
        .create_synced_user(&partner("eve", "2a5c9e7d-1b3f-4c8a-9d6e-0f1a2b3c4d5e"))
        .await
        .unwrap();
    client.create_member("fred", "Fred").await.unwrap();

    let found = client
        .find_users(
            "onPremisesImmutableId eq 'MyIRAFVEd2aImaq7zN3u/w=='",
            "id,onPremisesSamAccountName",
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        found,
        vec![json!({"id": id, "onPremisesSamAccountName": "dan"})]
    );
    let synced = client
        .find_users("onPremisesSyncEnabled eq true", "id", false)
        .await
        .unwrap();
    assert_eq!(synced.len(), 2);

    // onPremisesSamAccountName (like companyName) is filterable only in advanced queries.
    let (status, body) = call(
        &client,
        Method::GET,
        "/v1.0/users?$filter=onPremisesSamAccountName%20eq%20'dan'",
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(graph_error_code(&body), "Request_UnsupportedQuery");
    let found = client
        .find_users("onPremisesSamAccountName eq 'dan'", "id", true)
        .await
        .unwrap();
    assert_eq!(found, vec![json!({"id": id})]);
}

#[tokio::test]
async fn synced_user_converts_to_b2b_only_without_on_premises_upn() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let spec = SyncedUser {
        on_premises_user_principal_name: Some("gil@corp.example".into()),
        ..partner("gil", "4c7e1a9f-3d5b-4eac-9f80-2b3c4d5e6f70")
    };
    let id = id_of(&client.create_synced_user(&spec).await.unwrap());
    let (status, body) = call(
        &client,
        Method::POST,
        "/v1.0/invitations",
        Some(json!({
            "invitedUserEmailAddress": "gil@partner.example",
            "inviteRedirectUrl": "https://myapps.microsoft.com",
            "invitedUser": { "id": id },
        })),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(graph_error_code(&body), "BadRequest");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("onPremisesUserPrincipalName"),
        "{body}"
    );
    assert_eq!(
        client.sim_user(&id).await.unwrap()["externalUserState"],
        Value::Null
    );

    // With Entra Connect's rule changed so the attribute is no longer written, it converts.
    client
        .update_synced_user(&id, json!({"onPremisesUserPrincipalName": null}))
        .await
        .unwrap();
    let inv = client
        .invite_internal(&id, "gil@partner.example")
        .await
        .unwrap();
    assert_eq!(inv["invitedUser"]["id"], id.as_str());
    let user = client
        .get_user_select(&id, SYNC_SELECT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user["externalUserState"], "PendingAcceptance");
    assert_eq!(user["onPremisesSyncEnabled"], true, "still synced");
    assert_eq!(user["userType"], "Member");
    // userType can then be set through Graph even though the user is synced.
    client
        .patch_user(&id, json!({"userType": "Guest"}))
        .await
        .unwrap();
    assert_eq!(client.sim_user(&id).await.unwrap()["userType"], "Guest");
}
