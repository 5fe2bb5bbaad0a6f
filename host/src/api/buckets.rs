//! Buckets of the embedded database, from outside a plugin: import JSON Lines into one
//! (`POST /api/v1/buckets/{name}/import`) and page through its keys and values
//! (`GET /api/v1/buckets/{name}/entries`). So a new user can put data where a first migration
//! reads it, and look at what it wrote. `name` is a configured `sled` connection, or (with
//! `any_sled_bucket`) any bucket name; other kinds of connection are refused.

use super::AppState;
use super::auth::{AsOperator, AsViewer};
use super::error::AppError;
use super::extract::{ApiPath, ApiQuery, blocking};
use crate::connectors::{Connector, KvBucket, MAX_BATCH};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The longest key an import or a listing takes.
pub const MAX_KEY_BYTES: usize = 1024;

/// The embedded bucket behind connection (or bucket) `name`.
pub fn embedded_bucket(state: &AppState, name: &str) -> Result<Arc<dyn KvBucket>, AppError> {
    let unprocessable = |m: String| AppError::unprocessable("not-an-embedded-bucket", m);
    match state.engine.connections().connect(name) {
        Ok(Connector::Kv(bucket)) if bucket.is_embedded() => Ok(bucket),
        Ok(other) => Err(unprocessable(format!(
            "'{}' is a {} connection; import and browse work on buckets of the embedded database",
            crate::engine::truncated(name, 80),
            other.kind()
        ))),
        Err(e) => Err(AppError::not_found(e)),
    }
}

/// One line of an import.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    key: String,
    /// A string is stored as its text; anything else as its JSON.
    value: serde_json::Value,
}

/// What an import did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Imported {
    pub bucket: String,
    /// Keys written (a key given twice counts twice; the last value wins).
    pub written: u64,
}

/// Parse a JSON Lines body: every entry, or the first bad line (1-based) and why.
fn parse_lines(body: &[u8]) -> Result<Vec<(String, Vec<u8>)>, AppError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| AppError::unprocessable("invalid-import", "the body is not UTF-8 text"))?;
    let mut entries = vec![];
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| {
            AppError::unprocessable("invalid-import", format!("line {}: {why}", n + 1))
        };
        let parsed: ImportLine = serde_json::from_str(line).map_err(|e| {
            bad(format!(
                "{e} (each line is {{\"key\": \"...\", \"value\": ...}})"
            ))
        })?;
        if parsed.key.is_empty() || parsed.key.len() > MAX_KEY_BYTES {
            return Err(bad(format!("a key is 1 to {MAX_KEY_BYTES} bytes")));
        }
        let value = match parsed.value {
            serde_json::Value::String(s) => s.into_bytes(),
            other => serde_json::to_vec(&other).expect("serialises"),
        };
        entries.push((parsed.key, value));
    }
    Ok(entries)
}

#[utoipa::path(post, path = "/api/v1/buckets/{name}/import", tag = "buckets", operation_id = "import_bucket",
    params(("name" = String, Path, description = "A configured sled connection, or a bucket name")),
    request_body(description = "JSON Lines (any content type): one `{\"key\": \"...\", \"value\": ...}` per line; a string value is stored as its text, any other value as its JSON",
        content((String = "application/x-ndjson"), (String = "text/plain"))),
    responses((status = 200, description = "Every line written, durably; nothing is written when a line is bad", body = Imported)))]
pub async fn import(
    State(s): State<Arc<AppState>>,
    AsOperator(caller): AsOperator,
    ApiPath(name): ApiPath<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<impl IntoResponse, AppError> {
    let body =
        body.map_err(|e| AppError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", e.body_text()))?;
    let state = s.clone();
    let written = blocking(move || {
        let bucket = embedded_bucket(&state, &name)?;
        let entries = parse_lines(&body)?;
        for chunk in entries.chunks(MAX_BATCH) {
            bucket.set_many(chunk).map_err(|e| {
                AppError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    e.message,
                )
            })?;
        }
        bucket.sync().map_err(|e| {
            AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                e.message,
            )
        })?;
        tracing::info!(bucket = %name, keys = entries.len(), by = %caller.name, "bucket imported");
        Ok(Imported {
            bucket: name,
            written: entries.len() as u64,
        })
    })
    .await?;
    Ok(Json(written))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    prefix: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// One key and its value: as text when it is UTF-8, else base64.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Entry {
    pub key: String,
    pub value: Option<String>,
    pub value_base64: Option<String>,
}

/// A page of entries in key order; pass `next_after` as `after` for the next.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EntryPage {
    pub items: Vec<Entry>,
    pub next_after: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/buckets/{name}/entries", tag = "buckets", operation_id = "bucket_entries",
    params(("name" = String, Path), ("prefix" = Option<String>, Query, description = "Only keys starting with this"),
        ("after" = Option<String>, Query, description = "Continue after this key (`next_after`)"), ("limit" = Option<usize>, Query, description = "1-1000, default 100")),
    responses((status = 200, body = EntryPage)))]
pub async fn entries(
    State(s): State<Arc<AppState>>,
    _: AsViewer,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<EntriesQuery>,
) -> Result<impl IntoResponse, AppError> {
    let state = s.clone();
    let page = blocking(move || {
        let bucket = embedded_bucket(&state, &name)?;
        let limit = q.limit.unwrap_or(100).clamp(1, 1000);
        let prefix = q.prefix.unwrap_or_default();
        let page = bucket
            .scan(&prefix, q.after.as_deref(), limit)
            .map_err(|e| {
                AppError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    e.message,
                )
            })?;
        let items = page
            .entries
            .into_iter()
            .map(|(key, value)| match String::from_utf8(value) {
                Ok(text) => Entry {
                    key,
                    value: Some(text),
                    value_base64: None,
                },
                Err(e) => Entry {
                    key,
                    value: None,
                    value_base64: Some(
                        base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                    ),
                },
            })
            .collect();
        Ok(EntryPage {
            items,
            next_after: page.next_cursor,
        })
    })
    .await?;
    Ok(Json(page))
}
