//! The real binary: configuration errors, `--help`, and a graceful exit on SIGTERM.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::eventually;

const BINARY: &str = env!("CARGO_BIN_EXE_booksvc");

/// Every variable `--help` must document.
const VARIABLES: &[&str] = &[
    "HTTP_PORT",
    "REDIS_ADDR",
    "REDIS_URL",
    "STORAGESVC_URL",
    "RUST_LOG",
    "LOG_FORMAT",
    "CACHE_FRESH_TTL",
    "CACHE_MAX_AGE",
    "CACHE_PREFIX",
    "REDIS_TIMEOUT",
    "REQUEST_BUDGET",
    "STALE_SOFT_TIMEOUT",
    "STORAGESVC_TIMEOUT",
    "BREAKER_TIMEOUT",
    "BREAKER_CONSECUTIVE_FAILURES",
    "BREAKER_FAILURE_RATIO",
    "BREAKER_MIN_REQUESTS",
    "BREAKER_HALF_OPEN_PROBES",
    "BREAKER_INTERVAL",
    "RETRY_MAX_ATTEMPTS",
    "RETRY_INITIAL_INTERVAL",
    "RETRY_MAX_INTERVAL",
    "SHUTDOWN_TIMEOUT",
    "SHUTDOWN_DRAIN_DELAY",
];

#[test]
fn a_bad_variable_stops_start_up_with_one_line_naming_it_and_exit_code_2() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("HTTP_PORT", "abc")],
            "invalid HTTP_PORT \"abc\": expected PORT, :PORT or HOST:PORT",
        ),
        (
            &[("REDIS_ADDR", "redis")],
            "invalid REDIS_ADDR \"redis\": expected HOST:PORT",
        ),
        (&[("REDIS_URL", "http://x")], "invalid REDIS_URL"),
        (
            &[("REDIS_ADDR", "a:1"), ("REDIS_URL", "redis://b:2")],
            "REDIS_",
        ),
        (
            &[("STORAGESVC_URL", "localhost:8082")],
            "invalid STORAGESVC_URL",
        ),
        (
            &[("LOG_FORMAT", "xml")],
            "invalid LOG_FORMAT \"xml\": expected json or pretty",
        ),
        (&[("RUST_LOG", "booksvc=loud")], "invalid RUST_LOG"),
        (&[("CACHE_FRESH_TTL", "5")], "invalid CACHE_FRESH_TTL \"5\""),
        (
            &[("REQUEST_BUDGET", "0s")],
            "invalid REQUEST_BUDGET \"0s\": must be greater than zero",
        ),
        (&[("BREAKER_TIMEOUT", "soon")], "invalid BREAKER_TIMEOUT"),
        (
            &[("BREAKER_FAILURE_RATIO", "most")],
            "invalid BREAKER_FAILURE_RATIO",
        ),
        (
            &[("BREAKER_CONSECUTIVE_FAILURES", "-1")],
            "invalid BREAKER_CONSECUTIVE_FAILURES",
        ),
        (
            &[("RETRY_MAX_ATTEMPTS", "0")],
            "invalid RETRY_MAX_ATTEMPTS \"0\"",
        ),
        (
            &[("REDIS_TIMEOUT", "2s")],
            "invalid REDIS_TIMEOUT: must be less than half",
        ),
    ];
    for (variables, expected) in cases {
        let output = Command::new(BINARY)
            .env_clear()
            .envs(variables.iter().copied())
            .output()
            .expect("the binary runs");

        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{variables:?}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{variables:?}: one line, got {stderr:?}"
        );
        assert!(
            stderr.starts_with(&format!("booksvc: {expected}")),
            "{variables:?}: {stderr:?}"
        );
    }
}

/// A bad secret variable is named with the reason, never echoed: clap's error carries the raw
/// value, and a URL's password would otherwise reach the container log.
#[test]
fn a_bad_secret_variable_is_refused_without_printing_its_value() {
    let cases = [
        ("AMQP_URL", "amqp://booksvc:Pr0dPass@mq:badport/"),
        ("AMQP_URL", "http://booksvc:Pr0dPass@mq:5672/"),
        ("REDIS_URL", "redis://:Pr0dPass@cache:badport"),
        ("REDIS_URL", "http://:Pr0dPass@cache:6379"),
    ];
    for (variable, value) in cases {
        let output = Command::new(BINARY)
            .env_clear()
            .env(variable, value)
            .output()
            .expect("the binary runs");

        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{variable}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{variable}: one line, got {stderr:?}"
        );
        assert!(
            stderr.starts_with(&format!("booksvc: invalid {variable}: ")),
            "{variable}: {stderr:?}"
        );
        assert!(
            !stderr.contains("Pr0dPass"),
            "{variable}: the secret leaked: {stderr:?}"
        );
    }
}

