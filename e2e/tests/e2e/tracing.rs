//! Traces and metrics over real processes (issue 4): the services export OTLP/gRPC to
//! **Jaeger** when `TEST_JAEGER_URL` (query API, e.g. `http://127.0.0.1:16686`) and
//! `TEST_JAEGER_OTLP` (e.g. `http://127.0.0.1:4317`) are set — CI runs Jaeger v2 from
//! `deploy/jaeger.sh` — and the tests read every trace back through Jaeger's HTTP query
//! API; otherwise an OTLP receiver inside the test collects the spans. Either way: one
//! order is one trace through gRPC and Kafka; the trace survives a relay restart; spans
//! are flushed on SIGTERM; `/metrics` serves the RPC, outbox and consumer metrics.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use cloudmart_platform::proto::order::v1::{self as pb, order_service_client::OrderServiceClient};
use cloudmart_platform::testkit::until;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

use crate::harness::{Proc, System};

const PLACE_ORDER: &str = "cloudmart.order.v1.OrderService/PlaceOrder";
const QUOTE_DELIVERY: &str = "cloudmart.delivery.v1.DeliveryService/QuoteDelivery";

/// One received span, flattened.
#[derive(Clone, Debug)]
struct Span {
    service: String,
    trace_id: String,
    span_id: String,
    parent_id: String,
    name: String,
    /// OTLP span kind: 2 server, 3 client, 4 producer, 5 consumer.
    kind: i32,
    attrs: HashMap<String, String>,
}

impl Span {
    fn attr(&self, key: &str) -> &str {
        self.attrs.get(key).map(String::as_str).unwrap_or("")
    }
}

/// A minimal OTLP/gRPC trace receiver.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

fn value(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attrs(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), value(&kv.value))).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut out = Vec::new();
        for rs in request.into_inner().resource_spans {
            let resource = rs.resource.map(|r| attrs(&r.attributes)).unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(Span {
                        service: service.clone(),
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_id: hex(&s.parent_span_id),
                        name: s.name,
                        kind: s.kind,
                        attrs: attrs(&s.attributes),
                    });
                }
            }
        }
        self.spans.lock().unwrap().extend(out);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Collector {
    /// Starts the receiver on a free port; returns the `OTEL_EXPORTER_OTLP_ENDPOINT` value.
    async fn start() -> (Collector, String) {
        let collector = Collector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = TraceServiceServer::new(collector.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        (collector, format!("http://{addr}"))
    }
}

/// Jaeger's HTTP query API (`/api/traces/{id}`, `/api/services`), read with a plain
/// HTTP/1.0 request: no client library between the test and what Jaeger stored.
#[derive(Clone)]
struct JaegerQuery {
    /// `host:port` of the query API.
    addr: String,
}

impl JaegerQuery {
    async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let mut stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .unwrap_or_else(|e| panic!("Jaeger query API at {} does not answer: {e}", self.addr));
        let req = format!("GET {path} HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\n\r\n", self.addr);
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
    }

    /// The spans Jaeger holds for `trace_id` (empty while it holds none).
    async fn trace(&self, trace_id: &str) -> Vec<Span> {
        let (status, body) = self.get(&format!("/api/traces/{trace_id}")).await;
        if status != 200 {
            return Vec::new();
        }
        let mut out = Vec::new();
        for t in body["data"].as_array().into_iter().flatten() {
            let services: HashMap<&str, &str> = t["processes"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(id, p)| (id.as_str(), p["serviceName"].as_str().unwrap_or("")))
                .collect();
            for s in t["spans"].as_array().into_iter().flatten() {
                let attrs: HashMap<String, String> = s["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|tag| {
                        let v = &tag["value"];
                        let v = v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
                        (tag["key"].as_str().unwrap_or("").to_owned(), v)
                    })
                    .collect();
                let parent = s["references"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["refType"] == "CHILD_OF")
                    .and_then(|r| r["spanID"].as_str())
                    .unwrap_or("");
                let kind = match attrs.get("span.kind").map(String::as_str) {
                    Some("server") => 2,
                    Some("client") => 3,
                    Some("producer") => 4,
                    Some("consumer") => 5,
                    _ => 1,
                };
                out.push(Span {
                    service: services.get(s["processID"].as_str().unwrap_or("")).copied().unwrap_or("").to_owned(),
                    trace_id: s["traceID"].as_str().unwrap_or("").to_owned(),
                    span_id: s["spanID"].as_str().unwrap_or("").to_owned(),
                    parent_id: parent.to_owned(),
                    name: s["operationName"].as_str().unwrap_or("").to_owned(),
                    kind,
                    attrs,
                });
            }
        }
        out
    }

    /// The service names Jaeger has seen.
    async fn services(&self) -> Vec<String> {
        let (_, body) = self.get("/api/services").await;
        body["data"].as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
    }
}

