//! One rehearsal: render, plan, start, wait like `helm install --wait --wait-for-jobs`,
//! then the checks of [`crate::checks`]; everything removed afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use cloudmart_chart_check::Render;

use crate::docker::{
    Docker, RunContext, claim_create_args, claim_volume, container_name, disk_dir_create_args, empty_dir_volume,
    memory_dir_create_args, run_args,
};
use crate::plan::{Plan, PlanOptions, PodPlan, Probe, Role};
use crate::probe;

/// The directory of a run's work directory that holds its disk-backed emptyDirs.
const EMPTY_DIRS: &str = ".emptydir";

/// What to render and how to run it.
#[derive(Debug, Clone)]
pub struct Options {
    pub chart: PathBuf,
    pub values: Vec<PathBuf>,
    pub set: Vec<String>,
    pub release: String,
    pub namespace: String,
    pub helm: String,
    pub docker: String,
    /// How long pods may take to become Ready (like `helm install --timeout`).
    pub timeout: Duration,
    /// Host directory for ConfigMap/Secret volume files (a sub-directory per run).
    pub work_dir: PathBuf,
    pub replicas: BTreeMap<String, u32>,
}

/// `helm template` of the chart with the options' values.
pub fn render(opts: &Options) -> Result<String> {
    let mut cmd = std::process::Command::new(&opts.helm);
    cmd.arg("template").arg(&opts.release).arg(&opts.chart).arg("--namespace").arg(&opts.namespace);
    for v in &opts.values {
        cmd.arg("--values").arg(v);
    }
    for s in &opts.set {
        cmd.arg("--set").arg(s);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {} (set HELM, or run `make lint-charts` once to fetch helm)", opts.helm))?;
    if !out.status.success() {
        bail!("helm template failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    String::from_utf8(out.stdout).context("helm template printed non-UTF-8")
}

/// Renders and resolves every pod, without starting anything.
pub fn plan(opts: &Options) -> Result<(Render, Plan)> {
    let text = render(opts)?;
    let render = Render::parse(&text).map_err(|e| anyhow!("parsing the rendered chart: {e}"))?;
    let plan =
        Plan::build(&render, &PlanOptions { namespace: opts.namespace.clone(), replicas: opts.replicas.clone() })?;
    Ok((render, plan))
}

/// A short id for this run: names the network and prefixes every container.
pub fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("cmr{:06x}", (nanos ^ u128::from(std::process::id())) & 0xff_ffff)
}

/// A started rehearsal.
#[derive(Debug)]
pub struct Rehearsal {
    pub docker: Docker,
    pub run_id: String,
    pub network: String,
    pub release: String,
    pub plan: Plan,
    pub render: Render,
    pub files_dir: PathBuf,
    /// Address of each started pod on the network.
    pub ips: BTreeMap<String, String>,
}

/// How long each pod took to become Ready (or a Job to finish), for the summary.
pub type Timings = Vec<(String, Duration)>;

impl Rehearsal {
    /// Checks the images, creates the network, writes volume files and starts every pod
    /// except the `helm test` hook.
    pub async fn start(opts: &Options, run_id: &str) -> Result<Rehearsal> {
        let docker = Docker::new(&opts.docker);
        let version = docker.ping().await?;
        let (render, plan) = plan(opts)?;
        println!("==> rendered {} ({} pods) for Docker {version}, run {run_id}", opts.chart.display(), plan.pods.len());
        let mut missing = Vec::new();
        for image in plan.pods.iter().map(|p| p.image.as_str()).collect::<std::collections::BTreeSet<_>>() {
            if !docker.image_exists(image).await {
                missing.push(image.to_owned());
            }
        }
        if !missing.is_empty() {
            bail!(
                "images not present locally: {} (build them: `make images` for cloudmart's, `bash deploy/airgap-infra.sh` for Kafka/PostgreSQL/Jaeger)",
                missing.join(", ")
            );
        }
        let files_dir = opts.work_dir.join(run_id);
        write_volume_files(&plan, &files_dir)?;
        let network = run_id.to_owned();
        docker.create_network(&network, run_id).await?;
        let mut r = Rehearsal {
            docker,
            run_id: run_id.to_owned(),
            network,
            release: opts.release.clone(),
            plan,
            render,
            files_dir,
            ips: BTreeMap::new(),
        };
        let pods: Vec<PodPlan> = r.plan.pods.iter().filter(|p| p.role != Role::Test).cloned().collect();
        for pod in &pods {
            r.start_pod(pod).await?;
        }
        Ok(r)
    }

    /// Where the `index`-th disk-backed emptyDir of `pod` lives on the host.
    fn empty_dir_path(&self, pod: &str, index: usize) -> PathBuf {
        self.files_dir.join(EMPTY_DIRS).join(format!("{pod}-{index}"))
    }

    /// `docker run` of one pod.
    pub async fn start_pod(&mut self, pod: &PodPlan) -> Result<()> {
        let ctx = RunContext { run_id: &self.run_id, network: &self.network, files_dir: &self.files_dir };
        for (i, t) in pod.empty_dirs.iter().enumerate() {
            let name = empty_dir_volume(&self.run_id, &pod.pod, i);
            let mut create = vec!["volume".to_owned(), "create".to_owned()];
            if t.memory {
                create.extend(memory_dir_create_args(&self.run_id, &name, t.size_bytes));
            } else {
                let dir = self.empty_dir_path(&pod.pod, i);
                fresh_shared_dir(&dir)
                    .with_context(|| format!("pod {}: emptyDir at {}: {}", pod.pod, t.mount_path, dir.display()))?;
                create.extend(disk_dir_create_args(&self.run_id, &name, &dir));
            }
            self.docker.run(&create).await.with_context(|| format!("pod {}: emptyDir at {}", pod.pod, t.mount_path))?;
        }
        for c in &pod.claims {
            // idempotent: a pod started again finds its volume, like a PVC
            let name = claim_volume(&self.run_id, &pod.pod, &c.claim);
            let mut create = vec!["volume".to_owned(), "create".to_owned()];
            create.extend(claim_create_args(&self.run_id, &name));
            self.docker
                .run(&create)
                .await
                .with_context(|| format!("pod {}: claim {} at {}", pod.pod, c.claim, c.mount_path))?;
        }
        let mut args = vec!["run".to_owned()];
        args.extend(run_args(pod, &ctx));
        self.docker.run(&args).await.with_context(|| format!("pod {}: starting its container", pod.pod))?;
        println!("    started {:<34} {} ({})", pod.pod, pod.image, pod.owner);
        Ok(())
    }

    /// The pod with `ordinal` of a Deployment/StatefulSet, planned from the same render
    /// (same Secrets), e.g. a replica an autoscaler adds.
    pub fn pod_for(&self, owner_name: &str, ordinal: u32) -> Result<PodPlan> {
        let name = format!("{owner_name}-{ordinal}");
        let mut replicas = BTreeMap::new();
        replicas.insert(owner_name.to_owned(), ordinal + 1);
        let plan =
            Plan::build(&self.render, &crate::plan::PlanOptions { namespace: self.plan.namespace.clone(), replicas })?;
        plan.pods.into_iter().find(|p| p.pod == name).ok_or_else(|| anyhow!("{owner_name} has no pod {name}"))
    }

    /// Stops a pod within its grace period (SIGTERM, then SIGKILL) and removes it; it
    /// leaves the Service's DNS name at once.
    pub async fn remove_pod(&mut self, pod: &PodPlan) -> Result<()> {
        let c = self.container(&pod.pod);
        self.docker.run(&["stop".into(), "--time".into(), pod.termination_grace_secs.to_string(), c.clone()]).await?;
        self.docker.run(&["rm".into(), "-f".into(), c]).await?;
        // an emptyDir lives as long as its pod
        for i in 0..pod.empty_dirs.len() {
            self.docker
                .run(&["volume".into(), "rm".into(), "-f".into(), empty_dir_volume(&self.run_id, &pod.pod, i)])
                .await?;
            std::fs::remove_dir_all(self.empty_dir_path(&pod.pod, i)).ok();
        }
        self.ips.remove(&pod.pod);
        println!("    removed {}", pod.pod);
        Ok(())
    }

    pub fn container(&self, pod: &str) -> String {
        container_name(&self.run_id, pod)
    }

    /// Address of a pod, cached once known.
    pub async fn ip(&mut self, pod: &str) -> Result<String> {
        if let Some(ip) = self.ips.get(pod) {
            return Ok(ip.clone());
        }
        let ip = self.docker.ip(&self.container(pod), &self.network).await?;
        self.ips.insert(pod.to_owned(), ip.clone());
        Ok(ip)
    }

    /// Waits until every serving pod is Ready and every Job has succeeded, like
    /// `helm install --wait --wait-for-jobs --timeout`. Fails naming each pod that is not,
    /// why (the last probe error, restarts, exit code) and its last log lines.
    pub async fn wait_ready(&mut self, pods: &[PodPlan], timeout: Duration) -> Result<Timings> {
        let t0 = Instant::now();
        let mut watch: Vec<Watch> =
            pods.iter().filter(|p| p.role != Role::Test).map(|p| Watch::new(p.clone(), t0)).collect();
        let mut timings = Vec::new();
        loop {
            let mut fatal = None;
            for w in watch.iter_mut().filter(|w| w.done.is_none()) {
                let container = self.container(&w.pod.pod);
                let state = self.docker.state(&container).await?;
                w.restarts = state.restart_count;
                w.oom = state.oom_killed;
                match w.pod.role {
                    Role::Job { backoff_limit } => {
                        if !state.running && state.status == "exited" {
                            if state.exit_code == 0 {
                                w.done = Some(t0.elapsed());
                            } else if state.restart_count >= u64::from(backoff_limit) {
                                w.last_error = format!(
                                    "Job failed: exit code {} after {} retries (backoffLimit {backoff_limit})",
                                    state.exit_code, state.restart_count
                                );
                                fatal = Some(w.pod.pod.clone());
                            } else {
                                w.last_error = format!("exit code {}, retrying", state.exit_code);
                            }
                        }
                    }
                    _ => {
                        if !state.running {
                            w.last_error = format!(
                                "container {} (exit code {}{})",
                                state.status,
                                state.exit_code,
                                if state.oom_killed { ", OOMKilled" } else { "" }
                            );
                            continue;
                        }
                        let Ok(ip) = self.docker.ip(&container, &self.network).await else { continue };
                        self.ips.insert(w.pod.pod.clone(), ip.clone());
                        if w.step(&self.docker, &container, &ip).await {
                            w.done = Some(t0.elapsed());
                        } else if w.gave_up() {
                            fatal = Some(w.pod.pod.clone());
                        }
                    }
                }
                if let Some(d) = w.done {
                    println!("    ready   {:<34} {:>6.1} s", w.pod.pod, d.as_secs_f64());
                    timings.push((w.pod.pod.clone(), d));
                }
            }
            let waiting: Vec<&Watch> = watch.iter().filter(|w| w.done.is_none()).collect();
            if waiting.is_empty() {
                return Ok(timings);
            }
            if fatal.is_some() || t0.elapsed() >= timeout {
                let mut msg = String::new();
                for w in waiting.iter().filter(|w| fatal.as_ref().is_none_or(|f| *f == w.pod.pod)) {
                    let logs = self.docker.logs_tail(&self.container(&w.pod.pod), 20).await;
                    msg.push_str(&format!(
                        "\npod {} ({}) is not Ready after {:.0} s: {}{}{}\n  last log lines:\n{}",
                        w.pod.pod,
                        w.pod.owner,
                        t0.elapsed().as_secs_f64(),
                        if w.last_error.is_empty() { "no probe answered yet" } else { &w.last_error },
                        if w.restarts > 0 {
                            format!("; container restarted {} times", w.restarts)
                        } else {
                            String::new()
                        },
                        if w.oom { "; OOMKilled" } else { "" },
                        indent(&logs, "    | ")
                    ));
                }
                bail!("pods did not become Ready:{msg}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Runs a pod to completion (Test/Job roles); returns its exit code and output.
    pub async fn run_to_completion(&mut self, pod: &PodPlan, timeout: Duration) -> Result<(i64, String)> {
        self.start_pod(pod).await?;
        let container = self.container(&pod.pod);
        let code = tokio::time::timeout(timeout, self.docker.wait(&container))
            .await
            .map_err(|_| anyhow!("pod {} did not finish within {timeout:?}", pod.pod))??;
        let logs = self.docker.logs(&container).await?;
        Ok((code, logs))
    }

    /// A client pod in the network, the way a user's pod would call the services: the
    /// `helm test` pod's image, labels and hardening, with another command.
    pub fn client_pod(&self, name: &str, command: Vec<String>) -> Result<PodPlan> {
        let test = self.plan.pods.iter().find(|p| p.role == Role::Test).ok_or_else(|| {
            anyhow!(
                "the render has no `helm test` pod (smokeTest.enabled=false?); the rehearsal runs its clients like it"
            )
        })?;
        let mut pod = test.clone();
        pod.pod = format!("{}-{name}", self.release);
        pod.owner = format!("client pod, hardened like {}", test.pod);
        pod.aliases = vec![pod.pod.clone()];
        pod.command = Some(command);
        pod.args = None;
        pod.readiness = None;
        pod.startup = None;
        Ok(pod)
    }

    /// Removes everything of this run: containers, network, volume files.
    pub async fn cleanup(docker: &Docker, run_id: &str, files_dir: &Path) -> Result<usize> {
        let images = docker.images_of_run(run_id).await;
        let n = docker.remove_run(Some(run_id)).await?;
        if files_dir.exists() && std::fs::remove_dir_all(files_dir).is_err() {
            // Disk-backed emptyDirs hold files of the pods' users (PostgreSQL's data
            // directory is theirs alone), which a caller who is not root cannot remove.
            docker.remove_as_root(&images, &files_dir.join(EMPTY_DIRS)).await;
            std::fs::remove_dir_all(files_dir).with_context(|| format!("removing {}", files_dir.display()))?;
        }
        Ok(n)
    }
}

/// Probe progress of one serving pod.
struct Watch {
    pod: PodPlan,
    startup_passed: bool,
    startup_failures: u32,
    next_probe: Instant,
    last_error: String,
    restarts: u64,
    oom: bool,
    done: Option<Duration>,
}

impl Watch {
    fn new(pod: PodPlan, t0: Instant) -> Watch {
        let delay = pod.startup.as_ref().or(pod.readiness.as_ref()).map_or(0, |p| p.initial_delay_secs);
        Watch {
            next_probe: t0 + Duration::from_secs(u64::from(delay)),
            startup_passed: pod.startup.is_none(),
            startup_failures: 0,
            last_error: String::new(),
            restarts: 0,
            oom: false,
            done: None,
            pod,
        }
    }

    /// One probe round when due; true once the readiness probe passed.
    async fn step(&mut self, docker: &Docker, container: &str, ip: &str) -> bool {
        if Instant::now() < self.next_probe {
            return false;
        }
        let (probe, which): (Option<&Probe>, &str) = if self.startup_passed {
            (self.pod.readiness.as_ref(), "readiness")
        } else {
            (self.pod.startup.as_ref(), "startup")
        };
        let Some(probe) = probe else { return true };
        let result =
            probe::check(docker, container, ip, &probe.action, Duration::from_secs(u64::from(probe.timeout_secs)))
                .await;
        match result {
            Ok(()) if self.startup_passed => true,
            Ok(()) => {
                // Startup passed: readiness runs at once (the kubelet starts its worker now).
                self.startup_passed = true;
                self.next_probe = Instant::now();
                self.pod.readiness.is_none()
            }
            Err(e) => {
                self.last_error = format!("{which} probe ({}) failed: {e:#}", probe.action);
                if !self.startup_passed {
                    self.startup_failures += 1;
                }
                self.next_probe = Instant::now() + Duration::from_secs(u64::from(probe.period_secs));
                false
            }
        }
    }

    /// The startup probe used up its failureThreshold: Kubernetes would kill and restart
    /// the container; the rehearsal stops here and says why.
    fn gave_up(&self) -> bool {
        self.pod.startup.as_ref().is_some_and(|p| !self.startup_passed && self.startup_failures >= p.failure_threshold)
    }
}

fn write_volume_files(plan: &Plan, dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for pod in &plan.pods {
        for v in &pod.files {
            let d = dir.join(&pod.pod).join(&v.volume);
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            for f in &v.files {
                let path = d.join(&f.name);
                std::fs::write(&path, &f.content).with_context(|| format!("writing {}", path.display()))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))?;
            }
            for p in [d.clone(), dir.join(&pod.pod), dir.to_path_buf()] {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
            }
        }
    }
    Ok(())
}

/// Indents every line of `text`.
pub fn indent(text: &str, prefix: &str) -> String {
    text.lines().map(|l| format!("{prefix}{l}\n")).collect()
}

/// Makes `dir` an empty directory every user may write (mode 1777, like the kubelet's
/// emptyDir): whatever a previous pod of the same name left there is removed.
fn fresh_shared_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777))
}
