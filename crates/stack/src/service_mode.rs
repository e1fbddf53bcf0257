//! The stack's binary started under a service's name (`argv[0]` = `booksvc` or `storagesvc`)
//! runs that service, exactly as its own binary does (`crates/*/src/main.rs`; keep the two in
//! step). The stack starts its services this way so that one `cargo build` builds everything
//! it runs, and each service is still a process of its own you can stop or kill.

use std::ffi::OsStr;
use std::path::Path;
use std::process::ExitCode;

use rustix::process::{Pid, Signal, getppid, set_parent_process_death_signal};

/// The stack's pid, handed to its services: a service whose stack is gone stops itself.
pub(crate) const PARENT_PID_VAR: &str = "BOOKSTORE_STACK_PID";

/// The services the binary can run, by the name it is started under.
pub(crate) const SERVICES: [&str; 2] = ["storagesvc", "booksvc"];

/// The service named by `argv[0]`, if any.
pub(crate) fn requested(argv0: Option<&OsStr>) -> Option<&'static str> {
    let name = Path::new(argv0?).file_name()?;
    SERVICES
        .into_iter()
        .find(|service| OsStr::new(service) == name)
}

/// Runs `service` until SIGTERM/SIGINT, or until the stack that started it dies.
pub(crate) fn run(service: &'static str) -> ExitCode {
    if let Err(message) = follow_parent() {
        eprintln!("{service}: {message}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{service}: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match service {
        "booksvc" => runtime.block_on(booksvc::app::run_from_env()),
        _ => runtime.block_on(storagesvc::app::run_from_env()),
    }
}

/// SIGTERM when the stack dies, even by SIGKILL (then nothing else would stop us). The stack
/// spawns its services from its main thread, which lives as long as the stack does.
fn follow_parent() -> Result<(), String> {
    let Some(expected) = std::env::var(PARENT_PID_VAR).ok() else {
        return Ok(());
    };
    set_parent_process_death_signal(Some(Signal::TERM))
        .map_err(|err| format!("cannot ask to be told when the stack exits: {err}"))?;
    // The stack may have died before the line above: then our parent is someone else.
    let parent = getppid()
        .map(Pid::as_raw_nonzero)
        .map(|pid| pid.to_string());
    if parent.as_deref() != Some(expected.as_str()) {
        return Err(format!("the stack (pid {expected}) is gone; not starting"));
    }
    Ok(())
}
