//! Saga 3 over real processes: a flash sale on several time-sale replicas never
//! oversells, its purchases become orders, and cancelled orders give stock back
//! exactly once — also when every OrderCancelled is delivered twice.

use std::{collections::HashMap, time::Duration};

use chrono::Utc;
use cloudmart_platform::proto::contract::topics;
use cloudmart_platform::{
    events::{CloudEvent, headers},
    grpc::reason_of,
    proto::{
        events::v1 as ev,
        order::v1::{self as opb, ShippingAddress, order_service_client::OrderServiceClient},
        timesale::v1::{self as pb, time_sale_service_client::TimeSaleServiceClient},
    },
    testkit::{TestDatabase, committed_offset, eventually, produce_raw, read_records},
};
use futures::{StreamExt, stream};
use sea_orm::{ConnectionTrait, Statement};
use tonic::{Code, transport::Channel};

use crate::harness::{Proc, System, bin, free_port, wait_serving};

/// Runs `cloudmart-audit` over the given databases and asserts every invariant holds.
pub fn audit(order_db: &str, delivery_db: &str, timesale_db: Option<&str>) {
    let mut args = vec!["--order-db", order_db, "--delivery-db", delivery_db, "--settle-secs", "0"];
    if let Some(t) = timesale_db {
        args.extend(["--timesale-db", t]);
    }
    let out = std::process::Command::new(bin("cloudmart-audit")).args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("[e2e] {text}");
    assert!(out.status.success(), "cloudmart-audit found violations:\n{text}");
    assert!(text.contains("all invariants hold"));
}

async fn start_timesale(sys: &System, db: &str, addr: &str) -> Proc {
    start_timesale_with(sys, db, addr, &[]).await
}

/// Starts a time-sale process with extra env vars.
pub async fn start_timesale_with(sys: &System, db: &str, addr: &str, extra: &[(&str, &str)]) -> Proc {
    let mut env = HashMap::from([
        ("GRPC_ADDR".to_owned(), addr.to_owned()),
        ("METRICS_ADDR".to_owned(), format!("127.0.0.1:{}", free_port())),
        ("DATABASE_URL".to_owned(), db.to_owned()),
        ("KAFKA_BROKERS".to_owned(), sys.kafka.args.brokers.clone()),
        ("KAFKA_TOPIC_PREFIX".to_owned(), sys.kafka.args.topic_prefix.clone()),
        ("KAFKA_GROUP_ID".to_owned(), sys.group("timesale")),
        ("KAFKA_CREATE_TOPICS".to_owned(), sys.kafka.args.create_topics.to_string()),
    ]);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut p = Proc::spawn("cloudmart-timesale", &sys.label, &env, &[]);
    wait_serving(addr, "cloudmart.timesale.v1.TimeSaleService", &mut p).await;
    p
}

fn buy(sale_id: &str, customer: &str, key: &str) -> pb::PurchaseRequest {
    pb::PurchaseRequest {
        sale_id: sale_id.into(),
        customer_id: customer.into(),
        quantity: 1,
        shipping_address: Some(ShippingAddress {
            line1: "1 Main St".into(),
            city: "Seoul".into(),
            postal_code: format!("0{}", customer.len() % 10 + 4000),
            country: "KR".into(),
        }),
        idempotency_key: key.into(),
    }
}

async fn stock_invariant(db_url: &str, sale_id: &str) -> (i64, i64, i64) {
    let db = cloudmart_platform::db::connect(db_url).await.unwrap();
    let q = |sql: String| Statement::from_string(db.get_database_backend(), sql);
    let sale = db
        .query_one_raw(q(format!("SELECT total_stock, remaining_stock FROM sales WHERE sale_id = '{sale_id}'")))
        .await
        .unwrap()
        .unwrap();
    let held = db
        .query_one_raw(q(format!(
            "SELECT COALESCE(SUM(quantity), 0) AS held FROM purchases WHERE sale_id = '{sale_id}' AND status <> 'CANCELLED'"
        )))
        .await
        .unwrap()
        .unwrap();
    let total: i32 = sale.try_get("", "total_stock").unwrap();
    let remaining: i32 = sale.try_get("", "remaining_stock").unwrap();
    let held: i64 = held.try_get("", "held").unwrap();
    db.close().await.unwrap();
    (i64::from(total), i64::from(remaining), held)
}

