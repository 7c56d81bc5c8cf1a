//! The report of a run: one JSON object, written as the line `CLOUDMART_LOAD_REPORT {json}`
//! (what `kubectl cloudmart load`, `make rehearse` and the tests read), as a file with
//! `--report`, and as a table for people.
//!
//! The first fields are the original report's and keep their names and meaning — for the
//! orders scenario they describe the `PlaceOrder` calls. What came later (per operation,
//! per ramp step, per second, the orders mix, warnings) is added after them, and a line
//! without those fields still parses.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use cloudmart_load_report::{OperationReport, Percentiles, Second, StepReport};
use serde::{Deserialize, Serialize};

use super::stats::{Operation, Outcome};

/// The marker in front of the JSON report line.
pub const REPORT_MARKER: &str = "CLOUDMART_LOAD_REPORT ";

/// Latency percentiles in milliseconds of the scenario's main call (`Purchase` or
/// `PlaceOrder`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl From<&Percentiles> for Latency {
    fn from(p: &Percentiles) -> Self {
        Self { p50: p.p50, p90: p.p90, p99: p.p99, max: p.max }
    }
}

/// The figures of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// `flash-sale` or `orders`.
    pub scenario: String,
    /// The sale bought from (flash-sale scenario; empty otherwise).
    pub sale_id: String,
    /// Calls per second aimed for (the highest step of a ramp; 0 = closed loop).
    pub target_rps: u32,
    pub concurrency: usize,
    /// From the first call to the last answer.
    pub duration_secs: f64,
    /// Main calls sent (each got exactly one of the outcomes below).
    pub attempts: u64,
    pub succeeded: u64,
    pub sold_out: u64,
    pub limit_exceeded: u64,
    pub not_active: u64,
    /// `RESOURCE_EXHAUSTED`: the service shed the call.
    pub shed: u64,
    pub timeouts: u64,
    pub errors: u64,
    /// Calls that were due while every slot was busy (the generator was saturated).
    pub not_sent: u64,
    pub achieved_rps: f64,
    pub latency_ms: Latency,
    pub total_stock: i64,
    pub remaining_stock: i64,
    /// A few distinct unexpected errors, for the report.
    pub error_samples: Vec<String>,

    /// When the load started (Unix time, ms): `kubectl cloudmart load` lines up its
    /// autoscaler samples with the series by it.
    #[serde(default)]
    pub started_at_unix_ms: u64,
    /// Every operation's outcomes and latency distribution: `purchase`; or `place`,
    /// `saga` (accepted → CONFIRMED/CANCELLED) and `cancel`.
    #[serde(default)]
    pub operations: BTreeMap<String, OperationReport>,
    /// The steps of a `--ramp` (absent without one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepReport>,
    /// The orders scenario's mix and what became of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orders: Option<OrdersReport>,
    /// Things that look wrong with the run itself (the generator saturated, a fault that
    /// did not apply, …).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// One point per second (the chart is drawn from these).
    #[serde(default)]
    pub series: Vec<Second>,
}

/// The orders scenario's mix.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OrdersReport {
    pub fault_postal_code: String,
    pub fault_share: f64,
    pub cancel_share: f64,
    /// Orders sent to an ordinary address and left alone.
    pub regular: u64,
    /// Orders sent to the fault-injected postal code (their delivery should fail).
    pub fault: u64,
    /// Orders sent to an ordinary address and cancelled once accepted.
    pub cancel: u64,
    /// Fault-injected orders that were CONFIRMED anyway.
    pub fault_confirmed: u64,
    /// Ordinary orders whose delivery failed.
    pub regular_delivery_failed: u64,
}

/// The operations in the order reports show them.
const OPERATIONS: [Operation; 4] = [Operation::Purchase, Operation::Place, Operation::Saga, Operation::Cancel];

impl LoadReport {
    /// The machine-readable line (`CLOUDMART_LOAD_REPORT {json}`).
    pub fn line(&self) -> String {
        format!("{REPORT_MARKER}{}", serde_json::to_string(self).expect("a report serializes"))
    }

    /// Finds and parses the report line in a log.
    pub fn from_log(log: &str) -> Option<Self> {
        log.lines().rev().find_map(|l| l.strip_prefix(REPORT_MARKER)).and_then(|j| serde_json::from_str(j).ok())
    }

