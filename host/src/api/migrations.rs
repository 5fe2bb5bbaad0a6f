//! `/api/v1/migrations`: create, list, show, act on, delete; logs and object results paged.
//! Every handler that touches the engine runs on a blocking thread: the engine may call a
//! plugin, wait for a run to wind down or read the store.

use super::AppState;
use super::auth::{AsOperator, AsViewer};
use super::error::AppError;
use super::extract::{ApiPath, ApiQuery, JsonBody, blocking};
use crate::engine::job::JobSnapshot;
use crate::engine::state::JobStatus;
use crate::engine::{
    DeleteMode, IndexedObject, JobPage, ListFilter, LogLine, NewMigration, ObjectFilter, Request,
};
use crate::model::ObjectStatus;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[utoipa::path(post, path = "/api/v1/migrations", tag = "migrations", operation_id = "create_migration",
    request_body = NewMigration,
    responses((status = 201, description = "Created and planned", body = JobSnapshot)))]
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
    cursor: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/migrations", tag = "migrations", operation_id = "list_migrations",
    params(
        ("status" = Option<JobStatus>, Query, description = "Only jobs in this state"),
        ("handler" = Option<String>, Query, description = "Only jobs of this plugin"),
        ("cursor" = Option<String>, Query, pattern = "^([0-9a-f]{2})*$", description = "Continue after this page (`next_cursor`)"),
        ("offset" = Option<usize>, Query, description = "Skip this many"),
        ("limit" = Option<usize>, Query, description = "At most this many (1-500, default 50)")),
    responses((status = 200, description = "Newest first", body = JobPage)))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    _: AsViewer,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<impl IntoResponse, AppError> {
    let status = match q.status {
        Some(st) => Some(st.parse::<JobStatus>().map_err(AppError::bad_request)?),
        None => None,
    };
    if let Some(c) = &q.cursor
        && hex::decode(c).is_err()
    {
        return Err(AppError::bad_request(
            "cursor must be a next_cursor this API returned",
        ));
    }
    let engine = s.engine.clone();
    let filter = ListFilter {
        status,
        handler: q.handler,
        cursor: q.cursor,
        offset: q.offset,
        limit: q.limit,
    };
    let page = blocking(move || Ok(engine.list(&filter)?)).await?;
    Ok(Json(page))
}

#[utoipa::path(get, path = "/api/v1/migrations/{id}", tag = "migrations", operation_id = "show_migration",
    params(("id" = String, Path)),
    responses((status = 200, body = JobSnapshot)))]
