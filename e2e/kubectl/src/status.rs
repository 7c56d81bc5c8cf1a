//! `kubectl cloudmart status`: the service Deployments, the release's pods and the
//! time-sale autoscaler, as a table or (`-o json|yaml`) as one object; with `--orders` the
//! orders by status (`psql` run in the release's PostgreSQL pod) and with `--dlq` the
//! records of each dead-letter topic (`cloudmart-audit dlq list` as a Job).

use std::collections::BTreeMap;
use std::future::pending;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{AttachParams, ListParams};
use kube::{Api, Client};
use serde::Serialize;
use tokio::io::AsyncReadExt;

use crate::cli::OutputFormat;
use crate::scaling::{DeploymentView, HpaView, count_text, rfc3339};
use crate::tools::{ToolOptions, ToolOutcome, dlq_job, run_tool};
use crate::{AUTOSCALED_SERVICE, Release, SERVICES};

/// What `status` shows beyond the Deployments, the HPA and the pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusOptions {
    /// `-o`: a table when `None`.
    pub format: Option<OutputFormat>,
    /// `--orders`: count the orders by status.
    pub orders: bool,
    /// `--dlq`: run the dead-letter listing as this Job, with these options.
    pub dlq: Option<(ToolOptions, String)>,
}

/// Counts by name, or why they could not be had.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub counts: BTreeMap<String, u64>,
    /// Set when counting failed (the rest of the status is still shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Counts {
    fn of(result: Result<BTreeMap<String, u64>>) -> Self {
        match result {
            Ok(counts) => Self { counts, error: None },
            Err(err) => Self { counts: BTreeMap::new(), error: Some(crate::cluster::describe_error(&err)) },
        }
    }
}

/// The SQL `--orders` runs against the order service's database.
const ORDERS_BY_STATUS: &str = "SELECT status, COUNT(*) FROM orders GROUP BY status ORDER BY status";

/// How long `--orders` waits for `psql`.
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// `STATUS,COUNT` lines (psql `-tA -F,`) as counts; anything else is an error.
pub fn parse_counts(text: &str) -> Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let parsed = line.split_once(',').and_then(|(k, v)| Some((k.trim().to_owned(), v.trim().parse::<u64>().ok()?)));
        let (key, n) = parsed.ok_or_else(|| anyhow!("unexpected psql output line `{line}`"))?;
        counts.insert(key, n);
    }
    Ok(counts)
}

/// The `<topic>.dlq: N record(s)` lines of `cloudmart-audit dlq list` as counts by topic.
pub fn parse_dlq_counts(output: &str) -> BTreeMap<String, u64> {
    output
        .lines()
        .filter_map(|l| {
            let (topic, rest) = l.trim().split_once(": ")?;
            let n = rest.strip_suffix(" record(s)")?.parse::<u64>().ok()?;
            topic.ends_with(".dlq").then(|| (topic.to_owned(), n))
        })
        .collect()
}

/// Orders by status: `psql` in the release's PostgreSQL pod (its local socket), database
/// `order` (the chart's).
pub async fn orders_by_status(client: Client, release: &Release) -> Result<BTreeMap<String, u64>> {
    let ns = release.namespace.as_str();
    let pods: Api<Pod> = Api::namespaced(client, ns);
    let selector = format!("app.kubernetes.io/instance={},app.kubernetes.io/name=postgresql", release.name);
    let listed = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .with_context(|| format!("listing the PostgreSQL pods ({selector})"))?;
    let pod = listed
        .items
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .and_then(|p| p.metadata.name.clone())
        .ok_or_else(|| {
            anyhow!(
                "no running PostgreSQL pod ({selector}) in namespace {ns}: --orders needs the chart's own PostgreSQL"
            )
        })?;
    let command = ["psql", "-X", "-U", "postgres", "-d", "order", "-tA", "-F", ",", "-c", ORDERS_BY_STATUS];
    let exec = async {
        let mut attached = pods
            .exec(&pod, command, &AttachParams::default().container("postgresql").stderr(true))
            .await
            .with_context(|| format!("exec psql in pod {pod}"))?;
        let (mut stdout, mut stderr) = (attached.stdout(), attached.stderr());
        let status = attached.take_status();
        let (mut out, mut err) = (String::new(), String::new());
        if let Some(s) = stdout.as_mut() {
            s.read_to_string(&mut out).await.context("reading psql's output")?;
        }
        if let Some(s) = stderr.as_mut() {
            s.read_to_string(&mut err).await.context("reading psql's errors")?;
        }
        let status = match status {
            Some(status) => status.await,
            None => None,
        };
        if let Some(status) = status.filter(|s| s.status.as_deref() == Some("Failure")) {
            bail!("psql in pod {pod} failed: {} {}", status.message.unwrap_or_default(), err.trim());
        }
        parse_counts(&out).with_context(|| format!("psql in pod {pod}: {}", err.trim()))
    };
    tokio::time::timeout(EXEC_TIMEOUT, exec)
        .await
        .map_err(|_| anyhow!("psql in pod {pod} did not answer within {}s", EXEC_TIMEOUT.as_secs()))?
}

