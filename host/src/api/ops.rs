//! Operations endpoints: health, readiness, Prometheus metrics, API tokens, the 404 fallback.

use super::AppState;
use super::auth::TokenInfo;
use super::auth::{AsAdmin, Role};
use super::error::{AppError, ErrorBody};
use super::migrations::JsonBody;
use crate::engine::state::{JobStatus, StepStatus};
use crate::runtime::stats;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Counters kept by the API itself (the runtime and engine keep their own).
#[derive(Default)]
pub struct Metrics {}

#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, description = "Alive")))]
pub async fn healthz() -> impl IntoResponse {
    "ok"
}

#[utoipa::path(get, path = "/readyz", tag = "operations", security(()), responses((status = 200, description = "Ready"), (status = 503, description = "Starting")))]
pub async fn readyz(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

pub async fn not_found() -> AppError {
    AppError::not_found("no such endpoint; the API lives under /api/v1")
}

/// Step durations are bucketed by these upper bounds, in seconds.
const STEP_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0];

#[utoipa::path(get, path = "/metrics", tag = "operations", security(()), responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP plover_jobs Migration jobs by state.\n# TYPE plover_jobs gauge"
    );
    let mut by_state = std::collections::BTreeMap::new();
    let mut all = vec![];
    let mut offset = 0;
    loop {
        let page = s.engine.list(&crate::engine::ListFilter {
            offset: Some(offset),
            limit: Some(500),
            ..Default::default()
        });
        offset += page.items.len();
        let done = page.items.is_empty() || offset >= page.total;
        all.extend(page.items);
        if done {
            break;
        }
    }
    for st in JobStatus::ALL {
        by_state.insert(st.as_str(), 0u64);
    }
    let (mut ok, mut failed) = (0u64, 0u64);
    for j in &all {
        *by_state.entry(j.status.as_str()).or_default() += 1;
        ok += j.completed_objects;
        failed += j.failed_objects;
    }
    for (state, n) in &by_state {
        let _ = writeln!(out, "plover_jobs{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP plover_objects_migrated_total Object results recorded, by status.\n# TYPE plover_objects_migrated_total counter"
    );
    let _ = writeln!(
        out,
        "plover_objects_migrated_total{{status=\"success\"}} {ok}"
    );
    let _ = writeln!(
        out,
        "plover_objects_migrated_total{{status=\"error\"}} {failed}"
    );

    // Step latency from the steps' own start and end times.
    let mut counts = [0u64; STEP_BUCKETS.len()];
    let (mut sum, mut n) = (0.0f64, 0u64);
    for j in &all {
        if let Ok(snap) = s.engine.snapshot(&j.id) {
            for st in snap
                .steps
                .iter()
                .filter(|st| st.status == StepStatus::Completed)
            {
                if let (Some(a), Some(b)) = (st.started_at, st.ended_at) {
                    let secs = (b - a).num_milliseconds().max(0) as f64 / 1000.0;
                    sum += secs;
                    n += 1;
                    for (i, le) in STEP_BUCKETS.iter().enumerate() {
                        if secs <= *le {
                            counts[i] += 1;
                        }
                    }
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP plover_step_duration_seconds Duration of completed steps.\n# TYPE plover_step_duration_seconds histogram"
    );
    for (i, le) in STEP_BUCKETS.iter().enumerate() {
        let _ = writeln!(
            out,
            "plover_step_duration_seconds_bucket{{le=\"{le}\"}} {}",
            counts[i]
        );
    }
    let _ = writeln!(
        out,
        "plover_step_duration_seconds_bucket{{le=\"+Inf\"}} {n}\nplover_step_duration_seconds_sum {sum}\nplover_step_duration_seconds_count {n}"
    );

    stats::write_prometheus(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
    role: Role,
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = NewToken,
    responses((status = 201, description = "The token, shown only now", body = CreatedToken), (status = 409, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_token(
    State(s): State<Arc<AppState>>,
    _: AsAdmin,
    JsonBody(req): JsonBody<NewToken>,
) -> Result<impl IntoResponse, AppError> {
    let token = s
        .tokens
        .create(&req.name, req.role, None)
        .map_err(|e| AppError::conflict("token-exists", e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "name": req.name, "role": req.role, "token": token })),
    ))
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", responses((status = 200, body = Vec<TokenInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_tokens(
    State(s): State<Arc<AppState>>,
    _: AsAdmin,
) -> Result<impl IntoResponse, AppError> {
    Ok(Json(s.tokens.list()))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{name}", tag = "tokens", params(("name" = String, Path)),
    responses((status = 204, description = "Revoked"), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn revoke_token(
    State(s): State<Arc<AppState>>,
    _: AsAdmin,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    match s.tokens.revoke(&name) {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(AppError::not_found(format!("no token named '{name}'"))),
        Err(e) => Err(AppError::internal(e.to_string())),
    }
}

/// A new token. `token` is shown only in this response; the host keeps its hash.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub name: String,
    pub role: Role,
    pub token: String,
}
