//! Read-path benchmark: `scripts/bench-read.sh` (installs `wrk`, builds in release, runs this).
//!
//! One run, against real servers (private testkit PostgreSQL, Redis and RabbitMQ, storagesvc
//! in-process), every server under test in a child process of its own (this binary run with
//! `child <mode>`), all of them up for the whole run:
//! 1. `GET /books/1` served fresh by booksvc (`X-Cache: hit`) from its in-process hit layer;
//! 2. a bare axum handler returning the same bytes: the ceiling, and the load generator's
//!    own limit (booksvc's goal: >= 0.7 of it);
//! 3. an axum handler doing one Redis `GET` of those bytes (what one round trip costs);
//! 4. a booksvc with the default settings, healthy and then with PostgreSQL stopped for
//!    several half-open cycles of its breaker: p99 during the outage / healthy p99 (goal <= 2,
//!    no non-2xx).
//!
//! The load generator is `wrk` (`BENCH_THREADS` 2, `BENCH_CONNECTIONS` 64, `BENCH_SECONDS` 10
//! per round), outside this process: a client in the bench process saturated before the
//! servers did and pushed every ratio towards 1. Targets 1-3 run in `BENCH_ROUNDS` (3)
//! interleaved rounds, so drift in the machine's load hits them alike; the ratio reported is
//! the median of the per-round ratios. The load average is printed around every round.
//! Figures, not a test.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use e2e::in_process::Storagesvc;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod support;
use support::{Round, Rss, Wrk, env_number, loadavg, median};

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
    let wrk = Wrk {
        threads: env_number("BENCH_THREADS", 2)?,
        connections: env_number("BENCH_CONNECTIONS", 64)?,
        seconds: env_number("BENCH_SECONDS", 10)?,
    };
    let rounds: usize = env_number("BENCH_ROUNDS", 3)?;
    let outage_seconds: u64 = env_number("BENCH_OUTAGE_SECONDS", 20)?;
    let postgres = testkit::Postgres::start().await?;
    let redis = testkit::Redis::start().await?;
    // booksvc's consumer and the local layer's subscription need a broker: a private one,
    // never the machine's.
    let rabbit = testkit::RabbitMq::start().await?;
    let amqp_url = rabbit.amqp_url();
    // storagesvc in this process (the end-to-end harness's); its outbox relay points at a
    // closed port: events play no part here.
    let storagesvc = Storagesvc::options()
        .database_url(&postgres.fresh_database().await?)
        .spawn()
        .await?;
    let deps = Deps {
        storagesvc: &storagesvc.address,
        redis_url: &redis.url(),
        amqp_url: &amqp_url,
    };
    println!(
        "read_bench: wrk -t{} -c{} -d{}s, {rounds} interleaved rounds, loopback; {} cores; load {}\n",
        wrk.threads,
        wrk.connections,
        wrk.seconds,
        std::thread::available_parallelism().map_or(0, usize::from),
        loadavg()
    );

    // Every hit is fresh for the whole run: this measures the hit path alone.
    let hits = Server::booksvc(&deps, &[("CACHE_FRESH_TTL", "1h")]).await?;
    hits.wait_for_local_layer().await?;
    let body = hits.warm("/books/1", "hit").await?;
    let bare = Server::start("bare", &[("BENCH_BODY", body.as_str())]).await?;
    set_redis_body(&redis.url(), &body).await?;
    let one_get = Server::start("redis", &[("REDIS_URL", redis.url().as_str())]).await?;
    let targets = [
        ("booksvc hit (local layer)", hits.url("/books/1")),
        ("bare axum, same bytes", bare.url("/books/1")),
        ("axum + one Redis GET", one_get.url("/books/1")),
    ];
    let mut results: Vec<[Round; 3]> = Vec::new();
    for round in 1..=rounds {
        println!("round {round}");
        let mut this = [Round::default(); 3];
        for (slot, (label, url)) in this.iter_mut().zip(&targets) {
            *slot = wrk.round(label, url, wrk.seconds).await?;
        }
        results.push(this);
    }
    let hit_rss = hits.rss()?;
    drop((hits, bare, one_get));

    // The outage: default settings (local layer on, default CACHE_FRESH_TTL), so entries go
    // stale during the run and half-open trials happen as they would in production.
    let outage = Server::booksvc(&deps, &[("CACHE_PREFIX", "bench-outage:")]).await?;
    outage.wait_for_local_layer().await?;
    outage.warm("/books/1", "hit").await?;
    println!("\noutage (default settings)");
    let url = outage.url("/books/1");
    let healthy = wrk
        .round("healthy, default settings", &url, wrk.seconds)
        .await?;
    postgres.stop().await?;
    let down = wrk
        .round("PostgreSQL stopped", &url, outage_seconds)
        .await?;
    let outage_rss = outage.rss()?;

    report(&results, healthy, down, hit_rss, outage_rss);
    Ok(())
}

fn report(results: &[[Round; 3]], healthy: Round, down: Round, hit_rss: Rss, outage_rss: Rss) {
    let ratio = |a: usize, b: usize| {
        median(
            results
                .iter()
                .map(|r| r[a].per_sec / r[b].per_sec)
                .collect(),
        )
    };
    let each = |a: usize, b: usize| {
        results
            .iter()
            .map(|r| format!("{:.2}", r[a].per_sec / r[b].per_sec))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let bare = median(results.iter().map(|r| r[1].per_sec).collect());
    println!();
    println!("generator ceiling   = {bare:.0} req/s (bare axum, median)");
    println!(
        "hit / bare          = {:.2} (rounds {}; goal >= 0.70, aim 0.85)",
        ratio(0, 1),
        each(0, 1)
    );
    println!(
        "hit / one Redis GET = {:.2} (rounds {})",
        ratio(0, 2),
        each(0, 2)
    );
    println!(
        "outage p99 / healthy p99 = {:.2} ({:?} / {:?}; goal <= 2), non-2xx or socket errors during the outage: {}",
        down.p99.as_secs_f64() / healthy.p99.as_secs_f64(),
        down.p99,
        healthy.p99,
        down.errors
    );
    println!("booksvc RSS         = after the hit rounds {hit_rss}; after the outage {outage_rss}");
}

/// What a booksvc under test talks to.
struct Deps<'a> {
    storagesvc: &'a str,
    redis_url: &'a str,
    amqp_url: &'a str,
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
        Rss::of(self.child.id().context("the child has exited")?)
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
