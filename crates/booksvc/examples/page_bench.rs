//! Paged lists at size: `scripts/bench-pages.sh` (installs `wrk`, builds in release, runs this).
//!
//! One run against real servers (private testkit PostgreSQL and Redis; storagesvc in this
//! process; each booksvc in a child process of its own). For each catalogue size of
//! `BENCH_SIZES` (default 1000,10000,100000), growing the same table:
//! 1. bulk-insert books up to the size (one SQL statement) and `ANALYZE`;
//! 2. empty Redis and run the rebuild (`booksvc::rebuild`, page 1000, no rate cap): books/s;
//! 3. `GET /books?limit=20&after=X` with `X` drawn at random from `BENCH_PAGES` (256) starts
//!    spread over the catalogue, driven by `wrk` (`BENCH_THREADS` 2, `BENCH_CONNECTIONS` 16,
//!    `BENCH_SECONDS` 10) in `BENCH_ROUNDS` (3) interleaved rounds, so drift in the machine's
//!    load hits the three targets alike (each figure: the median over the rounds; errors: the
//!    sum):
//!    - from a booksvc with `CACHE_FRESH_TTL=1h`, every page warmed first: `X-Cache: hit`;
//!    - from storagesvc directly;
//!    - from a booksvc with `CACHE_FRESH_TTL=0` whose storagesvc is gone (a TCP proxy in
//!      between refuses connections): `stale`, once its breaker is open;
//! 4. booksvc's RSS (the hit server, after its rounds) and Redis's `used_memory`.
//!
//! The goal (issue 14): page p99 at the largest size within 1.5x of the p99 at the smallest,
//! on both services. Figures, not a test.

use std::fmt::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use booksvc::cache::{BookCache, CacheSettings};
use booksvc::client::StorageClient;
use booksvc::rebuild::{Plan, RebuildReport, rebuild};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod support;
use e2e::in_process::Storagesvc;
use support::{Round, Rss, Wrk, env_number, loadavg};

/// Books per page in every measured request.
const PAGE: u32 = 20;
/// booksvc's key prefix in the bench's Redis.
const PREFIX: &str = "bench:";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, child] = args.as_slice() {
        if child == "child" {
            return booksvc_child().await;
        }
    }
    parent().await
}

/// A booksvc configured from the environment, like the binary; prints its port.
async fn booksvc_child() -> anyhow::Result<()> {
    let settings = booksvc::Settings::try_parse_from(["booksvc"])?;
    booksvc::telemetry::init(&settings.rust_log, settings.log_format)?;
    let app = booksvc::Application::build(settings).await?;
    println!("{}", app.port());
    app.run_until_stopped(tokio_util::sync::CancellationToken::new())
        .await
}

/// One size's figures.
struct SizeFigures {
    size: u64,
    rebuild: RebuildReport,
    hit: Round,
    storagesvc: Round,
    stale: Round,
    booksvc_rss: Rss,
    redis_bytes: u64,
}

