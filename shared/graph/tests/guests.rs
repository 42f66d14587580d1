//! The partner direction's Graph calls against the simulator, which answers them as Graph does
//! (advanced queries required, invitations of existing guests, conversions, on-premises-mastered
//! properties refused).

mod support;

use graph_sim::synced::SyncedUser;
use graph_sim::{RunningSim, SimClient};
use shadowsync_core::partner::{ObjectGuid, PartnerAttribute};
use shadowsync_graph::GraphClient;
use shadowsync_ports::{GuestChange, GuestGraph, Invitation};

const LINK: &str = "extensionAttribute15";

async fn start() -> (RunningSim, SimClient, GraphClient) {
    support::simulator().await
}

fn invitation(address: &str) -> Invitation {
    Invitation {
        address: address.into(),
        redirect_url: "https://myapplications.microsoft.com".into(),
        send_message: false,
        message_language: Some("de-DE".into()),
        invited_user: None,
        reset_redemption: false,
    }
}

#[tokio::test]
async fn a_partner_is_invited_linked_found_by_its_link_and_its_address_changed_and_deleted() {
    let (_sim, _control, graph) = start().await;
    let guid: ObjectGuid = "1f0b5a3e-7c2d-4e8f-9a6b-0c1d2e3f4a5b".parse().unwrap();
    let id = graph.invite(&invitation("pat@fabrikam.com")).await.unwrap();
    // Inviting the address again answers the same guest.
    assert_eq!(
        graph.invite(&invitation("PAT@fabrikam.com")).await.unwrap(),
        id
    );

    let change = GuestChange {
        properties: vec![
            (PartnerAttribute::DisplayName, Some("Pat O'Partner".into())),
            (PartnerAttribute::CompanyName, Some("Fabrikam".into())),
            (PartnerAttribute::JobTitle, None),
        ],
        link: Some((LINK.into(), guid.link())),
        account_enabled: Some(false),
        ..GuestChange::default()
    };
    graph.update_guest(&id, &change).await.unwrap();
    let found = graph.guests_by_link(LINK, &guid.link()).await.unwrap();
    assert_eq!(found.len(), 1);
    let g = &found[0];
    assert_eq!((&g.id, g.user_type.as_str()), (&id, "Guest"));
    assert_eq!(g.link.as_deref(), Some(guid.link().as_str()));
    assert!(!g.account_enabled);
    assert!(g
        .properties
        .contains(&(PartnerAttribute::DisplayName, Some("Pat O'Partner".into()))));
    assert!(g.properties.contains(&(PartnerAttribute::JobTitle, None)));
    assert_eq!(g.external_user_state.as_deref(), Some("PendingAcceptance"));
    assert!(graph
        .guests_by_link(LINK, "Partner_x")
        .await
        .unwrap()
        .is_empty());

    let by_address = graph
        .users_by_address("pat@fabrikam.com", LINK)
        .await
        .unwrap();
    assert_eq!(by_address.len(), 1);
    assert_eq!(by_address[0].link.as_deref(), Some(guid.link().as_str()));

    // A new address: on the user first, then a redemption reset for it.
    let moved = GuestChange {
        address: Some("pat@northwind.example".into()),
        ..GuestChange::default()
    };
    graph.update_guest(&id, &moved).await.unwrap();
    let reset = Invitation {
        invited_user: Some(id.clone()),
        reset_redemption: true,
        ..invitation("pat@northwind.example")
    };
    assert_eq!(graph.invite(&reset).await.unwrap(), id);
    assert!(graph
        .users_by_address("pat@fabrikam.com", LINK)
        .await
        .unwrap()
        .is_empty());

    graph.delete_user(&id).await.unwrap();
    graph.delete_user(&id).await.unwrap();
    assert!(graph
        .guests_by_link(LINK, &guid.link())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_synced_user_is_found_by_its_immutable_id_converted_and_made_a_guest() {
    let (_sim, control, graph) = start().await;
    let guid: ObjectGuid = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".parse().unwrap();
    let synced = control
        .create_synced_user(&SyncedUser {
            on_premises_sam_account_name: "ppartner".into(),
            object_guid: Some(guid.to_string()),
            mail: Some("pat@fabrikam.com".into()),
            ..SyncedUser::default()
        })
        .await
        .unwrap();
    let found = graph
        .users_by_immutable_id(&guid.immutable_id())
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{synced}");
    let user = &found[0];
    assert!(user.on_premises_sync_enabled && user.external_user_state.is_none());
    assert_eq!(user.user_type, "Member");

    let convert = Invitation {
        invited_user: Some(user.id.clone()),
        ..invitation("pat@fabrikam.com")
    };
    assert_eq!(graph.invite(&convert).await.unwrap(), user.id);
    // The conversion leaves userType alone; Graph refuses AD-mastered properties.
    let guest = GuestChange {
        user_type: Some("Guest".into()),
        ..GuestChange::default()
    };
    graph.update_guest(&user.id, &guest).await.unwrap();
    let mastered = GuestChange {
        account_enabled: Some(false),
        ..GuestChange::default()
    };
    let refused = graph.update_guest(&user.id, &mastered).await.unwrap_err();
    assert_eq!(refused.status(), Some(400), "{refused}");
    let after = &graph
        .users_by_immutable_id(&guid.immutable_id())
        .await
        .unwrap()[0];
    assert_eq!(after.user_type, "Guest");
    assert_eq!(
        after.external_user_state.as_deref(),
        Some("PendingAcceptance")
    );
}
