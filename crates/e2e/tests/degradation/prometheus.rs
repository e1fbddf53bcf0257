//! The real Prometheus (Debian's `prometheus` package) scraping both services, with the alert
//! rules of `deploy/prometheus/alerts.yml` and the queries of the Grafana dashboard
//! `deploy/grafana/dashboards/bookstore.json`:
//! - every `booksvc_*`/`storagesvc_*` metric the rules, the dashboard and `docs/runbook.md`
//!   name exists on the services' `/metrics` right after start-up (the `rabbitmq_*` ones come from the broker's
//!   own plugin and are not checked here);
//! - Prometheus loads the rules and accepts every dashboard query;
//! - storagesvc killed: `BooksvcBreakerOpen` fires, and resolves once storagesvc is back.
//!
//! The rules are the checked-in file with each `for:` shortened (the real one is a minute):
//! the expressions are the ones an operator runs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use e2e::service::free_port;
use e2e::{System, eventually};
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::options;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const RULES: &str = "deploy/prometheus/alerts.yml";
const DASHBOARD: &str = "deploy/grafana/dashboards/bookstore.json";
const RUNBOOK: &str = "docs/runbook.md";
const PROMETHEUS: &str = "/usr/bin/prometheus";
/// Each alert's `for:` in the test copy of the rules.
const SHORT_FOR: &str = "2s";
/// Generous: scrapes and evaluations every second on a loaded 2-core machine.
const ALERT_WITHIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn prometheus_fires_the_breaker_alert_when_storagesvc_dies_and_knows_every_metric_named() {
    let mut system = options().start().await.unwrap();

    // Right after start-up, before any read: what rules and dashboard name is there already.
    let exposed = exposed_metrics(&system).await.unwrap();
    let named = named_metrics();
    // A histogram `x` is exposed as `x_bucket`, `x_sum` and `x_count`.
    let missing: Vec<&String> = named
        .iter()
        .filter(|name| !exposed.contains(*name) && !exposed.contains(&format!("{name}_bucket")))
        .collect();
    assert!(missing.is_empty(), "not on /metrics: {missing:?}");

    let prometheus = Prometheus::start(&system).await.unwrap();
    for expr in dashboard_exprs() {
        prometheus
            .query(&expr)
            .await
            .unwrap_or_else(|e| panic!("{expr}: {e:#}"));
    }
    assert!(
        eventually(ALERT_WITHIN, || async {
            prometheus.rules_healthy(5).await.unwrap_or(false)
        })
        .await,
        "the rules never evaluated cleanly: {:?}",
        prometheus.get("/api/v1/rules").await
    );
    assert_eq!(
        prometheus.alert_state("BooksvcBreakerOpen").await.unwrap(),
        None
    );

    system.storagesvc.kill().await.unwrap();
    let reader = keep_reading(&system);
    let fired = eventually(ALERT_WITHIN, || async {
        prometheus
            .alert_state("BooksvcBreakerOpen")
            .await
            .ok()
            .flatten()
            .as_deref()
            == Some("firing")
    })
    .await;
    assert!(
        fired,
        "BooksvcBreakerOpen never fired: {:?}",
        prometheus.get("/api/v1/alerts").await
    );

    system.storagesvc.restart().await.unwrap();
    let resolved = eventually(ALERT_WITHIN, || async {
        prometheus
            .alert_state("BooksvcBreakerOpen")
            .await
            .ok()
            .flatten()
            .is_none()
    })
    .await;
    reader.abort();
    assert!(
        resolved,
        "BooksvcBreakerOpen stayed: {:?}",
        prometheus.get("/api/v1/alerts").await
    );
}

