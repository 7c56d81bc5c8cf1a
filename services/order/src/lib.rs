//! The order service: the customer-facing entry point of cloudmart.
//!
//! # Layout
//! - [`domain`] — the `Order` aggregate, its state machine and request validation (pure).
//! - [`convert`] — the one mapping between the domain and the wire (proto) types.
//! - [`store`] — sea-orm entities, migrations, `Order` <-> row, and the change + outbox
//!   write.
//! - [`quote`] — the synchronous fee quote from delivery, behind a circuit breaker, with
//!   its flat-fee fallback.
//! - [`grpc`] — `OrderService` (the API edge) and its typed errors.
//! - [`events`] — the consumer side of the sagas.
//! - [`Application`]: wires it all and runs it until shutdown.

pub mod convert;
pub mod domain;
pub mod events;
pub mod grpc;
#[cfg(test)]
mod malformed;
pub mod quote;
pub mod store;

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use cloudmart_platform::{
    app::{App, Parts, Settings},
    breaker::BreakerConfig,
    config::{KafkaArgs, RelayMode, ServerArgs, TelemetryArgs},
    proto::order::v1::order_service_server::OrderServiceServer,
};

/// `cloudmart-order` configuration: every flag is also an env var.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "cloudmart-order",
    version,
    about = "cloudmart order service: places orders and follows them through the delivery saga"
)]
pub struct Config {
    /// gRPC listen address.
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,
    /// Prometheus /metrics listen address.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9101")]
    pub metrics_addr: SocketAddr,
    /// postgres://… or sqlite://… (embedded default: a SQLite file under ./data/).
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/order.db")]
    pub database_url: String,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Consumer group of this service.
    #[arg(long = "kafka-group-id", env = "KAFKA_GROUP_ID", default_value = "cloudmart-order")]
    pub group_id: String,
    /// Delivery service gRPC endpoint (fee quotes).
    #[arg(long, env = "DELIVERY_ENDPOINT", default_value = "http://127.0.0.1:50052")]
    pub delivery_endpoint: String,
    /// Deadline of one fee quote; past it the flat fee is used.
    #[arg(long, env = "QUOTE_TIMEOUT_MS", default_value_t = 800, value_parser = clap::value_parser!(u64).range(1..))]
    pub quote_timeout_ms: u64,
    /// Flat delivery fee used when delivery does not answer (quote_source=FALLBACK).
    #[arg(long, env = "FALLBACK_DELIVERY_FEE_CENTS", default_value_t = 500, value_parser = clap::value_parser!(i64).range(0..))]
    pub fallback_fee_cents: i64,
    /// Quote circuit breaker: outcomes remembered (sliding window of calls).
    #[arg(long, env = "QUOTE_BREAKER_WINDOW", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub quote_breaker_window: u32,
    /// Quote circuit breaker: calls in the window before it may open.
    #[arg(long, env = "QUOTE_BREAKER_MIN_CALLS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub quote_breaker_min_calls: u32,
    /// Quote circuit breaker: failure percentage in the window that opens it.
    #[arg(long, env = "QUOTE_BREAKER_FAILURE_PERCENT", default_value_t = 50, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quote_breaker_failure_percent: u8,
    /// Quote circuit breaker: how long it stays open (flat fee, delivery not called) before probing.
    #[arg(long, env = "QUOTE_BREAKER_OPEN_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub quote_breaker_open_ms: u64,
    /// Quote circuit breaker: successful probes in a row that close it again.
    #[arg(long, env = "QUOTE_BREAKER_PROBES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub quote_breaker_probes: u32,
    /// Outbox relay: `off` leaves events in the outbox (maintenance, crash tests).
    #[arg(long, env = "OUTBOX_RELAY", value_enum, default_value = "on")]
    pub outbox_relay: RelayMode,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl Config {
    /// The quote circuit breaker's thresholds.
    pub fn quote_breaker(&self) -> BreakerConfig {
        BreakerConfig {
            window: self.quote_breaker_window as usize,
            min_calls: self.quote_breaker_min_calls as usize,
            failure_rate: f64::from(self.quote_breaker_failure_percent) / 100.0,
            open_for: Duration::from_millis(self.quote_breaker_open_ms),
            probes: self.quote_breaker_probes,
        }
    }

    /// Defaults with the given database and broker; gRPC on an ephemeral loopback port.
    pub fn for_tests(database_url: &str, kafka: KafkaArgs, delivery_endpoint: &str) -> Self {
        let mut c = Config::parse_from(["cloudmart-order"]);
        c.grpc_addr = "127.0.0.1:0".parse().expect("valid address");
        c.metrics_addr = "127.0.0.1:0".parse().expect("valid address");
        c.database_url = database_url.to_owned();
        c.group_id = format!("{}cloudmart-order", kafka.topic_prefix);
        c.kafka = kafka;
        c.delivery_endpoint = delivery_endpoint.to_owned();
        c
    }
}

/// Counts an order reaching `status` through this process (`cloudmart_orders_total`).
pub(crate) fn count_reached(status: domain::OrderStatus) {
    cloudmart_platform::metrics::counter(
        "orders_total",
        "Orders reaching a status through this process.",
        &[("status", &status.to_string())],
    );
}

/// Builds the order service: [`Application::build`] connects, migrates and binds (port 0
/// allowed) and returns the platform's [`App`] — `grpc_addr()`, `db()`, then
/// `run_until_stopped()` serves it.
pub struct Application;

impl Application {
    /// Connects, migrates, binds; does not serve yet.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        anyhow::ensure!(
            config.quote_breaker_min_calls <= config.quote_breaker_window,
            "QUOTE_BREAKER_MIN_CALLS ({}) must not exceed QUOTE_BREAKER_WINDOW ({})",
            config.quote_breaker_min_calls,
            config.quote_breaker_window
        );
        let quotes = quote::QuoteClient::new(
            &config.delivery_endpoint,
            Duration::from_millis(config.quote_timeout_ms),
            config.fallback_fee_cents,
            config.quote_breaker(),
        )?;
        let parts = Parts::open::<store::Migrator>(Settings {
            name: "order",
            database_url: &config.database_url,
            grpc_addr: config.grpc_addr,
            metrics_addr: config.metrics_addr,
            kafka: &config.kafka,
            group_id: &config.group_id,
            server: &config.server,
            outbox_relay: config.outbox_relay,
        })
        .await?;
        let api = grpc::OrderApi { db: parts.db.clone(), quotes: quotes.clone(), signal: parts.signal.clone() };
        Ok(parts.assemble(
            OrderServiceServer::new(api).max_decoding_message_size(cloudmart_platform::grpc::MAX_REQUEST_BYTES),
            &events::TOPICS,
            events::OrderEvents { quotes },
        ))
    }
}
