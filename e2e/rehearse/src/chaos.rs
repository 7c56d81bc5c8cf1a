//! `cloudmart-rehearse chaos` (`make chaos`): a nemesis over the rehearsed system.
//!
//! The chart runs as containers ([`crate::rehearsal`]) with two time-sale replicas and
//! persistent volumes for Kafka and PostgreSQL (their StatefulSets' claims become Docker
//! volumes that outlive a container, like a PVC). While a mixed load runs from the host —
//! regular orders, a share sent to the postal code whose delivery fails, customer cancels,
//! and a flash sale with more buyers than stock — the nemesis works through a fault
//! schedule drawn from a seed ([`schedule`]), one fault at a time:
//!
//! | kind | what it does |
//! |---|---|
//! | `kill-order`, `kill-delivery`, `kill-timesale` | `docker kill -s KILL`, down for a moment, `docker start` |
//! | `kill-broker`, `kill-database` | the same to Kafka / PostgreSQL (their logs must survive) |
//! | `kill-before-publish` | Kafka off the network while orders keep committing, then `kill -9` of order with those events still in its outbox (committed, not published), then both back |
//! | `partition-delivery` | delivery off the network: order ↔ delivery (the breaker opens, quotes fall back), delivery ↔ broker and database |
//! | `partition-broker` | Kafka off the network: every service ↔ the broker |
//! | `partition-database` | PostgreSQL off the network: every service ↔ its database |
//! | `freeze` | `docker pause` of a consuming service for longer than the consumer session timeout, so its group rebalances under it, then `docker unpause` |
//!
//! After each fault the target must be Ready again before the next one. When the schedule
//! is done the load stops, the nemesis waits for quiescence (every outbox drained, every
//! consumer group's lag 0, every accepted request settled) and then counts, from the
//! databases themselves:
//!
//! - **events lost**: an accepted order missing or still PENDING, an accepted purchase that
//!   never became an order, a record in a dead-letter topic, lag or outbox rows left;
//! - **duplicate effects**: two orders for one purchase or one idempotency key, two
//!   deliveries for one order;
//! - **oversold units**: purchases held beyond a sale's stock;
//! - **unexpected outcomes**: a regular order not CONFIRMED, a fault-injected one not
//!   CANCELLED with `DELIVERY_FAILED`, a cancelled one not CANCELLED;
//!
//! and runs `cloudmart-audit`. The figure line states them; the run passes only when all
//! are 0, the audit is clean and every kind of fault was injected. The same seed gives the
//! same schedule (kinds, targets, durations, gaps); the moments the faults land on in the
//! load differ from run to run, as they would.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use cloudmart_proto::order::v1::{self as pb, order_service_client::OrderServiceClient};
use cloudmart_proto::timesale::v1::{self as ts, time_sale_service_client::TimeSaleServiceClient};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::checks::{self, CheckOptions};
use crate::docker::RUN_LABEL;
use crate::plan::PodPlan;
use crate::rehearsal::Rehearsal;

/// Postal code the rehearsal profile makes delivery fail for (`delivery.fault.failPostalCodes`).
const FAIL_POSTAL: &str = "99999";
/// Consumer session timeout the services run with (the platform's default); a freeze
/// lasts longer than this so the group really rebalances.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one client request keeps retrying (same idempotency key) before it counts as
/// not accepted.
const REQUEST_DEADLINE: Duration = Duration::from_secs(40);

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub seed: u64,
    /// Minimum length of the fault schedule; every kind is injected at least once whatever
    /// this says.
    pub duration: Duration,
    /// Client requests started per second (open loop).
    pub rate: f64,
    /// The run fails when fewer requests were sent.
    pub min_requests: u64,
    /// How long to wait for quiescence after the load.
    pub settle: Duration,
    pub out: PathBuf,
}

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    KillOrder,
    KillDelivery,
    KillTimesale,
    KillBroker,
    KillDatabase,
    PartitionDelivery,
    PartitionBroker,
    PartitionDatabase,
    Freeze,
    KillBeforePublish,
}

impl FaultKind {
    pub const ALL: [FaultKind; 10] = [
        FaultKind::KillOrder,
        FaultKind::KillDelivery,
        FaultKind::KillTimesale,
        FaultKind::KillBroker,
        FaultKind::KillDatabase,
        FaultKind::PartitionDelivery,
        FaultKind::PartitionBroker,
        FaultKind::PartitionDatabase,
        FaultKind::Freeze,
        FaultKind::KillBeforePublish,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillOrder => "kill-order",
            FaultKind::KillDelivery => "kill-delivery",
            FaultKind::KillTimesale => "kill-timesale",
            FaultKind::KillBroker => "kill-broker",
            FaultKind::KillDatabase => "kill-database",
            FaultKind::PartitionDelivery => "partition-delivery",
            FaultKind::PartitionBroker => "partition-broker",
            FaultKind::PartitionDatabase => "partition-database",
            FaultKind::Freeze => "freeze",
            FaultKind::KillBeforePublish => "kill-before-publish",
        }
    }

    /// What is done to the target.
    pub fn action(self) -> Action {
        match self {
            FaultKind::KillOrder
            | FaultKind::KillDelivery
            | FaultKind::KillTimesale
            | FaultKind::KillBroker
            | FaultKind::KillDatabase => Action::Kill,
            FaultKind::PartitionDelivery | FaultKind::PartitionBroker | FaultKind::PartitionDatabase => {
                Action::Disconnect
            }
            FaultKind::Freeze => Action::Pause,
            FaultKind::KillBeforePublish => Action::KillBeforePublish,
        }
    }

    /// Rough seconds a fault of this kind takes beyond its hold (restart to Ready), used
    /// only to size the schedule to the requested duration.
    fn recovery_estimate(self) -> u64 {
        match self {
            FaultKind::KillBroker | FaultKind::PartitionBroker | FaultKind::KillBeforePublish => 20,
            FaultKind::KillDatabase => 8,
            _ => 4,
        }
    }
}

