//! The figures of a load run beyond its totals: per operation, per ramp step and per
//! second. Latencies are in milliseconds, rates in calls per second.
//!
//! Operations are named by the load generator: `purchase` (flash-sale scenario), `place`,
//! `saga` and `cancel` (orders scenario). Outcome classes are snake_case names such as
//! `succeeded`, `sold_out`, `shed`, `timeouts`, `errors`, `confirmed`, `delivery_failed`.
//! Both are plain strings here so that a reader never fails on a class it does not know.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Latency distribution of one operation, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Percentiles {
    /// Answers the figures are computed over (timeouts have no latency and are not counted).
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// The two percentiles a second of the series carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Quantiles {
    pub p50: f64,
    pub p99: f64,
}

/// What one operation did: answers by outcome class, and their latency.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OperationReport {
    /// Answers by outcome class (only classes that occurred).
    pub outcomes: BTreeMap<String, u64>,
    pub latency_ms: Percentiles,
}

impl OperationReport {
    /// Answers of every class.
    pub fn total(&self) -> u64 {
        self.outcomes.values().sum()
    }

    /// Answers of class `class` (0 when it did not occur).
    pub fn count(&self, class: &str) -> u64 {
        self.outcomes.get(class).copied().unwrap_or(0)
    }
}

/// One step of a `--ramp`: the calls scheduled while it lasted, and what became of them
/// (a call belongs to the step it was sent in, even when its answer came later).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepReport {
    /// 1-based position in the ramp.
    pub step: u32,
    /// Calls per second the step aimed for.
    pub target_rps: u32,
    /// When the step began, in seconds after the start of the load.
    pub start_secs: f64,
    /// How long the step lasted.
    pub secs: f64,
    /// Calls sent during the step.
    pub sent: u64,
    /// Calls due during the step while every slot was busy (the generator was saturated).
    pub not_sent: u64,
    /// `sent / secs`.
    pub achieved_rps: f64,
    /// The step's figures by operation.
    pub operations: BTreeMap<String, OperationReport>,
}

/// One second of the run: what was sent in it and what was answered in it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Second {
    /// Start of the second, in seconds after the start of the load.
    pub t: f64,
    /// Length of the interval (1 s but for the last, shorter one, and for a late tick).
    pub secs: f64,
    /// Calls per second the schedule aimed for at `t` (0: closed loop, or the load is over
    /// and answers are still coming in).
    pub target_rps: f64,
    /// Calls sent in the interval.
    pub sent: u64,
    /// Calls due in the interval that could not be sent (every slot busy).
    pub not_sent: u64,
    /// Answers in the interval: operation → outcome class → count.
    pub outcomes: BTreeMap<String, BTreeMap<String, u64>>,
    /// Latency of the answers in the interval, by operation.
    pub latency_ms: BTreeMap<String, Quantiles>,
}

impl Second {
    /// Calls sent per second in this interval.
    pub fn sent_rate(&self) -> f64 {
        per_second(self.sent, self.secs)
    }

    /// Calls not sent per second in this interval.
    pub fn not_sent_rate(&self) -> f64 {
        per_second(self.not_sent, self.secs)
    }

    /// Answers of `operation` with outcome `class` per second in this interval.
    pub fn outcome_rate(&self, operation: &str, class: &str) -> f64 {
        let n = self.outcomes.get(operation).and_then(|o| o.get(class)).copied().unwrap_or(0);
        per_second(n, self.secs)
    }
}

/// `n` events over `secs` seconds as a rate (0 for an empty interval).
pub fn per_second(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// One look at the autoscaler during a run (`kubectl cloudmart load`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicaSample {
    /// Seconds after the start of the load (negative: before the load generator started).
    pub t: f64,
    /// Replicas the HPA last saw.
    pub current: Option<i32>,
    /// Replicas the HPA wants.
    pub desired: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_round_trips_and_missing_fields_default() {
        let s = Second {
            t: 3.0,
            secs: 1.0,
            target_rps: 200.0,
            sent: 199,
            not_sent: 1,
            outcomes: BTreeMap::from([(
                "purchase".to_owned(),
                BTreeMap::from([("succeeded".to_owned(), 150), ("sold_out".to_owned(), 48)]),
            )]),
            latency_ms: BTreeMap::from([("purchase".to_owned(), Quantiles { p50: 1.5, p99: 9.0 })]),
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Second>(&json).unwrap(), s);
        let old: Second = serde_json::from_str(r#"{"t":1.0,"sent":5,"unknown":true}"#).unwrap();
        assert_eq!((old.t, old.sent, old.secs, old.outcomes.len()), (1.0, 5, 0.0, 0));
    }

    #[test]
    fn rates_divide_by_the_interval() {
        let s = Second {
            secs: 0.5,
            sent: 10,
            not_sent: 2,
            outcomes: BTreeMap::from([("place".to_owned(), BTreeMap::from([("shed".to_owned(), 3)]))]),
            ..Second::default()
        };
        assert_eq!((s.sent_rate(), s.not_sent_rate()), (20.0, 4.0));
        assert_eq!((s.outcome_rate("place", "shed"), s.outcome_rate("place", "errors")), (6.0, 0.0));
        assert_eq!(Second::default().sent_rate(), 0.0, "an empty interval has no rate");
        let op = OperationReport {
            outcomes: BTreeMap::from([("succeeded".to_owned(), 7), ("errors".to_owned(), 1)]),
            ..OperationReport::default()
        };
        assert_eq!((op.total(), op.count("errors"), op.count("shed")), (8, 1, 0));
    }
}