    /// The title of the report's chart: scenario, rate, concurrency, duration.
    pub fn chart_title(&self) -> String {
        let rate = match self.steps.as_slice() {
            [] if self.target_rps == 0 => "closed loop".to_owned(),
            [] => format!("{}/s", self.target_rps),
            steps => {
                format!("ramp {}/s", steps.iter().map(|s| s.target_rps.to_string()).collect::<Vec<_>>().join(" → "))
            }
        };
        format!(
            "cloudmart-load {}: {rate}, concurrency {}, {:.0} s",
            self.scenario, self.concurrency, self.duration_secs
        )
    }

    /// The main operation of the scenario.
    fn main_operation(&self) -> Operation {
        if self.scenario == "orders" { Operation::Place } else { Operation::Purchase }
    }

    /// The figures by operation; for a report without them, the main one from the
    /// original fields.
    fn operations_or_legacy(&self) -> BTreeMap<String, OperationReport> {
        if !self.operations.is_empty() {
            return self.operations.clone();
        }
        let outcomes = [
            (Outcome::Succeeded, self.succeeded),
            (Outcome::SoldOut, self.sold_out),
            (Outcome::LimitExceeded, self.limit_exceeded),
            (Outcome::NotActive, self.not_active),
            (Outcome::Shed, self.shed),
            (Outcome::Timeout, self.timeouts),
            (Outcome::Error, self.errors),
        ];
        let l = &self.latency_ms;
        let op = OperationReport {
            outcomes: outcomes.iter().filter(|(_, n)| *n > 0).map(|(o, n)| (o.name().to_owned(), *n)).collect(),
            latency_ms: Percentiles { p50: l.p50, p90: l.p90, p99: l.p99, max: l.max, ..Percentiles::default() },
        };
        BTreeMap::from([(self.main_operation().name().to_owned(), op)])
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        self.write_header(&mut out);
        self.write_steps(&mut out);
        let operations = self.operations_or_legacy();
        let present: Vec<Operation> = OPERATIONS.into_iter().filter(|op| operations.contains_key(op.name())).collect();
        for op in &present {
            if let Some(figures) = operations.get(op.name()) {
                write_operation(&mut out, *op, figures, present.len() > 1);
            }
        }
        if self.main_operation() == Operation::Purchase {
            let _ = writeln!(out, "  stock         {} of {} left", self.remaining_stock, self.total_stock);
        }
        for e in &self.error_samples {
            let _ = writeln!(out, "  error sample  {e}");
        }
        for w in &self.warnings {
            let _ = writeln!(out, "  warning       {w}");
        }
        out
    }

    fn write_header(&self, out: &mut String) {
        let (what, unit) = match (self.main_operation(), &self.orders) {
            (Operation::Place, Some(o)) => (
                format!(
                    "orders load: {:.0} % to fault postal code {}, {:.0} % cancelled",
                    o.fault_share * 100.0,
                    o.fault_postal_code,
                    o.cancel_share * 100.0
                ),
                "orders/s",
            ),
            (Operation::Place, None) => ("orders load".to_owned(), "orders/s"),
            _ => (format!("flash-sale load: sale {}", self.sale_id), "purchases/s"),
        };
        let rate = match self.steps.as_slice() {
            [] => format!("{} {unit}", self.target_rps),
            steps => format!(
                "ramp {} {unit}, {:.0} s per step",
                steps.iter().map(|s| s.target_rps.to_string()).collect::<Vec<_>>().join(" → "),
                steps[0].secs
            ),
        };
        let _ = write!(
            out,
            "{what}\n  target        {rate} ({}), {:.1} s, concurrency {}\n  \
             achieved      {:.1} calls/s, {} calls, {} not sent (generator saturated)\n",
            if self.target_rps == 0 { "closed loop" } else { "open loop" },
            self.duration_secs,
            self.concurrency,
            self.achieved_rps,
            self.attempts,
            self.not_sent,
        );
    }

