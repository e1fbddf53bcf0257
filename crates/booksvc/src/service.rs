//! The read path: [`BookService::get_book`] and [`BookService::list_page`] (the answer as
//! ready-to-send bytes; for a book, the local hit layer first) around `BookService::read`
//! (cache, storagesvc, fallback).
//!
//! ```text
//! local hit layer ── live and fresh? ──▶ serve `hit` (no Redis round trip)
//!      │ no
//!      ▼
//! a stale local copy, and no answer in time? ──▶ serve `stale` (no Redis, no flight)
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
//!   most `STALE_SOFT_TIMEOUT` after its flight started (a reader joining a late flight
//!   waits less, or not at all), and not at all while the breaker is half-open (the call is a
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
//!   encoded answer after (pages bypass it, see `ListPage`). A Redis entry served as `hit` or
//!   `stale` is copied into it, with the ticket taken before the lookup, so a read that raced
//!   an invalidation stores nothing (see [`crate::cache::local`]). A copy past its freshness
//!   is served only when a read would not wait for storagesvc anyway (breaker open, half-open
//!   with its trial in flight, or the book's flight older than the soft timeout): during an
//!   outage the hot path is then a map lookup, as a hit is, rather than a Redis round trip.
//! - **Who wins.** The fill hands back the revision the lookup saw ([`Seen`]); the cache
//!   keeps an entry written since (an event) if it is newer. Redis down: the fill fails
//!   fast and is only logged.
//!
//! # Parts
//! This file is the order of the read path. Beside it: `answer` (what a read returns,
//! [`Served`] or [`FetchFailure`], counted and encoded), `patience` (how long a read waits for
//! its flight), `call` (one guarded attempt as the retry loop sees it) and `resource` (one
//! book or one page: how each is looked up, fetched and filled).

mod answer;
mod call;
mod patience;
mod resource;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderValue;
use tokio::time::Instant;

pub use self::answer::{FetchFailure, PageBody, Served, Source};
use self::answer::{fetched, json, served, unavailable};
use self::call::{CallError, call_outcome};
use self::patience::{Patience, Until, patience};
pub(crate) use self::resource::{ListPage, OneBook, Resource};
use crate::book::Book;
use crate::breaker::{CircuitBreaker, NotPermitted, State};
use crate::cache::{BookCache, BookPage, LocalCache, LocalKey, Lookup, Seen};
use crate::client::StorageClient;
use crate::coalesce::{Coalescer, Flight, Role};
use crate::metrics::{self, ReadResult};
use crate::paging::PageQuery;
use crate::retry::{RetrySettings, retry_within};
use events::Outage;

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
    pub retry: RetrySettings,
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
    books: Coalescer<OneBook, Result<Option<Book>, FetchFailure>>,
    pages: Coalescer<ListPage, Result<BookPage, FetchFailure>>,
    /// Reads that found storagesvc failing and nothing cached, logged as one outage.
    unserved: Outage,
}

impl BookService {
    /// The read path without the local hit layer.
    pub fn new(path: ReadPath) -> BookService {
        BookService::with_local(path, LocalCache::disabled())
    }

