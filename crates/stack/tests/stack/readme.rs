//! The README and the docs as a newcomer reads them: the two commands it opens with, and every
//! file, cargo package, test target, example and stack option they name exist. A rename that
//! forgets the docs fails here, not on a reader's machine.
//!
//! What the walkthroughs *show* (headers, readiness bodies) is checked by running them:
//! `walkthrough.rs`, for `docs/stack.md`'s and the README's.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::STACK;

/// The repository root (this crate is `crates/stack`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// README.md, deploy/k8s/README.md and every `docs/**/*.md`, with their paths.
fn documents() -> Vec<(PathBuf, String)> {
    let root = root();
    let mut paths = vec![root.join("README.md"), root.join("deploy/k8s/README.md")];
    for dir in [root.join("docs"), root.join("docs/decisions")] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
            .collect();
        found.sort();
        paths.extend(found);
    }
    paths
        .into_iter()
        .map(|path| {
            let text = read(&path);
            (path, text)
        })
        .collect()
}

/// The lines of the first fenced code block of `markdown`.
fn first_code_block(markdown: &str) -> Vec<&str> {
    markdown
        .lines()
        .skip_while(|line| !line.starts_with("```"))
        .skip(1)
        .take_while(|line| !line.starts_with("```"))
        .collect()
}

#[test]
fn the_readme_opens_with_the_two_commands_and_ci_runs_the_test_one() {
    let readme = read(&root().join("README.md"));
    let block = first_code_block(&readme);
    let starts = |prefix: &str| block.iter().find(|line| line.starts_with(prefix));
    let run = starts("docker compose up --build").expect("a line running the system");
    assert!(
        run.contains("cargo run -p stack"),
        "the no-Docker command belongs beside compose's: {run}"
    );
    let test = starts("cargo test").expect("a line running the tests");
    assert!(test.contains('#'), "say what it runs: {test}");
    // `.ci/run` runs exactly the README's test command (with CI's flags), after installing.
    let ci = read(&root().join(".ci/run"));
    let installs = ci
        .find("scripts/install-deps.sh")
        .expect(".ci/run installs");
    let tests = ci
        .find("cargo test --workspace")
        .expect(".ci/run runs cargo test");
    assert!(installs < tests, "install before testing");
}

/// Path-like words: `scripts/x.sh`, `docs/a.md`, `.ci/run`, `crates/e2e/tests/fleet`, …
fn named_paths(text: &str) -> Vec<String> {
    const ROOTS: [&str; 8] = [
        ".ci/",
        "scripts/",
        "docs/",
        "deploy/",
        "containers/",
        "crates/",
        "ui-tests/",
        "Dockerfile",
    ];
    let mut found = vec![];
    for word in text.split(|c: char| c.is_whitespace() || "`()[]\"',;|".contains(c)) {
        let word = word.trim_end_matches([':', '.', '→']);
        let word = word.strip_prefix("./").unwrap_or(word);
        let placeholder = word.contains(['<', '*', '{', '$', '…']);
        if !placeholder && ROOTS.iter().any(|root| word.starts_with(root)) {
            found.push(word.to_owned());
        }
    }
    found
}

