//! The OpenAPI 3.1 description of the API, generated from the handlers' `#[utoipa::path]`
//! attributes, and served at `GET /openapi.json`.
//!
//! [`routes()`] registers every documented handler once, through `utoipa-axum`, so a route
//! cannot exist without its description (or the other way round). What every answer has in
//! common, `X-Request-Id`, is added to each operation by [`with_request_ids`] rather than
//! repeated in every attribute. A copy is checked in as `docs/openapi/booksvc.json`; a test
//! fails when it is stale.

use std::sync::LazyLock;

use axum::Json;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{HeaderBuilder, OpenApi as Description, RefOr, Required};
use utoipa::{OpenApi, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, ErrorBody, books, health, scrape};
use crate::client::REQUEST_ID_HEADER;

/// Every documented route with its handler; `books` is [`books::router`] (the book routes
/// with their own state) or, for the description alone, their description. [`super::router`]
/// adds the fallbacks and the middleware.
pub(super) fn routes(books: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(Header::openapi())
        .merge(books)
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(scrape::render))
        .routes(routes!(openapi_json))
}

/// The description, as `GET /openapi.json` serves it.
pub fn description() -> Description {
    // The book routes' state is a read path, which only serving needs: their description
    // alone stands in for them.
    let books = OpenApiRouter::with_openapi(books::routes().into_openapi());
    with_request_ids(routes(books).into_openapi())
}

/// What the description says about the service as a whole.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "booksvc",
        description = "What clients read from: storagesvc's books through a Redis cache of the \
                       last good data, a circuit breaker and retries within a per-request budget \
                       (`REQUEST_BUDGET`). It only reads: any other method than GET and HEAD is a \
                       405, and writes go to storagesvc. Book answers say where they came from \
                       (`X-Cache`, `Cache-Status`, `Age`); with storagesvc down, cached books are \
                       served `stale`, and a read with nothing cached is a 503 with `Retry-After`. \
                       No input gets a 500.",
    ),
    components(schemas(ErrorBody)),
    tags((name = "books", description = "The books, read through the cache"), (name = "operations", description = "Probes, metrics and this description"))
)]
struct Header;

/// `X-Cache`: where a book answer came from.
#[derive(Debug, Clone, Copy, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum XCache {
    /// A fresh cache entry; storagesvc was not asked.
    Hit,
    /// Fetched from storagesvc now, and cached.
    Miss,
    /// storagesvc could not answer in time: the last known good data.
    Stale,
}

/// `Cache-Status` (RFC 9211), in the forms booksvc sends (`crate::http::cache_headers`).
#[derive(Debug, Clone, Copy)]
pub struct CacheStatus;

impl CacheStatus {
    /// Every value booksvc sends matches it: `hit` with the freshness left, `fwd=miss` or
    /// `fwd=stale` (`; collapsed` when the read shared another's call), or a stale answer's
    /// `ttl` (negative) and why storagesvc was not heard.
    pub const PATTERN: &str = "^booksvc; (hit; ttl=-?[0-9]+(; detail=circuit-open)?\
        |fwd=(miss|stale)(; collapsed)?\
        |fwd=stale; ttl=-?[0-9]+; detail=(upstream-failed|soft-timeout|trial-in-flight))$";
}

impl PartialSchema for CacheStatus {
    fn schema() -> RefOr<Schema> {
        let pattern = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(CacheStatus::PATTERN));
        RefOr::T(Schema::Object(pattern.build()))
    }
}

impl ToSchema for CacheStatus {}

/// `Link` on a full page: the next page, relative (`crate::paging::PageQuery::next_link`).
#[derive(Debug, Clone, Copy)]
pub struct NextLink;

impl NextLink {
    /// `</books?limit=N&after=ID>; rel="next"`.
    pub const PATTERN: &str = r#"^</books\?limit=[0-9]+&after=[0-9]+>; rel="next"$"#;
}

impl PartialSchema for NextLink {
    fn schema() -> RefOr<Schema> {
        let pattern = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(NextLink::PATTERN));
        RefOr::T(Schema::Object(pattern.build()))
    }
}

impl ToSchema for NextLink {}

/// Adds what every answer of every operation has in common: the request id, accepted from
/// the client and sent back.
fn with_request_ids(mut description: Description) -> Description {
    for item in description.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            add_request_id(operation);
        }
    }
    description
}

