//! `ApiError`: every way a request can fail, and the one place that turns it into a response.
//!
//! Clients get a status and a JSON body `{"error": "<human message>", ...}`. Causes they
//! should not see are logged inside the request's span, so the log line carries the request
//! id: a 500's cause here, once, with its chain; a 503's database failure by the router, as
//! part of an outage (a start, a summary a minute, an end; see [`events::outage`]).

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sqlx::error::ErrorKind as DbErrorKind;

/// Seconds a client is told to wait before retrying a 503.
const RETRY_AFTER_SECS: &str = "1";

/// A failed request. Each variant's doc names its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (unparseable id, If-Match or JSON).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no usable bearer token; answered with `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: the token is wrong, or writes are disabled.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404: no such book, or no such route.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists but not with this method.
    #[error("method not allowed on this route: the Allow header lists the methods it takes")]
    MethodNotAllowed,
    /// 409: the write conflicts with stored data (a uniqueness or reference constraint).
    #[error("{0}")]
    Conflict(String),
    /// 412: `If-Match` named a version that is not the current one.
    #[error("If-Match does not match the current version {current_version}")]
    PreconditionFailed {
        /// The stored version, so the client can re-read and retry.
        current_version: i64,
    },
    /// 413: the body is larger than `BODY_LIMIT`.
    #[error("request body is larger than {limit_bytes} bytes")]
    PayloadTooLarge {
        /// The configured limit.
        limit_bytes: usize,
    },
    /// 415: the body is not declared as `application/json`.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// 422: well-formed JSON whose content is not a valid book.
    #[error("{0}")]
    Unprocessable(String),
    /// 503: PostgreSQL is unreachable, overloaded or too slow; retrying later may work.
    #[error("the database is unavailable, retry later")]
    Unavailable(#[source] sqlx::Error),
    /// 500: a bug or an unexpected failure; details go to the log only.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl IntoResponse for ApiError {
    /// The one match deciding each variant's status, extra headers and extra body fields.
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.to_string() });
        let mut headers = HeaderMap::new();
        let mut failure = None;
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed { current_version } => {
                body["current_version"] = json!(current_version);
                StatusCode::PRECONDITION_FAILED
            }
            ApiError::PayloadTooLarge { limit_bytes } => {
                body["limit_bytes"] = json!(limit_bytes);
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(cause) => {
                // Logged by the router as part of an outage (`log_database_outage`), not
                // once per request.
                failure = Some(DatabaseFailure(cause.to_string().into()));
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(cause) => {
                tracing::error!(
                    error = format!("{cause:#}"),
                    "answering 500: internal error"
                );
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let mut response = (status, headers, Json(body)).into_response();
        if let Some(failure) = failure {
            response.extensions_mut().insert(failure);
        }
        response
    }
}

/// On a 503's response: the database failure behind it, for the outage log (the router's
/// `log_database_outage` takes it; clients never see it).
#[derive(Debug, Clone)]
pub(super) struct DatabaseFailure(pub(super) Arc<str>);

/// The one mapping from database errors to API errors.
///
/// Connection trouble, timeouts and transient conflicts are 503 (retrying may work);
/// constraint violations are the client's (409/422); anything else is a 500.
impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> ApiError {
        if is_unavailable(&err) {
            return ApiError::Unavailable(err);
        }
        let violation = match &err {
            sqlx::Error::Database(db) => {
                Some((db.kind(), db.constraint().unwrap_or("a constraint")))
            }
            _ => None,
        };
        match violation {
            Some((DbErrorKind::UniqueViolation | DbErrorKind::ForeignKeyViolation, name)) => {
                ApiError::Conflict(format!("the write conflicts with stored data ({name})"))
            }
            Some((DbErrorKind::NotNullViolation | DbErrorKind::CheckViolation, name)) => {
                ApiError::Unprocessable(format!("a field breaks {name}"))
            }
            _ => ApiError::Internal(err.into()),
        }
    }
}

fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Class 08: connection exceptions. 53: insufficient resources. 57014: statement
            // timeout. 57P0x: the server is shutting down or starting. 40001/40P01:
            // serialization failure or deadlock, which a retry resolves.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P0")
                || matches!(code.as_ref(), "57014" | "40001" | "40P01")
        }),
        _ => false,
    }
}
