//! The book-changed event's JSON Schema (`docs/schemas/book-changed.schema.json`), for tests
//! that check what the relay really publishes against the documented contract.
//!
//! The schema is the description a consumer in another language would read; the Rust parser
//! (`events::BookChanged::parse`) is stricter (see the schema's own description). Every test
//! that takes a published event off a queue checks it here first, so the two cannot drift.

use std::sync::LazyLock;

use anyhow::Context;

/// The checked-in schema's text.
pub const SCHEMA: &str = include_str!("../../../docs/schemas/book-changed.schema.json");

static VALIDATOR: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let schema: serde_json::Value =
        serde_json::from_str(SCHEMA).expect("the checked-in event schema is JSON");
    jsonschema::options()
        // `format` is an annotation in 2020-12 unless asked for: `uuid` and `date-time` are
        // part of the contract.
        .should_validate_formats(true)
        .build(&schema)
        .expect("the checked-in event schema is a valid JSON Schema")
});

/// `Ok` when `body` is JSON that validates against the schema; otherwise every violation,
/// each with where it is in the body.
pub fn validate(body: &[u8]) -> anyhow::Result<()> {
    let event: serde_json::Value =
        serde_json::from_slice(body).context("an event body that is not JSON")?;
    let errors: Vec<String> = VALIDATOR
        .iter_errors(&event)
        .map(|error| format!("{} at {:?}", error, error.instance_path().as_str()))
        .collect();
    anyhow::ensure!(
        errors.is_empty(),
        "the event {} does not match docs/schemas/book-changed.schema.json: {}",
        String::from_utf8_lossy(body),
        errors.join("; ")
    );
    Ok(())
}
