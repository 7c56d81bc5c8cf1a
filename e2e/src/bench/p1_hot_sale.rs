//! P1 — hot sale: purchases/s on ONE sale row.
//!
//! - **batched** and **naive** reservation: an in-process time-sale service per mode, each
//!   on a fresh database of the same PostgreSQL server, driven through its gRPC API: one
//!   sale, N purchases by distinct customers (after a 200-purchase warm-up), `concurrency`
//!   in flight over 4 HTTP/2 connections. Its outbox relay publishes to the run's broker.
//!   The stock left is checked afterwards (nothing oversold, nothing lost).
//! - **Redis**: the usual industry shortcut — a stock counter in Debian's `redis-server`
//!   (no persistence), decremented by a Lua script that also refuses a second purchase by
//!   the same customer (a set of buyers), `concurrency` purchases in flight, one
//!   connection each. No durability, no outbox, no multi-replica safety beyond the one
//!   Redis process: what those cost is the gap between the figures.
//!
//! Goal: batched ≥ 10× naive. Batched / Redis is reported without a goal.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::Parser;
use cloudmart_proto::{
    order::v1::ShippingAddress,
    timesale::v1::{self as pb, time_sale_service_client::TimeSaleServiceClient},
};
use cloudmart_timesale::{Application, Config};
use futures::{StreamExt, stream};

use super::{
    Ctx, Running, TempDb, Topics, quantile,
    redis::{RedisServer, Reply, Resp},
    report::{Figure, Goal},
};

/// Throughput and latency of one mode.
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

const NAME: &str = "hot sale, batched reservation";
const UNIT: &str = "purchases/s";

pub(crate) async fn run(ctx: &Ctx) -> Vec<Figure> {
    let n = ctx.sizes.hot_sale_purchases;
    let c = ctx.opts.concurrency;
    let mut rates = Vec::new();
    for mode in ["batched", "naive"] {
        eprintln!("bench: P1 hot sale, {mode} reservation: {n} purchases, {c} in flight …");
        let r = grpc(ctx, mode, n, c).await;
        match &r {
            Ok(r) => eprintln!(
                "bench: P1 {mode}: {:.0} purchases/s (p50 {:.1} ms, p99 {:.1} ms)",
                r.per_sec, r.p50_ms, r.p99_ms
            ),
            Err(e) => eprintln!("bench: P1 {mode}: FAILED: {e:#}"),
        }
        rates.push(r);
    }
    let redis_n = ctx.sizes.redis_purchases;
    eprintln!("bench: P1 hot sale, Redis Lua counter: {redis_n} purchases, {c} in flight …");
    let redis = redis(redis_n, c).await;
    match &redis {
        Ok(r) => {
            eprintln!("bench: P1 Redis: {:.0} purchases/s (p50 {:.2} ms, p99 {:.2} ms)", r.per_sec, r.p50_ms, r.p99_ms)
        }
        Err(e) => eprintln!("bench: P1 Redis: not measured: {e:#}"),
    }
    let naive = rates.pop().expect("two modes");
    let batched = rates.pop().expect("two modes");
    let how = |r: &Rate| format!("p50 {:.1} ms, p99 {:.1} ms", r.p50_ms, r.p99_ms);
    let naive_ref = naive.as_ref().ok().map(|r| r.per_sec);
    let mut figures = Vec::new();
    match &batched {
        Ok(b) => {
            let note = format!(
                "{n} purchases by distinct customers of one sale after a 200-purchase warm-up, {c} in flight over 4 \
                 gRPC connections to an in-process time-sale service, fresh database per mode; batched {}{}.",
                how(b),
                match &naive {
                    Ok(nv) => format!(", naive {}", how(nv)),
                    Err(e) => format!("; naive failed: {e:#}"),
                }
            );
            figures.push(
                Figure::new("P1", NAME, b.per_sec, UNIT)
                    .with_goal(Goal::RatioAtLeast(10.0))
                    .with_reference("naive reservation", naive_ref)
                    .with_note(note),
            );
            let note = match &redis {
                Ok(r) => format!(
                    "redis-server on loopback without persistence, one Lua script per purchase (stock check and \
                     decrement, one purchase per customer), {c} connections with one purchase in flight each, \
                     {redis_n} purchases; Redis {}. What batched pays for over it: durability (one PostgreSQL \
                     commit per batch), the outbox event in the same transaction, gRPC, and replicas that share the \
                     stock safely.",
                    how(r)
                ),
                Err(e) => format!("Redis not measured: {e:#}"),
            };
            figures.push(
                Figure::new("P1", "hot sale, batched vs in-memory Redis counter", b.per_sec, UNIT)
                    .with_reference("Redis Lua counter, no durability", redis.as_ref().ok().map(|r| r.per_sec))
                    .with_note(note),
            );
        }
        Err(e) => {
            figures.push(
                Figure::not_measured("P1", NAME, UNIT, Goal::RatioAtLeast(10.0), format!("batched run failed: {e:#}"))
                    .with_reference("naive reservation", naive_ref),
            );
        }
    }
    figures
}

fn buy(sale_id: &str, i: usize) -> pb::PurchaseRequest {
    pb::PurchaseRequest {
        sale_id: sale_id.to_owned(),
        customer_id: format!("bench-{i}"),
        quantity: 1,
        shipping_address: Some(ShippingAddress {
            line1: "1 Main St".into(),
            city: "Seoul".into(),
            postal_code: "04524".into(),
            country: "KR".into(),
        }),
        idempotency_key: String::new(),
    }
}

