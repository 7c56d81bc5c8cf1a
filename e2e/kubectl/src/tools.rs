//! `kubectl cloudmart audit` and `kubectl cloudmart dlq list|replay`: `cloudmart-audit`
//! from the tools image, run once as a Job in the release's namespace, its output printed
//! and its exit status passed on.
//!
//! The Job gets what the services get, by reference, never by value: each database URL is
//! the `DATABASE_URL` of that service's Deployment (in the chart a `secretKeyRef` to
//! `<release>-<service>-db`, or an external database's Secret) passed as
//! `AUDIT_<SERVICE>_DB`; the broker is `KAFKA_BROKERS` / `KAFKA_TOPIC_PREFIX` of the
//! order service's ConfigMap (`configMapKeyRef`). The pod carries the client label, which
//! the chart's NetworkPolicies admit to the databases; the `dlq` pod also carries
//! `cloudmart.io/kafka-client=true`, which they do not (yet) admit to the broker — where
//! NetworkPolicies are enforced, `dlq` needs a policy that does.

use std::future::Future;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMapKeySelector, Container, EnvVar, EnvVarSource};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::time::{Instant, MissedTickBehavior};

use crate::cli::{DlqCommand, ToolJobArgs};
use crate::job::{KAFKA_CLIENT_LABEL, TTL_AFTER_FINISHED_SECS, ToolJob, tool_job};
use crate::jobrun::{JobEnd, JobHandle, exit_code};
use crate::{Release, SERVICES};

/// Seconds the plugin waits beyond the Job's deadline before it gives up on it.
const WAIT_SLACK: Duration = Duration::from_secs(60);

/// Log lines of the tool printed (all of a normal run).
const LOG_LINES: i64 = 10_000;

/// How a tool Job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOptions {
    /// Image that holds `cloudmart-audit`.
    pub image: String,
    /// Kubernetes stops the Job after this long.
    pub timeout: Duration,
    /// Time between two looks at the Job.
    pub poll: Duration,
    /// Keep the Job after it finished.
    pub keep: bool,
}

impl From<&ToolJobArgs> for ToolOptions {
    fn from(args: &ToolJobArgs) -> Self {
        Self { image: args.image.clone(), timeout: args.timeout, poll: Duration::from_secs(args.poll), keep: args.keep }
    }
}

/// How a tool Job ended when the plugin did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolOutcome {
    /// The tool ran; its exit status.
    Finished { job: String, exit_code: i32 },
    /// Interrupted; the Job was deleted.
    Interrupted { job: String },
}

/// The service's container of `deployment` (named like the service, else the first).
fn container<'a>(deployment: &'a Deployment, service: &str) -> Option<&'a Container> {
    let containers = &deployment.spec.template.spec.as_ref()?.containers;
    containers.iter().find(|c| c.name == service).or_else(|| containers.first())
}

/// `AUDIT_<SERVICE>_DB` for each service: its Deployment's `DATABASE_URL`, by the same
/// reference (or value) the service gets it.
pub fn database_env(release: &Release, deployments: &[(&str, Option<Deployment>)]) -> Result<Vec<EnvVar>> {
    let mut env = Vec::new();
    for (service, deployment) in deployments {
        let name = release.resource(service);
        let deployment = deployment.as_ref().ok_or_else(|| {
            anyhow!("Deployment {name} not found in namespace {}: is cloudmart installed there?", release.namespace)
        })?;
        let url = container(deployment, service)
            .and_then(|c| c.env.as_ref())
            .and_then(|env| env.iter().find(|e| e.name == "DATABASE_URL"))
            .ok_or_else(|| {
                anyhow!("Deployment {name} has no DATABASE_URL: cannot tell the audit where its database is")
            })?;
        env.push(EnvVar {
            name: format!("AUDIT_{}_DB", service.to_ascii_uppercase()),
            value: url.value.clone(),
            value_from: url.value_from.clone(),
        });
    }
    Ok(env)
}

/// `KAFKA_BROKERS` and `KAFKA_TOPIC_PREFIX` from the ConfigMap the order service reads
/// them from (`envFrom` of its Deployment; else the chart's `<release>-order-config`).
pub fn kafka_env(release: &Release, order: Option<&Deployment>) -> Vec<EnvVar> {
    let config_map = order
        .and_then(|d| container(d, "order"))
        .and_then(|c| c.env_from.as_ref())
        .and_then(|from| from.iter().find_map(|f| f.config_map_ref.as_ref().map(|r| r.name.clone())))
        .unwrap_or_else(|| format!("{}-config", release.resource("order")));
    let key = |name: &str, optional: bool| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: config_map.clone(),
                key: name.to_owned(),
                optional: optional.then_some(true),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    vec![key("KAFKA_BROKERS", false), key("KAFKA_TOPIC_PREFIX", true)]
}

