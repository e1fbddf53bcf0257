//! booksvc's integration tests: one binary, the real booksvc in front of the real storagesvc,
//! PostgreSQL and Redis from `testkit` (private, never the machine's shared servers).
//! Failures are caused for real: servers stopped, answers held back, Redis that never answers.

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
