//! The keeper: one Graph subscription on users, alive and recorded.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Value};
use shadowsync_core::Clock;
use shadowsync_graph::{GraphClient, Method};
use shadowsync_queue::LifecycleEvent;
use shadowsync_state::KeyValueStore;
use tracing::{info, warn};

use crate::config::{change_types, same_resource, KeeperConfig};
use crate::error::KeeperError;
use crate::record::SubscriptionRecord;

const SUBSCRIPTIONS_PATH: &str = "/v1.0/subscriptions";

/// Keeps the subscription described by `config` alive in Graph and recorded in `state`.
/// Meant to run on a schedule ([`SubscriptionKeeper::ensure`]) and on lifecycle events
/// ([`SubscriptionKeeper::handle_lifecycle`]); every step is idempotent, so a run that fails
/// half-way is repaired by the next one.
pub struct SubscriptionKeeper {
    pub graph: Arc<GraphClient>,
    pub state: Arc<dyn KeyValueStore>,
    pub config: KeeperConfig,
    /// Decides when renewal is due; must agree with Graph's clock (tests pass the simulator's).
    pub clock: Arc<dyn Clock>,
}

impl SubscriptionKeeper {
    /// The keeper the configuration describes, judging expiry by Graph's clock.
    pub fn from_config(
        graph: Arc<GraphClient>,
        state: Arc<dyn KeyValueStore>,
        webhook: &shadowsync_config::WebhookSection,
        subscriptions: &shadowsync_config::SubscriptionsSection,
    ) -> Self {
        let mut config = KeeperConfig::new(
            webhook.notification_url(),
            webhook.lifecycle_url(),
            webhook.client_state.clone().expect("validated"),
        );
        config.renew_margin = chrono::Duration::hours(subscriptions.renew_margin_hours as i64);
        let clock = graph.server_clock();
        Self {
            graph,
            state,
            config,
            clock,
        }
    }
}

impl fmt::Debug for SubscriptionKeeper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionKeeper")
            .field("graph", &self.graph)
            .field("config", &self.config)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// What a keeper run did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// There was no subscription recorded; a new one was created.
    Created,
    /// The subscription was close to expiry and got a new expiration.
    Renewed,
    /// The subscription is live, matches the configuration and is not due for renewal.
    Unchanged,
    /// The recorded subscription was unusable and a new one replaced it.
    Recreated { reason: RecreateReason },
    /// Graph asked for reauthorization and got it; `renewed` if it was also close to expiry.
    Reauthorized { renewed: bool },
    /// Creation answered 409 and the existing subscription turned out to be ours (same
    /// notification URL, e.g. after state was lost): it was renewed and recorded.
    Adopted,
    /// A lifecycle event that needs nothing from the keeper.
    Ignored { reason: IgnoreReason },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecreateReason {
    /// Graph no longer knows the recorded subscription: deleted out of band or expired (Graph
    /// does not say which).
    NotFound,
    /// Renewal answered 404 (it expired or was deleted between our read and the renewal).
    RenewNotFound,
    /// Reauthorization answered 404.
    ReauthorizeNotFound,
    /// Graph sent `subscriptionRemoved`.
    Removed,
    /// The live subscription differs from the configuration in these Graph properties.
    ConfigChanged { fields: Vec<&'static str> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgnoreReason {
    /// The event names a subscription other than the recorded one (`ours`), e.g. one replaced
    /// earlier.
    NotOurs { ours: String },
    /// `missed`: notifications were lost; the delta reconciler catches up, not the keeper.
    Missed,
}

/// The result of [`SubscriptionKeeper::ensure`]: the subscription as recorded, and what was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ensured {
    pub record: SubscriptionRecord,
    pub outcome: Outcome,
}

/// A subscription as Graph returns it. Deliberately not `Debug`: it holds the client state.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Live {
    id: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    change_type: String,
    #[serde(default)]
    notification_url: String,
    #[serde(default)]
    lifecycle_notification_url: Option<String>,
    #[serde(default)]
    client_state: Option<String>,
    expiration_date_time: DateTime<Utc>,
}

