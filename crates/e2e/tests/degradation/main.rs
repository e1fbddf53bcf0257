//! End-to-end degradation scenarios: both services as real processes over real PostgreSQL,
//! Redis and RabbitMQ. Each module is one failure; each test asserts what clients see and
//! what happens to events, and prints its figures as a `DEGRADATION scenario=…` line (see
//! `docs/degradation.md`). Scenarios that stop a dependency use private servers; the others
//! share the binary's servers and run in parallel.

mod postgres;
mod postgres_killed_under_load;
mod prometheus;
mod rabbitmq;
mod redis;
mod relay_crash;
mod sigterm;
mod storagesvc;
mod two_down;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use e2e::load::{Kind, Sample, p50_max};
use e2e::{Binaries, Figures, Options, Samples, System};

/// Both services, built from their own `main.rs` by this package (see its Cargo.toml).
fn options() -> Options {
    Options::new(Binaries {
        booksvc: env!("CARGO_BIN_EXE_e2e-booksvc").into(),
        storagesvc: env!("CARGO_BIN_EXE_e2e-storagesvc").into(),
    })
}

/// Where the figures file goes (`target/tmp`).
fn figures_dir() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

/// Prints the scenario's figures and draws its timeline picture (`e2e::timeline`).
fn publish(figures: &mut Figures, samples: &Samples) {
    figures.print(figures_dir());
    match e2e::timeline::draw(figures.scenario(), samples, figures_dir()) {
        Ok(path) => eprintln!("timeline: {}", path.display()),
        Err(error) => panic!("{}: {error:#}", figures.scenario()),
    }
}

/// Adds `<prefix>_p50`, `<prefix>_max` and `<prefix>_n` for `samples`.
fn latency_figures(figures: &mut Figures, prefix: &str, samples: &[&Sample]) {
    let (p50, max) = p50_max(samples);
    figures
        .millis(&format!("{prefix}_p50"), p50)
        .millis(&format!("{prefix}_max"), max)
        .add(&format!("{prefix}_n"), samples.len());
}

/// Asserts that there were reads in `phase` and every one answered 200 within the budget;
/// returns them.
fn assert_reads_answered<'a>(samples: &'a Samples, phase: &str) -> Vec<&'a Sample> {
    let reads = assert_any_reads_answered(samples, phase);
    assert!(!reads.is_empty(), "no reads during {phase}");
    reads
}

/// Asserts that every read in `phase`, if any, answered 200 within the budget: for a phase
/// that can be over before a read both starts and ends in it (a restart on an idle machine).
fn assert_any_reads_answered<'a>(samples: &'a Samples, phase: &str) -> Vec<&'a Sample> {
    let reads = samples.of(Kind::Read, phase);
    for read in &reads {
        assert_eq!(read.status, Some(200), "{phase}: read {read:?}");
        assert!(
            read.latency <= e2e::system::WITHIN_BUDGET,
            "{phase}: read over budget: {read:?}"
        );
    }
    reads
}

/// Asserts that writes were made in `phase` and storagesvc accepted every one of them: a
/// scenario whose writer recorded nothing would otherwise pass every check on its events.
fn assert_writes_accepted<'a>(samples: &'a Samples, phase: &str) -> Vec<&'a Sample> {
    let writes = samples.of(Kind::Write, phase);
    assert!(!writes.is_empty(), "no writes recorded during {phase}");
    for write in &writes {
        assert_eq!(write.status, Some(200), "{phase}: write {write:?}");
    }
    writes
}

/// How long to let a phase run so the clients get a fair number of requests in.
const PHASE: Duration = Duration::from_secs(3);
/// Bound for "comes back" after a dependency returns (reconnect backoffs top out at 1 s here,
/// RabbitMQ takes 5–10 s to boot on a loaded machine).
const RECOVERY: Duration = Duration::from_secs(30);

