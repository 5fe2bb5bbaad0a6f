//! The HTTP API (`/api/v1`, JSON): plugins, migrations, live progress over Server-Sent Events,
//! tokens, health and metrics. Handlers are small: they authenticate, call the engine (off the
//! async threads when it may call a plugin) and map errors with [`error::AppError`].

pub mod audit;
pub mod audit_records;
pub mod auth;
pub mod buckets;
pub mod connections;
pub mod demo;
pub mod error;
pub mod exports;
pub mod extract;
pub mod migrations;
pub mod nodes;
pub mod openapi;
pub mod ops;
pub mod plugins;
pub mod session_records;
pub mod sessions;
pub mod sse;
pub mod token_records;
pub mod uploaded_plugins;
pub mod workers;

use crate::engine::Engine;
use crate::runtime::Runtime;
use auth::TokenStore;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tower_http::trace::TraceLayer;

/// Everything handlers share.
pub struct AppState {
    pub engine: Engine,
    pub runtime: Arc<Runtime>,
    /// Uploaded plugins, stored by sha256.
    /// Where uploaded plugins are kept.
    pub uploaded: Box<dyn uploaded_plugins::UploadedPlugins>,
    pub tokens: TokenStore,
    /// The web console's sign-in sessions.
    pub sessions: sessions::SessionStore,
    pub audit: audit::AuditLog,
    /// False until start-up (plugin loading, recovery) is done.
    pub ready: AtomicBool,
    /// This node's place among the nodes sharing a PostgreSQL store.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// What this node is called.
    pub node_name: String,
}

pub fn router(state: Arc<AppState>, max_body_bytes: usize, request_timeout: Duration) -> Router {
    let api = Router::new()
        .route("/plugins", get(plugins::list).post(plugins::upload))
        .route(
            "/plugins/{name}/{version}",
            get(plugins::show).delete(plugins::remove),
        )
        .route(
            "/migrations",
            get(migrations::list).post(migrations::create),
        )
        .route(
            "/migrations/{id}",
            get(migrations::show).delete(migrations::remove),
        )
        .route("/migrations/{id}/logs", get(migrations::logs))
        .route("/migrations/{id}/objects", get(migrations::objects))
        .route(
            "/migrations/{id}/retry-objects",
            post(migrations::retry_objects),
        )
        .route("/migrations/{id}/{action}", post(migrations::act))
        .route("/tokens", get(ops::list_tokens).post(ops::create_token))
        .route("/tokens/{name}", delete(ops::revoke_token))
        .route(
            "/session",
            get(sessions::show)
                .post(sessions::sign_in)
                .delete(sessions::sign_out),
        )
        .route("/audit", get(audit::list))
        .route("/nodes", get(nodes::list))
        .route("/connections", get(connections::list))
        .route("/buckets/{name}/import", post(buckets::import))
        .route("/buckets/{name}/entries", get(buckets::entries))
        .route("/demo", post(demo::plan))
        .route("/workers/claim", post(workers::claim))
        .route("/workers/tasks/{task}/heartbeat", post(workers::heartbeat))
        .route("/workers/tasks/{task}/report", post(workers::report))
        .route("/workers/tasks/{task}/complete", post(workers::complete))
        .route("/workers/tasks/{task}/fail", post(workers::fail))
        .route("/openapi.json", get(openapi::document))
        .layer(axum::middleware::from_fn(move |req, next| {
            time_limit(request_timeout, req, next)
        }))
        // Streams stay open as long as the job runs (or the file lasts), so they sit outside
        // the request timeout.
        .route("/migrations/{id}/events", get(sse::job_events))
        .route("/migrations/{id}/export/{file}", get(exports::export))
        .route("/events", get(sse::all_events));
    Router::new()
        .nest("/api/v1", api)
        .route("/metrics", get(ops::metrics))
        .merge(crate::console::router())
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::record,
        ))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TraceLayer::new_for_http())
        // The probes, outside the trace layer: orchestrators poll them, and a 503 while
        // plugins load is an answer, not a failure to log at error level.
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/readyz/plugins", get(ops::readyz_plugins))
        .with_state(state)
}

/// Answer 408 in the API's error shape when a request takes longer than `limit`. Work the
/// request started on a blocking thread finishes on its own (a plugin call ends at its deadline).
async fn time_limit(
    limit: Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => error::AppError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("the request took longer than {}s", limit.as_secs_f64()),
        )
        .into_response(),
    }
}
