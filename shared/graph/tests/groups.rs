//! Scope-group reads against the simulator: a group's direct members, and groups delta for one
//! group (its members first, then only what changed, a nested group as a group, a deleted group).

mod support;

use graph_sim::{RunningSim, SimClient};
use shadowsync_core::ObjectId;
use shadowsync_graph::GraphClient;
use shadowsync_ports::{DeltaCursor, GroupChange, Member, MemberKind};
use std::collections::BTreeSet;

async fn start() -> (RunningSim, SimClient, GraphClient) {
    support::simulator().await
}

fn id(v: &serde_json::Value) -> ObjectId {
    let id = v["invitedUser"]["id"]
        .as_str()
        .or(v["id"].as_str())
        .unwrap();
    ObjectId::parse(id).unwrap()
}

fn user(id: &ObjectId) -> Member {
    Member {
        id: id.clone(),
        kind: MemberKind::User,
    }
}

/// A whole round from `from`: its items, and the deltaLink that ends it.
async fn round(
    graph: &GraphClient,
    group: &ObjectId,
    from: DeltaCursor,
) -> (Vec<GroupChange>, String) {
    let mut items = Vec::new();
    let mut cursor = from;
    loop {
        let page = graph.group_delta(group, &cursor).await.unwrap();
        items.extend(page.items);
        match (page.next_link, page.delta_link) {
            (Some(next), _) => cursor = DeltaCursor::Link(next),
            (None, Some(link)) => return (items, link),
            (None, None) => panic!("a page without a link"),
        }
    }
}

#[tokio::test]
async fn a_group_s_members_then_only_its_changes() {
    let (_sim, control, graph) = start().await;
    let scope = id(&control.create_group("Scope").await.unwrap());
    let nested = id(&control.create_group("Nested").await.unwrap());
    let other = id(&control.create_group("Other").await.unwrap());
    let ada = id(&control.invite("ada@fabrikam.com", "Ada").await.unwrap());
    let bob = id(&control.invite("bob@fabrikam.com", "Bob").await.unwrap());
    let cy = id(&control.invite("cy@fabrikam.com", "Cy").await.unwrap());
    control
        .add_member(scope.as_str(), ada.as_str())
        .await
        .unwrap();
    control
        .add_member(scope.as_str(), nested.as_str())
        .await
        .unwrap();
    control
        .add_member(nested.as_str(), bob.as_str())
        .await
        .unwrap();
    control
        .add_member(other.as_str(), cy.as_str())
        .await
        .unwrap();

    let members: BTreeSet<Member> = graph
        .group_members(&scope)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(
        members,
        BTreeSet::from([
            user(&ada),
            Member {
                id: nested.clone(),
                kind: MemberKind::Group
            }
        ])
    );

    let (items, link) = round(&graph, &scope, DeltaCursor::Start).await;
    assert_eq!(items.len(), 1, "only the group asked for: {items:?}");
    assert_eq!(items[0].group, scope);
    assert!(!items[0].deleted);
    assert_eq!(
        items[0].added.iter().cloned().collect::<BTreeSet<_>>(),
        members
    );

    control
        .add_member(scope.as_str(), cy.as_str())
        .await
        .unwrap();
    control
        .remove_member(scope.as_str(), ada.as_str())
        .await
        .unwrap();
    // A change in the nested group is the nested group's, not the scope group's.
    control
        .remove_member(nested.as_str(), bob.as_str())
        .await
        .unwrap();
    let (items, link) = round(&graph, &scope, DeltaCursor::Link(link)).await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0].added, [user(&cy)]);
    assert_eq!(items[0].removed, [user(&ada)]);

    let (items, link) = round(&graph, &scope, DeltaCursor::Link(link)).await;
    assert!(items.is_empty(), "nothing since: {items:?}");

    control.delete_group(nested.as_str()).await.unwrap();
    let (items, _) = round(&graph, &scope, DeltaCursor::Link(link)).await;
    assert_eq!(
        items[0].removed,
        [Member {
            id: nested.clone(),
            kind: MemberKind::Group
        }],
        "a deleted nested group leaves the scope group"
    );
    let (_, nested_link) = round(&graph, &other, DeltaCursor::Start).await;
    control.delete_group(other.as_str()).await.unwrap();
    let (items, _) = round(&graph, &other, DeltaCursor::Link(nested_link)).await;
    assert!(
        items.iter().any(|i| i.group == other && i.deleted),
        "{items:?}"
    );
}
