//! `kubectl cloudmart load`: the load generator as a Kubernetes Job, followed to its end.
//!
//! 1. Check that the time-sale HPA exists (the run is about autoscaling).
//! 2. Create the Job ([`crate::job::load_job`]).
//! 3. Every `poll`, sample the HPA and the time-sale Deployment and print a line; stop when
//!    the Job has completed or failed.
//! 4. Read the `CLOUDMART_LOAD_REPORT` line from the Job's pod log and print the report.
//! 5. Delete the Job (background propagation) unless asked to keep it; an interrupted run
//!    always deletes it, so the load stops with the plugin.

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::{Api, Client};
use tokio::time::{Instant, MissedTickBehavior};

use crate::job::{CONTAINER_NAME, TTL_AFTER_FINISHED_SECS, load_job, to_yaml};
use crate::report::{HpaSample, LoadGenReport, REPORT_PREFIX, ScalingSummary, find_report, render};
use crate::scaling::{DeploymentView, HpaView, count_text};
use crate::{AUTOSCALED_SERVICE, Release, Scenario};
use cloudmart_load_report::ramp::Ramp;

/// Log lines shown when a run fails or its report line is missing.
pub const TAIL_LINES_ON_FAILURE: usize = 20;

/// Log lines fetched from the load generator's pod (its report is the last one).
const LOG_LINES_FETCHED: i64 = 1000;

/// What a load run does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// What the load generator sends.
    pub scenario: Scenario,
    /// Calls per second aimed for (unless `ramp`).
    pub sale_rps: u32,
    /// Rates one after the other over `duration`, instead of `sale_rps`.
    pub ramp: Option<Ramp>,
    /// How long to generate load (whole seconds are passed on).
    pub duration: Duration,
    /// Requests kept in flight.
    pub concurrency: u32,
    /// Image that holds `cloudmart-load`.
    pub image: String,
    /// Time between two samples of the HPA and the Job.
    pub poll: Duration,
    /// Keep the Job after a finished run.
    pub keep: bool,
    /// Draw the report's series and the HPA's replicas into this PNG.
    pub chart: Option<PathBuf>,
}

/// How a load run ended when it did not fail.
#[derive(Debug)]
pub enum LoadOutcome {
    /// The Job completed and its report was read.
    Finished(Box<LoadSummary>),
    /// The cancel signal (Ctrl-C) came first; the Job was deleted.
    Interrupted {
        /// Name of the Job.
        job: String,
    },
}

/// The result of a finished load run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSummary {
    /// Name of the Job.
    pub job: String,
    /// The load generator's figures.
    pub report: LoadGenReport,
    /// What the autoscaler did meanwhile.
    pub scaling: ScalingSummary,
}

