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

use clap::Parser;
use cloudmart_platform::{
    app::{App, Parts, Service},
    config::{ServiceArgs, ServiceDefaults},
    proto::{contract::topics, timesale::v1::time_sale_service_server::TimeSaleServiceServer},
};

pub use ledger::ReservationMode;

/// `cloudmart-timesale` configuration: every flag is also an env var.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "cloudmart-timesale",
    version,
    about = "cloudmart time-sale service: flash sales that never oversell",
    mut_args(|a| Application::DEFAULTS.apply(a))
)]
pub struct Config {
    #[command(flatten)]
    pub service: ServiceArgs,
    /// How purchases reserve stock: `batched` coalesces concurrent purchases of a sale
    /// into one transaction; `naive` uses one transaction per purchase.
    #[arg(long, env = "RESERVATION_MODE", value_enum, default_value = "batched")]
    pub reservation: ReservationMode,
}

impl AsRef<ServiceArgs> for Config {
    fn as_ref(&self) -> &ServiceArgs {
        &self.service
    }
}

/// The time-sale service as the platform runs it ([`Service`]):
/// `cloudmart_platform::app::build::<Application>(config)` connects, migrates, binds
/// (port 0 allowed) and assembles it into the platform's [`App`].
pub struct Application;

impl Service for Application {
    const DEFAULTS: ServiceDefaults = ServiceDefaults::new("timesale", 50053, 9103, &topics::ALL);
    type Config = Config;
    type Migrator = store::Migrator;

    fn assemble(config: Config, parts: Parts) -> anyhow::Result<App> {
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