/// `docker kill` + `start`, `network disconnect` + `connect`, `pause` + `unpause`, or the
/// broker disconnected around a kill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Kill,
    Disconnect,
    Pause,
    KillBeforePublish,
}

/// One scheduled fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    /// The pod it hits.
    pub target: String,
    /// How long the target stays down / cut off / frozen.
    pub hold_ms: u64,
    /// Pause after the target is Ready again, before the next fault.
    pub gap_ms: u64,
}

/// Names of the pods faults can hit.
#[derive(Clone, Debug)]
pub struct Targets {
    pub order: String,
    pub delivery: String,
    pub timesale: Vec<String>,
    pub broker: String,
    pub database: String,
}

impl Targets {
    fn pick(&self, kind: FaultKind, rng: &mut SplitMix) -> String {
        match kind {
            FaultKind::KillOrder | FaultKind::KillBeforePublish => self.order.clone(),
            FaultKind::KillDelivery | FaultKind::PartitionDelivery => self.delivery.clone(),
            FaultKind::KillTimesale => rng.choose(&self.timesale).clone(),
            FaultKind::KillBroker | FaultKind::PartitionBroker => self.broker.clone(),
            FaultKind::KillDatabase | FaultKind::PartitionDatabase => self.database.clone(),
            FaultKind::Freeze => {
                // every service consumes; freezing one makes its group rebalance
                let mut all = vec![self.order.clone(), self.delivery.clone()];
                all.extend(self.timesale.iter().cloned());
                rng.choose(&all).clone()
            }
        }
    }
}

/// SplitMix64: a tiny, seedable generator; the schedule must come out the same for a seed
/// on every machine and every build, so no library whose algorithm may change is used.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }

    /// A float in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The fault schedule of `seed`: every kind once in a seeded order, then random kinds
/// until the schedule's nominal length reaches `duration`.
pub fn schedule(seed: u64, duration: Duration, targets: &Targets) -> Vec<Fault> {
    let mut rng = SplitMix::new(seed);
    let mut kinds = FaultKind::ALL.to_vec();
    // Fisher–Yates
    for i in (1..kinds.len()).rev() {
        let j = rng.range(0, i as u64) as usize;
        kinds.swap(i, j);
    }
    let mut faults = Vec::new();
    let mut nominal = 0u64;
    let next = |kind: FaultKind, rng: &mut SplitMix| {
        let hold_ms = match kind.action() {
            Action::Kill | Action::KillBeforePublish => rng.range(500, 4_000),
            Action::Disconnect => rng.range(2_000, 8_000),
            Action::Pause => SESSION_TIMEOUT.as_millis() as u64 + rng.range(2_000, 6_000),
        };
        let gap_ms = rng.range(1_000, 5_000);
        let target = targets.pick(kind, rng);
        Fault { kind, target, hold_ms, gap_ms }
    };
    for kind in kinds {
        let f = next(kind, &mut rng);
        nominal += (f.hold_ms + f.gap_ms) / 1000 + kind.recovery_estimate();
        faults.push(f);
    }
    while nominal < duration.as_secs() {
        let kind = *rng.choose(&FaultKind::ALL);
        let f = next(kind, &mut rng);
        nominal += (f.hold_ms + f.gap_ms) / 1000 + kind.recovery_estimate();
        faults.push(f);
    }
    faults
}

// ---------------------------------------------------------------------------------------
// The load

/// What a client request was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum RequestKind {
    Order,
    FaultOrder,
    Cancel,
    Purchase,
}

/// Where the services answer; refreshed by the nemesis after a pod comes back (its
/// address may change).
#[derive(Default)]
struct Endpoints {
    order: Vec<String>,
    timesale: Vec<String>,
    channels: HashMap<String, tonic::transport::Channel>,
    turn: usize,
}

impl Endpoints {
    fn channel(&mut self, timesale: bool) -> Result<tonic::transport::Channel> {
        let list = if timesale { &self.timesale } else { &self.order };
        if list.is_empty() {
            bail!("no endpoint");
        }
        self.turn = self.turn.wrapping_add(1);
        let url = list[self.turn % list.len()].clone();
        if let Some(c) = self.channels.get(&url) {
            return Ok(c.clone());
        }
        let c = tonic::transport::Endpoint::from_shared(url.clone())?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(3))
            .connect_lazy();
        self.channels.insert(url, c.clone());
        Ok(c)
    }
}

