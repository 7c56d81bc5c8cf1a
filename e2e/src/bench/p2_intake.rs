//! P2 — order intake: `PlaceOrder`/s, beside `pgbench` running the same SQL.
//!
//! The stack: in-process delivery and order services, each on a fresh PostgreSQL database,
//! on the run's broker, with their outbox relays and consumers on — so every quote is a
//! real gRPC call to delivery and every order runs its saga while the next ones arrive.
//! `clients` callers place orders back to back (closed loop: a caller sends its next order
//! when the previous one is answered) for the run's length after a warm-up; each order has
//! two line items, one of 100 postal codes, and an idempotency key, as a real client's.
//!
//! The reference: `pgbench` with the same client count, for the same time, running the
//! statements `PlaceOrder` sends — the idempotency-key lookup, then one transaction with
//! the order row and the outbox row (same sizes, the real `OrderPlaced` payload) — on a
//! database migrated by the order service's own migrator, prepared statements as sqlx uses.
//! The difference is what the service adds: gRPC, the quote round trip to delivery, the
//! saga's consumers and relays sharing the same cores, and the pool of 8 connections.
//!
//! Goal: ≥ 0.8× pgbench. P3 ([`super::p3_saga`]) runs on the same stack afterwards.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;
use cloudmart_proto::order::v1::{self as pb, order_service_client::OrderServiceClient};
use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tonic::transport::Channel;

use super::{
    Ctx, Running, TempDb, Topics, out_file, quantile,
    report::{Figure, Goal},
};

const NAME: &str = "order intake: PlaceOrder/s (quote + order + outbox)";
const UNIT: &str = "orders/s";

/// Delivery and order, in-process, on their own databases and topics.
pub(crate) struct Stack {
    pub order: Running,
    pub delivery: Running,
    order_db: TempDb,
    delivery_db: TempDb,
    topics: Topics,
    pub client: OrderServiceClient<Channel>,
}

impl Stack {
    pub async fn start(ctx: &Ctx) -> anyhow::Result<Self> {
        let delivery_db = TempDb::create(&ctx.opts.database_url, "p2_delivery").await?;
        let order_db = TempDb::create(&ctx.opts.database_url, "p2_order").await?;
        let topics = Topics::new(ctx, "p2")?;
        let common = |db: &TempDb, group: &str| {
            let mut f = vec![
                "--grpc-addr=127.0.0.1:0".to_owned(),
                "--metrics-addr=127.0.0.1:0".into(),
                format!("--database-url={}", db.url),
                "--grpc-concurrency-limit=8192".into(),
            ];
            f.extend(topics.flags(group));
            f
        };
        let mut flags = vec!["cloudmart-delivery".to_owned(), "--delivery-daily-capacity=1000000".into()];
        flags.extend(common(&delivery_db, "cloudmart-delivery"));
        let config = cloudmart_delivery::Config::try_parse_from(&flags).context("delivery configuration")?;
        let delivery = Running::start(
            cloudmart_platform::app::build::<cloudmart_delivery::Application>(config)
                .await
                .context("starting the delivery service")?,
        );
        let mut flags = vec!["cloudmart-order".to_owned(), format!("--delivery-endpoint={}", delivery.endpoint())];
        flags.extend(common(&order_db, "cloudmart-order"));
        let config = cloudmart_order::Config::try_parse_from(&flags).context("order configuration")?;
        let order = Running::start(
            cloudmart_platform::app::build::<cloudmart_order::Application>(config)
                .await
                .context("starting the order service")?,
        );
        let client = OrderServiceClient::connect(order.endpoint()).await?;
        Ok(Self { order, delivery, order_db, delivery_db, topics, client })
    }

    pub async fn stop(self) {
        if let Err(e) = self.order.stop().await {
            eprintln!("bench: order service stopped with an error: {e:#}");
        }
        if let Err(e) = self.delivery.stop().await {
            eprintln!("bench: delivery service stopped with an error: {e:#}");
        }
        self.topics.delete(super::contract_topics()).await;
        self.order_db.drop().await;
        self.delivery_db.drop().await;
    }

