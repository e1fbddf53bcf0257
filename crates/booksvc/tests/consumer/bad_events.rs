//! The bad-input sweep over the event consumer (issue #6): one row per kind of bad message,
//! each with exactly where it must end. Poison goes to the DLQ at once (one attempt, `x-error`
//! saying why, the body kept byte for byte) and never reaches Redis; what the contract
//! tolerates (extra fields, any content type, a stray header) is applied; nothing is left in
//! the main or retry queues, and a good event published after all of it is still applied.
//! Every row runs; every failing row is reported at once.

use std::collections::HashMap;
use std::time::Duration;

use booksvc::book::CachedBook;
use events::headers::{self, X_ERROR, X_ORIGINAL_ROUTING_KEY, X_RETRY_COUNT};
use events::lapin::options::BasicPublishOptions;
use events::lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use events::lapin::{BasicProperties, Channel};
use events::{DLQ, EXCHANGE, MAX_BODY_BYTES, QUEUE, Topology};
use serde_json::{Value, json};

use crate::helpers::{Broker, RunningConsumer, cached, cached_at, consumer_settings, shared_cache};

/// Where a message must end.
#[derive(Debug, Clone, Copy)]
enum Fate {
    /// In the DLQ after one attempt, `x-error` = `poison: …` containing this text.
    Dlq(&'static str),
    /// Applied: the cache holds the row's book at this version (a tombstone when `title` is
    /// `None`).
    Applied {
        version: i64,
        title: Option<&'static str>,
    },
    /// Not bound to the queue: the broker drops it; it is neither applied nor dead-lettered.
    Unrouted,
}

struct Case {
    name: &'static str,
    /// The book the message is about (distinct per row), to check the cache afterwards.
    id: i64,
    routing_key: &'static str,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, AMQPValue)>,
    body: Vec<u8>,
    fate: Fate,
}

/// A valid `book.created` event for `id`, as JSON to be bent by a row.
fn created(id: i64) -> Value {
    json!({
        "event_id": "0193a1c2-7d3e-7b4a-9f10-3c2d1e0f5a01",
        "type": "book.created", "book_id": id, "version": 1,
        "occurred_at": "2026-11-23T10:00:00Z",
        "book": {"id": id, "title": "good", "author": "A", "desc": "D"},
    })
}

/// `created(id)` with `change` applied.
fn bent(id: i64, change: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut event = created(id);
    change(&mut event);
    serde_json::to_vec(&event).expect("serializable")
}

fn set(id: i64, field: &'static str, value: Value) -> Vec<u8> {
    bent(id, |event| event[field] = value)
}

fn without(id: i64, field: &'static str) -> Vec<u8> {
    bent(id, |event| {
        event.as_object_mut().map(|map| map.remove(field));
    })
}

fn case(name: &'static str, id: i64, body: Vec<u8>, fate: Fate) -> Case {
    Case {
        name,
        id,
        routing_key: "book.created",
        content_type: Some("application/json"),
        headers: vec![],
        body,
        fate,
    }
}

impl Case {
    fn routing_key(mut self, key: &'static str) -> Case {
        self.routing_key = key;
        self
    }

    fn content_type(mut self, content_type: Option<&'static str>) -> Case {
        self.content_type = content_type;
        self
    }

