use super::*;

fn graph_of(files: &[(&str, &str)]) -> ModuleGraph {
    let dir = tempfile::tempdir().expect("temp dir");
    for (path, text) in files {
        let path = dir.path().join("src").join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
        std::fs::write(path, text).expect("write");
    }
    ModuleGraph::of_crate(dir.path()).expect("graph")
}

fn targets(graph: &ModuleGraph, module: &str) -> Vec<String> {
    graph.edges()[module].keys().cloned().collect()
}

#[test]
fn references_are_read_from_paths_groups_and_super() {
    let graph = graph_of(&[
        ("lib.rs", "pub mod a; pub mod b; pub mod c; pub mod d;"),
        (
            "a.rs",
            "use crate::{b::{X, Y}, c};\nfn f() { super::d::g(); }",
        ),
        ("b/mod.rs", "mod inner;"),
        (
            "b/inner.rs",
            "fn f() -> crate::c::T { super::super::d::h() }",
        ),
        (
            "c.rs",
            "// use crate::a;\nconst S: &str = \"crate::a::x\"; const C: [char; 2] = ['\"', '\\''];\nconst D: &str = \"crate::a\";",
        ),
        ("d.rs", "macro_rules! m { () => { $crate::a::f() } }"),
    ]);
    assert_eq!(targets(&graph, "a"), ["b", "c", "d"]);
    assert_eq!(targets(&graph, "b"), ["c", "d"]);
    assert!(targets(&graph, "c").is_empty(), "{graph}");
    assert!(targets(&graph, "d").is_empty(), "{graph}");
    assert!(graph.cycles().is_empty());
}

#[test]
fn test_items_and_test_files_do_not_count() {
    let graph = graph_of(&[
        ("lib.rs", "pub mod a; pub mod b;"),
        (
            "a.rs",
            "#[cfg(test)]\nmod tests { use crate::b; fn f() { let s = \"}\"; } }\n#[cfg(test)]\nmod more;",
        ),
        ("a/more.rs", "use crate::b::X;"),
        ("b.rs", "use crate::a::Y;"),
    ]);
    assert!(targets(&graph, "a").is_empty(), "{graph}");
    assert!(graph.cycles().is_empty());
}

#[test]
fn a_cycle_is_named_with_its_references() {
    let graph = graph_of(&[
        ("lib.rs", "pub mod a; pub mod b; pub mod c;"),
        ("a.rs", "use crate::b::X;"),
        ("b.rs", "\nuse crate::c::Y;"),
        ("c.rs", "fn f() { crate::a::g() }"),
    ]);
    assert_eq!(graph.cycles(), [vec!["a", "b", "c", "a"]]);
    let message = graph.cycle_report().expect("a cycle");
    assert!(message.contains("a -> b -> c -> a"), "{message}");
    assert!(message.contains("b -> c   src/b.rs:2"), "{message}");
}
