//! What a rehearsal proves once every pod is Ready. Each check is driven from inside the
//! network the way a user's pod would be (client containers of the tools image, hardened
//! and labelled like the `helm test` pod), except the trace lookup, which reads Jaeger's
//! query API from the host as a user's browser would through a port-forward.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use cloudmart_chart_check::Render;
use cloudmart_e2e::load::LoadReport;

use crate::docker::last_line;
use crate::plan::{Plan, PlanOptions, PodPlan, Role};
use crate::probe::http_get;
use crate::rehearsal::{Rehearsal, indent};

/// Settings of the checks.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Purchases per second the load Job sends, and for how long.
    pub load_rps: u32,
    pub load_secs: u64,
    /// Deadline of each client pod.
    pub client_timeout: Duration,
}

/// The outcome of one check: what was seen, or why it failed.
#[derive(Debug)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Result<String, String>,
}

/// Runs every check in order; a failed check does not stop the ones after it.
pub async fn run_all(r: &mut Rehearsal, opts: &CheckOptions) -> Vec<Check> {
    let mut out = Vec::new();
    macro_rules! check {
        ($name:expr, $body:expr) => {{
            println!("==> {}", $name);
            let outcome = $body.await.map_err(|e: anyhow::Error| format!("{e:#}"));
            match &outcome {
                Ok(detail) => println!("    ok: {detail}"),
                Err(why) => println!("    FAILED: {why}"),
            }
            out.push(Check { name: $name, outcome });
        }};
    }
    check!("helm test (the chart's smoke-test hook pod)", helm_test(r, opts));
    check!("regular order CONFIRMED", smoke(r, opts, "order-confirmed", Scenario::Confirmed));
    check!(
        "fault-injected order CANCELLED with DELIVERY_FAILED",
        smoke(r, opts, "order-cancelled", Scenario::Cancelled)
    );
    check!("time-sale purchase ORDERED", smoke(r, opts, "purchase-ordered", Scenario::Purchase));
    check!("load Job from `kubectl cloudmart load --dry-run`", load_job(r, opts));
    check!("one trace with spans of order, delivery and timesale in Jaeger", trace(r));
    check!("cloudmart-audit: all invariants hold", audit(r, opts));
    out
}

async fn helm_test(r: &mut Rehearsal, opts: &CheckOptions) -> Result<String> {
    let pod = r
        .plan
        .pods
        .iter()
        .find(|p| p.role == Role::Test)
        .cloned()
        .ok_or_else(|| anyhow!("no `helm test` pod rendered"))?;
    let (code, logs) = r.run_to_completion(&pod, opts.client_timeout + Duration::from_secs(60)).await?;
    if code != 0 {
        bail!("pod {} exited {code}:\n{}", pod.pod, indent(&logs, "    | "));
    }
    Ok(format!("pod {} exited 0: {}", pod.pod, last_line(&logs)))
}

enum Scenario {
    Confirmed,
    Cancelled,
    Purchase,
}

/// `http://<Service>:<port>` of the Service selecting `app` (its gRPC port).
pub fn endpoint(render: &Render, app: &str) -> Result<String> {
    for svc in &render.services {
        let Some(spec) = &svc.spec else { continue };
        if spec.selector.as_ref().and_then(|s| s.get(crate::plan::NAME_LABEL)).map(String::as_str) != Some(app) {
            continue;
        }
        if spec.cluster_ip.as_deref() == Some("None") {
            continue;
        }
        if let Some(p) = spec.ports.iter().flatten().find(|p| p.name.as_deref() == Some("grpc")) {
            return Ok(format!("http://{}:{}", svc.metadata.name.clone().unwrap_or_default(), p.port));
        }
    }
    bail!("no Service with a `grpc` port selects app {app}")
}

async fn smoke(r: &mut Rehearsal, opts: &CheckOptions, name: &str, scenario: Scenario) -> Result<String> {
    let timeout = opts.client_timeout.as_secs().to_string();
    let mut cmd: Vec<String> = vec!["cloudmart-smoke".into(), "--timeout-secs".into(), timeout];
    match scenario {
        Scenario::Confirmed => {
            cmd.extend([
                "--order-endpoint".into(),
                endpoint(&r.render, "order")?,
                "--expect".into(),
                "confirmed".into(),
            ]);
        }
        Scenario::Cancelled => {
            let codes = r
                .plan
                .app("delivery")
                .find_map(|p| p.env_value("FAULT_DELIVERY_FAIL_POSTAL_CODES"))
                .unwrap_or("")
                .to_owned();
            let code = codes.split(',').map(str::trim).find(|c| !c.is_empty()).ok_or_else(|| {
                anyhow!("the delivery pods have no FAULT_DELIVERY_FAIL_POSTAL_CODES: the rehearsal profile must set delivery.fault.failPostalCodes")
            })?;
            cmd.extend([
                "--order-endpoint".into(),
                endpoint(&r.render, "order")?,
                "--postal-code".into(),
                code.to_owned(),
                "--expect".into(),
                "cancelled".into(),
                "--expect-reason".into(),
                "DELIVERY_FAILED".into(),
            ]);
        }
        Scenario::Purchase => {
            cmd.extend([
                "--scenario".into(),
                "purchase".into(),
                "--timesale-endpoint".into(),
                endpoint(&r.render, "timesale")?,
                "--expect".into(),
                "ordered".into(),
            ]);
        }
    }
    let pod = r.client_pod(name, cmd)?;
    let (code, logs) = r.run_to_completion(&pod, opts.client_timeout + Duration::from_secs(30)).await?;
    if code != 0 {
        bail!("client pod {} exited {code}:\n{}", pod.pod, indent(&logs, "    | "));
    }
    Ok(format!("pod {}: {}", pod.pod, last_line(&logs)))
}

