//! Buckets backed by sled trees: one tree per bucket in the host's embedded database.

use super::{KvBackendError, KvBucket, ScanPage, cursor_after};
use std::sync::Arc;

/// Opens named buckets in one sled database.
#[derive(Clone)]
pub struct SledBuckets {
    db: sled::Db,
}

impl SledBuckets {
    pub fn new(db: sled::Db) -> Self {
        SledBuckets { db }
    }

    /// The bucket `name`, created empty on first use.
    pub fn open(&self, name: &str) -> Result<Arc<SledBucket>, KvBackendError> {
        let tree = self.db.open_tree(format!("kv/{name}")).map_err(backend)?;
        Ok(Arc::new(SledBucket { tree }))
    }

    /// Remove the bucket `name` and everything in it.
    pub fn drop_bucket(&self, name: &str) -> Result<(), KvBackendError> {
        self.db.drop_tree(format!("kv/{name}")).map_err(backend)?;
        Ok(())
    }
}

pub struct SledBucket {
    tree: sled::Tree,
}

impl SledBucket {
    /// Wait until everything written so far is on disk.
    pub fn flush(&self) -> Result<(), KvBackendError> {
        self.tree.flush().map_err(backend)?;
        Ok(())
    }
}

fn backend(e: sled::Error) -> KvBackendError {
    match e {
        sled::Error::Corruption { .. } => {
            KvBackendError::corrupt(format!("sled: the embedded database is corrupt ({e})"))
        }
        other => KvBackendError::backend(format!("sled: {other}")),
    }
}

fn utf8_key(k: &[u8]) -> Result<String, KvBackendError> {
    String::from_utf8(k.to_vec()).map_err(|_| KvBackendError::backend("a stored key is not UTF-8"))
}

impl KvBucket for SledBucket {
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvBackendError> {
        keys.iter()
            .map(|k| {
                self.tree
                    .get(k.as_bytes())
                    .map(|v| v.map(|v| v.to_vec()))
                    .map_err(backend)
            })
            .collect()
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), KvBackendError> {
        let mut batch = sled::Batch::default();
        for (k, v) in entries {
            batch.insert(k.as_bytes(), v.as_slice());
        }
        self.tree.apply_batch(batch).map_err(backend)
    }

    fn delete_many(&self, keys: &[String]) -> Result<u64, KvBackendError> {
        // Count first, then remove in one atomic batch.
        let mut existed = 0;
        let mut batch = sled::Batch::default();
        for k in keys {
            if self.tree.contains_key(k.as_bytes()).map_err(backend)? {
                existed += 1;
            }
            batch.remove(k.as_bytes());
        }
        self.tree.apply_batch(batch).map_err(backend)?;
        Ok(existed)
    }

    fn scan(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ScanPage, KvBackendError> {
        let mut entries = Vec::with_capacity(limit.min(1024));
        let iter = match cursor {
            Some(c) => self.tree.range::<&[u8], _>((
                std::ops::Bound::Excluded(c.as_bytes()),
                std::ops::Bound::Unbounded,
            )),
            None => self.tree.range::<&[u8], _>(prefix.as_bytes()..),
        };
        for item in iter {
            let (k, v) = item.map_err(backend)?;
            if !k.starts_with(prefix.as_bytes()) || entries.len() == limit {
                break;
            }
            entries.push((utf8_key(&k)?, v.to_vec()));
        }
        let next_cursor = cursor_after(&entries, limit);
        Ok(ScanPage {
            entries,
            next_cursor,
        })
    }

    fn is_embedded(&self) -> bool {
        true
    }

    fn sync(&self) -> Result<(), KvBackendError> {
        self.flush()
    }

    fn count(&self, prefix: &str) -> Result<u64, KvBackendError> {
        let mut n = 0;
        for item in self.tree.scan_prefix(prefix.as_bytes()).keys() {
            item.map_err(backend)?;
            n += 1;
        }
        Ok(n)
    }
}