/// Records per dead-letter topic: `cloudmart-audit dlq list` as Job `job_name`.
pub async fn dlq_depth(
    client: Client,
    release: &Release,
    opts: &ToolOptions,
    job_name: &str,
) -> Result<BTreeMap<String, u64>> {
    let command = crate::cli::DlqCommand::List { topic: Vec::new() };
    let tool = dlq_job(client.clone(), release, &command, opts).await?;
    let mut output = Vec::new();
    let outcome = run_tool(client, release, &tool, opts, job_name, pending(), &mut output).await?;
    let output = String::from_utf8_lossy(&output);
    match outcome {
        ToolOutcome::Finished { exit_code: 0, .. } => Ok(parse_dlq_counts(&output)),
        ToolOutcome::Finished { exit_code, .. } => {
            let last = output.lines().rev().find(|l| !l.starts_with("deleted Job")).unwrap_or_default().to_owned();
            bail!("`cloudmart-audit dlq list` exited with {exit_code}: {last}")
        }
        ToolOutcome::Interrupted { job } => bail!("Job {job} was interrupted"),
    }
}

/// What `status` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    pub release: String,
    pub namespace: String,
    /// The three service Deployments, found or not.
    pub deployments: Vec<DeploymentStatus>,
    /// The time-sale HPA (`null`: not found).
    pub hpa: Option<HpaStatus>,
    /// Every pod of the release (label `app.kubernetes.io/instance=<release>`).
    pub pods: Vec<PodStatus>,
    /// `--orders`: orders by status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orders: Option<Counts>,
    /// `--dlq`: records per dead-letter topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letters: Option<Counts>,
}

/// One service Deployment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentStatus {
    pub service: String,
    pub name: String,
    pub found: bool,
    pub ready: Option<i32>,
    pub desired: Option<i32>,
    pub image: Option<String>,
}

/// The time-sale HPA.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HpaStatus {
    pub name: String,
    pub current_replicas: Option<i32>,
    pub desired_replicas: Option<i32>,
    pub min_replicas: i32,
    pub max_replicas: i32,
    pub cpu_current_percent: Option<i32>,
    pub cpu_target_percent: Option<i32>,
    /// RFC 3339.
    pub last_scale_time: Option<String>,
}

/// One pod of the release.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodStatus {
    pub name: String,
    /// Its `app.kubernetes.io/name` label: `order`, `kafka`, `load`, …
    pub component: String,
    pub ready_containers: usize,
    pub containers: usize,
    /// Like kubectl's STATUS: a container's waiting/terminated reason, `Terminating`, or the phase.
    pub status: String,
    pub restarts: i32,
    /// RFC 3339.
    pub created: Option<String>,
    /// Seconds since creation.
    pub age_secs: Option<i64>,
}

impl PodStatus {
    fn of(pod: &Pod, now_ms: i64) -> Self {
        let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
        let containers = pod.spec.as_ref().map_or(statuses.len(), |s| s.containers.len());
        let reason = statuses.iter().filter(|c| !c.ready).find_map(|c| {
            let state = c.state.as_ref()?;
            state
                .waiting
                .as_ref()
                .and_then(|w| w.reason.clone())
                .or_else(|| state.terminated.as_ref().and_then(|t| t.reason.clone()))
        });
        let status = if pod.metadata.deletion_timestamp.is_some() {
            "Terminating".to_owned()
        } else {
            reason.or_else(|| pod.status.as_ref().and_then(|s| s.phase.clone())).unwrap_or_else(|| "Unknown".to_owned())
        };
        let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0.as_millisecond());
        Self {
            name: pod.metadata.name.clone().unwrap_or_default(),
            component: pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/name").cloned())
                .unwrap_or_default(),
            ready_containers: statuses.iter().filter(|c| c.ready).count(),
            containers,
            status,
            restarts: statuses.iter().map(|c| c.restart_count).sum(),
            created: created.map(rfc3339),
            age_secs: created.map(|c| (now_ms - c).max(0) / 1000),
        }
    }
}

