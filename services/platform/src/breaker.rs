//! A circuit breaker as a tower layer, for the synchronous calls between services.
//!
//! When a dependency fails most of its recent calls, waiting for each new call to time
//! out only adds latency and load to a service that is already struggling. The breaker
//! watches the outcome of the last [`BreakerConfig::window`] calls; when at least
//! [`BreakerConfig::min_calls`] of them are known and the share of failures reaches
//! [`BreakerConfig::failure_rate`], it **opens**: calls fail at once with
//! [`BreakerError::Open`] (the caller takes its fallback) without touching the dependency.
//! After [`BreakerConfig::open_for`] it is **half-open**: one probe call at a time goes
//! through; [`BreakerConfig::probes`] successes in a row close it, one failure opens it
//! again for another `open_for`.
//!
//! ```text
//!   closed ──(failure rate ≥ threshold over the window)──▶ open
//!     ▲                                                     │ open_for elapsed
//!     └──(probes successes in a row)── half-open ◀──────────┘
//!                                        │ a probe fails
//!                                        └──────────────────▶ open
//! ```
//!
//! What counts as a failure is the caller's call (a classifier over the result): for
//! gRPC, `UNAVAILABLE` or `DEADLINE_EXCEEDED` are failures of the dependency, while a
//! business refusal such as `FAILED_PRECONDITION` is a healthy answer.
//!
//! The state machine ([`Breaker`]) is pure — time is passed in — and the tower
//! [`CircuitBreaker`] service shares one of it behind a mutex between its clones. A call
//! whose future is dropped before it finishes (the caller gave up) counts as a failure,
//! so a half-open breaker never waits forever on a probe nobody is driving.
//!
//! Metrics: `cloudmart_circuit_breaker_state{breaker}` (0 closed, 1 half-open, 2 open) and
//! `cloudmart_circuit_breaker_calls_total{breaker,result}` (`success`, `failure`,
//! `rejected`).

use std::{
    collections::VecDeque,
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use prometheus::{IntCounter, IntGauge};
use tower::{Layer, Service};

use crate::metrics;

/// Thresholds of a breaker.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Outcomes remembered (a count-based sliding window).
    pub window: usize,
    /// Outcomes needed in the window before the breaker may open.
    pub min_calls: usize,
    /// Share of failures in the window (0 < rate ≤ 1) that opens the breaker.
    pub failure_rate: f64,
    /// How long an open breaker rejects calls before probing.
    pub open_for: Duration,
    /// Successful probes in a row that close a half-open breaker.
    pub probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { window: 20, min_calls: 10, failure_rate: 0.5, open_for: Duration::from_secs(5), probes: 3 }
    }
}

impl BreakerConfig {
    /// Checks the thresholds, naming the first one that is out of range.
    pub fn validate(&self) -> Result<(), String> {
        if self.window == 0 {
            return Err("window must be at least 1".into());
        }
        if self.min_calls == 0 || self.min_calls > self.window {
            return Err(format!(
                "min_calls must be between 1 and the window ({}), got {}",
                self.window, self.min_calls
            ));
        }
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return Err(format!("failure_rate must be in (0, 1], got {}", self.failure_rate));
        }
        if self.open_for.is_zero() {
            return Err("open_for must be longer than 0".into());
        }
        if self.probes == 0 {
            return Err("probes must be at least 1".into());
        }
        Ok(())
    }
}

/// Where a breaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { successes: u32, probing: bool },
}

impl State {
    fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::HalfOpen { .. } => 1,
            State::Open { .. } => 2,
        }
    }
}

/// The answer to "may this call go through?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Go ahead; report the outcome with [`Breaker::record`].
    Call,
    /// Go ahead as the half-open probe; report the outcome with [`Breaker::record`].
    Probe,
    /// Fail fast; the breaker may let calls through again after this long.
    Reject { retry_in: Duration },
}

