//! storagesvc's integration tests: one binary, the real service against real PostgreSQL and
//! RabbitMQ from `testkit` (private, never the machine's shared servers).

mod bad_input;
mod books;
mod budget;
mod cli;
mod errors;
mod health;
mod helpers;
mod id_properties;
mod openapi;
mod outage_log;
mod outbox;
mod paging;
mod partition;
mod relay;
mod slow_clients;
mod startup;
mod trace_context;
