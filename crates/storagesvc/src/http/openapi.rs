//! The OpenAPI 3.1 description of the API, generated from the handlers' `#[utoipa::path]`
//! attributes, and served at `GET /openapi.json`.
//!
//! [`routes()`] registers every documented handler once, through `utoipa-axum`, so a route
//! cannot exist without its description (or the other way round). A copy is checked in as
//! `docs/openapi/storagesvc.json`; a test fails when it is stale.

use std::sync::LazyLock;

use axum::Json;
use serde::Serialize;
use utoipa::openapi::OpenApi as Description;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, books, health, scrape};

/// Every documented route with its handler; [`super::router`] adds the middleware.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(Header::openapi())
        .routes(routes!(books::list_books, books::create_book))
        .routes(routes!(
            books::get_book,
            books::update_book,
            books::delete_book
        ))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(scrape::render))
        .routes(routes!(openapi_json))
}

/// The description, as `GET /openapi.json` serves it.
pub fn description() -> Description {
    routes().into_openapi()
}

/// What the description says about the service as a whole.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "storagesvc",
        description = "Owns the books in PostgreSQL. Every write commits its book-changed event \
                       in the same transaction (a transactional outbox); a relay publishes it to \
                       RabbitMQ. Writes need `Authorization: Bearer <STORAGESVC_WRITE_TOKEN>`.",
    ),
    components(schemas(ErrorBody)),
    modifiers(&WriteToken),
    tags((name = "books", description = "The books"), (name = "operations", description = "Probes, metrics and this description"))
)]
struct Header;

/// Adds the bearer scheme the write routes name in their `security`.
struct WriteToken;

impl Modify for WriteToken {
    fn modify(&self, description: &mut Description) {
        let components = description.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "write_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Every error answer: `{"error": "<what went wrong and what to do>"}`, plus a field for the
/// errors that carry one.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A sentence for a human: what was wrong and, where it helps, what to do.
    pub error: String,
    /// 412 only: the stored version, so the client can re-read and retry.
    #[schema(minimum = 1)]
    pub current_version: Option<i64>,
    /// 413 only: `BODY_LIMIT`.
    pub limit_bytes: Option<usize>,
}

/// `GET /openapi.json`: this description.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 description of storagesvc", content_type = "application/json"))
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

    /// `docs/openapi/storagesvc.json`, from the repository root.
    fn checked_in() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi/storagesvc.json")
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
}