async fn load_job(r: &mut Rehearsal, opts: &CheckOptions) -> Result<String> {
    let tools = r.plan.pods.iter().find(|p| p.role == Role::Test).map(|p| p.image.clone()).context("no tools image")?;
    let printer = r.client_pod(
        "load-dry-run",
        vec![
            "kubectl-cloudmart".into(),
            "load".into(),
            "--dry-run".into(),
            "--namespace".into(),
            r.plan.namespace.clone(),
            "--release".into(),
            r.release.clone(),
            "--image".into(),
            tools,
            "--sale-rps".into(),
            opts.load_rps.to_string(),
            "--duration".into(),
            format!("{}s", opts.load_secs),
        ],
    )?;
    let (code, yaml) = r.run_to_completion(&printer, Duration::from_secs(60)).await?;
    if code != 0 {
        bail!("kubectl-cloudmart load --dry-run exited {code}: {}", last_line(&yaml));
    }
    let job_render = Render::parse(&yaml).map_err(|e| anyhow!("the printed Job does not parse: {e}"))?;
    // The Job's pod gets the aliases of the main render's Services (none select it).
    let mut combined = job_render;
    combined.services.clone_from(&r.render.services);
    let plan =
        Plan::build(&combined, &PlanOptions { namespace: r.plan.namespace.clone(), replicas: Default::default() })?;
    let job: PodPlan = plan
        .pods
        .into_iter()
        .find(|p| matches!(p.role, Role::Job { .. }))
        .context("the printed manifest has no Job")?;
    println!("    Job {} ({}), {} rps for {} s", job.pod, job.image, opts.load_rps, opts.load_secs);
    let (code, logs) = r.run_to_completion(&job, Duration::from_secs(opts.load_secs + 120)).await?;
    let report = LoadReport::from_log(&logs).ok_or_else(|| {
        anyhow!("no CLOUDMART_LOAD_REPORT line in the Job's output (exit {code}):\n{}", indent(&logs, "    | "))
    })?;
    println!("{}", indent(&report.table(), "    "));
    let sold = report.total_stock - report.remaining_stock;
    if report.remaining_stock < 0 || i64::try_from(report.succeeded).unwrap_or(i64::MAX) > report.total_stock {
        bail!(
            "oversold: stock {}, remaining {}, {} purchases accepted",
            report.total_stock,
            report.remaining_stock,
            report.succeeded
        );
    }
    if report.succeeded == 0 {
        bail!(
            "no purchase succeeded ({} attempts, {} errors: {:?})",
            report.attempts,
            report.errors,
            report.error_samples
        );
    }
    if code != 0 {
        bail!("the load Job exited {code}");
    }
    Ok(format!(
        "{} purchases accepted of {} sent ({:.0}/s), p99 {:.1} ms, stock {} → {} (sold {sold}), oversell 0",
        report.succeeded,
        report.attempts,
        report.achieved_rps,
        report.latency_ms.p99,
        report.total_stock,
        report.remaining_stock
    ))
}

async fn trace(r: &mut Rehearsal) -> Result<String> {
    let jaeger = r
        .plan
        .app("jaeger")
        .next()
        .cloned()
        .ok_or_else(|| anyhow!("no Jaeger pod in the render (jaeger.enabled=false?)"))?;
    let port = *jaeger.ports.get("ui").ok_or_else(|| anyhow!("the Jaeger pod has no `ui` port"))?;
    let ip = r.ip(&jaeger.pod).await?;
    let want: BTreeSet<&str> = ["order", "delivery", "timesale"].into();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    loop {
        let path = "/api/traces?service=timesale&lookback=1h&limit=500";
        let last = match http_get(&ip, port, path).await {
            Ok((200, body)) => {
                let v: serde_json::Value = serde_json::from_str(&body).context("Jaeger's answer is not JSON")?;
                let traces = v["data"].as_array().cloned().unwrap_or_default();
                for t in &traces {
                    let services: BTreeSet<&str> = t["processes"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter_map(|(_, p)| p["serviceName"].as_str())
                        .collect();
                    if want.is_subset(&services) {
                        let spans = t["spans"].as_array().map_or(0, Vec::len);
                        return Ok(format!(
                            "trace {} has {spans} spans from {}",
                            t["traceID"].as_str().unwrap_or("?"),
                            services.into_iter().collect::<Vec<_>>().join(", ")
                        ));
                    }
                }
                format!("{} timesale traces, none with spans from all three services", traces.len())
            }
            Ok((status, body)) => format!("HTTP {status}: {}", last_line(&body)),
            Err(e) => format!("{e:#}"),
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("Jaeger at {ip}:{port}: {last}");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// `cloudmart-audit` in a client pod against the three databases; its last line.
pub async fn audit(r: &mut Rehearsal, opts: &CheckOptions) -> Result<String> {
    let mut pod = r.client_pod("audit", vec!["cloudmart-audit".into()])?;
    for (app, var) in
        [("order", "AUDIT_ORDER_DB"), ("delivery", "AUDIT_DELIVERY_DB"), ("timesale", "AUDIT_TIMESALE_DB")]
    {
        let url = r
            .plan
            .app(app)
            .find_map(|p| p.env_value("DATABASE_URL"))
            .ok_or_else(|| anyhow!("no DATABASE_URL on the {app} pods"))?;
        pod.env.push((var.into(), url.to_owned()));
    }
    let (code, logs) = r.run_to_completion(&pod, opts.client_timeout).await?;
    if code != 0 {
        bail!("cloudmart-audit exited {code}:\n{}", indent(&logs, "    | "));
    }
    Ok(last_line(&logs).to_owned())
}
