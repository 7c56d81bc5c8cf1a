//! The load generator behind `cloudmart-load` (and `kubectl cloudmart load`, which runs it
//! in a pod of the cluster).
//!
//! Two scenarios ([`Scenario`]):
//!
//! - **flash-sale**: creates a sale (or uses `--sale-id`) and sends `Purchase` calls to the
//!   time-sale service ([`flash_sale`]).
//! - **orders**: sends `PlaceOrder` calls to the order service, a share of them to a
//!   fault-injected postal code and a share cancelled, and follows every accepted order
//!   until its saga ends ([`orders`]).
//!
//! Calls go out at a fixed rate, or a ramp of rates ([`schedule`]) — an **open loop**: the
//! rate does not drop when the service slows down, as real customers do not wait for each
//! other — with at most `concurrency` calls in flight. A call that is due while every slot
//! is busy is not queued but counted as `not_sent`: the generator is saturated and the
//! report says so instead of hiding it in a backlog. A rate of 0 switches to a closed
//! loop: `concurrency` workers, each sending as soon as it has an answer.
//!
//! Calls are spread over several HTTP/2 connections so a Kubernetes Service (which balances
//! per connection) reaches several replicas, and the servers' connection-age cap moves them
//! to new replicas as the HPA adds them.
//!
//! Every answer is classified and timed into HDR histograms per operation, per second and
//! per ramp step ([`stats`]); once a second a [`Progress`] shows the state ([`progress`]).
//! The final [`LoadReport`] ([`report`]) carries the totals, the steps and the per-second
//! series the chart is drawn from (`cloudmart_load_report::chart`).

pub mod flash_sale;
pub mod orders;
pub mod progress;
pub mod report;
pub mod schedule;
pub mod stats;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use cloudmart_load_report::StepReport;
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

use self::flash_sale::FlashSale;
use self::orders::Orders;
pub use self::orders::{OrderMix, SagaOptions};
pub use self::progress::{Progress, Snapshot};
pub use self::report::{Latency, LoadReport, OrdersReport, REPORT_MARKER};
use self::schedule::{Call, Pacer};
pub use self::schedule::{Ramp, Schedule, parse_duration, parse_ramp, parse_share};
use self::stats::{Collector, Interval, Operation, Outcome, Recorder};

/// What the load generator sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// `Purchase` calls on one flash sale of the time-sale service.
    FlashSale,
    /// `PlaceOrder` calls on the order service, their sagas followed to the end.
    Orders,
}

impl Scenario {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::FlashSale => "flash-sale",
            Self::Orders => "orders",
        }
    }
}

/// What one run does.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub scenario: Scenario,
    pub timesale_endpoint: String,
    pub order_endpoint: String,
    /// The rates over time (a rate of 0: closed loop).
    pub schedule: Schedule,
    pub concurrency: usize,
    /// HTTP/2 connections the calls are spread over.
    pub connections: usize,
    /// Stock of the sale the run creates (flash-sale).
    pub stock: i32,
    /// Per-customer limit of the sale the run creates (flash-sale).
    pub per_customer_limit: i32,
    /// Distinct customers (call `i` is made by customer `i % customers`).
    pub customers: u64,
    /// Buy from this sale instead of creating one (flash-sale).
    pub sale_id: Option<String>,
    /// Deadline of one call.
    pub call_timeout: Duration,
    /// Fault-injected and cancelled shares (orders).
    pub mix: OrderMix,
    /// How accepted orders are followed (orders).
    pub saga: SagaOptions,
}

