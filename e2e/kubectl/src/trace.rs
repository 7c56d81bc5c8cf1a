//! `kubectl cloudmart trace ORDER_ID`: the order's trace from Jaeger, as a tree of spans.
//!
//! Which spans carry the order id (services/platform): the order service's log events
//! inside a span carry an `order_id` field (`order placed`, `time-sale order created`),
//! which the OpenTelemetry layer exports as span-event attributes; and every Kafka
//! publish/consume span of `order-events` and `delivery-events` has the record key — the
//! order id — as `messaging.kafka.message.key`. Jaeger's search matches span and event
//! attributes, so the plugin searches service `order` for each of the two and takes the
//! union of the traces found (`GET /api/traces?service=order&tags={…}&start=…&end=…`).
//!
//! A trace is printed as a header line, one line per span — start offset, duration,
//! service, then the span's name and kind indented under its parent — and a summary per
//! service. [`render`] only needs Jaeger's JSON, so it is tested on a recorded trace.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::jaeger::JaegerTarget;

/// The span attributes that carry an order id, in the order they are searched.
pub const ORDER_ID_TAGS: [&str; 2] = ["order_id", "messaging.kafka.message.key"];

/// The service whose spans carry the order id.
pub const SEARCHED_SERVICE: &str = "order";

/// Traces asked for per search.
const SEARCH_LIMIT: u32 = 20;

/// Time between two searches with `--wait`.
pub const RETRY_EVERY: Duration = Duration::from_secs(2);

/// A trace as Jaeger's HTTP API returns it (fields the plugin reads; others ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JaegerTrace {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    #[serde(default)]
    pub spans: Vec<JaegerSpan>,
    #[serde(default)]
    pub processes: BTreeMap<String, JaegerProcess>,
}

/// A span of a [`JaegerTrace`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JaegerSpan {
    #[serde(rename = "spanID")]
    pub span_id: String,
    #[serde(rename = "operationName", default)]
    pub operation_name: String,
    #[serde(default)]
    pub references: Vec<JaegerReference>,
    /// Microseconds since the Unix epoch.
    #[serde(rename = "startTime", default)]
    pub start_time: u64,
    /// Microseconds.
    #[serde(default)]
    pub duration: u64,
    #[serde(default)]
    pub tags: Vec<JaegerTag>,
    #[serde(rename = "processID", default)]
    pub process_id: String,
}

/// A reference to another span (`CHILD_OF`, `FOLLOWS_FROM`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JaegerReference {
    #[serde(rename = "refType", default)]
    pub ref_type: String,
    #[serde(rename = "spanID", default)]
    pub span_id: String,
}

/// A span attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JaegerTag {
    pub key: String,
    #[serde(default)]
    pub value: serde_json::Value,
}

/// The process (service) of spans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JaegerProcess {
    #[serde(rename = "serviceName", default)]
    pub service_name: String,
}

/// The answer of `GET /api/traces`.
#[derive(Debug, Deserialize)]
struct SearchAnswer {
    #[serde(default)]
    data: Option<Vec<JaegerTrace>>,
    #[serde(default)]
    errors: Option<Vec<serde_json::Value>>,
}

