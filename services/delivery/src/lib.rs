//! The delivery service: quotes fees and schedules a delivery for every placed order —
//! or fails it, which makes the order service cancel the order (compensation).
//!
//! # Layout
//! - [`domain`] — the `Delivery` aggregate and its state machine, quotes, fault selection (pure).
//! - [`store`] — deliveries (the aggregate to and from its row) and per-region daily capacity (sea-orm).
//! - [`grpc`] — `DeliveryService`, its typed errors and their `Status`.
//! - [`events`] — `OrderPlaced` / `OrderCancelled` handling, its typed error.

pub mod domain;
pub mod events;
pub mod grpc;
#[cfg(test)]
mod malformed;
pub mod store;

use std::net::SocketAddr;

use clap::Parser;
use cloudmart_platform::{
    app::{App, Parts, Settings},
    config::{KafkaArgs, RelayMode, ServerArgs, TelemetryArgs},
    proto::delivery::v1::delivery_service_server::DeliveryServiceServer,
};

fn parse_ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) { Ok(v) } else { Err(format!("{v} is not between 0 and 1")) }
}

/// `cloudmart-delivery` configuration: every flag is also an env var.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "cloudmart-delivery",
    version,
    about = "cloudmart delivery service: quotes fees and schedules deliveries for placed orders"
)]
pub struct Config {
    /// gRPC listen address.
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50052")]
    pub grpc_addr: SocketAddr,
    /// Prometheus /metrics listen address.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9102")]
    pub metrics_addr: SocketAddr,
    /// postgres://… or sqlite://… (embedded default: a SQLite file under ./data/).
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/delivery.db")]
    pub database_url: String,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Consumer group of this service.
    #[arg(long = "kafka-group-id", env = "KAFKA_GROUP_ID", default_value = "cloudmart-delivery")]
    pub group_id: String,
    /// Serviceable ISO country codes (quotes refuse others, scheduling fails them).
    #[arg(long, env = "DELIVERY_COUNTRIES", default_value = "KR,JP,US,DE,GB", value_delimiter = ',')]
    pub delivery_countries: Vec<String>,
    /// Deliveries per postal code per day; beyond it scheduling fails.
    #[arg(long, env = "DELIVERY_DAILY_CAPACITY", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub delivery_daily_capacity: u32,
    /// Fault injection: scheduling always fails for these postal codes.
    #[arg(long, env = "FAULT_DELIVERY_FAIL_POSTAL_CODES", value_delimiter = ',', default_value = "")]
    pub fault_delivery_fail_postal_codes: Vec<String>,
    /// Fault injection: share (0..1) of orders whose scheduling fails, chosen by hashing the order id.
    #[arg(long, env = "FAULT_DELIVERY_FAIL_RATIO", default_value = "0", value_parser = parse_ratio)]
    pub fault_delivery_fail_ratio: f64,
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
        let mut c = Config::parse_from(["cloudmart-delivery"]);
        c.grpc_addr = "127.0.0.1:0".parse().expect("valid address");
        c.metrics_addr = "127.0.0.1:0".parse().expect("valid address");
        c.database_url = database_url.to_owned();
        c.group_id = format!("{}cloudmart-delivery", kafka.topic_prefix);
        c.kafka = kafka;
        c
    }

    pub fn rules(&self) -> domain::Rules {
        let clean =
            |v: &[String]| -> Vec<String> { v.iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect() };
        domain::Rules {
            countries: clean(&self.delivery_countries).into_iter().map(|c| c.to_ascii_uppercase()).collect(),
            daily_capacity: self.delivery_daily_capacity,
            fail_postal_codes: clean(&self.fault_delivery_fail_postal_codes),
            fail_ratio: self.fault_delivery_fail_ratio,
        }
    }
}

/// Builds the delivery service: [`Application::build`] connects, migrates and binds (port 0
/// allowed) and returns the platform's [`App`] — `grpc_addr()`, `db()`, then
/// `run_until_stopped()` serves it.
pub struct Application;

impl Application {
    /// Connects, migrates, binds; does not serve yet.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let rules = config.rules();
        let parts = Parts::open::<store::Migrator>(Settings {
            name: "delivery",
            database_url: &config.database_url,
            grpc_addr: config.grpc_addr,
            metrics_addr: config.metrics_addr,
            kafka: &config.kafka,
            group_id: &config.group_id,
            server: &config.server,
            outbox_relay: config.outbox_relay,
        })
        .await?;
        let api = grpc::DeliveryApi { db: parts.db.clone(), rules: rules.clone() };
        Ok(parts.assemble(
            DeliveryServiceServer::new(api).max_decoding_message_size(cloudmart_platform::grpc::MAX_REQUEST_BYTES),
            &events::TOPICS,
            events::DeliveryEvents { rules },
        ))
    }
}
