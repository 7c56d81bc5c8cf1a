//! Idempotent Kafka consumer with a dead-letter queue.
//!
//! For every record: the CloudEvents headers are read; the event id (`ce_id`) is inserted
//! into `processed_events` **in the same transaction** as the handler's state change (and
//! the outbox rows it writes); the transaction commits; only then is the offset committed.
//! A redelivered record finds its id already there and changes nothing. A record that can
//! never be processed (missing headers, undecodable payload, a handler's
//! [`HandleError::Permanent`]) goes to `<topic>.dlq` and the consumer keeps going.
//!
//! # Faults
//! - A [`HandleError::Transient`] failure (database unavailable, serialization conflict) is
//!   retried **in place** with a bounded, jittered [`Backoff`] (100 ms up to 5 s) until it
//!   succeeds, turns permanent or shutdown interrupts it: the consumer never moves past a
//!   record it has not applied or dead-lettered, so nothing is skipped or reordered within
//!   a partition. A shutdown mid-retry leaves the offset uncommitted (redelivered later).
//! - Publishing to the DLQ is retried the same way (a broker hiccup), and the offset is
//!   committed only once the DLQ record is acknowledged.
//! - A dead-letter record keeps the original key, payload and headers and adds the
//!   [`headers`] `dlq_error`, `dlq_origin`, `dlq_topic`, `dlq_partition`, `dlq_offset`,
//!   `dlq_attempts` and `dlq_failed_at`. `cloudmart-audit dlq replay` re-publishes it to its
//!   topic after a fix; its `ce_id` is unchanged, so it is applied at most once however
//!   often it is replayed.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    message::{Header, Headers, OwnedHeaders, OwnedMessage},
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};
use sea_orm::{ActiveValue::Set, DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait, sea_query::OnConflict};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager};
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Records waiting per partition lane (see [`IdempotentConsumer::run`]).
const LANE_DEPTH: usize = 16;
/// How often a partition's lag is measured (at most).
const LAG_INTERVAL: Duration = Duration::from_secs(5);
/// First retry delay of a transient failure or a failed DLQ publish.
const RETRY_BASE: Duration = Duration::from_millis(100);
/// Longest retry delay: a retrying record is tried again at least this often.
const RETRY_CAP: Duration = Duration::from_secs(5);

use crate::{
    backoff::Backoff,
    config::KafkaArgs,
    events::{EventMeta, dlq_topic, headers},
    outbox::OutboxSignal,
};

/// The `processed_events` table: one row per consumed event id.
pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "processed_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub event_id: String,
        pub event_type: String,
        pub topic: String,
        pub processed_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Migration creating `processed_events`; every consuming service lists it.
pub struct CreateProcessedEventsTable;

impl MigrationName for CreateProcessedEventsTable {
    fn name(&self) -> &str {
        "m0000_platform_processed_events"
    }
}

#[async_trait]
impl MigrationTrait for CreateProcessedEventsTable {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::db::create_table(manager, entity::Entity).await
    }
}

/// One consumed event.
#[derive(Debug, Clone)]
pub struct InboundEvent {
    pub meta: EventMeta,
    /// Logical topic (without prefix).
    pub topic: String,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub partition: i32,
    pub offset: i64,
}

/// Why a handler could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Retrying cannot help (undecodable payload): the record goes to the DLQ.
    #[error("permanent: {0}")]
    Permanent(anyhow::Error),
    /// Retrying may help (database unavailable, serialization conflict).
    #[error("transient: {0}")]
    Transient(anyhow::Error),
}

/// A service's typed failure to apply an event, classified where it is defined: the
/// variants retrying cannot help (a payload that does not decode, a field no database
/// stores, a corrupt row) are permanent, the rest transient. `?` turns any such error into
/// the matching [`HandleError`] — the one classifier every handler goes through.
pub trait ApplyFailure: std::error::Error + Send + Sync + 'static {
    /// True when retrying cannot help: the record goes to the DLQ.
    fn is_permanent(&self) -> bool;
}

impl<E: ApplyFailure> From<E> for HandleError {
    fn from(e: E) -> Self {
        if e.is_permanent() { HandleError::Permanent(e.into()) } else { HandleError::Transient(e.into()) }
    }
}

