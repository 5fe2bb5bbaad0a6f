//! Where tokens are kept: beside the jobs, in the embedded database (held in memory too, so a
//! check costs no I/O) or in PostgreSQL (read on every check, so a token revoked through any
//! node is refused by all). Either way only hashes are stored and a change is durable before
//! it is acknowledged.

use super::auth::{Role, TokenInfo};
use crate::store::{GroupFlush, PgPool, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

#[derive(Serialize, Deserialize)]
pub struct StoredToken {
    pub sha256: String,
    pub info: TokenInfo,
}

pub trait TokenRecords: Send + Sync {
    /// Store `token` unless one named alike exists; `false` if one does.
    fn insert(&self, token: &StoredToken) -> Result<bool, StoreError>;
    /// Remove the token named `name`; `false` if there was none.
    fn remove(&self, name: &str) -> Result<bool, StoreError>;
    fn all(&self) -> Result<Vec<TokenInfo>, StoreError>;
    fn by_hash(&self, sha256: &str) -> Result<Option<TokenInfo>, StoreError>;
    /// Whether a check reads only memory (and may run on an async thread).
    fn in_memory(&self) -> bool;
}

fn sled_failure(e: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(format!("tokens: {e}"))
}

pub struct SledTokens {
    tree: sled::Tree,
    flush: Arc<GroupFlush>,
    by_hash: RwLock<HashMap<String, TokenInfo>>,
}

impl SledTokens {
    pub fn open(flush: Arc<GroupFlush>) -> anyhow::Result<Self> {
        let tree = flush.db().open_tree("plover/tokens")?;
        let mut by_hash = HashMap::new();
        for item in tree.iter() {
            let (_, v) = item?;
            let t: StoredToken = serde_json::from_slice(&v)?;
            by_hash.insert(t.sha256, t.info);
        }
        Ok(SledTokens {
            tree,
            flush,
            by_hash: RwLock::new(by_hash),
        })
    }
}

impl TokenRecords for SledTokens {
    fn insert(&self, token: &StoredToken) -> Result<bool, StoreError> {
        let name = token.info.name.as_str();
        let value = serde_json::to_vec(token).expect("serialises");
        let swapped = self
            .tree
            .compare_and_swap(name, None as Option<&[u8]>, Some(value))
            .map_err(sled_failure)?;
        if swapped.is_err() {
            return Ok(false);
        }
        self.flush.sync()?;
        self.by_hash
            .write()
            .expect("tokens lock")
            .insert(token.sha256.clone(), token.info.clone());
        Ok(true)
    }

    fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let Some(v) = self.tree.remove(name).map_err(sled_failure)? else {
            return Ok(false);
        };
        self.flush.sync()?;
        if let Ok(t) = serde_json::from_slice::<StoredToken>(&v) {
            self.by_hash.write().expect("tokens lock").remove(&t.sha256);
        }
        Ok(true)
    }

    fn all(&self) -> Result<Vec<TokenInfo>, StoreError> {
        Ok(self
            .by_hash
            .read()
            .expect("tokens lock")
            .values()
            .cloned()
            .collect())
    }

    fn by_hash(&self, sha256: &str) -> Result<Option<TokenInfo>, StoreError> {
        Ok(self
            .by_hash
            .read()
            .expect("tokens lock")
            .get(sha256)
            .cloned())
    }

    fn in_memory(&self) -> bool {
        true
    }
}

pub struct PgTokens {
    pool: PgPool,
}

impl PgTokens {
    /// The tokens in the store database behind `pool` (its schema already migrated).
    pub fn new(pool: PgPool) -> Self {
        PgTokens { pool }
    }

    fn client(
        &self,
    ) -> Result<
        r2d2::PooledConnection<r2d2_postgres::PostgresConnectionManager<postgres::NoTls>>,
        StoreError,
    > {
        self.pool
            .get()
            .map_err(|e| StoreError::unavailable(format!("tokens: the store database: {e}")))
    }
}

fn pg_failure(e: postgres::Error) -> StoreError {
    crate::store::pg_error("tokens", e)
}

fn info_of(row: &postgres::Row) -> Result<TokenInfo, StoreError> {
    let role: String = row.get("role");
    let queues: Option<Vec<String>> = row.get("queues");
    Ok(TokenInfo {
        name: row.get("name"),
        role: serde_json::from_value(serde_json::Value::String(role.clone()))
            .map_err(|_| StoreError::corrupt(format!("tokens: unknown role '{role}'")))?,
        queues: queues.unwrap_or_default(),
        created_at: row.get("created_at"),
    })
}

fn role_text(role: Role) -> String {
    serde_json::to_value(role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl TokenRecords for PgTokens {
    fn insert(&self, token: &StoredToken) -> Result<bool, StoreError> {
        let inserted = self
            .client()?
            .execute(
                // No conflict target: nodes started together all insert the same bootstrap
                // token, and a race on the sha256 index (not the arbiter of `ON CONFLICT
                // (name)`) raised a unique violation that stopped a node's start.
                "INSERT INTO api_tokens (name, sha256, role, created_at, queues)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[
                    &token.info.name,
                    &token.sha256,
                    &role_text(token.info.role),
                    &token.info.created_at,
                    &token.info.queues,
                ],
            )
            .map_err(pg_failure)?;
        Ok(inserted == 1)
    }

    fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let removed = self
            .client()?
            .execute("DELETE FROM api_tokens WHERE name = $1", &[&name])
            .map_err(pg_failure)?;
        Ok(removed == 1)
    }

    fn all(&self) -> Result<Vec<TokenInfo>, StoreError> {
        self.client()?
            .query("SELECT name, role, created_at, queues FROM api_tokens", &[])
            .map_err(pg_failure)?
            .iter()
            .map(info_of)
            .collect()
    }

    fn by_hash(&self, sha256: &str) -> Result<Option<TokenInfo>, StoreError> {
        self.client()?
            .query_opt(
                "SELECT name, role, created_at, queues FROM api_tokens WHERE sha256 = $1",
                &[&sha256],
            )
            .map_err(pg_failure)?
            .as_ref()
            .map(info_of)
            .transpose()
    }

    fn in_memory(&self) -> bool {
        false
    }
}
