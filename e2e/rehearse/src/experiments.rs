//! Measurements on a running rehearsal: the time-sale service scaled out by hand (1, 2, 4
//! replicas under the same open-loop rush) and an HPA replay (the documented algorithm of
//! [`crate::hpa`] fed with each container's CPU from `docker stats`, adding and removing
//! time-sale containers while a `make load`-sized rush runs). Order and delivery are never
//! scaled. The load generator runs as a client container with the load Job's limits.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use cloudmart_e2e::load::LoadReport;
use serde::Serialize;

use crate::checks::endpoint;
use crate::docker::last_line;
use crate::hpa::Autoscaler;
use crate::plan::PodPlan;
use crate::probe::{self, http_get};
use crate::rehearsal::{Rehearsal, indent};
use cloudmart_load_report::{Line, Panel, write_png};

/// The service that scales.
pub const APP: &str = "timesale";

/// `--horizontal-pod-autoscaler-initial-readiness-delay`: CPU of a pod Ready for less than
/// this is set aside.
pub const INITIAL_READINESS_DELAY_SECS: f64 = 30.0;

/// An open-loop rush.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rush {
    pub rps: u32,
    pub secs: u64,
    pub concurrency: u32,
    pub connections: u32,
}

/// One Prometheus sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text format (comments skipped, escapes in label values kept).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (head, value) = match line.rfind(' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = match head.find('{') {
            Some(i) => (&head[..i], head[i + 1..].trim_end_matches('}')),
            None => (head, ""),
        };
        let labels = labels
            .split("\",")
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.trim().to_owned(), v.trim_matches('"').to_owned())))
            .collect();
        out.push(Sample { name: name.to_owned(), labels, value });
    }
    out
}

/// Purchase calls a time-sale replica has served: (all, OK).
pub fn purchase_calls(samples: &[Sample]) -> (f64, f64) {
    let calls = samples.iter().filter(|s| {
        s.name == "cloudmart_rpc_server_requests_total"
            && s.labels.get("rpc_method").map(String::as_str) == Some("Purchase")
    });
    // The code label is the gRPC status name ("OK"; "0" from services before the names).
    let is_ok = |s: &Sample| matches!(s.labels.get("code").map(String::as_str), Some("0" | "OK"));
    calls.fold((0.0, 0.0), |(all, ok), s| (all + s.value, ok + if is_ok(s) { s.value } else { 0.0 }))
}

/// Cumulative Purchase latency buckets (upper bound in seconds, count).
pub fn purchase_buckets(samples: &[Sample]) -> Vec<(f64, f64)> {
    let mut b: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for s in samples.iter().filter(|s| {
        s.name == "cloudmart_rpc_server_duration_seconds_bucket"
            && s.labels.get("rpc_method").map(String::as_str) == Some("Purchase")
    }) {
        let le = s
            .labels
            .get("le")
            .map_or(f64::INFINITY, |v| if v == "+Inf" { f64::INFINITY } else { v.parse().unwrap_or(f64::INFINITY) });
        let e = b.entry(le.to_bits()).or_insert((le, 0.0));
        e.1 += s.value;
    }
    let mut v: Vec<(f64, f64)> = b.into_values().collect();
    v.sort_by(|a, c| a.0.total_cmp(&c.0));
    v
}

/// The bucket bound below which `q` of the calls between two scrapes fell (ms); None
/// without calls. Coarse: the service's buckets are 1, 2.5, 5, 10, 25, 50, 100 … ms.
pub fn quantile_ms(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> =
        after.iter().map(|(le, n)| (*le, n - before.iter().find(|(l, _)| l == le).map_or(0.0, |(_, m)| *m))).collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    delta.iter().find(|(_, n)| *n >= q * total).map(|(le, _)| le * 1000.0)
}

async fn scrape(r: &mut Rehearsal, pod: &PodPlan) -> Result<Vec<Sample>> {
    let port = *pod.ports.get("metrics").ok_or_else(|| anyhow!("{} has no metrics port", pod.pod))?;
    let ip = r.ip(&pod.pod).await?;
    let (status, body) = http_get(&ip, port, "/metrics").await?;
    if status != 200 {
        bail!("{}: /metrics answered {status}", pod.pod);
    }
    Ok(parse_metrics(&body))
}

