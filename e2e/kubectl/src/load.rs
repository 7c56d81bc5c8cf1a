//! `kubectl cloudmart load`: the load generator as a Kubernetes Job, followed to its end,
//! with what the autoscaler and every Deployment did meanwhile.
//!
//! 1. Check that the time-sale HPA exists (the run is about autoscaling) and take a
//!    baseline sample of the three Deployments.
//! 2. Create the Job ([`crate::job::load_job`]).
//! 3. Every `poll`, sample the HPA, the order/delivery/time-sale Deployments and the load
//!    generator's last progress line (rate, p99) and print a row of the live table; stop
//!    when the Job has completed or failed.
//! 4. Read the `CLOUDMART_LOAD_REPORT` line from the Job's pod log and print the report;
//!    with `--expect-scale timesale`, print the scale-up verdict ([`crate::verdict`]).
//! 5. Delete the Job (background propagation) unless asked to keep it.
//! 6. With `--expect-scale-down`, keep sampling until time-sale is back at the HPA's
//!    minReplicas or the timeout passes; print the scale-down verdict.
//! 7. Write the chart (`--chart`) and the JSON report (`--report`).
//!
//! An interrupt (the `cancel` future: Ctrl-C or SIGTERM in the binary) deletes the Job with
//! foreground propagation and waits until its pod is gone, so the load stops with the
//! plugin, `--keep` or not.

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::time::{Instant, MissedTickBehavior};

use crate::job::{CONTAINER_NAME, TTL_AFTER_FINISHED_SECS, load_job, to_yaml};
use crate::jobrun::{JobEnd, JobHandle, print_tail};
use crate::report::{LoadGenReport, REPORT_PREFIX, RunReport, ScalingSummary, find_report, render};
use crate::scaling::{DeploymentView, HpaView};
use crate::timeline::{Phase, Replicas, Sample, header, progress_figures, row};
use crate::verdict::{Outcome, ScaleWatch, Verdict, scale_down, scale_down_skipped};
use crate::{AUTOSCALED_SERVICE, Release, SERVICES, Scenario};
use cloudmart_load_report::ramp::Ramp;

/// Log lines shown when a run fails or its report line is missing.
pub const TAIL_LINES_ON_FAILURE: usize = 20;

/// Log lines fetched from the load generator's pod for its report (the last line).
const LOG_LINES_FETCHED: i64 = 1000;

/// Log lines fetched for the live rate and p99 (its last progress line).
const LOG_LINES_LIVE: i64 = 20;

/// Exit status when `--expect-scale` failed.
pub const EXIT_SCALE_UP_FAILED: u8 = 3;

/// Exit status when `--expect-scale-down` failed.
pub const EXIT_SCALE_DOWN_FAILED: u8 = 4;

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
    /// Stock of the sale the run creates (flash-sale); `None`: the load generator's default.
    pub stock: Option<u32>,
    /// Image that holds `cloudmart-load`.
    pub image: String,
    /// gRPC port of the time-sale Service.
    pub timesale_port: u16,
    /// gRPC port of the order Service.
    pub order_port: u16,
    /// Time between two samples.
    pub poll: Duration,
    /// Keep the Job after a finished run.
    pub keep: bool,
    /// Draw the report's series and the replicas into this PNG.
    pub chart: Option<PathBuf>,
    /// Write the JSON report to this file.
    pub report: Option<PathBuf>,
    /// `--expect-scale timesale`: decide the scale-up verdict.
    pub expect_scale: bool,
    /// `--expect-scale-down`: wait up to this long after the load for time-sale to be back
    /// at minReplicas.
    pub expect_scale_down: Option<Duration>,
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
    /// Namespace and release of the run.
    pub release: Release,
    /// When the Job was created (the API server's clock when it said), Unix ms.
    pub job_created_unix_ms: i64,
    /// The load generator's figures.
    pub report: LoadGenReport,
    /// What the autoscaler and the Deployments did meanwhile.
    pub scaling: ScalingSummary,
    /// The verdicts asked for (scale-up, then scale-down).
    pub verdicts: Vec<Verdict>,
}

