//! Test support: a fresh database and topic namespace per test, on the real backends
//! when `TEST_DATABASE_URL` (PostgreSQL) / `TEST_KAFKA_BROKERS` are set, otherwise on the
//! embedded defaults (SQLite file, in-process mock broker). Each helper prints which
//! backend it used.

use std::{future::Future, time::Duration};

use sea_orm::{ConnectionTrait, Database};

use crate::{config::KafkaArgs, kafka::EmbeddedBroker};

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
                let args = KafkaArgs { brokers: brokers.clone(), topic_prefix: prefix.clone(), partitions: 3 };
                crate::kafka::ensure_topics(&args, &crate::events::topics::ALL).await?;
                eprintln!("[testkit] {label}: Kafka at {brokers}, topic prefix {prefix}");
                Ok(Self { args, backend: "kafka", _embedded: None })
            }
            None => {
                let broker = EmbeddedBroker::start(&prefix, 3)?;
                let args = KafkaArgs { brokers: broker.bootstrap_servers().to_owned(), topic_prefix: prefix, partitions: 3 };
                eprintln!(
                    "[testkit] {label}: embedded mock broker at {} (set TEST_KAFKA_BROKERS for a real broker)",
                    args.brokers
                );
                Ok(Self { args, backend: "embedded", _embedded: Some(broker) })
            }
        }
    }
}

/// Polls `check` until it returns `Some`, failing with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_name_is_replaced() {
        assert_eq!(super::replace_db_name("postgres://u:p@h:5432/postgres", "x"), "postgres://u:p@h:5432/x");
        assert_eq!(super::replace_db_name("postgres://h/postgres?sslmode=disable", "x"), "postgres://h/x?sslmode=disable");
        assert_eq!(super::replace_db_name("postgres://h", "x"), "postgres://h/x");
    }
}
