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

use clap::Parser;
use cloudmart_platform::{
    app::{App, Parts, Service},
    config::{ServiceArgs, ServiceDefaults},
    proto::{contract::topics, delivery::v1::delivery_service_server::DeliveryServiceServer},
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
    about = "cloudmart delivery service: quotes fees and schedules deliveries for placed orders",
    mut_args(|a| Application::DEFAULTS.apply(a))
)]
pub struct Config {
    #[command(flatten)]
    pub service: ServiceArgs,
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
}

impl AsRef<ServiceArgs> for Config {
    fn as_ref(&self) -> &ServiceArgs {
        &self.service
    }
}

impl Config {
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

/// The delivery service as the platform runs it ([`Service`]):
/// `cloudmart_platform::app::build::<Application>(config)` connects, migrates, binds
/// (port 0 allowed) and assembles it into the platform's [`App`].
pub struct Application;

impl Service for Application {
    const DEFAULTS: ServiceDefaults = ServiceDefaults::new("delivery", 50052, 9102, &topics::ALL);
    type Config = Config;
    type Migrator = store::Migrator;

    fn assemble(config: Config, parts: Parts) -> anyhow::Result<App> {
        let rules = config.rules();
        let api = grpc::DeliveryApi { db: parts.db.clone(), rules: rules.clone() };
        Ok(parts.assemble(
            DeliveryServiceServer::new(api).max_decoding_message_size(cloudmart_platform::grpc::MAX_REQUEST_BYTES),
            &events::TOPICS,
            events::DeliveryEvents { rules },
        ))
    }
}
