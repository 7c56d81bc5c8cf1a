//! Malformed input, generated (proptest): every `TimeSaleService` request message and
//! every record the time-sale consumer takes, built from hostile strategies
//! (`platform::fuzz`), against the service implementation in-process (batched
//! reservations, the default) on a fresh database — SQLite, or PostgreSQL when
//! `TEST_DATABASE_URL` is set. Proves:
//! - no call panics; each is answered OK or refused with an expected code, never
//!   `INTERNAL`; `INVALID_ARGUMENT` names the field; a refused call writes nothing;
//! - a NUL in a sale's sku or title, a customer id, an address line or an idempotency
//!   key is `INVALID_ARGUMENT` on every backend, and so is a time no backend can store;
//! - a record either applies or fails permanently (DLQ) writing nothing — never
//!   transiently, which would retry it forever.
//!
//! The failures the properties found are kept below as named regression tests.

use chrono::Utc;
use cloudmart_platform::proto::contract::topics;
use cloudmart_platform::{
    consumer::{HandleError, apply},
    events::CloudEvent,
    fuzz::{self, Harness, Record, proptest::prelude::*},
    outbox::OutboxSignal,
    proto::{
        events::v1 as ev,
        timesale::v1::{self as pb, time_sale_service_server::TimeSaleService},
    },
};
use prost::Message;
use tonic::{Code, Request};

use crate::{
    events::TimeSaleEvents,
    grpc::TimeSaleApi,
    ledger::{ReservationMode, StockLedger},
    store,
};

struct Fixture {
    h: Harness,
    api: TimeSaleApi,
    /// An active sale, then one that has not started.
    sales: Vec<String>,
    purchases: Vec<String>,
}

fn ts(t: chrono::DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(cloudmart_platform::proto_time(t))
}

fn sale(starts: chrono::DateTime<Utc>) -> pb::CreateSaleRequest {
    pb::CreateSaleRequest {
        sku: "SKU-1".into(),
        title: "Console".into(),
        price_cents: 1_000,
        total_stock: 1_000_000,
        per_customer_limit: 1_000,
        starts_at: ts(starts),
        ends_at: ts(starts + chrono::Duration::days(1)),
    }
}

/// A fresh database with an active sale (and a purchase of it) and a future sale.
fn fixture(label: &str) -> Fixture {
    let h = Harness::new::<store::Migrator>(label, false);
    let (api, sales, purchases) = h.rt.block_on(async {
        let db = h.db.clone();
        let api = TimeSaleApi {
            db: db.clone(),
            ledger: StockLedger::new(db.clone(), ReservationMode::Batched, OutboxSignal::default()),
            terms: Default::default(),
        };
        let now = Utc::now();
        let mut sales = Vec::new();
        for starts in [now - chrono::Duration::hours(1), now + chrono::Duration::days(1)] {
            sales.push(api.create_sale(Request::new(sale(starts))).await.expect("seed sale").into_inner().sale_id);
        }
        let req = pb::PurchaseRequest {
            sale_id: sales[0].clone(),
            customer_id: "c-1".into(),
            quantity: 1,
            shipping_address: Some(fuzz::valid_address()),
            idempotency_key: "k-1".into(),
        };
        let purchase = api.purchase(Request::new(req)).await.expect("seed purchase").into_inner().purchase;
        (api, sales, vec![purchase.expect("purchase").purchase_id])
    });
    Fixture { h, api, sales, purchases }
}

fn mostly(valid: impl Strategy<Value = String> + 'static) -> BoxedStrategy<String> {
    prop_oneof![5 => valid, 1 => fuzz::text()].boxed()
}

fn create_sale() -> BoxedStrategy<pb::CreateSaleRequest> {
    let now = Utc::now();
    let starts = prop_oneof![3 => Just(ts(now)), 1 => fuzz::timestamp()];
    let ends = prop_oneof![3 => Just(ts(now + chrono::Duration::days(1))), 1 => fuzz::timestamp()];
    let number = |valid: std::ops::Range<i32>| prop_oneof![4 => valid, 1 => fuzz::int32()];
    (
        (mostly("SKU-[0-9]{1,3}"), mostly("[A-Za-z ]{1,20}"), prop_oneof![4 => 0..10_000i64, 1 => fuzz::int64()]),
        (number(1..1_000), number(1..10), starts, ends),
    )
        .prop_map(|((sku, title, price_cents), (total_stock, per_customer_limit, starts_at, ends_at))| {
            pb::CreateSaleRequest { sku, title, price_cents, total_stock, per_customer_limit, starts_at, ends_at }
        })
        .boxed()
}

