//! Where a failed message goes next — a retry queue or the DLQ — and the message to publish.
//!
//! The attempt count travels in our own header, `x-retry-count` (attempts that failed so
//! far), because RabbitMQ 4 ignores `x-death` on republished messages. Attempt `n` (1-based)
//! that fails transiently goes to retry tier `n` (the `n`-th delay, the last one repeating)
//! unless it was attempt `max_attempts`, which goes to the DLQ. Everything republished keeps
//! the body, `message_id`, timestamp and headers (trace context included) of the original,
//! minus the `x-death` family RabbitMQ added, and is persistent (the retry queues and the
//! DLQ are quorum queues, which keep every message anyway; a classic queue an operator moves
//! it to keeps only persistent ones across a restart).
//!
//! Anyone who can publish to `books` chooses the headers, so nothing read from them may make
//! a republish impossible: `x-original-routing-key` is used only when it is a plain routing
//! key (else the delivery's own key stands in), `x-retry-count` and `x-error` are always
//! rewritten, and copied headers are capped in size ([`MAX_COPIED_HEADER_BYTES`],
//! [`MAX_COPIED_HEADERS_BYTES`]) so ours still fit the content-header frame.

use std::time::Duration;

use events::headers::{self, X_ERROR, X_ORIGINAL_ROUTING_KEY, X_RETRY_COUNT};
use events::lapin::BasicProperties;
use events::lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use events::{Outgoing, Topology};

use super::DeadLetterReason;

/// Longest `x-error` we write: enough for any parse or cache error, bounded for hostile input.
const MAX_ERROR_LEN: usize = 500;
/// Largest header (name and encoded value) copied into a republish; a `traceparent` is 70.
pub(crate) const MAX_COPIED_HEADER_BYTES: usize = 1024;
/// Largest total of copied headers. With ours (under 1 KiB) it stays far below the smallest
/// frame size a broker may choose (4 KiB minus the properties), so a republish always fits
/// the one content-header frame AMQP allows, whatever the original carried.
pub(crate) const MAX_COPIED_HEADERS_BYTES: usize = 2048;

/// The retry delays and how many attempts a message gets in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RetryTiers {
    pub(crate) delays: Vec<Duration>,
    pub(crate) max_attempts: u32,
}

/// What to do with a message after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NextStep {
    /// Publish to the retry queue of `delay`, recording `attempts` made.
    Retry { delay: Duration, attempts: u32 },
    /// Out of attempts: publish to the DLQ, recording `attempts` made.
    DeadLetter { attempts: u32 },
}

impl RetryTiers {
    /// The step after an attempt failed, given how many had failed before it.
    pub(crate) fn after_failure(&self, failed_before: u32) -> NextStep {
        let attempts = failed_before.saturating_add(1);
        if attempts >= self.max_attempts {
            return NextStep::DeadLetter { attempts };
        }
        let last_tier = self.delays.len().saturating_sub(1);
        let tier = usize::try_from(attempts - 1).map_or(last_tier, |tier| tier.min(last_tier));
        match self.delays.get(tier) {
            Some(&delay) => NextStep::Retry { delay, attempts },
            None => NextStep::DeadLetter { attempts },
        }
    }
}

/// A received message: what republishing it needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received<'a> {
    pub(crate) routing_key: &'a str,
    pub(crate) properties: &'a BasicProperties,
    pub(crate) body: &'a [u8],
}

impl Received<'_> {
    /// Attempts that failed before this delivery (0 for a new event).
    pub(crate) fn failed_attempts(&self) -> u32 {
        headers::count(self.properties.headers().as_ref(), X_RETRY_COUNT).unwrap_or(0)
    }

    /// The routing key the event was published with: the header once it has been
    /// republished (retries come back keyed by the queue's name), else the delivery's own.
    /// A header that is not a plain routing key (over 255 bytes, control characters, not a
    /// string) is ignored, so this is always a valid, bounded routing key.
    pub(crate) fn original_routing_key(&self) -> String {
        headers::routing_key(self.properties.headers().as_ref(), X_ORIGINAL_ROUTING_KEY)
            .unwrap_or_else(|| self.routing_key.to_owned())
    }

    /// The message for the retry queue of `delay` (published to [`events::RETRY_EXCHANGE`]).
    pub(crate) fn retry_message(&self, delay: Duration, attempts: u32, error: &str) -> Outgoing {
        self.republish(Topology::retry_routing_key(delay), attempts, error)
    }

    /// The message for the DLQ (published to [`events::DLQ_EXCHANGE`], a fanout: the key
    /// is kept for people reading the DLQ).
    pub(crate) fn dead_letter_message(
        &self,
        reason: DeadLetterReason,
        attempts: u32,
        error: &str,
    ) -> Outgoing {
        let error = format!("{}: {error}", reason.as_str());
        self.republish(self.original_routing_key(), attempts, &error)
    }

    fn republish(&self, routing_key: String, attempts: u32, error: &str) -> Outgoing {
        let mut headers = kept_headers(self.properties.headers().as_ref());
        headers.insert(
            ShortString::from(X_RETRY_COUNT),
            AMQPValue::LongInt(i32::try_from(attempts).unwrap_or(i32::MAX)),
        );
        headers.insert(
            ShortString::from(X_ORIGINAL_ROUTING_KEY),
            long_string(&self.original_routing_key()),
        );
        headers.insert(ShortString::from(X_ERROR), long_string(&one_line(error)));
        Outgoing {
            routing_key,
            message_id: self
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str().to_owned())
                .unwrap_or_default(),
            body: self.body.to_vec(),
            headers,
            timestamp: *self.properties.timestamp(),
        }
    }
}

