//! Read-path benchmark: `cargo run --release -p booksvc --example read_bench`.
//!
//! One run, against real servers (private testkit PostgreSQL, Redis and RabbitMQ, storagesvc
//! in-process), every server under test in a child process of its own (this binary run with
//! `child <mode>`) so each gets the same 2 cores and its RSS is its own:
//! 1. `GET /books/1` served fresh from booksvc's cache (`X-Cache: hit`), from its in-process
//!    hit layer (live: subscribed to the events on the private broker);
//! 2. the same with the layer off (`LOCAL_CACHE_MAX_ENTRIES=0`): every hit reads Redis;
//! 3. a bare axum handler returning the same bytes (the ceiling; goal: booksvc ≥ 0.7 of it);
//! 4. an axum handler doing one Redis `GET` of those bytes (what one round trip costs);
//! 5. the same read during a PostgreSQL outage once the breaker is open (`stale`), whose
//!    p50/p99 are compared with the healthy hit path (goal: ≤ 2×).
//!
//! The load generator is in-process: `BENCH_CONCURRENCY` (16) tokio tasks sharing a
//! keep-alive reqwest client, each sending one request at a time for `BENCH_SECONDS` (5) after
//! one second of warm-up, loopback only. It competes with the server for the same cores, so
//! absolute figures are low and ratios are what to read. Figures, not a test.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod child {
    //! The servers under test, one per child process.

    use anyhow::Context;
    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::header::CONTENT_TYPE;
    use axum::response::IntoResponse;
    use axum::routing::get;
    use clap::Parser;
    use redis::AsyncCommands;
    use redis::aio::ConnectionManager;

    pub(super) const REDIS_KEY: &str = "bench:book:1";

    pub(super) async fn run(mode: &str) -> anyhow::Result<()> {
        match mode {
            "booksvc" => booksvc().await,
            "bare" => serve(bare_router(std::env::var("BENCH_BODY")?)).await,
            "redis" => serve(redis_router(&std::env::var("REDIS_URL")?).await?).await,
            other => anyhow::bail!("unknown child mode {other:?}"),
        }
    }

    /// The real thing, configured from the environment like the binary.
    async fn booksvc() -> anyhow::Result<()> {
        let settings = booksvc::Settings::try_parse_from(["booksvc"])?;
        booksvc::telemetry::init(&settings.rust_log, settings.log_format)?;
        let app = booksvc::Application::build(settings).await?;
        println!("{}", app.port());
        app.run_until_stopped(tokio_util::sync::CancellationToken::new())
            .await
    }

    fn bare_router(body: String) -> Router {
        let body = Bytes::from(body);
        Router::new().route(
            "/books/{id}",
            get(move || {
                let body = body.clone();
                async move { ([(CONTENT_TYPE, "application/json")], body) }
            }),
        )
    }

    async fn redis_router(url: &str) -> anyhow::Result<Router> {
        let conn = ConnectionManager::new(redis::Client::open(url)?).await?;
        Ok(Router::new()
            .route("/books/{id}", get(redis_get))
            .with_state(conn))
    }

    async fn redis_get(State(mut conn): State<ConnectionManager>) -> impl IntoResponse {
        let body: Vec<u8> = conn.get(REDIS_KEY).await.unwrap_or_default();
        ([(CONTENT_TYPE, "application/json")], body)
    }

    async fn serve(router: Router) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?.port());
        axum::serve(listener, router).await.context("serving")
    }
}

/// Latencies of one load run.
struct Stats {
    label: &'static str,
    requests: usize,
    errors: usize,
    elapsed: Duration,
    sorted: Vec<Duration>,
}

impl Stats {
    fn per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn quantile(&self, q: f64) -> Duration {
        let index = ((self.sorted.len() as f64 - 1.0) * q).round() as usize;
        self.sorted.get(index).copied().unwrap_or_default()
    }

