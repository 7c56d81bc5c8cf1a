//! The flash-sale load generator behind `cloudmart-load` (and `kubectl cloudmart load`,
//! which runs it in a pod of the cluster).
//!
//! It creates a sale (or uses `--sale-id`), then sends `Purchase` calls at a fixed rate
//! (**open loop**: the rate does not drop when the service slows down, as real buyers do
//! not wait for each other) with at most `concurrency` calls in flight. A call that is due
//! while all slots are busy is not queued but counted as `not_sent` — the generator is
//! saturated and the report says so instead of hiding it in a backlog. `--sale-rps 0`
//! switches to a closed loop: `concurrency` buyers, each sending as soon as it has an answer.
//!
//! Calls are spread over several HTTP/2 connections so a Kubernetes Service (which balances
//! per connection) reaches several replicas, and the servers' connection-age cap moves them
//! to new replicas as the HPA adds them.
//!
//! Every answer is classified (`succeeded`, `sold_out`, `limit_exceeded`, `not_active`,
//! `shed` = `RESOURCE_EXHAUSTED`, `timeouts`, `errors`) and timed; the final [`LoadReport`]
//! is printed as one line `CLOUDMART_LOAD_REPORT {json}` for machines and as a table for
//! people.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use cloudmart_platform::grpc::reason_of;
use cloudmart_proto::{
    contract::reasons,
    order::v1::ShippingAddress,
    timesale::v1::{self as pb, time_sale_service_client::TimeSaleServiceClient},
};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tonic::{Code, transport::Channel};

/// The marker in front of the JSON report line.
pub const REPORT_MARKER: &str = "CLOUDMART_LOAD_REPORT ";

/// What one run does.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub timesale_endpoint: String,
    /// Purchase attempts per second; 0 = closed loop.
    pub sale_rps: u32,
    pub duration: Duration,
    pub concurrency: usize,
    /// HTTP/2 connections the calls are spread over.
    pub connections: usize,
    /// Stock of the sale the run creates.
    pub stock: i32,
    pub per_customer_limit: i32,
    /// Distinct customers (attempt `i` buys as customer `i % customers`).
    pub customers: u64,
    /// Use this sale instead of creating one.
    pub sale_id: Option<String>,
    /// Deadline of one call.
    pub call_timeout: Duration,
    /// How often a progress line is printed (stderr).
    pub progress_every: Duration,
}

/// Latency percentiles in milliseconds over every answered call.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// The figures of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    pub scenario: String,
    pub sale_id: String,
    pub target_rps: u32,
    pub concurrency: usize,
    pub duration_secs: f64,
    /// Calls sent (each got exactly one of the outcomes below).
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
}

impl LoadReport {
    /// The machine-readable line (`CLOUDMART_LOAD_REPORT {json}`).
    pub fn line(&self) -> String {
        format!("{REPORT_MARKER}{}", serde_json::to_string(self).expect("a report serializes"))
    }

    /// Finds and parses the report line in a log.
    pub fn from_log(log: &str) -> Option<Self> {
        log.lines().rev().find_map(|l| l.strip_prefix(REPORT_MARKER)).and_then(|j| serde_json::from_str(j).ok())
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let pct = |n: u64| if self.attempts == 0 { 0.0 } else { n as f64 * 100.0 / self.attempts as f64 };
        let mut out = format!(
            "flash-sale load: sale {}\n  target        {} purchases/s ({}), {:.1} s, concurrency {}\n  \
             achieved      {:.1} calls/s, {} calls, {} not sent (generator saturated)\n",
            self.sale_id,
            self.target_rps,
            if self.target_rps == 0 { "closed loop" } else { "open loop" },
            self.duration_secs,
            self.concurrency,
            self.achieved_rps,
            self.attempts,
            self.not_sent,
        );
        for (name, n) in [
            ("succeeded", self.succeeded),
            ("sold out", self.sold_out),
            ("limit exceeded", self.limit_exceeded),
            ("not active", self.not_active),
            ("shed", self.shed),
            ("timeouts", self.timeouts),
            ("errors", self.errors),
        ] {
            out.push_str(&format!("  {name:<14}{n:>9}  {:5.1} %\n", pct(n)));
        }
        out.push_str(&format!(
            "  latency ms    p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}\n  stock         {} of {} left\n",
            self.latency_ms.p50,
            self.latency_ms.p90,
            self.latency_ms.p99,
            self.latency_ms.max,
            self.remaining_stock,
            self.total_stock
        ));
        for e in &self.error_samples {
            out.push_str(&format!("  error sample  {e}\n"));
        }
        out
    }
}

