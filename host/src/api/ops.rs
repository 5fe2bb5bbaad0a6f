//! Operations endpoints: health, readiness, Prometheus metrics, API tokens, the fallbacks.

use super::AppState;
use super::auth::{AsAdmin, Role, TokenError, TokenInfo};
use super::error::AppError;
use super::extract::{ApiPath, JsonBody, blocking};
use crate::runtime::loading::LoadState;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::Ordering;

#[utoipa::path(get, path = "/healthz", tag = "operations", operation_id = "healthz", security(()),
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
pub async fn healthz() -> impl IntoResponse {
    "ok"
}

#[utoipa::path(get, path = "/readyz", tag = "operations", operation_id = "readyz", security(()),
    responses((status = 200, description = "Serving the API. Plugins may still be loading in the background: the body's second line says so, and /readyz/plugins tells which", body = String, content_type = "text/plain"),
        (status = 503, description = "Starting", body = String, content_type = "text/plain")))]
pub async fn readyz(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    if !s.ready.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting".to_string());
    }
    let unfinished = s.engine.registry().loads().unfinished().len();
    if unfinished == 0 {
        (StatusCode::OK, "ready".to_string())
    } else {
        let text = format!("ready\n{unfinished} plugin(s) still loading: see /readyz/plugins\n");
        (StatusCode::OK, text)
    }
}

#[utoipa::path(get, path = "/readyz/plugins", tag = "operations", operation_id = "readyz_plugins", security(()),
    responses((status = 200, description = "Every plugin found at start-up has loaded or failed to; a line per plugin: `SOURCE: loaded as NAME@VERSION in MS ms`, or `SOURCE: failed: ERROR`", body = String, content_type = "text/plain"),
        (status = 503, description = "Plugins still loading; the same lines, `SOURCE: waiting` or `SOURCE: compiling` for those not done", body = String, content_type = "text/plain")))]
pub async fn readyz_plugins(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    let (in_progress, loads) = s.engine.registry().loads().statuses();
    let mut text = String::new();
    for load in &loads {
        let state = match &load.state {
            LoadState::Waiting => "waiting".to_string(),
            LoadState::Compiling => "compiling".to_string(),
            LoadState::Loaded { plugin, took_ms } => format!("loaded as {plugin} in {took_ms} ms"),
            LoadState::Failed { error } => format!("failed: {error}"),
        };
        text.push_str(&format!("{}: {state}\n", load.source));
    }
    if loads.is_empty() {
        text.push_str("no plugins found at start-up\n");
    }
    let ready = s.ready.load(Ordering::SeqCst) && !in_progress;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, text)
}

pub async fn not_found() -> AppError {
    AppError::not_found("no such endpoint; the API lives under /api/v1")
}

pub async fn method_not_allowed() -> AppError {
    AppError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this endpoint does not take that method; see /api/v1/openapi.json",
    )
}

/// The metrics: counters and histograms kept as things happen, and jobs by state from the
/// store's counters, so a scrape costs the same with 10 jobs or 100,000.
#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "metrics", security(()),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(s): State<Arc<AppState>>) -> Result<impl IntoResponse, AppError> {
    let engine = s.engine.clone();
    let text = blocking(move || {
        let jobs = &crate::metrics::get().jobs;
        for (status, n) in engine.counts_by_status()? {
            jobs.with_label_values(&[status.as_str()]).set(n as i64);
        }
        Ok(crate::metrics::render(engine.node().as_deref()))
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// 1-64 letters, digits, dashes or underscores.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    name: String,
    role: Role,
    /// For a `worker` token: the queues it serves (1-64 names).
    #[serde(default)]
    queues: Vec<String>,
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", operation_id = "create_token", request_body = NewToken,
    responses((status = 201, description = "The token, shown only now", body = CreatedToken),
        (status = 409, description = "A token of that name exists", body = super::error::ErrorBody)))]
pub async fn create_token(
    State(s): State<Arc<AppState>>,
    _: AsAdmin,
    JsonBody(req): JsonBody<NewToken>,
) -> Result<impl IntoResponse, AppError> {
    let state = s.clone();
    let name = req.name.clone();
    let token = blocking(move || {
        state
            .tokens
            .create(&req.name, req.role, req.queues, None)
            .map_err(|e| match e {
                TokenError::InvalidName => {
                    AppError::unprocessable("invalid-token-name", e.to_string())
                }
                TokenError::Exists(_) => AppError::conflict("token-exists", e.to_string()),
                TokenError::InvalidQueues => {
                    AppError::unprocessable("invalid-token-queues", e.to_string())
                }
                TokenError::Store(e) => e.into(),
            })
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            name,
            role: req.role,
            token,
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", operation_id = "list_tokens",
    responses((status = 200, body = Vec<TokenInfo>)))]
pub async fn list_tokens(
    State(s): State<Arc<AppState>>,
    _: AsAdmin,
) -> Result<impl IntoResponse, AppError> {
    let state = s.clone();
    Ok(Json(blocking(move || Ok(state.tokens.list()?)).await?))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{name}", tag = "tokens", operation_id = "revoke_token",
    params(("name" = String, Path)),
    responses((status = 204, description = "Revoked")))]
pub async fn revoke_token(
    State(s): State<Arc<AppState>>,
    _: AsAdmin,
    ApiPath(name): ApiPath<String>,
) -> Result<impl IntoResponse, AppError> {
    let state = s.clone();
    let shown = crate::engine::truncated(&name, 64);
    match blocking(move || Ok(state.tokens.revoke(&name)?)).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(AppError::not_found(format!("no token named '{shown}'"))),
    }
}

/// A new token. `token` is shown only in this response; the host keeps its hash.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub name: String,
    pub role: Role,
    pub token: String,
}
