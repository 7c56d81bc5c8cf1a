//! The orders scenario: regular orders through the order service and the saga behind
//! them (order → delivery → order), with a share of them made to fail and a share
//! cancelled by the customer.
//!
//! Each call is a `PlaceOrder` of one item. Its kind follows from its index
//! ([`OrderMix::kind`]): `--fault-share` of the orders ship to `--fault-postal-code`,
//! which the delivery service is configured to fail (`FAULT_DELIVERY_FAIL_POSTAL_CODES`),
//! so the order ends CANCELLED with `DELIVERY_FAILED` — the compensation; `--cancel-share`
//! are cancelled (`CancelOrder`) as soon as they are accepted; the rest are left alone and
//! should end CONFIRMED.
//!
//! The call's slot is free once `PlaceOrder` answers; the order is then followed apart
//! (it does not count against `--concurrency`): `GetOrder` after `--saga-poll`, then at
//! doubling intervals up to a second, until it is CONFIRMED or CANCELLED or
//! `--saga-timeout` has passed. The order service offers no watch, but it stamps the
//! order's last change (`updated_at`), so the saga's latency is taken from the order's
//! own timestamps and does not depend on how often the generator polls (see
//! [`saga_latency`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cloudmart_proto::order::v1::{self as pb, order_service_client::OrderServiceClient};
use tokio::task::JoinSet;
use tonic::transport::Channel;

use super::report::OrdersReport;
use super::schedule::Call;
use super::stats::{Operation, Outcome, Recorder, classify_status};
use super::{LoadOptions, timed, with_deadline};

/// The cancel reason of the generator's own cancels (how a saga recognises them).
pub const CANCEL_REASON: &str = "cloudmart-load: customer cancel";

/// The cancel reason of the delivery-failure compensation (order service).
const DELIVERY_FAILED: &str = "DELIVERY_FAILED";

/// The longest wait between two polls of one order.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What an order of the run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderKind {
    /// Ships to an ordinary address; should end CONFIRMED.
    Regular,
    /// Ships to the fault-injected postal code; should end CANCELLED (`DELIVERY_FAILED`).
    Fault,
    /// Ships to an ordinary address and is cancelled once accepted.
    Cancel,
}

/// The orders scenario's mix.
#[derive(Clone, Debug, PartialEq)]
pub struct OrderMix {
    /// Share of the orders shipped to `fault_postal_code`.
    pub fault_share: f64,
    /// Share of the orders cancelled once accepted.
    pub cancel_share: f64,
    /// A postal code the delivery service is configured to fail.
    pub fault_postal_code: String,
}

impl OrderMix {
    /// The kind of order `index`: evenly spread and the same on every run. Order `i` takes
    /// the fractional part of `(i + 1) × φ` (golden ratio), which covers [0, 1) evenly in
    /// any window of orders: below `fault_share` it is a fault order, below
    /// `fault_share + cancel_share` a cancel, else regular.
    pub fn kind(&self, index: u64) -> OrderKind {
        const GOLDEN: f64 = 0.618_033_988_749_894_9;
        let u = ((index as f64 + 1.0) * GOLDEN).fract();
        if u < self.fault_share {
            OrderKind::Fault
        } else if u < self.fault_share + self.cancel_share {
            OrderKind::Cancel
        } else {
            OrderKind::Regular
        }
    }

    /// The postal code of an ordinary order of `customer`: five digits, never the fault one.
    pub fn regular_postal_code(&self, customer: u64) -> String {
        let code = |c: u64| format!("{:05}", 10_000 + c % 80_000);
        let first = code(customer);
        if first == self.fault_postal_code { code(customer + 1) } else { first }
    }
}

/// How accepted orders are followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SagaOptions {
    /// Give up on an order still PENDING this long after it was accepted.
    pub timeout: Duration,
    /// First wait before polling an accepted order (doubling up to a second after that).
    pub first_poll: Duration,
}

/// Orders sent by kind, and the ones that ended against their kind.
#[derive(Debug, Default)]
struct Mix {
    regular: AtomicU64,
    fault: AtomicU64,
    cancel: AtomicU64,
    fault_confirmed: AtomicU64,
    regular_delivery_failed: AtomicU64,
}

/// The orders scenario under way.
#[derive(Debug)]
pub struct Orders {
    clients: Vec<OrderServiceClient<Channel>>,
    run_id: String,
    customers: u64,
    call_timeout: Duration,
    mix: OrderMix,
    saga: SagaOptions,
    /// The orders being followed (a task each).
    sagas: Mutex<JoinSet<()>>,
    counts: Mix,
}

