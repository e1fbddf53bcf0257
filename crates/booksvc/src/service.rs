//! The read path: [`BookService::get_book`] and [`BookService::list_page`] (the answer as
//! ready-to-send bytes; for a book, the local hit layer first) around `BookService::read`
//! (cache, storagesvc, fallback).
//!
//! ```text
//! local hit layer ── live and fresh? ──▶ serve `hit` (no Redis round trip)
//!      │ no
//!      ▼
//! cache lookup ── fresh? ──▶ serve `hit` (and copy it into the local layer)
//!      │ no (stale, absent, or Redis down/slow)
//!      ▼
//! cached entry and breaker open? ──▶ serve `stale` at once (no flight)
//!      │ no
//!      ▼
//! coalesced( retry_within( breaker-guarded storagesvc call ) ) then fill the cache
//!      │ ok (in time: see "Patience") ──▶ serve `miss`
//!      ▼ failed (open breaker, outage, budget spent) or not in time
//! cached entry? ──▶ serve `stale`  :  503 with Retry-After
//! ```
//!
//! - **Patience** (FusionCache's fail-safe with soft timeouts). A read with nothing cached
//!   waits for its flight until the deadline. A read with an entry to fall back on waits at
//!   most `STALE_SOFT_TIMEOUT`, and not at all while the breaker is half-open (the call is a
//!   trial, or waits behind one, and storagesvc was down a moment ago: under concurrency
//!   every reader of the key would otherwise queue behind it). It then serves the entry as
//!   `stale` while the flight goes on in its own task and refills the cache.
//! - **Budget.** `REQUEST_BUDGET` bounds everything: the lookup is bounded by
//!   `REDIS_TIMEOUT`, the storagesvc attempts and pauses end before the deadline minus one
//!   `REDIS_TIMEOUT` (the room the fill needs), and a caller stops waiting for the flight at
//!   the deadline. The stale fallback needs no I/O: it reuses the lookup.
//! - **Breaker inside retry.** Each attempt asks the breaker first, so an open circuit stops
//!   the retries at once ([`crate::retry::Verdict::GiveUp`]) and the read goes straight to
//!   the fallback. A 404 is storagesvc answering: a success for the breaker.
//! - **Coalescing around retry.** Concurrent misses for one key share one flight (one
//!   storagesvc call, one fill); see [`crate::coalesce`]. The flight runs in its own task, so
//!   a client going away does not cancel it: the call still fills the cache. A flight cut
//!   short (runtime shutting down) drops its [`crate::breaker::Permit`] unreported, which
//!   the breaker counts as neither success nor failure.
//! - **Local layer.** It holds bytes, so it sits at the edge where the bytes are:
//!   [`BookService::get_book`] looks in the [`LocalCache`] before `read` and offers it the
//!   encoded answer after (pages bypass it, see `ListPage`). Only a fresh Redis hit is copied
//!   into it, with the ticket taken before the lookup, so a read that raced an invalidation
//!   stores nothing (see [`crate::cache::local`]).
//! - **Who wins.** The fill hands back the revision the lookup saw ([`Seen`]); the cache
//!   keeps an entry written since (an event) if it is newer. Redis down: the fill fails
//!   fast and is only logged.

mod resource;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderValue;
use tokio::time::Instant;

use crate::breaker::{CircuitBreaker, NotPermitted, State};
use crate::cache::{Book, BookCache, BookPage, Cached, LocalCache, LocalKey, Lookup, Seen};
use crate::client::{ClientError, StorageClient};
use crate::coalesce::{Coalescer, Flight, Role};
use crate::http::HitHeaders;
use crate::metrics::{self, ReadResult};
use crate::paging::PageQuery;
use crate::retry::{RetryError, RetryPolicy, Retryable, Verdict, retry_within};

pub(crate) use self::resource::{ListPage, OneBook, Resource};

/// A page as sent: the JSON array, and what the `Link` header needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageBody {
    /// The JSON array of books.
    pub json: Bytes,
    /// Books on the page.
    pub len: usize,
    /// The last book's id, if any.
    pub last_id: Option<i64>,
}