/// The last version storagesvc accepted for each book written in `samples`, and every
/// accepted `(book, version)`.
fn accepted_writes(samples: &Samples) -> (HashMap<i64, i64>, HashSet<(i64, i64)>) {
    let mut last = HashMap::new();
    let mut all = HashSet::new();
    for write in samples.all(Kind::Write) {
        if let (Some(200), Some(version)) = (write.status, write.version) {
            all.insert((write.book, version));
            let entry = last.entry(write.book).or_insert(version);
            *entry = (*entry).max(version);
        }
    }
    (last, all)
}

/// Waits until booksvc's cache holds `expected`'s version of every book (or a newer one: a
/// write whose answer a crash cut off may still have committed, and its event counts too);
/// returns how long that took, or the books still behind.
async fn cache_catches_up(
    system: &System,
    expected: &HashMap<i64, i64>,
) -> Result<Duration, Vec<(i64, i64, Option<i64>)>> {
    let started = Instant::now();
    loop {
        let mut behind = Vec::new();
        for (&book, &version) in expected {
            let cached = system.cached_version(book).await;
            if cached.is_none_or(|cached| cached < version) {
                behind.push((book, version, cached));
            }
        }
        if behind.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > RECOVERY {
            return Err(behind);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits like [`cache_catches_up`]; if the cache stays behind, fails with what tells a
/// relay that stopped publishing from a consumer that stopped consuming: which of the
/// missing events reached the audit queue, and both services' readiness bodies (the relay's
/// broker state and outbox backlog, the consumer's state).
async fn assert_cache_catches_up(
    system: &System,
    last: &HashMap<i64, i64>,
    accepted: &HashSet<(i64, i64)>,
) -> Duration {
    let behind = match cache_catches_up(system, last).await {
        Ok(took) => return took,
        Err(behind) => behind,
    };
    let audited = system.audited_events().await;
    let publish_side = match &audited {
        Ok(audited) => behind
            .iter()
            .map(|&(book, _, cached)| missing_in_audit(book, cached, accepted, audited))
            .collect::<Vec<_>>()
            .join("; "),
        Err(error) => format!("cannot read the audit queue: {error:#}"),
    };
    let storagesvc = readiness(system.storagesvc_health("ready").await);
    let booksvc = readiness(system.booksvc_ready().await);
    panic!(
        "events lost (book, accepted, cached): {behind:?}\n\
         audit queue: {publish_side}\n\
         storagesvc ready: {storagesvc}\n\
         booksvc ready: {booksvc}"
    );
}

/// A readiness answer on one line: status and JSON body.
fn readiness(answer: anyhow::Result<(u16, serde_json::Value)>) -> String {
    match answer {
        Ok((status, body)) => format!("{status} {body}"),
        Err(error) => format!("no answer: {error:#}"),
    }
}

/// For one book the cache holds at `cached`: how many of the accepted events newer than that
/// the audit queue holds (all: booksvc did not consume them; none: storagesvc did not publish).
fn missing_in_audit(
    book: i64,
    cached: Option<i64>,
    accepted: &HashSet<(i64, i64)>,
    audited: &HashSet<(i64, i64)>,
) -> String {
    let newer = |&&(b, version): &&(i64, i64)| b == book && Some(version) > cached;
    let expected = accepted.iter().filter(newer).count();
    let published = accepted
        .iter()
        .filter(newer)
        .filter(|e| audited.contains(e));
    let highest = audited
        .iter()
        .filter(|(b, _)| *b == book)
        .map(|(_, v)| v)
        .max();
    format!(
        "book {book}: {} of {expected} newer accepted events audited (highest audited {highest:?})",
        published.count()
    )
}

/// Asserts that the audit queue received an event for every accepted write.
async fn assert_every_event_published(system: &System, accepted: &HashSet<(i64, i64)>) {
    let started = Instant::now();
    let mut published = HashSet::new();
    while !accepted.is_subset(&published) && started.elapsed() < RECOVERY {
        published.extend(system.audited_events().await.unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let missing: Vec<_> = accepted.difference(&published).collect();
    assert!(missing.is_empty(), "events never published for {missing:?}");
}
