//! Transactional outbox.
//!
//! A service writes its state change and the events it causes in **one local transaction**
//! ([`enqueue`] takes the transaction). The [`OutboxRelay`] publishes unpublished rows in id
//! order with an idempotent producer and marks them published. It is woken through an
//! [`OutboxSignal`] right after a commit, and polls as a fallback (another replica's commit,
//! a failed publish, a restart). A crash between commit and publish loses nothing: the row
//! stays unpublished until a relay sends it. A crash between publish and marking re-sends
//! it; consumers are idempotent on `ce_id`, so that changes nothing.
//!
//! With several replicas on PostgreSQL, each relay locks its batch with
//! `FOR UPDATE SKIP LOCKED`, so replicas share the work instead of sending rows twice.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use rdkafka::{
    error::KafkaError,
    producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer},
    types::RDKafkaErrorCode,
    util::Timeout,
};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{Expr, LockBehavior, LockType},
};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    backoff::Backoff,
    config::KafkaArgs,
    db,
    events::{CloudEvent, EventMeta},
};

/// The `outbox` table.
pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        /// `ce_id` of the event.
        #[sea_orm(unique)]
        pub event_id: String,
        /// Logical topic (the relay adds `KAFKA_TOPIC_PREFIX`).
        pub topic: String,
        pub event_key: String,
        pub event_type: String,
        pub source: String,
        pub payload: Vec<u8>,
        /// W3C trace context of the transaction that wrote the row.
        pub traceparent: Option<String>,
        pub tracestate: Option<String>,
        pub created_at: ChronoDateTimeUtc,
        pub published_at: Option<ChronoDateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Migration creating the `outbox` table; every service lists it in its migrator.
pub struct CreateOutboxTable;

impl MigrationName for CreateOutboxTable {
    fn name(&self) -> &str {
        "m0000_platform_outbox"
    }
}

#[async_trait]
impl MigrationTrait for CreateOutboxTable {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        db::create_table(manager, entity::Entity).await?;
        let unpublished = [entity::Column::PublishedAt, entity::Column::Id];
        manager.create_index(db::index("outbox_unpublished", entity::Entity, unpublished)).await
    }
}

/// Writes `event` to the outbox inside `txn` (the caller's transaction). Returns its `ce_id`.
pub async fn enqueue<E: CloudEvent, C: ConnectionTrait>(txn: &C, source: &str, event: &E) -> Result<String, DbErr> {
    let (event_id, row) = outbox_row(source, event);
    entity::Entity::insert(row).exec_without_returning(txn).await?;
    Ok(event_id)
}

/// Writes many events in one statement (batched writers). Returns their `ce_id`s.
pub async fn enqueue_many<E: CloudEvent, C: ConnectionTrait>(
    txn: &C,
    source: &str,
    events: &[E],
) -> Result<Vec<String>, DbErr> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = Vec::with_capacity(events.len());
    for chunk in events.chunks(crate::db::INSERT_CHUNK) {
        let (chunk_ids, rows): (Vec<String>, Vec<entity::ActiveModel>) =
            chunk.iter().map(|e| outbox_row(source, e)).unzip();
        entity::Entity::insert_many(rows).exec_without_returning(txn).await?;
        ids.extend(chunk_ids);
    }
    Ok(ids)
}

/// The row for `event`; it stores the trace context of the current span (the transaction
/// writing it), which the relay continues when it publishes — also after a restart.
/// Like [`enqueue_many`], each event stored with the trace context of its own span (a
/// batch written by one task on behalf of many requests keeps every request's trace).
pub async fn enqueue_many_traced<E: CloudEvent, C: ConnectionTrait>(
    txn: &C,
    source: &str,
    events: &[(E, tracing::Span)],
) -> Result<Vec<String>, DbErr> {
    let mut ids = Vec::with_capacity(events.len());
    for chunk in events.chunks(crate::db::INSERT_CHUNK) {
        let (chunk_ids, rows): (Vec<String>, Vec<entity::ActiveModel>) =
            chunk.iter().map(|(e, span)| span.in_scope(|| outbox_row(source, e))).unzip();
        entity::Entity::insert_many(rows).exec_without_returning(txn).await?;
        ids.extend(chunk_ids);
    }
    Ok(ids)
}

