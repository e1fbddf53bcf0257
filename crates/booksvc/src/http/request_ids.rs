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
    prefix: [u8; PREFIX_LEN],
    next: Arc<AtomicU64>,
}

const PREFIX_LEN: usize = 16;
const HEX: &[u8; 16] = b"0123456789abcdef";

impl SequentialIds {
    pub fn new() -> SequentialIds {
        // std's hasher keys are random per process: a prefix without another dependency.
        let random = RandomState::new().hash_one(std::process::id());
        let mut prefix = [0; PREFIX_LEN];
        write_hex(random, &mut prefix);
        SequentialIds {
            prefix,
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
    /// Written into a stack buffer: `format!` cost a hit about 1,000 instructions (callgrind).
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut id = [0; PREFIX_LEN + 1 + 16];
        id[..PREFIX_LEN].copy_from_slice(&self.prefix);
        id[PREFIX_LEN] = b'-';
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
        let end = PREFIX_LEN + 1 + digits;
        write_hex(n, &mut id[PREFIX_LEN + 1..end]);
        HeaderValue::from_bytes(&id[..end]).ok().map(RequestId::new)
    }
}

/// The low hex digits of `value` into `out`, right-aligned, most significant first.
fn write_hex(mut value: u64, out: &mut [u8]) {
    for digit in out.iter_mut().rev() {
        *digit = HEX[(value & 0xf) as usize];
        value >>= 4;
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
        assert!(
            first.ends_with("-1") && second.ends_with("-2"),
            "{first} {second}"
        );
    }

    #[test]
    fn the_counter_is_written_in_lowercase_hex_without_leading_zeros() {
        for (n, suffix) in [
            (0xdead_beef_u64, "-deadbeef"),
            (0x10, "-10"),
            (u64::MAX, "-ffffffffffffffff"),
        ] {
            let mut ids = SequentialIds {
                prefix: *b"0123456789abcdef",
                next: Arc::new(AtomicU64::new(n)),
            };
            let id = ids.make_request_id(&Request::new(())).expect("an id");
            let id = id.header_value().to_str().expect("ASCII").to_owned();
            assert_eq!(id, format!("0123456789abcdef{suffix}"));
        }
        let prefix = SequentialIds::new().prefix;
        assert!(prefix.iter().all(u8::is_ascii_hexdigit), "{prefix:?}");
    }
}
