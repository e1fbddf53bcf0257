//! Application headers of the wire contract (DESIGN.md "Fixed details") and tolerant readers.
//!
//! Dead letters in `booksvc.book-changed.dlq` carry [`X_ERROR`], [`X_RETRY_COUNT`] and
//! [`X_ORIGINAL_ROUTING_KEY`]; retried messages carry the last two as well. The retry count
//! is ours rather than RabbitMQ's `x-death`, because RabbitMQ 4 ignores `x-death` on messages
//! a client republishes. [`TRACEPARENT`] and [`TRACESTATE`] (W3C Trace Context) carry the
//! trace of the write that produced the event; storagesvc's relay sets them and booksvc's
//! consumer continues that trace, keeping them on retries and dead letters.
//!
//! Headers may come from any client, including a human in the management UI, who types
//! numbers as strings: the readers accept every AMQP integer type and decimal strings, and
//! treat anything else as absent. They may also come from someone hostile: a count beyond
//! `u32` reads as `u32::MAX` (many attempts, not none), and [`routing_key`] accepts only what
//! could be a routing key, so an over-long or binary value can neither make a republish
//! impossible (AMQP routing keys are at most 255 bytes) nor bloat a log line.

use lapin::types::{AMQPValue, FieldTable};

/// Why a message was dead-lettered: one line of text.
pub const X_ERROR: &str = "x-error";
/// How many processing attempts have failed so far (in the DLQ: attempts made).
pub const X_RETRY_COUNT: &str = "x-retry-count";
/// The routing key the event was first published with (`book.created`, ...). Retries come
/// back to the main queue through the default exchange with the queue's name as key, so
/// the original key would otherwise be lost.
pub const X_ORIGINAL_ROUTING_KEY: &str = "x-original-routing-key";
/// W3C Trace Context parent, `00-<trace id>-<span id>-<flags>`.
pub const TRACEPARENT: &str = "traceparent";
/// W3C Trace Context vendor entries that travel with [`TRACEPARENT`].
pub const TRACESTATE: &str = "tracestate";

/// Prefixes of the headers RabbitMQ adds when it dead-letters a message. A republisher
/// drops them: they grow with every round trip and RabbitMQ 4 ignores them anyway.
pub const BROKER_DEATH_PREFIXES: [&str; 3] = ["x-death", "x-first-death-", "x-last-death-"];

/// Longest routing key AMQP can carry (a short string).
pub const MAX_ROUTING_KEY_LEN: usize = 255;

/// Longest decimal string [`count`] parses: `u32::MAX` has 10 digits; anything much longer
/// is not a count, and parsing it is wasted work.
const MAX_COUNT_DIGITS: usize = 32;

/// `name` as a non-negative count, if present and readable. Negative values and anything
/// that is not an integer read as absent; integers beyond `u32` saturate at `u32::MAX`.
pub fn count(headers: Option<&FieldTable>, name: &str) -> Option<u32> {
    match headers?.inner().get(name)? {
        AMQPValue::ShortShortInt(v) => u32::try_from(*v).ok(),
        AMQPValue::ShortShortUInt(v) => Some(u32::from(*v)),
        AMQPValue::ShortInt(v) => u32::try_from(*v).ok(),
        AMQPValue::ShortUInt(v) => Some(u32::from(*v)),
        AMQPValue::LongInt(v) => u32::try_from(*v).ok(),
        AMQPValue::LongUInt(v) => Some(*v),
        AMQPValue::LongLongInt(v) => saturating_count(i128::from(*v)),
        AMQPValue::LongString(v) => parse_count(std::str::from_utf8(v.as_bytes()).ok()?),
        AMQPValue::ShortString(v) => parse_count(v.as_str()),
        _ => None,
    }
}

