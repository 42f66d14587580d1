//! The records shadowsync keeps, and where.

use crate::{get_json, put_json, KeyValueStore, StateError, Versioned};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Table of per-guest records, keyed by objectId.
pub const GUESTS: &str = "guests";

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

/// What shadowsync last did for one guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRecord {
    pub object_id: String,
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
        object_id: &str,
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
