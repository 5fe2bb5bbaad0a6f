//! The OpenAPI document, generated from the handlers' annotations and the types they use, so
//! it cannot drift from the code. Served at `/api/v1/openapi.json`.

use super::{audit, auth, error, migrations, ops, plugins, sse};
use axum::Json;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Plover", description = "Run migrations as sandboxed WebAssembly plugins."),
    paths(
        plugins::list, plugins::upload, plugins::show, plugins::remove,
        migrations::list, migrations::create, migrations::show, migrations::remove, migrations::act,
        migrations::logs, migrations::objects,
        sse::job_events, sse::all_events,
        ops::list_tokens, ops::create_token, ops::revoke_token, audit::list,
        ops::healthz, ops::readyz, ops::metrics,
    ),
    components(schemas(
        error::ErrorBody, auth::Role, auth::TokenInfo, ops::NewToken, ops::CreatedToken,
        audit::AuditEntry, audit::AuditPage, migrations::LogPage, migrations::ObjectPage,
        crate::engine::job::EventBody, crate::engine::state::Action,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "migrations", description = "Create, run and inspect migrations"),
        (name = "plugins", description = "Handler components"),
        (name = "events", description = "Live progress (Server-Sent Events)"),
        (name = "tokens", description = "API tokens and the audit trail (admin)"),
        (name = "operations", description = "Health and metrics (no token)"),
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
    }
}

pub async fn document() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}