/// The pure state machine: no I/O, the time is an argument.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
    /// Outcomes of the last `window` calls made while closed (`true` = failure).
    outcomes: VecDeque<bool>,
    failures: usize,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self { config, state: State::Closed, outcomes: VecDeque::with_capacity(config.window), failures: 0 }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Decides whether a call may start at `now`.
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            State::Closed => Admit::Call,
            State::Open { until } if now < until => Admit::Reject { retry_in: until - now },
            State::Open { .. } => {
                self.state = State::HalfOpen { successes: 0, probing: true };
                Admit::Probe
            }
            State::HalfOpen { probing: true, .. } => Admit::Reject { retry_in: Duration::ZERO },
            State::HalfOpen { successes, probing: false } => {
                self.state = State::HalfOpen { successes, probing: true };
                Admit::Probe
            }
        }
    }

    /// Records the outcome of a call admitted with `admitted` at `now`.
    pub fn record(&mut self, admitted: Admit, failed: bool, now: Instant) {
        match (self.state, admitted) {
            (State::Closed, Admit::Call) => {
                self.outcomes.push_back(failed);
                self.failures += usize::from(failed);
                if self.outcomes.len() > self.config.window {
                    let oldest = self.outcomes.pop_front().unwrap_or(false);
                    self.failures -= usize::from(oldest);
                }
                let n = self.outcomes.len();
                if n >= self.config.min_calls && self.failures as f64 >= self.config.failure_rate * n as f64 {
                    self.open(now);
                }
            }
            (State::HalfOpen { successes, .. }, Admit::Probe) => {
                if failed {
                    self.open(now);
                } else if successes + 1 >= self.config.probes {
                    self.state = State::Closed;
                } else {
                    self.state = State::HalfOpen { successes: successes + 1, probing: false };
                }
            }
            // A call admitted in an earlier state (e.g. a slow call that started while
            // closed and ends after the breaker opened) says nothing about the current
            // state: ignore it.
            _ => {}
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = State::Open { until: now + self.config.open_for };
        self.outcomes.clear();
        self.failures = 0;
    }
}

/// The error of a call through the breaker.
#[derive(Debug)]
pub enum BreakerError<E> {
    /// The breaker is open (or half-open with its probe in flight): the dependency was not called.
    Open { breaker: &'static str, retry_in: Duration },
    /// The dependency's own error.
    Inner(E),
}

impl<E: fmt::Display> fmt::Display for BreakerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerError::Open { breaker, retry_in } => {
                write!(f, "circuit breaker {breaker} is open (next probe in {retry_in:?})")
            }
            BreakerError::Inner(e) => e.fmt(f),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for BreakerError<E> {}

/// Where a breaker reads the time (tests pass a manual clock).
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

struct Shared {
    name: &'static str,
    breaker: Mutex<Breaker>,
    clock: Clock,
    /// The breaker's metric series, resolved once (calls only touch atomics).
    state_gauge: Option<IntGauge>,
    successes: Option<IntCounter>,
    failures: Option<IntCounter>,
    rejections: Option<IntCounter>,
}

impl Shared {
    fn admit(&self) -> Admit {
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        let before = b.state();
        let admit = b.admit((self.clock)());
        self.transition(before, b.state());
        admit
    }

    fn record(&self, admitted: Admit, failed: bool) {
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        let before = b.state();
        b.record(admitted, failed, (self.clock)());
        self.transition(before, b.state());
        drop(b);
        let counter = if failed { &self.failures } else { &self.successes };
        if let Some(c) = counter {
            c.inc();
        }
    }

    fn rejected(&self) {
        if let Some(c) = &self.rejections {
            c.inc();
        }
    }

    fn transition(&self, before: State, after: State) {
        if std::mem::discriminant(&before) == std::mem::discriminant(&after) {
            return;
        }
        match after {
            State::Open { .. } => tracing::warn!(breaker = self.name, "circuit breaker opened"),
            State::HalfOpen { .. } => tracing::info!(breaker = self.name, "circuit breaker half-open: probing"),
            State::Closed => tracing::info!(breaker = self.name, "circuit breaker closed"),
        }
        if let Some(g) = &self.state_gauge {
            g.set(after.gauge());
        }
    }
}

const CALLS: &str = "circuit_breaker_calls_total";
const STATE: &str = "circuit_breaker_state";
const CALLS_HELP: &str = "Calls through a circuit breaker, by breaker and result (success, failure, rejected).";
const STATE_HELP: &str = "Circuit breaker state, by breaker: 0 closed, 1 half-open, 2 open.";

/// Wraps services in a [`CircuitBreaker`]; every service made by one layer shares one breaker.
#[derive(Clone)]
pub struct CircuitBreakerLayer<C> {
    shared: Arc<Shared>,
    is_failure: C,
}

impl<C> CircuitBreakerLayer<C> {
    /// `is_failure` classifies a finished call: `true` when it tells the dependency is unwell.
    pub fn new(name: &'static str, config: BreakerConfig, is_failure: C) -> Self {
        Self::with_clock(name, config, is_failure, Arc::new(Instant::now))
    }