fn outbox_row<E: CloudEvent>(source: &str, event: &E) -> (String, entity::ActiveModel) {
    let event_id = uuid::Uuid::new_v4().to_string();
    let (traceparent, tracestate) = crate::trace::current_headers();
    let row = entity::ActiveModel {
        event_id: Set(event_id.clone()),
        topic: Set(E::TOPIC.to_owned()),
        event_key: Set(event.key().to_owned()),
        event_type: Set(E::TYPE.to_owned()),
        source: Set(source.to_owned()),
        payload: Set(event.encode_to_vec()),
        traceparent: Set(traceparent),
        tracestate: Set(tracestate),
        created_at: Set(Utc::now()),
        published_at: Set(None),
        ..Default::default()
    };
    (event_id, row)
}

/// Wakes the relay after a commit. Cheap to clone; a wake-up with no relay waiting is kept.
#[derive(Clone, Default, Debug)]
pub struct OutboxSignal(Arc<Notify>);

impl OutboxSignal {
    pub fn notify(&self) {
        self.0.notify_one();
    }
    async fn notified(&self) {
        self.0.notified().await;
    }
}

/// Publishes the outbox to Kafka.
pub struct OutboxRelay {
    db: DatabaseConnection,
    producer: FutureProducer,
    kafka: KafkaArgs,
    signal: OutboxSignal,
    batch_size: u64,
    poll_interval: Duration,
    retention: Option<Duration>,
}

impl OutboxRelay {
    /// A relay that keeps published rows for [`DEFAULT_RETENTION`].
    pub fn new(db: DatabaseConnection, producer: FutureProducer, kafka: KafkaArgs, signal: OutboxSignal) -> Self {
        Self {
            db,
            producer,
            kafka,
            signal,
            batch_size: BATCH_SIZE,
            poll_interval: Duration::from_millis(500),
            retention: Some(DEFAULT_RETENTION),
        }
    }

    /// Keep published rows this long before deleting them (`None`: forever).
    #[must_use]
    pub fn with_retention(mut self, retention: Option<Duration>) -> Self {
        self.retention = retention;
        self
    }

    /// Publishes one batch of unpublished rows and marks the sent ones. Returns how many
    /// were published. The relay's single step; tests call it directly.
    pub async fn publish_pending(&self) -> anyhow::Result<usize> {
        match self.send_after(0).await? {
            Some(batch) => batch.finish().await,
            None => Ok(0),
        }
    }

    /// Publishes everything that is pending now: from the lowest unpublished id, then
    /// forward batch by batch. Each drain starts from the beginning again, so a row whose
    /// transaction took a lower id but committed after a later one is sent by the next
    /// drain (a commit's wake-up or the poll) rather than skipped.
    ///
    /// On PostgreSQL the next batch is locked and handed to the producer while the broker
    /// still acknowledges the previous one (its rows stay locked in their own transaction,
    /// so the next query skips them): the database and the broker work at the same time
    /// instead of taking turns. Records still reach the producer in id order, which keeps
    /// each key's events in order. SQLite has one connection, so it takes turns.
    pub async fn drain(&self) -> anyhow::Result<usize> {
        let overlap = self.db.get_database_backend() == DbBackend::Postgres;
        let (mut total, mut after) = (0, 0);
        let mut in_flight: Option<InFlight> = None;
        loop {
            let next = self.send_after(after).await;
            if let Some(previous) = in_flight.take() {
                total += previous.finish().await?;
            }
            let Some(batch) = next? else { return Ok(total) };
            after = batch.last;
            if (batch.rows.len() as u64) < self.batch_size {
                return Ok(total + batch.finish().await?);
            }
            if overlap {
                in_flight = Some(batch);
            } else {
                total += batch.finish().await?;
            }
        }
    }

