//! The records shadowsync keeps, and where. Each is an index or a checkpoint: the truth is in
//! Graph and in AD's anchors, and every record can be rebuilt from them.

use crate::{get_json, put_json, KeyValueStore, StateError, Versioned};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shadowsync_core::ObjectId;

/// Table of per-guest records, keyed by objectId.
pub const GUESTS: &str = "guests";
/// Table of the subscriptions the keeper maintains.
pub const SUBSCRIPTIONS: &str = "subscriptions";
/// Key of the one subscription on users in [`SUBSCRIPTIONS`].
pub const USERS_KEY: &str = "users";
/// Table of the reconciler's checkpoints.
pub const CHECKPOINTS: &str = "checkpoints";
/// Key of the users delta checkpoint in [`CHECKPOINTS`].
pub const USERS_DELTA: &str = "users_delta";
/// Key of the last sweep's time in [`CHECKPOINTS`].
pub const LAST_SWEEP: &str = "last_sweep";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Enabled,
    Disabled,
    Deleted,
    /// Nothing was done; `conflict` says why.
    Conflict,
    /// The guest is out of scope and never had an account.
    NotProvisioned,
}

impl AccountStatus {
    /// The name used in reports (`not_provisioned`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
            Self::Deleted => "deleted",
            Self::Conflict => "conflict",
            Self::NotProvisioned => "not_provisioned",
        }
    }
}

/// What shadowsync last did for one guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRecord {
    pub object_id: ObjectId,
    pub dn: Option<String>,
    pub object_guid: Option<String>,
    pub sam_account_name: Option<String>,
    pub status: AccountStatus,
    /// When shadowsync disabled the account; retention counts from here.
    pub disabled_at: Option<DateTime<Utc>>,
    /// [`shadowsync_core`]'s fingerprint of the state last applied.
    pub applied_fingerprint: Option<String>,
    pub conflict: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl GuestRecord {
    pub async fn load(
        store: &dyn KeyValueStore,
        object_id: &ObjectId,
    ) -> Result<Option<Versioned<GuestRecord>>, StateError> {
        get_json(store, GUESTS, object_id).await
    }

    /// Saves with compare-and-set: `expected` is the version loaded (`None` if there was none).
    pub async fn save(
        &self,
        store: &dyn KeyValueStore,
        expected: Option<u64>,
    ) -> Result<u64, StateError> {
        put_json(store, GUESTS, &self.object_id, self, expected).await
    }
}

/// What the subscription keeper last knew about its subscription. The client state is
/// deliberately not stored: it is a secret, and the live subscription is compared with the
/// configuration instead.
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

/// Where the next users delta round starts ([`CHECKPOINTS`] / [`USERS_DELTA`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaCheckpoint {
    pub delta_link: String,
    /// When the round that produced `delta_link` completed.
    pub completed_at: DateTime<Utc>,
    /// When the last full round completed.
    pub full_sync_at: DateTime<Utc>,
}

/// When the managed OUs were last swept ([`CHECKPOINTS`] / [`LAST_SWEEP`]): recorded so that
/// every host keeps the same schedule across restarts and invocations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSweep {
    pub at: DateTime<Utc>,
}
