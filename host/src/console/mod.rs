//! The operator web console, served by `plover serve` at `/`: a page of small ES modules and
//! one stylesheet, embedded in the binary (nothing to build, no Node toolchain). It is a client
//! of the HTTP API like any other: it signs in with a token exchanged for a session cookie
//! (`api::sessions`) and then calls the same endpoints, so everything it shows or does goes
//! through the API's roles, audit trail and error shape.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// Every file of the console: its path under `/console/`, content type and bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", JS, include_str!("assets/app.js")),
    ("api.js", JS, include_str!("assets/api.js")),
    ("ui.js", JS, include_str!("assets/ui.js")),
    (
        "views/signin.js",
        JS,
        include_str!("assets/views/signin.js"),
    ),
    ("views/list.js", JS, include_str!("assets/views/list.js")),
    ("views/job.js", JS, include_str!("assets/views/job.js")),
    (
        "views/job_parts.js",
        JS,
        include_str!("assets/views/job_parts.js"),
    ),
    ("views/new.js", JS, include_str!("assets/views/new.js")),
    (
        "views/plugins.js",
        JS,
        include_str!("assets/views/plugins.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
];

const JS: &str = "text/javascript; charset=utf-8";
const INDEX: &str = include_str!("assets/index.html");

/// Scripts, styles and data only from this origin; no inline script, no framing.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Each asset's entity tag, from its bytes.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|(_, _, body)| format!("\"{}\"", &hex::encode(Sha256::digest(body))[..16]))
        .collect()
});

/// The bytes of every asset and the page: what a first visit downloads (uncompressed).
pub fn page_weight() -> usize {
    INDEX.len() + ASSETS.iter().map(|(_, _, b)| b.len()).sum::<usize>()
}

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/console/{*file}", get(asset))
}

fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

async fn index() -> Response {
    secured(
        (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            INDEX,
        )
            .into_response(),
    )
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|(name, _, _)| *name == file) else {
        return crate::api::error::AppError::not_found("no such console file").into_response();
    };
    let (_, content_type, body) = ASSETS[i];
    let etag = &ETAGS[i];
    // Revalidated on every load (a new binary serves new files), answered 304 when unchanged.
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return secured((StatusCode::NOT_MODIFIED, [(header::ETAG, etag.clone())]).into_response());
    }
    secured(
        (
            [
                (header::CONTENT_TYPE, content_type.to_string()),
                (header::CACHE_CONTROL, "no-cache".to_string()),
                (header::ETAG, etag.clone()),
            ],
            body,
        )
            .into_response(),
    )
}
