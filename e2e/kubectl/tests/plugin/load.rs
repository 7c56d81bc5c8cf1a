//! `kubectl cloudmart load`.

use std::future::pending;
use std::time::Duration;

use cloudmart_kubectl::job::load_command;
use cloudmart_kubectl::{LoadOptions, LoadOutcome, LoadSummary, Release, Scenario, dry_run, load};
use cloudmart_load_report::ramp::Ramp;
use k8s_openapi::api::batch::v1::Job;
use serde_json::{Value, json};

use crate::fake_api::{FakeApi, Reply, Script};
use crate::{
    HPA_PATH, JOBS_PATH, NS, PODS_PATH, complete, deleted, deployment, deployment_path, failed, hpa, hpa_at, job,
    job_path, job_pods, log_path, release, running,
};

const JOB: &str = "cloudmart-load-1700000000";
const POD: &str = "cloudmart-load-1700000000-x7k2p";

const REPORT_LINE: &str = r#"CLOUDMART_LOAD_REPORT {"scenario":"flash-sale","sale_id":"7d1c9a52-0000-4000-8000-000000000001","target_rps":200,"concurrency":64,"duration_secs":30.0,"attempts":24000,"succeeded":1000,"sold_out":22000,"limit_exceeded":900,"shed":50,"errors":50,"achieved_rps":199.8,"latency_ms":{"p50":1.2,"p90":3.4,"p99":9.9,"max":40.1},"total_stock":1000,"remaining_stock":0,"added_later":true}"#;

/// Options of a fast test run: sampling every 10 ms.
fn options() -> LoadOptions {
    LoadOptions {
        scenario: Scenario::FlashSale,
        sale_rps: 250,
        ramp: None,
        duration: Duration::from_secs(30),
        concurrency: 32,
        stock: None,
        image: "cloudmart/tools:dev".to_owned(),
        timesale_port: 50053,
        order_port: 50051,
        poll: Duration::from_millis(10),
        keep: false,
        chart: None,
        report: None,
        expect_scale: false,
        expect_scale_down: None,
    }
}

/// Thirty numbered log lines with the load generator's progress lines, optionally followed
/// by the report line.
fn log_lines(with_report: bool) -> Reply {
    let mut logs: String = (1..=30).map(|i| format!("progress line {i}\n")).collect();
    logs.push_str("t=  25s  5000 sent  199/s (target 250/s)  purchase p50 1.2ms p99 8.5ms  purchase: succeeded 990\n");
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
            [
                Reply::ok(deployment("timesale", 1, 1)),
                Reply::ok(deployment("timesale", 1, 1)),
                Reply::ok(deployment("timesale", 3, 4)),
            ],
        )
        .on("GET", &deployment_path("order"), [Reply::ok(deployment("order", 1, 1))])
        .on("GET", &deployment_path("delivery"), [Reply::ok(deployment("delivery", 1, 1))])
        .on("POST", JOBS_PATH, [Reply::EchoCreated])
        .on("GET", &job_path(JOB), [running(JOB), running(JOB), running(JOB), end])
        .on("GET", PODS_PATH, [job_pods(JOB, POD, "load", None)])
        .on("GET", &log_path(POD), [logs])
        .on("DELETE", &job_path(JOB), [deleted()])
}

async fn run_load(api: &FakeApi, opts: &LoadOptions) -> (anyhow::Result<LoadOutcome>, String) {
    let mut out = Vec::new();
    let result = load(api.client(), &release(), opts, JOB, pending(), &mut out).await;
    (result, String::from_utf8(out).unwrap())
}

fn finished(result: anyhow::Result<LoadOutcome>, out: &str) -> Box<LoadSummary> {
    match result {
        Ok(LoadOutcome::Finished(summary)) => summary,
        Ok(other) => panic!("not finished: {other:?}\n{out}"),
        Err(e) => panic!("load failed: {e:#}\noutput:\n{out}"),
    }
}

fn assert_deleted_in_background(api: &FakeApi) {
    let deletes = api.requests_to("DELETE", &job_path(JOB));
    assert_eq!(deletes.len(), 1, "the Job is deleted once: {:#?}", api.requests());
    assert_eq!(deletes[0].json()["propagationPolicy"], "Background");
}

