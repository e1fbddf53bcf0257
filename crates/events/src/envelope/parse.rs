//! Validation of an untrusted body into a [`BookChanged`]; the rules are listed in the
//! parent module's doc.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use uuid::Uuid;

use super::{BookChanged, BookData, EventType, MAX_BODY_BYTES, ParseError};

/// Longest piece of untrusted input quoted back in an error message.
const MAX_QUOTED_CHARS: usize = 64;

/// Parses and validates `body`; see [`BookChanged::parse`].
pub(super) fn parse(body: &[u8]) -> Result<BookChanged, ParseError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ParseError::TooLarge { size: body.len() });
    }
    let text = std::str::from_utf8(body).map_err(|e| ParseError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    // serde_json bounds nesting depth itself (128) where it builds values, and skips unknown
    // fields without recursion, so deep input is an error or ignored, never a stack overflow.
    let raw: RawEnvelope =
        serde_json::from_str(text).map_err(|e| ParseError::NotJson(e.to_string()))?;
    raw.validate()
}

/// The envelope as written on the wire, before validation. Each field keeps the raw JSON
/// value (`Some(Value::Null)` for an explicit null) so validation can say exactly what
/// was wrong.
#[derive(Default)]
struct RawEnvelope {
    event_id: Option<Value>,
    kind: Option<Value>,
    book_id: Option<Value>,
    version: Option<Value>,
    occurred_at: Option<Value>,
    book: Option<Value>,
}

impl RawEnvelope {
    fn validate(self) -> Result<BookChanged, ParseError> {
        let kind = parse_kind(self.kind)?;
        let book_id = positive_int("book_id", self.book_id)?;
        let version = positive_int("version", self.version)?;
        let event_id = optional_string("event_id", self.event_id)?
            .map(|s| Uuid::parse_str(&s).map_err(|_| ParseError::InvalidEventId(quote(&s))))
            .transpose()?;
        let occurred_at = optional_string("occurred_at", self.occurred_at)?
            .map(|s| {
                DateTime::parse_from_rfc3339(&s)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| ParseError::InvalidOccurredAt(quote(&s)))
            })
            .transpose()?;
        let book = match kind {
            // Tolerated and dropped: see the module doc.
            EventType::Deleted => None,
            EventType::Created | EventType::Updated => Some(parse_book(kind, book_id, self.book)?),
        };
        Ok(BookChanged {
            event_id,
            kind,
            book_id,
            version,
            occurred_at,
            book,
        })
    }
}

fn parse_kind(value: Option<Value>) -> Result<EventType, ParseError> {
    match value {
        None => Err(ParseError::MissingField("type")),
        Some(Value::String(s)) => {
            EventType::from_routing_key(&s).ok_or_else(|| ParseError::UnknownType(quote(&s)))
        }
        Some(other) => Err(wrong_type("type", "a string", &other)),
    }
}

/// An integer in `1..=i64::MAX`. Floats (`3.0`), overflowing numbers and strings are refused:
/// a version is a counter, and silently rounding one would misorder events.
fn positive_int(field: &'static str, value: Option<Value>) -> Result<i64, ParseError> {
    match value {
        None => Err(ParseError::MissingField(field)),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) if i >= 1 => Ok(i),
            _ => Err(ParseError::NotPositive {
                field,
                got: quote(&n.to_string()),
            }),
        },
        Some(other) => Err(wrong_type(field, "a positive integer", &other)),
    }
}

/// An optional string field: absent and `null` both mean "not given".
fn optional_string(
    field: &'static str,
    value: Option<Value>,
) -> Result<Option<String>, ParseError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(field, "a string", &other)),
    }
}

fn parse_book(kind: EventType, book_id: i64, value: Option<Value>) -> Result<BookData, ParseError> {
    let value = match value {
        None | Some(Value::Null) => return Err(ParseError::BookRequired(kind)),
        Some(value @ Value::Object(_)) => value,
        Some(other) => return Err(wrong_type("book", "an object", &other)),
    };
    let book: BookData =
        serde_json::from_value(value).map_err(|e| ParseError::InvalidBook(e.to_string()))?;
    if book.id != book_id {
        return Err(ParseError::BookIdMismatch {
            envelope: book_id,
            book: book.id,
        });
    }
    Ok(book)
}

fn wrong_type(field: &'static str, expected: &'static str, got: &Value) -> ParseError {
    let got = match got {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {}", quote(&n.to_string())),
        Value::String(s) => format!("string \"{}\"", quote(s)),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    };
    ParseError::WrongType {
        field,
        expected,
        got,
    }
}

/// Untrusted text made safe to embed in a one-line message: control characters escaped
/// (no newlines), and cut to [`MAX_QUOTED_CHARS`] so a huge value cannot bloat logs.
fn quote(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_QUOTED_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(MAX_QUOTED_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// Hand-written rather than derived so that (a) only a JSON object is accepted (a derived
/// struct would also accept an array by position), (b) a duplicate field is an error rather
/// than last-wins, and (c) an explicit `null` stays distinguishable from an absent field.
impl<'de> Deserialize<'de> for RawEnvelope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawEnvelopeVisitor)
    }
}

struct RawEnvelopeVisitor;

impl<'de> Visitor<'de> for RawEnvelopeVisitor {
    type Value = RawEnvelope;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEnvelope, A::Error> {
        let mut raw = RawEnvelope::default();
        while let Some(key) = map.next_key::<String>()? {
            let (name, slot) = match key.as_str() {
                "event_id" => ("event_id", &mut raw.event_id),
                "type" => ("type", &mut raw.kind),
                "book_id" => ("book_id", &mut raw.book_id),
                "version" => ("version", &mut raw.version),
                "occurred_at" => ("occurred_at", &mut raw.occurred_at),
                "book" => ("book", &mut raw.book),
                _ => {
                    // Unknown fields are skipped without building a Value.
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if slot.is_some() {
                return Err(de::Error::duplicate_field(name));
            }
            *slot = Some(map.next_value::<Value>()?);
        }
        Ok(raw)
    }
}
