//! The worker protocol over HTTP: claim a task from a queue (long poll), renew its lease,
//! report, complete or fail it. The engine side is `crate::workers`.
//!
//! A `worker` token reaches only these routes, and only for the queues it names; operators
//! and admins reach every queue.

use super::AppState;
use super::auth::{Caller, Role};
use super::error::AppError;
use super::extract::{JsonBody, blocking};
use crate::model::{ErrorKind, MigrationError, RecoveryAction, StepOutcome, StepReport};
use crate::workers::{Beat, ClaimedTask, WorkerError, WorkerReport};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// The longest a claim waits for a task (below the request time limit).
pub const MAX_CLAIM_WAIT_MS: u64 = 25_000;

/// How long a complete or fail waits for the engine to record the task's end.
const FINISH_WAIT: Duration = Duration::from_secs(20);

impl From<WorkerError> for AppError {
    fn from(e: WorkerError) -> Self {
        match e {
            WorkerError::Fenced(_) => AppError::conflict("lease-lost", e.to_string()),
            WorkerError::Refused(m) => AppError::unprocessable("invalid-report", m),
            WorkerError::NotRecorded(m) => {
                AppError::new(StatusCode::SERVICE_UNAVAILABLE, "not-recorded", m)
            }
        }
    }
}

/// 403 unless `caller` may work on `queue`.
fn may_serve(caller: &Caller, queue: &str) -> Result<(), AppError> {
    let allowed = match caller.role {
        Role::Worker => caller.queues.iter().any(|q| q == queue),
        Role::Viewer => false,
        Role::Operator | Role::Admin => true,
    };
    if allowed {
        Ok(())
    } else {
        Err(AppError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("token '{}' may not work on queue '{queue}'", caller.name),
        ))
    }
}

/// Which queues to take a task from.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// Queue names, tried in this order.
    #[schema(min_items = 1, max_items = 64)]
    pub queues: Vec<String>,
    /// Who claims (shown in the job's log); default: the token's name.
    #[serde(default)]
    #[schema(max_length = 64)]
    pub worker: Option<String>,
    /// How long to wait for a task, in milliseconds (at most 25,000; default 0).
    #[serde(default)]
    pub wait_ms: u64,
}

/// `POST /workers/claim`: the oldest task waiting on one of the queues, or 204 after the wait.
#[utoipa::path(post, path = "/api/v1/workers/claim", tag = "workers", operation_id = "claim_task",
    request_body = Claim,
    responses((status = 200, description = "A task, held under the lease it names", body = ClaimedTask),
        (status = 204, description = "No task came within the wait"),
        (status = 403, description = "The token may not work on a queue named", body = super::error::ErrorBody)))]
pub async fn claim(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    JsonBody(req): JsonBody<Claim>,
) -> Result<Response, AppError> {
    if req.queues.is_empty() || req.queues.len() > 64 {
        return Err(AppError::unprocessable(
            "invalid-body",
            "name 1-64 queues to claim from",
        ));
    }
    for q in &req.queues {
        may_serve(&caller, q)?;
    }
    let mut worker = req.worker.unwrap_or_else(|| caller.name.clone());
    crate::runtime::bounds::cut(&mut worker, 64, "worker");
    let wait = Duration::from_millis(req.wait_ms.min(MAX_CLAIM_WAIT_MS));
    let task = s.engine.workers().claim(&req.queues, &worker, wait).await;
    Ok(match task {
        Some(t) => Json(t).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// The lease a heartbeat renews.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub lease: String,
}

fn check_task(s: &AppState, caller: &Caller, task: &str) -> Result<(), AppError> {
    match s.engine.workers().queue_of(task) {
        Some(queue) => may_serve(caller, &queue),
        // Ended, fenced or never offered here: the worker is to stop either way.
        None => Err(WorkerError::Fenced(task.to_string()).into()),
    }
}

/// `POST /workers/tasks/{task}/heartbeat`: renew the lease; the answer says if the run stops.
#[utoipa::path(post, path = "/api/v1/workers/tasks/{task}/heartbeat", tag = "workers", operation_id = "heartbeat_task",
    params(("task" = String, Path)), request_body = Heartbeat,
    responses((status = 200, description = "Renewed; `stop` set when the worker is to stop", body = Beat),
        (status = 409, description = "The lease is lost (fenced): stop without reporting", body = super::error::ErrorBody)))]