/// Where the test reads spans back from: Jaeger when the environment names one (CI),
/// otherwise the in-test receiver.
#[derive(Clone)]
enum Traces {
    Jaeger(JaegerQuery),
    Local(Collector),
}

impl Traces {
    /// Picks the backend; returns it and the `OTEL_EXPORTER_OTLP_ENDPOINT` for the services.
    async fn start() -> (Traces, String) {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match (var("TEST_JAEGER_URL"), var("TEST_JAEGER_OTLP")) {
            (Some(url), Some(otlp)) => {
                let addr = url.trim_start_matches("http://").trim_end_matches('/').to_owned();
                eprintln!("[e2e] traces: Jaeger (OTLP {otlp}, query API http://{addr})");
                (Traces::Jaeger(JaegerQuery { addr }), otlp)
            }
            _ => {
                let (collector, endpoint) = Collector::start().await;
                eprintln!(
                    "[e2e] traces: in-test OTLP receiver at {endpoint} (set TEST_JAEGER_URL and TEST_JAEGER_OTLP for Jaeger)"
                );
                (Traces::Local(collector), endpoint)
            }
        }
    }

    async fn trace(&self, trace_id: &str) -> Vec<Span> {
        match self {
            Traces::Jaeger(q) => q.trace(trace_id).await,
            Traces::Local(c) => c.spans.lock().unwrap().iter().filter(|s| s.trace_id == trace_id).cloned().collect(),
        }
    }

    /// Waits until `pred` holds for the spans of `trace_id`; panics with them after 60 s.
    async fn wait_for(&self, trace_id: &str, what: &str, pred: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        self.wait_within(trace_id, what, Duration::from_secs(60), pred).await
    }

    async fn wait_within(
        &self,
        trace_id: &str,
        what: &str,
        within: Duration,
        pred: impl Fn(&[Span]) -> bool,
    ) -> Vec<Span> {
        until(&format!("trace {trace_id}: {what}"), within, || async {
            let spans = self.trace(trace_id).await;
            if pred(&spans) { Ok(spans) } else { Err(format!("spans so far:\n{}", dump(&spans))) }
        })
        .await
    }
}

fn dump(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "  {} {} kind={} parent={} [{}] {} {}",
                s.span_id,
                s.service,
                s.kind,
                s.parent_id,
                s.name,
                s.attr("cloudevents.event_type"),
                s.attr("messaging.message.id")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn find(spans: &[Span], pred: impl Fn(&Span) -> bool) -> Option<&Span> {
    spans.iter().find(|s| pred(s))
}

/// The consumer span of `service` processing an event of `ce_type`.
fn consumed<'a>(spans: &'a [Span], service: &str, ce_type: &str) -> Option<&'a Span> {
    find(spans, |s| {
        s.service == service
            && s.attr("messaging.operation.type") == "process"
            && s.attr("cloudevents.event_type") == ce_type
    })
}

/// Whether the parent chain of the consumer span of `service` handling `ce_type` reaches a
/// span matching `pred`. Processes export their spans in their own batches, so a wait
/// must ask for the whole chain, not only its ends.
fn chain_reaches(spans: &[Span], service: &str, ce_type: &str, pred: impl Fn(&Span) -> bool) -> bool {
    consumed(spans, service, ce_type).is_some_and(|c| ancestors(spans, c).iter().any(|s| pred(s)))
}

/// The parent chain of `span` (itself first), within `spans`.
fn ancestors<'a>(spans: &'a [Span], span: &'a Span) -> Vec<&'a Span> {
    let mut chain = vec![span];
    let mut cur = span;
    while let Some(parent) = find(spans, |s| s.span_id == cur.parent_id) {
        chain.push(parent);
        cur = parent;
        if chain.len() > 64 {
            break;
        }
    }
    chain
}

