//! Delivery's side of the sagas: `OrderPlaced` schedules (or fails) a delivery,
//! `OrderCancelled` cancels it.

use async_trait::async_trait;
use chrono::{Duration, Utc};
use cloudmart_platform::proto::contract::topics;
use cloudmart_platform::{
    consumer::{ApplyFailure, DatabaseHandler, InboundEvent},
    events::{BadEvent, CloudEvent, decode},
    outbox,
    proto::events::v1 as ev,
    validate,
};
use sea_orm::{DatabaseTransaction, DbErr};

use crate::{
    domain::{self, Action, Delivery, DeliveryEvent, FailureReason, Rules, Start},
    store::{self, LoadError},
};

pub const SOURCE: &str = "delivery";
pub const TOPICS: [&str; 1] = [topics::ORDER_EVENTS];

/// Why an order event could not be applied; its `ApplyFailure` impl says
/// which failures a retry can cure.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The payload does not decode or a field holds what no database stores (permanent).
    #[error(transparent)]
    Bad(#[from] BadEvent),
    /// The order's stored delivery cannot be read: a value this build does not know
    /// (permanent: it will not decode on a retry either), or the database failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The delivery moved between reading and updating it (transient: read it again).
    #[error("delivery {delivery_id} changed concurrently")]
    Conflict { delivery_id: String },
    /// The database failed (transient).
    #[error(transparent)]
    Db(#[from] DbErr),
}

impl ApplyFailure for ApplyError {
    fn is_permanent(&self) -> bool {
        match self {
            ApplyError::Bad(_) => true,
            ApplyError::Load(l) => l.is_corrupt_row(),
            ApplyError::Conflict { .. } | ApplyError::Db(_) => false,
        }
    }
}

pub struct DeliveryEvents {
    pub(crate) rules: Rules,
}

/// Nothing to ask outside the database.
#[async_trait]
impl DatabaseHandler for DeliveryEvents {
    type Error = ApplyError;

    async fn apply(&self, txn: &DatabaseTransaction, event: &InboundEvent) -> Result<(), ApplyError> {
        self.on_order_event(txn, event).await
    }
}

/// The fields of `OrderPlaced` a delivery stores: an order id, and address lines that
/// are bounded and free of control characters (a missing or incomplete address is a
/// delivery that fails, not a malformed event).
fn check_order_placed(e: &ev::OrderPlaced) -> Result<(), BadEvent> {
    validate::text("order_id", &e.order_id)?;
    if let Some(a) = &e.shipping_address {
        validate::event_text("shipping_address.line1", &a.line1)?;
        validate::event_text("shipping_address.city", &a.city)?;
        validate::event_text("shipping_address.postal_code", &a.postal_code)?;
        validate::event_text("shipping_address.country", &a.country)?;
    }
    Ok(())
}

impl DeliveryEvents {
    async fn on_order_event(&self, txn: &DatabaseTransaction, event: &InboundEvent) -> Result<(), ApplyError> {
        match event.meta.ce_type.as_str() {
            ev::OrderPlaced::TYPE => {
                let e: ev::OrderPlaced = decode(&event.payload)?;
                check_order_placed(&e)?;
                self.on_order_placed(txn, e).await
            }
            ev::OrderCancelled::TYPE => {
                let e: ev::OrderCancelled = decode(&event.payload)?;
                validate::text("order_id", &e.order_id).map_err(BadEvent::from)?;
                on_order_cancelled(txn, &e.order_id).await
            }
            _ => Ok(()),
        }
    }

    async fn on_order_placed(&self, txn: &DatabaseTransaction, e: ev::OrderPlaced) -> Result<(), ApplyError> {
        let existing = store::find_by_order(txn, &e.order_id).await?;
        if Delivery::decide(existing.as_ref(), DeliveryEvent::OrderPlaced) != Action::Schedule {
            return Ok(());
        }
        let addr = e.shipping_address.unwrap_or_default();
        let now = Utc::now();
        let quote = domain::quote(&addr.country, 1);
        let when = now + Duration::days(i64::from(quote.estimated_days));
        let day = when.format("%Y-%m-%d").to_string();
        let start = match self.rules.precheck(&e.order_id, &addr.country, &addr.postal_code) {
            Err(reason) => Start::Failed(reason),
            Ok(()) if store::take_capacity(txn, &addr.postal_code, &day, self.rules.daily_capacity).await? => {
                Start::Scheduled { day: day.clone(), at: when }
            }
            Ok(()) => Start::Failed(FailureReason::RegionCapacityExhausted),
        };
        let delivery = Delivery::new(uuid::Uuid::new_v4().to_string(), e.order_id.clone(), addr, start, now);
        let (delivery_id, failure) = (delivery.delivery_id.clone(), delivery.failure_reason);
        store::insert(txn, delivery).await?;
        match failure {
            None => {
                outbox::enqueue(
                    txn,
                    SOURCE,
                    &ev::DeliveryScheduled {
                        delivery_id,
                        order_id: e.order_id.clone(),
                        scheduled_for: Some(store::ts(when)),
                    },
                )
                .await?;
                tracing::info!(order_id = %e.order_id, %day, "delivery scheduled");
            }
            Some(reason) => {
                outbox::enqueue(
                    txn,
                    SOURCE,
                    &ev::DeliveryFailed { delivery_id, order_id: e.order_id.clone(), reason: reason.code() },
                )
                .await?;
                tracing::info!(order_id = %e.order_id, reason = %reason.code(), "delivery failed");
            }
        }
        Ok(())
    }
}

async fn on_order_cancelled(txn: &DatabaseTransaction, order_id: &str) -> Result<(), ApplyError> {
    let existing = store::find_by_order(txn, order_id).await?;
    match (Delivery::decide(existing.as_ref(), DeliveryEvent::OrderCancelled), existing) {
        (Action::Cancel, Some(mut delivery)) => {
            let from = delivery.status;
            let cancelled = delivery.cancel(Utc::now());
            debug_assert!(cancelled, "Cancel is decided only for a scheduled delivery");
            if !store::update_status(txn, &delivery, from).await? {
                return Err(ApplyError::Conflict { delivery_id: delivery.delivery_id });
            }
            if let Some(day) = &delivery.capacity_day {
                store::release_capacity(txn, &delivery.ship_to.postal_code, day).await?;
            }
            outbox::enqueue(
                txn,
                SOURCE,
                &ev::DeliveryCancelled { delivery_id: delivery.delivery_id, order_id: order_id.to_owned() },
            )
            .await?;
            tracing::info!(%order_id, "delivery cancelled");
        }
        (Action::Tombstone, _) => {
            let tombstone = Delivery::new(
                uuid::Uuid::new_v4().to_string(),
                order_id.to_owned(),
                Default::default(),
                Start::Tombstone,
                Utc::now(),
            );
            store::insert(txn, tombstone).await?;
            tracing::info!(%order_id, "order cancelled before it was placed here; tombstone recorded");
        }
        (Action::Cancel, None) | (Action::Schedule | Action::Ignore, _) => {}
    }
    Ok(())
}
