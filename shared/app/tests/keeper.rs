//! The subscription keeper against the fake Graph, whose clock is Graph's time.

mod common;

use chrono::Duration;
use common::*;
use secrecy::{ExposeSecret, SecretString};
use shadowsync_app::keeper::{IgnoreReason, Outcome, RecreateReason, DEFAULT_LIFETIME_MINUTES};
use shadowsync_app::{AppError, SubscriptionKeeper};
use shadowsync_core::Clock;
use shadowsync_ports::{GraphError, NewSubscription, SubscriptionId};
use shadowsync_queue::LifecycleEvent;
use shadowsync_state::records::{SUBSCRIPTIONS, USERS_KEY};
use shadowsync_state::{KeyValueStore, StateError, SubscriptionRecord};
use shadowsync_testkit::GraphOp;

fn world() -> World {
    Setup {
        keeper: Some(keeper_config()),
        ..Setup::default()
    }
    .build()
}

fn keeper(w: &World) -> &SubscriptionKeeper {
    w.app.keeper().expect("a keeper")
}

/// A keeper on the same Graph and store with another configuration (a rotation, say).
fn keeper_with(w: &World, config: shadowsync_app::KeeperConfig) -> SubscriptionKeeper {
    SubscriptionKeeper {
        graph: w.graph.clone(),
        state: w.store.clone(),
        config,
        clock: w.graph.clock(),
    }
}

fn graph_now(w: &World) -> chrono::DateTime<chrono::Utc> {
    w.graph.clock().now()
}

async fn record(w: &World) -> Option<SubscriptionRecord> {
    SubscriptionRecord::load(w.store.as_ref())
        .await
        .unwrap()
        .map(|r| r.value)
}

/// Creates ours; returns its id.
async fn created(w: &World) -> String {
    let e = keeper(w).ensure().await.unwrap();
    assert_eq!(e.outcome, Outcome::Created);
    e.record.id
}

/// Someone else's subscription request, or ours made by an earlier configuration.
fn request(w: &World, url: &str, client_state: &str) -> NewSubscription {
    NewSubscription {
        resource: "/users".into(),
        change_type: "updated,deleted".into(),
        notification_url: url.into(),
        lifecycle_url: LIFECYCLE_URL.into(),
        client_state: SecretString::from(client_state),
        expiration: graph_now(w) + Duration::days(2),
    }
}

#[tokio::test]
async fn creates_the_subscription_and_records_it() {
    let w = world();
    let ensured = keeper(&w).ensure().await.unwrap();
    assert_eq!(ensured.outcome, Outcome::Created);
    let live = w.graph.live_subscriptions();
    assert_eq!(live.len(), 1);
    let s = &live[0];
    assert_eq!(
        (s.resource.as_str(), s.change_type.as_str()),
        ("/users", "updated,deleted")
    );
    assert_eq!(s.notification_url, NOTIFICATION_URL);
    assert_eq!(s.lifecycle_notification_url.as_deref(), Some(LIFECYCLE_URL));
    assert_eq!(
        s.client_state
            .as_ref()
            .map(|c| c.expose_secret().to_string()),
        Some(CLIENT_STATE.to_string())
    );
    let expiration = graph_now(&w) + Duration::minutes(DEFAULT_LIFETIME_MINUTES);
    assert_eq!(s.expiration_date_time, expiration);
    let r = record(&w).await.expect("recorded");
    assert_eq!(r, ensured.record);
    assert_eq!(r.id, s.id.to_string());
    assert_eq!((r.expiration, r.created_at), (expiration, graph_now(&w)));
    assert!(!format!("{r:?}").contains(CLIENT_STATE), "not stored");
}

#[tokio::test]
async fn a_live_subscription_far_from_expiry_is_left_alone() {
    let w = world();
    created(&w).await;
    let e = keeper(&w).ensure().await.unwrap();
    assert_eq!(e.outcome, Outcome::Unchanged);
    assert_eq!(w.graph.call_count(GraphOp::CreateSubscription), 1);
    assert_eq!(w.graph.call_count(GraphOp::RenewSubscription), 0);
}

