//! The book-changed event: its JSON envelope, a strict-but-tolerant parser and the
//! constructors storagesvc uses to emit one.
//!
//! # Parsing rules (the wire contract, DESIGN.md "Events")
//! - `type`, `book_id` and `version` are required and checked strictly: `type` is one of
//!   the three routing keys, `book_id` and `version` are integers `>= 1` that fit an `i64`.
//! - `book` is required (an object whose `id` equals `book_id`) for `book.created` and
//!   `book.updated`. For `book.deleted` it is normally `null`; a non-null `book` on a delete
//!   is **tolerated and dropped**: it carries nothing a delete needs, some producers send the
//!   last state on delete, and refusing it would park an otherwise meaningful delete in the
//!   DLQ. The parsed event therefore always has `book == None` for deletes.
//! - `event_id` and `occurred_at` may be missing or `null` (a human publishing from the
//!   management UI rarely types them); when present they must be a UUID / an RFC 3339 time.
//! - Unknown extra fields are ignored (forward compatibility); a field given twice is
//!   rejected (which value would be meant is ambiguous).
//! - Bodies over [`MAX_BODY_BYTES`] are refused before any JSON work.
//!
//! Every rule failure is a [`ParseError`] with a one-line message naming the problem.
//! All of them are permanent: re-delivering the same bytes can never succeed.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod parse;

/// Largest body [`BookChanged::parse`] accepts. An event is a few hundred bytes; the cap
/// leaves room for a long `desc` while keeping a hostile body from costing real memory.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What happened to a book; also the AMQP routing key of the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// A book was inserted (`book.created`).
    #[serde(rename = "book.created")]
    Created,
    /// A book's fields changed (`book.updated`).
    #[serde(rename = "book.updated")]
    Updated,
    /// A book was removed (`book.deleted`).
    #[serde(rename = "book.deleted")]
    Deleted,
}

impl EventType {
    /// Every event type, for exhaustive tests and bindings.
    pub const ALL: [EventType; 3] = [EventType::Created, EventType::Updated, EventType::Deleted];

    /// The routing key (and JSON `type`) of this event type.
    pub fn routing_key(self) -> &'static str {
        match self {
            EventType::Created => "book.created",
            EventType::Updated => "book.updated",
            EventType::Deleted => "book.deleted",
        }
    }

    /// The event type whose routing key is `key`, if any.
    pub fn from_routing_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.routing_key() == key)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.routing_key())
    }
}

/// The book as carried by an event (storagesvc's book without `version`/`updated_at`,
/// which the envelope carries as `version`/`occurred_at`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookData {
    /// The book's id; always equal to the envelope's `book_id`.
    pub id: i64,
    /// Title.
    pub title: String,
    /// Author.
    pub author: String,
    /// Description.
    pub desc: String,
}

/// A book-changed event, as published to the `books` exchange.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BookChanged {
    /// Unique id of this event (also the AMQP `message_id`); `None` when a human omitted it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The book concerned.
    pub book_id: i64,
    /// The book's version after the change (`>= 1`); orders events for one book.
    pub version: i64,
    /// When the change was committed; `None` when a human omitted it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
    /// The book after the change; `None` (JSON `null`) for `book.deleted`.
    pub book: Option<BookData>,
}

impl BookChanged {
    /// A `book.created` event with a new (time-ordered, v7) `event_id`.
    pub fn created(book: BookData, version: i64, occurred_at: DateTime<Utc>) -> Self {
        Self::with_book(EventType::Created, book, version, occurred_at)
    }

    /// A `book.updated` event with a new (time-ordered, v7) `event_id`.
    pub fn updated(book: BookData, version: i64, occurred_at: DateTime<Utc>) -> Self {
        Self::with_book(EventType::Updated, book, version, occurred_at)
    }

    /// A `book.deleted` event with a new (time-ordered, v7) `event_id`.
    pub fn deleted(book_id: i64, version: i64, occurred_at: DateTime<Utc>) -> Self {
        Self {
            event_id: Some(Uuid::now_v7()),
            kind: EventType::Deleted,
            book_id,
            version,
            occurred_at: Some(occurred_at),
            book: None,
        }
    }

    fn with_book(kind: EventType, book: BookData, version: i64, at: DateTime<Utc>) -> Self {
        Self {
            event_id: Some(Uuid::now_v7()),
            kind,
            book_id: book.id,
            version,
            occurred_at: Some(at),
            book: Some(book),
        }
    }

    /// Parses and validates a message body; see the module doc for the rules.
    ///
    /// Strict on `type`/`book_id`/`version` (and `book` presence and consistency), tolerant
    /// of a missing `event_id` or `occurred_at` and of unknown extra fields. Never panics,
    /// whatever the input (invalid UTF-8, huge numbers, deep nesting, huge bodies).
    pub fn parse(body: &[u8]) -> Result<BookChanged, ParseError> {
        parse::parse(body)
    }

    /// The JSON body, in DESIGN.md's shape (`book` is `null` for deletes; an absent
    /// `event_id`/`occurred_at` is omitted).
    pub fn to_json(&self) -> Vec<u8> {
        // Cannot fail: every field serializes infallibly (no maps with non-string keys, no
        // custom Serialize that errors) and writing into a Vec never fails.
        serde_json::to_vec(self).expect("BookChanged serialization is infallible")
    }

    /// The routing key to publish this event with.
    pub fn routing_key(&self) -> &'static str {
        self.kind.routing_key()
    }
}

/// Why a body is not a valid book-changed event. One line each; all are permanent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("body is {size} bytes, over the {MAX_BODY_BYTES}-byte limit")]
    TooLarge {
        /// Size of the refused body.
        size: usize,
    },
    /// The body is not valid UTF-8.
    #[error("body is not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// The body is not a JSON object (syntax error, wrong top-level value, duplicate field).
    #[error("body is not JSON: {0}")]
    NotJson(String),
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field has the wrong JSON type.
    #[error("`{field}` must be {expected}, got {got}")]
    WrongType {
        /// The field's name.
        field: &'static str,
        /// What it must be, e.g. "a string".
        expected: &'static str,
        /// What it was, e.g. "a number".
        got: String,
    },
    /// `book_id` or `version` is a number but not an integer in `1..=i64::MAX`.
    #[error("`{field}` must be a positive integer, got {got}")]
    NotPositive {
        /// The field's name.
        field: &'static str,
        /// The number as written.
        got: String,
    },
    /// `type` is a string but not one of the known routing keys.
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    /// `event_id` is present but not a UUID.
    #[error("`event_id` is not a UUID: {0}")]
    InvalidEventId(String),
    /// `occurred_at` is present but not an RFC 3339 time.
    #[error("`occurred_at` is not an RFC 3339 time: {0}")]
    InvalidOccurredAt(String),
    /// `book` is missing or null on an event that needs it.
    #[error("`book` is required for {0}")]
    BookRequired(EventType),
    /// `book` is present but not a valid book.
    #[error("`book` is invalid: {0}")]
    InvalidBook(String),
    /// `book.id` differs from `book_id`.
    #[error("`book.id` ({book}) does not match `book_id` ({envelope})")]
    BookIdMismatch {
        /// The envelope's `book_id`.
        envelope: i64,
        /// The embedded book's `id`.
        book: i64,
    },
}

#[cfg(test)]
mod tests;
