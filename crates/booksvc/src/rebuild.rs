//! Cache rebuild: `booksvc rebuild-cache [--after ID] [--page-size N] [--rate BOOKS_PER_S]`
//! pages through storagesvc's list and writes every book into Redis. For after a Redis data
//! loss, or to warm a new Redis before booksvc serves from it.
//!
//! Each page goes through the read path's own page fill ([`BookCache::fill_page`]), in the
//! same order as a read: the cache's revision is taken *before* storagesvc is asked, and the
//! fill replaces only entries unchanged since then; an entry an event wrote meanwhile stays
//! unless storagesvc's version is newer. So the rebuild is safe while events flow and while
//! booksvc serves: it can never put back an older version than an event left, nor a deleted
//! book, since a delete's tombstone is written at once, even in the first seconds after a
//! data loss when upserts are settled by storagesvc (decision 0013, rule 4). Books the
//! cache lists in a page's range that storagesvc no longer has become tombstones, as on a
//! read. The rebuild writes no page marks: it does not make pages fresh, only known.
//!
//! Progress goes to stderr, a line per page; the summary to stdout. Interrupted (or failed),
//! it says the last id it finished: `--after` that id resumes where it stopped. `--rate`
//! caps books written per second (0: no cap), so a rebuild leaves room to Redis and
//! storagesvc; the page size bounds each Redis script (1000 books ≈ a few ms of Redis).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use crate::cache::{BookCache, CacheSettings, PageFillOutcome};
use crate::client::StorageClient;
use crate::config::{
    DEFAULT_STORAGESVC_URL, Secret, default_text, parse_http_url, parse_positive_duration,
    parse_prefix, parse_redis_addr, parse_redis_url,
};
use crate::paging::{MAX_LIMIT, PageQuery};
use crate::retry::{RetryError, RetrySettings, retry_within};

/// `booksvc rebuild-cache`: writes every book storagesvc lists into the Redis cache. The
/// connection settings are booksvc's own variables. `Debug` leaves out the Redis URL: it may
/// carry a password.
#[derive(Parser)]
#[command(
    name = "booksvc rebuild-cache",
    bin_name = "booksvc rebuild-cache",
    version
)]
pub struct RebuildArgs {
    /// storagesvc's base URL.
    #[arg(long, env = "STORAGESVC_URL", default_value = DEFAULT_STORAGESVC_URL, value_parser = parse_http_url)]
    pub storagesvc_url: String,
    /// Redis as HOST:PORT (or set REDIS_URL).
    #[arg(long, env = "REDIS_ADDR", value_parser = parse_redis_addr, conflicts_with = "redis_url")]
    pub redis_addr: Option<String>,
    /// Redis as a full URL, redis://[:PASSWORD@]HOST:PORT[/DB].
    // Also `--help`: the brackets stay, and rustdoc is told they are not a link.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, env = "REDIS_URL", value_parser = parse_redis_url, hide_env_values = true)]
    pub redis_url: Option<Secret>,
    /// The key prefix booksvc uses (its CACHE_PREFIX).
    #[arg(long, env = "CACHE_PREFIX", default_value = crate::cache::DEFAULT_PREFIX, value_parser = parse_prefix)]
    pub cache_prefix: String,
    /// Longest an entry is kept (booksvc's CACHE_MAX_AGE).
    #[arg(long, env = "CACHE_MAX_AGE", default_value = default_text::duration(crate::cache::DEFAULT_MAX_AGE), value_parser = parse_positive_duration)]
    pub cache_max_age: Duration,
    /// Start after this book id (exclusive): the id a stopped run printed, to resume it.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    pub after: i64,
    /// Books per storagesvc page and per Redis script (1-1000).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LIMIT)))]
    pub page_size: u32,
    /// At most this many books written per second, on average (0: as fast as it goes).
    #[arg(long, default_value_t = 2000)]
    pub rate: u32,
    /// Bound on each storagesvc call and each Redis script (a failed call is retried a few
    /// times within it).
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    pub timeout: Duration,
}