impl Live {
    fn record(
        &self,
        created_at: DateTime<Utc>,
        renewed_at: Option<DateTime<Utc>>,
        reauthorized_at: Option<DateTime<Utc>>,
    ) -> SubscriptionRecord {
        SubscriptionRecord {
            id: self.id.clone(),
            resource: self.resource.clone(),
            change_type: self.change_type.clone(),
            notification_url: self.notification_url.clone(),
            lifecycle_url: self.lifecycle_notification_url.clone(),
            expiration: self.expiration_date_time,
            created_at,
            renewed_at,
            reauthorized_at,
        }
    }
}

fn parse_live(action: &'static str, value: Value) -> Result<Live, KeeperError> {
    // serde's message names the field and type, never a string value, so no secret leaks.
    serde_json::from_value(value).map_err(|e| KeeperError::Unexpected {
        action,
        detail: e.to_string(),
    })
}

/// Graph's timestamp format (RFC 3339, UTC, `Z`).
fn graph_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `/v1.0/subscriptions/{id}{suffix}`. Graph's subscription ids are GUIDs; anything else (an
/// id from a corrupt record, say) is refused rather than allowed to steer the request elsewhere.
fn subscription_path(id: &str, suffix: &str) -> Result<String, KeeperError> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(KeeperError::Unexpected {
            action: "building a subscription URL",
            detail: format!("{id:?} is not a Graph subscription id"),
        });
    }
    Ok(format!("{SUBSCRIPTIONS_PATH}/{id}{suffix}"))
}

impl SubscriptionKeeper {
    /// Makes sure our subscription exists, matches the configuration and is not about to
    /// expire: creates, renews, recreates or adopts as needed, and records the result.
    pub async fn ensure(&self) -> Result<Ensured, KeeperError> {
        self.config.validate()?;
        let Some(stored) = SubscriptionRecord::load(&*self.state).await? else {
            info!("no subscription recorded; creating one");
            return self.create(None, None).await;
        };
        let version = Some(stored.version);
        match self.get(&stored.value.id).await? {
            None => {
                warn!(subscription_id = %stored.value.id,
                    "recorded subscription is gone from Graph (deleted or expired); recreating it");
                self.create(version, Some(RecreateReason::NotFound)).await
            }
            Some(live) => self.keep(live, stored.value, version).await,
        }
    }

    /// Acts on a lifecycle event the webhook received for `subscription_id`.
    pub async fn handle_lifecycle(
        &self,
        event: LifecycleEvent,
        subscription_id: &str,
    ) -> Result<Outcome, KeeperError> {
        self.config.validate()?;
        if event == LifecycleEvent::Missed {
            info!(subscription_id, "missed notifications: the delta reconciler catches up; nothing for the keeper to do");
            return Ok(Outcome::Ignored {
                reason: IgnoreReason::Missed,
            });
        }
        let Some(stored) = SubscriptionRecord::load(&*self.state).await? else {
            // State was lost, or the keeper never ran: the event may well be about ours, and
            // ensure() finds and adopts it (renewing also reauthorizes).
            warn!(
                subscription_id,
                ?event,
                "lifecycle event but no subscription recorded; ensuring ours"
            );
            return Ok(self.ensure().await?.outcome);
        };
        let version = Some(stored.version);
        let record = stored.value;
        if record.id != subscription_id {
            warn!(subscription_id, ours = %record.id, ?event,
                "lifecycle event for a subscription that is not ours; ignored");
            return Ok(Outcome::Ignored {
                reason: IgnoreReason::NotOurs { ours: record.id },
            });
        }
        match event {
            LifecycleEvent::ReauthorizationRequired => self.reauthorize(record, version).await,
            LifecycleEvent::SubscriptionRemoved => {
                warn!(
                    subscription_id,
                    "Graph removed our subscription; recreating it"
                );
                Ok(self
                    .create(version, Some(RecreateReason::Removed))
                    .await?
                    .outcome)
            }
            LifecycleEvent::Missed => unreachable!("handled above"),
        }
    }