impl LoadSummary {
    /// The exit status the verdicts call for: 0, [`EXIT_SCALE_UP_FAILED`] or
    /// [`EXIT_SCALE_DOWN_FAILED`].
    pub fn exit_code(&self) -> u8 {
        let failed = |check| self.verdicts.iter().any(|v| v.check == check && v.outcome == Outcome::Fail);
        if failed(crate::verdict::Check::ScaleUp) {
            EXIT_SCALE_UP_FAILED
        } else if failed(crate::verdict::Check::ScaleDown) {
            EXIT_SCALE_DOWN_FAILED
        } else {
            0
        }
    }

    /// The report as `-o json` / `--report` write it.
    pub fn run_report(&self) -> RunReport<'_> {
        RunReport {
            job: &self.job,
            namespace: &self.release.namespace,
            release: &self.release.name,
            job_created_unix_ms: self.job_created_unix_ms,
            load: &self.report,
            autoscaling: &self.scaling,
            verdicts: &self.verdicts,
        }
    }
}

/// Runs the load generator as Job `job_name` for `release` and reports to `out`.
///
/// `cancel` interrupts the run (the binary passes Ctrl-C and SIGTERM): the Job is then
/// deleted and [`LoadOutcome::Interrupted`] returned. A failed Job, or one whose log has
/// no report line, is an error naming the Job, after its last log lines were written to
/// `out`. Failed verdicts are not errors: they are in the summary
/// ([`LoadSummary::exit_code`]).
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
    let mut scaling = ScalingSummary::new(&run.hpa_name, &start);
    let mut baseline = run.observe(Duration::ZERO, Phase::Before, out).await?;
    baseline.set_hpa(&start);
    if opts.expect_scale {
        for service in SERVICES {
            if !baseline.replicas.contains_key(service) {
                bail!(
                    "--expect-scale: Deployment {} in namespace {ns} could not be read, so its replicas cannot be \
                     compared before and after the run",
                    release.resource(service)
                );
            }
        }
    }

    let job = load_job(release, opts, job_name);
    let created = run
        .job
        .jobs()
        .create(&PostParams::default(), &job)
        .await
        .with_context(|| format!("creating Job {job_name} in namespace {ns}"))?;
    let job_created_unix_ms = created
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or_else(|| i64::try_from(unix_ms_now()).unwrap_or(i64::MAX), |t| t.0.as_millisecond());
    let started = Instant::now();
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
        "HPA {}: {} replicas (min {}, max {}), cpu {}",
        run.hpa_name,
        scaling.replicas_at_start,
        start.min_replicas,
        start.max_replicas,
        start.cpu_text()
    )?;
    let mut watch = opts.expect_scale.then(|| ScaleWatch::new(start.min_replicas, &baseline, job_created_unix_ms));
    scaling.push(baseline);
    writeln!(out, "{}", header())?;

    let mut cancel = std::pin::pin!(cancel);
    let followed = tokio::select! {
        result = run.follow(started, &mut scaling, watch.as_mut(), out) => Some(result),
        () = &mut cancel => None,
    };
    let report = match followed {
        None => {
            writeln!(out, "interrupted: stopping the load")?;
            run.job.delete(true, out).await?;
            return Ok(LoadOutcome::Interrupted { job: job_name.to_owned() });
        }
        Some(Err(err)) => {
            if opts.keep {
                return Err(err);
            }
            if let Err(delete_err) = run.job.delete(false, out).await {
                writeln!(out, "warning: {delete_err:#}")?;
            }
            return Err(err);
        }
        Some(Ok(report)) => report,
    };
    let load_ended = Instant::now();
    render(out, job_name, &report, &scaling)?;

    let mut verdicts = Vec::new();
    if let Some(watch) = &watch {
        let verdict = watch.scale_up();
        writeln!(out, "{verdict}")?;
        verdicts.push(verdict);
    }

    if opts.keep {
        writeln!(
            out,
            "kept Job {job_name} (Kubernetes removes it {TTL_AFTER_FINISHED_SECS}s after it finished; \
             `kubectl delete job {job_name} -n {ns}` does it now)"
        )?;
    } else {
        run.job.delete(false, out).await?;
    }

    if let Some(timeout) = opts.expect_scale_down {
        let verdict = if verdicts.first().is_some_and(Verdict::passed) {
            writeln!(
                out,
                "waiting up to {}s for {AUTOSCALED_SERVICE} to scale back to minReplicas {}",
                timeout.as_secs(),
                start.min_replicas
            )?;
            let waited = tokio::select! {
                verdict = run.wait_scale_down(started, load_ended, start.min_replicas, timeout, &mut scaling, out) => Some(verdict),
                () = &mut cancel => None,
            };
            match waited {
                Some(verdict) => verdict?,
                None => {
                    writeln!(out, "interrupted while waiting for the scale-down")?;
                    return Ok(LoadOutcome::Interrupted { job: job_name.to_owned() });
                }
            }
        } else {
            scale_down_skipped()
        };
        writeln!(out, "{verdict}")?;
        verdicts.push(verdict);
    }

    let summary = LoadSummary {
        job: job_name.to_owned(),
        release: release.clone(),
        job_created_unix_ms,
        report,
        scaling,
        verdicts,
    };
    if let Some(path) = &opts.chart {
        crate::chart::write(path, job_name, &summary.report, &summary.scaling, out)?;
    }
    if let Some(path) = &opts.report {
        let json = serde_json::to_string_pretty(&summary.run_report()).context("rendering the report as JSON")?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("--report: creating {}", dir.display()))?;
        }
        std::fs::write(path, json + "\n").with_context(|| format!("--report: writing {}", path.display()))?;
        writeln!(out, "report written to {}", path.display())?;
    }
    Ok(LoadOutcome::Finished(Box::new(summary)))
}

