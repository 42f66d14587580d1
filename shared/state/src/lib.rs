//! State: checkpoints, the subscription registry and per-guest records, in a key-value store with
//! compare-and-set writes. State is an index and a checkpoint, never the truth: converge works
//! from Graph and the AD anchor alone, so a lost store is rebuilt as guests are converged again.

pub mod conformance;
mod embedded;
mod memory;
pub mod records;

pub use embedded::EmbeddedStore;
pub use memory::MemoryStore;
pub use records::{
    AccountStatus, DeltaCheckpoint, DeltaResumePoint, Destructive, GraphAccessDenied, GuestRecord,
    HeldChange, LastSweep, PartnerRecord, PartnerStatus, PartnerWatermark, RecordedIdentity,
    SafetyGuard, ScopeGroupRecord, SubscriptionRecord, Tripped,
};
/// The redb version the embedded store uses, for crates sharing its database.
pub use redb;

use async_trait::async_trait;
use thiserror::Error;

/// A value and the version it was written as. Versions start at 1 and grow by one per write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}

#[derive(Debug, Error)]
pub enum StateError {
    /// The compare-and-set lost: someone else wrote the key first. Re-read and retry.
    #[error("{table}/{key} was changed concurrently (expected version {expected:?})")]
    Conflict {
        table: String,
        key: String,
        expected: Option<u64>,
    },
    #[error("record {table}/{key} cannot be read: {reason}")]
    Corrupt {
        table: String,
        key: String,
        reason: String,
    },
    /// The store failed; `message` is the cause in words (with the context a bare cause lacks),
    /// `source` the cause itself.
    #[error("state store: {message}")]
    Storage {
        message: String,
        #[source]
        source: BoxError,
    },
    /// The embedded store file is open in another process (redb allows one).
    #[error("{0} is in use by another process (is `shadowsync serve` running?)")]
    InUse(String),
}

/// A boxed error cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl StateError {
    /// A lost compare-and-set on `table`/`key`.
    pub fn conflict(table: &str, key: &str, expected: Option<u64>) -> Self {
        Self::Conflict {
            table: table.into(),
            key: key.into(),
            expected,
        }
    }

    /// A storage failure, described by the cause's own message.
    pub fn storage(source: impl Into<BoxError>) -> Self {
        let source = source.into();
        Self::Storage {
            message: source.to_string(),
            source,
        }
    }

    /// Can the same operation succeed later without anyone changing anything? A lost
    /// compare-and-set means someone else wrote first: read again and retry. A storage failure
    /// is the store's to recover from. A corrupt record or a store held by another process
    /// stays as it is until a person acts.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Conflict { .. } | Self::Storage { .. } => true,
            Self::Corrupt { .. } | Self::InUse(_) => false,
        }
    }

    /// A compare-and-set lost to another writer.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }
}

/// A key-value store in named tables. Every write is a compare-and-set on the version, so two
/// functions working on the same key cannot silently overwrite each other.
#[async_trait]
pub trait KeyValueStore: Send + Sync {
    async fn get(&self, table: &str, key: &str) -> Result<Option<Versioned<Vec<u8>>>, StateError>;

    /// Writes `value` if the key is at version `expected` (`None`: the key must not exist).
    /// Returns the new version.
    async fn put(
        &self,
        table: &str,
        key: &str,
        value: Vec<u8>,
        expected: Option<u64>,
    ) -> Result<u64, StateError>;

    /// Deletes the key if it is at version `expected`. Deleting a missing key with
    /// `expected == None` succeeds.
    async fn delete(&self, table: &str, key: &str, expected: Option<u64>)
        -> Result<(), StateError>;

    /// Up to `limit` entries in key order, starting after `start_after`.
    async fn scan(
        &self,
        table: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Versioned<Vec<u8>>)>, StateError>;
}

/// Reads a JSON record.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    store: &dyn KeyValueStore,
    table: &str,
    key: &str,
) -> Result<Option<Versioned<T>>, StateError> {
    let Some(raw) = store.get(table, key).await? else {
        return Ok(None);
    };
    let value = serde_json::from_slice(&raw.value).map_err(|e| StateError::Corrupt {
        table: table.into(),
        key: key.into(),
        reason: e.to_string(),
    })?;
    Ok(Some(Versioned {
        value,
        version: raw.version,
    }))
}

/// Every key `table` holds, read a page at a time.
pub async fn keys(store: &dyn KeyValueStore, table: &str) -> Result<Vec<String>, StateError> {
    const PAGE: usize = 500;
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.scan(table, after.as_deref(), PAGE).await?;
        let Some((last, _)) = page.last() else {
            return Ok(keys);
        };
        after = Some(last.clone());
        keys.extend(page.into_iter().map(|(key, _)| key));
    }
}

/// How many keys `table` holds, a page at a time.
pub async fn count_keys(store: &dyn KeyValueStore, table: &str) -> Result<usize, StateError> {
    const PAGE: usize = 500;
    let mut count = 0;
    let mut after: Option<String> = None;
    loop {
        let page = store.scan(table, after.as_deref(), PAGE).await?;
        let Some((last, _)) = page.last() else {
            return Ok(count);
        };
        after = Some(last.clone());
        count += page.len();
    }
}

/// Writes a JSON record with compare-and-set on `expected`.
pub async fn put_json<T: serde::Serialize>(
    store: &dyn KeyValueStore,
    table: &str,
    key: &str,
    value: &T,
    expected: Option<u64>,
) -> Result<u64, StateError> {
    let bytes = serde_json::to_vec(value).map_err(StateError::storage)?;
    store.put(table, key, bytes, expected).await
}
