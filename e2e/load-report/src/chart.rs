//! The load chart: panels stacked over one time axis (seconds after the start of the
//! load), drawn from the report's per-second series into a PNG with `plotters`.
//!
//! [`panels`] is the only place that decides what is drawn — calls per second against
//! the target, latency percentiles, outcomes per second and, from `kubectl cloudmart load`,
//! the autoscaler's replicas — so a test can check that every point of the chart is a
//! figure of the report. [`write_png`] only draws. A second of the series is drawn in its
//! middle (`t + secs / 2`): its figures are about the whole interval.
//!
//! Text needs a TrueType font: the first of the usual system fonts found is used (Debian:
//! `fonts-dejavu-core`), or the file named by `CHART_FONT`.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::model::{Quantiles, ReplicaSample, Second};

/// The operation whose latency gets a panel of its own: it is seconds where the calls are
/// milliseconds.
const SAGA: &str = "saga";

/// One line of a panel.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub name: String,
    /// (seconds after the start of the load, value).
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed: what was aimed for rather than what happened.
    pub dashed: bool,
}

impl Line {
    /// A line of what happened.
    pub fn solid(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { name: name.into(), points, dashed: false }
    }

    /// A line of what was aimed for (a target, a desired count).
    pub fn dashed(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { name: name.into(), points, dashed: true }
    }
}

/// Where a second of the series is drawn: in its middle.
fn x(s: &Second) -> f64 {
    s.t + s.secs / 2.0
}

/// One panel: a y axis and its lines.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    pub title: String,
    pub y_label: String,
    pub lines: Vec<Line>,
}

/// Why a chart could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("nothing to draw: the report has no per-second series and there are no replica samples")]
    NoData,
    #[error(
        "no TrueType font found for the chart's text (install fonts-dejavu-core, or set CHART_FONT to a .ttf file)"
    )]
    NoFont,
    #[error("cannot create the directory {}: {source}", path.display())]
    Directory { path: PathBuf, source: std::io::Error },
    #[error("cannot draw the chart {}: {message}", path.display())]
    Draw { path: PathBuf, message: String },
    #[error("cannot write the chart {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot encode the chart {} as PNG: {source}", path.display())]
    Encode { path: PathBuf, source: png::EncodingError },
}

/// The lines the chart of `series` (and `replicas`, when the autoscaler was sampled) draws.
///
/// Panels without data are left out: the saga panel without a `saga` operation, the
/// replica panel without samples.
pub fn panels(series: &[Second], replicas: &[ReplicaSample]) -> Vec<Panel> {
    let mut panels = Vec::new();
    if !series.is_empty() {
        panels.push(rate_panel(series));
        let calls: Vec<&str> = operations_with_latency(series).into_iter().filter(|op| *op != SAGA).collect();
        if !calls.is_empty() {
            panels.push(latency_panel("Latency of the calls", series, &calls));
        }
        if operations_with_latency(series).contains(&SAGA) {
            panels.push(latency_panel("Saga latency (order accepted → confirmed or cancelled)", series, &[SAGA]));
        }
        panels.push(outcome_panel(series));
    }
    if !replicas.is_empty() {
        panels.push(replica_panel(replicas));
    }
    panels.retain(|p| p.lines.iter().any(|l| !l.points.is_empty()));
    panels
}

fn rate_panel(series: &[Second]) -> Panel {
    let points = |f: &dyn Fn(&Second) -> f64| series.iter().map(|s| (x(s), f(s))).collect();
    let mut lines = vec![Line::solid("sent", points(&Second::sent_rate))];
    if series.iter().any(|s| s.not_sent > 0) {
        lines.push(Line::solid("not sent (saturated)", points(&Second::not_sent_rate)));
    }
    if series.iter().any(|s| s.target_rps > 0.0) {
        lines.push(Line::dashed("target", points(&|s| s.target_rps)));
    }
    Panel { title: "Calls per second".into(), y_label: "calls/s".into(), lines }
}

/// Operations that have a latency in some second, in name order.
fn operations_with_latency(series: &[Second]) -> Vec<&str> {
    let ops: BTreeSet<&str> = series.iter().flat_map(|s| s.latency_ms.keys().map(String::as_str)).collect();
    ops.into_iter().collect()
}

