//! Fleet scenarios: 2 storagesvc + 2 booksvc behind two real HAProxy balancers, on a real
//! three-node RabbitMQ cluster, one PostgreSQL and one Redis ([`e2e::fleet::Fleet`]).
//!
//! Each scenario runs steady reads (through the booksvc balancer) and writes (through the
//! storagesvc balancer) while it breaks something, and watches every booksvc replica
//! directly. It then measures, and asserts where the answer must be zero:
//! - writes refused by a service, failed client requests, events lost (against an audit
//!   quorum queue), per-book order violations (in what was published, and a replica serving
//!   an older version after a newer one);
//! - how long after the load stops every replica serves every book's last version;
//! - for every write, how long until every replica served it: p50, p99, max.
//!
//! The figures are printed as `FLEET scenario=…` lines (and appended to
//! `target/tmp/fleet-figures.txt`); `docs/scaling.md` reports them.
//!
//! The scenarios share one cluster and run one at a time: three RabbitMQ nodes and four
//! services per scenario already fill a 2-core machine.

mod broker_nodes;
mod replica_crashes;
mod rolling_restart;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use e2e::fleet::{Fleet, REPLICAS};
use e2e::load::{Kind, Sample};
use e2e::watch::{Timeline, Watch, p50_p99_max, served_version};
use e2e::{Binaries, Figures, Load, Phase, Samples};
use testkit::RabbitMqCluster;
use tokio::sync::{Mutex, MutexGuard, OnceCell};

/// How long to let a phase run so the clients get a fair number of requests in.
const PHASE: Duration = Duration::from_secs(3);
/// Bound for catching up once the load stops (elections, reconnect backoffs, redeliveries
/// on a loaded machine); generous on purpose, the figure is what matters.
const RECOVERY: Duration = Duration::from_secs(60);
/// Steady clients: readers through the booksvc balancer, one writer per write book.
const READERS: usize = 4;
const WRITE_BOOKS: usize = 4;
const READ_BOOKS: usize = 4;
/// Reads in flight at once while checking that every replica caught up.
const CATCH_UP_CONCURRENCY: usize = 64;

fn binaries() -> Binaries {
    Binaries {
        booksvc: env!("CARGO_BIN_EXE_e2e-booksvc").into(),
        storagesvc: env!("CARGO_BIN_EXE_e2e-storagesvc").into(),
    }
}

fn figures_dir() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

/// The cluster every scenario of this binary uses, started on first use.
static CLUSTER: OnceCell<RabbitMqCluster> = OnceCell::const_new();
/// One scenario at a time (see the module docs).
static SERIAL: Mutex<()> = Mutex::const_new(());

/// The shared cluster with every node running (a failed scenario may have left one down).
async fn cluster() -> &'static RabbitMqCluster {
    let cluster = CLUSTER
        .get_or_try_init(|| RabbitMqCluster::start(3))
        .await
        .expect("a three-node RabbitMQ cluster starts");
    for node in 0..cluster.size() {
        if !cluster.is_up(node) {
            cluster.start_node(node).await.expect("a node starts again");
        }
    }
    cluster
}

/// A running scenario: the fleet, the steady clients and the watchers.
struct Scenario {
    fleet: Fleet,
    phase: Phase,
    load: Load,
    watch: Watch,
    /// Answers of requests made outside the steady load (bursts), kept for the tally.
    extra: Vec<Sample>,
    _serial: MutexGuard<'static, ()>,
}

impl Scenario {
    /// Starts the fleet and the load, and lets it run for one phase ("before").
    async fn start() -> Scenario {
        let serial = SERIAL.lock().await;
        let fleet = Fleet::start(&binaries(), cluster().await)
            .await
            .expect("the fleet starts");
        fleet.start_audit().await.expect("the audit queue");
        let read_books = fleet.create_books(READ_BOOKS).await.expect("books");
        let write_books = fleet.create_books(WRITE_BOOKS).await.expect("books");
        let books: Vec<i64> = read_books.iter().chain(&write_books).copied().collect();

        let phase = Phase::new("before");
        let mut load = Load::new(&phase);
        load.read(&fleet.booksvc_lb.url(), &books, READERS);
        load.write(&fleet.storagesvc_lb.url(), e2e::system::TOKEN, &write_books);
        let replicas: Vec<String> = fleet.booksvc.iter().map(|service| service.url()).collect();
        let watch = Watch::start(&replicas, &write_books);
        tokio::time::sleep(PHASE).await;
        Scenario {
            fleet,
            phase,
            load,
            watch,
            extra: Vec::new(),
            _serial: serial,
        }
    }