impl JaegerSpan {
    fn tag(&self, key: &str) -> Option<String> {
        self.tags.iter().find(|t| t.key == key).map(|t| match &t.value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    /// `server`, `client`, `producer`, `consumer`, `internal` (`span.kind`).
    pub fn kind(&self) -> String {
        self.tag("span.kind").unwrap_or_else(|| "internal".to_owned())
    }

    /// Whether the span ended in an error (`error=true` or `otel.status_code=ERROR`).
    pub fn is_error(&self) -> bool {
        self.tag("error").as_deref() == Some("true") || self.tag("otel.status_code").as_deref() == Some("ERROR")
    }

    fn end_time(&self) -> u64 {
        self.start_time.saturating_add(self.duration)
    }
}

impl JaegerTrace {
    /// The service of `span` (its process's name).
    pub fn service(&self, span: &JaegerSpan) -> &str {
        self.processes.get(&span.process_id).map_or("?", |p| p.service_name.as_str())
    }

    /// Services with spans in the trace, by their first span's start.
    pub fn services(&self) -> Vec<&str> {
        let mut first: HashMap<&str, u64> = HashMap::new();
        for span in &self.spans {
            let start = first.entry(self.service(span)).or_insert(span.start_time);
            *start = (*start).min(span.start_time);
        }
        let mut services: Vec<(&str, u64)> = first.into_iter().collect();
        services.sort_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)));
        services.into_iter().map(|(s, _)| s).collect()
    }

    /// The first start and last end of its spans (µs).
    fn bounds(&self) -> (u64, u64) {
        let start = self.spans.iter().map(|s| s.start_time).min().unwrap_or(0);
        let end = self.spans.iter().map(JaegerSpan::end_time).max().unwrap_or(start);
        (start, end)
    }

    /// The parent of span `i` within the trace (its first reference to a span present).
    fn parent(&self, i: usize, index: &HashMap<&str, usize>) -> Option<usize> {
        let span = &self.spans[i];
        let mut refs: Vec<&JaegerReference> = span.references.iter().collect();
        refs.sort_by_key(|r| r.ref_type != "CHILD_OF");
        refs.into_iter().find_map(|r| index.get(r.span_id.as_str()).copied()).filter(|p| *p != i)
    }

    /// The spans in tree order, each with its depth and the tree's drawing prefix.
    pub fn tree(&self) -> Vec<(usize, String)> {
        let index: HashMap<&str, usize> = self.spans.iter().enumerate().map(|(i, s)| (s.span_id.as_str(), i)).collect();
        let mut children: BTreeMap<Option<usize>, Vec<usize>> = BTreeMap::new();
        for i in 0..self.spans.len() {
            children.entry(self.parent(i, &index)).or_default().push(i);
        }
        let by_start = |v: &mut Vec<usize>| {
            v.sort_by(|a, b| {
                let (a, b) = (&self.spans[*a], &self.spans[*b]);
                (a.start_time, &a.span_id).cmp(&(b.start_time, &b.span_id))
            });
        };
        children.values_mut().for_each(by_start);
        let mut out = Vec::with_capacity(self.spans.len());
        let mut seen = vec![false; self.spans.len()];
        // Depth first, iteratively: (span, prefix for its own line, prefix for its children).
        let mut stack: Vec<(usize, String, String)> = Vec::new();
        let push_children = |stack: &mut Vec<(usize, String, String)>, kids: &[usize], indent: &str, root: bool| {
            for (n, child) in kids.iter().enumerate().rev() {
                let last = n + 1 == kids.len();
                let (own, next) = if root {
                    (String::new(), String::new())
                } else if last {
                    (format!("{indent}└─ "), format!("{indent}   "))
                } else {
                    (format!("{indent}├─ "), format!("{indent}│  "))
                };
                stack.push((*child, own, next));
            }
        };
        let roots = children.get(&None).cloned().unwrap_or_default();
        push_children(&mut stack, &roots, "", true);
        while let Some((i, own, next)) = stack.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            out.push((i, own));
            if let Some(kids) = children.get(&Some(i)) {
                push_children(&mut stack, kids, &next, false);
            }
        }
        // Spans only reachable through a cycle of references (malformed data): at the end.
        for (i, done) in seen.iter().enumerate() {
            if !done {
                out.push((i, String::new()));
            }
        }
        out
    }
}

/// Microseconds as `12.3ms` or `1.234s`.
fn micros(us: u64) -> String {
    if us >= 1_000_000 { format!("{:.3}s", us as f64 / 1e6) } else { format!("{:.1}ms", us as f64 / 1e3) }
}

/// Writes `trace` as a tree of spans with a summary per service.
pub fn render<W: Write + ?Sized>(trace: &JaegerTrace, out: &mut W) -> io::Result<()> {
    let (start, end) = trace.bounds();
    writeln!(
        out,
        "trace {}: {} spans, services {}, {}",
        trace.trace_id,
        trace.spans.len(),
        trace.services().join(","),
        micros(end - start)
    )?;
    let width = trace.services().iter().map(|s| s.len()).chain(["SERVICE".len()]).max().unwrap_or(0) + 2;
    writeln!(out, "  {:>10}  {:>10}  {:width$}SPAN", "START", "DURATION", "SERVICE")?;
    for (i, prefix) in trace.tree() {
        let span = &trace.spans[i];
        writeln!(
            out,
            "  {:>10}  {:>10}  {:width$}{prefix}{} [{}]{}",
            format!("+{}", micros(span.start_time.saturating_sub(start))),
            micros(span.duration),
            trace.service(span),
            span.operation_name,
            span.kind(),
            if span.is_error() { " ERROR" } else { "" }
        )?;
    }
    writeln!(out, "  by service:")?;
    for service in trace.services() {
        let spans: Vec<&JaegerSpan> = trace.spans.iter().filter(|s| trace.service(s) == service).collect();
        let errors = spans.iter().filter(|s| s.is_error()).count();
        writeln!(
            out,
            "    {service:width$}{} spans, {} in spans{}",
            spans.len(),
            micros(spans.iter().map(|s| s.duration).sum()),
            if errors > 0 { format!(", {errors} with errors") } else { String::new() }
        )?;
    }
    Ok(())
}