/// Options that cannot work together, named by their flags.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum OptionsError {
    #[error("--concurrency must be at least 1")]
    NoConcurrency,
    #[error("--customers must be at least 1")]
    NoCustomers,
    #[error(
        "--fault-share {fault} and --cancel-share {cancel} add up to more than 1: an order is either sent to the \
         fault postal code or cancelled, not both"
    )]
    SharesAboveOne { fault: f64, cancel: f64 },
    #[error(
        "--fault-postal-code is empty while --fault-share is {0}: name a postal code the delivery service is \
         configured to fail (FAULT_DELIVERY_FAIL_POSTAL_CODES), or use --fault-share 0"
    )]
    NoFaultPostalCode(f64),
    #[error("--sale-id belongs to --scenario flash-sale: the orders scenario buys from no sale")]
    SaleIdWithOrders,
}

impl LoadOptions {
    /// Checks what the flags' own parsers cannot: combinations.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if self.concurrency == 0 {
            return Err(OptionsError::NoConcurrency);
        }
        if self.customers == 0 {
            return Err(OptionsError::NoCustomers);
        }
        if self.scenario == Scenario::Orders {
            let OrderMix { fault_share: fault, cancel_share: cancel, .. } = self.mix;
            if fault + cancel > 1.0 {
                return Err(OptionsError::SharesAboveOne { fault, cancel });
            }
            if fault > 0.0 && self.mix.fault_postal_code.trim().is_empty() {
                return Err(OptionsError::NoFaultPostalCode(fault));
            }
            if self.sale_id.is_some() {
                return Err(OptionsError::SaleIdWithOrders);
            }
        }
        Ok(())
    }
}

/// The scenario under way.
#[derive(Clone, Debug)]
enum Workload {
    FlashSale(Arc<FlashSale>),
    Orders(Arc<Orders>),
}

impl Workload {
    /// Connects and sets the scenario up (the flash sale is created here).
    async fn prepare(opts: &LoadOptions, run_id: String) -> anyhow::Result<Self> {
        Ok(match opts.scenario {
            Scenario::FlashSale => {
                let channels =
                    connect(&opts.timesale_endpoint, opts.connections, "--timesale-endpoint", "the time-sale service")
                        .await?;
                Self::FlashSale(Arc::new(FlashSale::prepare(opts, channels, run_id).await?))
            }
            Scenario::Orders => {
                let channels =
                    connect(&opts.order_endpoint, opts.connections, "--order-endpoint", "the order service").await?;
                Self::Orders(Arc::new(Orders::new(opts, channels, run_id)))
            }
        })
    }

    fn main_operation(&self) -> Operation {
        match self {
            Self::FlashSale(_) => Operation::Purchase,
            Self::Orders(_) => Operation::Place,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::FlashSale(f) => f.describe(),
            Self::Orders(o) => o.describe(),
        }
    }

    /// Call `call`; the future records its answer(s) into `recorder`.
    fn call(&self, call: Call, recorder: Arc<Recorder>) -> BoxFuture<'static, ()> {
        match self {
            Self::FlashSale(f) => f.clone().purchase(call, recorder).boxed(),
            Self::Orders(o) => o.clone().place(call, recorder).boxed(),
        }
    }

    /// Work still open after its call returned.
    fn open(&self) -> usize {
        match self {
            Self::FlashSale(_) => 0,
            Self::Orders(o) => o.open(),
        }
    }

    /// Waits for the work still open after the calls returned.
    async fn settle(&self) {
        if let Self::Orders(o) = self {
            o.settle().await;
        }
    }
}

/// `message` as a request that carries `timeout` as its gRPC deadline.
pub(crate) fn with_deadline<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Awaits `call`, cut off after `timeout` on the client's side as well (then it is
/// `DEADLINE_EXCEEDED`): its answer and how long it took.
pub(crate) async fn timed<T>(
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> (Result<T, tonic::Status>, Duration) {
    let started = Instant::now();
    let result = match tokio::time::timeout(timeout, call).await {
        Ok(answer) => answer.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded("client deadline")),
    };
    (result, started.elapsed())
}

/// How long the first connection is retried: in a fresh pod the network may not let it
/// through yet (NetworkPolicy enforcers program a new pod's address a moment after it
/// starts; DNS and Service endpoints lag the same way).
const FIRST_CONNECT_WITHIN: Duration = Duration::from_secs(30);

