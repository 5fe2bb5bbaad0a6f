//! The host's audit trail: every mutating request (POST, PUT, PATCH, DELETE) made with a valid
//! token (or a console session made from one), with the token's name, what it asked and the status it got, refused requests
//! included. Requests without a valid token are only counted
//! (`plover_unauthenticated_requests_total`): anyone can send them, so storing each would let
//! anyone fill the disk. Entries are bounded in size and the oldest are dropped past the
//! retention. Job actions are also recorded in each job's own change feed.

use super::AppState;
use super::audit_records::{AuditRecords, NewEntry, SledAudit};
use super::auth::AsAdmin;
use super::error::AppError;
use super::extract::{ApiQuery, blocking};
use crate::store::{GroupFlush, StoreError};
use axum::Json;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The longest path (query included) an entry keeps; longer ones are cut and marked.
pub const MAX_PATH: usize = 256;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// The token's name.
    pub actor: String,
    pub method: String,
    /// The path and query asked, cut to 256 characters.
    pub path: String,
    pub status: u16,
}

/// The audit trail, kept where the jobs are (see [`AuditRecords`]).
pub struct AuditLog {
    records: Box<dyn AuditRecords>,
}

impl AuditLog {
    pub fn new(records: impl AuditRecords + 'static) -> Self {
        AuditLog {
            records: Box::new(records),
        }
    }

    /// The trail in the embedded database of `flush`, keeping `retention` entries.
    pub fn open(flush: Arc<GroupFlush>, retention: u64) -> anyhow::Result<Self> {
        Ok(Self::new(SledAudit::open(flush, retention)?))
    }

    /// Append an entry (dropping the oldest past the retention); durable when this returns.
    pub fn append(
        &self,
        actor: String,
        method: String,
        path: String,
        status: u16,
    ) -> Result<(), StoreError> {
        self.records.append(NewEntry {
            at: Utc::now(),
            actor,
            method,
            path: crate::engine::truncated(&path, MAX_PATH),
            status,
        })
    }

    pub fn after(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        if after >= i64::MAX as u64 {
            return Ok(vec![]);
        }
        self.records.after(after, limit)
    }
}

/// A worker's heartbeats and reports: several a second per task, and what they carry is in the
/// job's own feed. Claims that got a task, completions and failures are audited.
fn is_worker_chatter(path: &str) -> bool {
    path.starts_with("/api/v1/workers/tasks/")
        && (path.ends_with("/heartbeat") || path.ends_with("/report"))
}

/// Middleware: record every mutating request made with a valid token once its response is
/// known, durably, before the response leaves.
pub async fn record(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    if matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS") || is_worker_chatter(req.uri().path())
    {
        return next.run(req).await;
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
    // A caller that cannot be checked (the store is down) is treated as unknown here; the
    // handler's own check answers the request with the reason.
    let actor = super::auth::authenticate(req.headers(), &method, &s)
        .await
        .ok()
        .map(|c| c.name);
    let response = next.run(req).await;
    let Some(actor) = actor else {
        crate::metrics::get().unauthenticated.inc();
        return response;
    };
    let status = response.status().as_u16();
    if status == 204 && path == "/api/v1/workers/claim" {
        // An idle worker's long poll, every few seconds: nothing happened.
        return response;
    }
    let state = s.clone();
    let written = tokio::task::spawn_blocking(move || {
        state.audit.append(actor, method.to_string(), path, status)
    })
    .await;
    match written {
        Ok(Ok(())) => response,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "could not record an audit entry");
            AppError::from(e).into_response()
        }
        Err(e) => AppError::internal(format!("audit worker: {e}")).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "tokens", operation_id = "list_audit",
    params(("after" = Option<u64>, Query, description = "Last sequence number seen"), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = AuditPage)))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    _: AsAdmin,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<impl IntoResponse, AppError> {
    let state = s.clone();
    let items = blocking(move || {
        Ok(state
            .audit
            .after(q.after.unwrap_or(0), q.limit.unwrap_or(200).clamp(1, 1000))?)
    })
    .await?;
    let next_after = items.last().map(|e| e.seq);
    Ok(Json(AuditPage { items, next_after }))
}

/// A page of the audit trail; pass `next_after` as `after` for the next page.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    pub next_after: Option<u64>,
}
