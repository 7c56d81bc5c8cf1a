//! The plugin against a scripted fake Kubernetes API server (one test binary): what it asks
//! the API server, what it creates, what a user reads, how it ends.
//!
//! - `load`: the load Job, the live table, the report, `--chart`, `--report`, the
//!   `--expect-scale` / `--expect-scale-down` verdicts, interrupts;
//! - `status`, `cluster` (kubeconfig, context, namespace), `trace` (Jaeger pod lookup and
//!   the query API, served by the same fake), `tools` (`audit`, `dlq`).

mod cluster;
mod fake_api;
mod load;
mod status;
mod tools;
mod trace;

use fake_api::Reply;
use serde_json::{Value, json};

const NS: &str = "cloudmart";
const PODS_PATH: &str = "/api/v1/namespaces/cloudmart/pods";
const JOBS_PATH: &str = "/apis/batch/v1/namespaces/cloudmart/jobs";
const HPA_PATH: &str = "/apis/autoscaling/v2/namespaces/cloudmart/horizontalpodautoscalers/cloudmart-timesale";

fn release() -> cloudmart_kubectl::Release {
    cloudmart_kubectl::Release::new(NS, "cloudmart")
}

fn deployment_path(service: &str) -> String {
    format!("/apis/apps/v1/namespaces/{NS}/deployments/cloudmart-{service}")
}

fn job_path(name: &str) -> String {
    format!("{JOBS_PATH}/{name}")
}

fn log_path(pod: &str) -> String {
    format!("{PODS_PATH}/{pod}/log")
}

/// A service Deployment as the chart renders it: `DATABASE_URL` from its Secret, the rest
/// from its ConfigMap.
fn deployment(service: &str, ready: i32, desired: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": format!("cloudmart-{service}"), "namespace": NS },
        "spec": {
            "replicas": desired,
            "selector": { "matchLabels": { "app.kubernetes.io/name": service } },
            "template": { "spec": { "containers": [{
                "name": service, "image": format!("cloudmart/{service}:dev"),
                "envFrom": [{ "configMapRef": { "name": format!("cloudmart-{service}-config") } }],
                "env": [
                    { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                    { "name": "DATABASE_URL", "valueFrom": { "secretKeyRef": { "name": format!("cloudmart-{service}-db"), "key": "url" } } }
                ]
            }] } }
        },
        "status": { "replicas": desired, "readyReplicas": ready }
    })
}

/// The time-sale HPA (min 1, max 10, CPU target 60 %) with `current`/`desired` replicas,
/// the measured CPU utilisation when given, and its lastScaleTime when given.
fn hpa_at(current: i32, desired: i32, cpu: Option<i32>, last_scale: Option<&str>) -> Value {
    let mut status = json!({ "currentReplicas": current, "desiredReplicas": desired });
    if let Some(cpu) = cpu {
        status["currentMetrics"] = json!([{
            "type": "Resource",
            "resource": { "name": "cpu", "current": { "averageUtilization": cpu, "averageValue": "150m" } }
        }]);
    }
    if let Some(at) = last_scale {
        status["lastScaleTime"] = json!(at);
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

fn hpa(current: i32, desired: i32, cpu: Option<i32>) -> Value {
    hpa_at(current, desired, cpu, None)
}

/// A Job named `name` with `status`.
fn job(name: &str, status: Value) -> Value {
    json!({ "apiVersion": "batch/v1", "kind": "Job", "metadata": { "name": name, "namespace": NS }, "status": status })
}

fn running(name: &str) -> Reply {
    Reply::ok(job(name, json!({ "active": 1 })))
}

fn complete(name: &str) -> Reply {
    Reply::ok(job(
        name,
        json!({
            "succeeded": 1,
            "conditions": [{ "type": "SuccessCriteriaMet", "status": "True" }, { "type": "Complete", "status": "True" }]
        }),
    ))
}

fn failed(name: &str) -> Reply {
    Reply::ok(job(
        name,
        json!({
            "failed": 1,
            "conditions": [{ "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit" }]
        }),
    ))
}

/// The pod list of a Job: one pod, whose `container` exited with `exit_code` when given.
fn job_pods(job: &str, pod: &str, container: &str, exit_code: Option<i32>) -> Reply {
    let mut item = json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": pod, "namespace": NS, "labels": { "job-name": job } } });
    if let Some(code) = exit_code {
        item["status"] = json!({ "phase": if code == 0 { "Succeeded" } else { "Failed" }, "containerStatuses": [{
            "name": container, "ready": false, "restartCount": 0, "image": "cloudmart/tools:dev", "imageID": "",
            "state": { "terminated": { "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" } } }
        }] });
    }
    Reply::ok(
        json!({ "apiVersion": "v1", "kind": "PodList", "metadata": { "resourceVersion": "42" }, "items": [item] }),
    )
}

fn deleted() -> Reply {
    Reply::ok(json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success" }))
}

/// The words of the first line of `out` that starts with `prefix`.
fn words_of_line(out: &str, prefix: &str) -> Vec<String> {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?}:\n{out}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}
