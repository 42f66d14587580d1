//! The keeper against the Graph simulator, a real handshake receiver and an embedded store.

use std::sync::atomic::Ordering;

use chrono::Duration;
use graph_sim::FaultRule;
use secrecy::SecretString;
use serde_json::json;
use shadowsync_app::keeper::{IgnoreReason, Outcome, RecreateReason, DEFAULT_LIFETIME_MINUTES};
use shadowsync_app::AppError;
use shadowsync_e2e::subscriptions::{World, CLIENT_STATE};
use shadowsync_graph::{GraphError, Method};
use shadowsync_queue::LifecycleEvent;

fn lifetime() -> Duration {
    Duration::minutes(DEFAULT_LIFETIME_MINUTES)
}

/// `a` and `b` within a minute of each other (requests take real time).
fn close(a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>) -> bool {
    (a - b).num_seconds().abs() < 60
}

#[tokio::test]
async fn creates_when_none_is_recorded() {
    let w = World::start().await;
    let config = w.config();
    assert!(w.record().await.is_none());
    let before = w.now();

    let ensured = w.keeper().ensure().await.unwrap();

    assert_eq!(ensured.outcome, Outcome::Created);
    let sub = w.only_subscription();
    assert_eq!(sub.id, ensured.record.id);
    assert_eq!(sub.resource, "/users");
    assert_eq!(sub.change_types, ["updated", "deleted"]);
    assert_eq!(sub.notification_url, config.notification_url);
    assert_eq!(
        sub.lifecycle_url.as_deref(),
        Some(config.lifecycle_url.as_str())
    );
    assert_eq!(sub.client_state.as_deref(), Some(CLIENT_STATE));
    assert!(
        close(sub.expiration, before + lifetime()),
        "{}",
        sub.expiration
    );
    // Both endpoints went through the real handshake.
    let validations = w.validations().await;
    for url in [&config.notification_url, &config.lifecycle_url] {
        assert!(
            validations
                .iter()
                .any(|(u, outcome)| u.starts_with(url.as_str()) && outcome == "validated"),
            "{url} not validated: {validations:?}"
        );
    }
    let (record, version) = w.record().await.expect("recorded");
    assert_eq!(record, ensured.record);
    assert_eq!(version, 1);
    assert_eq!(record.expiration, sub.expiration);
    assert_eq!(record.notification_url, config.notification_url);
    assert!(record.renewed_at.is_none() && record.reauthorized_at.is_none());
}

#[tokio::test]
async fn leaves_a_fresh_subscription_alone() {
    let w = World::start().await;
    let created = w.keeper().ensure().await.unwrap().record;
    w.client.advance_time(86_400.0).await.unwrap();

    let ensured = w.keeper().ensure().await.unwrap();

    assert_eq!(ensured.outcome, Outcome::Unchanged);
    assert_eq!(ensured.record, created);
    let sub = w.only_subscription();
    assert_eq!(sub.id, created.id);
    assert_eq!(sub.expiration, created.expiration, "not renewed");
    assert_eq!(w.record().await.unwrap().1, 1, "nothing written");
}

#[tokio::test]
async fn renews_within_the_margin_and_not_before() {
    let w = World::start().await;
    let keeper = w.keeper();
    let margin = keeper.config.renew_margin;
    let created = keeper.ensure().await.unwrap().record;

    w.advance_to(created.expiration - margin - Duration::hours(1))
        .await;
    assert_eq!(keeper.ensure().await.unwrap().outcome, Outcome::Unchanged);

    w.advance_to(created.expiration - margin + Duration::hours(1))
        .await;
    let renewal_time = w.now();
    let ensured = keeper.ensure().await.unwrap();

    assert_eq!(ensured.outcome, Outcome::Renewed);
    let sub = w.only_subscription();
    assert_eq!(sub.id, created.id, "same subscription");
    assert!(
        close(sub.expiration, renewal_time + lifetime()),
        "{}",
        sub.expiration
    );
    let (record, version) = w.record().await.unwrap();
    assert_eq!(record.expiration, sub.expiration);
    assert!(record.renewed_at.is_some_and(|t| close(t, renewal_time)));
    assert_eq!(record.created_at, created.created_at);
    assert_eq!(version, 2);
}