/// Reads the Deployments, the HPA and the pods of `release`.
pub async fn collect(client: Client, release: &Release) -> Result<StatusReport> {
    let ns = release.namespace.as_str();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client, ns);

    let mut rows = Vec::new();
    for service in SERVICES {
        let name = release.resource(service);
        let found =
            deployments.get_opt(&name).await.with_context(|| format!("reading Deployment {name} in namespace {ns}"))?;
        let view = found.as_ref().map(DeploymentView::of);
        rows.push(DeploymentStatus {
            service: service.to_owned(),
            name,
            found: view.is_some(),
            ready: view.as_ref().map(|d| d.ready),
            desired: view.as_ref().map(|d| d.desired),
            image: view.and_then(|d| d.image),
        });
    }
    let hpa_name = release.resource(AUTOSCALED_SERVICE);
    let hpa = hpas
        .get_opt(&hpa_name)
        .await
        .with_context(|| format!("reading HorizontalPodAutoscaler {hpa_name} in namespace {ns}"))?
        .map(|h| {
            let v = HpaView::of(&h);
            HpaStatus {
                name: hpa_name.clone(),
                current_replicas: v.current_replicas,
                desired_replicas: v.desired_replicas,
                min_replicas: v.min_replicas,
                max_replicas: v.max_replicas,
                cpu_current_percent: v.cpu_current,
                cpu_target_percent: v.cpu_target,
                last_scale_time: v.last_scale_unix_ms.map(rfc3339),
            }
        });
    let selector = format!("app.kubernetes.io/instance={}", release.name);
    let listed = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .with_context(|| format!("listing the pods of release {} in namespace {ns} ({selector})", release.name))?;
    let now_ms = k8s_openapi::jiff::Timestamp::now().as_millisecond();
    let mut pods: Vec<PodStatus> = listed.items.iter().map(|p| PodStatus::of(p, now_ms)).collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(StatusReport {
        release: release.name.clone(),
        namespace: ns.to_owned(),
        deployments: rows,
        hpa,
        pods,
        orders: None,
        dead_letters: None,
    })
}

/// Prints the Deployments (ready/desired replicas, image), the HPA (replicas, bounds, CPU
/// against target), the pods of `release` and the extras of `opts` as a table, or the
/// whole as JSON or YAML. An extra that cannot be counted is shown with its error.
///
/// Fails, after printing what it found, when a Deployment or the HPA is missing.
pub async fn status<W: Write + Send>(
    client: Client,
    release: &Release,
    opts: &StatusOptions,
    out: &mut W,
) -> Result<()> {
    let mut report = collect(client.clone(), release).await?;
    if opts.orders {
        report.orders = Some(Counts::of(orders_by_status(client.clone(), release).await));
    }
    if let Some((tool, job_name)) = &opts.dlq {
        report.dead_letters = Some(Counts::of(dlq_depth(client, release, tool, job_name).await));
    }
    match opts.format {
        None => render_table(&report, out)?,
        Some(OutputFormat::Json) => {
            writeln!(out, "{}", serde_json::to_string_pretty(&report).context("rendering the status as JSON")?)?
        }
        Some(OutputFormat::Yaml) => {
            out.write_all(serde_norway::to_string(&report).context("rendering the status as YAML")?.as_bytes())?
        }
    }

    let mut missing: Vec<String> =
        report.deployments.iter().filter(|d| !d.found).map(|d| format!("Deployment {}", d.name)).collect();
    if report.hpa.is_none() {
        missing.push(format!("HorizontalPodAutoscaler {}", release.resource(AUTOSCALED_SERVICE)));
    }
    if !missing.is_empty() {
        out.flush()?;
        bail!(
            "{} not found in namespace {}: is cloudmart installed there? Run `make deploy`, \
             or pass --namespace/--release (or --context) for another installation",
            missing.join(", "),
            release.namespace
        );
    }
    Ok(())
}