/// Runs the load generator as Job `job_name` for `release` and reports to `out`.
///
/// `cancel` interrupts the run (the binary passes Ctrl-C): the Job is then deleted and
/// [`LoadOutcome::Interrupted`] returned. A failed Job, or one whose log has no report
/// line, is an error naming the Job, after its last log lines were written to `out`.
pub async fn load<W, C>(
    client: Client,
    release: &Release,
    opts: &LoadOptions,
    job_name: &str,
    cancel: C,
    out: &mut W,
) -> Result<LoadOutcome>
where
    W: Write + ?Sized,
    C: Future<Output = ()>,
{
    let ns = release.namespace.as_str();
    if opts.chart.is_some() {
        // Before minutes of load, not after: the chart needs a font.
        cloudmart_load_report::chart::font().context("--chart")?;
    }
    let run = Run::new(client, release, opts, job_name);

    let hpa = run
        .hpas
        .get_opt(&run.hpa_name)
        .await
        .with_context(|| format!("reading HorizontalPodAutoscaler {} in namespace {ns}", run.hpa_name))?
        .ok_or_else(|| {
            anyhow!(
                "HorizontalPodAutoscaler {} not found in namespace {ns}: the load test follows time-sale \
                 autoscaling, so cloudmart must be installed there with autoscaling on (`make deploy`), \
                 or pass --namespace/--release for another installation",
                run.hpa_name
            )
        })?;
    let start = HpaView::of(&hpa);
    let replicas_at_start = start.current_replicas.or(start.desired_replicas).unwrap_or(start.min_replicas);

    let job = load_job(release, opts, job_name);
    run.jobs
        .create(&PostParams::default(), &job)
        .await
        .with_context(|| format!("creating Job {job_name} in namespace {ns}"))?;
    writeln!(
        out,
        "created Job {job_name} in namespace {ns}: {} {} for {}s, concurrency {}, image {}",
        opts.scenario.as_str(),
        opts.ramp.as_ref().map_or_else(|| format!("{}/s", opts.sale_rps), |r| format!("ramp {r}/s")),
        opts.duration.as_secs(),
        opts.concurrency,
        opts.image
    )?;
    writeln!(
        out,
        "HPA {}: {replicas_at_start} replicas (min {}, max {}), cpu {}",
        run.hpa_name,
        start.min_replicas,
        start.max_replicas,
        start.cpu_text()
    )?;

    let followed = tokio::select! {
        result = run.follow(replicas_at_start, out) => Some(result),
        () = cancel => None,
    };

    let interrupted = followed.is_none();
    let outcome = match followed {
        None => {
            writeln!(out, "interrupted: stopping the load")?;
            Ok(LoadOutcome::Interrupted { job: job_name.to_owned() })
        }
        Some(Ok(summary)) => Ok(LoadOutcome::Finished(Box::new(summary))),
        Some(Err(err)) => Err(err),
    };

    if opts.keep && !interrupted {
        writeln!(
            out,
            "kept Job {job_name} (Kubernetes removes it {TTL_AFTER_FINISHED_SECS}s after it finished; \
             `kubectl delete job {job_name} -n {ns}` does it now)"
        )?;
        return outcome;
    }
    let deleted = run
        .jobs
        .delete(job_name, &DeleteParams::background())
        .await
        .with_context(|| format!("deleting Job {job_name} in namespace {ns}"));
    match (deleted, outcome) {
        (Ok(_), outcome) => {
            writeln!(out, "deleted Job {job_name}")?;
            outcome
        }
        (Err(err), Ok(_)) => Err(err),
        (Err(delete_err), Err(err)) => {
            writeln!(out, "warning: {delete_err:#}")?;
            Err(err)
        }
    }
}

/// `load --dry-run`: writes the Job that [`load`] would create, as YAML, without
/// contacting the cluster.
pub fn dry_run<W: Write + ?Sized>(release: &Release, opts: &LoadOptions, job_name: &str, out: &mut W) -> Result<()> {
    let yaml = to_yaml(&load_job(release, opts, job_name))?;
    out.write_all(yaml.as_bytes()).context("writing the Job manifest")?;
    Ok(())
}

/// How a Job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum JobEnd {
    Succeeded,
    Failed(String),
}

/// The end of `job` if it has ended: its `Complete`/`Failed` condition (or the
/// `SuccessCriteriaMet`/`FailureTarget` that precede them), else its pod counts.
fn job_end(job: &Job) -> Option<JobEnd> {
    let status = job.status.as_ref()?;
    for condition in status.conditions.iter().flatten().filter(|c| c.status == "True") {
        match condition.type_.as_str() {
            "Complete" | "SuccessCriteriaMet" => return Some(JobEnd::Succeeded),
            "Failed" | "FailureTarget" => {
                let why = [condition.reason.as_deref(), condition.message.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": ");
                return Some(JobEnd::Failed(if why.is_empty() { "condition Failed".to_owned() } else { why }));
            }
            _ => {}
        }
    }
    if status.succeeded.unwrap_or(0) > 0 {
        Some(JobEnd::Succeeded)
    } else if status.failed.unwrap_or(0) > 0 {
        Some(JobEnd::Failed("its pod failed".to_owned()))
    } else {
        None
    }
}

