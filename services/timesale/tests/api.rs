//! TimeSaleService on an in-process service: refusals write nothing, idempotent
//! purchases, sell-out, and load shedding under overload.

use std::time::Duration;

use chrono::Utc;
use cloudmart_platform::{
    grpc::reason_of,
    outbox,
    proto::{
        order::v1::ShippingAddress,
        timesale::v1::{self as pb, time_sale_service_client::TimeSaleServiceClient},
    },
    testkit::{self, Spawned},
};
use cloudmart_timesale::{Application, ReservationMode, store};
use futures::{StreamExt, stream};
use sea_orm::{DatabaseConnection, EntityTrait, PaginatorTrait};
use tonic::{Code, transport::Channel};

struct TestTimeSale {
    client: TimeSaleServiceClient<Channel>,
    db: DatabaseConnection,
    service: Spawned,
}

impl TestTimeSale {
    async fn stop(self) {
        self.service.stop().await.unwrap();
    }
}

/// The time-sale service with `flags` on top of the test defaults.
async fn spawn(label: &str, flags: &[&str]) -> TestTimeSale {
    let service = testkit::spawn::<Application>(label, flags).await.unwrap();
    let client = TimeSaleServiceClient::connect(service.endpoint()).await.unwrap();
    TestTimeSale { client, db: service.db.clone(), service }
}

/// `--reservation <mode>` as the command line spells it.
fn reservation(mode: ReservationMode) -> String {
    use clap::ValueEnum;
    let value = mode.to_possible_value().expect("every mode has a flag value");
    format!("--reservation={}", value.get_name())
}

fn ts(t: chrono::DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 })
}

async fn create_sale(
    c: &mut TimeSaleServiceClient<Channel>,
    stock: i32,
    limit: i32,
    from_min: i64,
    to_min: i64,
) -> pb::Sale {
    let now = Utc::now();
    c.create_sale(pb::CreateSaleRequest {
        sku: "TV-55".into(),
        title: "55-inch TV".into(),
        price_cents: 39_900,
        total_stock: stock,
        per_customer_limit: limit,
        starts_at: ts(now + chrono::Duration::minutes(from_min)),
        ends_at: ts(now + chrono::Duration::minutes(to_min)),
    })
    .await
    .unwrap()
    .into_inner()
}

fn buy(sale_id: &str, customer: &str, quantity: i32, key: &str) -> pb::PurchaseRequest {
    pb::PurchaseRequest {
        sale_id: sale_id.into(),
        customer_id: customer.into(),
        quantity,
        shipping_address: Some(ShippingAddress {
            line1: "1 Main St".into(),
            city: "Seoul".into(),
            postal_code: "04524".into(),
            country: "KR".into(),
        }),
        idempotency_key: key.into(),
    }
}

async fn written(db: &DatabaseConnection) -> (u64, u64) {
    (store::purchases::Entity::find().count(db).await.unwrap(), outbox::entity::Entity::find().count(db).await.unwrap())
}

#[tokio::test]
async fn refusals_have_the_right_code_and_reason_and_write_nothing() {
    let mut t = spawn("ts_refusals", &[]).await;
    let future = create_sale(&mut t.client, 10, 2, 60, 120).await;
    let past = create_sale(&mut t.client, 10, 2, -120, -60).await;
    let open = create_sale(&mut t.client, 10, 2, -1, 60).await;

    for (sale, when) in [(&future, "has not started"), (&past, "has ended")] {
        let err = t.client.purchase(buy(&sale.sale_id, "c", 1, "")).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_eq!(reason_of(&err).as_deref(), Some("SALE_NOT_ACTIVE"));
        assert!(err.message().contains(when), "{}", err.message());
    }
    let err = t.client.purchase(buy(&open.sale_id, "c", 0, "")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("quantity"));
    let err = t.client.purchase(buy(&open.sale_id, "c", 3, "")).await.unwrap_err();
    assert_eq!(reason_of(&err).as_deref(), Some("LIMIT_EXCEEDED"));
    let unknown = uuid::Uuid::new_v4().to_string();
    let err = t.client.purchase(buy(&unknown, "c", 1, "")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = t.client.purchase(buy("not-a-uuid", "c", 1, "")).await.unwrap_err();
    assert!(err.message().starts_with("sale_id"));
    let mut no_addr = buy(&open.sale_id, "c", 1, "");
    no_addr.shipping_address.as_mut().unwrap().postal_code.clear();
    let err = t.client.purchase(no_addr).await.unwrap_err();
    assert!(err.message().starts_with("shipping_address.postal_code"));
    let err = t
        .client
        .create_sale(pb::CreateSaleRequest { sku: "x".into(), title: "x".into(), total_stock: 0, ..Default::default() })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("total_stock"));

    assert_eq!(written(&t.db).await, (0, 0), "no purchase and no event written");
    for s in [&future, &past, &open] {
        let now = t.client.get_sale(pb::GetSaleRequest { sale_id: s.sale_id.clone() }).await.unwrap().into_inner();
        assert_eq!(now.remaining_stock, 10);
    }
    let active = t.client.list_sales(pb::ListSalesRequest { active_only: true }).await.unwrap().into_inner();
    assert_eq!(active.sales.iter().map(|s| s.sale_id.clone()).collect::<Vec<_>>(), vec![open.sale_id.clone()]);
    assert_eq!(
        t.client.list_sales(pb::ListSalesRequest { active_only: false }).await.unwrap().into_inner().sales.len(),
        3
    );
    t.stop().await;
}

