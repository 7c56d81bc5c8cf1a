//! The Jobs the plugin runs from the tools image: the load generator (`cloudmart-load`
//! against the time-sale or order Service) and the audit and dead-letter tools
//! (`cloudmart-audit`). Each is a single pod, never retried, hardened like the chart's own
//! pods and labelled `cloudmart.io/client=true` so the chart's NetworkPolicies let it reach
//! the services and the databases.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::{AUTOSCALED_SERVICE, LoadOptions, Release, Scenario};

/// Image with `cloudmart-load` that `make deploy` loads into the kind cluster.
pub const DEFAULT_IMAGE: &str = "cloudmart/tools:dev";

/// Pod label the chart's NetworkPolicy requires of clients of the services.
pub const CLIENT_LABEL: (&str, &str) = ("cloudmart.io/client", "true");

/// Name of the load generator's container.
pub const CONTAINER_NAME: &str = "load";

/// Seconds the Job may run beyond the load duration (pull, start, report) before
/// Kubernetes stops it.
pub const DEADLINE_SLACK_SECS: u64 = 120;

/// Seconds a finished Job stays around when nobody deletes it (`--keep`, a crash).
pub const TTL_AFTER_FINISHED_SECS: i32 = 600;

/// Seconds a Job's pod gets to stop when its Job is deleted.
pub const TERMINATION_GRACE_SECS: i64 = 5;

/// Non-root user and group of the load generator (distroless `nonroot`).
const NONROOT_ID: i64 = 65532;

/// Name of a Job of kind `part` (`load`, `audit`, `dlq`) started at `unix_secs`:
/// `<release>-<part>-<unix-seconds>`.
pub fn job_name(release: &Release, part: &str, unix_secs: u64) -> String {
    format!("{}-{unix_secs}", release.resource(part))
}

/// The `cloudmart-load` command line of the Job's container.
pub fn load_command(release: &Release, opts: &LoadOptions) -> Vec<String> {
    let mut command = vec![
        "cloudmart-load".to_owned(),
        "--scenario".to_owned(),
        opts.scenario.as_str().to_owned(),
        "--timesale-endpoint".to_owned(),
        format!("http://{}:{}", release.resource(AUTOSCALED_SERVICE), opts.timesale_port),
    ];
    if opts.scenario == Scenario::Orders {
        command.extend([
            "--order-endpoint".to_owned(),
            format!("http://{}:{}", release.resource("order"), opts.order_port),
            // The chart fails no postal code by default: an order shipped to one would be
            // delivered, and counted as a fault that did not happen.
            "--fault-share".to_owned(),
            "0".to_owned(),
        ]);
    }
    match &opts.ramp {
        Some(ramp) => command.extend(["--ramp".to_owned(), ramp.to_string()]),
        None => command.extend(["--sale-rps".to_owned(), opts.sale_rps.to_string()]),
    }
    if let (Some(stock), Scenario::FlashSale) = (opts.stock, opts.scenario) {
        command.extend(["--stock".to_owned(), stock.to_string()]);
    }
    command.extend([
        "--duration".to_owned(),
        format!("{}s", opts.duration.as_secs()),
        "--concurrency".to_owned(),
        opts.concurrency.to_string(),
    ]);
    command
}

/// Labels of the load Job (its pod gets these plus [`CLIENT_LABEL`]).
pub fn job_labels(release: &Release) -> BTreeMap<String, String> {
    labels(release, "load", "load-generator")
}

/// The labels of a Job of the plugin: `app.kubernetes.io/name` = `name`, `component`.
fn labels(release: &Release, name: &str, component: &str) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", name),
        ("app.kubernetes.io/instance", release.name.as_str()),
        ("app.kubernetes.io/part-of", "cloudmart"),
        ("app.kubernetes.io/component", component),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// `cpu` and `memory` quantities.
fn quantities(cpu: &str, memory: &str) -> BTreeMap<String, Quantity> {
    BTreeMap::from([("cpu".to_owned(), Quantity(cpu.to_owned())), ("memory".to_owned(), Quantity(memory.to_owned()))])
}