/// `n` connections to `endpoint` (named by `flag`, serving `service`).
async fn connect(endpoint: &str, n: usize, flag: &str, service: &str) -> anyhow::Result<Vec<Channel>> {
    let target = Endpoint::from_shared(endpoint.to_owned())
        .with_context(|| format!("{flag} {endpoint:?} is not a URI (example: http://127.0.0.1:50051)"))?
        .connect_timeout(Duration::from_secs(5));
    let mut channels = Vec::with_capacity(n.max(1));
    let first = crate::connect_endpoint(&target, FIRST_CONNECT_WITHIN, &format!("{service} ({flag})")).await?;
    channels.push(first);
    for _ in 1..n.max(1) {
        channels
            .push(target.connect().await.with_context(|| format!("cannot reach {service} at {endpoint} ({flag})"))?);
    }
    Ok(channels)
}

/// How often the open loop sends what is due (a 1 ms timer cannot pace 5,000/s).
const PACE: Duration = Duration::from_millis(10);

/// Runs the load and returns its report; `progress` shows it meanwhile.
pub async fn run(opts: &LoadOptions, progress: &mut dyn Progress) -> anyhow::Result<LoadReport> {
    opts.validate()?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let workload = Workload::prepare(opts, run_id).await?;
    progress.info(&format!(
        "{}: {} for {:?}, concurrency {}, {} connections",
        workload.describe(),
        rate_text(&opts.schedule, opts.scenario),
        opts.schedule.duration(),
        opts.concurrency,
        opts.connections.max(1)
    ));
    let recorder = Arc::new(Recorder::new(opts.schedule.steps().len()));
    let watched = watch(opts, &workload, &recorder, progress).await?;
    progress.finish();
    assemble(opts, &workload, &recorder, watched).await
}

/// The schedule in words: `200 orders/s`, `ramp 100 → 200 purchases/s, 20s each`.
fn rate_text(schedule: &Schedule, scenario: Scenario) -> String {
    let unit = match scenario {
        Scenario::FlashSale => "purchases/s",
        Scenario::Orders => "orders/s",
    };
    let steps = schedule.steps();
    match steps {
        _ if schedule.is_closed_loop() => "closed loop".to_owned(),
        [one] => format!("{} {unit}", one.rate),
        _ => format!(
            "ramp {} {unit}, {:?} each",
            steps.iter().map(|s| s.rate.to_string()).collect::<Vec<_>>().join(" → "),
            Duration::from_secs_f64(steps[0].secs)
        ),
    }
}

/// What [`watch`] saw.
#[derive(Debug)]
struct Watched {
    collector: Collector,
    /// When the load started (Unix time, ms).
    started_at_unix_ms: u64,
    /// Seconds from the start until the last call (not saga) was answered.
    calls_secs: f64,
}

/// Sends the load and, once a second, collects the interval and shows the progress,
/// until every call and every open saga is done.
async fn watch(
    opts: &LoadOptions,
    workload: &Workload,
    recorder: &Arc<Recorder>,
    progress: &mut dyn Progress,
) -> anyhow::Result<Watched> {
    let started = tokio::time::Instant::now();
    let started_at_unix_ms =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let sender =
        tokio::spawn(send_calls(opts.schedule.clone(), opts.concurrency, workload.clone(), recorder.clone(), started));
    let done = async {
        let sent = sender.await;
        let secs = started.elapsed().as_secs_f64();
        workload.settle().await;
        (sent, secs)
    };
    tokio::pin!(done);
    let mut ticker = tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut clock = IntervalClock { started, last: 0.0 };
    let mut collector = Collector::default();
    let calls_secs = loop {
        tokio::select! {
            _ = ticker.tick() => {
                let (t, secs, target) = clock.next(&opts.schedule);
                collector.push(recorder.take_interval(), t, secs, target);
                progress.update(&snapshot(&collector, &opts.schedule, started.elapsed(), workload));
            }
            (sent, secs) = &mut done => {
                sent.context("the load task panicked")??;
                break secs;
            }
        }
    };
    let (t, secs, target) = clock.next(&opts.schedule);
    collector.push_tail(recorder.take_interval(), t, secs, target);
    Ok(Watched { collector, started_at_unix_ms, calls_secs })
}

