//! OrderService API: validation, NOT_FOUND, idempotency, paging, the quote fallback and
//! customer cancellation, on an in-process order service (its delivery endpoint points
//! at a closed port, so every quote falls back to the flat fee).

use std::time::Duration;

use cloudmart_order::{Application, Config, store};
use cloudmart_platform::{
    grpc::reason_of,
    outbox,
    proto::order::v1::{self as pb, order_service_client::OrderServiceClient},
    testkit::{TestDatabase, TestKafka},
};
use sea_orm::{DatabaseConnection, EntityTrait, PaginatorTrait};
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};

struct TestOrder {
    client: OrderServiceClient<Channel>,
    db: DatabaseConnection,
    token: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _kafka: TestKafka,
}

impl TestOrder {
    async fn stop(self) {
        self.token.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// A closed port: bind, read the port, drop the listener.
fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

async fn spawn_order(label: &str) -> TestOrder {
    let tdb = TestDatabase::create(label).await.unwrap();
    let kafka = TestKafka::create(label).await.unwrap();
    let mut config = Config::for_tests(&tdb.url, kafka.args.clone(), &dead_endpoint());
    config.quote_timeout_ms = 300;
    let app = Application::build(config).await.unwrap();
    let addr = app.grpc_addr();
    let db = app.db().clone();
    let token = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(token.clone().cancelled_owned()));
    let client = OrderServiceClient::connect(format!("http://{addr}")).await.unwrap();
    TestOrder { client, db, token, task, _kafka: kafka }
}

fn good_request() -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        customer_id: "c-1".into(),
        items: vec![
            pb::OrderItem { sku: "A".into(), quantity: 2, unit_price_cents: 1500 },
            pb::OrderItem { sku: "B".into(), quantity: 1, unit_price_cents: 250 },
        ],
        shipping_address: Some(pb::ShippingAddress {
            line1: "1 Main St".into(),
            city: "Seoul".into(),
            postal_code: "04524".into(),
            country: "KR".into(),
        }),
        idempotency_key: String::new(),
    }
}

async fn counts(db: &DatabaseConnection) -> (u64, u64) {
    (store::orders::Entity::find().count(db).await.unwrap(), outbox::entity::Entity::find().count(db).await.unwrap())
}

#[tokio::test]
async fn bad_requests_name_the_field_and_write_nothing() {
    let mut t = spawn_order("order_bad").await;
    type Mutation = Box<dyn Fn(&mut pb::PlaceOrderRequest)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("items", Box::new(|r| r.items.clear())),
        ("items[1].quantity", Box::new(|r| r.items[1].quantity = 0)),
        ("items[0].unit_price_cents", Box::new(|r| r.items[0].unit_price_cents = -1)),
        ("items[0].sku", Box::new(|r| r.items[0].sku = " ".into())),
        ("shipping_address", Box::new(|r| r.shipping_address = None)),
        ("shipping_address.line1", Box::new(|r| r.shipping_address.as_mut().unwrap().line1.clear())),
        ("shipping_address.city", Box::new(|r| r.shipping_address.as_mut().unwrap().city.clear())),
        ("shipping_address.postal_code", Box::new(|r| r.shipping_address.as_mut().unwrap().postal_code.clear())),
        ("shipping_address.country", Box::new(|r| r.shipping_address.as_mut().unwrap().country = "Korea".into())),
        ("customer_id", Box::new(|r| r.customer_id.clear())),
    ];
    for (field, mutate) in cases {
        let mut req = good_request();
        mutate(&mut req);
        let err = t.client.place_order(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(err.message().starts_with(field), "message {:?} should name {field}", err.message());
    }
    assert_eq!(counts(&t.db).await, (0, 0), "no order and no event written");

    let unknown = uuid::Uuid::new_v4().to_string();
    let err = t.client.get_order(pb::GetOrderRequest { order_id: unknown.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains(&unknown));
    let err = t.client.get_order(pb::GetOrderRequest { order_id: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("order_id"));
    let err =
        t.client.cancel_order(pb::CancelOrderRequest { order_id: unknown, reason: String::new() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = t
        .client
        .list_orders(pb::ListOrdersRequest { customer_id: "c".into(), page_size: 1000, page_token: String::new() })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("page_size"));
    let err = t
        .client
        .list_orders(pb::ListOrdersRequest { customer_id: "c".into(), page_size: 0, page_token: "garbage".into() })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("page_token"));
    assert_eq!(counts(&t.db).await, (0, 0));
    t.stop().await;
}

#[tokio::test]
async fn fallback_quote_idempotency_paging_and_cancel() {
    let mut t = spawn_order("order_api").await;

    // Delivery is down: the flat fee is used and the order is still placed.
    let mut req = good_request();
    req.idempotency_key = "key-1".into();
    let first = t.client.place_order(req.clone()).await.unwrap().into_inner().order.unwrap();
    assert_eq!(first.status(), pb::OrderStatus::Pending);
    assert_eq!(first.quote_source(), pb::QuoteSource::Fallback);
    assert_eq!(first.delivery_fee_cents, 500);
    assert_eq!(first.items_total_cents, 3250);
    assert_eq!(first.source(), pb::OrderSource::Regular);

    // Same key: the first order, nothing new written. A different customer with the same
    // key is a different order.
    let again = t.client.place_order(req.clone()).await.unwrap().into_inner().order.unwrap();
    assert_eq!(again.order_id, first.order_id);
    assert_eq!(counts(&t.db).await, (1, 1));
    let mut other = req.clone();
    other.customer_id = "c-2".into();
    let second_customer = t.client.place_order(other).await.unwrap().into_inner().order.unwrap();
    assert_ne!(second_customer.order_id, first.order_id);

    // Paging: 5 orders for c-1, pages of 2, newest first, no duplicates.
    for i in 0..4 {
        let mut r = good_request();
        r.idempotency_key = format!("page-{i}");
        t.client.place_order(r).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = t
            .client
            .list_orders(pb::ListOrdersRequest { customer_id: "c-1".into(), page_size: 2, page_token: token.clone() })
            .await
            .unwrap()
            .into_inner();
        assert!(page.orders.len() <= 2);
        seen.extend(
            page.orders
                .iter()
                .map(|o| (o.created_at.unwrap().seconds, o.created_at.unwrap().nanos, o.order_id.clone())),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 5);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");

    // Cancel: PENDING -> CANCELLED with the reason; cancelling again is INVALID_STATE.
    let cancelled = t
        .client
        .cancel_order(pb::CancelOrderRequest { order_id: first.order_id.clone(), reason: "changed my mind".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status(), pb::OrderStatus::Cancelled);
    assert_eq!(cancelled.cancel_reason, "changed my mind");
    let err = t
        .client
        .cancel_order(pb::CancelOrderRequest { order_id: first.order_id.clone(), reason: String::new() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason_of(&err).as_deref(), Some("INVALID_STATE"));
    tokio::time::timeout(Duration::from_secs(30), t.stop()).await.expect("graceful stop");
}
