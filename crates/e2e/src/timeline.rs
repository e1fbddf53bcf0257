//! A scenario's timeline as a picture (SVG, drawn with `plotters`): every request's latency
//! over time, coloured by what came back, the mix of answers per half second below it (reads
//! and writes), and
//! the disturbed phases shaded. `docs/degradation.md` shows the checked-in ones.
//!
//! Busy scenarios are thinned to at most 2 500 dots per outcome, keeping the slowest 1 %.
//!
//! Each degradation scenario writes `target/tmp/degradation-pictures/<scenario>.svg`; with
//! `UPDATE_PICTURES=1` it also replaces `docs/pictures/degradation/<scenario>.svg`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use plotters::prelude::*;

use crate::load::{Kind, Sample, Samples};

/// What a request's answer was, as the picture colours it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Hit,
    Miss,
    Stale,
    /// A read answered 2xx with another `X-Cache`, or a write accepted.
    Ok,
    /// No answer, or a 5xx.
    Failed,
    /// A 4xx: the request was refused.
    Refused,
}

impl Outcome {
    /// Every outcome, in the order the picture stacks them.
    const ALL: [Outcome; 6] = [
        Outcome::Hit,
        Outcome::Miss,
        Outcome::Stale,
        Outcome::Ok,
        Outcome::Refused,
        Outcome::Failed,
    ];

    fn of(sample: &Sample) -> Outcome {
        match sample.status {
            None => Outcome::Failed,
            Some(status) if status >= 500 => Outcome::Failed,
            Some(status) if status >= 400 => Outcome::Refused,
            Some(_) if sample.kind != Kind::Read => Outcome::Ok,
            Some(_) => match sample.x_cache.as_deref() {
                Some("hit") => Outcome::Hit,
                Some("miss") => Outcome::Miss,
                Some("stale") => Outcome::Stale,
                _ => Outcome::Ok,
            },
        }
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stale => "stale",
            Outcome::Ok => "ok",
            Outcome::Failed => "5xx / no answer",
            Outcome::Refused => "4xx",
        }
    }

    fn colour(self) -> RGBColor {
        match self {
            Outcome::Hit => RGBColor(46, 139, 87),
            Outcome::Miss => RGBColor(65, 105, 225),
            Outcome::Stale => RGBColor(230, 145, 30),
            Outcome::Ok => RGBColor(110, 110, 110),
            Outcome::Failed => RGBColor(200, 30, 30),
            Outcome::Refused => RGBColor(150, 60, 170),
        }
    }
}

/// Phases whose name says the system is healthy; every other one is shaded.
const HEALTHY_PHASES: [&str; 2] = ["before", "after"];
/// Width of a bucket of the answer mix, in seconds.
const BUCKET: f64 = 0.5;

/// Draws `samples` as `<scenario>.svg` under `<dir>/degradation-pictures` (the tests give
/// `target/tmp`), and into `docs/pictures/degradation` with `UPDATE_PICTURES` set; returns
/// the first path.
pub fn draw(scenario: &str, samples: &Samples, dir: &Path) -> anyhow::Result<PathBuf> {
    let mut written = Vec::new();
    let mut dirs = vec![dir.join("degradation-pictures")];
    if std::env::var_os("UPDATE_PICTURES").is_some() {
        dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/pictures/degradation"));
    }
    for dir in dirs {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{scenario}.svg"));
        render(scenario, samples, &path)?;
        written.push(path);
    }
    Ok(written.remove(0))
}

fn render(scenario: &str, samples: &Samples, path: &Path) -> anyhow::Result<()> {
    let start = samples
        .0
        .iter()
        .map(Sample::started)
        .min()
        .context("no samples to draw")?;
    let at = |instant: Instant| instant.saturating_duration_since(start).as_secs_f64();
    let end = samples.0.iter().map(|s| at(s.finished)).fold(1.0, f64::max);
    let slowest = samples
        .0
        .iter()
        .map(|s| s.latency.as_secs_f64() * 1e3)
        .fold(10.0, f64::max);
    let phases = phase_spans(samples, &at, end);

    let root = SVGBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let root = root
        .titled(scenario, ("sans-serif", 20))
        .map_err(plot_error)?;
    let (top, bottom) = root.split_vertically(390);

    let mut latency = ChartBuilder::on(&top)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, (0.1..slowest * 1.5).log_scale())
        .map_err(plot_error)?;
    latency
        .configure_mesh()
        .x_desc("seconds since the first request")
        .y_desc("latency, ms (log)")
        .draw()
        .map_err(plot_error)?;
    // Names at two heights, so a short phase's name does not overwrite the next one's.
    let names = [slowest * 1.1, slowest * 0.55];
    shade(&mut latency, &phases, 0.1, slowest * 1.5, Some(names))?;
    for outcome in Outcome::ALL {
        let points: Vec<(f64, f64)> = samples
            .0
            .iter()
            .filter(|s| Outcome::of(s) == outcome)
            .map(|s| (at(s.started()), (s.latency.as_secs_f64() * 1e3).max(0.1)))
            .collect();
        let points = thinned(points);
        if points.is_empty() {
            continue;
        }
        let colour = outcome.colour();
        latency
            .draw_series(points.iter().map(|p| Circle::new(*p, 2, colour.filled())))
            .map_err(plot_error)?
            .label(outcome.label())
            .legend(move |(x, y)| Circle::new((x, y), 4, colour.filled()));
    }
    latency
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;

    draw_mix(&bottom, samples, &at, end, &phases)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// The requests (reads and writes) per half second, stacked by outcome.
