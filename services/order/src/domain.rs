//! The order aggregate, its state machine and request validation: pure code, no I/O.
//!
//! ```text
//!            DeliveryScheduled             (duplicates, late events: ignored)
//!  PENDING ─────────────────────> CONFIRMED
//!     │  DeliveryFailed / cancel /    │ cancel
//!     │  Unserviceable                │
//!     └───────────> CANCELLED <───────┘      CANCELLED absorbs everything
//! ```
//!
//! An [`Order`] is built by [`Order::new`] only (PENDING, version 0). The state machine is
//! [`Order::decide`] (what an [`OrderEvent`] does) and [`Order::apply`] (the order after
//! the decided [`Change`]); `crate::store` maps an `Order` to its row and back,
//! `crate::convert` to the wire.
//!
//! [`OrderStatus`], [`OrderSource`] and [`QuoteSource`] are stored as their
//! `string_value`s (`PENDING`, `TIME_SALE`, `FALLBACK` …) in the text columns of `orders`,
//! which other tools (cloudmart-audit, the chaos nemesis) read with SQL: those strings are
//! part of the schema and never change. `DeriveActiveEnum` only declares that mapping.

use std::fmt;

use chrono::{DateTime, Utc};
use sea_orm::{ActiveEnum, DeriveActiveEnum, EnumIter, sea_query::StringLen};

/// Where an order is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum OrderStatus {
    #[sea_orm(string_value = "PENDING")]
    Pending,
    #[sea_orm(string_value = "CONFIRMED")]
    Confirmed,
    #[sea_orm(string_value = "CANCELLED")]
    Cancelled,
}

/// The stored value (`PENDING` …): in logs, metric labels and refusal messages.
impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_value())
    }
}

/// How an order came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum OrderSource {
    /// `PlaceOrder`.
    #[sea_orm(string_value = "REGULAR")]
    Regular,
    /// A reserved time-sale purchase (saga 3).
    #[sea_orm(string_value = "TIME_SALE")]
    TimeSale,
}

/// Where a delivery fee came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum QuoteSource {
    /// `DeliveryService.QuoteDelivery` answered.
    #[sea_orm(string_value = "DELIVERY_SERVICE")]
    DeliveryService,
    /// Delivery did not answer in time (or its circuit is open): the flat fee.
    #[sea_orm(string_value = "FALLBACK")]
    Fallback,
}

/// A delivery fee and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fee {
    pub cents: i64,
    pub source: QuoteSource,
}

/// Cancel reason of the compensating transaction.
pub const DELIVERY_FAILED: &str = "DELIVERY_FAILED";
/// Cancel reason when a customer gives none.
pub const CUSTOMER_REQUEST: &str = "CUSTOMER_REQUEST";
/// Cancel reason of a time-sale order whose address delivery refused to serve (the
/// word of delivery's refusal).
pub const UNSERVICEABLE_ADDRESS: &str = cloudmart_platform::proto::contract::reasons::UNSERVICEABLE_ADDRESS;

/// What happens to an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderEvent {
    DeliveryScheduled,
    DeliveryFailed,
    /// Delivery refused the address when quoting a time-sale order's fee.
    Unserviceable,
    CancelRequested {
        reason: String,
    },
}

/// The event an accepted transition publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    OrderConfirmed,
    OrderCancelled,
}

/// An accepted transition: the new status, and the event it publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub status: OrderStatus,
    pub cancel_reason: Option<String>,
    pub emit: Emit,
}

/// The decision for one (state, event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Apply the change.
    To(Change),
    /// Nothing to do (duplicate, late or absorbed event).
    Ignore,
    /// The request is not allowed in this state (only customer requests are refused).
    Reject(String),
}