/// The wall clock in Unix milliseconds (0 before 1970).
fn unix_ms_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The last `n` lines of `logs`.
fn tail(logs: &str, n: usize) -> Vec<&str> {
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// The APIs and names one load run works with.
struct Run<'a> {
    release: &'a Release,
    opts: &'a LoadOptions,
    job_name: &'a str,
    hpa_name: String,
    deployment_name: String,
    hpas: Api<HorizontalPodAutoscaler>,
    deployments: Api<Deployment>,
    jobs: Api<Job>,
    pods: Api<Pod>,
}

impl<'a> Run<'a> {
    fn new(client: Client, release: &'a Release, opts: &'a LoadOptions, job_name: &'a str) -> Self {
        let ns = release.namespace.as_str();
        Self {
            release,
            opts,
            job_name,
            hpa_name: release.resource(AUTOSCALED_SERVICE),
            deployment_name: release.resource(AUTOSCALED_SERVICE),
            hpas: Api::namespaced(client.clone(), ns),
            deployments: Api::namespaced(client.clone(), ns),
            jobs: Api::namespaced(client.clone(), ns),
            pods: Api::namespaced(client, ns),
        }
    }

    /// Samples until the Job ends, then reads and prints its report.
    async fn follow<W: Write + ?Sized>(&self, replicas_at_start: i32, out: &mut W) -> Result<LoadSummary> {
        let ns = self.release.namespace.as_str();
        let job_name = self.job_name;
        let mut scaling = ScalingSummary {
            hpa: self.hpa_name.clone(),
            replicas_at_start,
            max_replicas: replicas_at_start,
            first_scale_up: None,
            samples: 0,
            timeline: Vec::new(),
        };
        let started = Instant::now();
        let mut ticker = tokio::time::interval(self.opts.poll);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let end = loop {
            ticker.tick().await;
            self.sample(started.elapsed(), &mut scaling, out).await?;
            let job =
                self.jobs.get(job_name).await.with_context(|| format!("reading Job {job_name} in namespace {ns}"))?;
            if let Some(end) = job_end(&job) {
                break end;
            }
        };

        let logs = self.pod_logs().await;
        match end {
            JobEnd::Succeeded => {
                let (pod, logs) = logs?;
                match find_report(&logs).with_context(|| format!("reading the report of Job {job_name} (pod {pod})"))? {
                    Some(report) => {
                        render(out, job_name, &report, &scaling)?;
                        if let Some(path) = &self.opts.chart {
                            crate::chart::write(path, job_name, &report, &scaling, out)?;
                        }
                        Ok(LoadSummary { job: job_name.to_owned(), report, scaling })
                    }
                    None => {
                        self.print_tail(&pod, &logs, out)?;
                        bail!(
                            "Job {job_name} in namespace {ns} completed, but its pod {pod} printed no \
                             `{}` line: is {} a cloudmart tools image with the load generator? (last log lines above)",
                            REPORT_PREFIX.trim_end(),
                            self.opts.image
                        )
                    }
                }
            }
            JobEnd::Failed(why) => {
                match &logs {
                    Ok((pod, logs)) => self.print_tail(pod, logs, out)?,
                    Err(err) => writeln!(out, "no logs of Job {job_name}: {err:#}")?,
                }
                bail!(
                    "load Job {job_name} in namespace {ns} failed ({why}); \
                     see its last log lines above, or `kubectl describe job {job_name} -n {ns}` (run with --keep)"
                )
            }
        }
    }

