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

use std::time::Duration;

use clap::Parser;
use cloudmart_platform::{
    app::{App, Parts, Service},
    breaker::BreakerConfig,
    config::{ServiceArgs, ServiceDefaults},
    proto::{contract::topics, order::v1::order_service_server::OrderServiceServer},
};

/// `cloudmart-order` configuration: every flag is also an env var.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "cloudmart-order",
    version,
    about = "cloudmart order service: places orders and follows them through the delivery saga",
    mut_args(|a| Application::DEFAULTS.apply(a))
)]
pub struct Config {
    #[command(flatten)]
    pub service: ServiceArgs,
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
}

impl AsRef<ServiceArgs> for Config {
    fn as_ref(&self) -> &ServiceArgs {
        &self.service
    }
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
}

/// Counts an order reaching `status` through this process (`cloudmart_orders_total`).
pub(crate) fn count_reached(status: domain::OrderStatus) {
    cloudmart_platform::metrics::counter(
        "orders_total",
        "Orders reaching a status through this process.",
        &[("status", &status.to_string())],
    );
}

/// The order service as the platform runs it ([`Service`]):
/// `cloudmart_platform::app::build::<Application>(config)` connects, migrates, binds
/// (port 0 allowed) and assembles it into the platform's [`App`].
pub struct Application;

impl Service for Application {
    const DEFAULTS: ServiceDefaults = ServiceDefaults::new("order", 50051, 9101, &topics::ALL);
    type Config = Config;
    type Migrator = store::Migrator;

    fn assemble(config: Config, parts: Parts) -> anyhow::Result<App> {
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
        let api = grpc::OrderApi { db: parts.db.clone(), quotes: quotes.clone(), signal: parts.signal.clone() };
        Ok(parts.assemble(
            OrderServiceServer::new(api).max_decoding_message_size(cloudmart_platform::grpc::MAX_REQUEST_BYTES),
            &events::TOPICS,
            events::OrderEvents { quotes },
        ))
    }
}
