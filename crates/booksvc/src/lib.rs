//! booksvc answers clients from storagesvc, protected by a circuit breaker, retry with
//! backoff, and a Redis cache of the last good data.
//!
//! # Layout
//! - [`breaker`]: the circuit breaker state machine (gobreaker's semantics).
//! - [`retry`]: exponential backoff with jitter, bounded by the request deadline.
//!
//! The HTTP side, the storagesvc client, the cache and the event consumer
//! come in their own issues; each will be a module named after what it does.

pub mod breaker;
pub mod retry;