    /// One look at the HPA and the Deployment: prints a line and updates `scaling`.
    async fn sample<W: Write + ?Sized>(&self, t: Duration, scaling: &mut ScalingSummary, out: &mut W) -> Result<()> {
        let deployment = self.deployments.get(&self.deployment_name).await.ok().map(|d| DeploymentView::of(&d));
        let ready = deployment.map_or_else(|| "?/?".to_owned(), |d| format!("{}/{}", d.ready, d.desired));
        let secs = t.as_secs();
        match self.hpas.get(&self.hpa_name).await {
            Ok(hpa) => {
                let view = HpaView::of(&hpa);
                scaling.samples += 1;
                scaling.timeline.push(HpaSample {
                    since_job: t,
                    at_unix_ms: unix_ms_now(),
                    current: view.current_replicas,
                    desired: view.desired_replicas,
                });
                if let Some(current) = view.current_replicas {
                    scaling.max_replicas = scaling.max_replicas.max(current);
                    if current > scaling.replicas_at_start && scaling.first_scale_up.is_none() {
                        scaling.first_scale_up = Some(t);
                    }
                }
                writeln!(
                    out,
                    "t={secs}s  {AUTOSCALED_SERVICE} replicas {} (desired {})  ready {ready}  cpu {}",
                    count_text(view.current_replicas),
                    count_text(view.desired_replicas),
                    view.cpu_text()
                )?;
            }
            Err(err) => writeln!(out, "t={secs}s  could not read HorizontalPodAutoscaler {}: {err}", self.hpa_name)?,
        }
        Ok(())
    }

    /// The name and log (its last lines) of the Job's pod.
    async fn pod_logs(&self) -> Result<(String, String)> {
        let ns = self.release.namespace.as_str();
        let job_name = self.job_name;
        let pods = self
            .pods
            .list(&ListParams::default().labels(&format!("job-name={job_name}")))
            .await
            .with_context(|| format!("listing the pods of Job {job_name} in namespace {ns}"))?;
        let pod = pods
            .items
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .next_back()
            .with_context(|| format!("Job {job_name} in namespace {ns} has no pod (label job-name={job_name})"))?;
        let params = LogParams {
            container: Some(CONTAINER_NAME.to_owned()),
            tail_lines: Some(LOG_LINES_FETCHED),
            ..LogParams::default()
        };
        let logs = self
            .pods
            .logs(&pod, &params)
            .await
            .with_context(|| format!("reading the log of pod {pod} (Job {job_name}) in namespace {ns}"))?;
        Ok((pod, logs))
    }

    fn print_tail<W: Write + ?Sized>(&self, pod: &str, logs: &str, out: &mut W) -> std::io::Result<()> {
        let lines = tail(logs, TAIL_LINES_ON_FAILURE);
        writeln!(out, "last {} log lines of pod {pod}:", lines.len())?;
        for line in lines {
            writeln!(out, "  | {line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    use super::*;

    fn job_with(status: JobStatus) -> Job {
        Job { status: Some(status), ..Job::default() }
    }

    fn condition(type_: &str, status: &str) -> JobCondition {
        JobCondition { type_: type_.to_owned(), status: status.to_owned(), ..JobCondition::default() }
    }

    #[test]
    fn job_end_reads_conditions_then_counts() {
        assert_eq!(job_end(&Job::default()), None);
        assert_eq!(job_end(&job_with(JobStatus { active: Some(1), ..JobStatus::default() })), None);
        let complete = JobStatus { conditions: Some(vec![condition("Complete", "True")]), ..JobStatus::default() };
        assert_eq!(job_end(&job_with(complete)), Some(JobEnd::Succeeded));
        let not_yet = JobStatus { conditions: Some(vec![condition("Complete", "False")]), ..JobStatus::default() };
        assert_eq!(job_end(&job_with(not_yet)), None);
        let failed = JobStatus {
            conditions: Some(vec![JobCondition {
                reason: Some("DeadlineExceeded".to_owned()),
                ..condition("Failed", "True")
            }]),
            ..JobStatus::default()
        };
        assert_eq!(job_end(&job_with(failed)), Some(JobEnd::Failed("DeadlineExceeded".to_owned())));
        assert_eq!(
            job_end(&job_with(JobStatus { succeeded: Some(1), ..JobStatus::default() })),
            Some(JobEnd::Succeeded)
        );
        assert!(matches!(
            job_end(&job_with(JobStatus { failed: Some(1), ..JobStatus::default() })),
            Some(JobEnd::Failed(_))
        ));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let logs: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let t = tail(&logs, 20);
        assert_eq!(t.len(), 20);
        assert_eq!((t[0], t[19]), ("line 11", "line 30"));
        assert_eq!(tail("a\nb", 20), vec!["a", "b"]);
    }
}