fn draw_mix(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    samples: &Samples,
    at: &dyn Fn(Instant) -> f64,
    end: f64,
    phases: &[(&'static str, f64, f64)],
) -> anyhow::Result<()> {
    let buckets = (end / BUCKET).ceil() as usize + 1;
    let mut counts = vec![[0u32; Outcome::ALL.len()]; buckets];
    for sample in &samples.0 {
        let bucket = (at(sample.started()) / BUCKET) as usize;
        if let (Some(row), Some(column)) = (
            counts.get_mut(bucket),
            Outcome::ALL.iter().position(|o| *o == Outcome::of(sample)),
        ) {
            row[column] += 1;
        }
    }
    let highest = counts
        .iter()
        .map(|row| row.iter().sum::<u32>())
        .max()
        .unwrap_or(1)
        .max(1);
    let mut mix = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..f64::from(highest) * 1.1)
        .map_err(plot_error)?;
    mix.configure_mesh()
        .x_desc("seconds since the first request")
        .y_desc("requests per 0.5 s")
        .draw()
        .map_err(plot_error)?;
    shade(&mut mix, phases, 0.0, f64::from(highest) * 1.1, None)?;
    // Stacked: each outcome's area is drawn from the top of the ones below it.
    for column in (0..Outcome::ALL.len()).rev() {
        let outcome = Outcome::ALL[column];
        let top = |row: &[u32; 6]| f64::from(row[..=column].iter().sum::<u32>());
        let series = counts
            .iter()
            .enumerate()
            .map(|(i, row)| (i as f64 * BUCKET, top(row)));
        mix.draw_series(AreaSeries::new(series, 0.0, outcome.colour().mix(0.9)))
            .map_err(plot_error)?;
    }
    Ok(())
}

/// Most dots drawn per outcome: beyond it the picture only grows (a busy scenario has tens
/// of thousands of requests), so every n-th is kept, and every one in the slowest 1 %.
const MAX_DOTS: usize = 2_500;

fn thinned(points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    if points.len() <= MAX_DOTS {
        return points;
    }
    let mut latencies: Vec<f64> = points.iter().map(|(_, ms)| *ms).collect();
    latencies.sort_by(f64::total_cmp);
    let slow = latencies[latencies.len() * 99 / 100];
    let every = points.len().div_ceil(MAX_DOTS);
    points
        .into_iter()
        .enumerate()
        .filter(|(i, (_, ms))| i % every == 0 || *ms >= slow)
        .map(|(_, point)| point)
        .collect()
}

/// Shades each disturbed phase; with `names`, writes each phase's name at one of those two
/// heights in turn.
fn shade<DB: DrawingBackend, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    phases: &[(&'static str, f64, f64)],
    low: f64,
    high: f64,
    names: Option<[f64; 2]>,
) -> anyhow::Result<()> {
    for (name, from, to) in phases {
        if !HEALTHY_PHASES.contains(name) {
            chart
                .draw_series([Rectangle::new(
                    [(*from, low), (*to, high)],
                    RGBColor(255, 215, 215).mix(0.5).filled(),
                )])
                .map_err(plot_error)?;
        }
    }
    let Some(heights) = names else {
        return Ok(());
    };
    for (i, (name, from, _)) in phases.iter().enumerate() {
        chart
            .draw_series([Text::new(
                name.to_string(),
                (*from, heights[i % 2]),
                ("sans-serif", 13),
            )])
            .map_err(plot_error)?;
    }
    Ok(())
}

/// Each phase with when it started and ended, in the order the scenario went through them:
/// from its first request to the next phase's first request.
fn phase_spans(
    samples: &Samples,
    at: &dyn Fn(Instant) -> f64,
    end: f64,
) -> Vec<(&'static str, f64, f64)> {
    let mut firsts: Vec<(&'static str, f64)> = Vec::new();
    for sample in &samples.0 {
        let started = at(sample.started());
        match firsts.iter_mut().find(|(name, _)| *name == sample.phase) {
            Some((_, first)) => *first = first.min(started),
            None => firsts.push((sample.phase, started)),
        }
    }
    firsts.sort_by(|a, b| a.1.total_cmp(&b.1));
    let ends = firsts.iter().skip(1).map(|(_, from)| *from).chain([end]);
    firsts
        .iter()
        .zip(ends)
        .map(|((name, from), to)| (*name, *from, to))
        .collect()
}

fn plot_error(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the timeline: {error}")
}
