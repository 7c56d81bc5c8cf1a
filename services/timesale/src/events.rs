//! Time-sale's side of saga 3: order events move purchases; a cancelled order gives its
//! stock back exactly once (the purchase's CANCELLED state absorbs repeats, and the
//! idempotent consumer drops redelivered events).

use async_trait::async_trait;
use cloudmart_platform::{
    consumer::{EventHandler, HandleError, InboundEvent},
    events::{CloudEvent, decode, topics},
    outbox,
    proto::events::v1 as ev,
    validate,
};
use sea_orm::DatabaseTransaction;

use crate::{
    domain::{self, PurchaseAction, PurchaseEvent, PurchaseStatus},
    ledger::SOURCE,
    store,
};

pub const TOPICS: [&str; 1] = [topics::ORDER_EVENTS];

pub struct TimeSaleEvents;

#[async_trait]
impl EventHandler for TimeSaleEvents {
    /// Nothing to ask outside the database.
    type Prepared = ();

    async fn prepare(&self, _event: &InboundEvent) -> Result<(), HandleError> {
        Ok(())
    }

    async fn handle(&self, txn: &DatabaseTransaction, event: &InboundEvent, (): ()) -> Result<(), HandleError> {
        let (purchase_id, order_id, what) = match event.meta.ce_type.as_str() {
            ev::OrderPlaced::TYPE => {
                let e: ev::OrderPlaced = decode(&event.payload)?;
                (e.time_sale_purchase_id, e.order_id, PurchaseEvent::OrderPlaced)
            }
            ev::OrderConfirmed::TYPE => {
                let e: ev::OrderConfirmed = decode(&event.payload)?;
                (e.time_sale_purchase_id, e.order_id, PurchaseEvent::OrderConfirmed)
            }
            ev::OrderCancelled::TYPE => {
                let e: ev::OrderCancelled = decode(&event.payload)?;
                (e.time_sale_purchase_id, e.order_id, PurchaseEvent::OrderCancelled)
            }
            _ => return Ok(()),
        };
        // Both reach the database (a lookup, the purchase's order link).
        validate::event_text("time_sale_purchase_id", &purchase_id)?;
        validate::event_text("order_id", &order_id)?;
        if purchase_id.is_empty() {
            return Ok(()); // a regular order
        }
        apply(txn, &purchase_id, &order_id, what).await
    }
}

async fn apply(
    txn: &DatabaseTransaction,
    purchase_id: &str,
    order_id: &str,
    what: PurchaseEvent,
) -> Result<(), HandleError> {
    let Some(p) = store::find_purchase(txn, purchase_id).await? else {
        tracing::warn!(%purchase_id, ?what, "order event for an unknown purchase; skipped");
        return Ok(());
    };
    let status = PurchaseStatus::parse(&p.status)
        .ok_or_else(|| HandleError::Permanent(anyhow::anyhow!("purchase {purchase_id} has bad status {}", p.status)))?;
    let conflict = || HandleError::Transient(anyhow::anyhow!("purchase {purchase_id} changed concurrently"));
    match domain::decide(status, what) {
        PurchaseAction::LinkOrder => {
            if !store::move_purchase(txn, purchase_id, &p.status, &p.status, Some(order_id)).await? {
                return Err(conflict());
            }
        }
        PurchaseAction::MarkOrdered => {
            if !store::move_purchase(txn, purchase_id, &p.status, PurchaseStatus::Ordered.as_str(), Some(order_id))
                .await?
            {
                return Err(conflict());
            }
            tracing::info!(%purchase_id, %order_id, "purchase ordered");
        }
        PurchaseAction::CancelAndRestore => {
            // Lock order: the sale row first (as purchases do), then the purchase.
            if !store::give_back_stock(txn, &p.sale_id, p.quantity).await? {
                return Err(HandleError::Permanent(anyhow::anyhow!(
                    "restoring {} units to sale {} would exceed its total stock",
                    p.quantity,
                    p.sale_id
                )));
            }
            if !store::move_purchase(txn, purchase_id, &p.status, PurchaseStatus::Cancelled.as_str(), None).await? {
                return Err(conflict());
            }
            store::release_allocation(txn, &p.sale_id, &p.customer_id, p.quantity).await?;
            let remaining = store::find_sale(txn, &p.sale_id).await?.map(|s| s.remaining_stock).unwrap_or_default();
            outbox::enqueue(
                txn,
                SOURCE,
                &ev::TimeSaleStockRestored {
                    purchase_id: purchase_id.to_owned(),
                    sale_id: p.sale_id.clone(),
                    quantity: p.quantity,
                    remaining_stock: remaining,
                },
            )
            .await?;
            tracing::info!(%purchase_id, sale_id = %p.sale_id, quantity = p.quantity, remaining, "stock restored");
        }
        PurchaseAction::Ignore => {}
    }
    Ok(())
}
