//! Database connections and migrations.
//!
//! PostgreSQL in the cluster, SQLite as the embedded default. Migrations run at start-up;
//! on PostgreSQL they run inside one transaction holding an advisory lock, so replicas
//! starting together apply them exactly once (DDL is transactional there). SQLite is a
//! single-process embedded store: one connection, WAL mode, busy timeout.

use std::time::Duration;

use anyhow::Context as _;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, EntityTrait, Schema, Statement,
    TransactionTrait,
};
use sea_orm_migration::{
    MigratorTrait, SchemaManager,
    prelude::{Index, IndexCreateStatement, IntoIndexColumn},
};

/// How long start-up keeps retrying the first database connection: on a fresh install
/// the database may come up after the services, and a retry inside the process beats a
/// CrashLoopBackOff with growing back-off.
pub const CONNECT_BUDGET: Duration = Duration::from_secs(90);

/// [`connect`], retried with jittered, capped exponential back-off ([`crate::backoff`],
/// 0.5 s growing to at most 5 s) for up to
/// `budget` while the server is unreachable, logging each attempt. A URL that can never
/// work (bad scheme, SQLite in a build without it) fails at once.
pub async fn connect_with_retry(url: &str, budget: Duration) -> anyhow::Result<DatabaseConnection> {
    normalize_url(url)?;
    let start = std::time::Instant::now();
    let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    let mut attempt = 1u32;
    loop {
        // One attempt waits at most 5 s (the pool would otherwise keep retrying an
        // unreachable server for its whole acquire timeout inside a single attempt).
        let left = budget.saturating_sub(start.elapsed()).max(Duration::from_secs(1));
        let attempt_result = match tokio::time::timeout(left.min(Duration::from_secs(5)), connect(url)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!(
                "DATABASE_URL {}: no connection within {:?}",
                redact(url),
                left.min(Duration::from_secs(5))
            )),
        };
        match attempt_result {
            Ok(db) => {
                if attempt > 1 {
                    tracing::info!(attempt, "database reachable");
                }
                return Ok(db);
            }
            Err(e) => {
                let delay = backoff.next_delay();
                if start.elapsed() + delay >= budget {
                    return Err(e.context(format!("gave up after {attempt} attempts in {:?}", start.elapsed())));
                }
                tracing::warn!(attempt, retry_in_ms = delay.as_millis() as u64, error = format!("{e:#}"), "database not reachable yet");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

/// Opens a pool for `url` (`postgres://…` or `sqlite://…`). For SQLite the parent directory
/// is created and `mode=rwc` added, so the embedded default needs no set-up.
pub async fn connect(url: &str) -> anyhow::Result<DatabaseConnection> {
    let url = normalize_url(url)?;
    let mut opts = ConnectOptions::new(url.clone());
    opts.sqlx_logging(false).connect_timeout(Duration::from_secs(10)).acquire_timeout(Duration::from_secs(30));
    if url.starts_with("sqlite:") {
        if let Some(dir) = sqlite_parent_dir(&url) {
            std::fs::create_dir_all(&dir).with_context(|| format!("DATABASE_URL: cannot create directory {dir}"))?;
        }
        // One connection serialises writers: SQLite allows one at a time anyway, and this
        // turns "database is locked" into orderly waiting.
        opts.max_connections(1).min_connections(1);
    } else {
        opts.max_connections(8).min_connections(1);
    }
    let db = Database::connect(opts).await.with_context(|| format!("DATABASE_URL {}: cannot connect", redact(&url)))?;
    if db.get_database_backend() == DbBackend::Sqlite {
        db.execute_unprepared("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON;").await?;
    }
    Ok(db)
}

fn normalize_url(url: &str) -> anyhow::Result<String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(url.to_owned())
    } else if let Some(rest) = url.strip_prefix("sqlite:") {
        if !cfg!(feature = "sqlite") {
            anyhow::bail!(
                "DATABASE_URL is a sqlite:// URL, but this build has no SQLite support (built without the \
                 `sqlite` feature, as the container images are): use a postgres:// URL"
            )
        }
        if rest.contains("mode=") || rest.contains(":memory:") {
            Ok(url.to_owned())
        } else if rest.contains('?') {
            Ok(format!("{url}&mode=rwc"))
        } else {
            Ok(format!("{url}?mode=rwc"))
        }
    } else {
        anyhow::bail!("DATABASE_URL must start with postgres:// or sqlite:// (got {:?})", redact(url))
    }
}

fn sqlite_parent_dir(url: &str) -> Option<String> {
    let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next()?;
    let parent = std::path::Path::new(path).parent()?;
    let s = parent.to_string_lossy().into_owned();
    (!s.is_empty()).then_some(s)
}

/// The URL with any password replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &creds[..colon], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Rows per multi-row INSERT. Keeps each statement well under the 64 KiB loopback MSS:
/// the PostgreSQL driver does not set TCP_NODELAY, and a statement that spills into a
/// small trailing segment waits ~40 ms for a delayed ACK (Nagle). Measured: one
/// 255-row insert ~48 ms, the same rows in chunks of 32 a few ms.
pub const INSERT_CHUNK: usize = 32;

/// Arbitrary but fixed key of the migration advisory lock.
const MIGRATION_LOCK_KEY: i64 = 0x636c_6f75_646d_6172; // "cloudmar"

/// Applies pending migrations of `M`, safely with concurrent replicas.
pub async fn migrate<M: MigratorTrait>(db: &DatabaseConnection) -> anyhow::Result<()> {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            let txn = db.begin().await?;
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock($1)",
                [MIGRATION_LOCK_KEY.into()],
            ))
            .await?;
            M::up(&txn, None).await.context("migration failed")?;
            txn.commit().await?;
        }
        _ => M::up(db, None).await.context("migration failed")?,
    }
    Ok(())
}

