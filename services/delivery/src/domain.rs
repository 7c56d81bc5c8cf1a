//! Delivery rules as pure code: fee quotes, fault selection and the delivery state machine.
//!
//! ```text
//!  (none) ──OrderPlaced──> SCHEDULED ──OrderCancelled──> CANCELLED
//!     │          └───────> FAILED   (capacity, unserviceable, fault injection)
//!     └──OrderCancelled──> CANCELLED (tombstone: a late OrderPlaced schedules nothing)
//! ```

/// Where a delivery is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    Absent,
    Scheduled,
    Failed,
    Cancelled,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 4] =
        [DeliveryState::Absent, DeliveryState::Scheduled, DeliveryState::Failed, DeliveryState::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Absent => "ABSENT",
            DeliveryState::Scheduled => "SCHEDULED",
            DeliveryState::Failed => "FAILED",
            DeliveryState::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
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

pub fn decide(state: DeliveryState, event: DeliveryEvent) -> Action {
    use DeliveryState::*;
    match (state, event) {
        (Absent, DeliveryEvent::OrderPlaced) => Action::Schedule,
        (Absent, DeliveryEvent::OrderCancelled) => Action::Tombstone,
        (Scheduled, DeliveryEvent::OrderCancelled) => Action::Cancel,
        (Scheduled | Failed | Cancelled, DeliveryEvent::OrderPlaced)
        | (Failed | Cancelled, DeliveryEvent::OrderCancelled) => Action::Ignore,
    }
}

/// Why scheduling failed (`DeliveryFailed.reason`, `Delivery.failure_reason`).
pub mod failure {
    pub const UNSERVICEABLE_ADDRESS: &str = "UNSERVICEABLE_ADDRESS";
    pub const REGION_CAPACITY_EXHAUSTED: &str = "REGION_CAPACITY_EXHAUSTED";
    pub const FAULT_INJECTED: &str = "FAULT_INJECTED";
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
    pub fn precheck(&self, order_id: &str, country: &str, postal_code: &str) -> Result<(), &'static str> {
        if !self.serves(country) {
            Err(failure::UNSERVICEABLE_ADDRESS)
        } else if self.fault_selects(order_id, postal_code) {
            Err(failure::FAULT_INJECTED)
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
    use super::*;

    #[test]
    fn every_state_and_event() {
        use DeliveryState::*;
        let expected = |s, e| match (s, e) {
            (Absent, DeliveryEvent::OrderPlaced) => Action::Schedule,
            (Absent, DeliveryEvent::OrderCancelled) => Action::Tombstone,
            (Scheduled, DeliveryEvent::OrderCancelled) => Action::Cancel,
            _ => Action::Ignore,
        };
        for s in DeliveryState::ALL {
            for e in [DeliveryEvent::OrderPlaced, DeliveryEvent::OrderCancelled] {
                assert_eq!(decide(s, e), expected(s, e), "{s:?} {e:?}");
            }
        }
    }

    /// After any events, in any order and with duplicates, at most one schedule happens,
    /// and a cancellation (before or after) always ends in CANCELLED or FAILED.
    #[test]
    fn any_order_and_duplicates() {
        let evs = [DeliveryEvent::OrderPlaced, DeliveryEvent::OrderCancelled];
        for seq in 0..(1u32 << 4) {
            let mut state = DeliveryState::Absent;
            let mut schedules = 0;
            let mut cancelled_seen = false;
            for i in 0..4 {
                let e = evs[((seq >> i) & 1) as usize];
                cancelled_seen |= e == DeliveryEvent::OrderCancelled;
                state = match decide(state, e) {
                    Action::Schedule => {
                        schedules += 1;
                        DeliveryState::Scheduled
                    }
                    Action::Cancel | Action::Tombstone => DeliveryState::Cancelled,
                    Action::Ignore => state,
                };
            }
            assert!(schedules <= 1);
            if cancelled_seen {
                assert_eq!(state, DeliveryState::Cancelled, "seq {seq:b}");
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
        assert_eq!(r.precheck("o1", "FR", "1"), Err(failure::UNSERVICEABLE_ADDRESS));
        assert_eq!(r.precheck("o1", "KR", "99999"), Err(failure::FAULT_INJECTED));
        let all = Rules { fail_ratio: 1.0, ..r.clone() };
        assert_eq!(all.precheck("o1", "KR", "1"), Err(failure::FAULT_INJECTED));
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
