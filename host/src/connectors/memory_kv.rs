//! An in-memory bucket: for plugin authors' tests and for job state that need not survive.

use super::{KvBackendError, KvBucket, ScanPage, cursor_after};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;

#[derive(Default)]
pub struct MemoryBucket {
    entries: RwLock<BTreeMap<String, Vec<u8>>>,
}

impl MemoryBucket {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every entry, in key order.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.entries.read().expect("memory bucket lock").clone()
    }

    pub fn insert(&self, key: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.entries
            .write()
            .expect("memory bucket lock")
            .insert(key.into(), value.into());
    }
}

impl KvBucket for MemoryBucket {
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvBackendError> {
        let map = self.entries.read().expect("memory bucket lock");
        Ok(keys.iter().map(|k| map.get(k).cloned()).collect())
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), KvBackendError> {
        let mut map = self.entries.write().expect("memory bucket lock");
        for (k, v) in entries {
            map.insert(k.clone(), v.clone());
        }
        Ok(())
    }

    fn delete_many(&self, keys: &[String]) -> Result<u64, KvBackendError> {
        let mut map = self.entries.write().expect("memory bucket lock");
        Ok(keys.iter().filter(|k| map.remove(*k).is_some()).count() as u64)
    }

    fn scan(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ScanPage, KvBackendError> {
        let map = self.entries.read().expect("memory bucket lock");
        let start = match cursor {
            Some(c) => Bound::Excluded(c.to_string()),
            None => Bound::Included(prefix.to_string()),
        };
        let entries: Vec<(String, Vec<u8>)> = map
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let next_cursor = cursor_after(&entries, limit);
        Ok(ScanPage {
            entries,
            next_cursor,
        })
    }

    fn count(&self, prefix: &str) -> Result<u64, KvBackendError> {
        let map = self.entries.read().expect("memory bucket lock");
        Ok(map
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .count() as u64)
    }
}
