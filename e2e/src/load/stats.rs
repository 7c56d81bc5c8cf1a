//! What the load generator counts: every answer of every operation, classified and timed
//! into HDR histograms, per second, per ramp step and in total.
//!
//! The calls record into a [`Recorder`] shared by every task (one short lock per answer):
//! the answers of the current second ([`Interval`]) and of each step. Once a second the
//! run takes the interval out and hands it to the [`Collector`], which turns it into a
//! point of the report's series, merges it into the totals and keeps the last few seconds
//! for the progress line. Every figure of the report is therefore a sum of the series.
//!
//! Latencies are kept in microseconds, from 1 µs to an hour, with three significant
//! digits (an HDR histogram: a fixed few hundred kilobytes however many calls, and a
//! percentile within 0.1 % of the exact one).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use cloudmart_load_report::{OperationReport, Percentiles, Quantiles, Second};
use cloudmart_proto::contract::{self, reasons};
use hdrhistogram::Histogram;

use super::schedule::Call;

/// What the load generator calls (or follows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// `TimeSaleService/Purchase` (flash-sale scenario).
    Purchase,
    /// `OrderService/PlaceOrder` (orders scenario).
    Place,
    /// An accepted order until it is CONFIRMED or CANCELLED (orders scenario).
    Saga,
    /// `OrderService/CancelOrder` of an accepted order (orders scenario).
    Cancel,
}

impl Operation {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::Purchase => "purchase",
            Self::Place => "place",
            Self::Saga => "saga",
            Self::Cancel => "cancel",
        }
    }

    /// The outcome classes its answers fall into, in the order reports list them.
    pub fn classes(self) -> &'static [Outcome] {
        use Outcome::*;
        match self {
            Self::Purchase => &[Succeeded, SoldOut, LimitExceeded, NotActive, Shed, Timeout, Error],
            Self::Place => &[Succeeded, Shed, Timeout, Error],
            Self::Saga => &[Confirmed, DeliveryFailed, Cancelled, CancelledOther, Timeout, Error],
            Self::Cancel => &[Succeeded, Refused, Shed, Timeout, Error],
        }
    }
}

/// The class of one answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// The call did what it asked (a purchase reserved stock, an order was accepted, a
    /// cancel cancelled).
    Succeeded,
    /// Purchase refused with `SOLD_OUT`.
    SoldOut,
    /// Purchase refused with `LIMIT_EXCEEDED`.
    LimitExceeded,
    /// Purchase refused with `SALE_NOT_ACTIVE`.
    NotActive,
    /// Cancel refused by the order's state machine (`FAILED_PRECONDITION`).
    Refused,
    /// `RESOURCE_EXHAUSTED`: the service shed the call.
    Shed,
    /// No answer within the call's deadline (or, for a saga, no final state within
    /// `--saga-timeout`).
    Timeout,
    /// Anything else; a few samples go into the report.
    Error,
    /// Saga: the order was CONFIRMED.
    Confirmed,
    /// Saga: the order was CANCELLED with `DELIVERY_FAILED` (the compensation).
    DeliveryFailed,
    /// Saga: the load generator's own cancel cancelled the order.
    Cancelled,
    /// Saga: the order was CANCELLED for another reason (e.g. `UNSERVICEABLE_ADDRESS`).
    CancelledOther,
}

impl Outcome {
    /// Its name in the report (the legacy report fields' names where there is one).
    pub fn name(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::SoldOut => "sold_out",
            Self::LimitExceeded => "limit_exceeded",
            Self::NotActive => "not_active",
            Self::Refused => "refused",
            Self::Shed => "shed",
            Self::Timeout => "timeouts",
            Self::Error => "errors",
            Self::Confirmed => "confirmed",
            Self::DeliveryFailed => "delivery_failed",
            Self::Cancelled => "cancelled",
            Self::CancelledOther => "cancelled_other",
        }
    }

    /// Its name for people: `sold out`, `delivery failed`.
    pub fn label(self) -> String {
        self.name().replace('_', " ")
    }
}

