//! `/api/v1/plugins`: upload (raw component bytes), list, show, delete.
//!
//! A plugin is addressed by its exact version, build metadata included (`1.0.0+build`): the
//! same identity finds it, removes it and names its stored file. Uploaded plugins are stored
//! by sha256 with a small metadata file (who published it, whether its name was claimed), both
//! on disk before the upload is answered.

use super::AppState;
use super::auth::{AsAdmin, AsViewer};
use super::error::AppError;
use super::extract::{ApiPath, ApiQuery, blocking};
use crate::runtime::signing::PluginSignature;
use crate::runtime::{LoadedPlugin, PluginSummary, Publisher};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use semver::Version;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A plugin as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PluginView {
    #[serde(flatten)]
    pub summary: PluginSummary,
    /// Who published it; the name belongs to this publisher.
    pub publisher: Publisher,
}

fn view(state: &AppState, p: &LoadedPlugin) -> PluginView {
    PluginView {
        summary: p.summary(),
        publisher: state
            .engine
            .registry()
            .publisher(p.name())
            .unwrap_or(Publisher::Bundled),
    }
}

#[utoipa::path(get, path = "/api/v1/plugins", tag = "plugins", operation_id = "list_plugins",
    responses((status = 200, body = Vec<PluginView>)))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    _: AsViewer,
) -> Result<impl IntoResponse, AppError> {
    let all: Vec<PluginView> = s
        .engine
        .registry()
        .list()
        .iter()
        .map(|p| view(&s, p))
        .collect();
    Ok(Json(all))
}

/// The loaded plugin that is exactly `name@version` (a version that is not semver cannot be
/// loaded, so it is not found either).
fn exact(state: &AppState, name: &str, version: &str) -> Result<Arc<LoadedPlugin>, AppError> {
    let found = Version::parse(version)
        .ok()
        .and_then(|v| state.engine.registry().exact(name, &v));
    found.ok_or_else(|| {
        AppError::not_found(format!(
            "no plugin {}@{} is loaded",
            crate::engine::truncated(name, 64),
            crate::engine::truncated(version, 64)
        ))
    })
}

#[utoipa::path(get, path = "/api/v1/plugins/{name}/{version}", tag = "plugins", operation_id = "show_plugin",
    params(("name" = String, Path), ("version" = String, Path, description = "The exact version, build metadata included")),
    responses((status = 200, body = PluginView)))]
pub async fn show(
    State(s): State<Arc<AppState>>,
    _: AsViewer,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> Result<impl IntoResponse, AppError> {
    let plugin = exact(&s, &name, &version)?;
    Ok(Json(view(&s, &plugin)))
}

/// What the host keeps beside an uploaded plugin's bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredPluginMeta {
    pub publisher: Publisher,
    /// The upload took over a name another publisher had.
    pub claimed: bool,
    /// The signature it was uploaded with, checked again whenever it is loaded.
    #[serde(default)]
    pub signature: Option<PluginSignature>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    #[serde(default)]
    claim: bool,
}

/// The header an upload carries its signature in: the `.wasm.sig` file, base64-encoded.
pub const SIGNATURE_HEADER: &str = "plover-signature";

fn signature_header(headers: &axum::http::HeaderMap) -> Result<Option<PluginSignature>, AppError> {
    use base64::Engine as _;
    let Some(value) = headers.get(SIGNATURE_HEADER) else {
        return Ok(None);
    };
    let bad = |why: String| {
        AppError::bad_request(format!(
            "the {SIGNATURE_HEADER} header must be the signature file in base64: {why}"
        ))
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.as_bytes())
        .map_err(|e| bad(e.to_string()))?;
    let text = String::from_utf8(decoded).map_err(|e| bad(e.to_string()))?;
    crate::runtime::signing::parse(&text).map(Some).map_err(bad)
}

/// Validate, precompile and store a component; 201 with its summary (200 if already loaded).
#[utoipa::path(post, path = "/api/v1/plugins", tag = "plugins", operation_id = "upload_plugin",
    params(("claim" = Option<bool>, Query, description = "Take over a plugin name that another publisher (e.g. the bundled plugins) owns"),
        ("plover-signature" = Option<String>, Header, description = "The plugin's signature file (`plover plugin sign`), base64-encoded; required when the host requires signed plugins")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The component's bytes (any content type is accepted, e.g. application/wasm)"),
    responses((status = 201, body = PluginView), (status = 200, description = "Already loaded", body = PluginView),
        (status = 409, description = "That name and version exist with other bytes, or the name belongs to another publisher", body = super::error::ErrorBody),
        (status = 422, description = "Not a compatible handler component, or its signature is refused (`signature-refused`)", body = super::error::ErrorBody)))]
pub async fn upload(
    State(s): State<Arc<AppState>>,
    AsAdmin(caller): AsAdmin,
    ApiQuery(q): ApiQuery<UploadQuery>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<impl IntoResponse, AppError> {
    let bytes =
        body.map_err(|e| AppError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", e.body_text()))?;
    if bytes.is_empty() {
        return Err(AppError::bad_request(
            "send the component's bytes as the request body",
        ));
    }
    let signature = signature_header(&headers)?;
    let state = s.clone();
    blocking(move || {
        let plugin = state.runtime.load_signed(&bytes, signature.as_ref())?;
        let registry = state.engine.registry();
        let known = registry.by_sha256(plugin.sha256()).is_some();
        let plugin = registry.insert_from(plugin, Publisher::Uploaded, q.claim)?;
        let meta = StoredPluginMeta {
            publisher: Publisher::Uploaded,
            claimed: q.claim,
            signature,
        };
        if let Err(e) = state.uploaded.save(plugin.sha256(), &bytes, &meta) {
            if !known {
                registry.remove(plugin.name(), plugin.version());
            }
            return Err(e.into());
        }
        tracing::info!(plugin = %plugin.label(), sha256 = plugin.sha256(), by = %caller.name, claimed = q.claim, "plugin uploaded");
        if let Some(cluster) = &state.cluster {
            cluster.announce_plugins();
        }
        let status = if known { StatusCode::OK } else { StatusCode::CREATED };
        Ok((status, Json(view(&state, &plugin))))
    })
    .await
}

/// Unload and forget a plugin; refused while a job that is not finished uses it.
#[utoipa::path(delete, path = "/api/v1/plugins/{name}/{version}", tag = "plugins", operation_id = "delete_plugin",
    params(("name" = String, Path), ("version" = String, Path, description = "The exact version, build metadata included")),
    responses((status = 204, description = "Removed"), (status = 409, description = "In use", body = super::error::ErrorBody)))]
pub async fn remove(
    State(s): State<Arc<AppState>>,
    _: AsAdmin,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> Result<impl IntoResponse, AppError> {
    let state = s.clone();
    blocking(move || {
        let plugin = exact(&state, &name, &version)?;
        let users = state.engine.plugin_in_use(plugin.name(), plugin.sha256())?;
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
        state
            .engine
            .registry()
            .remove(plugin.name(), plugin.version());
        state.uploaded.remove(plugin.sha256())?;
        if let Some(cluster) = &state.cluster {
            cluster.announce_plugins();
        }
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
