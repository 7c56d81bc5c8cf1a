//! The load generator's final report and the report `load` prints.
//!
//! `cloudmart-load` ends its output with one line `CLOUDMART_LOAD_REPORT {json}`; the plugin
//! reads it from the pod log and adds what the autoscaler did during the run.

use std::io::{self, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

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

/// What the time-sale autoscaler did during a load run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalingSummary {
    /// Name of the HPA.
    pub hpa: String,
    /// Replicas when the load started.
    pub replicas_at_start: i32,
    /// Most replicas seen while the load ran.
    pub max_replicas: i32,
    /// Time from the Job's creation to the first sample with more replicas than at start.
    pub first_scale_up: Option<Duration>,
    /// How many times the HPA was sampled.
    pub samples: u32,
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
    writeln!(out, "autoscaling (HPA {})", scaling.hpa)?;
    writeln!(out, "  replicas at start {}", scaling.replicas_at_start)?;
    writeln!(out, "  max replicas      {}", scaling.max_replicas)?;
    match scaling.first_scale_up {
        Some(t) => writeln!(out, "  first scale-up    after {:.1}s", t.as_secs_f64())?,
        None => writeln!(
            out,
            "  first scale-up    none in {} samples (CPU stayed under target, or metrics-server is missing)",
            scaling.samples
        )?,
    }
    Ok(())
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
    }

    #[test]
    fn no_line_is_none_and_bad_json_is_an_error() {
        assert_eq!(find_report("starting\nsome CLOUDMART_LOAD_REPORT {}\n").unwrap(), None);
        let err = find_report("CLOUDMART_LOAD_REPORT {not json").unwrap_err();
        assert!(format!("{err:#}").contains("parsing the load report line"), "{err:#}");
    }
}
