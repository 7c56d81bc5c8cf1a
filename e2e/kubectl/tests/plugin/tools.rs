//! `kubectl cloudmart audit` and `dlq`: `cloudmart-audit` as a Job.

use std::future::pending;
use std::time::Duration;

use cloudmart_kubectl::cli::DlqCommand;
use cloudmart_kubectl::tools::{ToolOptions, ToolOutcome, audit_job, dlq_job, run_tool};
use serde_json::json;

use crate::fake_api::{FakeApi, Reply, Script};
use crate::{
    JOBS_PATH, PODS_PATH, complete, deleted, deployment, deployment_path, failed, job_path, job_pods, log_path,
    release, running,
};

const AUDIT_JOB: &str = "cloudmart-audit-1700000000";
const AUDIT_POD: &str = "cloudmart-audit-1700000000-h2d9s";
const DLQ_JOB: &str = "cloudmart-dlq-1700000000";
const DLQ_POD: &str = "cloudmart-dlq-1700000000-p8k4m";

fn options() -> ToolOptions {
    ToolOptions {
        image: "cloudmart/tools:dev".into(),
        timeout: Duration::from_secs(300),
        poll: Duration::from_millis(10),
        keep: false,
    }
}

fn services() -> Script {
    Script::new()
        .on("GET", &deployment_path("order"), [Reply::ok(deployment("order", 1, 1))])
        .on("GET", &deployment_path("delivery"), [Reply::ok(deployment("delivery", 1, 1))])
        .on("GET", &deployment_path("timesale"), [Reply::ok(deployment("timesale", 1, 1))])
}

