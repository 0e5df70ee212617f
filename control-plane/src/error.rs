//! The control plane's one error type and the one place that maps it to an HTTP status,
//! the JSON envelope `{"error":{"code","message","details"}}` and a log level.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No credentials, or credentials that are unknown, expired or revoked.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials without the scope or role the operation needs.
    #[error("{message}")]
    Forbidden { message: String, scope: Option<String> },
    /// The operation needs an MFA-authenticated session.
    #[error("{0}")]
    MfaRequired(String),
    #[error("{message}")]
    Validation { message: String, details: Value },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request (or its body) did not arrive within its deadline.
    #[error("{0}")]
    Timeout(String),
    /// Too many attempts: try again after `retry_after` seconds.
    #[error("{message}")]
    Throttled { message: String, retry_after: u64 },
    /// Storage or another internal failure; the message is logged, the client sees a
    /// generic one.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn validation(message: impl Into<String>) -> Self {
        ApiError::Validation {
            message: message.into(),
            details: json!({}),
        }
    }

    pub fn forbidden_scope(scope: &str) -> Self {
        ApiError::Forbidden {
            message: format!("this operation needs the `{scope}` scope"),
            scope: Some(scope.to_owned()),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, Value) {
        match self {
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "auth.unauthenticated", json!({})),
            ApiError::Forbidden { scope, .. } => (
                StatusCode::FORBIDDEN,
                "auth.forbidden",
                scope
                    .as_ref()
                    .map_or_else(|| json!({}), |s| json!({"required_scope": s})),
            ),
            ApiError::MfaRequired(_) => (StatusCode::FORBIDDEN, "auth.mfa_required", json!({})),
            ApiError::Validation { details, .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "validation.failed", details.clone())
            }
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", json!({})),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", json!({})),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "validation.too_large", json!({})),
            ApiError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "request.timeout", json!({})),
            ApiError::Throttled { retry_after, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "auth.throttled",
                json!({"retry_after_secs": retry_after}),
            ),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", json!({})),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                ApiError::Conflict("a record with the same unique value already exists".into())
            }
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, details) = self.parts();
        let message = match &self {
            ApiError::Internal(m) => {
                tracing::error!("kt server: internal error: {m}");
                "the control plane failed to complete the request; see its log".to_owned()
            }
            other => other.to_string(),
        };
        let body = json!({"error": {"code": code, "message": message, "details": details}});
        let mut r = (status, Json(body)).into_response();
        if let ApiError::Throttled { retry_after, .. } = &self {
            r.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from(*retry_after));
        }
        r
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
