//! The verdicts of `load --expect-scale timesale [--expect-scale-down]`, decided from the
//! samples alone (pure functions, tested sample by sample).
//!
//! Scale-up passes when, during the run:
//! - the HPA went above `max(minReplicas, replicas at start)` (its `status.desiredReplicas`
//!   or `currentReplicas`) with a `status.lastScaleTime` after the Job was created — so the
//!   HPA controller made this change, during this run;
//! - the time-sale Deployment asked for that many replicas (`spec.replicas`, what the HPA
//!   sets through the scale subresource);
//! - order and delivery kept the replica count they had before the Job started.
//!
//! Scale-down passes when, within `--scale-down-timeout` after the load, the HPA's
//! `currentReplicas` and the Deployment's `spec.replicas` are both back at `minReplicas`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::scaling::rfc3339;
use crate::timeline::Sample;
use crate::{AUTOSCALED_SERVICE, SERVICES};

/// Which check a verdict is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    ScaleUp,
    ScaleDown,
}

impl Check {
    fn as_str(self) -> &'static str {
        match self {
            Check::ScaleUp => "scale-up",
            Check::ScaleDown => "scale-down",
        }
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Outcome {
    Pass,
    Fail,
    /// Not checked (scale-down after a failed scale-up).
    Skip,
}

/// One verdict line: `verdict: PASS scale-up: …`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub check: Check,
    pub outcome: Outcome,
    pub detail: String,
}

impl Verdict {
    /// Whether the check passed.
    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Pass
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match self.outcome {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "SKIP",
        };
        write!(f, "verdict: {outcome} {}: {}", self.check.as_str(), self.detail)
    }
}

/// The first sample where the HPA was above the threshold with a fresh lastScaleTime.
#[derive(Debug, Clone, Copy, PartialEq)]
struct HpaScaleUp {
    t: f64,
    replicas: i32,
    last_scale_unix_ms: i64,
}

/// Follows the samples of a run against `--expect-scale timesale`.
#[derive(Debug, Clone)]
pub struct ScaleWatch {
    min_replicas: i32,
    replicas_at_start: i32,
    job_created_unix_ms: i64,
    /// Desired replicas of the other services before the Job (None: not readable).
    others_at_start: BTreeMap<String, Option<i32>>,
    hpa_up: Option<HpaScaleUp>,
    /// The HPA went above the threshold, but its lastScaleTime was not after the Job's start.
    stale_up: Option<(i32, Option<i64>)>,
    peak_hpa: i32,
    peak_deployment: i32,
    /// First change of another service: service -> (from, to, t).
    others_changed: BTreeMap<String, (i32, i32, f64)>,
}

impl ScaleWatch {
    /// A watch over a run whose Job was created at `job_created_unix_ms`, with the HPA's
    /// `min_replicas` and the `baseline` sample taken before the Job.
    pub fn new(min_replicas: i32, baseline: &Sample, job_created_unix_ms: i64) -> Self {
        let replicas_at_start =
            baseline.hpa_current.or(baseline.desired(AUTOSCALED_SERVICE)).unwrap_or(min_replicas).max(min_replicas);
        let others_at_start = SERVICES
            .iter()
            .filter(|s| **s != AUTOSCALED_SERVICE)
            .map(|s| ((*s).to_owned(), baseline.desired(s)))
            .collect();
        Self {
            min_replicas,
            replicas_at_start,
            job_created_unix_ms,
            others_at_start,
            hpa_up: None,
            stale_up: None,
            peak_hpa: replicas_at_start,
            peak_deployment: baseline.desired(AUTOSCALED_SERVICE).unwrap_or(replicas_at_start),
            others_changed: BTreeMap::new(),
        }
    }

    /// Replicas time-sale must go above: its minimum, or more if it started above it.
    pub fn threshold(&self) -> i32 {
        self.replicas_at_start
    }

