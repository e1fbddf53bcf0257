//! The book handlers: ask the read path, answer with the cache headers.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, BookId, RequestId, cache_headers};

/// `GET /books` and `GET /`: every book, ordered by id.
pub(super) async fn list_books(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
) -> Result<Response, ApiError> {
    let served = state.service.list_books(request_id).await?;
    let headers = cache_headers(&served.source, state.service.path().fresh_ttl);
    Ok((headers, Json(served.value)).into_response())
}

/// `GET /books/{id}`: one book; a 404 carries the cache headers too (a tombstone is data).
pub(super) async fn get_book(
    State(state): State<AppState>,
    BookId(id): BookId,
    RequestId(request_id): RequestId,
) -> Result<Response, ApiError> {
    let served = state.service.get_book(id, request_id).await?;
    let headers = cache_headers(&served.source, state.service.path().fresh_ttl);
    Ok(match served.value {
        Some(book) => (headers, Json(book)).into_response(),
        None => (headers, ApiError::BookNotFound(id)).into_response(),
    })
}
