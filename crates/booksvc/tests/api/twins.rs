//! The code both services carry as twin copies (decision 0010) must not drift apart: a fix
//! made in one copy and not the other fails here, naming the file.

use std::path::{Path, PathBuf};

/// Files each service keeps its own copy of, identical once the crate name is normalised.
const TWINS: [&str; 10] = [
    "src/config/describe.rs",
    "src/config/parse.rs",
    "src/log_format.rs",
    "src/paging.rs",
    "src/secret.rs",
    "src/serve.rs",
    "src/telemetry.rs",
    "src/trace_context.rs",
    "src/metrics/requests.rs",
    "tests/metrics_memory.rs",
];

fn crate_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)
}

/// The file with the service's own name replaced, so the two copies compare equal.
fn normalised(service: &str, file: &str) -> String {
    let path = crate_dir(service).join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .replace(service, "SERVICE")
}

#[test]
fn twin_files_are_the_same_in_both_services() {
    let drifted: Vec<&str> = TWINS
        .into_iter()
        .filter(|file| normalised("booksvc", file) != normalised("storagesvc", file))
        .collect();
    assert!(
        drifted.is_empty(),
        "these twin files differ between crates/booksvc and crates/storagesvc (apply the change \
         to both, see docs/decisions/0010-twin-code.md): {drifted:?}"
    );
}