/// Classifies a failed unary call of `op` by its gRPC code (and error reason).
pub fn classify_status(op: Operation, status: &tonic::Status) -> Outcome {
    use tonic::Code;
    match status.code() {
        Code::ResourceExhausted => Outcome::Shed,
        Code::DeadlineExceeded => Outcome::Timeout,
        Code::FailedPrecondition if op == Operation::Purchase => match contract::reason_of(status).as_deref() {
            Some(reasons::SOLD_OUT) => Outcome::SoldOut,
            Some(reasons::LIMIT_EXCEEDED) => Outcome::LimitExceeded,
            Some(reasons::SALE_NOT_ACTIVE) => Outcome::NotActive,
            _ => Outcome::Error,
        },
        Code::FailedPrecondition if op == Operation::Cancel => Outcome::Refused,
        _ => Outcome::Error,
    }
}

/// Highest latency a histogram holds (longer ones count as an hour).
const HIGHEST_MICROS: u64 = 3_600_000_000;

/// Significant digits of a histogram.
const SIGNIFICANT_DIGITS: u8 = 3;

/// A latency distribution (an HDR histogram of microseconds).
#[derive(Clone, Debug)]
pub struct Latencies {
    micros: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        let micros = Histogram::new_with_bounds(1, HIGHEST_MICROS, SIGNIFICANT_DIGITS)
            .expect("constant histogram bounds are valid");
        Self { micros }
    }
}

impl Latencies {
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.micros.saturating_record(micros.clamp(1, HIGHEST_MICROS));
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        // Value by value rather than `Histogram::add`: with equal bounds both are the same,
        // and this cannot fail.
        for v in other.micros.iter_recorded() {
            self.micros.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }

    pub fn count(&self) -> u64 {
        self.micros.len()
    }

    /// The distribution in milliseconds (zeros when empty).
    pub fn percentiles(&self) -> Percentiles {
        if self.micros.is_empty() {
            return Percentiles::default();
        }
        let at = |q: f64| millis(self.micros.value_at_quantile(q) as f64);
        Percentiles {
            count: self.micros.len(),
            mean: millis(self.micros.mean()),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: millis(self.micros.max() as f64),
        }
    }

    /// p50 and p99 in milliseconds.
    pub fn quantiles(&self) -> Quantiles {
        let p = self.percentiles();
        Quantiles { p50: p.p50, p99: p.p99 }
    }
}

/// Microseconds as milliseconds, to the microsecond.
fn millis(micros: f64) -> f64 {
    micros.round() / 1000.0
}

/// The answers of one operation.
#[derive(Clone, Debug, Default)]
struct OperationTally {
    outcomes: BTreeMap<Outcome, u64>,
    /// Allocated on the first timed answer (a histogram is a few hundred kilobytes).
    latency: Option<Latencies>,
}

impl OperationTally {
    fn merge(&mut self, other: &OperationTally) {
        for (outcome, n) in &other.outcomes {
            *self.outcomes.entry(*outcome).or_default() += n;
        }
        if let Some(other) = &other.latency {
            self.latency.get_or_insert_with(Latencies::default).merge(other);
        }
    }

    fn report(&self) -> OperationReport {
        OperationReport {
            outcomes: self.outcomes.iter().map(|(o, n)| (o.name().to_owned(), *n)).collect(),
            latency_ms: self.latency.as_ref().map(Latencies::percentiles).unwrap_or_default(),
        }
    }
}

/// What happened over some time: calls sent and not sent, answers by operation and class,
/// latencies. A second of the run, a ramp step, or the whole run.
#[derive(Clone, Debug, Default)]
pub struct Interval {
    pub sent: u64,
    pub not_sent: u64,
    operations: BTreeMap<Operation, OperationTally>,
}

impl Interval {
    /// Counts one answer of `op`; `latency` is `None` for answers that have none (timeouts).
    pub fn record(&mut self, op: Operation, outcome: Outcome, latency: Option<Duration>) {
        let tally = self.operations.entry(op).or_default();
        *tally.outcomes.entry(outcome).or_default() += 1;
        if let Some(latency) = latency {
            tally.latency.get_or_insert_with(Latencies::default).record(latency);
        }
    }

    /// Adds everything `other` counted.
    pub fn merge(&mut self, other: &Interval) {
        self.sent += other.sent;
        self.not_sent += other.not_sent;
        for (op, tally) in &other.operations {
            self.operations.entry(*op).or_default().merge(tally);
        }
    }

    /// Answers of `op` with outcome `outcome`.
    pub fn count(&self, op: Operation, outcome: Outcome) -> u64 {
        self.operations.get(&op).and_then(|t| t.outcomes.get(&outcome)).copied().unwrap_or(0)
    }

