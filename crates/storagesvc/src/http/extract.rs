//! Extractors that reject bad input with our JSON [`ApiError`] instead of axum's plain text.
//!
//! Handlers list them in the order they are checked: [`WriteAccess`] (401/403) first, then
//! [`BookId`] (400), [`IfMatch`] (400), and last the body, [`JsonBody`] (415/400/413/422).
//! [`Page`] (400) reads `?limit=N&after=ID` on the list.

use axum::extract::rejection::{BytesRejection, FailedToBufferBody, JsonRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, IF_MATCH};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use std::time::Duration;
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::paging::PageQuery;

/// A JSON request body; every way it can be wrong is an [`ApiError`].
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        // A declared length over the limit is refused before reading a byte: otherwise a
        // client announcing a huge body and sending it slowly holds the request open.
        if declared_length(&req).is_some_and(|length| length > state.body_limit as u64) {
            return Err(ApiError::PayloadTooLarge {
                limit_bytes: state.body_limit,
            });
        }
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(json_rejection(rejection, state.body_limit)),
        }
    }
}

/// The body length the request declares in `Content-Length`, if it does and it is a number.
fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn json_rejection(rejection: JsonRejection, limit_bytes: usize) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        // serde's message names the field and position, which is what a client needs; axum's
        // own prefix ("Failed to deserialize…") says nothing a client can act on.
        JsonRejection::JsonDataError(err) => ApiError::Unprocessable(format!(
            "the body is not a valid book ({BOOK_SHAPE}): {}",
            innermost(&err)
        )),
        JsonRejection::JsonSyntaxError(err) => {
            ApiError::BadRequest(format!("the body is not valid JSON: {}", innermost(&err)))
        }
        JsonRejection::BytesRejection(BytesRejection::FailedToBufferBody(
            FailedToBufferBody::LengthLimitError(_),
        )) => ApiError::PayloadTooLarge { limit_bytes },
        // A body that broke off or whose chunked framing is wrong; JsonRejection is
        // non-exhaustive, so whatever axum adds later lands here too: the client's body.
        other => ApiError::BadRequest(format!("the body could not be read: {}", innermost(&other))),
    }
}

/// What a book body must look like, named in every 422 about its shape.
const BOOK_SHAPE: &str = r#"expected {"title": string, "author": string, "desc": string}"#;

/// The last error in `error`'s source chain: serde's own message ("missing field `desc` at
/// line 1 column 26"), without the wrappers axum puts around it.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// A book id from the path: a positive 64-bit integer written in decimal digits only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookId(pub i64);

impl FromRequestParts<AppState> for BookId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| invalid("the path", &rejection))?;
        parse_book_id(&raw).map(BookId)
    }
}

fn parse_book_id(raw: &str) -> Result<i64, ApiError> {
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

/// The optional `If-Match` precondition: `"<version>"` or `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMatch {
    /// No header: write unconditionally.
    Absent,
    /// `*`: any current version (the book must exist, which every write checks anyway).
    Any,
    /// `"3"`: only if the stored version is 3.
    Version(i64),
}

impl IfMatch {
    /// The version a conditional write must find, if any.
    pub fn expected_version(self) -> Option<i64> {
        match self {
            IfMatch::Absent | IfMatch::Any => None,
            IfMatch::Version(version) => Some(version),
        }
    }
}

impl FromRequestParts<AppState> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(IF_MATCH) else {
            return Ok(IfMatch::Absent);
        };
        value.to_str().ok().and_then(parse_if_match).ok_or_else(|| {
            ApiError::BadRequest(r#"If-Match must be "<version>" (quoted) or *"#.to_owned())
        })
    }
}

fn parse_if_match(value: &str) -> Option<IfMatch> {
    let value = value.trim();
    if value == "*" {
        return Some(IfMatch::Any);
    }
    // A strong entity tag holding the version, exactly as the `ETag` header gives it.
    let version = value.strip_prefix('"')?.strip_suffix('"')?;
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    version
        .parse()
        .ok()
        .filter(|v| *v > 0)
        .map(IfMatch::Version)
}

/// Proof that the request carries the write token (`Authorization: Bearer <token>`).
#[derive(Debug, Clone, Copy)]
pub struct WriteAccess;

impl FromRequestParts<AppState> for WriteAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = state.write_token.as_deref() else {
            return Err(ApiError::Forbidden(
                "writes are disabled: STORAGESVC_WRITE_TOKEN is not set",
            ));
        };
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token)
            .ok_or(ApiError::Unauthorized(
                "missing or malformed Authorization header: expected Bearer <token>",
            ))?;
        // Constant-time, so response timing does not reveal how much of a guess was right
        // (only the length can leak, which `subtle` does not hide).
        if bool::from(presented.as_bytes().ct_eq(expected.expose().as_bytes())) {
            Ok(WriteAccess)
        } else {
            Err(ApiError::Forbidden("the write token is wrong"))
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme is case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
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
            ("9223372036854775807", Some(i64::MAX)),
            ("0", None),
            ("-1", None),
            ("+1", None),
            ("1.0", None),
            ("abc", None),
            ("", None),
            ("9223372036854775808", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(parse_book_id(raw).ok(), expected, "id {raw:?}");
        }
    }

    #[test]
    fn if_match_accepts_a_quoted_version_or_a_star() {
        let cases = [
            (r#""3""#, Some(IfMatch::Version(3))),
            (r#" "12" "#, Some(IfMatch::Version(12))),
            ("*", Some(IfMatch::Any)),
            ("3", None),
            (r#"W/"3""#, None),
            (r#""0""#, None),
            (r#""abc""#, None),
            (r#""""#, None),
        ];
        for (header, expected) in cases {
            assert_eq!(parse_if_match(header), expected, "If-Match {header:?}");
        }
    }

    #[test]
    fn bearer_tokens_need_the_scheme_and_a_value() {
        assert_eq!(bearer_token("Bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer_token("bearer  s3cret "), Some("s3cret"));
        assert_eq!(bearer_token("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer   "), None);
    }
}

/// The header in which a caller says how long it will wait, in whole milliseconds.
pub const REQUEST_TIMEOUT_HEADER: &str = "x-request-timeout";

/// The caller's budget from `X-Request-Timeout: <ms>`, if it sent a readable one. The
/// request's database work (pool acquire, statements) ends when it runs out: after that
/// nobody waits for the answer. Absent or unreadable, the service's own bounds apply.
#[derive(Debug, Clone, Copy, Default)]
pub struct Budget(pub Option<Duration>);

impl Budget {
    /// The time this request's database work may take: `own`, or less if the caller said so.
    pub fn limit(self, own: Duration) -> Duration {
        self.0.map_or(own, |budget| budget.min(own))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Budget {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let millis = parts
            .headers
            .get(REQUEST_TIMEOUT_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.trim().parse::<u64>().ok());
        Ok(Budget(millis.map(Duration::from_millis)))
    }
}