    /// Locks the first batch of unpublished rows with an id above `after` and hands them
    /// to the producer; `None` when there are none. [`InFlight::finish`] waits for the
    /// broker and marks them.
    ///
    /// Why the lower bound: a published row is updated, not deleted, and until vacuum the
    /// index on `(published_at, id)` still holds an entry for its unpublished version. A
    /// query for "the first unpublished rows" walks past every such dead entry — the
    /// drain of a 100k-row outbox spent most of its time there, slower with every batch
    /// (`make bench`, P4). Seeking to `id > after` skips them.
    async fn send_after(&self, after: i64) -> anyhow::Result<Option<InFlight>> {
        let (txn, tx_span) = crate::db::begin(&self.db, "outbox_publish").await?;
        let mut query = entity::Entity::find()
            .filter(entity::Column::PublishedAt.is_null())
            .filter(entity::Column::Id.gt(after))
            .order_by_asc(entity::Column::Id)
            .limit(self.batch_size);
        if txn.get_database_backend() == DbBackend::Postgres {
            query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        let rows = query.all(&txn).await?;
        let Some(last) = rows.last().map(|r| r.id) else {
            tx_span.commit(txn).await?;
            return Ok(None);
        };
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            let topic = self.kafka.topic(&row.topic);
            // The publish span continues the trace of the transaction that wrote the row,
            // and the consumer continues the publish span (its context goes in the headers).
            let span = tracing::info_span!(
                "outbox.publish",
                otel.name = format!("publish {}", row.topic),
                otel.kind = "producer",
                messaging.system = "kafka",
                messaging.destination.name = %topic,
                messaging.operation.type = "publish",
                messaging.operation.name = "publish",
                messaging.message.id = %row.event_id,
                messaging.kafka.message.key = %row.event_key,
                cloudevents.event_type = %row.event_type,
                messaging.destination.partition.id = tracing::field::Empty,
                messaging.kafka.offset = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
                error.type = tracing::field::Empty,
            );
            crate::trace::set_remote_parent(
                &span,
                crate::trace::context_from(row.traceparent.as_deref(), row.tracestate.as_deref()),
            );
            let (traceparent, tracestate) = match crate::trace::context_headers(&span.context()) {
                (Some(tp), ts) => (Some(tp), ts),
                // Export off: pass the stored context through unchanged.
                (None, _) => (row.traceparent.clone(), row.tracestate.clone()),
            };
            let meta = EventMeta {
                id: row.event_id.clone(),
                ce_type: row.event_type.clone(),
                source: row.source.clone(),
                time: row.created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                traceparent,
                tracestate,
            };
            let mut record = FutureRecord::to(&topic)
                .key(row.event_key.as_bytes())
                .payload(row.payload.as_slice())
                .headers(meta.to_headers());
            // Enqueue now (the record is copied into the producer's queue); a full queue
            // is waited out, bounded like `send`'s queue timeout.
            let queued = std::time::Instant::now();
            let delivery = loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => break Ok(delivery),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), again))
                        if queued.elapsed() < QUEUE_WAIT =>
                    {
                        record = again;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => break Err(e),
                }
            };
            deliveries.push((span, delivery));
        }
        Ok(Some(InFlight { txn, tx_span, rows, deliveries, last }))
    }
}

/// Rows per relay batch (one transaction, one UPDATE marking them). Under a light load a
/// batch holds what is pending, so the size only matters for a backlog, where fewer,
/// larger transactions drain faster (`make bench`, P4).
const BATCH_SIZE: u64 = 1024;

/// How long a record waits for room in a full producer queue before it counts as failed.
const QUEUE_WAIT: Duration = Duration::from_secs(15);

/// A batch handed to the producer: its rows locked in `txn`, one delivery per row.
struct InFlight {
    txn: sea_orm::DatabaseTransaction,
    tx_span: db::TxnSpan,
    rows: Vec<entity::Model>,
    deliveries: Vec<(tracing::Span, Result<DeliveryFuture, KafkaError>)>,
    /// The highest id of the batch.
    last: i64,
}

