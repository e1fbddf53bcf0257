//! The book handlers: ask the read path, answer with the cache headers.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, BookId, HitHeaders, RequestId, insert_cache_headers};
use crate::service::Source;

/// `GET /books` and `GET /`: every book, ordered by id.
pub(super) async fn list_books(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
) -> Result<Response, ApiError> {
    let served = state.service.list_books(request_id).await?;
    Ok(json(
        served.value,
        &served.source,
        state.service.hit_headers(),
    ))
}

/// `GET /books/{id}`: one book; a 404 carries the cache headers too (a tombstone is data).
pub(super) async fn get_book(
    State(state): State<AppState>,
    BookId(id): BookId,
    RequestId(request_id): RequestId,
) -> Result<Response, ApiError> {
    let served = state.service.get_book(id, request_id).await?;
    let hit = state.service.hit_headers();
    Ok(match served.value {
        Some(body) => json(body, &served.source, hit),
        None => {
            let mut response = ApiError::BookNotFound(id).into_response();
            insert_cache_headers(response.headers_mut(), &served.source, hit);
            response
        }
    })
}

/// A JSON body already encoded by the read path (what `Json` would send, without encoding
/// again: a local hit is these bytes as they were stored), with its cache headers, built in
/// place: the hit path's answer.
fn json(body: Bytes, source: &Source, hit: &HitHeaders) -> Response {
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    insert_cache_headers(headers, source, hit);
    response
}