    /// Orders not yet CONFIRMED or CANCELLED.
    pub async fn pending(&self) -> anyhow::Result<i64> {
        count(&self.order.db, "SELECT count(*) AS n FROM orders WHERE status = 'PENDING'").await
    }

    /// Waits (up to `within`) until every order has finished its saga.
    pub async fn settle(&self, within: Duration) -> anyhow::Result<i64> {
        let deadline = Instant::now() + within;
        loop {
            let n = self.pending().await?;
            if n == 0 || Instant::now() >= deadline {
                return Ok(n);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub(crate) async fn count(db: &DatabaseConnection, sql: &str) -> anyhow::Result<i64> {
    let row = db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql)).await?.context("no row")?;
    Ok(row.try_get::<i64>("", "n")?)
}

/// One realistic order of caller `worker`.
pub(crate) fn order_request(worker: usize, i: u64) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        customer_id: format!("bench-{worker}-{i}"),
        items: vec![
            pb::OrderItem { sku: "SKU-BENCH-1".into(), quantity: 2, unit_price_cents: 1250 },
            pb::OrderItem { sku: "SKU-BENCH-2".into(), quantity: 1, unit_price_cents: 4990 },
        ],
        shipping_address: Some(pb::ShippingAddress {
            line1: "1 Main St".into(),
            city: "Seoul".into(),
            postal_code: format!("04{:03}", (worker as u64 * 7919 + i) % 100),
            country: "KR".into(),
        }),
        idempotency_key: uuid::Uuid::new_v4().to_string(),
    }
}

/// Closed-loop PlaceOrder figures.
pub(crate) struct Intake {
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    pub fallbacks: u64,
}

async fn intake(stack: &Stack, clients: usize, warm_up: Duration, length: Duration) -> anyhow::Result<Intake> {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let fallbacks = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..clients {
        let mut client = stack.client.clone();
        let (measuring, stop, errors, fallbacks) = (measuring.clone(), stop.clone(), errors.clone(), fallbacks.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            let mut last_error = None;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let t = Instant::now();
                let r = client.place_order(order_request(w, i)).await;
                let counted = measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed);
                match r {
                    Ok(resp) if counted => {
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        let order = resp.into_inner().order.unwrap_or_default();
                        if order.quote_source() == pb::QuoteSource::Fallback {
                            fallbacks.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        last_error = Some(e.message().to_owned());
                    }
                }
            }
            (lat, last_error)
        }));
    }
    tokio::time::sleep(warm_up).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    let mut last_error = None;
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        last_error = last_error.or(e);
    }
    let errors = errors.load(Ordering::Relaxed);
    anyhow::ensure!(!lat.is_empty(), "no PlaceOrder succeeded ({errors} errors, last: {last_error:?})");
    if let Some(e) = last_error {
        eprintln!("bench: P2: {errors} PlaceOrder errors, last: {e}");
    }
    lat.sort_by(f64::total_cmp);
    Ok(Intake {
        per_sec: lat.len() as f64 / seconds,
        p50_ms: quantile(&lat, 0.5),
        p99_ms: quantile(&lat, 0.99),
        errors,
        fallbacks: fallbacks.load(Ordering::Relaxed),
    })
}

