//! B2B collaboration through `POST /v1.0/invitations`: re-invitations, converting internal users
//! in place ("Invite internal users to B2B collaboration"), resetting a guest's redemption, and
//! what the invitation echoes.

mod common;

use common::*;
use graph_sim::invitations::ADDRESS_NOT_ON_USER;
use graph_sim::{SimClient, SimConfig};
use reqwest::Method;
use serde_json::{json, Value};

const B2B_SELECT: &str = "id,userPrincipalName,mail,otherMails,userType,externalUserState,externalUserStateChangeDateTime,creationType";

async fn invite(client: &SimClient, body: Value) -> (u16, Value) {
    call(client, Method::POST, "/v1.0/invitations", Some(body)).await
}

async fn b2b_view(client: &SimClient, id: &str) -> Value {
    client
        .get_user_select(id, B2B_SELECT)
        .await
        .unwrap()
        .expect("user readable")
}

/// A member whose `mail` is already the partner's external address, as the conversion needs.
async fn member_with_mail(client: &SimClient, nickname: &str, mail: &str) -> String {
    let id = client.create_member(nickname, nickname).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    client
        .patch_user(&id, json!({ "mail": mail }))
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn reinviting_a_guest_address_answers_201_with_the_same_guest() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let first = json!({
        "invitedUserEmailAddress": "alice@fabrikam.com",
        "inviteRedirectUrl": "https://myapps.microsoft.com",
    });
    let (status, inv1) = invite(&client, first).await;
    assert_eq!(status, 201, "{inv1}");
    client
        .accept_invitation(inv1["invitedUser"]["id"].as_str().unwrap())
        .await
        .unwrap();
    // Addresses compare case-insensitively, as in Entra.
    let again = json!({
        "invitedUserEmailAddress": "Alice@Fabrikam.com",
        "inviteRedirectUrl": "https://myapps.microsoft.com",
    });
    let (status, inv2) = invite(&client, again).await;
    assert_eq!(status, 201, "{inv2}");
    assert_eq!(inv2["invitedUser"]["id"], inv1["invitedUser"]["id"]);
    let all = client
        .find_users("userType eq 'Guest'", "id", false)
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "no second user: {all:?}");
    let guest = b2b_view(&client, inv1["invitedUser"]["id"].as_str().unwrap()).await;
    assert_eq!(
        guest["externalUserState"], "Accepted",
        "a re-invitation leaves the redeemed guest alone"
    );
}

#[tokio::test]
async fn inviting_an_address_an_internal_user_holds_is_refused() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let member = member_with_mail(&client, "pat", "pat@partner.example").await;
    let (status, body) = invite(
        &client,
        json!({
            "invitedUserEmailAddress": "pat@partner.example",
            "inviteRedirectUrl": "https://myapps.microsoft.com",
        }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(graph_error_code(&body), "BadRequest");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("objectID: {member}")),
        "{message}"
    );
    assert_eq!(
        client
            .find_users("userType eq 'Guest'", "id", false)
            .await
            .unwrap(),
        Vec::<Value>::new(),
        "no guest was created"
    );
}

#[tokio::test]
async fn internal_member_is_converted_in_place_and_keeps_its_identity() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let id = member_with_mail(&client, "dana", "dana@partner.example").await;
    let group = id_of(&client.create_group("Partners").await.unwrap());
    client.add_member(&group, &id).await.unwrap();
    let before = b2b_view(&client, &id).await;
    assert_eq!(before["externalUserState"], Value::Null);

    let (status, inv) = invite(
        &client,
        json!({
            "invitedUserEmailAddress": "dana@partner.example",
            "inviteRedirectUrl": "https://myapps.microsoft.com",
            "sendInvitationMessage": false,
            "invitedUser": { "id": id },
        }),
    )
    .await;
    assert_eq!(status, 201, "{inv}");
    assert_eq!(inv["invitedUser"]["id"], id.as_str(), "same object");
    assert_eq!(inv["status"], "PendingAcceptance");

    let after = b2b_view(&client, &id).await;
    assert_eq!(after["userPrincipalName"], before["userPrincipalName"]);
    assert_eq!(
        after["userType"], "Member",
        "conversion does not change userType"
    );
    assert_eq!(after["externalUserState"], "PendingAcceptance");
    assert!(after["externalUserStateChangeDateTime"].is_string());
    let (_, check) = call(
        &client,
        Method::POST,
        &format!("/v1.0/users/{id}/checkMemberGroups"),
        Some(json!({ "groupIds": [group] })),
    )
    .await;
    assert_eq!(check["value"], json!([group]), "memberships kept");
    let guests = client
        .find_users("userType eq 'Guest'", "id", false)
        .await
        .unwrap();
    assert!(guests.is_empty(), "no guest object was made: {guests:?}");

    // userType is set separately, as Microsoft's docs say; redemption marks it Accepted.
    client
        .patch_user(&id, json!({ "userType": "Guest" }))
        .await
        .unwrap();
    client.accept_invitation(&id).await.unwrap();
    let done = b2b_view(&client, &id).await;
    assert_eq!(
        (&done["userType"], &done["externalUserState"]),
        (&json!("Guest"), &json!("Accepted"))
    );

    // Soft delete and restore keep the converted user as it was.
    client.delete_user(&id).await.unwrap();
    let restored = client.restore_user(&id).await.unwrap();
    assert_eq!(restored["id"], id.as_str());
    assert_eq!(
        b2b_view(&client, &id).await["externalUserState"],
        "Accepted"
    );
}

