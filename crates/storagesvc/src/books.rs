//! The books table: every SQL statement on it, and the rules a book's fields obey.
//!
//! Reads take the pool; writes take the caller's transaction, so the handler can add the
//! write's event to the outbox in the same transaction ([`crate::outbox::enqueue`]).
//! `version` starts at 1 and grows by one per update; a delete's event carries the next
//! version, so consumers that order by version apply it after every update.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};

/// Longest accepted title or author, in characters (also a CHECK in the table).
pub const MAX_NAME_CHARS: usize = 200;
/// Longest accepted description, in characters (also a CHECK in the table).
pub const MAX_DESC_CHARS: usize = 2000;

/// A stored book, exactly as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Book {
    /// Assigned by the database; never reused.
    #[schema(minimum = 1)]
    pub id: i64,
    /// Title.
    pub title: String,
    /// Author.
    pub author: String,
    /// Description (column `description`: `desc` is an SQL keyword).
    #[sqlx(rename = "description")]
    pub desc: String,
    /// 1 on creation, +1 per update.
    #[schema(minimum = 1)]
    pub version: i64,
    /// When the last write statement ran (`clock_timestamp()`, just before its commit; RFC
    /// 3339 in JSON). A book's events carry it as `occurred_at`.
    pub updated_at: DateTime<Utc>,
}

impl Book {
    /// The book as an event carries it.
    pub fn to_event_data(&self) -> events::BookData {
        events::BookData {
            id: self.id,
            title: self.title.clone(),
            author: self.author.clone(),
            desc: self.desc.clone(),
        }
    }
}

/// What a create or an update sets: the request body of `POST /books` and `PUT /books/{id}`.
///
/// Unknown fields are refused, so a typo (`"description"`) or an attempt to set `version`
/// by hand (that is what `If-Match` is for) is an error rather than silently ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, expecting = "a book object")]
pub struct BookFields {
    /// Required, not blank (Unicode white space only), at most 200 characters
    /// (`MAX_NAME_CHARS`), no NUL (PostgreSQL text cannot hold one).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$"
    )]
    pub title: String,
    /// Required, not blank, at most 200 characters (`MAX_NAME_CHARS`), no NUL.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$"
    )]
    pub author: String,
    /// Required, may be empty, at most 2000 characters (`MAX_DESC_CHARS`), no NUL.
    #[schema(max_length = 2000, pattern = r"^[^\u0000]*$")]
    pub desc: String,
}

impl BookFields {
    /// Checks the fields against the limits; the error names the first field that breaks one.
    ///
    /// Values are otherwise stored verbatim (no trimming): what a client writes it reads back.
    pub fn validate(&self) -> Result<(), String> {
        check_field("title", &self.title, MAX_NAME_CHARS, false)?;
        check_field("author", &self.author, MAX_NAME_CHARS, false)?;
        check_field("desc", &self.desc, MAX_DESC_CHARS, true)
    }
}

fn check_field(
    name: &str,
    value: &str,
    max_chars: usize,
    may_be_blank: bool,
) -> Result<(), String> {
    if !may_be_blank && value.trim().is_empty() {
        return Err(format!("{name} must not be empty"));
    }
    if value.chars().count() > max_chars {
        return Err(format!("{name} must be at most {max_chars} characters"));
    }
    // PostgreSQL text cannot hold U+0000; refusing it here keeps it a 422, not a database error.
    if value.contains('\0') {
        return Err(format!("{name} must not contain NUL characters"));
    }
    Ok(())
}

/// The result of a conditional write on an existing book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome<T> {
    /// The write happened.
    Done(T),
    /// No book has this id.
    NotFound,
    /// The book exists but its version is not the one the client expected.
    VersionMismatch {
        /// The stored version, so the client can re-read and retry.
        current: i64,
    },
}

/// A deleted book's event data: the version the delete counts as, and when it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Deleted {
    /// The book's last version + 1.
    pub version: i64,
    /// When the delete ran.
    pub at: DateTime<Utc>,
}

const COLUMNS: &str = "id, title, author, description, version, updated_at";

/// The query of one page: a range scan of the primary key from `after`, stopped after `limit`
/// rows, so a page costs the same whatever the size of the table (no scan, no sort; the
/// `paging` test checks the plan with `EXPLAIN`).
pub const PAGE_QUERY: &str = "SELECT id, title, author, description, version, updated_at FROM books \
     WHERE id > $1 ORDER BY id LIMIT $2";

/// At most `limit` books with an id greater than `after`, ordered by id.
pub async fn page(
    db: impl sqlx::PgExecutor<'_>,
    after: i64,
    limit: u32,
) -> Result<Vec<Book>, sqlx::Error> {
    sqlx::query_as(PAGE_QUERY)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(db)
        .await
}