    fn write_steps(&self, out: &mut String) {
        if self.steps.is_empty() {
            return;
        }
        let main = self.main_operation().name();
        let _ = writeln!(out, "  step  target/s    sent/s  not sent   ok %    p50 ms    p99 ms");
        for s in &self.steps {
            let figures = s.operations.get(main).cloned().unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:>4}  {:>8}  {:>8.1}  {:>8}  {:>5.1}  {:>8.1}  {:>8.1}",
                s.step,
                s.target_rps,
                s.achieved_rps,
                s.not_sent,
                percent(figures.count(Outcome::Succeeded.name()), figures.total()),
                figures.latency_ms.p50,
                figures.latency_ms.p99
            );
        }
    }
}

/// `n` of `of` in percent (0 when `of` is 0).
fn percent(n: u64, of: u64) -> f64 {
    if of == 0 { 0.0 } else { n as f64 * 100.0 / of as f64 }
}

/// One operation's outcome rows and latency line; `titled` puts its name above them.
fn write_operation(out: &mut String, op: Operation, figures: &OperationReport, titled: bool) {
    if titled {
        let what = match op {
            Operation::Purchase => "Purchase calls",
            Operation::Place => "PlaceOrder calls",
            Operation::Saga => "accepted orders until CONFIRMED or CANCELLED",
            Operation::Cancel => "CancelOrder calls",
        };
        let _ = writeln!(out, "  {:<14}{what}", op.name());
    }
    let total = figures.total();
    for outcome in op.classes() {
        let n = figures.count(outcome.name());
        let _ = writeln!(out, "  {:<14}{n:>9}  {:5.1} %", outcome.label(), percent(n, total));
    }
    let l = &figures.latency_ms;
    let _ = writeln!(
        out,
        "  latency ms    p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stdout of the run charted in `docs/load-example.png`: `cloudmart-load --scenario
    /// orders --ramp 20,40,60 --step 7s` against `make dev`.
    const EXAMPLE: &str = include_str!("../../load-report/fixtures/orders-ramp.log");

    #[test]
    fn a_real_report_adds_up_and_its_chart_draws_its_series() {
        let r = LoadReport::from_log(EXAMPLE).expect("the example report parses");
        assert_eq!((r.scenario.as_str(), r.steps.len(), r.target_rps), ("orders", 3, 60));
        let place = &r.operations["place"];
        assert_eq!(place.total(), r.attempts);
        assert_eq!(place.count("succeeded"), r.succeeded);
        let sent: u64 = r.series.iter().map(|s| s.sent).sum();
        let stepped: u64 = r.steps.iter().map(|s| s.sent).sum();
        assert_eq!((sent, stepped), (r.attempts, r.attempts), "every call is in the series and in a step");
        for (op, figures) in &r.operations {
            for (class, n) in &figures.outcomes {
                let summed: u64 = r.series.iter().filter_map(|s| s.outcomes.get(op)?.get(class)).sum();
                assert_eq!(summed, *n, "{op} {class}: the series adds up to the total");
            }
        }
        let panels = cloudmart_load_report::panels(&r.series, &[]);
        let sent_line = panels[0].lines.iter().find(|l| l.name == "sent").expect("a sent line");
        let expected: Vec<(f64, f64)> = r.series.iter().map(|s| (s.t + s.secs / 2.0, s.sent_rate())).collect();
        assert_eq!(sent_line.points, expected);
    }

    fn op(outcomes: &[(&str, u64)], p50: f64) -> OperationReport {
        OperationReport {
            outcomes: outcomes.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect(),
            latency_ms: Percentiles { count: 1, p50, p99: p50 * 4.0, ..Percentiles::default() },
        }
    }

    #[test]
    fn the_report_line_round_trips() {
        let r = LoadReport {
            sale_id: "s".into(),
            attempts: 3,
            succeeded: 2,
            operations: BTreeMap::from([("purchase".to_owned(), op(&[("succeeded", 2), ("sold_out", 1)], 1.5))]),
            steps: vec![StepReport { step: 1, target_rps: 10, ..StepReport::default() }],
            orders: Some(OrdersReport { fault: 4, ..OrdersReport::default() }),
            series: vec![Second { t: 0.0, secs: 1.0, sent: 3, ..Second::default() }],
            ..Default::default()
        };
        let log = format!("noise\n{}\nmore noise\n", r.line());
        assert_eq!(LoadReport::from_log(&log), Some(r));
        assert_eq!(LoadReport::from_log("no report here"), None);
    }

    #[test]
    fn a_line_of_the_original_format_still_parses_and_prints() {
        let line = r#"CLOUDMART_LOAD_REPORT {"scenario":"flash-sale","sale_id":"s-1","target_rps":200,"concurrency":64,"duration_secs":60.0,"attempts":100,"succeeded":60,"sold_out":40,"limit_exceeded":0,"not_active":0,"shed":0,"timeouts":0,"errors":0,"not_sent":0,"achieved_rps":99.5,"latency_ms":{"p50":1.2,"p90":3.4,"p99":9.9,"max":40.1},"total_stock":60,"remaining_stock":0,"error_samples":[]}"#;
        let r = LoadReport::from_log(line).expect("parses");
        assert_eq!((r.attempts, r.sold_out, r.started_at_unix_ms, r.series.len()), (100, 40, 0, 0));
        let table = r.table();
        assert!(table.contains("sold out             40   40.0 %"), "{table}");
        assert!(table.contains("p99 9.9"), "{table}");
    }

    #[test]
    fn the_flash_sale_table_keeps_its_rows() {
        let r = LoadReport {
            scenario: "flash-sale".into(),
            sale_id: "s-9".into(),
            target_rps: 200,
            attempts: 10,
            operations: BTreeMap::from([("purchase".to_owned(), op(&[("succeeded", 6), ("sold_out", 4)], 2.0))]),
            total_stock: 6,
            error_samples: vec!["Unavailable: down".into()],
            ..Default::default()
        };
        let table = r.table();
        for want in [
            "flash-sale load: sale s-9",
            "200 purchases/s (open loop)",
            "succeeded             6   60.0 %",
            "sold out              4   40.0 %",
            "not active            0    0.0 %",
            "latency ms    p50 2.0",
            "stock         0 of 6 left",
            "error sample  Unavailable: down",
        ] {
            assert!(table.contains(want), "{want:?} missing in\n{table}");
        }
        assert!(!table.contains("Purchase calls"), "one operation: no title\n{table}");
    }

    #[test]
    fn the_orders_table_shows_every_operation_the_steps_and_the_warnings() {
        let step = |n: u32, rate: u32, p50: f64| StepReport {
            step: n,
            target_rps: rate,
            secs: 10.0,
            achieved_rps: f64::from(rate),
            operations: BTreeMap::from([("place".to_owned(), op(&[("succeeded", 9), ("shed", 1)], p50))]),
            ..StepReport::default()
        };
        let r = LoadReport {
            scenario: "orders".into(),
            target_rps: 20,
            operations: BTreeMap::from([
                ("place".to_owned(), op(&[("succeeded", 18), ("shed", 2)], 3.0)),
                ("saga".to_owned(), op(&[("confirmed", 15), ("delivery_failed", 2), ("cancelled", 1)], 150.0)),
                ("cancel".to_owned(), op(&[("succeeded", 1)], 4.0)),
            ]),
            steps: vec![step(1, 10, 2.0), step(2, 20, 5.0)],
            orders: Some(OrdersReport {
                fault_postal_code: "99999".into(),
                fault_share: 0.1,
                cancel_share: 0.05,
                ..OrdersReport::default()
            }),
            warnings: vec!["2 orders to postal code 99999 were CONFIRMED".into()],
            ..Default::default()
        };
        let table = r.table();
        for want in [
            "orders load: 10 % to fault postal code 99999, 5 % cancelled",
            "ramp 10 → 20 orders/s, 10 s per step (open loop)",
            "     2        20      20.0         0   90.0       5.0      20.0",
            "place         PlaceOrder calls",
            "saga          accepted orders until CONFIRMED or CANCELLED",
            "delivery failed        2   11.1 %",
            "cancel        CancelOrder calls",
            "latency ms    p50 150.0",
            "warning       2 orders to postal code 99999 were CONFIRMED",
        ] {
            assert!(table.contains(want), "{want:?} missing in\n{table}");
        }
        assert!(!table.contains("stock"), "no stock without a sale\n{table}");
    }
}
