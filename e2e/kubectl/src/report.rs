//! The load generator's final report and the report `load` prints.
//!
//! `cloudmart-load` ends its output with one line `CLOUDMART_LOAD_REPORT {json}`; the plugin
//! reads it from the pod log and adds what the autoscaler and the Deployments did during
//! the run ([`ScalingSummary`]); [`RunReport`] is the whole of it as JSON.

use std::io::{self, Write};

use anyhow::{Context, Result};
use cloudmart_load_report::{Second, StepReport};
use serde::{Deserialize, Serialize};

use crate::scaling::HpaView;
use crate::timeline::{Phase, Sample};
use crate::verdict::Verdict;
use crate::{AUTOSCALED_SERVICE, SERVICES};

/// Prefix of the load generator's report line.
pub const REPORT_PREFIX: &str = "CLOUDMART_LOAD_REPORT ";

/// The load generator's figures (unknown fields are ignored, missing ones default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadGenReport {
    /// Scenario that ran, e.g. `flash-sale`.
    pub scenario: String,
    /// The time sale the load generator created and hammered.
    pub sale_id: String,
    /// Purchase attempts per second aimed for.
    pub target_rps: f64,
    /// Requests kept in flight.
    pub concurrency: u64,
    /// How long the load ran, in seconds.
    pub duration_secs: f64,
    /// Purchase attempts sent.
    pub attempts: u64,
    /// Purchases that reserved stock.
    pub succeeded: u64,
    /// Refused with `SOLD_OUT`.
    pub sold_out: u64,
    /// Refused with `LIMIT_EXCEEDED`.
    pub limit_exceeded: u64,
    /// Shed by the server (`RESOURCE_EXHAUSTED`).
    pub shed: u64,
    /// Any other failure.
    pub errors: u64,
    /// Attempts per second achieved.
    pub achieved_rps: f64,
    /// Latency percentiles in milliseconds.
    pub latency_ms: LatencyMs,
    /// Stock the sale started with.
    pub total_stock: u64,
    /// Stock left at the end.
    pub remaining_stock: u64,
    /// When the load started (Unix time, ms; 0 from a load generator that did not say):
    /// lines the HPA samples up with the series on the chart.
    pub started_at_unix_ms: u64,
    /// The steps of a `--ramp` run.
    pub steps: Vec<StepReport>,
    /// What the load generator found wrong with the run itself.
    pub warnings: Vec<String>,
    /// One point per second: what the chart draws.
    pub series: Vec<Second>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LatencyMs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Finds the last `CLOUDMART_LOAD_REPORT {json}` line in `logs` and parses it.
///
/// `Ok(None)` when there is no such line; an error when the line is there but its JSON
/// does not parse.
pub fn find_report(logs: &str) -> Result<Option<LoadGenReport>> {
    let Some(json) = logs.lines().rev().find_map(|line| line.trim_end().strip_prefix(REPORT_PREFIX)) else {
        return Ok(None);
    };
    serde_json::from_str(json.trim())
        .with_context(|| format!("parsing the load report line `{REPORT_PREFIX}{json}`"))
        .map(Some)
}

/// What the time-sale autoscaler and the Deployments did during a load run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScalingSummary {
    /// Name of the HPA.
    pub hpa: String,
    /// The HPA's `spec.minReplicas`.
    pub min_replicas: i32,
    /// The HPA's `spec.maxReplicas`.
    pub max_replicas: i32,
    /// Time-sale replicas when the load started.
    pub replicas_at_start: i32,
    /// Most time-sale replicas the HPA had or wanted while the load ran.
    pub peak_replicas: i32,
    /// Seconds from the Job's creation to the first sample where the HPA had or wanted more
    /// replicas than at start.
    pub first_scale_up_secs: Option<f64>,
    /// Every sample, in order: the live table's rows, the chart's replica panel.
    pub timeline: Vec<Sample>,
}

impl ScalingSummary {
    /// A summary before any sample, for an HPA `name` with `hpa`'s figures.
    pub fn new(name: &str, hpa: &HpaView) -> Self {
        let replicas_at_start = hpa.replicas();
        Self {
            hpa: name.to_owned(),
            min_replicas: hpa.min_replicas,
            max_replicas: hpa.max_replicas,
            replicas_at_start,
            peak_replicas: replicas_at_start,
            first_scale_up_secs: None,
            timeline: Vec::new(),
        }
    }