/// An answer and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Served<T> {
    pub value: T,
    pub source: Source,
}

/// Where an answer came from; the `X-Cache` header says it in one word.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// `hit`: a fresh cache entry; storagesvc was not asked.
    Fresh { age: Duration },
    /// `miss`: storagesvc answered now.
    Upstream {
        /// A stale entry was cached (and is now refreshed), rather than nothing.
        refreshed: bool,
        /// This read shared another read's storagesvc call.
        collapsed: bool,
    },
    /// `stale`: storagesvc could not answer; this is the last good data.
    Stale { age: Duration, why: FetchFailure },
}

/// Why storagesvc gave no answer in time: within the budget, or, for a read with an entry to
/// fall back on, without waiting for a trial or past the soft timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchFailure {
    /// The breaker refused the call: storagesvc was not asked. `retry_after`: until the
    /// breaker lets a probe through, when it is open.
    CircuitOpen { retry_after: Option<Duration> },
    /// The breaker is half-open and a trial call is in flight: a read with an entry does not
    /// wait for it (the trial goes on in the background and refills the cache if it works).
    TrialInFlight,
    /// storagesvc did not answer within `STALE_SOFT_TIMEOUT` (`waited`); the call goes on in
    /// the background and refills the cache. Only a read with an entry stops waiting early.
    SoftTimeout { waited: Duration },
    /// storagesvc was asked and failed, or the budget ran out first.
    Upstream { reason: String },
}

/// The read path's dependencies and knobs. Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct BookService {
    core: Arc<Core>,
}

/// What the read path needs, shared by every request and every flight.
pub struct ReadPath {
    pub cache: BookCache,
    pub client: StorageClient,
    pub breaker: CircuitBreaker,
    pub retry: RetryPolicy,
    /// `CACHE_FRESH_TTL`.
    pub fresh_ttl: Duration,
    /// `REQUEST_BUDGET`.
    pub budget: Duration,
    /// `REDIS_TIMEOUT`: the room kept for the fill before the deadline.
    pub redis_timeout: Duration,
    /// `STALE_SOFT_TIMEOUT`: the most a read with an entry waits for storagesvc before it is
    /// served the entry as `stale` (the call goes on and refills the cache).
    pub stale_soft_timeout: Duration,
}

struct Core {
    path: ReadPath,
    local: LocalCache,
    hit_headers: HitHeaders,
    books: Coalescer<OneBook, Result<Option<Book>, FetchFailure>>,
    pages: Coalescer<ListPage, Result<BookPage, FetchFailure>>,
}

impl BookService {
    /// The read path without the local hit layer.
    pub fn new(path: ReadPath) -> BookService {
        BookService::with_local(path, LocalCache::disabled())
    }

    /// The read path with `local` in front of Redis (it serves once it is live).
    pub fn with_local(path: ReadPath, local: LocalCache) -> BookService {
        let core = Core {
            hit_headers: HitHeaders::new(path.fresh_ttl),
            path,
            local,
            books: Coalescer::new(OneBook::NAME),
            pages: Coalescer::new(ListPage::NAME),
        };
        BookService {
            core: Arc::new(core),
        }
    }

    /// `GET /books/{id}` as the JSON body to send; `None` when the book does not exist
    /// (storagesvc's 404, or a cached tombstone). The local hit layer answers first; a fresh
    /// Redis hit is copied into it under the ticket taken before Redis was read.
    pub async fn get_book(
        &self,
        id: i64,
        request_id: Option<HeaderValue>,
    ) -> Result<Served<Option<Bytes>>, FetchFailure> {
        let local = &self.core.local;
        if let Some(hit) = local.get(LocalKey::Book(id)) {
            return Ok(Served {
                value: Some(hit.body),
                source: Source::Fresh { age: hit.age },
            });
        }
        let ticket = local.ticket();
        let served = self.read(OneBook(id), request_id).await?;
        let body = served.value.as_ref().map(json).transpose()?;
        // A tombstone is not offered to the layer: Redis remembers it.
        if let (Some(ticket), Source::Fresh { age }, Some(book), Some(body)) =
            (ticket, &served.source, &served.value, &body)
        {
            local.store_book(id, ticket, book.version, body.clone(), *age);
        }
        Ok(Served {
            value: body,
            source: served.source,
        })
    }

