//! `POST /api/v1/demo`: a first migration with real data, minutes after setup. Seeds sample
//! sessions into the embedded bucket `demo-sessions` and plans a kv-copy of them into
//! `demo-sessions-copy` that adds a field to each; the console's "Try it" and `plover demo`
//! call it. Running it again seeds the same keys again and plans another copy.

use super::AppState;
use super::auth::AsOperator;
use super::buckets::embedded_bucket;
use super::error::AppError;
use super::extract::blocking;
use crate::engine::NewMigration;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;
use std::sync::Arc;

pub const SOURCE: &str = "demo-sessions";
pub const TARGET: &str = "demo-sessions-copy";
/// How many sample sessions are seeded.
pub const SESSIONS: usize = 2000;

/// The sample sessions: `session/00001` … with a user, a cart and a last-seen time.
fn sample_sessions() -> Vec<(String, Vec<u8>)> {
    const LOCALES: [&str; 4] = ["en-GB", "de-DE", "fr-FR", "ja-JP"];
    (1..=SESSIONS)
        .map(|i| {
            let value = json!({
                "user": format!("user-{:04}", i % 700),
                "locale": LOCALES[i % LOCALES.len()],
                "cart": (0..i % 4).map(|n| format!("sku-{}", 100 + (i * 7 + n) % 50)).collect::<Vec<_>>(),
                "last_seen": format!("2026-11-{:02}T{:02}:{:02}:00Z", 1 + i % 28, i % 24, i % 60),
            });
            (
                format!("session/{i:05}"),
                serde_json::to_vec(&value).expect("serialises"),
            )
        })
        .collect()
}

#[utoipa::path(post, path = "/api/v1/demo", tag = "migrations", operation_id = "plan_demo",
    responses((status = 201, description = "Sample data seeded and a kv-copy over it planned; run it with `execute`", body = crate::engine::job::JobSnapshot)))]
pub async fn plan(
    State(s): State<Arc<AppState>>,
    AsOperator(caller): AsOperator,
) -> Result<impl IntoResponse, AppError> {
    let state = s.clone();
    let snapshot = blocking(move || {
        let missing = |e: AppError| {
            AppError::conflict(
                "demo-unavailable",
                format!(
                    "the demo needs the embedded buckets '{SOURCE}' and '{TARGET}' (any_sled_bucket = true, or sled connections of those names): {}",
                    e.message
                ),
            )
        };
        let source = embedded_bucket(&state, SOURCE).map_err(missing)?;
        embedded_bucket(&state, TARGET).map_err(missing)?;
        let unavailable =
            |e: crate::connectors::KvBackendError| AppError::new(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable", e.message);
        source.set_many(&sample_sessions()).map_err(unavailable)?;
        source.sync().map_err(unavailable)?;
        Ok(state.engine.create(
            NewMigration {
                handler: "kv-copy@^1".into(),
                parameters: json!({
                    "prefix": "session/",
                    "set_fields": { "migrated_by": "plover-demo" }
                }),
                grants: [
                    ("source".to_string(), SOURCE.to_string()),
                    ("target".to_string(), TARGET.to_string()),
                ]
                .into(),
                options: json!({ "batch_size": 100 }),
                ..Default::default()
            },
            &caller.name,
        )?)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(snapshot)))
}
