//! The Docker side: `docker run` arguments for a [`PodPlan`], and the few engine calls the
//! rehearsal needs, through the `docker` CLI.
//!
//! Why the CLI and not the Engine API (e.g. `bollard`): the CLI is what users have and
//! what they would type to reproduce a step — every container the rehearsal starts can be
//! printed as the `docker run` line that starts it (`cloudmart-rehearse plan`) — and it
//! adds no HTTP client stack to the build. Every object carries the label
//! [`RUN_LABEL`]`=<run id>`, which is how cleanup finds it, also after a crash.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::Command;

use crate::plan::{PodPlan, Restart, Role};

/// Label on every container and network of a rehearsal; its value is the run id.
pub const RUN_LABEL: &str = "io.cloudmart.rehearsal";

/// Where a pod's container runs.
#[derive(Debug, Clone)]
pub struct RunContext<'a> {
    pub run_id: &'a str,
    pub network: &'a str,
    /// Host directory holding the pod's ConfigMap/Secret volume files.
    pub files_dir: &'a Path,
}

/// Docker container name of a pod in a run.
pub fn container_name(run_id: &str, pod: &str) -> String {
    format!("{run_id}-{pod}")
}

/// Name of the Docker volume holding the `index`-th emptyDir of a pod.
pub fn empty_dir_volume(run_id: &str, pod: &str, index: usize) -> String {
    format!("{run_id}-{pod}-emptydir-{index}")
}

/// The Docker volume holding a pod's claim (like the PVC `<claim>-<pod>`).
pub fn claim_volume(run_id: &str, pod: &str, claim: &str) -> String {
    format!("{run_id}-{claim}-{pod}")
}

/// `docker volume create` arguments (after `volume create`) for a claim: a disk-backed
/// local volume labelled with the run, so it outlives container restarts and goes with
/// the run.
pub fn claim_create_args(run_id: &str, name: &str) -> Vec<String> {
    ["--label", &format!("{RUN_LABEL}={run_id}"), "--driver", "local", name].iter().map(|s| (*s).to_owned()).collect()
}