fn latency_panel(title: &str, series: &[Second], operations: &[&str]) -> Panel {
    let mut lines = Vec::new();
    for op in operations {
        let points = |pick: fn(&Quantiles) -> f64| {
            series.iter().filter_map(|s| s.latency_ms.get(*op).map(|q| (x(s), pick(q)))).collect()
        };
        lines.push(Line::solid(format!("{op} p50"), points(|q| q.p50)));
        lines.push(Line::solid(format!("{op} p99"), points(|q| q.p99)));
    }
    Panel { title: title.into(), y_label: "ms".into(), lines }
}

fn outcome_panel(series: &[Second]) -> Panel {
    let classes: BTreeSet<(&str, &str)> = series
        .iter()
        .flat_map(|s| {
            s.outcomes.iter().flat_map(|(op, by_class)| {
                by_class.iter().filter(|(_, n)| **n > 0).map(move |(class, _)| (op.as_str(), class.as_str()))
            })
        })
        .collect();
    let lines = classes
        .into_iter()
        .map(|(op, class)| {
            let points = series.iter().map(|s| (x(s), s.outcome_rate(op, class))).collect();
            Line::solid(format!("{op} {}", class.replace('_', " ")), points)
        })
        .collect();
    Panel { title: "Outcomes per second".into(), y_label: "answers/s".into(), lines }
}

fn replica_panel(replicas: &[ReplicaSample]) -> Panel {
    let points = |f: fn(&ReplicaSample) -> Option<i32>| {
        replicas.iter().filter_map(|r| f(r).map(|n| (r.t, f64::from(n)))).collect()
    };
    Panel {
        title: "Time-sale replicas (HPA)".into(),
        y_label: "pods".into(),
        lines: vec![Line::solid("current", points(|r| r.current)), Line::dashed("desired", points(|r| r.desired))],
    }
}

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Registers a system font as "sans-serif" once; the path it used.
pub fn font() -> Result<&'static str, ChartError> {
    static FONT: OnceLock<Option<&'static str>> = OnceLock::new();
    let found = FONT.get_or_init(|| {
        let path = std::env::var("CHART_FONT")
            .ok()
            .map(|p| &*Box::leak(p.into_boxed_str()))
            .into_iter()
            .chain(FONTS.iter().copied())
            .find(|p| Path::new(p).exists())?;
        let bytes: &'static [u8] = Box::leak(std::fs::read(path).ok()?.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).ok()?;
        Some(path)
    });
    found.ok_or(ChartError::NoFont)
}

/// Ten distinguishable colours (matplotlib's "tab10").
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

const WIDTH: u32 = 1000;
const PANEL_HEIGHT: u32 = 230;
const TITLE_HEIGHT: u32 = 50;
/// The legend's column, right of each panel (over the lines it would hide data).
const LEGEND_WIDTH: u32 = 180;

/// Draws the chart of `series` and `replicas` (see [`panels`]) into the PNG file `path`.
pub fn write_chart(path: &Path, title: &str, series: &[Second], replicas: &[ReplicaSample]) -> Result<(), ChartError> {
    write_png(path, title, &panels(series, replicas))
}

/// Draws `panels` one under the other over a shared x axis (seconds) into the PNG `path`.
pub fn write_png(path: &Path, title: &str, panels: &[Panel]) -> Result<(), ChartError> {
    if panels.is_empty() {
        return Err(ChartError::NoData);
    }
    font()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| ChartError::Directory { path: dir.to_owned(), source })?;
    }
    let height = TITLE_HEIGHT + PANEL_HEIGHT * u32::try_from(panels.len()).unwrap_or(1);
    let mut rgb = vec![0; WIDTH as usize * height as usize * 3];
    draw(&mut rgb, height, title, panels).map_err(|message| ChartError::Draw { path: path.to_owned(), message })?;
    encode(path, &rgb, height)
}

/// Writes the RGB pixels as a PNG at the best compression (a third smaller than the
/// default: line charts compress well).
fn encode(path: &Path, rgb: &[u8], height: u32) -> Result<(), ChartError> {
    let write_err = |source| ChartError::Write { path: path.to_owned(), source };
    let encode_err = |source| ChartError::Encode { path: path.to_owned(), source };
    let file = File::create(path).map_err(write_err)?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), WIDTH, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Best);
    encoder.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
    let mut writer = encoder.write_header().map_err(encode_err)?;
    writer.write_image_data(rgb).map_err(encode_err)?;
    writer.finish().map_err(encode_err)
}