/// `CREATE TABLE IF NOT EXISTS` for a sea-orm entity, its columns as the entity declares
/// them (the migrations of every service and of the platform's own tables).
pub async fn create_table<E: EntityTrait>(m: &SchemaManager<'_>, entity: E) -> Result<(), DbErr> {
    let schema = Schema::new(m.get_database_backend());
    m.create_table(schema.create_table_from_entity(entity).if_not_exists().to_owned()).await
}

/// `CREATE INDEX IF NOT EXISTS <name> ON <entity> (<columns>)`, for
/// `SchemaManager::create_index` (add `.unique()` for a unique index).
pub fn index<E: EntityTrait, C: IntoIndexColumn>(
    name: &str,
    entity: E,
    columns: impl IntoIterator<Item = C>,
) -> IndexCreateStatement {
    let mut index = Index::create();
    index.if_not_exists().name(name).table(entity);
    for c in columns {
        index.col(c);
    }
    index
}

/// True when `err` is a unique-constraint violation (both backends).
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
}

/// The span of one database transaction (an OpenTelemetry database client span named
/// `TRANSACTION <name>`, a child of the span that begins it; none outside any span): it
/// opens at [`begin`] and closes when the transaction is committed through it or when it
/// is dropped (rolled back or abandoned), recording which.
#[must_use = "commit through the span (`span.commit(txn)`) so the span records the commit"]
pub struct TxnSpan {
    span: tracing::Span,
    done: bool,
}

impl TxnSpan {
    /// Commits `txn` inside the span and records the outcome.
    pub async fn commit(mut self, txn: sea_orm::DatabaseTransaction) -> Result<(), DbErr> {
        use tracing::Instrument;
        self.done = true;
        let result = txn.commit().instrument(self.span.clone()).await;
        match &result {
            Ok(()) => self.span.record("db.transaction.outcome", "commit"),
            Err(e) => self
                .span
                .record("db.transaction.outcome", "error")
                .record("otel.status_code", "ERROR")
                .record("error.type", tracing::field::display(e)),
        };
        result
    }
}

impl Drop for TxnSpan {
    fn drop(&mut self) {
        if !self.done {
            self.span.record("db.transaction.outcome", "rollback");
        }
    }
}

/// Begins a transaction with its span; `name` says what it does (`place_order`,
/// `consume`, `outbox_publish`, …).
pub async fn begin(
    db: &DatabaseConnection,
    name: &'static str,
) -> Result<(sea_orm::DatabaseTransaction, TxnSpan), DbErr> {
    let system = match db.get_database_backend() {
        DbBackend::Postgres => "postgresql",
        DbBackend::Sqlite => "sqlite",
        _ => "other_sql",
    };
    // A transaction is part of the operation it serves: outside any span (the relay's
    // idle polls) it gets none, rather than a root trace every poll.
    let span = if tracing::Span::current().is_none() {
        tracing::Span::none()
    } else {
        tracing::info_span!(
        "db.transaction",
        otel.name = %format!("TRANSACTION {name}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        db.system.name = system,
        db.operation.name = "TRANSACTION",
        cloudmart.db.transaction = name,
        db.transaction.outcome = tracing::field::Empty,
        error.type = tracing::field::Empty,
        )
    };
    let txn = {
        use tracing::Instrument;
        db.begin().instrument(span.clone()).await
    };
    match txn {
        Ok(txn) => Ok((txn, TxnSpan { span, done: false })),
        Err(e) => {
            span.record("otel.status_code", "ERROR").record("error.type", tracing::field::display(&e));
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_completed() {
        assert_eq!(normalize_url("sqlite://data/order.db").unwrap(), "sqlite://data/order.db?mode=rwc");
        assert_eq!(normalize_url("postgres://u:p@h/db").unwrap(), "postgres://u:p@h/db");
        let err = normalize_url("mysql://u:secret@h/db").unwrap_err().to_string();
        assert!(err.contains("DATABASE_URL") && !err.contains("secret"), "{err}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:pw@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }

    #[tokio::test]
    async fn an_unreachable_database_is_retried_then_reported() {
        let err = super::connect_with_retry("postgres://u:p@127.0.0.1:1/db", std::time::Duration::from_secs(8))
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("gave up after") && !text.contains("after 1 attempts"), "{text}");
        assert!(
            text.contains("DATABASE_URL") && !text.contains(":p@"),
            "names the variable, hides the password: {text}"
        );
        // A URL that can never work is not retried.
        let err = super::connect_with_retry("mysql://h/db", std::time::Duration::from_secs(60)).await.unwrap_err();
        assert!(format!("{err:#}").contains("must start with postgres://"), "{err:#}");
    }

    #[tokio::test]
    async fn sqlite_connects_and_creates_its_directory() {
        let dir = std::env::temp_dir().join(format!("cloudmart-db-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/nested/x.db", dir.display());
        let db = connect(&url).await.unwrap();
        db.execute_unprepared("CREATE TABLE t (x INTEGER)").await.unwrap();
        assert!(dir.join("nested/x.db").exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