async fn sell_out(mode: ReservationMode) {
    let mut t = spawn(&format!("ts_sellout_{mode:?}").to_lowercase(), &[&reservation(mode)]).await;
    let sale = create_sale(&mut t.client, 5, 2, -1, 60).await;
    // Idempotent: the same key returns the first purchase and takes no more stock.
    let first = t.client.purchase(buy(&sale.sale_id, "a", 2, "k1")).await.unwrap().into_inner().purchase.unwrap();
    let again = t.client.purchase(buy(&sale.sale_id, "a", 2, "k1")).await.unwrap().into_inner().purchase.unwrap();
    assert_eq!(first.purchase_id, again.purchase_id);
    assert_eq!(first.status(), pb::PurchaseStatus::Reserved);
    let err = t.client.purchase(buy(&sale.sale_id, "a", 1, "k2")).await.unwrap_err();
    assert_eq!(reason_of(&err).as_deref(), Some("LIMIT_EXCEEDED"));
    // 3 left: b takes 2, c asks 2 (sold out for 2), d takes the last 1, e finds none.
    t.client.purchase(buy(&sale.sale_id, "b", 2, "")).await.unwrap();
    let err = t.client.purchase(buy(&sale.sale_id, "c", 2, "")).await.unwrap_err();
    assert_eq!(reason_of(&err).as_deref(), Some("SOLD_OUT"));
    t.client.purchase(buy(&sale.sale_id, "d", 1, "")).await.unwrap();
    let err = t.client.purchase(buy(&sale.sale_id, "e", 1, "")).await.unwrap_err();
    assert_eq!(reason_of(&err).as_deref(), Some("SOLD_OUT"));
    let s = t.client.get_sale(pb::GetSaleRequest { sale_id: sale.sale_id.clone() }).await.unwrap().into_inner();
    assert_eq!(s.remaining_stock, 0);
    let got = t.client.get_purchase(pb::GetPurchaseRequest { purchase_id: first.purchase_id.clone() }).await.unwrap();
    assert_eq!(got.into_inner().quantity, 2);
    assert_eq!(written(&t.db).await, (3, 3), "three purchases, three TimeSalePurchased events");
    t.stop().await;
}

#[tokio::test]
async fn sells_out_exactly_batched() {
    sell_out(ReservationMode::Batched).await;
}

#[tokio::test]
async fn sells_out_exactly_naive() {
    sell_out(ReservationMode::Naive).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_with_resource_exhausted_and_recovers() {
    let mut t = spawn("ts_overload", &["--grpc-concurrency-limit=4", &reservation(ReservationMode::Naive)]).await;
    let sale = create_sale(&mut t.client, 100_000, 1_000_000, -1, 60).await;
    let deadline = Duration::from_secs(20);
    let codes: Vec<Code> = stream::iter(0..400)
        .map(|i| {
            let mut c = t.client.clone();
            let sale_id = sale.sale_id.clone();
            async move {
                let mut req = tonic::Request::new(buy(&sale_id, &format!("c{i}"), 1, ""));
                req.set_timeout(deadline);
                let started = tokio::time::Instant::now();
                let res = tokio::time::timeout(deadline + Duration::from_secs(5), c.purchase(req))
                    .await
                    .expect("no request hangs past its deadline");
                assert!(started.elapsed() < deadline + Duration::from_secs(5));
                match res {
                    Ok(_) => Code::Ok,
                    Err(s) => s.code(),
                }
            }
        })
        .buffer_unordered(200)
        .collect()
        .await;
    let shed = codes.iter().filter(|c| **c == Code::ResourceExhausted).count();
    let ok = codes.iter().filter(|c| **c == Code::Ok).count();
    assert!(shed > 0, "more concurrent calls than the limit must be shed: {codes:?}");
    assert!(ok > 0);
    assert_eq!(shed + ok, codes.len(), "only OK or RESOURCE_EXHAUSTED: {codes:?}");
    // Load gone: the next call is served.
    t.client.purchase(buy(&sale.sale_id, "after", 1, "")).await.unwrap();
    let s = t.client.get_sale(pb::GetSaleRequest { sale_id: sale.sale_id }).await.unwrap().into_inner();
    assert_eq!(s.remaining_stock as usize, 100_000 - ok - 1, "shed calls took no stock");
    t.stop().await;
}
