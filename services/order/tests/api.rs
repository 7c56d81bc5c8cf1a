//! OrderService API: validation, NOT_FOUND, idempotency, paging, the quote fallback and
//! customer cancellation, on an in-process order service (its delivery endpoint points
//! at a closed port, so every quote falls back to the flat fee); and the quote circuit
//! breaker against a scripted delivery service.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use cloudmart_order::{Application, store};
use cloudmart_platform::{
    grpc::reason_of,
    outbox,
    proto::delivery::v1 as dsvc,
    proto::order::v1::{self as pb, order_service_client::OrderServiceClient},
    testkit::{Spawned, spawn},
};
use sea_orm::{DatabaseConnection, EntityTrait, PaginatorTrait};
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};

struct TestOrder {
    client: OrderServiceClient<Channel>,
    db: DatabaseConnection,
    service: Spawned,
}

impl TestOrder {
    async fn stop(self) {
        self.service.stop().await.unwrap();
    }
}

/// A closed port: bind, read the port, drop the listener.
fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

async fn spawn_order(label: &str) -> TestOrder {
    let dead = dead_endpoint();
    let service =
        spawn::<Application>(label, &["--delivery-endpoint", &dead, "--quote-timeout-ms", "300"]).await.unwrap();
    let client = OrderServiceClient::connect(service.endpoint()).await.unwrap();
    TestOrder { client, db: service.db.clone(), service }
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

/// A scripted delivery service: counts quote calls; answers UNAVAILABLE until told to be healthy.
#[derive(Clone, Default)]
struct FakeDelivery {
    quotes: Arc<AtomicU32>,
    healthy: Arc<AtomicBool>,
}

#[tonic::async_trait]
impl dsvc::delivery_service_server::DeliveryService for FakeDelivery {
    async fn quote_delivery(
        &self,
        _req: tonic::Request<dsvc::QuoteDeliveryRequest>,
    ) -> Result<tonic::Response<dsvc::QuoteDeliveryResponse>, tonic::Status> {
        self.quotes.fetch_add(1, Ordering::SeqCst);
        if self.healthy.load(Ordering::SeqCst) {
            Ok(tonic::Response::new(dsvc::QuoteDeliveryResponse { fee_cents: 777, estimated_days: 2 }))
        } else {
            Err(tonic::Status::unavailable("scripted outage"))
        }
    }

    async fn get_delivery(
        &self,
        _req: tonic::Request<dsvc::GetDeliveryRequest>,
    ) -> Result<tonic::Response<dsvc::Delivery>, tonic::Status> {
        Err(tonic::Status::unimplemented("not scripted"))
    }
}

#[tokio::test]
async fn the_quote_circuit_breaker_opens_on_failures_and_closes_when_delivery_recovers() {
    let fake = FakeDelivery::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let delivery_addr = listener.local_addr().unwrap();
    let server_token = CancellationToken::new();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(dsvc::delivery_service_server::DeliveryServiceServer::new(fake.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                server_token.clone().cancelled_owned(),
            ),
    );

    let delivery = format!("http://{delivery_addr}");
    let breaker = [
        "--quote-breaker-window=10",
        "--quote-breaker-min-calls=5",
        "--quote-breaker-failure-percent=50",
        "--quote-breaker-open-ms=1000",
        "--quote-breaker-probes=2",
    ];
    let service = spawn::<Application>("order_breaker", &[&["--delivery-endpoint", &delivery][..], &breaker].concat())
        .await
        .unwrap();
    let mut client = OrderServiceClient::connect(service.endpoint()).await.unwrap();

    // Delivery fails every quote: 5 calls reach it, then the breaker opens and the next
    // orders get the flat fee without delivery being called at all.
    let outage_started = std::time::Instant::now();
    for i in 0..25 {
        let mut req = good_request();
        req.idempotency_key = format!("outage-{i}");
        let o = client.place_order(req).await.unwrap().into_inner().order.unwrap();
        assert_eq!(o.quote_source(), pb::QuoteSource::Fallback, "order {i}");
        assert_eq!(o.delivery_fee_cents, 500);
    }
    let during_outage = fake.quotes.load(Ordering::SeqCst);
    // Each 1 s open period ends with one (failing) probe; a slow machine may see a few.
    let probe_periods = outage_started.elapsed().as_millis() as u32 / 1000 + 1;
    assert!(
        during_outage <= 5 + probe_periods,
        "the open breaker still called delivery {during_outage} times for 25 orders"
    );
    assert!(during_outage >= 5, "the breaker opened before min_calls ({during_outage} calls)");

    // Delivery recovers: once the breaker has been open long enough, probes go through
    // and close it; quotes come from delivery again.
    fake.healthy.store(true, Ordering::SeqCst);
    let mut i = 0;
    let recovered =
        cloudmart_platform::testkit::eventually("quotes from delivery again", Duration::from_secs(30), || {
            i += 1;
            let mut client = client.clone();
            async move {
                let mut req = good_request();
                req.idempotency_key = format!("recovery-{i}");
                let o = client.place_order(req).await.unwrap().into_inner().order.unwrap();
                if o.quote_source() == pb::QuoteSource::DeliveryService {
                    Some(o)
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    None
                }
            }
        })
        .await;
    assert_eq!(recovered.delivery_fee_cents, 777);
    for i in 0..5 {
        let mut req = good_request();
        req.idempotency_key = format!("after-{i}");
        let o = client.place_order(req).await.unwrap().into_inner().order.unwrap();
        assert_eq!(o.quote_source(), pb::QuoteSource::DeliveryService, "closed again after the probes");
    }

    service.stop().await.unwrap();
    server_token.cancel();
    server.await.unwrap().unwrap();
}

/// A 50 MB request is refused from its length prefix (`platform::grpc::MAX_REQUEST_BYTES`,
/// 4 MiB) with tonic's clear `OUT_OF_RANGE` — the server never buffers it — and the
/// service keeps serving, on the same connection.
#[tokio::test]
async fn a_50_mb_request_is_refused_and_the_service_keeps_serving() {
    let mut t = spawn_order("order_huge").await;
    let mut huge = good_request();
    huge.customer_id = "x".repeat(50 * 1024 * 1024);
    let err = t.client.place_order(huge).await.unwrap_err();
    assert!(matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted), "{err:?}");
    assert!(err.message().contains("too large"), "{err:?}");
    assert!(err.message().contains(&cloudmart_platform::grpc::MAX_REQUEST_BYTES.to_string()), "{err:?}");
    assert_eq!(counts(&t.db).await, (0, 0), "nothing written");

    let order = t.client.place_order(good_request()).await.unwrap().into_inner().order.unwrap();
    assert_eq!(order.customer_id, "c-1");
    t.stop().await;
}
