//! What a node answers while it starts. The port is bound first, so an orchestrator can ask
//! `/healthz` (alive: 200) and `/readyz` (503 with what the node waits for: its store
//! database, or another node that is active on the store) before the API is there; every
//! other request gets 503 `starting` in the API's error shape. Once the API is ready, the same
//! listener hands every request to it.

use crate::api::error::AppError;
use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, Mutex, OnceLock};
use tower::ServiceExt;

/// What the node is doing before it serves, shared with the code that opens the store.
#[derive(Clone, Default)]
pub struct StartupStatus(Arc<Mutex<String>>);

impl StartupStatus {
    pub fn set(&self, doing: impl Into<String>) {
        *self.0.lock().expect("startup status") = doing.into();
    }

    pub fn get(&self) -> String {
        let doing = self.0.lock().expect("startup status").clone();
        if doing.is_empty() {
            "starting".into()
        } else {
            doing
        }
    }
}

/// The router a node serves from the moment it binds: the API once `api` is set, the
/// starting answers until then.
pub fn front_router(api: Arc<OnceLock<Router>>, status: StartupStatus) -> Router {
    Router::new().fallback(move |req: Request| {
        let (api, status) = (api.clone(), status.clone());
        async move {
            match api.get() {
                Some(router) => match router.clone().oneshot(req).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                },
                None => starting(req.uri().path(), &status),
            }
        }
    })
}

fn starting(path: &str, status: &StartupStatus) -> Response {
    match path {
        "/healthz" => (StatusCode::OK, "ok").into_response(),
        "/readyz" | "/readyz/plugins" => {
            (StatusCode::SERVICE_UNAVAILABLE, status.get()).into_response()
        }
        _ => AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            format!("this node is not serving yet: {}", status.get()),
        )
        .into_response(),
    }
}
