//! The event consumer against real servers (RabbitMQ, Redis, and for end-to-end cases
//! storagesvc with PostgreSQL), all from `testkit`: warming, ordering, poison, retries with
//! delays, the DLQ, a deleted book that stays deleted, a Redis outage (pause), a broker restart (reconnect), re-drive and
//! shutdown, and the in-process hit layer those events keep coherent.
//!
//! Tests share one broker, one Redis and one PostgreSQL per binary and isolate themselves by
//! vhost, key prefix and database; tests that stop a server start a private one.
//! `TEST_LOG=1` shows the logs.

mod bad_events;
mod dead_letters;
mod deleted_stays_deleted;
mod helpers;
mod hostile;
mod local_cache;
mod nodes;
mod outages;
mod redrive;
mod refusing_redis;
mod trace_context;
mod warming;
