//! P4 — outbox relay: events/s draining a pre-filled outbox to the broker (acks=all).
//!
//! A fresh database migrated with the order service's migrator gets N unpublished
//! `OrderPlaced` rows in one `INSERT … SELECT generate_series` (a real encoded payload of
//! the size `PlaceOrder` writes, a distinct `ce_id` and key per row, a W3C `traceparent`),
//! then the platform's [`OutboxRelay`] — the service's own producer settings:
//! idempotent, acks=all, linger 0 ms — drains it: batches of 1024 locked with
//! `FOR UPDATE SKIP LOCKED` past the last batch's id, sent, acknowledged by the broker,
//! marked published, committed; the next batch is locked and sent while the broker still
//! acknowledges the previous one.
//! The figure is N / the time `drain()` takes; every row must be published at the end.
//!
//! The reference: the same N messages (same key, payload and header sizes) sent by the same
//! producer straight from memory, up to 10,000 in flight, until the broker acknowledged
//! the last — what the broker and librdkafka allow on this machine without the database.
//!
//! Goal: ≥ 15,000 events/s.

use std::time::{Duration, Instant};

use anyhow::Context;
use cloudmart_platform::{
    events::EventMeta,
    outbox::{OutboxRelay, OutboxSignal},
};
use futures::{StreamExt, stream};
use rdkafka::producer::FutureRecord;
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use super::{
    Ctx, TempDb, Topics,
    report::{Figure, Goal},
};

const NAME: &str = "outbox relay: events/s draining a pre-filled outbox (acks=all)";
const UNIT: &str = "events/s";

pub(crate) async fn run(ctx: &Ctx) -> Vec<Figure> {
    let n = ctx.sizes.outbox_rows;
    eprintln!("bench: P4 outbox relay: filling {n} rows, then draining …");
    let relay = relay(ctx, n).await;
    match &relay {
        Ok(r) => eprintln!("bench: P4: relay {r:.0} events/s"),
        Err(e) => eprintln!("bench: P4: relay FAILED: {e:#}"),
    }
    eprintln!("bench: P4 reference: the same {n} messages from memory …");
    let raw = raw_producer(ctx, n).await;
    match &raw {
        Ok(r) => eprintln!("bench: P4 reference: producer {r:.0} messages/s"),
        Err(e) => eprintln!("bench: P4 reference FAILED: {e:#}"),
    }
    let embedded = if ctx.opts.kafka_brokers.is_none() {
        " Broker: librdkafka's mock cluster, not Apache Kafka: not representative."
    } else {
        ""
    };
    let reference = "same messages, same producer, from memory";
    let raw_value = raw.as_ref().ok().copied();
    let raw_note = match &raw {
        Ok(_) => String::new(),
        Err(e) => format!(" Reference not measured: {e:#}."),
    };
    let note = format!(
        "{n} rows of {} payload bytes pre-filled with INSERT … SELECT generate_series, drained by the platform's \
         OutboxRelay (batches of 1024, FOR UPDATE SKIP LOCKED past the previous batch, the next batch sent while the previous one is acknowledged; idempotent producer with acks=all, linger 0 ms) to 3 \
         partitions.{raw_note}{embedded}",
        payload().len()
    );
    let figure = match relay {
        Ok(v) => Figure::new("P4", NAME, v, UNIT).with_goal(Goal::AtLeast(15_000.0)),
        Err(e) => Figure::not_measured("P4", NAME, UNIT, Goal::AtLeast(15_000.0), format!("relay run failed: {e:#}")),
    };
    vec![figure.with_reference(reference, raw_value).with_note(note)]
}

/// The `OrderPlaced` payload `PlaceOrder` writes (P2's, so both measure the same rows).
fn payload() -> Vec<u8> {
    super::p2_intake::placed_payload()
}

async fn relay(ctx: &Ctx, n: usize) -> anyhow::Result<f64> {
    let db = TempDb::create(&ctx.opts.database_url, "p4").await?;
    let topics = Topics::new(ctx, "p4")?;
    let result = async {
        let conn = cloudmart_platform::db::connect(&db.url).await?;
        cloudmart_platform::db::migrate::<cloudmart_order::store::Migrator>(&conn).await?;
        let hex: String = payload().iter().map(|b| format!("{b:02x}")).collect();
        let fill = Instant::now();
        conn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO outbox (event_id, topic, event_key, event_type, source, payload, traceparent, tracestate, \
             created_at, published_at) \
             SELECT gen_random_uuid()::text, 'order-events', gen_random_uuid()::text, 'cloudmart.order.v1.OrderPlaced', \
             'order', decode($1, 'hex'), '00-' || md5(g::text) || '-' || substr(md5((g + 1)::text), 1, 16) || '-01', \
             NULL, now(), NULL FROM generate_series(1, $2) AS g",
            [hex.into(), (n as i64).into()],
        ))
        .await
        .context("pre-filling the outbox")?;
        conn.execute_unprepared("VACUUM ANALYZE outbox").await?;
        eprintln!("bench: P4: {n} rows written in {:.1} s", fill.elapsed().as_secs_f64());
        let kafka = topics.args();
        cloudmart_platform::kafka::ensure_topics(&kafka, &["order-events"]).await?;
        let producer = cloudmart_platform::kafka::producer(&kafka, "cloudmart-bench-relay")?;
        let relay = OutboxRelay::new(conn.clone(), producer, kafka, OutboxSignal::default());
        let started = Instant::now();
        let sent = relay.drain().await?;
        let seconds = started.elapsed().as_secs_f64();
        let left = cloudmart_platform::outbox::backlog(&conn).await?;
        anyhow::ensure!(sent == n && left == 0, "drained {sent} of {n} rows, {left} left unpublished");
        conn.close().await.ok();
        Ok(n as f64 / seconds)
    }
    .await;
    topics.delete(&["order-events"]).await;
    db.drop().await;
    result
}

async fn raw_producer(ctx: &Ctx, n: usize) -> anyhow::Result<f64> {
    let topics = Topics::new(ctx, "p4raw")?;
    let result = async {
        let kafka = topics.args();
        cloudmart_platform::kafka::ensure_topics(&kafka, &["order-events"]).await?;
        let producer = cloudmart_platform::kafka::producer(&kafka, "cloudmart-bench-raw")?;
        let topic = kafka.topic("order-events");
        let payload = payload();
        let records: Vec<(String, EventMeta)> = (0..n)
            .map(|g| {
                let meta = EventMeta {
                    id: uuid::Uuid::new_v4().to_string(),
                    ce_type: "cloudmart.order.v1.OrderPlaced".into(),
                    source: "order".into(),
                    time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    traceparent: Some(format!("00-{:032x}-{:016x}-01", g as u128 + 1, g as u64 + 1)),
                    tracestate: None,
                };
                (uuid::Uuid::new_v4().to_string(), meta)
            })
            .collect();
        let started = Instant::now();
        let sent = stream::iter(records.iter())
            .map(|(key, meta)| {
                producer.send(
                    FutureRecord::to(&topic).key(key.as_bytes()).payload(payload.as_slice()).headers(meta.to_headers()),
                    Duration::from_secs(30),
                )
            })
            .buffer_unordered(10_000)
            .filter(|r| futures::future::ready(r.is_ok()))
            .count()
            .await;
        let seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(sent == n, "{} of {n} messages were not acknowledged", n - sent);
        Ok(n as f64 / seconds)
    }
    .await;
    topics.delete(&["order-events"]).await;
    result
}