    /// Adds a sample; the peak and the first scale-up count the load's samples only.
    pub fn push(&mut self, sample: Sample) {
        if sample.phase == Phase::Load {
            let hpa = sample.hpa_current.into_iter().chain(sample.hpa_desired).max();
            if let Some(n) = hpa.or(sample.desired(AUTOSCALED_SERVICE)) {
                self.peak_replicas = self.peak_replicas.max(n);
            }
            if hpa.is_some_and(|n| n > self.replicas_at_start) && self.first_scale_up_secs.is_none() {
                self.first_scale_up_secs = Some(sample.t);
            }
        }
        self.timeline.push(sample);
    }

    /// Samples taken while the load ran.
    pub fn load_samples(&self) -> usize {
        self.timeline.iter().filter(|s| s.phase == Phase::Load).count()
    }
}

/// Writes the report of a finished load run.
pub fn render<W: Write + ?Sized>(
    out: &mut W,
    job: &str,
    report: &LoadGenReport,
    scaling: &ScalingSummary,
) -> io::Result<()> {
    let r = report;
    let sold = r.total_stock.saturating_sub(r.remaining_stock);
    writeln!(out)?;
    writeln!(out, "load report (job {job})")?;
    writeln!(out, "  scenario          {}  sale {}", r.scenario, r.sale_id)?;
    writeln!(
        out,
        "  load              target {} purchases/s, concurrency {}, {:.1}s",
        r.target_rps, r.concurrency, r.duration_secs
    )?;
    writeln!(out, "  achieved          {:.1} purchases/s over {} attempts", r.achieved_rps, r.attempts)?;
    writeln!(
        out,
        "  outcomes          succeeded {}  sold_out {}  limit_exceeded {}  shed {}  errors {}",
        r.succeeded, r.sold_out, r.limit_exceeded, r.shed, r.errors
    )?;
    let l = &r.latency_ms;
    writeln!(out, "  latency ms        p50 {}  p90 {}  p99 {}  max {}", l.p50, l.p90, l.p99, l.max)?;
    writeln!(out, "  stock             {} total, {} remaining, {sold} sold", r.total_stock, r.remaining_stock)?;
    for s in &r.steps {
        let figures = s.operations.get("purchase").cloned().unwrap_or_default();
        writeln!(
            out,
            "  step {:<12} target {}/s, achieved {:.1}/s, not sent {}, succeeded {}, p99 {} ms",
            s.step,
            s.target_rps,
            s.achieved_rps,
            s.not_sent,
            figures.count("succeeded"),
            figures.latency_ms.p99
        )?;
    }
    for w in &r.warnings {
        writeln!(out, "  warning           {w}")?;
    }
    writeln!(out, "autoscaling (HPA {}, min {}, max {})", scaling.hpa, scaling.min_replicas, scaling.max_replicas)?;
    writeln!(out, "  replicas at start {}", scaling.replicas_at_start)?;
    writeln!(out, "  max replicas      {}", scaling.peak_replicas)?;
    match scaling.first_scale_up_secs {
        Some(t) => writeln!(out, "  first scale-up    after {t:.1}s")?,
        None => writeln!(
            out,
            "  first scale-up    none in {} samples (CPU stayed under target, or metrics-server is missing)",
            scaling.load_samples()
        )?,
    }
    let load: Vec<&Sample> = scaling.timeline.iter().filter(|s| s.phase == Phase::Load).collect();
    let services: Vec<String> = SERVICES
        .iter()
        .filter_map(|service| {
            let desired: Vec<i32> = load.iter().filter_map(|s| s.desired(service)).collect();
            let (first, last) = (desired.first()?, desired.last()?);
            let max = desired.iter().max()?;
            Some(format!("{service} {first} -> {last} (max {max})"))
        })
        .collect();
    if !services.is_empty() {
        writeln!(out, "  deployments       {}", services.join(", "))?;
    }
    Ok(())
}