#[tokio::test]
async fn renews_inside_the_margin_by_graphs_clock_and_not_before() {
    let w = world();
    let id = created(&w).await;
    // Three days (the margin) and a minute before expiry, by Graph's clock only.
    w.graph.clock().advance(
        Duration::minutes(DEFAULT_LIFETIME_MINUTES) - Duration::days(3) - Duration::minutes(1),
    );
    let e = keeper(&w).ensure().await.unwrap();
    assert_eq!(e.outcome, Outcome::Unchanged);
    assert_eq!(w.graph.call_count(GraphOp::RenewSubscription), 0);

    w.graph.clock().advance(Duration::minutes(1));
    let e = keeper(&w).ensure().await.unwrap();
    assert_eq!(e.outcome, Outcome::Renewed);
    assert_eq!(w.graph.calls(GraphOp::RenewSubscription), vec![id.clone()]);
    let expiration = graph_now(&w) + Duration::minutes(DEFAULT_LIFETIME_MINUTES);
    assert_eq!(
        w.graph.live_subscriptions()[0].expiration_date_time,
        expiration
    );
    let r = record(&w).await.unwrap();
    assert_eq!((r.id, r.expiration), (id, expiration));
    assert_eq!(r.renewed_at, Some(graph_now(&w)));
}

#[tokio::test]
async fn recreates_a_subscription_graph_lost_or_let_expire() {
    let w = world();
    let first = created(&w).await;
    w.graph.remove_subscription(&first);
    let e = keeper(&w).ensure().await.unwrap();
    assert_eq!(
        e.outcome,
        Outcome::Recreated {
            reason: RecreateReason::NotFound
        }
    );
    assert_ne!(e.record.id, first);
    assert_eq!(w.graph.live_subscriptions().len(), 1);

    w.graph
        .clock()
        .advance(Duration::minutes(DEFAULT_LIFETIME_MINUTES));
    assert!(w.graph.live_subscriptions().is_empty(), "expired");
    let e = keeper(&w).ensure().await.unwrap();
    assert!(matches!(
        e.outcome,
        Outcome::Recreated {
            reason: RecreateReason::NotFound
        }
    ));
    assert_eq!(record(&w).await.unwrap().id, e.record.id);
}

#[tokio::test]
async fn a_409_for_our_own_subscription_replaces_it_after_state_was_lost() {
    let w = world();
    let id = created(&w).await;
    let stored = SubscriptionRecord::load(w.store.as_ref())
        .await
        .unwrap()
        .unwrap();
    w.store
        .delete(SUBSCRIPTIONS, USERS_KEY, Some(stored.version))
        .await
        .unwrap();

    // Which client state ours carries is unknown without the record (Graph does not say):
    // replaced by one carrying the configured client state, never renewed blindly.
    let e = keeper(&w).ensure().await.unwrap();
    assert_eq!(e.outcome, Outcome::Adopted);
    assert_ne!(e.record.id, id, "a new subscription");
    assert_eq!(w.graph.live_subscriptions().len(), 1, "the old one deleted");
    assert_eq!(w.graph.calls(GraphOp::DeleteSubscription), vec![id.clone()]);
    assert!(w.graph.calls(GraphOp::RenewSubscription).is_empty());
    let recorded = record(&w).await.unwrap();
    assert_eq!(recorded.id, e.record.id);
    assert_eq!(
        recorded.client_state_sha256,
        Some(shadowsync_app::keeper::client_state_fingerprint(
            &keeper_config().client_state
        ))
    );
}

#[tokio::test]
async fn a_rotated_client_state_replaces_the_subscription_without_reading_it_back() {
    let w = world();
    let id = created(&w).await;
    // The fake answers like Graph's list: no client state to compare with.
    let mut rotated = keeper_config();
    rotated.client_state = secrecy::SecretString::from("a-new-client-state-after-rotation");
    let e = keeper_with(&w, rotated).ensure().await.unwrap();
    assert_eq!(
        e.outcome,
        Outcome::Recreated {
            reason: RecreateReason::ConfigChanged {
                fields: vec!["clientState"]
            }
        }
    );
    assert_ne!(e.record.id, id);
    assert_eq!(w.graph.live_subscriptions().len(), 1);
    // And the next check leaves the new one alone.
    let again = keeper_with(&w, {
        let mut c = keeper_config();
        c.client_state = secrecy::SecretString::from("a-new-client-state-after-rotation");
        c
    })
    .ensure()
    .await
    .unwrap();
    assert_eq!(again.outcome, Outcome::Unchanged);
}

