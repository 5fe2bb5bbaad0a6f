//! The jobs' private state buckets (`kv.bucket.job-state`), all in one sled tree keyed by job:
//! `k/<job>/<key>` holds a value, `u/<job>` the bytes the job keeps (for its quota). One tree
//! for every job keeps the database's size linear in what is stored (a tree per job made
//! sled rewrite its tree metadata as jobs were added).
//!
//! Invariant: a write is on disk before any change it precedes can be. Handlers keep rollback
//! journals here and then change other systems: for a job granted a system outside the host's
//! database (Redis, PostgreSQL, HTTP), a write returns only once it is on disk; for a job that
//! writes only into the host's database, sled's log keeps the order (a crash loses a suffix of
//! writes, never an earlier one while keeping a later one), so no flush is needed.

use super::super::StoreError;
use super::{GroupFlush, keys, sled_error};
use crate::connectors::{KvBackendError, KvBucket, ScanPage, cursor_after};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct SledJobState {
    tree: sled::Tree,
    flush: Arc<GroupFlush>,
    quota_bytes: u64,
    /// Serialises quota accounting per job (striped by job id).
    locks: Arc<[Mutex<()>; 16]>,
}

impl SledJobState {
    pub fn open(flush: Arc<GroupFlush>) -> Result<Self, StoreError> {
        let tree = flush
            .db()
            .open_tree("plover/job-state")
            .map_err(|e| sled_error("opening the job-state tree", e))?;
        Ok(SledJobState {
            tree,
            flush,
            quota_bytes: super::super::DEFAULT_JOB_STATE_QUOTA,
            locks: Default::default(),
        })
    }

    /// Set how many bytes each job may keep.
    pub fn with_quota(mut self, bytes: u64) -> Self {
        self.quota_bytes = bytes;
        self
    }

    pub fn quota_bytes(&self) -> u64 {
        self.quota_bytes
    }

    /// Job `job`'s bucket; with `outside`, every write is on disk before it returns.
    pub fn bucket(&self, job: &str, outside: bool) -> Arc<JobStateBucket> {
        Arc::new(JobStateBucket {
            space: self.clone(),
            sync: outside,
            prefix: format!("k/{job}/").into_bytes(),
            usage_key: format!("u/{job}").into_bytes(),
        })
    }

    /// How many bytes job `job` keeps.
    pub fn usage(&self, job: &str) -> Result<u64, StoreError> {
        Ok(self
            .tree
            .get(format!("u/{job}"))
            .map_err(|e| sled_error("reading job-state usage", e))?
            .map(|v| keys::tail_number(&v))
            .unwrap_or(0))
    }

    /// Remove everything job `job` keeps (not synced: the caller's final commit is).
    pub(super) fn remove_all(&self, job: &str) -> Result<(), StoreError> {
        let prefix = format!("k/{job}/").into_bytes();
        loop {
            let chunk: Vec<sled::IVec> = self
                .tree
                .scan_prefix(&prefix)
                .keys()
                .take(super::DELETE_CHUNK)
                .collect::<Result<_, _>>()
                .map_err(|e| sled_error("deleting job state", e))?;
            if chunk.is_empty() {
                break;
            }
            let mut batch = sled::Batch::default();
            for k in chunk {
                batch.remove(k);
            }
            self.tree
                .apply_batch(batch)
                .map_err(|e| sled_error("deleting job state", e))?;
        }
        self.tree
            .remove(format!("u/{job}"))
            .map_err(|e| sled_error("deleting job state", e))?;
        Ok(())
    }

    fn lock_for(&self, prefix: &[u8]) -> std::sync::MutexGuard<'_, ()> {
        let stripe = prefix
            .iter()
            .fold(0usize, |h, b| h.wrapping_mul(31) + *b as usize);
        self.locks[stripe % self.locks.len()]
            .lock()
            .expect("job-state lock")
    }
}

impl crate::connectors::JobStateSpace for SledJobState {
    /// One node uses the embedded store: nothing to fence.
    fn bucket(&self, job: &str, outside: bool, _fence: Option<u64>) -> Arc<dyn KvBucket> {
        SledJobState::bucket(self, job, outside)
    }
}

/// One job's state bucket.
pub struct JobStateBucket {
    space: SledJobState,
    /// Wait for the disk after each write (the job writes outside the host's database).
    sync: bool,
    prefix: Vec<u8>,
    usage_key: Vec<u8>,
}

fn backend(e: StoreError) -> KvBackendError {
    if e.is_corruption() {
        KvBackendError::corrupt(e.message)
    } else {
        KvBackendError::backend(e.message)
    }
}

fn sled_backend(e: sled::Error) -> KvBackendError {
    backend(sled_error("job state", e))
}

impl JobStateBucket {
    fn key(&self, k: &str) -> Vec<u8> {
        [self.prefix.as_slice(), k.as_bytes()].concat()
    }

