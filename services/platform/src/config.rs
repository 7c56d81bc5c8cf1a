//! Configuration shared by every service. Each service's own `Config` flattens these
//! groups; every field is a `--flag` and an env var, validated at start-up.

use std::time::Duration;

use clap::{Args, ValueEnum};

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
