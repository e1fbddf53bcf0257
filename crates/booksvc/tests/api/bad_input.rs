//! The bad-input sweep over booksvc's HTTP API (issue #6): one row per kind of bad input, each
//! with the exact status and the `error` it must answer. Rejected input must never reach
//! storagesvc (the stand-in counts calls) nor move the breaker; ignored input (stray headers, a
//! body on a read) must not change the answer. All rows run; every failing row is reported.

use booksvc::breaker::State as BreakerState;
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::TestStack;

/// What a row must get back.
enum Expect {
    /// This status and a JSON `error` containing this text; storagesvc is not asked.
    Refused(StatusCode, &'static str),
    /// This status and a JSON body without `error` (the input is ignored or legal).
    Served(StatusCode),
}

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Option<(&'static str, Vec<u8>)>,
    expect: Expect,
}

fn req(method: Method, path: &str) -> Case {
    Case {
        name: "",
        method,
        path: path.to_owned(),
        headers: vec![],
        body: None,
        expect: Expect::Served(StatusCode::OK),
    }
}

fn get(path: &str) -> Case {
    req(Method::GET, path)
}

impl Case {
    fn header(mut self, name: &'static str, value: &[u8]) -> Case {
        self.headers.push((name, value.to_vec()));
        self
    }

    fn body(mut self, content_type: &'static str, bytes: &[u8]) -> Case {
        self.body = Some((content_type, bytes.to_vec()));
        self
    }