    fn header(mut self, name: &'static str, value: AMQPValue) -> Case {
        self.headers.push((name, value));
        self
    }
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

const APPLIED: Fate = Fate::Applied {
    version: 1,
    title: Some("good"),
};

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    use Fate::Dlq;
    let valid = |id: i64| bent(id, |_| {});
    let truncated = { let body = valid(1003); body[..body.len() / 2].to_vec() };
    let not_utf8 = String::from_utf8(valid(1004)).expect("UTF-8").replace("good", "g\u{1}od").into_bytes()
        .into_iter().map(|b| if b == 1 { 0xff } else { b }).collect();
    let oversized = set(1005, "pad", json!("x".repeat(MAX_BODY_BYTES)));
    let deep_unknown = String::from_utf8(valid(1040)).expect("UTF-8")
        .replacen('{', &format!("{{\"deep\":{}0{},", "[".repeat(10_000), "]".repeat(10_000)), 1).into_bytes();
    vec![
        case("not JSON", 1001, b"this is not JSON (1001)".to_vec(), Dlq("not JSON")),
        case("empty body", 1002, vec![], Dlq("not JSON")),
        case("truncated event", 1003, truncated, Dlq("not JSON")),
        case("invalid UTF-8", 1004, not_utf8, Dlq("not UTF-8")),
        case("oversized event", 1005, oversized, Dlq("-byte limit")),
        case("JSON array", 1006, b"[\"book.created\", 1006, 1]".to_vec(), Dlq("not JSON")),
        case("JSON null", 1007, b"null".to_vec(), Dlq("not JSON")),
        case("JSON string", 1008, b"\"book.created 1008\"".to_vec(), Dlq("not JSON")),
        case("missing type", 1009, without(1009, "type"), Dlq("missing field `type`")),
        case("missing book_id", 1010, without(1010, "book_id"), Dlq("missing field `book_id`")),
        case("missing version", 1011, without(1011, "version"), Dlq("missing field `version`")),
        case("missing book on a create", 1012, without(1012, "book"), Dlq("`book` is required")),
        case("null book on an update", 1013, bent(1013, |e| { e["type"] = json!("book.updated"); e["book"] = Value::Null; }), Dlq("`book` is required")),
        case("unknown event type", 1014, set(1014, "type", json!("book.exploded")), Dlq("unknown event type")),
        case("type not a string", 1015, set(1015, "type", json!(7)), Dlq("`type` must be a string")),
        case("book_id as a string", 1016, set(1016, "book_id", json!("1016")), Dlq("`book_id` must be a positive integer")),
        case("book_id negative", 1017, set(1017, "book_id", json!(-1017)), Dlq("`book_id` must be a positive integer")),
        case("book_id zero", 1018, set(1018, "book_id", json!(0)), Dlq("`book_id` must be a positive integer")),
        case("book_id float", 1019, set(1019, "book_id", json!(1019.0)), Dlq("`book_id` must be a positive integer")),
        case("book_id past i64::MAX", 1020, String::from_utf8(set(1020, "book_id", json!(0))).expect("UTF-8").replace("\"book_id\":0", "\"book_id\":9223372036854775808").into_bytes(), Dlq("`book_id` must be a positive integer")),
        case("version zero (wrong event version)", 1021, set(1021, "version", json!(0)), Dlq("`version` must be a positive integer")),
        case("version negative", 1022, set(1022, "version", json!(-3)), Dlq("`version` must be a positive integer")),
        case("version float", 1023, set(1023, "version", json!(2.5)), Dlq("`version` must be a positive integer")),
        case("version 1e30", 1024, String::from_utf8(set(1024, "version", json!(0))).expect("UTF-8").replace("\"version\":0", "\"version\":1e30").into_bytes(), Dlq("`version` must be a positive integer")),
        case("version as a string", 1025, set(1025, "version", json!("1")), Dlq("`version` must be a positive integer")),
        case("version null", 1026, set(1026, "version", Value::Null), Dlq("`version` must be a positive integer")),
        case("book.id differs from book_id", 1027, bent(1027, |e| e["book"]["id"] = json!(9999)), Dlq("does not match `book_id`")),
        case("book not an object", 1028, set(1028, "book", json!("a book")), Dlq("`book` must be an object")),
        case("book without a title", 1029, bent(1029, |e| { e["book"].as_object_mut().map(|b| b.remove("title")); }), Dlq("missing field `title`")),
        case("book title a number", 1030, bent(1030, |e| e["book"]["title"] = json!(5)), Dlq("`book` is invalid")),
        case("duplicate field", 1031, String::from_utf8(valid(1031)).expect("UTF-8").replacen("\"version\":1", "\"version\":1,\"version\":2", 1).into_bytes(), Dlq("duplicate field `version`")),
        case("event_id not a UUID", 1032, set(1032, "event_id", json!("not-a-uuid")), Dlq("`event_id` is not a UUID")),
        case("occurred_at not RFC 3339", 1033, set(1033, "occurred_at", json!("yesterday")), Dlq("`occurred_at` is not an RFC 3339 time")),
        case("lone surrogate escape", 1034, String::from_utf8(valid(1034)).expect("UTF-8").replace("\"good\"", "\"\\ud800\"").into_bytes(), Dlq("not JSON")),
        case("non-JSON with a JSON content type", 1035, b"<book id=\"1035\"/>".to_vec(), Dlq("not JSON")),
        case("poison published by hand (no properties)", 1036, set(1036, "book_id", json!("two")), Dlq("`book_id` must be a positive integer")).content_type(None).routing_key("book.updated"),
        case("text/plain content type", 1050, valid(1050), APPLIED).content_type(Some("text/plain")),
        case("application/xml content type", 1051, valid(1051), APPLIED).content_type(Some("application/xml")),
        case("no content type (management UI)", 1052, valid(1052), APPLIED).content_type(None),
        case("unknown schema version field", 1053, bent(1053, |e| { e["specversion"] = json!("9.9"); e["schema_version"] = json!(99); }), APPLIED),
        case("deeply nested unknown field", 1040, deep_unknown, APPLIED),
        case("routing key disagrees with the body", 1054, valid(1054), APPLIED).routing_key("book.deleted"),
        case("book on a delete (tolerated)", 1055, bent(1055, |e| e["type"] = json!("book.deleted")), Fate::Applied { version: 1, title: None }).routing_key("book.deleted"),
        case("garbage traceparent header", 1056, valid(1056), APPLIED).header("traceparent", text("00-zz-not-a-trace-01")),
        case("garbage x-retry-count header", 1057, valid(1057), APPLIED).header(X_RETRY_COUNT, text("lots")),
        case("routing key outside book.*", 1058, valid(1058), Fate::Unrouted).routing_key("author.created"),
    ]
}

/// Publishes `case` on `channel` as a producer that sets exactly these properties would.
async fn publish(channel: &Channel, case: &Case) -> anyhow::Result<()> {
    let mut properties = BasicProperties::default().with_delivery_mode(2);
    if let Some(content_type) = case.content_type {
        properties = properties.with_content_type(ShortString::from(content_type));
    }
    if !case.headers.is_empty() {
        let mut table = FieldTable::default();
        for (name, value) in &case.headers {
            table.insert(ShortString::from(*name), value.clone());
        }
        properties = properties.with_headers(table);
    }
    channel
        .basic_publish(
            ShortString::from(EXCHANGE),
            ShortString::from(case.routing_key),
            BasicPublishOptions::default(),
            &case.body,
            properties,
        )
        .await?;
    Ok(())
}

/// Checks where one row ended; returns its failures.
async fn verdict(
    cache: &booksvc::cache::BookCache,
    case: &Case,
    dead: Option<&events::lapin::message::Delivery>,
) -> Vec<String> {
    let mut failures = vec![];
    let entry = cached(cache, case.id).await;
    match (case.fate, dead) {
        (Fate::Dlq(reason), Some(dead)) => {
            let headers = dead.properties.headers().as_ref();
            let error = headers::text(headers, X_ERROR).unwrap_or_default();
            if !(error.starts_with("poison: ") && error.contains(reason)) {
                failures.push(format!("x-error {error:?} lacks {reason:?}"));
            }
            if headers::count(headers, X_RETRY_COUNT) != Some(1) {
                failures.push("dead-lettered after more than one attempt".to_owned());
            }
            let key = headers::text(headers, X_ORIGINAL_ROUTING_KEY);
            if key.as_deref() != Some(case.routing_key) {
                failures.push(format!("x-original-routing-key {key:?}"));
            }
            if entry.is_some() {
                failures.push(format!("poison reached the cache: {entry:?}"));
            }
        }
        (Fate::Dlq(_), None) => failures.push("not in the DLQ".to_owned()),
        (_, Some(dead)) => failures.push(format!(
            "dead-lettered: {:?}",
            headers::text(dead.properties.headers().as_ref(), X_ERROR)
        )),
        (Fate::Applied { version, title }, None) => {
            let ok = match (&entry, title) {
                (Some(CachedBook::Live(book)), Some(title)) => {
                    book.version == version && book.title == title
                }
                (Some(CachedBook::Tombstone { version: at }), None) => *at == version,
                _ => false,
            };
            if !ok {
                failures.push(format!("cache holds {entry:?}, want v{version} {title:?}"));
            }
        }
        (Fate::Unrouted, None) => {
            if entry.is_some() {
                failures.push(format!("an unrouted message was applied: {entry:?}"));
            }
        }
    }
    failures
}

#[tokio::test]
async fn every_kind_of_bad_event_ends_in_the_dlq_or_is_tolerated_and_nothing_is_stuck()
-> anyhow::Result<()> {
    let broker = Broker::fresh().await?;
    let cache = shared_cache().await?;
    let consumer = RunningConsumer::spawn(consumer_settings(&broker.url), cache.clone());
    let connection =
        events::connect(&broker.url, "bad-events-test", Duration::from_secs(10)).await?;
    let channel = connection.create_channel().await?;
    let cases = cases();
    let bodies: HashMap<&[u8], &str> = cases.iter().map(|c| (&c.body[..], c.name)).collect();
    assert_eq!(
        bodies.len(),
        cases.len(),
        "each row needs a body of its own"
    );

    for case in &cases {
        publish(&channel, case).await?;
    }
    // Last, on the same channel (so after every row): a good event must still be applied.
    let good = case("good event after the sweep", 1, bent(1, |_| {}), APPLIED);
    publish(&channel, &good).await?;
    assert!(
        cached_at(&cache, 1, 1).await,
        "the good event was not applied"
    );

    let poison = cases
        .iter()
        .filter(|c| matches!(c.fate, Fate::Dlq(_)))
        .count();
    let settled = broker.wait_for_depth(DLQ, u32::try_from(poison)?).await;
    let mut dead_letters = HashMap::new();
    while let Some(dead) = broker.take(DLQ).await? {
        dead_letters.insert(dead.data.clone(), dead);
    }
    let mut report = vec![];
    if !settled {
        report.push(format!(
            "DLQ holds {} messages, want {poison}",
            dead_letters.len()
        ));
    }
    for case in &cases {
        let failures = verdict(&cache, case, dead_letters.get(&case.body)).await;
        if !failures.is_empty() {
            report.push(format!("{}: {}", case.name, failures.join("; ")));
        }
    }
    // Nothing waits to be redelivered for ever: the main and retry queues are empty.
    let mut queues = vec![QUEUE.to_owned()];
    queues.extend(
        consumer_settings(&broker.url)
            .retry_delays
            .into_iter()
            .map(Topology::retry_queue_name),
    );
    for queue in queues {
        let depth = broker.depth(&queue).await?;
        if depth != 0 {
            report.push(format!("{queue} still holds {depth} messages"));
        }
    }
    assert!(
        report.is_empty(),
        "{} problems over {} rows:\n{}",
        report.len(),
        cases.len(),
        report.join("\n")
    );
    consumer.stop().await?;
    let _ = connection.close(200, ShortString::from("bye")).await;
    broker.close().await;
    Ok(())
}