#[tokio::test]
async fn audit_runs_with_the_services_database_secrets_and_passes_its_exit_status_on() {
    let log = "orders: 12 checked\ndeliveries: 12 checked\nsales: 1 checked\n\
               VIOLATION: order 0b6f2f1e-54a0-4d2b-9d7c-3a1c0e1f9a01 still PENDING after 60s\naudit: 1 violation(s)\n";
    let api = FakeApi::start(
        services()
            .on("POST", JOBS_PATH, [Reply::EchoCreated])
            .on("GET", &job_path(AUDIT_JOB), [running(AUDIT_JOB), failed(AUDIT_JOB)])
            .on("GET", PODS_PATH, [job_pods(AUDIT_JOB, AUDIT_POD, "audit", Some(1))])
            .on("GET", &log_path(AUDIT_POD), [Reply::Text(log.into())])
            .on("DELETE", &job_path(AUDIT_JOB), [deleted()]),
    )
    .await;

    let tool = audit_job(api.client(), &release(), 60, &options()).await.unwrap();
    let mut out = Vec::new();
    let outcome = run_tool(api.client(), &release(), &tool, &options(), AUDIT_JOB, pending(), &mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(outcome, ToolOutcome::Finished { job: AUDIT_JOB.into(), exit_code: 1 }, "{out}");
    assert!(
        out.contains("created Job cloudmart-audit-1700000000 in namespace cloudmart: cloudmart-audit --settle-secs 60"),
        "{out}"
    );
    assert!(
        out.contains(
            "\nVIOLATION: order 0b6f2f1e-54a0-4d2b-9d7c-3a1c0e1f9a01 still PENDING after 60s\naudit: 1 violation(s)\n"
        ),
        "{out}"
    );
    assert!(out.ends_with("deleted Job cloudmart-audit-1700000000\n"), "{out}");

    let body = api.requests_to("POST", JOBS_PATH)[0].json();
    assert_eq!(body["metadata"]["labels"]["app.kubernetes.io/name"], "audit");
    let pod = &body["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["cloudmart.io/client"], "true", "the databases admit client pods");
    assert!(pod["metadata"]["labels"].get("cloudmart.io/kafka-client").is_none(), "the audit needs no broker");
    let container = &pod["spec"]["containers"][0];
    assert_eq!((container["name"].as_str(), container["image"].as_str()), (Some("audit"), Some("cloudmart/tools:dev")));
    assert_eq!(container["command"], json!(["cloudmart-audit", "--settle-secs", "60"]));
    assert_eq!(
        container["env"],
        json!([
            { "name": "AUDIT_ORDER_DB", "valueFrom": { "secretKeyRef": { "name": "cloudmart-order-db", "key": "url" } } },
            { "name": "AUDIT_DELIVERY_DB", "valueFrom": { "secretKeyRef": { "name": "cloudmart-delivery-db", "key": "url" } } },
            { "name": "AUDIT_TIMESALE_DB", "valueFrom": { "secretKeyRef": { "name": "cloudmart-timesale-db", "key": "url" } } }
        ])
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["volumeMounts"], json!([{ "name": "tmp", "mountPath": "/tmp" }]));
    assert_eq!(body["spec"]["activeDeadlineSeconds"], 300);
    assert_eq!(api.requests_to("DELETE", &job_path(AUDIT_JOB))[0].json()["propagationPolicy"], "Background");
}

#[tokio::test]
async fn dlq_list_reads_the_broker_from_the_order_config_map() {
    let log = "order-events.dlq 0:3 origin order-events/1/42 ce_id=e-1 ce_type=cloudmart.events.v1.OrderPlaced\n\
               order-events.dlq: 1 record(s)\n";
    let api = FakeApi::start(
        services()
            .on("POST", JOBS_PATH, [Reply::EchoCreated])
            .on("GET", &job_path(DLQ_JOB), [running(DLQ_JOB), complete(DLQ_JOB)])
            .on("GET", PODS_PATH, [job_pods(DLQ_JOB, DLQ_POD, "dlq", Some(0))])
            .on("GET", &log_path(DLQ_POD), [Reply::Text(log.into())])
            .on("DELETE", &job_path(DLQ_JOB), [deleted()]),
    )
    .await;

    let command = DlqCommand::List { topic: vec!["order-events".into()] };
    let tool = dlq_job(api.client(), &release(), &command, &options()).await.unwrap();
    let mut out = Vec::new();
    let outcome = run_tool(api.client(), &release(), &tool, &options(), DLQ_JOB, pending(), &mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(outcome, ToolOutcome::Finished { job: DLQ_JOB.into(), exit_code: 0 }, "{out}");
    assert!(out.contains("order-events.dlq: 1 record(s)\n"), "{out}");
    let template = &api.requests_to("POST", JOBS_PATH)[0].json()["spec"]["template"];
    let labels = &template["metadata"]["labels"];
    assert_eq!(
        (labels["cloudmart.io/client"].as_str(), labels["cloudmart.io/kafka-client"].as_str()),
        (Some("true"), Some("true"))
    );
    let container = &template["spec"]["containers"][0];
    assert_eq!(container["command"], json!(["cloudmart-audit", "dlq", "list", "--topic", "order-events"]));
    assert_eq!(
        container["env"],
        json!([
            { "name": "KAFKA_BROKERS", "valueFrom": { "configMapKeyRef": { "name": "cloudmart-order-config", "key": "KAFKA_BROKERS" } } },
            { "name": "KAFKA_TOPIC_PREFIX", "valueFrom": { "configMapKeyRef": { "name": "cloudmart-order-config", "key": "KAFKA_TOPIC_PREFIX", "optional": true } } }
        ])
    );
}

#[tokio::test]
async fn a_tool_job_that_never_ran_its_tool_is_an_error_and_an_interrupt_deletes_it() {
    let api = FakeApi::start(
        services()
            .on("POST", JOBS_PATH, [Reply::EchoCreated])
            .on("GET", &job_path(AUDIT_JOB), [failed(AUDIT_JOB)])
            .on("GET", PODS_PATH, [job_pods(AUDIT_JOB, AUDIT_POD, "audit", None)])
            .on("GET", &log_path(AUDIT_POD), [Reply::Text(String::new())])
            .on("DELETE", &job_path(AUDIT_JOB), [deleted()]),
    )
    .await;
    let tool = audit_job(api.client(), &release(), 60, &options()).await.unwrap();
    let err =
        run_tool(api.client(), &release(), &tool, &options(), AUDIT_JOB, pending(), &mut Vec::new()).await.unwrap_err();
    assert!(
        format!("{err:#}")
            .contains("Job cloudmart-audit-1700000000 failed before its tool ended (BackoffLimitExceeded"),
        "{err:#}"
    );
    assert_eq!(api.requests_to("DELETE", &job_path(AUDIT_JOB)).len(), 1);

    let api = FakeApi::start(
        services()
            .on("POST", JOBS_PATH, [Reply::EchoCreated])
            .on("GET", &job_path(AUDIT_JOB), [running(AUDIT_JOB)])
            .on("DELETE", &job_path(AUDIT_JOB), [deleted()]),
    )
    .await;
    let path = job_path(AUDIT_JOB);
    let interrupt = api.answered("GET", &path, 2);
    let mut out = Vec::new();
    let outcome = run_tool(api.client(), &release(), &tool, &options(), AUDIT_JOB, interrupt, &mut out).await.unwrap();
    assert_eq!(outcome, ToolOutcome::Interrupted { job: AUDIT_JOB.into() });
    let deletes = api.requests_to("DELETE", &job_path(AUDIT_JOB));
    assert_eq!(deletes[0].json()["propagationPolicy"], "Foreground");
    assert!(String::from_utf8(out).unwrap().contains("deleted Job cloudmart-audit-1700000000 and its pod"));
}