async fn parent() -> anyhow::Result<()> {
    let wrk = Wrk {
        threads: env_number("BENCH_THREADS", 2)?,
        connections: env_number("BENCH_CONNECTIONS", 16)?,
        seconds: env_number("BENCH_SECONDS", 10)?,
    };
    let sizes: Vec<u64> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000,100000".to_owned())
        .split(',')
        .map(|size| size.trim().parse().context("BENCH_SIZES"))
        .collect::<anyhow::Result<_>>()?;
    let starts: u64 = env_number("BENCH_PAGES", 256)?;
    let rounds: usize = env_number::<usize>("BENCH_ROUNDS", 3)?.max(1);

    let postgres = testkit::Postgres::start().await?;
    let redis = testkit::Redis::start().await?;
    let database_url = postgres.fresh_database().await?;
    // storagesvc in this process (the end-to-end harness's); its outbox relay points at a
    // closed port: events play no part here. Kept alive until the end (drop stops it).
    let storagesvc_app = Storagesvc::options()
        .database_url(&database_url)
        .spawn()
        .await?;
    let storagesvc = storagesvc_app.address.clone();
    let db = sqlx::PgPool::connect(&database_url).await?;
    let proxy = testkit::TcpProxy::start(storagesvc.trim_start_matches("http://")).await?;
    let cache = BookCache::new(CacheSettings {
        prefix: PREFIX.to_owned(),
        op_timeout: Duration::from_secs(30),
        ..CacheSettings::new(redis.url())
    })?;
    let client =
        StorageClient::new(&storagesvc, Duration::from_secs(30)).map_err(anyhow::Error::msg)?;

    let hits = Booksvc::start(&storagesvc, &redis.url(), "1h").await?;
    let outage = Booksvc::start(&proxy.http_url(), &redis.url(), "0s").await?;
    println!(
        "page_bench: pages of {PAGE}, {starts} page starts, {rounds} interleaved rounds of wrk -t{} -c{} -d{}s; {} cores; load {}\n",
        wrk.threads,
        wrk.connections,
        wrk.seconds,
        std::thread::available_parallelism().map_or(0, usize::from),
        loadavg()
    );

    let mut figures = Vec::new();
    for size in sizes {
        grow_to(&db, size).await?;
        flush(&redis.url()).await?;
        let plan = Plan {
            after: 0,
            page_size: 1000,
            rate: 0,
            timeout: Duration::from_secs(30),
        };
        let rebuilt = rebuild(&client, &cache, plan, |_| {})
            .await
            .map_err(|failure| failure.error)?;
        println!("size {size}: rebuild {rebuilt}");

        let script = paths_script(size, starts)?;
        for path in page_paths(size, starts) {
            hits.read(&path, "hit").await?;
        }
        let (mut hit, mut direct, mut stale) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=rounds {
            println!("size {size}, round {round}");
            let script = Some(script.path());
            hit.push(
                wrk.round_with_script("booksvc hit", &hits.url("/"), wrk.seconds, script)
                    .await?,
            );
            direct.push(
                wrk.round_with_script("storagesvc", &storagesvc, wrk.seconds, script)
                    .await?,
            );
            proxy.refuse().await;
            // Open the breaker before measuring: the first reads still try storagesvc.
            for path in page_paths(size, starts).take(20) {
                let _ = outage.read(&path, "stale").await;
            }
            let label = "booksvc, storagesvc down";
            stale.push(
                wrk.round_with_script(label, &outage.url("/"), wrk.seconds, script)
                    .await?,
            );
            proxy.restore()?;
        }
        let booksvc_rss = hits.rss()?;
        let redis_bytes = redis_used_memory(&redis.url()).await?;
        println!();
        figures.push(SizeFigures {
            size,
            rebuild: rebuilt,
            hit: Round::median_of(&hit),
            storagesvc: Round::median_of(&direct),
            stale: Round::median_of(&stale),
            booksvc_rss,
            redis_bytes,
        });
    }
    report(&figures);
    Ok(())
}

/// Inserts books until the table holds `size` (the seed's two included).
async fn grow_to(db: &sqlx::PgPool, size: u64) -> anyhow::Result<()> {
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM books")
        .fetch_one(db)
        .await?;
    let missing = i64::try_from(size)?.saturating_sub(count);
    sqlx::query(
        "INSERT INTO books (title, author, description) \
         SELECT 'Book ' || n, 'Author ' || (n % 997), repeat('d', 100) \
         FROM generate_series(1, $1) AS n",
    )
    .bind(missing)
    .execute(db)
    .await?;
    sqlx::query("ANALYZE books").execute(db).await?;
    Ok(())
}

/// `/books?limit=20&after=X` for `starts` values of X spread evenly over the catalogue.
fn page_paths(size: u64, starts: u64) -> impl Iterator<Item = String> {
    let last_start = size.saturating_sub(u64::from(PAGE)).max(1);
    (0..starts).map(move |i| {
        let after = i * last_start / starts.max(1);
        format!("/books?limit={PAGE}&after={after}")
    })
}

