//! `GET /openapi.json` against the running service: it serves the generated description, and
//! real answers (hits, misses, stale copies, refusals, 503s with storagesvc hung, readiness
//! while shutting down) have a status the description lists for their route, with the
//! content type, body and headers it describes (booksvc in front of the stand-in storagesvc,
//! hung on demand); and schemathesis's property-based checks with the real storagesvc up, so
//! what storagesvc really sends is checked against booksvc's description too.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::helpers::{Answer, TestStack, eventually, header};

/// The headers booksvc sets that a description must name wherever they appear.
const OWN_HEADERS: [&str; 6] = [
    "x-cache",
    "cache-status",
    "age",
    "link",
    "retry-after",
    "x-request-id",
];

#[tokio::test]
async fn serves_the_generated_description_and_real_answers_match_it() -> anyhow::Result<()> {
    // A one-second freshness: a read right after a miss is a hit, and soon after that the
    // entry is stale, so all three sources are met without waiting long. The drain delay keeps
    // booksvc serving a while once shutdown starts, for the last readiness checks.
    let stack = TestStack::options()
        .standin()
        .booksvc(|s| {
            s.cache_fresh_ttl = Duration::from_secs(1);
            s.shutdown_drain_delay = Duration::from_secs(3);
        })
        .spawn()
        .await?;
    let response = stack.get("/openapi.json").await?;
    assert_eq!(response.status(), StatusCode::OK);
    let served: Value = response.json().await?;
    assert_eq!(served, serde_json::to_value(booksvc::http::description())?);

    let id = stack.create_book("Dune").await?;
    stack.create_book("Emma").await?;
    let one = format!("/books/{id}");
    let mut mismatches = vec![];
    let paths = [
        "/books",
        "/books?limit=1",
        "/?limit=1&after=1",
        "/books?limit=0",
        "/books?after=-1",
        "/books?limit=1&limit=2",
        one.as_str(),
        one.as_str(),
        "/books/abc",
        "/books/0",
        "/books/99999999999999999999",
        "/books/999999",
        "/healthz/live",
        "/healthz/ready",
        "/metrics",
        "/openapi.json",
    ];
    for path in paths {
        check(&stack, &served, path, &mut mismatches).await?;
    }

    // storagesvc hung: the cached book comes back stale once its freshness is over; an
    // uncached book and an unknown range are 503s.
    stack.standin().answer(Answer::Hang);
    let stale = eventually(Duration::from_secs(10), || async {
        let response = stack.get(&one).await;
        response.is_ok_and(|r| header(&r, "x-cache").as_deref() == Some("stale"))
    })
    .await;
    assert!(stale, "the cached book never came back stale");
    for path in [one.as_str(), "/books/424242", "/books?after=424242"] {
        check(&stack, &served, path, &mut mismatches).await?;
    }
    stack.standin().answer(Answer::Normal);

    // Shutting down: readiness is a 503 with the same body.
    stack.begin_shutdown();
    let (status, _) = stack.ready().await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    check(&stack, &served, "/healthz/ready", &mut mismatches).await?;

    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    stack.stop().await
}

/// `GET path` on booksvc; a mismatch with the description is pushed onto `mismatches`.
async fn check(
    stack: &TestStack,
    description: &Value,
    path: &str,
    mismatches: &mut Vec<String>,
) -> anyhow::Result<()> {
    let response = stack.get(path).await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await?;
    if let Err(why) = conforms(description, path, status, &headers, &body) {
        mismatches.push(format!("GET {path} → {status}: {why}"));
    }
    Ok(())
}

/// Whether an answer to `GET path` is one the description lists: its status, content type,
/// body (validated against the schema) and headers (each of booksvc's own named there, each
/// named one valid).
fn conforms(
    description: &Value,
    path: &str,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    let path = path.split('?').next().unwrap_or(path);
    let template = match path.strip_prefix("/books/") {
        Some(_) => "/books/{id}",
        None => path,
    };
    let described = &description["paths"][template]["get"]["responses"][status.to_string()];
    if described.is_null() {
        return Err("status not in the description".into());
    }
    let content_type = headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if let Some(content) = described["content"].as_object() {
        let Some(media) = content.get(media_type) else {
            return Err(format!("content type {content_type:?} not described"));
        };
        if media_type == "application/json" && !media["schema"].is_null() {
            let body: Value = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
            validate(description, &media["schema"], &body).map_err(|e| format!("body: {e}"))?;
        }
    }
    let named = described["headers"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let schema_of = |name: &str| {
        named
            .iter()
            .find(|(described, _)| described.eq_ignore_ascii_case(name))
            .map(|(_, header)| header["schema"].clone())
    };
    for name in OWN_HEADERS {
        let Some(value) = headers.get(name).and_then(|value| value.to_str().ok()) else {
            continue;
        };
        let Some(schema) = schema_of(name) else {
            return Err(format!("header {name} not described"));
        };
        let instance = match schema["type"].as_str() {
            Some("integer") => value.parse::<i64>().map_or(json!(value), |n| json!(n)),
            _ => json!(value),
        };
        validate(description, &schema, &instance).map_err(|e| format!("header {name}: {e}"))?;
    }
    Ok(())
}

/// Validates `instance` against `schema`, whose `$ref`s point into the description's
/// components.
fn validate(description: &Value, schema: &Value, instance: &Value) -> Result<(), String> {
    let mut root = schema.clone();
    if let Some(object) = root.as_object_mut() {
        object.insert("components".into(), description["components"].clone());
    }
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&root)
        .map_err(|e| format!("schema {schema}: {e}"))?;
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|error| format!("{error} at {:?}", error.instance_path().as_str()))
        .collect();
    match errors.is_empty() {
        true => Ok(()),
        false => Err(format!("{instance}: {}", errors.join("; "))),
    }
}

/// schemathesis generates requests from the served description, valid and invalid, and checks
/// every answer: no 5xx, and status, headers, content type and body as described. storagesvc
/// (and PostgreSQL behind it) is up throughout, so a 5xx would be booksvc's own failure: a 503
/// is legitimate only when storagesvc cannot answer (`outages` tests those).
#[tokio::test]
async fn schemathesis_finds_every_answer_as_described() -> anyhow::Result<()> {
    // A generous budget: on a loaded machine a slow storagesvc call must not pass for a 503
    // caused by the input.
    let stack = TestStack::options()
        .booksvc(|s| s.request_budget = Duration::from_secs(10))
        .spawn()
        .await?;
    for title in ["Dune", "Emma", "Ulysses"] {
        stack.create_book(title).await?;
    }
    let description = format!("{}/openapi.json", stack.address);
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemathesis.toml");
    let report = testkit::schemathesis::run(
        &config,
        &description,
        &[
            "--checks",
            "all",
            // Enough cases per operation to meet every status the description lists (about
            // 1500 requests, some 20 s on two cores); the seed makes a failure reproducible.
            "--max-examples",
            "100",
            "--seed",
            "20261207",
            // One worker: CPython 3.11 can fail to parse Hypothesis's lambdas from two threads
            // at once ("AST constructor recursion depth mismatch").
            "--workers",
            "1",
            "--request-timeout",
            "15",
        ],
    )
    .await?;
    println!("{report}");
    stack.stop().await
}
