//! The order state machine and request validation: pure code, no I/O.
//!
//! ```text
//!            DeliveryScheduled             (duplicates, late events: ignored)
//!  PENDING ─────────────────────> CONFIRMED
//!     │  DeliveryFailed / cancel      │ cancel
//!     └───────────> CANCELLED <───────┘      CANCELLED absorbs everything
//! ```

use std::fmt;

/// Where an order is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 3] = [OrderStatus::Pending, OrderStatus::Confirmed, OrderStatus::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Cancel reason of the compensating transaction.
pub const DELIVERY_FAILED: &str = "DELIVERY_FAILED";
/// Cancel reason when a customer gives none.
pub const CUSTOMER_REQUEST: &str = "CUSTOMER_REQUEST";

/// What happens to an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderEvent {
    DeliveryScheduled,
    DeliveryFailed,
    CancelRequested { reason: String },
}

/// The event an accepted transition publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    OrderConfirmed,
    OrderCancelled,
}

/// The decision for one (state, event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Move to `status` and publish `emit`.
    To { status: OrderStatus, cancel_reason: Option<String>, emit: Emit },
    /// Nothing to do (duplicate, late or absorbed event).
    Ignore,
    /// The request is not allowed in this state (only customer requests are refused).
    Reject(String),
}

/// Decides what `event` does to an order in `status`.
pub fn decide(status: OrderStatus, event: &OrderEvent) -> Transition {
    use OrderStatus::*;
    match (status, event) {
        (Pending, OrderEvent::DeliveryScheduled) => {
            Transition::To { status: Confirmed, cancel_reason: None, emit: Emit::OrderConfirmed }
        }
        (Pending, OrderEvent::DeliveryFailed) => Transition::To {
            status: Cancelled,
            cancel_reason: Some(DELIVERY_FAILED.to_owned()),
            emit: Emit::OrderCancelled,
        },
        (Pending | Confirmed, OrderEvent::CancelRequested { reason }) => Transition::To {
            status: Cancelled,
            cancel_reason: Some(if reason.trim().is_empty() { CUSTOMER_REQUEST.to_owned() } else { reason.clone() }),
            emit: Emit::OrderCancelled,
        },
        (Cancelled, OrderEvent::CancelRequested { .. }) => Transition::Reject("order is already CANCELLED".to_owned()),
        // A delivery decides once, so CONFIRMED + DeliveryFailed cannot be a fresh fact;
        // duplicates and events after cancellation are absorbed.
        (Confirmed, OrderEvent::DeliveryScheduled | OrderEvent::DeliveryFailed)
        | (Cancelled, OrderEvent::DeliveryScheduled | OrderEvent::DeliveryFailed) => Transition::Ignore,
    }
}

use cloudmart_platform::validate::text;
pub use cloudmart_platform::validate::{Address, FieldError, idempotency_key};

/// One validated line item.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LineItem {
    pub sku: String,
    pub quantity: i32,
    pub unit_price_cents: i64,
}

pub const MAX_ITEMS: usize = 100;
pub const MAX_QUANTITY: i32 = 10_000;
/// Validates a customer id.
pub fn customer_id(value: &str) -> Result<String, FieldError> {
    text("customer_id", value)
}

/// Validates line items and returns them with their total.
pub fn line_items(items: &[(String, i32, i64)]) -> Result<(Vec<LineItem>, i64), FieldError> {
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
    Ok((out, total))
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
    use super::*;

    fn all_events() -> Vec<OrderEvent> {
        vec![
            OrderEvent::DeliveryScheduled,
            OrderEvent::DeliveryFailed,
            OrderEvent::CancelRequested { reason: String::new() },
            OrderEvent::CancelRequested { reason: "changed my mind".into() },
        ]
    }

    #[test]
    fn every_state_and_event_has_the_expected_outcome() {
        use OrderStatus::*;
        for s in OrderStatus::ALL {
            for e in all_events() {
                let t = decide(s, &e);
                match (s, &e) {
                    (Pending, OrderEvent::DeliveryScheduled) => assert_eq!(
                        t,
                        Transition::To { status: Confirmed, cancel_reason: None, emit: Emit::OrderConfirmed }
                    ),
                    (Pending, OrderEvent::DeliveryFailed) => assert_eq!(
                        t,
                        Transition::To {
                            status: Cancelled,
                            cancel_reason: Some("DELIVERY_FAILED".into()),
                            emit: Emit::OrderCancelled
                        }
                    ),
                    (Pending | Confirmed, OrderEvent::CancelRequested { reason }) => {
                        let expected = if reason.is_empty() { "CUSTOMER_REQUEST" } else { reason.as_str() };
                        assert_eq!(
                            t,
                            Transition::To {
                                status: Cancelled,
                                cancel_reason: Some(expected.into()),
                                emit: Emit::OrderCancelled
                            }
                        )
                    }
                    (Cancelled, OrderEvent::CancelRequested { .. }) => assert!(matches!(t, Transition::Reject(_))),
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
                        if let Transition::To { status, .. } = decide(once, e) {
                            once = status;
                        }
                        assert!(!was_cancelled || once == OrderStatus::Cancelled);
                        for _ in 0..2 {
                            if let Transition::To { status, .. } = decide(twice, e) {
                                twice = status;
                            }
                        }
                    }
                    assert_eq!(once, twice, "{a:?} {b:?} {c:?}");
                }
            }
        }
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
        assert_eq!(line_items(&[("a".into(), 2, 150), ("b".into(), 1, 100)]).unwrap().1, 400);
        assert_eq!(order_id("nope").unwrap_err().field, "order_id");
        assert_eq!(idempotency_key("  ").unwrap(), None);
    }

    #[test]
    fn purchase_order_ids_are_stable_and_distinct() {
        assert_eq!(order_id_for_purchase("p1"), order_id_for_purchase("p1"));
        assert_ne!(order_id_for_purchase("p1"), order_id_for_purchase("p2"));
    }
}
