//! `GET /api/v1/nodes`: the nodes serving this store, their last heartbeat and the jobs each
//! holds. With the embedded store there is one node, this one.

use super::AppState;
use super::auth::AsViewer;
use super::error::AppError;
use super::extract::blocking;
use crate::cluster::NodeView;
use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use std::sync::Arc;

#[utoipa::path(get, path = "/api/v1/nodes", tag = "operations", operation_id = "list_nodes",
    responses((status = 200, description = "Nodes alive or stopped within the last hour, oldest first", body = Vec<NodeView>)))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    _: AsViewer,
) -> Result<impl IntoResponse, AppError> {
    let state = s.clone();
    let nodes = blocking(move || match &state.cluster {
        Some(cluster) => Ok(cluster.nodes()?),
        None => Ok(vec![NodeView {
            id: state.node_name.clone(),
            name: state.node_name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            api_url: None,
            started_at: state.started_at,
            last_heartbeat: chrono::Utc::now(),
            stopped_at: None,
            alive: true,
            jobs: state.engine.running_jobs(),
        }]),
    })
    .await?;
    Ok(Json(nodes))
}
