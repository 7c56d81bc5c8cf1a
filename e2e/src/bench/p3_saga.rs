//! P3 — saga latency: `PlaceOrder` accepted → `CONFIRMED`.
//!
//! On P2's stack ([`super::p2_intake::Stack`]), after its backlog settled: orders arrive at
//! half the maximum order rate (open loop: one every `1 / rate`, whether or not earlier
//! ones finished). Nothing polls: once the last order is placed, the bench waits until
//! none of them is PENDING and reads each order's own timestamps — `created_at` (the
//! PlaceOrder transaction) and `updated_at` of the CONFIRMED row (the order consumer's
//! transaction) — so the figure is the saga itself, from the first commit to the last.
//! (An earlier version followed orders with `GetOrder` every 2 ms; once the sagas lagged,
//! the followers multiplied and their polls took the order service's database pool from
//! the very consumer they waited for.)
//!
//! Where the time goes, from the timestamps the services write (one clock: same machine):
//! `orders.created_at` → `deliveries.created_at` is hop 1 (order's outbox relay, Kafka,
//! delivery's consumer and its transaction); → `orders.updated_at` of the CONFIRMED order is
//! hop 2 (delivery's relay, Kafka, order's consumer).
//! Each relay's own share is `outbox.published_at − outbox.created_at` (marked after the
//! broker acknowledged the whole batch).
//!
//! The reference: Kafka hops on the same broker — the platform's producer (acks=all) to a
//! consumer with the platform's settings, 300 messages of 200 bytes, one every 10 ms, each
//! timed from send to receipt; a saga has two hops, so the reference is twice the hop.
//!
//! Goals: p50 ≤ 15 ms, p99 ≤ 60 ms.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use rdkafka::{Message, consumer::Consumer, producer::FutureRecord};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tokio::task::JoinSet;

use super::{
    Ctx, Topics,
    p2_intake::{Stack, order_request},
    quantile,
    report::{Figure, Goal},
};

const UNIT: &str = "ms";

pub(crate) fn not_measured(reason: &str) -> Vec<Figure> {
    vec![
        Figure::not_measured("P3", "saga latency p50 (accepted → CONFIRMED)", UNIT, Goal::AtMost(15.0), reason),
        Figure::not_measured("P3", "saga latency p90", UNIT, Goal::None, reason),
        Figure::not_measured("P3", "saga latency p99", UNIT, Goal::AtMost(60.0), reason),
    ]
}

/// One order's way through the saga, from the order's own timestamps.
struct Observed {
    order_id: String,
    /// The PlaceOrder transaction (`orders.created_at`).
    accepted_at: DateTime<Utc>,
    /// Until the CONFIRMED transaction (`orders.updated_at`).
    latency: Duration,
}

