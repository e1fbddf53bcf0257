//! Wire-contract tests: the checked-in samples keep parsing, serialization round-trips,
//! every malformed body fails with a precise one-line message, and nothing panics.

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

const CREATED: &[u8] = include_bytes!("../../samples/book.created.json");
const UPDATED: &[u8] = include_bytes!("../../samples/book.updated.json");
const DELETED: &[u8] = include_bytes!("../../samples/book.deleted.json");
const FROM_UI: &[u8] = include_bytes!("../../samples/book.updated.from-ui.json");

fn parse_ok(body: &[u8]) -> BookChanged {
    match BookChanged::parse(body) {
        Ok(event) => event,
        Err(error) => panic!("sample must parse, got: {error}"),
    }
}

fn uuid(text: &str) -> Option<Uuid> {
    Some(Uuid::parse_str(text).expect("test UUIDs are valid"))
}

fn book(id: i64, title: &str, author: &str, desc: &str) -> Option<BookData> {
    Some(BookData {
        id,
        title: title.to_owned(),
        author: author.to_owned(),
        desc: desc.to_owned(),
    })
}

#[test]
fn created_sample_parses() {
    let event = parse_ok(CREATED);
    assert_eq!(event.event_id, uuid("0193a1c2-7d3e-7b4a-9f10-3c2d1e0f5a01"));
    assert_eq!(event.kind, EventType::Created);
    assert_eq!((event.book_id, event.version), (3, 1));
    assert_eq!(
        event.occurred_at,
        Utc.with_ymd_and_hms(2026, 11, 23, 9, 58, 0).single()
    );
    assert_eq!(
        event.book,
        book(3, "Third book", "Ann Roe", "A new arrival.")
    );
    assert_eq!(event.routing_key(), "book.created");
}

#[test]
fn updated_sample_parses() {
    let event = parse_ok(UPDATED);
    assert_eq!(event.event_id, uuid("7f3e5b0c-2a41-4c8e-9d6f-1b2a3c4d5e6f"));
    assert_eq!(event.kind, EventType::Updated);
    assert_eq!((event.book_id, event.version), (2, 3));
    assert_eq!(
        event.occurred_at,
        Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).single()
    );
    assert_eq!(event.book, book(2, "Second book", "Jane Doe", "..."));
}

#[test]
fn deleted_sample_parses() {
    let event = parse_ok(DELETED);
    assert_eq!(event.event_id, uuid("0193a1c2-9b00-7c11-8e22-5f6a7b8c9d02"));
    assert_eq!(event.kind, EventType::Deleted);
    assert_eq!((event.book_id, event.version), (1, 4));
    let at = Utc.with_ymd_and_hms(2026, 11, 23, 10, 5, 30).single();
    let at = at.map(|t| t + chrono::Duration::milliseconds(250));
    assert_eq!(event.occurred_at, at);
    assert_eq!(event.book, None);
}

#[test]
fn sample_published_by_hand_from_the_ui_parses_without_id_and_time() {
    let event = parse_ok(FROM_UI);
    assert_eq!(event.event_id, None);
    assert_eq!(event.occurred_at, None);
    assert_eq!(event.kind, EventType::Updated);
    assert_eq!((event.book_id, event.version), (2, 4));
    assert_eq!(
        event.book,
        book(2, "Second book", "Jane Doe", "Edited by hand")
    );
}

#[test]
fn every_constructor_round_trips_through_json() {
    let now = Utc::now();
    let events = [
        BookChanged::created(book(7, "T", "A", "D").expect("some"), 1, now),
        BookChanged::updated(
            book(7, "T2", "A", "ünïcødé \"quoted\"\n").expect("some"),
            2,
            now,
        ),
        BookChanged::deleted(7, 3, now),
    ];
    for event in events {
        let parsed = BookChanged::parse(&event.to_json());
        assert_eq!(
            parsed.as_ref().ok(),
            Some(&event),
            "{:?}: {parsed:?}",
            event.kind
        );
    }
}

