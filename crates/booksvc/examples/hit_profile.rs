//! Where a fresh hit spends its time, in instructions: `scripts/profile-hit.sh` (builds this
//! in release, runs it; needs valgrind).
//!
//! booksvc (`CACHE_FRESH_TTL=1h`, local layer live, against private testkit servers and
//! storagesvc in this process) and the bare axum handler of `read_bench` (same bytes) each run
//! under `valgrind --tool=callgrind`. After `PROFILE_WARMUP` (2,000) requests, the counters
//! are zeroed (`callgrind_control -z`), `PROFILE_REQUESTS` (20,000) `GET /books/{id}` go
//! one after another on one keep-alive connection, and the counters are dumped
//! (`callgrind_control -d`). Instructions per request is the dump's total (every thread:
//! the runtime's workers, the metrics upkeep, the cache's housekeeping) over the requests.
//! Instruction counts hardly move with the machine's load, unlike req/s; they do not see
//! cache misses or contention between threads.
//!
//! Prints, per server, instructions per request and the top inclusive functions
//! (`callgrind_annotate --inclusive=yes`); the dumps stay in `PROFILE_DIR`
//! (`target/profile-hit`) for `callgrind_annotate` or kcachegrind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use e2e::in_process::Storagesvc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

mod support;
use support::env_number;
use support::servers::{Deps, Server, run_child_if_asked};

/// How many top inclusive functions to print.
const TOP: usize = 25;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Some(child) = run_child_if_asked().await {
        return child;
    }
    parent().await
}

async fn parent() -> anyhow::Result<()> {
    let warmup: usize = env_number("PROFILE_WARMUP", 2_000)?;
    let requests: usize = env_number("PROFILE_REQUESTS", 20_000)?;
    let dir = PathBuf::from(
        std::env::var("PROFILE_DIR").unwrap_or_else(|_| "target/profile-hit".to_owned()),
    );
    std::fs::create_dir_all(&dir)?;
    let postgres = testkit::Postgres::start().await?;
    let redis = testkit::Redis::start().await?;
    // The local layer serves only while its event subscription is live: a private broker.
    let rabbit = testkit::RabbitMq::start().await?;
    let storagesvc = Storagesvc::options()
        .database_url(&postgres.fresh_database().await?)
        .spawn()
        .await?;
    let path = format!("/books/{}", storagesvc.create("The Hit Path").await?);
    let deps = Deps {
        storagesvc: &storagesvc.address,
        redis_url: &redis.url(),
        amqp_url: &rabbit.amqp_url(),
    };
    println!(
        "hit_profile: {warmup} warm-up then {requests} measured sequential GET {path}, callgrind\n"
    );

    // Under valgrind everything is ~50x slower: generous start-up limits.
    let within = Duration::from_secs(120);
    let booksvc = Server::booksvc(
        &deps,
        &[("CACHE_FRESH_TTL", "1h")],
        &callgrind(&dir, "booksvc"),
        within,
    )
    .await?;
    booksvc.wait_for_local_layer(within).await?;
    let body = booksvc.warm(&path, "hit", within).await?;
    let booksvc_profile = profile(&booksvc, &path, warmup, requests, &dir, "booksvc").await?;
    drop(booksvc);

    let bare = Server::start(
        "bare",
        &[("BENCH_BODY", body.as_str())],
        &callgrind(&dir, "bare"),
    )
    .await?;
    let bare_profile = profile(&bare, &path, warmup, requests, &dir, "bare").await?;
    drop(bare);

    for profile in [&booksvc_profile, &bare_profile] {
        println!("== {} ({})", profile.name, profile.dump.display());
        println!("{}\n", profile.top);
    }
    println!(
        "instructions/request: booksvc hit {:.0}, bare axum {:.0} (booksvc / bare {:.2})",
        booksvc_profile.per_request,
        bare_profile.per_request,
        booksvc_profile.per_request / bare_profile.per_request
    );
    Ok(())
}

/// What one server's profile found.
struct Profile {
    name: &'static str,
    per_request: f64,
    top: String,
    dump: PathBuf,
}

/// valgrind's command line for the child `name`; its dumps go to `dir`.
fn callgrind(dir: &Path, name: &str) -> Vec<String> {
    vec![
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        "--quiet".to_owned(),
        format!("--callgrind-out-file={}/{name}.callgrind", dir.display()),
    ]
}

/// Warms `server` up, zeroes its counters, sends the measured requests and dumps them.
async fn profile(
    server: &Server,
    path: &str,
    warmup: usize,
    requests: usize,
    dir: &Path,
    name: &'static str,
) -> anyhow::Result<Profile> {
    let mut client = Client::connect(server.port()).await?;
    client.get_many(path, warmup).await?;
    let pid = server.pid()?.to_string();
    let dump = dir.join(format!("{name}.callgrind.1"));
    let _ = std::fs::remove_file(&dump);
    callgrind_control(&["-z", &pid]).await?;
    client.get_many(path, requests).await?;
    callgrind_control(&["-d", &pid]).await?;
    let text = std::fs::read_to_string(&dump)
        .with_context(|| format!("reading the dump {}", dump.display()))?;
    let total: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("totals:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .context("no totals line in the dump")?;
    Ok(Profile {
        name,
        per_request: total as f64 / requests as f64,
        top: top_inclusive(&dump).await?,
        dump,
    })
}

async fn callgrind_control(args: &[&str]) -> anyhow::Result<()> {
    let output = tokio::process::Command::new("callgrind_control")
        .args(args)
        .output()
        .await
        .context("running callgrind_control (valgrind)")?;
    anyhow::ensure!(
        output.status.success(),
        "callgrind_control {args:?}: {output:?}"
    );
    Ok(())
}

/// The first [`TOP`] functions of `callgrind_annotate --inclusive=yes`.
async fn top_inclusive(dump: &Path) -> anyhow::Result<String> {
    let output = tokio::process::Command::new("callgrind_annotate")
        .args(["--inclusive=yes", "--threshold=100"])
        .arg(dump)
        .output()
        .await
        .context("running callgrind_annotate")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text
        .lines()
        .skip_while(|line| !line.contains("file:function"));
    let header = lines.next().unwrap_or_default();
    let rows: Vec<&str> = lines
        .filter(|line| !line.trim().is_empty() && !line.starts_with("--"))
        .take(TOP)
        .collect();
    Ok(std::iter::once(header)
        .chain(rows)
        .collect::<Vec<_>>()
        .join("\n"))
}

/// A minimal HTTP/1.1 client: one keep-alive connection, one request at a time, so every
/// run sends the same bytes in the same order.
struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    async fn connect(port: u16) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream: BufReader::new(stream),
        })
    }

    /// `count` requests for `path`; each must be a 200.
    async fn get_many(&mut self, path: &str, count: usize) -> anyhow::Result<()> {
        let request = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
        let mut line = String::new();
        let mut body = Vec::new();
        for _ in 0..count {
            self.stream.get_mut().write_all(request.as_bytes()).await?;
            line.clear();
            self.stream.read_line(&mut line).await?;
            anyhow::ensure!(line.starts_with("HTTP/1.1 200"), "status line {line:?}");
            let mut length = 0;
            loop {
                line.clear();
                self.stream.read_line(&mut line).await?;
                let header = line.trim_end();
                if header.is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse()?;
                    }
                }
            }
            body.resize(length, 0);
            self.stream.read_exact(&mut body).await?;
        }
        Ok(())
    }
}
