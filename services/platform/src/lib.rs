//! What every cloudmart service needs, written once.
//!
//! # Layout
//! - [`app`] — the start-up every service shares: the `Service` trait, the binaries'
//!   `main` ([`app::run`]), connections, migrations, topics, sockets, then server +
//!   consumer + relay + metrics under one runtime.
//! - [`backoff`] — bounded exponential back-off with jitter, the one retry delay of the
//!   consumer, its DLQ publishing and the outbox relay.
//! - [`breaker`] — a circuit breaker as a tower layer for calls between services.
//! - [`config`] — the flags/env vars shared by every service ([`config::ServiceArgs`]:
//!   addresses, database, Kafka, consumer group, gRPC limits and shutdown, logs), with
//!   per-service defaults ([`config::ServiceDefaults`]), parsed with clap so `--help`
//!   documents each variable.
//! - [`telemetry`] — `tracing` logs (`LOG_FORMAT=json|pretty`, JSON lines carry
//!   `trace_id`/`span_id`) and OTLP/gRPC trace export when `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   is set; [`telemetry::init`] returns a guard that flushes on drop.
//! - [`trace`] — W3C trace context over gRPC (server/client tower layers) and Kafka.
//! - [`metrics`] — the Prometheus registry, the platform's metrics, business counters and
//!   the `METRICS_ADDR` `/metrics` server.
//! - [`grpc`] — server bootstrap — health (`grpc.health.v1`), reflection, a tower stack
//!   (load shedding + timeout), graceful drain — and status helpers (`NOT_FOUND`,
//!   `INTERNAL`; the contract's error model re-exported).
//! - [`db`] — sea-orm connections for `postgres://` and `sqlite://` and migrations that are
//!   safe when many replicas start at once.
//! - [`events`] — the CloudEvents Kafka binding (headers, dead-letter headers, decoding).
//!   Topic names, event types, refusal reasons and the `Address` value object are the
//!   contract's (`cloudmart_proto::contract`, re-exported as [`proto`]); the platform knows
//!   no business words.
//! - [`outbox`] — the transactional outbox and its [`outbox::OutboxRelay`].
//! - [`consumer`] — the [`consumer::IdempotentConsumer`] with its dead-letter queue; a
//!   handler's typed error says which failures are permanent ([`consumer::ApplyFailure`]).
//! - [`service`] — runs a server and its workers under one shutdown.
//! - `testkit` (feature): per-test databases, topic namespaces, the embedded broker, one
//!   `spawn::<Service>` that starts any service on random ports, one `until` poll loop.
//! - `fuzz` (feature): property-test strategies and checks for the malformed-input tests.

pub mod app;
pub mod backoff;
pub mod breaker;
pub mod config;
pub mod consumer;
pub mod db;
pub mod events;
#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod grpc;
pub mod kafka;
pub mod metrics;
pub mod outbox;
pub mod service;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod trace;
pub mod validate;

pub use cloudmart_proto as proto;

/// A UTC time as a protobuf `Timestamp` (the contract's time type).
pub fn proto_time(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}