pub(crate) async fn run(ctx: &Ctx, p2: bool, p3: bool) -> Vec<Figure> {
    let clients = ctx.opts.clients;
    let secs = ctx.sizes.intake.as_secs();
    let not = |reason: String| {
        let mut v = Vec::new();
        if p2 {
            v.push(Figure::not_measured("P2", NAME, UNIT, Goal::RatioAtLeast(0.8), reason.clone()));
        }
        if p3 {
            v.extend(super::p3_saga::not_measured(&reason));
        }
        v
    };
    eprintln!("bench: P2 order intake: starting delivery and order in-process …");
    let stack = match Stack::start(ctx).await {
        Ok(s) => s,
        Err(e) => return not(format!("the order/delivery stack did not start: {e:#}")),
    };
    eprintln!("bench: P2 order intake: {clients} callers, {secs} s …");
    let warm_up = if ctx.opts.quick { Duration::from_secs(1) } else { Duration::from_secs(3) };
    let measured = intake(&stack, clients, warm_up, ctx.sizes.intake).await;
    let mut figures = Vec::new();
    let rate = match measured {
        Ok(m) => {
            eprintln!(
                "bench: P2: {:.0} PlaceOrder/s (p50 {:.1} ms, p99 {:.1} ms, {} errors, {} fallback quotes)",
                m.per_sec, m.p50_ms, m.p99_ms, m.errors, m.fallbacks
            );
            // The sagas lag behind intake. What the whole system sustains — orders placed
            // *and* finished per second, intake and sagas sharing the machine — is the
            // intake's orders over the intake's time plus the time the backlog took.
            let pending = stack.pending().await.unwrap_or(0);
            let settling = Instant::now();
            let left = stack.settle(Duration::from_secs(120)).await.unwrap_or(-1);
            let settle_secs = settling.elapsed().as_secs_f64();
            let run_secs = (warm_up + ctx.sizes.intake).as_secs_f64();
            let saga_rate = (left == 0).then(|| m.per_sec * run_secs / (run_secs + settle_secs));
            let saga_note = match saga_rate {
                Some(r) => format!(
                    " When intake stopped {pending} orders were still PENDING; their sagas finished in {settle_secs:.1} \
                     s: placed and finished, the system sustains about {r:.0} orders/s."
                ),
                None => format!(" {left} orders still PENDING {settle_secs:.0} s after intake stopped."),
            };
            eprintln!(
                "bench: P2: {pending} orders PENDING at the end of intake, settled in {settle_secs:.1} s ({left} left)"
            );
            if p2 {
                eprintln!("bench: P2 reference: pgbench, same SQL, {clients} clients, {secs} s …");
                let reference = pgbench(ctx, clients).await;
                let (ref_value, ref_note) = match &reference {
                    Ok(tps) => (Some(*tps), String::new()),
                    Err(e) => (None, format!(" pgbench not measured: {e:#}.")),
                };
                if let Ok(tps) = &reference {
                    eprintln!("bench: P2 pgbench: {tps:.0} transactions/s");
                }
                figures.push(
                    Figure::new("P2", NAME, m.per_sec, UNIT)
                        .with_goal(Goal::RatioAtLeast(0.8))
                        .with_reference(format!("pgbench, same SQL, {clients} clients"), ref_value)
                        .with_note(format!(
                            "{clients} callers back to back for {secs} s after a warm-up, in-process order and \
                             delivery services (real quotes over gRPC, sagas running) on PostgreSQL; PlaceOrder p50 \
                             {:.1} ms, p99 {:.1} ms, {} errors, {} fallback quotes. pgbench: the idempotency \
                             lookup, then order row + outbox row in one transaction, `-M prepared -c {clients} -T \
                             {secs}` (script: `target/bench/p2-place-order.sql`).{ref_note}{saga_note}",
                            m.p50_ms, m.p99_ms, m.errors, m.fallbacks
                        )),
                );
            }
            Some((m.per_sec, saga_rate))
        }
        Err(e) => {
            figures.extend(not(format!("PlaceOrder run failed: {e:#}")));
            None
        }
    };
    // The maximum order rate is what the whole system sustains end to end (never more
    // than the intake).
    if p3 && let Some((rate, saga_rate)) = rate {
        figures.extend(super::p3_saga::run(ctx, &stack, rate.min(saga_rate.unwrap_or(rate)) / 2.0, rate).await);
    }
    stack.stop().await;
    figures
}

/// The `OrderPlaced` payload `PlaceOrder` stores for [`order_request`], encoded (P4's
/// outbox rows carry it too).
pub(crate) fn placed_payload() -> Vec<u8> {
    use cloudmart_proto::events::v1 as ev;
    let req = order_request(3, 17);
    ev::OrderPlaced {
        order_id: uuid::Uuid::new_v4().to_string(),
        customer_id: req.customer_id,
        items: req.items,
        shipping_address: req.shipping_address,
        items_total_cents: 2 * 1250 + 4990,
        delivery_fee_cents: 300,
        source: pb::OrderSource::Regular as i32,
        time_sale_purchase_id: String::new(),
        placed_at: Some(prost_types::Timestamp { seconds: chrono::Utc::now().timestamp(), nanos: 0 }),
    }
    .encode_to_vec()
}