    /// Apply writes (`Some` value) and deletions (`None`) atomically within the quota, then
    /// wait until they are on disk. Returns how many of the keys existed before.
    fn write(&self, entries: Vec<(&str, Option<&[u8]>)>) -> Result<u64, KvBackendError> {
        let tree = &self.space.tree;
        let _guard = self.space.lock_for(&self.prefix);
        let mut usage = tree
            .get(&self.usage_key)
            .map_err(sled_backend)?
            .map(|v| keys::tail_number(&v))
            .unwrap_or(0) as i128;
        let mut existed = 0;
        let mut batch = sled::Batch::default();
        // Later entries for the same key replace earlier ones, as the batch does.
        let mut seen: std::collections::HashMap<&str, Option<usize>> = Default::default();
        for (k, v) in &entries {
            let old = match seen.get(k) {
                Some(len) => *len,
                None => tree
                    .get(self.key(k))
                    .map_err(sled_backend)?
                    .map(|old| old.len()),
            };
            if old.is_some() {
                existed += 1;
            }
            usage -= old.map_or(0, |len| (k.len() + len) as i128);
            usage += v.map_or(0, |v| (k.len() + v.len()) as i128);
            seen.insert(k, v.map(<[u8]>::len));
            match v {
                Some(v) => batch.insert(self.key(k), *v),
                None => batch.remove(self.key(k)),
            }
        }
        let usage = usage.max(0) as u64;
        if usage > self.space.quota_bytes {
            return Err(KvBackendError::quota(format!(
                "the job-state bucket would hold {usage} bytes; this host allows {} per job",
                self.space.quota_bytes
            )));
        }
        batch.insert(self.usage_key.clone(), &usage.to_be_bytes()[..]);
        tree.apply_batch(batch).map_err(sled_backend)?;
        if self.sync {
            self.space.flush.sync().map_err(backend)?;
        }
        Ok(existed)
    }
}

impl KvBucket for JobStateBucket {
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvBackendError> {
        keys.iter()
            .map(|k| {
                self.space
                    .tree
                    .get(self.key(k))
                    .map(|v| v.map(|v| v.to_vec()))
                    .map_err(sled_backend)
            })
            .collect()
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), KvBackendError> {
        self.write(
            entries
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_slice())))
                .collect(),
        )
        .map(|_| ())
    }

    fn delete_many(&self, keys: &[String]) -> Result<u64, KvBackendError> {
        self.write(keys.iter().map(|k| (k.as_str(), None)).collect())
    }

    fn scan(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ScanPage, KvBackendError> {
        let start = match cursor {
            Some(c) => std::ops::Bound::Excluded(self.key(c)),
            None => std::ops::Bound::Included(self.key(prefix)),
        };
        let full_prefix = self.key(prefix);
        let mut entries = Vec::with_capacity(limit.min(1024));
        for item in self
            .space
            .tree
            .range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded))
        {
            let (k, v) = item.map_err(sled_backend)?;
            if !k.starts_with(&full_prefix) || entries.len() == limit {
                break;
            }
            let key = String::from_utf8(k[self.prefix.len()..].to_vec())
                .map_err(|_| KvBackendError::backend("a stored key is not UTF-8"))?;
            entries.push((key, v.to_vec()));
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

    fn count(&self, prefix: &str) -> Result<u64, KvBackendError> {
        let mut n = 0;
        for item in self.space.tree.scan_prefix(self.key(prefix)).keys() {
            item.map_err(sled_backend)?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(quota: u64) -> (tempfile::TempDir, SledJobState) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let flush = Arc::new(GroupFlush::new(db));
        (dir, SledJobState::open(flush).unwrap().with_quota(quota))
    }

    #[test]
    fn buckets_of_different_jobs_are_apart_and_usage_is_counted() {
        let (_dir, space) = space(1000);
        let (a, b) = (space.bucket("job-a", true), space.bucket("job-ab", false));
        a.set_many(&[("k1".into(), vec![1; 10]), ("k2".into(), vec![2; 10])])
            .unwrap();
        b.set_many(&[("k1".into(), vec![9; 5])]).unwrap();
        assert_eq!(a.count("").unwrap(), 2);
        assert_eq!(b.count("").unwrap(), 1);
        assert_eq!(a.scan("k", None, 10).unwrap().entries.len(), 2);
        assert_eq!(space.usage("job-a").unwrap(), 24);
        a.set_many(&[("k1".into(), vec![1; 2])]).unwrap();
        assert_eq!(
            space.usage("job-a").unwrap(),
            16,
            "an overwrite counts its new size"
        );
        assert_eq!(a.delete_many(&["k2".into(), "zz".into()]).unwrap(), 1);
        assert_eq!(space.usage("job-a").unwrap(), 4);
        space.remove_all("job-a").unwrap();
        assert_eq!(a.count("").unwrap(), 0);
        assert_eq!(b.get_many(&["k1".into()]).unwrap()[0], Some(vec![9; 5]));
    }

    #[test]
    fn a_write_past_the_quota_is_refused_and_changes_nothing() {
        let (_dir, space) = space(100);
        let a = space.bucket("job", true);
        a.set_many(&[("x".into(), vec![0; 90])]).unwrap();
        let err = a.set_many(&[("y".into(), vec![0; 20])]).unwrap_err();
        assert!(err.is_quota(), "{err}");
        assert!(err.message.contains("allows 100 per job"), "{err}");
        assert_eq!(a.get_many(&["y".into()]).unwrap()[0], None);
        assert_eq!(space.usage("job").unwrap(), 91);
    }
}
