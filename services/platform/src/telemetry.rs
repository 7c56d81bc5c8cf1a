//! Logs and trace export.
//!
//! [`init`] installs one global `tracing` subscriber: an `EnvFilter` from `RUST_LOG`, a JSON
//! or pretty formatter and — only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set — a
//! `tracing-opentelemetry` layer exporting spans over OTLP/gRPC with a batch processor.
//! With no endpoint there is no exporter, no OpenTelemetry layer and no cost.
//!
//! The exporter is configured by the standard variables, read by the SDK itself:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (and `..._TRACES_ENDPOINT`, `..._TIMEOUT`, `..._HEADERS`),
//! `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_BSP_*`; `OTEL_SERVICE_NAME` (default: the service's name) sets `service.name`.
//!
//! The exporter's gRPC channel runs on a small runtime of its own, so spans can still be
//! flushed when the service's runtime is already shutting down. [`init`] returns a
//! [`TelemetryGuard`]; dropping it flushes and shuts the exporter down, so `main` holds it
//! until the service has drained.
//!
//! JSON log lines emitted inside a span carry `trace_id` and `span_id` (export on).

use std::{
    io::IsTerminal,
    sync::OnceLock,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing::{Dispatch, Event, Subscriber, dispatcher::WeakDispatch};
use tracing_subscriber::{
    EnvFilter, Layer,
    fmt::{
        self, FmtContext, FormatEvent,
        format::{JsonFields, Writer},
    },
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

use crate::config::{LogFormat, TelemetryArgs};

/// Keeps telemetry alive; flushes exporters on drop.
#[must_use = "dropping the guard flushes and stops telemetry"]
pub struct TelemetryGuard {
    service_name: String,
    export: Option<TraceExport>,
}

impl TelemetryGuard {
    /// The `service.name` in force.
    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.export.is_some()
    }

    /// Exports the spans ended so far (blocking; bounded by the exporter's timeout).
    pub fn flush(&self) {
        if let Some(e) = &self.export
            && let Err(err) = e.provider.force_flush()
        {
            eprintln!("telemetry: span flush failed: {err}");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(export) = self.export.take() {
            export.shutdown();
        }
    }
}

/// The tracer provider and the runtime its exporter's channel runs on.
struct TraceExport {
    provider: SdkTracerProvider,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TraceExport {
    /// `endpoint`: `--otel-endpoint` / `OTEL_EXPORTER_OTLP_ENDPOINT`. The signal-specific
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, when set, wins as the OpenTelemetry
    /// specification says (the exporter reads it itself).
    fn build(resource: Resource, endpoint: &str) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("otel-export")
            .build()
            .context("telemetry runtime")?;
        // The tonic channel spawns its connection tasks on the runtime it is built in.
        let exporter = {
            let _enter = rt.enter();
            use opentelemetry_otlp::WithExportConfig as _;
            let builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            // without this the exporter only ever read the environment: `--otel-endpoint`
            // alone sent the spans to the default localhost:4317
            let builder = if std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some() {
                builder
            } else {
                builder.with_endpoint(endpoint)
            };
            builder
                .build()
                .with_context(|| format!("OTEL_EXPORTER_OTLP_ENDPOINT {endpoint:?}: cannot build the OTLP exporter"))?
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("otel-export".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .context("telemetry thread")?;
        let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
        Ok(Self { provider, stop: Some(stop), thread: Some(thread) })
    }

    fn shutdown(mut self) {
        let started = Instant::now();
        if let Err(e) = self.provider.force_flush() {
            eprintln!("telemetry: final span flush failed: {e}");
        }
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            eprintln!("telemetry: exporter shutdown failed: {e}");
        }
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        tracing::debug!(took = ?started.elapsed(), "telemetry flushed");
    }
}

impl Drop for TraceExport {
    fn drop(&mut self) {
        drop(self.stop.take());
    }
}

/// The global dispatcher, so the JSON formatter can look span contexts up while an event
/// is being dispatched (when `dispatcher::get_default` answers "none").
static DISPATCH: OnceLock<WeakDispatch> = OnceLock::new();

/// Installs the global subscriber for `default_service_name` (overridden by
/// `OTEL_SERVICE_NAME`). Safe to call more than once: later calls keep the first subscriber
/// (tests start several services in one process) and export nothing themselves.
pub fn init(args: &TelemetryArgs, default_service_name: &str) -> anyhow::Result<TelemetryGuard> {
    // service.name: --otel-service-name / OTEL_SERVICE_NAME, else `service.name` from
    // OTEL_RESOURCE_ATTRIBUTES, else the service's own name.
    let detected = Resource::builder().build();
    let from_env = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .map(|v| v.to_string())
        .filter(|n| !n.starts_with("unknown_service"));
    let service_name = args.service_name.clone().or(from_env).unwrap_or_else(|| default_service_name.to_owned());
    let filter = EnvFilter::try_new(&args.log_filter)
        .with_context(|| format!("RUST_LOG {:?} is not a valid filter", args.log_filter))?;
    let format =
        args.log_format.unwrap_or(if std::io::stdout().is_terminal() { LogFormat::Pretty } else { LogFormat::Json });
    let export = match args.otlp_endpoint.as_deref().map(str::trim) {
        Some(e) if !e.is_empty() => {
            Some(TraceExport::build(Resource::builder().with_service_name(service_name.clone()).build(), e)?)
        }
        _ => None,
    };
    let otel = export.as_ref().map(|e| {
        tracing_opentelemetry::layer()
            .with_tracer(e.provider.tracer("cloudmart"))
            .with_threads(false)
            .with_tracked_inactivity(false)
    });
    let fmt_layer = match format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .map_event_format(|f| TraceIds { inner: f })
            .boxed(),
        LogFormat::Pretty => fmt::layer().compact().boxed(),
    };
    let result = tracing_subscriber::registry().with(filter).with(otel).with(fmt_layer).try_init();
    if result.is_err() {
        tracing::debug!("a tracing subscriber was already installed; keeping it");
        // Not ours: the spans would never reach this provider.
        return Ok(TelemetryGuard { service_name, export: None });
    }
    tracing::dispatcher::get_default(|d| {
        let _ = DISPATCH.set(d.downgrade());
    });
    if export.is_some() {
        tracing::info!(service = %service_name, "exporting traces over OTLP/gRPC");
    }
    Ok(TelemetryGuard { service_name, export })
}

/// JSON event format plus `trace_id` / `span_id` of the event's span.
struct TraceIds<F> {
    inner: F,
}

impl<S, F> FormatEvent<S, JsonFields> for TraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    F: FormatEvent<S, JsonFields>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let ids = ctx.event_scope().and_then(|mut scope| scope.next()).and_then(|span| {
            let dispatch: Dispatch = DISPATCH.get()?.upgrade()?;
            let cx = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
            let sc = cx.span().span_context().clone();
            sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
        });
        let Some((trace_id, span_id)) = ids else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        match line.trim_end().strip_suffix('}') {
            Some(body) => writeln!(writer, "{body},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"),
            None => writer.write_str(&line),
        }
    }
}
