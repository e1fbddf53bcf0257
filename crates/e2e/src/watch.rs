//! Watchers: what each booksvc replica serves for each book, read straight from the replica
//! (not through the balancer) again and again, so a scenario can tell when a write became
//! visible on *every* replica and whether a replica ever went back to an older version.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One answer of one replica.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    pub replica: usize,
    pub book: i64,
    pub version: i64,
    /// When the answer arrived.
    pub at: Instant,
}

/// Pause between two rounds over the books: a few hundred reads a second in all.
const ROUND_PAUSE: Duration = Duration::from_millis(10);

/// Background watchers, one per replica, until [`Watch::finish`].
pub struct Watch {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<Vec<Observation>>>,
}

impl Watch {
    /// Starts watching `books` on each of `replicas` (base URLs, in replica order).
    pub fn start(replicas: &[String], books: &[i64]) -> Watch {
        let stop = CancellationToken::new();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("a plain reqwest client builds");
        let tasks = replicas
            .iter()
            .enumerate()
            .map(|(replica, url)| {
                let (client, url, books, stop) =
                    (client.clone(), url.clone(), books.to_vec(), stop.clone());
                tokio::spawn(watch_replica(client, replica, url, books, stop))
            })
            .collect();
        Watch { stop, tasks }
    }

    /// Stops the watchers and returns every observation, in no particular order.
    pub async fn finish(self) -> Vec<Observation> {
        self.stop.cancel();
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await.expect("a watcher panicked"));
        }
        all
    }
}

async fn watch_replica(
    client: reqwest::Client,
    replica: usize,
    url: String,
    books: Vec<i64>,
    stop: CancellationToken,
) -> Vec<Observation> {
    let mut seen = Vec::new();
    while !stop.is_cancelled() {
        for &book in &books {
            if let Some(version) = served_version(&client, &url, book).await {
                let at = Instant::now();
                seen.push(Observation {
                    replica,
                    book,
                    version,
                    at,
                });
            }
        }
        tokio::time::sleep(ROUND_PAUSE).await;
    }
    seen
}

/// The version `url` serves for `book`, if it answers 200 (a replica being restarted
/// does not; that is the balancer's business, not the watcher's).
pub async fn served_version(client: &reqwest::Client, url: &str, book: i64) -> Option<i64> {
    let response = client
        .get(format!("{url}/books/{book}"))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json::<Value>().await.ok()?["version"].as_i64()
}

/// What the observations say, per (replica, book), in time order.
pub struct Timeline {
    /// (replica, book) → (when, highest version served up to then), in time order.
    served: HashMap<(usize, i64), Vec<(Instant, i64)>>,
    /// Answers with a version lower than one the same replica served before for the book:
    /// (replica, book, highest served before, then served).
    pub regressions: Vec<(usize, i64, i64, i64)>,
    replicas: usize,
}

impl Timeline {
    pub fn new(mut observations: Vec<Observation>, replicas: usize) -> Timeline {
        observations.sort_by_key(|observation| observation.at);
        let mut served: HashMap<(usize, i64), Vec<(Instant, i64)>> = HashMap::new();
        let mut regressions = Vec::new();
        for observation in observations {
            let line = served
                .entry((observation.replica, observation.book))
                .or_default();
            let highest = line.last().map_or(i64::MIN, |&(_, version)| version);
            if observation.version < highest {
                regressions.push((
                    observation.replica,
                    observation.book,
                    highest,
                    observation.version,
                ));
            }
            line.push((observation.at, highest.max(observation.version)));
        }
        Timeline {
            served,
            regressions,
            replicas,
        }
    }

    /// How long after `accepted_at` every replica served `version` of `book` or a newer
    /// one (zero if they all did before); `None` if some replica never did while watched.
    pub fn visible_everywhere(
        &self,
        book: i64,
        version: i64,
        accepted_at: Instant,
    ) -> Option<Duration> {
        let mut slowest = Duration::ZERO;
        for replica in 0..self.replicas {
            let line = self.served.get(&(replica, book))?;
            // `line`'s versions never decrease, so the first one at or above `version` is
            // found by bisection.
            let first = line.partition_point(|&(_, served)| served < version);
            let &(at, _) = line.get(first)?;
            slowest = slowest.max(at.saturating_duration_since(accepted_at));
        }
        Some(slowest)
    }
}

/// p50, p99 and max of `values` (zeros for none).
pub fn p50_p99_max(values: &mut [Duration]) -> (Duration, Duration, Duration) {
    values.sort();
    let at = |quantile: f64| {
        let index = ((values.len() as f64 - 1.0) * quantile).round() as usize;
        values.get(index).copied().unwrap_or_default()
    };
    (
        at(0.5),
        at(0.99),
        values.last().copied().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(replica: usize, version: i64, at: Instant) -> Observation {
        Observation {
            replica,
            book: 7,
            version,
            at,
        }
    }

    #[test]
    fn a_write_is_visible_everywhere_when_the_slowest_replica_serves_it() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let timeline = Timeline::new(
            vec![
                observation(0, 1, ms(0)),
                observation(0, 2, ms(10)),
                observation(1, 1, ms(5)),
                observation(1, 2, ms(30)),
            ],
            2,
        );
        assert_eq!(
            timeline.visible_everywhere(7, 2, ms(4)),
            Some(Duration::from_millis(26))
        );
        assert_eq!(
            timeline.visible_everywhere(7, 1, ms(20)),
            Some(Duration::ZERO)
        );
        assert_eq!(timeline.visible_everywhere(7, 3, ms(0)), None);
        assert_eq!(timeline.visible_everywhere(8, 1, ms(0)), None);
        assert!(timeline.regressions.is_empty());
    }

    #[test]
    fn serving_an_older_version_again_is_a_regression() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let timeline = Timeline::new(
            vec![
                observation(0, 3, ms(0)),
                observation(0, 2, ms(1)),
                observation(0, 4, ms(2)),
            ],
            1,
        );
        assert_eq!(timeline.regressions, vec![(0, 7, 3, 2)]);
    }

    #[test]
    fn quantiles_of_nothing_are_zero() {
        assert_eq!(
            p50_p99_max(&mut []),
            (Duration::ZERO, Duration::ZERO, Duration::ZERO)
        );
        let mut values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let (p50, p99, max) = p50_p99_max(&mut values);
        assert_eq!(
            (p50.as_millis(), p99.as_millis(), max.as_millis()),
            (51, 99, 100)
        );
    }
}