/// Whether a database error is permanent for an event: a column value this build cannot
/// decode (`DbErr::Type`, say an unknown status) fails on every retry; anything else
/// (connection, conflict, timeout) may pass later.
pub fn db_error_is_permanent(e: &DbErr) -> bool {
    matches!(e, DbErr::Type(_))
}

impl From<DbErr> for HandleError {
    fn from(e: DbErr) -> Self {
        HandleError::Transient(e.into())
    }
}

impl From<prost::DecodeError> for HandleError {
    fn from(e: prost::DecodeError) -> Self {
        HandleError::Permanent(anyhow::Error::new(e).context("payload does not decode"))
    }
}

/// Applies events to a service's state, in two steps:
///
/// 1. [`prepare`](EventHandler::prepare) does whatever leaves the process (an RPC to
///    another service) *before* any transaction opens, so no pooled connection or row
///    lock is held while the network is slow — a hanging peer then stalls this one event,
///    not every user of the database;
/// 2. [`handle`](EventHandler::handle) reads and writes the database only, through `txn`
///    (the consumer commits it together with the event id), using what `prepare` found.
///
/// A transient failure in either step retries both; `prepare` must be safe to repeat.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// What `prepare` hands to `handle` (`()` for handlers that call nothing outside).
    type Prepared: Send + 'static;

    async fn prepare(&self, event: &InboundEvent) -> Result<Self::Prepared, HandleError>;

    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        event: &InboundEvent,
        prepared: Self::Prepared,
    ) -> Result<(), HandleError>;
}

/// A handler that asks nothing outside the database — only the transaction step of
/// [`EventHandler`], with the service's typed failure (classified by [`ApplyFailure`]).
/// Every `DatabaseHandler` is an `EventHandler` with nothing to prepare.
#[async_trait]
pub trait DatabaseHandler: Send + Sync + 'static {
    /// Why an event could not be applied; says itself whether that is permanent.
    type Error: ApplyFailure;

    async fn apply(&self, txn: &DatabaseTransaction, event: &InboundEvent) -> Result<(), Self::Error>;
}

#[async_trait]
impl<T: DatabaseHandler> EventHandler for T {
    type Prepared = ();

    async fn prepare(&self, _event: &InboundEvent) -> Result<(), HandleError> {
        Ok(())
    }

    async fn handle(&self, txn: &DatabaseTransaction, event: &InboundEvent, (): ()) -> Result<(), HandleError> {
        Ok(self.apply(txn, event).await?)
    }
}

/// What [`IdempotentConsumer::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The handler ran and its transaction committed.
    Applied,
    /// The event id was already recorded: nothing changed.
    Duplicate,
}

/// Checks the event's attributes, runs `handler.prepare` outside any transaction, then records the event id and applies
/// `handler.handle` in one transaction. The consumer's single step, public so tests can
/// drive it without a broker.
pub async fn apply<H: EventHandler + ?Sized>(
    db: &DatabaseConnection,
    handler: &H,
    event: &InboundEvent,
) -> Result<Applied, HandleError> {
    // The attributes stored with the event id: a NUL or an unbounded `ce_id` would fail
    // the insert on every retry (PostgreSQL refuses 0x00 in text), so it is permanent.
    crate::validate::event_meta(&event.meta)?;
    let prepared = handler.prepare(event).await?;
    let (txn, span) = crate::db::begin(db, "consume").await?;
    let row = entity::ActiveModel {
        event_id: Set(event.meta.id.clone()),
        event_type: Set(event.meta.ce_type.clone()),
        topic: Set(event.topic.clone()),
        processed_at: Set(Utc::now()),
    };
    let inserted = entity::Entity::insert(row)
        .on_conflict(OnConflict::column(entity::Column::EventId).do_nothing().to_owned())
        .exec_without_returning(&txn)
        .await?;
    if inserted == 0 {
        txn.rollback().await?;
        return Ok(Applied::Duplicate);
    }
    handler.handle(&txn, event, prepared).await?;
    span.commit(txn).await?;
    Ok(Applied::Applied)
}