/// The load generator as a client container with the load Job's limits (1 CPU, 256 MiB).
fn load_pod(r: &Rehearsal, name: &str, rush: Rush) -> Result<PodPlan> {
    let mut pod = r.client_pod(
        name,
        vec![
            "cloudmart-load".into(),
            "--timesale-endpoint".into(),
            endpoint(&r.render, APP)?,
            "--sale-rps".into(),
            rush.rps.to_string(),
            "--duration".into(),
            format!("{}s", rush.secs),
            "--concurrency".into(),
            rush.concurrency.to_string(),
            "--connections".into(),
            rush.connections.to_string(),
        ],
    )?;
    pod.cpus = Some(1.0);
    pod.memory_bytes = Some(256 * 1024 * 1024);
    Ok(pod)
}

fn deployment_of(r: &Rehearsal) -> Result<String> {
    let pod = r.plan.app(APP).next().ok_or_else(|| anyhow!("no {APP} pod in the render"))?;
    Ok(pod.owner.trim_start_matches("Deployment ").to_owned())
}

/// Starts or removes time-sale replicas until `n` run (ordinals 0..n) and are Ready.
async fn set_replicas(r: &mut Rehearsal, running: &mut Vec<PodPlan>, n: u32, timeout: Duration) -> Result<()> {
    let deployment = deployment_of(r)?;
    while running.len() as u32 > n {
        let pod = running.pop().expect("non-empty");
        r.remove_pod(&pod).await?;
    }
    let mut added = Vec::new();
    while (running.len() as u32) < n {
        let pod = r.pod_for(&deployment, running.len() as u32)?;
        r.start_pod(&pod).await?;
        running.push(pod.clone());
        added.push(pod);
    }
    if !added.is_empty() {
        r.wait_ready(&added, timeout).await?;
    }
    Ok(())
}

/// One row of the scale-out table.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRow {
    pub replicas: u32,
    pub target_rps: u32,
    pub sent_per_s: f64,
    pub purchases_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub shed_pct: f64,
    pub not_sent: u64,
    /// Purchase calls each replica served (from its /metrics).
    pub per_replica: Vec<(String, u64)>,
    pub oversell: i64,
}

