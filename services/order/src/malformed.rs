//! Malformed input, generated (proptest): every `OrderService` request message and every
//! record the order consumer takes, built from hostile strategies (`platform::fuzz`),
//! against the service implementation in-process on a fresh database — SQLite, or
//! PostgreSQL when `TEST_DATABASE_URL` is set. Proves:
//! - no call panics; each is answered OK or refused with an expected code, never
//!   `INTERNAL`; `INVALID_ARGUMENT` names the field; a refused call writes nothing;
//! - a NUL in any text field (customer id, sku, address line, idempotency key, page
//!   token, reason) is `INVALID_ARGUMENT` on every backend;
//! - a record either applies or fails permanently (DLQ) writing nothing — never
//!   transiently, which would retry it forever.
//!
//! The failures the properties found are kept below as named regression tests.

use std::time::Duration;

use cloudmart_platform::proto::contract::topics;
use cloudmart_platform::{
    breaker::BreakerConfig,
    events::CloudEvent,
    fuzz::{self, Harness, Record, proptest::prelude::*},
    outbox::OutboxSignal,
    proto::{events::v1 as ev, order::v1 as pb, order::v1::order_service_server::OrderService},
};
use prost::Message;
use tonic::{Code, Request};

use crate::{events::OrderEvents, grpc::OrderApi, quote::QuoteClient, store};

/// One service on one fresh database, with a few orders of customer `c-1`.
struct Fixture {
    h: Harness,
    api: OrderApi,
    handler: OrderEvents,
    orders: Vec<String>,
    tokens: Vec<String>,
}

fn fixture(label: &str) -> Fixture {
    let h = Harness::new::<store::Migrator>(label, false);
    let (api, handler, orders, tokens) = h.rt.block_on(async {
        let db = h.db.clone();
        // Delivery at a closed port: every quote falls back to the flat fee at once.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("http://{}", dead.local_addr().expect("addr"));
        drop(dead);
        let quotes = QuoteClient::new(&endpoint, Duration::from_millis(300), 500, BreakerConfig::default())
            .expect("quote client");
        let api = OrderApi { db: db.clone(), quotes: quotes.clone(), signal: OutboxSignal::default() };
        let mut orders = Vec::new();
        for i in 0..3 {
            let req = pb::PlaceOrderRequest {
                customer_id: "c-1".into(),
                items: vec![pb::OrderItem { sku: format!("SKU-{i}"), quantity: 1, unit_price_cents: 100 }],
                shipping_address: Some(fuzz::valid_address()),
                idempotency_key: format!("k-{i}"),
            };
            let order = api.place_order(Request::new(req)).await.expect("seed order").into_inner().order;
            orders.push(order.expect("order").order_id);
        }
        let page = pb::ListOrdersRequest { customer_id: "c-1".into(), page_size: 1, page_token: String::new() };
        let token = api.list_orders(Request::new(page)).await.expect("list").into_inner().next_page_token;
        (api, OrderEvents { quotes }, orders, vec![token])
    });
    Fixture { h, api, handler, orders, tokens }
}

/// Mostly `valid`, sometimes hostile text: a request is often valid but for one field.
fn mostly(valid: impl Strategy<Value = String> + 'static) -> BoxedStrategy<String> {
    prop_oneof![5 => valid, 1 => fuzz::text()].boxed()
}

fn item() -> BoxedStrategy<pb::OrderItem> {
    let quantity = prop_oneof![5 => 1..5i32, 1 => fuzz::int32()];
    let price = prop_oneof![5 => 0..10_000i64, 1 => fuzz::int64()];
    (mostly("SKU-[0-9]{1,3}"), quantity, price)
        .prop_map(|(sku, quantity, unit_price_cents)| pb::OrderItem { sku, quantity, unit_price_cents })
        .boxed()
}

fn address() -> BoxedStrategy<Option<pb::ShippingAddress>> {
    prop_oneof![3 => Just(Some(fuzz::valid_address())), 2 => fuzz::address()].boxed()
}

fn place_order() -> BoxedStrategy<pb::PlaceOrderRequest> {
    let items = prop_oneof![6 => proptest::collection::vec(item(), 1..4), 1 => fuzz::repeated(item())];
    (mostly("c-[0-9]"), items, address(), prop_oneof![1 => Just(String::new()), 1 => mostly("k-[0-9]{1,4}")])
        .prop_map(|(customer_id, items, shipping_address, idempotency_key)| pb::PlaceOrderRequest {
            customer_id,
            items,
            shipping_address,
            idempotency_key,
        })
        .boxed()
}

