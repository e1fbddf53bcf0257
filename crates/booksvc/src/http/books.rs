//! The book handlers: ask the read path, answer with the cache headers.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::{CONTENT_TYPE, LINK};
use axum::response::{IntoResponse, Response};

use super::{ApiError, BookId, HitHeaders, Page, RequestId, insert_cache_headers};
use crate::service::{BookService, Source};

/// `GET /books?limit=N&after=ID` and `GET /`: one page of books ordered by id, with a `Link`
/// to the next page when this one is full.
pub(super) async fn list_books(
    State(service): State<BookService>,
    Page(page): Page,
    RequestId(request_id): RequestId,
) -> Result<Response, ApiError> {
    let served = service.list_page(page, request_id).await?;
    let body = served.value;
    let mut response = json(body.json, &served.source, service.hit_headers());
    let link = page.next_link(body.len, body.last_id);
    if let Some(link) = link.and_then(|link| HeaderValue::from_str(&link).ok()) {
        response.headers_mut().insert(LINK, link);
    }
    Ok(response)
}

/// `GET /books/{id}`: one book; a 404 carries the cache headers too (a tombstone is data).
pub(super) async fn get_book(
    State(service): State<BookService>,
    BookId(id): BookId,
    RequestId(request_id): RequestId,
) -> Result<Response, ApiError> {
    let served = service.get_book(id, request_id).await?;
    let hit = service.hit_headers();
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