impl InFlight {
    /// Waits until the broker acknowledged (or refused) every record, marks the sent rows
    /// published and commits. Returns how many were published; an error when some were
    /// not (they stay unpublished for the next pass).
    async fn finish(self) -> anyhow::Result<usize> {
        let InFlight { txn, tx_span, rows, deliveries, .. } = self;
        let results = futures::future::join_all(deliveries.into_iter().map(|(span, delivery)| {
            let recorder = span.clone();
            async move {
                let result = match delivery {
                    Ok(delivery) => match delivery.await {
                        Ok(Ok(d)) => Ok(d),
                        Ok(Err((e, _))) => Err(e),
                        Err(_canceled) => Err(KafkaError::Canceled),
                    },
                    Err(e) => Err(e),
                };
                match &result {
                    Ok(delivery) => {
                        recorder.record("messaging.destination.partition.id", delivery.partition.to_string());
                        recorder.record("messaging.kafka.offset", delivery.offset);
                    }
                    Err(e) => {
                        recorder.record("otel.status_code", "ERROR");
                        recorder.record("error.type", e.to_string());
                    }
                }
                result
            }
            .instrument(span)
        }))
        .await;
        let mut sent = Vec::with_capacity(rows.len());
        for (row, result) in rows.iter().zip(results) {
            match result {
                Ok(_) => {
                    let latency = (Utc::now() - row.created_at).to_std().unwrap_or_default();
                    crate::metrics::outbox_published(&row.topic, &row.event_type, latency);
                    sent.push(row.id)
                }
                Err(e) => {
                    crate::metrics::outbox_publish_failed(&row.topic);
                    tracing::warn!(event_id = %row.event_id, topic = %row.topic, error = %e, "outbox publish failed; will retry")
                }
            }
        }
        if !sent.is_empty() {
            entity::Entity::update_many()
                .col_expr(entity::Column::PublishedAt, Expr::value(Utc::now()))
                .filter(entity::Column::Id.is_in(sent.clone()))
                .exec(&txn)
                .await?;
        }
        tx_span.commit(txn).await?;
        if sent.len() < rows.len() {
            anyhow::bail!("{} of {} outbox events could not be published", rows.len() - sent.len(), rows.len());
        }
        tracing::debug!(count = sent.len(), "outbox published");
        Ok(sent.len())
    }
}

impl OutboxRelay {
    /// Runs until `token` is cancelled, then publishes what is left and flushes.
    /// A failed pass (broker or database unavailable) is retried after a jittered
    /// [`Backoff`] delay (100 ms up to 5 s), reset by the next successful pass.
    pub async fn run(self, token: CancellationToken) -> anyhow::Result<()> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut measured: Option<std::time::Instant> = None;
        let mut purged: Option<std::time::Instant> = None;
        loop {
            let pass = self.drain().await;
            if let Some(retention) = self.retention
                && purged.is_none_or(|t| t.elapsed() >= PURGE_EVERY)
            {
                purged = Some(std::time::Instant::now());
                // None: the cutoff lies before any date there can be, so nothing is that old.
                if let Some(cutoff) = retention_cutoff(chrono::Utc::now(), retention) {
                    match purge_published(&self.db, cutoff).await {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::info!(rows = n, ?retention, "published outbox rows past their retention deleted")
                        }
                        Err(e) => tracing::warn!(error = format!("{e:#}"), "outbox purge failed; tried again later"),
                    }
                }
            }
            if measured.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                measured = Some(std::time::Instant::now());
                match backlog(&self.db).await {
                    Ok(n) => crate::metrics::outbox_backlog(n),
                    Err(e) => tracing::debug!(error = format!("{e:#}"), "outbox backlog not measured"),
                }
                match oldest_unpublished(&self.db).await {
                    Ok(oldest) => crate::metrics::outbox_oldest_age(
                        oldest.map(|t| (chrono::Utc::now() - t).to_std().unwrap_or_default()),
                    ),
                    Err(e) => tracing::debug!(error = format!("{e:#}"), "outbox age not measured"),
                }
            }
            match pass {
                Ok(_) => backoff.reset(),
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = format!("{e:#}"), retry_in = ?delay, "outbox relay pass failed");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = token.cancelled() => break,
                    }
                }
            }
            tokio::select! {
                _ = self.signal.notified() => {}
                _ = tokio::time::sleep(self.poll_interval) => {}
                _ = token.cancelled() => break,
            }
        }
        if let Err(e) = self.drain().await {
            tracing::warn!(error = format!("{e:#}"), "final outbox pass failed; rows stay for the next start");
        }
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(Timeout::After(Duration::from_secs(10)))).await??;
        tracing::info!("outbox relay stopped");
        Ok(())
    }
}

