//! The book handlers: ask the read path, answer with the cache headers.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::{CONTENT_TYPE, LINK};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{CacheStatus, NextLink, XCache};
use super::{ApiError, BookId, ErrorBody, HitHeaders, Page, RequestId, insert_cache_headers};
use crate::book::Book;
use crate::service::{BookService, Source};

/// What the book handlers reach: the read path, and a hit's cache headers prepared for its
/// `CACHE_FRESH_TTL`. One `Arc`, so a request clones one handle (the whole [`super::AppState`]
/// would clone every one of its handles, and a cancellation token's clone takes a lock).
pub(super) struct Books {
    pub(super) service: BookService,
    pub(super) hit_headers: HitHeaders,
}

impl Books {
    pub(super) fn new(service: BookService) -> Books {
        Books {
            hit_headers: HitHeaders::new(service.path().fresh_ttl),
            service,
        }
    }
}

/// The documented book routes (`GET /`, `GET /books`, `GET /books/{id}`), still wanting their
/// state: [`router`] gives it; the description needs none.
pub(super) fn routes() -> OpenApiRouter<Arc<Books>> {
    OpenApiRouter::default()
        .routes(routes!(list_root))
        .routes(routes!(list_books))
        .routes(routes!(get_book))
}

/// The book routes with their own state.
pub(super) fn router<S>(books: Arc<Books>) -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes().with_state(books)
}

/// `GET /`: the list, as the original service served it at its root; the same pages as
/// [`list_books`].
#[utoipa::path(
    get,
    path = "/",
    tag = "books",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Books per page (default 100)"),
        ("after" = Option<i64>, Query, minimum = 0, description = "Only books whose id is greater: the last id of the previous page (default 0: the first page)"),
    ),
    responses(
        (status = 200, description = "One page of books ordered by id; where it came from in the cache headers", body = Vec<Book>,
         headers(
            ("Link" = inline(NextLink), description = "`</books?limit=N&after=ID>; rel=\"next\"` when the page is full"),
            ("X-Cache" = inline(XCache), description = "Where the page came from: `hit`, `miss` or `stale`"),
            ("Cache-Status" = inline(CacheStatus), description = "The same in RFC 9211 form"),
            ("Age" = u64, description = "Age of the cached data in whole seconds (`hit` and `stale`): the oldest book of the page"),
         )),
        (status = 400, description = "A bad `limit` or `after` (not decimal digits, out of range, given twice)", body = ErrorBody),
        (status = 503, description = "storagesvc gave no answer within `REQUEST_BUDGET` and the cache knows nothing of this range; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds: the breaker's remaining open time rounded up, or 1"))),
    )
)]
async fn list_root(
    books: State<Arc<Books>>,
    page: Page,
    request_id: RequestId,
) -> Result<Response, ApiError> {
    list_books(books, page, request_id).await
}

/// `GET /books?limit=N&after=ID`: one page of books ordered by id, with a `Link` to the next
/// page when this one is full.
#[utoipa::path(
    get,
    path = "/books",
    tag = "books",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Books per page (default 100)"),
        ("after" = Option<i64>, Query, minimum = 0, description = "Only books whose id is greater: the last id of the previous page (default 0: the first page)"),
    ),
    responses(
        (status = 200, description = "One page of books ordered by id; where it came from in the cache headers", body = Vec<Book>,
         headers(
            ("Link" = inline(NextLink), description = "`</books?limit=N&after=ID>; rel=\"next\"` when the page is full"),
            ("X-Cache" = inline(XCache), description = "Where the page came from: `hit`, `miss` or `stale`"),
            ("Cache-Status" = inline(CacheStatus), description = "The same in RFC 9211 form"),
            ("Age" = u64, description = "Age of the cached data in whole seconds (`hit` and `stale`): the oldest book of the page"),
         )),
        (status = 400, description = "A bad `limit` or `after` (not decimal digits, out of range, given twice)", body = ErrorBody),
        (status = 503, description = "storagesvc gave no answer within `REQUEST_BUDGET` and the cache knows nothing of this range; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds: the breaker's remaining open time rounded up, or 1"))),
    )
)]
async fn list_books(
    State(books): State<Arc<Books>>,
    Page(page): Page,
    RequestId(request_id): RequestId,
) -> Result<Response, ApiError> {
    let served = books.service.list_page(page, request_id).await?;
    let body = served.value;
    let mut response = json(body.json, &served.source, &books.hit_headers);
    let link = page.next_link(body.len, body.last_id);
    if let Some(link) = link.and_then(|link| HeaderValue::from_str(&link).ok()) {
        response.headers_mut().insert(LINK, link);
    }
    Ok(response)
}

/// `GET /books/{id}`: one book; a 404 carries the cache headers too (a tombstone is data).
#[utoipa::path(
    get,
    path = "/books/{id}",
    tag = "books",
    params(("id" = i64, Path, minimum = 1, description = "The book id: decimal digits only (`1`, `007`), from 1 to 2⁶³−1")),
    responses(
        (status = 200, description = "The book; where it came from in the cache headers", body = Book,
         headers(
            ("X-Cache" = inline(XCache), description = "Where the answer came from: `hit` (a fresh cache entry), `miss` (storagesvc now) or `stale` (storagesvc could not answer: the last known good data)"),
            ("Cache-Status" = inline(CacheStatus), description = "The same in RFC 9211 form"),
            ("Age" = u64, description = "Age of the cached entry in whole seconds (`hit` and `stale`)"),
         )),
        (status = 400, description = "The id is not a positive integer in decimal digits, or is over 2⁶³−1", body = ErrorBody),
        (status = 404, description = "No such book: storagesvc said so, or the cache holds its deletion (then answered even while storagesvc is down); with the cache headers", body = ErrorBody,
         headers(
            ("X-Cache" = inline(XCache), description = "Where the answer came from"),
            ("Cache-Status" = inline(CacheStatus), description = "The same in RFC 9211 form"),
            ("Age" = u64, description = "Age of the cached deletion in whole seconds (`hit` and `stale`)"),
         )),
        (status = 503, description = "storagesvc gave no answer within `REQUEST_BUDGET` and nothing is cached; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds: the breaker's remaining open time rounded up, or 1"))),
    )
)]
async fn get_book(
    State(books): State<Arc<Books>>,
    BookId(id): BookId,
    RequestId(request_id): RequestId,
) -> Result<Response, ApiError> {
    let served = books.service.get_book(id, request_id).await?;
    let hit = &books.hit_headers;
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
/// place: the hit path's answer (the fast path's too, [`super::local_hits`]).
pub(super) fn json(body: Bytes, source: &Source, hit: &HitHeaders) -> Response {
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    insert_cache_headers(headers, source, hit);
    response
}