#[tokio::test]
async fn a_409_for_someone_elses_subscription_is_a_conflict_not_retried() {
    let w = world();
    let theirs = w.graph.add_subscription(&request(
        &w,
        "https://someone-else.example.com/hook",
        "theirs",
    ));
    let e = keeper(&w).ensure().await.unwrap_err();
    match &e {
        AppError::SubscriptionConflict {
            existing_id,
            existing_url,
            our_url,
            ..
        } => {
            assert_eq!(existing_id, theirs.as_str());
            assert_eq!(existing_url, "https://someone-else.example.com/hook");
            assert_eq!(our_url, NOTIFICATION_URL);
        }
        other => panic!("{other:?}"),
    }
    assert!(!e.is_retryable());
    assert!(record(&w).await.is_none());
    assert_eq!(w.graph.live_subscriptions().len(), 1, "theirs untouched");
}

#[tokio::test]
async fn ours_with_an_unknown_client_state_is_replaced() {
    let w = world();
    let old = w
        .graph
        .add_subscription(&request(&w, NOTIFICATION_URL, "an-older-client-state"));
    let e = keeper(&w).ensure().await.unwrap();
    assert_eq!(e.outcome, Outcome::Adopted);
    assert_ne!(e.record.id, old.as_str());
    let live = w.graph.live_subscriptions();
    assert_eq!(live.len(), 1);
    assert_ne!(live[0].id, old);
    assert_eq!(
        live[0].client_state.as_ref().unwrap().expose_secret(),
        CLIENT_STATE
    );
}

#[tokio::test]
async fn configuration_drift_replaces_the_subscription() {
    let w = world();
    let old = created(&w).await;
    w.graph.edit_subscription(&old, |s| {
        s.notification_url = "https://old-host.example.com/api/notifications".into()
    });
    let e = keeper(&w).ensure().await.unwrap();
    assert_eq!(
        e.outcome,
        Outcome::Recreated {
            reason: RecreateReason::ConfigChanged {
                fields: vec!["notificationUrl"]
            }
        }
    );
    assert_eq!(
        w.graph.calls(GraphOp::DeleteSubscription),
        vec![old.clone()]
    );
    let live = w.graph.live_subscriptions();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].notification_url, NOTIFICATION_URL);
    assert_ne!(live[0].id.to_string(), old);
}

#[tokio::test]
async fn reauthorizes_and_renews_when_close_to_expiry() {
    let w = world();
    let id = created(&w).await;
    let k = keeper(&w);
    let outcome = k
        .handle_lifecycle(LifecycleEvent::ReauthorizationRequired, &id)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Reauthorized { renewed: false });
    assert_eq!(w.graph.reauthorizations(&id), 1);
    assert_eq!(w.graph.call_count(GraphOp::RenewSubscription), 0);
    assert_eq!(
        record(&w).await.unwrap().reauthorized_at,
        Some(graph_now(&w))
    );

    w.graph
        .clock()
        .advance(Duration::minutes(DEFAULT_LIFETIME_MINUTES) - Duration::days(1));
    let outcome = k
        .handle_lifecycle(LifecycleEvent::ReauthorizationRequired, &id)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Reauthorized { renewed: true });
    assert_eq!(w.graph.reauthorizations(&id), 2);
    let r = record(&w).await.unwrap();
    assert_eq!(
        r.expiration,
        graph_now(&w) + Duration::minutes(DEFAULT_LIFETIME_MINUTES)
    );
}

