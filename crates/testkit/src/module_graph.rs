//! The graph of a crate's top-level modules, read from its sources, and a check that it has no
//! cycles.
//!
//! A module `a` depends on `b` when code in `src/a.rs` or under `src/a/` names `crate::b`
//! (in a `use`, a path or a `use crate::{b, …}` group), or `super::b` from a place where
//! `super` is the crate root. Comments and string literals are skipped, and so is every
//! `#[cfg(test)]` item (a `mod tests { … }` block, or the file a `#[cfg(test)] mod x;` pulls
//! in): tests may reach anything, the graph is of the code that ships. The crate root
//! (`lib.rs`, `main.rs`) is not a module of the graph.
//!
//! A cycle is reported with the place of each reference along it:
//!
//! ```text
//! http -> health -> http
//!   http -> health   src/http/mod.rs:38
//!   health -> http   src/health.rs:39
//! ```
//!
//! Each service runs [`assert_crate_acyclic`] as a unit test; `cargo test --workspace --lib
//! module_graph -- --nocapture` prints every graph. It reads text, not the compiler's view: a
//! name brought in by a glob import, a macro or a re-export at the crate root
//! (`crate::Settings`) is not seen.

mod source;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use source::{blank_comments_and_literals, drop_test_items, references};

/// Reads the crate in `crate_dir` (a test passes `env!("CARGO_MANIFEST_DIR")`), prints its
/// graph (shown with `--nocapture`) and panics, naming each cycle, unless it has none.
pub fn assert_crate_acyclic(crate_dir: &str) {
    let graph = ModuleGraph::of_crate(crate_dir)
        .unwrap_or_else(|error| panic!("reading the sources of {crate_dir}: {error}"));
    println!("{crate_dir}:\n{graph}");
    graph.assert_acyclic();
}

/// The first place a module names another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The file, relative to the crate directory (`src/http/mod.rs`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
}

/// A crate's top-level modules and the references between them.
#[derive(Debug, Default)]
pub struct ModuleGraph {
    /// module → (module it names → first place it does).
    edges: BTreeMap<String, BTreeMap<String, Reference>>,
}

impl ModuleGraph {
    /// Reads every `.rs` file under `crate_dir/src`.
    pub fn of_crate(crate_dir: impl AsRef<Path>) -> std::io::Result<ModuleGraph> {
        let src = crate_dir.as_ref().join("src");
        let mut files = Vec::new();
        collect_rs_files(&src, &mut files)?;
        files.sort();
        // First every file's code without its test items, and the test-only modules.
        let mut sources = Vec::new();
        let mut test_only: Vec<Vec<String>> = Vec::new();
        for path in files {
            let relative = path.strip_prefix(&src).unwrap_or(&path).to_path_buf();
            let Some(module) = module_path(&relative) else {
                continue;
            };
            let text = std::fs::read_to_string(&path)?;
            let (code, test_modules) = drop_test_items(&blank_comments_and_literals(&text));
            for name in test_modules {
                test_only.push(module.iter().cloned().chain([name]).collect());
            }
            sources.push((relative, module, code));
        }
        let mut graph = ModuleGraph::default();
        for (_, module, _) in &sources {
            if let Some(top) = module.first() {
                graph.edges.entry(top.clone()).or_default();
            }
        }
        for (relative, module, code) in &sources {
            let in_test = test_only.iter().any(|prefix| module.starts_with(prefix));
            let Some(top) = module.first().filter(|_| !in_test) else {
                continue;
            };
            for (target, offset) in references(code, module) {
                if target == *top || !graph.edges.contains_key(&target) {
                    continue;
                }
                let line = code[..offset].matches('\n').count() + 1;
                let file = Path::new("src").join(relative).display().to_string();
                graph
                    .edges
                    .get_mut(top)
                    .expect("every module is a node")
                    .entry(target)
                    .or_insert(Reference { file, line });
            }
        }
        Ok(graph)
    }

    /// The modules each module names, with the first place it does.
    pub fn edges(&self) -> &BTreeMap<String, BTreeMap<String, Reference>> {
        &self.edges
    }

    /// Cycles that together pass through every module that is on one: in each group of
    /// modules that reach each other, the shortest cycle through each member (by name) that no
    /// earlier cycle passed through.
    pub fn cycles(&self) -> Vec<Vec<String>> {
        let mut cycles = Vec::new();
        for group in self.strongly_connected() {
            if group.len() < 2 {
                continue;
            }
            let mut covered = BTreeSet::new();
            for start in &group {
                if covered.contains(start) {
                    continue;
                }
                if let Some(path) = self.shortest_path_back(start, &group) {
                    covered.extend(path.iter().cloned());
                    cycles.push(path);
                }
            }
        }
        cycles
    }

