//! What the order service does with the events it consumes:
//! `delivery-events` move orders on (saga 1 and its compensation, saga 2);
//! `timesale-events` turn a reserved time-sale purchase into an order (saga 3).

use async_trait::async_trait;
use chrono::Utc;
use cloudmart_platform::{
    consumer::{EventHandler, HandleError, InboundEvent},
    events::{CloudEvent, decode, topics},
    proto::{events::v1 as ev, order::v1 as pb},
    validate,
};
use sea_orm::DatabaseTransaction;

use crate::{
    domain::{self, LineItem, OrderEvent, OrderStatus, Transition},
    quote::{Quote, QuoteClient},
    store::{self, OrderRow},
};

/// Topics the order service consumes.
pub const TOPICS: [&str; 2] = [topics::DELIVERY_EVENTS, topics::TIMESALE_EVENTS];

/// Applies delivery and time-sale events to orders.
pub struct OrderEvents {
    pub(crate) quotes: QuoteClient,
}

/// What [`OrderEvents::prepare`] asked outside the database, for `handle`.
#[derive(Debug)]
pub enum Prepared {
    /// Nothing to ask (delivery outcomes, events order does not handle).
    Nothing,
    /// A time-sale purchase and the delivery quote for it, fetched before the transaction.
    Purchase { event: Box<ev::TimeSalePurchased>, quote: Quote },
}

#[async_trait]
impl EventHandler for OrderEvents {
    type Prepared = Prepared;

    /// The quote for a time-sale purchase is an RPC to delivery: it happens here, before
    /// the transaction, so a slow delivery never holds a connection or a row lock.
    /// A purchase with a bad field fails here, permanently, before the transaction and
    /// before any quote (the consumer has already refused bad event attributes).
    async fn prepare(&self, event: &InboundEvent) -> Result<Prepared, HandleError> {
        if event.meta.ce_type != ev::TimeSalePurchased::TYPE {
            return Ok(Prepared::Nothing);
        }
        let e: ev::TimeSalePurchased = decode(&event.payload)?;
        check_purchase(&e)?;
        let addr = e
            .shipping_address
            .clone()
            .ok_or_else(|| HandleError::Permanent(anyhow::anyhow!("TimeSalePurchased without an address")))?;
        let items =
            vec![pb::OrderItem { sku: e.sku.clone(), quantity: e.quantity, unit_price_cents: e.unit_price_cents }];
        let quote = self.quotes.quote(addr, items).await;
        Ok(Prepared::Purchase { event: Box::new(e), quote })
    }

    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        event: &InboundEvent,
        prepared: Prepared,
    ) -> Result<(), HandleError> {
        match event.meta.ce_type.as_str() {
            ev::DeliveryScheduled::TYPE => {
                let e: ev::DeliveryScheduled = decode(&event.payload)?;
                validate::event_text("order_id", &e.order_id)?;
                on_delivery_outcome(txn, &e.order_id, OrderEvent::DeliveryScheduled).await
            }
            ev::DeliveryFailed::TYPE => {
                let e: ev::DeliveryFailed = decode(&event.payload)?;
                validate::event_text("order_id", &e.order_id)?;
                on_delivery_outcome(txn, &e.order_id, OrderEvent::DeliveryFailed).await
            }
            ev::TimeSalePurchased::TYPE => match prepared {
                Prepared::Purchase { event, quote } => on_time_sale_purchase(txn, *event, quote).await,
                Prepared::Nothing => {
                    Err(HandleError::Permanent(anyhow::anyhow!("TimeSalePurchased reached handle unprepared")))
                }
            },
            other => {
                tracing::debug!(ce_type = other, "event type not handled by order; skipped");
                Ok(())
            }
        }
    }
}

/// The fields of a time-sale purchase that become an order, checked as `PlaceOrder` checks
/// a request (time-sale validated them too: failing here means the event is malformed).
fn check_purchase(e: &ev::TimeSalePurchased) -> Result<(), validate::FieldError> {
    validate::text("purchase_id", &e.purchase_id)?;
    domain::customer_id(&e.customer_id)?;
    domain::line_items(&[(e.sku.clone(), e.quantity, e.unit_price_cents)])?;
    validate::address(e.shipping_address.as_ref())?;
    Ok(())
}

