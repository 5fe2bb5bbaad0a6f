//! Bearer tokens with roles. Tokens are stored only as SHA-256 hashes; the first admin token
//! is made on first start and shown once. The web console authenticates with a session cookie
//! made from a token instead (`sessions`); both reach the same roles.

use super::AppState;
use super::error::AppError;
use super::session_records::StoredSession;
use super::token_records::{SledTokens, StoredToken, TokenRecords};
use crate::store::{GroupFlush, StoreError};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Claim and report tasks of the worker queues the token names, and nothing else.
    Worker,
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
    /// The worker queues a `worker` token serves (empty for every other role).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// Tokens by hash (see [`TokenRecords`] for where they are kept). A change is durable before
/// it is acknowledged: a revoked token stays revoked whatever happens to the process after
/// the answer.
pub struct TokenStore {
    records: Box<dyn TokenRecords>,
}

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token name must be 1-64 letters, digits, dashes or underscores")]
    InvalidName,
    #[error("a token named '{0}' exists")]
    Exists(String),
    #[error(
        "a worker token names 1-64 queues (each 1-64 letters, digits, '.', '_' or '-'); other roles name none"
    )]
    InvalidQueues,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(crate) fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random token (244 random bits).
fn new_token() -> String {
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    format!("plv_{}{}", a.simple(), b.simple())
}

impl TokenStore {
    pub fn new(records: impl TokenRecords + 'static) -> Self {
        TokenStore {
            records: Box::new(records),
        }
    }

    /// The tokens kept in the embedded database of `flush`.
    pub fn open(flush: Arc<GroupFlush>) -> anyhow::Result<Self> {
        Ok(Self::new(SledTokens::open(flush)?))
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.records.all()?.is_empty())
    }

    /// Store `token` (or a fresh one) as `name` with `role` (and, for a worker, the queues it
    /// serves); returns the token.
    pub fn create(
        &self,
        name: &str,
        role: Role,
        queues: Vec<String>,
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
        let queues_fit = if role == Role::Worker {
            (1..=64).contains(&queues.len())
                && queues.iter().all(|q| crate::runtime::bounds::is_step_id(q))
        } else {
            queues.is_empty()
        };
        if !queues_fit {
            return Err(TokenError::InvalidQueues);
        }
        let token = token.unwrap_or_else(new_token);
        let stored = StoredToken {
            sha256: hash(&token),
            info: TokenInfo {
                name: name.into(),
                role,
                queues,
                created_at: Utc::now(),
            },
        };
        if !self.records.insert(&stored)? {
            return Err(TokenError::Exists(name.to_string()));
        }
        Ok(token)
    }

    pub fn list(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let mut all = self.records.all()?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// Revoke the token `name`; durable when this returns. A token never revoked is `false`.
    pub fn revoke(&self, name: &str) -> Result<bool, StoreError> {
        self.records.remove(name)
    }

    /// Who holds `token`, if anyone. May read the store: see [`TokenStore::check_from_async`].
    pub fn check(&self, token: &str) -> Result<Option<TokenInfo>, StoreError> {
        self.records.by_hash(&hash(token))
    }

    /// Who holds the token whose hash is `sha256`, if it is not revoked.
    pub fn check_hash(&self, sha256: &str) -> Result<Option<TokenInfo>, StoreError> {
        self.records.by_hash(sha256)
    }

    /// [`TokenStore::check_hash`] from an async thread.
    pub async fn check_hash_from_async(
        state: &Arc<AppState>,
        sha256: &str,
    ) -> Result<Option<TokenInfo>, AppError> {
        if state.tokens.records.in_memory() {
            return Ok(state.tokens.check_hash(sha256)?);
        }
        let (state, sha256) = (state.clone(), sha256.to_string());
        super::extract::blocking(move || Ok(state.tokens.check_hash(&sha256)?)).await
    }

    /// [`TokenStore::check`] from an async thread: on the blocking pool unless the tokens are
    /// in memory.
    pub async fn check_from_async(
        state: &Arc<AppState>,
        token: &str,
    ) -> Result<Option<TokenInfo>, AppError> {
        Self::check_hash_from_async(state, &hash(token)).await
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
    /// The queues a worker token serves.
    pub queues: Vec<String>,
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

/// 403 unless the request carries the session's CSRF token.
pub fn check_csrf(headers: &HeaderMap, session: &StoredSession) -> Result<(), AppError> {
    let sent = headers
        .get(super::sessions::CSRF_HEADER)
        .and_then(|v| v.to_str().ok());
    if sent == Some(session.csrf.as_str()) {
        Ok(())
    } else {
        Err(AppError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "a request made with the console's session must carry its X-CSRF-Token",
        ))
    }
}

/// Who makes a request: the holder of its bearer token, or of the console session its cookie
/// names (a mutating request with the cookie must also carry the session's CSRF token).
pub async fn authenticate(
    headers: &HeaderMap,
    method: &Method,
    state: &Arc<AppState>,
) -> Result<Caller, AppError> {
    let unauthorized = |m: &str| AppError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let Some(header) = headers.get(axum::http::header::AUTHORIZATION) else {
        if super::sessions::session_cookie(headers).is_none() {
            return Err(unauthorized("an Authorization: Bearer token is required"));
        }
        return from_session(headers, method, state).await;
    };
    let value = header
        .to_str()
        .map_err(|_| unauthorized("the Authorization header is not text"))?;
    let token = bearer_token(value)
        .ok_or_else(|| unauthorized("expected Authorization: Bearer <token>"))?;
    let info = TokenStore::check_from_async(state, token)
        .await?
        .ok_or_else(|| unauthorized("unknown or revoked token"))?;
    Ok(Caller {
        name: info.name,
        role: info.role,
        queues: info.queues,
    })
}

async fn from_session(
    headers: &HeaderMap,
    method: &Method,
    state: &Arc<AppState>,
) -> Result<Caller, AppError> {
    let unauthorized = |m: &str| AppError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let id = super::sessions::session_cookie(headers).expect("checked by the caller");
    let session = super::sessions::SessionStore::check_from_async(state, id)
        .await?
        .ok_or_else(|| unauthorized("the console session ended; sign in again"))?;
    let info = TokenStore::check_hash_from_async(state, &session.token_sha256)
        .await?
        .ok_or_else(|| unauthorized("the token this session was made from was revoked"))?;
    if !matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS") {
        check_csrf(headers, &session)?;
    }
    Ok(Caller {
        name: info.name,
        role: info.role,
        queues: info.queues,
    })
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        authenticate(&parts.headers, &parts.method, state).await
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