/// A trace as `-o json|yaml` prints it: the tree's spans, flattened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceView {
    pub trace_id: String,
    pub duration_us: u64,
    pub services: Vec<String>,
    pub spans: Vec<SpanView>,
}

/// A span of a [`TraceView`], in tree order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanView {
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub depth: usize,
    pub service: String,
    pub operation: String,
    pub kind: String,
    /// Microseconds after the trace's first span started.
    pub start_offset_us: u64,
    pub duration_us: u64,
    pub error: bool,
}

impl TraceView {
    /// The view of `trace`.
    pub fn of(trace: &JaegerTrace) -> Self {
        let (start, end) = trace.bounds();
        let index: HashMap<&str, usize> =
            trace.spans.iter().enumerate().map(|(i, s)| (s.span_id.as_str(), i)).collect();
        let spans = trace
            .tree()
            .into_iter()
            .map(|(i, prefix)| {
                let span = &trace.spans[i];
                SpanView {
                    span_id: span.span_id.clone(),
                    parent_span_id: trace.parent(i, &index).map(|p| trace.spans[p].span_id.clone()),
                    depth: prefix.chars().count() / 3,
                    service: trace.service(span).to_owned(),
                    operation: span.operation_name.clone(),
                    kind: span.kind(),
                    start_offset_us: span.start_time.saturating_sub(start),
                    duration_us: span.duration,
                    error: span.is_error(),
                }
            })
            .collect();
        Self {
            trace_id: trace.trace_id.clone(),
            duration_us: end - start,
            services: trace.services().into_iter().map(str::to_owned).collect(),
            spans,
        }
    }
}

/// What `trace` looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceOptions {
    /// The order id (checked to be a UUID).
    pub order_id: String,
    /// How far back to search.
    pub lookback: Duration,
    /// Search again until found, for at most this long.
    pub wait: Option<Duration>,
    /// Services a trace must have spans of to count.
    pub require_services: Vec<String>,
    /// Time between two searches.
    pub retry_every: Duration,
}

/// What `trace` found.
#[derive(Debug, Clone, PartialEq)]
pub enum TraceOutcome {
    /// The order's traces, oldest first.
    Found(Vec<JaegerTrace>),
    /// Nothing that matches: why, for the user.
    NotFound(String),
}

/// Checks that `id` looks like a UUID (8-4-4-4-12 hex digits), as order ids are.
pub fn check_order_id(id: &str) -> Result<()> {
    let groups: Vec<&str> = id.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lengths != [8, 4, 4, 4, 12] || !groups.iter().all(|g| g.chars().all(|c| c.is_ascii_hexdigit())) {
        bail!("ORDER_ID `{id}` is not a UUID: order ids look like 0b6f2f1e-54a0-4d2b-9d7c-3a1c0e1f9a01");
    }
    Ok(())
}

/// Percent-encodes `text` for a query string (everything but RFC 3986's unreserved bytes).
fn query_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The search for traces of service `service` with attribute `tag` = `value`, started in
/// `[start_us, end_us]`.
pub fn search_path(service: &str, tag: &str, value: &str, start_us: u64, end_us: u64) -> String {
    let tags = serde_json::json!({ tag: value }).to_string();
    format!(
        "/api/traces?service={}&tags={}&start={start_us}&end={end_us}&limit={SEARCH_LIMIT}&lookback=custom",
        query_encode(service),
        query_encode(&tags)
    )
}