    fn print(&self) {
        println!(
            "{:<26} {:>9.0} req/s   p50 {:>8.3?}   p99 {:>8.3?}   ({} requests, {} errors)",
            self.label,
            self.per_sec(),
            self.quantile(0.50),
            self.quantile(0.99),
            self.requests,
            self.errors
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, child, mode] = args.as_slice() {
        if child == "child" {
            return child::run(mode).await;
        }
    }
    parent().await
}

async fn parent() -> anyhow::Result<()> {
    let seconds = env_number("BENCH_SECONDS", 5)?;
    let concurrency = env_number("BENCH_CONCURRENCY", 16)?;
    let run = |label, url| load(label, url, concurrency, Duration::from_secs(seconds));
    let postgres = testkit::Postgres::start().await?;
    let redis = testkit::Redis::start().await?;
    // booksvc's consumer and the local layer's subscription need a broker: a private one,
    // never the machine's.
    let rabbit = testkit::RabbitMq::start().await?;
    let amqp_url = rabbit.amqp_url();
    let storagesvc = start_storagesvc(&postgres.fresh_database().await?).await?;
    println!("read_bench: {concurrency} connections, {seconds}s per run, loopback\n");

    let deps = Deps {
        storagesvc: &storagesvc,
        redis_url: &redis.url(),
        amqp_url: &amqp_url,
    };
    let hits = Server::booksvc(&deps, &[("CACHE_FRESH_TTL", "1h")]).await?;
    hits.wait_for_local_layer().await?;
    let body = hits.warm("/books/1", "hit").await?;
    let hit = run("booksvc hit (local layer)", hits.url("/books/1")).await?;
    let hit_rss = hits.rss()?;
    drop(hits);

    let redis_hits = [("CACHE_FRESH_TTL", "1h"), ("LOCAL_CACHE_MAX_ENTRIES", "0")];
    let redis_hits = Server::booksvc(&deps, &redis_hits).await?;
    redis_hits.warm("/books/1", "hit").await?;
    let redis_hit = run("booksvc hit (Redis only)", redis_hits.url("/books/1")).await?;
    drop(redis_hits);

    let bare = Server::start("bare", &[("BENCH_BODY", body.as_str())]).await?;
    let bare_stats = run("bare axum, same bytes", bare.url("/books/1")).await?;
    drop(bare);

    set_redis_body(&redis.url(), &body).await?;
    let one_get = Server::start("redis", &[("REDIS_URL", redis.url().as_str())]).await?;
    let redis_stats = run("axum + one Redis GET", one_get.url("/books/1")).await?;
    drop(one_get);

    let outage = outage_server(&deps).await?;
    outage.warm("/books/1", "miss").await?;
    postgres.stop().await?;
    outage.warm("/books/1", "stale").await?;
    let stale = run("booksvc stale, breaker open", outage.url("/books/1")).await?;
    let stale_rss = outage.rss()?;

    report(
        &[&hit, &redis_hit, &bare_stats, &redis_stats, &stale],
        hit_rss,
        stale_rss,
    );
    Ok(())
}

fn report(runs: &[&Stats; 5], hit_rss: Rss, stale_rss: Rss) {
    let [hit, redis_hit, bare, redis, stale] = runs;
    for stats in runs.iter() {
        stats.print();
    }
    println!();
    println!(
        "hit / bare          = {:.2} (goal >= 0.70; Redis-only hit: {:.2})",
        hit.per_sec() / bare.per_sec(),
        redis_hit.per_sec() / bare.per_sec()
    );
    println!(
        "hit / one Redis GET = {:.2} (Redis-only hit: {:.2})",
        hit.per_sec() / redis.per_sec(),
        redis_hit.per_sec() / redis.per_sec()
    );
    let p50 = stale.quantile(0.5).as_secs_f64() / hit.quantile(0.5).as_secs_f64();
    let p99 = stale.quantile(0.99).as_secs_f64() / hit.quantile(0.99).as_secs_f64();
    println!("stale / hit latency = p50 {p50:.2}, p99 {p99:.2} (goal <= 2)");
    println!("booksvc RSS         = hit run {hit_rss}; outage run {stale_rss}");
}

/// What a booksvc under test talks to.
struct Deps<'a> {
    storagesvc: &'a str,
    redis_url: &'a str,
    amqp_url: &'a str,
}

/// booksvc for the outage run: always asks storagesvc first (so reads are stale, not hits,
/// once it fails) and keeps the breaker open for the whole run once it trips.
async fn outage_server(deps: &Deps<'_>) -> anyhow::Result<Server> {
    let settings = [
        ("CACHE_FRESH_TTL", "0s"),
        ("CACHE_PREFIX", "bench-outage:"),
        ("BREAKER_CONSECUTIVE_FAILURES", "3"),
        ("BREAKER_TIMEOUT", "10m"),
    ];
    Server::booksvc(deps, &settings).await
}

/// A server under test in a child process; killed when dropped.
struct Server {
    child: Child,
    port: u16,
    client: reqwest::Client,
}

