//! Private servers as local processes, from the binaries of the Debian packages.
//!
//! Every server gets a [`ScratchDir`]: a temporary directory holding its data, logs and
//! sockets, watched by a tiny `sh` watchdog. Each server process runs in its own process
//! group, whose id is written into the scratch dir; when the test process dies — normal
//! exit, panic, or SIGKILL — the watchdog kills those groups and deletes the directory.
//! A private handle does the same at once on drop.
//!
//! PostgreSQL and RabbitMQ can also run from another Debian release's root filesystem
//! (`install`), for testing against other versions than the machine's.

pub(crate) mod haproxy;
mod install;
pub(crate) mod postgres;
mod process;
pub(crate) mod rabbitmq;
pub(crate) mod rabbitmq_cluster;
pub(crate) mod redis;

pub(crate) use install::refuse_root;
pub(crate) use process::{ScratchDir, ServerProcess, free_port, log_tail, poll_until, run_command};
