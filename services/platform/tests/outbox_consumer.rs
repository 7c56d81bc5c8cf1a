//! The outbox relay and the idempotent consumer against a database and a broker
//! (PostgreSQL + a real broker when TEST_DATABASE_URL / TEST_KAFKA_BROKERS are set).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use cloudmart_platform::proto::contract::topics;
use cloudmart_platform::{
    consumer::{
        self, Applied, CreateProcessedEventsTable, EventHandler, HandleError, IdempotentConsumer, InboundEvent,
    },
    db,
    events::{CloudEvent, EventMeta, decode, headers},
    kafka, outbox,
    outbox::{CreateOutboxTable, OutboxRelay, OutboxSignal},
    proto::events::v1 as ev,
    testkit::{TestDatabase, TestKafka, eventually, produce_raw, read_records},
};
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, Statement, TransactionTrait};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};
use tokio_util::sync::CancellationToken;

struct CreateCounters;
impl MigrationName for CreateCounters {
    fn name(&self) -> &str {
        "m0001_test_counters"
    }
}
#[async_trait]
impl MigrationTrait for CreateCounters {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.get_connection()
            .execute_unprepared(
                "CREATE TABLE counters (k VARCHAR(32) PRIMARY KEY, n INTEGER NOT NULL);
                 INSERT INTO counters (k, n) VALUES ('placed', 0), ('confirmed', 0);
                 CREATE TABLE applied (seq INTEGER NOT NULL, event_id VARCHAR(64) NOT NULL);",
            )
            .await?;
        Ok(())
    }
}
struct Migrator;
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateOutboxTable), Box::new(CreateProcessedEventsTable), Box::new(CreateCounters)]
    }
}

/// Counts OrderPlaced / OrderConfirmed applications.
struct Counting;
#[async_trait]
impl EventHandler for Counting {
    /// Nothing to ask outside the database.
    type Prepared = ();

    async fn prepare(&self, _event: &InboundEvent) -> Result<(), HandleError> {
        Ok(())
    }

    async fn handle(&self, txn: &DatabaseTransaction, event: &InboundEvent, (): ()) -> Result<(), HandleError> {
        let k = match event.meta.ce_type.as_str() {
            ev::OrderPlaced::TYPE => {
                decode::<ev::OrderPlaced>(&event.payload)?;
                "placed"
            }
            ev::OrderConfirmed::TYPE => {
                decode::<ev::OrderConfirmed>(&event.payload)?;
                "confirmed"
            }
            _ => return Ok(()),
        };
        txn.execute_unprepared(&format!("UPDATE counters SET n = n + 1 WHERE k = '{k}'")).await?;
        Ok(())
    }
}

async fn counter(db: &DatabaseConnection, k: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT n FROM counters WHERE k = '{k}'"),
        ))
        .await
        .unwrap()
        .unwrap();
    i64::from(row.try_get::<i32>("", "n").unwrap())
}

async fn setup(label: &str) -> (DatabaseConnection, TestKafka) {
    let tdb = TestDatabase::create(label).await.unwrap();
    let db = db::connect(&tdb.url).await.unwrap();
    db::migrate::<Migrator>(&db).await.unwrap();
    // Migrations are idempotent: a second run (another replica) changes nothing.
    db::migrate::<Migrator>(&db).await.unwrap();
    let kafka = TestKafka::create(label).await.unwrap();
    (db, kafka)
}

fn start_consumer(
    db: &DatabaseConnection,
    kafka: &TestKafka,
    token: &CancellationToken,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    start_consumer_with(db, kafka, token, Counting)
}

fn start_consumer_with<H: EventHandler>(
    db: &DatabaseConnection,
    kafka: &TestKafka,
    token: &CancellationToken,
    handler: H,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let group = format!("{}g", kafka.args.topic_prefix);
    let c = IdempotentConsumer::new(
        db.clone(),
        kafka::consumer(&kafka.args, &group, "test").unwrap(),
        kafka::producer(&kafka.args, "test-dlq").unwrap(),
        kafka.args.clone(),
        vec![topics::ORDER_EVENTS],
        handler,
        OutboxSignal::default(),
    );
    tokio::spawn(c.run(token.clone()))
}

/// How one try of an event fails.
#[derive(Clone, Copy, Debug)]
enum Fail {
    Transient,
    Permanent,
}