impl OrderStatus {
    /// Decides what `event` does to an order in this status: the state machine.
    pub fn decide(self, event: &OrderEvent) -> Transition {
        use OrderStatus::*;
        let cancel = |reason: &str| {
            Transition::To(Change {
                status: Cancelled,
                cancel_reason: Some(reason.to_owned()),
                emit: Emit::OrderCancelled,
            })
        };
        match (self, event) {
            (Pending, OrderEvent::DeliveryScheduled) => {
                Transition::To(Change { status: Confirmed, cancel_reason: None, emit: Emit::OrderConfirmed })
            }
            (Pending, OrderEvent::DeliveryFailed) => cancel(DELIVERY_FAILED),
            (Pending, OrderEvent::Unserviceable) => cancel(UNSERVICEABLE_ADDRESS),
            (Pending | Confirmed, OrderEvent::CancelRequested { reason }) => {
                cancel(if reason.trim().is_empty() { CUSTOMER_REQUEST } else { reason })
            }
            (Cancelled, OrderEvent::CancelRequested { .. }) => Transition::Reject(format!("order is already {self}")),
            // A delivery decides once, so CONFIRMED + DeliveryFailed (or Unserviceable)
            // cannot be a fresh fact; duplicates and events after cancellation are absorbed.
            (Confirmed, OrderEvent::DeliveryScheduled | OrderEvent::DeliveryFailed | OrderEvent::Unserviceable)
            | (Cancelled, OrderEvent::DeliveryScheduled | OrderEvent::DeliveryFailed | OrderEvent::Unserviceable) => {
                Transition::Ignore
            }
        }
    }
}

use cloudmart_platform::validate::text;
pub use cloudmart_platform::{
    proto::contract::Address,
    validate::{FieldError, idempotency_key},
};

/// One validated line item (stored as JSON in `orders.items`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LineItem {
    pub sku: String,
    pub quantity: i32,
    pub unit_price_cents: i64,
}

/// Validated line items and their total (from [`line_items`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lines {
    pub items: Vec<LineItem>,
    pub total_cents: i64,
}

/// How an order came to be, with what identifies it there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `PlaceOrder`, with the caller's idempotency key.
    Request { idempotency_key: Option<String> },
    /// A reserved time-sale purchase.
    TimeSale { purchase_id: String },
}

impl Origin {
    pub fn source(&self) -> OrderSource {
        match self {
            Origin::Request { .. } => OrderSource::Regular,
            Origin::TimeSale { .. } => OrderSource::TimeSale,
        }
    }

    pub fn idempotency_key(&self) -> Option<&str> {
        match self {
            Origin::Request { idempotency_key } => idempotency_key.as_deref(),
            Origin::TimeSale { .. } => None,
        }
    }

    pub fn time_sale_purchase_id(&self) -> Option<&str> {
        match self {
            Origin::Request { .. } => None,
            Origin::TimeSale { purchase_id } => Some(purchase_id),
        }
    }
}

/// The order aggregate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub order_id: String,
    pub customer_id: String,
    pub status: OrderStatus,
    pub cancel_reason: Option<String>,
    pub origin: Origin,
    pub items: Vec<LineItem>,
    pub shipping_address: Address,
    pub items_total_cents: i64,
    pub delivery_fee: Fee,
    /// Optimistic concurrency: every change bumps it.
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Order {
    /// A new PENDING order (version 0), placed at `at`.
    pub fn new(
        order_id: String,
        customer_id: String,
        origin: Origin,
        lines: Lines,
        shipping_address: Address,
        delivery_fee: Fee,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            order_id,
            customer_id,
            status: OrderStatus::Pending,
            cancel_reason: None,
            origin,
            items: lines.items,
            shipping_address,
            items_total_cents: lines.total_cents,
            delivery_fee,
            version: 0,
            created_at: at,
            updated_at: at,
        }
    }

    /// Decides what `event` does to this order.
    pub fn decide(&self, event: &OrderEvent) -> Transition {
        self.status.decide(event)
    }

    /// This order after `change`, made at `at` (one version later).
    pub fn apply(&self, change: Change, at: DateTime<Utc>) -> Order {
        Order {
            status: change.status,
            cancel_reason: change.cancel_reason,
            version: self.version + 1,
            updated_at: at,
            ..self.clone()
        }
    }
}

pub const MAX_ITEMS: usize = 100;
pub const MAX_QUANTITY: i32 = 10_000;
/// Validates a customer id.
pub fn customer_id(value: &str) -> Result<String, FieldError> {
    text("customer_id", value)
}