#[test]
fn create_sale_never_fails_internally_and_refusals_write_nothing() {
    let fx = fixture("timesale_fuzz_create");
    fuzz::check("CreateSale", &create_sale(), |req| {
        let must_refuse = fuzz::has_nul([req.sku.as_str(), &req.title]);
        fx.h.call(&[Code::InvalidArgument], must_refuse, fx.api.create_sale(Request::new(req)))
    });
}

#[test]
fn purchase_never_fails_internally_and_refusals_write_nothing() {
    let fx = fixture("timesale_fuzz_purchase");
    let address = prop_oneof![3 => Just(Some(fuzz::valid_address())), 2 => fuzz::address()];
    let reqs =
        (
            fuzz::id(fx.sales.clone()),
            mostly("c-[0-9]"),
            prop_oneof![4 => 1..3i32, 1 => fuzz::int32()],
            address,
            prop_oneof![1 => Just(String::new()), 1 => mostly("k-[0-9]{1,4}")],
        )
            .prop_map(|(sale_id, customer_id, quantity, shipping_address, idempotency_key)| {
                pb::PurchaseRequest { sale_id, customer_id, quantity, shipping_address, idempotency_key }
            });
    fuzz::check("Purchase", &reqs, |req| {
        let a = req.shipping_address.clone().unwrap_or_default();
        let must_refuse = fuzz::has_nul([
            req.sale_id.as_str(),
            &req.customer_id,
            &req.idempotency_key,
            &a.line1,
            &a.city,
            &a.postal_code,
            &a.country,
        ]);
        let allowed = [Code::InvalidArgument, Code::NotFound, Code::FailedPrecondition];
        fx.h.call(&allowed, must_refuse, fx.api.purchase(Request::new(req)))
    });
}

#[test]
fn reads_never_fail_internally_and_write_nothing() {
    let fx = fixture("timesale_fuzz_reads");
    let ids = fx.sales.iter().chain(&fx.purchases).cloned().collect();
    fuzz::check("GetSale/GetPurchase/ListSales", &(fuzz::id(ids), 0..3u8), |(id, which)| {
        let must_refuse = fuzz::has_nul([id.as_str()]);
        let allowed = [Code::InvalidArgument, Code::NotFound];
        match which {
            0 => fx.h.call(&allowed, must_refuse, fx.api.get_sale(Request::new(pb::GetSaleRequest { sale_id: id }))),
            1 => {
                let req = pb::GetPurchaseRequest { purchase_id: id };
                fx.h.call(&allowed, must_refuse, fx.api.get_purchase(Request::new(req)))
            }
            _ => {
                let req = pb::ListSalesRequest { active_only: id.len() % 2 == 0 };
                fx.h.call(&[], false, fx.api.list_sales(Request::new(req)))
            }
        }
    });
}

/// The events time-sale consumes, each encoded with hostile fields.
fn typed_event(purchases: Vec<String>) -> BoxedStrategy<(String, Vec<u8>)> {
    let purchase = prop_oneof![1 => Just(String::new()), 3 => fuzz::id(purchases)];
    let order_id = prop_oneof![3 => fuzz::uuid(), 1 => fuzz::text()];
    let placed = (order_id.clone(), purchase.clone(), fuzz::address(), fuzz::int64()).prop_map(|(o, p, a, total)| {
        let e = ev::OrderPlaced {
            order_id: o,
            time_sale_purchase_id: p,
            shipping_address: a,
            items_total_cents: total,
            ..Default::default()
        };
        (ev::OrderPlaced::TYPE.to_owned(), e.encode_to_vec())
    });
    let confirmed = (order_id.clone(), purchase.clone(), fuzz::timestamp()).prop_map(|(o, p, at)| {
        let e = ev::OrderConfirmed { order_id: o, time_sale_purchase_id: p, confirmed_at: at };
        (ev::OrderConfirmed::TYPE.to_owned(), e.encode_to_vec())
    });
    let cancelled = (order_id, purchase, fuzz::text()).prop_map(|(o, p, reason)| {
        let e = ev::OrderCancelled { order_id: o, reason, time_sale_purchase_id: p, cancelled_at: None };
        (ev::OrderCancelled::TYPE.to_owned(), e.encode_to_vec())
    });
    let other = (fuzz::text(), fuzz::bytes());
    prop_oneof![3 => placed, 3 => confirmed, 2 => cancelled, 1 => other].boxed()
}

