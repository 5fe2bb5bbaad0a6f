//! One error shape for the whole API: `{"code", "message", "details"}` with the right status.

use crate::engine::EngineError;
use crate::runtime::{LoadError, RegistryError};
use crate::store::{StoreError, StoreErrorKind};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
}

impl AppError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AppError {
            status,
            code,
            message: message.into(),
            details: Value::Null,
        }
    }
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", message)
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

/// What a 503 answer's `Retry-After` says, in seconds.
const RETRY_AFTER_SECS: &str = "2";

/// The body of every error response.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable code, e.g. `illegal-transition`.
    pub code: String,
    pub message: String,
    /// More about the error, when there is more (or null).
    pub details: Value,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.to_string(),
            message: self.message,
            details: self.details,
        };
        let mut response = (self.status, Json(body)).into_response();
        // Every 503 here is passing (a plugin still loading, a busy node, an owner being
        // replaced): tell clients when to try again rather than leave them to guess.
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

impl From<EngineError> for AppError {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        match e {
            EngineError::NotFound(_) => AppError::not_found(message),
            EngineError::IllegalTransition { status, action, .. } => {
                AppError::conflict("illegal-transition", message)
                    .with_details(json!({ "status": status, "action": action }))
            }
            EngineError::InvalidRequest(_) => AppError::unprocessable("invalid-request", message),
            EngineError::UndeclaredBinding(_) => {
                AppError::unprocessable("undeclared-binding", message)
            }
            EngineError::Registry(r) => r.into(),
            EngineError::Plugin(p) => AppError::unprocessable("plugin-failed", message)
                .with_details(json!({ "plugin": p.plugin, "call": p.call, "cause": p.cause })),
            EngineError::Handler(m) => {
                AppError::unprocessable("handler-refused", message).with_details(json!(m))
            }
            EngineError::InvalidPlan(_) => AppError::unprocessable("invalid-plan", message),
            EngineError::Refused(_) => AppError::conflict("refused", message),
            EngineError::RollbackWouldBeLost(_) => {
                AppError::conflict("rollback-would-be-lost", message)
            }
            EngineError::Busy(_) => AppError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message),
            EngineError::Store(e) => e.into(),
            // Forwarded by `Engine::act`; reaching the API means it could not be.
            EngineError::OwnedElsewhere { .. } | EngineError::Unreachable(_) => AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "owner-unreachable",
                message,
            ),
            EngineError::Remote(r) => AppError {
                status: StatusCode::from_u16(r.status).unwrap_or(StatusCode::CONFLICT),
                code: known_code(&r.code),
                message: r.message,
                details: r.details,
            },
        }
    }
}

/// The codes this API answers with, so an error forwarded from another node keeps its own.
const CODES: &[&str] = &[
    "not-found",
    "illegal-transition",
    "invalid-request",
    "undeclared-binding",
    "plugin-failed",
    "handler-refused",
    "invalid-plan",
    "refused",
    "rollback-would-be-lost",
    "busy",
    "store-corrupt",
    "store-unavailable",
    "job-moved",
    "owner-unreachable",
    "version-conflict",
    "name-owned",
    "bad-requirement",
    "unknown-plugin",
    "plugin-loading",
    "bad-request",
];

fn known_code(code: &str) -> &'static str {
    CODES
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or("refused")
}

impl AppError {
    /// How another node's API would have answered `e`, to send back to the node that
    /// forwarded the request.
    pub fn refusal(e: EngineError) -> crate::engine::ownership::RemoteRefusal {
        let a = AppError::from(e);
        crate::engine::ownership::RemoteRefusal {
            status: a.status.as_u16(),
            code: a.code.to_string(),
            message: a.message,
            details: a.details,
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e.kind {
            StoreErrorKind::Gone => AppError::not_found(e.message),
            StoreErrorKind::Corrupt => AppError::internal(e.to_string()).with_code("store-corrupt"),
            // Another node took the job over while this one worked on it: ask again.
            StoreErrorKind::Fenced => {
                AppError::new(StatusCode::SERVICE_UNAVAILABLE, "job-moved", e.to_string())
            }
            StoreErrorKind::Unavailable => AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                e.to_string(),
            ),
        }
    }
}

impl From<RegistryError> for AppError {
    fn from(e: RegistryError) -> Self {
        let message = e.to_string();
        match e {
            RegistryError::VersionConflict { .. } => {
                AppError::conflict("version-conflict", message)
            }
            RegistryError::NameOwned { .. } => AppError::conflict("name-owned", message),
            RegistryError::BadRequirement(_) => AppError::unprocessable("bad-requirement", message),
            RegistryError::UnknownPlugin(_) | RegistryError::NoMatchingVersion { .. } => {
                AppError::unprocessable("unknown-plugin", message)
            }
            RegistryError::StillLoading { .. } => {
                AppError::new(StatusCode::SERVICE_UNAVAILABLE, "plugin-loading", message)
            }
        }
    }
}

impl From<LoadError> for AppError {
    fn from(e: LoadError) -> Self {
        let code = match &e {
            LoadError::NotWasm => "not-wasm",
            LoadError::CoreModule => "core-module",
            LoadError::Malformed(_) => "malformed-component",
            LoadError::WrongWorld { .. } => "wrong-world",
            LoadError::ContractVersion { .. } => "contract-version",
            LoadError::UnsupportedImport { .. } => "unsupported-import",
            LoadError::Describe(_) => "describe-failed",
            LoadError::BadInfo(_) => "bad-plugin-info",
            LoadError::Signature(_) => "signature-refused",
            LoadError::Io { .. } | LoadError::Internal(_) => {
                return AppError::internal(e.to_string());
            }
        };
        AppError::unprocessable(code, e.to_string())
    }
}
