//! rdkafka clients configured the way the contract needs them.

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::StreamConsumer,
    producer::FutureProducer,
    types::RDKafkaErrorCode,
};

use crate::config::KafkaArgs;

/// An idempotent producer: `enable.idempotence=true` implies `acks=all` and ordered,
/// de-duplicated retries per partition.
///
/// `linger.ms` is 0: the outbox relay already hands the producer a whole batch at once, so
/// waiting for more records only delays the batch. Measured with `cloudmart-bench --only
/// p2,p3,p4`, two A/B pairs on one machine: the relay's commit → acknowledged publish
/// went from 3.8–6.0 to 1.5–2.1 ms a hop, the saga's p50 from 12–15 to 6–8 ms and its
/// p99 from 1.2–1.9 s to 16–22 ms; draining a pre-filled outbox (P4) costs ~15 % (49–51k
/// → 41–45k events/s, its goal is 15k).
pub fn producer(kafka: &KafkaArgs, client_id: &str) -> anyhow::Result<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("client.id", client_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "30000")
        .create()
        .with_context(|| format!("KAFKA_BROKERS {:?}: cannot create producer", kafka.brokers))
}

/// A consumer with manual offset commits (offsets move only after the effect committed).
pub fn consumer(kafka: &KafkaArgs, group_id: &str, client_id: &str) -> anyhow::Result<StreamConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", group_id)
        .set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Crash recovery time is bounded by the session timeout: a SIGKILLed or frozen
        // member sends no more heartbeats, and only when its session expires does the
        // coordinator evict it and give its partitions to a live member (a restarted
        // process joins at once but waits for that rebalance). 10 s by default: short
        // enough that a crash stalls a partition for seconds, long enough that a GC-free
        // Rust process under load or a brief network hiccup does not cause rebalances.
        // Heartbeats at a tenth of it give ten chances before eviction.
        .set("session.timeout.ms", kafka.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", (kafka.session_timeout_ms / 10).max(100).to_string())
        // The handler runs one local transaction per event (no network calls beyond the
        // database); a process that has not polled for 60 s is wedged, and leaving the
        // group lets another replica take over instead of stalling the partition for the
        // default 5 minutes.
        .set("max.poll.interval.ms", kafka.session_timeout_ms.max(60_000).to_string())
        .set("topic.metadata.refresh.interval.ms", "5000")
        .set("allow.auto.create.topics", "true")
        .create()
        .with_context(|| format!("KAFKA_BROKERS {:?}: cannot create consumer", kafka.brokers))
}

/// Creates the `logical` topics (with prefix) if they are missing. Brokers that refuse
/// CreateTopics (librdkafka's mock cluster auto-creates instead) are logged, not fatal.
pub async fn ensure_topics(kafka: &KafkaArgs, logical: &[&str]) -> anyhow::Result<()> {
    if !kafka.create_topics {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .create()
        .with_context(|| format!("KAFKA_BROKERS {:?}: cannot create admin client", kafka.brokers))?;
    let names: Vec<String> = logical.iter().map(|t| kafka.topic(t)).collect();
    let new: Vec<NewTopic<'_>> =
        names.iter().map(|n| NewTopic::new(n, kafka.partitions, TopicReplication::Fixed(1))).collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    match tokio::time::timeout(Duration::from_secs(15), admin.create_topics(&new, &opts)).await {
        Err(_) => tracing::warn!("CreateTopics timed out; relying on auto-creation"),
        Ok(Ok(results)) => {
            for r in results {
                match r {
                    Ok(name) => tracing::info!(topic = %name, "created topic"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => {
                        tracing::warn!(topic = %name, ?code, "could not create topic; relying on auto-creation")
                    }
                }
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "CreateTopics failed; relying on auto-creation"),
    }
    // Dropping an AdminClient joins its polling thread, which wakes only every 100 ms
    // (rdkafka's admin.rs), then destroys the librdkafka handle: up to ~100 ms of every
    // start spent waiting, on an async worker thread. Nothing needs that wait.
    tokio::task::spawn_blocking(move || drop(admin));
    Ok(())
}

/// An in-process Kafka-protocol broker (librdkafka's mock cluster) for `make dev` and
/// quick tests. The cluster is `!Send`, so it lives on a thread of its own until this
/// handle is dropped. It is not a substitute for a real broker in integration tests.
pub struct EmbeddedBroker {
    bootstrap: String,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a one-broker mock cluster with `topics` (logical names, created under
    /// `prefix` with `partitions` each).
    pub fn start(prefix: &str, partitions: i32, topics: &[&str]) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<String, String>>();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let names: Vec<String> = topics.iter().map(|t| format!("{prefix}{t}")).collect();
        let thread = std::thread::Builder::new().name("embedded-kafka".into()).spawn(move || {
            let cluster = match rdkafka::mocking::MockCluster::new(1) {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("mock cluster: {e}")));
                    return;
                }
            };
            for t in &names {
                if let Err(e) = cluster.create_topic(t, partitions, 1) {
                    let _ = ready_tx.send(Err(format!("mock cluster topic {t}: {e}")));
                    return;
                }
            }
            let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
            let _ = stop_rx.recv();
            drop(cluster);
        })?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("embedded broker thread died"))?
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(Self { bootstrap, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// `host:port` to use as `KAFKA_BROKERS`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