/// The original headers minus the ones RabbitMQ adds on dead-lettering, and minus any header
/// over [`MAX_COPIED_HEADER_BYTES`] or past [`MAX_COPIED_HEADERS_BYTES`] in all, so what we add
/// always fits. Smaller headers are kept first (a `traceparent` is never crowded out by a
/// big one); dropped headers are logged by count.
pub(crate) fn kept_headers(original: Option<&FieldTable>) -> FieldTable {
    let Some(original) = original else {
        return FieldTable::default();
    };
    let mut candidates: Vec<_> = original
        .inner()
        .iter()
        .filter(|(name, _)| !headers::is_broker_death_header(name.as_str()))
        .map(|(name, value)| (1 + name.as_str().len() + encoded_len(value), name, value))
        .collect();
    candidates.sort_by_key(|&(size, name, _)| (size, name.as_str()));
    let mut kept = FieldTable::default();
    let mut total = 0_usize;
    let mut dropped = 0_usize;
    for (size, name, value) in candidates {
        if size > MAX_COPIED_HEADER_BYTES || total + size > MAX_COPIED_HEADERS_BYTES {
            dropped += 1;
            continue;
        }
        total += size;
        kept.insert(name.clone(), value.clone());
    }
    if dropped > 0 {
        tracing::info!(
            dropped,
            "oversized headers not copied into the republished message"
        );
    }
    kept
}

/// The size of `value` in an AMQP field table (type tag included), from the 0-9-1 encoding:
/// strings and arrays carry a length prefix, scalars at most 9 bytes.
fn encoded_len(value: &AMQPValue) -> usize {
    1 + match value {
        AMQPValue::LongString(v) => 4 + v.as_bytes().len(),
        AMQPValue::ShortString(v) => 1 + v.as_str().len(),
        AMQPValue::ByteArray(v) => 4 + v.len(),
        AMQPValue::FieldArray(v) => 4 + v.as_slice().iter().map(encoded_len).sum::<usize>(),
        AMQPValue::FieldTable(v) => {
            4 + v
                .inner()
                .iter()
                .map(|(name, value)| 1 + name.as_str().len() + encoded_len(value))
                .sum::<usize>()
        }
        _ => 9,
    }
}