    /// Stops the load, waits for every replica to catch up and for every event in the audit
    /// queue, and measures.
    async fn finish(self) -> Outcome {
        self.phase.set("stopped");
        let mut samples = self.load.finish().await;
        let stopped_at = Instant::now();
        samples.0.extend(self.extra);
        let accepted = Accepted::from(&samples);

        let replicas: Vec<String> = self.fleet.booksvc.iter().map(|s| s.url()).collect();
        let caught_up = catch_up(&replicas, &accepted.last, stopped_at).await;
        // One more round of the watchers, so they too see what the catch-up check saw.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let timeline = Timeline::new(self.watch.finish().await, REPLICAS);
        let mut visible = Vec::new();
        let mut never_visible = 0;
        for write in samples.all(Kind::Write) {
            let (Some(200), Some(version)) = (write.status, write.version) else {
                continue;
            };
            match timeline.visible_everywhere(write.book, version, write.finished) {
                Some(after) => visible.push(after),
                None => never_visible += 1,
            }
        }
        let published = published_events(&self.fleet, &accepted.all).await;
        Outcome {
            samples,
            lost: accepted.all.difference(&published.seen).copied().collect(),
            order_violations: published.order_violations,
            duplicates: published.duplicates,
            regressions: timeline.regressions,
            caught_up,
            visible,
            never_visible,
        }
    }
}

/// A replica still behind on a book: (replica, book, accepted version, served version).
type Behind = (usize, i64, i64, Option<i64>);

/// What storagesvc accepted: every `(book, version)`, and each book's last version.
struct Accepted {
    all: HashSet<(i64, i64)>,
    last: HashMap<i64, i64>,
}

impl Accepted {
    fn from(samples: &Samples) -> Accepted {
        let mut all = HashSet::new();
        let mut last: HashMap<i64, i64> = HashMap::new();
        let writes = samples.all(Kind::Write).into_iter();
        for sample in writes.chain(samples.all(Kind::Create)) {
            if let (Some(200 | 201), Some(version)) = (sample.status, sample.version) {
                all.insert((sample.book, version));
                let entry = last.entry(sample.book).or_insert(version);
                *entry = (*entry).max(version);
            }
        }
        Accepted { all, last }
    }
}