#[tokio::test]
async fn a_404_on_reauthorization_or_a_removal_recreates() {
    let w = world();
    let id = created(&w).await;
    w.graph.remove_subscription(&id);
    let outcome = keeper(&w)
        .handle_lifecycle(LifecycleEvent::ReauthorizationRequired, &id)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Recreated {
            reason: RecreateReason::ReauthorizeNotFound
        }
    );

    let id = record(&w).await.unwrap().id;
    // Graph deletes the subscription when it sends subscriptionRemoved.
    w.graph.remove_subscription(&id);
    let outcome = keeper(&w)
        .handle_lifecycle(LifecycleEvent::SubscriptionRemoved, &id)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Recreated {
            reason: RecreateReason::Removed
        }
    );
    let live = w.graph.live_subscriptions();
    assert_eq!(live.len(), 1);
    assert_eq!(record(&w).await.unwrap().id, live[0].id.to_string());
}

#[tokio::test]
async fn missed_and_events_for_other_subscriptions_are_ignored() {
    let w = world();
    let id = created(&w).await;
    let k = keeper(&w);
    assert_eq!(
        k.handle_lifecycle(LifecycleEvent::Missed, &id)
            .await
            .unwrap(),
        Outcome::Ignored {
            reason: IgnoreReason::Missed
        }
    );
    let other = "0b9a8c7d-0000-4000-8000-000000000000";
    assert_eq!(
        k.handle_lifecycle(LifecycleEvent::ReauthorizationRequired, other)
            .await
            .unwrap(),
        Outcome::Ignored {
            reason: IgnoreReason::NotOurs { ours: id.clone() }
        }
    );
    assert_eq!(w.graph.call_count(GraphOp::ReauthorizeSubscription), 0);
    assert_eq!(w.graph.call_count(GraphOp::CreateSubscription), 1);
}

#[tokio::test]
async fn a_lifecycle_event_without_a_record_adopts_ours() {
    let w = world();
    let id = created(&w).await;
    let stored = SubscriptionRecord::load(w.store.as_ref())
        .await
        .unwrap()
        .unwrap();
    w.store
        .delete(SUBSCRIPTIONS, USERS_KEY, Some(stored.version))
        .await
        .unwrap();
    let outcome = keeper(&w)
        .handle_lifecycle(LifecycleEvent::ReauthorizationRequired, &id)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Adopted);
    let recorded = record(&w).await.unwrap();
    assert_ne!(recorded.id, id, "replaced: its client state was unknown");
    assert_eq!(w.graph.live_subscriptions().len(), 1);
}

#[tokio::test]
async fn throttling_is_retryable() {
    let w = world();
    w.graph
        .fail(GraphOp::CreateSubscription, 1, || GraphError::Throttled {
            retry_after: None,
        });
    let e = keeper(&w).ensure().await.unwrap_err();
    assert!(e.is_retryable() && e.kind() == "Graph", "{e}");
    assert!(record(&w).await.is_none());

    created(&w).await;
    w.graph
        .fail(GraphOp::Subscription, 1, || GraphError::Throttled {
            retry_after: None,
        });
    assert!(keeper(&w).ensure().await.unwrap_err().is_retryable());
}

#[tokio::test]
async fn a_lost_compare_and_set_on_the_record_is_retryable() {
    let w = world();
    let theirs = SubscriptionRecord {
        id: SubscriptionId::parse("0b9a8c7d-0000-4000-8000-000000000001")
            .unwrap()
            .to_string(),
        resource: "/users".into(),
        change_type: "updated,deleted".into(),
        notification_url: NOTIFICATION_URL.into(),
        lifecycle_url: Some(LIFECYCLE_URL.into()),
        client_state_sha256: None,
        expiration: graph_now(&w) + Duration::days(20),
        created_at: graph_now(&w),
        renewed_at: None,
        reauthorized_at: None,
    };
    w.store.race_next_put(
        SUBSCRIPTIONS,
        USERS_KEY,
        serde_json::to_vec(&theirs).unwrap(),
    );
    let e = keeper(&w).ensure().await.unwrap_err();
    assert!(
        matches!(e, AppError::State(StateError::Conflict { .. })),
        "{e}"
    );
    assert!(e.is_retryable());
    assert_eq!(record(&w).await.unwrap(), theirs, "theirs stands");
}