/// Fails each event's first tries as scripted per `ce_id`, then applies it: appends the
/// event id to `applied` (in the event's transaction, so the table lists committed
/// applications in commit order). Counts every try per event id.
#[derive(Clone, Default)]
struct Scripted {
    script: Arc<Mutex<HashMap<String, VecDeque<Fail>>>>,
    tries: Arc<Mutex<HashMap<String, u32>>>,
}

impl Scripted {
    fn fail(&self, event_id: &str, how: &[Fail]) {
        self.script.lock().unwrap().insert(event_id.to_owned(), how.iter().copied().collect());
    }
    fn tries(&self, event_id: &str) -> u32 {
        self.tries.lock().unwrap().get(event_id).copied().unwrap_or(0)
    }
}

#[async_trait]
impl EventHandler for Scripted {
    type Prepared = ();

    async fn prepare(&self, _event: &InboundEvent) -> Result<(), HandleError> {
        Ok(())
    }

    async fn handle(&self, txn: &DatabaseTransaction, event: &InboundEvent, (): ()) -> Result<(), HandleError> {
        let id = event.meta.id.clone();
        *self.tries.lock().unwrap().entry(id.clone()).or_default() += 1;
        let next = self.script.lock().unwrap().get_mut(&id).and_then(VecDeque::pop_front);
        match next {
            Some(Fail::Transient) => Err(HandleError::Transient(anyhow::anyhow!("database unavailable (scripted)"))),
            Some(Fail::Permanent) => Err(HandleError::Permanent(anyhow::anyhow!("order {id} is poisoned (scripted)"))),
            None => {
                txn.execute_unprepared(&format!(
                    "INSERT INTO applied (seq, event_id) SELECT COUNT(*), '{id}' FROM applied"
                ))
                .await?;
                Ok(())
            }
        }
    }
}

async fn applied_ids(db: &DatabaseConnection) -> Vec<String> {
    db.query_all_raw(Statement::from_string(
        db.get_database_backend(),
        "SELECT event_id FROM applied ORDER BY seq".to_owned(),
    ))
    .await
    .unwrap()
    .iter()
    .map(|r| r.try_get::<String>("", "event_id").unwrap())
    .collect()
}

/// Publishes an OrderPlaced for `key` with event id `id`; returns its (partition, offset).
async fn publish_placed(kafka: &TestKafka, key: &str, id: &str) -> (i32, i64) {
    let payload = prost::Message::encode_to_vec(&ev::OrderPlaced { order_id: key.into(), ..Default::default() });
    produce_raw(
        &kafka.args,
        topics::ORDER_EVENTS,
        key,
        &payload,
        &[
            (headers::SPECVERSION, "1.0"),
            (headers::ID, id),
            (headers::TYPE, ev::OrderPlaced::TYPE),
            (headers::SOURCE, "test"),
        ],
    )
    .await
}

/// Records on every partition of `logical`'s dead-letter topic (its high watermarks).
fn dlq_size(kafka: &TestKafka, logical: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let topic = kafka.args.topic(&cloudmart_platform::events::dlq_topic(logical));
    let c: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", &kafka.args.brokers).create().unwrap();
    let meta = c.fetch_metadata(Some(&topic), Duration::from_secs(10)).unwrap();
    let partitions = meta.topics().first().map(|t| t.partitions().len()).unwrap_or(0);
    (0..partitions)
        .map(|p| {
            let (low, high) = c.fetch_watermarks(&topic, i32::try_from(p).unwrap(), Duration::from_secs(10)).unwrap();
            high - low
        })
        .sum()
}