    /// Like [`CircuitBreakerLayer::new`], reading the time from `clock`.
    pub fn with_clock(name: &'static str, config: BreakerConfig, is_failure: C, clock: Clock) -> Self {
        let calls = |result| metrics::counter_handle(CALLS, CALLS_HELP, &[("breaker", name), ("result", result)]);
        let shared = Shared {
            name,
            breaker: Mutex::new(Breaker::new(config)),
            clock,
            state_gauge: metrics::gauge_handle(STATE, STATE_HELP, &[("breaker", name)]),
            successes: calls("success"),
            failures: calls("failure"),
            rejections: calls("rejected"),
        };
        if let Some(g) = &shared.state_gauge {
            g.set(State::Closed.gauge());
        }
        Self { shared: Arc::new(shared), is_failure }
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker { inner, shared: self.shared.clone(), is_failure: self.is_failure.clone() }
    }
}

/// The tower service: fails fast while its breaker is open.
#[derive(Clone)]
pub struct CircuitBreaker<S, C> {
    inner: S,
    shared: Arc<Shared>,
    is_failure: C,
}

impl<S, C> CircuitBreaker<S, C> {
    /// The breaker's current state.
    pub fn state(&self) -> State {
        self.shared.breaker.lock().unwrap_or_else(|e| e.into_inner()).state()
    }
}

/// Records a failure if the call's future is dropped before it finished.
struct Outcome {
    shared: Arc<Shared>,
    admitted: Admit,
    recorded: bool,
}

impl Outcome {
    fn record(mut self, failed: bool) {
        self.recorded = true;
        self.shared.record(self.admitted, failed);
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if !self.recorded {
            self.shared.record(self.admitted, true);
        }
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
    C: Fn(&Result<S::Response, S::Error>) -> bool + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = BreakerError<S::Error>;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(BreakerError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let admitted = self.shared.admit();
        if let Admit::Reject { retry_in } = admitted {
            self.shared.rejected();
            let breaker = self.shared.name;
            return Box::pin(std::future::ready(Err(BreakerError::Open { breaker, retry_in })));
        }
        let outcome = Outcome { shared: self.shared.clone(), admitted, recorded: false };
        let is_failure = self.is_failure.clone();
        let call = self.inner.call(req);
        Box::pin(async move {
            let result = call.await;
            outcome.record(is_failure(&result));
            result.map_err(BreakerError::Inner)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig { window: 10, min_calls: 4, failure_rate: 0.5, open_for: Duration::from_secs(5), probes: 2 }
    }

    fn feed(b: &mut Breaker, outcomes: &[bool], now: Instant) {
        for &failed in outcomes {
            let a = b.admit(now);
            assert_eq!(a, Admit::Call, "closed breakers admit every call");
            b.record(a, failed, now);
        }
    }

    #[test]
    fn stays_closed_below_min_calls_and_below_the_rate() {
        let now = Instant::now();
        let mut b = Breaker::new(config());
        feed(&mut b, &[true, true, true], now);
        assert_eq!(b.state(), State::Closed, "3 failures < min_calls 4");
        let mut b = Breaker::new(config());
        // 4 of 10 failed (40 % < 50 %), interleaved.
        feed(&mut b, &[false, true, false, false, true, false, true, false, true, false], now);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn opens_at_the_rate_and_forgets_old_outcomes() {
        let now = Instant::now();
        let mut b = Breaker::new(config());
        feed(&mut b, &[false, true, false, true], now);
        assert_eq!(b.state(), State::Open { until: now + Duration::from_secs(5) }, "2 of 4 = 50 %");

        // Old successes slide out of the window: 10 successes then 5 failures → 5/10.
        let mut b = Breaker::new(config());
        feed(&mut b, &[false; 10], now);
        feed(&mut b, &[true; 4], now);
        assert_eq!(b.state(), State::Closed, "4 of 10");
        feed(&mut b, &[true], now);
        assert!(matches!(b.state(), State::Open { .. }), "5 of the last 10");
    }

    #[test]
    fn open_rejects_until_open_for_then_admits_one_probe_at_a_time() {
        let t0 = Instant::now();
        let mut b = Breaker::new(config());
        feed(&mut b, &[true; 4], t0);
        assert_eq!(b.admit(t0 + Duration::from_secs(1)), Admit::Reject { retry_in: Duration::from_secs(4) });
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(b.admit(t1), Admit::Probe);
        assert_eq!(b.admit(t1), Admit::Reject { retry_in: Duration::ZERO }, "one probe in flight at a time");
        b.record(Admit::Probe, false, t1);
        assert_eq!(b.state(), State::HalfOpen { successes: 1, probing: false });
        assert_eq!(b.admit(t1), Admit::Probe);
        b.record(Admit::Probe, false, t1);
        assert_eq!(b.state(), State::Closed, "2 successful probes close it");
        feed(&mut b, &[true; 3], t1);
        assert_eq!(b.state(), State::Closed, "the window restarted empty after opening");
    }

    #[test]
    fn a_failed_probe_opens_again_for_a_full_period() {
        let t0 = Instant::now();
        let mut b = Breaker::new(config());
        feed(&mut b, &[true; 4], t0);
        let t1 = t0 + Duration::from_secs(6);
        assert_eq!(b.admit(t1), Admit::Probe);
        b.record(Admit::Probe, false, t1);
        assert_eq!(b.admit(t1), Admit::Probe);
        b.record(Admit::Probe, true, t1);
        assert_eq!(b.state(), State::Open { until: t1 + Duration::from_secs(5) });
    }

    #[test]
    fn outcomes_of_calls_from_an_earlier_state_are_ignored() {
        let t0 = Instant::now();
        let mut b = Breaker::new(config());
        let slow = b.admit(t0);
        feed(&mut b, &[true; 4], t0);
        let open = b.state();
        b.record(slow, false, t0);
        assert_eq!(b.state(), open, "a late success of a call made while closed does not close it");
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(b.admit(t1), Admit::Probe);
        b.record(Admit::Call, true, t1);
        assert_eq!(b.state(), State::HalfOpen { successes: 0, probing: true }, "only the probe decides");
    }

    #[test]
    fn config_validation_names_the_bad_threshold() {
        assert!(BreakerConfig::default().validate().is_ok());
        let bad = |f: fn(&mut BreakerConfig)| {
            let mut c = BreakerConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(bad(|c| c.window = 0).contains("window"));
        assert!(bad(|c| c.min_calls = 21).contains("min_calls"));
        assert!(bad(|c| c.failure_rate = 0.0).contains("failure_rate"));
        assert!(bad(|c| c.failure_rate = 1.5).contains("failure_rate"));
        assert!(bad(|c| c.open_for = Duration::ZERO).contains("open_for"));
        assert!(bad(|c| c.probes = 0).contains("probes"));
    }

    /// A clock the test moves by hand.
    fn manual_clock() -> (Clock, Arc<Mutex<Instant>>) {
        let now = Arc::new(Mutex::new(Instant::now()));
        let read = now.clone();
        (Arc::new(move || *read.lock().unwrap()), now)
    }

    /// The tower service over a scripted dependency.
    #[tokio::test]
    async fn the_service_fails_fast_while_open_and_recovers() {
        use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
        use tower::ServiceExt;

        let calls = Arc::new(AtomicU32::new(0));
        let healthy = Arc::new(AtomicBool::new(false));
        let dependency = {
            let (calls, healthy) = (calls.clone(), healthy.clone());
            tower::service_fn(move |n: u32| {
                calls.fetch_add(1, Ordering::SeqCst);
                let ok = healthy.load(Ordering::SeqCst);
                async move { if ok { Ok::<u32, String>(n) } else { Err("unavailable".to_owned()) } }
            })
        };
        let (clock, now) = manual_clock();
        let layer = CircuitBreakerLayer::with_clock("test", config(), |r: &Result<u32, String>| r.is_err(), clock);
        let mut svc = layer.layer(dependency);

        for i in 0..4 {
            let err = svc.ready().await.unwrap().call(i).await.unwrap_err();
            assert!(matches!(err, BreakerError::Inner(_)));
        }
        assert!(matches!(svc.state(), State::Open { .. }));
        for i in 0..100 {
            let err = svc.ready().await.unwrap().call(i).await.unwrap_err();
            assert!(matches!(err, BreakerError::Open { breaker: "test", .. }), "{err}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4, "an open breaker does not call the dependency");
        let series = |result| {
            metrics::counter_handle(CALLS, CALLS_HELP, &[("breaker", "test"), ("result", result)]).unwrap().get()
        };
        assert_eq!((series("failure"), series("rejected")), (4, 100));
        let state = metrics::gauge_handle(STATE, STATE_HELP, &[("breaker", "test")]).unwrap();
        assert_eq!(state.get(), 2, "open");

        healthy.store(true, Ordering::SeqCst);
        *now.lock().unwrap() += Duration::from_secs(5);
        assert_eq!(svc.ready().await.unwrap().call(7).await.unwrap(), 7);
        assert_eq!(svc.ready().await.unwrap().call(8).await.unwrap(), 8);
        assert_eq!(svc.state(), State::Closed);
        assert_eq!(calls.load(Ordering::SeqCst), 6);
        assert_eq!((series("success"), state.get()), (2, 0));
    }

    /// A probe whose caller gives up counts as failed instead of blocking the breaker.
    #[tokio::test]
    async fn a_dropped_probe_counts_as_a_failure() {
        use tower::ServiceExt;

        let dependency = tower::service_fn(|_: ()| async { Err::<(), &str>("down") });
        let (clock, now) = manual_clock();
        let mut svc = CircuitBreakerLayer::with_clock("drop", config(), |r: &Result<(), &str>| r.is_err(), clock)
            .layer(dependency);
        for _ in 0..4 {
            let _ = svc.ready().await.unwrap().call(()).await;
        }
        *now.lock().unwrap() += Duration::from_secs(5);
        let probe = svc.ready().await.unwrap().call(());
        assert_eq!(svc.state(), State::HalfOpen { successes: 0, probing: true });
        drop(probe);
        assert!(matches!(svc.state(), State::Open { .. }), "dropping the probe reopened the breaker");
    }
}