/// `docker volume create` arguments (after `volume create`) for an emptyDir of `medium:
/// Memory`: tmpfs, mode 1777, its `sizeLimit`, labelled with the run.
pub fn memory_dir_create_args(run_id: &str, name: &str, size_bytes: Option<u64>) -> Vec<String> {
    let size = size_bytes.map(|b| format!(",size={b}")).unwrap_or_default();
    [
        "--label",
        &format!("{RUN_LABEL}={run_id}"),
        "--driver",
        "local",
        "--opt",
        "type=tmpfs",
        "--opt",
        "device=tmpfs",
        "--opt",
        &format!("o=mode=1777{size}"),
        name,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// `docker volume create` arguments (after `volume create`) for an emptyDir on disk (the
/// default medium): a bind of `host_dir`, a fresh directory of the run's work directory
/// (mode 1777), labelled with the run. On disk, as the kubelet keeps it: a tmpfs would
/// count a database's files against the container's memory limit, and PostgreSQL with
/// 512 MiB was OOM-killed after ~380 MiB of data and WAL under `make bench-scale`.
pub fn disk_dir_create_args(run_id: &str, name: &str, host_dir: &Path) -> Vec<String> {
    [
        "--label",
        &format!("{RUN_LABEL}={run_id}"),
        "--driver",
        "local",
        "--opt",
        "type=none",
        "--opt",
        "o=bind",
        "--opt",
        &format!("device={}", host_dir.display()),
        name,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// `docker run` arguments (after `run`) that start `pod` the way its manifest says.
pub fn run_args(pod: &PodPlan, ctx: &RunContext<'_>) -> Vec<String> {
    let mut a: Vec<String> = vec!["--detach".into(), "--name".into(), container_name(ctx.run_id, &pod.pod)];
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| (*s).to_owned()));
    push(&["--label", &format!("{RUN_LABEL}={}", ctx.run_id)]);
    push(&["--label", &format!("io.cloudmart.rehearsal.pod={}", pod.pod)]);
    for (k, v) in &pod.labels {
        push(&["--label", &format!("{k}={v}")]);
    }
    push(&["--hostname", &pod.pod, "--network", ctx.network]);
    for alias in &pod.aliases {
        push(&["--network-alias", alias]);
    }
    match (pod.run_as_user, pod.run_as_group) {
        (Some(u), Some(g)) => push(&["--user", &format!("{u}:{g}")]),
        (Some(u), None) => push(&["--user", &u.to_string()]),
        // Kubernetes has no way to set only the group; keep the image's user.
        (None, _) => {}
    }
    for g in &pod.supplemental_groups {
        push(&["--group-add", &g.to_string()]);
    }
    if pod.read_only_root {
        push(&["--read-only"]);
    }
    if pod.no_new_privileges {
        push(&["--security-opt", "no-new-privileges"]);
    }
    if pod.privileged {
        push(&["--privileged"]);
    }
    for c in &pod.cap_drop {
        push(&["--cap-drop", c]);
    }
    for c in &pod.cap_add {
        push(&["--cap-add", c]);
    }
    if let Some(cpus) = pod.cpus {
        push(&["--cpus", &format!("{cpus:.3}")]);
    }
    if let Some(mem) = pod.memory_bytes {
        push(&["--memory", &mem.to_string(), "--memory-swap", &mem.to_string()]);
    }
    // emptyDir: a volume (on disk, or tmpfs) mounted without copy-up, so it starts empty
    // and world-writable like the kubelet's directory. (`--tmpfs` would take the mode of
    // an image directory at the same path and ignore `mode=`.)
    for (i, t) in pod.empty_dirs.iter().enumerate() {
        let volume = empty_dir_volume(ctx.run_id, &pod.pod, i);
        push(&["--mount", &format!("type=volume,source={volume},destination={},volume-nocopy=true", t.mount_path)]);
    }
    // A claim: copied up from the image's directory on first use (the images ship their
    // data directories writable by their user, as a fresh PV with fsGroup would be).
    for c in &pod.claims {
        let volume = claim_volume(ctx.run_id, &pod.pod, &c.claim);
        push(&["--mount", &format!("type=volume,source={volume},destination={}", c.mount_path)]);
    }
    for v in &pod.files {
        let host = ctx.files_dir.join(&pod.pod).join(&v.volume);
        push(&["--volume", &format!("{}:{}:ro", host.display(), v.mount_path)]);
    }
    for (k, v) in &pod.env {
        push(&["--env", &format!("{k}={v}")]);
    }
    match pod.restart {
        Restart::Always => push(&["--restart", "always"]),
        Restart::OnFailure => {
            let limit = match pod.role {
                Role::Job { backoff_limit } => backoff_limit,
                _ => 6,
            };
            // Docker reads `on-failure:0` as "retry forever"; backoffLimit 0 means never.
            if limit > 0 {
                push(&["--restart", &format!("on-failure:{limit}")]);
            }
        }
        Restart::Never => {}
    }
    push(&["--stop-timeout", &pod.termination_grace_secs.to_string()]);
    if let Some(cmd) = &pod.command {
        // `command` replaces the entrypoint: its first word is the entrypoint, the rest
        // and `args` follow as the command.
        if let Some(first) = cmd.first() {
            push(&["--entrypoint", first]);
        }
        a.push(pod.image.clone());
        a.extend(cmd.iter().skip(1).cloned());
        a.extend(pod.args.iter().flatten().cloned());
    } else {
        a.push(pod.image.clone());
        a.extend(pod.args.iter().flatten().cloned());
    }
    a
}

/// A thin client for the `docker` CLI.
#[derive(Debug, Clone)]
pub struct Docker {
    pub bin: String,
}

/// State of a container (`docker inspect`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub running: bool,
    pub exit_code: i64,
    pub restart_count: u64,
    pub oom_killed: bool,
    pub status: String,
    pub error: String,
}

impl Docker {
    pub fn new(bin: impl Into<String>) -> Self {
        Docker { bin: bin.into() }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.kill_on_drop(true).stdin(Stdio::null());
        c
    }

    /// Runs `docker <args>`; returns stdout, or fails with stderr.
    pub async fn run(&self, args: &[String]) -> Result<String> {
        let out = self
            .cmd()
            .args(args)
            .output()
            .await
            .with_context(|| format!("running {} (is Docker installed?)", self.bin))?;
        if !out.status.success() {
            let what = args.iter().take(2).cloned().collect::<Vec<_>>().join(" ");
            bail!("docker {what}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn run_strs(&self, args: &[&str]) -> Result<String> {
        self.run(&args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).await
    }

    /// Fails with a clear message when the engine does not answer.
    pub async fn ping(&self) -> Result<String> {
        self.run_strs(&["version", "--format", "{{.Server.Version}}"])
            .await
            .map(|v| v.trim().to_owned())
            .context("the Docker engine does not answer (start dockerd, or set DOCKER)")
    }

    pub async fn image_exists(&self, image: &str) -> bool {
        self.run_strs(&["image", "inspect", "--format", "{{.Id}}", image]).await.is_ok()
    }

    pub async fn create_network(&self, name: &str, run_id: &str) -> Result<()> {
        self.run_strs(&["network", "create", "--label", &format!("{RUN_LABEL}={run_id}"), name]).await.map(drop)
    }

    pub async fn state(&self, container: &str) -> Result<State> {
        let fmt = "{{.State.Running}}|{{.State.ExitCode}}|{{.RestartCount}}|{{.State.OOMKilled}}|{{.State.Status}}|{{.State.Error}}";
        let out = self.run_strs(&["inspect", "--format", fmt, container]).await?;
        let f: Vec<&str> = out.trim().splitn(6, '|').collect();
        let [running, code, restarts, oom, status, error] = f.as_slice() else {
            bail!("unexpected inspect output {out:?}")
        };
        Ok(State {
            running: *running == "true",
            exit_code: code.parse().unwrap_or(-1),
            restart_count: restarts.parse().unwrap_or(0),
            oom_killed: *oom == "true",
            status: (*status).to_owned(),
            error: (*error).to_owned(),
        })
    }

    /// The container's address on `network`.
    pub async fn ip(&self, container: &str, network: &str) -> Result<String> {
        let fmt = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        let ip = self.run_strs(&["inspect", "--format", &fmt, container]).await?.trim().to_owned();
        if ip.is_empty() {
            bail!("{container} has no address on {network}");
        }
        Ok(ip)
    }

    /// The last `lines` lines of the container's output (stdout and stderr).
    pub async fn logs_tail(&self, container: &str, lines: usize) -> String {
        let out = self.cmd().args(["logs", "--tail", &lines.to_string(), container]).output().await;
        match out {
            Ok(o) => format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
            Err(e) => format!("(no logs: {e})"),
        }
    }

    /// All output of the container, stdout only (reports are printed there).
    pub async fn logs(&self, container: &str) -> Result<String> {
        let out = self.cmd().args(["logs", container]).output().await.context("docker logs")?;
        Ok(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }

    /// `docker exec` with a deadline; Ok when the command exits 0.
    pub async fn exec(&self, container: &str, command: &[String], timeout: Duration) -> Result<()> {
        let mut c = self.cmd();
        c.arg("exec").arg(container).args(command).stdout(Stdio::piped()).stderr(Stdio::piped());
        let out = tokio::time::timeout(timeout, c.output())
            .await
            .map_err(|_| anyhow::anyhow!("timed out after {timeout:?}"))?
            .context("docker exec")?;
        if out.status.success() {
            Ok(())
        } else {
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            bail!("exit {}: {}", out.status.code().unwrap_or(-1), last_line(&text))
        }
    }

    /// Waits for the container to exit and returns its exit code.
    pub async fn wait(&self, container: &str) -> Result<i64> {
        let out = self.run_strs(&["wait", container]).await?;
        out.trim().parse().with_context(|| format!("docker wait answered {out:?}"))
    }

    /// Removes every container, network and emptyDir volume of the run (or of every run
    /// when `run_id` is None). Returns how many containers went.
    pub async fn remove_run(&self, run_id: Option<&str>) -> Result<usize> {
        let filter = match run_id {
            Some(id) => format!("label={RUN_LABEL}={id}"),
            None => format!("label={RUN_LABEL}"),
        };
        let ids = self.run_strs(&["ps", "-aq", "--filter", &filter]).await?;
        let ids: Vec<String> = ids.split_whitespace().map(str::to_owned).collect();
        if !ids.is_empty() {
            let mut args = vec!["rm".to_owned(), "-f".to_owned(), "-v".to_owned()];
            args.extend(ids.iter().cloned());
            self.run(&args).await?;
        }
        let nets = self.run_strs(&["network", "ls", "-q", "--filter", &filter]).await?;
        for n in nets.split_whitespace() {
            self.run_strs(&["network", "rm", n]).await?;
        }
        let volumes = self.run_strs(&["volume", "ls", "-q", "--filter", &filter]).await?;
        for v in volumes.split_whitespace() {
            self.run_strs(&["volume", "rm", "-f", v]).await?;
        }
        Ok(ids.len())
    }

    /// The images of the run's containers (each once).
    pub async fn images_of_run(&self, run_id: &str) -> Vec<String> {
        let filter = format!("label={RUN_LABEL}={run_id}");
        let out = self.run_strs(&["ps", "-a", "--filter", &filter, "--format", "{{.Image}}"]).await.unwrap_or_default();
        let mut images: Vec<String> = out.split_whitespace().map(str::to_owned).collect();
        images.sort();
        images.dedup();
        images
    }

    /// Removes `dir` as root from a throw-away container of the first of `images` that
    /// has `/bin/rm` (files the pods' users wrote into a disk-backed emptyDir, which a
    /// caller who is not root cannot remove); whether it worked.
    pub async fn remove_as_root(&self, images: &[String], dir: &Path) -> bool {
        let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else { return false };
        for image in images {
            let args = [
                "run".to_owned(),
                "--rm".into(),
                "--network".into(),
                "none".into(),
                "--user".into(),
                "0:0".into(),
                "--entrypoint".into(),
                "/bin/rm".into(),
                "--volume".into(),
                format!("{}:/w", parent.display()),
                image.clone(),
                "-rf".into(),
                format!("/w/{}", name.to_string_lossy()),
            ];
            if self.run(&args).await.is_ok() {
                return true;
            }
        }
        false
    }

    /// Running containers of the run whose pods carry `app.kubernetes.io/name=<app>`.
    pub async fn running_of_app(&self, run_id: &str, app: &str) -> Result<usize> {
        let out = self
            .run_strs(&[
                "ps",
                "-q",
                "--filter",
                &format!("label={RUN_LABEL}={run_id}"),
                "--filter",
                &format!("label=app.kubernetes.io/name={app}"),
            ])
            .await?;
        Ok(out.split_whitespace().count())
    }

    /// CPU use of running containers, in cores (`docker stats --no-stream`), by name.
    pub async fn cpu_cores(&self, containers: &[String]) -> Result<Vec<(String, f64)>> {
        if containers.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec![
            "stats".to_owned(),
            "--no-stream".to_owned(),
            "--format".to_owned(),
            "{{.Name}} {{.CPUPerc}}".to_owned(),
        ];
        args.extend(containers.iter().cloned());
        let out = self.run(&args).await?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let (name, pct) = l.split_once(' ')?;
                let pct: f64 = pct.trim().trim_end_matches('%').parse().ok()?;
                Some((name.to_owned(), pct / 100.0))
            })
            .collect())
    }
}

/// The last non-empty line of a text, for one-line error messages.
pub fn last_line(text: &str) -> &str {
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim()
}
