//! `/api/v1/migrations`: create, list, show, act on, delete; logs and object results paged.

use super::AppState;
use super::auth::{AsOperator, AsViewer};
use super::error::AppError;
use super::error::ErrorBody;
use crate::engine::job::JobSnapshot;
use crate::engine::state::JobStatus;
use crate::engine::{IndexedObject, JobPage, ListFilter, LogLine, NewMigration};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `Json<T>` with the API's error shape: 400 for malformed JSON, 422 for the wrong fields or
/// types, 413 for a body over the limit.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(rejection) => Err(json_error(rejection)),
        }
    }
}

pub fn json_error(rejection: JsonRejection) -> AppError {
    let message = rejection.body_text();
    match rejection {
        JsonRejection::JsonDataError(_) => AppError::unprocessable("invalid-body", message),
        JsonRejection::MissingJsonContentType(_) => {
            AppError::bad_request("send the body as JSON with Content-Type: application/json")
        }
        JsonRejection::BytesRejection(_) if rejection_is_too_large(&message) => {
            AppError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", message)
        }
        _ => AppError::bad_request(message),
    }
}

fn rejection_is_too_large(message: &str) -> bool {
    message.contains("length limit") || message.contains("too large")
}

/// Run engine work that may block (plugin calls, waiting for a run to wind down).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::internal(format!("worker failed: {e}")))?
}

#[utoipa::path(post, path = "/api/v1/migrations", tag = "migrations", request_body = NewMigration,
    responses((status = 201, description = "Created and planned", body = JobSnapshot), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create(
    State(s): State<Arc<AppState>>,
    AsOperator(caller): AsOperator,
    JsonBody(req): JsonBody<NewMigration>,
) -> Result<impl IntoResponse, AppError> {
    let engine = s.engine.clone();
    let snap = blocking(move || Ok(engine.create(req, &caller.name)?)).await?;
    Ok((StatusCode::CREATED, Json(snap)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    handler: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/migrations", tag = "migrations",
    params(("status" = Option<JobStatus>, Query, description = "Only jobs in this state"), ("handler" = Option<String>, Query, description = "Only jobs of this plugin"), ("offset" = Option<usize>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, description = "Newest first", body = JobPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    _: AsViewer,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, AppError> {
    let Query(q) = query.map_err(|e| AppError::bad_request(e.body_text()))?;
    let status = match q.status {
        Some(st) => Some(st.parse::<JobStatus>().map_err(AppError::bad_request)?),
        None => None,
    };
    Ok(Json(s.engine.list(&ListFilter {
        status,
        handler: q.handler,
        offset: q.offset,
        limit: q.limit,
    })))
}

#[utoipa::path(get, path = "/api/v1/migrations/{id}", tag = "migrations", params(("id" = String, Path)),
    responses((status = 200, body = JobSnapshot), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn show(
    State(s): State<Arc<AppState>>,
    _: AsViewer,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    Ok(Json(s.engine.snapshot(&id)?))
}

#[utoipa::path(delete, path = "/api/v1/migrations/{id}", tag = "migrations", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody), (status = 409, description = "Running", body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn remove(
    State(s): State<Arc<AppState>>,
    AsOperator(caller): AsOperator,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    let engine = s.engine.clone();
    blocking(move || Ok(engine.delete(&id, &caller.name)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /migrations/{id}/{action}`: validate, replan, execute, approve, pause, resume,
/// cancel, retry, rollback. Answers 202 with the snapshot; the work goes on in the background.
#[utoipa::path(post, path = "/api/v1/migrations/{id}/{action}", tag = "migrations",
    params(("id" = String, Path), ("action" = String, Path, description = "validate, replan, execute, approve, pause, resume, cancel, retry or rollback")),
    responses((status = 202, description = "Accepted; the work goes on in the background", body = JobSnapshot), (status = 404, body = ErrorBody), (status = 409, description = "Illegal in the job's state, or refused by a gate", body = ErrorBody), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn act(
    State(s): State<Arc<AppState>>,
    AsOperator(caller): AsOperator,
    Path((id, action)): Path<(String, String)>,
) -> Result<impl IntoResponse, AppError> {
    let engine = s.engine.clone();
    let actor = caller.name.clone();
    let snap = blocking(move || {
        Ok(match action.as_str() {
            "validate" | "dry-run" => engine.validate(&id, &actor)?,
            "replan" => engine.replan(&id, &actor)?,
            "execute" => engine.execute(&id, &actor)?,
            "approve" => engine.approve(&id, &actor)?,
            "pause" => engine.pause(&id, &actor)?,
            "resume" => engine.resume(&id, &actor)?,
            "cancel" => engine.cancel(&id, &actor)?,
            "retry" => engine.retry(&id, &actor)?,
            "rollback" => engine.rollback(&id, &actor)?,
            other => {
                return Err(AppError::not_found(format!(
                    "no action '{other}'; see the API reference"
                )));
            }
        })
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(snap)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Logs: the last sequence number seen. Objects: the next index wanted is `after + 1`.
    after: Option<u64>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/migrations/{id}/logs", tag = "migrations",
    params(("id" = String, Path), ("after" = Option<u64>, Query, description = "Last sequence number seen"), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = LogPage), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn logs(
    State(s): State<Arc<AppState>>,
    _: AsViewer,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, AppError> {
    let Query(q) = query.map_err(|e| AppError::bad_request(e.body_text()))?;
    let lines = s
        .engine
        .logs(&id, q.after.unwrap_or(0), q.limit.unwrap_or(200))?;
    let next = lines.last().map(|l| l.seq);
    Ok(Json(
        serde_json::json!({ "items": lines, "next_after": next }),
    ))
}

#[utoipa::path(get, path = "/api/v1/migrations/{id}/objects", tag = "migrations",
    params(("id" = String, Path), ("after" = Option<u64>, Query, description = "Last index seen"), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = ObjectPage), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn objects(
    State(s): State<Arc<AppState>>,
    _: AsViewer,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, AppError> {
    let Query(q) = query.map_err(|e| AppError::bad_request(e.body_text()))?;
    let from = q.after.map(|a| a + 1).unwrap_or(0);
    let items = s.engine.objects(&id, from, q.limit.unwrap_or(500))?;
    let next = items.last().map(|o| o.index);
    Ok(Json(
        serde_json::json!({ "items": items, "next_after": next }),
    ))
}

/// A page of log lines; pass `next_after` as `after` for the next page.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LogPage {
    pub items: Vec<LogLine>,
    pub next_after: Option<u64>,
}

/// A page of object results; pass `next_after` as `after` for the next page.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ObjectPage {
    pub items: Vec<IndexedObject>,
    pub next_after: Option<u64>,
}
