//! Time-sale rules as pure code: the `Sale` and `Purchase` aggregates, sale windows,
//! the purchase state machine, and the decision for a batch of reservations against one
//! sale's stock.
//!
//! No I/O here: the store maps the aggregates to rows and the API edge to messages.
//! [`PurchaseStatus`] declares the strings it is stored as (`DeriveActiveEnum`), the one
//! place they are spelled: other tools read that column with SQL.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use cloudmart_platform::{proto::contract::Address, validate::FieldError};
use sea_orm::{DeriveActiveEnum, EnumIter, sea_query::StringLen};

/// The immutable part of a sale (cached by the service; stock is never cached).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaleTerms {
    pub sale_id: String,
    pub sku: String,
    pub price_cents: i64,
    pub per_customer_limit: i32,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

/// Why a sale takes no purchase at some instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Inactive {
    #[error("has not started yet")]
    NotStarted,
    #[error("has ended")]
    Ended,
}

impl SaleTerms {
    /// A sale takes purchases in `[starts_at, ends_at)`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.starts_at <= now && now < self.ends_at
    }

    /// [`is_active`](Self::is_active), saying which side of the window `now` is on.
    pub fn check_active(&self, now: DateTime<Utc>) -> Result<(), Inactive> {
        if self.is_active(now) {
            Ok(())
        } else if now < self.starts_at {
            Err(Inactive::NotStarted)
        } else {
            Err(Inactive::Ended)
        }
    }
}

pub const MAX_STOCK: i32 = 10_000_000;

/// What CreateSale asks for, its texts already validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSale {
    pub sku: String,
    pub title: String,
    pub price_cents: i64,
    pub total_stock: i32,
    pub per_customer_limit: i32,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
}

/// A sale: its terms and its stock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sale {
    pub terms: SaleTerms,
    pub title: String,
    pub total_stock: i32,
    /// As last read: stock only ever moves in the database (see `store`).
    pub remaining_stock: i32,
    pub created_at: DateTime<Utc>,
}

impl Sale {
    /// A new sale with all its stock left, after checking its numbers and window.
    pub fn new(sale_id: String, new: NewSale, now: DateTime<Utc>) -> Result<Self, FieldError> {
        let (starts_at, ends_at) =
            sale_numbers(new.price_cents, new.total_stock, new.per_customer_limit, new.starts_at, new.ends_at)?;
        Ok(Self {
            terms: SaleTerms {
                sale_id,
                sku: new.sku,
                price_cents: new.price_cents,
                per_customer_limit: new.per_customer_limit,
                starts_at,
                ends_at,
            },
            title: new.title,
            total_stock: new.total_stock,
            remaining_stock: new.total_stock,
            created_at: now,
        })
    }
}

/// Validates CreateSale's numbers and window.
fn sale_numbers(
    price_cents: i64,
    total_stock: i32,
    per_customer_limit: i32,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), FieldError> {
    if price_cents < 0 {
        return Err(FieldError::new("price_cents", "must not be negative"));
    }
    if !(1..=MAX_STOCK).contains(&total_stock) {
        return Err(FieldError::new("total_stock", format!("must be between 1 and {MAX_STOCK}")));
    }
    if per_customer_limit < 1 {
        return Err(FieldError::new("per_customer_limit", "must be at least 1"));
    }
    let starts = starts_at.ok_or_else(|| FieldError::new("starts_at", "is required"))?;
    let ends = ends_at.ok_or_else(|| FieldError::new("ends_at", "is required"))?;
    if ends <= starts {
        return Err(FieldError::new("ends_at", "must be after starts_at"));
    }
    Ok((starts, ends))
}

/// Where a purchase is; stored as the string of its `string_value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum PurchaseStatus {
    #[sea_orm(string_value = "RESERVED")]
    Reserved,
    #[sea_orm(string_value = "ORDERED")]
    Ordered,
    #[sea_orm(string_value = "CANCELLED")]
    Cancelled,
}

/// Order events that move a purchase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurchaseEvent {
    OrderPlaced,
    OrderConfirmed,
    OrderCancelled,
}

