//! What every cloudmart service needs, written once.
//!
//! # Layout
//! - [`config`] — the flags/env vars shared by every service (Kafka, gRPC server, logs),
//!   parsed with clap so `--help` documents each variable.
//! - [`telemetry`] — `tracing` logs (`LOG_FORMAT=json|pretty`); [`telemetry::init`] returns
//!   a guard that flushes on drop, so exporters plug in without touching services.
//! - [`grpc`] — server bootstrap — health (`grpc.health.v1`), reflection, a tower stack
//!   (load shedding + timeout), graceful drain — and the status helpers that map domain
//!   refusals to `FAILED_PRECONDITION` + `google.rpc.ErrorInfo`.
//! - [`db`] — sea-orm connections for `postgres://` and `sqlite://` and migrations that are
//!   safe when many replicas start at once.
//! - [`events`] — the topic names and CloudEvents binding of the contract.
//! - [`outbox`] — the transactional outbox and its [`outbox::OutboxRelay`].
//! - [`consumer`] — the [`consumer::IdempotentConsumer`] with its dead-letter queue.
//! - [`service`] — runs a server and its workers under one shutdown.
//! - `testkit` (feature): per-test databases, topic namespaces and the embedded broker.

pub mod config;
pub mod consumer;
pub mod db;
pub mod events;
pub mod grpc;
pub mod kafka;
pub mod outbox;
pub mod service;
pub mod telemetry;
pub mod validate;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use cloudmart_proto as proto;