#[test]
fn every_file_the_readme_and_the_docs_name_exists() {
    let root = root();
    let mut missing = vec![];
    for (doc, text) in documents() {
        for path in named_paths(&text) {
            // A path may carry an anchor or a line (`docs/runbook.md#x`, `src/a.rs:41`).
            let file = path.split(['#', ':']).next().unwrap_or(&path);
            let in_crate = |dir: &str| root.join(dir).join(file).exists();
            // `src/…` and `tests/…` inside a crate's own doc are relative to that crate.
            let exists = root.join(file).exists()
                || in_crate("crates/booksvc")
                || in_crate("crates/storagesvc");
            if !exists {
                missing.push(format!("{}: {path}", doc.display()));
            }
        }
        for link in markdown_links(&text) {
            let base = doc.parent().expect("a document is in a directory");
            if !base.join(&link).exists() {
                missing.push(format!("{}: link {link}", doc.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "named but absent:\n{}",
        missing.join("\n")
    );
}

/// Every file name in the repository (as git tracks it), e.g. `api.md`, `README.md`.
fn tracked_file_names() -> Vec<String> {
    let out = Command::new("git")
        .args(["ls-files"])
        .current_dir(root())
        .output()
        .expect("git");
    assert!(out.status.success(), "git ls-files failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|path| path.rsplit('/').next().map(str::to_owned))
        .collect()
}

/// A clone is all a reader has: no document may name a markdown file that is not in it
/// (`DESIGN.md`, `../shared/…`), nor a path that climbs out of it.
#[test]
fn no_document_names_anything_outside_the_repository() {
    let names = tracked_file_names();
    let mut outside = vec![];
    for (doc, text) in documents() {
        for word in text.split(|c: char| c.is_whitespace() || "`()[]\"',;|<>".contains(c)) {
            let word = word.trim_end_matches([':', '.', '→']);
            let file = word.split('#').next().unwrap_or(word);
            let named_md = file.ends_with(".md") && !file.contains(['*', '<', '{', '$']);
            let missing_md = named_md
                && !names
                    .iter()
                    .any(|n| Some(n.as_str()) == file.rsplit('/').next());
            let climbs_out = word.contains("../") && {
                let base = doc.parent().expect("a document is in a directory");
                let depth = base
                    .strip_prefix(root())
                    .map_or(0, |rel| rel.components().count());
                word.matches("../").count() > depth
            };
            if missing_md || climbs_out || word.starts_with("/work/") {
                outside.push(format!("{}: {word}", doc.display()));
            }
        }
    }
    assert!(
        outside.is_empty(),
        "named, but not in the repository:\n{}",
        outside.join("\n")
    );
}

/// Relative targets of markdown links `[text](target)`, anchors stripped.
fn markdown_links(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(|target| target.split('#').next().unwrap_or(target).to_owned())
        .filter(|target| !target.is_empty() && !target.contains("://") && !target.contains(' '))
        .collect()
}

/// `cargo <verb> … -p <package> [--test <t>] [--example <e>]` commands in `text`.
fn cargo_commands(text: &str) -> Vec<Vec<String>> {
    text.split("cargo ")
        .skip(1)
        .map(|rest| {
            rest.split(['`', '\n', '#', ')', ';'])
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|words| words.iter().any(|w| w == "-p"))
        .collect()
}

/// The value after `flag` in `words`.
fn after<'a>(words: &'a [String], flag: &str) -> Option<&'a str> {
    let at = words.iter().position(|w| w == flag)?;
    words.get(at + 1).map(String::as_str)
}

fn has_test(package: &Path, name: &str) -> bool {
    package.join(format!("tests/{name}.rs")).exists()
        || package.join(format!("tests/{name}/main.rs")).exists()
}

#[test]
fn every_cargo_command_in_the_docs_names_a_real_package_test_and_example() {
    let root = root();
    let mut wrong = vec![];
    for (doc, text) in documents() {
        for words in cargo_commands(&text) {
            let command = words.join(" ");
            let Some(package) = after(&words, "-p") else {
                continue;
            };
            let dir = root.join("crates").join(package);
            if !dir.join("Cargo.toml").exists() {
                wrong.push(format!(
                    "{}: `cargo {command}`: no package {package}",
                    doc.display()
                ));
                continue;
            }
            if let Some(test) = after(&words, "--test").filter(|t| !has_test(&dir, t)) {
                wrong.push(format!(
                    "{}: `cargo {command}`: no test {test}",
                    doc.display()
                ));
            }
            if let Some(example) = after(&words, "--example")
                .filter(|e| !dir.join(format!("examples/{e}.rs")).exists())
            {
                wrong.push(format!(
                    "{}: `cargo {command}`: no example {example}",
                    doc.display()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_stack_option_and_command_the_readme_names_is_accepted() {
    let readme = read(&root().join("README.md"));
    let help = |args: &[&str]| {
        let out = Command::new(STACK)
            .args(args)
            .output()
            .expect("run the stack binary");
        assert!(out.status.success(), "stack {args:?} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = help(&["--help"]);
    for words in cargo_commands(&readme) {
        if after(&words, "-p") != Some("stack") {
            continue;
        }
        let args = words.iter().skip_while(|w| *w != "--").skip(1);
        for flag in args.filter(|w| w.starts_with("--")) {
            assert!(
                top.contains(flag.as_str()),
                "README names `{flag}`; stack --help:\n{top}"
            );
        }
        if words.iter().any(|w| w == "ctl") {
            help(&["ctl", "--help"]);
        }
    }
    // The commands the README lists for the stack's terminal are the ones its parser takes
    // (`terminal.rs` types them for real; this catches a README that lists another set).
    let listed = "`status`, `stop` / `start` / `kill` `postgres | redis | rabbitmq | storagesvc | booksvc`, `help`";
    assert!(
        readme.contains(listed),
        "README's list of stack commands changed: update this test"
    );
    let parser = read(&root().join("crates/stack/src/commands.rs"));
    for word in ["status", "stop", "start", "kill", "help"] {
        assert!(
            parser.contains(&format!("Some(\"{word}\"")),
            "the stack does not parse `{word}`"
        );
    }
    for target in ["postgres", "redis", "rabbitmq", "storagesvc", "booksvc"] {
        assert!(
            parser.contains(&format!("=> \"{target}\"")),
            "the stack has no target `{target}`"
        );
    }
}
