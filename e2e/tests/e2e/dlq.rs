//! DLQ replay over real processes: an event that fails permanently lands in the DLQ, the
//! cause is fixed, `cloudmart-audit dlq list` shows it and `cloudmart-audit dlq replay`
//! puts it back; it is applied exactly once, also when replayed a second time.

use std::{process::Command, time::Duration};

use cloudmart_platform::proto::contract::topics;
use cloudmart_platform::{
    events::{CloudEvent, headers},
    proto::{
        events::v1 as ev,
        order::v1::{self as pb, order_service_client::OrderServiceClient},
    },
    testkit::{committed_offset, eventually, read_records},
};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

use crate::{
    harness::{System, bin},
    saga::{request, wait_terminal},
};

async fn scalar(db: &DatabaseConnection, sql: &str) -> Option<String> {
    let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql.to_owned())).await.unwrap()?;
    let v: String = row.try_get_by_index(0).unwrap();
    Some(v)
}

async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql.to_owned())).await.unwrap();
    row.unwrap().try_get_by_index::<i64>(0).unwrap()
}

/// Runs `cloudmart-audit dlq <args>` against the system's broker and topic prefix;
/// returns (success, stdout, stderr).
fn dlq_cmd(sys: &System, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("cloudmart-audit"))
        .arg("dlq")
        .args(args)
        .args(["--brokers", &sys.kafka.args.brokers, "--topic-prefix", &sys.kafka.args.topic_prefix])
        .env_remove("KAFKA_BROKERS")
        .env_remove("KAFKA_TOPIC_PREFIX")
        .output()
        .expect("run cloudmart-audit");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    eprintln!("[e2e] cloudmart-audit dlq {}:\n{stdout}{stderr}", args.join(" "));
    (out.status.success(), stdout, stderr)
}

