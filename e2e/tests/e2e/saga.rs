//! Sagas 1 and 2 over real processes: confirmations, compensations, idempotency,
//! CloudEvents headers, duplicate events, a crash between commit and publish, the DLQ.

use std::{collections::HashMap, time::Duration};

use cloudmart_platform::proto::contract::topics;
use cloudmart_platform::{
    events::{CloudEvent, headers},
    outbox,
    proto::{
        delivery::v1::{self as dpb, delivery_service_client::DeliveryServiceClient},
        events::v1 as ev,
        order::v1::{self as pb, order_service_client::OrderServiceClient},
    },
    testkit::{committed_offset, eventually, produce_raw, read_records, until},
};
use futures::{StreamExt, stream};
use tonic::transport::Channel;

use crate::harness::System;

/// A one-item order for `customer` shipped to `postal_code` (KR).
pub(crate) fn request(customer: &str, postal_code: &str, key: &str) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        customer_id: customer.into(),
        items: vec![pb::OrderItem { sku: "SKU-1".into(), quantity: 1, unit_price_cents: 1000 }],
        shipping_address: Some(pb::ShippingAddress {
            line1: "1 Main St".into(),
            city: "Seoul".into(),
            postal_code: postal_code.into(),
            country: "KR".into(),
        }),
        idempotency_key: key.into(),
    }
}

