//! The plugin against a scripted fake Kubernetes API server (one test binary).

mod fake_api;

use std::future::pending;
use std::time::Duration;

use cloudmart_kubectl::job::load_command;
use cloudmart_kubectl::{LoadOptions, LoadOutcome, Release, Scenario, dry_run, load, status};
use cloudmart_load_report::ramp::Ramp;
use fake_api::{FakeApi, Reply, Script};
use k8s_openapi::api::batch::v1::Job;
use serde_json::{Value, json};

const NS: &str = "cloudmart";
const JOB: &str = "cloudmart-load-1700000000";
const POD: &str = "cloudmart-load-1700000000-x7k2p";

fn deployment_path(service: &str) -> String {
    format!("/apis/apps/v1/namespaces/{NS}/deployments/cloudmart-{service}")
}
const HPA_PATH: &str = "/apis/autoscaling/v2/namespaces/cloudmart/horizontalpodautoscalers/cloudmart-timesale";
const JOBS_PATH: &str = "/apis/batch/v1/namespaces/cloudmart/jobs";
const JOB_PATH: &str = "/apis/batch/v1/namespaces/cloudmart/jobs/cloudmart-load-1700000000";
const PODS_PATH: &str = "/api/v1/namespaces/cloudmart/pods";
const LOG_PATH: &str = "/api/v1/namespaces/cloudmart/pods/cloudmart-load-1700000000-x7k2p/log";

const REPORT_LINE: &str = r#"CLOUDMART_LOAD_REPORT {"scenario":"flash-sale","sale_id":"7d1c9a52-0000-4000-8000-000000000001","target_rps":200,"concurrency":64,"duration_secs":30.0,"attempts":24000,"succeeded":1000,"sold_out":22000,"limit_exceeded":900,"shed":50,"errors":50,"achieved_rps":199.8,"latency_ms":{"p50":1.2,"p90":3.4,"p99":9.9,"max":40.1},"total_stock":1000,"remaining_stock":0,"added_later":true}"#;

fn release() -> Release {
    Release::new(NS, "cloudmart")
}

/// Options of a fast test run: sampling every 10 ms.
fn options() -> LoadOptions {
    LoadOptions {
        scenario: Scenario::FlashSale,
        sale_rps: 250,
        ramp: None,
        duration: Duration::from_secs(30),
        concurrency: 32,
        image: "cloudmart/tools:dev".to_owned(),
        poll: Duration::from_millis(10),
        keep: false,
        chart: None,
    }
}

fn deployment(service: &str, ready: i32, desired: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": format!("cloudmart-{service}"), "namespace": NS },
        "spec": {
            "replicas": desired,
            "selector": { "matchLabels": { "app.kubernetes.io/name": service } },
            "template": { "spec": { "containers": [{ "name": service, "image": format!("cloudmart/{service}:dev") }] } }
        },
        "status": { "replicas": desired, "readyReplicas": ready }
    })
}

/// The time-sale HPA with `current` replicas and, when given, the measured CPU utilisation.
fn hpa(current: i32, desired: i32, cpu: Option<i32>) -> Value {
    let mut status = json!({ "currentReplicas": current, "desiredReplicas": desired });
    if let Some(cpu) = cpu {
        status["currentMetrics"] = json!([{
            "type": "Resource",
            "resource": { "name": "cpu", "current": { "averageUtilization": cpu, "averageValue": "150m" } }
        }]);
    }
    json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": { "name": "cloudmart-timesale", "namespace": NS },
        "spec": {
            "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "cloudmart-timesale" },
            "minReplicas": 1, "maxReplicas": 10,
            "metrics": [{ "type": "Resource", "resource": { "name": "cpu", "target": { "type": "Utilization", "averageUtilization": 60 } } }]
        },
        "status": status
    })
}

fn job(status: Value) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": { "name": JOB, "namespace": NS },
        "status": status
    })
}

fn running() -> Reply {
    Reply::ok(job(json!({ "active": 1 })))
}

