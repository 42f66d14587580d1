//! A store in the process's memory: the embedded store's behaviour (versions from 1, one more
//! per write, compare-and-set on every write, scans in key order) without redb's transactions
//! or a blocking thread per call. For what one process keeps for itself and may lose with it,
//! such as `serve`'s marks of waiting jobs; gone when dropped.

use crate::{KeyValueStore, StateError, Versioned};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

type Table = BTreeMap<String, Versioned<Vec<u8>>>;

#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: Mutex<HashMap<String, Table>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn tables(&self) -> MutexGuard<'_, HashMap<String, Table>> {
        // Held only for map operations that cannot leave a table half changed: a poisoned lock
        // has consistent contents.
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl KeyValueStore for MemoryStore {
    async fn get(&self, table: &str, key: &str) -> Result<Option<Versioned<Vec<u8>>>, StateError> {
        Ok(self.tables().get(table).and_then(|t| t.get(key)).cloned())
    }

    async fn put(
        &self,
        table: &str,
        key: &str,
        value: Vec<u8>,
        expected: Option<u64>,
    ) -> Result<u64, StateError> {
        let mut tables = self.tables();
        let t = match tables.get_mut(table) {
            Some(t) => t,
            None => tables.entry(table.to_string()).or_default(),
        };
        let current = t.get(key).map(|v| v.version);
        if current != expected {
            return Err(StateError::conflict(table, key, expected));
        }
        let version = current.unwrap_or(0) + 1;
        t.insert(key.to_string(), Versioned { value, version });
        Ok(version)
    }

    async fn delete(
        &self,
        table: &str,
        key: &str,
        expected: Option<u64>,
    ) -> Result<(), StateError> {
        let mut tables = self.tables();
        let Some(t) = tables.get_mut(table) else {
            return match expected {
                None => Ok(()),
                Some(_) => Err(StateError::conflict(table, key, expected)),
            };
        };
        if t.get(key).map(|v| v.version) != expected {
            return Err(StateError::conflict(table, key, expected));
        }
        t.remove(key);
        Ok(())
    }

    async fn scan(
        &self,
        table: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Versioned<Vec<u8>>)>, StateError> {
        let tables = self.tables();
        let Some(t) = tables.get(table) else {
            return Ok(Vec::new());
        };
        let start = start_after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(t.range::<str, _>((start, Bound::Unbounded))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn conforms() {
        crate::conformance::check(&MemoryStore::new()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_create_of_a_key_wins_among_concurrent_ones() {
        let store = Arc::new(MemoryStore::new());
        let tries = (0..64).map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.put("t", "k", vec![i], None).await })
        });
        let mut won = 0;
        for t in tries {
            match t.await.unwrap() {
                Ok(version) => {
                    assert_eq!(version, 1);
                    won += 1;
                }
                Err(e) => assert!(e.is_conflict(), "{e}"),
            }
        }
        assert_eq!(won, 1);
        assert!(matches!(
            store.delete("never-written", "k", Some(1)).await,
            Err(StateError::Conflict { .. })
        ));
    }
}