impl std::fmt::Debug for RebuildArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RebuildArgs")
            .field("storagesvc_url", &self.storagesvc_url)
            .field("redis", &"[redacted]")
            .field("cache_prefix", &self.cache_prefix)
            .field("after", &self.after)
            .field("page_size", &self.page_size)
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl RebuildArgs {
    /// The Redis URL from `--redis-url`, `--redis-addr` or the default, as the service reads it.
    pub fn redis_url(&self) -> Secret {
        crate::config::redis_url(self.redis_url.as_ref(), self.redis_addr.as_deref())
    }
}

/// How a rebuild went so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RebuildReport {
    /// Pages read from storagesvc and written.
    pub pages: u64,
    /// Books storagesvc listed.
    pub books: u64,
    /// What the page fills did, summed.
    pub writes: PageFillOutcome,
    /// The last id written: `--after` this resumes after it.
    pub last_id: i64,
    /// Time spent.
    pub elapsed: Duration,
}

impl RebuildReport {
    /// Books per second over the whole run.
    pub fn rate(&self) -> f64 {
        self.books as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn add(&mut self, books: usize, outcome: PageFillOutcome, last_id: i64) {
        self.pages += 1;
        self.books += books as u64;
        self.writes.applied += outcome.applied;
        self.writes.ignored_stale += outcome.ignored_stale;
        self.writes.removed += outcome.removed;
        self.last_id = last_id;
    }
}

impl std::fmt::Display for RebuildReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} books in {} pages, up to id {} ({} written, {} kept as newer, {} tombstoned) \
             in {:.1} s, {:.0} books/s",
            self.books,
            self.pages,
            self.last_id,
            self.writes.applied,
            self.writes.ignored_stale,
            self.writes.removed,
            self.elapsed.as_secs_f64(),
            self.rate()
        )
    }
}

/// Runs the subcommand; `args` starts with the subcommand's name.
pub async fn main(args: impl IntoIterator<Item = String>) -> ExitCode {
    let args = match RebuildArgs::try_parse_from(args) {
        Ok(args) => args,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let progress = |report: &RebuildReport| eprintln!("rebuild-cache: {report}");
    match rebuild_from_args(&args, progress).await {
        Ok(report) => {
            println!("rebuilt the cache: {report}");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!(
                "booksvc rebuild-cache: {:#}\nafter {}; resume with --after {}",
                failure.error, failure.report, failure.report.last_id
            );
            ExitCode::FAILURE
        }
    }
}

/// A rebuild that stopped: why, and what it had done (resume after `report.last_id`).
#[derive(Debug)]
pub struct RebuildFailure {
    pub error: anyhow::Error,
    pub report: RebuildReport,
}

/// Connects to storagesvc and Redis as `args` says and rebuilds; `progress` sees the report
/// after every page.
pub async fn rebuild_from_args(
    args: &RebuildArgs,
    progress: impl FnMut(&RebuildReport),
) -> Result<RebuildReport, RebuildFailure> {
    let failure = |error: anyhow::Error| RebuildFailure {
        error,
        report: RebuildReport {
            last_id: args.after,
            ..RebuildReport::default()
        },
    };
    let client = StorageClient::new(&args.storagesvc_url, args.timeout)
        .map_err(|error| failure(anyhow::anyhow!("STORAGESVC_URL: {error}")))?;
    let cache = BookCache::new(CacheSettings {
        url: args.redis_url(),
        prefix: args.cache_prefix.clone(),
        op_timeout: args.timeout,
        max_age: args.cache_max_age,
    })
    .map_err(|error| failure(error.into()))?;
    let plan = Plan {
        after: args.after,
        page_size: args.page_size,
        rate: args.rate,
        timeout: args.timeout,
    };
    rebuild(&client, &cache, plan, progress).await
}

/// What to rebuild and how fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Start after this id.
    pub after: i64,
    /// Books per page, 1..=1000.
    pub page_size: u32,
    /// Books per second at most; 0: no cap.
    pub rate: u32,
    /// Bound on each page's storagesvc call (retries included).
    pub timeout: Duration,
}

