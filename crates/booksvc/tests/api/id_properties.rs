//! Property tests of the book id in the path, in-process: arbitrary bytes and strings as the
//! `{id}` segment, sent with `oneshot` through booksvc's real router and read path (the
//! stand-in storagesvc and real Redis behind it), never a socket to booksvc. Whatever the segment:
//! never a panic, never a 5xx, always JSON; a non-id is 400 and never reaches storagesvc; a
//! positive decimal id is read (200 for the seeded books, 404 for the rest).

use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use booksvc::http::{AppState, router};
use metrics_exporter_prometheus::PrometheusBuilder;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::helpers::TestStack;

/// A path segment as raw bytes: anything at all, text, digits, and near-numbers.
fn segment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..40),
        ".{1,30}".prop_map(String::into_bytes),
        "[0-9]{1,25}".prop_map(String::into_bytes),
        "[-+ .eEx_0-9]{1,15}".prop_map(String::into_bytes),
        (1..=i64::MAX).prop_map(|id| id.to_string().into_bytes()),
        (i64::MIN..=0).prop_map(|id| id.to_string().into_bytes()),
    ]
}

/// `segment` percent-encoded (every byte but ASCII letters and digits), as a client sends it.
fn encoded(segment: &[u8]) -> String {
    segment
        .iter()
        .map(|&b| match b {
            b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The id a segment must parse to: digits only, in `1..=i64::MAX`.
fn expected_id(segment: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(segment).ok()?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|id| *id > 0)
}

/// booksvc's router on the stack's read path, for `oneshot`.
fn in_process_router(stack: &TestStack) -> axum::Router {
    router(AppState {
        service: stack.service.clone(),
        metrics: PrometheusBuilder::new().build_recorder().handle(),
        shutdown: CancellationToken::new(),
        ready_timeout: Duration::from_secs(1),
        consumer: None,
    })
}

/// `GET /books/<segment>` through `router`: the status and the JSON body.
async fn get(router: &axum::Router, segment: &[u8]) -> Result<(StatusCode, Value), TestCaseError> {
    let request = Request::get(format!("/books/{}", encoded(segment)))
        .body(Body::empty())
        .map_err(|err| TestCaseError::fail(format!("request: {err}")))?;
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let body = to_bytes(response.into_body(), 1024 * 1024)
        .await
        .map_err(|err| TestCaseError::fail(format!("body: {err}")))?;
    let json = serde_json::from_slice(&body)
        .map_err(|err| TestCaseError::fail(format!("{status}: not JSON: {err}")))?;
    Ok((status, json))
}

#[test]
fn any_id_segment_is_a_json_400_or_a_read_never_a_5xx() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let stack = runtime.block_on(TestStack::spawn_standin())?;
    let router = in_process_router(&stack);
    let config = Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    };
    let result = TestRunner::new(config).run(&segment(), |segment| {
        let calls_before = stack.standin().book_calls();
        let (status, body) = runtime.block_on(get(&router, &segment))?;
        let asked_storagesvc = stack.standin().book_calls() != calls_before;
        prop_assert!(!status.is_server_error(), "{status}: {body}");
        match expected_id(&segment) {
            None => {
                prop_assert_eq!(status, StatusCode::BAD_REQUEST, "{}", body);
                prop_assert!(body["error"].is_string(), "{}", body);
                prop_assert!(!asked_storagesvc, "a non-id reached storagesvc");
            }
            Some(id @ (1 | 2)) => {
                prop_assert_eq!(status, StatusCode::OK, "{}", body);
                prop_assert_eq!(body["id"].as_i64(), Some(id));
            }
            Some(_) => {
                prop_assert_eq!(status, StatusCode::NOT_FOUND, "{}", body);
                prop_assert!(body["error"].is_string(), "{}", body);
            }
        }
        Ok(())
    });
    runtime.block_on(stack.stop())?;
    result.map_err(|err| anyhow::anyhow!("{err}"))
}