/// A W3C parent for the test's own call: (trace id, traceparent).
fn remote_parent() -> (String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let tp = format!("00-{trace_id}-{span_id}-01");
    (trace_id, tp)
}

/// Places an order as part of a fresh trace; returns (order id, trace id).
async fn place_traced(client: &mut OrderServiceClient<Channel>, postal_code: &str, key: &str) -> (String, String) {
    let (trace_id, traceparent) = remote_parent();
    let mut req = tonic::Request::new(crate::saga::request("trace-customer", postal_code, key));
    req.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    let order = client.place_order(req).await.unwrap().into_inner().order.unwrap();
    (order.order_id, trace_id)
}

async fn wait_status(client: &mut OrderServiceClient<Channel>, order_id: &str, want: pb::OrderStatus) {
    until(&format!("order {order_id} {want:?}"), Duration::from_secs(60), || {
        let mut client = client.clone();
        async move {
            let o = client.get_order(pb::GetOrderRequest { order_id: order_id.into() }).await.unwrap().into_inner();
            if o.status() == want { Ok(()) } else { Err(format!("it is {:?}", o.status())) }
        }
    })
    .await
}

/// `GET /metrics` of a process.
async fn scrape(p: &Proc) -> String {
    let addr = p.metrics_addr.as_deref().expect("process started with METRICS_ADDR");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

/// Sum of the samples of `metric` whose label set contains every `labels` pair.
fn sample_sum(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} ")))
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn otel_env(endpoint: &str, schedule_delay_ms: &'static str) -> Vec<(&'static str, String)> {
    vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()), ("OTEL_BSP_SCHEDULE_DELAY", schedule_delay_ms.into())]
}