/// `load --dry-run`: writes the Job that [`load`] would create, as YAML, without
/// contacting the cluster.
pub fn dry_run<W: Write + ?Sized>(release: &Release, opts: &LoadOptions, job_name: &str, out: &mut W) -> Result<()> {
    let yaml = to_yaml(&load_job(release, opts, job_name))?;
    out.write_all(yaml.as_bytes()).context("writing the Job manifest")?;
    Ok(())
}

/// The wall clock in Unix milliseconds (0 before 1970).
fn unix_ms_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The APIs and names one load run works with.
struct Run<'a> {
    release: &'a Release,
    opts: &'a LoadOptions,
    hpa_name: String,
    hpas: Api<HorizontalPodAutoscaler>,
    deployments: Api<Deployment>,
    job: JobHandle,
    /// The Job's pod, once found (for the live progress line).
    pod: Mutex<Option<String>>,
}

impl<'a> Run<'a> {
    fn new(client: Client, release: &'a Release, opts: &'a LoadOptions, job_name: &str) -> Self {
        let ns = release.namespace.as_str();
        Self {
            release,
            opts,
            hpa_name: release.resource(AUTOSCALED_SERVICE),
            hpas: Api::namespaced(client.clone(), ns),
            deployments: Api::namespaced(client.clone(), ns),
            job: JobHandle::new(client, ns, job_name, CONTAINER_NAME),
            pod: Mutex::new(None),
        }
    }

    /// Samples until the Job ends, then reads its report (and prints nothing of it).
    async fn follow<W: Write + ?Sized>(
        &self,
        started: Instant,
        scaling: &mut ScalingSummary,
        mut watch: Option<&mut ScaleWatch>,
        out: &mut W,
    ) -> Result<LoadGenReport> {
        let mut ticker = tokio::time::interval(self.opts.poll);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let end = loop {
            ticker.tick().await;
            let sample = self.observe(started.elapsed(), Phase::Load, out).await?;
            writeln!(out, "{}", row(&sample))?;
            if let Some(watch) = watch.as_deref_mut() {
                watch.observe(&sample);
            }
            scaling.push(sample);
            if let Some(end) = self.job.end().await? {
                break end;
            }
        };
        self.read_report(end, out).await
    }