async fn on_delivery_outcome(txn: &DatabaseTransaction, order_id: &str, event: OrderEvent) -> Result<(), HandleError> {
    let Some(row) = store::find(txn, order_id).await? else {
        tracing::warn!(%order_id, ?event, "delivery event for an unknown order; skipped");
        return Ok(());
    };
    let status = OrderStatus::parse(&row.status)
        .ok_or_else(|| HandleError::Permanent(anyhow::anyhow!("order {order_id} has bad status {}", row.status)))?;
    match domain::decide(status, &event) {
        Transition::To { status, cancel_reason, emit } => {
            if store::apply_transition(txn, &row, status, cancel_reason, emit).await?.is_none() {
                return Err(HandleError::Transient(anyhow::anyhow!("order {order_id} changed concurrently")));
            }
            tracing::info!(%order_id, to = %status, "order moved by delivery event");
            // Counted when the transaction commits; a rolled-back attempt is retried and
            // may count twice (metrics are approximate, the database is the truth).
            cloudmart_platform::metrics::counter(
                "orders_total",
                "Orders reaching a status through this process.",
                &[("status", status.as_str())],
            );
        }
        Transition::Ignore | Transition::Reject(_) => {
            tracing::debug!(%order_id, from = %status, ?event, "event absorbed");
        }
    }
    Ok(())
}

