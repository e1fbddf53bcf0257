//! Read-path benchmark: `scripts/bench-read.sh` (installs `wrk`, builds in release, runs this).
//!
//! One run, against real servers (private testkit PostgreSQL, Redis and RabbitMQ, storagesvc
//! in-process), every server under test in a child process of its own (the `booksvc` release
//! binary; this binary run with `child <mode>` for the others), all of them up for the whole
//! run:
//! 1. `GET /books/1` served fresh by booksvc (`X-Cache: hit`) from its in-process hit layer;
//! 2. a bare axum handler returning the same bytes: the ceiling, and the load generator's
//!    own limit (booksvc's goal: >= 0.7 of it);
//! 3. an axum handler doing one Redis `GET` of those bytes (what one round trip costs);
//! 4. a booksvc with the default settings, healthy and then with PostgreSQL killed (SIGKILL,
//!    as a crash happens) for several half-open cycles of its breaker: p99 during the outage /
//!    healthy p99 (goal <= 2, no non-2xx). Both rounds count answers per status and print the
//!    first non-2xx answer, so an error says what it was.
//!
//! The load generator is `wrk` (`BENCH_THREADS` 2, `BENCH_CONNECTIONS` 64, `BENCH_SECONDS` 10
//! per round), outside this process: a client in the bench process saturated before the
//! servers did and pushed every ratio towards 1. Targets 1-3 run in `BENCH_ROUNDS` (3)
//! interleaved rounds, so drift in the machine's load hits them alike; the ratio reported is
//! the median of the per-round ratios. The load average is printed around every round.
//! Figures, not a test.

use std::time::Duration;

use e2e::in_process::Storagesvc;

mod support;
use support::servers::{Deps, Server, run_child_if_asked, set_redis_body};
use support::{Round, Rss, Wrk, env_number, loadavg, median, status_script};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Some(child) = run_child_if_asked().await {
        return child;
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

    // The book every round reads (a missing one would be a cached 404 from Redis).
    let path = format!("/books/{}", storagesvc.create("The Hit Path").await?);
    let within = Duration::from_secs(30);
    // Every hit is fresh for the whole run: this measures the hit path alone.
    let hits = Server::booksvc(&deps, &[("CACHE_FRESH_TTL", "1h")], &[], within).await?;
    hits.wait_for_local_layer(within).await?;
    let body = hits.warm(&path, "hit", within).await?;
    let bare = Server::start("bare", &[("BENCH_BODY", body.as_str())], &[]).await?;
    set_redis_body(&redis.url(), &body).await?;
    let one_get = Server::start("redis", &[("REDIS_URL", redis.url().as_str())], &[]).await?;
    let targets = [
        ("booksvc hit (local layer)", hits.url(&path)),
        ("bare axum, same bytes", bare.url(&path)),
        ("axum + one Redis GET", one_get.url(&path)),
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
    let outage = Server::booksvc(&deps, &[("CACHE_PREFIX", "bench-outage:")], &[], within).await?;
    outage.wait_for_local_layer(within).await?;
    outage.warm(&path, "hit", within).await?;
    println!("\noutage (default settings)");
    let url = outage.url(&path);
    let statuses = status_script()?;
    let statuses = Some(statuses.path());
    let healthy = wrk
        .round_with_script("healthy, default settings", &url, wrk.seconds, statuses)
        .await?;
    postgres.kill().await?;
    let down = wrk
        .round_with_script("PostgreSQL killed", &url, outage_seconds, statuses)
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
