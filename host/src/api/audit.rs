//! The host's audit trail: every mutating request (POST, PUT, PATCH, DELETE), with the
//! token's name, what it asked and the status it got, refused requests included. Job actions
//! are also recorded in each job's own change feed.

use super::AppState;
use super::auth::AsAdmin;
use super::error::{AppError, ErrorBody};
use axum::Json;
use axum::extract::{Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// The token's name, or `anonymous` when the request carried no valid token.
    pub actor: String,
    pub method: String,
    pub path: String,
    pub status: u16,
}

pub struct AuditLog {
    tree: sled::Tree,
    last_seq: std::sync::Mutex<u64>,
}

impl AuditLog {
    pub fn open(db: &sled::Db) -> anyhow::Result<Self> {
        let tree = db.open_tree("plover/audit")?;
        let last = match tree.last()? {
            Some((k, _)) => u64::from_be_bytes(k.as_ref().try_into()?),
            None => 0,
        };
        Ok(AuditLog {
            tree,
            last_seq: std::sync::Mutex::new(last),
        })
    }

    fn append(
        &self,
        actor: String,
        method: String,
        path: String,
        status: u16,
    ) -> anyhow::Result<()> {
        let mut last = self.last_seq.lock().expect("audit lock");
        *last += 1;
        let seq = *last;
        let entry = AuditEntry {
            seq,
            at: Utc::now(),
            actor,
            method,
            path,
            status,
        };
        self.tree
            .insert(seq.to_be_bytes(), serde_json::to_vec(&entry)?)?;
        Ok(())
    }

    pub fn after(&self, after: u64, limit: usize) -> anyhow::Result<Vec<AuditEntry>> {
        self.tree
            .range((after + 1).to_be_bytes()..)
            .take(limit)
            .map(|r| Ok(serde_json::from_slice(&r?.1)?))
            .collect()
    }
}

/// Middleware: record every mutating request once its response is known.
pub async fn record(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    if matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS") {
        return next.run(req).await;
    }
    let path = req.uri().path().to_string();
    let actor = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| s.tokens.check(t.trim()))
        .map_or_else(|| "anonymous".to_string(), |t| t.name);
    let response = next.run(req).await;
    if let Err(e) = s
        .audit
        .append(actor, method.to_string(), path, response.status().as_u16())
    {
        tracing::error!(error = %e, "could not record an audit entry");
    }
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "tokens", params(("after" = Option<u64>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = AuditPage), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    _: AsAdmin,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, AppError> {
    let Query(q) = query.map_err(|e| AppError::bad_request(e.body_text()))?;
    let items = s
        .audit
        .after(q.after.unwrap_or(0), q.limit.unwrap_or(200).clamp(1, 1000))
        .map_err(|e| AppError::internal(e.to_string()))?;
    let next = items.last().map(|e| e.seq);
    Ok(Json(
        serde_json::json!({ "items": items, "next_after": next }),
    ))
}

/// A page of the audit trail; pass `next_after` as `after` for the next page.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    pub next_after: Option<u64>,
}
