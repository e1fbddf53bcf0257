//! The stack's reusable part: [`launcher`] starts the service binaries as child processes.

pub mod launcher;

pub use rustix::process::Signal;