/// One search per attribute in [`ORDER_ID_TAGS`]; the union of the traces, oldest first.
async fn search(target: &JaegerTarget, order_id: &str, lookback: Duration) -> Result<Vec<JaegerTrace>> {
    let now_us =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let start_us = now_us.saturating_sub(u64::try_from(lookback.as_micros()).unwrap_or(u64::MAX));
    let mut traces: BTreeMap<String, JaegerTrace> = BTreeMap::new();
    for tag in ORDER_ID_TAGS {
        let path = search_path(SEARCHED_SERVICE, tag, order_id, start_us, now_us + 60_000_000);
        // Jaeger's query API answers `Connection: close`: a connection per request.
        let mut connection = target.connect().await?;
        let answer: SearchAnswer = serde_json::from_value(connection.get_json(&path).await?)
            .with_context(|| format!("reading Jaeger's answer to GET {path}"))?;
        if let Some(errors) = answer.errors.filter(|e| !e.is_empty()) {
            bail!("Jaeger answered GET {path} with errors: {}", serde_json::Value::from(errors));
        }
        for trace in answer.data.unwrap_or_default() {
            // Both searches can find a trace; keep the fuller answer.
            let keep = traces.get(&trace.trace_id).is_none_or(|known| known.spans.len() < trace.spans.len());
            if keep && !trace.spans.is_empty() {
                traces.insert(trace.trace_id.clone(), trace);
            }
        }
    }
    let mut traces: Vec<JaegerTrace> = traces.into_values().collect();
    traces.sort_by_key(|t| t.bounds().0);
    Ok(traces)
}

/// Services of `required` none of `traces` has spans of, if any trace lacks some: the
/// traces that have them all, or else what is missing.
fn complete(traces: Vec<JaegerTrace>, required: &[String]) -> std::result::Result<Vec<JaegerTrace>, String> {
    if traces.is_empty() {
        return Err("no trace".to_owned());
    }
    let (full, partial): (Vec<_>, Vec<_>) =
        traces.into_iter().partition(|t| required.iter().all(|r| t.services().contains(&r.as_str())));
    if !full.is_empty() {
        return Ok(full);
    }
    let seen: BTreeSet<String> = partial.iter().flat_map(|t| t.services()).map(str::to_owned).collect();
    let missing: Vec<&str> = required.iter().filter(|r| !seen.contains(*r)).map(String::as_str).collect();
    Err(format!(
        "{} trace(s) but none with spans of {} (services seen: {})",
        partial.len(),
        if missing.is_empty() { required.join(", ") } else { missing.join(", ") },
        seen.into_iter().collect::<Vec<_>>().join(", ")
    ))
}