    /// A live subscription we know: replace it if the configuration changed, renew it if due.
    async fn keep(
        &self,
        live: Live,
        previous: SubscriptionRecord,
        version: Option<u64>,
    ) -> Result<Ensured, KeeperError> {
        let drift = self.drift(&live);
        if !drift.is_empty() {
            warn!(subscription_id = %live.id, fields = ?drift,
                "subscription differs from the configuration; replacing it");
            // Delete first: Graph refuses a second subscription on the same resource (409).
            self.delete(&live.id).await?;
            return self
                .create(
                    version,
                    Some(RecreateReason::ConfigChanged { fields: drift }),
                )
                .await;
        }
        let now = self.clock.now();
        if live.expiration_date_time - now > self.config.renew_margin {
            let record = live.record(
                previous.created_at,
                previous.renewed_at,
                previous.reauthorized_at,
            );
            // Someone else (an administrator, a concurrent run) may have renewed it: keep the
            // record truthful, but do not write when nothing changed.
            if record != previous {
                self.save(&record, version).await?;
            }
            return Ok(Ensured {
                record,
                outcome: Outcome::Unchanged,
            });
        }
        match self.renew(&live.id, now).await? {
            Some(expiration) => {
                let mut record =
                    live.record(previous.created_at, Some(now), previous.reauthorized_at);
                record.expiration = expiration;
                self.save(&record, version).await?;
                info!(subscription_id = %record.id, expiration = %record.expiration, "subscription renewed");
                Ok(Ensured {
                    record,
                    outcome: Outcome::Renewed,
                })
            }
            None => {
                warn!(subscription_id = %live.id, "renewal answered 404; recreating the subscription");
                self.create(version, Some(RecreateReason::RenewNotFound))
                    .await
            }
        }
    }

    /// Creates a subscription (`reason` set: replacing one); on 409 adopts ours.
    async fn create(
        &self,
        version: Option<u64>,
        reason: Option<RecreateReason>,
    ) -> Result<Ensured, KeeperError> {
        let now = self.clock.now();
        let outcome = match reason {
            None => Outcome::Created,
            Some(reason) => Outcome::Recreated { reason },
        };
        match self.post_and_save(version, now, outcome).await {
            Err(conflict @ KeeperError::Graph { .. }) if conflict_status(&conflict) => {
                info!(resource = %self.config.resource,
                    "Graph already has a subscription on this resource; looking for ours to adopt");
                self.adopt(version, now, conflict).await
            }
            other => other,
        }
    }

    async fn post_and_save(
        &self,
        version: Option<u64>,
        now: DateTime<Utc>,
        outcome: Outcome,
    ) -> Result<Ensured, KeeperError> {
        const ACTION: &str = "creating the subscription";
        let c = &self.config;
        let body = json!({
            "changeType": c.change_type,
            "notificationUrl": c.notification_url,
            "lifecycleNotificationUrl": c.lifecycle_url,
            "resource": c.resource,
            "expirationDateTime": graph_time(now + c.lifetime),
            "clientState": c.client_state.expose_secret(),
            "latestSupportedTlsVersion": "v1_2",
        });
        let value = self
            .graph
            .send(Method::POST, SUBSCRIPTIONS_PATH, Some(&body))
            .await
            .map_err(|e| KeeperError::graph(ACTION, e))?;
        let record = parse_live(ACTION, value)?.record(now, None, None);
        self.save(&record, version).await?;
        info!(subscription_id = %record.id, expiration = %record.expiration, ?outcome, "subscription created");
        Ok(Ensured { record, outcome })
    }

