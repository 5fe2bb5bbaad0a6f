//! The jobs' private state buckets (`kv.bucket.job-state`) in PostgreSQL: one table keyed by
//! (job, key), and each job's byte usage for its quota, changed in the same transaction as the
//! values. A write is committed, hence durable, before it returns, whatever else the job is
//! granted: a rollback journal is never younger than the change it protects.

use super::{Client, Pool, pg_error};
use crate::connectors::{KvBackendError, KvBucket, ScanPage, cursor_after};
use crate::store::StoreError;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone)]
pub struct PgJobState {
    pool: Pool,
    quota_bytes: u64,
    /// This node's id when several nodes share the store: writes are then fenced.
    node: Option<String>,
}

impl PgJobState {
    pub fn new(pool: Pool) -> Self {
        PgJobState {
            pool,
            quota_bytes: crate::store::DEFAULT_JOB_STATE_QUOTA,
            node: None,
        }
    }

    /// The buckets as node `node` of several sharing the store writes them: fenced.
    pub fn for_node(mut self, node: &str) -> Self {
        self.node = Some(node.to_string());
        self
    }

    /// Set how many bytes each job may keep.
    pub fn with_quota(mut self, bytes: u64) -> Self {
        self.quota_bytes = bytes;
        self
    }

    /// How many bytes job `job` keeps.
    pub fn usage(&self, job: &str) -> Result<u64, StoreError> {
        let row = client(&self.pool)
            .map_err(|e| StoreError::unavailable(e.message))?
            .query_opt(
                "SELECT bytes FROM job_state_usage WHERE job_id = $1",
                &[&job],
            )
            .map_err(|e| pg_error("reading job-state usage", e))?;
        Ok(row.map_or(0, |r| r.get::<_, i64>(0).max(0) as u64))
    }
}

impl crate::connectors::JobStateSpace for PgJobState {
    fn bucket(&self, job: &str, _outside: bool, fence: Option<u64>) -> Arc<dyn KvBucket> {
        Arc::new(PgJobStateBucket {
            space: self.clone(),
            job: job.to_string(),
            fence,
        })
    }
}

fn client(pool: &Pool) -> Result<Client, KvBackendError> {
    pool.get()
        .map_err(|e| KvBackendError::backend(format!("job state: the store database: {e}")))
}

fn backend(e: postgres::Error) -> KvBackendError {
    KvBackendError::backend(format!("job state: {e}"))
}

/// The smallest byte string greater than every one starting with `prefix`, or `None` when
/// there is none. Keys are stored as bytes (a key may hold any character, NUL included), so
/// the order is byte order, as in the embedded store.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut bytes = prefix.to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0xFF {
            bytes.push(last + 1);
            return Some(bytes);
        }
    }
    None
}

fn key_text(bytes: Vec<u8>) -> Result<String, KvBackendError> {
    String::from_utf8(bytes).map_err(|_| KvBackendError::corrupt("a stored key is not UTF-8"))
}

/// One job's state bucket.
pub struct PgJobStateBucket {
    space: PgJobState,
    job: String,
    /// The lease epoch the writing node holds (several nodes on the store).
    fence: Option<u64>,
}