fn add_request_id(operation: &mut Operation) {
    let parameter = ParameterBuilder::new()
        .name(REQUEST_ID_HEADER)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .schema(Some(String::schema()))
        .description(Some(
            "Follows the request through booksvc's and storagesvc's logs. Used when it is 1 to \
             128 characters of `[A-Za-z0-9._-]`; any other value is replaced by a generated one",
        ))
        .build();
    operation
        .parameters
        .get_or_insert_with(Vec::new)
        .push(parameter.into());
    for response in operation.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            let header = HeaderBuilder::new()
                .schema(Some(String::schema()))
                .description(Some(
                    "The request's `x-request-id` when it was usable, a generated one otherwise",
                ))
                .build();
            response
                .headers
                .insert("X-Request-Id".to_owned(), header.into());
        }
    }
}

/// `GET /openapi.json`: this description.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 description of booksvc", content_type = "application/json"))
)]
pub(super) async fn openapi_json() -> Json<&'static Description> {
    // Built once, on the first request: the description never changes while the process runs.
    static DESCRIPTION: LazyLock<Description> = LazyLock::new(description);
    Json(&DESCRIPTION)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// `docs/openapi/booksvc.json`, from the repository root.
    fn checked_in() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi/booksvc.json")
    }

    fn rendered() -> String {
        let json = description()
            .to_pretty_json()
            .expect("the description serialises");
        format!("{json}\n")
    }

    #[test]
    fn the_checked_in_description_is_the_generated_one() {
        let path = checked_in();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, rendered()).expect("write the description");
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == rendered(),
            "{} is stale: regenerate it with \
             `UPDATE_OPENAPI=1 cargo test --workspace --lib -- checked_in_description`",
            path.display()
        );
    }

    #[test]
    fn the_description_is_openapi_3_1_and_its_paths_are_the_metric_routes() {
        let description = description();
        let json = serde_json::to_value(&description).expect("serialises");
        assert!(
            json["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "{}",
            json["openapi"]
        );
        let mut paths: Vec<&str> = description.paths.paths.keys().map(String::as_str).collect();
        let mut routes = super::super::ROUTES.to_vec();
        paths.sort_unstable();
        routes.sort_unstable();
        assert_eq!(paths, routes);
    }

    #[test]
    fn every_cache_status_booksvc_sends_matches_the_described_pattern() {
        // Every form `cache_headers` makes: a new form must widen the pattern.
        use std::time::Duration;

        use crate::service::{FetchFailure, Source};

        let secs = Duration::from_secs;
        let sources = [
            Source::Fresh { age: secs(1) },
            Source::Fresh { age: secs(0) },
            Source::Upstream {
                refreshed: false,
                collapsed: false,
            },
            Source::Upstream {
                refreshed: true,
                collapsed: true,
            },
            Source::Upstream {
                refreshed: false,
                collapsed: true,
            },
            Source::Stale {
                age: secs(9),
                why: FetchFailure::CircuitOpen { retry_after: None },
            },
            Source::Stale {
                age: secs(5),
                why: FetchFailure::TrialInFlight,
            },
            Source::Stale {
                age: secs(7),
                why: FetchFailure::SoftTimeout { waited: secs(0) },
            },
            Source::Stale {
                age: secs(8),
                why: FetchFailure::Upstream {
                    reason: "down".to_owned(),
                },
            },
        ];
        // Read by a JSON Schema validator, as clients and schemathesis read it.
        let schema = serde_json::to_value(CacheStatus::schema()).expect("serialises");
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        let matches_pattern = |value: &str| validator.is_valid(&serde_json::json!(value));
        for source in sources {
            let headers = super::super::cache_headers(&source, secs(5));
            let status = headers[super::super::CACHE_STATUS].to_str().expect("ASCII");
            assert!(matches_pattern(status), "{status:?} ({source:?})");
        }
        for wrong in [
            "booksvc; miss",
            "other; hit; ttl=1",
            "booksvc; fwd=stale; detail=x",
        ] {
            assert!(!matches_pattern(wrong), "{wrong:?}");
        }
    }

    #[test]
    fn every_next_link_matches_the_described_pattern() {
        use crate::paging::PageQuery;

        let schema = serde_json::to_value(NextLink::schema()).expect("serialises");
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        let pages = [(1, 0, 1), (100, 7, 107), (1000, i64::MAX - 1000, i64::MAX)];
        for (limit, after, last_id) in pages {
            let page = PageQuery { limit, after };
            let link = page
                .next_link(limit as usize, Some(last_id))
                .expect("a full page");
            assert!(validator.is_valid(&serde_json::json!(link)), "{link:?}");
        }
        assert!(!validator.is_valid(&serde_json::json!("</books?limit=1>; rel=\"next\"")));
    }
}
