//! `docs/stack.md`'s outage walkthrough, run as written against a real stack: every `$ command`
//! of its code blocks is run in a shell, in order, and what it prints is compared with the
//! output the doc shows under it. A doc that shows a header, a status or a readiness body the
//! run does not print fails here.
//!
//! What is compared: the status line; the headers the doc shows, and that the run shows no
//! `x-cache`, `cache-status` or `location` the doc leaves out (`a | b`: either); readiness
//! bodies as JSON, every key and string (so every status and error message), numbers ignored; `stack ctl`
//! answers with their numbers (ports, pids, seconds) ignored; anything else exactly. What
//! varies from run to run is ignored: `age`'s value and `ttl=` in `cache-status`.
//!
//! The steps run [`PACE`] apart, as a reader pastes them. Reads of a book are compared on
//! their first answer, as the reader sees it (a retry would change the cache the doc
//! describes); readiness bodies are polled until they match, since they converge after an
//! outage and reading them changes nothing.
//!
//! The README's compose walkthrough is checked the same way against the stack (compose's
//! stand-in: `docker compose stop X` is `stack ctl stop X`): each `curl -i` comment names a
//! status and `Header: value` pairs, and the run must show them.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{RunningStack, STACK};

/// The time between two steps: a reader's, who reads one answer before pasting the next
/// command. The docs' timings (entries fresh for 5 s) are stated for that pace.
const PACE: Duration = Duration::from_secs(2);

/// How long a readiness body may take to show what the doc says (a pool timing out, a probe).
const CONVERGE: Duration = Duration::from_secs(90);

/// One `$ command` and the lines the doc shows under it.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    command: String,
    expected: Vec<String>,
}

/// The steps of the code blocks under `heading`, up to the next `## ` heading.
fn steps(markdown: &str, heading: &str) -> Vec<Step> {
    let section = markdown
        .split_once(heading)
        .unwrap_or_else(|| panic!("no {heading:?} in the doc"))
        .1;
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut steps: Vec<Step> = vec![];
    let mut in_block = false;
    let mut continued = false;
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continued = false;
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                command: command.to_owned(),
                expected: vec![],
            });
        } else if let Some(step) = steps.last_mut() {
            if continued {
                step.command.push('\n');
                step.command.push_str(line);
            } else if !line.trim().is_empty() {
                step.expected.push(line.to_owned());
            }
        }
        continued = line.ends_with('\\');
    }
    steps
}

/// The doc's command for this stack: its ports, its binary for `stack ctl`.
fn localize(command: &str, stack: &RunningStack) -> String {
    command
        .replace(
            "stack ctl ",
            &format!("'{STACK}' ctl --booksvc-port {} ", stack.booksvc_port),
        )
        .replace(
            "localhost:8081",
            &format!("127.0.0.1:{}", stack.booksvc_port),
        )
        .replace(
            "localhost:8082",
            &format!("127.0.0.1:{}", stack.storagesvc_port),
        )
}