/// One book, if it exists.
pub async fn find(db: impl sqlx::PgExecutor<'_>, id: i64) -> Result<Option<Book>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM books WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Whether the table holds no book (the seed's condition).
pub async fn is_empty(tx: &mut Transaction<'_, Postgres>) -> Result<bool, sqlx::Error> {
    let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM books)")
        .fetch_one(&mut **tx)
        .await?;
    Ok(!any)
}

/// Inserts a book at version 1.
pub async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    fields: &BookFields,
) -> Result<Book, sqlx::Error> {
    // clock_timestamp(), not now(): now() is the transaction's start, which would let a
    // later version carry an earlier `updated_at` when transactions overlap.
    sqlx::query_as(&format!(
        "INSERT INTO books (title, author, description, updated_at) \
         VALUES ($1, $2, $3, clock_timestamp()) RETURNING {COLUMNS}"
    ))
    .bind(&fields.title)
    .bind(&fields.author)
    .bind(&fields.desc)
    .fetch_one(&mut **tx)
    .await
}

/// Replaces a book's fields and bumps its version, if it exists and (when `expected_version`
/// is given) its version matches.
pub async fn update(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
    fields: &BookFields,
    expected_version: Option<i64>,
) -> Result<WriteOutcome<Book>, sqlx::Error> {
    // The row lock taken by UPDATE serialises concurrent writers, and READ COMMITTED
    // re-checks the version condition against the row the previous writer committed.
    let updated: Option<Book> = sqlx::query_as(&format!(
        "UPDATE books SET title = $2, author = $3, description = $4, \
             version = version + 1, updated_at = clock_timestamp() \
         WHERE id = $1 AND ($5::bigint IS NULL OR version = $5) RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(&fields.title)
    .bind(&fields.author)
    .bind(&fields.desc)
    .bind(expected_version)
    .fetch_optional(&mut **tx)
    .await?;
    match updated {
        Some(book) => Ok(WriteOutcome::Done(book)),
        None => why_not_written(tx, id).await,
    }
}

/// Deletes a book if it exists and (when `expected_version` is given) its version matches.
pub async fn delete(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
    expected_version: Option<i64>,
) -> Result<WriteOutcome<Deleted>, sqlx::Error> {
    let deleted: Option<Deleted> = sqlx::query_as(
        "DELETE FROM books WHERE id = $1 AND ($2::bigint IS NULL OR version = $2) \
         RETURNING version + 1 AS version, clock_timestamp() AS at",
    )
    .bind(id)
    .bind(expected_version)
    .fetch_optional(&mut **tx)
    .await?;
    match deleted {
        Some(deleted) => Ok(WriteOutcome::Done(deleted)),
        None => why_not_written(tx, id).await,
    }
}

/// Tells "no such book" from "version mismatch" after a conditional write touched no row.
async fn why_not_written<T>(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
) -> Result<WriteOutcome<T>, sqlx::Error> {
    let current: Option<i64> = sqlx::query_scalar("SELECT version FROM books WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(match current {
        Some(current) => WriteOutcome::VersionMismatch { current },
        None => WriteOutcome::NotFound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(title: &str, author: &str, desc: &str) -> BookFields {
        BookFields {
            title: title.to_owned(),
            author: author.to_owned(),
            desc: desc.to_owned(),
        }
    }

    #[test]
    fn validation_accepts_limits_and_refuses_what_breaks_them() {
        let long_name = "é".repeat(MAX_NAME_CHARS);
        let long_desc = "ж".repeat(MAX_DESC_CHARS);
        let cases = [
            ("plain book", fields("T", "A", ""), None),
            (
                "names at the limit",
                fields(&long_name, &long_name, &long_desc),
                None,
            ),
            ("empty title", fields("", "A", "d"), Some("title")),
            ("blank author", fields("T", " \t", "d"), Some("author")),
            (
                "title too long",
                fields(&format!("{long_name}x"), "A", ""),
                Some("title"),
            ),
            (
                "desc too long",
                fields("T", "A", &format!("{long_desc}x")),
                Some("desc"),
            ),
            ("NUL in desc", fields("T", "A", "a\0b"), Some("desc")),
        ];
        for (case, input, failing_field) in cases {
            let result = input.validate();
            match failing_field {
                None => assert!(result.is_ok(), "{case}: {result:?}"),
                Some(field) => {
                    let message = result.expect_err(case);
                    assert!(message.starts_with(field), "{case}: {message}");
                }
            }
        }
    }
}