    /// Takes one sample of the run into account.
    pub fn observe(&mut self, sample: &Sample) {
        let hpa = sample.hpa_current.into_iter().chain(sample.hpa_desired).max();
        if let Some(hpa) = hpa {
            self.peak_hpa = self.peak_hpa.max(hpa);
            if hpa > self.threshold() && self.hpa_up.is_none() {
                match sample.hpa_last_scale_unix_ms {
                    Some(at) if at > self.job_created_unix_ms => {
                        self.hpa_up = Some(HpaScaleUp { t: sample.t, replicas: hpa, last_scale_unix_ms: at });
                    }
                    other => self.stale_up = Some((hpa, other)),
                }
            }
        }
        if let Some(desired) = sample.desired(AUTOSCALED_SERVICE) {
            self.peak_deployment = self.peak_deployment.max(desired);
        }
        for (service, start) in &self.others_at_start {
            if let (Some(start), Some(now)) = (*start, sample.desired(service))
                && now != start
            {
                self.others_changed.entry(service.clone()).or_insert((start, now, sample.t));
            }
        }
    }

    /// The scale-up verdict over the samples seen so far.
    pub fn scale_up(&self) -> Verdict {
        let mut failures = Vec::new();
        let threshold = self.threshold();
        let above = if threshold > self.min_replicas {
            format!("{threshold} replicas (it started the run above minReplicas {})", self.min_replicas)
        } else {
            format!("minReplicas {threshold}")
        };
        match (&self.hpa_up, &self.stale_up) {
            (Some(_), _) => {}
            (None, Some((replicas, last))) => failures.push(format!(
                "the HPA was at {replicas} replicas but its lastScaleTime ({}) is not after the Job was created ({}): \
                 that scale-up was not this run's",
                last.map_or_else(|| "none".to_owned(), rfc3339),
                rfc3339(self.job_created_unix_ms)
            )),
            (None, None) => failures.push(format!(
                "the HPA never went above {above} (peak {}): CPU stayed under its target, or metrics-server is missing",
                self.peak_hpa
            )),
        }
        if self.hpa_up.is_some() && self.peak_deployment <= threshold {
            failures.push(format!(
                "the {AUTOSCALED_SERVICE} Deployment never asked for more than {} replicas",
                self.peak_deployment
            ));
        }
        for (service, start) in &self.others_at_start {
            if start.is_none() {
                failures.push(format!("the {service} Deployment could not be read before the run"));
            }
        }
        for (service, (from, to, t)) in &self.others_changed {
            failures.push(format!(
                "{service} went from {from} to {to} replicas at t={t:.0}s (only {AUTOSCALED_SERVICE} may scale)"
            ));
        }
        let kept: Vec<String> = self
            .others_at_start
            .iter()
            .filter_map(|(s, n)| {
                n.filter(|_| !self.others_changed.contains_key(s)).map(|n| format!("{s} stayed at {n}"))
            })
            .collect();
        match (&self.hpa_up, failures.is_empty()) {
            (Some(up), true) => Verdict {
                check: Check::ScaleUp,
                outcome: Outcome::Pass,
                detail: format!(
                    "{AUTOSCALED_SERVICE} scaled {} -> {} replicas by the HPA (above {above}; first seen at t={:.0}s, \
                     lastScaleTime {}, {:.0}s after the Job was created); {}",
                    self.replicas_at_start,
                    self.peak_hpa.max(up.replicas),
                    up.t,
                    rfc3339(up.last_scale_unix_ms),
                    (up.last_scale_unix_ms - self.job_created_unix_ms) as f64 / 1000.0,
                    kept.join(", ")
                ),
            },
            _ => Verdict { check: Check::ScaleUp, outcome: Outcome::Fail, detail: failures.join("; ") },
        }
    }

    /// The HPA's minimum.
    pub fn min_replicas(&self) -> i32 {
        self.min_replicas
    }
}

/// Whether time-sale is back at `min_replicas`: the HPA sees that many pods and the
/// Deployment asks for no more.
pub fn back_at_min(sample: &Sample, min_replicas: i32) -> bool {
    sample.hpa_current == Some(min_replicas) && sample.desired(AUTOSCALED_SERVICE) == Some(min_replicas)
}

