//! `/api/v1/plugins`: upload (raw component bytes), list, show, delete.

use super::AppState;
use super::auth::{AsAdmin, AsViewer};
use super::error::{AppError, ErrorBody};
use super::migrations::blocking;
use crate::runtime::PluginSummary;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use semver::Version;
use std::sync::Arc;

#[utoipa::path(get, path = "/api/v1/plugins", tag = "plugins", responses((status = 200, body = Vec<PluginSummary>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    _: AsViewer,
) -> Result<impl IntoResponse, AppError> {
    let all: Vec<_> = s
        .engine
        .registry()
        .list()
        .iter()
        .map(|p| p.summary())
        .collect();
    Ok(Json(all))
}

fn parse_version(v: &str) -> Result<Version, AppError> {
    Version::parse(v)
        .map_err(|e| AppError::bad_request(format!("'{v}' is not a semver version: {e}")))
}

#[utoipa::path(get, path = "/api/v1/plugins/{name}/{version}", tag = "plugins", params(("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = PluginSummary), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn show(
    State(s): State<Arc<AppState>>,
    _: AsViewer,
    Path((name, version)): Path<(String, String)>,
) -> Result<impl IntoResponse, AppError> {
    let plugin = s
        .engine
        .registry()
        .resolve(&format!("{name}@={}", parse_version(&version)?))
        .map_err(|e| AppError::not_found(e.to_string()))?;
    Ok(Json(plugin.summary()))
}

/// Validate, precompile and store a component; 201 with its summary (200 if already loaded).
#[utoipa::path(post, path = "/api/v1/plugins", tag = "plugins", request_body(content = Vec<u8>, content_type = "application/wasm", description = "The component's bytes"),
    responses((status = 201, body = PluginSummary), (status = 200, description = "Already loaded", body = PluginSummary), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, description = "Not a compatible handler component", body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn upload(
    State(s): State<Arc<AppState>>,
    AsAdmin(caller): AsAdmin,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<impl IntoResponse, AppError> {
    let bytes =
        body.map_err(|e| AppError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", e.body_text()))?;
    if bytes.is_empty() {
        return Err(AppError::bad_request(
            "send the component's bytes as the request body",
        ));
    }
    let state = s.clone();
    blocking(move || {
        let plugin = state.runtime.load_bytes(&bytes)?;
        let known = state.engine.registry().by_sha256(plugin.sha256()).is_some();
        let plugin = state.engine.registry().insert(plugin)?;
        let path = state.plugin_store.join(format!("{}.wasm", plugin.sha256()));
        if !path.exists() {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &bytes)
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| AppError::internal(format!("storing the plugin: {e}")))?;
        }
        tracing::info!(plugin = %plugin.label(), sha256 = plugin.sha256(), by = %caller.name, "plugin uploaded");
        let status = if known { StatusCode::OK } else { StatusCode::CREATED };
        Ok((status, Json(plugin.summary())))
    })
    .await
}

/// Unload and forget a plugin; refused while a job that is not finished uses it.
#[utoipa::path(delete, path = "/api/v1/plugins/{name}/{version}", tag = "plugins", params(("name" = String, Path), ("version" = String, Path)),
    responses((status = 204, description = "Removed"), (status = 404, body = ErrorBody), (status = 409, description = "In use", body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn remove(
    State(s): State<Arc<AppState>>,
    _: AsAdmin,
    Path((name, version)): Path<(String, String)>,
) -> Result<impl IntoResponse, AppError> {
    let v = parse_version(&version)?;
    let plugin = s
        .engine
        .registry()
        .resolve(&format!("{name}@={v}"))
        .map_err(|e| AppError::not_found(e.to_string()))?;
    let users = s.engine.plugin_in_use(plugin.sha256());
    if !users.is_empty() {
        return Err(AppError::conflict(
            "plugin-in-use",
            format!(
                "{} is used by {} migration(s) that are not finished",
                plugin.label(),
                users.len()
            ),
        )
        .with_details(serde_json::json!({ "migrations": users })));
    }
    s.engine.registry().remove(&name, &v);
    let _ = std::fs::remove_file(s.plugin_store.join(format!("{}.wasm", plugin.sha256())));
    Ok(StatusCode::NO_CONTENT)
}