/// Validates line items and returns them with their total.
pub fn line_items(items: &[(String, i32, i64)]) -> Result<Lines, FieldError> {
    if items.is_empty() {
        return Err(FieldError::new("items", "must contain at least one item"));
    }
    if items.len() > MAX_ITEMS {
        return Err(FieldError::new("items", format!("must contain at most {MAX_ITEMS} items")));
    }
    let mut out = Vec::with_capacity(items.len());
    let mut total: i64 = 0;
    for (i, (sku, quantity, price)) in items.iter().enumerate() {
        let sku = text(&format!("items[{i}].sku"), sku)?;
        if *quantity <= 0 || *quantity > MAX_QUANTITY {
            return Err(FieldError::new(
                format!("items[{i}].quantity"),
                format!("must be between 1 and {MAX_QUANTITY}"),
            ));
        }
        if *price < 0 {
            return Err(FieldError::new(format!("items[{i}].unit_price_cents"), "must not be negative"));
        }
        let line = price
            .checked_mul(i64::from(*quantity))
            .and_then(|l| total.checked_add(l))
            .ok_or_else(|| FieldError::new(format!("items[{i}].unit_price_cents"), "order total overflows"))?;
        total = line;
        out.push(LineItem { sku, quantity: *quantity, unit_price_cents: *price });
    }
    Ok(Lines { items: out, total_cents: total })
}

/// Validates an order id (a UUID).
pub fn order_id(value: &str) -> Result<uuid::Uuid, FieldError> {
    uuid::Uuid::parse_str(value.trim()).map_err(|_| FieldError::new("order_id", "must be a UUID"))
}