/// Parses `120s`, `2m`, `1h`, `500ms` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, ""), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (examples: 90s, 2m, 500ms)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {s:?} (use ms, s, m or h)")),
    };
    if !(secs.is_finite() && secs > 0.0 && secs <= 7.0 * 86_400.0) {
        return Err(format!("{s:?} must be longer than 0 and at most 7 days"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Default)]
struct Tally {
    attempts: AtomicU64,
    succeeded: AtomicU64,
    sold_out: AtomicU64,
    limit_exceeded: AtomicU64,
    not_active: AtomicU64,
    shed: AtomicU64,
    timeouts: AtomicU64,
    errors: AtomicU64,
    not_sent: AtomicU64,
    /// Microseconds of every answered call.
    latencies: Mutex<Vec<u32>>,
    error_samples: Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, result: Result<(), tonic::Status>, elapsed: Duration) {
        let counter = match &result {
            Ok(()) => &self.succeeded,
            Err(s) if s.code() == Code::FailedPrecondition => match reason_of(s).as_deref() {
                Some(reasons::SOLD_OUT) => &self.sold_out,
                Some(reasons::LIMIT_EXCEEDED) => &self.limit_exceeded,
                Some(reasons::SALE_NOT_ACTIVE) => &self.not_active,
                _ => &self.errors,
            },
            Err(s) if s.code() == Code::ResourceExhausted => &self.shed,
            Err(s) if s.code() == Code::DeadlineExceeded => &self.timeouts,
            Err(_) => &self.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.attempts.fetch_add(1, Ordering::Relaxed);
        if std::ptr::eq(counter, &self.errors)
            && let Err(s) = &result
        {
            let mut samples = self.error_samples.lock().unwrap_or_else(|e| e.into_inner());
            let sample = format!("{:?}: {}", s.code(), s.message());
            if samples.len() < 5 && !samples.contains(&sample) {
                samples.push(sample);
            }
        }
        if !std::ptr::eq(counter, &self.timeouts) {
            let micros = u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX);
            self.latencies.lock().unwrap_or_else(|e| e.into_inner()).push(micros);
        }
    }

    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

fn percentiles(mut micros: Vec<u32>) -> Latency {
    if micros.is_empty() {
        return Latency::default();
    }
    micros.sort_unstable();
    let at = |p: f64| {
        let i = ((micros.len() as f64 * p).ceil() as usize).saturating_sub(1).min(micros.len() - 1);
        f64::from(micros[i]) / 1000.0
    };
    Latency { p50: at(0.50), p90: at(0.90), p99: at(0.99), max: at(1.0) }
}

fn purchase(sale_id: &str, customer: u64, run: &str) -> pb::PurchaseRequest {
    pb::PurchaseRequest {
        sale_id: sale_id.to_owned(),
        customer_id: format!("load-{run}-{customer}"),
        quantity: 1,
        shipping_address: Some(ShippingAddress {
            line1: "1 Load St".into(),
            city: "Seoul".into(),
            postal_code: format!("{:05}", 10_000 + customer % 80_000),
            country: "KR".into(),
        }),
        idempotency_key: String::new(),
    }
}

async fn connect(endpoint: &str, n: usize) -> anyhow::Result<Vec<TimeSaleServiceClient<Channel>>> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let channel = Channel::from_shared(endpoint.to_owned())
            .with_context(|| format!("--timesale-endpoint {endpoint:?} is not a URI"))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| format!("cannot reach the time-sale service at {endpoint}"))?;
        clients.push(TimeSaleServiceClient::new(channel));
    }
    Ok(clients)
}