#[tokio::test]
async fn conversion_is_a_recorded_change_for_delta_and_notifications() {
    let (_sim, client) = start_sim(fast_config()).await;
    let id = member_with_mail(&client, "erin", "erin@partner.example").await;
    let (_, page) = call(
        &client,
        Method::GET,
        "/v1.0/users/delta?$select=externalUserState",
        None,
    )
    .await;
    let delta_link = page["@odata.deltaLink"].as_str().unwrap().to_string();
    let rx = start_receiver().await;
    let (status, _) = subscribe(&client, &rx, 60).await;
    assert_eq!(status, 201);

    client
        .invite_internal(&id, "erin@partner.example")
        .await
        .unwrap();
    let (_, page) = call(&client, Method::GET, &delta_link, None).await;
    assert_eq!(
        page["value"],
        json!([{ "id": id, "externalUserState": "PendingAcceptance" }])
    );
    let items = rx
        .wait_items("/notify", 1, std::time::Duration::from_secs(3))
        .await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["resourceData"]["id"], id.as_str());
}

#[tokio::test]
async fn conversion_needs_the_external_address_in_mail() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let no_mail = id_of(&client.create_member("fay", "Fay").await.unwrap());
    let other_mail = member_with_mail(&client, "gus", "gus@elsewhere.example").await;
    for id in [&no_mail, &other_mail] {
        let (status, body) = invite(
            &client,
            json!({
                "invitedUserEmailAddress": "partner@partner.example",
                "inviteRedirectUrl": "https://myapps.microsoft.com",
                "invitedUser": { "id": id },
            }),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(graph_error_code(&body), "BadRequest");
        assert_eq!(body["error"]["message"], ADDRESS_NOT_ON_USER);
        assert_eq!(
            b2b_view(&client, id).await["externalUserState"],
            Value::Null,
            "unchanged"
        );
    }
    // An address in the tenant's verified domain cannot be the external one.
    let internal = member_with_mail(&client, "hal", "hal@contoso.onmicrosoft.com").await;
    let (status, body) = invite(
        &client,
        json!({
            "invitedUserEmailAddress": "hal@contoso.onmicrosoft.com",
            "inviteRedirectUrl": "https://myapps.microsoft.com",
            "invitedUser": { "id": internal },
        }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("verified domain"));
    // And an unknown object is a 404.
    let (status, body) = invite(
        &client,
        json!({
            "invitedUserEmailAddress": "x@partner.example",
            "inviteRedirectUrl": "https://myapps.microsoft.com",
            "invitedUser": { "id": uuid::Uuid::new_v4().to_string() },
        }),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(graph_error_code(&body), "Request_ResourceNotFound");
}

#[tokio::test]
async fn reset_redemption_lets_a_guest_redeem_again_with_a_new_address() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let guest = client.invite("ivy@old.example", "Ivy").await.unwrap();
    let id = id_of(&guest);
    client.accept_invitation(&id).await.unwrap();

    // Graph refuses a reset to an address the user object does not carry.
    let reset_to = |email: &str| {
        json!({
            "invitedUserEmailAddress": email,
            "inviteRedirectUrl": "https://myapps.microsoft.com",
            "resetRedemption": true,
            "invitedUser": { "id": id },
        })
    };
    let (status, body) = invite(&client, reset_to("ivy@new.example")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["message"], ADDRESS_NOT_ON_USER);
    assert_eq!(
        b2b_view(&client, &id).await["externalUserState"],
        "Accepted"
    );

    // resetRedemption needs invitedUser.id.
    let (status, body) = invite(
        &client,
        json!({
            "invitedUserEmailAddress": "ivy@new.example",
            "inviteRedirectUrl": "https://myapps.microsoft.com",
            "resetRedemption": true,
        }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(graph_error_code(&body), "BadRequest");

    let inv = client
        .reset_redemption(&id, "ivy@new.example")
        .await
        .unwrap();
    assert_eq!(inv["invitedUser"]["id"], id.as_str());
    assert_eq!(inv["resetRedemption"], true);
    assert_eq!(inv["invitedUserEmailAddress"], "ivy@new.example");
    let user = b2b_view(&client, &id).await;
    assert_eq!(user["mail"], "ivy@new.example");
    assert_eq!(user["otherMails"], json!(["ivy@new.example"]));
    assert_eq!(user["externalUserState"], "PendingAcceptance");
    assert_eq!(
        user["userPrincipalName"], guest["userPrincipalName"],
        "the UPN does not change"
    );
    client.accept_invitation(&id).await.unwrap();
    assert_eq!(
        b2b_view(&client, &id).await["externalUserState"],
        "Accepted"
    );

    // An address already in otherMails is enough for the raw call; mail is left alone.
    client
        .patch_user(
            &id,
            json!({ "otherMails": ["ivy@new.example", "ivy@third.example"] }),
        )
        .await
        .unwrap();
    let (status, body) = invite(&client, reset_to("ivy@third.example")).await;
    assert_eq!(status, 201, "{body}");
    let user = b2b_view(&client, &id).await;
    assert_eq!(
        (&user["mail"], &user["externalUserState"]),
        (&json!("ivy@new.example"), &json!("PendingAcceptance"))
    );
}

#[tokio::test]
async fn invitation_requires_a_redirect_url_and_echoes_what_was_asked() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let (status, body) = invite(
        &client,
        json!({ "invitedUserEmailAddress": "jo@fabrikam.com" }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(graph_error_code(&body), "BadRequest");
    let (status, body) = invite(
        &client,
        json!({
            "invitedUserEmailAddress": "jo@fabrikam.com",
            "inviteRedirectUrl": "https://myapps.microsoft.com",
            "invitedUserType": "Alien",
        }),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    let (status, inv) = invite(
        &client,
        json!({
            "invitedUserEmailAddress": "jo@fabrikam.com",
            "invitedUserDisplayName": "Jo",
            "inviteRedirectUrl": "https://apps.contoso.example/welcome",
            "sendInvitationMessage": true,
            "invitedUserMessageInfo": {
                "messageLanguage": "de-DE",
                "customizedMessageBody": "Willkommen",
                "ccRecipients": [{ "emailAddress": { "name": "Ops", "address": "ops@contoso.example" } }],
            },
        }),
    )
    .await;
    assert_eq!(status, 201, "{inv}");
    assert_eq!(inv["sendInvitationMessage"], true);
    assert_eq!(inv["resetRedemption"], false);
    assert_eq!(
        inv["inviteRedirectUrl"],
        "https://apps.contoso.example/welcome"
    );
    assert_eq!(inv["invitedUserDisplayName"], "Jo");
    assert_eq!(inv["invitedUserType"], "Guest");
    assert_eq!(inv["invitedUserMessageInfo"]["messageLanguage"], "de-DE");
    assert_eq!(
        inv["invitedUserMessageInfo"]["customizedMessageBody"],
        "Willkommen"
    );
    assert_eq!(
        inv["invitedUserMessageInfo"]["ccRecipients"][0]["emailAddress"]["address"],
        "ops@contoso.example"
    );
    // Without invitedUserMessageInfo, Graph's empty shape.
    let (_, plain) = invite(
        &client,
        json!({
            "invitedUserEmailAddress": "kim@fabrikam.com",
            "inviteRedirectUrl": "https://myapps.microsoft.com",
        }),
    )
    .await;
    assert_eq!(
        plain["invitedUserMessageInfo"],
        json!({
            "messageLanguage": null,
            "customizedMessageBody": null,
            "ccRecipients": [{ "emailAddress": { "name": null, "address": null } }],
        })
    );
}

#[tokio::test]
async fn extension_attributes_hold_a_link_on_cloud_users_and_are_found_by_advanced_filter() {
    let (_sim, client) = start_sim(SimConfig::default()).await;
    let (_, inv) = invite(
        &client,
        json!({
            "invitedUserEmailAddress": "pat@fabrikam.com",
            "inviteRedirectUrl": "https://myapps.microsoft.com",
        }),
    )
    .await;
    let id = inv["invitedUser"]["id"].as_str().unwrap().to_string();
    let attributes = |v: Value| json!({ "onPremisesExtensionAttributes": v });
    client
        .patch_user(
            &id,
            attributes(json!({ "extensionAttribute15": "Partner_1" })),
        )
        .await
        .unwrap();
    // A PATCH names the members it changes; the others keep their values.
    client
        .patch_user(&id, attributes(json!({ "extensionAttribute2": "x" })))
        .await
        .unwrap();
    let user = client
        .get_user_select(&id, "id,onPremisesExtensionAttributes")
        .await
        .unwrap()
        .unwrap();
    let ext = &user["onPremisesExtensionAttributes"];
    assert_eq!(
        (
            ext["extensionAttribute15"].as_str(),
            ext["extensionAttribute2"].as_str()
        ),
        (Some("Partner_1"), Some("x"))
    );
    assert!(
        ext["extensionAttribute1"].is_null(),
        "all fifteen, null when unset"
    );

    let filter = "onPremisesExtensionAttributes/extensionAttribute15 eq 'partner_1'";
    let found = client.find_users(filter, "id", true).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], id.as_str());
    let plain = client
        .find_users(filter, "id", false)
        .await
        .unwrap_err()
        .to_string();
    assert!(plain.contains("advanced query"), "{plain}");

    for bad in [
        json!({ "extensionAttribute16": "x" }),
        json!({ "extensionAttribute1": "x".repeat(1025) }),
        json!("Partner_1"),
    ] {
        let err = client
            .patch_user(&id, attributes(bad.clone()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("400"), "{bad}: {err}");
    }
}
