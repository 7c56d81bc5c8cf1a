//! Test support: a fresh database and topic namespace per test, on the real backends
//! when `TEST_DATABASE_URL` (PostgreSQL) / `TEST_KAFKA_BROKERS` are set, otherwise on the
//! embedded defaults (SQLite file, in-process mock broker). Each helper prints which
//! backend it used.

use std::{future::Future, net::SocketAddr, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use cloudmart_proto::contract::topics;

use crate::{app::Service, config::KafkaArgs, kafka::EmbeddedBroker};

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A database for one test (dropped with the PostgreSQL server's data at the end of CI;
/// SQLite files live in the temp dir).
pub struct TestDatabase {
    pub url: String,
    pub backend: &'static str,
}

impl TestDatabase {
    /// Creates a new, empty database named after `label`.
    pub async fn create(label: &str) -> anyhow::Result<Self> {
        match std::env::var("TEST_DATABASE_URL").ok().filter(|v| !v.is_empty()) {
            Some(admin) => {
                let name = format!("cm_{}_{}", label.replace(|c: char| !c.is_ascii_alphanumeric(), "_"), short_id());
                let conn = Database::connect(admin.as_str()).await?;
                conn.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await?;
                conn.close().await?;
                let url = replace_db_name(&admin, &name);
                eprintln!("[testkit] {label}: PostgreSQL database {name}");
                Ok(Self { url, backend: "postgres" })
            }
            None => {
                let dir = std::env::temp_dir().join("cloudmart-tests");
                std::fs::create_dir_all(&dir)?;
                let url = format!("sqlite://{}/{label}-{}.db?mode=rwc", dir.display(), short_id());
                eprintln!("[testkit] {label}: SQLite {url} (set TEST_DATABASE_URL for PostgreSQL)");
                Ok(Self { url, backend: "sqlite" })
            }
        }
    }
}

fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// A broker and topic namespace for one test.
pub struct TestKafka {
    pub args: KafkaArgs,
    pub backend: &'static str,
    _embedded: Option<EmbeddedBroker>,
}

impl TestKafka {
    pub async fn create(label: &str) -> anyhow::Result<Self> {
        let prefix = format!("t{}-", short_id());
        match std::env::var("TEST_KAFKA_BROKERS").ok().filter(|v| !v.is_empty()) {
            Some(brokers) => {
                let args = KafkaArgs {
                    brokers: brokers.clone(),
                    topic_prefix: prefix.clone(),
                    partitions: 3,
                    create_topics: true,
                    session_timeout_ms: 10_000,
                };
                crate::kafka::ensure_topics(&args, &topics::ALL).await?;
                eprintln!("[testkit] {label}: Kafka at {brokers}, topic prefix {prefix}");
                Ok(Self { args, backend: "kafka", _embedded: None })
            }
            None => {
                let broker = EmbeddedBroker::start(&prefix, 3, &topics::ALL)?;
                let args = KafkaArgs {
                    brokers: broker.bootstrap_servers().to_owned(),
                    topic_prefix: prefix,
                    partitions: 3,
                    create_topics: false,
                    session_timeout_ms: 10_000,
                };
                eprintln!(
                    "[testkit] {label}: embedded mock broker at {} (set TEST_KAFKA_BROKERS for a real broker)",
                    args.brokers
                );
                Ok(Self { args, backend: "embedded", _embedded: Some(broker) })
            }
        }
    }
}

/// A service started in this test's process by [`spawn`]: its own database and topic
/// namespace, gRPC and metrics on ephemeral loopback ports, serving until [`stop`].
///
/// [`stop`]: Spawned::stop
pub struct Spawned {
    /// The bound gRPC address.
    pub addr: SocketAddr,
    /// The service's database (to check what it wrote).
    pub db: DatabaseConnection,
    /// The broker and topic namespace it uses.
    pub kafka: TestKafka,
    token: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Spawned {
    /// `http://<addr>`, for a tonic client.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Shuts the service down as SIGTERM would (drain, commit, flush) and returns how its
    /// run ended.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.token.cancel();
        self.task.await?
    }
}

/// Starts service `S` in this process the way its binary would — its `Config` parsed from
/// flags — on a fresh [`TestDatabase`] and [`TestKafka`] namespace named after `label`,
/// gRPC and metrics on ephemeral loopback ports, then `extra` flags (the test's own
/// settings, e.g. `["--reservation", "naive"]`; a later flag wins).
pub async fn spawn<S: Service>(label: &str, extra: &[&str]) -> anyhow::Result<Spawned> {
    let database = TestDatabase::create(label).await?;
    let kafka = TestKafka::create(label).await?;
    let k = &kafka.args;
    let mut argv = vec![
        S::DEFAULTS.binary(),
        "--grpc-addr=127.0.0.1:0".to_owned(),
        "--metrics-addr=127.0.0.1:0".to_owned(),
        format!("--database-url={}", database.url),
        format!("--kafka-brokers={}", k.brokers),
        format!("--kafka-topic-prefix={}", k.topic_prefix),
        format!("--kafka-create-topics={}", k.create_topics),
        format!("--kafka-group-id={}{}", k.topic_prefix, S::DEFAULTS.group_id()),
    ];
    argv.extend(extra.iter().map(|a| (*a).to_owned()));
    let config = S::Config::try_parse_from(&argv).with_context(|| argv.join(" "))?;
    let app = crate::app::build::<S>(config).await?;
    let addr = app.grpc_addr();
    let db = app.db().clone();
    let token = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(token.clone().cancelled_owned()));
    Ok(Spawned { addr, db, kafka, token, task })
}

/// Polls `check` until it returns `Some`, failing with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    until(what, timeout, || {
        let fut = check();
        async move { fut.await.ok_or_else(|| "not yet".to_owned()) }
    })
    .await
}

