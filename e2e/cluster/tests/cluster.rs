//! `make e2e-cluster`: cloudmart on a real Kubernetes (the current kube context, the chart
//! installed by `make deploy`), driven with the tools users have: helm, kubectl and
//! `kubectl cloudmart`. The tests share one cluster, so `make e2e-cluster` runs them one at a
//! time, in name order (a… before b…). `make test` leaves this crate out (it needs a cluster);
//! .ci/run runs it after `make cluster && make deploy`.

use std::time::{Duration, Instant};

use cloudmart_e2e::{smoke_order, smoke_purchase};
use cloudmart_e2e_cluster::Cluster;

const SAGA_TIMEOUT: Duration = Duration::from_secs(90);

async fn cluster() -> Cluster {
    match Cluster::connect().await {
        Ok(c) => c,
        Err(e) => panic!("make e2e-cluster: {e:#}"),
    }
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn a1_helm_test_passes() {
    let c = cluster().await;
    let out = c.helm(&["test", &c.release, "--timeout", "5m", "--logs"]).await.unwrap();
    assert!(out.status.success(), "helm test failed:\n{}", text(&out));
}

#[tokio::test]
async fn a2_an_order_is_confirmed_through_the_saga() {
    let c = cluster().await;
    let order = c.port_forward("order", 50051).await.unwrap();
    let outcome = smoke_order(&order.endpoint, "04524", "KR", SAGA_TIMEOUT).await.unwrap();
    assert_eq!(outcome.status, "CONFIRMED", "order {} ended {}", outcome.order_id, outcome.status);
}

#[tokio::test]
async fn a3_a_failed_delivery_cancels_the_order() {
    let c = cluster().await;
    // deploy/cluster/values.yaml fails every delivery to postal code 99999
    let order = c.port_forward("order", 50051).await.unwrap();
    let outcome = smoke_order(&order.endpoint, "99999", "KR", SAGA_TIMEOUT).await.unwrap();
    assert_eq!(outcome.status, "CANCELLED", "order {} ended {}", outcome.order_id, outcome.status);
    assert!(!outcome.cancel_reason.is_empty(), "a compensated order names its reason");
}

#[tokio::test]
async fn a4_a_purchase_traces_through_all_three_services() {
    let c = cluster().await;
    let timesale = c.port_forward("timesale", 50053).await.unwrap();
    let purchase = smoke_purchase(&timesale.endpoint, SAGA_TIMEOUT).await.unwrap();
    assert_eq!(purchase.status, "ORDERED", "purchase {} ended {}", purchase.purchase_id, purchase.status);
    // the services export their spans in batches: the plugin waits until the trace holds
    // spans of all three services (exit 3 when it never does)
    let out = c
        .plugin(&[
            "trace",
            &purchase.order_id,
            "--wait",
            "90s",
            "--require-service",
            "delivery",
            "--require-service",
            "timesale",
        ])
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{printed}");
    assert!(out.status.success(), "kubectl cloudmart trace {} failed:\n{}", purchase.order_id, text(&out));
    let first = printed.lines().next().unwrap_or_default();
    for service in ["order", "delivery", "timesale"] {
        assert!(first.contains(service), "the trace's services line lacks {service}: {first}");
    }
}

/// The chart's NetworkPolicies are enforced (on `make cluster` by kube-router's firewall;
/// on kind by kindnet): inside the namespace only pods labelled `cloudmart.io/client` reach
/// the services and PostgreSQL, and not Kafka (that takes `cloudmart.io/kafka-client`); from
/// another namespace nothing reaches them, whatever its labels; DNS stays open. The saga
/// tests (a2, a3, a4, b1) run under the same policies.
#[tokio::test]
async fn a5_network_policies_admit_only_labelled_clients_of_the_namespace() {
    let c = cluster().await;
    let outside = format!("{}-netpol-probe", c.namespace);
    let created = c.kubectl_global(&["create", "namespace", &outside]).await.unwrap();
    assert!(
        created.status.success() || text(&created).contains("AlreadyExists"),
        "kubectl create namespace {outside}: {}",
        text(&created)
    );
    let inside = |part: &str, port: u16| format!("{}:{port}", c.resource(part));
    let fqdn = |part: &str, port: u16| format!("{}.{}:{port}", c.resource(part), c.namespace);
    let client = "cloudmart.io/client=true";
    let cases = [
        (
            c.probe_pod(&c.namespace, "netpol-probe-unlabelled", "").await.unwrap(),
            vec![
                (inside("postgresql", 5432), false),
                (inside("timesale", 50053), false),
                (inside("order", 50051), false),
                (inside("kafka", 9092), false),
            ],
        ),
        (
            c.probe_pod(&c.namespace, "netpol-probe-client", client).await.unwrap(),
            vec![
                (inside("postgresql", 5432), true),
                (inside("timesale", 50053), true),
                (inside("order", 50051), true),
                (inside("kafka", 9092), false),
            ],
        ),
        (
            c.probe_pod(&outside, "netpol-probe-outside", client).await.unwrap(),
            vec![
                (fqdn("postgresql", 5432), false),
                (fqdn("timesale", 50053), false),
                ("kube-dns.kube-system:53".to_string(), true),
            ],
        ),
    ];
    // the enforcer programs a new pod's rules shortly after the pod starts: poll until the
    // verdicts match (or 60 s pass), then check once more that they hold
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut matched_once = false;
    let mismatches = loop {
        let mut mismatches = Vec::new();
        for (probe, expected) in &cases {
            let targets: Vec<&str> = expected.iter().map(|(t, _)| t.as_str()).collect();
            let seen = probe.reachable(&targets).await.unwrap();
            for ((target, want), (_, got)) in expected.iter().zip(seen) {
                if *want != got {
                    let say = |open: bool| if open { "open" } else { "closed" };
                    mismatches.push(format!("{} -> {target}: {} (expected {})", probe.name, say(got), say(*want)));
                }
            }
        }
        if mismatches.is_empty() && matched_once {
            break mismatches;
        }
        matched_once = mismatches.is_empty();
        if Instant::now() > deadline {
            break mismatches;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    drop(cases);
    let _ = c.kubectl_global(&["delete", "namespace", &outside, "--wait=false"]).await;
    assert!(mismatches.is_empty(), "NetworkPolicies not enforced as the chart says:\n{}", mismatches.join("\n"));
    // and the saga still runs through them
    let order = c.port_forward("order", 50051).await.unwrap();
    let outcome = smoke_order(&order.endpoint, "04524", "KR", SAGA_TIMEOUT).await.unwrap();
    assert_eq!(outcome.status, "CONFIRMED", "order {} ended {}", outcome.order_id, outcome.status);
}

fn replicas(deploy: &serde_json::Value) -> (i64, i64) {
    let spec = deploy["spec"]["replicas"].as_i64().unwrap_or(0);
    let ready = deploy["status"]["readyReplicas"].as_i64().unwrap_or(0);
    (spec, ready)
}

/// The rush: `kubectl cloudmart load --expect-scale timesale --expect-scale-down` — the
/// real HPA (metrics-server CPU) scales time-sale and only time-sale, then back down after
/// a stabilisation window these values shorten. While time-sale runs on two or more
/// replicas, one of its pods is deleted; afterwards `kubectl cloudmart audit` must find
/// every invariant holding (nothing lost, duplicated or oversold).
#[tokio::test]
async fn b1_the_rush_scales_timesale_only_and_a_killed_pod_loses_nothing() {
    let c = cluster().await;
    let window = std::env::var("E2E_SCALE_DOWN_WINDOW_SECS").unwrap_or_else(|_| "30".into());
    let set = format!("timesale.autoscaling.scaleDown.stabilizationWindowSeconds={window}");
    let before = c.helm(&["get", "values", &c.release, "-a", "-o", "json"]).await.unwrap();
    let before: serde_json::Value = serde_json::from_slice(&before.stdout).unwrap_or_default();
    let original = before["timesale"]["autoscaling"]["scaleDown"]["stabilizationWindowSeconds"].as_i64().unwrap_or(120);
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../../charts/cloudmart");
    let up = c
        .helm(&["upgrade", &c.release, chart, "--reuse-values", "--set", &set, "--wait", "--timeout", "5m"])
        .await
        .unwrap();
    assert!(up.status.success(), "helm upgrade with a short scale-down window failed:\n{}", text(&up));

    // the verdict needs time-sale to start at its minimum: an earlier run may have left it higher
    let hpa = c.resource("timesale");
    let settle = Instant::now() + Duration::from_secs(300);
    loop {
        let h = c.get_json(&["get", "hpa", &hpa]).await.unwrap();
        let (current, min) = (h["status"]["currentReplicas"].as_i64(), h["spec"]["minReplicas"].as_i64());
        if current.is_some() && current == min {
            break;
        }
        assert!(
            Instant::now() < settle,
            "time-sale did not come back to its minimum before the rush: {current:?} vs {min:?}"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }

    // A flash sale that sells out: STOCK units, then the rest of the rush is refused
    // SOLD_OUT by time-sale alone (CPU for the HPA, no saga backlog to drain afterwards).
    let rps = std::env::var("E2E_RUSH_RPS").unwrap_or_else(|_| "250".into());
    let duration = std::env::var("E2E_RUSH_DURATION").unwrap_or_else(|_| "100s".into());
    let stock: u64 = std::env::var("E2E_RUSH_STOCK").ok().and_then(|s| s.parse().ok()).unwrap_or(3000);
    let plugin = c.clone();
    let load = tokio::spawn(async move {
        let stock = stock.to_string();
        plugin
            .plugin(&[
                "load",
                "--sale-rps",
                &rps,
                "--duration",
                &duration,
                "--stock",
                &stock,
                "--expect-scale",
                "timesale",
                "--expect-scale-down",
            ])
            .await
    });

    // kill one time-sale pod once there are two Ready
    let deployment = c.resource("timesale");
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut killed = None;
    while Instant::now() < deadline && !load.is_finished() {
        let d = c.get_json(&["get", "deployment", &deployment]).await.unwrap();
        if replicas(&d).1 >= 2 {
            let pods = c
                .kubectl_ok(&[
                    "get",
                    "pods",
                    "-l",
                    "app.kubernetes.io/name=timesale",
                    "-o",
                    "jsonpath={.items[0].metadata.name}",
                ])
                .await
                .unwrap();
            let pod = pods.trim().to_string();
            c.kubectl_ok(&["delete", "pod", &pod, "--wait=false"]).await.unwrap();
            println!("deleted time-sale pod {pod} under load");
            killed = Some(pod);
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    let out = load.await.unwrap().unwrap();
    println!("{}", String::from_utf8_lossy(&out.stdout));
    let restore = format!("timesale.autoscaling.scaleDown.stabilizationWindowSeconds={original}");
    let _ = c.helm(&["upgrade", &c.release, chart, "--reuse-values", "--set", &restore]).await;
    assert!(
        out.status.success(),
        "kubectl cloudmart load --expect-scale timesale --expect-scale-down failed:\n{}",
        text(&out)
    );
    assert!(killed.is_some(), "time-sale never ran two Ready replicas under the rush: no pod was killed");
    // across the replicas (and the one killed), exactly the stock was sold: no oversell
    let printed = String::from_utf8_lossy(&out.stdout);
    let sold = printed
        .lines()
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "succeeded")?;
            (words.first() == Some(&"outcomes")).then(|| words.get(at + 1)?.parse::<u64>().ok())?
        })
        .expect("the load report has an outcomes line");
    assert_eq!(sold, stock, "the sale of {stock} units sold {sold} across the time-sale replicas");

    for other in ["order", "delivery"] {
        let d = c.get_json(&["get", "deployment", &c.resource(other)]).await.unwrap();
        assert_eq!(replicas(&d).0, 1, "{other} must keep its one replica (only time-sale autoscales)");
    }

    let audit = c.plugin(&["audit"]).await.unwrap();
    assert!(audit.status.success(), "audit after the rush and the pod kill failed:\n{}", text(&audit));
}
