//! The subscription keeper: one Graph change-notification subscription on `/users`
//! (`updated,deleted`), alive and recorded.
//!
//! Graph delivers change notifications only while a subscription exists, and a subscription on
//! users lives at most 41,760 minutes. The keeper creates it, renews it well before it expires,
//! replaces it when Graph dropped it or the configuration changed, reauthorizes it when Graph
//! asks, and replaces it when the state that recorded it was lost or the client state changed.
//! The subscription is recorded in state ([`SubscriptionRecord`]) with compare-and-set writes,
//! with a fingerprint of the client state it carries: Graph never gives the client state back
//! when listing subscriptions ("not returned for security purposes"), so the keeper never relies
//! on reading it. Every step is idempotent, so a
//! run that fails half-way is repaired by the next one. Notifications lost while no subscription
//! exists are not the keeper's concern: the delta reconciler catches up.

use crate::error::{AppError, Doing};
use chrono::{DateTime, Duration, Utc};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use shadowsync_core::Clock;
use shadowsync_ports::{Graph, NewSubscription, Subscription, SubscriptionId};
use shadowsync_queue::LifecycleEvent;
use shadowsync_state::records::{subscription_key, SUBSCRIPTIONS};
use shadowsync_state::{KeyValueStore, SubscriptionRecord};
use std::fmt;
use std::sync::Arc;
use tracing::{info, warn};

/// Graph's cap on the lifetime of a subscription on `users` (just under 29 days), in minutes.
pub const MAX_LIFETIME_MINUTES: i64 =
    shadowsync_config::MAX_SUBSCRIPTION_LIFETIME.as_secs() as i64 / 60;
/// The lifetime asked for: below the cap, so that clock skew between us and Graph cannot push
/// a request over it (Graph rejects the whole request then).
pub const DEFAULT_LIFETIME_MINUTES: i64 =
    shadowsync_config::SUBSCRIPTION_LIFETIME.as_secs() as i64 / 60;
use shadowsync_config::MAX_CLIENT_STATE_CHARS;

/// The subscription the keeper keeps. Build with [`KeeperConfig::new`], then adjust fields.
/// `Debug` shows the client state as `[REDACTED]` (it is a [`SecretString`]).
#[derive(Debug, Clone)]
pub struct KeeperConfig {
    /// The webhook's URL (Graph validates it with a handshake on creation).
    pub notification_url: String,
    /// Where Graph sends lifecycle events (`reauthorizationRequired`); also validated.
    pub lifecycle_url: String,
    /// Shared secret Graph echoes in every notification; the webhook checks it.
    pub client_state: SecretString,
    /// Default `/users`.
    pub resource: String,
    /// Default `updated,deleted` (the only change types Graph supports on users).
    pub change_type: String,
    /// Requested lifetime on create and renew. Default 41,000 minutes.
    pub lifetime: Duration,
    /// Renew when the subscription expires within this. Default 3 days.
    pub renew_margin: Duration,
}

impl KeeperConfig {
    pub fn new(
        notification_url: impl Into<String>,
        lifecycle_url: impl Into<String>,
        client_state: SecretString,
    ) -> Self {
        KeeperConfig {
            notification_url: notification_url.into(),
            lifecycle_url: lifecycle_url.into(),
            client_state,
            resource: "/users".into(),
            change_type: "updated,deleted".into(),
            lifetime: Duration::minutes(DEFAULT_LIFETIME_MINUTES),
            // The configuration's default (72 hours): room for several failed checks.
            renew_margin: Duration::seconds(
                shadowsync_config::SubscriptionsSection::default()
                    .renew_margin
                    .as_secs() as i64,
            ),
        }
    }