/// Age like kubectl: `42s`, `5m`, `3h`, `2d`.
fn age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The table `status` prints.
pub fn render_table<W: Write + ?Sized>(report: &StatusReport, out: &mut W) -> std::io::Result<()> {
    let hpa_name =
        report.hpa.as_ref().map_or_else(|| format!("{}-{AUTOSCALED_SERVICE}", report.release), |h| h.name.clone());
    let width =
        report.deployments.iter().map(|d| d.name.len()).chain([hpa_name.len(), "DEPLOYMENT".len()]).max().unwrap_or(0)
            + 2;
    writeln!(out, "release {} in namespace {}", report.release, report.namespace)?;
    writeln!(out)?;
    writeln!(out, "{:width$}{:<8}IMAGE", "DEPLOYMENT", "READY")?;
    for d in &report.deployments {
        match (d.found, d.ready, d.desired) {
            (true, Some(ready), Some(desired)) => writeln!(
                out,
                "{:width$}{:<8}{}",
                d.name,
                format!("{ready}/{desired}"),
                d.image.as_deref().unwrap_or("<none>")
            )?,
            _ => writeln!(out, "{:width$}not found", d.name)?,
        }
    }
    writeln!(out)?;
    writeln!(out, "{:width$}{:<10}{:<9}{:<9}CPU (current/target)", "HPA", "REPLICAS", "DESIRED", "MIN/MAX")?;
    match &report.hpa {
        Some(h) => {
            let percent = |v: Option<i32>| v.map_or_else(|| "<unknown>".to_owned(), |v| format!("{v}%"));
            writeln!(
                out,
                "{hpa_name:width$}{:<10}{:<9}{:<9}{}/{}",
                count_text(h.current_replicas),
                count_text(h.desired_replicas),
                format!("{}/{}", h.min_replicas, h.max_replicas),
                percent(h.cpu_current_percent),
                percent(h.cpu_target_percent)
            )?;
            if h.cpu_current_percent.is_none() {
                writeln!(out)?;
                writeln!(
                    out,
                    "note: the HPA has no CPU metrics yet (<unknown>). It needs metrics-server \
                     (`make deploy` installs it); the first figures appear about a minute after the pods start."
                )?;
            }
        }
        None => writeln!(out, "{hpa_name:width$}not found")?,
    }
    writeln!(out)?;
    if report.pods.is_empty() {
        writeln!(out, "no pods with label app.kubernetes.io/instance={}", report.release)?;
    } else {
        render_pods(report, out)?;
    }
    for (title, counts) in [("ORDERS", &report.orders), ("DEAD LETTERS", &report.dead_letters)] {
        let Some(counts) = counts else { continue };
        writeln!(out)?;
        match &counts.error {
            Some(error) => writeln!(out, "{title}  not counted: {error}")?,
            None if counts.counts.is_empty() => writeln!(out, "{title}  none")?,
            None => {
                let total: u64 = counts.counts.values().sum();
                let each: Vec<String> = counts.counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
                writeln!(out, "{title}  {}  (total {total})", each.join("  "))?;
            }
        }
    }
    Ok(())
}

/// The pod rows of the table.
fn render_pods<W: Write + ?Sized>(report: &StatusReport, out: &mut W) -> std::io::Result<()> {
    let pod_width = report.pods.iter().map(|p| p.name.len()).chain(["POD".len()]).max().unwrap_or(0) + 2;
    writeln!(out, "{:pod_width$}{:<8}{:<20}{:<10}AGE", "POD", "READY", "STATUS", "RESTARTS")?;
    for p in &report.pods {
        writeln!(
            out,
            "{:pod_width$}{:<8}{:<20}{:<10}{}",
            p.name,
            format!("{}/{}", p.ready_containers, p.containers),
            p.status,
            p.restarts,
            p.age_secs.map_or_else(|| "?".to_owned(), age)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psql_and_dlq_outputs_parse() {
        let counts = parse_counts("CANCELLED,3\nCONFIRMED,120\n\nPENDING,2\n").unwrap();
        assert_eq!(counts, BTreeMap::from([("CANCELLED".into(), 3), ("CONFIRMED".into(), 120), ("PENDING".into(), 2)]));
        assert!(parse_counts("ERROR: relation \"orders\" does not exist").is_err());
        assert_eq!(parse_counts("").unwrap(), BTreeMap::new());
        let dlq = "created Job x\norder-events.dlq 0:3 origin order-events/1/42 ce_id=e-1\n\
                   order-events.dlq: 1 record(s)\ndelivery-events.dlq: 0 record(s)\nnoise: 3 record(s)\ndeleted Job x\n";
        assert_eq!(
            parse_dlq_counts(dlq),
            BTreeMap::from([("delivery-events.dlq".into(), 0), ("order-events.dlq".into(), 1)])
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(
            [age(0), age(119), age(120), age(7199), age(7200), age(172_800)],
            ["0s", "119s", "2m", "119m", "2h", "2d"]
        );
    }

    #[test]
    fn pod_status_names_the_reason_a_container_is_not_ready() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "cloudmart-order-1", "labels": { "app.kubernetes.io/name": "order" },
                          "creationTimestamp": "2026-01-01T00:00:00Z" },
            "spec": { "containers": [{ "name": "order" }] },
            "status": { "phase": "Running", "containerStatuses": [{
                "name": "order", "ready": false, "restartCount": 4, "image": "i", "imageID": "",
                "state": { "waiting": { "reason": "CrashLoopBackOff" } } }] }
        }))
        .unwrap();
        let now = k8s_openapi::jiff::Timestamp::from_second(1_767_225_600 + 300).unwrap().as_millisecond();
        let status = PodStatus::of(&pod, now);
        assert_eq!(
            (
                status.component.as_str(),
                status.status.as_str(),
                status.restarts,
                status.ready_containers,
                status.containers
            ),
            ("order", "CrashLoopBackOff", 4, 0, 1)
        );
        assert_eq!(status.age_secs, Some(300));
        assert_eq!(status.created.as_deref(), Some("2026-01-01T00:00:00Z"));
    }
}