/// The scale-down verdict: `last` is the last sample taken, `waited` how long after the
/// load it was taken, `timeout` the bound (`None`: the wait is still going on).
pub fn scale_down(last: &Sample, min_replicas: i32, waited: Duration, timeout: Duration) -> Verdict {
    if back_at_min(last, min_replicas) {
        return Verdict {
            check: Check::ScaleDown,
            outcome: Outcome::Pass,
            detail: format!(
                "{AUTOSCALED_SERVICE} back at minReplicas {min_replicas} {:.0}s after the load ended",
                waited.as_secs_f64()
            ),
        };
    }
    Verdict {
        check: Check::ScaleDown,
        outcome: Outcome::Fail,
        detail: format!(
            "{AUTOSCALED_SERVICE} still at {} replicas (HPA current/desired {}/{}, minReplicas {min_replicas}) {:.0}s \
             after the load ended (--scale-down-timeout {}s)",
            last.desired(AUTOSCALED_SERVICE).map_or_else(|| "?".to_owned(), |n| n.to_string()),
            last.hpa_current.map_or_else(|| "?".to_owned(), |n| n.to_string()),
            last.hpa_desired.map_or_else(|| "?".to_owned(), |n| n.to_string()),
            waited.as_secs_f64(),
            timeout.as_secs()
        ),
    }
}