    /// `GET /books?limit=N&after=ID` as the JSON body to send: one page, ordered by id.
    /// Pages bypass the local layer (see `ListPage`).
    pub async fn list_page(
        &self,
        page: PageQuery,
        request_id: Option<HeaderValue>,
    ) -> Result<Served<PageBody>, FetchFailure> {
        let served = self.read(ListPage(page), request_id).await?;
        let books = &served.value.books;
        let body = PageBody {
            json: json(books)?,
            len: books.len(),
            last_id: books.last().map(|book| book.id),
        };
        Ok(Served {
            value: body,
            source: served.source,
        })
    }

    /// The dependencies and knobs, for health reports and the probe.
    pub fn path(&self) -> &ReadPath {
        &self.core.path
    }

    /// The in-process hit layer (disabled unless built [`BookService::with_local`]).
    pub fn local(&self) -> &LocalCache {
        &self.core.local
    }

    /// A hit's cache headers, prepared for `CACHE_FRESH_TTL`.
    pub fn hit_headers(&self) -> &HitHeaders {
        &self.core.hit_headers
    }

    /// The order of the read path, in one place (see the module docs).
    async fn read<R: Resource>(
        &self,
        resource: R,
        request_id: Option<HeaderValue>,
    ) -> Result<Served<R::Value>, FetchFailure>
    where
        Core: Flights<R>,
    {
        let path = &self.core.path;
        let deadline = Instant::now() + path.budget;
        // 1. The cache: a fresh entry is the answer. Redis down or slow reads as "nothing".
        let lookup = self.core.lookup(&resource).await;
        if let Some(fresh) = lookup
            .cached
            .as_ref()
            .filter(|c| R::is_fresh(c, path.fresh_ttl))
        {
            return Ok(served(R::NAME, fresh.clone(), None));
        }
        // An open breaker with something cached: the fallback at once. No flight, no retry
        // loop, no task: nothing could reach storagesvc anyway, and during an outage this
        // is the hot path (stale costs a Redis read, as a hit does). Else the same look at
        // the breaker says how long to wait for the call (see `patience`).
        let patience = match &lookup.cached {
            None => Patience::budget(deadline),
            Some(cached) => match path.breaker.refusal_while_open() {
                Err(refused) => {
                    let why = FetchFailure::CircuitOpen {
                        retry_after: refused.retry_after(),
                    };
                    return Ok(served(R::NAME, cached.clone(), Some(why)));
                }
                Ok(state) => patience(state, path.stale_soft_timeout, deadline),
            },
        };
        // 2. storagesvc: one coalesced flight per key, retried within the budget, each
        //    attempt behind the breaker; the flight fills the cache with `lookup.seen`.
        let refreshed = lookup.cached.is_some();
        let answer = self.fetch_coalesced(resource, lookup.seen, request_id, deadline, patience);
        match answer.await {
            Ok((value, collapsed)) => Ok(fetched(R::NAME, value, refreshed, collapsed)),
            // 3. No answer: the last good data, marked stale; nothing cached, a 503.
            Err(why) => match lookup.cached {
                Some(cached) => Ok(served(R::NAME, cached, Some(why))),
                None => Err(unavailable(R::NAME, why)),
            },
        }
    }

    /// Joins (or starts) the flight for `resource` (it fills the cache with `deadline` as its
    /// own) and waits for it as long as `patience` says. `Ok` carries whether this read
    /// shared another read's call.
    async fn fetch_coalesced<R: Resource>(
        &self,
        resource: R,
        seen: Seen,
        request_id: Option<HeaderValue>,
        deadline: Instant,
        patience: Patience,
    ) -> Result<(R::Value, bool), FetchFailure>
    where
        Core: Flights<R>,
    {
        let (flight, role) = self.join_flight(resource, seen, request_id, deadline);
        let Patience { until, gave_up } = patience;
        // No patience at all (a trial in flight): not even one poll, so the answer says what
        // was true when the read looked, and never carries the trial's own failure.
        if until <= Instant::now() {
            return Err(gave_up);
        }
        // Leaving early drops only this read's handle: the flight runs in its own task.
        match tokio::time::timeout_at(until, flight).await {
            Ok(Some(answer)) => answer.map(|value| (value, role == Role::Follower)),
            Ok(None) => Err(FetchFailure::Upstream {
                reason: "the storagesvc call failed unexpectedly".to_owned(),
            }),
            Err(_elapsed) => Err(gave_up),
        }
    }
}