/// Searches `target` for the traces of `opts.order_id`, again every `retry_every` until
/// `wait` passed when asked.
pub async fn find(target: &JaegerTarget, opts: &TraceOptions) -> Result<TraceOutcome> {
    check_order_id(&opts.order_id)?;
    let deadline = tokio::time::Instant::now() + opts.wait.unwrap_or_default();
    loop {
        let attempt = search(target, &opts.order_id, opts.lookback).await;
        let last_chance = tokio::time::Instant::now() + opts.retry_every > deadline;
        match attempt {
            Ok(traces) => match complete(traces, &opts.require_services) {
                Ok(found) => return Ok(TraceOutcome::Found(found)),
                Err(why) if last_chance => {
                    return Ok(TraceOutcome::NotFound(format!(
                        "no trace of order {} in {} ({why}; searched service {SEARCHED_SERVICE}, attributes {}, the last {}s{})",
                        opts.order_id,
                        target.describe(),
                        ORDER_ID_TAGS.join(" and "),
                        opts.lookback.as_secs(),
                        opts.wait.map_or_else(
                            || ": spans reach Jaeger seconds after the calls, --wait 30s searches again".to_owned(),
                            |w| format!(", again for {}s", w.as_secs())
                        )
                    )));
                }
                Err(_) => {}
            },
            Err(err) if last_chance => return Err(err).with_context(|| format!("searching {}", target.describe())),
            Err(_) => {}
        }
        tokio::time::sleep(opts.retry_every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A time-sale purchase's trace in Jaeger's JSON (`GET /api/traces?…`), built by hand
    /// after the spans the services emit (names, kinds, parents), in arrival order.
    const FIXTURE: &str = include_str!("../tests/fixtures/jaeger-purchase-trace.json");

    /// An order's trace as Jaeger 2.13 in the chart returned it, recorded from the local
    /// cluster (`helm test`'s smoke order): `GET /api/traces?service=order&tags={"order_id":…}`.
    const RECORDED: &str = include_str!("../tests/fixtures/jaeger-order-trace.json");

    fn first_trace(json: &str) -> JaegerTrace {
        let answer: SearchAnswer = serde_json::from_str(json).expect("the fixture parses");
        answer.data.expect("data").into_iter().next().expect("a trace")
    }

    fn fixture() -> JaegerTrace {
        first_trace(FIXTURE)
    }

    fn rendered(trace: &JaegerTrace) -> String {
        let mut out = Vec::new();
        render(trace, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_recorded_trace_renders_as_a_tree_grouped_by_service() {
        let out = rendered(&first_trace(RECORDED));
        let expected = include_str!("../tests/fixtures/jaeger-order-trace.txt");
        assert_eq!(out, expected, "rendered:\n{out}");
    }

    #[test]
    fn a_purchase_trace_renders_as_a_tree_grouped_by_service() {
        let out = rendered(&fixture());
        let expected = include_str!("../tests/fixtures/jaeger-purchase-trace.txt");
        assert_eq!(out, expected, "rendered:\n{out}");
    }

    #[test]
    fn the_view_keeps_tree_order_parents_and_depths() {
        let view = TraceView::of(&fixture());
        assert_eq!(view.services, ["timesale", "order", "delivery"]);
        assert_eq!(view.spans.len(), fixture().spans.len());
        assert_eq!(view.spans[0].parent_span_id, None);
        assert_eq!(view.spans[0].depth, 0);
        assert!(view.spans.iter().skip(1).all(|s| s.parent_span_id.is_some()), "one root: {view:#?}");
        let errors: Vec<&str> = view.spans.iter().filter(|s| s.error).map(|s| s.operation.as_str()).collect();
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn orphans_and_cycles_do_not_break_the_tree() {
        let span = |id: &str, parent: Option<&str>, start: u64| JaegerSpan {
            span_id: id.into(),
            operation_name: format!("op {id}"),
            references: parent
                .map(|p| vec![JaegerReference { ref_type: "CHILD_OF".into(), span_id: p.into() }])
                .unwrap_or_default(),
            start_time: start,
            duration: 10,
            tags: vec![JaegerTag { key: "error".into(), value: serde_json::Value::Bool(true) }],
            process_id: "p1".into(),
        };
        let trace = JaegerTrace {
            trace_id: "t".into(),
            // b's parent is missing (not yet exported): b is a root. c and d point at each other.
            spans: vec![span("a", None, 5), span("b", Some("zz"), 1), span("c", Some("d"), 2), span("d", Some("c"), 3)],
            processes: BTreeMap::from([("p1".into(), JaegerProcess { service_name: "order".into() })]),
        };
        let order: Vec<&str> = trace.tree().iter().map(|(i, _)| trace.spans[*i].span_id.as_str()).collect();
        assert_eq!(order, ["b", "a", "c", "d"]);
        let mut out = Vec::new();
        render(&trace, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("op b [internal] ERROR"), "{out}");
        assert!(out.contains("order    4 spans, 0.0ms in spans, 4 with errors"), "{out}");
    }

    #[test]
    fn order_ids_must_be_uuids() {
        check_order_id("0b6f2f1e-54a0-4d2b-9d7c-3a1c0e1f9a01").unwrap();
        for bad in ["", "42", "0b6f2f1e54a04d2b9d7c3a1c0e1f9a01", "0b6f2f1e-54a0-4d2b-9d7c-3a1c0e1f9a0z", "a-b-c-d-e"] {
            let err = check_order_id(bad).unwrap_err().to_string();
            assert!(err.contains("is not a UUID"), "{err}");
        }
    }

    #[test]
    fn the_search_query_encodes_the_tags() {
        let path = search_path("order", "order_id", "0b6f2f1e-54a0-4d2b-9d7c-3a1c0e1f9a01", 1, 2);
        assert_eq!(
            path,
            "/api/traces?service=order&tags=%7B%22order_id%22%3A%220b6f2f1e-54a0-4d2b-9d7c-3a1c0e1f9a01%22%7D\
             &start=1&end=2&limit=20&lookback=custom"
        );
    }

    #[test]
    fn required_services_filter_the_traces() {
        let trace = fixture();
        assert_eq!(complete(vec![trace.clone()], &["delivery".into()]).unwrap().len(), 1);
        let err = complete(vec![trace], &["payment".into()]).unwrap_err();
        assert_eq!(err, "1 trace(s) but none with spans of payment (services seen: delivery, order, timesale)");
        assert_eq!(complete(Vec::new(), &[]).unwrap_err(), "no trace");
    }
}