/// What to do with a purchase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurchaseAction {
    /// Remember the order id (status unchanged).
    LinkOrder,
    /// RESERVED -> ORDERED.
    MarkOrdered,
    /// -> CANCELLED, give the stock back (exactly once: CANCELLED absorbs), publish
    /// TimeSaleStockRestored.
    CancelAndRestore,
    Ignore,
}

impl PurchaseStatus {
    /// ```text
    /// RESERVED ──OrderConfirmed──> ORDERED
    ///    │                           │
    ///    └──────OrderCancelled───────┴──> CANCELLED (stock restored once; absorbs all)
    /// ```
    pub fn decide(self, event: PurchaseEvent) -> PurchaseAction {
        use PurchaseStatus::*;
        match (self, event) {
            (Reserved, PurchaseEvent::OrderPlaced) => PurchaseAction::LinkOrder,
            (Reserved, PurchaseEvent::OrderConfirmed) => PurchaseAction::MarkOrdered,
            (Reserved | Ordered, PurchaseEvent::OrderCancelled) => PurchaseAction::CancelAndRestore,
            (Ordered, PurchaseEvent::OrderPlaced | PurchaseEvent::OrderConfirmed) | (Cancelled, _) => {
                PurchaseAction::Ignore
            }
        }
    }
}

/// A customer's purchase of units of a sale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purchase {
    pub purchase_id: String,
    pub sale_id: String,
    pub customer_id: String,
    pub quantity: i32,
    pub status: PurchaseStatus,
    pub order_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub address: Address,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Purchase {
    /// A granted `ask` of sale `sale_id`: RESERVED, no order yet.
    pub fn reserve(purchase_id: String, sale_id: &str, ask: &Ask, address: &Address, now: DateTime<Utc>) -> Self {
        Self {
            purchase_id,
            sale_id: sale_id.to_owned(),
            customer_id: ask.customer_id.clone(),
            quantity: ask.quantity,
            status: PurchaseStatus::Reserved,
            order_id: None,
            idempotency_key: ask.idempotency_key.clone(),
            address: address.clone(),
            created_at: now,
            updated_at: now,
        }
    }

    /// What `event` does to this purchase (see [`PurchaseStatus::decide`]).
    pub fn decide(&self, event: PurchaseEvent) -> PurchaseAction {
        self.status.decide(event)
    }
}

/// One reservation request in a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub customer_id: String,
    pub quantity: i32,
    pub idempotency_key: Option<String>,
}

/// The answer to one request of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Granted,
    SoldOut,
    LimitExceeded,
    /// Same customer and key as an earlier request of the batch: same answer.
    SameAs(usize),
}