impl BookService {
    /// Joins the flight for `resource`, or starts one; it runs in its own task whether or
    /// not anyone waits for it.
    fn join_flight<R: Resource>(
        &self,
        resource: R,
        seen: Seen,
        request_id: Option<HeaderValue>,
        deadline: Instant,
    ) -> (Flight<Result<R::Value, FetchFailure>>, Role)
    where
        Core: Flights<R>,
    {
        let core = Arc::clone(&self.core);
        let work = core.fetch_and_fill(resource.clone(), seen, request_id, deadline);
        Flights::<R>::flights(&*self.core).join(resource, work)
    }
}

/// Which coalescer serves a resource.
trait Flights<R: Resource> {
    fn flights(&self) -> &Coalescer<R, Result<R::Value, FetchFailure>>;
}

impl Flights<OneBook> for Core {
    fn flights(&self) -> &Coalescer<OneBook, Result<Option<Book>, FetchFailure>> {
        &self.books
    }
}

impl Flights<ListPage> for Core {
    fn flights(&self) -> &Coalescer<ListPage, Result<BookPage, FetchFailure>> {
        &self.pages
    }
}

/// How long a read waits for its flight, and what it says when it stops waiting.
struct Patience {
    until: Instant,
    gave_up: FetchFailure,
}

impl Patience {
    /// A read with nothing to fall back on waits until the deadline.
    fn budget(deadline: Instant) -> Patience {
        Patience {
            until: deadline,
            gave_up: FetchFailure::Upstream {
                reason: "no answer within the request budget".to_owned(),
            },
        }
    }
}

/// How long a read with an entry waits, the breaker being in `state` (closed or half-open):
/// FusionCache's fail-safe with soft timeouts. Not at all while half-open: the call is a
/// trial, or waits behind one, and storagesvc was down a moment ago; under concurrency every
/// reader of the key would otherwise queue behind it. Else at most `soft_timeout`. Either
/// way the flight goes on and refills the cache.
fn patience(state: State, soft_timeout: Duration, deadline: Instant) -> Patience {
    let now = Instant::now();
    if state == State::HalfOpen {
        return Patience {
            until: now,
            gave_up: FetchFailure::TrialInFlight,
        };
    }
    match now + soft_timeout < deadline {
        true => Patience {
            until: now + soft_timeout,
            gave_up: FetchFailure::SoftTimeout {
                waited: soft_timeout,
            },
        },
        false => Patience::budget(deadline),
    }
}

impl Core {
    /// The cache lookup; Redis down or slow reads as "nothing cached" (it costs at most
    /// `REDIS_TIMEOUT`, and the answer comes from storagesvc instead).
    async fn lookup<R: Resource>(&self, resource: &R) -> Lookup<R::Value> {
        match resource.lookup(&self.path.cache).await {
            Ok(lookup) => lookup,
            Err(error) => {
                tracing::debug!(%error, resource = R::NAME, "cache lookup failed; asking storagesvc");
                Lookup {
                    cached: None,
                    seen: Seen::NOTHING,
                }
            }
        }
    }

    /// A flight's work: storagesvc with retry and breaker, then the fill, before `deadline`.
    async fn fetch_and_fill<R: Resource>(
        self: Arc<Self>,
        resource: R,
        seen: Seen,
        request_id: Option<HeaderValue>,
        deadline: Instant,
    ) -> Result<R::Value, FetchFailure> {
        let fetch_deadline = deadline
            .checked_sub(self.path.redis_timeout)
            .map_or(deadline, |at| at.max(Instant::now()));
        let request_id = request_id.as_ref().and_then(|id| id.to_str().ok());
        let value = retry_within(&self.path.retry, fetch_deadline, |left| {
            self.guarded_call(&resource, request_id, left)
        })
        .await
        .map_err(FetchFailure::from)?;
        let fill = resource.fill(&self.path.cache, seen, &value, self.path.fresh_ttl);
        if let Err(error) = fill.await {
            tracing::debug!(%error, resource = R::NAME, "cache fill failed");
        }
        Ok(value)
    }

