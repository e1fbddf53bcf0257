//! The typed client for storagesvc: one method per endpoint booksvc reads, statuses mapped
//! once to [`ClientError::NotFound`], [`ClientError::Transient`] or [`ClientError::Permanent`].
//!
//! The mapping decides two things for the layers above:
//! - retry ([`Retryable`]): only what can succeed on a second try — connect errors, timeouts,
//!   a connection cut mid-answer, 502/503/504, and 429 *with* `Retry-After`;
//! - the circuit breaker ([`ClientError::is_outage`]): did storagesvc fail, or did it answer?
//!   A 404 or any other 4xx is an answer, so it never trips the breaker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use tracing::{Instrument, Span};

use crate::book::Book;
use crate::paging::PageQuery;
use crate::retry::{Retryable, Verdict};
use crate::trace_context::{self, TraceHeaders};

/// The header that carries a request id from booksvc's client through to storagesvc's logs.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The W3C Trace Context headers sent with every call.
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// The header telling storagesvc how long this call will wait, in whole milliseconds.
pub const REQUEST_TIMEOUT_HEADER: &str = "x-request-timeout";

/// Why a call to storagesvc did not return the data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// storagesvc answered 404: the book does not exist. Not a failure.
    #[error("storagesvc has no such book")]
    NotFound,
    /// storagesvc could not answer now; another attempt may succeed.
    #[error("storagesvc unavailable: {reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Another attempt would fail the same way. `status` is the HTTP status, if any.
    #[error("storagesvc call failed: {reason}")]
    Permanent {
        reason: String,
        status: Option<StatusCode>,
    },
}

impl ClientError {
    /// Whether this says storagesvc is unhealthy (counts as a breaker failure): every
    /// transient error, a 5xx, or an answer we cannot read; not a 404 or another 4xx.
    pub fn is_outage(&self) -> bool {
        match self {
            ClientError::NotFound => false,
            ClientError::Transient { .. } => true,
            ClientError::Permanent { status, .. } => status.is_none_or(|s| s.is_server_error()),
        }
    }
}

impl Retryable for ClientError {
    fn verdict(&self) -> Verdict {
        match self {
            ClientError::Transient { retry_after, .. } => Verdict::Retry {
                after: *retry_after,
            },
            ClientError::NotFound | ClientError::Permanent { .. } => Verdict::GiveUp,
        }
    }
}

/// storagesvc's read API.
#[derive(Debug, Clone)]
pub struct StorageClient {
    http: reqwest::Client,
    base: Url,
    attempt_timeout: Duration,
    /// The last readiness answer and when it came, shared by [`StorageClient::ready_shared`].
    last_ready: Arc<tokio::sync::Mutex<Option<ReadyAnswer>>>,
}

/// A readiness answer from storagesvc and when it came.
type ReadyAnswer = (Instant, Result<(), ClientError>);