/// Runs `command` in bash, as typed: stdout, then stderr.
fn run(command: &str) -> String {
    let output = Command::new("bash")
        .args(["-c", command])
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .output()
        .expect("bash");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Whether `actual` shows what `step` says; the difference when not.
fn compare(step: &Step, actual: &str) -> Result<(), String> {
    let actual = actual.replace("\r\n", "\n");
    let first = step
        .expected
        .first()
        .map(String::as_str)
        .unwrap_or_default();
    if first.starts_with("HTTP/") {
        compare_http(&step.expected, &actual)
    } else if first.starts_with('{') {
        compare_json(first, actual.trim())
    } else {
        let mask = |text: &str| {
            if step.command.starts_with("stack ctl") {
                without_digits(text)
            } else {
                text.to_owned()
            }
        };
        let expected = mask(&step.expected.join("\n"));
        let actual = mask(actual.trim_end());
        (expected == actual)
            .then_some(())
            .ok_or_else(|| format!("doc shows:\n{expected}\nthe run printed:\n{actual}"))
    }
}

/// Headers whose absence the doc shows too: leaving one out of the doc is saying it is absent.
const WATCHED: [&str; 3] = ["x-cache", "cache-status", "location"];

fn compare_http(expected: &[String], actual: &str) -> Result<(), String> {
    let head = actual.split("\n\n").next().unwrap_or_default();
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default();
    let headers: Vec<(String, String)> = lines.filter_map(header).collect();
    let mut wrong = vec![];
    if status != expected[0] {
        wrong.push(format!(
            "status {status:?}, the doc shows {:?}",
            expected[0]
        ));
    }
    let shown: Vec<(String, String)> = expected[1..]
        .iter()
        .map(|line| header(line).unwrap_or_else(|| panic!("not a header: {line:?}")))
        .collect();
    for (name, value) in &shown {
        match headers.iter().find(|(n, _)| n == name) {
            None => wrong.push(format!("no {name} header, the doc shows `{name}: {value}`")),
            // `a | b`: the doc says either may show (a race the reader cannot control).
            Some((_, real))
                if !value
                    .split(" | ")
                    .any(|one| varying(name, real) == varying(name, one)) =>
            {
                wrong.push(format!("`{name}: {real}`, the doc shows `{name}: {value}`"));
            }
            Some(_) => {}
        }
    }
    for (name, value) in &headers {
        if WATCHED.contains(&name.as_str()) && !shown.iter().any(|(n, _)| n == name) {
            wrong.push(format!("`{name}: {value}` is not in the doc"));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\nthe run printed:\n{head}", wrong.join("\n")))
    }
}

/// `name: value`, the name lowercased.
fn header(line: &str) -> Option<(String, String)> {
    let (name, value) = line.split_once(':')?;
    Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
}

/// A header's value with what differs between runs masked: `age`, the `ttl=` of cache-status.
fn varying(name: &str, value: &str) -> String {
    match name {
        "age" => "N".to_owned(),
        "cache-status" => value
            .split("; ")
            .map(|part| {
                if part.starts_with("ttl=") {
                    "ttl=N"
                } else {
                    part
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => value.to_owned(),
    }
}

fn compare_json(expected: &str, actual: &str) -> Result<(), String> {
    let expected_value: Value =
        serde_json::from_str(expected).unwrap_or_else(|e| panic!("the doc's JSON: {e}"));
    let actual_value: Value = serde_json::from_str(actual)
        .map_err(|e| format!("not JSON ({e}): {actual}\nthe doc shows:\n{expected}"))?;
    matches(&expected_value, &actual_value)
        .then_some(())
        .ok_or_else(|| format!("the doc shows:\n{expected}\nthe run printed:\n{actual}"))
}

/// The same keys and strings; numbers may differ (ages, latencies and backlogs vary), and so
/// may digits inside strings (ports and counts in messages, `127.0.0.1:36321: …`). A doc
/// string `a | b` accepts either (a state the reader's timing decides).
fn matches(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Number(_), Value::Number(_)) => true,
        (Value::String(shown), Value::String(real)) => shown
            .split(" | ")
            .any(|one| without_digits(one) == without_digits(real)),
        (Value::Array(shown), Value::Array(real)) => {
            shown.len() == real.len() && shown.iter().zip(real).all(|(s, r)| matches(s, r))
        }
        (Value::Object(shown), Value::Object(real)) => {
            shown.len() == real.len()
                && shown
                    .iter()
                    .all(|(key, s)| real.get(key).is_some_and(|r| matches(s, r)))
        }
        (shown, real) => shown == real,
    }
}

/// Every run of digits replaced by `N` (ports, pids, durations).
fn without_digits(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !out.ends_with('N') {
                out.push('N');
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn stack_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/stack.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const HEADING: &str = "## An outage walkthrough";

#[test]
fn the_outage_walkthrough_shows_what_a_real_run_prints() {
    let doc = stack_md();
    let steps = steps(&doc, HEADING);
    assert!(steps.len() >= 15, "too few steps found: {steps:#?}");
    let stack = RunningStack::start_as_documented();
    let mut wrong = vec![];
    for step in &steps {
        std::thread::sleep(PACE);
        let command = localize(&step.command, &stack);
        let polled = step.command.contains("/healthz/");
        let deadline = Instant::now() + if polled { CONVERGE } else { Duration::ZERO };
        let result = loop {
            let result = compare(step, &run(&command));
            if result.is_ok() || Instant::now() >= deadline {
                break result;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        if let Err(difference) = result {
            wrong.push(differs(
                "docs/stack.md",
                &format!("$ {}", step.command),
                &difference,
            ));
        }
    }
    stop_and_assert(stack, "docs/stack.md", &wrong);
}

/// One step's difference, printed at once (a long run shows progress) and kept for the end.
fn differs(doc: &str, command: &str, difference: &str) -> String {
    eprintln!("{doc}: {command}\n{difference}\n");
    format!("{command}\n{difference}")
}

/// Stops the stack; fails naming every step `doc` got wrong, or if the stack did not exit
/// cleanly.
fn stop_and_assert(mut stack: RunningStack, doc: &str, wrong: &[String]) {
    let exit = stack.interrupt();
    assert!(
        wrong.is_empty(),
        "{doc}'s walkthrough differs from a real run:\n\n{}",
        wrong.join("\n\n")
    );
    assert!(exit.success(), "{exit}\n{}", stack.stderr());
}

/// The comparison itself, without a stack: it notices what a doc gets wrong.
#[test]
fn the_comparison_catches_a_wrong_doc() {
    let doc = stack_md();
    let steps = steps(&doc, HEADING);
    let read = steps
        .iter()
        .find(|step| step.expected.iter().any(|l| l == "x-cache: hit"))
        .expect("a hit in the walkthrough");
    let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-cache: hit\r\n\
              age: 3\r\ncache-status: booksvc; hit; ttl=2\r\n\r\n{}";
    assert_eq!(compare(read, ok), Ok(()));
    for wrong in [
        ok.replace("x-cache: hit", "x-cache: miss"),
        ok.replace("200 OK", "503 Service Unavailable"),
        ok.replace("; hit;", "; fwd=stale;"),
        ok.replace("x-cache: hit\r\n", ""),
        ok.replace("\r\n\r\n", "\r\nlocation: /books/9\r\n\r\n"),
    ] {
        assert!(compare(read, &wrong).is_err(), "{wrong}");
    }
    let ready = Step {
        command: "curl -s localhost:8081/healthz/ready".into(),
        expected: vec![r#"{"status":"ready","n":1}"#.into()],
    };
    assert_eq!(compare(&ready, r#"{"n":7,"status":"ready"}"#), Ok(()));
    assert!(compare(&ready, r#"{"n":7,"status":"not ready"}"#).is_err());
    assert!(compare(&ready, r#"{"status":"ready"}"#).is_err());
    let either = Step {
        command: "curl -s localhost:8081/healthz/ready".into(),
        expected: vec![r#"{"consumer":{"status":"running | paused"}}"#.into()],
    };
    assert_eq!(
        compare(&either, r#"{"consumer":{"status":"running"}}"#),
        Ok(())
    );
    assert_eq!(
        compare(&either, r#"{"consumer":{"status":"paused"}}"#),
        Ok(())
    );
    assert!(compare(&either, r#"{"consumer":{"status":"stopped"}}"#).is_err());
    let ctl = Step {
        command: "stack ctl start redis".into(),
        expected: vec!["redis started: port 1 (pid 2, 0.1s)".into()],
    };
    assert_eq!(
        compare(&ctl, "redis started: port 39 (pid 77, 2.4s)\n"),
        Ok(())
    );
    assert!(compare(&ctl, "error: redis is already running (pid 7)\n").is_err());
}

/// A command of the README's compose walkthrough and what its comment says it shows: a status
/// (`200`) and `Header: value` pairs, separated by ` · `; words in parentheses are prose.
#[derive(Debug)]
struct Claimed {
    command: String,
    status: Option<String>,
    headers: Vec<(String, String)>,
}

/// The commands of the first code block under `### With Docker`, without the set-up the test
/// does itself (the token, `docker compose up`).
fn readme_walkthrough(readme: &str) -> Vec<Claimed> {
    let section = readme
        .split_once("### With Docker")
        .expect("a With Docker section")
        .1;
    let block = section
        .split("```")
        .nth(1)
        .expect("a code block under With Docker");
    let mut claimed: Vec<Claimed> = vec![];
    let mut continued = false;
    for line in block.lines().skip(1) {
        let was_continued = continued;
        continued = line.ends_with('\\');
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if was_continued {
            let last = claimed.last_mut().expect("a continued command");
            last.command.push('\n');
            last.command.push_str(line);
            continue;
        }
        if line.starts_with("export ") || line.starts_with("docker compose up") {
            continue;
        }
        let (command, comment) = line.split_once(" # ").unwrap_or((line, ""));
        let claims = comment.split(" (").next().unwrap_or_default();
        let mut step = Claimed {
            command: command.trim_end().to_owned(),
            status: None,
            headers: vec![],
        };
        for claim in claims.split(" · ").map(str::trim).filter(|c| !c.is_empty()) {
            if claim.bytes().all(|b| b.is_ascii_digit()) {
                step.status = Some(claim.to_owned());
            } else {
                step.headers
                    .push(header(claim).unwrap_or_else(|| panic!("not a header: {claim:?}")));
            }
        }
        claimed.push(step);
    }
    claimed
}

/// Whether the answer shows what the README's comment claims.
fn check_claims(step: &Claimed, output: &str) -> Result<(), String> {
    let output = output.replace("\r\n", "\n");
    let answer = output
        .find("HTTP/")
        .map_or("", |at| &output[at..])
        .split("\n\n")
        .next()
        .unwrap_or_default();
    let mut lines = answer.lines();
    let status = lines.next().and_then(|line| line.split_whitespace().nth(1));
    let headers: Vec<(String, String)> = lines.filter_map(header).collect();
    let mut wrong = vec![];
    if let Some(claimed) = step.status.as_deref().filter(|c| status != Some(*c)) {
        wrong.push(format!("status {status:?}, the README says {claimed}"));
    }
    for (name, value) in &step.headers {
        let real = headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let either = |real: &String| {
            value
                .split(" | ")
                .any(|one| varying(name, real) == varying(name, one))
        };
        if !real.is_some_and(either) {
            wrong.push(format!("{name}: {real:?}, the README says `{value}`"));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\nthe run printed:\n{output}", wrong.join("\n")))
    }
}

#[test]
fn the_readmes_walkthrough_shows_what_a_real_run_prints() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let readme = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let steps = readme_walkthrough(&readme);
    let claims: usize = steps.iter().map(|s| s.headers.len()).sum();
    assert!(claims >= 5, "too few claims found: {steps:#?}");
    let stack = RunningStack::start_as_documented();
    let mut wrong = vec![];
    for step in &steps {
        std::thread::sleep(PACE);
        // The stack is compose's stand-in: `docker compose stop X` is `stack ctl stop X`.
        let command = localize(
            &step.command.replace("docker compose ", "stack ctl "),
            &stack,
        );
        let output = run_with_token(&command);
        if let Err(difference) = check_claims(step, &output) {
            wrong.push(differs("README.md", &step.command, &difference));
        }
    }
    stop_and_assert(stack, "README.md", &wrong);
}

/// `run`, with the write token the README exported (the stack's development token).
fn run_with_token(command: &str) -> String {
    run(&format!("STORAGESVC_WRITE_TOKEN=dev-token\n{command}"))
}

/// The README's claims, checked without a stack: a claim the answer does not bear out fails.
#[test]
fn the_readme_check_catches_a_wrong_claim() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let readme = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let steps = readme_walkthrough(&readme);
    let first = steps
        .iter()
        .find(|step| {
            step.headers
                .iter()
                .any(|(n, v)| n == "x-cache" && v == "miss | hit")
        })
        .expect("the first read in the README's walkthrough");
    let ok = "HTTP/1.1 200 OK\r\nx-cache: hit\r\ncache-status: booksvc; hit; ttl=3\r\n\r\n{}";
    assert_eq!(check_claims(first, ok), Ok(()));
    for wrong in [
        ok.replace("x-cache: hit", "x-cache: stale"),
        ok.replace("200 OK", "503 Service Unavailable"),
        ok.replace("x-cache: hit\r\n", ""),
    ] {
        assert!(check_claims(first, &wrong).is_err(), "{wrong}");
    }
}