    /// The read path with `local` in front of Redis (it serves once it is live).
    pub fn with_local(path: ReadPath, local: LocalCache) -> BookService {
        let core = Core {
            path,
            local,
            books: Coalescer::new(OneBook::NAME),
            pages: Coalescer::new(ListPage::NAME),
            unserved: Outage::new("storagesvc, reads with nothing cached"),
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
        if let Some(Served { value, source }) = self.local_answer(id) {
            let value = Some(value);
            return Ok(Served { value, source });
        }
        let local = &self.core.local;
        let ticket = local.ticket();
        let served = self.read(OneBook(id), request_id).await?;
        let body = served.value.as_ref().map(json).transpose()?;
        // A tombstone is not offered to the layer: Redis remembers it. A stale entry is, as
        // a stale copy: the next reads of an outage are served it without Redis.
        let cached_age = match &served.source {
            Source::Fresh { age } | Source::Stale { age, .. } => Some(*age),
            Source::Upstream { .. } => None,
        };
        if let (Some(ticket), Some(age), Some(book), Some(body)) =
            (ticket, cached_age, &served.value, &body)
        {
            local.store_book(id, ticket, book.version, body.clone(), age);
        }
        Ok(Served {
            value: body,
            source: served.source,
        })
    }

    /// Book `id` from the local layer alone, when it can answer: a fresh body (`hit`), or a
    /// stale copy when this read need not ask storagesvc itself (breaker open, half-open with
    /// its trial in flight, or another read's flight refreshing the book: `stale`). A stale copy is what Redis holds too (it was read from there within
    /// `LOCAL_CACHE_TTL`), without the round trip. `None`: the read path must go on.
    /// Logs nothing: the fast path of an untraced request ([`crate::http`]) answers with it.
    pub fn local_answer(&self, id: i64) -> Option<Served<Bytes>> {
        let local = &self.core.local;
        if let Some(hit) = local.get(LocalKey::Book(id)) {
            let source = Source::Fresh { age: hit.age };
            return Some(Served {
                value: hit.body,
                source,
            });
        }
        let copy = local.get_stale(LocalKey::Book(id))?;
        let why = self.no_call_in_time(id)?;
        metrics::record_read(OneBook::NAME, ReadResult::Stale(copy.age));
        Some(Served {
            value: copy.body,
            source: Source::Stale { age: copy.age, why },
        })
    }

    /// Why a read of book `id` with an entry would be answered `stale` without waiting, if it
    /// would: the breaker refuses any call (open, or half-open with its trial in flight), or
    /// the book's flight is in the air (another read is refreshing it). `None`: the read path
    /// goes on (it starts the flight and waits for it, at most the soft timeout).
    fn no_call_in_time(&self, id: i64) -> Option<FetchFailure> {
        let path = &self.core.path;
        match path.breaker.refusal_now() {
            Err(NotPermitted::Open { retry_after }) => Some(FetchFailure::CircuitOpen {
                retry_after: Some(retry_after),
            }),
            Err(NotPermitted::TooManyProbes) => Some(FetchFailure::TrialInFlight),
            // Another read is asking storagesvc already and will refill the cache: a read with
            // a copy in memory does not queue behind it (stale-while-revalidate; the read that
            // started the flight waits for it, at most the soft timeout).
            Ok(State::Closed) => {
                self.core.books.started(&OneBook(id))?;
                Some(FetchFailure::SoftTimeout {
                    waited: Duration::ZERO,
                })
            }
            Ok(_) => None,
        }
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
        // loop, no task: nothing could reach storagesvc anyway. During an outage this is the
        // hot path of pages, and of books once a second (the local layer serves their stale
        // copies in between). Else the same look at the breaker says how long to wait for
        // the call (see `patience`).
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
            Ok((value, collapsed)) => {
                self.core.unserved.succeeded();
                Ok(fetched(R::NAME, value, refreshed, collapsed))
            }
            // 3. No answer: the last good data, marked stale; nothing cached, a 503.
            Err(why) => match lookup.cached {
                Some(cached) => Ok(served(R::NAME, cached, Some(why))),
                None => {
                    self.core.unserved.failed(&format_args!("{why:?}"));
                    Err(unavailable(R::NAME, why))
                }
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
        let (flight, role, started) = self.join_flight(resource, seen, request_id, deadline);
        let Patience { until, gave_up } = patience;
        let until = match until {
            Until::At(at) => at,
            // Counted from the flight's start, not this read's arrival: when storagesvc has
            // just gone down, the flights of the key follow one another until the breaker
            // opens, and readers arriving all through them would each wait the whole soft
            // timeout again.
            Until::SoftTimeoutAfter(soft) => (started + soft).min(deadline),
        };
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
    ) -> (Flight<Result<R::Value, FetchFailure>>, Role, Instant)
    where
        Core: Flights<R>,
    {
        let core = Arc::clone(&self.core);
        let work = core.fetch_and_fill(resource.clone(), seen, request_id, deadline);
        Flights::<R>::flights(&*self.core).join_timed(resource, work)
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
        metrics::record_storagesvc_call(R::NAME, call_outcome(&result), started.elapsed());
        match &result {
            Err(error) if error.is_outage() => permit.failure(),
            _ => permit.success(),
        }
        result.map_err(CallError::Storage)
    }
}