#[tokio::test]
async fn outbox_publishes_cloudevents_and_the_consumer_applies_each_event_once() {
    let (db, kafka) = setup("outbox").await;

    // State change + event in one transaction; nothing is sent before the relay runs.
    let txn = db.begin().await.unwrap();
    let placed = ev::OrderPlaced { order_id: "o-1".into(), customer_id: "c".into(), ..Default::default() };
    let event_id = outbox::enqueue(&txn, "order", &placed).await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(outbox::backlog(&db).await.unwrap(), 1);
    let before_relay = chrono::Utc::now();
    let oldest = outbox::oldest_unpublished(&db).await.unwrap().expect("one row waits");
    assert!(oldest <= before_relay && before_relay - oldest < chrono::Duration::seconds(60), "oldest {oldest}");

    let relay = OutboxRelay::new(
        db.clone(),
        kafka::producer(&kafka.args, "relay").unwrap(),
        kafka.args.clone(),
        OutboxSignal::default(),
    );
    assert_eq!(relay.drain().await.unwrap(), 1);
    assert_eq!(outbox::backlog(&db).await.unwrap(), 0);
    assert_eq!(outbox::oldest_unpublished(&db).await.unwrap(), None, "nothing waits once published");
    assert_eq!(relay.drain().await.unwrap(), 0, "published rows are not sent again");

    let records = read_records(&kafka.args, topics::ORDER_EVENTS, 1, Duration::from_secs(30)).await;
    let r = &records[0];
    assert_eq!(r.key.as_deref(), Some("o-1"));
    assert_eq!(r.headers[headers::SPECVERSION], "1.0");
    assert_eq!(r.headers[headers::ID], event_id);
    assert_eq!(r.headers[headers::TYPE], "cloudmart.order.v1.OrderPlaced");
    assert_eq!(r.headers[headers::SOURCE], "order");
    assert_eq!(r.headers[headers::CONTENT_TYPE], "application/protobuf");
    assert!(r.headers[headers::TIME].ends_with('Z'));
    assert_eq!(decode::<ev::OrderPlaced>(&r.payload).unwrap(), placed);

    let token = CancellationToken::new();
    let consumer = start_consumer(&db, &kafka, &token);
    eventually("OrderPlaced applied", Duration::from_secs(60), || async {
        (counter(&db, "placed").await == 1).then_some(())
    })
    .await;

    // Redeliver the same record, then a new event with the same key (same partition, so
    // it is processed after the duplicate).
    let hdrs: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    produce_raw(&kafka.args, topics::ORDER_EVENTS, "o-1", &r.payload, &hdrs).await;
    let confirmed = ev::OrderConfirmed { order_id: "o-1".into(), ..Default::default() };
    let txn = db.begin().await.unwrap();
    outbox::enqueue(&txn, "order", &confirmed).await.unwrap();
    txn.commit().await.unwrap();
    relay.drain().await.unwrap();
    eventually("OrderConfirmed applied", Duration::from_secs(60), || async {
        (counter(&db, "confirmed").await == 1).then_some(())
    })
    .await;
    assert_eq!(counter(&db, "placed").await, 1, "the duplicate changed nothing");

    token.cancel();
    consumer.await.unwrap().unwrap();
}

#[tokio::test]
async fn malformed_records_go_to_the_dlq_and_the_consumer_keeps_going() {
    let (db, kafka) = setup("dlq").await;
    let token = CancellationToken::new();
    let consumer = start_consumer(&db, &kafka, &token);

    // No CloudEvents headers at all.
    produce_raw(&kafka.args, topics::ORDER_EVENTS, "k", b"not protobuf", &[]).await;
    // Headers fine, payload undecodable.
    produce_raw(
        &kafka.args,
        topics::ORDER_EVENTS,
        "k",
        &[0xff, 0xff, 0xff],
        &[
            (headers::SPECVERSION, "1.0"),
            (headers::ID, "bad-1"),
            (headers::TYPE, ev::OrderPlaced::TYPE),
            (headers::SOURCE, "test"),
        ],
    )
    .await;
    // Then a valid event on the same key.
    let meta = EventMeta {
        id: "good-1".into(),
        ce_type: ev::OrderPlaced::TYPE.into(),
        source: "test".into(),
        time: String::new(),
        traceparent: None,
        tracestate: None,
    };
    let payload = prost::Message::encode_to_vec(&ev::OrderPlaced { order_id: "k".into(), ..Default::default() });
    produce_raw(
        &kafka.args,
        topics::ORDER_EVENTS,
        "k",
        &payload,
        &[
            (headers::SPECVERSION, "1.0"),
            (headers::ID, &meta.id),
            (headers::TYPE, &meta.ce_type),
            (headers::SOURCE, "test"),
        ],
    )
    .await;
    eventually("valid event applied after the bad ones", Duration::from_secs(60), || async {
        (counter(&db, "placed").await == 1).then_some(())
    })
    .await;

    let dlq = read_records(
        &kafka.args,
        &cloudmart_platform::events::dlq_topic(topics::ORDER_EVENTS),
        2,
        Duration::from_secs(30),
    )
    .await;
    let errors: Vec<&str> = dlq.iter().map(|r| r.headers[headers::DLQ_ERROR].as_str()).collect();
    assert!(errors.iter().any(|e| e.contains("missing header ce_specversion")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("payload does not decode")), "{errors:?}");
    assert!(dlq.iter().any(|r| r.payload == b"not protobuf"), "the original payload is kept");
    assert!(dlq.iter().all(|r| r.headers.contains_key(headers::DLQ_ORIGIN)));
    assert!(dlq.iter().all(|r| r.headers[headers::DLQ_ATTEMPTS] == "1"), "undecodable records are tried once");

    token.cancel();
    consumer.await.unwrap().unwrap();
}