fn place_order_nul(r: &pb::PlaceOrderRequest) -> bool {
    let a = r.shipping_address.clone().unwrap_or_default();
    fuzz::has_nul(
        [r.customer_id.as_str(), &r.idempotency_key, &a.line1, &a.city, &a.postal_code, &a.country]
            .into_iter()
            .chain(r.items.iter().map(|i| i.sku.as_str())),
    )
}

#[test]
fn place_order_never_fails_internally_and_refusals_write_nothing() {
    let fx = fixture("order_fuzz_place");
    fuzz::check("PlaceOrder", &place_order(), |req| {
        let must_refuse = place_order_nul(&req);
        fx.h.call(&[Code::InvalidArgument], must_refuse, fx.api.place_order(Request::new(req)))
    });
}

#[test]
fn get_and_cancel_order_never_fail_internally() {
    let fx = fixture("order_fuzz_get_cancel");
    let calls = (fuzz::id(fx.orders.clone()), prop_oneof![1 => Just(String::new()), 1 => fuzz::text()], any::<bool>());
    fuzz::check("GetOrder/CancelOrder", &calls, |(order_id, reason, cancel)| {
        let must_refuse = fuzz::has_nul([order_id.as_str(), &reason]);
        if cancel {
            let req = pb::CancelOrderRequest { order_id, reason };
            let allowed = [Code::InvalidArgument, Code::NotFound, Code::FailedPrecondition];
            fx.h.call(&allowed, must_refuse, fx.api.cancel_order(Request::new(req)))
        } else {
            let must_refuse = fuzz::has_nul([order_id.as_str()]);
            let req = pb::GetOrderRequest { order_id };
            fx.h.call(&[Code::InvalidArgument, Code::NotFound], must_refuse, fx.api.get_order(Request::new(req)))
        }
    });
}

fn page_token(known: Vec<String>) -> BoxedStrategy<String> {
    prop_oneof![
        2 => Just(String::new()),
        2 => proptest::sample::select(known),
        2 => fuzz::text(),
        2 => (fuzz::int64(), fuzz::text()).prop_map(|(micros, id)| format!("{micros}~{id}")),
        1 => (fuzz::int64(), fuzz::uuid()).prop_map(|(micros, id)| format!("{micros}~{id}")),
    ]
    .boxed()
}

#[test]
fn list_orders_never_fails_internally() {
    let fx = fixture("order_fuzz_list");
    let reqs = (mostly("c-1"), fuzz::int32(), page_token(fx.tokens.clone()))
        .prop_map(|(customer_id, page_size, page_token)| pb::ListOrdersRequest { customer_id, page_size, page_token });
    fuzz::check("ListOrders", &reqs, |req| {
        let must_refuse = fuzz::has_nul([req.customer_id.as_str(), &req.page_token]);
        fx.h.call(&[Code::InvalidArgument], must_refuse, fx.api.list_orders(Request::new(req)))
    });
}

/// The events order consumes, each encoded with hostile fields.
fn typed_event(orders: Vec<String>) -> BoxedStrategy<(String, Vec<u8>)> {
    let order_id = fuzz::id(orders);
    let scheduled = (fuzz::text(), order_id.clone(), fuzz::timestamp()).prop_map(|(delivery_id, order_id, at)| {
        let e = ev::DeliveryScheduled { delivery_id, order_id, scheduled_for: at };
        (ev::DeliveryScheduled::TYPE.to_owned(), e.encode_to_vec())
    });
    let failed = (fuzz::text(), order_id, fuzz::text()).prop_map(|(delivery_id, order_id, reason)| {
        let e = ev::DeliveryFailed { delivery_id, order_id, reason };
        (ev::DeliveryFailed::TYPE.to_owned(), e.encode_to_vec())
    });
    let purchased = (
        (mostly(fuzz::uuid()), fuzz::text(), mostly("c-[0-9]")),
        (mostly("SKU-[0-9]"), prop_oneof![3 => 1..5i32, 1 => fuzz::int32()], fuzz::int64()),
        address(),
        fuzz::timestamp(),
    )
        .prop_map(|((purchase_id, sale_id, customer_id), (sku, quantity, unit_price_cents), addr, at)| {
            let e = ev::TimeSalePurchased {
                purchase_id,
                sale_id,
                customer_id,
                sku,
                quantity,
                unit_price_cents,
                shipping_address: addr,
                purchased_at: at,
            };
            (ev::TimeSalePurchased::TYPE.to_owned(), e.encode_to_vec())
        });
    let other = (fuzz::text(), fuzz::bytes());
    prop_oneof![3 => scheduled, 3 => failed, 4 => purchased, 1 => other].boxed()
}