    /// Rejects configurations Graph would refuse, or that would make the keeper renew on every
    /// run. Messages never contain the client state.
    pub fn validate(&self) -> Result<(), AppError> {
        let bad = |m: String| Err(AppError::Config(m));
        for (what, raw) in [
            ("notification_url", &self.notification_url),
            ("lifecycle_url", &self.lifecycle_url),
        ] {
            let scheme = raw.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
            if !matches!(scheme.as_deref(), Some("https" | "http")) {
                return bad(format!("{what} must be an https URL, got {raw:?}"));
            }
        }
        let state = self.client_state.expose_secret();
        if state.is_empty() {
            // Without it the webhook could not tell Graph's notifications from forged ones.
            return bad("client_state is empty".into());
        }
        if state.chars().count() > MAX_CLIENT_STATE_CHARS {
            return bad(format!(
                "client_state is longer than Graph's limit of {MAX_CLIENT_STATE_CHARS} characters"
            ));
        }
        if self.resource.trim_matches('/').is_empty() {
            return bad("resource is empty".into());
        }
        if change_types(&self.change_type).is_empty() {
            return bad("change_type is empty".into());
        }
        if self.lifetime <= Duration::zero()
            || self.lifetime > Duration::minutes(MAX_LIFETIME_MINUTES)
        {
            return bad(format!(
                "lifetime must be between 1 and {MAX_LIFETIME_MINUTES} minutes, got {} minutes",
                self.lifetime.num_minutes()
            ));
        }
        if self.renew_margin < Duration::zero() || self.renew_margin >= self.lifetime {
            return bad(format!(
                "renew_margin ({} minutes) must be at least 0 and shorter than the lifetime ({} minutes)",
                self.renew_margin.num_minutes(),
                self.lifetime.num_minutes()
            ));
        }
        Ok(())
    }
}

/// `"updated, deleted"` → `["deleted", "updated"]`: Graph may reorder or respace the list.
pub(crate) fn change_types(raw: &str) -> Vec<String> {
    let mut v: Vec<String> = raw
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// `/users`, `users` and `Users` name the same resource.
pub(crate) fn same_resource(a: &str, b: &str) -> bool {
    a.trim_matches('/')
        .eq_ignore_ascii_case(b.trim_matches('/'))
}

/// Keeps the subscription described by `config` alive in Graph and recorded in `state`.
/// Meant to run on a schedule ([`SubscriptionKeeper::ensure`]) and on lifecycle events
/// ([`SubscriptionKeeper::handle_lifecycle`]).
pub struct SubscriptionKeeper {
    pub graph: Arc<dyn Graph>,
    pub state: Arc<dyn KeyValueStore>,
    pub config: KeeperConfig,
    /// Decides when renewal is due; must agree with Graph's clock (normally [`Graph::clock`]).
    pub clock: Arc<dyn Clock>,
}

impl fmt::Debug for SubscriptionKeeper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionKeeper")
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
    /// notification URL, e.g. after state was lost). Which client state it carries is unknown
    /// (Graph does not say), so it was replaced by one carrying ours, and recorded.
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
    /// The live subscription differs from the configuration in these Graph properties
    /// (`clientState`: the one recorded is not the configured one, as after a rotation).
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

/// Groups of the scope tree that get a subscription of their own. Graph allows 100
/// subscriptions on directory resources (users and groups together) per application and tenant
/// (change-notifications-api-overview); half of them leaves room for the `/users` one and for
/// other deployments of the same application. Groups past it are read every interval.
pub const MAX_GROUP_SUBSCRIPTIONS: usize = 50;

/// What [`SubscriptionKeeper::ensure_groups`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupSubscriptions {
    /// Groups with a live subscription now.
    pub kept: usize,
    /// Subscriptions of groups that left the tree, deleted.
    pub removed: usize,
    /// Groups of the tree past [`MAX_GROUP_SUBSCRIPTIONS`]: read every interval instead.
    pub over_quota: usize,
    /// Groups whose subscription could not be ensured now (logged; the next check retries).
    pub failed: usize,
}

/// The result of [`SubscriptionKeeper::ensure`]: the subscription as recorded, and what was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ensured {
    pub record: SubscriptionRecord,
    pub outcome: Outcome,
}

