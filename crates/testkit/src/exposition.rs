//! Reading the Prometheus text exposition a service serves on `/metrics`, for tests that
//! check what an operator's alerts and dashboards rely on.

use std::collections::BTreeSet;

/// Families with a `# TYPE` line but no `# HELP` line.
pub fn families_without_help(text: &str) -> Vec<String> {
    let helped: BTreeSet<&str> = comment_names(text, "# HELP ").collect();
    comment_names(text, "# TYPE ")
        .filter(|name| !helped.contains(name))
        .map(str::to_owned)
        .collect()
}

/// Families of type `kind` (`counter`, `gauge`, `histogram`, `summary`, ...).
pub fn families_of_type(text: &str, kind: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .filter(|(_, type_)| type_.trim() == kind)
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// Whether a sample of `name` carries every one of `labels` (and maybe others).
pub fn has_series(text: &str, name: &str, labels: &[(&str, &str)]) -> bool {
    samples(text).any(|(sample, rest)| {
        sample == name
            && labels
                .iter()
                .all(|(key, value)| rest.contains(&format!("{key}=\"{value}\"")))
    })
}

/// The names of every sample (`x_bucket`, `x_sum`, `x_count` for a histogram `x`).
pub fn sample_names(text: &str) -> BTreeSet<String> {
    samples(text).map(|(name, _)| name.to_owned()).collect()
}

/// Each sample line split into its name and the rest (labels and value).
fn samples(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            line.split_at(end)
        })
}

fn comment_names<'a>(text: &'a str, prefix: &'a str) -> impl Iterator<Item = &'a str> {
    text.lines()
        .filter_map(move |line| line.strip_prefix(prefix))
        .filter_map(|rest| rest.split(' ').next())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"2\"} 0\n\
                        # TYPE b gauge\nb 1\n# TYPE c summary\nc{quantile=\"0.5\"} 0\n";

    #[test]
    fn finds_families_without_help_and_their_types() {
        assert_eq!(families_without_help(TEXT), ["b", "c"]);
        assert_eq!(families_of_type(TEXT, "summary"), ["c"]);
    }

    #[test]
    fn matches_series_by_name_and_labels() {
        assert!(has_series(TEXT, "a_total", &[("y", "2")]));
        assert!(has_series(TEXT, "b", &[]));
        assert!(!has_series(TEXT, "a_total", &[("x", "2")]));
        assert!(!has_series(TEXT, "a", &[]));
        assert_eq!(sample_names(TEXT).len(), 3);
    }
}