/// Purchases/s through the time-sale service in `mode` (`batched` or `naive`).
async fn grpc(ctx: &Ctx, mode: &str, n: usize, concurrency: usize) -> anyhow::Result<Rate> {
    let db = TempDb::create(&ctx.opts.database_url, &format!("p1_{mode}")).await?;
    let topics = Topics::new(ctx, "p1")?;
    let result = async {
        let mut flags = vec![
            "cloudmart-timesale".to_owned(),
            "--grpc-addr=127.0.0.1:0".into(),
            "--metrics-addr=127.0.0.1:0".into(),
            format!("--database-url={}", db.url),
            format!("--reservation={mode}"),
            "--grpc-concurrency-limit=8192".into(),
            "--grpc-request-timeout-ms=120000".into(),
        ];
        flags.extend(topics.flags("cloudmart-timesale"));
        let config = Config::try_parse_from(&flags).context("time-sale configuration")?;
        let app = Running::start(
            cloudmart_platform::app::build::<Application>(config).await.context("starting the time-sale service")?,
        );
        let measured = drive(&app, n, concurrency).await;
        app.stop().await.context("stopping the time-sale service")?;
        measured
    }
    .await;
    topics.delete(super::contract_topics()).await;
    db.drop().await;
    result
}

async fn drive(app: &Running, n: usize, concurrency: usize) -> anyhow::Result<Rate> {
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(TimeSaleServiceClient::connect(app.endpoint()).await?);
    }
    let now = Utc::now().timestamp();
    let sale = clients[0]
        .clone()
        .create_sale(pb::CreateSaleRequest {
            sku: "HOT".into(),
            title: "Hot sale".into(),
            price_cents: 100,
            total_stock: (n + 1000) as i32,
            per_customer_limit: 1,
            starts_at: Some(prost_types::Timestamp { seconds: now - 60, nanos: 0 }),
            ends_at: Some(prost_types::Timestamp { seconds: now + 3600, nanos: 0 }),
        })
        .await
        .context("CreateSale")?
        .into_inner();
    let run = |range: std::ops::Range<usize>| {
        let clients = clients.clone();
        let sale_id = sale.sale_id.clone();
        async move {
            stream::iter(range)
                .map(|i| {
                    let mut c = clients[i % clients.len()].clone();
                    let req = buy(&sale_id, i);
                    async move {
                        let t = Instant::now();
                        c.purchase(req).await.map(|_| t.elapsed())
                    }
                })
                .buffer_unordered(concurrency)
                .collect::<Vec<_>>()
                .await
        }
    };
    for r in run(n..n + 200).await {
        r.context("Purchase (warm-up)")?;
    }
    let started = Instant::now();
    let results = run(0..n).await;
    let seconds = started.elapsed().as_secs_f64();
    let lat: Vec<Duration> = results.into_iter().collect::<Result<_, _>>().context("Purchase")?;
    let left = clients[0].clone().get_sale(pb::GetSaleRequest { sale_id: sale.sale_id }).await?.into_inner();
    anyhow::ensure!(left.remaining_stock == 1000 - 200, "stock accounting is off: {} left", left.remaining_stock);
    Ok(rate(n, seconds, lat))
}

fn rate(n: usize, seconds: f64, lat: Vec<Duration>) -> Rate {
    let mut ms: Vec<f64> = lat.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    Rate { per_sec: n as f64 / seconds, p50_ms: quantile(&ms, 0.5), p99_ms: quantile(&ms, 0.99) }
}

/// Reserve one unit for customer ARGV[1]: -2 when that customer bought already, -1 when
/// sold out, else the stock left.
const LUA: &str = "if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return -2 end \
    local left = tonumber(redis.call('GET', KEYS[1])) \
    if left < 1 then redis.call('SREM', KEYS[2], ARGV[1]) return -1 end \
    return redis.call('DECR', KEYS[1])";

/// Purchases/s against the Redis counter.
async fn redis(n: usize, concurrency: usize) -> anyhow::Result<Rate> {
    let server = RedisServer::start().await?;
    let mut admin = Resp::connect(server.port).await?;
    let stock = n + 1000;
    admin.call(&["SET", "stock:hot", &stock.to_string()]).await?;
    let sha = match admin.call(&["SCRIPT", "LOAD", LUA]).await? {
        Reply::Bulk(Some(s)) => String::from_utf8(s)?,
        other => anyhow::bail!("SCRIPT LOAD answered {other:?}"),
    };
    let buy = |mut conn: Resp, range: std::ops::Range<usize>, sha: String| async move {
        let mut lat = Vec::with_capacity(range.len());
        for i in range {
            let customer = format!("bench-{i}");
            let t = Instant::now();
            match conn.call(&["EVALSHA", &sha, "2", "stock:hot", "buyers:hot", &customer]).await? {
                Reply::Int(left) if left >= 0 => lat.push(t.elapsed()),
                other => anyhow::bail!("purchase {i} refused: {other:?}"),
            }
        }
        anyhow::Ok(lat)
    };
    // Warm-up: 200 purchases on one connection.
    buy(Resp::connect(server.port).await?, n..n + 200, sha.clone()).await?;
    let mut conns = Vec::new();
    for _ in 0..concurrency {
        conns.push(Resp::connect(server.port).await?);
    }
    let per = n.div_ceil(concurrency);
    let started = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(k, conn)| tokio::spawn(buy(conn, (k * per).min(n)..((k + 1) * per).min(n), sha.clone())))
        .collect();
    let mut lat = Vec::with_capacity(n);
    for t in tasks {
        lat.extend(t.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let left = match admin.call(&["GET", "stock:hot"]).await? {
        Reply::Bulk(Some(v)) => String::from_utf8(v)?.parse::<usize>()?,
        other => anyhow::bail!("GET stock answered {other:?}"),
    };
    anyhow::ensure!(left == 1000 - 200, "Redis stock accounting is off: {left} left");
    drop(server);
    Ok(rate(n, seconds, lat))
}