#[tokio::test]
async fn load_creates_a_hardened_client_job_follows_the_release_and_reports() {
    let api = FakeApi::start(load_script(complete(JOB), log_lines(true))).await;

    let (result, out) = run_load(&api, &options()).await;
    let summary = finished(result, &out);

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
    assert_eq!(pod["terminationGracePeriodSeconds"], 5, "an interrupted run waits for the pod");
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

    // Followed until Complete, on the 4th GET: every tick read the HPA and all three
    // Deployments; then the pod found by label and its log read.
    assert_eq!(api.requests_to("GET", &job_path(JOB)).len(), 4);
    assert_eq!(api.requests_to("GET", HPA_PATH).len(), 5, "the pre-check and four ticks");
    for service in ["order", "delivery", "timesale"] {
        assert_eq!(
            api.requests_to("GET", &deployment_path(service)).len(),
            5,
            "{service}: the baseline and four ticks"
        );
    }
    let lists = api.requests_to("GET", PODS_PATH);
    assert!(lists[0].query.contains("labelSelector=job-name%3Dcloudmart-load-1700000000"), "{}", lists[0].query);
    let logs = api.requests_to("GET", &log_path(POD));
    assert!(logs.iter().all(|l| l.query.contains("container=load")));
    assert!(logs.iter().any(|l| l.query.contains("tailLines=20")), "the live progress line");
    assert!(logs.iter().any(|l| l.query.contains("tailLines=1000")), "the report");

    // The live table: rate and p99 from the progress line, every service, the HPA.
    let header = crate::words_of_line(&out, "  TIME");
    assert_eq!(header, ["TIME", "RATE/S", "P99", "ORDER", "DELIVERY", "TIMESALE", "HPA", "CUR/DESIRED", "CPU/TARGET"]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.trim_start().starts_with(char::is_numeric))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 4, "one row per tick:\n{out}");
    assert_eq!(rows[1][1..], ["199", "8.5ms", "1/1", "1/1", "3/4", "3/4", "142%/60%"], "{out}");

    // The report: the load generator's figures and the autoscaler's.
    assert_eq!(summary.job, JOB);
    assert_eq!((summary.report.attempts, summary.report.succeeded, summary.report.sold_out), (24000, 1000, 22000));
    assert_eq!(summary.scaling.replicas_at_start, 1);
    assert_eq!(summary.scaling.peak_replicas, 5);
    assert!(summary.scaling.first_scale_up_secs.is_some(), "the HPA scaled up from 1 to 3");
    assert_eq!(summary.scaling.load_samples(), 4);
    assert_eq!(summary.scaling.timeline[0].phase, cloudmart_kubectl::timeline::Phase::Before);
    assert_eq!(summary.scaling.timeline[2].replicas["timesale"].desired, 4);
    assert_eq!((summary.verdicts.len(), summary.exit_code()), (0, 0));
    for expected in [
        "achieved          199.8 purchases/s over 24000 attempts",
        "succeeded 1000  sold_out 22000  limit_exceeded 900  shed 50  errors 50",
        "p50 1.2  p90 3.4  p99 9.9  max 40.1",
        "1000 total, 0 remaining, 1000 sold",
        "autoscaling (HPA cloudmart-timesale, min 1, max 10)",
        "replicas at start 1",
        "max replicas      5",
        "first scale-up    after",
        "deployments       order 1 -> 1 (max 1), delivery 1 -> 1 (max 1), timesale 1 -> 4 (max 4)",
        "deleted Job cloudmart-load-1700000000",
    ] {
        assert!(out.contains(expected), "output lacks {expected:?}:\n{out}");
    }
    assert!(!out.contains("verdict:"), "no verdict unless asked: {out}");

    assert_deleted_in_background(&api);
}

#[tokio::test]
async fn keep_leaves_the_finished_job() {
    let api = FakeApi::start(load_script(complete(JOB), log_lines(true))).await;
    let (result, out) = run_load(&api, &LoadOptions { keep: true, ..options() }).await;
    finished(result, &out);
    assert!(api.requests_to("DELETE", &job_path(JOB)).is_empty());
    assert!(out.contains("kept Job cloudmart-load-1700000000"), "{out}");
}

