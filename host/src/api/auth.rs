//! Bearer tokens with roles. Tokens are stored only as SHA-256 hashes; the first admin token
//! is made on first start and shown once.

use super::AppState;
use super::error::AppError;
use crate::store::{GroupFlush, StoreError};
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything.
    Viewer,
    /// Viewer, plus create, run, approve, cancel and roll back migrations.
    Operator,
    /// Operator, plus plugins and tokens.
    Admin,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
struct StoredToken {
    sha256: String,
    info: TokenInfo,
}

/// Tokens by hash, persisted in sled. A change is durable before it is acknowledged: a
/// revoked token stays revoked whatever happens to the process after the answer.
pub struct TokenStore {
    tree: sled::Tree,
    flush: Arc<GroupFlush>,
    by_hash: RwLock<HashMap<String, TokenInfo>>,
}

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token name must be 1-64 letters, digits, dashes or underscores")]
    InvalidName,
    #[error("a token named '{0}' exists")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random token (244 random bits).
fn new_token() -> String {
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    format!("plv_{}{}", a.simple(), b.simple())
}

fn sled_failure(e: sled::Error) -> StoreError {
    StoreError::unavailable(format!("tokens: {e}"))
}

impl TokenStore {
    pub fn open(flush: Arc<GroupFlush>) -> anyhow::Result<Self> {
        let tree = flush.db().open_tree("plover/tokens")?;
        let mut by_hash = HashMap::new();
        for item in tree.iter() {
            let (_, v) = item?;
            let t: StoredToken = serde_json::from_slice(&v)?;
            by_hash.insert(t.sha256, t.info);
        }
        Ok(TokenStore {
            tree,
            flush,
            by_hash: RwLock::new(by_hash),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.read().expect("tokens lock").is_empty()
    }

    /// Store `token` (or a fresh one) as `name` with `role`; returns the token.
    pub fn create(
        &self,
        name: &str,
        role: Role,
        token: Option<String>,
    ) -> Result<String, TokenError> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(TokenError::InvalidName);
        }
        if self.tree.contains_key(name).map_err(sled_failure)? {
            return Err(TokenError::Exists(name.to_string()));
        }
        let token = token.unwrap_or_else(new_token);
        let stored = StoredToken {
            sha256: hash(&token),
            info: TokenInfo {
                name: name.into(),
                role,
                created_at: Utc::now(),
            },
        };
        self.tree
            .insert(name, serde_json::to_vec(&stored).expect("serialises"))
            .map_err(sled_failure)?;
        self.flush.sync()?;
        self.by_hash
            .write()
            .expect("tokens lock")
            .insert(stored.sha256, stored.info);
        Ok(token)
    }

    pub fn list(&self) -> Vec<TokenInfo> {
        let mut all: Vec<TokenInfo> = self
            .by_hash
            .read()
            .expect("tokens lock")
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Revoke the token `name`; durable when this returns. A token never revoked is `false`.
    pub fn revoke(&self, name: &str) -> Result<bool, StoreError> {
        let Some(v) = self.tree.remove(name).map_err(sled_failure)? else {
            return Ok(false);
        };
        self.flush.sync()?;
        if let Ok(t) = serde_json::from_slice::<StoredToken>(&v) {
            self.by_hash.write().expect("tokens lock").remove(&t.sha256);
        }
        Ok(true)
    }

    pub fn check(&self, token: &str) -> Option<TokenInfo> {
        self.by_hash
            .read()
            .expect("tokens lock")
            .get(&hash(token))
            .cloned()
    }
}

/// The token of an `Authorization` value: the scheme is case-insensitive (RFC 9110).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The authenticated caller of a request. Extracting it answers 401 without a valid token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// 403 unless the caller has at least `role`.
    pub fn require(&self, role: Role) -> Result<(), AppError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(AppError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token '{}' has role {:?}; this needs {:?}",
                    self.name, self.role, role
                )
                .to_lowercase(),
            ))
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = |m: &str| AppError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("an Authorization: Bearer token is required"))?;
        let value = header
            .to_str()
            .map_err(|_| unauthorized("the Authorization header is not text"))?;
        let token = bearer_token(value)
            .ok_or_else(|| unauthorized("expected Authorization: Bearer <token>"))?;
        let info = state
            .tokens
            .check(token)
            .ok_or_else(|| unauthorized("unknown or revoked token"))?;
        Ok(Caller {
            name: info.name,
            role: info.role,
        })
    }
}

/// A caller with at least the role named by the type; the check runs before the request body
/// is read, so a caller without the role gets 403 whatever it sent.
macro_rules! role_extractor {
    ($name:ident, $role:expr) => {
        #[derive(Debug, Clone)]
        pub struct $name(pub Caller);

        impl FromRequestParts<Arc<AppState>> for $name {
            type Rejection = AppError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &Arc<AppState>,
            ) -> Result<Self, Self::Rejection> {
                let caller = Caller::from_request_parts(parts, state).await?;
                caller.require($role)?;
                Ok($name(caller))
            }
        }
    };
}

role_extractor!(AsViewer, Role::Viewer);
role_extractor!(AsOperator, Role::Operator);
role_extractor!(AsAdmin, Role::Admin);