/// A fingerprint of a client state, to know which one a subscription carries without keeping
/// the secret in state: SHA-256 over a domain tag and the secret (at least 16 random
/// characters, so the digest tells nothing usable).
pub fn client_state_fingerprint(client_state: &SecretString) -> String {
    let mut h = Sha256::new();
    h.update(b"shadowsync clientState v1\0");
    h.update(client_state.expose_secret().as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A recorded id as a [`SubscriptionId`]; a corrupt record's id is refused before it can
/// reach a request.
fn recorded_id(record: &SubscriptionRecord) -> Result<SubscriptionId, AppError> {
    SubscriptionId::parse(&record.id).map_err(|e| AppError::Unexpected {
        action: "reading the recorded subscription",
        detail: e.to_string(),
    })
}

impl SubscriptionKeeper {
    /// Makes sure our subscription exists, matches the configuration and is not about to
    /// expire: creates, renews, recreates or adopts as needed, and records the result.
    pub async fn ensure(&self) -> Result<Ensured, AppError> {
        self.config.validate()?;
        let Some(stored) = SubscriptionRecord::load_for(&*self.state, &self.key()).await? else {
            info!("no subscription recorded; creating one");
            return self.create(None, None).await;
        };
        let version = Some(stored.version);
        let id = recorded_id(&stored.value)?;
        match self
            .graph
            .subscription(&id)
            .await
            .doing("reading the subscription")?
        {
            None => {
                warn!(subscription_id = %id,
                    "recorded subscription is gone from Graph (deleted or expired); recreating it");
                self.create(version, Some(RecreateReason::NotFound)).await
            }
            Some(live) => self.keep(live, stored.value, version).await,
        }
    }

    /// A subscription on every group of the scope tree as recorded in state (up to
    /// [`MAX_GROUP_SUBSCRIPTIONS`]), and none on a group that left it. One group failing
    /// stops no other.
    pub async fn ensure_groups(&self) -> Result<GroupSubscriptions, AppError> {
        let tree = crate::scope::recorded_groups(&*self.state).await?;
        let mut report = GroupSubscriptions::default();
        let mut wanted = std::collections::BTreeSet::new();
        for (i, group) in tree.iter().enumerate() {
            if i >= MAX_GROUP_SUBSCRIPTIONS {
                report.over_quota += 1;
                continue;
            }
            let resource = format!("/groups/{group}");
            wanted.insert(subscription_key(&resource));
            match self.for_resource(&resource).ensure().await {
                Ok(_) => report.kept += 1,
                Err(e) => {
                    warn!(%group, error = %e, "could not ensure the group's subscription");
                    report.failed += 1;
                }
            }
        }
        if report.over_quota > 0 {
            warn!(over = report.over_quota, max = MAX_GROUP_SUBSCRIPTIONS,
                "the scope tree has more groups than subscriptions are kept for: those are read every interval");
        }
        for (key, version, record) in self.group_subscriptions().await? {
            if wanted.contains(&key) {
                continue;
            }
            self.delete(&recorded_id(&record)?).await?;
            match self.state.delete(SUBSCRIPTIONS, &key, Some(version)).await {
                Err(e) if e.is_conflict() => {}
                other => other?,
            }
            info!(subscription_id = %record.id, resource = %record.resource, "the group left the scope tree: its subscription deleted");
            report.removed += 1;
        }
        Ok(report)
    }

    /// Acts on a lifecycle event for `subscription_id`, whichever subscription it names: the
    /// one on users, or a scope group's.
    pub async fn handle_any_lifecycle(
        &self,
        event: LifecycleEvent,
        subscription_id: &str,
    ) -> Result<Outcome, AppError> {
        let outcome = self.handle_lifecycle(event, subscription_id).await?;
        if !matches!(
            outcome,
            Outcome::Ignored {
                reason: IgnoreReason::NotOurs { .. }
            }
        ) {
            return Ok(outcome);
        }
        let groups = self.group_subscriptions().await?;
        match groups.into_iter().find(|(_, _, r)| r.id == subscription_id) {
            Some((_, _, record)) => {
                self.for_resource(&record.resource)
                    .handle_lifecycle(event, subscription_id)
                    .await
            }
            None => Ok(outcome),
        }
    }

    /// The scope groups' subscriptions as recorded: key, version and record (an unreadable
    /// record is skipped: the group's next check replaces it).
    async fn group_subscriptions(
        &self,
    ) -> Result<Vec<(String, u64, SubscriptionRecord)>, AppError> {
        let mut found = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .state
                .scan(SUBSCRIPTIONS, after.as_deref(), 500)
                .await?;
            let Some((last, _)) = page.last() else {
                return Ok(found);
            };
            after = Some(last.clone());
            for (key, raw) in page {
                if !key.starts_with("group:") {
                    continue;
                }
                if let Ok(record) = serde_json::from_slice::<SubscriptionRecord>(&raw.value) {
                    found.push((key, raw.version, record));
                }
            }
        }
    }

    /// Acts on a lifecycle event the webhook received for `subscription_id`.
    pub async fn handle_lifecycle(
        &self,
        event: LifecycleEvent,
        subscription_id: &str,
    ) -> Result<Outcome, AppError> {
        self.config.validate()?;
        if event == LifecycleEvent::Missed {
            info!(subscription_id, "missed notifications: the delta reconciler catches up; nothing for the keeper to do");
            return Ok(Outcome::Ignored {
                reason: IgnoreReason::Missed,
            });
        }
        let Some(stored) = SubscriptionRecord::load_for(&*self.state, &self.key()).await? else {
            // State was lost, or the keeper never ran: the event may well be about ours, and
            // ensure() finds it and replaces it with one it knows.
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
        live: Subscription,
        previous: SubscriptionRecord,
        version: Option<u64>,
    ) -> Result<Ensured, AppError> {
        let mut drift = self.drift(&live);
        // Graph may not give the client state back: the record says which one it carries (an
        // older record, without a fingerprint, counts as unknown).
        if previous.client_state_sha256.as_deref() != Some(self.fingerprint().as_str()) {
            drift.push("clientState");
        }
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
            let record = self.record_of(
                &live,
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
                let mut record = self.record_of(
                    &live,
                    previous.created_at,
                    Some(now),
                    previous.reauthorized_at,
                );
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
    ) -> Result<Ensured, AppError> {
        let now = self.clock.now();
        let outcome = match reason {
            None => Outcome::Created,
            Some(reason) => Outcome::Recreated { reason },
        };
        match self.post_and_save(version, now, outcome).await {
            Err(conflict)
                if conflict
                    .graph_error()
                    .is_some_and(|e| e.status() == Some(409)) =>
            {
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
    ) -> Result<Ensured, AppError> {
        let c = &self.config;
        let request = NewSubscription {
            resource: c.resource.clone(),
            change_type: c.change_type.clone(),
            notification_url: c.notification_url.clone(),
            lifecycle_url: c.lifecycle_url.clone(),
            client_state: c.client_state.clone(),
            expiration: now + c.lifetime,
        };
        let live = self
            .graph
            .create_subscription(&request)
            .await
            .doing("creating the subscription")?;
        let record = self.record_of(&live, now, None, None);
        self.save(&record, version).await?;
        info!(subscription_id = %record.id, expiration = %record.expiration, ?outcome, "subscription created");
        Ok(Ensured { record, outcome })
    }

    /// After a 409: the subscription on our resource whose notification URL is ours was made by
    /// an earlier run whose record was lost. Which client state it carries cannot be known
    /// (Graph does not return it), and one we do not know would make the webhook drop every
    /// notification while answering 202: replace it with one carrying ours. Anyone else's is
    /// reported, never touched.
    async fn adopt(
        &self,
        version: Option<u64>,
        now: DateTime<Utc>,
        conflict: AppError,
    ) -> Result<Ensured, AppError> {
        let c = &self.config;
        let wanted = change_types(&c.change_type);
        let same: Vec<Subscription> = self
            .graph
            .subscriptions()
            .await
            .doing("listing subscriptions")?
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
                Some(other) => AppError::SubscriptionConflict {
                    existing_id: other.id.to_string(),
                    existing_url: other.notification_url.clone(),
                    resource: c.resource.clone(),
                    our_url: c.notification_url.clone(),
                },
                // Not visible to us (another application's?): Graph's 409 names it.
                None => conflict,
            });
        };
        warn!(subscription_id = %live.id,
            "found our subscription without a record of its client state; replacing it");
        self.delete(&live.id).await?;
        self.post_and_save(version, now, Outcome::Adopted).await
    }

    async fn reauthorize(
        &self,
        record: SubscriptionRecord,
        version: Option<u64>,
    ) -> Result<Outcome, AppError> {
        let now = self.clock.now();
        let id = recorded_id(&record)?;
        let found = self
            .graph
            .reauthorize_subscription(&id)
            .await
            .doing("reauthorizing the subscription")?;
        if !found {
            warn!(subscription_id = %record.id, "reauthorization answered 404; recreating the subscription");
            return Ok(self
                .create(version, Some(RecreateReason::ReauthorizeNotFound))
                .await?
                .outcome);
        }
        info!(subscription_id = %record.id, "subscription reauthorized");
        let mut record = SubscriptionRecord {
            reauthorized_at: Some(now),
            ..record
        };
        let mut renewed = false;
        if record.expiration - now <= self.config.renew_margin {
            match self.renew(&id, now).await? {
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
    fn drift(&self, live: &Subscription) -> Vec<&'static str> {
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
        fields
    }

    fn fingerprint(&self) -> String {
        client_state_fingerprint(&self.config.client_state)
    }

    /// Where this keeper's subscription is recorded.
    fn key(&self) -> String {
        subscription_key(&self.config.resource)
    }

    /// The same keeper for another resource (a group of the scope tree): same Graph, state,
    /// URLs, client state and clock.
    pub fn for_resource(&self, resource: &str) -> SubscriptionKeeper {
        SubscriptionKeeper {
            graph: self.graph.clone(),
            state: self.state.clone(),
            config: KeeperConfig {
                resource: resource.to_string(),
                ..self.config.clone()
            },
            clock: self.clock.clone(),
        }
    }

    fn record_of(
        &self,
        live: &Subscription,
        created_at: DateTime<Utc>,
        renewed_at: Option<DateTime<Utc>>,
        reauthorized_at: Option<DateTime<Utc>>,
    ) -> SubscriptionRecord {
        SubscriptionRecord {
            id: live.id.to_string(),
            resource: live.resource.clone(),
            change_type: live.change_type.clone(),
            notification_url: live.notification_url.clone(),
            lifecycle_url: live.lifecycle_notification_url.clone(),
            client_state_sha256: Some(self.fingerprint()),
            expiration: live.expiration_date_time,
            created_at,
            renewed_at,
            reauthorized_at,
        }
    }

    /// A new expiration; `None` if Graph no longer knows the subscription.
    async fn renew(
        &self,
        id: &SubscriptionId,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, AppError> {
        self.graph
            .renew_subscription(id, now + self.config.lifetime)
            .await
            .doing("renewing the subscription")
    }

    async fn delete(&self, id: &SubscriptionId) -> Result<(), AppError> {
        self.graph
            .delete_subscription(id)
            .await
            .doing("deleting the outdated subscription")
    }

    async fn save(
        &self,
        record: &SubscriptionRecord,
        version: Option<u64>,
    ) -> Result<(), AppError> {
        record
            .save_for(&*self.state, &self.key(), version)
            .await
            .map_err(|e| {
            // A lost compare-and-set means another run got there first; the next run reconciles.
            warn!(subscription_id = %record.id, error = %e, "could not record the subscription");
            AppError::from(e)
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> KeeperConfig {
        KeeperConfig::new(
            "https://hooks.example.com/notify",
            "https://hooks.example.com/lifecycle",
            SecretString::from("s3cret-client-state"),
        )
    }

    #[test]
    fn defaults_are_valid_and_under_graphs_cap() {
        let c = config();
        c.validate().unwrap();
        assert_eq!(c.resource, "/users");
        assert_eq!(c.change_type, "updated,deleted");
        assert!(c.lifetime < Duration::minutes(MAX_LIFETIME_MINUTES));
        assert_eq!(c.renew_margin, Duration::days(3));
    }

    #[test]
    fn rejects_bad_settings_without_leaking_the_client_state() {
        let mut c = config();
        c.lifetime = Duration::minutes(MAX_LIFETIME_MINUTES + 1);
        assert!(matches!(c.validate(), Err(AppError::Config(_))));
        let mut c = config();
        c.renew_margin = c.lifetime;
        assert!(c.validate().is_err());
        let mut c = config();
        c.notification_url = "ftp://x/y".into();
        assert!(c.validate().is_err());
        let mut c = config();
        c.client_state = SecretString::from("");
        assert!(c.validate().is_err());
        let mut c = config();
        c.client_state = SecretString::from("x".repeat(129));
        let e = c.validate().unwrap_err();
        assert!(!e.to_string().contains("xxxx"));
        assert!(!e.is_retryable());
    }

    #[test]
    fn debug_hides_the_client_state() {
        let s = format!("{:?}", config());
        assert!(s.contains("hooks.example.com"));
        assert!(!s.contains("s3cret"), "{s}");
    }

    #[test]
    fn normalises_change_types_and_resources() {
        assert_eq!(
            change_types("updated, deleted,updated"),
            change_types("deleted,updated")
        );
        assert!(same_resource("/users", "Users"));
        assert!(!same_resource("/users", "/users/x"));
    }
}
