//! The subscription registry in state.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shadowsync_state::{get_json, put_json, KeyValueStore, StateError, Versioned};

/// Table of subscriptions the keeper maintains.
pub const SUBSCRIPTIONS: &str = "subscriptions";
/// The key of the one subscription on users.
pub const USERS_KEY: &str = "users";

/// What the keeper last knew about its subscription. The client state is deliberately not
/// stored: it is a secret, and the live subscription is compared with the configuration instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// Graph's subscription id.
    pub id: String,
    pub resource: String,
    pub change_type: String,
    pub notification_url: String,
    pub lifecycle_url: Option<String>,
    /// Expiry as Graph last reported it.
    pub expiration: DateTime<Utc>,
    /// When the keeper created (or adopted) this subscription.
    pub created_at: DateTime<Utc>,
    pub renewed_at: Option<DateTime<Utc>>,
    pub reauthorized_at: Option<DateTime<Utc>>,
}

impl SubscriptionRecord {
    pub async fn load(
        store: &dyn KeyValueStore,
    ) -> Result<Option<Versioned<SubscriptionRecord>>, StateError> {
        get_json(store, SUBSCRIPTIONS, USERS_KEY).await
    }

    /// Saves with compare-and-set: `expected` is the version loaded (`None` if there was none).
    pub async fn save(
        &self,
        store: &dyn KeyValueStore,
        expected: Option<u64>,
    ) -> Result<u64, StateError> {
        put_json(store, SUBSCRIPTIONS, USERS_KEY, self, expected).await
    }
}
