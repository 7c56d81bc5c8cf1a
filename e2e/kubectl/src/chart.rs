//! `kubectl cloudmart load --chart`: the load generator's chart (calls per second,
//! latency p50/p99, outcomes — drawn from the per-second series of its report) with a panel
//! of every service's replicas over the same time axis, and the HPA's desired count.
//!
//! The drawing is `cloudmart-load-report`'s, the crate `cloudmart-load` draws its own
//! `--chart` with, so both charts show the same figures the same way: its [`panels`] give
//! the load's panels, this module adds the replica panel ([`replica_panel`]) and
//! [`write_png`] draws them. That crate needs only serde and plotters; the plugin cannot
//! depend on `cloudmart-e2e` (librdkafka, sea-orm) for it.
//!
//! The samples are taken by the plugin and the series by the load generator in its pod:
//! they are lined up by wall clock (the report's `started_at_unix_ms`). A report without
//! that time (an older tools image) is lined up by the Job's creation instead, which is
//! late by the pod's start-up.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use cloudmart_load_report::{Line, Panel, panels, write_png};

use crate::report::{LoadGenReport, ScalingSummary};
use crate::timeline::Sample;
use crate::{AUTOSCALED_SERVICE, SERVICES};

/// Where a sample goes on the chart's time axis: seconds after the start of the load.
fn x(report: &LoadGenReport, sample: &Sample) -> f64 {
    if report.started_at_unix_ms > 0 {
        (i128::from(sample.at_unix_ms) - i128::from(report.started_at_unix_ms)) as f64 / 1000.0
    } else {
        sample.t
    }
}

/// The replica panel: the replicas each Deployment asks for, time-sale's ready pods, and
/// what the HPA wants (dashed).
pub fn replica_panel(report: &LoadGenReport, scaling: &ScalingSummary) -> Panel {
    let points = |value: &dyn Fn(&Sample) -> Option<i32>| {
        scaling.timeline.iter().filter_map(|s| value(s).map(|n| (x(report, s), f64::from(n)))).collect::<Vec<_>>()
    };
    let mut lines: Vec<Line> =
        SERVICES.iter().map(|service| Line::solid(*service, points(&|s| s.desired(service)))).collect();
    lines.push(Line::solid(
        format!("{AUTOSCALED_SERVICE} ready"),
        points(&|s| s.replicas.get(AUTOSCALED_SERVICE).map(|r| r.ready)),
    ));
    lines.push(Line::dashed("HPA desired", points(&|s| s.hpa_desired)));
    lines.retain(|l| !l.points.is_empty());
    Panel { title: format!("Replicas per service (HPA {})", scaling.hpa), y_label: "pods".into(), lines }
}

/// Every panel of the chart: the load generator's, then the replicas.
pub fn chart_panels(report: &LoadGenReport, scaling: &ScalingSummary) -> Vec<Panel> {
    let mut all = panels(&report.series, &[]);
    let replicas = replica_panel(report, scaling);
    if !replicas.lines.is_empty() {
        all.push(replicas);
    }
    all
}

/// The chart's title.
fn title(job: &str, report: &LoadGenReport) -> String {
    format!(
        "kubectl cloudmart load (Job {job}): {} {}/s, concurrency {}",
        report.scenario, report.target_rps, report.concurrency
    )
}