/// How long published rows stay by default (`OUTBOX_RETENTION_HOURS`): a day of events to
/// audit or debug from, while the table stays the size of a day's traffic.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// How often the relay deletes published rows past their retention (and once at start).
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// Rows one purge statement deletes at most: short statements, so a purge of a large
/// backlog never holds locks or bloats a transaction for long.
const PURGE_CHUNK: u64 = 5_000;

/// `now - retention`, or `None` when that is before the earliest date chrono represents
/// (`OUTBOX_RETENTION_HOURS` accepts up to u32::MAX hours, ~490,000 years): a plain
/// subtraction would panic there.
fn retention_cutoff(now: chrono::DateTime<chrono::Utc>, retention: Duration) -> Option<chrono::DateTime<chrono::Utc>> {
    now.checked_sub_signed(chrono::Duration::from_std(retention).ok()?)
}

/// Deletes the rows published before `cutoff`, oldest first, in statements of at most
/// [`PURGE_CHUNK`] rows; returns how many. Unpublished rows are never touched, however old.
pub async fn purge_published<C: ConnectionTrait>(db: &C, cutoff: chrono::DateTime<chrono::Utc>) -> Result<u64, DbErr> {
    use sea_orm::QueryTrait;
    let mut deleted = 0;
    loop {
        let oldest = entity::Entity::find()
            .select_only()
            .column(entity::Column::Id)
            .filter(entity::Column::PublishedAt.is_not_null())
            .filter(entity::Column::PublishedAt.lt(cutoff))
            .order_by_asc(entity::Column::Id)
            .limit(PURGE_CHUNK)
            .into_query();
        let n =
            entity::Entity::delete_many().filter(entity::Column::Id.in_subquery(oldest)).exec(db).await?.rows_affected;
        deleted += n;
        if n < PURGE_CHUNK {
            return Ok(deleted);
        }
    }
}

/// Rows not yet published (for the audit, metrics and tests).
pub async fn backlog<C: ConnectionTrait>(db: &C) -> Result<u64, DbErr> {
    use sea_orm::PaginatorTrait;
    entity::Entity::find().filter(entity::Column::PublishedAt.is_null()).count(db).await
}

/// When the oldest row not yet published was written (`None`: nothing waits).
pub async fn oldest_unpublished<C: ConnectionTrait>(db: &C) -> Result<Option<chrono::DateTime<chrono::Utc>>, DbErr> {
    use sea_orm::{QueryOrder, QuerySelect};
    entity::Entity::find()
        .select_only()
        .column(entity::Column::CreatedAt)
        .filter(entity::Column::PublishedAt.is_null())
        .order_by_asc(entity::Column::Id)
        .limit(1)
        .into_tuple::<chrono::DateTime<chrono::Utc>>()
        .one(db)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_cutoff_is_now_minus_retention_and_none_past_the_calendar() {
        let now = chrono::Utc::now();
        let day = retention_cutoff(now, Duration::from_secs(24 * 3600)).unwrap();
        assert_eq!(now - day, chrono::Duration::hours(24));
        // The largest OUTBOX_RETENTION_HOURS: a plain subtraction would panic here.
        assert_eq!(retention_cutoff(now, Duration::from_secs(u64::from(u32::MAX) * 3600)), None);
        assert_eq!(retention_cutoff(now, Duration::MAX), None);
    }
}
