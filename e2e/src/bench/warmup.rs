//! The broker's warm-up before the figures.
//!
//! Apache Kafka runs on the JVM, and a broker that has just started (as `make bench`
//! starts its own) spends its first minute compiling its hot paths: in a `perf` profile of
//! P2 taken right after the broker started, the JVM's C2 compiler thread used a fifth of
//! this machine's CPU, taken from the services being measured. A long-running cluster has
//! done that long ago, so before the figures the run pushes records through the broker's
//! produce (`acks=all`) and fetch paths for [`LENGTH`] — with the platform's own producer
//! and consumer settings — and P1…P4 then measure a warm broker. Skipped with `--quick`
//! and on the in-process mock cluster (no JVM).

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::{consumer::Consumer, producer::FutureRecord};

use super::{Ctx, Topics};

/// How long records are pushed through the broker.
const LENGTH: Duration = Duration::from_secs(20);

/// Records sent before their acknowledgements are awaited.
const ROUND: usize = 2_000;

/// Warms the run's broker up, when it is a real one; says what it did.
pub(crate) async fn broker(ctx: &Ctx) {
    if ctx.opts.kafka_brokers.is_none() || ctx.opts.quick {
        return;
    }
    eprintln!("bench: warming the broker up ({} s of records through it) …", LENGTH.as_secs());
    let started = Instant::now();
    match push(ctx).await {
        Ok((sent, received)) => eprintln!(
            "bench: broker warm-up: {sent} records produced, {received} consumed in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
        Err(e) => eprintln!("bench: broker warm-up failed, the figures meet a cold broker: {e:#}"),
    }
}

/// Produces rounds of records for [`LENGTH`] while a consumer reads them; (sent, received).
async fn push(ctx: &Ctx) -> anyhow::Result<(usize, usize)> {
    let topics = Topics::new(ctx, "warmup")?;
    let result = async {
        let kafka = topics.args();
        let topic = kafka.topic("order-events");
        cloudmart_platform::kafka::ensure_topics(&kafka, &["order-events"]).await?;
        let producer = cloudmart_platform::kafka::producer(&kafka, "cloudmart-bench-warmup")?;
        let consumer = cloudmart_platform::kafka::consumer(
            &kafka,
            &format!("{}bench-warmup", kafka.topic_prefix),
            "cloudmart-bench-warmup",
        )?;
        consumer.subscribe(&[&topic])?;
        let reader = tokio::spawn(async move {
            // The first record comes once the group has given the consumer its partitions
            // (seconds); then it reads until the topic stays quiet for 2 s.
            let mut received = 0;
            let mut quiet = Duration::from_secs(30);
            while let Ok(Ok(_)) = tokio::time::timeout(quiet, consumer.recv()).await {
                received += 1;
                quiet = Duration::from_secs(2);
            }
            received
        });
        let payload = vec![7u8; 300];
        let (mut sent, deadline) = (0, Instant::now() + LENGTH);
        while Instant::now() < deadline {
            let (producer, topic, payload) = (&producer, &topic, &payload);
            let round = (0..ROUND).map(|i| async move {
                let key = format!("w-{i}");
                let record = FutureRecord::to(topic).key(&key).payload(payload);
                producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e)
            });
            futures::future::try_join_all(round).await.context("producing warm-up records")?;
            sent += ROUND;
        }
        let received = reader.await.context("warm-up reader")?;
        anyhow::Ok((sent, received))
    }
    .await;
    topics.delete(&["order-events"]).await;
    result
}