fn draw(rgb: &mut [u8], height: u32, title: &str, panels: &[Panel]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = BitMapBackend::with_buffer(rgb, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(|e| err(&e))?;
    let (x_min, x_max) = x_range(panels);
    for (panel, area) in panels.iter().zip(root.split_evenly((panels.len(), 1)).iter()) {
        let (area, legend) = area.split_horizontally(WIDTH - LEGEND_WIDTH);
        let y_max = panel.lines.iter().flat_map(|l| l.points.iter()).map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.1;
        let mut chart = ChartBuilder::on(&area)
            .caption(&panel.title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(x_min..x_max, 0.0..y_max)
            .map_err(|e| err(&e))?;
        // No light grid lines between the labelled ones: a calmer chart and a third of the file.
        chart
            .configure_mesh()
            .max_light_lines(0)
            .x_desc("seconds")
            .y_desc(&panel.y_label)
            .draw()
            .map_err(|e| err(&e))?;
        for (i, line) in panel.lines.iter().enumerate() {
            let style = COLORS[i % COLORS.len()].stroke_width(2);
            let points = line.points.iter().copied();
            if line.dashed {
                chart.draw_series(DashedLineSeries::new(points, 6, 4, style)).map_err(|e| err(&e))?;
            } else {
                chart.draw_series(LineSeries::new(points, style)).map_err(|e| err(&e))?;
            }
        }
        draw_legend(&legend, panel).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}

/// The panel's line names, each after a sample of its line, down the legend column.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for (i, line) in panel.lines.iter().enumerate() {
        let y = 40 + 18 * i32::try_from(i).unwrap_or(0);
        let style = COLORS[i % COLORS.len()].stroke_width(2);
        let segments: &[(i32, i32)] = if line.dashed { &[(2, 8), (12, 18)] } else { &[(2, 18)] };
        for (from, to) in segments {
            area.draw(&PathElement::new(vec![(*from, y), (*to, y)], style))?;
        }
        area.draw(&Text::new(line.name.as_str(), (24, y - 7), ("sans-serif", 13)))?;
    }
    Ok(())
}

/// The x range shared by every panel: every point's time, at least one second wide.
fn x_range(panels: &[Panel]) -> (f64, f64) {
    let xs = panels.iter().flat_map(|p| p.lines.iter()).flat_map(|l| l.points.iter()).map(|p| p.0);
    let (min, max) = xs.fold((0.0_f64, 1.0_f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
    (min, if max > min { max } else { min + 1.0 })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn second(t: f64, sent: u64, outcomes: &[(&str, &str, u64)], latency: &[(&str, f64, f64)]) -> Second {
        let mut by_op: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (op, class, n) in outcomes {
            by_op.entry((*op).to_owned()).or_default().insert((*class).to_owned(), *n);
        }
        Second {
            t,
            secs: 1.0,
            target_rps: 100.0,
            sent,
            not_sent: 0,
            outcomes: by_op,
            latency_ms: latency
                .iter()
                .map(|(op, p50, p99)| ((*op).to_owned(), Quantiles { p50: *p50, p99: *p99 }))
                .collect(),
        }
    }

    fn orders_series() -> Vec<Second> {
        vec![
            second(0.0, 100, &[("place", "succeeded", 98), ("place", "shed", 2)], &[("place", 2.0, 9.0)]),
            second(
                1.0,
                100,
                &[("place", "succeeded", 100), ("saga", "confirmed", 90), ("saga", "delivery_failed", 8)],
                &[("place", 2.5, 11.0), ("saga", 120.0, 480.0)],
            ),
        ]
    }

    fn line<'a>(panels: &'a [Panel], panel: &str, name: &str) -> &'a Line {
        panels
            .iter()
            .find(|p| p.title.starts_with(panel))
            .and_then(|p| p.lines.iter().find(|l| l.name == name))
            .unwrap_or_else(|| panic!("no line {name:?} in panel {panel:?}: {panels:#?}"))
    }

    #[test]
    fn every_point_of_the_chart_is_a_figure_of_the_series() {
        let series = orders_series();
        let replicas = [
            ReplicaSample { t: -2.0, current: Some(2), desired: Some(2) },
            ReplicaSample { t: 3.0, current: Some(2), desired: Some(4) },
            ReplicaSample { t: 8.0, current: None, desired: Some(4) },
        ];
        let panels = panels(&series, &replicas);
        let titles: Vec<&str> = panels.iter().map(|p| p.title.split(' ').next().unwrap_or("")).collect();
        assert_eq!(titles, ["Calls", "Latency", "Saga", "Outcomes", "Time-sale"]);

        // Each second is drawn in its middle.
        assert_eq!(line(&panels, "Calls", "target").points, [(0.5, 100.0), (1.5, 100.0)]);
        assert!(line(&panels, "Calls", "target").dashed, "aimed for, not measured");
        assert_eq!(line(&panels, "Calls", "sent").points, [(0.5, 100.0), (1.5, 100.0)]);
        assert!(panels[0].lines.iter().all(|l| !l.name.starts_with("not sent")), "no saturation, no line");
        assert_eq!(line(&panels, "Latency", "place p50").points, [(0.5, 2.0), (1.5, 2.5)]);
        assert_eq!(line(&panels, "Latency", "place p99").points, [(0.5, 9.0), (1.5, 11.0)]);
        assert_eq!(line(&panels, "Saga", "saga p99").points, [(1.5, 480.0)], "only seconds with answers");
        assert_eq!(line(&panels, "Outcomes", "place shed").points, [(0.5, 2.0), (1.5, 0.0)]);
        assert_eq!(line(&panels, "Outcomes", "saga delivery failed").points, [(0.5, 0.0), (1.5, 8.0)]);
        assert_eq!(panels[3].lines.len(), 4, "place succeeded/shed, saga confirmed/delivery failed");
        assert_eq!(line(&panels, "Time-sale", "current").points, [(-2.0, 2.0), (3.0, 2.0)]);
        assert_eq!(line(&panels, "Time-sale", "desired").points, [(-2.0, 2.0), (3.0, 4.0), (8.0, 4.0)]);
    }

    #[test]
    fn a_closed_loop_has_no_target_and_a_short_last_second_counts_as_a_rate() {
        let mut series = vec![second(0.0, 10, &[("purchase", "succeeded", 10)], &[("purchase", 1.0, 2.0)])];
        series[0].target_rps = 0.0;
        series.push(Second { t: 1.0, secs: 0.5, sent: 4, not_sent: 1, ..Second::default() });
        let panels = panels(&series, &[]);
        assert!(panels[0].lines.iter().all(|l| l.name != "target"));
        assert_eq!(line(&panels, "Calls", "sent").points, [(0.5, 10.0), (1.25, 8.0)]);
        assert_eq!(line(&panels, "Calls", "not sent (saturated)").points, [(0.5, 0.0), (1.25, 2.0)]);
        assert!(panels.iter().all(|p| !p.title.starts_with("Saga") && !p.title.starts_with("Time-sale")));
    }

    #[test]
    fn nothing_to_draw_is_an_error() {
        assert!(panels(&[], &[]).is_empty());
        let err = write_chart(Path::new("unused.png"), "t", &[], &[]).unwrap_err();
        assert!(matches!(err, ChartError::NoData), "{err}");
    }

    #[test]
    fn the_chart_is_a_png() {
        if font().is_err() {
            eprintln!("SKIP: no TrueType font on this machine (fonts-dejavu-core)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("cloudmart-load-chart-{}", std::process::id()));
        let path = dir.join("nested").join("chart.png");
        let replicas = [ReplicaSample { t: 0.5, current: Some(1), desired: Some(2) }];
        write_chart(&path, "orders load", &orders_series(), &replicas).expect("written");
        let bytes = std::fs::read(&path).expect("readable");
        std::fs::remove_dir_all(&dir).ok();
        assert!(bytes.len() > 1000, "a real image, {} bytes", bytes.len());
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        // IHDR: width and height, big-endian, after the signature and the chunk header.
        let dim = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        assert_eq!((dim(16), dim(20)), (WIDTH, TITLE_HEIGHT + 5 * PANEL_HEIGHT), "five panels");
    }
}
