//! `ApiError`: every way a request can fail, and the one place that turns it into a response.
//!
//! Clients get a status and a JSON body `{"error": "<human message>", ...}`. No input can
//! cause a 500: booksvc only reads, and every failure behind it becomes a stale answer or a
//! 503 that says when to come back.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::service::FetchFailure;

/// `Retry-After` when the breaker is not open (a blip, a hung storagesvc): soon, but not
/// at once.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Every error answer: `{"error": "<what went wrong and what to do>"}`, plus
/// `retry_after_seconds` on a 503.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A sentence for a human: what was wrong and, where it helps, what to do.
    pub error: String,
    /// 503 only: the same as `Retry-After`, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub retry_after_seconds: Option<u64>,
}

/// A failed request. Each variant's doc names its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (an id that is not a positive integer, a bad page query).
    #[error("{0}")]
    BadRequest(String),
    /// 404: no route has this path.
    #[error("no route for {0}")]
    NoRoute(String),
    /// 404: the book does not exist (storagesvc said so, or the cache holds its deletion).
    #[error("book {0} does not exist")]
    BookNotFound(i64),
    /// 405: the route exists but not with this method. booksvc only reads, so the message
    /// says where writes go: a client POSTing here has most likely the wrong service.
    #[error(
        "method not allowed: booksvc only reads (GET); writes go to storagesvc \
         (POST /books, PUT or DELETE /books/{{id}})"
    )]
    MethodNotAllowed,
    /// 503 with `Retry-After`: storagesvc gave no answer and nothing is cached.
    #[error("storagesvc is unavailable and nothing is cached; retry later")]
    Unavailable(FetchFailure),
}

impl IntoResponse for ApiError {
    /// The one match deciding each variant's status, extra headers and extra body fields.
    fn into_response(self) -> Response {
        let mut body = ErrorBody {
            error: self.to_string(),
            retry_after_seconds: None,
        };
        let mut headers = HeaderMap::new();
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NoRoute(_) | ApiError::BookNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(why) => {
                let seconds = retry_after_seconds(why);
                body.retry_after_seconds = Some(seconds);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        (status, headers, Json(body)).into_response()
    }
}

impl From<FetchFailure> for ApiError {
    fn from(why: FetchFailure) -> ApiError {
        ApiError::Unavailable(why)
    }
}

/// Whole seconds, rounded up so a client never comes back before the breaker lets a probe
/// through; at least 1.
fn retry_after_seconds(why: &FetchFailure) -> u64 {
    let wait = match why {
        FetchFailure::CircuitOpen {
            retry_after: Some(open_for),
        } => *open_for,
        // The last two only ever come with an entry to serve; listed so a new one decides.
        FetchFailure::CircuitOpen { retry_after: None }
        | FetchFailure::Upstream { .. }
        | FetchFailure::TrialInFlight
        | FetchFailure::SoftTimeout { .. } => DEFAULT_RETRY_AFTER,
    };
    wait.as_millis()
        .div_ceil(1000)
        .max(1)
        .try_into()
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_the_open_breaker_time_rounded_up_or_one_second() {
        let cases = [
            (Some(Duration::from_millis(4200)), 5),
            (Some(Duration::from_secs(3)), 3),
            (Some(Duration::ZERO), 1),
            (None, 1),
        ];
        for (retry_after, expected) in cases {
            let why = FetchFailure::CircuitOpen { retry_after };
            assert_eq!(
                retry_after_seconds(&why),
                expected,
                "open for {retry_after:?}"
            );
        }
        let upstream = FetchFailure::Upstream {
            reason: "timed out".to_owned(),
        };
        assert_eq!(retry_after_seconds(&upstream), 1);
    }
}