/// The run's report as `-o json` and `--report` write it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport<'a> {
    /// Name of the load Job.
    pub job: &'a str,
    pub namespace: &'a str,
    pub release: &'a str,
    /// When the Job was created (the API server's clock), Unix ms.
    pub job_created_unix_ms: i64,
    /// The load generator's figures, with its per-second series.
    pub load: &'a LoadGenReport,
    /// The autoscaler's figures and the timeline of samples (rate, p99, replicas per
    /// service, HPA).
    pub autoscaling: &'a ScalingSummary,
    /// `--expect-scale` / `--expect-scale-down` verdicts.
    pub verdicts: &'a [Verdict],
}
#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"CLOUDMART_LOAD_REPORT {"scenario":"flash-sale","sale_id":"s-1","target_rps":200,"concurrency":64,"duration_secs":120.0,"attempts":24000,"succeeded":1000,"sold_out":22000,"limit_exceeded":900,"shed":50,"errors":50,"achieved_rps":199.8,"latency_ms":{"p50":1.2,"p90":3.4,"p99":9.9,"max":40.1},"total_stock":1000,"remaining_stock":0,"new_field":[1,2]}"#;

    #[test]
    fn finds_the_last_report_line_and_ignores_unknown_fields() {
        let logs = format!("{{\"level\":\"INFO\"}}\nCLOUDMART_LOAD_REPORT {{\"attempts\":1}}\n{LINE}\n");
        let report = find_report(&logs).unwrap().unwrap();
        assert_eq!(report.attempts, 24000);
        assert_eq!(report.sold_out, 22000);
        assert_eq!(report.latency_ms.p99, 9.9);
        assert_eq!(report.target_rps, 200.0);
        assert_eq!((report.started_at_unix_ms, report.steps.len(), report.series.len()), (0, 0, 0), "added later");
    }

    #[test]
    fn the_series_steps_and_warnings_of_a_newer_load_generator_are_read() {
        let line = r#"CLOUDMART_LOAD_REPORT {"attempts":30,"started_at_unix_ms":1700000000123,"steps":[{"step":1,"target_rps":10,"secs":3.0,"sent":30,"achieved_rps":10.0,"operations":{"purchase":{"outcomes":{"succeeded":30},"latency_ms":{"p99":4.5}}}}],"warnings":["slow"],"series":[{"t":0.0,"secs":1.0,"target_rps":10.0,"sent":10,"outcomes":{"purchase":{"succeeded":10}},"latency_ms":{"purchase":{"p50":1.0,"p99":4.5}}}]}"#;
        let report = find_report(line).unwrap().unwrap();
        assert_eq!((report.started_at_unix_ms, report.steps.len(), report.series.len()), (1_700_000_000_123, 1, 1));
        assert_eq!(report.series[0].latency_ms["purchase"].p99, 4.5);
        let scaling = ScalingSummary { hpa: "h".into(), replicas_at_start: 1, ..ScalingSummary::default() };
        let mut out = Vec::new();
        render(&mut out, "j", &report, &scaling).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("step 1            target 10/s, achieved 10.0/s, not sent 0, succeeded 30, p99 4.5 ms"),
            "{out}"
        );
        assert!(out.contains("warning           slow"), "{out}");
    }

    #[test]
    fn a_report_of_the_current_load_generator_parses() {
        // The stdout of the run charted in docs/load-example.png.
        let logs = include_str!("../../load-report/fixtures/orders-ramp.log");
        let report = find_report(logs).unwrap().expect("a report line");
        assert_eq!((report.scenario.as_str(), report.steps.len()), ("orders", 3));
        assert!(report.started_at_unix_ms > 0);
        let sent: u64 = report.series.iter().map(|s| s.sent).sum();
        assert_eq!(sent, report.attempts);
    }

    #[test]
    fn no_line_is_none_and_bad_json_is_an_error() {
        assert_eq!(find_report("starting\nsome CLOUDMART_LOAD_REPORT {}\n").unwrap(), None);
        let err = find_report("CLOUDMART_LOAD_REPORT {not json").unwrap_err();
        assert!(format!("{err:#}").contains("parsing the load report line"), "{err:#}");
    }
}
