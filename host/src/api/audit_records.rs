//! Where the audit trail is kept: the embedded database, or PostgreSQL when the jobs are
//! there (one trail for every node). An entry is durable before the response it records
//! leaves; the oldest entries past the retention are dropped in the same write.

use super::audit::AuditEntry;
use crate::store::{GroupFlush, PgPool, StoreError};
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// An entry before it has its sequence number.
pub struct NewEntry {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub method: String,
    pub path: String,
    pub status: u16,
}

impl NewEntry {
    fn numbered(self, seq: u64) -> AuditEntry {
        AuditEntry {
            seq,
            at: self.at,
            actor: self.actor,
            method: self.method,
            path: self.path,
            status: self.status,
        }
    }
}

pub trait AuditRecords: Send + Sync {
    fn append(&self, entry: NewEntry) -> Result<(), StoreError>;
    /// Entries with `seq > after`, oldest first, at most `limit`.
    fn after(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
}

fn failure(e: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(format!("audit trail: {e}"))
}

pub struct SledAudit {
    tree: sled::Tree,
    flush: Arc<GroupFlush>,
    last_seq: std::sync::Mutex<u64>,
    retention: u64,
}

impl SledAudit {
    pub fn open(flush: Arc<GroupFlush>, retention: u64) -> anyhow::Result<Self> {
        let tree = flush.db().open_tree("plover/audit")?;
        let last = match tree.last()? {
            Some((k, _)) => u64::from_be_bytes(k.as_ref().try_into()?),
            None => 0,
        };
        Ok(SledAudit {
            tree,
            flush,
            last_seq: std::sync::Mutex::new(last),
            retention: retention.max(1),
        })
    }
}

impl AuditRecords for SledAudit {
    fn append(&self, entry: NewEntry) -> Result<(), StoreError> {
        {
            let mut last = self.last_seq.lock().expect("audit lock");
            *last += 1;
            let seq = *last;
            let mut batch = sled::Batch::default();
            batch.insert(
                &seq.to_be_bytes(),
                serde_json::to_vec(&entry.numbered(seq)).expect("serialises"),
            );
            if seq > self.retention {
                batch.remove(&(seq - self.retention).to_be_bytes());
            }
            self.tree.apply_batch(batch).map_err(failure)?;
        }
        self.flush.sync()
    }

    fn after(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let Some(from) = after.checked_add(1) else {
            return Ok(vec![]);
        };
        self.tree
            .range(from.to_be_bytes()..)
            .take(limit)
            .map(|r| {
                let (_, v) = r.map_err(failure)?;
                serde_json::from_slice(&v).map_err(failure)
            })
            .collect()
    }
}

pub struct PgAudit {
    pool: PgPool,
    retention: i64,
}

impl PgAudit {
    /// The trail in the store database behind `pool` (its schema already migrated).
    pub fn new(pool: PgPool, retention: u64) -> Self {
        PgAudit {
            pool,
            retention: retention.clamp(1, i64::MAX as u64) as i64,
        }
    }
}

impl AuditRecords for PgAudit {
    fn append(&self, entry: NewEntry) -> Result<(), StoreError> {
        let mut client = self.pool.get().map_err(failure)?;
        let mut tx = client.transaction().map_err(failure)?;
        // The counter row orders appends: sequence numbers follow commit order.
        let seq: i64 = tx
            .query_one(
                "UPDATE audit_counter SET last_seq = last_seq + 1 RETURNING last_seq",
                &[],
            )
            .map_err(failure)?
            .get(0);
        tx.execute(
            "INSERT INTO audit_entries (seq, at, actor, method, path, status)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &seq,
                &entry.at,
                &entry.actor,
                &entry.method,
                &entry.path,
                &(entry.status as i32),
            ],
        )
        .map_err(failure)?;
        tx.execute(
            "DELETE FROM audit_entries WHERE seq <= $1",
            &[&(seq - self.retention)],
        )
        .map_err(failure)?;
        tx.commit().map_err(failure)
    }

    fn after(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = self
            .pool
            .get()
            .map_err(failure)?
            .query(
                "SELECT seq, at, actor, method, path, status FROM audit_entries
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&(after as i64), &(limit as i64)],
            )
            .map_err(failure)?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                seq: r.get::<_, i64>(0) as u64,
                at: r.get(1),
                actor: r.get(2),
                method: r.get(3),
                path: r.get(4),
                status: r.get::<_, i32>(5) as u16,
            })
            .collect())
    }
}