    /// After a 409: the subscription on our resource whose notification URL is ours was made by
    /// an earlier run whose record was lost; renew and record it. Anyone else's is reported.
    async fn adopt(
        &self,
        version: Option<u64>,
        now: DateTime<Utc>,
        conflict: KeeperError,
    ) -> Result<Ensured, KeeperError> {
        let c = &self.config;
        let wanted = change_types(&c.change_type);
        let same: Vec<Live> = self
            .list()
            .await?
            .into_iter()
            .filter(|s| {
                same_resource(&s.resource, &c.resource) && change_types(&s.change_type) == wanted
            })
            .collect();
        let Some(live) = same
            .iter()
            .find(|s| s.notification_url == c.notification_url)
        else {
            return Err(match same.first() {
                Some(other) => KeeperError::Conflict {
                    existing_id: other.id.clone(),
                    existing_url: other.notification_url.clone(),
                    resource: c.resource.clone(),
                    our_url: c.notification_url.clone(),
                },
                // Not visible to us (another application's?): Graph's 409 names it.
                None => conflict,
            });
        };
        let drift = self.drift(live);
        if !drift.is_empty() {
            // Ours, but made with an older configuration (another client state, say): the
            // webhook would reject its notifications, so replace it.
            warn!(subscription_id = %live.id, fields = ?drift,
                "found our subscription with an outdated configuration; replacing it");
            self.delete(&live.id).await?;
            let outcome = Outcome::Recreated {
                reason: RecreateReason::ConfigChanged { fields: drift },
            };
            return self.post_and_save(version, now, outcome).await;
        }
        match self.renew(&live.id, now).await? {
            Some(expiration) => {
                let mut record = live.record(now, Some(now), None);
                record.expiration = expiration;
                self.save(&record, version).await?;
                info!(subscription_id = %record.id, expiration = %record.expiration,
                    "adopted our existing subscription");
                Ok(Ensured {
                    record,
                    outcome: Outcome::Adopted,
                })
            }
            // It expired between the list and the renewal; the way is free now.
            None => self.post_and_save(version, now, Outcome::Created).await,
        }
    }