/// Creates the order of a time-sale purchase (once) with the quote `prepare` fetched.
async fn on_time_sale_purchase(
    txn: &DatabaseTransaction,
    e: ev::TimeSalePurchased,
    quote: Quote,
) -> Result<(), HandleError> {
    let order_id = domain::order_id_for_purchase(&e.purchase_id);
    if store::find(txn, &order_id).await?.is_some() {
        return Ok(());
    }
    let addr = e
        .shipping_address
        .clone()
        .ok_or_else(|| HandleError::Permanent(anyhow::anyhow!("TimeSalePurchased without an address")))?;
    let items = vec![LineItem { sku: e.sku.clone(), quantity: e.quantity, unit_price_cents: e.unit_price_cents }];
    let total = e.unit_price_cents.saturating_mul(i64::from(e.quantity));
    let (fee, quote_source, refused) = match quote {
        Quote::Fee { cents, source } => (cents, source.as_str(), None),
        Quote::Unserviceable(msg) => (0, "DELIVERY_SERVICE", Some(msg)),
    };
    let now = Utc::now();
    let row = OrderRow {
        order_id: order_id.clone(),
        customer_id: e.customer_id.clone(),
        status: OrderStatus::Pending.as_str().to_owned(),
        cancel_reason: None,
        source: "TIME_SALE".to_owned(),
        time_sale_purchase_id: Some(e.purchase_id.clone()),
        items: store::items_to_json(&items),
        ship_line1: addr.line1,
        ship_city: addr.city,
        ship_postal_code: addr.postal_code,
        ship_country: addr.country,
        items_total_cents: total,
        delivery_fee_cents: fee,
        quote_source: quote_source.to_owned(),
        idempotency_key: None,
        version: 0,
        created_at: now,
        updated_at: now,
    };
    store::insert_placed(txn, row.clone()).await?;
    if let Some(msg) = refused {
        // Delivery will fail to schedule it too; cancelling right away gives the
        // stock back sooner and says why.
        tracing::info!(%order_id, %msg, "time-sale order to an unserviceable address; cancelling");
        store::apply_transition(
            txn,
            &row,
            OrderStatus::Cancelled,
            Some("UNSERVICEABLE_ADDRESS".to_owned()),
            domain::Emit::OrderCancelled,
        )
        .await?;
    }
    tracing::info!(%order_id, purchase_id = %e.purchase_id, "time-sale order created");
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The quote for a time-sale purchase is fetched before the transaction opens: while
    //! delivery hangs, the consumer holds no database connection, so other events (and
    //! the API) keep going.

    use std::sync::Arc;
    use std::time::Duration;

    use cloudmart_platform::{
        breaker::BreakerConfig,
        consumer::{Applied, apply},
        events::EventMeta,
        proto::delivery::v1 as dsvc,
        testkit::TestDatabase,
    };
    use prost::Message;
    use sea_orm::{ConnectOptions, Database};
    use tokio::sync::Notify;

    use super::*;

    /// Answers QuoteDelivery only once the test releases it.
    #[derive(Clone)]
    struct HangingDelivery {
        entered: Arc<Notify>,
        release: Arc<Notify>,
    }

    #[tonic::async_trait]
    impl dsvc::delivery_service_server::DeliveryService for HangingDelivery {
        async fn quote_delivery(
            &self,
            _req: tonic::Request<dsvc::QuoteDeliveryRequest>,
        ) -> Result<tonic::Response<dsvc::QuoteDeliveryResponse>, tonic::Status> {
            self.entered.notify_one();
            self.release.notified().await;
            Ok(tonic::Response::new(dsvc::QuoteDeliveryResponse { fee_cents: 777, estimated_days: 2 }))
        }

        async fn get_delivery(
            &self,
            _req: tonic::Request<dsvc::GetDeliveryRequest>,
        ) -> Result<tonic::Response<dsvc::Delivery>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }
    }

    fn inbound(ce_type: &str, id: &str, payload: Vec<u8>) -> InboundEvent {
        InboundEvent {
            meta: EventMeta {
                id: id.into(),
                ce_type: ce_type.into(),
                source: "test".into(),
                time: Utc::now().to_rfc3339(),
                traceparent: None,
                tracestate: None,
            },
            topic: topics::TIMESALE_EVENTS.into(),
            key: None,
            payload,
            partition: 0,
            offset: 0,
        }
    }

    #[tokio::test]
    async fn a_hanging_delivery_holds_no_database_connection() {
        let fake = HangingDelivery { entered: Arc::new(Notify::new()), release: Arc::new(Notify::new()) };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let delivery = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(dsvc::delivery_service_server::DeliveryServiceServer::new(fake.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );

        let tdb = TestDatabase::create("order_prepare").await.expect("database");
        cloudmart_platform::db::migrate::<store::Migrator>(
            &cloudmart_platform::db::connect(&tdb.url).await.expect("connect"),
        )
        .await
        .expect("migrate");
        // One connection in the pool: if the consumer held it across the quote, nothing
        // else could touch the database until delivery answered.
        let mut opts = ConnectOptions::new(tdb.url.clone());
        opts.max_connections(1).min_connections(1).acquire_timeout(Duration::from_secs(120)).sqlx_logging(false);
        let db = Database::connect(opts).await.expect("one-connection pool");

        // A long quote deadline, so the old design (quote inside the transaction) would
        // hold the connection far beyond this test's deadline below.
        let quotes =
            QuoteClient::new(&delivery, Duration::from_secs(120), 500, BreakerConfig::default()).expect("client");
        let handler = Arc::new(OrderEvents { quotes });

        let purchase = ev::TimeSalePurchased {
            purchase_id: "p-hang-1".into(),
            sale_id: "s-1".into(),
            customer_id: "c-1".into(),
            sku: "SKU-1".into(),
            quantity: 1,
            unit_price_cents: 1000,
            shipping_address: Some(pb::ShippingAddress {
                line1: "1 Main St".into(),
                city: "Seoul".into(),
                postal_code: "04524".into(),
                country: "KR".into(),
            }),
            purchased_at: None,
        };
        let purchase_event = inbound(ev::TimeSalePurchased::TYPE, "e-purchase", purchase.encode_to_vec());
        let waiting = {
            let (db, handler) = (db.clone(), handler.clone());
            tokio::spawn(async move { apply(&db, &*handler, &purchase_event).await })
        };
        tokio::time::timeout(Duration::from_secs(30), fake.entered.notified())
            .await
            .expect("the consumer asked for a quote");

        // Delivery hangs now. Another event still applies: it needs the pool's only connection.
        let other = ev::DeliveryScheduled { order_id: "unknown-order".into(), ..Default::default() };
        let other_event = inbound(ev::DeliveryScheduled::TYPE, "e-other", other.encode_to_vec());
        let applied = tokio::time::timeout(Duration::from_secs(60), apply(&db, &*handler, &other_event))
            .await
            .expect("another event applied while delivery hangs (the quote holds no connection)")
            .expect("applied");
        assert_eq!(applied, Applied::Applied);
        assert!(!waiting.is_finished(), "the purchase is still waiting for its quote");

        fake.release.notify_one();
        let purchase_applied = tokio::time::timeout(Duration::from_secs(60), waiting)
            .await
            .expect("the purchase finishes once delivery answers")
            .expect("task")
            .expect("applied");
        assert_eq!(purchase_applied, Applied::Applied);
        let order = store::find(&db, &domain::order_id_for_purchase("p-hang-1"))
            .await
            .expect("read")
            .expect("the order exists");
        assert_eq!(order.delivery_fee_cents, 777, "with the quote fetched before the transaction");
        assert_eq!(order.quote_source, "DELIVERY_SERVICE");
    }
}