/// Consecutive intervals of the run: each starts where the previous ended.
struct IntervalClock {
    started: tokio::time::Instant,
    last: f64,
}

impl IntervalClock {
    /// The interval from the end of the previous one until now: its start and length in
    /// seconds, and the rate `schedule` aimed for in its middle.
    fn next(&mut self, schedule: &Schedule) -> (f64, f64, f64) {
        let now = self.started.elapsed().as_secs_f64();
        let (t, secs) = (self.last, now - self.last);
        self.last = now;
        (t, secs, f64::from(schedule.target_at(Duration::from_secs_f64(t + secs / 2.0))))
    }
}

/// The state of the run for the progress line.
fn snapshot(collector: &Collector, schedule: &Schedule, elapsed: Duration, workload: &Workload) -> Snapshot {
    let (recent, recent_secs) = collector.recent();
    let total = collector.total();
    let main = workload.main_operation();
    let latency = [main, Operation::Saga]
        .into_iter()
        .filter_map(|op| recent.latency(op).map(|l| (op.name(), l.quantiles())))
        .collect();
    let outcomes = [main, Operation::Saga, Operation::Cancel]
        .into_iter()
        .filter(|op| total.answered(*op) > 0)
        .map(|op| {
            let classes =
                op.classes().iter().map(|o| (o.label(), total.count(op, *o))).filter(|(_, n)| *n > 0).collect();
            (op.name(), classes)
        })
        .collect();
    Snapshot {
        elapsed,
        duration: schedule.duration(),
        target_rps: schedule.target_at(elapsed),
        step: schedule.is_ramp().then(|| schedule.step_at(elapsed).map(|i| (i + 1, schedule.steps().len()))).flatten(),
        rate: cloudmart_load_report::model::per_second(recent.sent, recent_secs),
        sent: total.sent,
        not_sent: total.not_sent,
        latency,
        outcomes,
        open: workload.open(),
    }
}

/// Sends the calls of `schedule` (open loop) or keeps `concurrency` calls going until it
/// ends (closed loop); returns once every call was answered.
async fn send_calls(
    schedule: Schedule,
    concurrency: usize,
    workload: Workload,
    recorder: Arc<Recorder>,
    started: tokio::time::Instant,
) -> anyhow::Result<()> {
    if schedule.is_closed_loop() {
        closed_loop(schedule.duration(), concurrency, workload, recorder, started).await
    } else {
        open_loop(schedule, concurrency, workload, recorder, started).await
    }
}

async fn open_loop(
    schedule: Schedule,
    concurrency: usize,
    workload: Workload,
    recorder: Arc<Recorder>,
    started: tokio::time::Instant,
) -> anyhow::Result<()> {
    let end = started + schedule.duration();
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut pacer = Pacer::new(schedule);
    let mut pace = tokio::time::interval(PACE);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut in_flight = JoinSet::new();
    loop {
        let now = pace.tick().await;
        dispatch(pacer.due(now.saturating_duration_since(started)), &slots, &recorder, |call, permit| {
            let answered = workload.call(call, recorder.clone());
            in_flight.spawn(async move {
                answered.await;
                drop(permit);
            });
        });
        while let Some(joined) = in_flight.try_join_next() {
            joined.context("a call task failed")?;
        }
        if now >= end {
            break;
        }
    }
    while let Some(joined) = in_flight.join_next().await {
        joined.context("a call task failed")?;
    }
    Ok(())
}