/// The services' Deployments (`None`: not found).
async fn deployments(client: Client, release: &Release) -> Result<Vec<(&'static str, Option<Deployment>)>> {
    let api: Api<Deployment> = Api::namespaced(client, &release.namespace);
    let mut found = Vec::new();
    for service in SERVICES {
        let name = release.resource(service);
        let d = api
            .get_opt(&name)
            .await
            .with_context(|| format!("reading Deployment {name} in namespace {}", release.namespace))?;
        found.push((service, d));
    }
    Ok(found)
}

/// The `cloudmart-audit` Job of `kubectl cloudmart audit`.
pub async fn audit_job(client: Client, release: &Release, settle_secs: u32, opts: &ToolOptions) -> Result<ToolJob> {
    let env = database_env(release, &deployments(client, release).await?)?;
    Ok(ToolJob {
        part: "audit",
        image: opts.image.clone(),
        command: vec!["cloudmart-audit".to_owned(), "--settle-secs".to_owned(), settle_secs.to_string()],
        env,
        deadline_secs: opts.timeout.as_secs(),
        pod_labels: Vec::new(),
    })
}

/// The `cloudmart-audit dlq …` Job of `kubectl cloudmart dlq …`.
pub async fn dlq_job(client: Client, release: &Release, command: &DlqCommand, opts: &ToolOptions) -> Result<ToolJob> {
    let api: Api<Deployment> = Api::namespaced(client, &release.namespace);
    let order_name = release.resource("order");
    let order = api
        .get_opt(&order_name)
        .await
        .with_context(|| format!("reading Deployment {order_name} in namespace {}", release.namespace))?;
    Ok(ToolJob {
        part: "dlq",
        image: opts.image.clone(),
        command: dlq_command(command),
        env: kafka_env(release, order.as_ref()),
        deadline_secs: opts.timeout.as_secs(),
        pod_labels: vec![(KAFKA_CLIENT_LABEL.0.to_owned(), KAFKA_CLIENT_LABEL.1.to_owned())],
    })
}

/// `cloudmart-audit dlq list|replay …` for `command`.
pub fn dlq_command(command: &DlqCommand) -> Vec<String> {
    let mut argv: Vec<String> = ["cloudmart-audit", "dlq"].map(str::to_owned).to_vec();
    match command {
        DlqCommand::List { topic } => {
            argv.push("list".to_owned());
            for t in topic {
                argv.extend(["--topic".to_owned(), t.clone()]);
            }
        }
        DlqCommand::Replay { topic, offsets, all, dry_run } => {
            argv.extend(["replay".to_owned(), "--topic".to_owned(), topic.clone()]);
            for o in offsets {
                argv.extend(["--offset".to_owned(), o.clone()]);
            }
            if *all {
                argv.push("--all".to_owned());
            }
            if *dry_run {
                argv.push("--dry-run".to_owned());
            }
        }
    }
    argv
}

/// Runs `tool` as Job `job_name`, prints its output to `out` and returns its exit status.
///
/// `cancel` interrupts it (the Job is deleted in the foreground). A Job that ends without
/// an exit status of its tool (it never started, its deadline passed) is an error.
pub async fn run_tool<W, C>(
    client: Client,
    release: &Release,
    tool: &ToolJob,
    opts: &ToolOptions,
    job_name: &str,
    cancel: C,
    out: &mut W,
) -> Result<ToolOutcome>
where
    W: Write + ?Sized,
    C: Future<Output = ()>,
{
    let ns = release.namespace.as_str();
    let handle = JobHandle::new(client, ns, job_name, tool.part);
    handle
        .jobs()
        .create(&PostParams::default(), &tool_job(release, tool, job_name))
        .await
        .with_context(|| format!("creating Job {job_name} in namespace {ns}"))?;
    writeln!(out, "created Job {job_name} in namespace {ns}: {} (image {})", tool.command.join(" "), tool.image)?;

    let followed = tokio::select! {
        result = follow(&handle, opts) => Some(result),
        () = cancel => None,
    };
    let result = match followed {
        None => {
            writeln!(out, "interrupted: stopping {}", tool.part)?;
            handle.delete(true, out).await?;
            return Ok(ToolOutcome::Interrupted { job: job_name.to_owned() });
        }
        Some(result) => match result {
            Ok(end) => finish(&handle, end, opts, out).await,
            Err(err) => Err(err),
        },
    };
    if opts.keep {
        writeln!(
            out,
            "kept Job {job_name} (Kubernetes removes it {TTL_AFTER_FINISHED_SECS}s after it finished; \
             `kubectl logs job/{job_name} -n {ns}` shows its output)"
        )?;
    } else if let Err(delete_err) = handle.delete(false, out).await {
        if result.is_ok() {
            return Err(delete_err);
        }
        writeln!(out, "warning: {delete_err:#}")?;
    }
    result.map(|exit_code| ToolOutcome::Finished { job: job_name.to_owned(), exit_code })
}

/// Waits for the Job to end (at most its deadline plus [`WAIT_SLACK`]).
async fn follow(handle: &JobHandle, opts: &ToolOptions) -> Result<JobEnd> {
    let deadline = Instant::now() + opts.timeout + WAIT_SLACK;
    let mut ticker = tokio::time::interval(opts.poll);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Some(end) = handle.end().await? {
            return Ok(end);
        }
        if Instant::now() >= deadline {
            bail!("Job {} did not finish within {}s (--timeout)", handle.name, opts.timeout.as_secs());
        }
    }
}