fn refs<'a>(env: &'a [(&'static str, String)], extra: &[(&'static str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).chain(extra.iter().copied()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_through_grpc_and_kafka() {
    let (collector, endpoint) = Traces::start().await;
    let sys = System::new("trace").await;
    let fast = otel_env(&endpoint, "200");
    let delivery = sys.start_delivery(&refs(&fast, &[("FAULT_DELIVERY_FAIL_POSTAL_CODES", "99999")])).await;
    let order = sys.start_order(&refs(&fast, &[])).await;
    let mut client = OrderServiceClient::connect(format!("http://{}", sys.order_addr)).await.unwrap();

    // Saga 1: a confirmed order.
    let (confirmed, trace) = place_traced(&mut client, "10001", "trace-ok").await;
    wait_status(&mut client, &confirmed, pb::OrderStatus::Confirmed).await;
    let spans = collector
        .wait_for(&trace, "delivery consuming OrderPlaced and order consuming DeliveryScheduled", |s| {
            chain_reaches(s, "delivery", "cloudmart.order.v1.OrderPlaced", |x| x.name == PLACE_ORDER)
                && chain_reaches(s, "order", "cloudmart.delivery.v1.DeliveryScheduled", |x| x.name == PLACE_ORDER)
                && find(s, |x| x.name == QUOTE_DELIVERY && x.kind == 2)
                    .is_some_and(|q| find(s, |c| c.span_id == q.parent_id).is_some())
        })
        .await;
    let server = find(&spans, |s| s.name == PLACE_ORDER).unwrap();
    assert_eq!(server.service, "order", "{}", dump(&spans));
    assert_eq!(server.attr("rpc.system"), "grpc");
    assert_eq!(server.attr("rpc.service"), "cloudmart.order.v1.OrderService");
    assert_eq!(server.attr("rpc.method"), "PlaceOrder");
    assert_eq!(server.attr("rpc.grpc.status_code"), "0");
    assert_eq!(server.kind, 2);
    let quote = find(&spans, |s| s.name == QUOTE_DELIVERY && s.kind == 2)
        .unwrap_or_else(|| panic!("no QuoteDelivery server span:\n{}", dump(&spans)));
    assert_eq!(quote.service, "delivery");
    let quote_client = find(&spans, |s| s.span_id == quote.parent_id)
        .unwrap_or_else(|| panic!("QuoteDelivery has no client span:\n{}", dump(&spans)));
    assert_eq!((quote_client.service.as_str(), quote_client.kind), ("order", 3), "{}", dump(&spans));
    assert!(
        ancestors(&spans, quote).iter().any(|s| s.span_id == server.span_id),
        "QuoteDelivery is not under PlaceOrder:\n{}",
        dump(&spans)
    );
    // The order's transaction is a database client span under PlaceOrder.
    let txn = find(&spans, |s| s.name == "TRANSACTION place_order")
        .unwrap_or_else(|| panic!("no place_order transaction span:\n{}", dump(&spans)));
    assert_eq!((txn.service.as_str(), txn.kind, txn.parent_id.as_str()), ("order", 3, server.span_id.as_str()));
    assert_eq!(txn.attr("db.operation.name"), "TRANSACTION");
    assert_eq!(txn.attr("db.transaction.outcome"), "commit");
    assert!(["postgresql", "sqlite"].contains(&txn.attr("db.system.name")), "{}", txn.attr("db.system.name"));
    // delivery's consumer span -> order's outbox publish span -> ... -> PlaceOrder.
    let consumer = consumed(&spans, "delivery", "cloudmart.order.v1.OrderPlaced").unwrap();
    assert_eq!(consumer.attr("messaging.system"), "kafka");
    assert_eq!(consumer.kind, 5);
    assert!(consumer.attr("messaging.destination.name").ends_with("order-events"));
    assert!(!consumer.attr("messaging.message.id").is_empty());
    assert!(!consumer.attr("messaging.kafka.offset").is_empty());
    let chain = ancestors(&spans, consumer);
    let publish = chain.get(1).unwrap_or_else(|| panic!("consumer span has no parent:\n{}", dump(&spans)));
    assert_eq!(publish.service, "order", "{}", dump(&spans));
    assert_eq!(publish.attr("messaging.operation.type"), "publish", "{}", dump(&spans));
    assert_eq!(publish.kind, 4);
    assert_eq!(publish.attr("messaging.message.id"), consumer.attr("messaging.message.id"));
    assert!(chain.iter().any(|s| s.span_id == server.span_id), "chain does not reach PlaceOrder:\n{}", dump(&spans));
    // ... and the confirmation comes back into the same trace.
    let back = consumed(&spans, "order", "cloudmart.delivery.v1.DeliveryScheduled").unwrap();
    assert!(ancestors(&spans, back).iter().any(|s| s.span_id == consumer.span_id), "{}", dump(&spans));
    for s in &spans {
        let expected = if (s.kind == 2 && s.name.contains("DeliveryService"))
            || (s.kind == 5 && s.attr("cloudevents.event_source") == "order")
        {
            Some("delivery")
        } else if s.kind == 2 && s.name.contains("OrderService") {
            Some("order")
        } else {
            None
        };
        if let Some(expected) = expected {
            assert_eq!(s.service, expected, "span {} has the wrong service.name", s.name);
        }
    }

    // Saga 2: a compensated order also carries DeliveryFailed -> OrderCancelled.
    let (cancelled, trace2) = place_traced(&mut client, "99999", "trace-fail").await;
    wait_status(&mut client, &cancelled, pb::OrderStatus::Cancelled).await;
    let spans2 = collector
        .wait_for(&trace2, "the compensation (order handling DeliveryFailed, delivery handling OrderCancelled)", |s| {
            consumed(s, "order", "cloudmart.delivery.v1.DeliveryFailed").is_some()
                && chain_reaches(s, "delivery", "cloudmart.order.v1.OrderCancelled", |x| x.name == PLACE_ORDER)
        })
        .await;
    let cancel = consumed(&spans2, "delivery", "cloudmart.order.v1.OrderCancelled").unwrap();
    let root = ancestors(&spans2, cancel).last().map(|s| s.name.clone());
    assert_eq!(root.as_deref(), Some(PLACE_ORDER), "compensation is not one tree:\n{}", dump(&spans2));

    // JSON logs carry the trace id.
    let log = order.log_text();
    assert!(
        log.lines().any(|l| l.contains("order placed") && l.contains(&format!("\"trace_id\":\"{trace}\""))),
        "no `order placed` log line with trace_id {trace} in {}",
        order.log.display()
    );

    // /metrics during the run.
    let text = scrape(&order).await;
    assert!(
        sample_sum(&text, "cloudmart_rpc_server_duration_seconds_count", &["rpc_method=\"PlaceOrder\""]) >= 2.0,
        "{text}"
    );
    assert!(sample_sum(&text, "cloudmart_rpc_server_requests_total", &["code=\"OK\""]) > 0.0, "{text}");
    assert!(sample_sum(&text, "cloudmart_outbox_published_total", &["topic=\"order-events\""]) > 0.0, "{text}");
    assert!(sample_sum(&text, "cloudmart_outbox_publish_latency_seconds_count", &[]) > 0.0, "{text}");
    assert!(text.contains("cloudmart_outbox_backlog"), "{text}");
    assert!(text.contains("cloudmart_outbox_oldest_unpublished_age_seconds"), "{text}");
    assert!(text.contains(r#"cloudmart_build_info{service="order",version=""#), "{text}");
    if cfg!(target_os = "linux") {
        assert!(sample_sum(&text, "process_resident_memory_bytes", &[]) > 1e6, "{text}");
        assert!(sample_sum(&text, "process_open_fds", &[]) > 0.0, "{text}");
    }
    assert!(sample_sum(&text, "cloudmart_consumer_events_total", &["result=\"applied\""]) > 0.0, "{text}");
    assert!(sample_sum(&text, "cloudmart_consumer_processing_seconds_count", &[]) > 0.0, "{text}");
    let text = scrape(&delivery).await;
    assert!(
        sample_sum(&text, "cloudmart_rpc_server_duration_seconds_count", &["rpc_method=\"QuoteDelivery\""]) > 0.0,
        "{text}"
    );
    assert!(sample_sum(&text, "cloudmart_consumer_events_total", &["topic=\"order-events\""]) > 0.0, "{text}");
    assert!(sample_sum(&text, "cloudmart_outbox_published_total", &["topic=\"delivery-events\""]) > 0.0, "{text}");

    // Spans are flushed on SIGTERM: with a 60 s export delay, nothing leaves before the
    // processes stop; right after they exit, the last order's spans are there.
    assert!(order.terminate(Duration::from_secs(30)).success());
    assert!(delivery.terminate(Duration::from_secs(30)).success());
    let slow = otel_env(&endpoint, "60000");
    let delivery = sys.start_delivery(&refs(&slow, &[])).await;
    let order = sys.start_order(&refs(&slow, &[])).await;
    let mut client = OrderServiceClient::connect(format!("http://{}", sys.order_addr)).await.unwrap();
    let (last, trace3) = place_traced(&mut client, "10002", "trace-last").await;
    wait_status(&mut client, &last, pb::OrderStatus::Confirmed).await;
    assert!(order.terminate(Duration::from_secs(30)).success());
    assert!(delivery.terminate(Duration::from_secs(30)).success());
    // The processes are gone; their batch delay (60 s) has not passed, so whatever
    // arrives now was flushed at shutdown. (Jaeger needs a moment to store it.)
    collector
        .wait_within(&trace3, "spans flushed at shutdown", Duration::from_secs(20), |s| {
            find(s, |x| x.name == PLACE_ORDER && x.service == "order").is_some()
                && consumed(s, "delivery", "cloudmart.order.v1.OrderPlaced").is_some()
                && consumed(s, "order", "cloudmart.delivery.v1.DeliveryScheduled").is_some()
        })
        .await;
    if let Traces::Jaeger(q) = &collector {
        let services = q.services().await;
        for svc in ["order", "delivery"] {
            assert!(services.iter().any(|s| s == svc), "Jaeger lists no service {svc}: {services:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_survives_a_relay_restart() {
    let (collector, endpoint) = Traces::start().await;
    let sys = System::new("trace_relay").await;
    let fast = otel_env(&endpoint, "200");
    let _delivery = sys.start_delivery(&refs(&fast, &[])).await;
    let order = sys.start_order(&refs(&fast, &[("OUTBOX_RELAY", "off")])).await;
    let mut client = OrderServiceClient::connect(format!("http://{}", sys.order_addr)).await.unwrap();
    let (order_id, trace) = place_traced(&mut client, "10003", "trace-relay").await;
    // The PlaceOrder span is exported; the event stays in the outbox.
    let before =
        collector.wait_for(&trace, "the PlaceOrder span", |s| find(s, |x| x.name == PLACE_ORDER).is_some()).await;
    assert!(find(&before, |s| s.attr("messaging.operation.type") == "publish").is_none(), "{}", dump(&before));
    order.crash();

    let order = sys.start_order(&refs(&fast, &[])).await;
    wait_status(&mut client, &order_id, pb::OrderStatus::Confirmed).await;
    let spans = collector
        .wait_for(&trace, "the publish after the restart and delivery consuming it", |s| {
            chain_reaches(s, "delivery", "cloudmart.order.v1.OrderPlaced", |x| x.name == PLACE_ORDER)
        })
        .await;
    let consumer = consumed(&spans, "delivery", "cloudmart.order.v1.OrderPlaced").unwrap();
    let chain = ancestors(&spans, consumer);
    assert_eq!(chain.get(1).map(|s| s.attr("messaging.operation.type")), Some("publish"), "{}", dump(&spans));
    assert_eq!(chain.last().map(|s| s.name.as_str()), Some(PLACE_ORDER), "{}", dump(&spans));
    drop(order);
}

/// Saga 3: a time-sale purchase is one trace through time-sale, order and delivery, and
/// back into time-sale when the order is confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flash_sale_purchase_is_one_trace_into_order_and_delivery() {
    use cloudmart_platform::proto::timesale::v1::{self as tpb, time_sale_service_client::TimeSaleServiceClient};

    let (collector, endpoint) = Traces::start().await;
    let sys = System::new("trace_ts").await;
    let ts_db = cloudmart_platform::testkit::TestDatabase::create("trace_ts_timesale").await.unwrap();
    let fast = otel_env(&endpoint, "200");
    let _delivery = sys.start_delivery(&refs(&fast, &[])).await;
    let _order = sys.start_order(&refs(&fast, &[])).await;
    let ts_addr = format!("127.0.0.1:{}", crate::harness::free_port());
    let _timesale = crate::timesale::start_timesale_with(&sys, &ts_db.url, &ts_addr, &refs(&fast, &[])).await;
    let mut client = TimeSaleServiceClient::connect(format!("http://{ts_addr}")).await.unwrap();
    let now = chrono::Utc::now().timestamp();
    let sale = client
        .create_sale(tpb::CreateSaleRequest {
            sku: "T-1".into(),
            title: "traced".into(),
            price_cents: 100,
            total_stock: 5,
            per_customer_limit: 1,
            starts_at: Some(prost_types::Timestamp { seconds: now - 60, nanos: 0 }),
            ends_at: Some(prost_types::Timestamp { seconds: now + 3600, nanos: 0 }),
        })
        .await
        .unwrap()
        .into_inner();
    let (trace, traceparent) = remote_parent();
    let mut req = tonic::Request::new(tpb::PurchaseRequest {
        sale_id: sale.sale_id,
        customer_id: "trace-buyer".into(),
        quantity: 1,
        shipping_address: crate::saga::request("trace-customer", "10001", "x").shipping_address,
        idempotency_key: String::new(),
    });
    req.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    client.purchase(req).await.unwrap();

    let spans = collector
        .wait_for(&trace, "time-sale consuming OrderConfirmed", |s| {
            chain_reaches(s, "timesale", "cloudmart.order.v1.OrderConfirmed", |x| {
                x.name == "cloudmart.timesale.v1.TimeSaleService/Purchase"
            }) && ["order", "delivery"]
                .iter()
                .all(|svc| chain_reaches(s, "timesale", "cloudmart.order.v1.OrderConfirmed", |x| x.service == *svc))
                && consumed(s, "order", "cloudmart.timesale.v1.TimeSalePurchased").is_some()
        })
        .await;
    let purchase = find(&spans, |s| s.name == "cloudmart.timesale.v1.TimeSaleService/Purchase").unwrap();
    assert_eq!(purchase.service, "timesale");
    let back = consumed(&spans, "timesale", "cloudmart.order.v1.OrderConfirmed").unwrap();
    let chain = ancestors(&spans, back);
    let services: Vec<&str> = chain.iter().map(|s| s.service.as_str()).collect();
    assert!(chain.iter().any(|s| s.span_id == purchase.span_id), "not one tree:\n{}", dump(&spans));
    for svc in ["order", "delivery", "timesale"] {
        assert!(services.contains(&svc), "{svc} missing from the chain {services:?}:\n{}", dump(&spans));
    }
    assert!(consumed(&spans, "order", "cloudmart.timesale.v1.TimeSalePurchased").is_some(), "{}", dump(&spans));
}