    /// Panics, naming each cycle and the references along it, unless the graph has none.
    pub fn assert_acyclic(&self) {
        if let Some(report) = self.cycle_report() {
            panic!("{report}");
        }
    }

    /// Each cycle with the references along it, and the whole graph; `None` without cycles.
    pub fn cycle_report(&self) -> Option<String> {
        let cycles = self.cycles();
        if cycles.is_empty() {
            return None;
        }
        let mut report = String::new();
        for cycle in &cycles {
            report.push_str(&cycle.join(" -> "));
            report.push('\n');
            for pair in cycle.windows(2) {
                let place = &self.edges[&pair[0]][&pair[1]];
                report.push_str(&format!(
                    "  {} -> {}   {}:{}\n",
                    pair[0], pair[1], place.file, place.line
                ));
            }
        }
        Some(format!(
            "the module graph has {} cycle(s):\n{report}\nthe whole graph:\n{self}",
            cycles.len()
        ))
    }

    /// Tarjan's strongly connected components.
    fn strongly_connected(&self) -> Vec<BTreeSet<String>> {
        struct Walk<'a> {
            graph: &'a ModuleGraph,
            index: BTreeMap<&'a str, usize>,
            low: BTreeMap<&'a str, usize>,
            stack: Vec<&'a str>,
            on_stack: BTreeSet<&'a str>,
            groups: Vec<BTreeSet<String>>,
        }
        impl<'a> Walk<'a> {
            fn visit(&mut self, node: &'a str) {
                let at = self.index.len();
                self.index.insert(node, at);
                self.low.insert(node, at);
                self.stack.push(node);
                self.on_stack.insert(node);
                for next in self.graph.edges[node].keys() {
                    let next = next.as_str();
                    if !self.index.contains_key(next) {
                        self.visit(next);
                        let low = self.low[node].min(self.low[next]);
                        self.low.insert(node, low);
                    } else if self.on_stack.contains(next) {
                        let low = self.low[node].min(self.index[next]);
                        self.low.insert(node, low);
                    }
                }
                if self.low[node] == self.index[node] {
                    let mut group = BTreeSet::new();
                    while let Some(member) = self.stack.pop() {
                        self.on_stack.remove(member);
                        group.insert(member.to_owned());
                        if member == node {
                            break;
                        }
                    }
                    self.groups.push(group);
                }
            }
        }
        let mut walk = Walk {
            graph: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            groups: Vec::new(),
        };
        for node in self.edges.keys() {
            if !walk.index.contains_key(node.as_str()) {
                walk.visit(node);
            }
        }
        walk.groups.sort();
        walk.groups
    }

    /// Breadth first within `group`, from `start` back to it.
    fn shortest_path_back(&self, start: &str, group: &BTreeSet<String>) -> Option<Vec<String>> {
        let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            for next in self.edges[node].keys() {
                if !group.contains(next) {
                    continue;
                }
                if next == start {
                    let mut path = vec![start.to_owned()];
                    let mut at = node;
                    while at != start {
                        path.push(at.to_owned());
                        at = came_from[at];
                    }
                    path.push(start.to_owned());
                    path.reverse();
                    return Some(path);
                }
                if !came_from.contains_key(next.as_str()) {
                    came_from.insert(next, node);
                    queue.push_back(next);
                }
            }
        }
        None
    }
}

/// One line a module: `http -> cache, client, service`.
impl fmt::Display for ModuleGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (module, targets) in &self.edges {
            let names: Vec<&str> = targets.keys().map(String::as_str).collect();
            writeln!(f, "{module} -> {}", names.join(", "))?;
        }
        Ok(())
    }
}

fn collect_rs_files(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_rs_files(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    Ok(())
}

/// The module a file (relative to `src`) holds: `cache/local.rs` → `[cache, local]`,
/// `cache/mod.rs` → `[cache]`, `lib.rs` → `[]`; `None` for `bin/` and `main.rs`'s siblings
/// that are not modules of the library.
fn module_path(relative: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if parts.first().is_some_and(|first| first == "bin") {
        return None;
    }
    let file = parts.pop()?;
    let stem = file.strip_suffix(".rs")?;
    if !(parts.is_empty() && matches!(stem, "lib" | "main")) && stem != "mod" {
        parts.push(stem.to_owned());
    }
    Some(parts)
}

#[cfg(test)]
mod tests;