impl Server {
    async fn booksvc(deps: &Deps<'_>, extra: &[(&str, &str)]) -> anyhow::Result<Server> {
        let mut env = vec![
            ("HTTP_PORT", "127.0.0.1:0"),
            ("STORAGESVC_URL", deps.storagesvc),
            ("REDIS_URL", deps.redis_url),
            ("AMQP_URL", deps.amqp_url),
        ];
        env.extend_from_slice(extra);
        Server::start("booksvc", &env).await
    }

    async fn start(mode: &str, env: &[(&str, &str)]) -> anyhow::Result<Server> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["child", mode])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        // Keep draining: a child writing logs to a closed pipe would lose them.
        tokio::spawn(async move { tokio::io::copy(&mut reader, &mut tokio::io::sink()).await });
        let port = line
            .trim()
            .parse()
            .with_context(|| format!("{mode}: port line {line:?}"))?;
        Ok(Server {
            child,
            port,
            client: reqwest::Client::new(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Reads `path` until booksvc answers with `X-Cache: expect` (at most 10 s); returns
    /// the body.
    async fn warm(&self, path: &str, expect: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let response = self.client.get(self.url(path)).send().await?;
            let x_cache = response.headers().get("x-cache").cloned();
            let body = response.text().await?;
            if x_cache.is_some_and(|v| v == expect) {
                return Ok(body);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("{path} never answered X-Cache: {expect}")
    }

    /// Waits (at most 30 s) until booksvc reports its local hit layer live.
    async fn wait_for_local_layer(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let response = self.client.get(self.url("/healthz/ready")).send().await?;
            let body: serde_json::Value = response.json().await?;
            if body["dependencies"]["local_cache"]["status"] == "live" {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the local hit layer never went live")
    }

    fn rss(&self) -> anyhow::Result<Rss> {
        let pid = self.child.id().context("the child has exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(Rss {
            now_kib: field("VmRSS:"),
            peak_kib: field("VmHWM:"),
        })
    }
}

#[derive(Clone, Copy)]
struct Rss {
    now_kib: u64,
    peak_kib: u64,
}

impl std::fmt::Display for Rss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |kib: u64| kib as f64 / 1024.0;
        write!(
            f,
            "{:.1} MiB (peak {:.1} MiB)",
            mib(self.now_kib),
            mib(self.peak_kib)
        )
    }
}

/// `concurrency` workers sending `GET url` back to back for `duration` after a warm-up second.
async fn load(
    label: &'static str,
    url: String,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Stats> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let warm_until = Instant::now() + Duration::from_secs(1);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(worker(client.clone(), url.clone(), warm_until, duration)))
        .collect();
    let mut sorted = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (latencies, failed) = worker.await?;
        sorted.extend(latencies);
        errors += failed;
    }
    sorted.sort_unstable();
    Ok(Stats {
        label,
        requests: sorted.len(),
        errors,
        elapsed: duration,
        sorted,
    })
}

/// One connection's requests: latencies recorded after `warm_until`, for `duration`.
async fn worker(
    client: reqwest::Client,
    url: String,
    warm_until: Instant,
    duration: Duration,
) -> (Vec<Duration>, usize) {
    let stop_at = warm_until + duration;
    let (mut latencies, mut errors) = (Vec::new(), 0);
    loop {
        let started = Instant::now();
        if started >= stop_at {
            return (latencies, errors);
        }
        let ok = match client.get(&url).send().await {
            Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
            Err(_) => false,
        };
        if started >= warm_until {
            latencies.push(started.elapsed());
            errors += usize::from(!ok);
        }
    }
}

async fn set_redis_body(url: &str, body: &str) -> anyhow::Result<()> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    redis::cmd("SET")
        .arg(child::REDIS_KEY)
        .arg(body)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(())
}

/// storagesvc in this process on `database_url`; returns its URL. Its outbox relay points
/// at a closed port: events play no part here.
async fn start_storagesvc(database_url: &str) -> anyhow::Result<String> {
    use clap::Parser;
    use storagesvc::config::Secret;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut settings =
        storagesvc::Settings::try_parse_from(["storagesvc", "--http-port", "127.0.0.1:0"])?;
    settings.database_url = Secret::new(database_url);
    settings.amqp_url = format!("amqp://guest:guest@127.0.0.1:{closed}/%2f")
        .parse()
        .map_err(anyhow::Error::msg)?;
    let app = storagesvc::Application::build(settings).await?;
    let url = format!("http://127.0.0.1:{}", app.port());
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown));
    Ok(url)
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={text:?} is not a number")),
        Err(_) => Ok(default),
    }
}