/// The order id of a time-sale purchase: derived, so a redelivered event creates no
/// second order.
pub fn order_id_for_purchase(purchase_id: &str) -> String {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6c6f_7564_6d61_7274_2d74_696d_6573_616c);
    uuid::Uuid::new_v5(&NAMESPACE, purchase_id.as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use sea_orm::Iterable;

    use super::*;

    fn all_events() -> Vec<OrderEvent> {
        vec![
            OrderEvent::DeliveryScheduled,
            OrderEvent::DeliveryFailed,
            OrderEvent::Unserviceable,
            OrderEvent::CancelRequested { reason: String::new() },
            OrderEvent::CancelRequested { reason: "changed my mind".into() },
        ]
    }

    fn cancelled(reason: &str) -> Transition {
        Transition::To(Change {
            status: OrderStatus::Cancelled,
            cancel_reason: Some(reason.into()),
            emit: Emit::OrderCancelled,
        })
    }

    #[test]
    fn every_state_and_event_has_the_expected_outcome() {
        use OrderStatus::*;
        for s in OrderStatus::iter() {
            for e in all_events() {
                let t = s.decide(&e);
                match (s, &e) {
                    (Pending, OrderEvent::DeliveryScheduled) => assert_eq!(
                        t,
                        Transition::To(Change { status: Confirmed, cancel_reason: None, emit: Emit::OrderConfirmed })
                    ),
                    (Pending, OrderEvent::DeliveryFailed) => assert_eq!(t, cancelled("DELIVERY_FAILED")),
                    (Pending, OrderEvent::Unserviceable) => assert_eq!(t, cancelled("UNSERVICEABLE_ADDRESS")),
                    (Pending | Confirmed, OrderEvent::CancelRequested { reason }) => {
                        let expected = if reason.is_empty() { "CUSTOMER_REQUEST" } else { reason.as_str() };
                        assert_eq!(t, cancelled(expected))
                    }
                    (Cancelled, OrderEvent::CancelRequested { .. }) => {
                        assert_eq!(t, Transition::Reject("order is already CANCELLED".into()))
                    }
                    _ => assert_eq!(t, Transition::Ignore, "{s:?} + {e:?}"),
                }
            }
        }
    }

    /// Applying any event sequence twice in a row equals applying it once, and
    /// CANCELLED is never left.
    #[test]
    fn duplicates_and_any_order_are_absorbed() {
        let events = all_events();
        for a in &events {
            for b in &events {
                for c in &events {
                    let mut once = OrderStatus::Pending;
                    let mut twice = OrderStatus::Pending;
                    for e in [a, b, c] {
                        let was_cancelled = once == OrderStatus::Cancelled;
                        if let Transition::To(change) = once.decide(e) {
                            once = change.status;
                        }
                        assert!(!was_cancelled || once == OrderStatus::Cancelled);
                        for _ in 0..2 {
                            if let Transition::To(change) = twice.decide(e) {
                                twice = change.status;
                            }
                        }
                    }
                    assert_eq!(once, twice, "{a:?} {b:?} {c:?}");
                }
            }
        }
    }

    /// The aggregate: built PENDING at version 0; a change bumps the version and keeps
    /// everything else.
    #[test]
    fn an_order_is_born_pending_and_changes_by_version() {
        let at = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        let lines = line_items(&[("a".into(), 2, 150)]).unwrap();
        let address = Address {
            line1: "1 Main St".into(),
            city: "Seoul".into(),
            postal_code: "04524".into(),
            country: "KR".into(),
        };
        let fee = Fee { cents: 500, source: QuoteSource::Fallback };
        let origin = Origin::TimeSale { purchase_id: "p1".into() };
        let order = Order::new("o1".into(), "c1".into(), origin, lines, address, fee, at);
        assert_eq!((order.status, order.version, order.items_total_cents), (OrderStatus::Pending, 0, 300));
        assert_eq!(order.origin.source(), OrderSource::TimeSale);
        assert_eq!(order.origin.time_sale_purchase_id(), Some("p1"));

        let later = at + chrono::Duration::seconds(5);
        let Transition::To(change) = order.decide(&OrderEvent::DeliveryFailed) else { panic!("a change") };
        let cancelled = order.apply(change, later);
        assert_eq!(cancelled.status, OrderStatus::Cancelled);
        assert_eq!(cancelled.cancel_reason.as_deref(), Some("DELIVERY_FAILED"));
        assert_eq!((cancelled.version, cancelled.updated_at, cancelled.created_at), (1, later, at));
        assert_eq!(Order { status: order.status, cancel_reason: None, version: 0, updated_at: at, ..cancelled }, order);
    }

    /// The strings the `orders` table stores, which other tools read with SQL.
    #[test]
    fn stored_values_are_the_contract_words() {
        let words = |v: Vec<String>| v.join(",");
        assert_eq!(words(OrderStatus::iter().map(|s| s.to_value()).collect()), "PENDING,CONFIRMED,CANCELLED");
        assert_eq!(words(OrderSource::iter().map(|s| s.to_value()).collect()), "REGULAR,TIME_SALE");
        assert_eq!(words(QuoteSource::iter().map(|s| s.to_value()).collect()), "DELIVERY_SERVICE,FALLBACK");
        assert_eq!(OrderStatus::Confirmed.to_string(), "CONFIRMED");
        assert_eq!(OrderStatus::try_from_value(&"CANCELLED".to_owned()).unwrap(), OrderStatus::Cancelled);
        assert!(OrderStatus::try_from_value(&"cancelled".to_owned()).is_err());
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(line_items(&[]).unwrap_err().field, "items");
        assert_eq!(line_items(&[("a".into(), 0, 1)]).unwrap_err().field, "items[0].quantity");
        assert_eq!(
            line_items(&[("a".into(), 1, 1), ("b".into(), 1, -5)]).unwrap_err().field,
            "items[1].unit_price_cents"
        );
        assert_eq!(line_items(&[(" ".into(), 1, 1)]).unwrap_err().field, "items[0].sku");
        assert_eq!(line_items(&[("a".into(), 10_000, i64::MAX)]).unwrap_err().description, "order total overflows");
        assert_eq!(line_items(&[("a".into(), 2, 150), ("b".into(), 1, 100)]).unwrap().total_cents, 400);
        assert_eq!(order_id("nope").unwrap_err().field, "order_id");
        assert_eq!(idempotency_key("  ").unwrap(), None);
    }

    #[test]
    fn purchase_order_ids_are_stable_and_distinct() {
        assert_eq!(order_id_for_purchase("p1"), order_id_for_purchase("p1"));
        assert_ne!(order_id_for_purchase("p1"), order_id_for_purchase("p2"));
    }
}