    /// Answers of `op`, of every class.
    pub fn answered(&self, op: Operation) -> u64 {
        self.operations.get(&op).map_or(0, |t| t.outcomes.values().sum())
    }

    /// The latency distribution of `op`, if any answer of it was timed.
    pub fn latency(&self, op: Operation) -> Option<&Latencies> {
        self.operations.get(&op).and_then(|t| t.latency.as_ref())
    }

    /// The report's figures by operation name.
    pub fn operation_reports(&self) -> BTreeMap<String, OperationReport> {
        self.operations.iter().map(|(op, t)| (op.name().to_owned(), t.report())).collect()
    }

    /// This interval as a point of the report's series.
    pub fn second(&self, t: f64, secs: f64, target_rps: f64) -> Second {
        Second {
            t: round_ms(t),
            secs: round_ms(secs),
            target_rps,
            sent: self.sent,
            not_sent: self.not_sent,
            outcomes: self
                .operations
                .iter()
                .map(|(op, tally)| {
                    (op.name().to_owned(), tally.outcomes.iter().map(|(o, n)| (o.name().to_owned(), *n)).collect())
                })
                .collect(),
            latency_ms: self
                .operations
                .iter()
                .filter_map(|(op, tally)| tally.latency.as_ref().map(|l| (op.name().to_owned(), l.quantiles())))
                .collect(),
        }
    }
}

/// Seconds rounded to the millisecond (the series' resolution).
fn round_ms(secs: f64) -> f64 {
    (secs * 1000.0).round() / 1000.0
}

/// Distinct error samples kept for the report.
pub const ERROR_SAMPLES: usize = 5;

/// Where every call task records; see the module documentation.
#[derive(Debug)]
pub struct Recorder {
    book: Mutex<Book>,
}

#[derive(Debug, Default)]
struct Book {
    current: Interval,
    steps: Vec<Interval>,
    error_samples: Vec<String>,
}

impl Recorder {
    /// A recorder for a schedule of `steps` steps.
    pub fn new(steps: usize) -> Self {
        let book = Book { steps: vec![Interval::default(); steps.max(1)], ..Book::default() };
        Self { book: Mutex::new(book) }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        // A task that panicked while holding the lock left whole counts behind: go on.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `call` was sent.
    pub fn sent(&self, call: Call) {
        let mut book = self.book();
        book.current.sent += 1;
        if let Some(step) = book.steps.get_mut(call.step) {
            step.sent += 1;
        }
    }

    /// `call` was due while every slot was busy, and was dropped.
    pub fn not_sent(&self, call: Call) {
        let mut book = self.book();
        book.current.not_sent += 1;
        if let Some(step) = book.steps.get_mut(call.step) {
            step.not_sent += 1;
        }
    }

    /// One answer of `op` for a call of step `step`.
    pub fn answer(&self, step: usize, op: Operation, outcome: Outcome, latency: Option<Duration>) {
        let mut book = self.book();
        book.current.record(op, outcome, latency);
        if let Some(s) = book.steps.get_mut(step) {
            s.record(op, outcome, latency);
        }
    }

    /// Keeps `sample` (an unexpected error) if it is new and there is room.
    pub fn error_sample(&self, sample: String) {
        let mut book = self.book();
        if book.error_samples.len() < ERROR_SAMPLES && !book.error_samples.contains(&sample) {
            book.error_samples.push(sample);
        }
    }

    /// What was recorded since the last call; starts a new interval.
    pub fn take_interval(&self) -> Interval {
        std::mem::take(&mut self.book().current)
    }

    /// The steps' figures and the error samples so far.
    pub fn steps_and_samples(&self) -> (Vec<Interval>, Vec<String>) {
        let book = self.book();
        (book.steps.clone(), book.error_samples.clone())
    }
}

/// Seconds the progress line's rate and percentiles look back.
pub const RECENT_SECONDS: usize = 5;

/// Turns the intervals taken from the [`Recorder`] into the series and the totals.
#[derive(Debug, Default)]
pub struct Collector {
    series: Vec<Second>,
    total: Interval,
    /// The last [`RECENT_SECONDS`] intervals and their lengths.
    recent: VecDeque<(f64, Interval)>,
}

impl Collector {
    /// Adds the interval that began `t` seconds into the run and lasted `secs`, while the
    /// schedule aimed for `target_rps`.
    pub fn push(&mut self, interval: Interval, t: f64, secs: f64, target_rps: f64) {
        self.series.push(interval.second(t, secs, target_rps));
        self.total.merge(&interval);
        self.recent.push_back((secs, interval));
        while self.recent.len() > RECENT_SECONDS {
            self.recent.pop_front();
        }
    }

