//! A stand-in storagesvc: a real HTTP server in the test's process that serves storagesvc's
//! read contract, as booksvc uses it, from books held in memory.
//!
//! # Why it exists
//!
//! booksvc's own tests are about booksvc: its breaker, retries, request budget, patience with
//! a slow upstream, coalescing, stale answers and races in its cache. For those, storagesvc is
//! only a source of answers, and a test shows the behaviour most directly when it can say
//! which answer comes: "storagesvc answers 503" rather than "stop PostgreSQL and wait until
//! storagesvc notices". With the stand-in such a test fails only for booksvc's reasons, and
//! needs no PostgreSQL. The contract between the two services (the same bytes, events,
//! rebuilding from the real list) is tested against the real storagesvc: by the tests here
//! that spawn it ([`crate::helpers::StackOptions::storagesvc`]) and by the end-to-end crate,
//! which runs both services.
//!
//! # What it serves
//!
//! - `GET /books/{id}`: the book as JSON (storagesvc's shape, [`Book`]) with `ETag`, or 404
//!   `{"error": …}`;
//! - `GET /books?limit=N&after=ID`: one page ordered by id, with `Link` to the next page when
//!   full; `limit` and `after` by storagesvc's own rules ([`PageQuery`], a twin file both
//!   services keep identical);
//! - `GET /healthz/ready`: 200, or 503 while it answers [`Answer::Unavailable`].
//!
//! What it answers is scripted ([`Standin::answer`], [`Standin::answer_next`]): normally,
//! 404, storagesvc's 503 (database unavailable, `Retry-After: 1`), 500, never, or late. It
//! counts every call that reached it ([`Standin::calls`]) and can hold answers back
//! ([`Standin::hold`]): the answer is decided when the call arrives and waits until
//! [`Standin::release`], so a test makes a race on purpose.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use booksvc::book::Book;
use booksvc::paging::PageQuery;
use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::watch;

/// How the stand-in answers a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// From its books, as storagesvc would.
    Normal,
    /// 404 on every book route, as a server without these routes would.
    NotFound,
    /// storagesvc's answer when PostgreSQL is down or too slow: 503, `Retry-After: 1` and its
    /// JSON error, on the book routes and on readiness.
    Unavailable,
    /// storagesvc's answer to a bug: 500 with its JSON error (readiness stays 200).
    InternalError,
    /// No answer at all: the call waits until its caller gives up.
    Hang,
    /// The normal answer, this much later.
    Delay(Duration),
}

/// The stand-in's handle; the server stops when the test's runtime ends.
pub(crate) struct Standin {
    /// `http://127.0.0.1:<port>`: give it to booksvc as `STORAGESVC_URL`.
    pub(crate) address: String,
    shared: Shared,
}

#[derive(Clone, Default)]
struct Shared {
    state: Arc<Mutex<Script>>,
    /// `true` while answers are held back.
    held: Arc<watch::Sender<bool>>,
}

/// Everything a call reads or changes, under one lock.
#[derive(Default)]
struct Script {
    books: BTreeMap<i64, Book>,
    last_id: i64,
    /// The answer to every call not taken by `next`.
    standing: Option<Answer>,
    /// Answers for the next calls, one each, before `standing`.
    next: VecDeque<Answer>,
    /// Calls received, by path.
    calls: HashMap<String, u32>,
}