impl Orders {
    pub fn new(opts: &LoadOptions, channels: Vec<Channel>, run_id: String) -> Self {
        Self {
            clients: channels.into_iter().map(OrderServiceClient::new).collect(),
            run_id,
            customers: opts.customers,
            call_timeout: opts.call_timeout,
            mix: opts.mix.clone(),
            saga: opts.saga,
            sagas: Mutex::new(JoinSet::new()),
            counts: Mix::default(),
        }
    }

    /// What the run is about to do, for the first progress line.
    pub fn describe(&self) -> String {
        format!(
            "orders: {:.0} % to fault postal code {}, {:.0} % cancelled once accepted, sagas followed for up to {:?}",
            self.mix.fault_share * 100.0,
            self.mix.fault_postal_code,
            self.mix.cancel_share * 100.0,
            self.saga.timeout
        )
    }

    fn client(&self, index: u64) -> OrderServiceClient<Channel> {
        self.clients[index as usize % self.clients.len()].clone()
    }

    /// One `PlaceOrder` (call `call.index`); an accepted order is then followed apart.
    pub async fn place(self: Arc<Self>, call: Call, recorder: Arc<Recorder>) {
        let kind = self.mix.kind(call.index);
        let counter = match kind {
            OrderKind::Regular => &self.counts.regular,
            OrderKind::Fault => &self.counts.fault,
            OrderKind::Cancel => &self.counts.cancel,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let request = self.place_request(call.index, kind);
        let sent_at = Instant::now();
        let mut client = self.client(call.index);
        let (result, latency) =
            timed(self.call_timeout, client.place_order(with_deadline(request, self.call_timeout))).await;
        let order = match result {
            Ok(response) => {
                recorder.answer(call.step, Operation::Place, Outcome::Succeeded, Some(latency));
                response.order
            }
            Err(status) => {
                record_failure(&recorder, call.step, Operation::Place, &status, latency);
                None
            }
        };
        if let Some(order) = order {
            let this = self.clone();
            self.sagas().spawn(this.follow(order.order_id, kind, call, sent_at, recorder));
        }
    }

    fn place_request(&self, index: u64, kind: OrderKind) -> pb::PlaceOrderRequest {
        let customer = index % self.customers;
        let postal_code = match kind {
            OrderKind::Fault => self.mix.fault_postal_code.clone(),
            OrderKind::Regular | OrderKind::Cancel => self.mix.regular_postal_code(customer),
        };
        pb::PlaceOrderRequest {
            customer_id: format!("load-{}-{customer}", self.run_id),
            items: vec![pb::OrderItem { sku: "LOAD-ORDER-1".into(), quantity: 1, unit_price_cents: 1_000 }],
            shipping_address: Some(pb::ShippingAddress {
                line1: "1 Load St".into(),
                city: "Seoul".into(),
                postal_code,
                country: "KR".into(),
            }),
            idempotency_key: format!("load-{}-{index}", self.run_id),
        }
    }

    /// An accepted order until its saga ends: cancelled first if it is a cancel.
    async fn follow(
        self: Arc<Self>,
        order_id: String,
        kind: OrderKind,
        call: Call,
        sent_at: Instant,
        recorder: Arc<Recorder>,
    ) {
        let accepted_at = Instant::now();
        let client = self.client(call.index);
        if kind == OrderKind::Cancel && self.cancel(client.clone(), &order_id, call.step, &recorder).await {
            // The customer's own cancel ended it: no saga latency to speak of.
            recorder.answer(call.step, Operation::Saga, Outcome::Cancelled, None);
            return;
        }
        let (outcome, latency) = self.watch(client, &order_id, sent_at, accepted_at, &recorder).await;
        let against_kind = match (kind, outcome) {
            (OrderKind::Fault, Outcome::Confirmed) => Some(&self.counts.fault_confirmed),
            (OrderKind::Regular, Outcome::DeliveryFailed) => Some(&self.counts.regular_delivery_failed),
            _ => None,
        };
        if let Some(counter) = against_kind {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        recorder.answer(call.step, Operation::Saga, outcome, latency);
    }

    /// `CancelOrder`, recorded as a `cancel` answer; whether the order is now cancelled.
    async fn cancel(
        &self,
        mut client: OrderServiceClient<Channel>,
        order_id: &str,
        step: usize,
        recorder: &Recorder,
    ) -> bool {
        let request = pb::CancelOrderRequest { order_id: order_id.to_owned(), reason: CANCEL_REASON.to_owned() };
        let (result, latency) =
            timed(self.call_timeout, client.cancel_order(with_deadline(request, self.call_timeout))).await;
        match result {
            Ok(order) => {
                recorder.answer(step, Operation::Cancel, Outcome::Succeeded, Some(latency));
                order.status() == pb::OrderStatus::Cancelled
            }
            Err(status) => {
                record_failure(recorder, step, Operation::Cancel, &status, latency);
                false
            }
        }
    }

    /// Polls the order until its saga ends or `--saga-timeout` passes: the saga's outcome
    /// and, when it ended, its latency.
    async fn watch(
        &self,
        mut client: OrderServiceClient<Channel>,
        order_id: &str,
        sent_at: Instant,
        accepted_at: Instant,
        recorder: &Recorder,
    ) -> (Outcome, Option<Duration>) {
        let deadline = tokio::time::Instant::from_std(accepted_at + self.saga.timeout);
        let mut wait = self.saga.first_poll;
        loop {
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + wait)).await;
            let request = with_deadline(pb::GetOrderRequest { order_id: order_id.to_owned() }, self.call_timeout);
            match client.get_order(request).await {
                Ok(order) => {
                    let order = order.into_inner();
                    if let Some(outcome) = saga_outcome(&order) {
                        return (outcome, Some(saga_latency(&order, sent_at.elapsed(), accepted_at.elapsed())));
                    }
                }
                Err(status) if status.code() == tonic::Code::NotFound => {
                    recorder.error_sample(format!("saga: accepted order {order_id} not found: {}", status.message()));
                    return (Outcome::Error, None);
                }
                // Shed, unavailable, slow: the order is still there, poll again.
                Err(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return (Outcome::Timeout, None);
            }
            wait = (wait * 2).min(MAX_POLL_INTERVAL);
        }
    }

    fn sagas(&self) -> MutexGuard<'_, JoinSet<()>> {
        self.sagas.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Orders whose saga is still followed.
    pub fn open(&self) -> usize {
        let mut sagas = self.sagas();
        while sagas.try_join_next().is_some() {}
        sagas.len()
    }

    /// Waits until every followed order has ended (or timed out). Called once every
    /// `PlaceOrder` has returned, so no saga starts after it.
    pub async fn settle(&self) {
        let mut sagas = std::mem::take(&mut *self.sagas());
        while sagas.join_next().await.is_some() {}
    }

    /// The mix as sent, and the orders that ended against their kind.
    pub fn report(&self) -> OrdersReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        OrdersReport {
            fault_postal_code: self.mix.fault_postal_code.clone(),
            fault_share: self.mix.fault_share,
            cancel_share: self.mix.cancel_share,
            regular: get(&self.counts.regular),
            fault: get(&self.counts.fault),
            cancel: get(&self.counts.cancel),
            fault_confirmed: get(&self.counts.fault_confirmed),
            regular_delivery_failed: get(&self.counts.regular_delivery_failed),
        }
    }
}

