//! RFC 9457 problem details: every error leaves as `application/problem+json`, and says
//! whose fault it is through its status (4xx: the client's, 503: a dependency, 500: ours).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::json;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    /// JSON pointer-like path of the offending field, e.g. `password`.
    pub field: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed request: {0}")]
    BadRequest(String),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("this API key's role may not do this")]
    Forbidden,
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Carries the `Allow` header value.
    #[error("method not allowed on this path")]
    MethodNotAllowed(&'static str),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("dependency unavailable: {0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn field(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Validation(vec![FieldError {
            field: field.to_string(),
            message: message.into(),
        }])
    }

    fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad-request",
            ApiError::Validation(_) => "validation",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound(_) => "not-found",
            ApiError::Conflict(_) => "conflict",
            ApiError::MethodNotAllowed(_) => "method-not-allowed",
            ApiError::PayloadTooLarge => "payload-too-large",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let ApiError::Internal(detail) = self {
            tracing::error!(%detail, "internal error");
        }
        let detail = match self {
            // Internal details stay in the log.
            ApiError::Internal(_) => "internal error".to_string(),
            other => other.to_string(),
        };
        let mut body = json!({
            "type": format!("https://zcproxy.dev/problems/{}", self.kind()),
            "title": status.canonical_reason().unwrap_or("error"),
            "status": status.as_u16(),
            "detail": detail,
        });
        if let ApiError::Validation(errors) = self {
            body["errors"] = json!(errors);
        }
        let mut resp = HttpResponse::build(status);
        resp.content_type("application/problem+json");
        if let ApiError::MethodNotAllowed(allow) = self {
            resp.insert_header(("Allow", *allow));
        }
        if let ApiError::Unauthorized = self {
            resp.insert_header(("WWW-Authenticate", "Bearer realm=\"zcproxy-control\""));
        }
        resp.body(body.to_string())
    }
}