/// Polls every replica directly until each serves every book's last accepted version (or a
/// newer one); returns how long after `since` that was, or the (replica, book, accepted,
/// served) still behind after [`RECOVERY`].
async fn catch_up(
    replicas: &[String],
    last: &HashMap<i64, i64>,
    since: Instant,
) -> Result<Duration, Vec<Behind>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("a plain reqwest client builds");
    let mut pending: Vec<(usize, i64, i64)> = (0..replicas.len())
        .flat_map(|replica| {
            last.iter()
                .map(move |(&book, &version)| (replica, book, version))
        })
        .collect();
    loop {
        // Many reads at once: the figure is the replicas' lag, not the time to ask them one
        // book at a time (600 books after the bursts).
        let mut behind = Vec::new();
        for chunk in pending.chunks(CATCH_UP_CONCURRENCY) {
            let answers = futures::future::join_all(
                chunk
                    .iter()
                    .map(|&(replica, book, _)| served_version(&client, &replicas[replica], book)),
            )
            .await;
            for (&(replica, book, version), served) in chunk.iter().zip(answers) {
                if served.is_none_or(|served| served < version) {
                    behind.push((replica, book, version, served));
                }
            }
        }
        if behind.is_empty() {
            return Ok(since.elapsed());
        }
        if since.elapsed() > RECOVERY {
            return Err(behind);
        }
        pending = behind.iter().map(|&(r, b, v, _)| (r, b, v)).collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the audit queue received.
struct Published {
    seen: HashSet<(i64, i64)>,
    /// Events of a book that arrived after an event of a newer version of the same book,
    /// not counting a repeat of one already received (a harmless duplicate):
    /// (book, newest before, then received).
    order_violations: Vec<(i64, i64, i64)>,
    duplicates: usize,
}

/// Drains the audit queue until it holds every accepted event or [`RECOVERY`] passes.
async fn published_events(fleet: &Fleet, accepted: &HashSet<(i64, i64)>) -> Published {
    let started = Instant::now();
    let mut in_order = Vec::new();
    loop {
        in_order.extend(fleet.audited_events().await.unwrap_or_default());
        let seen: HashSet<(i64, i64)> = in_order.iter().copied().collect();
        if accepted.is_subset(&seen) || started.elapsed() > RECOVERY {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut seen = HashSet::new();
    let mut newest: HashMap<i64, i64> = HashMap::new();
    let (mut order_violations, mut duplicates) = (Vec::new(), 0);
    for &(book, version) in &in_order {
        if !seen.insert((book, version)) {
            duplicates += 1;
            continue;
        }
        let newest = newest.entry(book).or_insert(version);
        if version < *newest {
            order_violations.push((book, *newest, version));
        }
        *newest = (*newest).max(version);
    }
    Published {
        seen,
        order_violations,
        duplicates,
    }
}

/// What a scenario measured.
struct Outcome {
    samples: Samples,
    lost: Vec<(i64, i64)>,
    order_violations: Vec<(i64, i64, i64)>,
    duplicates: usize,
    regressions: Vec<(usize, i64, i64, i64)>,
    caught_up: Result<Duration, Vec<Behind>>,
    /// For each accepted write: how long until every replica served it.
    visible: Vec<Duration>,
    /// Accepted writes some replica never served while watched (superseded by a newer
    /// version before the watcher saw it counts as served: the watcher asks for "this
    /// version or newer").
    never_visible: usize,
}

impl Outcome {
    /// Writes a service answered with an error: a write the fleet should have taken.
    fn writes_refused(&self) -> Vec<&Sample> {
        let writes = self.samples.all(Kind::Write).into_iter();
        writes
            .chain(self.samples.all(Kind::Create))
            .filter(|sample| sample.json_error)
            .collect()
    }

    /// Requests without a successful answer, of any kind.
    fn failed(&self) -> Vec<&Sample> {
        self.samples
            .0
            .iter()
            .filter(|sample| {
                !sample
                    .status
                    .is_some_and(|status| (200..300).contains(&status))
            })
            .collect()
    }

    /// The checks every scenario must pass; every problem is reported at once.
    fn assert_nothing_lost(&self) {
        let mut problems = Vec::new();
        let refused = self.writes_refused();
        if !refused.is_empty() {
            problems.push(format!("writes refused: {refused:?}"));
        }
        if !self.lost.is_empty() {
            problems.push(format!("events lost: {:?}", self.lost));
        }
        if !self.order_violations.is_empty() {
            problems.push(format!(
                "events published out of order (book, newest before, then): {:?}",
                self.order_violations
            ));
        }
        if !self.regressions.is_empty() {
            problems.push(format!(
                "a replica served an older version after a newer one \
                 (replica, book, before, then): {:?}",
                self.regressions
            ));
        }
        if let Err(behind) = &self.caught_up {
            problems.push(format!(
                "replicas behind after {RECOVERY:?} (replica, book, accepted, served): {behind:?}"
            ));
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    fn assert_no_failed_request(&self) {
        let failed = self.failed();
        assert!(
            failed.is_empty(),
            "{} failed requests: {failed:?}",
            failed.len()
        );
    }

    /// The figures line, with `extra` added by the scenario.
    fn figures(&mut self, scenario: &str) -> Figures {
        let mut figures = Figures::fleet(scenario);
        let count = |kind| self.samples.all(kind).len();
        let (p50, p99, max) = p50_p99_max(&mut self.visible);
        figures
            .add("reads", count(Kind::Read))
            .add("writes", count(Kind::Write) + count(Kind::Create))
            .add("writes_refused", self.writes_refused().len())
            .add("failed_requests", self.failed().len())
            .add("events_lost", self.lost.len())
            .add("published_out_of_order", self.order_violations.len())
            .add("served_older_after_newer", self.regressions.len())
            .add("duplicates", self.duplicates)
            .millis(
                "all_replicas_caught_up",
                self.caught_up.as_ref().copied().unwrap_or(RECOVERY),
            )
            .millis("visible_p50", p50)
            .millis("visible_p99", p99)
            .millis("visible_max", max)
            .add("visible_n", self.visible.len())
            .add("never_visible", self.never_visible);
        figures
    }
}