fn complete() -> Reply {
    Reply::ok(job(json!({
        "succeeded": 1,
        "conditions": [{ "type": "SuccessCriteriaMet", "status": "True" }, { "type": "Complete", "status": "True" }]
    })))
}

fn failed() -> Reply {
    Reply::ok(job(json!({
        "failed": 1,
        "conditions": [{ "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit" }]
    })))
}

fn job_pods() -> Reply {
    Reply::ok(json!({
        "apiVersion": "v1", "kind": "PodList", "metadata": { "resourceVersion": "42" },
        "items": [{ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": POD, "namespace": NS, "labels": { "job-name": JOB } } }]
    }))
}

fn deleted() -> Reply {
    Reply::ok(json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success" }))
}

/// Thirty numbered log lines, optionally followed by the report line.
fn log_lines(with_report: bool) -> Reply {
    let mut logs: String = (1..=30).map(|i| format!("progress line {i}\n")).collect();
    if with_report {
        logs.push_str(REPORT_LINE);
        logs.push('\n');
    }
    Reply::Text(logs)
}

/// A release whose HPA goes 1 -> 3 -> 5 replicas while the Job runs and whose Job ends
/// with `end` on the 4th GET.
fn load_script(end: Reply, logs: Reply) -> Script {
    Script::new()
        .on(
            "GET",
            HPA_PATH,
            [
                Reply::ok(hpa(1, 1, Some(20))), // pre-check
                Reply::ok(hpa(1, 1, Some(35))),
                Reply::ok(hpa(3, 4, Some(142))),
                Reply::ok(hpa(5, 5, Some(120))),
                Reply::ok(hpa(5, 5, Some(70))),
            ],
        )
        .on(
            "GET",
            &deployment_path("timesale"),
            [Reply::ok(deployment("timesale", 1, 1)), Reply::ok(deployment("timesale", 3, 4))],
        )
        .on("POST", JOBS_PATH, [Reply::EchoCreated])
        .on("GET", JOB_PATH, [running(), running(), running(), end])
        .on("GET", PODS_PATH, [job_pods()])
        .on("GET", LOG_PATH, [logs])
        .on("DELETE", JOB_PATH, [deleted()])
}

async fn run_load(api: &FakeApi, opts: &LoadOptions) -> (anyhow::Result<LoadOutcome>, String) {
    let mut out = Vec::new();
    let result = load(api.client(), &release(), opts, JOB, pending(), &mut out).await;
    (result, String::from_utf8(out).unwrap())
}

fn assert_deleted_in_background(api: &FakeApi) {
    let deletes = api.requests_to("DELETE", JOB_PATH);
    assert_eq!(deletes.len(), 1, "the Job is deleted once: {:#?}", api.requests());
    assert_eq!(deletes[0].json()["propagationPolicy"], "Background");
}

#[tokio::test]
async fn load_creates_a_hardened_client_job_follows_the_hpa_and_reports() {
    let api = FakeApi::start(load_script(complete(), log_lines(true))).await;

    let (result, out) = run_load(&api, &options()).await;
    let outcome = result.unwrap_or_else(|e| panic!("load failed: {e:#}\noutput:\n{out}"));

    // The Job as created.
    let posts = api.requests_to("POST", JOBS_PATH);
    assert_eq!(posts.len(), 1);
    let body = posts[0].json();
    assert_eq!(body["metadata"]["name"], JOB);
    let labels = &body["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/name"], "load");
    assert_eq!(labels["app.kubernetes.io/instance"], "cloudmart");
    assert_eq!(labels["app.kubernetes.io/part-of"], "cloudmart");
    assert_eq!(labels["app.kubernetes.io/component"], "load-generator");
    let spec = &body["spec"];
    assert_eq!(spec["backoffLimit"], 0);
    assert_eq!(spec["ttlSecondsAfterFinished"], 600);
    assert_eq!(spec["activeDeadlineSeconds"], 30 + 120);
    let template = &spec["template"];
    assert_eq!(
        template["metadata"]["labels"]["cloudmart.io/client"], "true",
        "the NetworkPolicy admits only client pods"
    );
    assert_eq!(template["metadata"]["labels"]["app.kubernetes.io/component"], "load-generator");
    let pod = &template["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["enableServiceLinks"], false);
    assert_eq!(
        pod["securityContext"],
        json!({ "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "seccompProfile": { "type": "RuntimeDefault" } })
    );
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["image"], "cloudmart/tools:dev");
    assert_eq!(
        c["command"],
        json!([
            "cloudmart-load",
            "--scenario",
            "flash-sale",
            "--timesale-endpoint",
            "http://cloudmart-timesale:50053",
            "--sale-rps",
            "250",
            "--duration",
            "30s",
            "--concurrency",
            "32"
        ])
    );
    assert_eq!(
        c["securityContext"],
        json!({
            "runAsNonRoot": true, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] }
        })
    );
    assert_eq!(c["resources"]["requests"], json!({ "cpu": "250m", "memory": "64Mi" }));
    assert_eq!(c["resources"]["limits"], json!({ "cpu": "1", "memory": "256Mi" }));

    // Followed until Complete, on the 4th GET; then the pod found by label and its log read.
    assert_eq!(api.requests_to("GET", JOB_PATH).len(), 4);
    let lists = api.requests_to("GET", PODS_PATH);
    assert_eq!(lists.len(), 1);
    assert!(lists[0].query.contains("labelSelector=job-name%3Dcloudmart-load-1700000000"), "{}", lists[0].query);
    assert!(api.requests_to("GET", LOG_PATH)[0].query.contains("container=load"));

    // The report: the load generator's figures and the autoscaler's.
    let LoadOutcome::Finished(summary) = outcome else { panic!("not finished: {out}") };
    assert_eq!(summary.job, JOB);
    assert_eq!((summary.report.attempts, summary.report.succeeded, summary.report.sold_out), (24000, 1000, 22000));
    assert_eq!(summary.scaling.replicas_at_start, 1);
    assert_eq!(summary.scaling.max_replicas, 5);
    assert!(summary.scaling.first_scale_up.is_some(), "the HPA scaled up from 1 to 3");
    assert_eq!(summary.scaling.samples, 4);
    for expected in [
        "timesale replicas 3 (desired 4)",
        "cpu 142%/60%",
        "achieved          199.8 purchases/s over 24000 attempts",
        "succeeded 1000  sold_out 22000  limit_exceeded 900  shed 50  errors 50",
        "p50 1.2  p90 3.4  p99 9.9  max 40.1",
        "1000 total, 0 remaining, 1000 sold",
        "replicas at start 1",
        "max replicas      5",
        "first scale-up    after",
        "deleted Job cloudmart-load-1700000000",
    ] {
        assert!(out.contains(expected), "output lacks {expected:?}:\n{out}");
    }

    assert_deleted_in_background(&api);
}

#[tokio::test]
async fn keep_leaves_the_finished_job() {
    let api = FakeApi::start(load_script(complete(), log_lines(true))).await;
    let (result, out) = run_load(&api, &LoadOptions { keep: true, ..options() }).await;
    assert!(matches!(result, Ok(LoadOutcome::Finished(_))), "{out}");
    assert!(api.requests_to("DELETE", JOB_PATH).is_empty());
    assert!(out.contains("kept Job cloudmart-load-1700000000"), "{out}");
}

#[tokio::test]
async fn chart_draws_the_series_and_the_replicas() {
    if cloudmart_load_report::chart::font().is_err() {
        eprintln!("SKIP: no TrueType font on this machine (fonts-dejavu-core)");
        return;
    }
    let series: Vec<Value> = (0..5)
        .map(|t| {
            json!({ "t": t, "secs": 1.0, "target_rps": 250.0, "sent": 250,
                    "outcomes": { "purchase": { "succeeded": 200, "sold_out": 50 } },
                    "latency_ms": { "purchase": { "p50": 1.5, "p99": 7.0 } } })
        })
        .collect();
    let line =
        format!("CLOUDMART_LOAD_REPORT {}", json!({ "scenario": "flash-sale", "attempts": 1250, "series": series }));
    let api = FakeApi::start(load_script(complete(), Reply::Text(format!("starting\n{line}\n")))).await;
    let path = std::env::temp_dir().join(format!("kubectl-cloudmart-plugin-{}", std::process::id())).join("load.png");

    let (result, out) = run_load(&api, &LoadOptions { chart: Some(path.clone()), ..options() }).await;
    assert!(matches!(result, Ok(LoadOutcome::Finished(_))), "{out}");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("no chart at {}: {e}\n{out}", path.display()));
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert!(out.contains(&format!("chart written to {}", path.display())), "{out}");
    assert_deleted_in_background(&api);
}

#[tokio::test]
async fn failed_job_is_an_error_naming_it_with_the_log_tail() {
    let api = FakeApi::start(load_script(failed(), log_lines(false))).await;

    let (result, out) = run_load(&api, &options()).await;
    let err = format!("{:#}", result.expect_err("a failed Job fails the run"));
    assert!(err.contains("load Job cloudmart-load-1700000000 in namespace cloudmart failed"), "{err}");
    assert!(err.contains("BackoffLimitExceeded"), "{err}");
    assert!(out.contains("last 20 log lines of pod cloudmart-load-1700000000-x7k2p"), "{out}");
    assert!(out.contains("| progress line 11\n") && out.contains("| progress line 30\n"), "{out}");
    assert!(!out.contains("| progress line 10\n"), "only the last 20 lines: {out}");
    assert_deleted_in_background(&api);
}

#[tokio::test]
async fn completed_job_without_report_line_is_an_error() {
    let api = FakeApi::start(load_script(complete(), log_lines(false))).await;

    let (result, out) = run_load(&api, &options()).await;
    let err = format!("{:#}", result.expect_err("no report line fails the run"));
    assert!(err.contains("Job cloudmart-load-1700000000"), "{err}");
    assert!(err.contains("CLOUDMART_LOAD_REPORT"), "{err}");
    assert!(out.contains("| progress line 30\n"), "{out}");
    assert!(!out.contains("load report"), "{out}");
    assert_deleted_in_background(&api);
}

#[tokio::test]
async fn missing_hpa_is_a_clear_error_and_creates_no_job() {
    let api = FakeApi::start(Script::new().on("POST", JOBS_PATH, [Reply::EchoCreated])).await;

    let (result, _) = run_load(&api, &options()).await;
    let err = format!("{:#}", result.expect_err("no HPA, no load test"));
    assert!(err.contains("HorizontalPodAutoscaler cloudmart-timesale not found in namespace cloudmart"), "{err}");
    assert!(err.contains("make deploy"), "{err}");
    assert!(api.requests_to("POST", JOBS_PATH).is_empty(), "{:#?}", api.requests());
}

#[tokio::test]
async fn interrupt_deletes_the_job_even_with_keep() {
    let script = load_script(running(), log_lines(true));
    let api = FakeApi::start(script).await;

    let mut out = Vec::new();
    let opts = LoadOptions { keep: true, ..options() };
    let interrupt = api.answered("GET", JOB_PATH, 2);
    let outcome = load(api.client(), &release(), &opts, JOB, interrupt, &mut out).await.unwrap();
    assert!(matches!(outcome, LoadOutcome::Interrupted { ref job } if job == JOB), "{outcome:?}");
    assert_deleted_in_background(&api);
    assert!(api.requests_to("GET", LOG_PATH).is_empty());
}

#[tokio::test]
async fn status_prints_replicas_and_unknown_cpu_without_metrics() {
    let api = FakeApi::start(
        Script::new()
            .on("GET", &deployment_path("order"), [Reply::ok(deployment("order", 2, 2))])
            .on("GET", &deployment_path("delivery"), [Reply::ok(deployment("delivery", 1, 1))])
            .on("GET", &deployment_path("timesale"), [Reply::ok(deployment("timesale", 2, 3))])
            .on("GET", HPA_PATH, [Reply::ok(hpa(3, 3, None))]),
    )
    .await;

    let mut out = Vec::new();
    status(api.client(), &release(), &mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    let line = |prefix: &str| {
        out.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no line {prefix}:\n{out}")).to_owned()
    };
    let words = |l: String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(words(line("cloudmart-order ")), ["cloudmart-order", "2/2", "cloudmart/order:dev"]);
    assert_eq!(words(line("cloudmart-delivery ")), ["cloudmart-delivery", "1/1", "cloudmart/delivery:dev"]);
    assert_eq!(words(line("cloudmart-timesale ")), ["cloudmart-timesale", "2/3", "cloudmart/timesale:dev"]);
    let hpa_line = out.lines().filter(|l| l.starts_with("cloudmart-timesale ")).nth(1).expect("HPA row");
    assert_eq!(words(hpa_line.to_owned()), ["cloudmart-timesale", "3", "3", "1/10", "<unknown>/60%"]);
    assert!(out.contains("metrics-server"), "{out}");
}

#[tokio::test]
async fn status_shows_cpu_and_names_a_missing_deployment() {
    let api = FakeApi::start(
        Script::new()
            .on("GET", &deployment_path("delivery"), [Reply::ok(deployment("delivery", 1, 1))])
            .on("GET", &deployment_path("timesale"), [Reply::ok(deployment("timesale", 1, 1))])
            .on("GET", HPA_PATH, [Reply::ok(hpa(1, 1, Some(42)))]),
    )
    .await;

    let mut out = Vec::new();
    let err = format!("{:#}", status(api.client(), &release(), &mut out).await.expect_err("order is missing"));
    let out = String::from_utf8(out).unwrap();
    assert!(err.contains("Deployment cloudmart-order not found in namespace cloudmart"), "{err}");
    assert!(err.contains("make deploy"), "{err}");
    assert!(
        out.contains("cloudmart-order     not found")
            || out.lines().any(|l| l.starts_with("cloudmart-order") && l.ends_with("not found")),
        "{out}"
    );
    assert!(out.contains("42%/60%"), "{out}");
    assert!(!out.contains("metrics-server"), "{out}");
}

#[test]
fn dry_run_prints_the_job_manifest() {
    let mut out = Vec::new();
    dry_run(&Release::new("shop", "cm"), &options(), "cm-load-1700000000", &mut out).unwrap();
    let yaml = String::from_utf8(out).unwrap();
    assert!(yaml.starts_with("apiVersion: batch/v1\n"), "{yaml}");
    assert!(yaml.contains("kind: Job\n"), "{yaml}");

    let job: Job = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(job.metadata.name.as_deref(), Some("cm-load-1700000000"));
    assert_eq!(job.metadata.namespace.as_deref(), Some("shop"));
    let template = &job.spec.as_ref().unwrap().template;
    let labels = template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
    assert_eq!(labels.get("cloudmart.io/client").map(String::as_str), Some("true"));
    assert_eq!(labels.get("app.kubernetes.io/instance").map(String::as_str), Some("cm"));
    let container = &template.spec.as_ref().unwrap().containers[0];
    let command = container.command.as_ref().unwrap();
    assert_eq!(
        command[..5],
        ["cloudmart-load", "--scenario", "flash-sale", "--timesale-endpoint", "http://cm-timesale:50053"]
    );
}

#[test]
fn the_orders_scenario_and_a_ramp_reach_the_load_generator() {
    let opts = LoadOptions { scenario: Scenario::Orders, ramp: Some(Ramp(vec![50, 100, 200])), ..options() };
    let command = load_command(&Release::new("shop", "cm"), &opts);
    assert_eq!(
        command,
        [
            "cloudmart-load",
            "--scenario",
            "orders",
            "--timesale-endpoint",
            "http://cm-timesale:50053",
            "--order-endpoint",
            "http://cm-order:50051",
            "--fault-share",
            "0",
            "--ramp",
            "50,100,200",
            "--duration",
            "30s",
            "--concurrency",
            "32",
        ]
    );
}
