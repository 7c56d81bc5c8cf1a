//! Helpers of `make e2e-cluster` (tests/cluster.rs): the tools a user has — `kubectl`,
//! `helm`, `kubectl cloudmart` — run as processes against the current kube context.
//!
//! Settings (environment): `KUBE_CONTEXT` (default: the kubeconfig's current context),
//! `NAMESPACE` (cloudmart), `RELEASE` (cloudmart), `KUBECTL`, `HELM` (paths, default from
//! PATH), `KUBECTL_CLOUDMART` (the plugin binary; `make e2e-cluster` builds it).

use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The cluster under test and the tools that reach it.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// kube context every command names explicitly.
    pub context: String,
    /// Namespace of the release.
    pub namespace: String,
    /// Helm release name.
    pub release: String,
    kubectl: String,
    helm: String,
    plugin: String,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

impl Cluster {
    /// The cluster of the current context; fails fast, saying so, when none answers.
    pub async fn connect() -> anyhow::Result<Self> {
        let kubectl = env_or("KUBECTL", "kubectl");
        let context = match std::env::var("KUBE_CONTEXT").ok().filter(|c| !c.is_empty()) {
            Some(c) => c,
            None => {
                let out = Command::new(&kubectl)
                    .args(["config", "current-context"])
                    .output()
                    .await
                    .with_context(|| format!("cannot run {kubectl} (set KUBECTL to its path)"))?;
                if !out.status.success() {
                    bail!("no current kube context: run `make cluster && make deploy` (or set KUBE_CONTEXT)");
                }
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            }
        };
        let cluster = Self {
            context,
            namespace: env_or("NAMESPACE", "cloudmart"),
            release: env_or("RELEASE", "cloudmart"),
            kubectl,
            helm: env_or("HELM", "helm"),
            plugin: env_or("KUBECTL_CLOUDMART", "kubectl-cloudmart"),
        };
        let ready = cluster.kubectl(&["--request-timeout=5s", "get", "--raw", "/readyz"]).await;
        match ready {
            Ok(out) if out.status.success() => {}
            Ok(out) => bail!(
                "no cluster answers on kube context {:?}: {} — start one with `make cluster && make deploy`",
                cluster.context,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => bail!("no cluster answers on kube context {:?}: {e:#}", cluster.context),
        }
        let release = cluster.helm(&["status", &cluster.release]).await?;
        if !release.status.success() {
            bail!(
                "release {:?} is not installed in {}/{}: run `make deploy` first",
                cluster.release,
                cluster.context,
                cluster.namespace
            );
        }
        Ok(cluster)
    }

    /// `<release>-<part>`, the chart's resource names.
    pub fn resource(&self, part: &str) -> String {
        format!("{}-{part}", self.release)
    }

    /// `kubectl --context C -n NS ARGS`, output captured.
    pub async fn kubectl(&self, args: &[&str]) -> anyhow::Result<Output> {
        run(&self.kubectl, &[&["--context", &self.context, "-n", &self.namespace], args].concat()).await
    }

    /// `kubectl … ARGS`, which must succeed; its stdout.
    pub async fn kubectl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        ok(self.kubectl(args).await?, &format!("kubectl {}", args.join(" ")))
    }

    /// `helm --kube-context C -n NS ARGS`, output captured.
    pub async fn helm(&self, args: &[&str]) -> anyhow::Result<Output> {
        run(&self.helm, &[args, &["--kube-context", &self.context, "--namespace", &self.namespace]].concat()).await
    }

    /// `kubectl cloudmart ARGS --context C -n NS`, output captured; stderr streams through.
    pub async fn plugin(&self, args: &[&str]) -> anyhow::Result<Output> {
        let full = [args, &["--context", &self.context, "-n", &self.namespace, "--release", &self.release]].concat();
        eprintln!("+ kubectl cloudmart {}", full.join(" "));
        Command::new(&self.plugin)
            .args(&full)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .await
            .with_context(|| format!("cannot run {} (set KUBECTL_CLOUDMART; make e2e-cluster builds it)", self.plugin))
    }

    /// A JSON object from `kubectl get … -o json`.
    pub async fn get_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let out = self.kubectl_ok(&[args, &["-o", "json"]].concat()).await?;
        serde_json::from_str(&out).context("kubectl printed no JSON")
    }

    /// `kubectl port-forward svc/<release>-<part> :PORT`; the local endpoint while it lives.
    pub async fn port_forward(&self, part: &str, port: u16) -> anyhow::Result<PortForward> {
        let target = format!("svc/{}", self.resource(part));
        let mut child = Command::new(&self.kubectl)
            .args(["--context", &self.context, "-n", &self.namespace, "port-forward", &target])
            .arg(format!(":{port}"))
            .arg("--address=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start kubectl port-forward")?;
        let stdout = child.stdout.take().context("port-forward stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let local = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                // "Forwarding from 127.0.0.1:41234 -> 50051"
                if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:")
                    && let Some(p) = rest.split_whitespace().next()
                {
                    return Ok::<u16, anyhow::Error>(p.parse()?);
                }
            }
            bail!("kubectl port-forward {target} exited before forwarding")
        })
        .await
        .with_context(|| format!("kubectl port-forward {target} did not start within 30 s"))??;
        // keep draining its stdout ("Handling connection for …") so it never blocks
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(PortForward { endpoint: format!("http://127.0.0.1:{local}"), _child: child })
    }
}