/// Reads a book through booksvc every 100 ms, so its breaker sees storagesvc fail.
fn keep_reading(system: &System) -> tokio::task::JoinHandle<()> {
    let client = system.client.clone();
    let url = format!("{}/books/1", system.booksvc.url());
    tokio::spawn(async move {
        loop {
            let _ = client.get(&url).send().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// Every sample name on both services' `/metrics`.
async fn exposed_metrics(system: &System) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for url in [system.booksvc.url(), system.storagesvc.url()] {
        let text = system
            .client
            .get(format!("{url}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        names.extend(testkit::exposition::sample_names(&text));
    }
    Ok(names)
}

/// The services' metric names used in the rules, the dashboard and the runbook.
fn named_metrics() -> Vec<String> {
    let mut text = read(RULES);
    text.push_str(&dashboard_exprs().join("\n"));
    text.push_str(&read(RUNBOOK));
    let mut names: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("booksvc_") || word.starts_with("storagesvc_"))
        // `booksvc_*` in prose names a family of names, not a metric.
        .filter(|word| !word.ends_with('_'))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 10, "too few names found: {names:?}");
    names
}

fn dashboard_exprs() -> Vec<String> {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|panel| panel["targets"].as_array().into_iter().flatten())
        .filter_map(|target| target["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(!exprs.is_empty(), "no queries in {DASHBOARD}");
    exprs
}

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The rules with every `for:` set to [`SHORT_FOR`].
fn rules_with_short_for() -> String {
    read(RULES)
        .lines()
        .map(|line| match line.trim_start().strip_prefix("for:") {
            Some(_) => format!(
                "{}for: {SHORT_FOR}",
                &line[..line.len() - line.trim_start().len()]
            ),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A private Prometheus server: its own port and data directory, killed on drop.
struct Prometheus {
    url: String,
    dir: PathBuf,
    _child: Child,
    client: reqwest::Client,
}

impl Prometheus {
    async fn start(system: &System) -> anyhow::Result<Prometheus> {
        let port = free_port()?;
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("prometheus-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::write(dir.join("alerts.yml"), rules_with_short_for())?;
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [alerts.yml]\n\
             scrape_configs:\n\
             - job_name: booksvc\n  static_configs: [{{targets: ['{}']}}]\n\
             - job_name: storagesvc\n  static_configs: [{{targets: ['{}']}}]\n",
            system.booksvc.address(),
            system.storagesvc.address(),
        );
        std::fs::write(dir.join("prometheus.yml"), config)?;
        let child = Command::new(PROMETHEUS)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(
                dir.join("prometheus.log"),
            )?))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("{PROMETHEUS} (Debian package prometheus)"))?;
        let prometheus = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            dir,
            _child: child,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        };
        let ready = eventually(Duration::from_secs(30), || async {
            prometheus.get("/-/ready").await.is_ok()
        })
        .await;
        if !ready {
            let log = std::fs::read_to_string(prometheus.dir.join("prometheus.log"));
            bail!("Prometheus did not get ready: {log:?}");
        }
        Ok(prometheus)
    }

    async fn get(&self, path: &str) -> anyhow::Result<String> {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        if !status.is_success() {
            bail!("{path}: {status} {body}");
        }
        Ok(body)
    }

    /// Runs an instant query; fails unless Prometheus accepts it.
    async fn query(&self, expr: &str) -> anyhow::Result<Value> {
        let body = self
            .get(&format!("/api/v1/query?query={}", encode(expr)))
            .await?;
        let answer: Value = serde_json::from_str(&body)?;
        if answer["status"] != "success" {
            bail!("{body}");
        }
        Ok(answer)
    }

    /// Whether `count` rules are loaded and each evaluated without an error.
    async fn rules_healthy(&self, count: usize) -> anyhow::Result<bool> {
        let answer: Value = serde_json::from_str(&self.get("/api/v1/rules").await?)?;
        let rules: Vec<&Value> = answer["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| group["rules"].as_array().into_iter().flatten())
            .collect();
        Ok(rules.len() == count && rules.iter().all(|rule| rule["health"] == "ok"))
    }

    /// `pending`, `firing`, or `None` when the alert is not active.
    async fn alert_state(&self, name: &str) -> anyhow::Result<Option<String>> {
        let answer: Value = serde_json::from_str(&self.get("/api/v1/alerts").await?)?;
        let states: Vec<String> = answer["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|alert| alert["labels"]["alertname"] == name)
            .filter_map(|alert| alert["state"].as_str().map(str::to_owned))
            .collect();
        // Several replicas would be several alerts; here there is one booksvc.
        Ok(states.into_iter().max_by_key(|state| state == "firing"))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // The child is killed on drop (kill_on_drop); its files go with it.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes a query parameter (reqwest here has no `query` feature).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
