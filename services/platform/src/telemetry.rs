//! Logging (and, through the same guard, trace export).
//!
//! [`init`] installs one global `tracing` subscriber: an `EnvFilter` from `RUST_LOG` and a
//! JSON or pretty formatter. It returns a [`TelemetryGuard`]; dropping it flushes whatever
//! exporters were installed, so `main` holds it until the service has drained.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{LogFormat, TelemetryArgs};

/// Keeps telemetry alive; flushes exporters on drop.
#[must_use = "dropping the guard flushes and stops telemetry"]
pub struct TelemetryGuard {
    service_name: String,
}

impl TelemetryGuard {
    /// The `service.name` in force.
    pub fn service_name(&self) -> &str {
        &self.service_name
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        tracing::debug!(service = %self.service_name, "telemetry flushed");
    }
}

/// Installs the global subscriber for `default_service_name` (overridden by
/// `OTEL_SERVICE_NAME`). Safe to call more than once: later calls keep the first subscriber
/// (tests start several services in one process).
pub fn init(args: &TelemetryArgs, default_service_name: &str) -> anyhow::Result<TelemetryGuard> {
    let service_name = args.service_name.clone().unwrap_or_else(|| default_service_name.to_owned());
    let filter = EnvFilter::try_new(&args.log_filter)
        .map_err(|e| anyhow::anyhow!("RUST_LOG {:?} is not a valid filter: {e}", args.log_filter))?;
    let format =
        args.log_format.unwrap_or(if std::io::stdout().is_terminal() { LogFormat::Pretty } else { LogFormat::Json });
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false))
            .try_init(),
        LogFormat::Pretty => registry.with(fmt::layer().compact()).try_init(),
    };
    if result.is_err() {
        tracing::debug!("a tracing subscriber was already installed; keeping it");
    }
    if args.otlp_endpoint.is_some() {
        tracing::warn!("OTEL_EXPORTER_OTLP_ENDPOINT is set but this build exports no traces yet");
    }
    Ok(TelemetryGuard { service_name })
}
