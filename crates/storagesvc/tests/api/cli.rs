//! The real binary: configuration errors, `--help`, and a clean exit on SIGTERM.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::eventually;

const BINARY: &str = env!("CARGO_BIN_EXE_storagesvc");

/// Every variable `--help` must document.
const VARIABLES: &[&str] = &[
    "HTTP_PORT",
    "DATABASE_URL",
    "AMQP_URL",
    "STORAGESVC_WRITE_TOKEN",
    "RUST_LOG",
    "LOG_FORMAT",
    "DB_POOL_SIZE",
    "DB_ACQUIRE_TIMEOUT",
    "DB_STATEMENT_TIMEOUT",
    "DB_STARTUP_TIMEOUT",
    "BODY_LIMIT",
    "SHUTDOWN_TIMEOUT",
    "SHUTDOWN_DRAIN_DELAY",
    "OUTBOX_BATCH_SIZE",
    "OUTBOX_PUBLISH_WINDOW",
    "OUTBOX_POLL_INTERVAL",
    "OUTBOX_CONFIRM_TIMEOUT",
    "OUTBOX_RECONNECT_MAX",
    "OUTBOX_RETENTION",
];

#[test]
fn a_bad_variable_stops_start_up_with_one_line_naming_it_and_exit_code_2() {
    let cases = [
        (
            "HTTP_PORT",
            "abc",
            "invalid HTTP_PORT \"abc\": expected PORT, :PORT or HOST:PORT",
        ),
        ("DB_POOL_SIZE", "0", "invalid DB_POOL_SIZE \"0\""),
        (
            "DB_ACQUIRE_TIMEOUT",
            "fast",
            "invalid DB_ACQUIRE_TIMEOUT \"fast\"",
        ),
        (
            "LOG_FORMAT",
            "xml",
            "invalid LOG_FORMAT \"xml\": expected json or pretty",
        ),
        ("RUST_LOG", "sqlx=loud", "invalid RUST_LOG"),
        ("BODY_LIMIT", "huge", "invalid BODY_LIMIT \"huge\""),
        ("OUTBOX_RETENTION", "-1s", "invalid OUTBOX_RETENTION"),
        (
            "STORAGESVC_WRITE_TOKEN",
            "",
            // A secret's value is never echoed, not even an empty one.
            "invalid STORAGESVC_WRITE_TOKEN: must not be empty",
        ),
    ];
    for (variable, value, expected) in cases {
        let output = Command::new(BINARY)
            .env_clear()
            .env(variable, value)
            .output()
            .expect("the binary runs");

        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{variable}={value:?}: {stderr}"
        );
        assert_eq!(
            stderr.lines().count(),
            1,
            "{variable}={value:?}: one line, got {stderr:?}"
        );
        assert!(
            stderr.starts_with(&format!("storagesvc: {expected}")),
            "{variable}: {stderr:?}"
        );
    }
}

/// A bad secret variable is named with the reason, never echoed: clap's error carries the raw
/// value, and a URL's password would otherwise reach the container log.
#[test]
fn a_bad_secret_variable_is_refused_without_printing_its_value() {
    let cases = [
        (
            "DATABASE_URL",
            "postgres://pg:Pr0dPass@db:5432/crud?sslmode=requir",
        ),
        ("DATABASE_URL", "mysql://pg:Pr0dPass@db/crud"),
        ("AMQP_URL", "http://relay:Pr0dPass@mq:5672/"),
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
            stderr.starts_with(&format!("storagesvc: invalid {variable}: ")),
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
            stderr.starts_with("storagesvc: invalid AMQP_URL: "),
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
    assert!(
        help.contains("[default: 250ms]"),
        "defaults are shown:\n{help}"
    );
    assert!(
        !help.contains("test-write-token"),
        "secret values are hidden"
    );
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
    let in_doc = variables_in_doc("storagesvc");

    assert!(in_help.contains("HTTP_PORT"), "--help parsed: {in_help:?}");
    let undocumented: Vec<_> = in_help.difference(&in_doc).collect();
    assert!(
        undocumented.is_empty(),
        "docs/configuration.md, section `## storagesvc`, misses {undocumented:?}"
    );
    let unknown: Vec<_> = in_doc.difference(&in_help).collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md, section `## storagesvc`, names {unknown:?}, which storagesvc does not read"
    );
}

#[tokio::test]
async fn sigterm_makes_the_binary_exit_0_within_the_shutdown_timeout() -> anyhow::Result<()> {
    let database_url = testkit::Postgres::shared().await?.fresh_database().await?;
    let amqp_url = testkit::RabbitMq::shared().await?.fresh_vhost().await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = tokio::process::Command::new(BINARY)
        .env_clear()
        .env("HTTP_PORT", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", &database_url)
        .env("AMQP_URL", &amqp_url)
        .env("SHUTDOWN_TIMEOUT", "3s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let ready_url = format!("http://127.0.0.1:{port}/healthz/ready");
    let became_ready = eventually(Duration::from_secs(20), || async {
        reqwest::get(&ready_url)
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(became_ready, "the binary never became ready");

    let pid = child.id().expect("the child is running").to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status()?;
    assert!(killed.success());
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await??;

    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}