/// The scale-down verdict when there was no scale-up to come back from.
pub fn scale_down_skipped() -> Verdict {
    Verdict {
        check: Check::ScaleDown,
        outcome: Outcome::Skip,
        detail: format!("not checked: {AUTOSCALED_SERVICE} did not scale up"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::Replicas;

    const JOB_CREATED: i64 = 1_800_000_000_000;

    fn sample(t: f64, order: i32, delivery: i32, timesale: i32, hpa: (i32, i32), last_scale: Option<i64>) -> Sample {
        let r = |n: i32| Replicas { ready: n, desired: n };
        Sample {
            t,
            replicas: BTreeMap::from([
                ("order".to_owned(), r(order)),
                ("delivery".to_owned(), r(delivery)),
                ("timesale".to_owned(), r(timesale)),
            ]),
            hpa_current: Some(hpa.0),
            hpa_desired: Some(hpa.1),
            hpa_last_scale_unix_ms: last_scale,
            ..Sample::default()
        }
    }

    fn watch(samples: &[Sample]) -> ScaleWatch {
        let mut w = ScaleWatch::new(1, &sample(0.0, 1, 1, 1, (1, 1), Some(JOB_CREATED - 3_600_000)), JOB_CREATED);
        for s in samples {
            w.observe(s);
        }
        w
    }

    #[test]
    fn a_scale_up_by_the_hpa_with_the_others_steady_passes() {
        let after = Some(JOB_CREATED + 35_000);
        let w = watch(&[
            sample(5.0, 1, 1, 1, (1, 1), Some(JOB_CREATED - 3_600_000)),
            sample(35.0, 1, 1, 3, (1, 3), after),
            sample(40.0, 1, 1, 3, (3, 3), after),
        ]);
        let v = w.scale_up();
        assert!(v.passed(), "{v}");
        let line = v.to_string();
        assert!(line.starts_with("verdict: PASS scale-up: timesale scaled 1 -> 3 replicas by the HPA"), "{line}");
        assert!(line.contains("35s after the Job was created"), "{line}");
        assert!(line.ends_with("delivery stayed at 1, order stayed at 1"), "{line}");
    }

    #[test]
    fn no_scale_up_fails_and_says_why() {
        let v = watch(&[sample(5.0, 1, 1, 1, (1, 1), None), sample(10.0, 1, 1, 1, (1, 1), None)]).scale_up();
        assert_eq!(v.outcome, Outcome::Fail);
        assert!(
            v.to_string().starts_with("verdict: FAIL scale-up: the HPA never went above minReplicas 1 (peak 1)"),
            "{v}"
        );
    }

    #[test]
    fn a_scale_up_older_than_the_job_is_not_this_runs() {
        let v = watch(&[sample(5.0, 1, 1, 3, (3, 3), Some(JOB_CREATED - 1000))]).scale_up();
        assert_eq!(v.outcome, Outcome::Fail);
        assert!(v.detail.contains("is not after the Job was created"), "{v}");
        // The same second as the Job is not after it either.
        let v = watch(&[sample(5.0, 1, 1, 3, (3, 3), Some(JOB_CREATED))]).scale_up();
        assert_eq!(v.outcome, Outcome::Fail, "{v}");
    }

    #[test]
    fn another_service_scaling_fails_the_run() {
        let after = Some(JOB_CREATED + 20_000);
        let v = watch(&[sample(20.0, 2, 1, 3, (3, 3), after)]).scale_up();
        assert_eq!(v.outcome, Outcome::Fail);
        assert_eq!(v.detail, "order went from 1 to 2 replicas at t=20s (only timesale may scale)");
    }

    #[test]
    fn an_hpa_status_without_the_deployment_following_fails() {
        let v = watch(&[sample(20.0, 1, 1, 1, (1, 4), Some(JOB_CREATED + 20_000))]).scale_up();
        assert_eq!(v.outcome, Outcome::Fail);
        assert!(v.detail.contains("the timesale Deployment never asked for more than 1 replicas"), "{v}");
    }

    #[test]
    fn a_run_that_starts_above_min_must_go_higher() {
        let baseline = sample(0.0, 1, 1, 3, (3, 3), Some(JOB_CREATED - 1000));
        let mut w = ScaleWatch::new(1, &baseline, JOB_CREATED);
        // Scaling down from a previous run refreshes lastScaleTime but is no scale-up.
        w.observe(&sample(10.0, 1, 1, 2, (3, 2), Some(JOB_CREATED + 10_000)));
        assert_eq!(w.threshold(), 3);
        let v = w.scale_up();
        assert_eq!(v.outcome, Outcome::Fail);
        assert!(v.detail.contains("never went above 3 replicas (it started the run above minReplicas 1)"), "{v}");
        w.observe(&sample(30.0, 1, 1, 5, (3, 5), Some(JOB_CREATED + 30_000)));
        assert!(w.scale_up().passed(), "{}", w.scale_up());
    }

    #[test]
    fn an_unreadable_other_service_fails() {
        let mut baseline = sample(0.0, 1, 1, 1, (1, 1), None);
        baseline.replicas.remove("delivery");
        let mut w = ScaleWatch::new(1, &baseline, JOB_CREATED);
        w.observe(&sample(30.0, 1, 1, 3, (3, 3), Some(JOB_CREATED + 30_000)));
        assert!(w.scale_up().detail.contains("the delivery Deployment could not be read"), "{}", w.scale_up());
    }

    #[test]
    fn scale_down_needs_the_hpa_and_the_deployment_at_min() {
        let timeout = Duration::from_secs(600);
        let down = scale_down(&sample(300.0, 1, 1, 1, (1, 1), None), 1, Duration::from_secs(212), timeout);
        assert_eq!(
            down.to_string(),
            "verdict: PASS scale-down: timesale back at minReplicas 1 212s after the load ended"
        );
        let still = scale_down(&sample(900.0, 1, 1, 1, (2, 1), None), 1, timeout, timeout);
        assert_eq!(
            still.to_string(),
            "verdict: FAIL scale-down: timesale still at 1 replicas (HPA current/desired 2/1, minReplicas 1) 600s after \
             the load ended (--scale-down-timeout 600s)"
        );
        assert!(!back_at_min(&Sample::default(), 1));
        assert_eq!(
            scale_down_skipped().to_string(),
            "verdict: SKIP scale-down: not checked: timesale did not scale up"
        );
    }
}
