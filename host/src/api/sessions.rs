//! Sign-in for the web console: an API token is exchanged for a session cookie (`HttpOnly`,
//! `SameSite=Strict`), so the browser never keeps the token in a URL or in storage. A session
//! stands for its token (only the token's hash is kept with it): revoking the token ends
//! every session made from it, and signing out ends the one. A mutating request made with the
//! cookie must also carry the session's CSRF token in the `X-CSRF-Token` header, which only
//! pages of this origin can read (`GET /api/v1/session`). The bearer-token API is unchanged.

use super::AppState;
use super::auth::{Role, TokenStore, hash};
use super::error::AppError;
use super::extract::{JsonBody, blocking};
use super::session_records::{SessionRecords, SledSessions, StoredSession};
use crate::store::{GroupFlush, StoreError};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The session cookie's name.
pub const COOKIE: &str = "plover_session";
/// The header a cookie-authenticated mutating request carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts.
pub const SESSION_HOURS: i64 = 12;

pub struct SessionStore {
    records: Box<dyn SessionRecords>,
    /// Mark the cookie `Secure` (the console is served over https, e.g. behind a proxy).
    secure: bool,
}

impl SessionStore {
    pub fn new(records: impl SessionRecords + 'static, secure: bool) -> Self {
        SessionStore {
            records: Box::new(records),
            secure,
        }
    }

    /// The sessions kept in the embedded database of `flush`.
    pub fn open(flush: Arc<GroupFlush>, secure: bool) -> anyhow::Result<Self> {
        Ok(Self::new(SledSessions::open(flush)?, secure))
    }

    /// A new session standing for the token that hashes to `token_sha256`: its id (for the
    /// cookie) and record. Durable when this returns.
    fn create(&self, token_sha256: &str) -> Result<(String, StoredSession), StoreError> {
        let id = random_secret();
        let now = Utc::now();
        let session = StoredSession {
            token_sha256: token_sha256.to_string(),
            csrf: random_secret(),
            created_at: now,
            expires_at: now + Duration::hours(SESSION_HOURS),
        };
        self.records.insert(&hash(&id), &session)?;
        Ok((id, session))
    }

    /// The live session with this cookie value, if any.
    pub fn check(&self, id: &str) -> Result<Option<StoredSession>, StoreError> {
        Ok(self
            .records
            .get(&hash(id))?
            .filter(|s| s.expires_at > Utc::now()))
    }

    /// [`SessionStore::check`] from an async thread.
    pub async fn check_from_async(
        state: &Arc<AppState>,
        id: &str,
    ) -> Result<Option<StoredSession>, AppError> {
        if state.sessions.records.in_memory() {
            return Ok(state.sessions.check(id)?);
        }
        let (state, id) = (state.clone(), id.to_string());
        blocking(move || Ok(state.sessions.check(&id)?)).await
    }

    fn end(&self, id: &str) -> Result<(), StoreError> {
        self.records.remove(&hash(id))
    }

    fn cookie(&self, value: &str, max_age_secs: i64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_secs}{secure}"
        ))
        .expect("a cookie of URL-safe characters")
    }
}

/// 256 random bits as hex.
fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The session cookie of a request, if it sent one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// An API token (`plv_…`).
    #[schema(min_length = 1, max_length = 200)]
    token: String,
}

/// The signed-in session, as the console sees it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionInfo {
    /// The token's name.
    pub name: String,
    pub role: Role,
    /// Send it as `X-CSRF-Token` with every mutating request.
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

#[utoipa::path(post, path = "/api/v1/session", tag = "tokens", operation_id = "sign_in", security(()),
    request_body = SignIn,
    responses((status = 201, description = "Signed in: the session cookie is set", body = SessionInfo),
        (status = 401, description = "Unknown or revoked token", body = super::error::ErrorBody)))]
pub async fn sign_in(
    State(s): State<Arc<AppState>>,
    JsonBody(req): JsonBody<SignIn>,
) -> Result<impl IntoResponse, AppError> {
    let info = TokenStore::check_from_async(&s, &req.token)
        .await?
        .ok_or_else(|| {
            AppError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unknown or revoked token",
            )
        })?;
    let state = s.clone();
    let (id, session) = blocking(move || Ok(state.sessions.create(&hash(&req.token))?)).await?;
    let cookie = s.sessions.cookie(&id, SESSION_HOURS * 3600);
    Ok((
        StatusCode::CREATED,
        [(header::SET_COOKIE, cookie)],
        Json(SessionInfo {
            name: info.name,
            role: info.role,
            csrf: session.csrf,
            expires_at: session.expires_at,
        }),
    ))
}

/// The session of this request and the token it stands for, or 401 saying why.
async fn current(
    state: &Arc<AppState>,
    headers: &HeaderMap,
) -> Result<(String, StoredSession, super::auth::TokenInfo), AppError> {
    let unauthorized = |m: &str| AppError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let id = session_cookie(headers).ok_or_else(|| unauthorized("not signed in"))?;
    let session = SessionStore::check_from_async(state, id)
        .await?
        .ok_or_else(|| unauthorized("the session ended; sign in again"))?;
    let token = TokenStore::check_hash_from_async(state, &session.token_sha256)
        .await?
        .ok_or_else(|| unauthorized("the token this session was made from was revoked"))?;
    Ok((id.to_string(), session, token))
}

#[utoipa::path(get, path = "/api/v1/session", tag = "tokens", operation_id = "show_session", security(("session" = [])),
    responses((status = 200, body = SessionInfo),
        (status = 401, description = "Not signed in, or the session ended", body = super::error::ErrorBody)))]
pub async fn show(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, AppError> {
    let (_, session, token) = current(&s, &headers).await?;
    Ok(Json(SessionInfo {
        name: token.name,
        role: token.role,
        csrf: session.csrf,
        expires_at: session.expires_at,
    }))
}

#[utoipa::path(delete, path = "/api/v1/session", tag = "tokens", operation_id = "sign_out", security(("session" = [])),
    responses((status = 204, description = "Signed out: the session is over and its cookie cleared"),
        (status = 401, description = "Not signed in", body = super::error::ErrorBody),
        (status = 403, description = "Without the session's CSRF token", body = super::error::ErrorBody)))]
pub async fn sign_out(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, AppError> {
    let (id, session, _) = current(&s, &headers).await?;
    super::auth::check_csrf(&headers, &session)?;
    let state = s.clone();
    blocking(move || Ok(state.sessions.end(&id)?)).await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, s.sessions.cookie("", 0))],
    ))
}
