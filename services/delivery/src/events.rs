//! Delivery's side of the sagas: `OrderPlaced` schedules (or fails) a delivery,
//! `OrderCancelled` cancels it.

use async_trait::async_trait;
use chrono::{Duration, Utc};
use cloudmart_platform::{
    consumer::{EventHandler, HandleError, InboundEvent},
    events::{CloudEvent, decode, topics},
    outbox,
    proto::events::v1 as ev,
    validate,
};
use sea_orm::DatabaseTransaction;

use crate::{
    domain::{self, Action, DeliveryEvent, DeliveryState, Rules, failure},
    store::{self, DeliveryRow},
};

pub const SOURCE: &str = "delivery";
pub const TOPICS: [&str; 1] = [topics::ORDER_EVENTS];

pub struct DeliveryEvents {
    pub(crate) rules: Rules,
}

#[async_trait]
impl EventHandler for DeliveryEvents {
    /// Nothing to ask outside the database.
    type Prepared = ();

    async fn prepare(&self, _event: &InboundEvent) -> Result<(), HandleError> {
        Ok(())
    }

    async fn handle(&self, txn: &DatabaseTransaction, event: &InboundEvent, (): ()) -> Result<(), HandleError> {
        match event.meta.ce_type.as_str() {
            ev::OrderPlaced::TYPE => {
                let e: ev::OrderPlaced = decode(&event.payload)?;
                check_order_placed(&e)?;
                self.on_order_placed(txn, e).await
            }
            ev::OrderCancelled::TYPE => {
                let e: ev::OrderCancelled = decode(&event.payload)?;
                validate::text("order_id", &e.order_id)?;
                on_order_cancelled(txn, &e.order_id).await
            }
            _ => Ok(()),
        }
    }
}

/// The fields of `OrderPlaced` a delivery stores: an order id, and address lines that
/// are bounded and free of control characters (a missing or incomplete address is a
/// delivery that fails, not a malformed event).
fn check_order_placed(e: &ev::OrderPlaced) -> Result<(), validate::FieldError> {
    validate::text("order_id", &e.order_id)?;
    if let Some(a) = &e.shipping_address {
        validate::event_text("shipping_address.line1", &a.line1)?;
        validate::event_text("shipping_address.city", &a.city)?;
        validate::event_text("shipping_address.postal_code", &a.postal_code)?;
        validate::event_text("shipping_address.country", &a.country)?;
    }
    Ok(())
}

fn state_of(row: &Option<DeliveryRow>) -> Result<DeliveryState, HandleError> {
    match row {
        None => Ok(DeliveryState::Absent),
        Some(r) => DeliveryState::parse(&r.status).ok_or_else(|| {
            HandleError::Permanent(anyhow::anyhow!("delivery {} has bad status {}", r.delivery_id, r.status))
        }),
    }
}

impl DeliveryEvents {
    async fn on_order_placed(&self, txn: &DatabaseTransaction, e: ev::OrderPlaced) -> Result<(), HandleError> {
        if e.order_id.is_empty() {
            return Err(HandleError::Permanent(anyhow::anyhow!("OrderPlaced without order_id")));
        }
        let existing = store::find_by_order(txn, &e.order_id).await?;
        if domain::decide(state_of(&existing)?, DeliveryEvent::OrderPlaced) != Action::Schedule {
            return Ok(());
        }
        let addr = e.shipping_address.unwrap_or_default();
        let now = Utc::now();
        let quote = domain::quote(&addr.country, 1);
        let when = now + Duration::days(i64::from(quote.estimated_days));
        let day = when.format("%Y-%m-%d").to_string();
        let outcome = match self.rules.precheck(&e.order_id, &addr.country, &addr.postal_code) {
            Err(reason) => Err(reason),
            Ok(()) => {
                if store::take_capacity(txn, &addr.postal_code, &day, self.rules.daily_capacity).await? {
                    Ok(())
                } else {
                    Err(failure::REGION_CAPACITY_EXHAUSTED)
                }
            }
        };
        let delivery_id = uuid::Uuid::new_v4().to_string();
        let row = DeliveryRow {
            delivery_id: delivery_id.clone(),
            order_id: e.order_id.clone(),
            status: if outcome.is_ok() { DeliveryState::Scheduled } else { DeliveryState::Failed }.as_str().to_owned(),
            ship_line1: addr.line1,
            ship_city: addr.city,
            ship_postal_code: addr.postal_code,
            ship_country: addr.country,
            capacity_day: outcome.is_ok().then(|| day.clone()),
            scheduled_for: outcome.is_ok().then_some(when),
            failure_reason: outcome.err().map(str::to_owned),
            created_at: now,
            updated_at: now,
        };
        store::insert(txn, row).await?;
        match outcome {
            Ok(()) => {
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
            Err(reason) => {
                outbox::enqueue(
                    txn,
                    SOURCE,
                    &ev::DeliveryFailed { delivery_id, order_id: e.order_id.clone(), reason: reason.to_owned() },
                )
                .await?;
                tracing::info!(order_id = %e.order_id, reason, "delivery failed");
            }
        }
        Ok(())
    }
}

async fn on_order_cancelled(txn: &DatabaseTransaction, order_id: &str) -> Result<(), HandleError> {
    let existing = store::find_by_order(txn, order_id).await?;
    match domain::decide(state_of(&existing)?, DeliveryEvent::OrderCancelled) {
        Action::Cancel => {
            let row = existing.expect("Cancel is decided only for an existing delivery");
            if !store::cancel(txn, &row.delivery_id, DeliveryState::Scheduled.as_str()).await? {
                return Err(HandleError::Transient(anyhow::anyhow!(
                    "delivery {} changed concurrently",
                    row.delivery_id
                )));
            }
            if let Some(day) = &row.capacity_day {
                store::release_capacity(txn, &row.ship_postal_code, day).await?;
            }
            outbox::enqueue(
                txn,
                SOURCE,
                &ev::DeliveryCancelled { delivery_id: row.delivery_id, order_id: order_id.to_owned() },
            )
            .await?;
            tracing::info!(%order_id, "delivery cancelled");
        }
        Action::Tombstone => {
            let now = Utc::now();
            store::insert(
                txn,
                DeliveryRow {
                    delivery_id: uuid::Uuid::new_v4().to_string(),
                    order_id: order_id.to_owned(),
                    status: DeliveryState::Cancelled.as_str().to_owned(),
                    ship_line1: String::new(),
                    ship_city: String::new(),
                    ship_postal_code: String::new(),
                    ship_country: String::new(),
                    capacity_day: None,
                    scheduled_for: None,
                    failure_reason: None,
                    created_at: now,
                    updated_at: now,
                },
            )
            .await?;
            tracing::info!(%order_id, "order cancelled before it was placed here; tombstone recorded");
        }
        Action::Schedule | Action::Ignore => {}
    }
    Ok(())
}