#[tokio::test]
async fn apply_records_the_event_id_in_the_same_transaction() {
    let tdb = TestDatabase::create("apply").await.unwrap();
    let db = db::connect(&tdb.url).await.unwrap();
    db::migrate::<Migrator>(&db).await.unwrap();
    let event = InboundEvent {
        meta: EventMeta {
            id: "e-1".into(),
            ce_type: ev::OrderPlaced::TYPE.into(),
            source: "t".into(),
            time: String::new(),
            traceparent: None,
            tracestate: None,
        },
        topic: topics::ORDER_EVENTS.into(),
        key: None,
        payload: prost::Message::encode_to_vec(&ev::OrderPlaced::default()),
        partition: 0,
        offset: 0,
    };
    assert_eq!(consumer::apply(&db, &Counting, &event).await.unwrap(), Applied::Applied);
    assert_eq!(consumer::apply(&db, &Counting, &event).await.unwrap(), Applied::Duplicate);
    assert_eq!(counter(&db, "placed").await, 1);

    // A failing handler rolls back the event id too: the event can be retried.
    let bad = InboundEvent {
        meta: EventMeta { id: "e-2".into(), ..event.meta.clone() },
        payload: vec![0xff],
        ..event.clone()
    };
    assert!(matches!(consumer::apply(&db, &Counting, &bad).await, Err(HandleError::Permanent(_))));
    let fixed = InboundEvent { meta: EventMeta { id: "e-2".into(), ..event.meta.clone() }, ..event.clone() };
    assert_eq!(consumer::apply(&db, &Counting, &fixed).await.unwrap(), Applied::Applied);
    assert_eq!(counter(&db, "placed").await, 2);
}

/// A transient failure is retried in place: the event is applied once, after its retries,
/// and the events behind it on the same partition wait for it (no skip, no reordering);
/// nothing reaches the DLQ.
#[tokio::test]
async fn a_transient_failure_is_retried_in_place_and_applied_once_in_order() {
    let (db, kafka) = setup("transient").await;
    let handler = Scripted::default();
    handler.fail("t-1", &[Fail::Transient, Fail::Transient, Fail::Transient]);
    let token = CancellationToken::new();
    let consumer = start_consumer_with(&db, &kafka, &token, handler.clone());

    // One key, so one partition: t-2 and t-3 are queued behind the failing t-1.
    for id in ["t-1", "t-2", "t-3"] {
        publish_placed(&kafka, "order-t", id).await;
    }
    eventually("all three events applied", Duration::from_secs(60), || async {
        (applied_ids(&db).await.len() >= 3).then_some(())
    })
    .await;
    assert_eq!(applied_ids(&db).await, ["t-1", "t-2", "t-3"], "applied once each, in partition order");
    assert_eq!(handler.tries("t-1"), 4, "three transient failures, then success");
    assert_eq!(handler.tries("t-2"), 1);
    // A dead-letter record would have been acknowledged before t-2 was consumed.
    assert_eq!(dlq_size(&kafka, topics::ORDER_EVENTS), 0, "a transient failure never goes to the DLQ");

    token.cancel();
    consumer.await.unwrap().unwrap();
}