/// The one poll-until loop of the tests: calls `check` every 100 ms until it returns
/// `Ok`, and after `timeout` fails naming `what` and the last reason `check` gave (the
/// state it saw), so a timeout says what was wrong, not only that time ran out.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let why = match check().await {
            Ok(v) => return v,
            Err(why) => why,
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}: {why}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_name_is_replaced() {
        assert_eq!(super::replace_db_name("postgres://u:p@h:5432/postgres", "x"), "postgres://u:p@h:5432/x");
        assert_eq!(
            super::replace_db_name("postgres://h/postgres?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
        assert_eq!(super::replace_db_name("postgres://h", "x"), "postgres://h/x");
    }
}

/// A record read back from a topic, with its headers as a map.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: std::collections::HashMap<String, String>,
    pub partition: i32,
    pub offset: i64,
}

/// Reads `logical_topic` from the beginning of every partition until at least `min`
/// records arrived (panics after `timeout`). It assigns the partitions itself rather than
/// joining a consumer group, so no group coordination can delay it.
pub async fn read_records(kafka: &KafkaArgs, logical_topic: &str, min: usize, timeout: Duration) -> Vec<Record> {
    use rdkafka::{
        Message, Offset, TopicPartitionList,
        consumer::{BaseConsumer, Consumer, StreamConsumer},
        message::Headers,
    };
    let topic = kafka.topic(logical_topic);
    let config = {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &kafka.brokers)
            .set("group.id", format!("reader-{}", short_id()))
            .set("enable.auto.commit", "false");
        c
    };
    let deadline = tokio::time::Instant::now() + timeout;
    // The topic may not exist yet (a dead-letter topic appears with its first record).
    let partitions = loop {
        let (config, name) = (config.clone(), topic.clone());
        let found = tokio::task::spawn_blocking(move || {
            let meta: BaseConsumer = config.create().expect("metadata consumer");
            meta.fetch_metadata(Some(&name), Duration::from_secs(5))
                .ok()
                .and_then(|m| m.topics().first().map(|t| t.partitions().len()))
                .unwrap_or(0)
        })
        .await
        .expect("metadata task");
        if found > 0 {
            break found;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?}: topic {topic} does not exist");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let consumer: StreamConsumer = config.create().expect("test consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(&topic, i32::try_from(p).expect("partition index"), Offset::Beginning)
            .expect("partition offset");
    }
    consumer.assign(&assignment).expect("assign");
    let mut out = Vec::new();
    while out.len() < min {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, consumer.recv()).await {
            Err(_) => panic!("timed out after {timeout:?} reading {topic}: got {} of {min} records", out.len()),
            Ok(Err(e)) => eprintln!("[testkit] read {topic}: {e}"),
            Ok(Ok(m)) => {
                let mut headers = std::collections::HashMap::new();
                if let Some(h) = m.headers() {
                    for x in h.iter() {
                        headers.insert(
                            x.key.to_owned(),
                            String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push(Record {
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                    partition: m.partition(),
                    offset: m.offset(),
                });
            }
        }
    }
    out
}

/// Produces one raw record (tests use it for duplicates and malformed messages);
/// returns its (partition, offset).
pub async fn produce_raw(
    kafka: &KafkaArgs,
    logical_topic: &str,
    key: &str,
    payload: &[u8],
    headers: &[(&str, &str)],
) -> (i32, i64) {
    use rdkafka::{
        message::{Header, OwnedHeaders},
        producer::{FutureProducer, FutureRecord},
    };
    let producer: FutureProducer = crate::kafka::producer(kafka, "testkit").expect("test producer");
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header { key: k, value: Some(*v) });
    }
    let topic = kafka.topic(logical_topic);
    producer
        .send(FutureRecord::to(&topic).key(key).payload(payload).headers(h), Duration::from_secs(15))
        .await
        .map(|d| (d.partition, d.offset))
        .map_err(|(e, _)| e)
        .expect("produce")
}

/// The offset `group` has committed for `topic`/`partition` (None before any commit).
pub fn committed_offset(kafka: &KafkaArgs, group: &str, logical_topic: &str, partition: i32) -> Option<i64> {
    use rdkafka::{
        Offset, TopicPartitionList,
        consumer::{BaseConsumer, Consumer},
    };
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .ok()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&kafka.topic(logical_topic), partition);
    let got = consumer.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
    let elem = got.elements().into_iter().next()?;
    match elem.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// The members the broker's group coordinator lists for `group` (member ids), and the
/// group's state (`Stable`, `PreparingRebalance`, `CompletingRebalance`, `Empty`, …).
/// A crash test uses it to see the coordinator evict a SIGKILLed member.
pub fn group_members(kafka: &KafkaArgs, group: &str) -> Option<(String, Vec<String>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", format!("inspector-{}", short_id()))
        .create()
        .ok()?;
    let list = consumer.fetch_group_list(Some(group), Duration::from_secs(10)).ok()?;
    let info = list.groups().iter().find(|g| g.name() == group)?;
    Some((info.state().to_owned(), info.members().iter().map(|m| m.id().to_owned()).collect()))
}
