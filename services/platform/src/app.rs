//! The start-up every service shares, written once.
//!
//! A service's `Application::build` is two steps around its own parts:
//!
//! 1. [`Parts::open`] — connect the database and migrate it, make sure the topics exist,
//!    create the Kafka producer and consumer, bind the gRPC and metrics sockets. Whatever
//!    fails here fails before anything is served, with the variable it came from named.
//! 2. The service builds its API and event handler over `parts.db` / `parts.signal`, then
//!    [`Parts::assemble`] puts them together: the gRPC server (health, reflection, tower
//!    stack), the [`IdempotentConsumer`] over its topics, the metrics server and — unless
//!    `OUTBOX_RELAY=off` — the [`OutboxRelay`], all under one [`ServiceRuntime`].
//!
//! ```text
//! let parts = Parts::open::<store::Migrator>(Settings { name: "order", .. }).await?;
//! let api = grpc::OrderApi { db: parts.db.clone(), signal: parts.signal.clone(), .. };
//! let app = parts.assemble(OrderServiceServer::new(api), events::TOPICS, events::OrderEvents { .. });
//! ```

use std::net::SocketAddr;

use rdkafka::{consumer::StreamConsumer, producer::FutureProducer};
use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait;
use tokio::net::TcpListener;

use crate::{
    config::{KafkaArgs, RelayMode, ServerArgs},
    consumer::{EventHandler, IdempotentConsumer},
    db, events,
    grpc::{GrpcServer, GrpcService},
    kafka,
    metrics::MetricsServer,
    outbox::{OutboxRelay, OutboxSignal},
    service::{ServiceRuntime, worker},
};

/// The shared settings of a service, borrowed from its `Config`.
#[derive(Clone, Copy, Debug)]
pub struct Settings<'a> {
    /// Short service name (`order`): logs, health, Kafka client ids.
    pub name: &'static str,
    pub database_url: &'a str,
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub kafka: &'a KafkaArgs,
    pub group_id: &'a str,
    pub server: &'a ServerArgs,
    pub outbox_relay: RelayMode,
}

/// Connections and sockets, opened; the service's own parts are built over them.
pub struct Parts {
    /// The service's database (migrated).
    pub db: DatabaseConnection,
    /// Wakes the outbox relay after a commit.
    pub signal: OutboxSignal,
    name: &'static str,
    kafka: KafkaArgs,
    server: ServerArgs,
    relay: RelayMode,
    listener: TcpListener,
    addr: SocketAddr,
    metrics: MetricsServer,
    producer: FutureProducer,
    consumer: StreamConsumer,
}

impl Parts {
    /// Step 1: connect, migrate with `M`, ensure the topics, create producer and consumer,
    /// bind the gRPC and metrics addresses.
    pub async fn open<M: MigratorTrait>(s: Settings<'_>) -> anyhow::Result<Self> {
        let db = db::connect_with_retry(s.database_url, db::CONNECT_BUDGET).await?;
        db::migrate::<M>(&db).await?;
        kafka::ensure_topics(s.kafka, &events::topics::ALL).await?;
        let client_id = format!("cloudmart-{}", s.name);
        let producer = kafka::producer(s.kafka, &client_id)?;
        let consumer = kafka::consumer(s.kafka, s.group_id, &client_id)?;
        let listener = TcpListener::bind(s.grpc_addr)
            .await
            .map_err(|e| anyhow::anyhow!("GRPC_ADDR {}: cannot listen: {e}", s.grpc_addr))?;
        let addr = listener.local_addr()?;
        let metrics = MetricsServer::bind(s.metrics_addr).await?;
        Ok(Self {
            db,
            signal: OutboxSignal::default(),
            name: s.name,
            kafka: s.kafka.clone(),
            server: s.server.clone(),
            relay: s.outbox_relay,
            listener,
            addr,
            metrics,
            producer,
            consumer,
        })
    }

    /// Step 2: serve `service`, consume `topics` with `handler`, run the metrics server
    /// and the outbox relay.
    pub fn assemble<S: GrpcService, H: EventHandler>(self, service: S, topics: &[&'static str], handler: H) -> App {
        let server = GrpcServer::new(self.listener, self.server).add_service(service);
        let consumer = IdempotentConsumer::new(
            self.db.clone(),
            self.consumer,
            self.producer.clone(),
            self.kafka.clone(),
            topics.to_vec(),
            handler,
            self.signal.clone(),
        );
        let mut runtime = ServiceRuntime::new(self.name, server)
            .with_worker("metrics", self.metrics.worker())
            .with_worker("consumer", worker(move |t| consumer.run(t)));
        if self.relay == RelayMode::On {
            let relay = OutboxRelay::new(self.db.clone(), self.producer, self.kafka, self.signal);
            runtime = runtime.with_worker("outbox-relay", worker(move |t| relay.run(t)));
        } else {
            tracing::warn!(service = self.name, "OUTBOX_RELAY=off: events stay in the outbox until a relay runs");
        }
        App { runtime, addr: self.addr, db: self.db }
    }
}

/// A built, bound service: call [`App::run_until_stopped`] to serve.
pub struct App {
    runtime: ServiceRuntime,
    addr: SocketAddr,
    db: DatabaseConnection,
}

impl App {
    /// The bound gRPC address (the real port when 0 was asked).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The service's database.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Serves until `shutdown` resolves, then drains (see [`ServiceRuntime::run`]).
    pub async fn run_until_stopped(self, shutdown: impl std::future::Future<Output = ()> + Send) -> anyhow::Result<()> {
        self.runtime.run(shutdown).await
    }
}
