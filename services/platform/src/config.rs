//! Configuration shared by every service. Each service's own `Config` flattens
//! [`ServiceArgs`] — addresses, database, Kafka, consumer group, gRPC server limits and
//! shutdown, logs and traces — and adds its own flags; every field is a `--flag` and an env
//! var, validated at start-up.
//!
//! The shared flags have no defaults of their own where services differ (ports, database
//! file, consumer group): a service states its name and ports once as [`ServiceDefaults`]
//! and installs the defaults on its command with clap's `mut_args`:
//!
//! ```
//! use clap::Parser;
//! use cloudmart_platform::{
//!     config::{ServiceArgs, ServiceDefaults},
//!     proto::contract::topics,
//! };
//!
//! const DEFAULTS: ServiceDefaults = ServiceDefaults::new("order", 50051, 9101, &topics::ALL);
//!
//! #[derive(Parser)]
//! #[command(name = "cloudmart-order", mut_args(|a| DEFAULTS.apply(a)))]
//! struct Config {
//!     #[command(flatten)]
//!     service: ServiceArgs,
//! }
//!
//! let c = Config::try_parse_from(["cloudmart-order", "--grpc-addr", "127.0.0.1:0"]).unwrap();
//! assert_eq!(c.service.grpc_addr.port(), 0);
//! assert_eq!(c.service.group_id, "cloudmart-order");
//! ```

use std::{net::SocketAddr, time::Duration};

use clap::{Arg, Args, ValueEnum};

/// The flags every service has. The defaults that differ per service come from its
/// [`ServiceDefaults`]; without them the four flags it names are required.
#[derive(Args, Debug, Clone)]
pub struct ServiceArgs {
    /// gRPC listen address.
    #[arg(long, env = "GRPC_ADDR")]
    pub grpc_addr: SocketAddr,
    /// Prometheus /metrics listen address.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: SocketAddr,
    /// postgres://… or sqlite://… (embedded default: a SQLite file under ./data/).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Consumer group of this service (replicas share it, so each event is handled once).
    #[arg(long = "kafka-group-id", env = "KAFKA_GROUP_ID")]
    pub group_id: String,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Outbox relay: `off` leaves events in the outbox (maintenance, crash tests).
    #[arg(long, env = "OUTBOX_RELAY", value_enum, default_value = "on")]
    pub outbox_relay: RelayMode,
    /// Hours a published event stays in the outbox table (for audits and debugging)
    /// before the relay deletes it; 0 keeps published rows forever. Unpublished rows are
    /// never deleted.
    #[arg(long, env = "OUTBOX_RETENTION_HOURS", value_name = "HOURS", default_value_t = 24)]
    pub outbox_retention_hours: u32,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// What differs between services among the shared flags: a service's name, its two
/// ports and the topics it makes sure exist at start-up. The defaults follow from them:
/// gRPC on `0.0.0.0:<grpc_port>`, metrics on `0.0.0.0:<metrics_port>`, the database
/// `sqlite://data/<name>.db`, the consumer group `cloudmart-<name>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceDefaults {
    /// Short service name (`order`): logs, health, Kafka client ids, trace `service.name`.
    pub name: &'static str,
    pub grpc_port: u16,
    pub metrics_port: u16,
    /// Logical topics created at start-up when missing (`KAFKA_CREATE_TOPICS`).
    pub topics: &'static [&'static str],
}

impl ServiceDefaults {
    pub const fn new(name: &'static str, grpc_port: u16, metrics_port: u16, topics: &'static [&'static str]) -> Self {
        Self { name, grpc_port, metrics_port, topics }
    }

    /// Gives the [`ServiceArgs`] flag `arg` this service's default (for clap's
    /// `#[command(mut_args(|a| DEFAULTS.apply(a)))]`); other arguments pass unchanged.
    pub fn apply(&self, arg: Arg) -> Arg {
        let default = match arg.get_id().as_str() {
            "grpc_addr" => format!("0.0.0.0:{}", self.grpc_port),
            "metrics_addr" => format!("0.0.0.0:{}", self.metrics_port),
            "database_url" => format!("sqlite://data/{}.db", self.name),
            "group_id" => self.group_id(),
            _ => return arg,
        };
        arg.required(false).default_value(default)
    }

    /// The binary's name, `cloudmart-<name>`.
    pub fn binary(&self) -> String {
        format!("cloudmart-{}", self.name)
    }

    /// The default consumer group, `cloudmart-<name>`.
    pub fn group_id(&self) -> String {
        format!("cloudmart-{}", self.name)
    }
}

/// Kafka connection settings.
#[derive(Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (comma separated host:port list).
    #[arg(long = "kafka-brokers", env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Prefix added to every topic name (isolated test runs, shared clusters).
    #[arg(long = "kafka-topic-prefix", env = "KAFKA_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
    /// Partitions used when this service creates a missing topic.
    #[arg(long = "kafka-partitions", env = "KAFKA_PARTITIONS", default_value_t = 3,
          value_parser = clap::value_parser!(i32).range(1..=1024))]
    pub partitions: i32,
    /// Create missing topics at start-up (off for brokers that auto-create them, such as
    /// the embedded one).
    #[arg(long = "kafka-create-topics", env = "KAFKA_CREATE_TOPICS", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub create_topics: bool,
    /// Consumer group session timeout in milliseconds: how long the broker waits for a
    /// silent (crashed, frozen, partitioned) consumer before it hands that consumer's
    /// partitions to the other members. The broker accepts 6000..=1800000 by default.
    #[arg(long = "kafka-session-timeout-ms", env = "KAFKA_SESSION_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1000..=1_800_000))]
    pub session_timeout_ms: u32,
}

