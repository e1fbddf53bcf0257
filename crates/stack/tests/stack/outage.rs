//! `stop postgres` from a second terminal: booksvc answers `stale`, storagesvc refuses writes
//! with 503; `start postgres` brings fresh reads back; Ctrl-C leaves nothing behind, a
//! killed and restarted PostgreSQL included.

use std::time::Duration;

use crate::support::{RunningStack, assert_nothing_left, curl, eventually, row, status_rows};

const OUTAGE: Duration = Duration::from_secs(120);

#[test]
fn a_postgres_outage_from_a_second_terminal_and_a_clean_ctrl_c() {
    let mut stack = RunningStack::start();
    let banner = stack.stdout();
    let first = status_rows(&banner);
    for name in ["postgres", "redis", "rabbitmq", "storagesvc", "booksvc"] {
        let row = row(&first, name);
        assert_eq!(row.state, "running", "{banner}");
        assert!(row.pid.is_some(), "{name} has no pid in:\n{banner}");
    }
    for name in ["postgres", "redis", "rabbitmq"] {
        let data = row(&first, name).data.clone();
        assert!(
            data.as_ref().is_some_and(|dir| dir.is_dir()),
            "{name}: {data:?}\n{banner}"
        );
    }
    assert!(
        banner.contains("login bookstore / bookstore-dev"),
        "{banner}"
    );
    check_broker_users(&banner);

    let book = format!("{}/books/1", stack.booksvc());
    eventually("booksvc answers book 1", OUTAGE, || {
        curl(&[&book]).status == 200
    });

    let (status, out) = stack.ctl("stop postgres");
    assert!(status.success(), "{out}");
    assert!(out.contains("postgres stopped"), "{out}");
    eventually("a stale read while PostgreSQL is down", OUTAGE, || {
        let answer = curl(&[&book]);
        answer.status == 200 && answer.header("x-cache").as_deref() == Some("stale")
    });
    let write = curl(&[
        "-X",
        "POST",
        &format!("{}/books", stack.storagesvc()),
        "-H",
        "Authorization: Bearer dev-token",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"title":"Dune","author":"Frank Herbert","desc":"Spice"}"#,
    ]);
    assert_eq!(write.status, 503, "{write:?}");

    let (status, out) = stack.ctl("start postgres");
    assert!(status.success(), "{out}");
    eventually("a fresh read once PostgreSQL is back", OUTAGE, || {
        let answer = curl(&[&book]);
        let cache = answer.header("x-cache").unwrap_or_default();
        answer.status == 200 && (cache == "miss" || cache == "hit")
    });

    // A crash and a restart through the stack: the new postmaster is the stack's to clean up.
    let (status, out) = stack.ctl("kill postgres");
    assert!(status.success(), "{out}");
    let (status, out) = stack.ctl("start postgres");
    assert!(status.success(), "{out}");
    let (status, table) = stack.ctl("status");
    assert!(status.success(), "{table}");
    let last = status_rows(&table);
    assert_ne!(
        row(&last, "postgres").pid,
        row(&first, "postgres").pid,
        "{table}"
    );
    assert_eq!(row(&last, "postgres").state, "running", "{table}");

    let exit = stack.interrupt();
    assert!(exit.success(), "{exit}\n{}", stack.stderr());
    assert!(
        stack.stderr().contains("stack: stopped"),
        "{}",
        stack.stderr()
    );
    assert_nothing_left(&first, stack.booksvc_port);
    assert_nothing_left(&last, stack.booksvc_port);
}

/// The UI login is compose's `bookstore` / `bookstore-dev`, `guest` is gone, and each service
/// is connected as its own user.
fn check_broker_users(banner: &str) {
    let ui = banner
        .split_whitespace()
        .skip_while(|word| *word != "UI")
        .nth(1)
        .unwrap_or_else(|| panic!("no RabbitMQ UI in:\n{banner}"))
        .to_owned();
    let whoami = format!("{ui}/api/whoami");
    assert_eq!(
        curl(&["-u", "bookstore:bookstore-dev", &whoami]).status,
        200
    );
    assert_eq!(curl(&["-u", "guest:guest", &whoami]).status, 401);
    let connections = format!("{ui}/api/connections");
    eventually(
        "both services are connected as their own users",
        OUTAGE,
        || {
            let body = curl(&["-u", "bookstore:bookstore-dev", &connections]).body;
            body.contains(r#""user":"storagesvc""#) && body.contains(r#""user":"booksvc""#)
        },
    );
}