fn parse_count(text: &str) -> Option<u32> {
    let digits = text.trim();
    if digits.is_empty() || digits.len() > MAX_COUNT_DIGITS {
        return None;
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // All digits: only its size can stop it fitting a u32.
    Some(digits.parse().unwrap_or(u32::MAX))
}

fn saturating_count(value: i128) -> Option<u32> {
    if value < 0 {
        return None;
    }
    Some(u32::try_from(value).unwrap_or(u32::MAX))
}

/// `name` as a routing key: a string of 1 to [`MAX_ROUTING_KEY_LEN`] printable ASCII
/// characters (no spaces, no control characters). Anything else reads as absent.
pub fn routing_key(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    let key = match headers?.inner().get(name)? {
        AMQPValue::LongString(v) => std::str::from_utf8(v.as_bytes()).ok()?,
        AMQPValue::ShortString(v) => v.as_str(),
        _ => return None,
    };
    is_plain_routing_key(key).then(|| key.to_owned())
}

/// Whether `key` is a routing key we republish and log as is (see [`routing_key`]).
pub fn is_plain_routing_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_ROUTING_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

/// `name` as text, if present and a string.
pub fn text(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(v) => Some(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        AMQPValue::ShortString(v) => Some(v.as_str().to_owned()),
        _ => None,
    }
}

/// Whether RabbitMQ set `name` when dead-lettering (see [`BROKER_DEATH_PREFIXES`]).
pub fn is_broker_death_header(name: &str) -> bool {
    BROKER_DEATH_PREFIXES
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use lapin::types::{LongString, ShortString};

    use super::*;

    fn table(value: AMQPValue) -> FieldTable {
        let mut headers = FieldTable::default();
        headers.insert(ShortString::from(X_RETRY_COUNT), value);
        headers
    }

    #[test]
    fn counts_are_read_from_any_integer_type_or_a_decimal_string() {
        let cases = [
            (AMQPValue::LongInt(3), Some(3)),
            (AMQPValue::LongLongInt(4), Some(4)),
            (AMQPValue::ShortShortUInt(5), Some(5)),
            (AMQPValue::LongString(LongString::from(" 6 ")), Some(6)),
            (AMQPValue::LongInt(-1), None),
            (AMQPValue::LongString(LongString::from("many")), None),
            (AMQPValue::LongString(LongString::from("-1")), None),
            (AMQPValue::LongString(LongString::from("+1")), None),
            (AMQPValue::LongString(LongString::from("")), None),
            (AMQPValue::LongString(LongString::from("1e3")), None),
            (AMQPValue::Boolean(true), None),
            (AMQPValue::Float(2.0), None),
            // Beyond u32: many attempts, not none.
            (AMQPValue::LongLongInt(i64::MAX), Some(u32::MAX)),
            (AMQPValue::LongLongInt(i64::MIN), None),
            (
                AMQPValue::LongString(LongString::from("99999999999999999999")),
                Some(u32::MAX),
            ),
            (
                AMQPValue::LongString(LongString::from("9".repeat(100_000))),
                None,
            ),
        ];
        for (value, expected) in cases {
            let headers = table(value.clone());
            assert_eq!(count(Some(&headers), X_RETRY_COUNT), expected, "{value:?}");
        }
        assert_eq!(count(None, X_RETRY_COUNT), None, "no headers at all");
    }

    #[test]
    fn text_reads_long_and_short_strings_only() {
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from(X_ERROR),
            AMQPValue::LongString(LongString::from("boom")),
        );
        headers.insert(ShortString::from(TRACEPARENT), AMQPValue::LongInt(1));
        assert_eq!(text(Some(&headers), X_ERROR).as_deref(), Some("boom"));
        assert_eq!(text(Some(&headers), TRACEPARENT), None);
    }

    #[test]
    fn only_plain_routing_keys_are_read() {
        let read = |value: AMQPValue| {
            let mut headers = FieldTable::default();
            headers.insert(ShortString::from(X_ORIGINAL_ROUTING_KEY), value);
            routing_key(Some(&headers), X_ORIGINAL_ROUTING_KEY)
        };
        let long = |s: &str| AMQPValue::LongString(LongString::from(s));
        assert_eq!(read(long("book.updated")).as_deref(), Some("book.updated"));
        let longest = "k".repeat(MAX_ROUTING_KEY_LEN);
        assert_eq!(read(long(&longest)), Some(longest));
        for bad in [
            long(&"a".repeat(MAX_ROUTING_KEY_LEN + 1)),
            long(""),
            long("book updated"),
            long("book.updated\n{\"forged\":1}"),
            long("bóok"),
            AMQPValue::LongString(LongString::from(vec![0xff, 0xfe])),
            AMQPValue::LongInt(7),
        ] {
            assert_eq!(read(bad.clone()), None, "{bad:?}");
        }
    }

    #[test]
    fn broker_death_headers_are_recognised() {
        for name in ["x-death", "x-first-death-queue", "x-last-death-reason"] {
            assert!(is_broker_death_header(name), "{name}");
        }
        for name in [X_ERROR, X_RETRY_COUNT, X_ORIGINAL_ROUTING_KEY, TRACEPARENT] {
            assert!(!is_broker_death_header(name), "{name}");
        }
    }
}