/// `(partition, offset)` from the `replayed … -> <topic>/<partition>/<offset> …` line.
fn replayed_to(stdout: &str) -> (i32, i64) {
    let target = stdout
        .lines()
        .find_map(|l| l.strip_prefix("replayed ").and_then(|l| l.split(" -> ").nth(1)))
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("no replayed line in {stdout:?}"));
    let mut parts = target.rsplitn(3, '/');
    let offset = parts.next().unwrap().parse().unwrap();
    let partition = parts.next().unwrap().parse().unwrap();
    (partition, offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_event_is_replayed_after_the_fix_and_applied_exactly_once() {
    let sys = System::new("dlqreplay").await;
    let delivery = sys.start_delivery(&[]).await;
    let order = sys.start_order(&[]).await;
    let client = OrderServiceClient::connect(format!("http://{}", sys.order_addr)).await.unwrap();
    let ddb = cloudmart_platform::db::connect(&sys.delivery_db).await.unwrap();

    // Two confirmed orders to one postal code: its capacity counter is 2.
    let mut ids = Vec::new();
    for i in 0..2 {
        let o = client.clone().place_order(request("c", "24680", &format!("dlq-{i}"))).await.unwrap().into_inner();
        ids.push(o.order.unwrap().order_id);
    }
    let finals = wait_terminal(&client, &ids).await;
    assert!(finals.values().all(|o| o.status() == pb::OrderStatus::Confirmed));
    let used = "SELECT CAST(SUM(used) AS BIGINT) FROM region_capacity WHERE postal_code = '24680'";
    assert_eq!(count(&ddb, used).await, 2);
    let poisoned = ids[0].clone();

    // The fault: the delivery row of the first order is corrupted (a status the state
    // machine refuses), so delivery's handling of its OrderCancelled fails permanently.
    ddb.execute_unprepared(&format!("UPDATE deliveries SET status = 'QUARANTINED' WHERE order_id = '{poisoned}'"))
        .await
        .unwrap();
    client
        .clone()
        .cancel_order(pb::CancelOrderRequest { order_id: poisoned.clone(), reason: "test".into() })
        .await
        .unwrap();

    let dlq_topic = cloudmart_platform::events::dlq_topic(topics::ORDER_EVENTS);
    let dead = read_records(&sys.kafka.args, &dlq_topic, 1, Duration::from_secs(60)).await;
    let dead = &dead[0];
    let ce_id = dead.headers[headers::ID].clone();
    assert_eq!(dead.headers[headers::TYPE], ev::OrderCancelled::TYPE);
    assert_eq!(dead.key.as_deref(), Some(poisoned.as_str()));
    assert!(dead.headers[headers::DLQ_ERROR].contains("bad status QUARANTINED"), "{:?}", dead.headers);
    assert_eq!(dead.headers[headers::DLQ_ATTEMPTS], "1");
    assert_eq!(dead.headers[headers::DLQ_TOPIC], sys.kafka.args.topic(topics::ORDER_EVENTS));
    // Nothing was applied: the event id is not recorded, the capacity is still taken.
    let processed = format!("SELECT COUNT(*) FROM processed_events WHERE event_id = '{ce_id}'");
    assert_eq!(count(&ddb, &processed).await, 0);
    assert_eq!(count(&ddb, used).await, 2);

    // `dlq list` shows the record with its origin, id, type, attempts and error.
    let (ok, listed, _) = dlq_cmd(&sys, &["list", "--topic", topics::ORDER_EVENTS]);
    assert!(ok);
    let line = listed.lines().find(|l| l.contains(&format!("ce_id={ce_id} "))).expect("the record is listed");
    let dlq_physical = sys.kafka.args.topic(&dlq_topic);
    let position = format!("{}:{}", dead.partition, dead.offset);
    assert!(line.starts_with(&format!("{dlq_physical} {position} origin=")), "{line}");
    assert!(line.contains(&format!("ce_type={} attempts=1 ", ev::OrderCancelled::TYPE)), "{line}");
    assert!(line.contains("bad status QUARANTINED"), "{line}");
    assert_eq!(listed.lines().count(), 1, "one record in the DLQ");

    // Replaying an offset that is not in the DLQ is refused, naming it.
    let (ok, _, err) = dlq_cmd(&sys, &["replay", "--topic", topics::ORDER_EVENTS, "--offset", "9:99"]);
    assert!(!ok);
    assert!(err.contains("no record at partition 9 offset 99"), "{err}");
    // A dry run publishes nothing.
    let (ok, out, _) = dlq_cmd(&sys, &["replay", "--topic", topics::ORDER_EVENTS, "--offset", &position, "--dry-run"]);
    assert!(ok && out.contains("would replay"), "{out}");

    // The fix, then the replay: the cancellation is applied once.
    ddb.execute_unprepared(&format!("UPDATE deliveries SET status = 'SCHEDULED' WHERE order_id = '{poisoned}'"))
        .await
        .unwrap();
    let (ok, out, _) = dlq_cmd(&sys, &["replay", "--topic", topics::ORDER_EVENTS, "--offset", &position]);
    assert!(ok, "{out}");
    let (p1, o1) = replayed_to(&out);
    let status = format!("SELECT status FROM deliveries WHERE order_id = '{poisoned}'");
    eventually("the replayed cancellation applied", Duration::from_secs(60), || async {
        (scalar(&ddb, &status).await.as_deref() == Some("CANCELLED")).then_some(())
    })
    .await;

    // The same record replayed again: the consumer finds its ce_id and changes nothing.
    let (ok, out, _) = dlq_cmd(&sys, &["replay", "--topic", topics::ORDER_EVENTS, "--offset", &position]);
    assert!(ok, "{out}");
    let (p2, o2) = replayed_to(&out);
    assert_eq!(p2, p1, "same key, same partition");
    assert!(o2 > o1);
    let (kafka, group) = (sys.kafka.args.clone(), sys.group("delivery"));
    eventually("delivery committed past the second replay", Duration::from_secs(60), || {
        let (kafka, group) = (kafka.clone(), group.clone());
        async move { committed_offset(&kafka, &group, topics::ORDER_EVENTS, p2).is_some_and(|c| c > o2).then_some(()) }
    })
    .await;

    // Exactly once: one processed id, one unit of capacity given back, one
    // DeliveryCancelled written, and the replays themselves did not fail.
    assert_eq!(count(&ddb, &processed).await, 1);
    assert_eq!(count(&ddb, used).await, 1, "capacity released once (twice would be 0)");
    let cancelled_events = format!(
        "SELECT COUNT(*) FROM outbox WHERE event_type = '{}' AND event_key = '{poisoned}'",
        ev::DeliveryCancelled::TYPE
    );
    assert_eq!(count(&ddb, &cancelled_events).await, 1);
    assert!(delivery.log_text().contains("duplicate event ignored"), "the second replay was a duplicate");
    let (ok, listed, _) = dlq_cmd(&sys, &["list", "--topic", topics::ORDER_EVENTS]);
    assert!(ok);
    assert_eq!(listed.lines().count(), 1, "no replay was dead-lettered again:\n{listed}");
    // The replayed copies carry their origin and the original CloudEvents headers.
    let replays = read_replays(&sys, p1, o2).await;
    assert_eq!(replays.len(), 2);
    for r in &replays {
        assert_eq!(r.headers[headers::ID], ce_id);
        assert_eq!(r.headers[headers::REPLAYED_FROM], format!("{dlq_physical}/{}/{}", dead.partition, dead.offset));
        assert!(r.headers.keys().all(|k| !k.starts_with(headers::DLQ_PREFIX)), "{:?}", r.headers);
        assert_eq!(r.payload, dead.payload);
    }

    assert!(order.terminate(Duration::from_secs(30)).success());
    assert!(delivery.terminate(Duration::from_secs(30)).success());
    crate::timesale::audit(&sys.order_db, &sys.delivery_db, None);
}

/// The records of `order-events` partition `partition` up to `last` that carry
/// `replayed_from`.
async fn read_replays(sys: &System, partition: i32, last: i64) -> Vec<cloudmart_platform::testkit::Record> {
    // Every order-events record up to the second replay: read enough of the topic.
    let want = std::cell::Cell::new(1);
    let want = &want;
    cloudmart_platform::testkit::until("the replays on order-events", Duration::from_secs(90), || async move {
        let all = read_records(&sys.kafka.args, topics::ORDER_EVENTS, want.get(), Duration::from_secs(10)).await;
        if all.iter().any(|r| r.partition == partition && r.offset >= last) {
            return Ok(all.into_iter().filter(|r| r.headers.contains_key(headers::REPLAYED_FROM)).collect());
        }
        want.set(all.len() + 1);
        Err(format!("{} records read, none at {partition}/{last} yet", all.len()))
    })
    .await
}