/// The pgbench script: what `PlaceOrder` sends to PostgreSQL for one order.
fn pgbench_script() -> String {
    let payload: String = placed_payload().iter().map(|b| format!("{b:02x}")).collect();
    let items = r#"[{"sku":"SKU-BENCH-1","quantity":2,"unit_price_cents":1250},{"sku":"SKU-BENCH-2","quantity":1,"unit_price_cents":4990}]"#;
    format!(
        r#"-- What PlaceOrder sends to PostgreSQL for one order (written by cloudmart-bench, P2).
\set n random(1, 9223372036854775806)
\set zip random(0, 99)
SELECT order_id, customer_id, status, cancel_reason, source, time_sale_purchase_id, items, ship_line1, ship_city, ship_postal_code, ship_country, items_total_cents, delivery_fee_cents, quote_source, idempotency_key, version, created_at, updated_at FROM orders WHERE customer_id = 'bench-' || :client_id || '-' || :n AND idempotency_key = lpad(:n::text, 36, 'k') LIMIT 1;
BEGIN;
INSERT INTO orders (order_id, customer_id, status, cancel_reason, source, time_sale_purchase_id, items, ship_line1, ship_city, ship_postal_code, ship_country, items_total_cents, delivery_fee_cents, quote_source, idempotency_key, version, created_at, updated_at) VALUES (lpad(:n::text, 36, '0'), 'bench-' || :client_id || '-' || :n, 'PENDING', NULL, 'REGULAR', NULL, '{items}', '1 Main St', 'Seoul', '04' || lpad(:zip::text, 3, '0'), 'KR', 7490, 300, 'DELIVERY_SERVICE', lpad(:n::text, 36, 'k'), 1, now(), now());
INSERT INTO outbox (event_id, topic, event_key, event_type, source, payload, traceparent, tracestate, created_at, published_at) VALUES (gen_random_uuid()::text, 'order-events', lpad(:n::text, 36, '0'), 'cloudmart.order.v1.OrderPlaced', 'order', decode('{payload}', 'hex'), NULL, NULL, now(), NULL);
END;
"#
    )
}

/// pgbench's transactions/s for the script, on a database migrated like the order service's.
async fn pgbench(ctx: &Ctx, clients: usize) -> anyhow::Result<f64> {
    let bin = super::pgbench_path()
        .context("pgbench not found: apt-get install postgresql-contrib (or postgresql-client), or put it on PATH")?;
    let script = out_file(ctx, "p2-place-order.sql");
    std::fs::write(&script, pgbench_script()).with_context(|| format!("writing {}", script.display()))?;
    let db = TempDb::create(&ctx.opts.database_url, "p2_pgbench").await?;
    let result = async {
        let conn = cloudmart_platform::db::connect(&db.url).await?;
        cloudmart_platform::db::migrate::<cloudmart_order::store::Migrator>(&conn).await?;
        conn.close().await.ok();
        let out = tokio::process::Command::new(&bin)
            .args(["-n", "-M", "prepared", "-c", &clients.to_string(), "-j", "2", "-T"])
            .arg(ctx.sizes.intake.as_secs().to_string())
            .arg("-f")
            .arg(&script)
            .arg(&db.url)
            .output()
            .await
            .with_context(|| format!("running {}", bin.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(out.status.success(), "pgbench failed ({}): {}", out.status, stderr.trim());
        let tps = stdout
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("no tps in pgbench's output:\n{stdout}"))?;
        let rows = count(&conn_for(&db.url).await?, "SELECT count(*) AS n FROM outbox").await?;
        anyhow::ensure!(rows > 0, "pgbench wrote no outbox rows");
        Ok(tps)
    }
    .await;
    db.drop().await;
    result
}

async fn conn_for(url: &str) -> anyhow::Result<DatabaseConnection> {
    cloudmart_platform::db::connect(url).await
}
