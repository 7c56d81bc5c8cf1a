//! `kubectl cloudmart status`.

use cloudmart_kubectl::cli::OutputFormat;
use cloudmart_kubectl::status;
use cloudmart_kubectl::status::StatusOptions;
use serde_json::{Value, json};

use crate::fake_api::{FakeApi, Reply, Script};
use crate::{HPA_PATH, NS, PODS_PATH, deployment, deployment_path, hpa, hpa_at, release, words_of_line};

fn pod(name: &str, component: &str, ready: bool, restarts: i32, waiting: Option<&str>) -> Value {
    let state = match waiting {
        Some(reason) => json!({ "waiting": { "reason": reason } }),
        None => json!({ "running": { "startedAt": "2026-01-01T00:00:00Z" } }),
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": NS, "creationTimestamp": "2026-01-01T00:00:00Z",
                      "labels": { "app.kubernetes.io/name": component, "app.kubernetes.io/instance": "cloudmart" } },
        "spec": { "containers": [{ "name": component }] },
        "status": { "phase": "Running", "containerStatuses": [{
            "name": component, "ready": ready, "restartCount": restarts, "image": "i", "imageID": "", "state": state }] }
    })
}

fn pods() -> Reply {
    Reply::ok(json!({
        "apiVersion": "v1", "kind": "PodList", "metadata": {},
        "items": [
            pod("cloudmart-timesale-6d9f7c8b5-x2kqp", "timesale", true, 0, None),
            pod("cloudmart-order-7c5d9b6f4-m8wzt", "order", false, 3, Some("CrashLoopBackOff")),
        ]
    }))
}

fn format(format: OutputFormat) -> StatusOptions {
    StatusOptions { format: Some(format), ..StatusOptions::default() }
}

fn script() -> Script {
    Script::new()
        .on("GET", &deployment_path("order"), [Reply::ok(deployment("order", 2, 2))])
        .on("GET", &deployment_path("delivery"), [Reply::ok(deployment("delivery", 1, 1))])
        .on("GET", &deployment_path("timesale"), [Reply::ok(deployment("timesale", 2, 3))])
        .on("GET", PODS_PATH, [pods()])
}

#[tokio::test]
async fn status_prints_replicas_pods_and_unknown_cpu_without_metrics() {
    let api = FakeApi::start(script().on("GET", HPA_PATH, [Reply::ok(hpa(3, 3, None))])).await;

    let mut out = Vec::new();
    status(api.client(), &release(), &StatusOptions::default(), &mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(words_of_line(&out, "cloudmart-order "), ["cloudmart-order", "2/2", "cloudmart/order:dev"]);
    assert_eq!(words_of_line(&out, "cloudmart-delivery "), ["cloudmart-delivery", "1/1", "cloudmart/delivery:dev"]);
    assert_eq!(words_of_line(&out, "cloudmart-timesale "), ["cloudmart-timesale", "2/3", "cloudmart/timesale:dev"]);
    let hpa_line = out.lines().filter(|l| l.starts_with("cloudmart-timesale ")).nth(1).expect("HPA row");
    let hpa_words: Vec<&str> = hpa_line.split_whitespace().collect();
    assert_eq!(hpa_words, ["cloudmart-timesale", "3", "3", "1/10", "<unknown>/60%"]);
    assert!(out.contains("metrics-server"), "{out}");

    // The pods, by name, with kubectl's columns.
    assert_eq!(words_of_line(&out, "POD "), ["POD", "READY", "STATUS", "RESTARTS", "AGE"]);
    let order = words_of_line(&out, "cloudmart-order-7c5d9b6f4-m8wzt");
    assert_eq!(order[..4], ["cloudmart-order-7c5d9b6f4-m8wzt", "0/1", "CrashLoopBackOff", "3"]);
    let timesale = words_of_line(&out, "cloudmart-timesale-6d9f7c8b5-x2kqp");
    assert_eq!(timesale[..4], ["cloudmart-timesale-6d9f7c8b5-x2kqp", "1/1", "Running", "0"]);
    assert!(out.find("cloudmart-order-7c5d9b6f4").unwrap() < out.find("cloudmart-timesale-6d9f7c8b5").unwrap());
    let list = &api.requests_to("GET", PODS_PATH)[0];
    assert!(list.query.contains("labelSelector=app.kubernetes.io%2Finstance%3Dcloudmart"), "{}", list.query);
}

#[tokio::test]
async fn status_shows_cpu_and_names_a_missing_deployment() {
    let api = FakeApi::start(
        Script::new()
            .on("GET", &deployment_path("delivery"), [Reply::ok(deployment("delivery", 1, 1))])
            .on("GET", &deployment_path("timesale"), [Reply::ok(deployment("timesale", 1, 1))])
            .on("GET", HPA_PATH, [Reply::ok(hpa(1, 1, Some(42)))])
            .on(
                "GET",
                PODS_PATH,
                [Reply::ok(json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [] }))],
            ),
    )
    .await;

    let mut out = Vec::new();
    let err = format!(
        "{:#}",
        status(api.client(), &release(), &StatusOptions::default(), &mut out).await.expect_err("order is missing")
    );
    let out = String::from_utf8(out).unwrap();
    assert!(err.contains("Deployment cloudmart-order not found in namespace cloudmart"), "{err}");
    assert!(err.contains("make deploy"), "{err}");
    assert!(out.lines().any(|l| l.starts_with("cloudmart-order") && l.ends_with("not found")), "{out}");
    assert!(out.contains("42%/60%"), "{out}");
    assert!(!out.contains("metrics-server"), "{out}");
    assert!(out.contains("no pods with label app.kubernetes.io/instance=cloudmart"), "{out}");
}

#[tokio::test]
async fn status_as_json_and_yaml_is_one_object() {
    let last_scale = Some("2026-01-01T00:00:35Z");
    let api = FakeApi::start(script().on("GET", HPA_PATH, [Reply::ok(hpa_at(3, 3, Some(75), last_scale))])).await;

    let mut out = Vec::new();
    status(api.client(), &release(), &format(OutputFormat::Json), &mut out).await.unwrap();
    let json: Value = serde_json::from_slice(&out).expect("only JSON on the output");
    assert_eq!((json["release"].as_str(), json["namespace"].as_str()), (Some("cloudmart"), Some(NS)));
    assert_eq!(
        json["deployments"][2],
        json!({ "service": "timesale", "name": "cloudmart-timesale", "found": true, "ready": 2, "desired": 3,
                "image": "cloudmart/timesale:dev" })
    );
    assert_eq!(json["hpa"]["cpu_current_percent"], 75);
    assert_eq!(json["hpa"]["last_scale_time"], "2026-01-01T00:00:35Z");
    assert_eq!(json["pods"][0]["status"], "CrashLoopBackOff");

    let mut out = Vec::new();
    status(api.client(), &release(), &format(OutputFormat::Yaml), &mut out).await.unwrap();
    let mut yaml: Value = serde_norway::from_slice(&out).expect("YAML");
    // The two reads are taken a moment apart: the pods' ages may differ by a second.
    let without_ages = |doc: &mut Value| {
        for pod in doc["pods"].as_array_mut().into_iter().flatten() {
            pod.as_object_mut().map(|p| p.remove("age_secs"));
        }
    };
    let mut json = json;
    without_ages(&mut yaml);
    without_ages(&mut json);
    assert_eq!(yaml, json);
}
