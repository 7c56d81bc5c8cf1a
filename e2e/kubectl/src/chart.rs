//! `kubectl cloudmart load --chart`: the load generator's chart (calls per second,
//! latency, outcomes — drawn from the per-second series of its report) with a panel of
//! the time-sale replicas the HPA had meanwhile.
//!
//! The drawing is `cloudmart-load-report`'s, the crate `cloudmart-load` draws its own
//! `--chart` with, so both charts show the same figures the same way. That crate needs
//! only serde and plotters; the plugin cannot depend on `cloudmart-e2e` (librdkafka,
//! sea-orm) for it.
//!
//! The HPA samples are taken by the plugin and the series by the load generator in its
//! pod: they are lined up by wall clock (the report's `started_at_unix_ms`). A report
//! without that time (an older tools image) is lined up by the Job's creation instead,
//! which is late by the pod's start-up.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use cloudmart_load_report::ReplicaSample;

use crate::report::{LoadGenReport, ScalingSummary};

/// The HPA samples in the report's time: seconds after the start of the load.
pub fn replica_samples(report: &LoadGenReport, scaling: &ScalingSummary) -> Vec<ReplicaSample> {
    scaling
        .timeline
        .iter()
        .map(|s| {
            let t = if report.started_at_unix_ms > 0 {
                (i128::from(s.at_unix_ms) - i128::from(report.started_at_unix_ms)) as f64 / 1000.0
            } else {
                s.since_job.as_secs_f64()
            };
            ReplicaSample { t, current: s.current, desired: s.desired }
        })
        .collect()
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
    let replicas = replica_samples(report, scaling);
    cloudmart_load_report::write_chart(path, &title(job, report), &report.series, &replicas)
        .with_context(|| format!("--chart {}", path.display()))?;
    writeln!(out, "chart written to {}", path.display())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cloudmart_load_report::{Second, panels};

    use super::*;
    use crate::report::HpaSample;

    fn scaling() -> ScalingSummary {
        let sample = |secs: u64, current: i32, desired: i32| HpaSample {
            since_job: Duration::from_secs(secs),
            at_unix_ms: 1_700_000_000_000 + secs * 1000,
            current: Some(current),
            desired: Some(desired),
        };
        ScalingSummary {
            hpa: "cloudmart-timesale".into(),
            replicas_at_start: 1,
            max_replicas: 3,
            first_scale_up: Some(Duration::from_secs(10)),
            samples: 3,
            timeline: vec![sample(0, 1, 1), sample(5, 1, 3), sample(10, 3, 3)],
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

    #[test]
    fn samples_line_up_by_wall_clock_or_else_by_the_job() {
        // The load started 4 s after the Job was created (image pull, start-up).
        let by_clock = replica_samples(&report(1_700_000_004_000), &scaling());
        assert_eq!(by_clock.iter().map(|s| s.t).collect::<Vec<_>>(), [-4.0, 1.0, 6.0]);
        assert_eq!((by_clock[1].current, by_clock[1].desired), (Some(1), Some(3)));
        let by_job = replica_samples(&report(0), &scaling());
        assert_eq!(by_job.iter().map(|s| s.t).collect::<Vec<_>>(), [0.0, 5.0, 10.0]);
    }

    #[test]
    fn the_chart_draws_the_report_and_the_replicas() {
        let report = report(1_700_000_004_000);
        let drawn = panels(&report.series, &replica_samples(&report, &scaling()));
        let sent = drawn[0].lines.iter().find(|l| l.name == "sent").expect("sent line");
        assert_eq!(sent.points, report.series.iter().map(|s| (s.t + s.secs / 2.0, s.sent_rate())).collect::<Vec<_>>());
        let replicas = drawn.last().expect("replica panel");
        assert_eq!(replicas.lines[0].points, [(-4.0, 1.0), (1.0, 1.0), (6.0, 3.0)]);

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