/// Sends each due call that gets a slot and counts the others as not sent.
fn dispatch(
    due: Vec<Call>,
    slots: &Arc<Semaphore>,
    recorder: &Recorder,
    mut send: impl FnMut(Call, OwnedSemaphorePermit),
) {
    for call in due {
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                recorder.sent(call);
                send(call, permit);
            }
            Err(_) => recorder.not_sent(call),
        }
    }
}

async fn closed_loop(
    duration: Duration,
    concurrency: usize,
    workload: Workload,
    recorder: Arc<Recorder>,
    started: tokio::time::Instant,
) -> anyhow::Result<()> {
    let end = started + duration;
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (workload, recorder, next) = (workload.clone(), recorder.clone(), next.clone());
        workers.spawn(async move {
            while tokio::time::Instant::now() < end {
                let call = Call { index: next.fetch_add(1, Ordering::Relaxed), step: 0 };
                recorder.sent(call);
                workload.call(call, recorder.clone()).await;
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.context("a load worker failed")?;
    }
    Ok(())
}

/// The report from everything the run recorded.
async fn assemble(
    opts: &LoadOptions,
    workload: &Workload,
    recorder: &Recorder,
    watched: Watched,
) -> anyhow::Result<LoadReport> {
    let main = workload.main_operation();
    let total = watched.collector.total().clone();
    let (steps, error_samples) = recorder.steps_and_samples();
    let (sale_id, total_stock, remaining_stock) = match workload {
        Workload::FlashSale(f) => {
            let (total, remaining) = f.stock_now().await?;
            (f.sale_id().to_owned(), total, remaining)
        }
        Workload::Orders(_) => (String::new(), 0, 0),
    };
    let count = |outcome: Outcome| total.count(main, outcome);
    let attempts = total.answered(main);
    let mut report = LoadReport {
        scenario: opts.scenario.name().to_owned(),
        sale_id,
        target_rps: opts.schedule.peak_rate(),
        concurrency: opts.concurrency,
        duration_secs: watched.calls_secs,
        attempts,
        succeeded: count(Outcome::Succeeded),
        sold_out: count(Outcome::SoldOut),
        limit_exceeded: count(Outcome::LimitExceeded),
        not_active: count(Outcome::NotActive),
        shed: count(Outcome::Shed),
        timeouts: count(Outcome::Timeout),
        errors: count(Outcome::Error),
        not_sent: total.not_sent,
        achieved_rps: cloudmart_load_report::model::per_second(attempts, watched.calls_secs),
        latency_ms: total.latency(main).map(|l| Latency::from(&l.percentiles())).unwrap_or_default(),
        total_stock,
        remaining_stock,
        error_samples,
        started_at_unix_ms: watched.started_at_unix_ms,
        operations: total.operation_reports(),
        steps: if opts.schedule.is_ramp() { step_reports(&opts.schedule, &steps) } else { Vec::new() },
        orders: match workload {
            Workload::Orders(o) => Some(o.report()),
            Workload::FlashSale(_) => None,
        },
        warnings: Vec::new(),
        series: watched.collector.into_series(),
    };
    report.warnings = warnings(&report, opts);
    Ok(report)
}

/// The figures of each step of `schedule`, from the intervals recorded per step.
fn step_reports(schedule: &Schedule, recorded: &[Interval]) -> Vec<StepReport> {
    schedule
        .steps()
        .iter()
        .zip(recorded)
        .enumerate()
        .map(|(i, (step, interval))| StepReport {
            step: u32::try_from(i + 1).unwrap_or(u32::MAX),
            target_rps: step.rate,
            start_secs: step.start_secs,
            secs: step.secs,
            sent: interval.sent,
            not_sent: interval.not_sent,
            achieved_rps: cloudmart_load_report::model::per_second(interval.sent, step.secs),
            operations: interval.operation_reports(),
        })
        .collect()
}

/// What looks wrong with the run itself, in words that say what to do.
fn warnings(report: &LoadReport, opts: &LoadOptions) -> Vec<String> {
    let mut out = Vec::new();
    if report.not_sent > 0 {
        out.push(format!(
            "{} calls were due while all {} slots were busy and were not sent: the rates above are below the \
             target (raise --concurrency, or the service answers too slowly for this rate)",
            report.not_sent, report.concurrency
        ));
    }
    if let Some(o) = &report.orders {
        if o.fault_confirmed > 0 {
            out.push(format!(
                "{} of {} orders to postal code {} were CONFIRMED: is the delivery service configured to fail it \
                 (FAULT_DELIVERY_FAIL_POSTAL_CODES={})?",
                o.fault_confirmed, o.fault, o.fault_postal_code, o.fault_postal_code
            ));
        }
        if o.regular_delivery_failed > 0 {
            out.push(format!(
                "{} ordinary orders were cancelled with DELIVERY_FAILED (FAULT_DELIVERY_FAIL_RATIO or delivery \
                 capacity?)",
                o.regular_delivery_failed
            ));
        }
    }
    let saga_timeouts = report.operations.get(Operation::Saga.name()).map_or(0, |s| s.count(Outcome::Timeout.name()));
    if saga_timeouts > 0 {
        out.push(format!(
            "{saga_timeouts} accepted orders were neither CONFIRMED nor CANCELLED within --saga-timeout {:?}",
            opts.saga.timeout
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(scenario: Scenario) -> LoadOptions {
        LoadOptions {
            scenario,
            timesale_endpoint: "http://127.0.0.1:50053".into(),
            order_endpoint: "http://127.0.0.1:50051".into(),
            schedule: Schedule::constant(100, Duration::from_secs(1)),
            concurrency: 3,
            connections: 1,
            stock: 10,
            per_customer_limit: 1,
            customers: 10,
            sale_id: None,
            call_timeout: Duration::from_secs(1),
            mix: OrderMix { fault_share: 0.1, cancel_share: 0.05, fault_postal_code: "99999".into() },
            saga: SagaOptions { timeout: Duration::from_secs(30), first_poll: Duration::from_millis(100) },
        }
    }

    #[test]
    fn a_saturated_generator_counts_what_it_could_not_send() {
        let opts = options(Scenario::FlashSale);
        let recorder = Recorder::new(1);
        let slots = Arc::new(Semaphore::new(opts.concurrency));
        let mut pacer = Pacer::new(opts.schedule.clone());
        let mut held = Vec::new();
        dispatch(pacer.due(Duration::from_millis(500)), &slots, &recorder, |call, permit| held.push((call, permit)));
        assert_eq!(held.len(), 3, "three slots");
        let first = recorder.take_interval();
        assert_eq!((first.sent, first.not_sent), (3, 47));
        held.clear(); // the three calls are answered
        dispatch(pacer.due(Duration::from_secs(5)), &slots, &recorder, |call, permit| held.push((call, permit)));
        let second = recorder.take_interval();
        assert_eq!((second.sent, second.not_sent), (3, 47));
        assert_eq!(held.iter().map(|(c, _)| c.index).collect::<Vec<_>>(), [50, 51, 52], "the first due get the slots");
        let (steps, _) = recorder.steps_and_samples();
        assert_eq!(steps[0].sent + steps[0].not_sent, 100, "every scheduled call is sent or not sent");
    }

    #[test]
    fn combinations_are_refused_naming_the_flags() {
        assert_eq!(options(Scenario::Orders).validate(), Ok(()));
        let refuse = |opts: LoadOptions| opts.validate().unwrap_err().to_string();
        let orders = options(Scenario::Orders);
        let shares = LoadOptions {
            mix: OrderMix { fault_share: 0.7, cancel_share: 0.5, ..orders.mix.clone() },
            ..orders.clone()
        };
        assert!(refuse(shares).starts_with("--fault-share 0.7 and --cancel-share 0.5 add up to more than 1"));
        let no_code =
            LoadOptions { mix: OrderMix { fault_postal_code: " ".into(), ..orders.mix.clone() }, ..orders.clone() };
        assert!(refuse(no_code).starts_with("--fault-postal-code is empty while --fault-share is 0.1"));
        let sale = LoadOptions { sale_id: Some("s".into()), ..orders.clone() };
        assert!(refuse(sale).starts_with("--sale-id belongs to --scenario flash-sale"));
        assert!(refuse(LoadOptions { concurrency: 0, ..orders }).contains("--concurrency"));
        let flash = LoadOptions {
            mix: OrderMix { fault_postal_code: String::new(), ..options(Scenario::Orders).mix },
            ..options(Scenario::FlashSale)
        };
        assert_eq!(flash.validate(), Ok(()), "the orders flags do not matter to the flash sale");
    }

    #[test]
    fn ramp_steps_report_what_was_sent_in_them() {
        let schedule = Schedule::ramp(&[10, 20], Duration::from_secs(2));
        let recorder = Recorder::new(2);
        let slots = Arc::new(Semaphore::new(1000));
        let mut pacer = Pacer::new(schedule.clone());
        let mut sent = Vec::new();
        dispatch(pacer.due(Duration::from_secs(10)), &slots, &recorder, |call, _| sent.push(call));
        for call in &sent {
            recorder.answer(call.step, Operation::Purchase, Outcome::Succeeded, Some(Duration::from_millis(2)));
        }
        let (intervals, _) = recorder.steps_and_samples();
        let steps = step_reports(&schedule, &intervals);
        assert_eq!(steps.len(), 2);
        assert_eq!((steps[0].step, steps[0].target_rps, steps[0].sent, steps[0].achieved_rps), (1, 10, 20, 10.0));
        assert_eq!((steps[1].step, steps[1].start_secs, steps[1].sent, steps[1].achieved_rps), (2, 2.0, 40, 20.0));
        assert_eq!(steps[1].operations["purchase"].count("succeeded"), 40);
    }

    #[test]
    fn warnings_say_what_went_wrong_with_the_run() {
        let opts = options(Scenario::Orders);
        let mut report = LoadReport { not_sent: 5, concurrency: 3, ..LoadReport::default() };
        report.orders = Some(OrdersReport {
            fault_postal_code: "99999".into(),
            fault: 10,
            fault_confirmed: 10,
            regular_delivery_failed: 1,
            ..OrdersReport::default()
        });
        report.operations.insert(
            "saga".into(),
            cloudmart_load_report::OperationReport {
                outcomes: [("timeouts".to_owned(), 2)].into_iter().collect(),
                ..Default::default()
            },
        );
        let w = warnings(&report, &opts);
        assert_eq!(w.len(), 4, "{w:#?}");
        assert!(w[0].starts_with("5 calls were due while all 3 slots were busy"));
        assert!(w[1].contains("10 of 10 orders to postal code 99999 were CONFIRMED"));
        assert!(w[2].starts_with("1 ordinary orders were cancelled with DELIVERY_FAILED"));
        assert!(w[3].starts_with("2 accepted orders were neither CONFIRMED nor CANCELLED within --saga-timeout 30s"));
        assert!(warnings(&LoadReport::default(), &opts).is_empty());
    }

    #[test]
    fn the_rate_in_words() {
        let secs = Duration::from_secs;
        assert_eq!(rate_text(&Schedule::constant(0, secs(5)), Scenario::FlashSale), "closed loop");
        assert_eq!(rate_text(&Schedule::constant(300, secs(5)), Scenario::Orders), "300 orders/s");
        assert_eq!(
            rate_text(&Schedule::ramp(&[100, 200], secs(20)), Scenario::FlashSale),
            "ramp 100 → 200 purchases/s, 20s each"
        );
    }
}
