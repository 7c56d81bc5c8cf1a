//! Prometheus metrics: one process-wide registry, served as text on `METRICS_ADDR/metrics`.
//!
//! The platform records its own metrics (RPC, outbox, consumer, DLQ) where they happen;
//! services add business counters and gauges with [`counter`] and [`gauge`]:
//!
//! ```
//! cloudmart_platform::metrics::counter("orders_total", "Orders by status reached.", &[("status", "CONFIRMED")]);
//! ```
//!
//! Serving is one worker: `MetricsServer::bind(config.metrics_addr).await?` at build time and
//! `runtime.with_worker("metrics", worker(move |t| metrics.run(t)))` (see [`crate::app`]).
//!
//! Every name gets the `cloudmart_` prefix.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{LazyLock, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
    core::{MetricVec, MetricVecBuilder},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const PREFIX: &str = "cloudmart";

/// Latency buckets (seconds) shared by the duration histograms: 1 ms .. 10 s.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The process-wide registry (what `/metrics` shows).
pub fn registry() -> &'static Registry {
    &M.registry
}

struct Platform {
    registry: Registry,
    rpc_requests: IntCounterVec,
    rpc_duration: HistogramVec,
    outbox_backlog: IntGaugeVec,
    outbox_oldest_age: GaugeVec,
    build_info: IntGaugeVec,
    outbox_published: IntCounterVec,
    outbox_publish_failures: IntCounterVec,
    outbox_publish_latency: HistogramVec,
    consumer_processed: IntCounterVec,
    consumer_duration: HistogramVec,
    consumer_lag: IntGaugeVec,
    dlq: IntCounterVec,
    dynamic_counters: Mutex<HashMap<String, IntCounterVec>>,
    dynamic_gauges: Mutex<HashMap<String, IntGaugeVec>>,
}

fn name(n: &str) -> String {
    format!("{PREFIX}_{n}")
}

fn register<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    r.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

static M: LazyLock<Platform> = LazyLock::new(|| {
    let r = Registry::new();
    let counter = |n: &str, help: &str, labels: &[&str]| {
        register(&r, IntCounterVec::new(Opts::new(name(n), help), labels).expect("valid metric"))
    };
    let gauge = |n: &str, help: &str, labels: &[&str]| {
        register(&r, IntGaugeVec::new(Opts::new(name(n), help), labels).expect("valid metric"))
    };
    let histogram = |n: &str, help: &str, labels: &[&str]| {
        register(
            &r,
            HistogramVec::new(HistogramOpts::new(name(n), help).buckets(LATENCY_BUCKETS.to_vec()), labels)
                .expect("valid metric"),
        )
    };
    Platform {
        rpc_requests: counter(
            "rpc_server_requests_total",
            "gRPC calls served, by service, method and gRPC status code.",
            &["rpc_service", "rpc_method", "code"],
        ),
        rpc_duration: histogram(
            "rpc_server_duration_seconds",
            "gRPC server call duration, by service and method.",
            &["rpc_service", "rpc_method"],
        ),
        outbox_backlog: gauge("outbox_backlog", "Outbox rows not yet published (measured by the relay).", &[]),
        outbox_oldest_age: register(
            &r,
            GaugeVec::new(
                Opts::new(
                    name("outbox_oldest_unpublished_age_seconds"),
                    "Age of the oldest outbox row not yet published; 0 when none is waiting (measured by the relay).",
                ),
                &[],
            )
            .expect("valid metric"),
        ),
        build_info: gauge(
            "build_info",
            "Always 1: the service (several in one `cloudmart-dev` process) and its version.",
            &["service", "version"],
        ),
        outbox_published: counter(
            "outbox_published_total",
            "Events published by the outbox relay, by topic and CloudEvents type.",
            &["topic", "type"],
        ),
        outbox_publish_failures: counter(
            "outbox_publish_failures_total",
            "Outbox publishes the broker refused (retried later), by topic.",
            &["topic"],
        ),
        outbox_publish_latency: histogram(
            "outbox_publish_latency_seconds",
            "Time from the outbox write to the broker's acknowledgement, by topic.",
            &["topic"],
        ),
        consumer_processed: counter(
            "consumer_events_total",
            "Records consumed, by topic and result (applied, duplicate, dead_lettered).",
            &["topic", "result"],
        ),
        consumer_duration: histogram(
            "consumer_processing_seconds",
            "Time to apply one consumed record (transaction included), by topic.",
            &["topic"],
        ),
        consumer_lag: gauge(
            "consumer_lag",
            "Records behind the partition's high watermark, by topic and partition.",
            &["topic", "partition"],
        ),
        dlq: counter("dlq_messages_total", "Records sent to the dead-letter topic, by source topic.", &["topic"]),
        dynamic_counters: Mutex::default(),
        dynamic_gauges: Mutex::default(),
        registry: r,
    }
});

