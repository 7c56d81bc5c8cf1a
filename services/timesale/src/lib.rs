//! The time-sale (flash sale) service: limited stock, a time window and a per-customer
//! limit; purchases reserve stock without ever overselling, with many replicas, and get
//! it back exactly once when their order is cancelled.
//!
//! # Layout
//! - [`domain`] — sale windows, the purchase state machine, batch decisions (pure).
//! - [`store`] — sales, purchases and allocations (sea-orm).
//! - [`ledger`] — the [`ledger::StockLedger`]: naive or batched reservation.
//! - [`grpc`] — `TimeSaleService`.
//! - [`events`] — order events moving purchases (saga 3).

pub mod domain;
pub mod events;
pub mod grpc;
pub mod ledger;
pub mod store;

use std::net::SocketAddr;

use clap::Parser;
use cloudmart_platform::{
    config::{KafkaArgs, RelayMode, ServerArgs, TelemetryArgs},
    consumer::IdempotentConsumer,
    db,
    grpc::GrpcServer,
    kafka,
    metrics::MetricsServer,
    outbox::{OutboxRelay, OutboxSignal},
    proto::timesale::v1::time_sale_service_server::TimeSaleServiceServer,
    service::{ServiceRuntime, worker},
};
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;

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

/// A built, bound time-sale service.
pub struct Application {
    runtime: ServiceRuntime,
    addr: SocketAddr,
    db: DatabaseConnection,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = db::connect(&config.database_url).await?;
        db::migrate::<store::Migrator>(&db).await?;
        kafka::ensure_topics(&config.kafka, &cloudmart_platform::events::topics::ALL).await?;
        let producer = kafka::producer(&config.kafka, "cloudmart-timesale")?;
        let consumer = kafka::consumer(&config.kafka, &config.group_id, "cloudmart-timesale")?;
        let signal = OutboxSignal::default();
        let listener = TcpListener::bind(config.grpc_addr)
            .await
            .map_err(|e| anyhow::anyhow!("GRPC_ADDR {}: cannot listen: {e}", config.grpc_addr))?;
        let addr = listener.local_addr()?;
        let metrics = MetricsServer::bind(config.metrics_addr).await?;
        let api = grpc::TimeSaleApi {
            db: db.clone(),
            ledger: ledger::StockLedger::new(db.clone(), config.reservation, signal.clone()),
            terms: Default::default(),
        };
        tracing::info!(mode = ?config.reservation, "reservation mode");
        let server = GrpcServer::new(listener, config.server.clone()).add_service(TimeSaleServiceServer::new(api));
        let consumer = IdempotentConsumer::new(
            db.clone(),
            consumer,
            producer.clone(),
            config.kafka.clone(),
            events::TOPICS.to_vec(),
            events::TimeSaleEvents,
            signal.clone(),
        );
        let mut runtime = ServiceRuntime::new("timesale", server)
            .with_worker("consumer", worker(move |t| consumer.run(t)))
            .with_worker("metrics", metrics.worker());
        if config.outbox_relay == RelayMode::On {
            let relay = OutboxRelay::new(db.clone(), producer, config.kafka.clone(), signal);
            runtime = runtime.with_worker("outbox-relay", worker(move |t| relay.run(t)));
        }
        Ok(Self { runtime, addr, db })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    pub async fn run_until_stopped(self, shutdown: impl std::future::Future<Output = ()> + Send) -> anyhow::Result<()> {
        self.runtime.run(shutdown).await
    }
}