/// Consumes `topics`, applying each event exactly once to the service's database.
pub struct IdempotentConsumer<H> {
    db: DatabaseConnection,
    consumer: Arc<StreamConsumer>,
    lag_checked: Mutex<HashMap<(String, i32), std::time::Instant>>,
    dlq: FutureProducer,
    kafka: KafkaArgs,
    topics: Vec<&'static str>,
    handler: H,
    signal: OutboxSignal,
}

impl<H: EventHandler> IdempotentConsumer<H> {
    pub fn new(
        db: DatabaseConnection,
        consumer: StreamConsumer,
        dlq: FutureProducer,
        kafka: KafkaArgs,
        topics: Vec<&'static str>,
        handler: H,
        signal: OutboxSignal,
    ) -> Self {
        Self { db, consumer: Arc::new(consumer), lag_checked: Mutex::default(), dlq, kafka, topics, handler, signal }
    }

    /// Runs until `token` is cancelled, then commits the consumer's offsets.
    ///
    /// One receive loop hands each record to its partition's *lane*: a task that applies
    /// that partition's records one after another, in offset order, committing each offset
    /// after its transaction. Partitions are independent, so lanes run side by side — a
    /// service with three partitions applies up to three events at once (and the database
    /// commits them together) instead of waiting for one commit before the next record of
    /// any partition. A lane holds at most [`LANE_DEPTH`] records; a full lane makes the
    /// receive loop wait (back-pressure, not an unbounded buffer). A record whose
    /// partition was revoked while it waited is dropped uncommitted: its new owner reads
    /// it from the committed offset, so a partition is never applied by two members out of
    /// order.
    pub async fn run(self, token: CancellationToken) -> anyhow::Result<()> {
        let physical: Vec<String> = self.topics.iter().map(|t| self.kafka.topic(t)).collect();
        let names: Vec<&str> = physical.iter().map(String::as_str).collect();
        self.consumer.subscribe(&names)?;
        tracing::info!(topics = ?names, "consumer subscribed");
        let this = Arc::new(self);
        // Lanes stop with the consumer, also when it stops because one of them failed.
        let lanes_token = token.child_token();
        let mut lanes: HashMap<(String, i32), mpsc::Sender<OwnedMessage>> = HashMap::new();
        let mut workers = JoinSet::new();
        let mut failure = None;
        loop {
            if let Some(done) = workers.try_join_next()
                && let Err(e) = lane_result(done)
            {
                failure = Some(e);
                break;
            }
            let msg = tokio::select! {
                _ = token.cancelled() => break,
                msg = this.consumer.recv() => msg,
            };
            match msg {
                Ok(m) => {
                    let m = m.detach();
                    let lane = lanes.entry((m.topic().to_owned(), m.partition())).or_insert_with(|| {
                        let (tx, rx) = mpsc::channel(LANE_DEPTH);
                        workers.spawn(this.clone().lane(rx, lanes_token.clone()));
                        tx
                    });
                    tokio::select! {
                        _ = token.cancelled() => break,
                        // A closed lane has failed; its error is collected at the top.
                        _ = lane.send(m) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "kafka receive failed");
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
        // Lanes finish the record in hand; records still queued stay uncommitted and are
        // delivered again after a restart (to this member or the partition's next owner).
        lanes_token.cancel();
        drop(lanes);
        while let Some(done) = workers.join_next().await {
            if let Err(e) = lane_result(done) {
                failure.get_or_insert(e);
            }
        }
        if let Err(e) = this.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final offset commit had nothing to do or failed");
        }
        this.consumer.unsubscribe();
        tracing::info!("consumer stopped");
        failure.map_or(Ok(()), Err)
    }

    /// Applies one partition's records in order until its sender is dropped or `token`
    /// is cancelled.
    async fn lane(
        self: Arc<Self>,
        mut records: mpsc::Receiver<OwnedMessage>,
        token: CancellationToken,
    ) -> anyhow::Result<()> {
        loop {
            let m = tokio::select! {
                biased;
                _ = token.cancelled() => return Ok(()),
                m = records.recv() => match m {
                    Some(m) => m,
                    None => return Ok(()),
                },
            };
            if !self.still_assigned(&m).await {
                tracing::debug!(
                    topic = m.topic(),
                    partition = m.partition(),
                    offset = m.offset(),
                    "partition revoked; record left to its new owner"
                );
                continue;
            }
            if !self.handle_message(&m, &token).await? {
                return Ok(());
            }
        }
    }

    /// Whether `m`'s partition is still assigned to this member (true when the assignment
    /// cannot be read: the record is then applied, and idempotency covers a duplicate).
    /// librdkafka answers `assignment()` from its main thread and the caller waits, for
    /// as long as a rebalance keeps that thread busy: on the blocking pool, so a wait
    /// stalls this lane only, never the runtime serving gRPC.
    async fn still_assigned(&self, m: &OwnedMessage) -> bool {
        let consumer = self.consumer.clone();
        let (topic, partition) = (m.topic().to_owned(), m.partition());
        tokio::task::spawn_blocking(move || match consumer.assignment() {
            Ok(assigned) => assigned.find_partition(&topic, partition).is_some(),
            Err(_) => true,
        })
        .await
        .unwrap_or(true)
    }

    /// Processes one record; returns false when shutdown interrupted it (offset not committed).
    async fn handle_message(&self, m: &OwnedMessage, token: &CancellationToken) -> anyhow::Result<bool> {
        let topic = m.topic().strip_prefix(self.kafka.topic_prefix.as_str()).unwrap_or(m.topic()).to_owned();
        let event = match EventMeta::from_headers(m.headers()) {
            Ok(meta) => InboundEvent {
                meta,
                topic,
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: m.payload().unwrap_or_default().to_vec(),
                partition: m.partition(),
                offset: m.offset(),
            },
            Err(reason) => {
                crate::metrics::consumed(&topic, "dead_lettered", Duration::ZERO);
                if !self.dead_letter(m, &reason, 1, token).await {
                    return Ok(false);
                }
                self.commit(m);
                return Ok(true);
            }
        };
        // One span per record, a child of the publishing span named in the headers; the
        // handler (and the outbox rows it writes) runs inside it, so the trace continues.
        let span = tracing::info_span!(
            "consumer.process",
            otel.name = format!("process {}", event.topic),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.destination.name = %m.topic(),
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.partition.id = %m.partition(),
            messaging.kafka.offset = m.offset(),
            messaging.message.id = %event.meta.id,
            messaging.kafka.message.key = event.key.as_deref().unwrap_or_default(),
            cloudevents.event_type = %event.meta.ce_type,
            cloudevents.event_source = %event.meta.source,
            otel.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        crate::trace::set_remote_parent(
            &span,
            crate::trace::context_from(event.meta.traceparent.as_deref(), event.meta.tracestate.as_deref()),
        );
        let started = std::time::Instant::now();
        let outcome = self.process(m, &event, token).instrument(span.clone()).await;
        let result = match outcome {
            None => return Ok(false),
            Some(result) => result,
        };
        if result == "dead_lettered" {
            span.record("otel.status_code", "ERROR");
        }
        crate::metrics::consumed(&event.topic, result, started.elapsed());
        self.commit(m);
        self.measure_lag(m);
        Ok(true)
    }

    /// Applies one event, retrying transient failures in place (never skipping it); `None`
    /// when shutdown interrupted it, else what happened (`applied`, `duplicate`,
    /// `dead_lettered`).
    async fn process(&self, m: &OwnedMessage, event: &InboundEvent, token: &CancellationToken) -> Option<&'static str> {
        let mut backoff = Backoff::new(RETRY_BASE, RETRY_CAP);
        let mut attempts: u32 = 0;
        loop {
            attempts = attempts.saturating_add(1);
            match apply(&self.db, &self.handler, event).await {
                Ok(Applied::Applied) => {
                    self.signal.notify();
                    tracing::debug!(event_id = %event.meta.id, ce_type = %event.meta.ce_type, "event applied");
                    return Some("applied");
                }
                Ok(Applied::Duplicate) => {
                    tracing::info!(event_id = %event.meta.id, ce_type = %event.meta.ce_type, "duplicate event ignored");
                    return Some("duplicate");
                }
                Err(HandleError::Permanent(e)) => {
                    tracing::Span::current().record("error.type", "permanent");
                    if !self.dead_letter(m, &format!("{e:#}"), attempts, token).await {
                        return None;
                    }
                    return Some("dead_lettered");
                }
                Err(HandleError::Transient(e)) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(event_id = %event.meta.id, error = format!("{e:#}"), attempts, retry_in = ?delay, "event failed; retrying");
                    tokio::select! {
                        _ = token.cancelled() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Updates the lag gauge of `m`'s partition from its high watermark, at most every
    /// few seconds per partition and off the consumer's path (a metadata round trip).
    fn measure_lag(&self, m: &OwnedMessage) {
        let key = (m.topic().to_owned(), m.partition());
        {
            let mut last = self.lag_checked.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            if last.get(&key).is_some_and(|t| now.duration_since(*t) < LAG_INTERVAL) {
                return;
            }
            last.insert(key.clone(), now);
        }
        let consumer = self.consumer.clone();
        let (topic, partition) = key;
        let offset = m.offset();
        let logical = topic.strip_prefix(self.kafka.topic_prefix.as_str()).unwrap_or(&topic).to_owned();
        tokio::task::spawn_blocking(move || {
            if let Ok((_, high)) = consumer.fetch_watermarks(&topic, partition, Duration::from_secs(2)) {
                crate::metrics::consumer_lag(&logical, partition, high - offset - 1);
            }
        });
    }

    fn commit(&self, m: &OwnedMessage) {
        let mut next = TopicPartitionList::new();
        let committed = next
            .add_partition_offset(m.topic(), m.partition(), Offset::Offset(m.offset() + 1))
            .and_then(|()| self.consumer.commit(&next, CommitMode::Async));
        if let Err(e) = committed {
            tracing::warn!(error = %e, "offset commit failed; the record may be redelivered (harmless)");
        }
    }

    /// Sends the record to `<topic>.dlq` with the error, its origin and `attempts` (how
    /// many times it was tried); retries with back-off until the broker acknowledges it.
    /// Returns false only when shutdown interrupted it (the offset must then stay
    /// uncommitted, so the record is redelivered rather than lost).
    async fn dead_letter(&self, m: &OwnedMessage, error: &str, attempts: u32, token: &CancellationToken) -> bool {
        let dlq_topic = dlq_topic(m.topic());
        let origin = format!("{}/{}/{}", m.topic(), m.partition(), m.offset());
        tracing::warn!(topic = %m.topic(), %origin, %error, attempts, "dead-lettering record");
        crate::metrics::dead_lettered(m.topic().strip_prefix(self.kafka.topic_prefix.as_str()).unwrap_or(m.topic()));
        let (partition, offset, attempts) = (m.partition().to_string(), m.offset().to_string(), attempts.to_string());
        let failed_at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut backoff = Backoff::new(RETRY_BASE, RETRY_CAP);
        loop {
            let mut h = OwnedHeaders::new();
            if let Some(orig) = m.headers() {
                // A record that was dead-lettered before (replayed, failed again) gets
                // this failure's dlq_* headers, not two of each.
                for x in orig.iter().filter(|x| !x.key.starts_with(headers::DLQ_PREFIX)) {
                    h = h.insert(Header { key: x.key, value: x.value });
                }
            }
            for (key, value) in [
                (headers::DLQ_ERROR, error),
                (headers::DLQ_ORIGIN, origin.as_str()),
                (headers::DLQ_TOPIC, m.topic()),
                (headers::DLQ_PARTITION, partition.as_str()),
                (headers::DLQ_OFFSET, offset.as_str()),
                (headers::DLQ_ATTEMPTS, attempts.as_str()),
                (headers::DLQ_FAILED_AT, failed_at.as_str()),
            ] {
                h = h.insert(Header { key, value: Some(value) });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&dlq_topic).headers(h);
            if let Some(k) = m.key() {
                record = record.key(k);
            }
            if let Some(p) = m.payload() {
                record = record.payload(p);
            }
            match self.dlq.send(record, Timeout::After(Duration::from_secs(15))).await {
                Ok(_) => return true,
                Err((e, _)) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "DLQ publish failed; retrying");
                    tokio::select! {
                        _ = token.cancelled() => return false,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

/// A finished lane's outcome: its own error, or its panic as an error.
fn lane_result(done: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    match done {
        Ok(result) => result,
        Err(e) => Err(anyhow::Error::new(e).context("a consumer lane panicked")),
    }
}