#[tokio::test]
async fn renew_margin_is_configurable() {
    let w = World::start().await;
    let mut config = w.config();
    config.renew_margin = Duration::days(10);
    let keeper = w.keeper_with(config);
    let created = keeper.ensure().await.unwrap().record;

    // Five days before expiry: outside the default 3-day margin, inside this one.
    w.advance_to(created.expiration - Duration::days(5)).await;

    assert_eq!(keeper.ensure().await.unwrap().outcome, Outcome::Renewed);
    assert!(w.only_subscription().expiration > created.expiration);
}

#[tokio::test]
async fn recreates_after_expiry() {
    let w = World::start().await;
    let created = w.keeper().ensure().await.unwrap().record;
    w.advance_to(created.expiration + Duration::hours(1)).await;
    assert!(w.subscriptions().is_empty(), "the simulator dropped it");

    let ensured = w.keeper().ensure().await.unwrap();

    assert_eq!(
        ensured.outcome,
        Outcome::Recreated {
            reason: RecreateReason::NotFound
        }
    );
    let sub = w.only_subscription();
    assert_ne!(sub.id, created.id);
    assert_eq!(ensured.record.id, sub.id);
    assert_eq!(w.record().await.unwrap(), (ensured.record, 2));
}

#[tokio::test]
async fn recreates_when_renewal_answers_404() {
    let w = World::start().await;
    let created = w.keeper().ensure().await.unwrap().record;
    // The GET still sees the subscription (2 s left), but the renewal is held back 4 s, by
    // which time the subscription has expired: Graph answers the PATCH with 404.
    w.advance_to(created.expiration - Duration::seconds(2))
        .await;
    w.client
        .set_fault(FaultRule {
            path: "/v1.0/subscriptions/*".into(),
            method: Some("PATCH".into()),
            latency_ms: Some(4000),
            count: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();

    let ensured = w.keeper().ensure().await.unwrap();

    assert_eq!(
        ensured.outcome,
        Outcome::Recreated {
            reason: RecreateReason::RenewNotFound
        }
    );
    let sub = w.only_subscription();
    assert_ne!(sub.id, created.id);
    assert_eq!(w.record().await.unwrap().0.id, sub.id);
}

#[tokio::test]
async fn recreates_after_out_of_band_delete() {
    let w = World::start().await;
    let created = w.keeper().ensure().await.unwrap().record;
    let resp = w
        .client
        .graph(
            Method::DELETE,
            &format!("/v1.0/subscriptions/{}", created.id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);

    let ensured = w.keeper().ensure().await.unwrap();

    assert_eq!(
        ensured.outcome,
        Outcome::Recreated {
            reason: RecreateReason::NotFound
        }
    );
    let sub = w.only_subscription();
    assert_ne!(sub.id, created.id);
    assert_eq!(w.record().await.unwrap().0.id, sub.id);
}

#[tokio::test]
async fn replaces_the_subscription_when_the_client_state_changes() {
    let w = World::start().await;
    let created = w.keeper().ensure().await.unwrap().record;
    let mut config = w.config();
    config.client_state = SecretString::from("rotated-client-state");

    let ensured = w.keeper_with(config).ensure().await.unwrap();

    assert_eq!(
        ensured.outcome,
        Outcome::Recreated {
            reason: RecreateReason::ConfigChanged {
                fields: vec!["clientState"]
            }
        }
    );
    let sub = w.only_subscription();
    assert_ne!(sub.id, created.id, "old one deleted, new one created");
    assert_eq!(sub.client_state.as_deref(), Some("rotated-client-state"));
    assert_eq!(w.record().await.unwrap().0.id, sub.id);
}

#[tokio::test]
async fn reauthorizes_on_reauthorization_required() {
    let w = World::start().await;
    let keeper = w.keeper();
    let created = keeper.ensure().await.unwrap().record;
    w.client
        .trigger_lifecycle(&created.id, "reauthorizationRequired")
        .await
        .unwrap();
    assert!(w.only_subscription().needs_reauthorization);

    let outcome = keeper
        .handle_lifecycle(LifecycleEvent::ReauthorizationRequired, &created.id)
        .await
        .unwrap();

    assert_eq!(outcome, Outcome::Reauthorized { renewed: false });
    let sub = w.only_subscription();
    assert!(
        !sub.needs_reauthorization,
        "the simulator saw the reauthorization"
    );
    // Far from expiry: reauthorized, not renewed (a renewal would also clear the flag).
    assert_eq!(sub.expiration, created.expiration);
    let (record, version) = w.record().await.unwrap();
    assert!(record.reauthorized_at.is_some());
    assert!(record.renewed_at.is_none());
    assert_eq!(version, 2);
}

#[tokio::test]
async fn reauthorization_close_to_expiry_also_renews() {
    let w = World::start().await;
    let keeper = w.keeper();
    let created = keeper.ensure().await.unwrap().record;
    w.advance_to(created.expiration - Duration::days(1)).await;
    w.client
        .trigger_lifecycle(&created.id, "reauthorizationRequired")
        .await
        .unwrap();

    let outcome = keeper
        .handle_lifecycle(LifecycleEvent::ReauthorizationRequired, &created.id)
        .await
        .unwrap();

    assert_eq!(outcome, Outcome::Reauthorized { renewed: true });
    let sub = w.only_subscription();
    assert_eq!(sub.id, created.id);
    assert!(!sub.needs_reauthorization);
    assert!(sub.expiration > created.expiration + Duration::days(20));
    assert_eq!(w.record().await.unwrap().0.expiration, sub.expiration);
}

#[tokio::test]
async fn recreates_when_reauthorization_answers_404() {
    let w = World::start().await;
    let keeper = w.keeper();
    let created = keeper.ensure().await.unwrap().record;
    w.client
        .graph(
            Method::DELETE,
            &format!("/v1.0/subscriptions/{}", created.id),
            None,
        )
        .await
        .unwrap();

    let outcome = keeper
        .handle_lifecycle(LifecycleEvent::ReauthorizationRequired, &created.id)
        .await
        .unwrap();

    assert_eq!(
        outcome,
        Outcome::Recreated {
            reason: RecreateReason::ReauthorizeNotFound
        }
    );
    let sub = w.only_subscription();
    assert_ne!(sub.id, created.id);
    assert_eq!(w.record().await.unwrap().0.id, sub.id);
}

#[tokio::test]
async fn recreates_on_subscription_removed() {
    let w = World::start().await;
    let keeper = w.keeper();
    let created = keeper.ensure().await.unwrap().record;
    w.client
        .trigger_lifecycle(&created.id, "subscriptionRemoved")
        .await
        .unwrap();
    assert!(w.subscriptions().is_empty());

    let outcome = keeper
        .handle_lifecycle(LifecycleEvent::SubscriptionRemoved, &created.id)
        .await
        .unwrap();

    assert_eq!(
        outcome,
        Outcome::Recreated {
            reason: RecreateReason::Removed
        }
    );
    let sub = w.only_subscription();
    assert_ne!(sub.id, created.id);
    assert_eq!(w.record().await.unwrap().0.id, sub.id);
}

#[tokio::test]
async fn ignores_missed_and_events_for_other_subscriptions() {
    let w = World::start().await;
    let keeper = w.keeper();
    let ours = keeper.ensure().await.unwrap().record;
    // Someone else's subscription on one user, which also wants reauthorization.
    let user = w.client.invite("bob@fabrikam.com", "Bob").await.unwrap();
    let user_id = user["id"].as_str().expect("user id");
    let config = w.config();
    let resp = w
        .client
        .graph(
            Method::POST,
            "/v1.0/subscriptions",
            Some(&json!({
                "changeType": "updated",
                "resource": format!("/users/{user_id}"),
                "notificationUrl": format!("{}/someone-else", w.receiver.base),
                "lifecycleNotificationUrl": config.lifecycle_url,
                "expirationDateTime": (w.now() + Duration::days(1)).to_rfc3339(),
                "clientState": "theirs",
            })),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let theirs: serde_json::Value = resp.json().await.unwrap();
    let theirs = theirs["id"].as_str().unwrap().to_string();
    w.client
        .trigger_lifecycle(&theirs, "reauthorizationRequired")
        .await
        .unwrap();

    let outcome = keeper
        .handle_lifecycle(LifecycleEvent::ReauthorizationRequired, &theirs)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Ignored {
            reason: IgnoreReason::NotOurs {
                ours: ours.id.clone()
            }
        }
    );
    let missed = keeper
        .handle_lifecycle(LifecycleEvent::Missed, &ours.id)
        .await
        .unwrap();
    assert_eq!(
        missed,
        Outcome::Ignored {
            reason: IgnoreReason::Missed
        }
    );

    let subs = w.subscriptions();
    let theirs_now = subs.iter().find(|s| s.id == theirs).unwrap();
    assert!(theirs_now.needs_reauthorization, "not touched");
    let ours_now = subs.iter().find(|s| s.id == ours.id).unwrap();
    assert_eq!(ours_now.expiration, ours.expiration);
    assert_eq!(w.record().await.unwrap(), (ours, 1));
}

#[tokio::test]
async fn replaces_its_subscription_after_state_loss() {
    let w = World::start().await;
    let created = w.keeper().ensure().await.unwrap().record;
    w.client.advance_time(86_400.0).await.unwrap();
    let lost = w.fresh_store("lost.redb");
    let keeper = w.keeper_on(w.config(), lost.clone());

    let ensured = keeper.ensure().await.unwrap();

    // Creation answers 409; the subscription found has our URL, but Graph never returns its
    // clientState, so which secret it carries is unknown: it is replaced by one with ours.
    assert_eq!(ensured.outcome, Outcome::Adopted);
    assert_ne!(ensured.record.id, created.id);
    let sub = w.only_subscription();
    assert_eq!(sub.id, ensured.record.id);
    assert!(ensured.record.client_state_sha256.is_some());
    let stored = shadowsync_state::SubscriptionRecord::load(&*lost)
        .await
        .unwrap()
        .expect("recorded in the new store");
    assert_eq!(stored.value, ensured.record);
    assert_eq!(stored.value.expiration, sub.expiration);

    // A lifecycle event arriving before any record exists is handled the same way.
    let empty = w.fresh_store("empty.redb");
    let outcome = w
        .keeper_on(w.config(), empty)
        .handle_lifecycle(LifecycleEvent::ReauthorizationRequired, &sub.id)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Adopted);
    assert_ne!(w.only_subscription().id, sub.id);
}

#[tokio::test]
async fn reports_a_conflicting_subscription_that_is_not_ours() {
    let w = World::start().await;
    let existing = w.keeper().ensure().await.unwrap().record;
    let mut config = w.config();
    config.notification_url = format!("{}/another-webhook", w.receiver.base);
    let other_store = w.fresh_store("other.redb");

    let err = w
        .keeper_on(config, other_store.clone())
        .ensure()
        .await
        .unwrap_err();

    match &err {
        AppError::SubscriptionConflict {
            existing_id,
            existing_url,
            ..
        } => {
            assert_eq!(existing_id, &existing.id);
            assert_eq!(existing_url, &existing.notification_url);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(err.to_string().contains(&existing.id), "{err}");
    assert_eq!(w.only_subscription().id, existing.id, "left alone");
    assert!(shadowsync_state::SubscriptionRecord::load(&*other_store)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_failing_handshake_is_a_permanent_error_with_graphs_message() {
    let w = World::start().await;
    w.receiver.wrong_handshake.store(true, Ordering::SeqCst);
    let keeper = w.keeper();

    let err = keeper.ensure().await.unwrap_err();

    assert!(
        matches!(
            &err,
            AppError::Graph {
                source: GraphError::Client { status: 400, .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains("Subscription validation request failed."),
        "{text}"
    );
    assert!(!text.contains(CLIENT_STATE) && !format!("{err:?}").contains(CLIENT_STATE));
    assert!(!format!("{keeper:?}").contains(CLIENT_STATE));
    assert!(w.subscriptions().is_empty());
    assert!(w.record().await.is_none());

    // Once the endpoint answers correctly, the next run succeeds.
    w.receiver.wrong_handshake.store(false, Ordering::SeqCst);
    assert_eq!(keeper.ensure().await.unwrap().outcome, Outcome::Created);
}
