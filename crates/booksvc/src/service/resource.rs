//! What a read can ask for — one book, or a page of the list — and how each is looked up in the cache,
//! fetched from storagesvc and filled back, so the read path in [`super`] is written once.

use std::future::Future;
use std::time::Duration;

use crate::book::{Book, CachedBook};
use crate::cache::{BookCache, BookPage, CacheError, Cached, Lookup, Seen};
use crate::client::{ClientError, StorageClient};
use crate::paging::PageQuery;

/// One cacheable thing booksvc serves. `Value` is what the client gets: for one book,
/// `None` means "does not exist" (storagesvc's 404, or a cached tombstone).
pub(crate) trait Resource: Clone + Eq + std::hash::Hash + Send + Sync + 'static {
    type Value: Clone + Send + Sync + 'static;

    /// `resource` label of the read metrics, and the storagesvc endpoint name.
    const NAME: &'static str;

    /// Whether a cached value may be served without asking storagesvc (`CACHE_FRESH_TTL`).
    fn is_fresh(cached: &Cached<Self::Value>, ttl: Duration) -> bool {
        cached.is_fresh(ttl)
    }

    /// The cache entry, and the revision the lookup saw (for the fill).
    fn lookup(
        &self,
        cache: &BookCache,
    ) -> impl Future<Output = Result<Lookup<Self::Value>, CacheError>> + Send;

    /// One storagesvc attempt. A 404 for a book is a value (`None`), not an error.
    fn fetch(
        &self,
        client: &StorageClient,
        request_id: Option<&str>,
        time_left: Duration,
    ) -> impl Future<Output = Result<Self::Value, ClientError>> + Send;

    /// Stores storagesvc's answer under the fill rule, with the revision the read saw; it is
    /// fresh for `fresh_ttl`.
    fn fill(
        &self,
        cache: &BookCache,
        seen: Seen,
        value: &Self::Value,
        fresh_ttl: Duration,
    ) -> impl Future<Output = Result<(), CacheError>> + Send;
}

/// `GET /books/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct OneBook(pub(crate) i64);

impl Resource for OneBook {
    type Value = Option<Book>;
    const NAME: &'static str = "book";

    async fn lookup(&self, cache: &BookCache) -> Result<Lookup<Option<Book>>, CacheError> {
        let lookup = cache.get_book(self.0).await?;
        let cached = lookup.cached.map(|cached| Cached {
            value: match cached.value {
                CachedBook::Live(book) => Some(book),
                CachedBook::Tombstone { .. } => None,
            },
            age: cached.age,
        });
        Ok(Lookup {
            cached,
            seen: lookup.seen,
        })
    }

    async fn fetch(
        &self,
        client: &StorageClient,
        request_id: Option<&str>,
        time_left: Duration,
    ) -> Result<Option<Book>, ClientError> {
        match client.get_book(self.0, request_id, time_left).await {
            Ok(book) => Ok(Some(book)),
            Err(ClientError::NotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn fill(
        &self,
        cache: &BookCache,
        seen: Seen,
        value: &Option<Book>,
        _fresh_ttl: Duration,
    ) -> Result<(), CacheError> {
        cache
            .fill_book(self.0, seen, value.as_ref())
            .await
            .map(drop)
    }
}

/// `GET /books?limit=N&after=ID` and `GET /` (a page of the list). Pages bypass the local
/// hit layer: each is one Redis script of O(log n + limit), and keeping copies of every
/// `(after, limit)` coherent with events would cost more than it saves (decision 0012).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ListPage(pub(crate) PageQuery);

impl Resource for ListPage {
    type Value = BookPage;
    const NAME: &'static str = "list";

    /// Only a page a fill covered is served fresh: the books the cache happens to know in a
    /// range are not the whole range (they are still the stale fallback).
    fn is_fresh(cached: &Cached<BookPage>, ttl: Duration) -> bool {
        cached.value.complete && cached.is_fresh(ttl)
    }

    async fn lookup(&self, cache: &BookCache) -> Result<Lookup<BookPage>, CacheError> {
        cache.get_page(self.0.after, self.0.limit).await
    }

    async fn fetch(
        &self,
        client: &StorageClient,
        request_id: Option<&str>,
        time_left: Duration,
    ) -> Result<BookPage, ClientError> {
        let books = client.list_page(self.0, request_id, time_left).await?;
        Ok(BookPage {
            books,
            complete: true,
        })
    }

    async fn fill(
        &self,
        cache: &BookCache,
        seen: Seen,
        value: &BookPage,
        fresh_ttl: Duration,
    ) -> Result<(), CacheError> {
        let PageQuery { after, limit } = self.0;
        cache
            .fill_page(after, limit, seen, &value.books, fresh_ttl)
            .await
            .map(drop)
    }
}