/// Runs at `rate`: half of the maximum order rate — what P2's run sustained end to end,
/// its orders placed and finished over the intake's time plus the time its backlog took
/// (P2's intake alone, `intake`, outruns the sagas: at half of it a backlog grows and the
/// latency measures its queue, not a saga).
pub(crate) async fn run(ctx: &Ctx, stack: &Stack, rate: f64, intake: f64) -> Vec<Figure> {
    let secs = ctx.sizes.saga.as_secs_f64();
    eprintln!("bench: P3 saga latency: {rate:.0} orders/s for {secs:.0} s …");
    let measured = measure(stack, rate, ctx.sizes.saga).await;
    let hop = kafka_hop(ctx).await;
    match &hop {
        Ok(h) => eprintln!("bench: P3 reference: one Kafka hop p50 {:.2} ms, p99 {:.2} ms", h.0, h.1),
        Err(e) => eprintln!("bench: P3 reference: Kafka hop not measured: {e:#}"),
    }
    let (orders, cancelled, failed) = match measured {
        Ok(m) => m,
        Err(e) => return not_measured(&format!("saga run failed: {e:#}")),
    };
    if orders.is_empty() {
        return not_measured(&format!("no order was CONFIRMED ({cancelled} cancelled, {failed} failed)."));
    }
    let mut ms: Vec<f64> = orders.iter().map(|o| o.latency.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let (p50, p90, p99) = (quantile(&ms, 0.5), quantile(&ms, 0.9), quantile(&ms, 0.99));
    eprintln!("bench: P3: p50 {p50:.1} ms, p90 {p90:.1} ms, p99 {p99:.1} ms over {} orders", orders.len());
    let hops = match hops(stack, &orders).await {
        Ok(h) => h,
        Err(e) => format!("per-hop timestamps not read: {e:#}"),
    };
    eprintln!("bench: P3: {hops}");
    let note = format!(
        "{} orders CONFIRMED of orders placed at {rate:.0}/s (half of the maximum order rate) for {secs:.0} s, open loop, timed \
         from the order's PlaceOrder transaction to its CONFIRMED transaction (the services' timestamps, nothing polls; \
         {cancelled} cancelled, {failed} failed); PostgreSQL and Kafka on loopback, order and delivery in-process. Where the time \
         goes (medians): {hops}.{}",
        orders.len(),
        if 2.0 * rate < intake * 0.99 {
            format!(
                " The rate is half of what P2's run sustained end to end (orders placed and finished over \
                 the intake's time plus the backlog's), {:.0} orders/s, not of P2's intake, {intake:.0}/s: \
                 above it a backlog grows and the latency measures the queue.",
                2.0 * rate
            )
        } else {
            String::new()
        }
    );
    let (ref50, ref99) = match &hop {
        Ok((a, b)) => (Some(2.0 * a), Some(2.0 * b)),
        Err(_) => (None, None),
    };
    let reference = "two Kafka hops (produce acks=all → consume)";
    vec![
        Figure::new("P3", "saga latency p50 (accepted → CONFIRMED)", p50, UNIT)
            .with_goal(Goal::AtMost(15.0))
            .with_reference(format!("{reference}, p50"), ref50)
            .with_note(note),
        Figure::new("P3", "saga latency p90", p90, UNIT),
        Figure::new("P3", "saga latency p99", p99, UNIT)
            .with_goal(Goal::AtMost(60.0))
            .with_reference(format!("{reference}, p99"), ref99),
    ]
}

/// Orders at `rate` for `length`, then (once none is PENDING, at most 60 s later) their
/// timestamps; returns the confirmed ones, and counts of cancelled and failed ones
/// (refused, or still PENDING after the wait).
async fn measure(stack: &Stack, rate: f64, length: Duration) -> anyhow::Result<(Vec<Observed>, usize, usize)> {
    anyhow::ensure!(rate > 0.0, "no order rate to run at");
    let since = Utc::now() - chrono::Duration::seconds(1);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let mut i = 0u64;
    while started.elapsed() < length {
        tick.tick().await;
        i += 1;
        let mut client = stack.client.clone();
        tasks.spawn(async move {
            let placed = client.place_order(order_request(1_000_000, i)).await?.into_inner();
            anyhow::Ok(placed.order.context("PlaceOrder returned no order")?.order_id)
        });
    }
    let (mut placed, mut failed) = (std::collections::HashSet::new(), 0);
    let mut last_error = None;
    while let Some(r) = tasks.join_next().await {
        match r? {
            Ok(id) => {
                placed.insert(id);
            }
            Err(e) => {
                failed += 1;
                last_error = Some(e);
            }
        }
    }
    if let Some(e) = last_error {
        eprintln!("bench: P3: {failed} PlaceOrder calls failed, last: {e:#}");
    }
    // Until every saga ended (or 60 s): one query of the order table every 250 ms.
    let deadline = Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let rows = times(
            &stack.order.db,
            "SELECT order_id AS k, created_at AS a, \
             CASE WHEN status = 'PENDING' THEN NULL ELSE updated_at END AS b \
             FROM orders WHERE created_at >= $1",
            since,
        )
        .await?;
        let pending = rows.iter().filter(|(k, (_, b))| b.is_none() && placed.contains(*k)).count();
        if pending == 0 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let confirmed_ids: std::collections::HashSet<String> = confirmed(&stack.order.db, since).await?;
    let (mut orders, mut cancelled) = (Vec::new(), 0);
    for (order_id, (created, ended)) in rows.into_iter().filter(|(k, _)| placed.contains(k)) {
        match ended {
            None => failed += 1,
            Some(_) if !confirmed_ids.contains(&order_id) => cancelled += 1,
            Some(ended) => {
                orders.push(Observed { order_id, accepted_at: created, latency: (ended - created).to_std()? })
            }
        }
    }
    Ok((orders, cancelled, failed))
}

/// Ids of the orders CONFIRMED since `since`.
async fn confirmed(db: &DatabaseConnection, since: DateTime<Utc>) -> anyhow::Result<std::collections::HashSet<String>> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT order_id AS k FROM orders WHERE status = 'CONFIRMED' AND created_at >= $1",
            [since.into()],
        ))
        .await?;
    rows.iter().map(|r| Ok(r.try_get::<String>("", "k")?)).collect()
}

/// `k` → (`a`, `b`) of the rows `sql` selects since `$1`.
async fn times(
    db: &DatabaseConnection,
    sql: &str,
    since: DateTime<Utc>,
) -> anyhow::Result<HashMap<String, (DateTime<Utc>, Option<DateTime<Utc>>)>> {
    let rows = db.query_all_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, [since.into()])).await?;
    rows.iter().map(|r| Ok((r.try_get::<String>("", "k")?, (r.try_get("", "a")?, r.try_get("", "b")?)))).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    quantile(&v, 0.5)
}

