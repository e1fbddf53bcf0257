//! booksvc's integration tests: one binary, the real booksvc with Redis from `testkit`
//! (private, never the machine's shared servers), in front of either a stand-in storagesvc
//! whose answers a test scripts (booksvc's own behaviour: breaker, retries, budget, patience,
//! coalescing, races, stale answers) or the real storagesvc on PostgreSQL (what depends on the
//! two agreeing). Redis failures are real: servers stopped, a Redis that never answers.

mod bad_input;
mod cli;
mod coalescing;
mod compose;
mod health;
mod helpers;
mod id_properties;
mod kubernetes;
mod openapi;
mod outage_log;
mod outages;
mod paging;
mod patience;
mod proxy;
mod races;
mod reads;
mod rebuild;
mod rebuild_with_events;
mod slow_clients;
mod standin;
mod twins;
