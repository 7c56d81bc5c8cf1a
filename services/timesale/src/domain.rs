//! Time-sale rules as pure code: sale windows, the purchase state machine, and the
//! decision for a batch of reservations against one sale's stock.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use cloudmart_platform::validate::FieldError;

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

impl SaleTerms {
    /// A sale takes purchases in `[starts_at, ends_at)`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.starts_at <= now && now < self.ends_at
    }
}

pub const MAX_STOCK: i32 = 10_000_000;

/// Validates CreateSale's numbers and window.
pub fn sale_numbers(
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

/// Where a purchase is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurchaseStatus {
    Reserved,
    Ordered,
    Cancelled,
}

impl PurchaseStatus {
    pub const ALL: [PurchaseStatus; 3] = [PurchaseStatus::Reserved, PurchaseStatus::Ordered, PurchaseStatus::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            PurchaseStatus::Reserved => "RESERVED",
            PurchaseStatus::Ordered => "ORDERED",
            PurchaseStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
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

/// ```text
/// RESERVED ──OrderConfirmed──> ORDERED
///    │                           │
///    └──────OrderCancelled───────┴──> CANCELLED (stock restored once; absorbs all)
/// ```
pub fn decide(status: PurchaseStatus, event: PurchaseEvent) -> PurchaseAction {
    use PurchaseStatus::*;
    match (status, event) {
        (Reserved, PurchaseEvent::OrderPlaced) => PurchaseAction::LinkOrder,
        (Reserved, PurchaseEvent::OrderConfirmed) => PurchaseAction::MarkOrdered,
        (Reserved | Ordered, PurchaseEvent::OrderCancelled) => PurchaseAction::CancelAndRestore,
        (Ordered, PurchaseEvent::OrderPlaced | PurchaseEvent::OrderConfirmed) | (Cancelled, _) => {
            PurchaseAction::Ignore
        }
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
            assert_eq!(decide(s, e), a, "{s:?} {e:?}");
        }
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
                match decide(status, e) {
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
        assert_eq!(sale_numbers(1, 0, 1, Some(now), Some(now)).unwrap_err().field, "total_stock");
        assert_eq!(sale_numbers(1, 5, 1, Some(now), Some(now)).unwrap_err().field, "ends_at");
        assert_eq!(sale_numbers(-1, 5, 1, None, None).unwrap_err().field, "price_cents");
        assert_eq!(sale_numbers(1, 5, 0, None, None).unwrap_err().field, "per_customer_limit");
    }
}