/// A container of the tools image: non-root, read-only root filesystem, no capabilities.
fn tools_container(
    name: &str,
    image: &str,
    command: Vec<String>,
    requests: (&str, &str),
    limits: (&str, &str),
) -> Container {
    Container {
        name: name.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: Some(command),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(requests.0, requests.1)),
            limits: Some(quantities(limits.0, limits.1)),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Job that runs the load generator once (no retries) for `opts`.
pub fn load_job(release: &Release, opts: &LoadOptions, name: &str) -> Job {
    let container =
        tools_container(CONTAINER_NAME, &opts.image, load_command(release, opts), ("250m", "64Mi"), ("1", "256Mi"));
    let deadline = opts.duration.as_secs().saturating_add(DEADLINE_SLACK_SECS);
    one_pod_job(release, name, job_labels(release), container, deadline, Vec::new())
}

/// What a Job of a `cloudmart-audit` subcommand runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolJob {
    /// `audit` or `dlq`: the Job's `app.kubernetes.io/name` and its container's name.
    pub part: &'static str,
    /// Image that holds the tool.
    pub image: String,
    /// The container's command.
    pub command: Vec<String>,
    /// Its environment (database URLs and broker settings, by reference).
    pub env: Vec<EnvVar>,
    /// Seconds Kubernetes lets it run.
    pub deadline_secs: u64,
    /// Pod labels beyond the Job's and [`CLIENT_LABEL`] (e.g. [`KAFKA_CLIENT_LABEL`]).
    pub pod_labels: Vec<(String, String)>,
}

/// Pod label of the plugin's Jobs that talk to Kafka (`dlq`). The chart's NetworkPolicies
/// admit client pods to the services and the databases only; a policy admitting this label
/// to the broker lets `dlq` work where policies are enforced.
pub const KAFKA_CLIENT_LABEL: (&str, &str) = ("cloudmart.io/kafka-client", "true");

/// The Job that runs `tool` once: like the load Job, with an empty `/tmp`.
pub fn tool_job(release: &Release, tool: &ToolJob, name: &str) -> Job {
    let mut container =
        tools_container(tool.part, &tool.image, tool.command.clone(), ("50m", "32Mi"), ("500m", "256Mi"));
    container.env = Some(tool.env.clone());
    container.volume_mounts =
        Some(vec![VolumeMount { name: "tmp".to_owned(), mount_path: "/tmp".to_owned(), ..Default::default() }]);
    let tmp = Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource { size_limit: Some(Quantity("64Mi".to_owned())), ..Default::default() }),
        ..Default::default()
    };
    let mut job =
        one_pod_job(release, name, labels(release, tool.part, tool.part), container, tool.deadline_secs, vec![tmp]);
    if let Some(labels) = job.spec.as_mut().and_then(|s| s.template.metadata.as_mut()).and_then(|m| m.labels.as_mut()) {
        labels.extend(tool.pod_labels.iter().cloned());
    }
    job
}

/// A Job of one pod running `container` once, never retried, removed by Kubernetes
/// [`TTL_AFTER_FINISHED_SECS`] after it finished, stopped after `deadline_secs`.
fn one_pod_job(
    release: &Release,
    name: &str,
    labels: BTreeMap<String, String>,
    container: Container,
    deadline_secs: u64,
    volumes: Vec<Volume>,
) -> Job {
    let mut pod_labels = labels.clone();
    pod_labels.insert(CLIENT_LABEL.0.to_owned(), CLIENT_LABEL.1.to_owned());
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(release.namespace.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            ttl_seconds_after_finished: Some(TTL_AFTER_FINISHED_SECS),
            active_deadline_seconds: Some(i64::try_from(deadline_secs).unwrap_or(i64::MAX)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), ..Default::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    // An interrupted run deletes its Job and waits for the pod: no 30 s default.
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECS),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(NONROOT_ID),
                        run_as_group: Some(NONROOT_ID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Job as YAML, the way `load --dry-run` prints it.
pub fn to_yaml(job: &Job) -> Result<String> {
    serde_norway::to_string(job).context("rendering the Job as YAML")
}
