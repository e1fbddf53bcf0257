//! Rust defaults written the way `--help` shows them, so each default is written once, as a
//! Rust value next to the code it configures, and clap is fed from it.

use std::time::Duration;

/// `5s`, `100ms`, `1m`, `24h`: the largest unit that divides the duration exactly (a form
/// [`super::parse::parse_duration`] reads back to the same value).
pub(crate) fn duration(duration: Duration) -> String {
    const UNITS: [(&str, u128); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];
    let millis = duration.as_millis();
    if millis == 0 || duration.subsec_nanos() % 1_000_000 != 0 {
        return humantime::format_duration(duration).to_string();
    }
    let (unit, size) = UNITS
        .into_iter()
        .find(|(_, size)| millis % size == 0)
        .unwrap_or(("ms", 1));
    format!("{}{unit}", millis / size)
}

/// A comma-separated list of [`duration`]s, the form of a `value_delimiter = ','` argument.
pub(crate) fn durations(durations: &[Duration]) -> String {
    durations
        .iter()
        .map(|each| duration(*each))
        .collect::<Vec<_>>()
        .join(",")
}
