//! One error type for every handler, rendered as RFC 9457
//! `application/problem+json` with a stable `type` URI per kind of problem.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use imagefactory_domain::{FieldError, Violations};
use imagefactory_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// Base of every problem `type`; the last segment is the stable code.
pub const PROBLEM_BASE: &str = "https://imagefactory.dev/problems/";

/// `Retry-After` of a 503 for an unavailable database: a restart or a
/// burst that exhausted the pool is typically over within seconds.
pub const DATABASE_RETRY_AFTER_SECONDS: u64 = 2;

/// The problem document (RFC 9457).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Stable identifier of the kind of problem, e.g. `https://imagefactory.dev/problems/validation`.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For validation problems: each offending field and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 422: the request is well-formed but some fields are invalid.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// 400: the body is not JSON.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// 400: a path segment or query parameter is invalid.
    #[error("invalid parameter {field}: {message}")]
    InvalidParameter { field: String, message: String },
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: the write collides with existing data (duplicate name, in use).
    #[error("conflict: {detail}")]
    Conflict {
        detail: String,
        field: Option<String>,
    },
    /// 409: the resource's state does not allow the action (cancel a finished build).
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// 408: the request body did not arrive in time; the connection closes.
    #[error("request body timeout")]
    RequestTimeout(std::time::Duration),
    /// 429: the client must wait `retry_after` (sent as `Retry-After`).
    #[error("too many requests: {detail}")]
    TooManyRequests {
        detail: String,
        retry_after: std::time::Duration,
    },
    /// 503: a feature this server was not configured with; the cause is shown.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// 503 with `Retry-After`: the database cannot be reached, is restarting
    /// or has no connection free within the pool's acquire timeout. The
    /// cause is shown; the same request may succeed shortly.
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(String),
    /// 500: a bug or an unexpected failure; the cause is logged, not shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(format!("{what} not found"))
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid request",
            ),
            MalformedJson(_) => (
                StatusCode::BAD_REQUEST,
                "malformed-json",
                "Malformed JSON body",
            ),
            InvalidParameter { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid-parameter",
                "Invalid parameter",
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Conflict { .. } => (StatusCode::CONFLICT, "conflict", "Conflict"),
            InvalidState(_) => (StatusCode::CONFLICT, "invalid-state", "Invalid state"),
            RequestTimeout(_) => (
                StatusCode::REQUEST_TIMEOUT,
                "request-timeout",
                "Request timeout",
            ),
            TooManyRequests { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests",
                "Too many requests",
            ),
            Unavailable(_) | DatabaseUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }

    pub fn to_problem(&self) -> Problem {
        use ApiError::*;
        let (status, code, title) = self.parts();
        let (detail, errors) = match self {
            Validation(errors) => {
                let detail = errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                (detail, errors.clone())
            }
            MalformedJson(m) => (format!("the request body is not valid JSON: {m}"), vec![]),
            InvalidParameter { field, message } => (
                format!("{field}: {message}"),
                vec![FieldError::new(field.clone(), message.clone())],
            ),
            UnsupportedMediaType => ("send the body as application/json".into(), vec![]),
            PayloadTooLarge => (
                format!("the body exceeds {} bytes", crate::BODY_LIMIT),
                vec![],
            ),
            Unauthorized(m) | Forbidden(m) | NotFound(m) | InvalidState(m) => (m.clone(), vec![]),
            MethodNotAllowed => ("this path does not support the method".into(), vec![]),
            Conflict { detail, field } => (
                detail.clone(),
                field
                    .iter()
                    .map(|f| FieldError::new(f.clone(), detail.clone()))
                    .collect(),
            ),
            RequestTimeout(limit) => (
                format!(
                    "the request body did not arrive within {} s",
                    limit.as_secs_f64()
                ),
                vec![],
            ),
            TooManyRequests { detail, .. } => (detail.clone(), vec![]),
            Unavailable(m) | DatabaseUnavailable(m) => (m.clone(), vec![]),
            Internal(_) => (
                "an unexpected error occurred; it has been logged".into(),
                vec![],
            ),
        };
        Problem {
            problem_type: format!("{PROBLEM_BASE}{code}"),
            title: title.into(),
            status: status.as_u16(),
            detail,
            errors,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            // Logged once, here, where the failure is handled.
            ApiError::Internal(cause) => tracing::error!(cause = %cause, "request failed"),
            ApiError::Unavailable(cause) | ApiError::DatabaseUnavailable(cause) => {
                tracing::warn!(cause = %cause, "dependency unavailable")
            }
            _ => {}
        }
        let problem = self.to_problem();
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        match &self {
            ApiError::TooManyRequests { retry_after, .. } => {
                // Whole seconds, rounded up: never "retry now" while throttled.
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            }
            ApiError::DatabaseUnavailable(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(DATABASE_RETRY_AFTER_SECONDS),
                );
            }
            // The rest of the body may still be on its way: do not read it.
            ApiError::RequestTimeout(_) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

impl From<Vec<FieldError>> for ApiError {
    fn from(errors: Vec<FieldError>) -> Self {
        ApiError::Validation(errors)
    }
}

impl From<Violations> for ApiError {
    fn from(v: Violations) -> Self {
        ApiError::Validation(v.into_vec())
    }
}

/// The request field a named constraint guards.
fn constraint_field(constraint: &str) -> Option<&'static str> {
    Some(match constraint {
        "tenants_name_key"
        | "projects_tenant_name_key"
        | "registry_credentials_tenant_name_key"
        | "providers_tenant_name_key" => "name",
        "builds_project_fk" => "project_id",
        "builds_registry_credential_fk" => "registry_credential_id",
        "builds_infrastructure_provider_id_fkey" => "infrastructure_provider_id",
        "tenants_max_concurrent_positive" | "providers_max_concurrent_positive" => {
            "max_concurrent_builds"
        }
        "builds_timeout_positive" => "timeout_seconds",
        "api_tokens_role_check" => "role",
        _ => return None,
    })
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ApiError::NotFound("not found".into()),
            StoreError::Unique { constraint } => {
                let field = constraint_field(&constraint);
                ApiError::Conflict {
                    detail: match field {
                        Some("name") => "the name is already taken".into(),
                        _ => format!("already exists ({constraint})"),
                    },
                    field: field.map(str::to_owned),
                }
            }
            StoreError::ForeignKey { constraint } => ApiError::field(
                constraint_field(&constraint).unwrap_or("body"),
                "refers to something that does not exist",
            ),
            StoreError::Check { constraint } => ApiError::field(
                constraint_field(&constraint).unwrap_or("body"),
                "value is not allowed",
            ),
            StoreError::InUse { constraint } => ApiError::Conflict {
                detail: format!(
                    "still used by other resources (e.g. builds) ({constraint}); remove those first"
                ),
                field: None,
            },
            StoreError::UnknownCursor => ApiError::InvalidParameter {
                field: "cursor".into(),
                message: "not a position in this list: pass the next_cursor of a previous page"
                    .into(),
            },
            StoreError::State(message) => ApiError::InvalidState(message),
            StoreError::Unavailable(cause) => {
                ApiError::DatabaseUnavailable(format!("the database is unavailable: {cause}"))
            }
            StoreError::Crypto(cause) => ApiError::Internal(format!("{cause}")),
            StoreError::Database(cause) => ApiError::Internal(format!("{cause}")),
        }
    }
}

/// Map `NotFound` to a message naming the missing thing.
pub trait OrNotFound<T> {
    fn or_not_found(self, what: &str) -> Result<T, ApiError>;
}

impl<T> OrNotFound<T> for Result<T, StoreError> {
    fn or_not_found(self, what: &str) -> Result<T, ApiError> {
        self.map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found(what),
            other => other.into(),
        })
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