/// What the load did, for the accounting afterwards.
#[derive(Default, Debug)]
struct Ledger {
    sent: BTreeMap<&'static str, u64>,
    attempts: u64,
    /// Accepted orders: id → placed to the failing postal code.
    orders: BTreeMap<String, bool>,
    /// Orders a cancel was tried on (its outcome may be unknown), and those it succeeded on.
    cancel_tried: HashSet<String>,
    cancelled: HashSet<String>,
    purchases: BTreeSet<String>,
    refused: BTreeMap<String, u64>,
    gave_up: u64,
}

fn retryable(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Internal | Code::Cancelled)
        || code == Code::ResourceExhausted
}

fn address(postal: &str) -> pb::ShippingAddress {
    pb::ShippingAddress {
        line1: "1 Chaos Way".into(),
        city: "Faultville".into(),
        postal_code: postal.into(),
        country: "KR".into(),
    }
}

/// One client request, retried with the same idempotency key until it is answered or
/// [`REQUEST_DEADLINE`] passes.
async fn request(kind: RequestKind, n: u64, sale_id: String, eps: Arc<Mutex<Endpoints>>, ledger: Arc<Mutex<Ledger>>) {
    let key = format!("chaos-{n}");
    let postal =
        if kind == RequestKind::FaultOrder { FAIL_POSTAL.to_owned() } else { format!("{:05}", 10_000 + n % 80_000) };
    let cancel_target = if kind == RequestKind::Cancel {
        let l = ledger.lock().expect("ledger");
        let candidates: Vec<&String> = l.orders.keys().filter(|id| !l.cancel_tried.contains(*id)).collect();
        if candidates.is_empty() { None } else { Some(candidates[(n as usize * 7919) % candidates.len()].clone()) }
    } else {
        None
    };
    if kind == RequestKind::Cancel {
        match &cancel_target {
            Some(id) => {
                ledger.lock().expect("ledger").cancel_tried.insert(id.clone());
            }
            None => return,
        }
    }
    let name = match kind {
        RequestKind::Order => "order",
        RequestKind::FaultOrder => "order-to-failing-address",
        RequestKind::Cancel => "cancel",
        RequestKind::Purchase => "purchase",
    };
    *ledger.lock().expect("ledger").sent.entry(name).or_default() += 1;
    let deadline = Instant::now() + REQUEST_DEADLINE;
    loop {
        ledger.lock().expect("ledger").attempts += 1;
        let channel = eps.lock().expect("endpoints").channel(kind == RequestKind::Purchase);
        let outcome: Result<String, tonic::Status> = match channel {
            Err(_) => Err(tonic::Status::unavailable("no endpoint")),
            Ok(channel) => match kind {
                RequestKind::Order | RequestKind::FaultOrder => OrderServiceClient::new(channel)
                    .place_order(pb::PlaceOrderRequest {
                        customer_id: format!("chaos-customer-{}", n % 97),
                        items: vec![pb::OrderItem { sku: "CHAOS-1".into(), quantity: 1, unit_price_cents: 1_000 }],
                        shipping_address: Some(address(&postal)),
                        idempotency_key: key.clone(),
                    })
                    .await
                    .map(|r| r.into_inner().order.map(|o| o.order_id).unwrap_or_default()),
                RequestKind::Cancel => OrderServiceClient::new(channel)
                    .cancel_order(pb::CancelOrderRequest {
                        order_id: cancel_target.clone().unwrap_or_default(),
                        reason: String::new(),
                    })
                    .await
                    .map(|r| r.into_inner().order_id),
                RequestKind::Purchase => TimeSaleServiceClient::new(channel)
                    .purchase(ts::PurchaseRequest {
                        sale_id: sale_id.clone(),
                        customer_id: format!("chaos-buyer-{n}"),
                        quantity: 1,
                        shipping_address: Some(address(&postal)),
                        idempotency_key: key.clone(),
                    })
                    .await
                    .map(|r| r.into_inner().purchase.map(|p| p.purchase_id).unwrap_or_default()),
            },
        };
        match outcome {
            Ok(id) => {
                let mut l = ledger.lock().expect("ledger");
                match kind {
                    RequestKind::Order => {
                        l.orders.insert(id, false);
                    }
                    RequestKind::FaultOrder => {
                        l.orders.insert(id, true);
                    }
                    RequestKind::Cancel => {
                        l.cancelled.insert(id);
                    }
                    RequestKind::Purchase => {
                        l.purchases.insert(id);
                    }
                }
                return;
            }
            Err(s) if retryable(s.code()) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(s) => {
                let mut l = ledger.lock().expect("ledger");
                if retryable(s.code()) {
                    l.gave_up += 1;
                } else {
                    *l.refused.entry(format!("{name}:{:?}", s.code())).or_default() += 1;
                }
                return;
            }
        }
    }
}