impl PgJobStateBucket {
    /// Apply writes (`Some` value) and deletions (`None`) in one transaction within the quota.
    /// Returns how many of the keys existed before.
    fn write(&self, entries: Vec<(&str, Option<&[u8]>)>) -> Result<u64, KvBackendError> {
        let mut client = client(&self.space.pool)?;
        let mut tx = client.transaction().map_err(backend)?;
        if let Some(node) = &self.space.node {
            super::cluster_writes::check_fence(&mut tx, node, &self.job, self.fence)
                .map_err(|e| KvBackendError::backend(format!("job state: {}", e.message)))?;
        }
        // The usage row is the job's lock: concurrent writers of one job take turns.
        tx.execute(
            "INSERT INTO job_state_usage (job_id, bytes) VALUES ($1, 0) ON CONFLICT DO NOTHING",
            &[&self.job],
        )
        .map_err(backend)?;
        let usage: i64 = tx
            .query_one(
                "SELECT bytes FROM job_state_usage WHERE job_id = $1 FOR UPDATE",
                &[&self.job],
            )
            .map_err(backend)?
            .get(0);
        let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| k.as_bytes()).collect();
        let mut sizes: HashMap<Vec<u8>, Option<usize>> = tx
            .query(
                "SELECT key, octet_length(value) FROM job_state WHERE job_id = $1 AND key = ANY($2)",
                &[&self.job, &keys],
            )
            .map_err(backend)?
            .iter()
            .map(|r| (r.get::<_, Vec<u8>>(0), Some(r.get::<_, i32>(1) as usize)))
            .collect();
        let mut usage = usage as i128;
        let mut existed = 0;
        // Later entries for the same key replace earlier ones.
        let mut last: HashMap<&str, Option<&[u8]>> = HashMap::new();
        for (k, v) in &entries {
            let old = sizes.get(k.as_bytes()).copied().flatten();
            if old.is_some() {
                existed += 1;
            }
            usage -= old.map_or(0, |len| (k.len() + len) as i128);
            usage += v.map_or(0, |v| (k.len() + v.len()) as i128);
            sizes.insert(k.as_bytes().to_vec(), v.map(<[u8]>::len));
            last.insert(k, *v);
        }
        let usage = usage.max(0) as u64;
        if usage > self.space.quota_bytes {
            return Err(KvBackendError::quota(format!(
                "the job-state bucket would hold {usage} bytes; this host allows {} per job",
                self.space.quota_bytes
            )));
        }
        let (mut set_keys, mut set_values, mut gone) = (vec![], vec![], vec![]);
        for (k, v) in last {
            match v {
                Some(v) => {
                    set_keys.push(k.as_bytes());
                    set_values.push(v);
                }
                None => gone.push(k.as_bytes()),
            }
        }
        if !gone.is_empty() {
            tx.execute(
                "DELETE FROM job_state WHERE job_id = $1 AND key = ANY($2)",
                &[&self.job, &gone],
            )
            .map_err(backend)?;
        }
        if !set_keys.is_empty() {
            tx.execute(
                "INSERT INTO job_state (job_id, key, value)
                 SELECT $1, * FROM unnest($2::bytea[], $3::bytea[])
                 ON CONFLICT (job_id, key) DO UPDATE SET value = EXCLUDED.value",
                &[&self.job, &set_keys, &set_values],
            )
            .map_err(backend)?;
        }
        tx.execute(
            "UPDATE job_state_usage SET bytes = $2 WHERE job_id = $1",
            &[&self.job, &(usage as i64)],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(existed)
    }
}

impl KvBucket for PgJobStateBucket {
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvBackendError> {
        let wanted: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let found: HashMap<Vec<u8>, Vec<u8>> = client(&self.space.pool)?
            .query(
                "SELECT key, value FROM job_state WHERE job_id = $1 AND key = ANY($2)",
                &[&self.job, &wanted],
            )
            .map_err(backend)?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok(wanted.iter().map(|k| found.get(*k).cloned()).collect())
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
        let end = prefix_end(prefix.as_bytes());
        let cursor = cursor.map(str::as_bytes);
        let rows = client(&self.space.pool)?
            .query(
                "SELECT key, value FROM job_state
                 WHERE job_id = $1 AND key >= $2 AND ($3::bytea IS NULL OR key > $3)
                   AND ($4::bytea IS NULL OR key < $4)
                 ORDER BY key LIMIT $5",
                &[
                    &self.job,
                    &prefix.as_bytes(),
                    &cursor,
                    &end,
                    &(limit as i64),
                ],
            )
            .map_err(backend)?;
        let entries = rows
            .into_iter()
            .map(|r| Ok((key_text(r.get(0))?, r.get(1))))
            .collect::<Result<Vec<(String, Vec<u8>)>, KvBackendError>>()?;
        let next_cursor = cursor_after(&entries, limit);
        Ok(ScanPage {
            entries,
            next_cursor,
        })
    }

    fn count(&self, prefix: &str) -> Result<u64, KvBackendError> {
        let end = prefix_end(prefix.as_bytes());
        let row = client(&self.space.pool)?
            .query_one(
                "SELECT count(*) FROM job_state
                 WHERE job_id = $1 AND key >= $2 AND ($3::bytea IS NULL OR key < $3)",
                &[&self.job, &prefix.as_bytes(), &end],
            )
            .map_err(backend)?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_string_past_the_prefix() {
        assert_eq!(prefix_end(b"ab").as_deref(), Some(&b"ac"[..]));
        assert_eq!(prefix_end(b""), None);
        assert_eq!(prefix_end(b"a\xff").as_deref(), Some(&b"b"[..]));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }
}