    async fn reauthorize(
        &self,
        record: SubscriptionRecord,
        version: Option<u64>,
    ) -> Result<Outcome, KeeperError> {
        let now = self.clock.now();
        let path = subscription_path(&record.id, "/reauthorize")?;
        match self.graph.send(Method::POST, &path, None).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {
                warn!(subscription_id = %record.id, "reauthorization answered 404; recreating the subscription");
                return Ok(self
                    .create(version, Some(RecreateReason::ReauthorizeNotFound))
                    .await?
                    .outcome);
            }
            Err(e) => return Err(KeeperError::graph("reauthorizing the subscription", e)),
        }
        info!(subscription_id = %record.id, "subscription reauthorized");
        let mut record = SubscriptionRecord {
            reauthorized_at: Some(now),
            ..record
        };
        let mut renewed = false;
        if record.expiration - now <= self.config.renew_margin {
            match self.renew(&record.id, now).await? {
                Some(expiration) => {
                    record.expiration = expiration;
                    record.renewed_at = Some(now);
                    renewed = true;
                }
                None => {
                    return Ok(self
                        .create(version, Some(RecreateReason::RenewNotFound))
                        .await?
                        .outcome)
                }
            }
        }
        self.save(&record, version).await?;
        Ok(Outcome::Reauthorized { renewed })
    }

    /// The Graph properties in which `live` differs from the configuration.
    fn drift(&self, live: &Live) -> Vec<&'static str> {
        let c = &self.config;
        let mut fields = Vec::new();
        if !same_resource(&live.resource, &c.resource) {
            fields.push("resource");
        }
        if change_types(&live.change_type) != change_types(&c.change_type) {
            fields.push("changeType");
        }
        if live.notification_url != c.notification_url {
            fields.push("notificationUrl");
        }
        if live.lifecycle_notification_url.as_deref() != Some(c.lifecycle_url.as_str()) {
            fields.push("lifecycleNotificationUrl");
        }
        // Graph may leave clientState out of what it returns; only a value we see can differ.
        if live
            .client_state
            .as_deref()
            .is_some_and(|s| s != c.client_state.expose_secret())
        {
            fields.push("clientState");
        }
        fields
    }

    /// `GET` one subscription; `None` if Graph does not know it (deleted or expired).
    async fn get(&self, id: &str) -> Result<Option<Live>, KeeperError> {
        const ACTION: &str = "reading the subscription";
        match self
            .graph
            .send(Method::GET, &subscription_path(id, "")?, None)
            .await
        {
            Ok(value) => parse_live(ACTION, value).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(KeeperError::graph(ACTION, e)),
        }
    }

    /// Every subscription of this application, following `@odata.nextLink`.
    async fn list(&self) -> Result<Vec<Live>, KeeperError> {
        const ACTION: &str = "listing subscriptions";
        let mut next = SUBSCRIPTIONS_PATH.to_string();
        let mut all = Vec::new();
        loop {
            let mut page: Value = self
                .graph
                .get_json(&next)
                .await
                .map_err(|e| KeeperError::graph(ACTION, e))?;
            let items: Vec<Live> = serde_json::from_value(page["value"].take()).map_err(|e| {
                KeeperError::Unexpected {
                    action: ACTION,
                    detail: e.to_string(),
                }
            })?;
            all.extend(items);
            match page["@odata.nextLink"].as_str() {
                Some(link) => next = link.to_string(),
                None => return Ok(all),
            }
        }
    }

    /// `PATCH` a new expiration; `None` if Graph answers 404 (expired or deleted meanwhile).
    async fn renew(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, KeeperError> {
        let requested = now + self.config.lifetime;
        let body = json!({ "expirationDateTime": graph_time(requested) });
        match self
            .graph
            .send(Method::PATCH, &subscription_path(id, "")?, Some(&body))
            .await
        {
            // Graph answers with the subscription; trust its expiration over ours if present.
            Ok(value) => Ok(Some(
                value["expirationDateTime"]
                    .as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map_or(requested, |t| t.with_timezone(&Utc)),
            )),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(KeeperError::graph("renewing the subscription", e)),
        }
    }

    /// Deletes a subscription; one that is already gone is fine.
    async fn delete(&self, id: &str) -> Result<(), KeeperError> {
        match self
            .graph
            .send(Method::DELETE, &subscription_path(id, "")?, None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(KeeperError::graph("deleting the outdated subscription", e)),
        }
    }

    async fn save(
        &self,
        record: &SubscriptionRecord,
        version: Option<u64>,
    ) -> Result<(), KeeperError> {
        record.save(&*self.state, version).await.map_err(|e| {
            // A lost compare-and-set means another run got there first; the next run reconciles.
            warn!(subscription_id = %record.id, error = %e, "could not record the subscription");
            KeeperError::from(e)
        })?;
        Ok(())
    }
}

fn conflict_status(e: &KeeperError) -> bool {
    matches!(e, KeeperError::Graph { source, .. } if source.status() == Some(409))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_graph_ids_go_into_paths() {
        assert_eq!(
            subscription_path("7f105c7d-2dc5-4530-97cd-4e7ae6534c07", "/reauthorize").unwrap(),
            "/v1.0/subscriptions/7f105c7d-2dc5-4530-97cd-4e7ae6534c07/reauthorize"
        );
        for bad in ["", "..", "../users", "a?b", "a/b", "a%2F"] {
            assert!(subscription_path(bad, "").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_graphs_seven_digit_timestamps() {
        let live = parse_live(
            "test",
            json!({"id": "a", "expirationDateTime": "2030-01-02T03:04:05.1234567Z"}),
        )
        .unwrap();
        assert_eq!(
            graph_time(live.expiration_date_time),
            "2030-01-02T03:04:05Z"
        );
    }
}
