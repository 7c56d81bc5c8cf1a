//! `kubectl cloudmart trace`: finding the Jaeger pod (fake API server) and searching
//! Jaeger's query API (the same fake, serving `/api/traces`, reached as `--jaeger-url`).

use std::time::Duration;

use cloudmart_kubectl::jaeger::{JaegerTarget, find_jaeger};
use cloudmart_kubectl::trace::{TraceOptions, TraceOutcome, find};
use serde_json::{Value, json};

use crate::fake_api::{FakeApi, Reply, Script};
use crate::{NS, PODS_PATH, release};

const ORDER_ID: &str = "5f0c2a9e-7b1d-5c3e-9a4f-2d8e6b1c0a37";
const SERVICE_PATH: &str = "/api/v1/namespaces/cloudmart/services/cloudmart-jaeger";
const FIXTURE: &str = include_str!("../fixtures/jaeger-purchase-trace.json");

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).unwrap()
}

/// The fixture with only the spans of process `p1` (time-sale): a trace whose other spans
/// have not reached Jaeger yet.
fn partial() -> Value {
    let mut answer = fixture();
    let spans = answer["data"][0]["spans"].as_array_mut().unwrap();
    spans.retain(|s| s["processID"] == "p1");
    answer
}

fn empty() -> Value {
    json!({ "data": [], "total": 0, "limit": 0, "offset": 0, "errors": null })
}

fn options(wait: Option<Duration>, require: &[&str]) -> TraceOptions {
    TraceOptions {
        order_id: ORDER_ID.to_owned(),
        lookback: Duration::from_secs(3600),
        wait,
        require_services: require.iter().map(|s| (*s).to_owned()).collect(),
        retry_every: Duration::from_millis(10),
    }
}

#[tokio::test]
async fn the_order_is_searched_by_both_attributes_and_its_trace_found() {
    let jaeger =
        FakeApi::start(Script::new().on("GET", "/api/traces", [Reply::ok(fixture()), Reply::ok(fixture())])).await;
    let target = JaegerTarget::from_url(&jaeger.url()).unwrap();

    let TraceOutcome::Found(traces) = find(&target, &options(None, &[])).await.unwrap() else { panic!("not found") };
    assert_eq!(traces.len(), 1, "the same trace from both searches counts once");
    assert_eq!(traces[0].trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(traces[0].services(), ["timesale", "order", "delivery"]);

    let searches = jaeger.requests_to("GET", "/api/traces");
    assert_eq!(searches.len(), 2);
    assert!(
        searches[0]
            .query
            .starts_with("service=order&tags=%7B%22order_id%22%3A%225f0c2a9e-7b1d-5c3e-9a4f-2d8e6b1c0a37%22%7D&start="),
        "{}",
        searches[0].query
    );
    assert!(
        searches[1].query.contains("tags=%7B%22messaging.kafka.message.key%22%3A%225f0c2a9e"),
        "{}",
        searches[1].query
    );
    assert!(searches[1].query.ends_with("&limit=20&lookback=custom"), "{}", searches[1].query);
}

#[tokio::test]
async fn no_trace_is_not_found_with_the_reason() {
    let jaeger = FakeApi::start(Script::new().on("GET", "/api/traces", [Reply::ok(empty())])).await;
    let target = JaegerTarget::from_url(&jaeger.url()).unwrap();

    let TraceOutcome::NotFound(why) = find(&target, &options(None, &[])).await.unwrap() else { panic!("found") };
    assert!(
        why.starts_with(&format!("no trace of order {ORDER_ID} in Jaeger at {} (no trace;", jaeger.url())),
        "{why}"
    );
    assert!(why.contains("--wait 30s searches again"), "{why}");
}

#[tokio::test]
async fn wait_searches_again_until_the_trace_has_the_required_services() {
    let replies = [Reply::ok(partial()), Reply::ok(empty()), Reply::ok(fixture()), Reply::ok(empty())];
    let jaeger = FakeApi::start(Script::new().on("GET", "/api/traces", replies)).await;
    let target = JaegerTarget::from_url(&jaeger.url()).unwrap();

    let found = find(&target, &options(Some(Duration::from_secs(10)), &["delivery"])).await.unwrap();
    let TraceOutcome::Found(traces) = found else { panic!("not found: {found:?}") };
    assert_eq!(traces[0].spans.len(), 17);
    assert_eq!(jaeger.requests_to("GET", "/api/traces").len(), 4, "two searches, twice");

    // Never complete: not found, saying what is missing.
    let jaeger = FakeApi::start(Script::new().on("GET", "/api/traces", [Reply::ok(partial())])).await;
    let target = JaegerTarget::from_url(&jaeger.url()).unwrap();
    let outcome = find(&target, &options(Some(Duration::from_millis(50)), &["delivery"])).await.unwrap();
    let TraceOutcome::NotFound(why) = outcome else { panic!("found: {outcome:?}") };
    assert!(why.contains("1 trace(s) but none with spans of delivery (services seen: timesale)"), "{why}");
}

#[tokio::test]
async fn jaeger_errors_and_bad_ids_are_errors() {
    let jaeger =
        FakeApi::start(Script::new().on("GET", "/api/traces", [Reply::Json(500, json!({ "errors": ["boom"] }))])).await;
    let target = JaegerTarget::from_url(&jaeger.url()).unwrap();
    let err = format!("{:#}", find(&target, &options(None, &[])).await.unwrap_err());
    assert!(err.contains("HTTP 500"), "{err}");
    let bad = TraceOptions { order_id: "42".into(), ..options(None, &[]) };
    let err = find(&target, &bad).await.unwrap_err().to_string();
    assert!(err.contains("ORDER_ID `42` is not a UUID"), "{err}");
}

fn jaeger_pod(name: &str, phase: &str, ready: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": NS, "labels": { "app.kubernetes.io/name": "jaeger" } },
        "spec": { "containers": [{ "name": "jaeger", "ports": [
            { "name": "otlp-grpc", "containerPort": 4317 }, { "name": "ui", "containerPort": 16687 } ] }] },
        "status": { "phase": phase, "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }] }
    })
}