/// Prints the tool's output; its exit status.
async fn finish<W: Write + ?Sized>(handle: &JobHandle, end: JobEnd, opts: &ToolOptions, out: &mut W) -> Result<i32> {
    let job = handle.name.as_str();
    let pod = handle.pod().await?;
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    match handle.logs(&pod_name, LOG_LINES).await {
        Ok(logs) => {
            for line in logs.lines() {
                writeln!(out, "{line}")?;
            }
        }
        Err(err) => writeln!(out, "no output of pod {pod_name}: {err:#}")?,
    }
    match (exit_code(&pod, &handle.container), end) {
        (Some(code), _) => Ok(code),
        (None, JobEnd::Succeeded) => Ok(0),
        (None, JobEnd::Failed(why)) => bail!(
            "Job {job} failed before its tool ended ({why}): is {} a cloudmart tools image with cloudmart-audit? \
             `kubectl describe job {job}` (run with --keep) says more",
            opts.image
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(service: &str, env: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": { "name": format!("cloudmart-{service}") },
            "spec": { "selector": {}, "template": { "spec": { "containers": [
                { "name": "istio-proxy" },
                { "name": service, "env": env, "envFrom": [{ "configMapRef": { "name": format!("cloudmart-{service}-config") } }] }
            ] } } }
        }))
        .unwrap()
    }

    fn secret_url(service: &str) -> serde_json::Value {
        json!([{ "name": "POD_NAME", "value": "x" },
               { "name": "DATABASE_URL", "valueFrom": { "secretKeyRef": { "name": format!("cloudmart-{service}-db"), "key": "url" } } }])
    }

    #[test]
    fn the_audit_gets_each_services_database_url_by_reference() {
        let release = Release::new("shop", "cloudmart");
        let found: Vec<(&str, Option<Deployment>)> =
            SERVICES.iter().map(|s| (*s, Some(deployment(s, secret_url(s))))).collect();
        let env = database_env(&release, &found).unwrap();
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["AUDIT_ORDER_DB", "AUDIT_DELIVERY_DB", "AUDIT_TIMESALE_DB"]);
        let secret = env[2].value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).unwrap();
        assert_eq!((secret.name.as_str(), secret.key.as_str()), ("cloudmart-timesale-db", "url"));
        assert_eq!(env[0].value, None, "never the URL itself");

        let plain =
            vec![("order", Some(deployment("order", json!([{ "name": "DATABASE_URL", "value": "sqlite://x" }]))))];
        assert_eq!(database_env(&release, &plain).unwrap()[0].value.as_deref(), Some("sqlite://x"));
        let err = database_env(&release, &[("order", None)]).unwrap_err().to_string();
        assert!(err.contains("Deployment cloudmart-order not found in namespace shop"), "{err}");
        let err = database_env(&release, &[("order", Some(deployment("order", json!([]))))]).unwrap_err().to_string();
        assert!(err.contains("Deployment cloudmart-order has no DATABASE_URL"), "{err}");
    }

    #[test]
    fn the_dlq_tool_gets_the_broker_from_the_order_config_map() {
        let release = Release::new("shop", "cm");
        let env = kafka_env(&release, Some(&deployment("order", json!([]))));
        let refs: Vec<(&str, &str, &str, Option<bool>)> = env
            .iter()
            .map(|e| {
                let r = e.value_from.as_ref().and_then(|v| v.config_map_key_ref.as_ref()).unwrap();
                (e.name.as_str(), r.name.as_str(), r.key.as_str(), r.optional)
            })
            .collect();
        assert_eq!(
            refs,
            [
                ("KAFKA_BROKERS", "cloudmart-order-config", "KAFKA_BROKERS", None),
                ("KAFKA_TOPIC_PREFIX", "cloudmart-order-config", "KAFKA_TOPIC_PREFIX", Some(true))
            ]
        );
        let fallback = kafka_env(&release, None);
        assert_eq!(
            fallback[0].value_from.as_ref().unwrap().config_map_key_ref.as_ref().unwrap().name,
            "cm-order-config"
        );
    }

    #[test]
    fn dlq_commands_reach_the_tool() {
        let list = DlqCommand::List { topic: vec!["order-events".into(), "delivery-events".into()] };
        assert_eq!(
            dlq_command(&list),
            ["cloudmart-audit", "dlq", "list", "--topic", "order-events", "--topic", "delivery-events"]
        );
        let replay = DlqCommand::Replay {
            topic: "timesale-events".into(),
            offsets: vec!["0:3".into(), "7".into()],
            all: false,
            dry_run: true,
        };
        assert_eq!(
            dlq_command(&replay),
            [
                "cloudmart-audit",
                "dlq",
                "replay",
                "--topic",
                "timesale-events",
                "--offset",
                "0:3",
                "--offset",
                "7",
                "--dry-run"
            ]
        );
    }
}
