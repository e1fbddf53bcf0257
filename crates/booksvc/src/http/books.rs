//! The book handlers: ask the read path, answer with the cache headers.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, BookId, RequestId, cache_headers};

/// `GET /books` and `GET /`: every book, ordered by id.
pub(super) async fn list_books(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
) -> Result<Response, ApiError> {
    let served = state.service.list_books_body(request_id).await?;
    let headers = cache_headers(&served.source, state.service.path().fresh_ttl);
    Ok((headers, json(served.value)).into_response())
}

/// `GET /books/{id}`: one book; a 404 carries the cache headers too (a tombstone is data).
pub(super) async fn get_book(
    State(state): State<AppState>,
    BookId(id): BookId,
    RequestId(request_id): RequestId,
) -> Result<Response, ApiError> {
    let served = state.service.get_book_body(id, request_id).await?;
    let headers = cache_headers(&served.source, state.service.path().fresh_ttl);
    Ok(match served.value {
        Some(body) => (headers, json(body)).into_response(),
        None => (headers, ApiError::BookNotFound(id)).into_response(),
    })
}

/// A JSON body already encoded by the read path (what `Json` would send, without encoding
/// again: a local hit is these bytes as they were stored).
fn json(body: Bytes) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
}