#[test]
fn serialized_shape_matches_the_design() {
    let at = Utc
        .with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
        .single()
        .expect("valid");
    let mut event = BookChanged::deleted(2, 5, at);
    let json: Value = serde_json::from_slice(&event.to_json()).expect("to_json is JSON");
    assert_eq!(json["type"], "book.deleted");
    assert_eq!(
        json["book"],
        Value::Null,
        "`book` is an explicit null for deletes"
    );
    assert_eq!(json["occurred_at"], "2026-11-23T10:00:00Z");
    assert!(json["event_id"].is_string());

    event.event_id = None;
    event.occurred_at = None;
    let json: Value = serde_json::from_slice(&event.to_json()).expect("to_json is JSON");
    let object = json.as_object().expect("an object");
    assert!(!object.contains_key("event_id") && !object.contains_key("occurred_at"));
}

#[test]
fn constructors_use_fresh_time_ordered_ids() {
    let now = Utc::now();
    let a = BookChanged::deleted(1, 1, now).event_id.expect("set");
    let b = BookChanged::deleted(1, 1, now).event_id.expect("set");
    assert_ne!(a, b);
    assert_eq!(a.get_version_num(), 7);
}

#[test]
fn routing_keys_round_trip() {
    for kind in EventType::ALL {
        assert_eq!(EventType::from_routing_key(kind.routing_key()), Some(kind));
        assert_eq!(kind.to_string(), kind.routing_key());
    }
    assert_eq!(EventType::from_routing_key("book.*"), None);
    assert_eq!(EventType::from_routing_key("Book.Created"), None);
}

/// A valid `book.updated` body to break one field at a time.
fn valid() -> Value {
    json!({
        "event_id": "7f3e5b0c-2a41-4c8e-9d6f-1b2a3c4d5e6f",
        "type": "book.updated", "book_id": 2, "version": 3,
        "occurred_at": "2026-11-23T10:00:00Z",
        "book": {"id": 2, "title": "Second book", "author": "Jane Doe", "desc": "..."}
    })
}

/// `valid()` with `field` set to `value` (or removed when `value` is `None`).
fn with(field: &str, value: Option<Value>) -> Vec<u8> {
    let mut body = valid();
    let object = body.as_object_mut().expect("valid() is an object");
    match value {
        Some(value) => object.insert(field.to_owned(), value),
        None => object.remove(field),
    };
    serde_json::to_vec(&body).expect("a Value serializes")
}

