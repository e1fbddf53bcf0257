//! Request ids made without a system call: a random prefix per process and a counter.
//!
//! tower-http's `MakeRequestUuid` asks the OS for randomness on every request (uuid without
//! its `fast-rng` feature), which on the cache-hit path cost more than the hit itself. Ids
//! only need to be unique enough to follow one read through the logs of both services.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderValue, Request};
use tower_http::request_id::{MakeRequestId, RequestId};

/// `<16 hex digits, random per process>-<counter in hex>`.
#[derive(Clone)]
pub struct SequentialIds {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl SequentialIds {
    pub fn new() -> SequentialIds {
        // std's hasher keys are random per process: a prefix without another dependency.
        let random = RandomState::new().hash_one(std::process::id());
        SequentialIds {
            prefix: Arc::from(format!("{random:016x}")),
            next: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl Default for SequentialIds {
    fn default() -> SequentialIds {
        SequentialIds::new()
    }
}

impl MakeRequestId for SequentialIds {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n:x}", self.prefix);
        HeaderValue::try_from(id).ok().map(RequestId::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_share_the_process_prefix() {
        let mut ids = SequentialIds::new();
        let request = Request::new(());
        let mut make = || {
            let id = ids.make_request_id(&request).expect("an id");
            id.header_value().to_str().expect("ASCII").to_owned()
        };
        let (first, second) = (make(), make());
        assert_ne!(first, second);
        assert_eq!(first.split('-').next(), second.split('-').next());
        assert_eq!(first.len(), 16 + 1 + 1, "{first}");
    }
}
