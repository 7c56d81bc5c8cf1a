//! The time-sale (flash sale) service: limited stock, a time window and a per-customer
//! limit; purchases reserve stock without ever overselling, with many replicas, and get
//! it back exactly once when their order is cancelled.
//!
//! # Layout
//! - [`domain`] — the `Sale` and `Purchase` aggregates, sale windows, the purchase
//!   state machine, batch decisions (pure).
//! - [`store`] — sales, purchases and allocations (sea-orm), mapped to the aggregates.
//! - [`ledger`] — the [`ledger::StockLedger`]: naive or batched reservation.
//! - [`grpc`] — `TimeSaleService`.
//! - [`events`] — order events moving purchases (saga 3).

pub mod domain;
pub mod events;
pub mod grpc;
pub mod ledger;
#[cfg(test)]
mod malformed;
pub mod store;

use std::net::SocketAddr;

use clap::Parser;
use cloudmart_platform::{
    app::{App, Parts, Settings},
    config::{KafkaArgs, RelayMode, ServerArgs, TelemetryArgs},
    proto::timesale::v1::time_sale_service_server::TimeSaleServiceServer,
};

pub use ledger::ReservationMode;

/// `cloudmart-timesale` configuration: every flag is also an env var.
#[derive(Parser, Debug, Clone)]
#[command(name = "cloudmart-timesale", version, about = "cloudmart time-sale service: flash sales that never oversell")]
pub struct Config {
    /// gRPC listen address.
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50053")]
    pub grpc_addr: SocketAddr,
    /// Prometheus /metrics listen address.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9103")]
    pub metrics_addr: SocketAddr,
    /// postgres://… or sqlite://… (embedded default: a SQLite file under ./data/).
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/timesale.db")]
    pub database_url: String,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Consumer group of this service.
    #[arg(long = "kafka-group-id", env = "KAFKA_GROUP_ID", default_value = "cloudmart-timesale")]
    pub group_id: String,
    /// How purchases reserve stock: `batched` coalesces concurrent purchases of a sale
    /// into one transaction; `naive` uses one transaction per purchase.
    #[arg(long, env = "RESERVATION_MODE", value_enum, default_value = "batched")]
    pub reservation: ReservationMode,
    /// Outbox relay: `off` leaves events in the outbox.
    #[arg(long, env = "OUTBOX_RELAY", value_enum, default_value = "on")]
    pub outbox_relay: RelayMode,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl Config {
    /// Defaults with the given database and broker; gRPC on an ephemeral loopback port.
    pub fn for_tests(database_url: &str, kafka: KafkaArgs) -> Self {
        let mut c = Config::parse_from(["cloudmart-timesale"]);
        c.grpc_addr = "127.0.0.1:0".parse().expect("valid address");
        c.metrics_addr = "127.0.0.1:0".parse().expect("valid address");
        c.database_url = database_url.to_owned();
        c.group_id = format!("{}cloudmart-timesale", kafka.topic_prefix);
        c.kafka = kafka;
        c
    }
}

/// Builds the timesale service: [`Application::build`] connects, migrates and binds (port 0
/// allowed) and returns the platform's [`App`] — `grpc_addr()`, `db()`, then
/// `run_until_stopped()` serves it.
pub struct Application;

impl Application {
    /// Connects, migrates, binds; does not serve yet.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let parts = Parts::open::<store::Migrator>(Settings {
            name: "timesale",
            database_url: &config.database_url,
            grpc_addr: config.grpc_addr,
            metrics_addr: config.metrics_addr,
            kafka: &config.kafka,
            group_id: &config.group_id,
            server: &config.server,
            outbox_relay: config.outbox_relay,
        })
        .await?;
        tracing::info!(mode = ?config.reservation, "reservation mode");
        let api = grpc::TimeSaleApi {
            db: parts.db.clone(),
            ledger: ledger::StockLedger::new(parts.db.clone(), config.reservation, parts.signal.clone()),
            terms: Default::default(),
        };
        Ok(parts.assemble(
            TimeSaleServiceServer::new(api).max_decoding_message_size(cloudmart_platform::grpc::MAX_REQUEST_BYTES),
            &events::TOPICS,
            events::TimeSaleEvents,
        ))
    }
}