/// Runs the load and returns its report; progress lines go to `progress`.
pub async fn run(opts: &LoadOptions, mut progress: impl FnMut(String)) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(opts.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(opts.customers > 0, "--customers must be at least 1");
    let clients = connect(&opts.timesale_endpoint, opts.connections).await?;
    let mut admin = clients[0].clone();
    let sale = match &opts.sale_id {
        Some(id) => admin
            .get_sale(pb::GetSaleRequest { sale_id: id.clone() })
            .await
            .with_context(|| format!("sale {id} cannot be read"))?
            .into_inner(),
        None => {
            let now = chrono::Utc::now().timestamp();
            admin
                .create_sale(pb::CreateSaleRequest {
                    sku: "LOAD-1".into(),
                    title: "cloudmart-load flash sale".into(),
                    price_cents: 100,
                    total_stock: opts.stock,
                    per_customer_limit: opts.per_customer_limit,
                    starts_at: Some(prost_types::Timestamp { seconds: now - 5, nanos: 0 }),
                    ends_at: Some(prost_types::Timestamp {
                        seconds: now + opts.duration.as_secs() as i64 + 600,
                        nanos: 0,
                    }),
                })
                .await
                .context("CreateSale failed")?
                .into_inner()
        }
    };
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    progress(format!(
        "sale {} ({} in stock): {} for {:?}, concurrency {}, {} connections",
        sale.sale_id,
        sale.remaining_stock,
        if opts.sale_rps == 0 { "closed loop".to_owned() } else { format!("{} purchases/s", opts.sale_rps) },
        opts.duration,
        opts.concurrency,
        clients.len()
    ));

    let tally = Arc::new(Tally::default());
    let slots = Arc::new(Semaphore::new(opts.concurrency));
    let started = Instant::now();
    let end = tokio::time::Instant::now() + opts.duration;
    let next = Arc::new(AtomicU64::new(0));
    let send = {
        let (tally, clients, sale_id, next) = (tally.clone(), clients.clone(), sale.sale_id.clone(), next.clone());
        let (customers, timeout) = (opts.customers, opts.call_timeout);
        move |permit: tokio::sync::OwnedSemaphorePermit| {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let mut client = clients[i as usize % clients.len()].clone();
            let mut req = tonic::Request::new(purchase(&sale_id, i % customers, &run_id));
            req.set_timeout(timeout);
            let tally = tally.clone();
            async move {
                let t = Instant::now();
                let result = match tokio::time::timeout(timeout, client.purchase(req)).await {
                    Ok(r) => r.map(|_| ()),
                    Err(_) => Err(tonic::Status::deadline_exceeded("client deadline")),
                };
                tally.record(result, t.elapsed());
                drop(permit);
            }
        }
    };

    let mut ticker = tokio::time::interval(opts.progress_every);
    ticker.tick().await;
    let mut tasks = tokio::task::JoinSet::new();
    if opts.sale_rps == 0 {
        for _ in 0..opts.concurrency {
            let (slots, send) = (slots.clone(), send.clone());
            tasks.spawn(async move {
                while tokio::time::Instant::now() < end {
                    let Ok(permit) = slots.clone().acquire_owned().await else { break };
                    send(permit).await;
                }
            });
        }
    } else {
        // Every 10 ms, send the calls that are due by now (a 1 ms timer cannot pace 5,000/s).
        let (slots, send, tally, rps) = (slots.clone(), send.clone(), tally.clone(), f64::from(opts.sale_rps));
        tasks.spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_millis(10));
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let t0 = tokio::time::Instant::now();
            let mut due_sent = 0u64;
            let mut inflight = tokio::task::JoinSet::new();
            loop {
                let now = pace.tick().await;
                if now >= end {
                    break;
                }
                let due = ((now - t0).as_secs_f64() * rps) as u64;
                while due_sent < due {
                    due_sent += 1;
                    match slots.clone().try_acquire_owned() {
                        Ok(permit) => {
                            inflight.spawn(send(permit));
                        }
                        Err(_) => {
                            tally.not_sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                while inflight.try_join_next().is_some() {}
            }
            while inflight.join_next().await.is_some() {}
        });
    }

    let mut last = (0u64, Instant::now());
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let attempts = Tally::get(&tally.attempts);
                let rate = (attempts - last.0) as f64 / last.1.elapsed().as_secs_f64();
                last = (attempts, Instant::now());
                progress(format!(
                    "t={:>4.0}s  {attempts} calls  {rate:.0}/s  ok {}  sold out {}  shed {}  timeouts {}  errors {}  not sent {}",
                    started.elapsed().as_secs_f64(),
                    Tally::get(&tally.succeeded),
                    Tally::get(&tally.sold_out),
                    Tally::get(&tally.shed),
                    Tally::get(&tally.timeouts),
                    Tally::get(&tally.errors),
                    Tally::get(&tally.not_sent),
                ));
            }
            joined = tasks.join_next() => {
                match joined {
                    Some(r) => r.context("a load task panicked")?,
                    None => break,
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = admin
        .get_sale(pb::GetSaleRequest { sale_id: sale.sale_id.clone() })
        .await
        .context("GetSale after the run failed")?
        .into_inner();
    let latencies = std::mem::take(&mut *tally.latencies.lock().unwrap_or_else(|e| e.into_inner()));
    let attempts = Tally::get(&tally.attempts);
    Ok(LoadReport {
        scenario: "flash-sale".into(),
        sale_id: sale.sale_id,
        target_rps: opts.sale_rps,
        concurrency: opts.concurrency,
        duration_secs: elapsed,
        attempts,
        succeeded: Tally::get(&tally.succeeded),
        sold_out: Tally::get(&tally.sold_out),
        limit_exceeded: Tally::get(&tally.limit_exceeded),
        not_active: Tally::get(&tally.not_active),
        shed: Tally::get(&tally.shed),
        timeouts: Tally::get(&tally.timeouts),
        errors: Tally::get(&tally.errors),
        not_sent: Tally::get(&tally.not_sent),
        achieved_rps: attempts as f64 / elapsed,
        latency_ms: percentiles(latencies),
        total_stock: i64::from(after.total_stock),
        remaining_stock: i64::from(after.remaining_stock),
        error_samples: tally.error_samples.lock().unwrap_or_else(|e| e.into_inner()).clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("120s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").unwrap_err().contains("longer than 0"));
        assert!(parse_duration("10d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("fast").unwrap_err().contains("not a duration"));
        assert!(parse_duration("").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        assert_eq!(percentiles(vec![]), Latency::default());
        let l = percentiles((1..=100).rev().map(|ms| ms * 1000).collect());
        assert_eq!(l, Latency { p50: 50.0, p90: 90.0, p99: 99.0, max: 100.0 });
        assert_eq!(percentiles(vec![7000]), Latency { p50: 7.0, p90: 7.0, p99: 7.0, max: 7.0 });
    }

    #[test]
    fn outcomes_are_classified_by_code_and_reason() {
        let t = Tally::default();
        let refusal = |reason: &str| Err(cloudmart_platform::grpc::refusal(reason, "refused"));
        t.record(Ok(()), Duration::from_millis(1));
        t.record(refusal("SOLD_OUT"), Duration::from_millis(1));
        t.record(refusal("LIMIT_EXCEEDED"), Duration::from_millis(1));
        t.record(refusal("SALE_NOT_ACTIVE"), Duration::from_millis(1));
        t.record(refusal("SOMETHING_ELSE"), Duration::from_millis(1));
        t.record(Err(tonic::Status::resource_exhausted("busy")), Duration::from_millis(1));
        t.record(Err(tonic::Status::deadline_exceeded("slow")), Duration::from_secs(5));
        t.record(Err(tonic::Status::unavailable("down")), Duration::from_millis(1));
        let counts: Vec<u64> =
            [&t.attempts, &t.succeeded, &t.sold_out, &t.limit_exceeded, &t.not_active, &t.shed, &t.timeouts, &t.errors]
                .iter()
                .map(|c| Tally::get(c))
                .collect();
        assert_eq!(counts, [8, 1, 1, 1, 1, 1, 1, 2]);
        assert_eq!(t.latencies.lock().unwrap().len(), 7, "timeouts are not latencies");
        assert_eq!(t.error_samples.lock().unwrap().len(), 2);
    }

    #[test]
    fn the_report_line_round_trips() {
        let r = LoadReport { sale_id: "s".into(), attempts: 3, succeeded: 2, ..Default::default() };
        let log = format!("noise\n{}\nmore noise\n", r.line());
        assert_eq!(LoadReport::from_log(&log), Some(r));
        assert_eq!(LoadReport::from_log("no report here"), None);
    }
}
