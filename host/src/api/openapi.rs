//! The OpenAPI document, generated from the handlers' annotations and the types they use, so
//! it cannot drift from the code. Served at `/api/v1/openapi.json`.
//!
//! Error answers every operation can give (a malformed request, no token, the wrong role, a
//! timeout, a body over the limit, the store unavailable...) are added to every operation by
//! [`ErrorResponses`], from one table, rather than repeated in each annotation.

use super::{
    audit, auth, buckets, connections, demo, error, exports, migrations, nodes, ops, plugins,
    sessions, sse, workers,
};
use axum::Json;
use axum::response::IntoResponse;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Plover", description = "Run migrations as sandboxed WebAssembly plugins."),
    paths(
        plugins::list, plugins::upload, plugins::show, plugins::remove,
        migrations::list, migrations::create, migrations::show, migrations::remove, migrations::act,
        migrations::retry_objects,
        migrations::logs, migrations::objects, exports::export, connections::list,
        buckets::import, buckets::entries, demo::plan,
        sse::job_events, sse::all_events,
        ops::list_tokens, ops::create_token, ops::revoke_token, audit::list,
        nodes::list, sessions::sign_in, sessions::show, sessions::sign_out, document,
        ops::healthz, ops::readyz, ops::readyz_plugins, ops::metrics,
        workers::claim, workers::heartbeat, workers::report, workers::complete, workers::fail,
    ),
    components(schemas(
        error::ErrorBody, auth::Role, auth::TokenInfo, ops::NewToken, ops::CreatedToken,
        audit::AuditEntry, audit::AuditPage, migrations::LogPage, migrations::ObjectPage,
        crate::engine::job::FeedEvent, crate::engine::job::EventBody, crate::engine::state::Action,
        crate::engine::handle::StateChange,
    )),
    modifiers(&BearerAuth, &ErrorResponses),
    security(("bearer" = []), ("session" = [])),
    tags(
        (name = "migrations", description = "Create, run and inspect migrations"),
        (name = "plugins", description = "Handler components"),
        (name = "buckets", description = "Buckets of the embedded database: import and browse"),
        (name = "events", description = "Live progress (Server-Sent Events)"),
        (name = "tokens", description = "API tokens and the audit trail (admin)"),
        (name = "operations", description = "Health, metrics, the nodes and this document"),
        (name = "workers", description = "External workers: claim, report, complete or fail the tasks of steps on worker queues"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // The web console's session (`POST /api/v1/session`): every operation also accepts
        // it, with `X-CSRF-Token` on mutating ones.
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Cookie(
                utoipa::openapi::security::ApiKeyValue::new(super::sessions::COOKIE),
            )),
        );
    }
}

/// Adds the error answers each operation can give, in the one error shape.
struct ErrorResponses;

/// What an operation is, for the error answers it can give.
struct Shape {
    authenticated: bool,
    path_params: bool,
    has_body: bool,
    /// A stream: no request time limit.
    streams: bool,
}

fn error_answers(shape: &Shape) -> Vec<(&'static str, &'static str)> {
    let mut answers = vec![(
        "400",
        "Malformed request: a path, query or header that cannot be read",
    )];
    if shape.authenticated {
        answers.push(("401", "No valid token"));
        answers.push((
            "403",
            "The token's role does not allow this, or a console request lacks its CSRF token",
        ));
    }
    if shape.path_params {
        answers.push(("404", "No such migration, plugin or token"));
    }
    if !shape.streams && shape.authenticated {
        answers.push((
            "408",
            "The request took longer than the server's time limit",
        ));
    }
    if shape.has_body {
        answers.push(("413", "The body is larger than the server accepts"));
        answers.push(("422", "The body is well-formed but not acceptable"));
    }
    if shape.authenticated {
        answers.push(("500", "The host's database is damaged"));
        answers.push((
            "503",
            "The store is unavailable, or too much is running; try again",
        ));
    }
    answers
}

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let authenticated = path.starts_with("/api/v1/") && path != "/api/v1/openapi.json";
            let streams = path.ends_with("/events") || path.contains("/export/");
            let path_params = path.contains('{');
            let ops: [Option<&mut Operation>; 4] = [
                item.get.as_mut(),
                item.post.as_mut(),
                item.delete.as_mut(),
                item.put.as_mut(),
            ];
            for op in ops.into_iter().flatten() {
                let shape = Shape {
                    authenticated,
                    path_params,
                    has_body: op.request_body.is_some(),
                    streams,
                };
                for (code, description) in error_answers(&shape) {
                    if op.responses.responses.contains_key(code) {
                        continue;
                    }
                    let response = ResponseBuilder::new()
                        .description(description)
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("ErrorBody")))
                                .build(),
                        )
                        .build();
                    op.responses
                        .responses
                        .insert(code.to_string(), response.into());
                }
            }
        }
    }
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", operation_id = "openapi_document", security(()),
    responses((status = 200, description = "The OpenAPI document of this API", body = Object)))]
pub async fn document() -> impl IntoResponse {
    static DOC: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
        bound_unsigned(&mut doc);
        doc
    });
    Json(DOC.clone())
}

/// Give every unsigned integer its real range (`minimum` is there; `maximum` is not) and a
/// format tools recognise (`uint64`, not utoipa's `u-int64`), so a generated client or a
/// fuzzer knows, say, that an offset cannot exceed 2^64 - 1.
fn bound_unsigned(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            let unsigned_max: Option<u64> = match o.get("format").and_then(|f| f.as_str()) {
                Some("u-int8") => Some(u8::MAX.into()),
                Some("u-int16") => Some(u16::MAX.into()),
                Some("u-int32") => Some(u32::MAX.into()),
                Some("u-int64") => Some(u64::MAX),
                None if o.get("type") == Some(&serde_json::json!("integer"))
                    && o.get("minimum") == Some(&serde_json::json!(0)) =>
                {
                    Some(usize::MAX as u64)
                }
                _ => None,
            };
            if let Some(max) = unsigned_max {
                o.entry("maximum").or_insert_with(|| serde_json::json!(max));
                let bits = match max {
                    m if m == u8::MAX as u64 => "uint8",
                    m if m == u16::MAX as u64 => "uint16",
                    m if m == u32::MAX as u64 => "uint32",
                    _ => "uint64",
                };
                o.insert("format".into(), serde_json::json!(bits));
            }
            for child in o.values_mut() {
                bound_unsigned(child);
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(bound_unsigned),
        _ => {}
    }
}
