//! `make dev` as a user runs it: `cloudmart-dev` on its embedded defaults (SQLite,
//! in-process broker), checked with health, reflection and the smoke client — the same
//! client the chart's `helm test` hook runs — and the load generator `make load` runs in
//! the cluster.

use std::{collections::HashMap, process::Command, time::Duration};

use tokio_stream::StreamExt;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::harness::{Proc, bin, free_port, wait_serving};

async fn reflected_services(addr: &str) -> Vec<String> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client.server_reflection_info(tokio_stream::once(req)).await.unwrap().into_inner();
    let resp = stream.next().await.unwrap().unwrap();
    match resp.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => l.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_dev_serves_and_the_smoke_client_sees_both_sagas() {
    let data = std::env::temp_dir().join(format!("cloudmart-dev-{}", uuid::Uuid::new_v4().simple()));
    let order_addr = format!("127.0.0.1:{}", free_port());
    let delivery_addr = format!("127.0.0.1:{}", free_port());
    let timesale_addr = format!("127.0.0.1:{}", free_port());
    let mut dev = Proc::spawn(
        "cloudmart-dev",
        "dev",
        &HashMap::new(),
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--order-addr",
            &order_addr,
            "--delivery-addr",
            &delivery_addr,
            "--timesale-addr",
            &timesale_addr,
            "--metrics-port-base",
            "0",
        ],
    );
    wait_serving(&order_addr, "cloudmart.order.v1.OrderService", &mut dev).await;
    wait_serving(&delivery_addr, "cloudmart.delivery.v1.DeliveryService", &mut dev).await;
    let services = reflected_services(&order_addr).await;
    assert!(services.contains(&"cloudmart.order.v1.OrderService".to_owned()), "{services:?}");
    assert!(services.contains(&"grpc.health.v1.Health".to_owned()), "{services:?}");
    let services = reflected_services(&delivery_addr).await;
    assert!(services.contains(&"cloudmart.delivery.v1.DeliveryService".to_owned()), "{services:?}");
    wait_serving(&timesale_addr, "cloudmart.timesale.v1.TimeSaleService", &mut dev).await;
    let services = reflected_services(&timesale_addr).await;
    assert!(services.contains(&"cloudmart.timesale.v1.TimeSaleService".to_owned()), "{services:?}");

    let endpoint = format!("http://{order_addr}");
    let smoke = move |args: &[&str]| {
        let mut all: Vec<&str> = vec!["--order-endpoint", endpoint.as_str(), "--timeout-secs", "90"];
        all.extend_from_slice(args);
        let out = Command::new(bin("cloudmart-smoke")).args(&all).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = tokio::task::spawn_blocking({
        let smoke = smoke.clone();
        move || smoke(&["--expect", "confirmed"])
    })
    .await
    .unwrap();
    assert!(ok, "smoke (confirmed) failed: {out}\ndev log:\n{}", dev.log_text());
    assert!(out.contains("CONFIRMED"));
    let (ok, out) =
        tokio::task::spawn_blocking(move || smoke(&["--postal-code", "99999", "--expect", "cancelled"])).await.unwrap();
    assert!(ok, "smoke (fault-injected) failed: {out}");
    assert!(out.contains("CANCELLED (DELIVERY_FAILED)"), "{out}");

    // The load generator against the time-sale service: 200 purchases/s for 3 s on a sale
    // of 100 sells out exactly, every call gets one classified answer, and the report line
    // (what `kubectl cloudmart load` reads from the pod log) parses.
    let timesale_endpoint = format!("http://{timesale_addr}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin("cloudmart-load"))
            .args(["--timesale-endpoint", &timesale_endpoint, "--sale-rps", "200", "--duration", "3s"])
            .args(["--stock", "100", "--concurrency", "32", "--progress-every", "1s"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "cloudmart-load failed:\n{stderr}");
    let report = cloudmart_e2e::load::LoadReport::from_log(&stdout).unwrap_or_else(|| panic!("no report in {stdout}"));
    let answered = report.succeeded
        + report.sold_out
        + report.limit_exceeded
        + report.not_active
        + report.shed
        + report.timeouts
        + report.errors;
    assert_eq!(answered, report.attempts, "{report:?}");
    assert!(report.attempts + report.not_sent >= 500, "3 s at 200/s: {report:?}");
    assert_eq!((report.errors, report.not_active, report.limit_exceeded), (0, 0, 0), "{report:?}");
    assert!(report.sold_out > 0, "a sale of 100 sells out under 600 attempts: {report:?}");
    assert_eq!(report.succeeded, 100, "exactly the stock is sold: {report:?}");
    assert_eq!((report.total_stock, report.remaining_stock), (100, 0));
    assert!(stderr.contains("sold out") && stderr.contains("latency ms"), "the table is printed:\n{stderr}");

    // Ctrl-C, as a user stops `make dev`: exit 0 and not one error line — the services
    // stop before the in-process broker their Kafka clients talk to (librdkafka would
    // log `Connection refused` errors if the broker went first).
    let log = dev.log.clone();
    let status = dev.interrupt(Duration::from_secs(40));
    assert!(status.success(), "cloudmart-dev exits 0 on Ctrl-C (SIGINT)");
    let text = std::fs::read_to_string(&log).unwrap();
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.contains("\"level\":\"ERROR\"") || l.contains("Connection refused") || l.contains("librdkafka: FAIL")
        })
        .collect();
    assert!(errors.is_empty(), "error lines after Ctrl-C:\n{}", errors.join("\n"));
    assert!(text.contains("stopping"), "it says it is stopping:\n{text}");
    assert!(data.join("order.db").exists() && data.join("delivery.db").exists());
    let _ = std::fs::remove_dir_all(data);
}