#[test]
fn consumed_records_apply_or_go_to_the_dlq_writing_nothing() {
    let fx = fixture("order_fuzz_events");
    let records = (fuzz::record(typed_event(fx.orders.clone())), any::<bool>());
    fuzz::check("order consumer", &records, |(record, delivery_topic)| {
        let topic = if delivery_topic { topics::DELIVERY_EVENTS } else { topics::TIMESALE_EVENTS };
        fx.h.consume(&fx.handler, topic, &record)
    });
}

// Regression cases found by the properties above (each was INTERNAL, or a transient
// failure retried forever, on PostgreSQL, which refuses NUL in text and timestamps out
// of its range; SQLite stored them).

/// ListOrders with a page token whose id half holds a NUL reached the query.
#[test]
fn regression_page_token_with_nul_is_invalid_argument() {
    let fx = fixture("order_reg_token");
    for token in ["1700000000000000~ab\u{0}c", "-9223372036854775808~00000000-0000-0000-0000-000000000000"] {
        let req = pb::ListOrdersRequest { customer_id: "c-1".into(), page_size: 0, page_token: token.into() };
        let err = fx.h.rt.block_on(fx.api.list_orders(Request::new(req))).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{token:?}: {err:?}");
        assert!(err.message().starts_with("page_token"), "{err:?}");
    }
}

fn record(ce_id: &str, ce_type: &str, payload: Vec<u8>) -> Record {
    let h = |k: &str, v: &str| (k.to_owned(), Some(v.as_bytes().to_vec()));
    (vec![h("ce_specversion", "1.0"), h("ce_id", ce_id), h("ce_type", ce_type), h("ce_source", "test")], payload)
}

fn permanent(fx: &Fixture, topic: &str, r: &Record) -> String {
    let event = fuzz::inbound(topic, r).expect("headers accepted");
    fx.h.rt.block_on(fuzz::expect_permanent(&fx.h.db, &fx.handler, &event))
}

/// A NUL in `ce_id`, or in a delivery event's order id: the consumer's insert (or the
/// lookup) failed on every retry — a poison pill; now dead-lettered.
#[test]
fn regression_nul_in_event_ids_goes_to_the_dlq() {
    let fx = fixture("order_reg_event_nul");
    let ok = ev::DeliveryScheduled { order_id: fx.orders[0].clone(), ..Default::default() }.encode_to_vec();
    let e = permanent(&fx, topics::DELIVERY_EVENTS, &record("e\u{0}1", ev::DeliveryScheduled::TYPE, ok));
    assert!(e.contains("ce_id"), "{e}");
    let nul = ev::DeliveryScheduled { order_id: "o\u{0}1".into(), ..Default::default() }.encode_to_vec();
    let e = permanent(&fx, topics::DELIVERY_EVENTS, &record("e-2", ev::DeliveryScheduled::TYPE, nul));
    assert!(e.contains("order_id"), "{e}");
}

/// A time-sale purchase with a negative quantity (or NUL in a field) became an order
/// with a negative total on SQLite and a stuck consumer on PostgreSQL.
#[test]
fn regression_malformed_purchase_goes_to_the_dlq() {
    let fx = fixture("order_reg_purchase");
    let good = ev::TimeSalePurchased {
        purchase_id: "p-1".into(),
        sale_id: "s-1".into(),
        customer_id: "c-1".into(),
        sku: "SKU-1".into(),
        quantity: 1,
        unit_price_cents: 100,
        shipping_address: Some(fuzz::valid_address()),
        purchased_at: None,
    };
    let cases = [
        ("items[0].quantity", ev::TimeSalePurchased { quantity: -3, ..good.clone() }),
        ("customer_id", ev::TimeSalePurchased { customer_id: "c\u{0}".into(), ..good.clone() }),
        ("items[0].sku", ev::TimeSalePurchased { sku: "S\u{0}".into(), ..good.clone() }),
        ("shipping_address", ev::TimeSalePurchased { shipping_address: None, ..good.clone() }),
    ];
    for (i, (field, e)) in cases.into_iter().enumerate() {
        let r = record(&format!("e-{i}"), ev::TimeSalePurchased::TYPE, e.encode_to_vec());
        let err = permanent(&fx, topics::TIMESALE_EVENTS, &r);
        assert!(err.contains(field), "{field}: {err}");
    }
}