/// Runs the open-loop load until `stop`; returns when every started request finished.
async fn run_load(
    rate: f64,
    sale_id: String,
    eps: Arc<Mutex<Endpoints>>,
    ledger: Arc<Mutex<Ledger>>,
    stop: CancellationToken,
    seed: u64,
) {
    let mut rng = SplitMix::new(seed ^ 0x10AD);
    let period = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        n += 1;
        let x = rng.unit();
        let kind = if x < 0.50 {
            RequestKind::Order
        } else if x < 0.62 {
            RequestKind::FaultOrder
        } else if x < 0.72 {
            RequestKind::Cancel
        } else {
            RequestKind::Purchase
        };
        tasks.spawn(request(kind, n, sale_id.clone(), eps.clone(), ledger.clone()));
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

// ---------------------------------------------------------------------------------------
// The nemesis

/// The figures of a chaos run.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub seed: u64,
    pub schedule: Vec<Fault>,
    pub faults: BTreeMap<&'static str, u64>,
    /// Outbox rows committed but not yet published when their service was SIGKILLed:
    /// the kills that landed between commit and publish (the relay of the restarted
    /// process, or another replica, published them).
    pub stranded_by_kills: u64,
    pub requests_sent: u64,
    pub requests_accepted: u64,
    pub attempts: u64,
    pub refused: BTreeMap<String, u64>,
    pub not_answered: u64,
    pub orders_confirmed: u64,
    pub orders_cancelled: u64,
    /// Orders priced with the fallback fee because delivery did not answer (breaker open
    /// or call failed): orders kept flowing while delivery was cut off.
    pub fallback_quotes: u64,
    pub purchases: u64,
    pub sale_stock: i64,
    pub events_lost: u64,
    pub duplicate_effects: u64,
    pub oversold: i64,
    pub unexpected_outcomes: u64,
    pub audit_clean: bool,
    pub problems: Vec<String>,
    pub elapsed_secs: f64,
}

impl Figures {
    pub fn passed(&self) -> bool {
        self.events_lost == 0
            && self.duplicate_effects == 0
            && self.oversold == 0
            && self.unexpected_outcomes == 0
            && self.audit_clean
            && FaultKind::ALL.iter().all(|k| self.faults.get(k.name()).copied().unwrap_or(0) > 0)
            && self.stranded_by_kills > 0
    }

    /// The one line the issue asks for.
    pub fn line(&self) -> String {
        let faults: Vec<String> = self.faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
        format!(
            "chaos seed {}: requests sent {} / accepted {} · orders confirmed {} / cancelled {} ({} priced by FALLBACK) · purchases {} (stock {}) · faults {} ({}; {} outbox rows stranded by kills between commit and publish) · events lost {} · duplicate effects {} · oversold units {} · unexpected outcomes {} · audit {}",
            self.seed,
            self.requests_sent,
            self.requests_accepted,
            self.orders_confirmed,
            self.orders_cancelled,
            self.fallback_quotes,
            self.purchases,
            self.sale_stock,
            self.faults.values().sum::<u64>(),
            faults.join(", "),
            self.stranded_by_kills,
            self.events_lost,
            self.duplicate_effects,
            self.oversold,
            self.unexpected_outcomes,
            if self.audit_clean { "clean" } else { "FAILED" },
        )
    }
}

fn pod_of_app<'a>(r: &'a Rehearsal, app: &str) -> Result<Vec<&'a PodPlan>> {
    let pods: Vec<&PodPlan> = r.plan.app(app).collect();
    if pods.is_empty() {
        bail!("the render has no {app} pod");
    }
    Ok(pods)
}

/// The pods of the run faults can hit.
pub fn targets(r: &Rehearsal) -> Result<Targets> {
    Ok(Targets {
        order: pod_of_app(r, "order")?[0].pod.clone(),
        delivery: pod_of_app(r, "delivery")?[0].pod.clone(),
        timesale: pod_of_app(r, "timesale")?.iter().map(|p| p.pod.clone()).collect(),
        broker: pod_of_app(r, "kafka")?[0].pod.clone(),
        database: pod_of_app(r, "postgresql")?[0].pod.clone(),
    })
}

async fn grpc_url(r: &mut Rehearsal, pod: &PodPlan) -> Result<String> {
    let port = *pod.ports.get("grpc").ok_or_else(|| anyhow!("{} has no grpc port", pod.pod))?;
    Ok(format!("http://{}:{port}", r.ip(&pod.pod).await?))
}

async fn refresh_endpoints(r: &mut Rehearsal, eps: &Mutex<Endpoints>) -> Result<()> {
    let mut order = Vec::new();
    for p in r.plan.app("order").cloned().collect::<Vec<_>>() {
        order.push(grpc_url(r, &p).await?);
    }
    let mut timesale = Vec::new();
    for p in r.plan.app("timesale").cloned().collect::<Vec<_>>() {
        timesale.push(grpc_url(r, &p).await?);
    }
    let mut e = eps.lock().expect("endpoints");
    e.order = order;
    e.timesale = timesale;
    Ok(())
}

/// Puts a container back on the run's network under every name of its pod.
async fn connect(r: &Rehearsal, pod: &PodPlan, container: &str) -> Result<()> {
    let mut args = vec!["network".to_owned(), "connect".to_owned()];
    for a in &pod.aliases {
        args.push("--alias".into());
        args.push(a.clone());
    }
    args.push(r.network.clone());
    args.push(container.to_owned());
    r.docker.run(&args).await.map(|_| ())
}

