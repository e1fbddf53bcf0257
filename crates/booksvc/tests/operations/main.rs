//! What an operator does by hand, done for real: publishing an event from the RabbitMQ
//! management UI in a headless browser (`browser`), and running the services as the
//! least-privilege broker users of `deploy/rabbitmq/` (`broker_users`).
//!
//! storagesvc and booksvc run in this process on testkit's servers (private to this test
//! binary); each test starts its own broker with the management plugin. The harness is the
//! consumer tests' own, shared rather than copied.

// Not every helper of the shared harness is used here.
#[allow(dead_code)]
#[path = "../consumer/app.rs"]
mod app;
#[allow(dead_code)]
#[path = "../consumer/storage.rs"]
mod storage;

mod broker_users;
mod browser;
mod support;