#[test]
fn malformed_bodies_fail_with_a_precise_one_line_message() {
    let deep = format!("{{\"book\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
    let long_type = format!("book.{}", "x".repeat(10_000));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not JSON",
            b"{\"type\":".to_vec(),
            "body is not JSON: EOF while parsing",
        ),
        (
            "plain text",
            b"hello".to_vec(),
            "body is not JSON: expected value",
        ),
        (
            "empty body",
            Vec::new(),
            "body is not JSON: EOF while parsing",
        ),
        (
            "not UTF-8",
            b"{\"type\": \"book.\xff\"}".to_vec(),
            "body is not UTF-8 (invalid byte at offset 15)",
        ),
        (
            "array at top level",
            b"[\"book.updated\", 2, 3]".to_vec(),
            "body is not JSON: invalid type: sequence, expected a JSON object",
        ),
        (
            "trailing garbage",
            [with("type", Some(json!("book.updated"))), b" x".to_vec()].concat(),
            "body is not JSON: trailing characters",
        ),
        (
            "duplicate field",
            b"{\"type\":\"book.deleted\",\"book_id\":1,\"version\":1,\"version\":9}".to_vec(),
            "body is not JSON: duplicate field `version`",
        ),
        (
            "deep nesting in a known field",
            deep.into_bytes(),
            "body is not JSON: recursion limit exceeded",
        ),
        ("missing type", with("type", None), "missing field `type`"),
        (
            "missing book_id",
            with("book_id", None),
            "missing field `book_id`",
        ),
        (
            "missing version",
            with("version", None),
            "missing field `version`",
        ),
        (
            "null type",
            with("type", Some(Value::Null)),
            "`type` must be a string, got null",
        ),
        (
            "numeric type",
            with("type", Some(json!(5))),
            "`type` must be a string, got number 5",
        ),
        (
            "book_id as string",
            with("book_id", Some(json!("2"))),
            "`book_id` must be a positive integer, got string \"2\"",
        ),
        (
            "version as bool",
            with("version", Some(json!(true))),
            "`version` must be a positive integer, got boolean true",
        ),
        (
            "version as float",
            with("version", Some(json!(3.0))),
            "`version` must be a positive integer, got 3.0",
        ),
        (
            "version zero",
            with("version", Some(json!(0))),
            "`version` must be a positive integer, got 0",
        ),
        (
            "version negative",
            with("version", Some(json!(-3))),
            "`version` must be a positive integer, got -3",
        ),
        (
            "version over i64",
            with("version", Some(json!(9_223_372_036_854_775_808_u64))),
            "`version` must be a positive integer, got 9223372036854775808",
        ),
        (
            "version far over i64",
            b"{\"type\":\"book.deleted\",\"book_id\":1,\"version\":1e400}".to_vec(),
            "body is not JSON: number out of range",
        ),
        (
            "book_id zero",
            with("book_id", Some(json!(0))),
            "`book_id` must be a positive integer, got 0",
        ),
        (
            "unknown type",
            with("type", Some(json!("book.foo"))),
            "unknown event type `book.foo`",
        ),
        (
            "type with newline",
            with("type", Some(json!("book.\nfoo"))),
            "unknown event type `book.\\nfoo`",
        ),
        (
            "huge unknown type",
            with("type", Some(json!(long_type))),
            "unknown event type `book.xxxxxxxxxx",
        ),
        (
            "event_id not a UUID",
            with("event_id", Some(json!("abc"))),
            "`event_id` is not a UUID: abc",
        ),
        (
            "event_id a number",
            with("event_id", Some(json!(7))),
            "`event_id` must be a string, got number 7",
        ),
        (
            "occurred_at not RFC 3339",
            with("occurred_at", Some(json!("yesterday"))),
            "`occurred_at` is not an RFC 3339 time: yesterday",
        ),
        (
            "book missing on update",
            with("book", None),
            "`book` is required for book.updated",
        ),
        (
            "book null on update",
            with("book", Some(Value::Null)),
            "`book` is required for book.updated",
        ),
        (
            "book missing on create",
            b"{\"type\":\"book.created\",\"book_id\":1,\"version\":1}".to_vec(),
            "`book` is required for book.created",
        ),
        (
            "book is a string",
            with("book", Some(json!("x"))),
            "`book` must be an object, got string \"x\"",
        ),
        (
            "book without title",
            with("book", Some(json!({"id": 2, "author": "a", "desc": "d"}))),
            "`book` is invalid: missing field `title`",
        ),
        (
            "book id mismatch",
            with(
                "book",
                Some(json!({"id": 9, "title": "t", "author": "a", "desc": "d"})),
            ),
            "`book.id` (9) does not match `book_id` (2)",
        ),
        (
            "huge body",
            vec![b' '; MAX_BODY_BYTES + 1],
            "body is 1048577 bytes, over the 1048576-byte limit",
        ),
    ];
    for (name, body, expected) in cases {
        let message = match BookChanged::parse(&body) {
            Ok(event) => panic!("case `{name}`: expected an error, parsed {event:?}"),
            Err(error) => error.to_string(),
        };
        assert!(
            message.starts_with(expected),
            "case `{name}`: got {message:?}, want {expected:?}"
        );
        assert!(
            !message.contains('\n'),
            "case `{name}`: message is not one line: {message:?}"
        );
        assert!(
            message.len() < 200,
            "case `{name}`: message is {} bytes",
            message.len()
        );
    }
}