/// Draws the chart of a finished run into `path` and says so on `out`.
pub fn write<W: Write + ?Sized>(
    path: &Path,
    job: &str,
    report: &LoadGenReport,
    scaling: &ScalingSummary,
    out: &mut W,
) -> Result<()> {
    if report.series.is_empty() {
        writeln!(
            out,
            "note: the load generator's report has no per-second series (a tools image older than this plugin?): \
             the chart shows the replicas only"
        )?;
    }
    write_png(path, &title(job, report), &chart_panels(report, scaling))
        .with_context(|| format!("--chart {}", path.display()))?;
    writeln!(out, "chart written to {}", path.display())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cloudmart_load_report::Second;

    use super::*;
    use crate::timeline::{Phase, Replicas};

    fn scaling() -> ScalingSummary {
        let sample = |secs: u64, timesale: (i32, i32), hpa_desired: i32| Sample {
            t: secs as f64,
            at_unix_ms: 1_700_000_000_000 + secs * 1000,
            phase: Phase::Load,
            replicas: BTreeMap::from([
                ("order".to_owned(), Replicas { ready: 1, desired: 1 }),
                ("delivery".to_owned(), Replicas { ready: 1, desired: 1 }),
                ("timesale".to_owned(), Replicas { ready: timesale.0, desired: timesale.1 }),
            ]),
            hpa_current: Some(timesale.0),
            hpa_desired: Some(hpa_desired),
            ..Sample::default()
        };
        ScalingSummary {
            hpa: "cloudmart-timesale".into(),
            min_replicas: 1,
            max_replicas: 8,
            replicas_at_start: 1,
            peak_replicas: 3,
            first_scale_up_secs: Some(10.0),
            timeline: vec![sample(0, (1, 1), 1), sample(5, (1, 3), 3), sample(10, (3, 3), 3)],
        }
    }

    fn report(started_at_unix_ms: u64) -> LoadGenReport {
        let second = |t: f64| Second { t, secs: 1.0, target_rps: 100.0, sent: 100, ..Second::default() };
        LoadGenReport {
            started_at_unix_ms,
            series: (0..10).map(|t| second(f64::from(t))).collect(),
            ..Default::default()
        }
    }

    fn line<'a>(panel: &'a Panel, name: &str) -> &'a Line {
        panel.lines.iter().find(|l| l.name == name).unwrap_or_else(|| panic!("no line {name}: {panel:#?}"))
    }

    #[test]
    fn samples_line_up_by_wall_clock_or_else_by_the_job() {
        // The load started 4 s after the Job was created (image pull, start-up).
        let by_clock = replica_panel(&report(1_700_000_004_000), &scaling());
        assert_eq!(line(&by_clock, "timesale").points, [(-4.0, 1.0), (1.0, 3.0), (6.0, 3.0)]);
        assert_eq!(line(&by_clock, "timesale ready").points, [(-4.0, 1.0), (1.0, 1.0), (6.0, 3.0)]);
        let by_job = replica_panel(&report(0), &scaling());
        assert_eq!(line(&by_job, "order").points, [(0.0, 1.0), (5.0, 1.0), (10.0, 1.0)]);
    }

    #[test]
    fn the_chart_has_the_load_panels_and_every_services_replicas() {
        let report = report(1_700_000_004_000);
        let drawn = chart_panels(&report, &scaling());
        let sent = drawn[0].lines.iter().find(|l| l.name == "sent").expect("sent line");
        assert_eq!(sent.points, report.series.iter().map(|s| (s.t + s.secs / 2.0, s.sent_rate())).collect::<Vec<_>>());
        let replicas = drawn.last().expect("replica panel");
        assert!(replicas.title.starts_with("Replicas per service"), "{}", replicas.title);
        let names: Vec<&str> = replicas.lines.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["order", "delivery", "timesale", "timesale ready", "HPA desired"]);
        assert!(line(replicas, "HPA desired").dashed, "aimed for, not measured");
        assert_eq!(line(replicas, "HPA desired").points, [(-4.0, 1.0), (1.0, 3.0), (6.0, 3.0)]);

        if cloudmart_load_report::chart::font().is_err() {
            eprintln!("SKIP the PNG: no TrueType font on this machine (fonts-dejavu-core)");
            return;
        }
        let path = std::env::temp_dir().join(format!("kubectl-cloudmart-chart-{}.png", std::process::id()));
        let mut out = Vec::new();
        write(&path, "cloudmart-load-1", &report, &scaling(), &mut out).expect("written");
        let bytes = std::fs::read(&path).expect("readable");
        std::fs::remove_file(&path).ok();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("chart written to"), "{out}");
        assert!(!out.contains("note:"), "{out}");
    }

    #[test]
    fn an_old_report_gets_a_chart_of_the_replicas_and_a_note() {
        if cloudmart_load_report::chart::font().is_err() {
            eprintln!("SKIP: no TrueType font on this machine (fonts-dejavu-core)");
            return;
        }
        let path = std::env::temp_dir().join(format!("kubectl-cloudmart-old-{}.png", std::process::id()));
        let mut out = Vec::new();
        write(&path, "j", &LoadGenReport::default(), &scaling(), &mut out).expect("written");
        std::fs::remove_file(&path).ok();
        assert!(String::from_utf8(out).unwrap().contains("note: the load generator's report has no per-second series"));
        let nothing = ScalingSummary { timeline: Vec::new(), ..scaling() };
        let err = write(&path, "j", &LoadGenReport::default(), &nothing, &mut Vec::new()).unwrap_err();
        assert!(format!("{err:#}").contains("nothing to draw"), "{err:#}");
    }
}