    /// One storagesvc attempt behind the breaker: refused at once while open; reported as a
    /// failure only when storagesvc is unhealthy (a 404 or another 4xx is an answer).
    async fn guarded_call<R: Resource>(
        &self,
        resource: &R,
        request_id: Option<&str>,
        time_left: Duration,
    ) -> Result<R::Value, CallError> {
        let permit = self
            .path
            .breaker
            .try_acquire()
            .map_err(CallError::NotPermitted)?;
        let started = std::time::Instant::now();
        let result = resource
            .fetch(&self.path.client, request_id, time_left)
            .await;
        metrics::record_storagesvc_call(R::NAME, &result, started.elapsed());
        match &result {
            Err(error) if error.is_outage() => permit.failure(),
            _ => permit.success(),
        }
        result.map_err(CallError::Storage)
    }
}

/// Why one guarded attempt failed.
#[derive(Debug)]
enum CallError {
    /// The breaker refused: storagesvc is known to be down. Never retried.
    NotPermitted(NotPermitted),
    /// storagesvc failed; the client's mapping decides whether a retry can help.
    Storage(ClientError),
}

impl Retryable for CallError {
    fn verdict(&self) -> Verdict {
        match self {
            CallError::NotPermitted(_) => Verdict::GiveUp,
            CallError::Storage(error) => error.verdict(),
        }
    }
}

impl From<RetryError<CallError>> for FetchFailure {
    fn from(error: RetryError<CallError>) -> FetchFailure {
        match error {
            RetryError::Failed {
                error: CallError::NotPermitted(refused),
                attempts: 1,
            } => FetchFailure::CircuitOpen {
                retry_after: refused.retry_after(),
            },
            RetryError::Failed {
                error: CallError::NotPermitted(refused),
                attempts,
            } => FetchFailure::Upstream {
                reason: format!("{refused} (after {} failed attempts)", attempts - 1),
            },
            RetryError::Failed {
                error: CallError::Storage(error),
                attempts,
            } => FetchFailure::Upstream {
                reason: format!("{error} (after {attempts} attempts)"),
            },
            RetryError::DeadlineExceeded { attempts } => FetchFailure::Upstream {
                reason: format!("no answer within the request budget ({attempts} attempts)"),
            },
        }
    }
}

/// A cached answer: `hit` when `why` is `None`, else `stale` because of `why`.
fn served<T>(resource: &'static str, cached: Cached<T>, why: Option<FetchFailure>) -> Served<T> {
    let source = match why {
        None => {
            metrics::record_read(resource, ReadResult::Hit);
            Source::Fresh { age: cached.age }
        }
        Some(why) => {
            tracing::debug!(resource, age = ?cached.age, reason = ?why, "serving stale data");
            metrics::record_read(resource, ReadResult::Stale(cached.age));
            Source::Stale {
                age: cached.age,
                why,
            }
        }
    };
    Served {
        value: cached.value,
        source,
    }
}

fn fetched<T>(resource: &'static str, value: T, refreshed: bool, collapsed: bool) -> Served<T> {
    metrics::record_read(resource, ReadResult::Miss);
    Served {
        value,
        source: Source::Upstream {
            refreshed,
            collapsed,
        },
    }
}

fn unavailable(resource: &'static str, why: FetchFailure) -> FetchFailure {
    tracing::info!(resource, reason = ?why, "nothing to serve: storagesvc failed and nothing is cached");
    metrics::record_read(resource, ReadResult::Unavailable);
    why
}

/// The JSON booksvc sends, exactly as `axum::Json` would have written it.
fn json<T: serde::Serialize>(value: &T) -> Result<Bytes, FetchFailure> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|error| FetchFailure::Upstream {
            reason: format!("the answer does not encode as JSON: {error}"),
        })
}
