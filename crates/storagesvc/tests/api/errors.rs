//! Bad input answers a fitting 4xx with a JSON error and writes nothing.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{TOKEN, TestApp, assert_json_error, book_body};

/// What a case sends as its body.
enum Body {
    None,
    /// Serialised JSON with `Content-Type: application/json`.
    Json(serde_json::Value),
    /// Raw bytes with the given content type (`None`: no Content-Type header).
    Raw(Option<&'static str>, Vec<u8>),
}

struct Case {
    name: &'static str,
    method: Method,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: Body,
    status: StatusCode,
}

const BEARER: &[(&str, &str)] = &[("authorization", "Bearer test-write-token")];

fn case(
    name: &'static str,
    method: Method,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: Body,
    status: StatusCode,
) -> Case {
    Case {
        name,
        method,
        path,
        headers,
        body,
        status,
    }
}

fn valid() -> Body {
    Body::Json(book_body("T", "A", "D"))
}

#[rustfmt::skip]
fn input_cases() -> Vec<Case> {
    use StatusCode as S;
    let long = |n: usize| "x".repeat(n);
    vec![
        case("malformed JSON", Method::POST, "/books", BEARER, Body::Raw(Some("application/json"), b"{\"title\":".to_vec()), S::BAD_REQUEST),
        case("no content type", Method::POST, "/books", BEARER, Body::Raw(None, br#"{"title":"T","author":"A","desc":""}"#.to_vec()), S::UNSUPPORTED_MEDIA_TYPE),
        case("text content type", Method::POST, "/books", BEARER, Body::Raw(Some("text/plain"), br#"{"title":"T","author":"A","desc":""}"#.to_vec()), S::UNSUPPORTED_MEDIA_TYPE),
        case("missing desc", Method::POST, "/books", BEARER, Body::Json(json!({"title": "T", "author": "A"})), S::UNPROCESSABLE_ENTITY),
        case("empty title", Method::POST, "/books", BEARER, Body::Json(book_body("", "A", "")), S::UNPROCESSABLE_ENTITY),
        case("blank author", Method::PUT, "/books/1", BEARER, Body::Json(book_body("T", "   ", "")), S::UNPROCESSABLE_ENTITY),
        case("title over 200 chars", Method::POST, "/books", BEARER, Body::Json(book_body(&long(201), "A", "")), S::UNPROCESSABLE_ENTITY),
        case("desc over 2000 chars", Method::POST, "/books", BEARER, Body::Json(book_body("T", "A", &long(2001))), S::UNPROCESSABLE_ENTITY),
        case("NUL in title", Method::POST, "/books", BEARER, Body::Json(book_body("a\u{0}b", "A", "")), S::UNPROCESSABLE_ENTITY),
        case("unknown field", Method::POST, "/books", BEARER, Body::Json(json!({"title": "T", "author": "A", "desc": "", "version": 9})), S::UNPROCESSABLE_ENTITY),
        case("wrong field type", Method::POST, "/books", BEARER, Body::Json(json!({"title": 5, "author": "A", "desc": ""})), S::UNPROCESSABLE_ENTITY),
        case("array body", Method::POST, "/books", BEARER, Body::Json(json!([1, 2])), S::UNPROCESSABLE_ENTITY),
        case("body over the limit", Method::POST, "/books", BEARER, Body::Json(book_body("T", "A", &long(100 * 1024))), S::PAYLOAD_TOO_LARGE),
    ]
}

#[rustfmt::skip]
fn path_and_header_cases() -> Vec<Case> {
    use StatusCode as S;
    vec![
        case("non-numeric id", Method::GET, "/books/abc", &[], Body::None, S::BAD_REQUEST),
        case("fractional id", Method::GET, "/books/1.5", &[], Body::None, S::BAD_REQUEST),
        case("negative id", Method::PUT, "/books/-1", BEARER, valid(), S::BAD_REQUEST),
        case("zero id", Method::DELETE, "/books/0", BEARER, Body::None, S::BAD_REQUEST),
        case("overflowing id", Method::GET, "/books/99999999999999999999", &[], Body::None, S::BAD_REQUEST),
        case("absent book read", Method::GET, "/books/999", &[], Body::None, S::NOT_FOUND),
        case("absent book update", Method::PUT, "/books/999", BEARER, valid(), S::NOT_FOUND),
        case("absent book delete", Method::DELETE, "/books/999", BEARER, Body::None, S::NOT_FOUND),
        case("garbage If-Match", Method::PUT, "/books/1", &[("authorization", "Bearer test-write-token"), ("if-match", "yesterday")], valid(), S::BAD_REQUEST),
        case("unquoted If-Match", Method::PUT, "/books/1", &[("authorization", "Bearer test-write-token"), ("if-match", "1")], valid(), S::BAD_REQUEST),
        case("stale If-Match update", Method::PUT, "/books/1", &[("authorization", "Bearer test-write-token"), ("if-match", "\"7\"")], valid(), S::PRECONDITION_FAILED),
        case("stale If-Match delete", Method::DELETE, "/books/1", &[("authorization", "Bearer test-write-token"), ("if-match", "\"7\"")], Body::None, S::PRECONDITION_FAILED),
        case("unknown route", Method::GET, "/authors", &[], Body::None, S::NOT_FOUND),
        case("route too deep", Method::GET, "/books/1/pages", &[], Body::None, S::NOT_FOUND),
        case("PATCH a book", Method::PATCH, "/books/1", BEARER, valid(), S::METHOD_NOT_ALLOWED),
        case("DELETE the list", Method::DELETE, "/books", BEARER, Body::None, S::METHOD_NOT_ALLOWED),
        case("POST to a probe", Method::POST, "/healthz/live", &[], Body::None, S::METHOD_NOT_ALLOWED),
    ]
}

#[rustfmt::skip]
fn auth_cases() -> Vec<Case> {
    use StatusCode as S;
    vec![
        case("create without token", Method::POST, "/books", &[], valid(), S::UNAUTHORIZED),
        case("update without token", Method::PUT, "/books/1", &[], valid(), S::UNAUTHORIZED),
        case("delete without token", Method::DELETE, "/books/1", &[], Body::None, S::UNAUTHORIZED),
        case("basic auth", Method::POST, "/books", &[("authorization", "Basic dGVzdDp0ZXN0")], valid(), S::UNAUTHORIZED),
        case("bearer without token", Method::POST, "/books", &[("authorization", "Bearer ")], valid(), S::UNAUTHORIZED),
        case("wrong token", Method::POST, "/books", &[("authorization", "Bearer test-write-tokeN")], valid(), S::FORBIDDEN),
        case("token prefix", Method::DELETE, "/books/1", &[("authorization", "Bearer test-write")], Body::None, S::FORBIDDEN),
        // Checks run in order token → id → body: a bad body without a token is still a 401.
        case("no token and bad body", Method::POST, "/books", &[], Body::Raw(Some("application/json"), b"{".to_vec()), S::UNAUTHORIZED),
    ]
}

/// Sends each case and checks its status and JSON error, and that nothing was written.
async fn run_cases(app: &TestApp, cases: Vec<Case>) -> anyhow::Result<()> {
    let books_before: serde_json::Value = app.list_books().await?.json().await?;
    let outbox_before = app.outbox_rows().await?;
    for case in cases {
        let mut request = app.request(case.method.clone(), case.path);
        for (name, value) in case.headers {
            request = request.header(*name, *value);
        }
        request = match case.body {
            Body::None => request,
            Body::Json(value) => request.json(&value),
            Body::Raw(Some(content_type), bytes) => {
                request.header("content-type", content_type).body(bytes)
            }
            Body::Raw(None, bytes) => request.body(bytes),
        };
        let response = request.send().await?;

        assert_eq!(response.status(), case.status, "case {:?}", case.name);
        if case.status == StatusCode::UNAUTHORIZED {
            assert_eq!(
                response.headers()["www-authenticate"],
                "Bearer",
                "case {:?}",
                case.name
            );
        }
        assert_json_error(response, case.name).await;
        let books_after: serde_json::Value = app.list_books().await?.json().await?;
        assert_eq!(
            books_after, books_before,
            "case {:?} changed a book",
            case.name
        );
        assert_eq!(
            app.outbox_rows().await?,
            outbox_before,
            "case {:?} emitted an event",
            case.name
        );
    }
    Ok(())
}

#[tokio::test]
async fn bad_bodies_get_a_json_4xx_and_write_nothing() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    run_cases(&app, input_cases()).await?;
    app.stop().await
}

#[tokio::test]
async fn bad_paths_headers_and_methods_get_a_json_4xx_and_write_nothing() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    run_cases(&app, path_and_header_cases()).await?;
    app.stop().await
}

#[tokio::test]
async fn writes_without_the_right_token_are_refused_and_write_nothing() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    assert_eq!(TOKEN, "test-write-token", "the cases spell the token out");
    run_cases(&app, auth_cases()).await?;
    app.stop().await
}

#[tokio::test]
async fn every_write_is_refused_with_a_reason_when_no_token_is_configured() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(|settings| settings.write_token = None).await?;

    let responses = [
        app.create_book(&book_body("T", "A", "")).await?,
        app.update_book(1, &book_body("T", "A", ""), None).await?,
        app.delete_book(1).await?,
    ];

    for response in responses {
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = assert_json_error(response, "writes disabled").await;
        let message = body["error"].as_str().unwrap_or_default();
        assert!(
            message.contains("STORAGESVC_WRITE_TOKEN is not set"),
            "says why: {message}"
        );
    }
    assert_eq!(app.book_rows().await?, 2);
    assert_eq!(
        app.list_books().await?.status(),
        StatusCode::OK,
        "reads still work"
    );
    app.stop().await
}