pub async fn heartbeat(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(task): Path<String>,
    JsonBody(req): JsonBody<Heartbeat>,
) -> Result<Json<Beat>, AppError> {
    check_task(&s, &caller, &task)?;
    Ok(Json(s.engine.workers().heartbeat(&task, &req.lease)?))
}

/// `POST /workers/tasks/{task}/report`: logs, progress, object results and a checkpoint,
/// recorded durably before the answer (which renews the lease, as a heartbeat does).
#[utoipa::path(post, path = "/api/v1/workers/tasks/{task}/report", tag = "workers", operation_id = "report_task",
    params(("task" = String, Path)), request_body = WorkerReport,
    responses((status = 200, description = "Recorded", body = Beat),
        (status = 409, description = "The lease is lost (fenced): nothing was recorded", body = super::error::ErrorBody)))]
pub async fn report(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(task): Path<String>,
    JsonBody(req): JsonBody<WorkerReport>,
) -> Result<Json<Beat>, AppError> {
    check_task(&s, &caller, &task)?;
    let state = s.clone();
    let beat = blocking(move || {
        let lease = req.lease.clone();
        Ok(state.engine.workers().report(&task, &lease, req)?)
    })
    .await?;
    Ok(Json(beat))
}

/// How the task ended well.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Complete {
    pub lease: String,
    #[serde(default)]
    pub summary: String,
    /// `partial` when some objects failed and the rest is done (default `complete`).
    #[serde(default)]
    pub outcome: StepOutcome,
}

/// `POST /workers/tasks/{task}/complete`: the step (or its rollback) is done; answered once the
/// engine recorded it.
#[utoipa::path(post, path = "/api/v1/workers/tasks/{task}/complete", tag = "workers", operation_id = "complete_task",
    params(("task" = String, Path)), request_body = Complete,
    responses((status = 204, description = "Recorded"),
        (status = 409, description = "The lease is lost (fenced): nothing was recorded", body = super::error::ErrorBody)))]
pub async fn complete(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(task): Path<String>,
    JsonBody(req): JsonBody<Complete>,
) -> Result<StatusCode, AppError> {
    check_task(&s, &caller, &task)?;
    let mut report = StepReport {
        summary: req.summary,
        outcome: req.outcome,
    };
    crate::runtime::bounds::step_report(&mut report);
    finish(s, task, req.lease, Ok(report)).await
}

/// How the task failed, in the contract's error kinds.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Fail {
    pub lease: String,
    pub kind: ErrorKind,
    pub message: String,
    /// Whether another attempt may succeed (from the last checkpoint).
    #[serde(default)]
    pub retryable: bool,
    #[serde(default)]
    pub recovery: Vec<RecoveryAction>,
}

/// `POST /workers/tasks/{task}/fail`: the attempt failed (`cancelled` after a stop the
/// heartbeat announced); answered once the engine recorded it.
#[utoipa::path(post, path = "/api/v1/workers/tasks/{task}/fail", tag = "workers", operation_id = "fail_task",
    params(("task" = String, Path)), request_body = Fail,
    responses((status = 204, description = "Recorded"),
        (status = 409, description = "The lease is lost (fenced): nothing was recorded", body = super::error::ErrorBody)))]
pub async fn fail(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(task): Path<String>,
    JsonBody(req): JsonBody<Fail>,
) -> Result<StatusCode, AppError> {
    check_task(&s, &caller, &task)?;
    let mut error = MigrationError {
        kind: req.kind,
        message: req.message,
        retryable: req.retryable,
        recovery: req.recovery,
    };
    crate::runtime::bounds::error(&mut error);
    finish(s, task, req.lease, Err(error)).await
}

async fn finish(
    s: Arc<AppState>,
    task: String,
    lease: String,
    end: Result<StepReport, MigrationError>,
) -> Result<StatusCode, AppError> {
    blocking(move || {
        s.engine
            .workers()
            .finish(&task, &lease, end, FINISH_WAIT)
            .map_err(AppError::from)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