impl StorageClient {
    /// `attempt_timeout` bounds one HTTP attempt; callers pass a shorter one when less of the
    /// request budget is left.
    pub fn new(base_url: &str, attempt_timeout: Duration) -> Result<StorageClient, String> {
        let mut base =
            Url::parse(base_url).map_err(|e| format!("invalid URL {base_url:?}: {e}"))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(format!(
                "invalid URL {base_url:?}: expected http://host:port"
            ));
        }
        // Paths are joined relative to the base: keep a base path such as `/storage`.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            // A dead host must fail fast: the breaker and the cache fallback take over.
            .connect_timeout(attempt_timeout)
            // Below storagesvc's HTTP_HEADER_READ_TIMEOUT (10 s by default), which closes
            // idle connections: we drop ours first rather than race its close.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(StorageClient {
            http,
            base,
            attempt_timeout,
            last_ready: Arc::default(),
        })
    }

    /// `GET /books/{id}`.
    pub async fn get_book(
        &self,
        id: i64,
        request_id: Option<&str>,
        time_left: Duration,
    ) -> Result<Book, ClientError> {
        self.get_json(&format!("books/{id}"), request_id, time_left)
            .await
    }

    /// `GET /books?limit=N&after=ID`: one page, ordered by id.
    pub async fn list_page(
        &self,
        page: PageQuery,
        request_id: Option<&str>,
        time_left: Duration,
    ) -> Result<Vec<Book>, ClientError> {
        let path = format!("books?limit={}&after={}", page.limit, page.after);
        self.get_json(&path, request_id, time_left).await
    }

    /// `GET /healthz/ready`: used by the breaker's active probe.
    pub async fn ready(&self, time_left: Duration) -> Result<(), ClientError> {
        let response = self.send("healthz/ready", None, time_left).await?;
        match response.status() {
            StatusCode::OK => Ok(()),
            status => Err(classify_status(status, response.headers())),
        }
    }

    /// [`StorageClient::ready`], one call at a time, its answer reused for `reuse`: for
    /// readiness probes, which may come in bursts.
    pub async fn ready_shared(
        &self,
        time_left: Duration,
        reuse: Duration,
    ) -> Result<(), ClientError> {
        let started = Instant::now();
        let Ok(mut last) = tokio::time::timeout(time_left, self.last_ready.lock()).await else {
            return Err(ClientError::Transient {
                reason: "timed out".to_owned(),
                retry_after: None,
            });
        };
        if let Some((at, answer)) = last.as_ref() {
            if at.elapsed() < reuse {
                return answer.clone();
            }
        }
        let answer = self
            .ready(time_left.saturating_sub(started.elapsed()))
            .await;
        *last = Some((Instant::now(), answer.clone()));
        answer
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        request_id: Option<&str>,
        time_left: Duration,
    ) -> Result<T, ClientError> {
        let response = self.send(path, request_id, time_left).await?;
        if response.status() != StatusCode::OK {
            return Err(classify_status(response.status(), response.headers()));
        }
        let body = response.bytes().await.map_err(transport_error)?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Permanent {
            reason: format!("unreadable answer: {e}"),
            status: None,
        })
    }

    async fn send(
        &self,
        path: &str,
        request_id: Option<&str>,
        time_left: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        let url = self.base.join(path).map_err(|e| ClientError::Permanent {
            reason: format!("bad path {path:?}: {e}"),
            status: None,
        })?;
        let span = client_span(&url);
        let timeout = self.attempt_timeout.min(time_left);
        // storagesvc stops working on the call (pool wait, statements) when we stop waiting.
        let mut request = self
            .http
            .get(url)
            .timeout(timeout)
            .header(REQUEST_TIMEOUT_HEADER, timeout.as_millis().to_string());
        if let Some(id) = request_id {
            request = request.header(REQUEST_ID_HEADER, id);
        }
        // storagesvc's span for this call is a child of ours, in the reader's trace.
        let trace = TraceHeaders::of(&span);
        for (name, value) in [
            (TRACEPARENT, trace.traceparent),
            (TRACESTATE, trace.tracestate),
        ] {
            if let Some(value) = value {
                request = request.header(name, value);
            }
        }
        let answer = request.send().instrument(span.clone()).await;
        match &answer {
            Ok(response) => trace_context::record_http_status(&span, response.status()),
            Err(_) => trace_context::record_error(&span, "transport"),
        }
        answer.map_err(transport_error)
    }
}

/// The span of one call, per the OpenTelemetry conventions for HTTP clients (named by its
/// method; the URL is ours, built from `STORAGESVC_URL` and a book id or page, without any
/// credentials it may hold).
fn client_span(url: &Url) -> Span {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    let span = tracing::info_span!(
        "storagesvc_call",
        otel.name = "GET",
        otel.kind = "client",
        http.request.method = "GET",
        server.address = url.host_str().unwrap_or_default(),
        server.port = url.port_or_known_default(),
        url.full = shown.as_str(),
    );
    // Lines logged inside the call carry its ids like the request's lines do.
    trace_context::record_ids(&span);
    span
}

