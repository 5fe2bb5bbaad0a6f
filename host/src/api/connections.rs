//! `GET /api/v1/connections`: the connections a job may be granted, by name and kind (`sled`,
//! `redis`, `postgres`, `http`), never how they are reached: no URL, prefix or secret.

use super::AppState;
use super::auth::AsViewer;
use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use serde::Serialize;
use std::sync::Arc;

#[derive(Serialize, utoipa::ToSchema)]
pub struct ConnectionView {
    pub name: String,
    /// `sled`, `redis`, `postgres` or `http`.
    pub kind: String,
}

/// What grants may name. With `any_sled_bucket` on, any other bucket name is a bucket of the
/// embedded database too (`any_sled_bucket` says so).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ConnectionList {
    pub items: Vec<ConnectionView>,
    pub any_sled_bucket: bool,
}

#[utoipa::path(get, path = "/api/v1/connections", tag = "migrations", operation_id = "list_connections",
    responses((status = 200, description = "The configured connections, by name", body = ConnectionList)))]
pub async fn list(State(s): State<Arc<AppState>>, _: AsViewer) -> impl IntoResponse {
    let connections = s.engine.connections();
    Json(ConnectionList {
        items: connections
            .kinds()
            .into_iter()
            .map(|(name, kind)| ConnectionView {
                name,
                kind: kind.to_string(),
            })
            .collect(),
        any_sled_bucket: connections.any_sled_bucket(),
    })
}
