//! The load-generator Job: a single pod running `cloudmart-load` against the time-sale
//! Service, hardened like the chart's own pods and labelled so the chart's NetworkPolicy
//! lets it in.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile,
    SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::{AUTOSCALED_SERVICE, LoadOptions, ORDER_GRPC_PORT, Release, Scenario, TIMESALE_GRPC_PORT};

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

/// Non-root user and group of the load generator (distroless `nonroot`).
const NONROOT_ID: i64 = 65532;

/// Name of a load Job started at `unix_secs`: `<release>-load-<unix-seconds>`.
pub fn job_name(release: &Release, unix_secs: u64) -> String {
    format!("{}-{unix_secs}", release.resource("load"))
}

/// The `cloudmart-load` command line of the Job's container.
pub fn load_command(release: &Release, opts: &LoadOptions) -> Vec<String> {
    let mut command = vec![
        "cloudmart-load".to_owned(),
        "--scenario".to_owned(),
        opts.scenario.as_str().to_owned(),
        "--timesale-endpoint".to_owned(),
        format!("http://{}:{TIMESALE_GRPC_PORT}", release.resource(AUTOSCALED_SERVICE)),
    ];
    if opts.scenario == Scenario::Orders {
        command.extend([
            "--order-endpoint".to_owned(),
            format!("http://{}:{ORDER_GRPC_PORT}", release.resource("order")),
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
    command.extend([
        "--duration".to_owned(),
        format!("{}s", opts.duration.as_secs()),
        "--concurrency".to_owned(),
        opts.concurrency.to_string(),
    ]);
    command
}

/// Labels of the Job (its pod gets these plus [`CLIENT_LABEL`]).
pub fn job_labels(release: &Release) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", "load"),
        ("app.kubernetes.io/instance", release.name.as_str()),
        ("app.kubernetes.io/part-of", "cloudmart"),
        ("app.kubernetes.io/component", "load-generator"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The Job that runs the load generator once (no retries) for `opts`.
pub fn load_job(release: &Release, opts: &LoadOptions, name: &str) -> Job {
    let labels = job_labels(release);
    let mut pod_labels = labels.clone();
    pod_labels.insert(CLIENT_LABEL.0.to_owned(), CLIENT_LABEL.1.to_owned());

    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    let container = Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(opts.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: Some(load_command(release, opts)),
        resources: Some(ResourceRequirements {
            requests: Some(quantities("250m", "64Mi")),
            limits: Some(quantities("1", "256Mi")),
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
    };

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
            active_deadline_seconds: Some(
                i64::try_from(opts.duration.as_secs().saturating_add(DEADLINE_SLACK_SECS)).unwrap_or(i64::MAX),
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), ..Default::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
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
    serde_norway::to_string(job).context("rendering the load Job as YAML")
}