#[test]
fn tolerated_variations_parse() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("deep nesting in an unknown field", deep_unknown_field()),
        (
            "extra top-level fields",
            with("source", Some(json!({"deep": [1, 2, {"x": null}]}))),
        ),
        (
            "extra book fields",
            with(
                "book",
                Some(json!({"id": 2, "title": "t", "author": "a", "desc": "d", "version": 3})),
            ),
        ),
        ("event_id null", with("event_id", Some(Value::Null))),
        ("occurred_at null", with("occurred_at", Some(Value::Null))),
        (
            "occurred_at with offset",
            with("occurred_at", Some(json!("2026-11-23T11:00:00+01:00"))),
        ),
        ("version i64::MAX", with("version", Some(json!(i64::MAX)))),
        (
            "leading whitespace",
            [b" \n\t".to_vec(), with("version", Some(json!(3)))].concat(),
        ),
        (
            "body exactly at the size limit",
            pad_to(with("version", Some(json!(3))), MAX_BODY_BYTES),
        ),
    ];
    for (name, body) in cases {
        if let Err(error) = BookChanged::parse(&body) {
            panic!("case `{name}`: expected to parse, got: {error}");
        }
    }
}

/// A valid body with a 10,000-deep array in an unknown field: skipped without recursion.
fn deep_unknown_field() -> Vec<u8> {
    let mut body = with("version", Some(json!(3)));
    body.pop(); // the closing brace
    body.extend_from_slice(b",\"x\":");
    body.extend(std::iter::repeat_n(b'[', 10_000));
    body.extend(std::iter::repeat_n(b']', 10_000));
    body.push(b'}');
    body
}

/// `body` followed by whitespace up to `len` bytes.
fn pad_to(mut body: Vec<u8>, len: usize) -> Vec<u8> {
    body.resize(len, b' ');
    body
}

#[test]
fn offset_time_is_normalised_to_utc() {
    let body = with("occurred_at", Some(json!("2026-11-23T11:00:00+01:00")));
    let event = BookChanged::parse(&body).expect("valid");
    assert_eq!(
        event.occurred_at,
        Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).single()
    );
}

#[test]
fn book_on_delete_is_tolerated_and_dropped() {
    let mut body = valid();
    body["type"] = json!("book.deleted");
    body["book"]["id"] = json!(99); // even an inconsistent one: it is ignored on a delete
    let event = BookChanged::parse(&serde_json::to_vec(&body).expect("serializes"));
    let event = event.expect("a delete with a book still parses");
    assert_eq!((event.kind, event.book), (EventType::Deleted, None));
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = BookChanged::parse(&body);
    }

    #[test]
    fn parse_never_panics_on_json_like_text(body in r#"[{}\[\]":,0-9a-z_. -]{0,200}"#) {
        let _ = BookChanged::parse(body.as_bytes());
    }

    #[test]
    fn valid_events_round_trip(
        id in 1..i64::MAX,
        version in 1..i64::MAX,
        title in ".{0,40}",
        desc in ".{0,40}",
        kind in prop::sample::select(EventType::ALL.to_vec()),
        secs in 0..4_102_444_800_i64,
    ) {
        let at = Utc.timestamp_opt(secs, 0).single().expect("in range");
        let data = BookData { id, title, author: "a".to_owned(), desc };
        let event = match kind {
            EventType::Created => BookChanged::created(data, version, at),
            EventType::Updated => BookChanged::updated(data, version, at),
            EventType::Deleted => BookChanged::deleted(id, version, at),
        };
        prop_assert_eq!(BookChanged::parse(&event.to_json()).ok(), Some(event));
    }
}

/// Any JSON value, nested a few levels: what a producer might put in a field.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// What a parsed event must satisfy, whatever body it came from.
fn assert_valid(event: &BookChanged) -> Result<(), TestCaseError> {
    prop_assert!(event.book_id >= 1 && event.version >= 1, "{event:?}");
    match (event.kind, &event.book) {
        (EventType::Deleted, None) => {}
        (EventType::Created | EventType::Updated, Some(book)) => {
            prop_assert_eq!(book.id, event.book_id);
        }
        _ => prop_assert!(false, "book presence does not match the type: {event:?}"),
    }
    // Whatever was accepted re-serializes to a body that parses to the same event.
    let again = BookChanged::parse(&event.to_json()).ok();
    prop_assert_eq!(again.as_ref(), Some(event));
    Ok(())
}

