//! The domain types: [`Book`], in storagesvc's JSON shape, and [`CachedBook`], what the cache
//! holds for one book id (the book, or a tombstone). The storagesvc client, the cache and the
//! consumer all speak them, so they belong to none of those modules.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A book in storagesvc's JSON shape: what storagesvc's `GET /books/{id}` answers, and what
/// booksvc serves unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Book {
    /// Assigned by storagesvc; never reused.
    #[schema(minimum = 1)]
    pub id: i64,
    /// Title.
    pub title: String,
    /// Author.
    pub author: String,
    /// Description.
    pub desc: String,
    /// 1 on creation, +1 per update; orders writes.
    #[schema(minimum = 1)]
    pub version: i64,
    /// When storagesvc's last write statement ran (RFC 3339 in JSON). For an entry written
    /// by an event, the event's `occurred_at`, or when the event was applied if it carried
    /// none.
    pub updated_at: DateTime<Utc>,
}

impl Book {
    /// The book an upsert event describes: the event's data at the event's version.
    pub fn from_event(data: &events::BookData, version: i64, updated_at: DateTime<Utc>) -> Book {
        Book {
            id: data.id,
            title: data.title.clone(),
            author: data.author.clone(),
            desc: data.desc.clone(),
            version,
            updated_at,
        }
    }
}

/// One cached book id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachedBook {
    /// The book exists; serve it.
    Live(Book),
    /// The book was deleted at `version` (or storagesvc stopped listing it): answer 404, even
    /// while storagesvc is down. Only a write newer than `version` (or a fill from storagesvc)
    /// replaces it.
    Tombstone {
        /// The version the deletion was recorded at.
        version: i64,
    },
}

impl CachedBook {
    /// The version this entry was written at.
    pub fn version(&self) -> i64 {
        match self {
            CachedBook::Live(book) => book.version,
            CachedBook::Tombstone { version } => *version,
        }
    }

    /// The book, unless this is a tombstone.
    pub fn live(&self) -> Option<&Book> {
        match self {
            CachedBook::Live(book) => Some(book),
            CachedBook::Tombstone { .. } => None,
        }
    }
}