/// One served gRPC call (called by the server trace layer).
pub fn rpc_served(service: &str, method: &str, code: i32, elapsed: Duration) {
    M.rpc_requests.with_label_values(&[service, method, grpc_code_name(code)]).inc();
    M.rpc_duration.with_label_values(&[service, method]).observe(elapsed.as_secs_f64());
}

/// A gRPC status code as the gRPC specification names it (`OK`, `INVALID_ARGUMENT`, …),
/// the `code` label's value; a number outside the specification is `UNKNOWN`, as gRPC
/// treats it, so the label's values stay the 17 names.
pub fn grpc_code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// `cloudmart_build_info{service, version} 1` for a service started in this process.
pub fn build_info(service: &str) {
    M.build_info.with_label_values(&[service, env!("CARGO_PKG_VERSION")]).set(1);
}

/// Age of the oldest unpublished outbox row (`None`: nothing waits).
pub fn outbox_oldest_age(age: Option<Duration>) {
    M.outbox_oldest_age.with_label_values::<&str>(&[]).set(age.map_or(0.0, |a| a.as_secs_f64()));
}

/// Current number of unpublished outbox rows.
pub fn outbox_backlog(rows: u64) {
    M.outbox_backlog.with_label_values::<&str>(&[]).set(i64::try_from(rows).unwrap_or(i64::MAX));
}

/// One event published (`latency`: from its outbox write to the broker's ack).
pub fn outbox_published(topic: &str, ce_type: &str, latency: Duration) {
    M.outbox_published.with_label_values(&[topic, ce_type]).inc();
    M.outbox_publish_latency.with_label_values(&[topic]).observe(latency.as_secs_f64());
}

/// One publish the broker refused.
pub fn outbox_publish_failed(topic: &str) {
    M.outbox_publish_failures.with_label_values(&[topic]).inc();
}

/// One consumed record and how long applying it took.
pub fn consumed(topic: &str, result: &str, elapsed: Duration) {
    M.consumer_processed.with_label_values(&[topic, result]).inc();
    M.consumer_duration.with_label_values(&[topic]).observe(elapsed.as_secs_f64());
}

/// Consumer lag of one partition.
pub fn consumer_lag(topic: &str, partition: i32, lag: i64) {
    M.consumer_lag.with_label_values(&[topic, &partition.to_string()]).set(lag.max(0));
}

/// One record dead-lettered.
pub fn dead_lettered(topic: &str) {
    M.dlq.with_label_values(&[topic]).inc();
}

/// Adds one to the business counter `cloudmart_<name>` (registered on first use with the
/// label names of that call; later calls must use the same label names).
pub fn counter(name: &str, help: &str, labels: &[(&str, &str)]) {
    counter_add(name, help, labels, 1);
}

/// Adds `n` to the business counter `cloudmart_<name>`.
pub fn counter_add(name: &str, help: &str, labels: &[(&str, &str)], n: u64) {
    if let Some(c) = counter_handle(name, help, labels) {
        c.inc_by(n);
    }
}

/// The labelled series of the business counter `cloudmart_<name>`, for callers that count
/// on a hot path: resolve it once, then `inc()` costs an atomic add (no lookup, no lock).
pub fn counter_handle(name: &str, help: &str, labels: &[(&str, &str)]) -> Option<IntCounter> {
    series(&M.dynamic_counters, name, help, labels, IntCounterVec::new)
}

/// Sets the business gauge `cloudmart_<name>` (e.g. stock remaining per active sale).
pub fn gauge(name: &str, help: &str, labels: &[(&str, &str)], value: i64) {
    if let Some(g) = gauge_handle(name, help, labels) {
        g.set(value);
    }
}