    /// After the Job ended: its report, or an error with the log's last lines.
    async fn read_report<W: Write + ?Sized>(&self, end: JobEnd, out: &mut W) -> Result<LoadGenReport> {
        let (ns, job_name) = (self.release.namespace.as_str(), self.job.name.as_str());
        let logs = match self.job.pod().await {
            Ok(pod) => {
                let name = pod.metadata.name.unwrap_or_default();
                self.job.logs(&name, LOG_LINES_FETCHED).await.map(|logs| (name, logs))
            }
            Err(err) => Err(err),
        };
        match end {
            JobEnd::Succeeded => {
                let (pod, logs) = logs?;
                match find_report(&logs).with_context(|| format!("reading the report of Job {job_name} (pod {pod})"))? {
                    Some(report) => Ok(report),
                    None => {
                        print_tail(&pod, &logs, TAIL_LINES_ON_FAILURE, out)?;
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
                    Ok((pod, logs)) => print_tail(pod, logs, TAIL_LINES_ON_FAILURE, out)?,
                    Err(err) => writeln!(out, "no logs of Job {job_name}: {err:#}")?,
                }
                bail!(
                    "load Job {job_name} in namespace {ns} failed ({why}); \
                     see its last log lines above, or `kubectl describe job {job_name} -n {ns}` (run with --keep)"
                )
            }
        }
    }

    /// Samples after the load until time-sale is back at `min` or `timeout` passed.
    async fn wait_scale_down<W: Write + ?Sized>(
        &self,
        started: Instant,
        load_ended: Instant,
        min: i32,
        timeout: Duration,
        scaling: &mut ScalingSummary,
        out: &mut W,
    ) -> Result<Verdict> {
        let mut ticker = tokio::time::interval(self.opts.poll);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let sample = self.observe(started.elapsed(), Phase::ScaleDown, out).await?;
            writeln!(out, "{}", row(&sample))?;
            let waited = load_ended.elapsed();
            let verdict = scale_down(&sample, min, waited, timeout);
            scaling.push(sample);
            if verdict.passed() || waited >= timeout {
                return Ok(verdict);
            }
        }
    }

    /// One look at the HPA (but for the baseline), the Deployments and (while the load runs)
    /// the load generator's progress. A resource that cannot be read is left out of the
    /// sample and said on `out`.
    async fn observe<W: Write + ?Sized>(&self, t: Duration, phase: Phase, out: &mut W) -> Result<Sample> {
        let mut sample = Sample { t: t.as_secs_f64(), at_unix_ms: unix_ms_now(), phase, ..Sample::default() };
        // The baseline's HPA is the one just read by the caller.
        if phase != Phase::Before {
            match self.hpas.get(&self.hpa_name).await {
                Ok(hpa) => sample.set_hpa(&HpaView::of(&hpa)),
                Err(err) => writeln!(
                    out,
                    "t={}s  could not read HorizontalPodAutoscaler {}: {err}",
                    t.as_secs(),
                    self.hpa_name
                )?,
            }
        }
        for service in SERVICES {
            let name = self.release.resource(service);
            match self.deployments.get(&name).await {
                Ok(d) => {
                    sample.replicas.insert(service.to_owned(), Replicas::from(&DeploymentView::of(&d)));
                }
                Err(err) => writeln!(out, "t={}s  could not read Deployment {name}: {err}", t.as_secs())?,
            }
        }
        if phase == Phase::Load {
            (sample.rate, sample.p99_ms) = self.progress().await;
        }
        Ok(sample)
    }

    /// The load generator's latest rate and p99, best effort (none before its pod runs).
    async fn progress(&self) -> (Option<f64>, Option<f64>) {
        let known = self.pod.lock().ok().and_then(|p| p.clone());
        let pod = match known {
            Some(pod) => pod,
            None => match self.job.pod().await.ok().and_then(|p| p.metadata.name) {
                Some(pod) => {
                    if let Ok(mut known) = self.pod.lock() {
                        *known = Some(pod.clone());
                    }
                    pod
                }
                None => return (None, None),
            },
        };
        match self.job.logs(&pod, LOG_LINES_LIVE).await {
            Ok(logs) => progress_figures(&logs),
            Err(_) => (None, None),
        }
    }
}