#[test]
fn a_malformed_amqp_url_list_stops_start_up_naming_the_variable_but_not_the_password() {
    let cases = [
        (
            "amqp://u:s3cret@mq1:5672/%2f,http://u:s3cret@mq2:5672/%2f",
            "entry 2 of 2",
        ),
        (
            "amqp://u:s3cret@mq1:5672/%2f,,amqp://u:s3cret@mq3:5672/%2f",
            "entry 2 of 3 is empty",
        ),
        ("amqp://u:s3cret@mq1:5672/%2f,", "entry 2 of 2 is empty"),
        ("amqp://u:s3cret@mq1:notaport/%2f", "expected amqp://"),
    ];
    for (value, reason) in cases {
        let output = Command::new(BINARY)
            .env_clear()
            .env("AMQP_URL", value)
            .output()
            .expect("the binary runs");

        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{value}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{value}: one line, got {stderr:?}"
        );
        assert!(
            stderr.starts_with("booksvc: invalid AMQP_URL: "),
            "{value}: {stderr:?}"
        );
        assert!(stderr.contains(reason), "{value}: {stderr:?}");
        assert!(
            !stderr.contains("s3cret"),
            "the password leaked: {stderr:?}"
        );
    }
}

#[test]
fn help_lists_every_variable_with_its_default() {
    let output = Command::new(BINARY)
        .env_clear()
        .arg("--help")
        .output()
        .expect("the binary runs");

    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in VARIABLES {
        assert!(
            help.contains(&format!("[env: {variable}")),
            "--help misses {variable}:\n{help}"
        );
    }
    for default in [
        "[default: 8081]",
        "[default: 1s]",
        "[default: http://localhost:8082]",
    ] {
        assert!(help.contains(default), "--help misses {default}:\n{help}");
    }
}

/// The variables `--help` lists, each as `[env: NAME=...]` or `[env: NAME]` (secrets hidden).
fn variables_in_help() -> BTreeSet<String> {
    let output = Command::new(BINARY)
        .env_clear()
        .arg("--help")
        .output()
        .expect("the binary runs");
    let help = String::from_utf8_lossy(&output.stdout);
    help.split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

/// The variables `docs/configuration.md` documents for `service`: the `` `NAME` `` in the first
/// column of every table row under its `## <service>` heading, up to the next `## `.
fn variables_in_doc(service: &str) -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    let doc = std::fs::read_to_string(path).expect("docs/configuration.md exists");
    let heading = format!("## {service}");
    doc.lines()
        .skip_while(|line| line.trim() != heading)
        .skip(1)
        .take_while(|line| !line.starts_with("## "))
        .filter_map(|line| line.strip_prefix('|')?.split('|').next())
        .filter_map(|cell| cell.trim().strip_prefix('`')?.strip_suffix('`'))
        .filter(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn configuration_doc_documents_exactly_the_variables_of_help() {
    let in_help = variables_in_help();
    let in_doc = variables_in_doc("booksvc");

    assert!(in_help.contains("HTTP_PORT"), "--help parsed: {in_help:?}");
    let undocumented: Vec<_> = in_help.difference(&in_doc).collect();
    assert!(
        undocumented.is_empty(),
        "docs/configuration.md, section `## booksvc`, misses {undocumented:?}"
    );
    let unknown: Vec<_> = in_doc.difference(&in_help).collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md, section `## booksvc`, names {unknown:?}, which booksvc does not read"
    );
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_and_exits_0() -> anyhow::Result<()> {
    // storagesvc that accepts and never answers: a read takes the whole budget.
    let hung = std::net::TcpListener::bind("127.0.0.1:0")?;
    let nothing = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = tokio::process::Command::new(BINARY)
        .env_clear()
        .env("HTTP_PORT", format!("127.0.0.1:{port}"))
        .env("STORAGESVC_URL", format!("http://{}", hung.local_addr()?))
        .env("REDIS_ADDR", format!("127.0.0.1:{nothing}"))
        // No broker either: the consumer keeps reconnecting, which must not delay shutdown.
        .env(
            "AMQP_URL",
            format!("amqp://guest:guest@127.0.0.1:{nothing}/%2f"),
        )
        .env("REQUEST_BUDGET", "1s")
        .env("SHUTDOWN_DRAIN_DELAY", "300ms")
        .env("SHUTDOWN_TIMEOUT", "3s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    let ready_url = format!("{base}/healthz/ready");
    let up = eventually(Duration::from_secs(10), || async {
        reqwest::get(&ready_url)
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    assert!(up, "the binary never became ready");

    // A read is in flight (it will end with a 503 when the budget runs out)…
    let in_flight = tokio::spawn(reqwest::get(format!("{base}/books/1")));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = child.id().expect("the child is running").to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()?
            .success()
    );
    let started = Instant::now();

    // …readiness turns 503 at once, the read still gets its answer, and the process exits 0.
    // (`kill` returns before the signal is handled, and readiness now answers from a shared
    // check at once, without a slow call that used to give the signal time to land.)
    let not_ready = eventually(Duration::from_secs(2), || async {
        reqwest::get(&ready_url)
            .await
            .is_ok_and(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    assert!(not_ready, "readiness did not turn 503");
    let answer = in_flight.await??;
    assert_eq!(
        answer.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "answered, not cut off"
    );
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await??;
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    drop(hung);
    Ok(())
}
