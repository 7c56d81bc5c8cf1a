//! What the order service does with the events it consumes:
//! `delivery-events` move orders on (saga 1 and its compensation, saga 2);
//! `timesale-events` turn a reserved time-sale purchase into an order (saga 3).

use async_trait::async_trait;
use chrono::Utc;
use cloudmart_platform::{
    consumer::{EventHandler, HandleError, InboundEvent},
    events::{CloudEvent, decode, topics},
    proto::{events::v1 as ev, order::v1 as pb},
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

#[async_trait]
impl EventHandler for OrderEvents {
    async fn handle(&self, txn: &DatabaseTransaction, event: &InboundEvent) -> Result<(), HandleError> {
        match event.meta.ce_type.as_str() {
            ev::DeliveryScheduled::TYPE => {
                let e: ev::DeliveryScheduled = decode(&event.payload)?;
                on_delivery_outcome(txn, &e.order_id, OrderEvent::DeliveryScheduled).await
            }
            ev::DeliveryFailed::TYPE => {
                let e: ev::DeliveryFailed = decode(&event.payload)?;
                on_delivery_outcome(txn, &e.order_id, OrderEvent::DeliveryFailed).await
            }
            ev::TimeSalePurchased::TYPE => {
                let e: ev::TimeSalePurchased = decode(&event.payload)?;
                self.on_time_sale_purchase(txn, e).await
            }
            other => {
                tracing::debug!(ce_type = other, "event type not handled by order; skipped");
                Ok(())
            }
        }
    }
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

impl OrderEvents {
    async fn on_time_sale_purchase(
        &self,
        txn: &DatabaseTransaction,
        e: ev::TimeSalePurchased,
    ) -> Result<(), HandleError> {
        let order_id = domain::order_id_for_purchase(&e.purchase_id);
        if store::find(txn, &order_id).await?.is_some() {
            return Ok(());
        }
        let permanent = |m: String| HandleError::Permanent(anyhow::anyhow!(m));
        let addr =
            e.shipping_address.clone().ok_or_else(|| permanent("TimeSalePurchased without an address".into()))?;
        let items = vec![LineItem { sku: e.sku.clone(), quantity: e.quantity, unit_price_cents: e.unit_price_cents }];
        let total = e.unit_price_cents.saturating_mul(i64::from(e.quantity));
        let pb_items =
            vec![pb::OrderItem { sku: e.sku.clone(), quantity: e.quantity, unit_price_cents: e.unit_price_cents }];
        let (fee, quote_source, refused) = match self.quotes.quote(addr.clone(), pb_items).await {
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
}