async fn purchases_with(
    c: &TimeSaleServiceClient<Channel>,
    ids: &[String],
    status: pb::PurchaseStatus,
) -> Vec<pb::Purchase> {
    let mut out = Vec::new();
    for id in ids {
        let p = c.clone().get_purchase(pb::GetPurchaseRequest { purchase_id: id.clone() }).await.unwrap().into_inner();
        if p.status() == status {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_sale_never_oversells_and_restores_stock_exactly_once() {
    let sys = System::new("flash").await;
    let ts_db = TestDatabase::create("flash_timesale").await.unwrap();
    // SQLite is a single-process store: several processes on one file would only measure
    // lock contention, so replicas need PostgreSQL.
    let replicas = if ts_db.backend == "postgres" { 3 } else { 1 };
    eprintln!("[e2e] flash sale on {replicas} time-sale process(es), database {}", ts_db.backend);

    let delivery = sys.start_delivery(&[]).await;
    let order = sys.start_order(&[]).await;
    let mut procs = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..replicas {
        let addr = format!("127.0.0.1:{}", free_port());
        procs.push(start_timesale(&sys, &ts_db.url, &addr).await);
        clients.push(TimeSaleServiceClient::connect(format!("http://{addr}")).await.unwrap());
    }
    let now = Utc::now();
    let sale = clients[0]
        .clone()
        .create_sale(pb::CreateSaleRequest {
            sku: "CONSOLE-1".into(),
            title: "Game console".into(),
            price_cents: 29_900,
            total_stock: 100,
            per_customer_limit: 1,
            starts_at: Some(prost_types::Timestamp { seconds: now.timestamp() - 60, nanos: 0 }),
            ends_at: Some(prost_types::Timestamp { seconds: now.timestamp() + 3600, nanos: 0 }),
        })
        .await
        .unwrap()
        .into_inner();

    // 5,000 attempts from 2,500 customers (two keys each), spread over the replicas.
    let results: Vec<Result<pb::Purchase, (Code, Option<String>)>> = stream::iter(0..5000usize)
        .map(|i| {
            let mut c = clients[i % clients.len()].clone();
            let req = buy(&sale.sale_id, &format!("cust-{}", i % 2500), &format!("key-{}", i / 2500));
            async move {
                match c.purchase(req).await {
                    Ok(r) => Ok(r.into_inner().purchase.unwrap()),
                    Err(s) => Err((s.code(), reason_of(&s))),
                }
            }
        })
        .buffer_unordered(128)
        .collect()
        .await;
    let granted: Vec<pb::Purchase> = results.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
    assert_eq!(granted.len(), 100, "exactly the stock is sold");
    for r in &results {
        if let Err((code, reason)) = r {
            assert_eq!(*code, Code::FailedPrecondition);
            assert!(matches!(reason.as_deref(), Some("SOLD_OUT" | "LIMIT_EXCEEDED")), "{reason:?}");
        }
    }
    let mut customers: Vec<&str> = granted.iter().map(|p| p.customer_id.as_str()).collect();
    customers.sort_unstable();
    customers.dedup();
    assert_eq!(customers.len(), 100, "per_customer_limit=1 holds across replicas");
    let s =
        clients[0].clone().get_sale(pb::GetSaleRequest { sale_id: sale.sale_id.clone() }).await.unwrap().into_inner();
    assert_eq!(s.remaining_stock, 0);
    assert_eq!(stock_invariant(&ts_db.url, &sale.sale_id).await, (100, 0, 100));

    // Every purchase becomes an order (id derived from the purchase), is delivered and
    // confirmed: purchases end ORDERED.
    let ids: Vec<String> = granted.iter().map(|p| p.purchase_id.clone()).collect();
    let c0 = clients[0].clone();
    let ordered = eventually("all purchases ORDERED", Duration::from_secs(180), || {
        let (c0, ids) = (c0.clone(), ids.clone());
        async move {
            let done = purchases_with(&c0, &ids, pb::PurchaseStatus::Ordered).await;
            (done.len() == ids.len()).then_some(done)
        }
    })
    .await;
    let mut oc = OrderServiceClient::connect(format!("http://{}", sys.order_addr)).await.unwrap();
    let o = oc.get_order(opb::GetOrderRequest { order_id: ordered[0].order_id.clone() }).await.unwrap().into_inner();
    assert_eq!(o.source(), opb::OrderSource::TimeSale);
    assert_eq!(o.time_sale_purchase_id, ordered[0].purchase_id);
    assert_eq!(o.status(), opb::OrderStatus::Confirmed);
    assert_eq!(o.items_total_cents, 29_900);

    // Cancel 10 orders: exactly 10 units come back.
    let cancelled_ids: Vec<String> = ordered.iter().take(10).map(|p| p.purchase_id.clone()).collect();
    for p in ordered.iter().take(10) {
        oc.cancel_order(opb::CancelOrderRequest { order_id: p.order_id.clone(), reason: "test".into() }).await.unwrap();
    }
    eventually("10 purchases CANCELLED", Duration::from_secs(120), || {
        let (c0, ids) = (c0.clone(), cancelled_ids.clone());
        async move { (purchases_with(&c0, &ids, pb::PurchaseStatus::Cancelled).await.len() == 10).then_some(()) }
    })
    .await;
    let s =
        clients[0].clone().get_sale(pb::GetSaleRequest { sale_id: sale.sale_id.clone() }).await.unwrap().into_inner();
    assert_eq!(s.remaining_stock, 10);

    // Deliver every OrderCancelled a second time.
    let order_events = read_records(&sys.kafka.args, topics::ORDER_EVENTS, 100 * 2 + 10, Duration::from_secs(60)).await;
    let cancels: Vec<_> =
        order_events.iter().filter(|r| r.headers[headers::TYPE] == ev::OrderCancelled::TYPE).collect();
    assert_eq!(cancels.len(), 10);
    let mut last_offsets: HashMap<i32, i64> = HashMap::new();
    for r in &cancels {
        let h: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (p, o) =
            produce_raw(&sys.kafka.args, topics::ORDER_EVENTS, r.key.as_deref().unwrap(), &r.payload, &h).await;
        let e = last_offsets.entry(p).or_insert(o);
        *e = (*e).max(o);
    }
    let kafka = sys.kafka.args.clone();
    let group = sys.group("timesale");
    eventually("time-sale consumed the duplicates", Duration::from_secs(60), || {
        let (kafka, group, last) = (kafka.clone(), group.clone(), last_offsets.clone());
        async move {
            last.iter()
                .all(|(p, o)| committed_offset(&kafka, &group, topics::ORDER_EVENTS, *p).is_some_and(|c| c > *o))
                .then_some(())
        }
    })
    .await;
    let s =
        clients[0].clone().get_sale(pb::GetSaleRequest { sale_id: sale.sale_id.clone() }).await.unwrap().into_inner();
    assert_eq!(s.remaining_stock, 10, "duplicates restored nothing");
    assert_eq!(stock_invariant(&ts_db.url, &sale.sale_id).await, (100, 10, 90));
    let restored = read_records(&sys.kafka.args, topics::TIMESALE_EVENTS, 110, Duration::from_secs(30)).await;
    assert_eq!(restored.iter().filter(|r| r.headers[headers::TYPE] == ev::TimeSaleStockRestored::TYPE).count(), 10);

    // The freed stock can be bought again; everything stops cleanly.
    let again = clients[0].clone().purchase(buy(&sale.sale_id, "late-customer", "k")).await.unwrap();
    let again = again.into_inner().purchase.unwrap();
    assert_eq!(again.status(), pb::PurchaseStatus::Reserved);
    // Let its saga settle before stopping, so the audit sees a quiet system.
    eventually("the late purchase ORDERED", Duration::from_secs(120), || {
        let (c0, id) = (c0.clone(), vec![again.purchase_id.clone()]);
        async move { (purchases_with(&c0, &id, pb::PurchaseStatus::Ordered).await.len() == 1).then_some(()) }
    })
    .await;
    for p in procs {
        assert!(p.terminate(Duration::from_secs(30)).success());
    }
    assert!(order.terminate(Duration::from_secs(30)).success());
    assert!(delivery.terminate(Duration::from_secs(30)).success());
    audit(&sys.order_db, &sys.delivery_db, Some(&ts_db.url));
}