/// The labelled series of the business gauge `cloudmart_<name>` (see [`counter_handle`]).
pub fn gauge_handle(name: &str, help: &str, labels: &[(&str, &str)]) -> Option<IntGauge> {
    series(&M.dynamic_gauges, name, help, labels, IntGaugeVec::new)
}

/// Finds or registers the metric family `cloudmart_<name>` in `families` and returns the
/// series for `labels`; a bad name or label set is logged and not recorded.
fn series<B: MetricVecBuilder + 'static>(
    families: &Mutex<HashMap<String, MetricVec<B>>>,
    name: &str,
    help: &str,
    labels: &[(&str, &str)],
    create: fn(Opts, &[&str]) -> prometheus::Result<MetricVec<B>>,
) -> Option<B::M> {
    let mut map = families.lock().unwrap_or_else(|e| e.into_inner());
    let family = match map.get(name) {
        Some(v) => v.clone(),
        None => {
            let names: Vec<&str> = labels.iter().map(|(k, _)| *k).collect();
            let Ok(v) = create(Opts::new(self::name(name), help), &names) else {
                tracing::warn!(metric = name, "invalid metric name or labels; not recorded");
                return None;
            };
            if M.registry.register(Box::new(v.clone())).is_err() {
                tracing::warn!(metric = name, "metric already registered with another type; not recorded");
                return None;
            }
            map.insert(name.to_owned(), v.clone());
            v
        }
    };
    drop(map);
    let values: Vec<&str> = labels.iter().map(|(_, v)| *v).collect();
    family
        .get_metric_with_label_values(&values)
        .inspect_err(|e| tracing::warn!(metric = name, error = %e, "label mismatch; not recorded"))
        .ok()
}

/// Removes one labelled series of a business gauge (a sale that ended).
pub fn gauge_remove(name: &str, labels: &[(&str, &str)]) {
    let map = M.dynamic_gauges.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(v) = map.get(name) {
        let values: Vec<&str> = labels.iter().map(|(_, v)| *v).collect();
        let _ = v.remove_label_values(&values);
    }
}

/// The registry in Prometheus text format, followed by the process metrics.
pub fn render() -> String {
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&M.registry.gather(), &mut buf) {
        tracing::warn!(error = %e, "metrics encoding failed");
    }
    let mut text = String::from_utf8(buf).unwrap_or_default();
    text.push_str(&process::render());
    text
}

/// The standard `process_*` metrics (Prometheus client conventions, unprefixed) read from
/// `/proc/self` at scrape time: CPU seconds, resident memory, open and maximum file
/// descriptors, start time. Empty where there is no procfs (macOS `make dev`).
mod process {
    use std::fmt::Write as _;

    /// Clock ticks per second of `/proc/*/stat` times: USER_HZ, 100 on Linux for every
    /// architecture the kernel exports to user space.
    const USER_HZ: f64 = 100.0;

    pub(super) fn render() -> String {
        let mut out = String::new();
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        // fields after the parenthesised command name, which may itself hold spaces
        let fields: Vec<&str> = stat
            .as_deref()
            .and_then(|s| s.rsplit_once(')'))
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // rest[0] is field 3 (state): utime is field 14, stime 15, starttime 22
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            metric(
                &mut out,
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                (utime + stime) / USER_HZ,
            );
        }
        if let Some(rss) = status_kib("VmRSS:") {
            metric(&mut out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", rss * 1024.0);
        }
        if let Some(vsz) = status_kib("VmSize:") {
            metric(&mut out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", vsz * 1024.0);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            metric(&mut out, "process_open_fds", "gauge", "Number of open file descriptors.", dir.count() as f64);
        }
        if let Some(max) = max_fds() {
            metric(&mut out, "process_max_fds", "gauge", "Maximum number of open file descriptors.", max);
        }
        if let (Some(start), Some(btime)) = (field(22), boot_time()) {
            metric(
                &mut out,
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                btime + start / USER_HZ,
            );
        }
        out
    }

    fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
    }

    fn status_kib(key: &str) -> Option<f64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with(key))?;
        line[key.len()..].split_whitespace().next()?.parse().ok()
    }

    fn max_fds() -> Option<f64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line["Max open files".len()..].split_whitespace().next()?.parse().ok()
    }

    fn boot_time() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
    }
}