/// Maps a non-200 status once, for every endpoint.
fn classify_status(status: StatusCode, headers: &HeaderMap) -> ClientError {
    let retry_after = retry_after(headers);
    let reason = format!("status {status}");
    match status {
        StatusCode::NOT_FOUND => ClientError::NotFound,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
            ClientError::Transient {
                reason,
                retry_after,
            }
        }
        // Rate limited: worth retrying only when the server says when.
        StatusCode::TOO_MANY_REQUESTS if retry_after.is_some() => ClientError::Transient {
            reason,
            retry_after,
        },
        _ => ClientError::Permanent {
            reason,
            status: Some(status),
        },
    }
}

/// Connect errors, timeouts and connections cut mid-answer are worth another attempt.
fn transport_error(error: reqwest::Error) -> ClientError {
    let reason = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "cannot connect".to_owned()
    } else {
        format!("transport error: {error}")
    };
    ClientError::Transient {
        reason,
        retry_after: None,
    }
}

/// The longest `Retry-After` taken at its word: far beyond any request budget (so it means
/// "not for this request" either way), and small enough to add to an `Instant`.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After` in seconds (the HTTP-date form is not used by our services), capped at
/// [`MAX_RETRY_AFTER`]: it comes from the network.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    let seconds = value.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(retry_after: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn statuses_map_once_to_not_found_transient_or_permanent() {
        // (status, Retry-After, expected verdict, counts as outage)
        let cases = [
            (404, None, Verdict::GiveUp, false),
            (400, None, Verdict::GiveUp, false),
            (409, None, Verdict::GiveUp, false),
            (429, None, Verdict::GiveUp, false),
            (
                429,
                Some("1"),
                Verdict::Retry {
                    after: Some(Duration::from_secs(1)),
                },
                true,
            ),
            (500, None, Verdict::GiveUp, true),
            (502, None, Verdict::Retry { after: None }, true),
            (
                503,
                Some("2"),
                Verdict::Retry {
                    after: Some(Duration::from_secs(2)),
                },
                true,
            ),
            (503, Some("garbage"), Verdict::Retry { after: None }, true),
            (504, None, Verdict::Retry { after: None }, true),
        ];
        for (status, after, verdict, outage) in cases {
            let error = classify_status(StatusCode::from_u16(status).unwrap(), &headers(after));
            assert_eq!(
                error.verdict(),
                verdict,
                "status {status} with Retry-After {after:?}"
            );
            assert_eq!(error.is_outage(), outage, "status {status}: outage?");
        }
    }

    #[test]
    fn a_huge_retry_after_is_capped() {
        let error = classify_status(
            StatusCode::SERVICE_UNAVAILABLE,
            &headers(Some("18446744073709551615")),
        );
        // Capped at an hour: far beyond any request budget, and safe to add to an `Instant`.
        assert_eq!(
            error.verdict(),
            Verdict::Retry {
                after: Some(Duration::from_secs(3600))
            }
        );
    }

    #[test]
    fn not_found_is_neither_retried_nor_an_outage() {
        let error = classify_status(StatusCode::NOT_FOUND, &HeaderMap::new());
        assert_eq!(error, ClientError::NotFound);
        assert!(!error.is_outage());
    }

    #[test]
    fn rejects_base_urls_that_are_not_http() {
        assert!(StorageClient::new("localhost:8082", Duration::from_secs(1)).is_err());
        assert!(StorageClient::new("ftp://x", Duration::from_secs(1)).is_err());
        assert!(StorageClient::new("http://localhost:8082", Duration::from_secs(1)).is_ok());
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient() {
        // Bind then drop a listener: the port is closed, connect is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client =
            StorageClient::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(1))
                .unwrap();
        let error = client
            .get_book(1, None, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(error, ClientError::Transient { .. }), "{error:?}");
        assert!(error.is_outage());
    }
}
