//! Connectors: the systems a job may reach, behind small traits so a backend can be added
//! without touching the runtime or the engine. Key-value ([`KvBucket`]: sled, Redis, memory),
//! SQL ([`SqlDatabase`]: PostgreSQL) and outgoing HTTP ([`HttpConnection`]).
//!
//! Invariant: a plugin reaches a backend only through a [`Grants`] value built by the host for
//! one job. Connection details never cross into the guest; it sees binding names only.

mod connections;
pub mod http_out;
mod memory_kv;
pub mod postgres;
mod redis_kv;
mod sled_kv;
pub mod sql;

pub use connections::{ConnectionConfig, ConnectionProvider, HostConnections, JobStateSpace};
pub use http_out::{HttpConnection, HttpRules};
pub use memory_kv::MemoryBucket;
pub use redis_kv::RedisBucket;
pub use sled_kv::{SledBucket, SledBuckets};
pub use sql::SqlDatabase;

use std::collections::BTreeMap;
use std::sync::Arc;

/// The most entries one batched call or scan page may carry. Bounds host memory per call.
pub const MAX_BATCH: usize = 10_000;

/// A failure of the backing store (not of the plugin).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct KvBackendError {
    pub kind: KvFailure,
    pub message: String,
}

/// What kind of failure a [`KvBackendError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvFailure {
    /// The backend failed or could not be reached; it may pass.
    Backend,
    /// The write would take the bucket past its quota.
    QuotaExceeded,
    /// What the backend holds is damaged; retrying will not help.
    Corrupt,
}

impl KvBackendError {
    pub fn backend(message: impl Into<String>) -> Self {
        KvBackendError {
            kind: KvFailure::Backend,
            message: message.into(),
        }
    }
    pub fn quota(message: impl Into<String>) -> Self {
        KvBackendError {
            kind: KvFailure::QuotaExceeded,
            message: message.into(),
        }
    }
    pub fn corrupt(message: impl Into<String>) -> Self {
        KvBackendError {
            kind: KvFailure::Corrupt,
            message: message.into(),
        }
    }
    pub fn is_quota(&self) -> bool {
        self.kind == KvFailure::QuotaExceeded
    }
}

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

    /// Whether the bucket lives in the host's own embedded database (whose log keeps writes
    /// in order across buckets, so a job-state journal needs no flush of its own before it).
    fn is_embedded(&self) -> bool {
        false
    }

    /// Wait until every write made so far is durable (a no-op where a write is durable when
    /// it returns).
    fn sync(&self) -> Result<(), KvBackendError> {
        Ok(())
    }

    /// Whether keys can expire. Backends that cannot (sled, memory) refuse a time to live.
    fn supports_expiry(&self) -> bool {
        false
    }
    /// Remaining time to live of each key in milliseconds; `None` when it does not expire.
    fn ttl_many(&self, keys: &[String]) -> Result<Vec<Option<u64>>, KvBackendError> {
        Ok(vec![None; keys.len()])
    }
    /// Write entries, each with its own time to live. Only called when [`supports_expiry`]
    /// or when no entry has a time to live.
    ///
    /// [`supports_expiry`]: KvBucket::supports_expiry
    fn set_many_with_ttl(
        &self,
        entries: &[(String, Vec<u8>, Option<u64>)],
    ) -> Result<(), KvBackendError> {
        let plain: Vec<(String, Vec<u8>)> = entries
            .iter()
            .map(|(k, v, _)| (k.clone(), v.clone()))
            .collect();
        self.set_many(&plain)
    }
}

/// What a binding name leads to: one connection of one kind.
#[derive(Clone)]
pub enum Connector {
    Kv(Arc<dyn KvBucket>),
    Sql(Arc<dyn SqlDatabase>),
    Http(Arc<HttpConnection>),
}

impl Connector {
    /// Whether writes through it land in the host's own embedded database.
    pub fn is_embedded(&self) -> bool {
        matches!(self, Connector::Kv(b) if b.is_embedded())
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Connector::Kv(_) => "key-value",
            Connector::Sql(_) => "SQL",
            Connector::Http(_) => "HTTP",
        }
    }
}

/// The connectors one job may use, by binding name, plus the job's own private state bucket
/// (for backups and journals that rollback needs).
#[derive(Clone)]
pub struct Grants {
    bindings: BTreeMap<String, Connector>,
    /// Bindings the plugin declared it only reads: writes through them are refused.
    read_only: std::collections::BTreeSet<String>,
    job_state: Arc<dyn KvBucket>,
}

impl Grants {
    pub fn new(job_state: Arc<dyn KvBucket>) -> Self {
        Grants {
            bindings: BTreeMap::new(),
            read_only: Default::default(),
            job_state,
        }
    }

    /// Refuse writes through `binding` (the plugin declared it reads only).
    pub fn read_only(mut self, binding: impl Into<String>) -> Self {
        self.read_only.insert(binding.into());
        self
    }

    /// Whether writes through `binding` are refused whatever the call.
    pub fn is_read_only(&self, binding: &str) -> bool {
        self.read_only.contains(binding)
    }

    /// The connector granted as `binding`, of whatever kind.
    pub fn connector(&self, binding: &str) -> Option<&Connector> {
        self.bindings.get(binding)
    }

    /// Grant `connector` under the binding name `binding`.
    pub fn with(mut self, binding: impl Into<String>, connector: Connector) -> Self {
        self.bindings.insert(binding.into(), connector);
        self
    }

    /// Grant `bucket` under the binding name `binding`.
    pub fn with_kv(self, binding: impl Into<String>, bucket: Arc<dyn KvBucket>) -> Self {
        self.with(binding, Connector::Kv(bucket))
    }

    /// The bucket granted as `binding`, or why there is none.
    pub fn kv(&self, binding: &str) -> Result<&Arc<dyn KvBucket>, String> {
        match self.bindings.get(binding) {
            Some(Connector::Kv(bucket)) => Ok(bucket),
            other => Err(refusal(binding, "key-value", other)),
        }
    }

    /// The SQL database granted as `binding`, or why there is none.
    pub fn sql(&self, binding: &str) -> Result<&Arc<dyn SqlDatabase>, String> {
        match self.bindings.get(binding) {
            Some(Connector::Sql(db)) => Ok(db),
            other => Err(refusal(binding, "SQL", other)),
        }
    }

    /// The HTTP connection granted as `binding`, or why there is none.
    pub fn http(&self, binding: &str) -> Result<&Arc<HttpConnection>, String> {
        match self.bindings.get(binding) {
            Some(Connector::Http(http)) => Ok(http),
            other => Err(refusal(binding, "HTTP", other)),
        }
    }

    pub fn job_state(&self) -> &Arc<dyn KvBucket> {
        &self.job_state
    }

    /// The binding names, as the plugin sees them in its spec.
    pub fn binding_names(&self) -> Vec<String> {
        self.bindings.keys().cloned().collect()
    }
}

/// Why `binding` cannot be used as a `wanted` connection.
fn refusal(binding: &str, wanted: &str, found: Option<&Connector>) -> String {
    match found {
        None => format!("no {wanted} connection is granted as '{binding}'"),
        Some(c) => format!(
            "'{binding}' is granted as a {} connection, not a {wanted} one",
            c.kind()
        ),
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
