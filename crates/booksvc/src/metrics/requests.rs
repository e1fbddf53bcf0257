//! The HTTP series, `<service>_http_requests_total` and `<service>_http_request_duration_seconds`,
//! with bounded labels and handles resolved once.
//!
//! - **Bounded labels.** hyper accepts any token as a method, so a client could mint a new
//!   series per request: methods outside [`METHODS`] are recorded as `other`. The route is the
//!   matched template (`/books/{id}`), or `unmatched`, never the raw path.
//! - **Cheap.** A request records through a table of pre-resolved handles (route × method ×
//!   status), filled on first use: no label strings built and no registry look-up per request.
//!   A status outside `STATUSES` or a route missing from the table takes the slow path (the
//!   registry), still with bounded labels.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use metrics::{Counter, Histogram};

/// Methods recorded by name; any other is `other`.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];
const OTHER_METHOD: &str = "other";
/// The route label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";
/// Statuses with a pre-resolved slot; others are recorded through the registry.
/// (The same file serves both services: the union of what they answer.)
const STATUSES: [(u16, &str); 15] = [
    (200, "200"),
    (201, "201"),
    (204, "204"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (405, "405"),
    (409, "409"),
    (412, "412"),
    (413, "413"),
    (415, "415"),
    (422, "422"),
    (500, "500"),
    (503, "503"),
];

/// One label set's handles.
struct Series {
    requests: Counter,
    duration: Histogram,
}

/// The HTTP series of one router. Its handles bind to the recorder in force when each slot is
/// first used (a request), so build it with the router.
pub struct HttpMetrics {
    requests_name: &'static str,
    duration_name: &'static str,
    routes: &'static [&'static str],
    slots: Box<[OnceLock<Series>]>,
}

impl HttpMetrics {
    /// The series named `requests_name`/`duration_name` for a router serving `routes`.
    pub fn new(
        requests_name: &'static str,
        duration_name: &'static str,
        routes: &'static [&'static str],
    ) -> HttpMetrics {
        let slots = (routes.len() + 1) * (METHODS.len() + 1) * STATUSES.len();
        HttpMetrics {
            requests_name,
            duration_name,
            routes,
            slots: (0..slots).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Records one answered request; `route` is the matched template, if any.
    pub fn record(
        &self,
        method: &Method,
        route: Option<&str>,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let method = method_index(method);
        let route_at = route.map_or(Some(self.routes.len()), |template| {
            self.routes.iter().position(|known| *known == template)
        });
        let status_at = STATUSES
            .iter()
            .position(|(code, _)| *code == status.as_u16());
        let (Some(route), Some(status_at)) = (route_at, status_at) else {
            return self.record_slowly(method, route.unwrap_or(UNMATCHED), status, elapsed);
        };
        let slot = (route * (METHODS.len() + 1) + method) * STATUSES.len() + status_at;
        let series = self.slots[slot].get_or_init(|| {
            let labels = [
                ("method", method_label(method)),
                ("route", self.route_label(route)),
                ("status", STATUSES[status_at].1),
            ];
            Series {
                requests: metrics::counter!(self.requests_name, &labels),
                duration: metrics::histogram!(self.duration_name, &labels),
            }
        });
        series.requests.increment(1);
        series.duration.record(elapsed.as_secs_f64());
    }

    /// A status or route without a slot: the registry, with the same bounded labels.
    #[cold]
    fn record_slowly(&self, method: usize, route: &str, status: StatusCode, elapsed: Duration) {
        // `route` is a template (finitely many) or `unmatched`, never a raw path.
        let labels = [
            ("method", method_label(method).to_owned()),
            ("route", route.to_owned()),
            ("status", status.as_u16().to_string()),
        ];
        metrics::counter!(self.requests_name, &labels).increment(1);
        metrics::histogram!(self.duration_name, &labels).record(elapsed.as_secs_f64());
    }

    fn route_label(&self, route: usize) -> &'static str {
        self.routes.get(route).copied().unwrap_or(UNMATCHED)
    }
}

/// The method's index in [`METHODS`], or `METHODS.len()` for `other`.
fn method_index(method: &Method) -> usize {
    let name = method.as_str();
    METHODS
        .iter()
        .position(|known| *known == name)
        .unwrap_or(METHODS.len())
}

fn method_label(index: usize) -> &'static str {
    METHODS.get(index).copied().unwrap_or(OTHER_METHOD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_fixed_set_are_other() {
        let cases = [
            (Method::GET, "GET"),
            (Method::PATCH, "PATCH"),
            (Method::CONNECT, "other"),
            (Method::TRACE, "other"),
            (Method::from_bytes(b"BREW").unwrap(), "other"),
            (Method::from_bytes(b"get").unwrap(), "other"),
        ];
        for (method, label) in cases {
            assert_eq!(method_label(method_index(&method)), label, "{method}");
        }
    }
}