    /// Adds the run's last interval, like [`Collector::push`]; one shorter than half a
    /// second is merged into the second before it instead (a 5 ms tail with two answers
    /// would show as a rate of 400/s).
    pub fn push_tail(&mut self, interval: Interval, t: f64, secs: f64, target_rps: f64) {
        match (self.series.last_mut(), self.recent.back_mut()) {
            (Some(last), Some((last_secs, last_interval))) if secs < 0.5 => {
                self.total.merge(&interval);
                last_interval.merge(&interval);
                *last_secs += secs;
                *last = last_interval.second(last.t, last.secs + secs, last.target_rps);
            }
            _ => self.push(interval, t, secs, target_rps),
        }
    }

    /// Everything so far.
    pub fn total(&self) -> &Interval {
        &self.total
    }

    /// The last few seconds merged, and how long they lasted.
    pub fn recent(&self) -> (Interval, f64) {
        let mut merged = Interval::default();
        let mut secs = 0.0;
        for (s, interval) in &self.recent {
            merged.merge(interval);
            secs += s;
        }
        (merged, secs)
    }

    pub fn series(&self) -> &[Second] {
        &self.series
    }

    pub fn into_series(self) -> Vec<Second> {
        self.series
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// `a` is within the histogram's precision (0.1 %) of `b`.
    fn near(a: f64, b: f64) -> bool {
        (a - b).abs() <= b * 0.001 + 1e-9
    }

    #[test]
    fn percentiles_of_known_latencies() {
        let mut l = Latencies::default();
        assert_eq!(l.percentiles(), Percentiles::default(), "empty: zeros");
        for n in (1..=100).rev() {
            l.record(ms(n));
        }
        let p = l.percentiles();
        assert_eq!(p.count, 100);
        for (got, want) in
            [(p.p50, 50.0), (p.p90, 90.0), (p.p99, 99.0), (p.p999, 100.0), (p.max, 100.0), (p.mean, 50.5)]
        {
            assert!(near(got, want), "{got} vs {want}: {p:?}");
        }
        let mut one = Latencies::default();
        one.record(Duration::from_micros(1234));
        assert_eq!(one.quantiles(), Quantiles { p50: 1.234, p99: 1.234 }, "small values are exact");
        let mut huge = Latencies::default();
        huge.record(Duration::from_secs(10 * 3600));
        assert!(near(huge.percentiles().max, 3_600_000.0), "longer than an hour counts as an hour");
    }

    #[test]
    fn merged_histograms_equal_one_histogram_of_everything() {
        let (mut a, mut b, mut all) = (Latencies::default(), Latencies::default(), Latencies::default());
        for n in 1..=1000u64 {
            let d = Duration::from_micros(n * n);
            if n % 3 == 0 {
                a.record(d)
            } else {
                b.record(d)
            }
            all.record(d);
        }
        a.merge(&b);
        assert_eq!(a.percentiles(), all.percentiles());
        assert_eq!(a.count(), 1000);
    }

    #[test]
    fn failed_calls_are_classified_by_code_and_reason() {
        let refusal = |reason: &str| cloudmart_platform::grpc::refusal(reason, "refused");
        let cases = [
            (Operation::Purchase, refusal("SOLD_OUT"), Outcome::SoldOut),
            (Operation::Purchase, refusal("LIMIT_EXCEEDED"), Outcome::LimitExceeded),
            (Operation::Purchase, refusal("SALE_NOT_ACTIVE"), Outcome::NotActive),
            (Operation::Purchase, refusal("SOMETHING_ELSE"), Outcome::Error),
            (Operation::Cancel, refusal("INVALID_STATE"), Outcome::Refused),
            (Operation::Place, refusal("UNSERVICEABLE_ADDRESS"), Outcome::Error),
            (Operation::Place, tonic::Status::resource_exhausted("busy"), Outcome::Shed),
            (Operation::Cancel, tonic::Status::deadline_exceeded("slow"), Outcome::Timeout),
            (Operation::Purchase, tonic::Status::unavailable("down"), Outcome::Error),
        ];
        for (op, status, want) in cases {
            assert_eq!(classify_status(op, &status), want, "{op:?} {status:?}");
            assert!(op.classes().contains(&want), "{want:?} is a class of {op:?}");
        }
        assert_eq!(Outcome::DeliveryFailed.label(), "delivery failed");
    }

    #[test]
    fn the_recorder_counts_per_interval_and_per_step() {
        let r = Recorder::new(2);
        r.sent(Call { index: 0, step: 0 });
        r.sent(Call { index: 1, step: 1 });
        r.not_sent(Call { index: 2, step: 1 });
        r.answer(0, Operation::Place, Outcome::Succeeded, Some(ms(2)));
        r.answer(1, Operation::Place, Outcome::Timeout, None);
        r.answer(7, Operation::Place, Outcome::Shed, Some(ms(1))); // no such step: interval only
        for _ in 0..10 {
            r.error_sample("Unavailable: down".into());
        }
        r.error_sample("Internal: oops".into());
        let first = r.take_interval();
        assert_eq!((first.sent, first.not_sent, first.answered(Operation::Place)), (2, 1, 3));
        assert_eq!(first.latency(Operation::Place).map(Latencies::count), Some(2), "timeouts have no latency");
        assert_eq!(r.take_interval().answered(Operation::Place), 0, "taking starts a new interval");
        let (steps, samples) = r.steps_and_samples();
        assert_eq!((steps[0].sent, steps[1].sent, steps[1].not_sent), (1, 1, 1));
        assert_eq!((steps[0].count(Operation::Place, Outcome::Succeeded), steps[1].answered(Operation::Place)), (1, 1));
        assert_eq!(samples, ["Unavailable: down", "Internal: oops"]);
    }

    #[test]
    fn the_totals_are_the_sum_of_the_series() {
        let mut c = Collector::default();
        for second in 0..8u64 {
            let mut i = Interval { sent: 10, not_sent: second % 2, ..Interval::default() };
            for n in 0..10 {
                let outcome = if n < 9 { Outcome::Succeeded } else { Outcome::SoldOut };
                i.record(Operation::Purchase, outcome, Some(ms(second + 1)));
            }
            c.push(i, second as f64, 1.0, 10.0);
        }
        let total = c.total();
        assert_eq!((total.sent, total.not_sent), (80, 4));
        let series = c.series();
        assert_eq!(series.len(), 8);
        let summed: u64 = series.iter().map(|s| s.outcomes["purchase"]["succeeded"]).sum();
        assert_eq!(summed, total.count(Operation::Purchase, Outcome::Succeeded));
        let q = series[3].latency_ms["purchase"];
        assert!(near(q.p50, 4.0) && near(q.p99, 4.0), "{q:?}");
        assert_eq!((series[3].t, series[3].secs, series[3].target_rps), (3.0, 1.0, 10.0));
        let (recent, secs) = c.recent();
        assert_eq!((recent.sent, secs), (50, 5.0), "the last five seconds");
        assert!(near(recent.latency(Operation::Purchase).map_or(0.0, |l| l.percentiles().p50), 6.0));
        let report = total.operation_reports();
        assert_eq!(report["purchase"].count("sold_out"), 8);
        assert!(near(report["purchase"].latency_ms.max, 8.0));
    }

    #[test]
    fn a_short_tail_joins_the_last_second() {
        let mut c = Collector::default();
        let interval = |n: u64| {
            let mut i = Interval { sent: n, ..Interval::default() };
            (0..n).for_each(|_| i.record(Operation::Place, Outcome::Succeeded, Some(ms(n))));
            i
        };
        c.push(interval(10), 0.0, 1.0, 10.0);
        c.push_tail(interval(2), 1.0, 0.25, 0.0);
        assert_eq!(c.series().len(), 1);
        let last = &c.series()[0];
        assert_eq!((last.t, last.secs, last.sent, last.target_rps), (0.0, 1.25, 12, 10.0));
        assert_eq!(last.outcomes["place"]["succeeded"], 12);
        assert_eq!(c.total().sent, 12);
        c.push_tail(interval(3), 1.25, 0.75, 0.0);
        assert_eq!(c.series().len(), 2, "a longer tail is a point of its own");
        let summed: u64 = c.series().iter().map(|s| s.sent).sum();
        assert_eq!(summed, c.total().sent);
    }
}