/// A permanent failure (here after two transient ones) goes to `<topic>.dlq` with the
/// original key, payload and CloudEvents headers plus every `dlq_*` header, attempts
/// counting all three tries; the next event on the partition is applied.
#[tokio::test]
async fn a_permanent_failure_is_dead_lettered_with_its_origin_and_attempts() {
    let (db, kafka) = setup("permanent").await;
    let handler = Scripted::default();
    handler.fail("p-1", &[Fail::Transient, Fail::Transient, Fail::Permanent]);
    let token = CancellationToken::new();
    let consumer = start_consumer_with(&db, &kafka, &token, handler.clone());

    let (partition, offset) = publish_placed(&kafka, "order-p", "p-1").await;
    publish_placed(&kafka, "order-p", "p-2").await;
    eventually("the event behind the poisoned one applied", Duration::from_secs(60), || async {
        (!applied_ids(&db).await.is_empty()).then_some(())
    })
    .await;
    assert_eq!(applied_ids(&db).await, ["p-2"], "the poisoned event changed nothing");

    let dlq = read_records(
        &kafka.args,
        &cloudmart_platform::events::dlq_topic(topics::ORDER_EVENTS),
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(dlq.len(), 1);
    let r = &dlq[0];
    let h = &r.headers;
    assert_eq!(r.key.as_deref(), Some("order-p"));
    assert_eq!(decode::<ev::OrderPlaced>(&r.payload).unwrap().order_id, "order-p", "the payload is kept");
    assert_eq!(h[headers::ID], "p-1");
    assert_eq!(h[headers::TYPE], ev::OrderPlaced::TYPE);
    assert_eq!(h[headers::SPECVERSION], "1.0");
    let topic = kafka.args.topic(topics::ORDER_EVENTS);
    assert!(h[headers::DLQ_ERROR].contains("order p-1 is poisoned"), "{h:?}");
    assert_eq!(h[headers::DLQ_ORIGIN], format!("{topic}/{partition}/{offset}"));
    assert_eq!(h[headers::DLQ_TOPIC], topic);
    assert_eq!(h[headers::DLQ_PARTITION], partition.to_string());
    assert_eq!(h[headers::DLQ_OFFSET], offset.to_string());
    assert_eq!(h[headers::DLQ_ATTEMPTS], "3", "two transient tries and the permanent one");
    assert_eq!(handler.tries("p-1"), 3);
    let failed_at =
        chrono::DateTime::parse_from_rfc3339(&h[headers::DLQ_FAILED_AT]).expect("dlq_failed_at is RFC 3339");
    assert!(failed_at <= chrono::Utc::now() && failed_at > chrono::Utc::now() - chrono::Duration::minutes(10));
    assert!(!h.contains_key(headers::REPLAYED_FROM));

    token.cancel();
    consumer.await.unwrap().unwrap();
}

/// Two events that need each other: `held` waits in `prepare` until `free` has been
/// handled, and `free` waits in `prepare` until `held` is waiting. Applied one record at a
/// time (whichever comes first), neither can finish; applied side by side, both do.
/// Records whether `held` was still waiting when `free` was handled.
#[derive(Clone, Default)]
struct Gated {
    held_started: Arc<tokio::sync::Notify>,
    free_handled: Arc<tokio::sync::Notify>,
    held_waiting: Arc<std::sync::atomic::AtomicBool>,
    free_saw_held_waiting: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait]
impl EventHandler for Gated {
    type Prepared = ();

    async fn prepare(&self, event: &InboundEvent) -> Result<(), HandleError> {
        use std::sync::atomic::Ordering::SeqCst;
        if event.meta.id == "free" {
            tokio::time::timeout(Duration::from_secs(60), self.held_started.notified())
                .await
                .map_err(|_| HandleError::Transient(anyhow::anyhow!("`held` never started")))?;
        }
        if event.meta.id == "held" {
            self.held_waiting.store(true, SeqCst);
            self.held_started.notify_one();
            let released = tokio::time::timeout(Duration::from_secs(60), self.free_handled.notified()).await;
            self.held_waiting.store(false, SeqCst);
            released.map_err(|_| HandleError::Transient(anyhow::anyhow!("`free` was never handled")))?;
        }
        Ok(())
    }

    async fn handle(&self, txn: &DatabaseTransaction, event: &InboundEvent, (): ()) -> Result<(), HandleError> {
        use std::sync::atomic::Ordering::SeqCst;
        let id = &event.meta.id;
        if id == "free" {
            self.free_saw_held_waiting.store(self.held_waiting.load(SeqCst), SeqCst);
            self.free_handled.notify_one();
        }
        txn.execute_unprepared(&format!("INSERT INTO applied (seq, event_id) SELECT COUNT(*), '{id}' FROM applied"))
            .await?;
        Ok(())
    }
}

/// Partitions are applied side by side: an event that waits (a slow peer in `prepare`, a
/// long transaction) holds up its own partition only. Here two events on different
/// partitions each wait for the other ([`Gated`]), so a consumer applying one record at a
/// time across all partitions applies neither within the deadline.
#[tokio::test]
async fn a_waiting_event_holds_up_only_its_own_partition() {
    let (db, kafka) = setup("lanes").await;
    let handler = Gated::default();
    let token = CancellationToken::new();
    let consumer = start_consumer_with(&db, &kafka, &token, handler.clone());

    let (held_partition, _) = publish_placed(&kafka, "order-held", "held").await;
    let mut other = None;
    for i in 0..64 {
        // A key on another partition; records keyed `probe-*` are ordinary events.
        let key = format!("order-free-{i}");
        let (partition, _) = publish_placed(&kafka, &key, &format!("probe-{i}")).await;
        if partition != held_partition {
            other = Some(key);
            break;
        }
    }
    let other = other.expect("the topic has more than one partition");
    publish_placed(&kafka, &other, "free").await;

    eventually("both events applied", Duration::from_secs(30), || async {
        let ids = applied_ids(&db).await;
        (ids.iter().any(|i| i == "held") && ids.iter().any(|i| i == "free")).then_some(())
    })
    .await;
    assert!(
        handler.free_saw_held_waiting.load(std::sync::atomic::Ordering::SeqCst),
        "`free` was applied while `held` was still waiting on its own partition"
    );
    let ids = applied_ids(&db).await;
    assert_eq!(ids.iter().filter(|i| *i == "held").count(), 1, "applied once: {ids:?}");

    token.cancel();
    consumer.await.unwrap().unwrap();
}

#[tokio::test]
async fn published_rows_past_their_retention_are_purged_and_pending_rows_never() {
    use outbox::entity::{Column, Entity};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr};

    let tdb = TestDatabase::create("outbox_purge").await.unwrap();
    let db = db::connect(&tdb.url).await.unwrap();
    db::migrate::<Migrator>(&db).await.unwrap();
    let txn = db.begin().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..8 {
        let placed = ev::OrderPlaced { order_id: format!("o-{i}"), customer_id: "c".into(), ..Default::default() };
        ids.push(outbox::enqueue(&txn, "order", &placed).await.unwrap());
    }
    txn.commit().await.unwrap();
    let now = chrono::Utc::now();
    let (two_days_ago, an_hour_ago) = (now - chrono::Duration::days(2), now - chrono::Duration::hours(1));
    // Rows 0-2 published two days ago, 3-4 an hour ago; 5-7 never published, and 5-6
    // created two days ago (a relay that was off, say): they must survive any purge.
    let set = |column: Column, at: chrono::DateTime<chrono::Utc>, which: &[String]| {
        Entity::update_many().col_expr(column, Expr::value(at)).filter(Column::EventId.is_in(which.to_vec()))
    };
    set(Column::PublishedAt, two_days_ago, &ids[0..3]).exec(&db).await.unwrap();
    set(Column::PublishedAt, an_hour_ago, &ids[3..5]).exec(&db).await.unwrap();
    set(Column::CreatedAt, two_days_ago, &ids[0..3]).exec(&db).await.unwrap();
    set(Column::CreatedAt, two_days_ago, &ids[5..7]).exec(&db).await.unwrap();

    let left = || async {
        Entity::find()
            .select_only()
            .column(Column::EventId)
            .order_by_asc(Column::Id)
            .into_tuple::<String>()
            .all(&db)
            .await
            .unwrap()
    };
    let day = now - chrono::Duration::hours(24);
    assert_eq!(outbox::purge_published(&db, day).await.unwrap(), 3, "the three published two days ago");
    assert_eq!(left().await, ids[3..].to_vec());
    assert_eq!(outbox::purge_published(&db, day).await.unwrap(), 0, "a second purge finds nothing");
    // A cutoff of now takes the recently published rows too, and still no pending one.
    assert_eq!(outbox::purge_published(&db, chrono::Utc::now()).await.unwrap(), 2);
    assert_eq!(left().await, ids[5..].to_vec());
    assert_eq!(outbox::backlog(&db).await.unwrap(), 3);
}