/// Median time per hop of `orders`, in words.
async fn hops(stack: &Stack, orders: &[Observed]) -> anyhow::Result<String> {
    let since = orders.iter().map(|o| o.accepted_at).min().context("no orders")? - chrono::Duration::seconds(5);
    let order_rows = times(
        &stack.order.db,
        "SELECT order_id AS k, created_at AS a, updated_at AS b FROM orders WHERE created_at >= $1",
        since,
    )
    .await?;
    let order_outbox = times(
        &stack.order.db,
        "SELECT event_key AS k, created_at AS a, published_at AS b FROM outbox \
         WHERE event_type = 'cloudmart.order.v1.OrderPlaced' AND created_at >= $1",
        since,
    )
    .await?;
    let deliveries = times(
        &stack.delivery.db,
        "SELECT order_id AS k, created_at AS a, NULL::timestamptz AS b FROM deliveries WHERE created_at >= $1",
        since,
    )
    .await?;
    let delivery_outbox = times(
        &stack.delivery.db,
        "SELECT event_key AS k, created_at AS a, published_at AS b FROM outbox \
         WHERE event_type = 'cloudmart.delivery.v1.DeliveryScheduled' AND created_at >= $1",
        since,
    )
    .await?;
    let ms = |d: chrono::Duration| d.num_microseconds().unwrap_or(0) as f64 / 1000.0;
    let (mut hop1, mut hop2, mut relay1, mut relay2) = (vec![], vec![], vec![], vec![]);
    for o in orders {
        let (Some((created, confirmed)), Some((delivered, _))) =
            (order_rows.get(&o.order_id), deliveries.get(&o.order_id))
        else {
            continue;
        };
        hop1.push(ms(*delivered - *created));
        if let Some(confirmed) = confirmed {
            hop2.push(ms(*confirmed - *delivered));
        }
        if let Some((a, Some(b))) = order_outbox.get(&o.order_id) {
            relay1.push(ms(*b - *a));
        }
        if let Some((a, Some(b))) = delivery_outbox.get(&o.order_id) {
            relay2.push(ms(*b - *a));
        }
    }
    anyhow::ensure!(!hop1.is_empty(), "no order found in both databases");
    Ok(format!(
        "hop 1 order → delivery scheduled {:.1} ms (of which order's relay until acks {:.1} ms), hop 2 → order \
         CONFIRMED {:.1} ms (delivery's relay until acks {:.1} ms) ({} orders)",
        median(hop1.clone()),
        median(relay1),
        median(hop2),
        median(relay2),
        hop1.len()
    ))
}

/// One Kafka hop on the run's broker: (p50, p99) in ms of produce (the platform's
/// producer, acks=all) → receive (a consumer with the platform's settings).
async fn kafka_hop(ctx: &Ctx) -> anyhow::Result<(f64, f64)> {
    let topics = Topics::new(ctx, "p3")?;
    let result = async {
        let kafka = topics.args();
        let topic = kafka.topic("order-events");
        cloudmart_platform::kafka::ensure_topics(&kafka, &["order-events"]).await?;
        let producer = cloudmart_platform::kafka::producer(&kafka, "cloudmart-bench-hop")?;
        let consumer = cloudmart_platform::kafka::consumer(
            &kafka,
            &format!("{}bench-hop", kafka.topic_prefix),
            "cloudmart-bench-hop",
        )?;
        consumer.subscribe(&[&topic])?;
        // Until the consumer has its partitions, messages are not timed.
        let deadline = Instant::now() + Duration::from_secs(30);
        let sent_at = std::sync::Arc::new(std::sync::Mutex::new(HashMap::<String, Instant>::new()));
        let receiver = {
            let sent_at = sent_at.clone();
            async move {
                let mut lat = Vec::new();
                loop {
                    let m = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await;
                    let Ok(Ok(m)) = m else { return lat };
                    let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                    if key == "stop" {
                        return lat;
                    }
                    // Probes (sent until the consumer has its partitions) are not timed.
                    if let Some(t) = sent_at.lock().expect("not poisoned").remove(&key)
                        && key.starts_with("m-")
                    {
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                }
            }
        };
        let receiver = tokio::spawn(receiver);
        // Wait for the assignment: send probes until one arrives.
        loop {
            anyhow::ensure!(Instant::now() < deadline, "the hop consumer got no partitions within 30 s");
            let key = format!("probe-{}", super::short_id());
            sent_at.lock().expect("not poisoned").insert(key.clone(), Instant::now());
            producer
                .send(FutureRecord::to(&topic).key(key.as_str()).payload(&[0u8; 200][..]), Duration::from_secs(5))
                .await
                .map_err(|(e, _)| e)?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            if !sent_at.lock().expect("not poisoned").contains_key(&key) {
                break;
            }
        }
        let payload = vec![7u8; 200];
        for i in 0..300 {
            let key = format!("m-{i}");
            sent_at.lock().expect("not poisoned").insert(key.clone(), Instant::now());
            producer
                .send(FutureRecord::to(&topic).key(key.as_str()).payload(&payload), Duration::from_secs(5))
                .await
                .map_err(|(e, _)| e)?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        producer
            .send(FutureRecord::to(&topic).key("stop").payload(&payload), Duration::from_secs(5))
            .await
            .map_err(|(e, _)| e)?;
        let mut lat = receiver.await?;
        anyhow::ensure!(lat.len() >= 100, "only {} of 300 messages came back", lat.len());
        lat.sort_by(f64::total_cmp);
        Ok((quantile(&lat, 0.5), quantile(&lat, 0.99)))
    }
    .await;
    topics.delete(&["order-events"]).await;
    result
}
