//! Connectors: the data systems a job may reach, behind small traits so a backend (sled,
//! memory today; Redis and SQL next) can be added without touching the runtime or the engine.
//!
//! Invariant: a plugin reaches a backend only through a [`Grants`] value built by the host for
//! one job. Connection details never cross into the guest; it sees binding names only.

mod connections;
mod memory_kv;
mod sled_kv;

pub use connections::{ConnectionProvider, KvConnection, SledConnections};
pub use memory_kv::MemoryBucket;
pub use sled_kv::{SledBucket, SledBuckets};

use std::collections::BTreeMap;
use std::sync::Arc;

/// The most entries one batched call or scan page may carry. Bounds host memory per call.
pub const MAX_BATCH: usize = 10_000;

/// A failure of the backing store (not of the plugin).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct KvBackendError(pub String);

/// One page of a prefix scan, in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    pub entries: Vec<(String, Vec<u8>)>,
    /// Opaque: pass back to continue; `None` when the scan is complete.
    pub next_cursor: Option<String>,
}

/// A key-value bucket. Implementations must be safe to share between threads; every method
/// is one round trip to the backend at most.
pub trait KvBucket: Send + Sync {
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvBackendError>;
    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), KvBackendError>;
    /// Returns how many of `keys` existed.
    fn delete_many(&self, keys: &[String]) -> Result<u64, KvBackendError>;
    /// Up to `limit` entries under `prefix` strictly after `cursor`.
    fn scan(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ScanPage, KvBackendError>;
    fn count(&self, prefix: &str) -> Result<u64, KvBackendError>;
}

/// The connectors one job may use: key-value buckets by binding name, plus the job's own
/// private state bucket (for backups and journals that rollback needs).
#[derive(Clone)]
pub struct Grants {
    kv: BTreeMap<String, Arc<dyn KvBucket>>,
    job_state: Arc<dyn KvBucket>,
}

impl Grants {
    pub fn new(job_state: Arc<dyn KvBucket>) -> Self {
        Grants {
            kv: BTreeMap::new(),
            job_state,
        }
    }

    /// Grant `bucket` under the binding name `binding`.
    pub fn with_kv(mut self, binding: impl Into<String>, bucket: Arc<dyn KvBucket>) -> Self {
        self.kv.insert(binding.into(), bucket);
        self
    }

    pub fn kv(&self, binding: &str) -> Option<&Arc<dyn KvBucket>> {
        self.kv.get(binding)
    }

    pub fn job_state(&self) -> &Arc<dyn KvBucket> {
        &self.job_state
    }

    /// The binding names, as the plugin sees them in its spec.
    pub fn binding_names(&self) -> Vec<String> {
        self.kv.keys().cloned().collect()
    }
}

/// Given keys in order, the cursor that continues after the last one.
pub(crate) fn cursor_after(entries: &[(String, Vec<u8>)], limit: usize) -> Option<String> {
    if entries.len() < limit {
        None
    } else {
        entries.last().map(|(k, _)| k.clone())
    }
}
