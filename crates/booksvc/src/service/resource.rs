//! What a read can ask for — one book, or the list — and how each is looked up in the cache,
//! fetched from storagesvc and filled back, so the read path in [`super`] is written once.

use std::future::Future;
use std::time::Duration;

use axum::body::Bytes;

use crate::cache::{
    Book, BookCache, CacheError, Cached, CachedBook, LocalCache, LocalKey, Lookup, Seen, Ticket,
};
use crate::client::{ClientError, StorageClient};

/// One cacheable thing booksvc serves. `Value` is what the client gets: for one book,
/// `None` means "does not exist" (storagesvc's 404, or a cached tombstone).
pub(crate) trait Resource: Clone + Eq + std::hash::Hash + Send + Sync + 'static {
    type Value: Clone + Send + Sync + 'static;

    /// The answer as a ready-to-send JSON body (for one book, `None`: not found).
    type Body: Send + 'static;

    /// `resource` label of the read metrics, and the storagesvc endpoint name.
    const NAME: &'static str;

    /// Its slot in the in-process hit layer.
    fn local_key(&self) -> LocalKey;

    /// The body of a value; fails only if it cannot be encoded as JSON.
    fn encode(value: &Self::Value) -> Result<Self::Body, serde_json::Error>;

    /// A body the local layer held.
    fn from_local(body: Bytes) -> Self::Body;

    /// Offers a fresh answer (a Redis entry of `age`) to the local layer, which keeps it if
    /// nothing happened since `ticket`. A tombstone is not offered: Redis remembers it.
    fn store_local(
        &self,
        local: &LocalCache,
        ticket: Ticket,
        value: &Self::Value,
        body: &Self::Body,
        age: Duration,
    );

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

    /// Stores storagesvc's answer under the fill rule, with the revision the read saw.
    fn fill(
        &self,
        cache: &BookCache,
        seen: Seen,
        value: &Self::Value,
    ) -> impl Future<Output = Result<(), CacheError>> + Send;
}

/// `GET /books/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct OneBook(pub(crate) i64);

impl Resource for OneBook {
    type Value = Option<Book>;
    type Body = Option<Bytes>;
    const NAME: &'static str = "book";

    fn local_key(&self) -> LocalKey {
        LocalKey::Book(self.0)
    }

    fn encode(value: &Option<Book>) -> Result<Option<Bytes>, serde_json::Error> {
        value.as_ref().map(json).transpose()
    }

    fn from_local(body: Bytes) -> Option<Bytes> {
        Some(body)
    }

    fn store_local(
        &self,
        local: &LocalCache,
        ticket: Ticket,
        value: &Option<Book>,
        body: &Option<Bytes>,
        age: Duration,
    ) {
        if let (Some(book), Some(body)) = (value, body) {
            local.store_book(self.0, ticket, book.version, body.clone(), age);
        }
    }

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
    ) -> Result<(), CacheError> {
        cache
            .fill_book(self.0, seen, value.as_ref())
            .await
            .map(drop)
    }
}

/// `GET /books` and `GET /`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct AllBooks;

impl Resource for AllBooks {
    type Value = Vec<Book>;
    type Body = Bytes;
    const NAME: &'static str = "list";

    fn local_key(&self) -> LocalKey {
        LocalKey::List
    }

    fn encode(value: &Vec<Book>) -> Result<Bytes, serde_json::Error> {
        json(value)
    }

    fn from_local(body: Bytes) -> Bytes {
        body
    }

    /// The layer checks the books against recent events (the list's floor).
    fn store_local(
        &self,
        local: &LocalCache,
        ticket: Ticket,
        value: &Vec<Book>,
        body: &Bytes,
        age: Duration,
    ) {
        local.store_list(ticket, value, body.clone(), age);
    }

    async fn lookup(&self, cache: &BookCache) -> Result<Lookup<Vec<Book>>, CacheError> {
        cache.get_list().await
    }

    async fn fetch(
        &self,
        client: &StorageClient,
        request_id: Option<&str>,
        time_left: Duration,
    ) -> Result<Vec<Book>, ClientError> {
        client.list_books(request_id, time_left).await
    }

    async fn fill(
        &self,
        cache: &BookCache,
        seen: Seen,
        value: &Vec<Book>,
    ) -> Result<(), CacheError> {
        cache.fill_list(seen, value).await.map(drop)
    }
}

/// The JSON booksvc sends, exactly as `axum::Json` would have written it.
fn json<T: serde::Serialize>(value: &T) -> Result<Bytes, serde_json::Error> {
    serde_json::to_vec(value).map(Bytes::from)
}