/// A wrk script whose every request is one of the paths, drawn at random.
fn paths_script(size: u64, starts: u64) -> anyhow::Result<tempfile::NamedTempFile> {
    let mut lua = String::from("local paths = {\n");
    for path in page_paths(size, starts) {
        writeln!(lua, "  \"{path}\",")?;
    }
    lua.push_str(
        "}\nrequest = function()\n  return wrk.format(\"GET\", paths[math.random(#paths)])\nend\n",
    );
    let file = tempfile::Builder::new().suffix(".lua").tempfile()?;
    std::fs::write(file.path(), lua)?;
    Ok(file)
}

async fn flush(url: &str) -> anyhow::Result<()> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    redis::cmd("FLUSHDB").query_async::<()>(&mut conn).await?;
    Ok(())
}

async fn redis_used_memory(url: &str) -> anyhow::Result<u64> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await?;
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse().ok())
        .context("used_memory in INFO memory")
}

fn report(figures: &[SizeFigures]) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "| books | booksvc hit p50 / p99 | storagesvc p50 / p99 | booksvc, storagesvc down p50 / p99 | req/s hit / storagesvc / down | booksvc RSS | Redis used_memory | rebuild |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for f in figures {
        println!(
            "| {} | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {:.0} / {:.0} / {:.0} | {:.1} MiB | {:.1} MiB | {:.0} books/s |",
            f.size,
            ms(f.hit.p50),
            ms(f.hit.p99),
            ms(f.storagesvc.p50),
            ms(f.storagesvc.p99),
            ms(f.stale.p50),
            ms(f.stale.p99),
            f.hit.per_sec,
            f.storagesvc.per_sec,
            f.stale.per_sec,
            f.booksvc_rss.now_kib as f64 / 1024.0,
            mib(f.redis_bytes),
            f.rebuild.rate(),
        );
    }
    if let (Some(first), Some(last)) = (figures.first(), figures.last()) {
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        println!(
            "\np99 at {} / p99 at {} books (goal <= 1.5): booksvc hit {:.2}, storagesvc {:.2}, booksvc with storagesvc down {:.2}",
            last.size,
            first.size,
            ratio(last.hit.p99, first.hit.p99),
            ratio(last.storagesvc.p99, first.storagesvc.p99),
            ratio(last.stale.p99, first.stale.p99),
        );
        let errors: u64 = figures
            .iter()
            .map(|f| f.hit.errors + f.storagesvc.errors + f.stale.errors)
            .sum();
        println!("non-2xx or socket errors over all rounds: {errors}");
    }
}

/// A booksvc in a child process; killed when dropped.
struct Booksvc {
    child: Child,
    port: u16,
    client: reqwest::Client,
}

impl Booksvc {
    async fn start(storagesvc: &str, redis_url: &str, fresh_ttl: &str) -> anyhow::Result<Booksvc> {
        let env = [
            ("HTTP_PORT", "127.0.0.1:0"),
            ("STORAGESVC_URL", storagesvc),
            ("REDIS_URL", redis_url),
            ("CACHE_PREFIX", PREFIX),
            ("CACHE_FRESH_TTL", fresh_ttl),
            ("CONSUMER_ENABLED", "false"),
            ("RUST_LOG", "warn"),
        ];
        let mut child = Command::new(std::env::current_exe()?)
            .arg("child")
            .envs(env)
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
            .with_context(|| format!("booksvc: port line {line:?}"))?;
        Ok(Booksvc {
            child,
            port,
            client: reqwest::Client::new(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Reads `path` until it answers `X-Cache: expect` (at most 10 s).
    async fn read(&self, path: &str, expect: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let response = self.client.get(self.url(path)).send().await?;
            if response
                .headers()
                .get("x-cache")
                .is_some_and(|v| v == expect)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::bail!("{path} never answered X-Cache: {expect}")
    }

    fn rss(&self) -> anyhow::Result<Rss> {
        Rss::of(self.child.id().context("the child has exited")?)
    }
}
