//! `cargo run -p stack`: the whole system on a machine without Docker, made to be broken on
//! purpose.
//!
//! Starts private PostgreSQL, Redis and RabbitMQ (with the management UI and compose's broker
//! users) through the test kit — on free ports, in temp dirs — then storagesvc and booksvc as
//! child processes, prints what runs where (pids, ports, URLs, data directories), and takes
//! commands (`status`, `stop|start|kill NAME`, `help`) from its terminal or from another one
//! (`stack ctl COMMAND`, through [`control`]). Ctrl-C or SIGTERM stops everything, restarted
//! servers included. A failed start stops what was started and exits 1 with one line.
//!
//! The services run from this same binary ([`service_mode`]): one build for everything.

mod broker_users;
mod commands;
mod control;
mod service_mode;
mod services;
mod system;

use std::io::BufRead as _;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::commands::{Command, HELP};
use crate::control::{ControlSocket, Reply, Request};
use crate::system::{Ports, System};

#[derive(Debug, Parser)]
#[command(
    name = "stack",
    about = "Run PostgreSQL, Redis, RabbitMQ, storagesvc and booksvc locally, without Docker; \
             stop, start or kill any of them while it runs."
)]
struct Args {
    /// Port booksvc listens on; it also names the stack for `ctl`.
    #[arg(long, default_value = "8081", global = true)]
    booksvc_port: u16,
    /// Port storagesvc listens on.
    #[arg(long, default_value = "8082")]
    storagesvc_port: u16,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Send a command to the running stack, e.g. `ctl stop postgres`; `ctl help` lists them.
    Ctl {
        #[arg(required = true, num_args = 1..)]
        command: Vec<String>,
    },
}

fn main() -> ExitCode {
    if let Some(service) = service_mode::requested(std::env::args_os().next().as_deref()) {
        return service_mode::run(service);
    }
    let args = Args::parse();
    if let Some(Sub::Ctl { command }) = &args.command {
        return control::client(args.booksvc_port, command);
    }
    // One thread: the services are spawned from it, and their parent-death signal follows
    // the thread that spawned them (see service_mode).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("stack: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(Ports {
        booksvc: args.booksvc_port,
        storagesvc: args.storagesvc_port,
    }));
    // The terminal reader is blocked in a read; it must not hold up the exit.
    runtime.shutdown_background();
    code
}

async fn run(ports: Ports) -> ExitCode {
    let mut signals = match Signals::new() {
        Ok(signals) => signals,
        Err(err) => {
            eprintln!("stack: cannot handle signals: {err}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let start = async {
        let control = ControlSocket::bind(ports.booksvc)?;
        let system = System::start(ports).await?;
        anyhow::Ok((control, system))
    };
    let (mut control, mut system) = tokio::select! {
        started = start => match started {
            Ok(started) => started,
            Err(err) => {
                fail(&err);
                return ExitCode::FAILURE;
            }
        },
        name = signals.next() => {
            eprintln!("stack: {name} during start-up; stopped what had started");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "\nstack: up in {:.1}s\n{}\n",
        started.elapsed().as_secs_f64(),
        system.status()
    );
    println!("{HELP}");
    println!("try: curl -i 127.0.0.1:{}/books/1\n", ports.booksvc);

    let (requests, mut incoming) = mpsc::channel::<(Request, bool)>(8);
    let (socket_requests, mut from_socket) = mpsc::channel::<Request>(8);
    control.serve(socket_requests);
    read_terminal(requests.clone());

    loop {
        let (request, from_terminal) = tokio::select! {
            name = signals.next() => {
                eprintln!("\nstack: {name}: stopping…");
                break;
            }
            line = system.next_exit() => {
                eprintln!("stack: {line}");
                continue;
            }
            Some(request) = incoming.recv() => request,
            Some(request) = from_socket.recv() => (request, false),
        };
        let command = request.command;
        let reply = tokio::select! {
            reply = system.execute(command) => reply,
            name = signals.next() => {
                eprintln!("\nstack: {name} during `{command:?}`: stopping…");
                let _ = request.reply.send(Reply::error("the stack is stopping"));
                break;
            }
        };
        if !from_terminal && !matches!(command, Command::Status | Command::Help) {
            let first = reply.text.lines().next().unwrap_or_default();
            eprintln!("stack: (ctl) {first}");
        }
        let _ = request.reply.send(reply);
    }
    system.shutdown().await;
    drop(control);
    eprintln!("stack: stopped");
    ExitCode::SUCCESS
}

/// The one line that says why the start failed, after any details (a server's log tail).
fn fail(err: &anyhow::Error) {
    let full = format!("{err:#}");
    let mut lines = full.lines();
    let first = lines.next().unwrap_or_default();
    let details: Vec<&str> = lines.collect();
    if !details.is_empty() {
        eprintln!("stack: details:\n{}", details.join("\n"));
    }
    eprintln!("stack: failed to start: {first}");
}

/// Commands typed in the stack's terminal, one per line. A plain thread: a blocking read of
/// stdin must not keep the runtime from exiting. End of input just ends the reading.
fn read_terminal(requests: mpsc::Sender<(Request, bool)>) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            if line.trim().is_empty() {
                continue;
            }
            let command = match line.parse::<Command>() {
                Ok(command) => command,
                Err(message) => {
                    println!("{message}");
                    continue;
                }
            };
            let (reply, answer) = tokio::sync::oneshot::channel();
            if requests
                .blocking_send((Request { command, reply }, true))
                .is_err()
            {
                return;
            }
            match answer.blocking_recv() {
                Ok(reply) if reply.ok => println!("{}", reply.text),
                Ok(reply) => println!("error: {}", reply.text),
                Err(_) => return,
            }
        }
    });
}

/// SIGINT (Ctrl-C), SIGTERM and SIGHUP (terminal closed) all stop the stack.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next one and names it.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "interrupted",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}
