//! The bad-input sweep over storagesvc's HTTP API (issue #6): one row per kind of bad input,
//! each with the exact status and the `error` it must answer, and after every row the books
//! and the outbox unchanged. All rows run and every failing row is reported at once.
//!
//! Rows that reqwest cannot express (raw bytes in the request line, a header block over
//! hyper's limit) go through [`raw_http`], a plain TCP exchange.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{TOKEN, TestApp};

/// What a row sends as its body.
enum Body {
    None,
    /// These bytes with this `Content-Type` (`None`: no header at all).
    Raw(Option<&'static str>, Vec<u8>),
}

/// What a row must get back.
enum Expect {
    /// This status and a JSON body whose `error` contains this text.
    Error(StatusCode, &'static str),
    /// This status and a JSON body without `error` (input that is ignored or legal).
    Ok(StatusCode),
}

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Body,
    expect: Expect,
}

fn json(text: &str) -> Body {
    Body::Raw(Some("application/json"), text.as_bytes().to_vec())
}

fn typed(content_type: &'static str, text: &str) -> Body {
    Body::Raw(Some(content_type), text.as_bytes().to_vec())
}

const VALID: &str = r#"{"title":"T","author":"A","desc":"D"}"#;

/// A write with the token, plus `extra` headers.
fn write(method: Method, path: &str, extra: &[(&'static str, &[u8])], body: Body) -> Case {
    let mut headers = vec![("authorization", format!("Bearer {TOKEN}").into_bytes())];
    headers.extend(extra.iter().map(|(name, value)| (*name, value.to_vec())));
    Case {
        name: "",
        method,
        path: path.to_owned(),
        headers,
        body,
        expect: Expect::Ok(StatusCode::OK),
    }
}

fn read(method: Method, path: &str, extra: &[(&'static str, &[u8])]) -> Case {
    Case {
        name: "",
        method,
        path: path.to_owned(),
        headers: extra.iter().map(|(n, v)| (*n, v.to_vec())).collect(),
        body: Body::None,
        expect: Expect::Ok(StatusCode::OK),
    }
}

impl Case {
    fn is(mut self, name: &'static str, expect: Expect) -> Case {
        self.name = name;
        self.expect = expect;
        self
    }
}

fn bad(status: StatusCode, error: &'static str) -> Expect {
    Expect::Error(status, error)
}

#[rustfmt::skip]
fn body_cases() -> Vec<Case> {
    use Method as M;
    use StatusCode as S;
    let post = |body| write(M::POST, "/books", &[], body);
    let put = |body| write(M::PUT, "/books/1", &[], body);
    let long = |n: usize| "x".repeat(n);
    let nested = format!(r#"{{"title":{}"T"{},"author":"A","desc":""}}"#, "[".repeat(200), "]".repeat(200));
    vec![
        post(json(r#"{"title":"T","au"#)).is("truncated JSON", bad(S::BAD_REQUEST, "the body is not valid JSON: EOF while parsing")),
        post(json("{title: 'T'}")).is("not JSON (JS object literal)", bad(S::BAD_REQUEST, "key must be a string")),
        post(json(&format!("{VALID} trailing"))).is("JSON followed by garbage", bad(S::BAD_REQUEST, "trailing characters")),
        post(json("")).is("empty body", bad(S::BAD_REQUEST, "EOF while parsing")),
        post(json(&format!("\u{feff}{VALID}"))).is("byte order mark before JSON", bad(S::BAD_REQUEST, "expected value")),
        post(Body::Raw(Some("application/json"), b"{\"title\":\"\xff\xfe\",\"author\":\"A\",\"desc\":\"\"}".to_vec())).is("invalid UTF-8 in a string", bad(S::BAD_REQUEST, "invalid unicode")),
        post(json(r#"{"title":"\ud800","author":"A","desc":""}"#)).is("lone surrogate escape", bad(S::BAD_REQUEST, "hex escape")),
        post(json("null")).is("null body", bad(S::UNPROCESSABLE_ENTITY, "invalid type: null")),
        post(json("[1,2]")).is("array body", bad(S::UNPROCESSABLE_ENTITY, "invalid type")),
        post(json(r#""a book""#)).is("string body", bad(S::UNPROCESSABLE_ENTITY, "invalid type: string")),
        post(json("{}")).is("empty object", bad(S::UNPROCESSABLE_ENTITY, "missing field")),
        post(json(r#"{"title":"T","author":"A"}"#)).is("missing field", bad(S::UNPROCESSABLE_ENTITY, "the body is not a valid book (expected {\"title\": string, \"author\": string, \"desc\": string}): missing field `desc`")),
        post(json(r#"{"title":null,"author":"A","desc":""}"#)).is("null field", bad(S::UNPROCESSABLE_ENTITY, "invalid type: null")),
        post(json(r#"{"title":5,"author":"A","desc":""}"#)).is("number for a string", bad(S::UNPROCESSABLE_ENTITY, "invalid type: integer")),
        post(json(r#"{"title":true,"author":"A","desc":""}"#)).is("boolean for a string", bad(S::UNPROCESSABLE_ENTITY, "invalid type: boolean")),
        post(json(r#"{"title":{"x":1},"author":"A","desc":""}"#)).is("object for a string", bad(S::UNPROCESSABLE_ENTITY, "invalid type: map")),
        post(json(r#"{"title":1e999,"author":"A","desc":""}"#)).is("number out of range", bad(S::BAD_REQUEST, "number out of range")),
        post(json(r#"{"title":"T","author":"A","desc":"","version":9}"#)).is("extra field", bad(S::UNPROCESSABLE_ENTITY, "unknown field `version`")),
        post(json(r#"{"title":"T","title":"U","author":"A","desc":""}"#)).is("duplicate field", bad(S::UNPROCESSABLE_ENTITY, "duplicate field `title`")),
        post(json(&nested)).is("deeply nested value", bad(S::UNPROCESSABLE_ENTITY, "invalid type: sequence")),
        post(json(r#"{"title":"","author":"A","desc":""}"#)).is("empty string", bad(S::UNPROCESSABLE_ENTITY, "title")),
        post(json(r#"{"title":"T","author":" \t ","desc":""}"#)).is("blank string", bad(S::UNPROCESSABLE_ENTITY, "author")),
        post(json(&format!(r#"{{"title":"{}","author":"A","desc":""}}"#, long(201)))).is("over-long title", bad(S::UNPROCESSABLE_ENTITY, "title")),
        post(json(&format!(r#"{{"title":"T","author":"{}","desc":""}}"#, long(201)))).is("over-long author", bad(S::UNPROCESSABLE_ENTITY, "author")),
        post(json(&format!(r#"{{"title":"T","author":"A","desc":"{}"}}"#, long(2001)))).is("over-long desc", bad(S::UNPROCESSABLE_ENTITY, "desc")),
        post(json(r#"{"title":"a\u0000b","author":"A","desc":""}"#)).is("NUL character", bad(S::UNPROCESSABLE_ENTITY, "title")),
        post(json(&format!(r#"{{"title":"T","author":"A","desc":"{}"}}"#, long(100 * 1024)))).is("body over the limit", bad(S::PAYLOAD_TOO_LARGE, "larger than")),
        put(json(&format!(r#"{{"title":"T","author":"A","desc":"{}"}}"#, long(100 * 1024)))).is("update body over the limit", bad(S::PAYLOAD_TOO_LARGE, "larger than")),
        post(Body::Raw(None, VALID.as_bytes().to_vec())).is("no content type", bad(S::UNSUPPORTED_MEDIA_TYPE, "application/json")),
        post(typed("text/plain", VALID)).is("text/plain", bad(S::UNSUPPORTED_MEDIA_TYPE, "application/json")),
        post(typed("application/x-www-form-urlencoded", "title=T&author=A&desc=D")).is("form body", bad(S::UNSUPPORTED_MEDIA_TYPE, "application/json")),
        post(typed("multipart/form-data; boundary=x", "--x--")).is("multipart body", bad(S::UNSUPPORTED_MEDIA_TYPE, "application/json")),
        post(typed("application/xml", "<book/>")).is("XML body", bad(S::UNSUPPORTED_MEDIA_TYPE, "application/json")),
        post(typed("json", VALID)).is("content type without a subtype", bad(S::UNSUPPORTED_MEDIA_TYPE, "application/json")),
        put(typed("text/plain", VALID)).is("update with text/plain", bad(S::UNSUPPORTED_MEDIA_TYPE, "application/json")),
        write(M::POST, "/books", &[], Body::None).is("no body and no content type", bad(S::UNSUPPORTED_MEDIA_TYPE, "application/json")),
    ]
}

#[rustfmt::skip]
fn id_cases() -> Vec<Case> {
    use Method as M;
    use StatusCode as S;
    let get = |path: &str| read(M::GET, path, &[]);
    let not_an_id = "is not a positive integer";
    let out_of_range = "is out of range: ids go from 1 to 9223372036854775807";
    vec![
        get("/books/abc").is("non-numeric id", bad(S::BAD_REQUEST, not_an_id)),
        get("/books/-1").is("negative id", bad(S::BAD_REQUEST, not_an_id)),
        get("/books/0").is("zero id", bad(S::BAD_REQUEST, out_of_range)),
        get("/books/1.5").is("fractional id", bad(S::BAD_REQUEST, not_an_id)),
        get("/books/1e3").is("exponent id", bad(S::BAD_REQUEST, not_an_id)),
        get("/books/0x1").is("hexadecimal id", bad(S::BAD_REQUEST, not_an_id)),
        get("/books/+1").is("signed id", bad(S::BAD_REQUEST, not_an_id)),
        get("/books/9223372036854775808").is("id one past i64::MAX", bad(S::BAD_REQUEST, out_of_range)),
        get("/books/123456789012345678901234567890123456789012345678901234567890").is("60-digit id", bad(S::BAD_REQUEST, out_of_range)),
        get("/books/9223372036854775807").is("id i64::MAX (absent)", bad(S::NOT_FOUND, "does not exist")),
        get("/books/0001").is("leading zeros", Expect::Ok(S::OK)),
        get("/books/%31").is("percent-encoded digit", Expect::Ok(S::OK)),
        get("/books/%20%31").is("percent-encoded space", bad(S::BAD_REQUEST, not_an_id)),
        get("/books/%00").is("percent-encoded NUL", bad(S::BAD_REQUEST, not_an_id)),
        get("/books/%2F1").is("percent-encoded slash", bad(S::BAD_REQUEST, not_an_id)),
        get("/books/%FF").is("invalid UTF-8 in the path", bad(S::BAD_REQUEST, "UTF-8")),
        get("/books/%D9%A1").is("Arabic-Indic digit one", bad(S::BAD_REQUEST, not_an_id)),
        get("/books/%EF%BC%91").is("fullwidth digit one", bad(S::BAD_REQUEST, not_an_id)),
        get("/books/%F0%9F%93%9A").is("emoji id", bad(S::BAD_REQUEST, not_an_id)),
        write(M::PUT, "/books/abc", &[], json(VALID)).is("update with a bad id", bad(S::BAD_REQUEST, not_an_id)),
        write(M::DELETE, "/books/-5", &[], Body::None).is("delete with a bad id", bad(S::BAD_REQUEST, not_an_id)),
    ]
}

#[rustfmt::skip]
fn route_and_method_cases() -> Vec<Case> {
    use Method as M;
    use StatusCode as S;
    let custom = M::from_bytes(b"BREW").expect("a valid method token");
    vec![
        read(M::GET, "/authors", &[]).is("unknown route", bad(S::NOT_FOUND, "no route for /authors")),
        read(M::GET, "/books/1/pages", &[]).is("route too deep", bad(S::NOT_FOUND, "no route")),
        read(M::GET, "/books/", &[]).is("trailing slash", bad(S::NOT_FOUND, "no route")),
        read(M::GET, "//books", &[]).is("double slash", bad(S::NOT_FOUND, "no route")),
        read(M::GET, "/BOOKS", &[]).is("upper-case route", bad(S::NOT_FOUND, "no route")),
        write(M::PATCH, "/books/1", &[], json(VALID)).is("PATCH a book", bad(S::METHOD_NOT_ALLOWED, "method not allowed")),
        write(M::DELETE, "/books", &[], Body::None).is("DELETE the list", bad(S::METHOD_NOT_ALLOWED, "method not allowed")),
        write(M::PUT, "/books", &[], json(VALID)).is("PUT the list", bad(S::METHOD_NOT_ALLOWED, "method not allowed")),
        read(M::POST, "/healthz/ready", &[]).is("POST to a probe", bad(S::METHOD_NOT_ALLOWED, "method not allowed")),
        read(M::OPTIONS, "/books/1", &[]).is("OPTIONS", bad(S::METHOD_NOT_ALLOWED, "method not allowed")),
        read(custom, "/books", &[]).is("unknown method", bad(S::METHOD_NOT_ALLOWED, "method not allowed")),
    ]
}

#[rustfmt::skip]
fn header_cases() -> Vec<Case> {
    use Method as M;
    use StatusCode as S;
    let put = |extra: &[(&'static str, &[u8])]| write(M::PUT, "/books/1", extra, json(VALID));
    let bad_if_match = r#"If-Match must be "<version>" (quoted) or *"#;
    let no_token = "expected Bearer <token>";
    let huge = "9".repeat(8 * 1024);
    let no_auth = |value: &[u8]| Case {
        headers: vec![("authorization", value.to_vec())],
        ..read(M::POST, "/books", &[])
    };
    vec![
        put(&[("if-match", b"yesterday")]).is("If-Match garbage", bad(S::BAD_REQUEST, bad_if_match)),
        put(&[("if-match", b"1")]).is("If-Match unquoted", bad(S::BAD_REQUEST, bad_if_match)),
        put(&[("if-match", b"W/\"1\"")]).is("If-Match weak tag", bad(S::BAD_REQUEST, bad_if_match)),
        put(&[("if-match", b"\"\"")]).is("If-Match empty tag", bad(S::BAD_REQUEST, bad_if_match)),
        put(&[("if-match", b"\"-1\"")]).is("If-Match negative", bad(S::BAD_REQUEST, bad_if_match)),
        put(&[("if-match", b"\"0\"")]).is("If-Match zero", bad(S::BAD_REQUEST, bad_if_match)),
        put(&[("if-match", b"\"1.0\"")]).is("If-Match float", bad(S::BAD_REQUEST, bad_if_match)),
        put(&[("if-match", b"\"99999999999999999999\"")]).is("If-Match overflowing", bad(S::BAD_REQUEST, bad_if_match)),
        put(&[("if-match", b"\"1\", \"2\"")]).is("If-Match list", bad(S::BAD_REQUEST, bad_if_match)),
        put(&[("if-match", b"\"\xff\"")]).is("If-Match not UTF-8", bad(S::BAD_REQUEST, bad_if_match)),
        put(&[("if-match", format!("\"{huge}\"").as_bytes())]).is("If-Match 8 KiB", bad(S::BAD_REQUEST, bad_if_match)),
        put(&[("if-match", b"\"7\"")]).is("If-Match stale version", bad(S::PRECONDITION_FAILED, "current version 1")),
        no_auth(b"").is("Authorization empty", bad(S::UNAUTHORIZED, no_token)),
        no_auth(b"Bearer").is("Authorization scheme only", bad(S::UNAUTHORIZED, no_token)),
        no_auth(b"Basic dGVzdDp0ZXN0").is("Authorization Basic", bad(S::UNAUTHORIZED, no_token)),
        no_auth(b"Bearer \xff\xfe").is("Authorization not UTF-8", bad(S::UNAUTHORIZED, no_token)),
        no_auth(format!("Bearer {}", "t".repeat(16 * 1024)).as_bytes()).is("Authorization 16 KiB token", bad(S::FORBIDDEN, "wrong")),
        no_auth(format!("Bearer {TOKEN} extra").as_bytes()).is("Authorization token plus junk", bad(S::FORBIDDEN, "wrong")),
        read(M::GET, "/books/1", &[("x-request-id", b"\xff\xfe garbage")]).is("request id not UTF-8", Expect::Ok(S::OK)),
        read(M::GET, "/books/1", &[("x-request-id", "r".repeat(8 * 1024).as_bytes())]).is("request id 8 KiB", Expect::Ok(S::OK)),
        read(M::GET, "/books/1", &[("traceparent", b"00-zz-not-a-trace-01")]).is("traceparent garbage", Expect::Ok(S::OK)),
        read(M::GET, "/books/1", &[("content-type", b"\xff;;=/")]).is("content type garbage on a read", Expect::Ok(S::OK)),
        read(M::GET, "/books?limit=-1&limit=abc", &[]).is("bad and repeated page parameters", bad(S::BAD_REQUEST, "limit")),
        read(M::GET, "/books?after=-5", &[]).is("negative page start", bad(S::BAD_REQUEST, "after must be a book id")),
        read(M::GET, "/books?utm_source=x&%FF&limit=2", &[]).is("unknown query parameters", Expect::Ok(S::OK)),
    ]
}

/// Sends `case` and returns its failures (empty: the row passed).
async fn check(app: &TestApp, case: Case) -> anyhow::Result<Vec<String>> {
    let mut request = app.request(case.method.clone(), &case.path);
    for (name, value) in &case.headers {
        request = request.header(*name, reqwest::header::HeaderValue::from_bytes(value)?);
    }
    request = match case.body {
        Body::None => request,
        Body::Raw(Some(content_type), bytes) => {
            request.header("content-type", content_type).body(bytes)
        }
        Body::Raw(None, bytes) => request.body(bytes),
    };
    let response = request.send().await?;
    let status = response.status();
    let allow = response.headers().get("allow").cloned();
    let is_json = response
        .headers()
        .get("content-type")
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    let text = response.text().await?;
    let mut failures = vec![];
    let (want, error) = match case.expect {
        Expect::Error(status, error) => (status, Some(error)),
        Expect::Ok(status) => (status, None),
    };
    if status != want {
        failures.push(format!("status {status}, want {want}"));
    }
    if !is_json {
        failures.push("not JSON".to_owned());
    }
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    match (error, body.get("error").and_then(Value::as_str)) {
        (Some(want), Some(got)) if got.contains(want) => {}
        (Some(want), got) => failures.push(format!("error {got:?} lacks {want:?}")),
        (None, Some(got)) => failures.push(format!("unexpected error {got:?}")),
        (None, None) => {}
    }
    // Our errors are written by us: axum's rejection wording says nothing a client can act on.
    if let Some(got) = body
        .get("error")
        .and_then(Value::as_str)
        .filter(|got| got.contains("Failed to"))
    {
        failures.push(format!("error {got:?} is axum's wording, not ours"));
    }
    let allows_get = allow.is_some_and(|allow| allow.as_bytes().windows(3).any(|w| w == b"GET"));
    if status == StatusCode::METHOD_NOT_ALLOWED && !allows_get {
        failures.push("405 without `Allow` listing GET".to_owned());
    }
    Ok(failures)
}

/// Runs every row; returns one line per failing row, books and outbox checked after each.
async fn sweep(app: &TestApp, cases: Vec<Case>) -> anyhow::Result<Vec<String>> {
    let books_before: Value = app.list_books().await?.json().await?;
    let outbox_before = app.outbox_rows().await?;
    let mut report = vec![];
    for case in cases {
        let name = case.name;
        let mut failures = check(app, case).await?;
        let books_after: Value = app.list_books().await?.json().await?;
        if books_after != books_before {
            failures.push("the books changed".to_owned());
        }
        if app.outbox_rows().await? != outbox_before {
            failures.push("an event was emitted".to_owned());
        }
        if !failures.is_empty() {
            report.push(format!("{name}: {}", failures.join("; ")));
        }
    }
    Ok(report)
}

#[tokio::test]
async fn every_kind_of_bad_input_gets_its_status_and_json_error_and_changes_nothing()
-> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let cases: Vec<Case> = [
        body_cases(),
        id_cases(),
        route_and_method_cases(),
        header_cases(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let rows = cases.len();
    let report = sweep(&app, cases).await?;
    assert!(
        report.is_empty(),
        "{} of {rows} rows failed:\n{}",
        report.len(),
        report.join("\n")
    );
    app.stop().await
}

/// One request written byte for byte on a fresh connection; the answer's status line and body.
async fn raw_http(address: &str, request: &[u8]) -> anyhow::Result<(String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    stream.write_all(request).await?;
    let mut answer = vec![];
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await??;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok((status, body.to_owned()))
}

/// Rows that need bytes reqwest would never send: (name, request, status line, the JSON
/// `error` it must contain, or `None` for an empty body).
///
/// Most are refused by hyper while parsing the request head, before any router runs: it
/// answers the status itself with an empty body (not our JSON; nothing in axum can change
/// that). The body-level ones reach our extractors and get JSON.
type ProtocolCase = (&'static str, Vec<u8>, &'static str, Option<&'static str>);

#[rustfmt::skip]
fn protocol_cases() -> Vec<ProtocolCase> {
    let head = |lines: &str| format!("{lines}Host: x\r\nConnection: close\r\n\r\n").into_bytes();
    let post = |headers: &str, body: &str| {
        format!("POST /books HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n{headers}Connection: close\r\n\r\n{body}").into_bytes()
    };
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let huge = format!("x-request-id: {}\r\n", "r".repeat(500 * 1024));
    let chunk = "x".repeat(100 * 1024);
    let bad_request = "HTTP/1.1 400 Bad Request";
    vec![
        ("raw invalid UTF-8 in the path", b"GET /books/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), bad_request, None),
        ("control byte in a header", head("GET /books/1 HTTP/1.1\r\nx-a: \x01\r\n"), bad_request, None),
        ("non-numeric Content-Length", head("POST /books HTTP/1.1\r\nContent-Length: abc\r\n"), bad_request, None),
        ("two different Content-Lengths", post("Content-Length: 2\r\nContent-Length: 3\r\n", "{}"), bad_request, None),
        ("HTTP/0.9 request line", b"GET /books/1\r\n\r\n".to_vec(), bad_request, None),
        ("TLS bytes on the plain port", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(), bad_request, None),
        ("150 headers", head(&format!("GET /books/1 HTTP/1.1\r\n{many}")), "HTTP/1.1 431 Request Header Fields Too Large", None),
        ("500 KiB header", head(&format!("GET /books/1 HTTP/1.1\r\n{huge}")), "HTTP/1.1 431 Request Header Fields Too Large", None),
        ("malformed chunked body", post("Transfer-Encoding: chunked\r\n", "zz\r\n{}\r\n0\r\n\r\n"), bad_request, Some("the body could not be read")),
        ("chunked body over the limit", post("Transfer-Encoding: chunked\r\n", &format!("{:x}\r\n{chunk}\r\n0\r\n\r\n", chunk.len())), "HTTP/1.1 413 Payload Too Large", Some("larger than 65536 bytes")),
        ("Content-Length over the limit, body never sent", post("Content-Length: 99999999\r\n", "{}"), "HTTP/1.1 413 Payload Too Large", Some("larger than 65536 bytes")),
        ("Content-Length and chunked (chunked wins)", post("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", "2\r\n{}\r\n0\r\n\r\n"), "HTTP/1.1 422 Unprocessable Entity", Some("missing field `title`")),
    ]
}

#[tokio::test]
async fn malformed_http_gets_its_status_and_the_service_keeps_serving() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let mut report = vec![];
    for (name, request, want, error) in protocol_cases() {
        let (status, body) = match raw_http(&app.address, &request).await {
            Ok(answer) => answer,
            Err(err) => {
                report.push(format!("{name}: no answer: {err}"));
                continue;
            }
        };
        let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let body_ok = match error {
            None => body.is_empty(),
            Some(error) => json["error"]
                .as_str()
                .is_some_and(|got| got.contains(error)),
        };
        if status != want || !body_ok {
            report.push(format!(
                "{name}: {status:?} body {body:.100?}, want {want:?} {error:?}"
            ));
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
    assert_eq!(
        app.get_book(1).await?.status(),
        StatusCode::OK,
        "still serving"
    );
    assert_eq!(app.book_rows().await?, 2, "nothing written");
    app.stop().await
}

/// `x-request-id` goes into every log line of a request: a client may choose a short, plain
/// one, but a long or odd one is replaced by a fresh id.
#[tokio::test]
async fn an_overlong_or_odd_request_id_is_replaced_by_a_fresh_one() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let long = "a".repeat(1000);
    let cases = [
        ("abc-123_x.Y", true),
        (long.as_str(), false),
        ("has spaces", false),
        ("quote\"d", false),
    ];
    for (sent, kept) in cases {
        let response = app
            .request(Method::GET, "/books/1")
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
    app.stop().await
}