/// Applies one fault and heals it; returns when the target is Ready again, with the
/// number of outbox rows a killed service left committed but unpublished (its kill landed
/// between commit and publish for them).
async fn inject(r: &mut Rehearsal, fault: &Fault, eps: &Mutex<Endpoints>) -> Result<u64> {
    let pod = r
        .plan
        .pods
        .iter()
        .find(|p| p.pod == fault.target)
        .cloned()
        .ok_or_else(|| anyhow!("no pod {}", fault.target))?;
    let c = r.container(&pod.pod);
    let hold = Duration::from_millis(fault.hold_ms);
    let mut stranded = 0;
    match fault.kind.action() {
        Action::Kill => {
            r.docker.run(&["kill".into(), "--signal".into(), "KILL".into(), c.clone()]).await?;
            if ["order", "delivery", "timesale"].contains(&pod.app.as_str()) {
                stranded =
                    count(r, &pod.app, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL").await?.max(0) as u64;
            }
            tokio::time::sleep(hold).await;
            r.docker.run(&["start".into(), c.clone()]).await?;
        }
        Action::Disconnect => {
            r.docker
                .run(&["network".into(), "disconnect".into(), "--force".into(), r.network.clone(), c.clone()])
                .await?;
            tokio::time::sleep(hold).await;
            connect(r, &pod, &c).await?;
        }
        Action::Pause => {
            r.docker.run(&["pause".into(), c.clone()]).await?;
            tokio::time::sleep(hold).await;
            r.docker.run(&["unpause".into(), c.clone()]).await?;
        }
        Action::KillBeforePublish => {
            let broker = r.plan.app("kafka").next().cloned().ok_or_else(|| anyhow!("no kafka pod"))?;
            let bc = r.container(&broker.pod);
            r.docker
                .run(&["network".into(), "disconnect".into(), "--force".into(), r.network.clone(), bc.clone()])
                .await?;
            // orders keep committing with their events; none can be published
            tokio::time::sleep(Duration::from_millis(2_500)).await;
            r.docker.run(&["kill".into(), "--signal".into(), "KILL".into(), c.clone()]).await?;
            stranded =
                count(r, &pod.app, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL").await?.max(0) as u64;
            tokio::time::sleep(hold).await;
            connect(r, &broker, &bc).await?;
            r.docker.run(&["start".into(), c.clone()]).await?;
            r.ips.remove(&broker.pod);
            r.wait_ready(std::slice::from_ref(&broker), Duration::from_secs(180))
                .await
                .with_context(|| format!("{} did not come back", broker.pod))?;
        }
    }
    r.ips.remove(&pod.pod);
    r.wait_ready(std::slice::from_ref(&pod), Duration::from_secs(180))
        .await
        .with_context(|| format!("{} did not come back after {}", pod.pod, fault.kind.name()))?;
    refresh_endpoints(r, eps).await?;
    Ok(stranded)
}

/// `psql` inside the PostgreSQL container as the superuser: rows of `|`-separated fields.
async fn sql(r: &Rehearsal, database: &str, query: &str) -> Result<Vec<Vec<String>>> {
    let pg = r.plan.app("postgresql").next().ok_or_else(|| anyhow!("no postgresql pod"))?;
    let user = pg.env_value("POSTGRES_USER").unwrap_or("postgres").to_owned();
    let password = pg.env_value("POSTGRES_PASSWORD").unwrap_or_default().to_owned();
    let out = r
        .docker
        .run(&[
            "exec".into(),
            "--env".into(),
            format!("PGPASSWORD={password}"),
            r.container(&pg.pod),
            "psql".into(),
            "--host".into(),
            "127.0.0.1".into(),
            "--username".into(),
            user,
            "--dbname".into(),
            database.into(),
            "--no-align".into(),
            "--tuples-only".into(),
            "--field-separator".into(),
            "|".into(),
            "--command".into(),
            query.into(),
        ])
        .await
        .with_context(|| format!("psql on {database}: {query}"))?;
    Ok(out.lines().filter(|l| !l.is_empty()).map(|l| l.split('|').map(str::to_owned).collect()).collect())
}

async fn count(r: &Rehearsal, database: &str, query: &str) -> Result<i64> {
    let rows = sql(r, database, query).await?;
    rows.first()
        .and_then(|row| row.first())
        .ok_or_else(|| anyhow!("{query}: no row"))?
        .parse()
        .with_context(|| format!("{query}: not a number"))
}

/// A Kafka command-line tool in a throwaway container of the broker's image on the run's
/// network (not inside the broker: its JVM would share the broker's memory limit).
async fn kafka_tool(r: &Rehearsal, tool: &str, args: &[&str]) -> Result<String> {
    let broker = r.plan.app("kafka").next().ok_or_else(|| anyhow!("no kafka pod"))?;
    let bootstrap =
        format!("{}:9092", broker.aliases.iter().find(|a| !a.contains('.')).cloned().unwrap_or(broker.pod.clone()));
    let mut cmd: Vec<String> = vec![
        "run".into(),
        "--rm".into(),
        "--label".into(),
        format!("{RUN_LABEL}={}", r.run_id),
        "--network".into(),
        r.network.clone(),
        "--memory".into(),
        "512m".into(),
        "--env".into(),
        "KAFKA_HEAP_OPTS=-Xmx256m".into(),
        "--entrypoint".into(),
        format!("/opt/kafka/bin/{tool}"),
        broker.image.clone(),
        "--bootstrap-server".into(),
        bootstrap,
    ];
    cmd.extend(args.iter().map(|s| (*s).to_owned()));
    r.docker.run(&cmd).await.with_context(|| format!("{tool} {}", args.join(" ")))
}

/// Total lag over every consumer group (a partition with no committed offset counts its
/// whole log).
pub fn parse_group_lag(text: &str) -> i64 {
    let mut lag = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
        if f.len() < 6 || f[0] == "GROUP" {
            continue;
        }
        let (Ok(end), current) = (f[4].parse::<i64>(), f[3].parse::<i64>()) else { continue };
        lag += match current {
            Ok(c) => (end - c).max(0),
            Err(_) => end,
        };
    }
    lag
}

/// Records in dead-letter topics, from `kafka-get-offsets` lines `topic:partition:offset`.
pub fn parse_dlq_records(text: &str) -> i64 {
    text.lines()
        .filter_map(|l| {
            let mut it = l.rsplitn(3, ':');
            let end = it.next()?.parse::<i64>().ok()?;
            let _partition = it.next()?;
            let topic = it.next()?;
            topic.ends_with(".dlq").then_some(end)
        })
        .sum()
}

struct Settled {
    outbox: i64,
    lag: i64,
    dlq: i64,
    pending_orders: Vec<String>,
    pending_purchases: Vec<String>,
}

async fn settled(r: &Rehearsal, ledger: &Ledger) -> Result<Settled> {
    let mut outbox = 0;
    for db in ["order", "delivery", "timesale"] {
        outbox += count(r, db, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL").await?;
    }
    let status: HashMap<String, String> = sql(r, "order", "SELECT order_id, status FROM orders")
        .await?
        .into_iter()
        .map(|f| (f[0].clone(), f[1].clone()))
        .collect();
    let pending_orders =
        ledger.orders.keys().filter(|id| status.get(*id).is_none_or(|s| s == "PENDING")).cloned().collect();
    let purchases: HashMap<String, String> = sql(r, "timesale", "SELECT purchase_id, status FROM purchases")
        .await?
        .into_iter()
        .map(|f| (f[0].clone(), f[1].clone()))
        .collect();
    let pending_purchases = ledger
        .purchases
        .iter()
        .filter(|id| purchases.get(*id).is_none_or(|s| s != "ORDERED" && s != "CANCELLED"))
        .cloned()
        .collect();
    let (lag, dlq) = if outbox == 0 {
        (
            parse_group_lag(&kafka_tool(r, "kafka-consumer-groups.sh", &["--describe", "--all-groups"]).await?),
            parse_dlq_records(&kafka_tool(r, "kafka-get-offsets.sh", &[]).await?),
        )
    } else {
        (-1, 0)
    };
    Ok(Settled { outbox, lag, dlq, pending_orders, pending_purchases })
}

/// The whole experiment on a started, Ready rehearsal.
pub async fn run(r: &mut Rehearsal, opts: &ChaosOptions) -> Result<Figures> {
    let t0 = Instant::now();
    let targets = targets(r)?;
    // The seed's sequence, long enough for the duration: the run goes through it until
    // every kind was injected once and `duration` has passed on the clock.
    let plan = schedule(opts.seed, opts.duration * 3, &targets);
    println!(
        "==> chaos seed {} (reproduce with --seed {}): every kind once, then the same seeded sequence until {} s have passed",
        opts.seed,
        opts.seed,
        opts.duration.as_secs()
    );
    for (i, f) in plan.iter().enumerate().take(FaultKind::ALL.len().max(12)) {
        println!(
            "    {:>2}. {:<19} {:<28} hold {:>5} ms, then {:>4} ms",
            i + 1,
            f.kind.name(),
            f.target,
            f.hold_ms,
            f.gap_ms
        );
    }

    let eps = Arc::new(Mutex::new(Endpoints::default()));
    refresh_endpoints(r, &eps).await?;
    // the flash sale: fewer units than the buyers the load will send
    let expected_buyers = (opts.rate * 0.28 * (opts.duration.as_secs_f64() + 60.0)).max(40.0);
    let stock = (expected_buyers / 3.0).round() as i32;
    let channel = eps.lock().expect("endpoints").channel(true)?;
    let now = chrono_now();
    let sale = TimeSaleServiceClient::new(channel)
        .create_sale(ts::CreateSaleRequest {
            sku: "CHAOS-SALE".into(),
            title: "chaos flash sale".into(),
            price_cents: 500,
            total_stock: stock,
            per_customer_limit: 1,
            starts_at: Some(prost_types::Timestamp { seconds: now - 5, nanos: 0 }),
            ends_at: Some(prost_types::Timestamp { seconds: now + 6 * 3600, nanos: 0 }),
        })
        .await
        .context("CreateSale")?
        .into_inner();
    println!(
        "==> load: {:.0} requests/s (orders, orders to {FAIL_POSTAL} whose delivery fails, cancels, purchases of sale {} with {stock} units)",
        opts.rate, sale.sale_id
    );

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = CancellationToken::new();
    let load =
        tokio::spawn(run_load(opts.rate, sale.sale_id.clone(), eps.clone(), ledger.clone(), stop.clone(), opts.seed));
    // some load before the first fault
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut injected: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut stranded = 0;
    for (i, f) in plan.iter().enumerate() {
        if i >= FaultKind::ALL.len() && t0.elapsed() >= opts.duration {
            break;
        }
        let at = t0.elapsed().as_secs_f64();
        println!("    [{at:>6.1} s] {:>2}. {} {} (hold {} ms)", i + 1, f.kind.name(), f.target, f.hold_ms);
        match inject(r, f, &eps).await {
            Ok(n) => {
                *injected.entry(f.kind.name()).or_default() += 1;
                stranded += n;
            }
            Err(e) => {
                problems.push(format!("{} on {}: {e:#}", f.kind.name(), f.target));
                println!("    FAILED: {e:#}");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(f.gap_ms)).await;
    }
    // keep the load on until the minimum number of requests went out
    while ledger.lock().expect("ledger").sent.values().sum::<u64>() < opts.min_requests {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.cancel();
    load.await.context("the load task")?;
    let injected_count = injected.values().sum::<u64>() as usize + usize::from(!problems.is_empty());
    let ledger = Arc::try_unwrap(ledger).map_err(|_| anyhow!("ledger still shared"))?.into_inner().expect("ledger");
    println!(
        "==> faults done after {:.0} s; waiting for quiescence (outboxes drained, lag 0, every accepted request settled)",
        t0.elapsed().as_secs_f64()
    );

    let deadline = Instant::now() + opts.settle;
    let last = loop {
        let s = settled(r, &ledger).await?;
        let done = s.outbox == 0 && s.lag == 0 && s.pending_orders.is_empty() && s.pending_purchases.is_empty();
        if done || Instant::now() > deadline {
            break s;
        }
        println!(
            "    not yet: outbox {} unpublished, lag {}, {} order(s) and {} purchase(s) not settled",
            s.outbox,
            s.lag,
            s.pending_orders.len(),
            s.pending_purchases.len()
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    };

    // the accounting, from the databases
    let orders: HashMap<String, (String, String)> =
        sql(r, "order", "SELECT order_id, status, COALESCE(cancel_reason, '') FROM orders")
            .await?
            .into_iter()
            .map(|f| (f[0].clone(), (f[1].clone(), f[2].clone())))
            .collect();
    let mut lost = last.pending_orders.len() as u64 + last.pending_purchases.len() as u64;
    lost += last.outbox.max(0) as u64 + last.lag.max(0) as u64 + last.dlq.max(0) as u64;
    for id in &last.pending_orders {
        problems.push(format!("order {id} accepted but {}", orders.get(id).map_or("missing", |s| s.0.as_str())));
    }
    for id in &last.pending_purchases {
        problems.push(format!("purchase {id} accepted but never settled"));
    }
    if last.dlq > 0 {
        problems.push(format!("{} record(s) in dead-letter topics", last.dlq));
    }
    let mut unexpected = 0u64;
    for (id, to_failing) in &ledger.orders {
        let Some((status, reason)) = orders.get(id) else { continue };
        let ok = if ledger.cancelled.contains(id) {
            status == "CANCELLED"
        } else if ledger.cancel_tried.contains(id) {
            status == "CANCELLED" || status == (if *to_failing { "CANCELLED" } else { "CONFIRMED" })
        } else if *to_failing {
            status == "CANCELLED" && reason == "DELIVERY_FAILED"
        } else {
            status == "CONFIRMED"
        };
        if !ok && status != "PENDING" {
            unexpected += 1;
            problems.push(format!("order {id} (to failing address: {to_failing}) ended {status} {reason}"));
        }
    }
    let dup_queries = [
        (
            "order",
            "SELECT COUNT(*) FROM (SELECT time_sale_purchase_id FROM orders WHERE time_sale_purchase_id IS NOT NULL GROUP BY 1 HAVING COUNT(*) > 1) d",
        ),
        (
            "order",
            "SELECT COUNT(*) FROM (SELECT idempotency_key FROM orders WHERE idempotency_key IS NOT NULL GROUP BY 1 HAVING COUNT(*) > 1) d",
        ),
        ("delivery", "SELECT COUNT(*) FROM (SELECT order_id FROM deliveries GROUP BY 1 HAVING COUNT(*) > 1) d"),
        (
            "timesale",
            "SELECT COUNT(*) FROM (SELECT idempotency_key FROM purchases WHERE idempotency_key IS NOT NULL GROUP BY 1 HAVING COUNT(*) > 1) d",
        ),
    ];
    let mut duplicates = 0u64;
    for (db, q) in dup_queries {
        let n = count(r, db, q).await?;
        if n > 0 {
            problems.push(format!("{db}: {n} duplicated effect(s): {q}"));
        }
        duplicates += n.max(0) as u64;
    }
    let oversold = count(
        r,
        "timesale",
        "SELECT COALESCE(SUM(GREATEST(held - s.total_stock, 0) + GREATEST(-s.remaining_stock, 0)), 0) FROM sales s \
         JOIN (SELECT sale_id, SUM(quantity) AS held FROM purchases WHERE status <> 'CANCELLED' GROUP BY sale_id) p USING (sale_id)",
    )
    .await?;
    let purchases = count(
        r,
        "timesale",
        &format!("SELECT COUNT(*) FROM purchases WHERE sale_id = '{}' AND status <> 'CANCELLED'", sale.sale_id),
    )
    .await?;
    let audit =
        checks::audit(r, &CheckOptions { load_rps: 0, load_secs: 0, client_timeout: Duration::from_secs(120) }).await;
    let audit_clean = match &audit {
        Ok(line) => {
            println!("    audit: {line}");
            true
        }
        Err(e) => {
            problems.push(format!("audit: {e:#}"));
            false
        }
    };
    let confirmed = orders.values().filter(|(s, _)| s == "CONFIRMED").count() as u64;
    let cancelled = orders.values().filter(|(s, _)| s == "CANCELLED").count() as u64;
    let accepted = ledger.orders.len() as u64 + ledger.cancelled.len() as u64 + ledger.purchases.len() as u64;
    let mut figures = Figures {
        seed: opts.seed,
        schedule: plan.into_iter().take(injected_count).collect(),
        faults: injected,
        stranded_by_kills: stranded,
        requests_sent: ledger.sent.values().sum(),
        requests_accepted: accepted,
        attempts: ledger.attempts,
        refused: ledger.refused.clone(),
        not_answered: ledger.gave_up,
        orders_confirmed: confirmed,
        orders_cancelled: cancelled,
        fallback_quotes: count(r, "order", "SELECT COUNT(*) FROM orders WHERE quote_source = 'FALLBACK'").await?.max(0)
            as u64,
        purchases: purchases.max(0) as u64,
        sale_stock: i64::from(stock),
        events_lost: lost,
        duplicate_effects: duplicates,
        oversold,
        unexpected_outcomes: unexpected,
        audit_clean,
        problems,
        elapsed_secs: t0.elapsed().as_secs_f64(),
    };
    if figures.stranded_by_kills == 0 {
        figures.problems.push("no kill landed between commit and publish (no outbox row was stranded)".into());
    }
    write(&figures, &opts.out)?;
    Ok(figures)
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn write(f: &Figures, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join("chaos.json");
    std::fs::write(&path, serde_json::to_string_pretty(f)?).with_context(|| format!("writing {}", path.display()))?;
    println!("written: {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> Targets {
        Targets {
            order: "o-0".into(),
            delivery: "d-0".into(),
            timesale: vec!["t-0".into(), "t-1".into()],
            broker: "k-0".into(),
            database: "p-0".into(),
        }
    }

    #[test]
    fn a_seed_gives_one_schedule_with_every_kind() {
        let a = schedule(42, Duration::from_secs(60), &targets());
        assert_eq!(a, schedule(42, Duration::from_secs(60), &targets()), "same seed, same schedule");
        assert_ne!(a, schedule(43, Duration::from_secs(60), &targets()), "another seed, another schedule");
        for k in FaultKind::ALL {
            assert!(a.iter().any(|f| f.kind == k), "{k:?} missing from {a:?}");
        }
        let long = schedule(42, Duration::from_secs(600), &targets());
        assert!(long.len() > a.len(), "a longer duration schedules more faults");
        assert_eq!(&long[..FaultKind::ALL.len()], &a[..FaultKind::ALL.len()], "the first round is the seed's");
        for f in &long {
            if f.kind == FaultKind::Freeze {
                assert!(f.hold_ms > SESSION_TIMEOUT.as_millis() as u64, "a freeze outlasts the session timeout");
            }
            match f.kind {
                FaultKind::KillBroker | FaultKind::PartitionBroker => assert_eq!(f.target, "k-0"),
                FaultKind::KillTimesale => assert!(f.target.starts_with("t-")),
                _ => {}
            }
        }
    }

    #[test]
    fn lag_and_dead_letters_are_read_from_the_kafka_tools() {
        let groups = "\nGROUP  TOPIC  PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  CONSUMER-ID  HOST  CLIENT-ID\n\
                      order  delivery-events  0  10  12  2  rdkafka-1  /10.0.0.3  rdkafka\n\
                      order  delivery-events  1  -   3   -  -  -  -\n\
                      delivery  order-events  0  7  7  0  rdkafka-2  /10.0.0.4  rdkafka\n";
        assert_eq!(parse_group_lag(groups), 5);
        let offsets = "order-events:0:7\norder-events.dlq:0:2\ntimesale-events.dlq:1:0\n__consumer_offsets:3:12\n";
        assert_eq!(parse_dlq_records(offsets), 2);
    }
}
