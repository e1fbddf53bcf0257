//! The `/books` handlers.
//!
//! Every write reads `begin → books::<write> → outbox::enqueue → commit`: the book row and
//! its event commit together or not at all. Returning early drops the transaction, which
//! rolls it back. Each handler's database work is bounded by `DB_STATEMENT_TIMEOUT` plus a
//! second ([`database::with_connection`]): a database that stops answering costs a 503,
//! not a request and a pool connection held for ever.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use events::BookChanged;
use std::time::Duration;

use sqlx::{Connection, PgConnection, Postgres, Transaction};

use super::{ApiError, AppState, BookId, Budget, ErrorBody, IfMatch, JsonBody, Page, WriteAccess};
use crate::books::{self, Book, BookFields, WriteOutcome};
use crate::{database, outbox};

/// `GET /books?limit=N&after=ID`: one page of books ordered by id, with a `Link` to the next
/// page when this one is full.
#[utoipa::path(
    get,
    path = "/books",
    tag = "books",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Books per page (default 100)"),
        ("after" = Option<i64>, Query, minimum = 0, description = "The last id of the previous page (default 0: the first page)"),
        ("x-request-timeout" = Option<String>, Header, nullable = false, description = "How long the caller will wait, in whole milliseconds; the database work is bounded by it and stops when it runs out (a 503). A value that is not a whole number is ignored: the service's own bounds apply"),
    ),
    responses(
        (status = 200, description = "One page of books ordered by id", body = Vec<Book>,
         headers(("Link" = String, description = "`</books?limit=N&after=ID>; rel=\"next\"` when the page is full"))),
        (status = 400, description = "A bad `limit` or `after`", body = ErrorBody),
        (status = 503, description = "PostgreSQL is unavailable or too slow; retry later", body = ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub(super) async fn list_books(
    State(state): State<AppState>,
    budget: Budget,
    Page(page): Page,
) -> Result<(HeaderMap, Json<Vec<Book>>), ApiError> {
    let list = database::with_connection(&state.pool, budget.limit(state.db_timeout), async |db| {
        books::page(db, page.after, page.limit).await
    });
    let books = list.await?;
    let mut headers = HeaderMap::new();
    let link = page.next_link(books.len(), books.last().map(|book| book.id));
    if let Some(link) = link.and_then(|link| HeaderValue::from_str(&link).ok()) {
        headers.insert(header::LINK, link);
    }
    Ok((headers, Json(books)))
}

/// `GET /books/{id}`: one book, with its version as `ETag`.
#[utoipa::path(
    get,
    path = "/books/{id}",
    tag = "books",
    params(("id" = i64, Path, minimum = 1, description = "The book id"), ("x-request-timeout" = Option<String>, Header, nullable = false, description = "How long the caller will wait, in whole milliseconds; the database work is bounded by it and stops when it runs out (a 503). A value that is not a whole number is ignored: the service's own bounds apply")),
    responses(
        (status = 200, description = "The book", body = Book, headers(("ETag" = String, description = "The version, quoted: `\"3\"`"))),
        (status = 400, description = "The id is not a positive integer", body = ErrorBody),
        (status = 404, description = "No such book", body = ErrorBody),
        (status = 503, description = "PostgreSQL is unavailable or too slow; retry later", body = ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub(super) async fn get_book(
    State(state): State<AppState>,
    budget: Budget,
    BookId(id): BookId,
) -> Result<(HeaderMap, Json<Book>), ApiError> {
    let find = database::with_connection(&state.pool, budget.limit(state.db_timeout), async |db| {
        books::find(db, id).await
    });
    let book = find.await?.ok_or_else(|| not_found(id))?;
    Ok(with_etag(book))
}

/// `POST /books`: 201 with the new book and its `Location`.
#[utoipa::path(
    post,
    path = "/books",
    tag = "books",
    params(("x-request-timeout" = Option<String>, Header, nullable = false, description = "How long the caller will wait, in whole milliseconds; the database work is bounded by it and stops when it runs out (a 503). A value that is not a whole number is ignored: the service's own bounds apply")),
    request_body(content = BookFields, content_type = "application/json"),
    security(("write_token" = [])),
    responses(
        (status = 201, description = "Created; its event is in the outbox", body = Book,
         headers(("Location" = String, description = "`/books/{id}`"), ("ETag" = String, description = "`\"1\"`"))),
        (status = 400, description = "A bad id or `If-Match`, or a body that is not JSON", body = ErrorBody),
        (status = 401, description = "No `Authorization: Bearer <token>`", body = ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 403, description = "A wrong token, or writes are disabled", body = ErrorBody),
        (status = 413, description = "A body over `BODY_LIMIT`", body = ErrorBody),
        (status = 415, description = "The body is not declared `application/json`", body = ErrorBody),
        (status = 422, description = "JSON that is not a valid book", body = ErrorBody),
        (status = 409, description = "The write conflicts with stored data", body = ErrorBody),
        (status = 503, description = "PostgreSQL is unavailable or too slow; retry later", body = ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub(super) async fn create_book(
    State(state): State<AppState>,
    budget: Budget,
    _: WriteAccess,
    JsonBody(fields): JsonBody<BookFields>,
) -> Result<(StatusCode, HeaderMap, Json<Book>), ApiError> {
    fields.validate().map_err(ApiError::Unprocessable)?;

    let limit = budget.limit(state.db_timeout);
    let (mut db, left) = database::acquire_within(&state.pool, limit).await?;
    let statement_limit = budget.0.map(|_| limit);
    let outcome = tokio::time::timeout(left, insert(&mut db, &fields, statement_limit)).await;
    let book = database::settle(db, outcome, limit)?;

    tracing::info!(book_id = book.id, "book created");
    let location = format!("/books/{}", book.id);
    let (mut headers, body) = with_etag(book);
    if let Ok(location) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::CREATED, headers, body))
}

/// `PUT /books/{id}`: replaces the fields and bumps the version; `If-Match` makes it conditional.
#[utoipa::path(
    put,
    path = "/books/{id}",
    tag = "books",
    params(("id" = i64, Path, minimum = 1, description = "The book id"), ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^"0*[1-9][0-9]{0,17}"$|^\*$"#, description = "`\"<version>\"` (quoted, as `ETag` gives it) or `*`: write only if the stored version is that one"), ("x-request-timeout" = Option<String>, Header, nullable = false, description = "How long the caller will wait, in whole milliseconds; the database work is bounded by it and stops when it runs out (a 503). A value that is not a whole number is ignored: the service's own bounds apply")),
    request_body(content = BookFields, content_type = "application/json"),
    security(("write_token" = [])),
    responses(
        (status = 200, description = "Updated; its event is in the outbox", body = Book, headers(("ETag" = String, description = "The new version, quoted"))),
        (status = 400, description = "A bad id or `If-Match`, or a body that is not JSON", body = ErrorBody),
        (status = 401, description = "No `Authorization: Bearer <token>`", body = ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 403, description = "A wrong token, or writes are disabled", body = ErrorBody),
        (status = 404, description = "No such book", body = ErrorBody),
        (status = 412, description = "`If-Match` names another version; `current_version` says which", body = ErrorBody),
        (status = 413, description = "A body over `BODY_LIMIT`", body = ErrorBody),
        (status = 415, description = "The body is not declared `application/json`", body = ErrorBody),
        (status = 422, description = "JSON that is not a valid book", body = ErrorBody),
        (status = 409, description = "The write conflicts with stored data", body = ErrorBody),
        (status = 503, description = "PostgreSQL is unavailable or too slow; retry later", body = ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub(super) async fn update_book(
    State(state): State<AppState>,
    budget: Budget,
    _: WriteAccess,
    BookId(id): BookId,
    if_match: IfMatch,
    JsonBody(fields): JsonBody<BookFields>,
) -> Result<(HeaderMap, Json<Book>), ApiError> {
    fields.validate().map_err(ApiError::Unprocessable)?;

    let limit = budget.limit(state.db_timeout);
    let (mut db, left) = database::acquire_within(&state.pool, limit).await?;
    let statement_limit = budget.0.map(|_| limit);
    let expected = if_match.expected_version();
    let work = update(&mut db, id, &fields, expected, statement_limit);
    let outcome = tokio::time::timeout(left, work).await;
    let book = database::settle(db, outcome, limit)?;

    tracing::info!(book_id = id, version = book.version, "book updated");
    Ok(with_etag(book))
}

/// `DELETE /books/{id}`: 204; `If-Match` makes it conditional.
#[utoipa::path(
    delete,
    path = "/books/{id}",
    tag = "books",
    params(("id" = i64, Path, minimum = 1, description = "The book id"), ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^"0*[1-9][0-9]{0,17}"$|^\*$"#, description = "`\"<version>\"` (quoted, as `ETag` gives it) or `*`: write only if the stored version is that one"), ("x-request-timeout" = Option<String>, Header, nullable = false, description = "How long the caller will wait, in whole milliseconds; the database work is bounded by it and stops when it runs out (a 503). A value that is not a whole number is ignored: the service's own bounds apply")),
    security(("write_token" = [])),
    responses(
        (status = 204, description = "Deleted; its event is in the outbox"),
        (status = 400, description = "A bad id or `If-Match`", body = ErrorBody),
        (status = 401, description = "No `Authorization: Bearer <token>`", body = ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 403, description = "A wrong token, or writes are disabled", body = ErrorBody),
        (status = 404, description = "No such book", body = ErrorBody),
        (status = 412, description = "`If-Match` names another version; `current_version` says which", body = ErrorBody),
        (status = 503, description = "PostgreSQL is unavailable or too slow; retry later", body = ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub(super) async fn delete_book(
    State(state): State<AppState>,
    budget: Budget,
    _: WriteAccess,
    BookId(id): BookId,
    if_match: IfMatch,
) -> Result<StatusCode, ApiError> {
    let limit = budget.limit(state.db_timeout);
    let (mut db, left) = database::acquire_within(&state.pool, limit).await?;
    let statement_limit = budget.0.map(|_| limit);
    let work = delete(&mut db, id, if_match.expected_version(), statement_limit);
    let outcome = tokio::time::timeout(left, work).await;
    database::settle(db, outcome, limit)?;

    tracing::info!(book_id = id, "book deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// A transaction whose statements end within `statement_limit`, when the caller set one.
async fn begin(
    db: &mut PgConnection,
    statement_limit: Option<Duration>,
) -> Result<Transaction<'_, Postgres>, sqlx::Error> {
    let mut tx = db.begin().await?;
    if let Some(limit) = statement_limit {
        database::limit_statements(&mut tx, limit).await?;
    }
    Ok(tx)
}

async fn insert(
    db: &mut PgConnection,
    fields: &BookFields,
    statement_limit: Option<Duration>,
) -> Result<Book, ApiError> {
    let mut tx = begin(db, statement_limit).await?;
    let book = books::insert(&mut tx, fields).await?;
    let event = BookChanged::created(book.to_event_data(), book.version, book.updated_at);
    outbox::enqueue(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(book)
}

async fn update(
    db: &mut PgConnection,
    id: i64,
    fields: &BookFields,
    expected_version: Option<i64>,
    statement_limit: Option<Duration>,
) -> Result<Book, ApiError> {
    let mut tx = begin(db, statement_limit).await?;
    let outcome = books::update(&mut tx, id, fields, expected_version).await?;
    let book = written(outcome, id)?;
    let event = BookChanged::updated(book.to_event_data(), book.version, book.updated_at);
    outbox::enqueue(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(book)
}

async fn delete(
    db: &mut PgConnection,
    id: i64,
    expected_version: Option<i64>,
    statement_limit: Option<Duration>,
) -> Result<(), ApiError> {
    let mut tx = begin(db, statement_limit).await?;
    let outcome = books::delete(&mut tx, id, expected_version).await?;
    let deleted = written(outcome, id)?;
    outbox::enqueue(
        &mut tx,
        &BookChanged::deleted(id, deleted.version, deleted.at),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The write's result, or the error explaining why nothing was written.
fn written<T>(outcome: WriteOutcome<T>, id: i64) -> Result<T, ApiError> {
    match outcome {
        WriteOutcome::Done(value) => Ok(value),
        WriteOutcome::NotFound => Err(not_found(id)),
        WriteOutcome::VersionMismatch { current } => Err(ApiError::PreconditionFailed {
            current_version: current,
        }),
    }
}

fn not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!("book {id} does not exist"))
}

/// The book as JSON with `ETag: "<version>"`, the value `If-Match` expects back.
fn with_etag(book: Book) -> (HeaderMap, Json<Book>) {
    let mut headers = HeaderMap::new();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", book.version)) {
        headers.insert(header::ETAG, etag);
    }
    (headers, Json(book))
}
