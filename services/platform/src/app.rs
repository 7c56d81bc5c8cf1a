//! The start-up every service shares, written once.
//!
//! A service is a [`Service`]: its name, ports and topics ([`ServiceDefaults`]), a
//! `clap` `Config` that flattens the shared [`ServiceArgs`], its schema, and `assemble`.
//! Its binary's `main` is one line, [`run::<Application>()`](run); tests start it through
//! the same trait (`testkit::spawn`), and the `make dev` launcher parses its flags like any
//! user would, then calls [`build`].
//!
//! [`build`] is two steps around the service's own parts:
//!
//! 1. [`Parts::open`] — connect the database and migrate it, make sure the topics exist,
//!    create the Kafka producer and consumer, bind the gRPC and metrics sockets. Whatever
//!    fails here fails before anything is served, with the variable it came from named.
//! 2. [`Service::assemble`] builds the service's API and event handler over `parts.db` /
//!    `parts.signal`, then [`Parts::assemble`] puts them together: the gRPC server (health, reflection, tower
//!    stack), the [`IdempotentConsumer`] over its topics, the metrics server and — unless
//!    `OUTBOX_RELAY=off` — the [`OutboxRelay`], all under one [`ServiceRuntime`].
//!
//! ```text
//! fn assemble(config: Config, parts: Parts) -> anyhow::Result<App> {
//!     let api = grpc::OrderApi { db: parts.db.clone(), signal: parts.signal.clone(), .. };
//!     Ok(parts.assemble(OrderServiceServer::new(api), &events::TOPICS, events::OrderEvents { .. }))
//! }
//! ```

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use clap::Parser;

use rdkafka::{consumer::StreamConsumer, producer::FutureProducer};
use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait;
use tokio::net::TcpListener;

use crate::{
    config::{KafkaArgs, RelayMode, ServerArgs, ServiceArgs, ServiceDefaults},
    consumer::{EventHandler, IdempotentConsumer},
    db,
    grpc::{GrpcServer, GrpcService},
    kafka,
    metrics::MetricsServer,
    outbox::{OutboxRelay, OutboxSignal},
    service::{ServiceRuntime, worker},
};

/// A cloudmart service as the platform runs it: its name, ports and topics
/// ([`ServiceDefaults`]), its `clap` configuration (which flattens [`ServiceArgs`]), its
/// schema, and how it assembles its own parts over the opened connections. The binary's
/// `main` is [`run::<Service>()`](run); [`build`] does the start-up for tests and
/// launchers.
pub trait Service {
    /// Name, ports and topics; the shared flags' defaults follow from them.
    const DEFAULTS: ServiceDefaults;
    /// The service's command line / environment.
    type Config: clap::Parser + AsRef<ServiceArgs> + Send + 'static;
    /// The service's schema (its migrations run at start-up).
    type Migrator: MigratorTrait;
    /// Builds the service's API and event handler over `parts` and puts them together
    /// ([`Parts::assemble`]).
    fn assemble(config: Self::Config, parts: Parts) -> anyhow::Result<App>;
}

/// Connects, migrates and binds service `S` (port 0 allowed), then assembles it; does not
/// serve yet — `grpc_addr()`, `db()`, then `run_until_stopped()`.
pub async fn build<S: Service>(config: S::Config) -> anyhow::Result<App> {
    let d = S::DEFAULTS;
    let parts = Parts::open::<S::Migrator>(d.name, config.as_ref(), d.topics).await?;
    S::assemble(config, parts)
}

/// The whole `main` of a service binary: parse the flags (clap prints `--help` and names
/// a bad flag), start logs and traces, build, serve until SIGTERM/Ctrl-C, drain.
pub async fn run<S: Service>() -> anyhow::Result<()> {
    let config = S::Config::parse();
    let _telemetry = crate::telemetry::init(&config.as_ref().telemetry, S::DEFAULTS.name)?;
    let app = build::<S>(config).await?;
    tracing::info!(grpc = %app.grpc_addr(), "{} started", S::DEFAULTS.binary());
    app.run_until_stopped(crate::service::shutdown_signal()).await
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
    /// How long published outbox rows are kept (`None`: forever).
    retention: Option<Duration>,
    listener: TcpListener,
    addr: SocketAddr,
    metrics: MetricsServer,
    producer: FutureProducer,
    consumer: StreamConsumer,
}

impl Parts {
    /// Step 1: connect, migrate with `M`, make sure `topics` exist (the contract's, with
    /// their dead-letter topics), create producer and consumer, bind the gRPC and metrics
    /// addresses.
    pub async fn open<M: MigratorTrait>(name: &'static str, s: &ServiceArgs, topics: &[&str]) -> anyhow::Result<Self> {
        // The database and the broker are independent: connect and migrate one while the
        // other's topics are made sure of, so start-up waits for the slower, not the sum
        // (a restart spends ~0.1 s on each; `make bench`, P5).
        crate::metrics::build_info(name);
        let database = async {
            let db = db::connect_with_retry(&s.database_url, db::CONNECT_BUDGET).await?;
            db::migrate::<M>(&db).await?;
            anyhow::Ok(db)
        };
        let (db, ()) = tokio::try_join!(database, kafka::ensure_topics(&s.kafka, topics))?;
        let client_id = format!("cloudmart-{name}");
        let producer = kafka::producer(&s.kafka, &client_id)?;
        let consumer = kafka::consumer(&s.kafka, &s.group_id, &client_id)?;
        let listener = TcpListener::bind(s.grpc_addr)
            .await
            .with_context(|| format!("GRPC_ADDR {}: cannot listen", s.grpc_addr))?;
        let addr = listener.local_addr()?;
        let metrics = MetricsServer::bind(s.metrics_addr).await?;
        Ok(Self {
            db,
            signal: OutboxSignal::default(),
            name,
            kafka: s.kafka.clone(),
            server: s.server.clone(),
            relay: s.outbox_relay,
            retention: (s.outbox_retention_hours > 0)
                .then(|| Duration::from_secs(u64::from(s.outbox_retention_hours) * 3600)),
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
            .with_worker("metrics", worker(move |t| self.metrics.run(t)))
            .with_worker("consumer", worker(move |t| consumer.run(t)));
        if self.relay == RelayMode::On {
            let relay = OutboxRelay::new(self.db.clone(), self.producer, self.kafka, self.signal)
                .with_retention(self.retention);
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