/// Decides a batch in arrival order against `remaining` stock and the customers'
/// current allocations. Every request gets its own exact answer: granted while stock
/// lasts, `SoldOut` exactly when what is left cannot cover the request, `LimitExceeded`
/// when the customer's total would pass the limit. Returns the decisions and the total
/// quantity granted.
pub fn decide_batch(
    remaining: i32,
    limit: i32,
    allocated: &HashMap<String, i32>,
    asks: &[Ask],
) -> (Vec<Decision>, i32) {
    let mut left = remaining;
    let mut alloc: HashMap<&str, i32> = HashMap::new();
    let mut seen_keys: HashMap<(&str, &str), usize> = HashMap::new();
    let mut out = Vec::with_capacity(asks.len());
    for (i, a) in asks.iter().enumerate() {
        if let Some(k) = &a.idempotency_key {
            if let Some(first) = seen_keys.get(&(a.customer_id.as_str(), k.as_str())) {
                out.push(Decision::SameAs(*first));
                continue;
            }
            seen_keys.insert((a.customer_id.as_str(), k.as_str()), i);
        }
        let current =
            *alloc.entry(a.customer_id.as_str()).or_insert_with(|| allocated.get(&a.customer_id).copied().unwrap_or(0));
        if current + a.quantity > limit {
            out.push(Decision::LimitExceeded);
        } else if a.quantity > left {
            out.push(Decision::SoldOut);
        } else {
            left -= a.quantity;
            alloc.insert(a.customer_id.as_str(), current + a.quantity);
            out.push(Decision::Granted);
        }
    }
    (out, remaining - left)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(c: &str, q: i32, k: Option<&str>) -> Ask {
        Ask { customer_id: c.into(), quantity: q, idempotency_key: k.map(str::to_owned) }
    }

    #[test]
    fn purchase_state_machine_over_every_state_and_event() {
        use PurchaseAction::*;
        use PurchaseEvent::*;
        use PurchaseStatus::*;
        let table = [
            (Reserved, OrderPlaced, LinkOrder),
            (Reserved, OrderConfirmed, MarkOrdered),
            (Reserved, OrderCancelled, CancelAndRestore),
            (Ordered, OrderPlaced, Ignore),
            (Ordered, OrderConfirmed, Ignore),
            (Ordered, OrderCancelled, CancelAndRestore),
            (Cancelled, OrderPlaced, Ignore),
            (Cancelled, OrderConfirmed, Ignore),
            (Cancelled, OrderCancelled, Ignore),
        ];
        for (s, e, a) in table {
            assert_eq!(s.decide(e), a, "{s:?} {e:?}");
        }
        use sea_orm::Iterable;
        assert!(PurchaseStatus::iter().all(|s| table.iter().any(|(t, ..)| *t == s)), "every status in the table");
    }

    /// A new purchase is RESERVED with its ask and address; its transitions are its
    /// status's.
    #[test]
    fn a_purchase_starts_reserved() {
        let now = Utc::now();
        let address = Address { line1: "1".into(), city: "c".into(), postal_code: "p".into(), country: "KR".into() };
        let p = Purchase::reserve("p".into(), "s", &ask("a", 2, Some("k")), &address, now);
        assert_eq!((p.status, p.quantity, p.idempotency_key.as_deref()), (PurchaseStatus::Reserved, 2, Some("k")));
        assert_eq!((&p.order_id, &p.address, p.created_at, p.updated_at), (&None, &address, now, now));
        assert_eq!(p.decide(PurchaseEvent::OrderConfirmed), PurchaseAction::MarkOrdered);
    }

    /// Any sequence of events, with duplicates and in any order, restores stock at
    /// most once, and exactly once when a cancellation is among them.
    #[test]
    fn stock_is_restored_exactly_once_whatever_the_order() {
        let evs = [PurchaseEvent::OrderPlaced, PurchaseEvent::OrderConfirmed, PurchaseEvent::OrderCancelled];
        for code in 0..3u32.pow(5) {
            let mut status = PurchaseStatus::Reserved;
            let (mut restores, mut cancelled) = (0, false);
            let mut c = code;
            for _ in 0..5 {
                let e = evs[(c % 3) as usize];
                c /= 3;
                cancelled |= e == PurchaseEvent::OrderCancelled;
                match status.decide(e) {
                    PurchaseAction::CancelAndRestore => {
                        restores += 1;
                        status = PurchaseStatus::Cancelled;
                    }
                    PurchaseAction::MarkOrdered => status = PurchaseStatus::Ordered,
                    _ => {}
                }
            }
            assert_eq!(restores, i32::from(cancelled), "sequence {code}");
        }
    }

    #[test]
    fn batch_grants_until_sold_out_and_respects_limits() {
        let asks = vec![ask("a", 1, None), ask("b", 2, None), ask("a", 1, None), ask("c", 1, None), ask("d", 1, None)];
        let (d, granted) = decide_batch(3, 1, &HashMap::new(), &asks);
        assert_eq!(
            d,
            vec![
                Decision::Granted,
                Decision::LimitExceeded,
                Decision::LimitExceeded,
                Decision::Granted,
                Decision::Granted
            ]
        );
        assert_eq!(granted, 3);
        let (d, granted) =
            decide_batch(1, 5, &HashMap::new(), &[ask("a", 2, None), ask("b", 1, None), ask("c", 1, None)]);
        assert_eq!(
            d,
            vec![Decision::SoldOut, Decision::Granted, Decision::SoldOut],
            "a big ask does not block a small one"
        );
        assert_eq!(granted, 1);
    }

    #[test]
    fn batch_uses_existing_allocations_and_replays_keys() {
        let existing = HashMap::from([("a".to_owned(), 1)]);
        let asks =
            vec![ask("a", 1, Some("k")), ask("b", 1, Some("k")), ask("b", 1, Some("k")), ask("b", 1, Some("k2"))];
        let (d, granted) = decide_batch(10, 2, &existing, &asks);
        assert_eq!(d, vec![Decision::Granted, Decision::Granted, Decision::SameAs(1), Decision::Granted]);
        assert_eq!(granted, 3);
        let (d, _) = decide_batch(10, 1, &existing, &[ask("a", 1, None)]);
        assert_eq!(d, vec![Decision::LimitExceeded]);
    }

    /// Random batches never grant more than the stock or than any customer's limit.
    #[test]
    fn batches_never_oversell() {
        let mut seed: u64 = 42;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as i32
        };
        for _ in 0..500 {
            let stock = next() % 20;
            let limit = 1 + next() % 3;
            let asks: Vec<Ask> =
                (0..(next() % 40)).map(|_| ask(&format!("c{}", next() % 8), 1 + next() % 3, None)).collect();
            let (d, granted) = decide_batch(stock, limit, &HashMap::new(), &asks);
            assert!(granted <= stock);
            let mut per: HashMap<&str, i32> = HashMap::new();
            let mut left = stock;
            for (a, d) in asks.iter().zip(&d) {
                let mine = per.get(a.customer_id.as_str()).copied().unwrap_or(0);
                match d {
                    Decision::Granted => {
                        assert!(a.quantity <= left && mine + a.quantity <= limit);
                        left -= a.quantity;
                        *per.entry(&a.customer_id).or_default() += a.quantity;
                    }
                    // SOLD_OUT exactly when what is left cannot cover the request.
                    Decision::SoldOut => assert!(a.quantity > left && mine + a.quantity <= limit),
                    Decision::LimitExceeded => assert!(mine + a.quantity > limit),
                    Decision::SameAs(_) => unreachable!("no keys in this test"),
                }
            }
            assert_eq!(stock - left, granted);
            assert!(per.values().all(|q| *q <= limit));
        }
    }

    #[test]
    fn windows() {
        let now = Utc::now();
        let t = SaleTerms {
            sale_id: "s".into(),
            sku: "x".into(),
            price_cents: 1,
            per_customer_limit: 1,
            starts_at: now,
            ends_at: now + chrono::Duration::hours(1),
        };
        assert!(t.is_active(now));
        assert!(!t.is_active(now - chrono::Duration::seconds(1)));
        assert!(!t.is_active(now + chrono::Duration::hours(1)));
        assert_eq!(t.check_active(now), Ok(()));
        assert_eq!(t.check_active(now - chrono::Duration::seconds(1)), Err(Inactive::NotStarted));
        assert_eq!(t.check_active(now + chrono::Duration::hours(1)), Err(Inactive::Ended));
        assert_eq!(sale_numbers(1, 0, 1, Some(now), Some(now)).unwrap_err().field, "total_stock");
        assert_eq!(sale_numbers(1, 5, 1, Some(now), Some(now)).unwrap_err().field, "ends_at");
        assert_eq!(sale_numbers(-1, 5, 1, None, None).unwrap_err().field, "price_cents");
        assert_eq!(sale_numbers(1, 5, 0, None, None).unwrap_err().field, "per_customer_limit");
    }

    #[test]
    fn a_new_sale_has_all_its_stock_and_a_checked_window() {
        let now = Utc::now();
        let new = NewSale {
            sku: "x".into(),
            title: "X".into(),
            price_cents: 1,
            total_stock: 5,
            per_customer_limit: 1,
            starts_at: Some(now),
            ends_at: Some(now + chrono::Duration::hours(1)),
        };
        let sale = Sale::new("s".into(), new.clone(), now).unwrap();
        assert_eq!((sale.total_stock, sale.remaining_stock, sale.created_at), (5, 5, now));
        assert_eq!((sale.terms.sale_id.as_str(), sale.terms.starts_at), ("s", now));
        let err = Sale::new("s".into(), NewSale { ends_at: Some(now), ..new }, now).unwrap_err();
        assert_eq!(err.field, "ends_at");
    }
}
