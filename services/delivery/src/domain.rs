//! Delivery rules as pure code: fee quotes, fault selection and the delivery state
//! machine — the [`Delivery`] aggregate, made by [`Delivery::new`], whose methods are the
//! transitions. The stored strings of [`DeliveryStatus`] and [`FailureReason`] are
//! defined here and nowhere else.
//!
//! ```text
//!  (none) ──OrderPlaced──> SCHEDULED ──OrderCancelled──> CANCELLED
//!     │          └───────> FAILED   (capacity, unserviceable, fault injection)
//!     └──OrderCancelled──> CANCELLED (tombstone: a late OrderPlaced schedules nothing)
//! ```

use chrono::{DateTime, Utc};
use cloudmart_platform::proto::order::v1::ShippingAddress;
use sea_orm::{ActiveEnum, DeriveActiveEnum, EnumIter, entity::prelude::StringLen};

/// Where a delivery is (`deliveries.status`, stored as these strings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum DeliveryStatus {
    #[sea_orm(string_value = "SCHEDULED")]
    Scheduled,
    #[sea_orm(string_value = "FAILED")]
    Failed,
    #[sea_orm(string_value = "CANCELLED")]
    Cancelled,
}

/// Why scheduling failed (`DeliveryFailed.reason`, `Delivery.failure_reason`,
/// `deliveries.failure_reason`: these strings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum FailureReason {
    /// The country is not served.
    #[sea_orm(string_value = "UNSERVICEABLE_ADDRESS")]
    UnserviceableAddress,
    /// The postal code's capacity for the day is taken.
    #[sea_orm(string_value = "REGION_CAPACITY_EXHAUSTED")]
    RegionCapacityExhausted,
    /// Fault injection selected the order.
    #[sea_orm(string_value = "FAULT_INJECTED")]
    FaultInjected,
}

impl FailureReason {
    /// The reason as the events and the API carry it (the stored string).
    pub fn code(self) -> String {
        self.to_value()
    }
}

/// Order events delivery reacts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryEvent {
    OrderPlaced,
    OrderCancelled,
}

/// What to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Try to schedule: SCHEDULED + DeliveryScheduled, or FAILED + DeliveryFailed.
    Schedule,
    /// Cancel a scheduled delivery: release its capacity, CANCELLED + DeliveryCancelled.
    Cancel,
    /// Cancellation before placement: remember it so a late OrderPlaced does nothing.
    Tombstone,
    /// Duplicate, late or absorbed.
    Ignore,
}

/// How an order's delivery comes to exist: the outcome of `OrderPlaced`, or a tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// Capacity was taken on `day` (`YYYY-MM-DD`); the delivery is due `at`.
    Scheduled { day: String, at: DateTime<Utc> },
    /// Scheduling failed.
    Failed(FailureReason),
    /// `OrderCancelled` came first: CANCELLED, so a late `OrderPlaced` schedules nothing.
    Tombstone,
}

/// The delivery of one order (the aggregate; [`crate::store`] maps it to a row).
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub delivery_id: String,
    pub order_id: String,
    pub status: DeliveryStatus,
    /// Empty for a tombstone.
    pub ship_to: ShippingAddress,
    /// Day the capacity was taken from (`YYYY-MM-DD`), when scheduled.
    pub capacity_day: Option<String>,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub failure_reason: Option<FailureReason>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Delivery {
    /// The one constructor: a new delivery `delivery_id` for `order_id`, as `start` says.
    pub fn new(
        delivery_id: String,
        order_id: String,
        ship_to: ShippingAddress,
        start: Start,
        now: DateTime<Utc>,
    ) -> Self {
        let (status, capacity_day, scheduled_for, failure_reason) = match start {
            Start::Scheduled { day, at } => (DeliveryStatus::Scheduled, Some(day), Some(at), None),
            Start::Failed(reason) => (DeliveryStatus::Failed, None, None, Some(reason)),
            Start::Tombstone => (DeliveryStatus::Cancelled, None, None, None),
        };
        Delivery {
            delivery_id,
            order_id,
            status,
            ship_to,
            capacity_day,
            scheduled_for,
            failure_reason,
            created_at: now,
            updated_at: now,
        }
    }

    /// The state machine: what `event` does to an order whose delivery is `current`
    /// (`None`: it has none yet).
    pub fn decide(current: Option<&Delivery>, event: DeliveryEvent) -> Action {
        use DeliveryStatus::*;
        match (current.map(|d| d.status), event) {
            (None, DeliveryEvent::OrderPlaced) => Action::Schedule,
            (None, DeliveryEvent::OrderCancelled) => Action::Tombstone,
            (Some(Scheduled), DeliveryEvent::OrderCancelled) => Action::Cancel,
            (Some(Scheduled | Failed | Cancelled), DeliveryEvent::OrderPlaced)
            | (Some(Failed | Cancelled), DeliveryEvent::OrderCancelled) => Action::Ignore,
        }
    }

    /// [`Action::Cancel`]: SCHEDULED → CANCELLED; false (and no change) unless it is
    /// scheduled. The capacity it took stays recorded (`capacity_day`), to be given back.
    pub fn cancel(&mut self, now: DateTime<Utc>) -> bool {
        if self.status != DeliveryStatus::Scheduled {
            return false;
        }
        self.status = DeliveryStatus::Cancelled;
        self.updated_at = now;
        true
    }
}