    fn is(mut self, name: &'static str, expect: Expect) -> Case {
        self.name = name;
        self.expect = expect;
        self
    }
}

fn refused(status: StatusCode, error: &'static str) -> Expect {
    Expect::Refused(status, error)
}

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    use Method as M;
    use StatusCode as S;
    let not_an_id = "is not a positive integer";
    let out_of_range = "is out of range: ids go from 1 to 9223372036854775807";
    let not_allowed = "method not allowed";
    let writes_elsewhere = "writes go to storagesvc";
    let brew = M::from_bytes(b"BREW").expect("a valid method token");
    let big = "x".repeat(2 * 1024 * 1024);
    vec![
        get("/books/abc").is("non-numeric id", refused(S::BAD_REQUEST, not_an_id)),
        get("/books/-1").is("negative id", refused(S::BAD_REQUEST, not_an_id)),
        get("/books/0").is("zero id", refused(S::BAD_REQUEST, out_of_range)),
        get("/books/2.0").is("float id", refused(S::BAD_REQUEST, not_an_id)),
        get("/books/1e3").is("exponent id", refused(S::BAD_REQUEST, not_an_id)),
        get("/books/+1").is("signed id", refused(S::BAD_REQUEST, not_an_id)),
        get("/books/0x2").is("hexadecimal id", refused(S::BAD_REQUEST, not_an_id)),
        get("/books/9223372036854775808").is("id one past i64::MAX", refused(S::BAD_REQUEST, out_of_range)),
        get("/books/123456789012345678901234567890123456789012345678901234567890").is("60-digit id", refused(S::BAD_REQUEST, out_of_range)),
        get("/books/%20%31").is("percent-encoded space", refused(S::BAD_REQUEST, not_an_id)),
        get("/books/%00").is("percent-encoded NUL", refused(S::BAD_REQUEST, not_an_id)),
        get("/books/%2F1").is("percent-encoded slash", refused(S::BAD_REQUEST, not_an_id)),
        get("/books/%FF").is("invalid UTF-8 in the path", refused(S::BAD_REQUEST, "UTF-8")),
        get("/books/%D9%A1").is("Arabic-Indic digit one", refused(S::BAD_REQUEST, not_an_id)),
        get("/books/%EF%BC%91").is("fullwidth digit one", refused(S::BAD_REQUEST, not_an_id)),
        get("/books/%F0%9F%93%9A").is("emoji id", refused(S::BAD_REQUEST, not_an_id)),
        get("/authors").is("unknown route", refused(S::NOT_FOUND, "no route for /authors")),
        get("/books/1/pages").is("route too deep", refused(S::NOT_FOUND, "no route")),
        get("/books/").is("trailing slash", refused(S::NOT_FOUND, "no route")),
        get("//books").is("double slash", refused(S::NOT_FOUND, "no route")),
        get("/BOOKS").is("upper-case route", refused(S::NOT_FOUND, "no route")),
        req(M::POST, "/books").body("application/json", br#"{"title":"T","author":"A","desc":""}"#).is("POST a book (booksvc only reads)", refused(S::METHOD_NOT_ALLOWED, writes_elsewhere)),
        req(M::PUT, "/books/1").body("application/json", b"{}").is("PUT a book", refused(S::METHOD_NOT_ALLOWED, not_allowed)),
        req(M::DELETE, "/books/1").is("DELETE a book", refused(S::METHOD_NOT_ALLOWED, not_allowed)),
        req(M::PATCH, "/books/1").is("PATCH a book", refused(S::METHOD_NOT_ALLOWED, not_allowed)),
        req(M::POST, "/").is("POST the root", refused(S::METHOD_NOT_ALLOWED, not_allowed)),
        req(M::OPTIONS, "/books").is("OPTIONS", refused(S::METHOD_NOT_ALLOWED, not_allowed)),
        req(brew, "/books/1").is("unknown method", refused(S::METHOD_NOT_ALLOWED, not_allowed)),
        req(M::POST, "/books").body("application/json", big.as_bytes()).is("2 MiB body on a write", refused(S::METHOD_NOT_ALLOWED, not_allowed)),
        get("/books/1").header("x-request-id", b"\xff\xfe garbage").is("request id not UTF-8", Expect::Served(S::OK)),
        get("/books/1").header("x-request-id", "r".repeat(8 * 1024).as_bytes()).is("request id 8 KiB", Expect::Served(S::OK)),
        get("/books/1").header("traceparent", b"00-zz-not-a-trace-01").is("traceparent garbage", Expect::Served(S::OK)),
        get("/books/1").header("traceparent", "f".repeat(4096).as_bytes()).is("traceparent 4 KiB", Expect::Served(S::OK)),
        get("/books/1").header("if-match", b"\"\xff\"").is("If-Match garbage on a read", Expect::Served(S::OK)),
        get("/books/1").header("if-none-match", b"yesterday").is("If-None-Match garbage", Expect::Served(S::OK)),
        get("/books/1").header("authorization", b"Bearer \xff").is("Authorization garbage", Expect::Served(S::OK)),
        get("/books/1").header("accept", b"text/html").is("Accept text/html", Expect::Served(S::OK)),
        get("/books/1").body("text/plain", b"ignored").is("body on a read", Expect::Served(S::OK)),
        get("/books?limit=-1&limit=x&%FF").is("bad and repeated page parameters", refused(S::BAD_REQUEST, "limit")),
        get("/?limit=0").is("page limit zero on the root", refused(S::BAD_REQUEST, "limit must be an integer from 1 to 1000")),
        get("/books?after=9223372036854775808").is("page after overflowing", refused(S::BAD_REQUEST, "after must be a book id")),
        get("/books?utm_source=x&%FF&limit=2").is("unknown query parameters", Expect::Served(S::OK)),
        get("/books/0001").is("leading zeros", Expect::Served(S::OK)),
        get("/books/%31").is("percent-encoded digit", Expect::Served(S::OK)),
    ]
}

/// Sends `case`; returns its failures (empty: the row passed).
async fn check(stack: &TestStack, case: Case) -> anyhow::Result<Vec<String>> {
    let calls_before = stack.standin().book_calls();
    let url = format!("{}{}", stack.address, case.path);
    let mut request = stack.client.request(case.method.clone(), url);
    for (name, value) in &case.headers {
        request = request.header(*name, HeaderValue::from_bytes(value)?);
    }
    if let Some((content_type, bytes)) = case.body {
        request = request.header("content-type", content_type).body(bytes);
    }
    let response = request.send().await?;
    let status = response.status();
    let allow = response.headers().get("allow");
    let allows_get = allow.is_some_and(|allow| allow.as_bytes().windows(3).any(|w| w == b"GET"));
    let is_json = response
        .headers()
        .get("content-type")
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    let body: Value = serde_json::from_str(&response.text().await?).unwrap_or(Value::Null);
    let error = body.get("error").and_then(Value::as_str);
    let asked_storagesvc = stack.standin().book_calls() != calls_before;

    let mut failures = vec![];
    let (want, want_error) = match case.expect {
        Expect::Refused(status, error) => (status, Some(error)),
        Expect::Served(status) => (status, None),
    };
    if status != want {
        failures.push(format!("status {status}, want {want}"));
    }
    if !is_json {
        failures.push("not JSON".to_owned());
    }
    match (want_error, error) {
        (Some(want), Some(got)) if got.contains(want) => {}
        (Some(want), got) => failures.push(format!("error {got:?} lacks {want:?}")),
        (None, Some(got)) => failures.push(format!("unexpected error {got:?}")),
        (None, None) => {}
    }
    // Our errors are written by us: axum's rejection wording says nothing a client can act on.
    if let Some(got) = error.filter(|got| got.contains("Failed to")) {
        failures.push(format!("error {got:?} is axum's wording, not ours"));
    }
    if want_error.is_some() && asked_storagesvc {
        failures.push("refused input reached storagesvc".to_owned());
    }
    if status == StatusCode::METHOD_NOT_ALLOWED && !allows_get {
        failures.push("405 without `Allow` listing GET".to_owned());
    }
    Ok(failures)
}

#[tokio::test]
async fn every_kind_of_bad_input_gets_its_status_and_json_error_and_never_reaches_storagesvc()
-> anyhow::Result<()> {
    let stack = TestStack::spawn_standin().await?;
    let cases = cases();
    let rows = cases.len();
    let mut report = vec![];
    for case in cases {
        let name = case.name;
        let failures = check(&stack, case).await?;
        if !failures.is_empty() {
            report.push(format!("{name}: {}", failures.join("; ")));
        }
    }
    assert!(
        report.is_empty(),
        "{} of {rows} rows failed:\n{}",
        report.len(),
        report.join("\n")
    );
    assert_eq!(
        stack.breaker(),
        BreakerState::Closed,
        "bad input moved the breaker"
    );
    let book: Value = stack.get_book(1).await?.json().await?;
    assert_eq!(book["title"], "One book", "book 1 still reads as seeded");
    stack.stop().await
}

/// `x-request-id` goes into log lines here and at storagesvc: a client may choose a short,
/// plain one, but a long or odd one is replaced by a fresh id.
#[tokio::test]
async fn an_overlong_or_odd_request_id_is_replaced_by_a_fresh_one() -> anyhow::Result<()> {
    let stack = TestStack::spawn_standin().await?;
    let long = "a".repeat(1000);
    let cases = [
        ("abc-123_x.Y", true),
        (long.as_str(), false),
        ("has spaces", false),
        ("quote\"d", false),
    ];
    for (sent, kept) in cases {
        let response = stack
            .client
            .get(format!("{}/books/1", stack.address))
            .header("x-request-id", sent)
            .send()
            .await?;
        assert_eq!(response.status(), StatusCode::OK, "{sent:?}");
        let echoed = response
            .headers()
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(echoed == sent, kept, "sent {sent:?}, echoed {echoed:?}");
        assert!(
            !echoed.is_empty() && echoed.len() <= 128,
            "echoed {echoed:?}"
        );
    }
    stack.stop().await
}