/// Records a failed call of `op`: its class, its latency (not for a timeout), and a
/// sample when it is an unexpected error.
fn record_failure(recorder: &Recorder, step: usize, op: Operation, status: &tonic::Status, latency: Duration) {
    let outcome = classify_status(op, status);
    if outcome == Outcome::Error {
        recorder.error_sample(format!("{}: {:?}: {}", op.name(), status.code(), status.message()));
    }
    recorder.answer(step, op, outcome, (outcome != Outcome::Timeout).then_some(latency));
}

/// The saga outcome of `order` once it is final (`None` while it is PENDING).
pub fn saga_outcome(order: &pb::Order) -> Option<Outcome> {
    match order.status() {
        pb::OrderStatus::Confirmed => Some(Outcome::Confirmed),
        pb::OrderStatus::Cancelled => Some(match order.cancel_reason.as_str() {
            DELIVERY_FAILED => Outcome::DeliveryFailed,
            CANCEL_REASON => Outcome::Cancelled,
            _ => Outcome::CancelledOther,
        }),
        pb::OrderStatus::Pending | pb::OrderStatus::Unspecified => None,
    }
}

/// The latency of a finished saga.
///
/// By the order service's clock: from the order's creation to its last change
/// (`updated_at − created_at`), exact whatever the poll interval. When those timestamps
/// are missing or cannot be right — negative, or longer than from sending `PlaceOrder` to
/// seeing the final state (`since_sent`) — the generator's own view: from the accepted
/// `PlaceOrder` to the poll that saw the final state (`since_accepted`).
pub fn saga_latency(order: &pb::Order, since_sent: Duration, since_accepted: Duration) -> Duration {
    let nanos = |t: &prost_types::Timestamp| i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
    let by_server = match (&order.created_at, &order.updated_at) {
        (Some(created), Some(updated)) => u64::try_from(nanos(updated) - nanos(created)).ok().map(Duration::from_nanos),
        _ => None,
    };
    by_server.filter(|d| *d <= since_sent).unwrap_or(since_accepted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(fault: f64, cancel: f64) -> OrderMix {
        OrderMix { fault_share: fault, cancel_share: cancel, fault_postal_code: "99999".into() }
    }

    #[test]
    fn the_mix_spreads_kinds_evenly_by_share() {
        let m = mix(0.1, 0.05);
        let kinds: Vec<OrderKind> = (0..10_000).map(|i| m.kind(i)).collect();
        let count = |k: OrderKind, window: &[OrderKind]| window.iter().filter(|x| **x == k).count();
        assert_eq!((count(OrderKind::Fault, &kinds), count(OrderKind::Cancel, &kinds)), (1000, 500));
        for window in kinds.chunks(100) {
            assert!((8..=12).contains(&count(OrderKind::Fault, window)), "about 10 in any 100 orders");
        }
        assert_eq!(m.kind(42), mix(0.1, 0.05).kind(42), "the same on every run");
        assert!((0..1000).all(|i| mix(0.0, 0.0).kind(i) == OrderKind::Regular));
        assert!((0..1000).all(|i| mix(1.0, 0.0).kind(i) == OrderKind::Fault));
    }

    #[test]
    fn ordinary_orders_never_ship_to_the_fault_postal_code() {
        let m = OrderMix { fault_postal_code: "10007".into(), ..mix(0.1, 0.0) };
        assert_eq!(m.regular_postal_code(6), "10006");
        assert_eq!(m.regular_postal_code(7), "10008");
        assert_eq!(m.regular_postal_code(80_007), "10008");
    }

    fn order(status: pb::OrderStatus, reason: &str, created: (i64, i32), updated: (i64, i32)) -> pb::Order {
        let ts = |(seconds, nanos)| Some(prost_types::Timestamp { seconds, nanos });
        pb::Order {
            status: status as i32,
            cancel_reason: reason.into(),
            created_at: ts(created),
            updated_at: ts(updated),
            ..pb::Order::default()
        }
    }

    #[test]
    fn sagas_end_confirmed_or_cancelled_for_a_reason() {
        use pb::OrderStatus::*;
        assert_eq!(saga_outcome(&order(Pending, "", (0, 0), (0, 0))), None);
        assert_eq!(saga_outcome(&order(Confirmed, "", (0, 0), (0, 0))), Some(Outcome::Confirmed));
        assert_eq!(saga_outcome(&order(Cancelled, "DELIVERY_FAILED", (0, 0), (0, 0))), Some(Outcome::DeliveryFailed));
        assert_eq!(saga_outcome(&order(Cancelled, CANCEL_REASON, (0, 0), (0, 0))), Some(Outcome::Cancelled));
        assert_eq!(
            saga_outcome(&order(Cancelled, "UNSERVICEABLE_ADDRESS", (0, 0), (0, 0))),
            Some(Outcome::CancelledOther)
        );
    }

    #[test]
    fn saga_latency_comes_from_the_order_timestamps_when_they_fit() {
        let ms = Duration::from_millis;
        let done = order(pb::OrderStatus::Confirmed, "", (100, 900_000_000), (101, 20_000_000));
        assert_eq!(saga_latency(&done, ms(400), ms(390)), ms(120), "server clock: 120 ms");
        assert_eq!(saga_latency(&done, ms(100), ms(90)), ms(90), "longer than observed: skewed, use observed");
        let backwards = order(pb::OrderStatus::Confirmed, "", (101, 0), (100, 0));
        assert_eq!(saga_latency(&backwards, ms(400), ms(390)), ms(390), "negative: use observed");
        let untimed = pb::Order { status: pb::OrderStatus::Confirmed as i32, ..pb::Order::default() };
        assert_eq!(saga_latency(&untimed, ms(400), ms(390)), ms(390));
    }
}