#[test]
fn consumed_records_apply_or_go_to_the_dlq_writing_nothing() {
    let fx = fixture("timesale_fuzz_events");
    fuzz::check("time-sale consumer", &fuzz::record(typed_event(fx.purchases.clone())), |r| {
        fx.h.consume(&TimeSaleEvents, topics::ORDER_EVENTS, &r)
    });
}

// Regression cases found by the properties above (INTERNAL, or a transient failure
// retried forever, on PostgreSQL, which refuses NUL in text and times out of its range).

/// A sale time before 4713 BC (PostgreSQL refuses it: INTERNAL), past 9999, or with
/// negative nanos (silently read as 0).
#[test]
fn regression_sale_times_out_of_range_are_invalid_argument() {
    let fx = fixture("timesale_reg_times");
    let now = Utc::now();
    let far = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
    let cases = [
        ("starts_at", pb::CreateSaleRequest { starts_at: far(-8_210_298_412_800), ..sale(now) }),
        ("ends_at", pb::CreateSaleRequest { ends_at: far(8_210_266_876_799), ..sale(now) }),
        (
            "starts_at",
            pb::CreateSaleRequest { starts_at: Some(prost_types::Timestamp { seconds: 0, nanos: -1 }), ..sale(now) },
        ),
        ("title", pb::CreateSaleRequest { title: "Con\u{0}sole".into(), ..sale(now) }),
    ];
    for (field, req) in cases {
        let before = fx.h.rt.block_on(fuzz::row_counts(&fx.h.db)).unwrap();
        let err = fx.h.rt.block_on(fx.api.create_sale(Request::new(req))).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(err.message().starts_with(field), "{field}: {err:?}");
        assert_eq!(fx.h.rt.block_on(fuzz::row_counts(&fx.h.db)).unwrap(), before);
    }
}

/// NUL in `ce_id` or in the order id linked to a known purchase.
#[test]
fn regression_nul_in_event_ids_goes_to_the_dlq() {
    let fx = fixture("timesale_reg_events");
    let h = |k: &str, v: &str| (k.to_owned(), Some(v.as_bytes().to_vec()));
    let placed = |order_id: &str| {
        ev::OrderPlaced {
            order_id: order_id.into(),
            time_sale_purchase_id: fx.purchases[0].clone(),
            ..Default::default()
        }
        .encode_to_vec()
    };
    for (field, ce_id, payload) in [("ce_id", "e\u{0}", placed("o-1")), ("order_id", "e-1", placed("o\u{0}1"))] {
        let r: Record = (
            vec![
                h("ce_specversion", "1.0"),
                h("ce_id", ce_id),
                h("ce_type", ev::OrderPlaced::TYPE),
                h("ce_source", "t"),
            ],
            payload,
        );
        let event = fuzz::inbound(topics::ORDER_EVENTS, &r).expect("headers accepted");
        let before = fx.h.rt.block_on(fuzz::row_counts(&fx.h.db)).unwrap();
        match fx.h.rt.block_on(apply(&fx.h.db, &TimeSaleEvents, &event)) {
            Err(HandleError::Permanent(e)) => assert!(format!("{e:#}").contains(field), "{field}: {e:#}"),
            other => panic!("{field}: expected a permanent failure, got {other:?}"),
        }
        assert_eq!(fx.h.rt.block_on(fuzz::row_counts(&fx.h.db)).unwrap(), before, "nothing written");
    }
}
