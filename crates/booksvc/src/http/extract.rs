//! Extractors that reject bad input with our JSON [`ApiError`] instead of axum's plain text.

use std::convert::Infallible;

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::HeaderValue;
use axum::http::request::Parts;

use super::ApiError;
use crate::client::REQUEST_ID_HEADER;
use crate::paging::PageQuery;

/// A book id from the path: a positive 64-bit integer written in decimal digits only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for BookId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| invalid("the path", &rejection))?;
        parse_book_id(&raw).map(BookId)
    }
}

pub(super) fn parse_book_id(raw: &str) -> Result<i64, ApiError> {
    // Digits only: `+5`, ` 5`, `5.0` and `0x5` would parse or half-parse elsewhere; refuse
    // them all the same way. Leading zeros are harmless and allowed.
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::BadRequest(format!(
            "book id {raw:?} is not a positive integer: use digits only, as in /books/1"
        )));
    }
    match raw.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        // Digits that are zero or do not fit: a number, just not one an id can be.
        _ => Err(ApiError::BadRequest(format!(
            "book id {raw:?} is out of range: ids go from 1 to {}",
            i64::MAX
        ))),
    }
}

/// The page a list request asks for (`?limit=N&after=ID`, see [`crate::paging`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page(pub PageQuery);

impl<S: Send + Sync> FromRequestParts<S> for Page {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // axum's own rejection (a malformed query string) is plain text: ours is JSON.
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| invalid("the query string", &rejection))?;
        let pairs = pairs
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()));
        PageQuery::from_pairs(pairs)
            .map(Page)
            .map_err(ApiError::BadRequest)
    }
}

/// The request id set by the middleware (from the client's `x-request-id`, or generated),
/// passed on to storagesvc so one id follows a read through both services' logs. Kept as the
/// header value (a reference count, no copy): only a read that goes to storagesvc needs it
/// as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(RequestId(parts.headers.get(REQUEST_ID_HEADER).cloned()))
    }
}

/// The last error in `error`'s source chain: the parser's own message, without the wrappers
/// axum puts around it.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// A 400 for a part of the request axum could not parse, in our words rather than axum's
/// ("Failed to deserialize…"), keeping the parser's detail.
fn invalid(part: &str, rejection: &(dyn std::error::Error + 'static)) -> ApiError {
    ApiError::BadRequest(format!("{part} is not valid: {}", innermost(rejection)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn book_ids_are_positive_decimal_integers() {
        let cases = [
            ("1", Some(1)),
            ("007", Some(7)),
            ("9223372036854775807", Some(i64::MAX)),
            ("0", None),
            ("-1", None),
            ("+1", None),
            ("1.5", None),
            ("abc", None),
            ("", None),
            ("9223372036854775808", None),
            ("1e3", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(parse_book_id(raw).ok(), expected, "id {raw:?}");
        }
    }
}
