//! W3C trace context propagation (`traceparent` / `tracestate`) over gRPC and Kafka.
//!
//! - [`GrpcServerTraceLayer`] (installed by [`crate::grpc::GrpcServer`]): one server span
//!   per call, child of the caller's context, named `<package.Service>/<Method>` with the
//!   OpenTelemetry RPC attributes; it also feeds the RPC metrics.
//! - [`GrpcClientTraceLayer`]: one client span per outgoing call whose context is injected
//!   into the request metadata (wrap a `Channel` with [`traced_channel`]).
//! - [`current_headers`] / [`context_from`]: the span context as header values and back —
//!   the outbox stores the first, the relay and the consumers use the second.
//!
//! Spans only carry ids when telemetry export is on (an OTLP endpoint is configured);
//! otherwise every helper here degrades to "no context" at no cost.

use std::{
    future::Future,
    pin::Pin,
    task::{Context as TaskContext, Poll},
    time::Instant,
};

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TraceContextExt,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::{Instrument, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::events::headers;

/// `(traceparent, tracestate)` of `cx`, or `(None, None)` when it has no valid span.
pub fn context_headers(cx: &Context) -> (Option<String>, Option<String>) {
    if !cx.span().span_context().is_valid() {
        return (None, None);
    }
    let mut carrier = Pair::default();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    (carrier.traceparent, carrier.tracestate.filter(|s| !s.is_empty()))
}

/// `(traceparent, tracestate)` of the current `tracing` span.
pub fn current_headers() -> (Option<String>, Option<String>) {
    context_headers(&Span::current().context())
}

/// The remote parent described by W3C header values (an empty context when absent/invalid).
pub fn context_from(traceparent: Option<&str>, tracestate: Option<&str>) -> Context {
    let Some(tp) = traceparent else { return Context::new() };
    let carrier = Pair { traceparent: Some(tp.to_owned()), tracestate: tracestate.map(str::to_owned) };
    TraceContextPropagator::new().extract(&carrier)
}

/// Makes `span` a child of `parent` when `parent` carries a valid remote span; returns
/// whether it did. Call it right after creating the span.
pub fn set_remote_parent(span: &Span, parent: Context) -> bool {
    if !parent.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(parent).is_ok()
}

#[derive(Default)]
struct Pair {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Pair {
    fn set(&mut self, key: &str, value: String) {
        match key {
            headers::TRACEPARENT => self.traceparent = Some(value),
            headers::TRACESTATE => self.tracestate = Some(value),
            _ => {}
        }
    }
}

impl Extractor for Pair {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            headers::TRACEPARENT => self.traceparent.as_deref(),
            headers::TRACESTATE => self.tracestate.as_deref(),
            _ => None,
        }
    }
    fn keys(&self) -> Vec<&str> {
        vec![headers::TRACEPARENT, headers::TRACESTATE]
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value))
        {
            self.0.insert(name, value);
        }
    }
}

/// Splits a gRPC path `/pkg.Service/Method` into `(pkg.Service, Method)`.
pub fn split_path(path: &str) -> (&str, &str) {
    let p = path.trim_start_matches('/');
    p.split_once('/').unwrap_or((p, ""))
}

/// Health checks and reflection are neither traced nor counted.
fn untraced(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

/// The gRPC status of a response whose status is in its headers (errors are sent as
/// trailers-only responses); a plain 200 without `grpc-status` is OK (0), other HTTP
/// statuses map like gRPC clients map them.
fn status_code<B>(res: &http::Response<B>) -> i32 {
    if let Some(code) = res.headers().get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|s| s.parse().ok()) {
        return code;
    }
    match res.status().as_u16() {
        200 => 0,
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

/// Server-side codes that mark the span as an error (OpenTelemetry RPC conventions).
fn server_error(code: i32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// Tower layer: a server span per gRPC call (child of the caller's `traceparent`) plus the
/// RPC metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcServerTraceLayer;

impl<S> tower::Layer<S> for GrpcServerTraceLayer {
    type Service = GrpcServerTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerTrace { inner }
    }
}

/// See [`GrpcServerTraceLayer`].
#[derive(Clone, Debug)]
pub struct GrpcServerTrace<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcServerTrace<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_owned();
        if untraced(&path) {
            return Box::pin(self.inner.call(req));
        }
        let (service, method) = split_path(&path);
        let (service, method) = (service.to_owned(), method.to_owned());
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = Empty,
            otel.status_code = Empty,
        );
        set_remote_parent(&span, TraceContextPropagator::new().extract(&HeaderExtractor(req.headers())));
        let start = Instant::now();
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Box::pin(async move {
            let res = fut.instrument(span.clone()).await;
            let code = match &res {
                Ok(r) => status_code(r),
                Err(_) => 2,
            };
            span.record("rpc.grpc.status_code", code);
            if server_error(code) {
                span.record("otel.status_code", "ERROR");
            }
            crate::metrics::rpc_served(&service, &method, code, start.elapsed());
            res
        })
    }
}

/// Tower layer for gRPC clients: a client span per call, injected as `traceparent` /
/// `tracestate` request metadata.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcClientTraceLayer;

impl<S> tower::Layer<S> for GrpcClientTraceLayer {
    type Service = GrpcClientTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcClientTrace { inner }
    }
}

/// See [`GrpcClientTraceLayer`].
#[derive(Clone, Debug)]
pub struct GrpcClientTrace<S> {
    inner: S,
}

/// A traced tonic channel: `FooClient::new(traced_channel(channel))`.
pub type TracedChannel = GrpcClientTrace<tonic::transport::Channel>;

/// Wraps `channel` so every call carries the caller's trace context.
pub fn traced_channel(channel: tonic::transport::Channel) -> TracedChannel {
    GrpcClientTrace { inner: channel }
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcClientTrace<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_owned();
        let (service, method) = split_path(&path);
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            server.address = req.uri().host().unwrap_or_default(),
            rpc.grpc.status_code = Empty,
            otel.status_code = Empty,
        );
        let cx = span.context();
        if cx.span().span_context().is_valid() {
            TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(req.headers_mut()));
        }
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Box::pin(async move {
            let res = fut.instrument(span.clone()).await;
            let code = match &res {
                Ok(r) => status_code(r),
                Err(_) => 14,
            };
            span.record("rpc.grpc.status_code", code);
            if code != 0 {
                span.record("otel.status_code", "ERROR");
            }
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/cloudmart.order.v1.OrderService/PlaceOrder"),
            ("cloudmart.order.v1.OrderService", "PlaceOrder")
        );
        assert!(untraced("/grpc.health.v1.Health/Check"));
    }

    #[test]
    fn header_values_round_trip() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let cx = context_from(Some(tp), Some("k=v"));
        assert!(cx.span().span_context().is_valid());
        assert_eq!(context_headers(&cx), (Some(tp.to_owned()), Some("k=v".to_owned())));
        assert_eq!(context_headers(&context_from(None, None)), (None, None));
        assert_eq!(context_headers(&context_from(Some("garbage"), None)), (None, None));
    }

    #[test]
    fn status_from_headers() {
        let ok = http::Response::builder().status(200).body(()).unwrap();
        assert_eq!(status_code(&ok), 0);
        let err = http::Response::builder().status(200).header("grpc-status", "9").body(()).unwrap();
        assert_eq!(status_code(&err), 9);
        assert!(server_error(13) && !server_error(9));
    }
}