#[tokio::test]
async fn chart_and_report_carry_the_series_and_every_services_replicas() {
    let series: Vec<Value> = (0..5)
        .map(|t| {
            json!({ "t": t, "secs": 1.0, "target_rps": 250.0, "sent": 250,
                    "outcomes": { "purchase": { "succeeded": 200, "sold_out": 50 } },
                    "latency_ms": { "purchase": { "p50": 1.5, "p99": 7.0 } } })
        })
        .collect();
    let line =
        format!("CLOUDMART_LOAD_REPORT {}", json!({ "scenario": "flash-sale", "attempts": 1250, "series": series }));
    let logs = Reply::Text(format!(
        "starting\nt=   2s  500 sent  250/s (target 250/s)  purchase p50 1.5ms p99 7.0ms\n{line}\n"
    ));
    let api = FakeApi::start(load_script(complete(JOB), logs)).await;
    let dir = std::env::temp_dir().join(format!("kubectl-cloudmart-plugin-{}", std::process::id()));
    let chart = cloudmart_load_report::chart::font().is_ok().then(|| dir.join("load.png"));
    let report = dir.join("out").join("load.json");

    let (result, out) =
        run_load(&api, &LoadOptions { chart: chart.clone(), report: Some(report.clone()), ..options() }).await;
    finished(result, &out);
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("{e}\n{out}")))
        .expect("the report is JSON");
    if let Some(chart) = &chart {
        let bytes = std::fs::read(chart).unwrap_or_else(|e| panic!("no chart at {}: {e}\n{out}", chart.display()));
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert!(out.contains(&format!("chart written to {}", chart.display())), "{out}");
    } else {
        eprintln!("SKIP the PNG: no TrueType font on this machine (fonts-dejavu-core)");
    }
    std::fs::remove_dir_all(&dir).ok();

    assert!(out.contains(&format!("report written to {}", report.display())), "{out}");
    assert_eq!(
        (json["job"].as_str(), json["namespace"].as_str(), json["release"].as_str()),
        (Some(JOB), Some(NS), Some("cloudmart"))
    );
    assert_eq!(json["load"]["series"].as_array().map(Vec::len), Some(5), "the per-second series: rate, p99");
    let timeline = json["autoscaling"]["timeline"].as_array().expect("a timeline");
    assert_eq!(timeline.len(), 5, "the baseline and four ticks");
    let tick = &timeline[2];
    assert_eq!(
        (tick["phase"].as_str(), tick["rate"].as_f64(), tick["p99_ms"].as_f64()),
        (Some("load"), Some(250.0), Some(7.0))
    );
    assert_eq!(tick["replicas"]["timesale"], json!({ "ready": 3, "desired": 4 }));
    assert_eq!(tick["replicas"]["order"], json!({ "ready": 1, "desired": 1 }));
    assert_eq!((tick["hpa_current"].as_i64(), tick["hpa_desired"].as_i64()), (Some(3), Some(4)));
    assert_eq!(json["verdicts"], json!([]));
    assert_deleted_in_background(&api);
}

#[tokio::test]
async fn failed_job_is_an_error_naming_it_with_the_log_tail() {
    let api = FakeApi::start(load_script(failed(JOB), log_lines(false))).await;

    let (result, out) = run_load(&api, &options()).await;
    let err = format!("{:#}", result.expect_err("a failed Job fails the run"));
    assert!(err.contains("load Job cloudmart-load-1700000000 in namespace cloudmart failed"), "{err}");
    assert!(err.contains("BackoffLimitExceeded"), "{err}");
    assert!(out.contains("last 20 log lines of pod cloudmart-load-1700000000-x7k2p"), "{out}");
    assert!(out.contains("| progress line 12\n") && out.contains("| progress line 30\n"), "{out}");
    assert!(!out.contains("| progress line 11\n"), "only the last 20 lines: {out}");
    assert_deleted_in_background(&api);
}