/// Pages through storagesvc from `plan.after` to the end, filling `cache` page by page.
pub async fn rebuild(
    client: &StorageClient,
    cache: &BookCache,
    plan: Plan,
    mut progress: impl FnMut(&RebuildReport),
) -> Result<RebuildReport, RebuildFailure> {
    let started = Instant::now();
    let mut report = RebuildReport {
        last_id: plan.after,
        ..RebuildReport::default()
    };
    loop {
        let page = PageQuery {
            limit: plan.page_size,
            after: report.last_id,
        };
        let step = rebuild_page(client, cache, page, plan.timeout).await;
        report.elapsed = started.elapsed();
        let (books, outcome) = step.map_err(|error| RebuildFailure { error, report })?;
        let Some(last) = books.last() else {
            break; // the previous page was full and the last
        };
        report.add(books.len(), outcome, last.id);
        report.elapsed = started.elapsed();
        progress(&report);
        if books.len() < plan.page_size as usize {
            break;
        }
        pace(&report, plan.rate).await;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// One page: the revision first, then storagesvc (retried within `timeout`), then the fill.
async fn rebuild_page(
    client: &StorageClient,
    cache: &BookCache,
    page: PageQuery,
    timeout: Duration,
) -> anyhow::Result<(Vec<crate::book::Book>, PageFillOutcome)> {
    let seen = cache.seen().await.context("reading the cache's revision")?;
    let deadline = tokio::time::Instant::now() + timeout;
    let books = retry_within(&RetrySettings::default(), deadline, |left| {
        client.list_page(page, None, left)
    })
    .await
    .map_err(|error| {
        let why = match error {
            RetryError::Failed { error, attempts } => format!("{error} ({attempts} attempts)"),
            RetryError::DeadlineExceeded { attempts } => {
                format!("no answer within {timeout:?} ({attempts} attempts)")
            }
        };
        anyhow::anyhow!(
            "reading the page after {} from storagesvc: {why}",
            page.after
        )
    })?;
    let outcome = cache
        .fill_page(page.after, page.limit, seen, &books, Duration::ZERO)
        .await
        .with_context(|| format!("writing the page after {} to Redis", page.after))?;
    Ok((books, outcome))
}

/// Sleeps until the books written so far are within `rate` per second of the start.
async fn pace(report: &RebuildReport, rate: u32) {
    if rate == 0 {
        return;
    }
    let due = Duration::from_secs_f64(report.books as f64 / f64::from(rate));
    if let Some(wait) = due.checked_sub(report.elapsed) {
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arguments_have_safe_defaults_and_never_debug_print_the_password() {
        let args = RebuildArgs::try_parse_from([
            "booksvc rebuild-cache",
            "--redis-url",
            "redis://:Pr0dPass@cache:6379/0",
        ])
        .expect("valid arguments");
        assert_eq!((args.after, args.page_size, args.rate), (0, 500, 2000));
        assert!(!format!("{args:?}").contains("Pr0dPass"));
        assert_eq!(args.redis_url().expose(), "redis://:Pr0dPass@cache:6379/0");
    }

    #[test]
    fn bad_arguments_are_refused() {
        for bad in [
            ["--after", "-1"],
            ["--page-size", "0"],
            ["--page-size", "1001"],
            ["--rate", "-5"],
            ["--timeout", "0s"],
        ] {
            let parsed =
                RebuildArgs::try_parse_from(std::iter::once("booksvc rebuild-cache").chain(bad));
            assert!(parsed.is_err(), "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_holds_the_average_rate() {
        let report = RebuildReport {
            books: 1000,
            elapsed: Duration::from_millis(200),
            ..RebuildReport::default()
        };
        let started = tokio::time::Instant::now();
        pace(&report, 2000).await;
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        let started = tokio::time::Instant::now();
        pace(&report, 0).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
