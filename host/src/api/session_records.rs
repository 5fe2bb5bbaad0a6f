//! Where browser sessions are kept: in the embedded database (and in memory, so a check costs
//! no I/O) or in PostgreSQL (read on every check, so signing out through any node ends the
//! session on all). Only the session id's hash is stored; a change is durable before it is
//! acknowledged.

use crate::store::{GroupFlush, PgPool, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// One session: the token it stands for (by hash), its CSRF token and when it ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSession {
    pub token_sha256: String,
    pub csrf: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

pub trait SessionRecords: Send + Sync {
    /// Keep the session whose id hashes to `id_sha256` (forgetting expired ones meanwhile).
    fn insert(&self, id_sha256: &str, session: &StoredSession) -> Result<(), StoreError>;
    fn get(&self, id_sha256: &str) -> Result<Option<StoredSession>, StoreError>;
    fn remove(&self, id_sha256: &str) -> Result<(), StoreError>;
    /// Whether a check reads only memory (and may run on an async thread).
    fn in_memory(&self) -> bool;
}

fn sled_failure(e: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(format!("sessions: {e}"))
}

pub struct SledSessions {
    tree: sled::Tree,
    flush: Arc<GroupFlush>,
    by_id: RwLock<HashMap<String, StoredSession>>,
}

impl SledSessions {
    pub fn open(flush: Arc<GroupFlush>) -> anyhow::Result<Self> {
        let tree = flush.db().open_tree("plover/sessions")?;
        let mut by_id = HashMap::new();
        for item in tree.iter() {
            let (k, v) = item?;
            let s: StoredSession = serde_json::from_slice(&v)?;
            by_id.insert(String::from_utf8_lossy(&k).into_owned(), s);
        }
        Ok(SledSessions {
            tree,
            flush,
            by_id: RwLock::new(by_id),
        })
    }
}

impl SessionRecords for SledSessions {
    fn insert(&self, id_sha256: &str, session: &StoredSession) -> Result<(), StoreError> {
        let now = Utc::now();
        let mut by_id = self.by_id.write().expect("sessions lock");
        let expired: Vec<String> = by_id
            .iter()
            .filter(|(_, s)| s.expires_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let mut batch = sled::Batch::default();
        for k in &expired {
            batch.remove(k.as_bytes());
        }
        batch.insert(
            id_sha256.as_bytes(),
            serde_json::to_vec(session).expect("serialises"),
        );
        self.tree.apply_batch(batch).map_err(sled_failure)?;
        self.flush.sync()?;
        for k in expired {
            by_id.remove(&k);
        }
        by_id.insert(id_sha256.to_string(), session.clone());
        Ok(())
    }

    fn get(&self, id_sha256: &str) -> Result<Option<StoredSession>, StoreError> {
        Ok(self
            .by_id
            .read()
            .expect("sessions lock")
            .get(id_sha256)
            .cloned())
    }

    fn remove(&self, id_sha256: &str) -> Result<(), StoreError> {
        let mut by_id = self.by_id.write().expect("sessions lock");
        self.tree.remove(id_sha256).map_err(sled_failure)?;
        self.flush.sync()?;
        by_id.remove(id_sha256);
        Ok(())
    }

    fn in_memory(&self) -> bool {
        true
    }
}

pub struct PgSessions {
    pool: PgPool,
}

impl PgSessions {
    pub fn new(pool: PgPool) -> Self {
        PgSessions { pool }
    }

    fn client(&self) -> Result<crate::store::PgClient, StoreError> {
        self.pool
            .get()
            .map_err(|e| StoreError::unavailable(format!("sessions: {e}")))
    }
}

fn pg_failure(e: postgres::Error) -> StoreError {
    crate::store::pg_error("sessions", e)
}

impl SessionRecords for PgSessions {
    fn insert(&self, id_sha256: &str, s: &StoredSession) -> Result<(), StoreError> {
        let mut client = self.client()?;
        client
            .execute(
                "DELETE FROM console_sessions WHERE expires_at <= now()",
                &[],
            )
            .map_err(pg_failure)?;
        client
            .execute(
                "INSERT INTO console_sessions (id_sha256, token_sha256, csrf, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &id_sha256,
                    &s.token_sha256,
                    &s.csrf,
                    &s.created_at,
                    &s.expires_at,
                ],
            )
            .map_err(pg_failure)?;
        Ok(())
    }

    fn get(&self, id_sha256: &str) -> Result<Option<StoredSession>, StoreError> {
        let row = self
            .client()?
            .query_opt(
                "SELECT token_sha256, csrf, created_at, expires_at FROM console_sessions
                 WHERE id_sha256 = $1",
                &[&id_sha256],
            )
            .map_err(pg_failure)?;
        Ok(row.map(|r| StoredSession {
            token_sha256: r.get(0),
            csrf: r.get(1),
            created_at: r.get(2),
            expires_at: r.get(3),
        }))
    }

    fn remove(&self, id_sha256: &str) -> Result<(), StoreError> {
        self.client()?
            .execute(
                "DELETE FROM console_sessions WHERE id_sha256 = $1",
                &[&id_sha256],
            )
            .map_err(pg_failure)?;
        Ok(())
    }

    fn in_memory(&self) -> bool {
        false
    }
}
