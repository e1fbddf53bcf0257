//! `cargo run -p stack`: the whole system on a machine without Docker.
//!
//! Starts private PostgreSQL, Redis and RabbitMQ (with the management UI) through the test
//! kit — the same launcher the tests use, on free ports, in a temp dir — then runs storagesvc
//! and booksvc as child processes (real binaries, so you can `kill` one and watch the other
//! degrade), prints the URLs, and stops everything on Ctrl-C.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use stack::launcher::{binary_dir, service_command, stop_child};
use tokio::process::{Child, Command};

/// Development write token for storagesvc, printed at start-up.
const DEV_TOKEN: &str = "dev-token";
/// How long each service gets to shut down gracefully on Ctrl-C.
const STOP_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, Parser)]
#[command(
    name = "stack",
    about = "Run PostgreSQL, Redis, RabbitMQ, storagesvc and booksvc locally, without Docker."
)]
struct Args {
    /// Port booksvc listens on.
    #[arg(long, default_value = "8081")]
    booksvc_port: u16,
    /// Port storagesvc listens on.
    #[arg(long, default_value = "8082")]
    storagesvc_port: u16,
    /// Don't rebuild the service binaries first (they must exist beside this one).
    #[arg(long)]
    no_build: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = binary_dir()?;
    if !args.no_build {
        build_services(&bin_dir).await?;
    }

    let (postgres, redis, rabbit) = start_dependencies().await?;
    let database_url = postgres.fresh_database().await?;
    let storagesvc_url = format!("http://127.0.0.1:{}", args.storagesvc_port);
    let storagesvc = spawn_service(
        &bin_dir,
        "storagesvc",
        &[
            ("HTTP_PORT", format!("127.0.0.1:{}", args.storagesvc_port)),
            ("DATABASE_URL", database_url),
            ("AMQP_URL", rabbit.amqp_url()),
            ("STORAGESVC_WRITE_TOKEN", DEV_TOKEN.to_owned()),
        ],
    )?;
    let booksvc = spawn_service(
        &bin_dir,
        "booksvc",
        &[
            ("HTTP_PORT", format!("127.0.0.1:{}", args.booksvc_port)),
            ("REDIS_URL", redis.url()),
            ("STORAGESVC_URL", storagesvc_url.clone()),
            ("AMQP_URL", rabbit.amqp_url()),
        ],
    )?;
    let (mut storagesvc, mut booksvc) = (storagesvc, booksvc);

    print_urls(
        &args,
        &storagesvc_url,
        rabbit.management_url(),
        [&storagesvc, &booksvc],
    );
    tokio::select! {
        _ = tokio::signal::ctrl_c() => eprintln!("\nstack: stopping…"),
        status = storagesvc.wait() => eprintln!("stack: storagesvc exited ({status:?}); stopping"),
        status = booksvc.wait() => eprintln!("stack: booksvc exited ({status:?}); stopping"),
    }
    // booksvc first: it depends on storagesvc, not the other way round.
    stop_child(&mut booksvc, STOP_GRACE).await;
    stop_child(&mut storagesvc, STOP_GRACE).await;
    // Dropping the handles stops the private servers and removes their data.
    drop((postgres, redis, rabbit));
    eprintln!("stack: stopped");
    Ok(())
}

/// When run by `cargo run`, builds the services with the same profile first, so the one
/// command always runs current code.
async fn build_services(bin_dir: &Path) -> anyhow::Result<()> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    eprintln!("stack: building storagesvc and booksvc…");
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "storagesvc", "-p", "booksvc", "--bins"]);
    if bin_dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build.status().await.context("cannot run cargo build")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    Ok(())
}

/// RabbitMQ takes several seconds: start all three at once and say what is happening.
async fn start_dependencies()
-> anyhow::Result<(testkit::Postgres, testkit::Redis, testkit::RabbitMq)> {
    eprintln!("stack: starting PostgreSQL, Redis and RabbitMQ (RabbitMQ takes 5–10 s)…");
    let started = Instant::now();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            eprintln!("stack: … still starting ({}s)", started.elapsed().as_secs());
        }
    });
    let result = tokio::try_join!(
        announce("PostgreSQL", testkit::Postgres::start()),
        announce("Redis", testkit::Redis::start()),
        announce("RabbitMQ", testkit::RabbitMq::start_with_management()),
    );
    ticker.abort();
    result
}

async fn announce<T>(
    name: &str,
    start: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let started = Instant::now();
    let server = start
        .await
        .with_context(|| format!("cannot start {name}"))?;
    eprintln!(
        "stack: {name} is up ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
    Ok(server)
}

fn print_urls(
    args: &Args,
    storagesvc_url: &str,
    management: Option<String>,
    children: [&Child; 2],
) {
    let pid = |child: &Child| {
        child
            .id()
            .map_or_else(|| "?".to_owned(), |id| id.to_string())
    };
    eprintln!();
    eprintln!(
        "  booksvc     http://127.0.0.1:{}/books   (pid {})",
        args.booksvc_port,
        pid(children[1])
    );
    eprintln!(
        "  storagesvc  {storagesvc_url}/books   (pid {}; write token: {DEV_TOKEN})",
        pid(children[0])
    );
    if let Some(ui) = management {
        eprintln!("  RabbitMQ UI {ui}   (login guest / guest)");
    }
    eprintln!();
    eprintln!("  try: curl -i 127.0.0.1:{}/books/1", args.booksvc_port);
    eprintln!("  Ctrl-C stops everything.");
    eprintln!();
}

/// Starts a service binary from `bin_dir`, its logs on this terminal.
fn spawn_service(bin_dir: &Path, name: &str, env: &[(&str, String)]) -> anyhow::Result<Child> {
    let path = bin_dir.join(name);
    service_command(&path, env)?
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", path.display()))
}
