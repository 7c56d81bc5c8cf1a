//! What a load run sees of the release over time: one [`Sample`] per look (every `--poll`)
//! at the time-sale HPA, the three Deployments and the load generator's progress line,
//! printed as a row of the live table and kept for the report, the chart and the verdicts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::SERVICES;
use crate::scaling::{DeploymentView, HpaView, count_text};

/// Replicas of one Deployment at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicas {
    /// Pods that are ready.
    pub ready: i32,
    /// Replicas the Deployment asks for (`spec.replicas`, what the HPA sets).
    pub desired: i32,
}

impl From<&DeploymentView> for Replicas {
    fn from(d: &DeploymentView) -> Self {
        Self { ready: d.ready, desired: d.desired }
    }
}

/// What the run was doing when a sample was taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Before the Job was created (the baseline).
    Before,
    /// While the load Job ran.
    #[default]
    Load,
    /// After the load, waiting for time-sale to scale back down (`--expect-scale-down`).
    ScaleDown,
}

/// One look at the release during a load run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the Job was created.
    pub t: f64,
    /// Wall-clock time of the sample (Unix ms): lines it up with the load generator's series.
    pub at_unix_ms: u64,
    pub phase: Phase,
    /// Calls per second the load generator sent lately (its last progress line).
    pub rate: Option<f64>,
    /// p99 latency of its main operation lately, in ms.
    pub p99_ms: Option<f64>,
    /// Replicas by service (`order`, `delivery`, `timesale`); a Deployment that could not be
    /// read is absent.
    pub replicas: BTreeMap<String, Replicas>,
    /// The HPA's `status.currentReplicas`.
    pub hpa_current: Option<i32>,
    /// The HPA's `status.desiredReplicas`.
    pub hpa_desired: Option<i32>,
    /// Average CPU utilisation in percent of the request.
    pub cpu_percent: Option<i32>,
    /// The HPA's CPU target in percent.
    pub cpu_target_percent: Option<i32>,
    /// The HPA's `status.lastScaleTime`, Unix ms.
    pub hpa_last_scale_unix_ms: Option<i64>,
}

impl Sample {
    /// Fills the HPA's figures in.
    pub fn set_hpa(&mut self, hpa: &HpaView) {
        self.hpa_current = hpa.current_replicas;
        self.hpa_desired = hpa.desired_replicas;
        self.cpu_percent = hpa.cpu_current;
        self.cpu_target_percent = hpa.cpu_target;
        self.hpa_last_scale_unix_ms = hpa.last_scale_unix_ms;
    }

    /// The desired replicas of `service`, if its Deployment was read.
    pub fn desired(&self, service: &str) -> Option<i32> {
        self.replicas.get(service).map(|r| r.desired)
    }
}

/// The header of the live table.
pub fn header() -> String {
    format!(
        "{:>6}  {:>7}  {:>9}  {:>6}  {:>8}  {:>8}  {:>15}  {}",
        "TIME", "RATE/S", "P99", "ORDER", "DELIVERY", "TIMESALE", "HPA CUR/DESIRED", "CPU/TARGET"
    )
}

/// The row of `sample` in the live table: replicas as ready/desired.
pub fn row(sample: &Sample) -> String {
    let replicas = |service: &str| {
        sample.replicas.get(service).map_or_else(|| "?".to_owned(), |r| format!("{}/{}", r.ready, r.desired))
    };
    let percent = |v: Option<i32>| v.map_or_else(|| "<unknown>".to_owned(), |v| format!("{v}%"));
    let [order, delivery, timesale] = SERVICES.map(replicas);
    format!(
        "{:>6}  {:>7}  {:>9}  {order:>6}  {delivery:>8}  {timesale:>8}  {:>15}  {}/{}",
        format!("{:.0}s", sample.t),
        sample.rate.map_or_else(|| "-".to_owned(), |r| format!("{r:.0}")),
        sample.p99_ms.map_or_else(|| "-".to_owned(), |p| format!("{p}ms")),
        format!("{}/{}", count_text(sample.hpa_current), count_text(sample.hpa_desired)),
        percent(sample.cpu_percent),
        percent(sample.cpu_target_percent),
    )
}

/// The send rate and p99 (ms) of the load generator's last progress line in `log`, e.g.
/// `t=  10s  2000 sent  200/s (target 200/s)  purchase p50 1.2ms p99 9.9ms  purchase: …`.
/// `None` for what the line does not say (no line yet; the load is over and answers are
/// awaited; no answers yet).
pub fn progress_figures(log: &str) -> (Option<f64>, Option<f64>) {
    let Some(line) = log.lines().rev().map(str::trim).find(|l| l.starts_with("t=")) else {
        return (None, None);
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |word: &str| words.iter().position(|w| *w == word).and_then(|i| words.get(i + 1)).copied();
    let rate = after("sent").and_then(|w| w.strip_suffix("/s")).and_then(|n| n.parse::<f64>().ok());
    let p99 = after("p99").and_then(|w| w.strip_suffix("ms")).and_then(|n| n.parse::<f64>().ok());
    (rate.filter(|r| r.is_finite()), p99.filter(|p| p.is_finite()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_of_the_load_generator_give_rate_and_p99() {
        let log = "starting\n\
                   t=   5s  1000 sent  199/s (target 200/s)  purchase p50 1.2ms p99 9.9ms  purchase: succeeded 990\n\
                   {\"level\":\"WARN\",\"message\":\"slow\"}\n\
                   t=  10s  2000 sent  201/s (target 200/s, step 1/2)  purchase p50 1.1ms p99 12ms  purchase: succeeded 1990\n";
        assert_eq!(progress_figures(log), (Some(201.0), Some(12.0)));
        let waiting = "t= 120s  24000 sent, waiting for answers  place p50 2.0ms p99 30ms  saga p50 1.2s p99 2.0s\n";
        assert_eq!(progress_figures(waiting), (None, Some(30.0)));
        assert_eq!(progress_figures("t=   1s  0 sent  0/s (target 200/s)\n"), (Some(0.0), None));
        for nothing in ["", "no progress here\n", "t=\n", "t= 5s sent x/s p99 NaNms\n"] {
            assert_eq!(progress_figures(nothing), (None, None), "{nothing:?}");
        }
    }

    #[test]
    fn a_row_shows_every_service_and_the_hpa() {
        let sample = Sample {
            t: 35.2,
            rate: Some(199.6),
            p99_ms: Some(9.9),
            replicas: BTreeMap::from([
                ("order".to_owned(), Replicas { ready: 1, desired: 1 }),
                ("timesale".to_owned(), Replicas { ready: 3, desired: 4 }),
            ]),
            hpa_current: Some(3),
            hpa_desired: Some(4),
            cpu_percent: Some(142),
            cpu_target_percent: Some(60),
            ..Sample::default()
        };
        let words: Vec<String> = row(&sample).split_whitespace().map(str::to_owned).collect();
        assert_eq!(words, ["35s", "200", "9.9ms", "1/1", "?", "3/4", "3/4", "142%/60%"]);
        assert_eq!(header().split_whitespace().count(), 9, "HPA CUR/DESIRED is two words");
        let empty: Vec<String> = row(&Sample::default()).split_whitespace().map(str::to_owned).collect();
        assert_eq!(empty, ["0s", "-", "-", "?", "?", "?", "?/?", "<unknown>/<unknown>"]);
    }
}