proptest! {
    /// Valid samples with bytes overwritten, removed or cut short: never a panic, and
    /// whatever still parses is a valid event (rejections carry a one-line reason).
    #[test]
    fn parse_survives_mutated_samples(
        sample in prop::sample::select(vec![CREATED, UPDATED, DELETED, FROM_UI]),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut body = sample.to_vec();
        for (at, byte) in edits {
            let at = at.index(body.len());
            body[at] = byte;
        }
        if truncate {
            body.truncate(cut.index(body.len()));
        }
        match BookChanged::parse(&body) {
            Ok(event) => assert_valid(&event)?,
            Err(error) => prop_assert!(!error.to_string().contains('\n'), "{error}"),
        }
    }

    /// Any JSON value in any field of a valid event: accepted only if the rules hold.
    #[test]
    fn any_value_in_any_field_is_accepted_only_when_valid(
        field in prop::sample::select(vec!["event_id", "type", "book_id", "version", "occurred_at", "book", "extra"]),
        value in any_json(),
    ) {
        let mut body = valid();
        body[field] = value;
        let bytes = serde_json::to_vec(&body).expect("serializes");
        match BookChanged::parse(&bytes) {
            Ok(event) => assert_valid(&event)?,
            Err(error) => prop_assert!(!error.to_string().contains('\n'), "{error}"),
        }
    }
}

// The JSON Schema in docs/schemas/ describes the same contract for consumers in other
// languages: every sample and every event storagesvc can emit validates against it, and the
// schema refuses what the parser refuses for the reasons a schema can say.

#[test]
fn every_sample_validates_against_the_json_schema() {
    for sample in [CREATED, UPDATED, DELETED, FROM_UI] {
        if let Err(error) = testkit::event_schema::validate(sample) {
            panic!("{error:#}");
        }
    }
}

#[test]
fn the_json_schema_refuses_what_it_can_describe() {
    let cases: [(&str, Value); 8] = [
        ("type", json!("book.renamed")),
        ("type", Value::Null),
        ("book_id", json!(0)),
        ("version", json!("3")),
        ("version", json!(1.5)),
        ("event_id", json!("not-a-uuid")),
        ("occurred_at", json!("yesterday")),
        ("book", Value::Null),
    ];
    for (field, value) in cases {
        let mut body = valid();
        body[field] = value.clone();
        let bytes = serde_json::to_vec(&body).expect("serializes");
        assert!(
            testkit::event_schema::validate(&bytes).is_err(),
            "the schema accepted {field} = {value}"
        );
        assert!(
            BookChanged::parse(&bytes).is_err(),
            "the parser accepted {field} = {value}"
        );
    }
    let mut without_type = valid();
    without_type
        .as_object_mut()
        .expect("an object")
        .remove("type");
    let bytes = serde_json::to_vec(&without_type).expect("serializes");
    assert!(testkit::event_schema::validate(&bytes).is_err());
}

proptest! {
    /// What storagesvc's constructors build and serialize always matches the schema.
    #[test]
    fn every_constructed_event_validates_against_the_json_schema(
        id in 1..=i64::MAX,
        version in 1..=i64::MAX,
        title in ".*",
        author in ".*",
        desc in ".*",
        seconds in 0..=4_102_444_800_i64,
        kind in prop::sample::select(EventType::ALL.to_vec()),
    ) {
        let at = Utc.timestamp_opt(seconds, 0).single().expect("in range");
        let book = BookData { id, title, author, desc };
        let event = match kind {
            EventType::Created => BookChanged::created(book, version, at),
            EventType::Updated => BookChanged::updated(book, version, at),
            EventType::Deleted => BookChanged::deleted(id, version, at),
        };
        let bytes = serde_json::to_vec(&event).expect("serializes");
        if let Err(error) = testkit::event_schema::validate(&bytes) {
            prop_assert!(false, "{error:#}");
        }
    }
}
