//! What the order service does with the events it consumes:
//! `delivery-events` move orders on (saga 1 and its compensation, saga 2);
//! `timesale-events` turn a reserved time-sale purchase into an order (saga 3).
//!
//! Failures are [`HandleError`]s: a malformed event or a corrupt order row is permanent
//! (the record goes to the DLQ), a database failure or a lost race transient (retried);
//! the store's `StoreError` says which it is (`ApplyFailure`), `?` does the rest.

use async_trait::async_trait;
use chrono::Utc;
use cloudmart_platform::proto::contract::topics;
use cloudmart_platform::{
    consumer::{ApplyFailure, EventHandler, HandleError, InboundEvent},
    events::{CloudEvent, decode},
    proto::events::v1 as ev,
    validate,
};
use sea_orm::DatabaseTransaction;

use crate::{
    convert,
    domain::{self, Address, Fee, Lines, Order, OrderEvent, Origin, QuoteSource, Transition},
    quote::{Quote, QuoteClient},
    store::{self, StoreError},
};

/// Topics the order service consumes.
pub const TOPICS: [&str; 2] = [topics::DELIVERY_EVENTS, topics::TIMESALE_EVENTS];

/// Applies delivery and time-sale events to orders.
pub struct OrderEvents {
    pub(crate) quotes: QuoteClient,
}

/// A time-sale purchase checked as `PlaceOrder` checks a request (time-sale validated it
/// too: failing the check means the event is malformed).
#[derive(Debug)]
pub struct Purchase {
    /// As the event carries it: the order id derives from it, and it goes back to
    /// time-sale in `OrderConfirmed`/`OrderCancelled`.
    pub purchase_id: String,
    pub customer_id: String,
    pub lines: Lines,
    pub address: Address,
}

impl TryFrom<&ev::TimeSalePurchased> for Purchase {
    type Error = validate::FieldError;

    fn try_from(e: &ev::TimeSalePurchased) -> Result<Self, validate::FieldError> {
        validate::text("purchase_id", &e.purchase_id)?;
        Ok(Purchase {
            purchase_id: e.purchase_id.clone(),
            customer_id: domain::customer_id(&e.customer_id)?,
            lines: domain::line_items(&[(e.sku.clone(), e.quantity, e.unit_price_cents)])?,
            address: Address::parse(e.shipping_address.as_ref())?,
        })
    }
}

/// What [`OrderEvents::prepare`] asked outside the database, for `handle`.
#[derive(Debug)]
pub enum Prepared {
    /// Nothing to ask (delivery outcomes, events order does not handle).
    Nothing,
    /// A checked time-sale purchase and the delivery quote for it, fetched before the
    /// transaction.
    Purchase { purchase: Box<Purchase>, quote: Quote },
}

/// A corrupt order row can never be applied (permanent); the database may recover
/// (transient).
impl ApplyFailure for StoreError {
    fn is_permanent(&self) -> bool {
        match self {
            StoreError::Db(_) => false,
            StoreError::Items { .. } | StoreError::NoPurchaseId { .. } => true,
        }
    }
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
        let purchase = Purchase::try_from(&e)?;
        let quote = self.quotes.quote(purchase.address.to_proto(), convert::items(&purchase.lines.items)).await;
        Ok(Prepared::Purchase { purchase: Box::new(purchase), quote })
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
                Prepared::Purchase { purchase, quote } => on_time_sale_purchase(txn, *purchase, quote).await,
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

async fn on_delivery_outcome(txn: &DatabaseTransaction, order_id: &str, event: OrderEvent) -> Result<(), HandleError> {
    let Some(order) = store::find(txn, order_id).await? else {
        tracing::warn!(%order_id, ?event, "delivery event for an unknown order; skipped");
        return Ok(());
    };
    match order.decide(&event) {
        Transition::To(change) => {
            let Some(changed) = store::apply(txn, &order, change).await? else {
                return Err(HandleError::Transient(anyhow::anyhow!("order {order_id} changed concurrently")));
            };
            tracing::info!(%order_id, to = %changed.status, "order moved by delivery event");
            // Counted when the transaction commits; a rolled-back attempt is retried and
            // may count twice (metrics are approximate, the database is the truth).
            crate::count_reached(changed.status);
        }
        Transition::Ignore | Transition::Reject(_) => {
            tracing::debug!(%order_id, from = %order.status, ?event, "event absorbed");
        }
    }
    Ok(())
}

/// Creates the order of a time-sale purchase (once) with the quote `prepare` fetched; an
/// address delivery refused to serve cancels it at once.
async fn on_time_sale_purchase(txn: &DatabaseTransaction, purchase: Purchase, quote: Quote) -> Result<(), HandleError> {
    let order_id = domain::order_id_for_purchase(&purchase.purchase_id);
    if store::find(txn, &order_id).await?.is_some() {
        return Ok(());
    }
    let (fee, refused) = match quote {
        Quote::Fee(fee) => (fee, None),
        // Delivery answered: no fee, the address is not served.
        Quote::Unserviceable(message) => (Fee { cents: 0, source: QuoteSource::DeliveryService }, Some(message)),
    };
    let purchase_id = purchase.purchase_id.clone();
    let order = Order::new(
        order_id.clone(),
        purchase.customer_id,
        Origin::TimeSale { purchase_id: purchase.purchase_id },
        purchase.lines,
        purchase.address,
        fee,
        Utc::now(),
    );
    store::insert_placed(txn, &order).await?;
    if let Some(message) = refused
        && let Transition::To(change) = order.decide(&OrderEvent::Unserviceable)
    {
        // Delivery will fail to schedule it too; cancelling right away gives the
        // stock back sooner and says why.
        tracing::info!(%order_id, %message, "time-sale order to an unserviceable address; cancelling");
        store::apply(txn, &order, change).await?;
    }
    tracing::info!(%order_id, %purchase_id, "time-sale order created");
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
        proto::{delivery::v1 as dsvc, order::v1 as pb},
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
        assert_eq!(order.delivery_fee.cents, 777, "with the quote fetched before the transaction");
        assert_eq!(order.delivery_fee.source, QuoteSource::DeliveryService);
    }
}
