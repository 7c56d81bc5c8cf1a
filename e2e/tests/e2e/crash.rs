//! A consumer SIGKILLed under load and restarted: the broker's group coordinator must
//! evict the dead member once its session times out and give its partitions to the new
//! process, which then works off everything that piled up.
//!
//! This is the test a broker that never evicts a dead member cannot pass: tansu 0.6.0 keeps
//! a SIGKILLed member's partitions forever, so the restarted process is assigned nothing,
//! the group never lists a single live member, and the first `eventually` below times out
//! (with every later order PENDING). The test asserts the eviction itself, through the
//! coordinator's own member list, not only its effect.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use cloudmart_platform::{
    config::KafkaArgs,
    proto::order::v1::{self as pb, order_service_client::OrderServiceClient},
    testkit::{eventually, group_members},
};

use crate::{
    harness::{Proc, System},
    saga::{request, wait_terminal},
};

/// Session timeout the services run with here (the default, stated so the bound below
/// is derived from it).
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Orders placed by a steady background load: (id, when accepted).
type Accepted = Arc<Mutex<Vec<(String, Instant)>>>;

/// Places orders at a steady pace from 4 workers until `stop`; failed calls (the order
/// process is down for a moment) are counted, not retried.
fn start_load(order_addr: String, stop: Arc<AtomicBool>) -> (Accepted, tokio::task::JoinHandle<u64>) {
    let accepted: Accepted = Arc::default();
    let acc = accepted.clone();
    let handle = tokio::spawn(async move {
        let channel = tonic::transport::Channel::from_shared(format!("http://{order_addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        let workers = (0..4).map(|w| {
            let (mut client, stop, acc) = (OrderServiceClient::new(channel.clone()), stop.clone(), acc.clone());
            tokio::spawn(async move {
                let mut failed = 0u64;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let req = request(&format!("kill-{w}"), &format!("2{:04}", i % 10_000), &format!("k-{w}-{i}"));
                    match client.place_order(req).await {
                        Ok(r) => acc.lock().unwrap().push((r.into_inner().order.unwrap().order_id, Instant::now())),
                        Err(_) => failed += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
                failed
            })
        });
        let mut failed = 0;
        for w in workers.collect::<Vec<_>>() {
            failed += w.await.unwrap();
        }
        failed
    });
    (accepted, handle)
}

/// Waits until the coordinator lists exactly one member for `group` and it is not
/// `dead`; returns it and how long that took.
async fn wait_evicted(kafka: &KafkaArgs, group: &str, dead: &str, since: Instant) -> (String, Duration) {
    // Liveness bound, not a speed goal: eviction happens once the session timeout has
    // passed; the margin absorbs a slow, shared machine. A broker that never evicts
    // fails here whatever the margin.
    let bound = SESSION_TIMEOUT * 4;
    let (kafka, group, dead) = (kafka.clone(), group.to_owned(), dead.to_owned());
    let member = eventually(&format!("the coordinator to evict {dead} from {group}"), bound, || {
        let (kafka, group, dead) = (kafka.clone(), group.clone(), dead.clone());
        async move {
            let (state, members) = tokio::task::spawn_blocking(move || group_members(&kafka, &group)).await.unwrap()?;
            (state == "Stable" && members.len() == 1 && members[0] != dead).then(|| members[0].clone())
        }
    })
    .await;
    (member, since.elapsed())
}

/// The only member of `group` once it is stable (the running process).
async fn only_member(kafka: &KafkaArgs, group: &str) -> String {
    let (kafka, group) = (kafka.clone(), group.to_owned());
    eventually(&format!("one stable member in {group}"), Duration::from_secs(60), || {
        let (kafka, group) = (kafka.clone(), group.clone());
        async move {
            let (state, members) = tokio::task::spawn_blocking(move || group_members(&kafka, &group)).await.unwrap()?;
            (state == "Stable" && members.len() == 1).then(|| members[0].clone())
        }
    })
    .await
}

/// Waits until an order accepted after `since` is CONFIRMED: the saga runs again.
async fn wait_confirmed_after(client: &OrderServiceClient<tonic::transport::Channel>, acc: &Accepted, since: Instant) {
    eventually("an order accepted after the restart to be CONFIRMED", Duration::from_secs(60), || {
        let mut client = client.clone();
        let ids: Vec<String> =
            acc.lock().unwrap().iter().filter(|(_, at)| *at > since).map(|(id, _)| id.clone()).take(20).collect();
        async move {
            for id in ids {
                let o = client.get_order(pb::GetOrderRequest { order_id: id }).await.ok()?.into_inner();
                if o.status() == pb::OrderStatus::Confirmed {
                    return Some(());
                }
            }
            None
        }
    })
    .await;
}

/// SIGKILLs `proc_` (the only member of `service`'s consumer group), starts its
/// replacement with `restart`, and waits until the coordinator has evicted the dead member
/// and the new process owns the partitions.
async fn kill_and_replace<F, Fut>(sys: &System, service: &str, proc_: Proc, restart: F) -> Proc
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Proc>,
{
    let group = sys.group(service);
    let dead = only_member(&sys.kafka.args, &group).await;
    proc_.crash();
    let killed_at = Instant::now();
    let replacement = restart().await;
    let (member, took) = wait_evicted(&sys.kafka.args, &group, &dead, killed_at).await;
    eprintln!("[e2e] {service}: dead member {dead} evicted, {member} owns the partitions {took:?} after SIGKILL");
    replacement
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_consumer_is_evicted_and_its_restart_resumes_under_load() {
    let sys = System::new("kill").await;
    if sys.kafka.backend != "kafka" {
        eprintln!(
            "[e2e] SKIP a_sigkilled_consumer…: needs a real broker's group coordinator (set TEST_KAFKA_BROKERS; \
             `bash deploy/kafka.sh start` runs Apache Kafka locally)"
        );
        return;
    }
    let delivery = sys.start_delivery(&[]).await;
    let order = sys.start_order(&[]).await;
    let client = OrderServiceClient::connect(format!("http://{}", sys.order_addr)).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (accepted, load) = start_load(sys.order_addr.clone(), stop.clone());
    let t0 = Instant::now();
    wait_confirmed_after(&client, &accepted, t0).await;

    // 1. delivery (consumes order-events) dies mid-stream and comes straight back.
    let _delivery = kill_and_replace(&sys, "delivery", delivery, || sys.start_delivery(&[])).await;
    wait_confirmed_after(&client, &accepted, Instant::now()).await;

    // 2. order (consumes delivery-events, serves the load) dies and comes back.
    let order = kill_and_replace(&sys, "order", order, || sys.start_order(&[])).await;
    wait_confirmed_after(&client, &accepted, Instant::now()).await;

    stop.store(true, Ordering::Relaxed);
    let failed = load.await.unwrap();
    let ids: Vec<String> = accepted.lock().unwrap().iter().map(|(id, _)| id.clone()).collect();
    eprintln!("[e2e] load: {} orders accepted, {failed} calls failed while order was down", ids.len());
    assert!(ids.len() >= 100, "the load placed only {} orders", ids.len());

    // Every accepted order reaches a terminal state — all of them CONFIRMED (no fault
    // injection, and the fallback quote keeps orders flowing while delivery is down) —
    // and the invariants hold.
    let finals = wait_terminal(&client, &ids).await;
    let not_confirmed: Vec<_> = finals.values().filter(|o| o.status() != pb::OrderStatus::Confirmed).collect();
    assert!(not_confirmed.is_empty(), "{} orders not CONFIRMED, e.g. {:?}", not_confirmed.len(), not_confirmed.first());
    assert!(order.terminate(Duration::from_secs(30)).success());
    crate::timesale::audit(&sys.order_db, &sys.delivery_db, None);
}

/// SIGTERM under load, as Kubernetes stops a pod: each process drains and exits 0 within
/// the chart's grace period (30 s), every order the order service acknowledged is
/// durable, and once both are back every one of them ends CONFIRMED — nothing consumed
/// and acknowledged to the broker was left unapplied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_cleanly_and_loses_no_acknowledged_order() {
    /// `terminationGracePeriodSeconds` of the chart's services.
    const GRACE: Duration = Duration::from_secs(30);
    let sys = System::new("term").await;
    let delivery = sys.start_delivery(&[]).await;
    let order = sys.start_order(&[]).await;
    let client = OrderServiceClient::connect(format!("http://{}", sys.order_addr)).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let (accepted, load) = start_load(sys.order_addr.clone(), stop.clone());
    wait_confirmed_after(&client, &accepted, t0).await;
    drop(client);

    // delivery first (it is consuming OrderPlaced), then order (serving PlaceOrder and
    // consuming delivery's outcomes) — both while the load keeps calling.
    let status = tokio::task::spawn_blocking(move || delivery.terminate(GRACE)).await.unwrap();
    assert!(status.success(), "delivery exits 0 on SIGTERM under load: {status}");
    let status = tokio::task::spawn_blocking(move || order.terminate(GRACE)).await.unwrap();
    assert!(status.success(), "order exits 0 on SIGTERM under load: {status}");
    stop.store(true, Ordering::Relaxed);
    let failed = load.await.unwrap();
    let ids: Vec<String> = accepted.lock().unwrap().iter().map(|(id, _)| id.clone()).collect();
    eprintln!("[e2e] sigterm: {} orders acknowledged, {failed} calls refused while stopping", ids.len());
    assert!(!ids.is_empty(), "the load placed orders before the SIGTERM");

    let _delivery = sys.start_delivery(&[]).await;
    let order = sys.start_order(&[]).await;
    let client = OrderServiceClient::connect(format!("http://{}", sys.order_addr)).await.unwrap();
    let finals = wait_terminal(&client, &ids).await;
    assert_eq!(finals.len(), ids.len(), "every acknowledged order is durable");
    let not_confirmed: Vec<_> = finals.values().filter(|o| o.status() != pb::OrderStatus::Confirmed).collect();
    assert!(not_confirmed.is_empty(), "{} orders not CONFIRMED, e.g. {:?}", not_confirmed.len(), not_confirmed.first());
    assert!(order.terminate(GRACE).success());
    crate::timesale::audit(&sys.order_db, &sys.delivery_db, None);
}