impl KafkaArgs {
    /// Settings for a broker at `brokers` with no prefix.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic_prefix: String::new(),
            partitions: 3,
            create_topics: true,
            session_timeout_ms: 10_000,
        }
    }

    /// The physical name of a logical topic (`order-events` -> `<prefix>order-events`).
    pub fn topic(&self, logical: &str) -> String {
        format!("{}{}", self.topic_prefix, logical)
    }
}

/// gRPC server behaviour: limits, timeouts and draining.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Requests served at once by this process; beyond it calls are shed with
    /// RESOURCE_EXHAUSTED instead of queueing.
    #[arg(long = "grpc-concurrency-limit", env = "GRPC_CONCURRENCY_LIMIT", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency_limit: u32,
    /// Server-side deadline for one call, in milliseconds.
    #[arg(long = "grpc-request-timeout-ms", env = "GRPC_REQUEST_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,
    /// Close client connections after this many seconds (0 = never), so clients reconnect
    /// and spread over new replicas behind a per-connection load balancer.
    #[arg(long = "grpc-max-connection-age-secs", env = "GRPC_MAX_CONNECTION_AGE_SECS", default_value_t = 0)]
    pub max_connection_age_secs: u64,
    /// How long a shutdown waits for in-flight calls before closing connections.
    #[arg(long = "shutdown-grace-secs", env = "SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
}

impl Default for ServerArgs {
    fn default() -> Self {
        Self { concurrency_limit: 512, request_timeout_ms: 10_000, max_connection_age_secs: 0, shutdown_grace_secs: 20 }
    }
}

impl ServerArgs {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// Log output format.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Logs and traces.
#[derive(Args, Debug, Clone, Default)]
pub struct TelemetryArgs {
    /// Log format; default: pretty on a terminal, json otherwise.
    #[arg(long = "log-format", env = "LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long = "log-filter", env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
    /// OTLP/gRPC endpoint for traces (e.g. http://jaeger:4317); unset = no export.
    #[arg(long = "otel-endpoint", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// service.name of exported traces; defaults to the binary's service name.
    #[arg(long = "otel-service-name", env = "OTEL_SERVICE_NAME")]
    pub service_name: Option<String>,
}

/// The outbox relay switch (`off` keeps events in the outbox, for maintenance and tests).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RelayMode {
    #[default]
    On,
    Off,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    const DEFAULTS: ServiceDefaults = ServiceDefaults::new("demo", 50059, 9109, &[]);

    #[derive(Parser, Debug)]
    #[command(name = "cloudmart-demo", mut_args(|a| DEFAULTS.apply(a)))]
    struct Demo {
        #[command(flatten)]
        service: ServiceArgs,
    }

    #[derive(Parser, Debug)]
    #[command(name = "bare")]
    struct Bare {
        #[command(flatten)]
        service: ServiceArgs,
    }

    #[test]
    fn per_service_defaults_fill_the_shared_flags() {
        let d = Demo::try_parse_from(["cloudmart-demo"]).unwrap();
        assert_eq!(d.service.grpc_addr.to_string(), "0.0.0.0:50059");
        assert_eq!(d.service.metrics_addr.to_string(), "0.0.0.0:9109");
        assert_eq!(d.service.database_url, "sqlite://data/demo.db");
        assert_eq!(d.service.group_id, "cloudmart-demo");
        assert_eq!(d.service.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(d.service.server.concurrency_limit, 512);
        let d =
            Demo::try_parse_from(["cloudmart-demo", "--grpc-addr", "127.0.0.1:0", "--kafka-group-id", "g"]).unwrap();
        assert_eq!(d.service.grpc_addr.to_string(), "127.0.0.1:0");
        assert_eq!(d.service.group_id, "g");
    }

    #[test]
    fn without_defaults_the_differing_flags_are_required_and_named() {
        let err = Bare::try_parse_from(["bare"]).unwrap_err().to_string();
        for flag in ["--grpc-addr", "--metrics-addr", "--database-url", "--kafka-group-id"] {
            assert!(err.contains(flag), "{flag} missing from: {err}");
        }
    }

    #[test]
    fn a_bad_value_names_its_flag() {
        let err = Demo::try_parse_from(["cloudmart-demo", "--grpc-addr", "nowhere"]).unwrap_err().to_string();
        assert!(err.contains("--grpc-addr"), "{err}");
    }

    #[test]
    fn the_help_shows_the_service_defaults() {
        use clap::CommandFactory;
        let help = Demo::command().render_long_help().to_string();
        assert!(help.contains("[default: 0.0.0.0:50059]"), "{help}");
        assert!(help.contains("[env: KAFKA_GROUP_ID=]"), "{help}");
    }
}