/// `error` on one line, at most [`MAX_ERROR_LEN`] bytes (cut at a character boundary).
pub(crate) fn one_line(error: &str) -> String {
    let mut line: String = error
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
    line
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

#[cfg(test)]
mod tests {
    use events::QUEUE;

    use super::*;

    fn tiers(max_attempts: u32) -> RetryTiers {
        RetryTiers {
            delays: vec![Duration::from_millis(200), Duration::from_millis(500)],
            max_attempts,
        }
    }

    #[test]
    fn failures_climb_the_tiers_then_go_to_the_dlq() {
        let ms = Duration::from_millis;
        // (attempts failed before, max attempts) → next step
        let cases = [
            (
                (0, 4),
                NextStep::Retry {
                    delay: ms(200),
                    attempts: 1,
                },
            ),
            (
                (1, 4),
                NextStep::Retry {
                    delay: ms(500),
                    attempts: 2,
                },
            ),
            (
                (2, 4),
                NextStep::Retry {
                    delay: ms(500),
                    attempts: 3,
                },
            ),
            ((3, 4), NextStep::DeadLetter { attempts: 4 }),
            ((9, 4), NextStep::DeadLetter { attempts: 10 }),
            ((0, 1), NextStep::DeadLetter { attempts: 1 }),
            ((u32::MAX, 4), NextStep::DeadLetter { attempts: u32::MAX }),
        ];
        for ((failed_before, max_attempts), expected) in cases {
            let step = tiers(max_attempts).after_failure(failed_before);
            assert_eq!(
                step, expected,
                "failed before {failed_before}, max {max_attempts}"
            );
        }
        let no_delays = RetryTiers {
            delays: vec![],
            max_attempts: 3,
        };
        assert_eq!(
            no_delays.after_failure(0),
            NextStep::DeadLetter { attempts: 1 }
        );
    }

    fn header(message: &Outgoing, name: &str) -> Option<AMQPValue> {
        message.headers.inner().get(name).cloned()
    }

    #[test]
    fn a_dead_letter_keeps_the_message_and_says_why_how_often_and_from_where() {
        let mut original = FieldTable::default();
        original.insert("traceparent".into(), long_string("00-abc"));
        original.insert("x-death".into(), AMQPValue::FieldArray(Default::default()));
        original.insert("x-first-death-queue".into(), long_string(QUEUE));
        original.insert(X_RETRY_COUNT.into(), AMQPValue::LongInt(2));
        original.insert(X_ORIGINAL_ROUTING_KEY.into(), long_string("book.updated"));
        let properties = BasicProperties::default()
            .with_headers(original)
            .with_message_id("m-1".into())
            .with_timestamp(42);
        let received = Received {
            routing_key: QUEUE,
            properties: &properties,
            body: b"{}",
        };
        assert_eq!(received.failed_attempts(), 2);

        let message = received.dead_letter_message(DeadLetterReason::Exhausted, 3, "redis\nbusy");

        assert_eq!(message.routing_key, "book.updated");
        assert_eq!(message.message_id, "m-1");
        assert_eq!(message.timestamp, Some(42));
        assert_eq!(message.body, b"{}");
        assert_eq!(header(&message, X_RETRY_COUNT), Some(AMQPValue::LongInt(3)));
        assert_eq!(
            header(&message, X_ERROR),
            Some(long_string("exhausted: redis busy"))
        );
        assert_eq!(header(&message, "traceparent"), Some(long_string("00-abc")));
        assert_eq!(
            header(&message, "x-death"),
            None,
            "broker headers are dropped"
        );
        assert_eq!(header(&message, "x-first-death-queue"), None);
    }

    #[test]
    fn a_first_retry_records_the_routing_key_it_came_with() {
        let properties = BasicProperties::default();
        let received = Received {
            routing_key: "book.created",
            properties: &properties,
            body: b"x",
        };
        assert_eq!(received.failed_attempts(), 0);
        let message = received.retry_message(Duration::from_millis(200), 1, "flaky");
        assert_eq!(
            message.routing_key,
            "booksvc.book-changed.retry.quorum.200ms"
        );
        assert_eq!(
            header(&message, X_ORIGINAL_ROUTING_KEY),
            Some(long_string("book.created"))
        );
        assert_eq!(header(&message, X_RETRY_COUNT), Some(AMQPValue::LongInt(1)));
        assert!(message.message_id.is_empty());
    }

    #[test]
    fn a_hostile_routing_key_header_is_replaced_by_the_delivery_key() {
        for bad in [
            "a".repeat(300),
            "book.updated\nforged".to_owned(),
            String::new(),
        ] {
            let mut original = FieldTable::default();
            original.insert(X_ORIGINAL_ROUTING_KEY.into(), long_string(&bad));
            let properties = BasicProperties::default().with_headers(original);
            let received = Received {
                routing_key: "book.created",
                properties: &properties,
                body: b"x",
            };
            let message = received.dead_letter_message(DeadLetterReason::Poison, 1, "bad");
            assert_eq!(message.routing_key, "book.created", "{bad:?}");
            assert_eq!(
                header(&message, X_ORIGINAL_ROUTING_KEY),
                Some(long_string("book.created"))
            );
        }
    }

    #[test]
    fn copied_headers_are_capped_in_size() {
        let mut original = FieldTable::default();
        original.insert("traceparent".into(), long_string("00-abc"));
        original.insert("a-huge".into(), long_string(&"x".repeat(100_000)));
        original.insert(
            "b-nested".into(),
            AMQPValue::FieldArray(vec![long_string(&"y".repeat(2_000))].into()),
        );
        for i in 0..100 {
            original.insert(format!("c-{i:03}").into(), long_string(&"z".repeat(500)));
        }
        original.insert(X_ERROR.into(), long_string(&"e".repeat(100_000)));
        let properties = BasicProperties::default().with_headers(original);
        let received = Received {
            routing_key: "book.created",
            properties: &properties,
            body: b"x",
        };
        let message = received.dead_letter_message(DeadLetterReason::Poison, 1, "bad");
        let total: usize = message
            .headers
            .inner()
            .iter()
            .map(|(name, value)| 1 + name.as_str().len() + encoded_len(value))
            .sum();
        assert!(total < 4096 - 200, "headers of {total} bytes");
        assert_eq!(header(&message, "a-huge"), None);
        assert_eq!(header(&message, "b-nested"), None);
        assert!(
            header(&message, "c-000").is_some(),
            "small headers are kept"
        );
        assert_eq!(header(&message, "traceparent"), Some(long_string("00-abc")));
        assert_eq!(header(&message, X_ERROR), Some(long_string("poison: bad")));
    }

    #[test]
    fn errors_become_one_bounded_line() {
        assert_eq!(one_line("a\r\nb\tc"), "a  b c");
        let long = "é".repeat(MAX_ERROR_LEN);
        let line = one_line(&long);
        assert!(line.len() <= MAX_ERROR_LEN && line.chars().all(|c| c == 'é'));
    }
}