/// The delivery rules in force (from configuration).
#[derive(Clone, Debug)]
pub struct Rules {
    pub countries: Vec<String>,
    pub daily_capacity: u32,
    pub fail_postal_codes: Vec<String>,
    pub fail_ratio: f64,
}

impl Rules {
    pub fn serves(&self, country: &str) -> bool {
        self.countries.iter().any(|c| c.eq_ignore_ascii_case(country.trim()))
    }

    /// Fault injection: true when this order must fail to schedule.
    pub fn fault_selects(&self, order_id: &str, postal_code: &str) -> bool {
        self.fail_postal_codes.iter().any(|p| p == postal_code.trim()) || fault_fraction(order_id) < self.fail_ratio
    }

    /// The checks before capacity: `Err(reason)` when scheduling must fail.
    pub fn precheck(&self, order_id: &str, country: &str, postal_code: &str) -> Result<(), FailureReason> {
        if !self.serves(country) {
            Err(FailureReason::UnserviceableAddress)
        } else if self.fault_selects(order_id, postal_code) {
            Err(FailureReason::FaultInjected)
        } else {
            Ok(())
        }
    }
}

/// A stable value in [0, 1) from the order id (FNV-1a, then a splitmix64 finaliser to
/// spread similar ids), so the same orders fail on every replica and every run.
pub fn fault_fraction(order_id: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in order_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A fee quote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quote {
    pub fee_cents: i64,
    pub estimated_days: i32,
}

/// Base fee and days per country; `units` is the number of items shipped.
pub fn quote(country: &str, units: i64) -> Quote {
    let (base, days) = match country {
        "KR" => (300, 1),
        "JP" => (800, 3),
        "US" => (1200, 5),
        "DE" | "GB" => (1000, 4),
        _ => (1500, 7),
    };
    let extra = units.saturating_sub(1).min(50) * 100;
    Quote { fee_cents: base + extra, estimated_days: days }
}

#[cfg(test)]
mod tests {
    use sea_orm::Iterable;

    use super::*;

    fn address() -> ShippingAddress {
        ShippingAddress { line1: "1".into(), city: "c".into(), postal_code: "p".into(), country: "KR".into() }
    }

    /// A delivery that [`Delivery::new`] starts in `status`.
    fn delivery(status: DeliveryStatus) -> Delivery {
        let start = match status {
            DeliveryStatus::Scheduled => Start::Scheduled { day: "2030-01-02".into(), at: Utc::now() },
            DeliveryStatus::Failed => Start::Failed(FailureReason::RegionCapacityExhausted),
            DeliveryStatus::Cancelled => Start::Tombstone,
        };
        Delivery::new("d".into(), "o".into(), address(), start, Utc::now())
    }

    #[test]
    fn every_state_and_event() {
        use DeliveryStatus::*;
        let expected = |s, e| match (s, e) {
            (None, DeliveryEvent::OrderPlaced) => Action::Schedule,
            (None, DeliveryEvent::OrderCancelled) => Action::Tombstone,
            (Some(Scheduled), DeliveryEvent::OrderCancelled) => Action::Cancel,
            _ => Action::Ignore,
        };
        for s in std::iter::once(None).chain(DeliveryStatus::iter().map(Some)) {
            let current = s.map(delivery);
            assert_eq!(current.as_ref().map(|d| d.status), s);
            for e in [DeliveryEvent::OrderPlaced, DeliveryEvent::OrderCancelled] {
                assert_eq!(Delivery::decide(current.as_ref(), e), expected(s, e), "{s:?} {e:?}");
            }
        }
    }

    #[test]
    fn the_constructor_sets_what_each_start_implies() {
        let at = Utc::now();
        let d = Delivery::new("d".into(), "o".into(), address(), Start::Scheduled { day: "2030-01-02".into(), at }, at);
        assert_eq!(
            (d.capacity_day.as_deref(), d.scheduled_for, d.failure_reason),
            (Some("2030-01-02"), Some(at), None)
        );
        let d = delivery(DeliveryStatus::Failed);
        assert_eq!((d.capacity_day, d.scheduled_for), (None, None));
        assert_eq!(d.failure_reason, Some(FailureReason::RegionCapacityExhausted));
    }

    #[test]
    fn only_a_scheduled_delivery_cancels() {
        for status in DeliveryStatus::iter() {
            let mut d = delivery(status);
            assert_eq!(d.cancel(Utc::now()), status == DeliveryStatus::Scheduled, "{status:?}");
            let after = if status == DeliveryStatus::Scheduled { DeliveryStatus::Cancelled } else { status };
            assert_eq!(d.status, after);
        }
    }

    /// After any events, in any order and with duplicates, at most one schedule happens,
    /// and a cancellation (before or after) always ends in CANCELLED or FAILED.
    #[test]
    fn any_order_and_duplicates() {
        let evs = [DeliveryEvent::OrderPlaced, DeliveryEvent::OrderCancelled];
        for seq in 0..(1u32 << 4) {
            let mut current: Option<Delivery> = None;
            let mut schedules = 0;
            let mut cancelled_seen = false;
            for i in 0..4 {
                let e = evs[((seq >> i) & 1) as usize];
                cancelled_seen |= e == DeliveryEvent::OrderCancelled;
                match Delivery::decide(current.as_ref(), e) {
                    Action::Schedule => {
                        schedules += 1;
                        current = Some(delivery(DeliveryStatus::Scheduled));
                    }
                    Action::Cancel => assert!(current.as_mut().expect("a delivery").cancel(Utc::now())),
                    Action::Tombstone => current = Some(delivery(DeliveryStatus::Cancelled)),
                    Action::Ignore => {}
                }
            }
            assert!(schedules <= 1);
            if cancelled_seen {
                assert_eq!(current.map(|d| d.status), Some(DeliveryStatus::Cancelled), "seq {seq:b}");
            }
        }
    }

    #[test]
    fn rules() {
        let r = Rules {
            countries: vec!["KR".into(), "JP".into()],
            daily_capacity: 10,
            fail_postal_codes: vec!["99999".into()],
            fail_ratio: 0.0,
        };
        assert_eq!(r.precheck("o1", "kr", "1"), Ok(()));
        assert_eq!(r.precheck("o1", "FR", "1"), Err(FailureReason::UnserviceableAddress));
        assert_eq!(r.precheck("o1", "KR", "99999"), Err(FailureReason::FaultInjected));
        let all = Rules { fail_ratio: 1.0, ..r.clone() };
        assert_eq!(all.precheck("o1", "KR", "1"), Err(FailureReason::FaultInjected));
    }

    /// The strings other tools read and write with SQL (`cloudmart-audit`, the chaos
    /// nemesis, the e2e tests) and the events carry.
    #[test]
    fn stored_values() {
        let status: Vec<String> = DeliveryStatus::iter().map(|s| s.to_value()).collect();
        assert_eq!(status, ["SCHEDULED", "FAILED", "CANCELLED"]);
        let reasons: Vec<String> = FailureReason::iter().map(FailureReason::code).collect();
        assert_eq!(reasons, ["UNSERVICEABLE_ADDRESS", "REGION_CAPACITY_EXHAUSTED", "FAULT_INJECTED"]);
        assert!(DeliveryStatus::try_from_value(&"QUARANTINED".to_owned()).is_err());
    }

    #[test]
    fn fault_ratio_selects_about_that_share_deterministically() {
        let n = 10_000;
        let hits = (0..n).filter(|i| fault_fraction(&format!("order-{i}")) < 0.2).count();
        assert!((1_700..2_300).contains(&hits), "{hits}");
        assert_eq!(fault_fraction("x"), fault_fraction("x"));
    }

    #[test]
    fn quotes() {
        assert_eq!(quote("KR", 1), Quote { fee_cents: 300, estimated_days: 1 });
        assert_eq!(quote("US", 3), Quote { fee_cents: 1400, estimated_days: 5 });
    }
}
