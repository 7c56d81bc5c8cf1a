//! Time-sale's side of saga 3: order events move purchases; a cancelled order gives its
//! stock back exactly once (the purchase's CANCELLED state absorbs repeats, and the
//! idempotent consumer drops redelivered events).

use async_trait::async_trait;
use cloudmart_platform::proto::contract::topics;
use cloudmart_platform::{
    consumer::{ApplyFailure, DatabaseHandler, InboundEvent, db_error_is_permanent},
    events::{BadEvent, CloudEvent, decode},
    outbox,
    proto::events::v1 as ev,
    validate,
};
use sea_orm::{DatabaseTransaction, DbErr};

use crate::{
    domain::{PurchaseAction, PurchaseEvent, PurchaseStatus},
    ledger::SOURCE,
    store,
};

pub const TOPICS: [&str; 1] = [topics::ORDER_EVENTS];

pub struct TimeSaleEvents;

/// Why an order event could not be applied; its `ApplyFailure` impl says
/// which failures a retry can cure.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The payload does not decode or a field holds what no database stores (permanent).
    #[error(transparent)]
    Bad(#[from] BadEvent),
    /// The purchase moved between reading and updating it (transient: read it again).
    #[error("purchase {purchase_id} changed concurrently")]
    Conflict { purchase_id: String },
    /// Giving the units back would pass the sale's total stock (permanent).
    #[error("restoring {quantity} units to sale {sale_id} would exceed its total stock")]
    StockOverflow { sale_id: String, quantity: i32 },
    /// The database failed (transient), or a row does not decode, say an unknown
    /// status (permanent: it will not decode on a retry either).
    #[error(transparent)]
    Db(#[from] DbErr),
}

impl ApplyFailure for ApplyError {
    fn is_permanent(&self) -> bool {
        match self {
            ApplyError::Bad(_) | ApplyError::StockOverflow { .. } => true,
            ApplyError::Db(e) => db_error_is_permanent(e),
            ApplyError::Conflict { .. } => false,
        }
    }
}

/// Nothing to ask outside the database.
#[async_trait]
impl DatabaseHandler for TimeSaleEvents {
    type Error = ApplyError;

    async fn apply(&self, txn: &DatabaseTransaction, event: &InboundEvent) -> Result<(), ApplyError> {
        on_order_event(txn, event).await
    }
}

async fn on_order_event(txn: &DatabaseTransaction, event: &InboundEvent) -> Result<(), ApplyError> {
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
    check_ids(&purchase_id, &order_id)?;
    if purchase_id.is_empty() {
        return Ok(()); // a regular order
    }
    apply(txn, &purchase_id, &order_id, what).await
}

/// The ids of an order event reach the database: bounded, free of control characters.
fn check_ids(purchase_id: &str, order_id: &str) -> Result<(), BadEvent> {
    validate::event_text("time_sale_purchase_id", purchase_id)?;
    validate::event_text("order_id", order_id)?;
    Ok(())
}

async fn apply(
    txn: &DatabaseTransaction,
    purchase_id: &str,
    order_id: &str,
    what: PurchaseEvent,
) -> Result<(), ApplyError> {
    let Some(p) = store::find_purchase(txn, purchase_id).await? else {
        tracing::warn!(%purchase_id, ?what, "order event for an unknown purchase; skipped");
        return Ok(());
    };
    let conflict = || ApplyError::Conflict { purchase_id: purchase_id.to_owned() };
    match p.decide(what) {
        PurchaseAction::LinkOrder => {
            if !store::move_purchase(txn, purchase_id, p.status, p.status, Some(order_id)).await? {
                return Err(conflict());
            }
        }
        PurchaseAction::MarkOrdered => {
            if !store::move_purchase(txn, purchase_id, p.status, PurchaseStatus::Ordered, Some(order_id)).await? {
                return Err(conflict());
            }
            tracing::info!(%purchase_id, %order_id, "purchase ordered");
        }
        PurchaseAction::CancelAndRestore => {
            // Lock order: the sale row first (as purchases do), then the purchase.
            if !store::give_back_stock(txn, &p.sale_id, p.quantity).await? {
                return Err(ApplyError::StockOverflow { sale_id: p.sale_id, quantity: p.quantity });
            }
            if !store::move_purchase(txn, purchase_id, p.status, PurchaseStatus::Cancelled, None).await? {
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

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use cloudmart_platform::{
        consumer::{HandleError, apply},
        db,
        fuzz::{self, Record},
        proto::contract::Address,
        testkit::TestDatabase,
    };
    use prost::Message;
    use sea_orm::ConnectionTrait;

    use super::*;
    use crate::domain::{Ask, Purchase};

    /// A purchase row in a status no version writes (edited by hand, say) does not
    /// decode: its events are dead-lettered, not retried forever.
    #[tokio::test]
    async fn a_purchase_in_an_unknown_status_fails_permanently() {
        let tdb = TestDatabase::create("timesale_unknown_status").await.unwrap();
        let conn = db::connect(&tdb.url).await.unwrap();
        db::migrate::<store::Migrator>(&conn).await.unwrap();
        let ask = Ask { customer_id: "c-1".into(), quantity: 1, idempotency_key: None };
        let address =
            Address { line1: "1".into(), city: "Seoul".into(), postal_code: "04524".into(), country: "KR".into() };
        let p = Purchase::reserve(uuid::Uuid::new_v4().to_string(), "s-1", &ask, &address, Utc::now());
        store::insert_purchases(&conn, std::slice::from_ref(&p)).await.unwrap();
        conn.execute_unprepared("UPDATE purchases SET status = 'LOST'").await.unwrap();

        let h = |k: &str, v: &str| (k.to_owned(), Some(v.as_bytes().to_vec()));
        let payload =
            ev::OrderCancelled { order_id: "o-1".into(), time_sale_purchase_id: p.purchase_id, ..Default::default() };
        let record: Record = (
            vec![
                h("ce_specversion", "1.0"),
                h("ce_id", "e-1"),
                h("ce_type", ev::OrderCancelled::TYPE),
                h("ce_source", "t"),
            ],
            payload.encode_to_vec(),
        );
        let event = fuzz::inbound(topics::ORDER_EVENTS, &record).expect("headers accepted");
        match apply(&conn, &TimeSaleEvents, &event).await {
            Err(HandleError::Permanent(e)) => assert!(format!("{e:#}").contains("LOST"), "{e:#}"),
            other => panic!("expected a permanent failure, got {other:?}"),
        }
    }
}
