//! Extractors that answer malformed input in the API's one error shape (axum's own answer in
//! plain text), and [`blocking`] for engine work that may block.

use super::error::AppError;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// `Json<T>` with the API's error shape: 400 for malformed JSON, 422 for the wrong fields or
/// types, 413 for a body over the limit.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(rejection) => Err(json_error(rejection)),
        }
    }
}

pub fn json_error(rejection: JsonRejection) -> AppError {
    let message = rejection.body_text();
    match rejection {
        JsonRejection::JsonDataError(_) => AppError::unprocessable("invalid-body", message),
        JsonRejection::MissingJsonContentType(_) => {
            AppError::bad_request("send the body as JSON with Content-Type: application/json")
        }
        JsonRejection::BytesRejection(_) if rejection_is_too_large(&message) => {
            AppError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", message)
        }
        _ => AppError::bad_request(message),
    }
}

pub fn rejection_is_too_large(message: &str) -> bool {
    message.contains("length limit") || message.contains("too large")
}

/// `Path<T>`, answering a malformed path (not UTF-8, not a number) with a 400 in the error shape.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| AppError::bad_request(format!("malformed path: {}", e.body_text())))
    }
}

/// `Query<T>`, answering a malformed query string with a 400 in the error shape.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| AppError::bad_request(e.body_text()))
    }
}

/// Run engine work that may block (plugin calls, store reads, waiting for a run to wind down)
/// on a blocking thread, never on the async ones.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::internal(format!("worker failed: {e}")))?
}
