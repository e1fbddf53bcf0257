//! The stored form of one entry, the Rust half of what `common.lua` reads and writes:
//! `"<rev>:<version>:<written_ms>:<kind>:<body>"`, kind `b` (body = the book's JSON) or `t`
//! (tombstone, empty body). The header stays outside the JSON so the scripts compare
//! revisions and versions with a pattern match instead of decoding every body.

use super::CacheError;
use crate::book::{Book, CachedBook};

/// A decoded entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// The books hash's `_rev` counter when this entry was written.
    pub(super) rev: u64,
    /// Redis time of the write, in ms since the Unix epoch.
    pub(super) written_ms: u64,
    /// The book or its tombstone.
    pub(super) value: CachedBook,
}

impl Entry {
    /// Decodes a stored value; `None` when it is not one we wrote (the read treats it as a
    /// miss, and the next write replaces it).
    pub(super) fn decode(raw: &str) -> Option<Entry> {
        let mut parts = raw.splitn(5, ':');
        let rev = parse_digits(parts.next()?)?;
        let version = i64::try_from(parse_digits(parts.next()?)?).ok()?;
        let written_ms = parse_digits(parts.next()?)?;
        let value = match (parts.next()?, parts.next()?) {
            ("b", body) => CachedBook::Live(serde_json::from_str(body).ok()?),
            ("t", "") => CachedBook::Tombstone { version },
            _ => return None,
        };
        Some(Entry {
            rev,
            written_ms,
            value,
        })
    }
}

impl Entry {
    /// The revision in `raw`'s header when the scripts would read it as an entry (their
    /// pattern `^(%d+):(%d+):(%d+):([bt]):`), whether or not the body decodes.
    pub(super) fn header_rev(raw: &str) -> Option<u64> {
        let mut parts = raw.splitn(5, ':');
        let rev = parse_digits(parts.next()?)?;
        for _ in 0..2 {
            let digits = parts.next()?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
        }
        matches!(parts.next()?, "b" | "t").then_some(())?;
        parts.next().map(|_| rev)
    }
}

/// Digits only, like the scripts' `%d+` (Rust's parse would also take a leading `+`).
fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A version as the scripts compare it: canonical decimal digits. Versions start at 1, so
/// anything lower is a bug upstream rather than something to cache.
pub(super) fn version_arg(version: i64) -> Result<String, CacheError> {
    if version < 1 {
        return Err(CacheError::InvalidInput(format!(
            "version {version} is below 1"
        )));
    }
    Ok(version.to_string())
}

/// The body of a live entry: the book's JSON, exactly what booksvc serves.
pub(super) fn book_body(book: &Book) -> Result<String, CacheError> {
    serde_json::to_string(book)
        .map_err(|e| CacheError::InvalidInput(format!("book {} does not encode: {e}", book.id)))
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn book() -> Book {
        Book {
            id: 7,
            title: "A: title with colons".to_owned(),
            author: "Ann".to_owned(),
            desc: String::new(),
            version: 3,
            updated_at: Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap(),
        }
    }

    #[test]
    fn decodes_a_live_entry_whose_body_contains_colons() {
        let raw = format!("12:3:1700000000123:b:{}", book_body(&book()).unwrap());
        let entry = Entry::decode(&raw).expect("decodes");
        assert_eq!(entry.rev, 12);
        assert_eq!(entry.written_ms, 1_700_000_000_123);
        assert_eq!(entry.value, CachedBook::Live(book()));
    }

    #[test]
    fn decodes_a_tombstone() {
        let entry = Entry::decode("4:9:1700000000000:t:").expect("decodes");
        assert_eq!(entry.value, CachedBook::Tombstone { version: 9 });
    }

    #[test]
    fn refuses_what_the_scripts_did_not_write() {
        for raw in [
            "",
            "garbage",
            "1:2:3:x:",
            "+1:2:3:t:",
            "1:-2:3:t:",
            "1:2:3:t:unexpected body",
            "1:2:3:b:{not json",
            "1:99999999999999999999:3:t:",
        ] {
            assert_eq!(Entry::decode(raw), None, "{raw:?} must not decode");
        }
    }

    #[test]
    fn the_header_revision_is_read_whatever_the_body() {
        assert_eq!(Entry::header_rev("5:3:1700000000000:b:{not json"), Some(5));
        assert_eq!(
            Entry::header_rev("6:99999999999999999999:1:t:junk"),
            Some(6)
        );
        assert_eq!(Entry::header_rev("7:3:1:b:"), Some(7));
        for raw in ["", "junk", "5:3:1:x:", "5:3:1:b", "5::1:b:", "+5:3:1:b:"] {
            assert_eq!(Entry::header_rev(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn versions_below_one_are_refused() {
        assert!(version_arg(0).is_err());
        assert_eq!(version_arg(1_000_000).unwrap(), "1000000");
    }
}