#[tokio::test]
async fn completed_job_without_report_line_is_an_error() {
    let api = FakeApi::start(load_script(complete(JOB), log_lines(false))).await;

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
async fn interrupt_deletes_the_job_in_the_foreground_and_waits_for_it_even_with_keep() {
    let api = FakeApi::start(load_script(running(JOB), log_lines(true))).await;

    let mut out = Vec::new();
    let opts = LoadOptions { keep: true, ..options() };
    let path = job_path(JOB);
    let interrupt = api.answered("GET", &path, 2);
    let outcome = load(api.client(), &release(), &opts, JOB, interrupt, &mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(matches!(outcome, LoadOutcome::Interrupted { ref job } if job == JOB), "{outcome:?}");
    let deletes = api.requests_to("DELETE", &job_path(JOB));
    assert_eq!(deletes.len(), 1, "{:#?}", api.requests());
    assert_eq!(deletes[0].json()["propagationPolicy"], "Foreground", "the pod goes before the Job");
    let last = api.requests().into_iter().last().expect("requests");
    assert_eq!((last.method.as_str(), last.path.as_str()), ("GET", job_path(JOB).as_str()), "waited until it was gone");
    assert!(out.contains("interrupted: stopping the load"), "{out}");
    assert!(out.contains("deleted Job cloudmart-load-1700000000 and its pod"), "{out}");
    assert!(!out.contains("load report"), "{out}");
}

const JOB_CREATED: &str = "2026-01-01T00:00:00Z";

/// A run under `--expect-scale`: the Job is created at [`JOB_CREATED`]; the HPA is given by
/// `hpas` (pre-check, then one per tick, the last repeating), the time-sale Deployment by
/// `timesale` (baseline, then one per tick), order by `order`; the Job completes on the 4th GET.
fn scale_script(hpas: Vec<Value>, timesale: Vec<(i32, i32)>, order: Vec<(i32, i32)>) -> Script {
    let deployments = |service: &str, replicas: Vec<(i32, i32)>| {
        replicas.into_iter().map(|(ready, desired)| Reply::ok(deployment(service, ready, desired))).collect::<Vec<_>>()
    };
    let mut created = job(JOB, json!({}));
    created["metadata"]["creationTimestamp"] = json!(JOB_CREATED);
    Script::new()
        .on("GET", HPA_PATH, hpas.into_iter().map(Reply::ok))
        .on("GET", &deployment_path("timesale"), deployments("timesale", timesale))
        .on("GET", &deployment_path("order"), deployments("order", order))
        .on("GET", &deployment_path("delivery"), [Reply::ok(deployment("delivery", 1, 1))])
        .on("POST", JOBS_PATH, [Reply::Json(201, created)])
        .on("GET", &job_path(JOB), [running(JOB), running(JOB), running(JOB), complete(JOB)])
        .on("GET", PODS_PATH, [job_pods(JOB, POD, "load", None)])
        .on("GET", &log_path(POD), [log_lines(true)])
        .on("DELETE", &job_path(JOB), [deleted()])
}

const BEFORE: Option<&str> = Some("2025-12-31T23:00:00Z");
const SCALED_UP: Option<&str> = Some("2026-01-01T00:00:35Z");
const SCALED_DOWN: Option<&str> = Some("2026-01-01T00:03:10Z");

fn expect_scale(down: Option<Duration>) -> LoadOptions {
    LoadOptions { expect_scale: true, expect_scale_down: down, ..options() }
}

#[tokio::test]
async fn expect_scale_passes_when_the_hpa_scales_timesale_up_and_back_down_alone() {
    let hpas = vec![
        hpa_at(1, 1, Some(20), BEFORE), // pre-check
        hpa_at(1, 1, Some(90), BEFORE),
        hpa_at(1, 3, Some(180), SCALED_UP),
        hpa_at(3, 3, Some(95), SCALED_UP),
        hpa_at(3, 3, Some(70), SCALED_UP), // the Job completes
        hpa_at(3, 3, Some(5), SCALED_UP),  // waiting for the scale-down
        hpa_at(2, 1, Some(4), SCALED_DOWN),
        hpa_at(1, 1, Some(4), SCALED_DOWN),
    ];
    let timesale = vec![(1, 1), (1, 1), (1, 3), (3, 3), (3, 3), (3, 3), (2, 1), (1, 1)];
    let api = FakeApi::start(scale_script(hpas, timesale, vec![(1, 1)])).await;

    let (result, out) = run_load(&api, &expect_scale(Some(Duration::from_secs(10)))).await;
    let summary = finished(result, &out);
    assert_eq!(summary.exit_code(), 0, "{out}");
    assert_eq!(summary.job_created_unix_ms, 1_767_225_600_000, "the API server's creationTimestamp");
    let verdicts: Vec<&str> = out.lines().filter(|l| l.starts_with("verdict: ")).collect();
    assert_eq!(verdicts.len(), 2, "{out}");
    assert_eq!(
        verdicts[0],
        "verdict: PASS scale-up: timesale scaled 1 -> 3 replicas by the HPA (above minReplicas 1; first seen at t=0s, \
         lastScaleTime 2026-01-01T00:00:35Z, 35s after the Job was created); delivery stayed at 1, order stayed at 1"
    );
    assert!(verdicts[1].starts_with("verdict: PASS scale-down: timesale back at minReplicas 1 "), "{out}");
    assert!(out.contains("waiting up to 10s for timesale to scale back to minReplicas 1"), "{out}");
    // The Job is gone before the wait, and the wait's rows are in the table and the timeline.
    let delete_at = out.find("deleted Job").expect("deleted");
    assert!(delete_at < out.find("waiting up to").expect("waiting"), "{out}");
    let phases: Vec<_> = summary.scaling.timeline.iter().map(|s| s.phase).collect();
    use cloudmart_kubectl::timeline::Phase::*;
    assert_eq!(phases, [Before, Load, Load, Load, Load, ScaleDown, ScaleDown, ScaleDown]);
    assert_eq!(summary.verdicts.len(), 2);
}

#[tokio::test]
async fn expect_scale_fails_with_exit_3_when_the_hpa_never_scales() {
    let hpas = vec![hpa_at(1, 1, Some(20), BEFORE), hpa_at(1, 1, Some(30), BEFORE)];
    let api = FakeApi::start(scale_script(hpas, vec![(1, 1)], vec![(1, 1)])).await;

    let (result, out) = run_load(&api, &expect_scale(Some(Duration::from_secs(600)))).await;
    let summary = finished(result, &out);
    assert_eq!(summary.exit_code(), 3, "{out}");
    assert!(
        out.contains(
            "verdict: FAIL scale-up: the HPA never went above minReplicas 1 (peak 1): CPU stayed under its target"
        ),
        "{out}"
    );
    assert!(out.contains("verdict: SKIP scale-down: not checked: timesale did not scale up"), "{out}");
    assert!(!out.contains("waiting up to"), "no wait without a scale-up: {out}");
    assert_deleted_in_background(&api);
}

#[tokio::test]
async fn expect_scale_fails_when_another_service_changes_its_replicas() {
    let hpas = vec![hpa_at(1, 1, None, BEFORE), hpa_at(1, 3, None, SCALED_UP), hpa_at(3, 3, None, SCALED_UP)];
    let timesale = vec![(1, 1), (1, 3), (3, 3)];
    let order = vec![(1, 1), (1, 1), (1, 2), (2, 2)];
    let api = FakeApi::start(scale_script(hpas, timesale, order)).await;

    let (result, out) = run_load(&api, &expect_scale(None)).await;
    let summary = finished(result, &out);
    assert_eq!(summary.exit_code(), 3, "{out}");
    let verdict = out.lines().find(|l| l.starts_with("verdict: ")).expect("a verdict");
    assert!(verdict.starts_with("verdict: FAIL scale-up: order went from 1 to 2 replicas at t="), "{verdict}");
    assert!(verdict.ends_with("(only timesale may scale)"), "{verdict}");
}

#[tokio::test]
async fn expect_scale_down_fails_with_exit_4_when_timesale_stays_up() {
    let hpas = vec![hpa_at(1, 1, None, BEFORE), hpa_at(1, 3, None, SCALED_UP), hpa_at(3, 3, None, SCALED_UP)];
    let api = FakeApi::start(scale_script(hpas, vec![(1, 1), (1, 3), (3, 3)], vec![(1, 1)])).await;

    let (result, out) = run_load(&api, &expect_scale(Some(Duration::from_millis(100)))).await;
    let summary = finished(result, &out);
    assert_eq!(summary.exit_code(), 4, "{out}");
    assert!(out.contains("verdict: PASS scale-up: timesale scaled 1 -> 3 replicas by the HPA"), "{out}");
    let verdict = out.lines().find(|l| l.starts_with("verdict: FAIL scale-down: ")).unwrap_or_else(|| panic!("{out}"));
    assert!(verdict.contains("timesale still at 3 replicas (HPA current/desired 3/3, minReplicas 1)"), "{verdict}");
    assert!(verdict.ends_with("(--scale-down-timeout 0s)"), "{verdict}");
}

#[tokio::test]
async fn expect_scale_refuses_to_start_without_the_deployments() {
    let api = FakeApi::start(
        Script::new()
            .on("GET", HPA_PATH, [Reply::ok(hpa(1, 1, None))])
            .on("GET", &deployment_path("timesale"), [Reply::ok(deployment("timesale", 1, 1))])
            .on("POST", JOBS_PATH, [Reply::EchoCreated]),
    )
    .await;
    let (result, out) = run_load(&api, &expect_scale(None)).await;
    let err = format!("{:#}", result.expect_err("order and delivery are missing"));
    assert!(
        err.contains("--expect-scale: Deployment cloudmart-order in namespace cloudmart could not be read"),
        "{err}"
    );
    assert!(out.contains("could not read Deployment cloudmart-order"), "{out}");
    assert!(api.requests_to("POST", JOBS_PATH).is_empty());
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
fn the_orders_scenario_a_ramp_and_the_ports_reach_the_load_generator() {
    let opts = LoadOptions {
        scenario: Scenario::Orders,
        ramp: Some(Ramp(vec![50, 100, 200])),
        timesale_port: 6053,
        order_port: 6051,
        ..options()
    };
    let command = load_command(&Release::new("shop", "cm"), &opts);
    assert_eq!(
        command,
        [
            "cloudmart-load",
            "--scenario",
            "orders",
            "--timesale-endpoint",
            "http://cm-timesale:6053",
            "--order-endpoint",
            "http://cm-order:6051",
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
