//! Bounded exponential back-off with decorrelated jitter — the one retry delay of the
//! platform (consumer retries, DLQ publishing, the outbox relay).
//!
//! Each delay is drawn uniformly from `[base, min(cap, 3 × previous delay)]` ("decorrelated
//! jitter"): it grows roughly exponentially while failures last, many processes retrying
//! the same outage spread out instead of hammering it in lock-step, and
//!
//! - **invariant**: every delay is `>= base` (no busy loop) and `<= cap` (bounded wait);
//! - [`Backoff::reset`] after a success starts again from `base`.
//!
//! The random source is a small xorshift generator seeded from a v4 UUID (the OS's
//! randomness), so the workspace needs no extra dependency; it is not cryptographic and
//! needs not be.

use std::time::Duration;

/// Retry delays for one retrying loop. Not shared between tasks: each loop owns one.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    prev: Duration,
    attempts: u32,
    rng: u64,
}

impl Backoff {
    /// Delays between `base` and `cap` (`cap` is raised to `base` if smaller; a zero
    /// `base` is taken as 1 ms so a retry never spins).
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self::with_seed(base, cap, uuid::Uuid::new_v4().as_u64_pair().0)
    }

    /// Like [`Backoff::new`] with a fixed seed: the same seed gives the same delays.
    pub fn with_seed(base: Duration, cap: Duration, seed: u64) -> Self {
        let base = base.max(Duration::from_millis(1));
        let cap = cap.max(base);
        // xorshift must not start at 0 (it would stay there).
        let rng = if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed };
        Self { base, cap, prev: base, attempts: 0, rng }
    }

    /// The delay before the next retry; always within `[base, cap]`.
    pub fn next_delay(&mut self) -> Duration {
        self.attempts = self.attempts.saturating_add(1);
        let upper = self.cap.min(self.prev.saturating_mul(3)).max(self.base);
        let span = upper.as_nanos().saturating_sub(self.base.as_nanos());
        let offset = if span == 0 { 0 } else { u128::from(self.next_u64()) % (span + 1) };
        let nanos = self.base.as_nanos() + offset;
        // `nanos <= cap`, which came from a `Duration`, so it fits in u64 nanoseconds
        // for any cap below 584 years; saturate rather than panic beyond.
        let delay = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).min(self.cap);
        self.prev = delay;
        delay
    }

    /// How many delays were handed out since the start or the last [`Backoff::reset`].
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// After a success: the next delay starts from `base` again.
    pub fn reset(&mut self) {
        self.prev = self.base;
        self.attempts = 0;
    }

    /// The largest delay this back-off hands out.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    fn next_u64(&mut self) -> u64 {
        // xorshift64* (Vigna): fast, full period over non-zero states.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(5);

    #[test]
    fn every_delay_is_within_base_and_cap() {
        for seed in 1..200 {
            let mut b = Backoff::with_seed(BASE, CAP, seed);
            for _ in 0..100 {
                let d = b.next_delay();
                assert!(d >= BASE, "seed {seed}: {d:?} below base");
                assert!(d <= CAP, "seed {seed}: {d:?} above cap");
            }
        }
    }

    #[test]
    fn delays_grow_towards_the_cap_and_stay_bounded() {
        for seed in 1..50 {
            let mut b = Backoff::with_seed(BASE, CAP, seed);
            let late: Vec<Duration> = (0..200).map(|_| b.next_delay()).skip(100).collect();
            assert!(late.iter().all(|d| *d <= CAP));
            // Long runs of failures reach seconds, not stay at the base.
            assert!(late.iter().any(|d| *d > Duration::from_secs(1)), "seed {seed}: {late:?}");
        }
        // The first delay can be at most 3 × base.
        let mut b = Backoff::with_seed(BASE, CAP, 7);
        assert!(b.next_delay() <= BASE * 3);
    }

    #[test]
    fn jitter_varies_between_retries_and_between_instances() {
        let mut b = Backoff::with_seed(BASE, CAP, 42);
        let seq: Vec<Duration> = (0..50).map(|_| b.next_delay()).collect();
        let distinct: std::collections::HashSet<_> = seq.iter().collect();
        assert!(distinct.len() > 25, "delays barely vary: {seq:?}");
        let firsts: std::collections::HashSet<Duration> =
            (0..50).map(|_| Backoff::new(BASE, CAP).next_delay()).collect();
        assert!(firsts.len() > 10, "independent back-offs draw the same delays: {firsts:?}");
    }

    #[test]
    fn same_seed_same_delays_and_reset_starts_over() {
        let draw = |seed| {
            let mut b = Backoff::with_seed(BASE, CAP, seed);
            (0..20).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(draw(9), draw(9));
        let mut b = Backoff::with_seed(BASE, CAP, 3);
        for _ in 0..30 {
            b.next_delay();
        }
        assert_eq!(b.attempts(), 30);
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert!(b.next_delay() <= BASE * 3, "after reset the delay starts from base again");
    }

    #[test]
    fn degenerate_bounds_are_safe() {
        let mut zero = Backoff::with_seed(Duration::ZERO, Duration::ZERO, 0);
        assert_eq!(zero.next_delay(), Duration::from_millis(1), "no zero delay, no spin");
        let mut inverted = Backoff::with_seed(Duration::from_secs(2), Duration::from_secs(1), 5);
        assert_eq!(inverted.cap(), Duration::from_secs(2));
        assert_eq!(inverted.next_delay(), Duration::from_secs(2));
        let mut huge = Backoff::with_seed(Duration::from_secs(1), Duration::MAX, 11);
        for _ in 0..200 {
            assert!(huge.next_delay() >= Duration::from_secs(1));
        }
    }
}