/// Runs the same rush against each replica count in turn.
pub async fn scale_out(r: &mut Rehearsal, counts: &[u32], rush: Rush, out_dir: &Path) -> Result<Vec<ScaleRow>> {
    let mut running: Vec<PodPlan> = r.plan.app(APP).cloned().collect();
    let mut rows = Vec::new();
    for &n in counts {
        println!("==> {n} time-sale replica(s): {} purchases/s for {} s", rush.rps, rush.secs);
        set_replicas(r, &mut running, n, Duration::from_secs(180)).await?;
        let mut before = Vec::new();
        for p in running.clone() {
            before.push(purchase_calls(&scrape(r, &p).await?).0);
        }
        let pod = load_pod(r, &format!("scale-{n}"), rush)?;
        let (code, logs) = r.run_to_completion(&pod, Duration::from_secs(rush.secs + 180)).await?;
        let report = LoadReport::from_log(&logs)
            .ok_or_else(|| anyhow!("no load report (exit {code}):\n{}", indent(&logs, "    | ")))?;
        r.remove_pod(&pod).await.ok();
        let mut per_replica = Vec::new();
        for (p, b) in running.clone().iter().zip(before) {
            let after = purchase_calls(&scrape(r, p).await?).0;
            per_replica.push((p.pod.clone(), (after - b).max(0.0) as u64));
        }
        let sold = report.total_stock - report.remaining_stock;
        let oversell =
            (-report.remaining_stock).max(0) + (i64::try_from(report.succeeded).unwrap_or(i64::MAX) - sold).max(0);
        let row = ScaleRow {
            replicas: n,
            target_rps: rush.rps,
            sent_per_s: report.achieved_rps,
            purchases_per_s: report.succeeded as f64 / report.duration_secs.max(0.001),
            p50_ms: report.latency_ms.p50,
            p99_ms: report.latency_ms.p99,
            shed_pct: if report.attempts == 0 { 0.0 } else { report.shed as f64 * 100.0 / report.attempts as f64 },
            not_sent: report.not_sent,
            per_replica,
            oversell,
        };
        println!("    {}", scale_row_line(&row));
        rows.push(row);
    }
    set_replicas(r, &mut running, 1, Duration::from_secs(180)).await.ok();
    std::fs::create_dir_all(out_dir)?;
    let path = out_dir.join("scale-out.json");
    std::fs::write(&path, serde_json::to_string_pretty(&rows)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("\n{}\nwritten: {}", scale_table(&rows), path.display());
    Ok(rows)
}

fn scale_row_line(r: &ScaleRow) -> String {
    format!(
        "{} replica(s): {:.0} purchases/s (sent {:.0}/s), p50 {:.1} ms, p99 {:.1} ms, shed {:.1} %, oversell {}",
        r.replicas, r.purchases_per_s, r.sent_per_s, r.p50_ms, r.p99_ms, r.shed_pct, r.oversell
    )
}

/// The scale-out table in Markdown.
pub fn scale_table(rows: &[ScaleRow]) -> String {
    let mut t = String::from(
        "| time-sale replicas | purchases/s | p50 ms | p99 ms | shed | calls per replica | oversell |\n|---:|---:|---:|---:|---:|---|---:|\n",
    );
    for r in rows {
        let spread: Vec<String> = r.per_replica.iter().map(|(_, n)| n.to_string()).collect();
        t.push_str(&format!(
            "| {} | {:.0} | {:.1} | {:.1} | {:.1} % | {} | {} |\n",
            r.replicas,
            r.purchases_per_s,
            r.p50_ms,
            r.p99_ms,
            r.shed_pct,
            spread.join(" / "),
            r.oversell
        ));
    }
    t
}

/// One sample of the HPA replay.
#[derive(Debug, Clone, Serialize)]
pub struct ReplaySample {
    pub t_secs: f64,
    pub replicas: u32,
    pub ready: u32,
    pub desired: u32,
    /// Average CPU of the time-sale containers, percent of the CPU request.
    pub cpu_pct_of_request: f64,
    pub purchases_per_s: f64,
    pub p99_ms: Option<f64>,
}

/// The HPA replay's result.
#[derive(Debug, Clone, Serialize)]
pub struct Replay {
    pub rush: Rush,
    pub sync_secs: u64,
    pub target_utilization_pct: f64,
    pub cpu_request_cores: f64,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub samples: Vec<ReplaySample>,
    /// Seconds from the start of the load to the first added replica passing readiness.
    pub first_added_ready_secs: Option<f64>,
    pub max_replicas_seen: u32,
    pub load: Option<LoadReport>,
    /// Purchase calls each time-sale replica served during the replay (its /metrics): a
    /// replica added mid-rush gets calls once clients reconnect (connection-age rotation).
    pub served: Vec<(String, u64)>,
    /// Other Deployments' replica counts, unchanged throughout.
    pub fixed: Vec<(String, u32)>,
}

/// Closed loop: every `sync_secs` the HPA algorithm reads the time-sale containers' CPU
/// and sets their number, while the rush runs and for `cooldown_secs` after it.
pub async fn hpa_replay(
    r: &mut Rehearsal,
    rush: Rush,
    sync_secs: u64,
    cooldown_secs: u64,
    out_dir: &Path,
) -> Result<Replay> {
    let deployment = deployment_of(r)?;
    let hpa = r.render.hpas.iter().find(|h| h.spec.scale_target_ref.name == deployment).ok_or_else(|| {
        anyhow!("no HorizontalPodAutoscaler targets {deployment} (timesale.autoscaling.enabled=false?)")
    })?;
    let mut auto = Autoscaler::from_manifest(hpa).map_err(|e| anyhow!("the HPA: {e}"))?;
    let mut running: Vec<PodPlan> = r.plan.app(APP).cloned().collect();
    let request = running.first().and_then(|p| p.cpu_request).ok_or_else(|| anyhow!("{APP} has no CPU request"))?;
    let fixed: Vec<(String, u32)> =
        ["order", "delivery"].iter().map(|a| ((*a).to_owned(), r.plan.app(a).count() as u32)).collect();
    println!(
        "==> HPA replay: min {} max {} target {} % of {} cores; scale-up {:?}; scale-down {:?}; sync every {sync_secs} s",
        auto.min_replicas, auto.max_replicas, auto.target_utilization, request, auto.up, auto.down
    );

    let load = load_pod(r, "hpa-load", rush)?;
    let t0 = Instant::now();
    r.start_pod(&load).await?;
    let load_container = r.container(&load.pod);
    let mut samples: Vec<ReplaySample> = Vec::new();
    let mut ready: BTreeMap<String, bool> = running.iter().map(|p| (p.pod.clone(), true)).collect();
    // When each pod became Ready (the ones already running: long ago).
    let mut ready_at: BTreeMap<String, f64> = running.iter().map(|p| (p.pod.clone(), f64::NEG_INFINITY)).collect();
    let mut first_added_ready: Option<f64> = None;
    let mut last_calls: BTreeMap<String, (f64, Vec<(f64, f64)>)> = BTreeMap::new();
    let mut served: BTreeMap<String, f64> = BTreeMap::new();
    let mut last_t = 0.0;
    let mut load_done_at: Option<f64> = None;
    // The first pass comes one period into the load, when metrics cover it.
    let mut next_sync = sync_secs as f64;
    loop {
        let t = t0.elapsed().as_secs_f64();
        // readiness of added replicas, checked every second like the kubelet would
        for p in running.clone() {
            if ready.get(&p.pod) == Some(&false)
                && let (Ok(ip), Some(probe)) = (r.ip(&p.pod).await, p.readiness.clone())
                && probe::check(&r.docker, &r.container(&p.pod), &ip, &probe.action, Duration::from_secs(2))
                    .await
                    .is_ok()
            {
                ready.insert(p.pod.clone(), true);
                ready_at.insert(p.pod.clone(), t);
                println!("    t={t:>5.0}s  {} Ready", p.pod);
                first_added_ready.get_or_insert(t);
            }
        }
        if load_done_at.is_none() && !r.docker.state(&load_container).await.map(|s| s.running).unwrap_or(false) {
            load_done_at = Some(t);
            println!("    t={t:>5.0}s  load finished");
        }
        if let Some(done) = load_done_at
            && t >= done + cooldown_secs as f64
        {
            break;
        }
        if t >= next_sync {
            next_sync += sync_secs as f64;
            let names: Vec<String> = running.iter().map(|p| r.container(&p.pod)).collect();
            let cpu = r.docker.cpu_cores(&names).await.unwrap_or_default();
            let ready_now = running.iter().filter(|p| ready.get(&p.pod) == Some(&true)).count() as u32;
            // Like the controller: the CPU of pods not Ready, Ready for less than the initial
            // readiness delay, or without a sample does not count as load (see
            // Autoscaler::recommendation_with_pods for how they dampen a scale-up).
            let settled: Vec<f64> = running
                .iter()
                .zip(&names)
                .filter(|(p, _)| ready_at.get(&p.pod).is_some_and(|at| t - at >= INITIAL_READINESS_DELAY_SECS))
                .filter_map(|(_, n)| cpu.iter().find(|(c, _)| c == n).map(|(_, v)| *v / request * 100.0))
                .collect();
            let unready = running.len() - settled.len();
            let util = if settled.is_empty() { 0.0 } else { settled.iter().sum::<f64>() / settled.len() as f64 };
            let current = running.len() as u32;
            let desired = auto.step_pods(t, current, &settled, unready);
            // throughput and p99 since the last sync, summed over replicas
            let (mut calls, mut buckets_before, mut buckets_after) = (0.0, Vec::new(), Vec::new());
            for p in running.clone() {
                let Ok(s) = scrape(r, &p).await else { continue };
                let ok = purchase_calls(&s).1;
                let b = purchase_buckets(&s);
                let (prev_ok, prev_b) = last_calls.get(&p.pod).cloned().unwrap_or((0.0, Vec::new()));
                calls += (ok - prev_ok).max(0.0);
                *served.entry(p.pod.clone()).or_default() += (ok - prev_ok).max(0.0);
                merge(&mut buckets_before, &prev_b);
                merge(&mut buckets_after, &b);
                last_calls.insert(p.pod.clone(), (ok, b));
            }
            let dt = (t - last_t).max(0.001);
            last_t = t;
            let sample = ReplaySample {
                t_secs: t,
                replicas: current,
                ready: ready_now,
                desired,
                cpu_pct_of_request: util,
                purchases_per_s: calls / dt,
                p99_ms: quantile_ms(&buckets_before, &buckets_after, 0.99),
            };
            println!(
                "    t={:>5.0}s  replicas {} (ready {})  cpu {:>5.0} % of request  → desired {}  {:>6.0} purchases/s  p99 {}",
                sample.t_secs,
                sample.replicas,
                sample.ready,
                sample.cpu_pct_of_request,
                sample.desired,
                sample.purchases_per_s,
                sample.p99_ms.map_or("-".to_owned(), |v| format!("≤{v:.0} ms"))
            );
            samples.push(sample);
            if desired > current {
                for ordinal in current..desired {
                    let pod = r.pod_for(&deployment, ordinal)?;
                    r.start_pod(&pod).await?;
                    ready.insert(pod.pod.clone(), false);
                    running.push(pod);
                }
            } else if desired < current {
                for _ in desired..current {
                    let pod = running.pop().expect("non-empty");
                    r.remove_pod(&pod).await?;
                    ready.remove(&pod.pod);
                    ready_at.remove(&pod.pod);
                    last_calls.remove(&pod.pod);
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let logs = r.docker.logs(&load_container).await.unwrap_or_default();
    let report = LoadReport::from_log(&logs);
    if report.is_none() {
        println!("    (no load report: {})", last_line(&logs));
    }
    for (app, n) in &fixed {
        let now = r.plan.app(app).count() as u32;
        if now != *n {
            bail!("{app} changed from {n} to {now} replicas: only {APP} may scale");
        }
    }
    let replay = Replay {
        rush,
        sync_secs,
        target_utilization_pct: auto.target_utilization,
        cpu_request_cores: request,
        min_replicas: auto.min_replicas,
        max_replicas: auto.max_replicas,
        max_replicas_seen: samples.iter().map(|s| s.replicas).max().unwrap_or(1),
        first_added_ready_secs: first_added_ready,
        samples,
        load: report,
        served: served.into_iter().map(|(pod, n)| (pod, n as u64)).collect(),
        fixed,
    };
    write_replay(&replay, out_dir)?;
    Ok(replay)
}

fn merge(into: &mut Vec<(f64, f64)>, add: &[(f64, f64)]) {
    for (le, n) in add {
        match into.iter_mut().find(|(l, _)| l == le) {
            Some(e) => e.1 += n,
            None => into.push((*le, *n)),
        }
    }
    into.sort_by(|a, b| a.0.total_cmp(&b.0));
}

/// JSON, table and PNG of a replay in `out_dir`.
pub fn write_replay(replay: &Replay, out_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(out_dir)?;
    let json = out_dir.join("hpa-replay.json");
    std::fs::write(&json, serde_json::to_string_pretty(replay)?)
        .with_context(|| format!("writing {}", json.display()))?;
    println!("\n{}", replay_table(replay));
    println!("written: {}", json.display());
    let png = out_dir.join("hpa-replay.png");
    let points = |f: &dyn Fn(&ReplaySample) -> Option<f64>| -> Vec<(f64, f64)> {
        replay.samples.iter().filter_map(|s| f(s).map(|v| (s.t_secs, v))).collect()
    };
    let series = |name: &str, f: &dyn Fn(&ReplaySample) -> Option<f64>| Line::solid(name, points(f));
    let aimed = |name: &str, f: &dyn Fn(&ReplaySample) -> Option<f64>| Line::dashed(name, points(f));
    let panels = vec![
        Panel {
            title: "time-sale replicas".into(),
            y_label: "pods".into(),
            lines: vec![
                series("running", &|s| Some(f64::from(s.replicas))),
                series("ready", &|s| Some(f64::from(s.ready))),
                aimed("HPA desired", &|s| Some(f64::from(s.desired))),
            ],
        },
        Panel {
            title: "CPU, % of request (average over replicas)".into(),
            y_label: "%".into(),
            lines: vec![
                series("CPU", &|s| Some(s.cpu_pct_of_request)),
                aimed("target", &|_| Some(replay.target_utilization_pct)),
            ],
        },
        Panel {
            title: "purchases/s (all replicas)".into(),
            y_label: "1/s".into(),
            lines: vec![series("purchases/s", &|s| Some(s.purchases_per_s))],
        },
        Panel {
            title: "Purchase p99 (server, bucket bound)".into(),
            y_label: "ms".into(),
            lines: vec![series("p99", &|s| s.p99_ms)],
        },
    ];
    match write_png(&png, "HPA replay: time-sale under a flash-sale rush (seconds since the load started)", &panels) {
        Ok(()) => println!("written: {}", png.display()),
        Err(e) => println!("no PNG: {e:#}"),
    }
    Ok(())
}

/// The replay as a Markdown table (one row per sync).
pub fn replay_table(replay: &Replay) -> String {
    let mut t = String::from(
        "| t (s) | replicas | ready | CPU % of request | HPA desired | purchases/s | p99 (ms, ≤) |\n|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in &replay.samples {
        t.push_str(&format!(
            "| {:.0} | {} | {} | {:.0} | {} | {:.0} | {} |\n",
            s.t_secs,
            s.replicas,
            s.ready,
            s.cpu_pct_of_request,
            s.desired,
            s.purchases_per_s,
            s.p99_ms.map_or("-".into(), |v| format!("{v:.0}"))
        ));
    }
    t.push_str(&format!(
        "\nfirst added replica Ready {} after the load started; at most {} replicas; order/delivery fixed at {:?}\npurchases served per replica: {}\n",
        replay.first_added_ready_secs.map_or("never".to_owned(), |s| format!("{s:.0} s")),
        replay.max_replicas_seen,
        replay.fixed,
        replay.served.iter().map(|(p, n)| format!("{p} {n}")).collect::<Vec<_>>().join(", ")
    ));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = r#"# HELP cloudmart_rpc_server_requests_total gRPC calls served
# TYPE cloudmart_rpc_server_requests_total counter
cloudmart_rpc_server_requests_total{code="OK",rpc_method="Purchase",rpc_service="cloudmart.timesale.v1.TimeSaleService"} 90
cloudmart_rpc_server_requests_total{code="RESOURCE_EXHAUSTED",rpc_method="Purchase",rpc_service="cloudmart.timesale.v1.TimeSaleService"} 10
cloudmart_rpc_server_requests_total{code="0",rpc_method="GetSale",rpc_service="cloudmart.timesale.v1.TimeSaleService"} 5
cloudmart_rpc_server_duration_seconds_bucket{rpc_method="Purchase",rpc_service="s",le="0.001"} 10
cloudmart_rpc_server_duration_seconds_bucket{rpc_method="Purchase",rpc_service="s",le="0.005"} 80
cloudmart_rpc_server_duration_seconds_bucket{rpc_method="Purchase",rpc_service="s",le="0.05"} 99
cloudmart_rpc_server_duration_seconds_bucket{rpc_method="Purchase",rpc_service="s",le="+Inf"} 100
"#;

    #[test]
    fn purchase_calls_and_quantiles_from_metrics() {
        let s = parse_metrics(METRICS);
        assert_eq!(purchase_calls(&s), (100.0, 90.0));
        let b = purchase_buckets(&s);
        assert_eq!(b.len(), 4);
        assert_eq!(quantile_ms(&[], &b, 0.5), Some(5.0));
        assert_eq!(quantile_ms(&[], &b, 0.99), Some(50.0));
        assert_eq!(quantile_ms(&b, &b, 0.99), None, "no calls in between");
    }
}
