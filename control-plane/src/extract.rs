//! What every handler reads from a request besides its principal: JSON bodies whose
//! rejections use the error envelope, and the checks on names given in them.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};

/// Request bodies larger than this answer 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// A request body must arrive within this (408 otherwise) unless the listener says.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A JSON request body whose rejections use the error envelope.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req
            .extensions()
            .get::<crate::serve::BodyTimeout>()
            .map_or(BODY_TIMEOUT, |t| t.0);
        match tokio::time::timeout(limit, Json::<T>::from_request(req, state)).await {
            Ok(Ok(Json(v))) => Ok(Body(v)),
            Ok(Err(rejection)) => Err(body_error(&rejection)),
            Err(_) => Err(ApiError::Timeout(format!(
                "the request body did not arrive within {} s",
                limit.as_secs()
            ))),
        }
    }
}

fn body_error(rejection: &JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge(format!("request body is larger than {MAX_BODY_BYTES} bytes"));
    }
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::validation("request body must be JSON with `Content-Type: application/json`")
        }
        other => ApiError::validation(format!("invalid request body: {}", other.body_text())),
    }
}

/// A display name: 1 to 100 printable characters.
pub(crate) fn validate_name(field: &str, name: &str) -> ApiResult<()> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control) {
        return Err(ApiError::validation(format!(
            "`{field}` needs 1 to 100 printable characters"
        )));
    }
    Ok(())
}