pub(crate) async fn wait_terminal(client: &OrderServiceClient<Channel>, ids: &[String]) -> HashMap<String, pb::Order> {
    let done = std::sync::Mutex::new(HashMap::new());
    until("every order CONFIRMED or CANCELLED", Duration::from_secs(180), || async {
        let mut client = client.clone();
        let pending: Vec<String> = {
            let done = done.lock().unwrap();
            ids.iter().filter(|id| !done.contains_key(*id)).cloned().collect()
        };
        for id in pending {
            let o = client.get_order(pb::GetOrderRequest { order_id: id.clone() }).await.unwrap().into_inner();
            if matches!(o.status(), pb::OrderStatus::Confirmed | pb::OrderStatus::Cancelled) {
                done.lock().unwrap().insert(id, o);
            }
        }
        let n = done.lock().unwrap().len();
        if n == ids.len() { Ok(()) } else { Err(format!("{} of {} orders still pending", ids.len() - n, ids.len())) }
    })
    .await;
    done.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_reach_the_right_terminal_state_over_processes() {
    let sys = System::new("saga").await;
    let delivery =
        sys.start_delivery(&[("FAULT_DELIVERY_FAIL_POSTAL_CODES", "99999"), ("DELIVERY_DAILY_CAPACITY", "5")]).await;
    let order = sys.start_order(&[]).await;
    let client = OrderServiceClient::connect(format!("http://{}", sys.order_addr)).await.unwrap();

    // 50 orders to distinct postal codes (confirmed), 8 to one postal code with capacity
    // 5 (5 confirmed, 3 cancelled), 10 to the fault-injected postal code (cancelled).
    let mut plan: Vec<(String, &'static str)> = (0..50).map(|i| (format!("1{i:04}"), "ok")).collect();
    plan.extend((0..8).map(|_| ("55555".to_owned(), "capacity")));
    plan.extend((0..10).map(|_| ("99999".to_owned(), "fault")));
    let placed: Vec<(pb::Order, &str, pb::PlaceOrderRequest)> = stream::iter(plan.into_iter().enumerate())
        .map(|(i, (postal, kind))| {
            let mut c = client.clone();
            async move {
                let req = request(&format!("cust-{}", i % 7), &postal, &format!("key-{i}"));
                let o = c.place_order(req.clone()).await.unwrap().into_inner().order.unwrap();
                (o, kind, req)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert_eq!(placed.len(), 68);
    assert!(
        placed
            .iter()
            .all(|(o, ..)| o.quote_source() == pb::QuoteSource::DeliveryService && o.delivery_fee_cents == 300)
    );

    let ids: Vec<String> = placed.iter().map(|(o, ..)| o.order_id.clone()).collect();
    let finals = wait_terminal(&client, &ids).await;
    let mut dclient = DeliveryServiceClient::connect(format!("http://{}", sys.delivery_addr)).await.unwrap();
    let (mut capacity_ok, mut capacity_failed) = (0, 0);
    for (o, kind, _) in &placed {
        let f = &finals[&o.order_id];
        let d =
            dclient.get_delivery(dpb::GetDeliveryRequest { order_id: o.order_id.clone() }).await.unwrap().into_inner();
        match *kind {
            "ok" => {
                assert_eq!(f.status(), pb::OrderStatus::Confirmed, "{}", o.order_id);
                assert_eq!(d.status(), dpb::DeliveryStatus::Scheduled);
                assert!(d.scheduled_for.is_some());
            }
            "fault" => {
                assert_eq!(f.status(), pb::OrderStatus::Cancelled);
                assert_eq!(f.cancel_reason, "DELIVERY_FAILED");
                assert_eq!(d.status(), dpb::DeliveryStatus::Failed);
                assert_eq!(d.failure_reason, "FAULT_INJECTED");
            }
            _ => match f.status() {
                pb::OrderStatus::Confirmed => {
                    capacity_ok += 1;
                    assert_eq!(d.status(), dpb::DeliveryStatus::Scheduled);
                }
                _ => {
                    capacity_failed += 1;
                    assert_eq!(f.cancel_reason, "DELIVERY_FAILED");
                    assert_eq!(d.failure_reason, "REGION_CAPACITY_EXHAUSTED");
                }
            },
        }
    }
    assert_eq!((capacity_ok, capacity_failed), (5, 3), "daily capacity of a postal code holds");

    // A repeated idempotency key returns the first order and creates nothing.
    let (first, _, first_req) = &placed[0];
    let again = client.clone().place_order(first_req.clone()).await.unwrap().into_inner().order.unwrap();
    assert_eq!(again.order_id, first.order_id);
    assert_eq!(again.status(), pb::OrderStatus::Confirmed, "the replay shows the order as it is now");

    // Every event carries the CloudEvents binding headers.
    let order_events = read_records(&sys.kafka.args, topics::ORDER_EVENTS, 68 * 2, Duration::from_secs(60)).await;
    let delivery_events = read_records(&sys.kafka.args, topics::DELIVERY_EVENTS, 68, Duration::from_secs(60)).await;
    for r in order_events.iter().chain(&delivery_events) {
        assert_eq!(r.headers[headers::SPECVERSION], "1.0");
        assert_eq!(r.headers[headers::CONTENT_TYPE], "application/protobuf");
        assert!(!r.headers[headers::ID].is_empty());
        assert!(r.headers[headers::TYPE].starts_with("cloudmart."));
        assert!(!r.headers[headers::TIME].is_empty());
    }
    let count = |rs: &[cloudmart_platform::testkit::Record], t: &str| {
        rs.iter().filter(|r| r.headers[headers::TYPE] == t).count()
    };
    assert_eq!(count(&order_events, ev::OrderPlaced::TYPE), 68);
    assert_eq!(count(&order_events, ev::OrderConfirmed::TYPE), 55);
    assert_eq!(count(&order_events, ev::OrderCancelled::TYPE), 13);
    assert_eq!(count(&delivery_events, ev::DeliveryScheduled::TYPE), 55);
    assert_eq!(count(&delivery_events, ev::DeliveryFailed::TYPE), 13);
    assert!(order_events.iter().all(|r| r.headers[headers::SOURCE] == "order"));
    assert!(delivery_events.iter().all(|r| r.headers[headers::SOURCE] == "delivery"));

    // Re-publish an OrderPlaced of a cancelled order and a DeliveryScheduled of a
    // confirmed one: once the consumers have committed past them, nothing has changed.
    let fault_id = &placed.iter().find(|(_, k, _)| *k == "fault").unwrap().0.order_id;
    let dup_placed = order_events
        .iter()
        .find(|r| r.key.as_deref() == Some(fault_id.as_str()) && r.headers[headers::TYPE] == ev::OrderPlaced::TYPE)
        .unwrap();
    let dup_scheduled = delivery_events
        .iter()
        .find(|r| {
            r.key.as_deref() == Some(first.order_id.as_str()) && r.headers[headers::TYPE] == ev::DeliveryScheduled::TYPE
        })
        .unwrap();
    let hdrs = |r: &cloudmart_platform::testkit::Record| -> Vec<(String, String)> {
        r.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let h1 = hdrs(dup_placed);
    let h1: Vec<(&str, &str)> = h1.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (p1, o1) = produce_raw(&sys.kafka.args, topics::ORDER_EVENTS, fault_id, &dup_placed.payload, &h1).await;
    let h2 = hdrs(dup_scheduled);
    let h2: Vec<(&str, &str)> = h2.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (p2, o2) =
        produce_raw(&sys.kafka.args, topics::DELIVERY_EVENTS, &first.order_id, &dup_scheduled.payload, &h2).await;
    let kafka = sys.kafka.args.clone();
    let (g_delivery, g_order) = (sys.group("delivery"), sys.group("order"));
    eventually("consumers committed past the duplicates", Duration::from_secs(60), || {
        let kafka = kafka.clone();
        let (gd, go) = (g_delivery.clone(), g_order.clone());
        async move {
            let d = committed_offset(&kafka, &gd, topics::ORDER_EVENTS, p1).is_some_and(|c| c > o1);
            let o = committed_offset(&kafka, &go, topics::DELIVERY_EVENTS, p2).is_some_and(|c| c > o2);
            (d && o).then_some(())
        }
    })
    .await;
    let after = read_records(&sys.kafka.args, topics::DELIVERY_EVENTS, 69, Duration::from_secs(30)).await;
    assert_eq!(after.len(), 69, "only the re-published duplicate was added: no new delivery event");
    let f = client.clone().get_order(pb::GetOrderRequest { order_id: fault_id.clone() }).await.unwrap().into_inner();
    assert_eq!(f.status(), pb::OrderStatus::Cancelled);
    let d = dclient.get_delivery(dpb::GetDeliveryRequest { order_id: fault_id.clone() }).await.unwrap().into_inner();
    assert_eq!(d.status(), dpb::DeliveryStatus::Failed);
    let log = delivery.log_text() + &order.log_text();
    assert!(log.contains("duplicate event ignored"), "the consumers saw and ignored the duplicates");

    // Graceful shutdown on SIGTERM: exit 0; then every invariant holds.
    assert!(order.terminate(Duration::from_secs(30)).success());
    assert!(delivery.terminate(Duration::from_secs(30)).success());
    crate::timesale::audit(&sys.order_db, &sys.delivery_db, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_commit_and_publish_loses_no_event() {
    let sys = System::new("crash").await;
    let delivery = sys.start_delivery(&[]).await;
    // The relay is off: PlaceOrder commits the order and its OrderPlaced, nothing is sent.
    let order = sys.start_order(&[("OUTBOX_RELAY", "off")]).await;
    let mut client = OrderServiceClient::connect(format!("http://{}", sys.order_addr)).await.unwrap();
    let o = client.place_order(request("c", "12345", "k")).await.unwrap().into_inner().order.unwrap();
    let db = cloudmart_platform::db::connect(&sys.order_db).await.unwrap();
    assert_eq!(outbox::backlog(&db).await.unwrap(), 1, "committed but not published");
    order.crash();
    drop(client);

    // Restart with the relay on: the event goes out and the saga completes.
    let order = sys.start_order(&[]).await;
    let client = OrderServiceClient::connect(format!("http://{}", sys.order_addr)).await.unwrap();
    let finals = wait_terminal(&client, std::slice::from_ref(&o.order_id)).await;
    assert_eq!(finals[&o.order_id].status(), pb::OrderStatus::Confirmed);
    // CONFIRMED is committed together with OrderConfirmed in the outbox, so the backlog
    // drains to 0 just after the status flips, not at the same instant.
    eventually("the order outbox drains", Duration::from_secs(30), || {
        let db = db.clone();
        async move { (outbox::backlog(&db).await.unwrap() == 0).then_some(()) }
    })
    .await;
    let events = read_records(&sys.kafka.args, topics::ORDER_EVENTS, 2, Duration::from_secs(30)).await;
    let placed: Vec<_> = events.iter().filter(|r| r.headers[headers::TYPE] == ev::OrderPlaced::TYPE).collect();
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].key.as_deref(), Some(o.order_id.as_str()));
    assert!(order.terminate(Duration::from_secs(30)).success());
    assert!(delivery.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_order_event_is_dead_lettered_and_the_next_order_completes() {
    let sys = System::new("dlq").await;
    let delivery = sys.start_delivery(&[]).await;
    let order = sys.start_order(&[]).await;
    produce_raw(&sys.kafka.args, topics::ORDER_EVENTS, "garbage", b"\x00\x01 not an event", &[]).await;
    produce_raw(
        &sys.kafka.args,
        topics::ORDER_EVENTS,
        "garbage",
        &[0xff, 0xff],
        &[
            (headers::SPECVERSION, "1.0"),
            (headers::ID, &uuid::Uuid::new_v4().to_string()),
            (headers::TYPE, ev::OrderPlaced::TYPE),
            (headers::SOURCE, "test"),
        ],
    )
    .await;
    let dlq = read_records(
        &sys.kafka.args,
        &cloudmart_platform::events::dlq_topic(topics::ORDER_EVENTS),
        2,
        Duration::from_secs(60),
    )
    .await;
    assert!(dlq.iter().all(|r| !r.headers[headers::DLQ_ERROR].is_empty()));
    assert!(dlq.iter().any(|r| r.headers[headers::DLQ_ERROR].contains("missing header")));
    assert!(dlq.iter().any(|r| r.headers[headers::DLQ_ERROR].contains("does not decode")));

    let mut client = OrderServiceClient::connect(format!("http://{}", sys.order_addr)).await.unwrap();
    let o = client.place_order(request("c", "12345", "")).await.unwrap().into_inner().order.unwrap();
    let finals = wait_terminal(&client, std::slice::from_ref(&o.order_id)).await;
    assert_eq!(finals[&o.order_id].status(), pb::OrderStatus::Confirmed);
    assert!(order.terminate(Duration::from_secs(30)).success());
    assert!(delivery.terminate(Duration::from_secs(30)).success());
}