/// The `/metrics` HTTP endpoint (HTTP/1.1).
pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    /// Binds `addr` (`METRICS_ADDR`); port 0 picks a free one.
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("METRICS_ADDR {addr}: cannot listen"))?;
        Ok(Self { listener })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `token` is cancelled.
    pub async fn run(self, token: CancellationToken) -> anyhow::Result<()> {
        LazyLock::force(&M);
        loop {
            let accepted = tokio::select! {
                _ = token.cancelled() => return Ok(()),
                a = self.listener.accept() => a,
            };
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics accept failed");
                    continue;
                }
            };
            let token = token.clone();
            tokio::spawn(async move {
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(handle));
                tokio::select! {
                    _ = conn => {}
                    _ = token.cancelled() => {}
                }
            });
        }
    }
}

async fn handle(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match req.uri().path() {
        "/metrics" => Response::builder()
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .body(Full::new(Bytes::from(render()))),
        "/" => Response::builder().body(Full::new(Bytes::from_static(b"cloudmart metrics: see /metrics\n"))),
        _ => Response::builder().status(404).body(Full::new(Bytes::from_static(b"not found\n"))),
    };
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_and_business_metrics_render() {
        rpc_served("cloudmart.test.v1.T", "Do", 0, Duration::from_millis(3));
        counter("test_things_total", "Things.", &[("status", "OK")]);
        counter("test_things_total", "Things.", &[("status", "OK")]);
        gauge("test_stock", "Stock.", &[("sale", "s1")], 7);
        build_info("test");
        outbox_oldest_age(Some(Duration::from_millis(2500)));
        let text = render();
        assert!(text.contains("cloudmart_rpc_server_duration_seconds_bucket"), "{text}");
        assert!(text.contains(r#"code="OK""#), "the code label is the status name: {text}");
        assert!(text.contains(r#"cloudmart_build_info{service="test",version=""#), "{text}");
        assert!(text.contains("cloudmart_outbox_oldest_unpublished_age_seconds 2.5"), "{text}");
        if cfg!(target_os = "linux") {
            for name in [
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
                "process_open_fds",
                "process_start_time_seconds",
            ] {
                let value: f64 = text
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name} ")))
                    .unwrap_or_else(|| panic!("{name} missing: {text}"))
                    .parse()
                    .unwrap();
                // a fresh test process may not have used 10 ms of CPU yet
                let least = if name == "process_cpu_seconds_total" { 0.0 } else { 1.0 };
                assert!(value >= least, "{name} = {value}");
            }
        }
        assert!(text.contains(r#"cloudmart_test_things_total{status="OK"} 2"#), "{text}");
        assert!(text.contains(r#"cloudmart_test_stock{sale="s1"} 7"#), "{text}");
        counter("test_things_total", "Things.", &[("other", "x")]); // label mismatch: ignored
    }

    #[test]
    fn code_names_follow_the_grpc_specification() {
        assert_eq!(grpc_code_name(0), "OK");
        assert_eq!(grpc_code_name(3), "INVALID_ARGUMENT");
        assert_eq!(grpc_code_name(8), "RESOURCE_EXHAUSTED");
        assert_eq!(grpc_code_name(14), "UNAVAILABLE");
        assert_eq!(grpc_code_name(16), "UNAUTHENTICATED");
        // outside the specification: UNKNOWN, so the label's values stay bounded
        assert_eq!(grpc_code_name(17), "UNKNOWN");
        assert_eq!(grpc_code_name(-1), "UNKNOWN");
        for code in 0..=16 {
            assert_eq!(grpc_code_name(code), format!("{:?}", tonic::Code::from(code)).to_uppercase_snake());
        }
    }

    trait UpperSnake {
        fn to_uppercase_snake(&self) -> String;
    }
    impl UpperSnake for String {
        fn to_uppercase_snake(&self) -> String {
            let mut out = String::new();
            for (i, c) in self.chars().enumerate() {
                if c.is_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_uppercase());
            }
            out.replace("O_K", "OK")
        }
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = server.local_addr().unwrap();
        let token = CancellationToken::new();
        let task = tokio::spawn(server.run(token.clone()));
        rpc_served("cloudmart.test.v1.T", "Http", 0, Duration::from_millis(1));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).await.unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains(r#"rpc_method="Http""#), "{body}");
        token.cancel();
        task.await.unwrap().unwrap();
    }
}