fn jaeger_service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service", "metadata": { "name": "cloudmart-jaeger", "namespace": NS },
        "spec": {
            "selector": { "app.kubernetes.io/instance": "cloudmart", "app.kubernetes.io/name": "jaeger" },
            "ports": [
                { "name": "otlp-grpc", "port": 4317, "targetPort": "otlp-grpc" },
                { "name": "ui", "port": 16686, "targetPort": "ui" }
            ]
        }
    })
}

#[tokio::test]
async fn the_jaeger_pod_is_the_ready_one_the_service_selects_on_its_ui_port() {
    let pods = json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
        jaeger_pod("cloudmart-jaeger-old", "Running", false),
        jaeger_pod("cloudmart-jaeger-5b8c9d7f6-qz4lp", "Running", true),
    ] });
    let api = FakeApi::start(Script::new().on("GET", SERVICE_PATH, [Reply::ok(jaeger_service())]).on(
        "GET",
        PODS_PATH,
        [Reply::ok(pods)],
    ))
    .await;

    let target = find_jaeger(api.client(), &release()).await.unwrap();
    let JaegerTarget::Pod { pod, port, .. } = &target else { panic!("{target:?}") };
    assert_eq!((pod.as_str(), *port), ("cloudmart-jaeger-5b8c9d7f6-qz4lp", 16687), "the named target port");
    assert_eq!(
        target.describe(),
        "Jaeger pod cloudmart-jaeger-5b8c9d7f6-qz4lp (port 16687, through a port-forward) in namespace cloudmart"
    );
    let list = &api.requests_to("GET", PODS_PATH)[0];
    assert!(
        list.query
            .contains("labelSelector=app.kubernetes.io%2Finstance%3Dcloudmart%2Capp.kubernetes.io%2Fname%3Djaeger"),
        "{}",
        list.query
    );
}

#[tokio::test]
async fn no_jaeger_is_a_clear_error() {
    let api = FakeApi::start(Script::new()).await;
    let err = find_jaeger(api.client(), &release()).await.unwrap_err().to_string();
    assert!(err.contains("Service cloudmart-jaeger not found in namespace cloudmart"), "{err}");
    assert!(err.contains("jaeger.enabled") && err.contains("--jaeger-url"), "{err}");

    let pods = json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [jaeger_pod("cloudmart-jaeger-x", "Pending", false)] });
    let api = FakeApi::start(Script::new().on("GET", SERVICE_PATH, [Reply::ok(jaeger_service())]).on(
        "GET",
        PODS_PATH,
        [Reply::ok(pods)],
    ))
    .await;
    let err = find_jaeger(api.client(), &release()).await.unwrap_err().to_string();
    assert!(err.contains("no Running and Ready Jaeger pod for Service cloudmart-jaeger"), "{err}");
    assert!(err.contains("cloudmart-jaeger-x (Pending)"), "{err}");
}