impl Standin {
    /// A stand-in holding storagesvc's two seeded books (ids 1 and 2), answering normally.
    pub(crate) async fn start() -> anyhow::Result<Standin> {
        let standin = Standin {
            address: String::new(),
            shared: Shared::default(),
        };
        // storagesvc's seed (`storagesvc::seed::original_books`).
        for (title, author, desc) in [
            ("One book", "John Doe", "The first book on the shelf."),
            ("Second book", "Jane Doe", "The second book on the shelf."),
        ] {
            standin.insert(title, author, desc);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = format!("http://{}", listener.local_addr()?);
        let router = router(standin.shared.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(Standin { address, ..standin })
    }

    /// From now on every call gets `answer` (after any [`Standin::answer_next`] ones).
    pub(crate) fn answer(&self, answer: Answer) {
        self.shared.script().standing = Some(answer);
    }

    /// The next `calls` calls get `answer`, then the standing answer again.
    pub(crate) fn answer_next(&self, calls: usize, answer: Answer) {
        self.shared
            .script()
            .next
            .extend(std::iter::repeat_n(answer, calls));
    }

    /// Calls received for `path` (e.g. `/books/2`) so far, whatever they were answered.
    pub(crate) fn calls(&self, path: &str) -> u32 {
        self.shared.script().calls.get(path).copied().unwrap_or(0)
    }

    /// Calls received for book reads and the list (what the breaker guards).
    pub(crate) fn book_calls(&self) -> u32 {
        let script = self.shared.script();
        let books = script
            .calls
            .iter()
            .filter(|(path, _)| path.starts_with("/books"));
        books.map(|(_, count)| count).sum()
    }

    /// From now on, answers are decided when a call arrives and sent on
    /// [`Standin::release`].
    pub(crate) fn hold(&self) {
        self.shared.held.send_replace(true);
    }

    /// Sends every held answer, and all later ones at once.
    pub(crate) fn release(&self) {
        self.shared.held.send_replace(false);
    }

    /// Adds a book (version 1), as `POST /books` would; returns its id.
    pub(crate) fn create(&self, title: &str) -> i64 {
        self.insert(title, "Test Author", "")
    }

    /// Renames a book, its version one more, as `PUT /books/{id}` would; returns the book.
    pub(crate) fn rename(&self, id: i64, title: &str) -> anyhow::Result<Value> {
        let mut script = self.shared.script();
        let book = script
            .books
            .get_mut(&id)
            .ok_or_else(|| anyhow::anyhow!("the stand-in has no book {id}"))?;
        book.title = title.to_owned();
        book.version += 1;
        book.updated_at = Utc::now();
        Ok(serde_json::to_value(&*book)?)
    }

    /// Deletes a book, as `DELETE /books/{id}` would.
    pub(crate) fn delete(&self, id: i64) -> anyhow::Result<()> {
        let removed = self.shared.script().books.remove(&id);
        anyhow::ensure!(removed.is_some(), "the stand-in has no book {id}");
        Ok(())
    }

    fn insert(&self, title: &str, author: &str, desc: &str) -> i64 {
        let mut script = self.shared.script();
        script.last_id += 1;
        let id = script.last_id;
        let book = Book {
            id,
            title: title.to_owned(),
            author: author.to_owned(),
            desc: desc.to_owned(),
            version: 1,
            updated_at: Utc::now(),
        };
        script.books.insert(id, book);
        id
    }
}

impl Shared {
    fn script(&self) -> MutexGuard<'_, Script> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a call to `path` and takes its answer.
    fn arrive(&self, path: &str) -> Answer {
        let mut script = self.script();
        *script.calls.entry(path.to_owned()).or_default() += 1;
        let standing = script.standing.unwrap_or(Answer::Normal);
        script.next.pop_front().unwrap_or(standing)
    }

    async fn wait_until_released(&self) {
        let mut held = self.held.subscribe();
        // An error means the stand-in itself is going away: answer at once.
        let _ = held.wait_for(|held| !held).await;
    }
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/books", get(list))
        .route("/books/{id}", get(book))
        .route("/healthz/ready", get(ready))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .layer(middleware::from_fn_with_state(shared.clone(), scripted))
        .with_state(shared)
}

/// Every call: counted, then answered as scripted, then held while answers are held.
async fn scripted(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let readiness = path == "/healthz/ready";
    let response = match shared.arrive(&path) {
        Answer::Normal => next.run(request).await,
        Answer::Delay(delay) => {
            tokio::time::sleep(delay).await;
            next.run(request).await
        }
        Answer::Hang => std::future::pending().await,
        Answer::Unavailable if readiness => not_ready(),
        Answer::NotFound | Answer::InternalError if readiness => next.run(request).await,
        Answer::Unavailable => unavailable(),
        Answer::NotFound => error(StatusCode::NOT_FOUND, "no such route"),
        Answer::InternalError => error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    };
    shared.wait_until_released().await;
    response
}

/// `GET /books/{id}`.
async fn book(State(shared): State<Shared>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("book id {id:?} is not valid"),
        );
    };
    let Some(book) = shared.script().books.get(&id).cloned() else {
        return error(StatusCode::NOT_FOUND, &format!("book {id} does not exist"));
    };
    let etag = HeaderValue::try_from(format!("\"{}\"", book.version));
    let mut response = Json(book).into_response();
    if let Ok(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// `GET /books?limit=N&after=ID`.
async fn list(
    State(shared): State<Shared>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let pairs = pairs
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()));
    let page = match PageQuery::from_pairs(pairs) {
        Ok(page) => page,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let books: Vec<Book> = {
        let script = shared.script();
        let after = script
            .books
            .range(page.after.saturating_add(1)..)
            .map(|(_, b)| b);
        after.take(page.limit as usize).cloned().collect()
    };
    let link = page.next_link(books.len(), books.last().map(|last| last.id));
    let mut response = Json(books).into_response();
    if let Some(link) = link.and_then(|link| HeaderValue::try_from(link).ok()) {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

/// `GET /healthz/ready` while answering normally.
async fn ready() -> Json<Value> {
    Json(json!({
        "status": "ready",
        "dependencies": { "postgres": { "status": "up" } },
    }))
}

fn not_ready() -> Response {
    let down = json!({ "status": "down", "error": "the stand-in answers 503" });
    let body = json!({ "status": "not ready", "dependencies": { "postgres": down } });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// storagesvc's 503 (`ApiError::Unavailable`).
fn unavailable() -> Response {
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the database is unavailable, retry later",
    );
    let retry_after = HeaderValue::from_static("1");
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, retry_after);
    response
}

/// storagesvc's error shape: `{"error": "…"}`.
fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
