//! Connections the host configures, by name. A job's grants bind its binding names (what the
//! plugin sees, e.g. `source`) to these connection names (what the operator sees, e.g.
//! `sessions-old`). Connection details never reach a plugin.

use super::{KvBucket, SledBuckets};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How one named key-value connection is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum KvConnection {
    /// A bucket in the host's embedded sled database.
    Sled { bucket: String },
}

/// Resolves connection names to buckets, and gives every job its private state bucket.
pub trait ConnectionProvider: Send + Sync {
    /// The key-value bucket behind connection `name`.
    fn kv(&self, name: &str) -> Result<Arc<dyn KvBucket>, String>;
    /// The private bucket of job `job` (see `kv.bucket.job-state` in the contract).
    fn job_state(&self, job: &str) -> Result<Arc<dyn KvBucket>, String>;
    /// Forget job `job`'s private bucket.
    fn drop_job_state(&self, job: &str) -> Result<(), String>;
    /// The configured connection names, for error messages and the API.
    fn names(&self) -> Vec<String>;
}

/// Connections backed by the host's sled database.
pub struct SledConnections {
    buckets: SledBuckets,
    named: BTreeMap<String, KvConnection>,
    /// When true, a name not configured refers to the sled bucket of that name. Convenient on
    /// a developer's machine; operators turn it off to allow configured connections only.
    pub any_sled_bucket: bool,
}

impl SledConnections {
    pub fn new(
        buckets: SledBuckets,
        named: BTreeMap<String, KvConnection>,
        any_sled_bucket: bool,
    ) -> Self {
        SledConnections {
            buckets,
            named,
            any_sled_bucket,
        }
    }
}

fn valid_bucket_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl ConnectionProvider for SledConnections {
    fn kv(&self, name: &str) -> Result<Arc<dyn KvBucket>, String> {
        let bucket = match self.named.get(name) {
            Some(KvConnection::Sled { bucket }) => bucket.as_str(),
            None if self.any_sled_bucket && valid_bucket_name(name) => name,
            None => {
                return Err(format!(
                    "no connection named '{name}' is configured (configured: {})",
                    self.names().join(", ")
                ));
            }
        };
        Ok(self.buckets.open(bucket).map_err(|e| e.to_string())?)
    }

    fn job_state(&self, job: &str) -> Result<Arc<dyn KvBucket>, String> {
        Ok(self
            .buckets
            .open(&format!("@job-state/{job}"))
            .map_err(|e| e.to_string())?)
    }

    fn drop_job_state(&self, job: &str) -> Result<(), String> {
        self.buckets
            .drop_bucket(&format!("@job-state/{job}"))
            .map_err(|e| e.to_string())
    }

    fn names(&self) -> Vec<String> {
        self.named.keys().cloned().collect()
    }
}
