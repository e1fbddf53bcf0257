//! What an operator does by hand, done for real: publishing an event from the RabbitMQ
//! management UI in a headless browser (`browser`), and running the services as the
//! least-privilege broker users of `deploy/rabbitmq/` (`broker_users`).
//!
//! storagesvc and booksvc run in this process on testkit's servers (private to this test
//! binary), from the end-to-end harness (`e2e::in_process`); each test starts its own broker
//! with the management plugin.

mod broker_users;
mod browser;
mod support;
