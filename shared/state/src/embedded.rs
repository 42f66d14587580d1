//! The embedded store: one redb file, crash-safe (redb commits are durable and atomic).

use crate::{KeyValueStore, StateError, Versioned};
use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition, TableError};
use std::path::Path;
use std::sync::Arc;
#[cfg(unix)]
use tracing::warn;

#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedStore")
    }
}

fn storage(e: impl Into<crate::BoxError>) -> StateError {
    StateError::storage(e)
}

/// Stored as the version (8 bytes, big-endian) followed by the value.
fn encode(version: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(value);
    out
}

fn decode(raw: &[u8]) -> Versioned<Vec<u8>> {
    let (version, value) = raw.split_at(8.min(raw.len()));
    let mut v = [0u8; 8];
    v[..version.len()].copy_from_slice(version);
    Versioned {
        value: value.to_vec(),
        version: u64::from_be_bytes(v),
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store file; the parent directory is created if needed. The file
    /// is its owner's only (0600 on Unix), an existing one included.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StateError> {
        let path = path.as_ref();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(storage)?;
        }
        let in_file = |e: std::io::Error| StateError::Storage {
            message: format!("{}: {e}", path.display()),
            source: e.into(),
        };
        owner_only(path).map_err(in_file)?;
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                StateError::InUse(path.display().to_string())
            }
            e => StateError::Storage {
                message: format!("{}: {e}", path.display()),
                source: e.into(),
            },
        })?;
        Ok(Self { db: Arc::new(db) })
    }

    /// A store in memory, gone when dropped: for tests of the application, which need the
    /// embedded store's exact behaviour (and its queue) without a file.
    pub fn in_memory() -> Result<Self, StateError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(storage)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// The underlying database, so that the embedded queue can keep its tables in the same file
    /// (redb allows one open handle per file).
    pub fn database(&self) -> Arc<Database> {
        self.db.clone()
    }

    /// Runs blocking redb work off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(storage)?
    }
}

/// The store holds every guest's record and the queue's jobs: nobody but its owner (the
/// service account) has any business reading them.
#[cfg(unix)]
const OWNER_ONLY: u32 = 0o600;

/// Creates the file as 0600 before redb opens it, so that it never exists with the umask's
/// wider mode, and tightens an existing file that others may read (an older version, a copy
/// restored by hand).
#[cfg(unix)]
fn owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .mode(OWNER_ONLY)
        .open(path)?;
    let mode = file.metadata()?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(OWNER_ONLY))
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("others may read it (mode {mode:o}) and it cannot be restricted to its owner: {e}"),
                )
            })?;
        warn!(
            path = %path.display(),
            was = %format_args!("{mode:o}"),
            "the state store could be read by others; restricted it to its owner (600)"
        );
    }
    Ok(())
}

/// Elsewhere the file inherits its directory's access control list.
#[cfg(not(unix))]
fn owner_only(_: &Path) -> std::io::Result<()> {
    Ok(())
}

type ValueTable<'a> = TableDefinition<'a, &'static str, &'static [u8]>;

/// A read-only view of `table`, or `None` when it was never written.
fn read_table(
    db: &Database,
    table: &str,
) -> Result<Option<redb::ReadOnlyTable<&'static str, &'static [u8]>>, StateError> {
    let tx = db.begin_read().map_err(storage)?;
    match tx.open_table(ValueTable::new(table)) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(storage(e)),
    }
}

/// One compare-and-set write: `change` runs only if `key` is at version `expected`, and gets the
/// table and the current version; the transaction commits if it succeeds.
fn write_checked<T>(
    db: &Database,
    table: &str,
    key: &str,
    expected: Option<u64>,
    change: impl FnOnce(
        &mut redb::Table<&'static str, &'static [u8]>,
        Option<u64>,
    ) -> Result<T, StateError>,
) -> Result<T, StateError> {
    let tx = db.begin_write().map_err(storage)?;
    let result = {
        let mut t = tx.open_table(ValueTable::new(table)).map_err(storage)?;
        let current = t
            .get(key)
            .map_err(storage)?
            .map(|v| decode(v.value()).version);
        if current != expected {
            return Err(StateError::conflict(table, key, expected));
        }
        change(&mut t, current)?
    };
    tx.commit().map_err(storage)?;
    Ok(result)
}

#[async_trait]
impl KeyValueStore for EmbeddedStore {
    async fn get(&self, table: &str, key: &str) -> Result<Option<Versioned<Vec<u8>>>, StateError> {
        let (table, key) = (table.to_string(), key.to_string());
        self.blocking(move |db| {
            let Some(t) = read_table(db, &table)? else {
                return Ok(None);
            };
            Ok(t.get(key.as_str())
                .map_err(storage)?
                .map(|v| decode(v.value())))
        })
        .await
    }

    async fn put(
        &self,
        table: &str,
        key: &str,
        value: Vec<u8>,
        expected: Option<u64>,
    ) -> Result<u64, StateError> {
        let (table, key) = (table.to_string(), key.to_string());
        self.blocking(move |db| {
            write_checked(db, &table, &key, expected, |t, current| {
                let version = current.unwrap_or(0) + 1;
                t.insert(key.as_str(), encode(version, &value).as_slice())
                    .map_err(storage)?;
                Ok(version)
            })
        })
        .await
    }

    async fn delete(
        &self,
        table: &str,
        key: &str,
        expected: Option<u64>,
    ) -> Result<(), StateError> {
        let (table, key) = (table.to_string(), key.to_string());
        self.blocking(move |db| {
            write_checked(db, &table, &key, expected, |t, _| {
                t.remove(key.as_str()).map_err(storage)?;
                Ok(())
            })
        })
        .await
    }

    async fn scan(
        &self,
        table: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Versioned<Vec<u8>>)>, StateError> {
        let table = table.to_string();
        let start_after = start_after.map(str::to_string);
        self.blocking(move |db| {
            let Some(t) = read_table(db, &table)? else {
                return Ok(vec![]);
            };
            let range = match &start_after {
                Some(after) => t.range::<&str>((
                    std::ops::Bound::Excluded(after.as_str()),
                    std::ops::Bound::Unbounded,
                )),
                None => t.range::<&str>(..),
            }
            .map_err(storage)?;
            let mut out = Vec::new();
            for entry in range.take(limit) {
                let (k, v) = entry.map_err(storage)?;
                out.push((k.value().to_string(), decode(v.value())));
            }
            Ok(out)
        })
        .await
    }
}