pub async fn show(
    State(s): State<Arc<AppState>>,
    _: AsViewer,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, AppError> {
    let engine = s.engine.clone();
    Ok(Json(blocking(move || Ok(engine.snapshot(&id)?)).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

#[utoipa::path(delete, path = "/api/v1/migrations/{id}", tag = "migrations", operation_id = "delete_migration",
    params(("id" = String, Path),
        ("force" = Option<bool>, Query, description = "Delete even a job whose changes could still be rolled back (its rollback journal is lost)")),
    responses((status = 204, description = "Deleted"),
        (status = 409, description = "Running, or partly applied with a rollback journal (see `force`)", body = super::error::ErrorBody)))]
pub async fn remove(
    State(s): State<Arc<AppState>>,
    AsOperator(caller): AsOperator,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<impl IntoResponse, AppError> {
    let engine = s.engine.clone();
    let mode = if q.force {
        DeleteMode::Force
    } else {
        DeleteMode::Safe
    };
    blocking(move || Ok(engine.act(&id, Request::Delete(mode), &caller.name)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /migrations/{id}/{action}`: validate, replan, execute, approve, pause, resume,
/// cancel, retry, rollback. Answers 202 with the snapshot; the work goes on in the background,
/// on the node that holds the job (this one, or the one the request is forwarded to).
#[utoipa::path(post, path = "/api/v1/migrations/{id}/{action}", tag = "migrations", operation_id = "act_on_migration",
    params(("id" = String, Path), ("action" = String, Path, description = "validate, replan, execute, approve, pause, resume, cancel, retry or rollback")),
    responses((status = 202, description = "Accepted; the work goes on in the background", body = JobSnapshot),
        (status = 409, description = "Illegal in the job's state, or refused by a gate", body = super::error::ErrorBody)))]
pub async fn act(
    State(s): State<Arc<AppState>>,
    AsOperator(caller): AsOperator,
    ApiPath((id, action)): ApiPath<(String, String)>,
) -> Result<impl IntoResponse, AppError> {
    let request = match action.as_str() {
        "dry-run" => Some(Request::Act(crate::engine::state::Action::Validate)),
        // Forwarding encodes these; a request names them through their own routes.
        "delete" | "delete-force" => None,
        a if a.starts_with("retry-objects") => None,
        other => Request::parse(other),
    }
    .ok_or_else(|| {
        AppError::not_found(format!(
            "no action '{}'; see the API reference",
            crate::engine::truncated(&action, 40)
        ))
    })?;
    accepted(&s, id, request, caller.name).await
}

/// Carry out `request` on the job's node and answer 202 with the snapshot after it.
async fn accepted(
    s: &AppState,
    id: String,
    request: Request,
    actor: String,
) -> Result<(StatusCode, Json<JobSnapshot>), AppError> {
    let engine = s.engine.clone();
    let snap = blocking(move || {
        engine
            .act(&id, request, &actor)?
            .ok_or_else(|| AppError::internal("an action answered no snapshot"))
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(snap)))
}

/// Which step's failed objects to run again.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryObjects {
    /// The step; absent: every step that ended `partial`.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub step: Option<String>,
}

/// `POST /migrations/{id}/retry-objects`: run again only the failed objects of a job that ended
/// `partial` (contract 0.2 handlers): the handler's `execute` receives exactly their names.
#[utoipa::path(post, path = "/api/v1/migrations/{id}/retry-objects", tag = "migrations", operation_id = "retry_failed_objects",
    params(("id" = String, Path)), request_body = RetryObjects,
    responses((status = 202, description = "Accepted; the failed objects run again in the background", body = JobSnapshot),
        (status = 409, description = "The job is not `partial`, or the step named has no failed objects", body = super::error::ErrorBody)))]
pub async fn retry_objects(
    State(s): State<Arc<AppState>>,
    AsOperator(caller): AsOperator,
    ApiPath(id): ApiPath<String>,
    JsonBody(req): JsonBody<RetryObjects>,
) -> Result<impl IntoResponse, AppError> {
    accepted(&s, id, Request::RetryObjects(req.step), caller.name).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Logs: the last sequence number seen. Objects: the next index wanted is `after + 1`.
    after: Option<u64>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/migrations/{id}/logs", tag = "migrations", operation_id = "migration_logs",
    params(("id" = String, Path), ("after" = Option<u64>, Query, description = "Last sequence number seen"), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = LogPage)))]
pub async fn logs(
    State(s): State<Arc<AppState>>,
    _: AsViewer,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<impl IntoResponse, AppError> {
    let engine = s.engine.clone();
    let items =
        blocking(move || Ok(engine.logs(&id, q.after.unwrap_or(0), q.limit.unwrap_or(200))?))
            .await?;
    let next_after = items.last().map(|l| l.seq);
    Ok(Json(LogPage { items, next_after }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectQuery {
    after: Option<u64>,
    limit: Option<usize>,
    status: Option<ObjectStatus>,
    #[serde(default)]
    current: bool,
}

#[utoipa::path(get, path = "/api/v1/migrations/{id}/objects", tag = "migrations", operation_id = "migration_objects",
    params(("id" = String, Path), ("after" = Option<u64>, Query, description = "Last index seen (`next_after`)"), ("limit" = Option<usize>, Query),
        ("status" = Option<ObjectStatus>, Query, description = "Only results with this status. A page looks at no more than 5,000 results, so it may hold fewer than `limit`: go on from `next_after` until it is absent"),
        ("current" = Option<bool>, Query, description = "Leave out the errors that a later `retry-objects` redid, so each object shows its latest result (paged like `status`)")),
    responses((status = 200, body = ObjectPage)))]
pub async fn objects(
    State(s): State<Arc<AppState>>,
    _: AsViewer,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ObjectQuery>,
) -> Result<impl IntoResponse, AppError> {
    let engine = s.engine.clone();
    let page = blocking(move || {
        // Past the last possible index there is nothing (rather than wrapping to the start).
        let from = match q.after {
            None => Some(0),
            Some(a) => a.checked_add(1),
        };
        let Some(from) = from else {
            engine.snapshot(&id)?;
            return Ok(ObjectPage {
                items: vec![],
                next_after: None,
            });
        };
        let limit = q.limit.unwrap_or(500);
        Ok(match (q.status, q.current) {
            (None, false) => {
                let items = engine.objects(&id, from, limit)?;
                let next_after = items.last().map(|o| o.index);
                ObjectPage { items, next_after }
            }
            (status, current) => {
                let filter = ObjectFilter { status, current };
                let (items, next) = engine.objects_with_status(&id, from, limit, filter)?;
                ObjectPage {
                    items,
                    next_after: next.and_then(|n| n.checked_sub(1)),
                }
            }
        })
    })
    .await?;
    Ok(Json(page))
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