impl Cluster {
    /// `kubectl --context C ARGS` (no namespace added), output captured.
    pub async fn kubectl_global(&self, args: &[&str]) -> anyhow::Result<Output> {
        run(&self.kubectl, &[&["--context", &self.context], args].concat()).await
    }

    /// A pod `name` in `namespace` with `labels` that only waits (image: the release's
    /// PostgreSQL image, which has bash), Ready; deleted when the [`ProbePod`] is dropped.
    pub async fn probe_pod(&self, namespace: &str, name: &str, labels: &str) -> anyhow::Result<ProbePod> {
        let image = self
            .kubectl_ok(&[
                "get",
                "statefulset",
                &self.resource("postgresql"),
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}",
            ])
            .await
            .context("the probe pods use the release's PostgreSQL image (postgresql.enabled=true)")?;
        let ns = ["-n", namespace];
        let mut args = vec!["run", name, "--restart=Never", "--image-pull-policy=IfNotPresent"];
        let image_arg = format!("--image={image}");
        let labels_arg = format!("--labels={labels}");
        args.push(&image_arg);
        if !labels.is_empty() {
            args.push(&labels_arg);
        }
        args.extend(["--command", "--", "sleep", "900"]);
        // a pod left by an interrupted run would make `kubectl run` fail
        let stale = ["delete", "pod", name, "--ignore-not-found", "--grace-period=0", "--wait=true"];
        ok(self.kubectl_global(&[&ns[..], &stale].concat()).await?, &format!("deleting a stale {name}"))?;
        ok(self.kubectl_global(&[&ns[..], &args].concat()).await?, &format!("kubectl run {name}"))?;
        let pod = ProbePod {
            kubectl: self.kubectl.clone(),
            context: self.context.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        let target = format!("pod/{name}");
        ok(
            self.kubectl_global(&[&ns[..], &["wait", "--for=condition=Ready", &target, "--timeout=120s"]].concat())
                .await?,
            &format!("waiting for probe pod {namespace}/{name}"),
        )?;
        Ok(pod)
    }
}

/// A pod that tries TCP connections from inside the cluster (see [`Cluster::probe_pod`]).
#[derive(Debug)]
pub struct ProbePod {
    kubectl: String,
    context: String,
    namespace: String,
    /// Pod name.
    pub name: String,
}

impl ProbePod {
    /// For each `host:port`, whether a TCP connection opens within 3 s.
    pub async fn reachable(&self, targets: &[&str]) -> anyhow::Result<Vec<(String, bool)>> {
        let script = r#"for t in "$@"; do if timeout 3 bash -c "</dev/tcp/${t%:*}/${t##*:}" 2>/dev/null; then echo "$t open"; else echo "$t closed"; fi; done"#;
        let args = [
            &[
                "--context",
                &self.context,
                "-n",
                &self.namespace,
                "exec",
                &self.name,
                "--",
                "bash",
                "-c",
                script,
                "probe",
            ],
            targets,
        ]
        .concat();
        let out = ok(run(&self.kubectl, &args).await?, &format!("kubectl exec {}", self.name))?;
        let mut seen = Vec::new();
        for line in out.lines() {
            match line.rsplit_once(' ') {
                Some((t, "open")) => seen.push((t.to_string(), true)),
                Some((t, "closed")) => seen.push((t.to_string(), false)),
                _ => bail!("unexpected probe output line {line:?}"),
            }
        }
        if seen.len() != targets.len() {
            bail!("the probe answered for {} of {} targets: {out}", seen.len(), targets.len());
        }
        Ok(seen)
    }
}

impl Drop for ProbePod {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.kubectl)
            .args(["--context", &self.context, "-n", &self.namespace, "delete", "pod", &self.name])
            .args(["--grace-period=0", "--wait=false", "--ignore-not-found"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A running `kubectl port-forward`; stopped when dropped.
#[derive(Debug)]
pub struct PortForward {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    _child: Child,
}

async fn run(program: &str, args: &[&str]) -> anyhow::Result<Output> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {program}"))
}

fn ok(out: Output, what: &str) -> anyhow::Result<String> {
    if !out.status.success() {
        bail!("{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
