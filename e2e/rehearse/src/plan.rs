//! From rendered manifests to containers: what Kubernetes would run for each pod, resolved
//! up front so that a broken reference fails before anything starts.
//!
//! [`Plan::build`] turns every pod-owning object of a [`Render`] (Deployments and
//! StatefulSets times their replicas, Jobs, the `helm test` hook Pod) into a [`PodPlan`]:
//! image, command/args with `$(VAR)` expansion, the environment (`envFrom`, then `env`;
//! `valueFrom` resolved from the rendered Secrets, ConfigMaps and the pod's own metadata),
//! the merged pod/container `securityContext`, CPU and memory limits, `emptyDir` volumes
//! (on disk, or tmpfs for `medium: Memory`) and ConfigMap/Secret volumes as read-only
//! files, probes, and the network aliases
//! of the Services that select the pod. Every error names the pod and what Kubernetes
//! would have reported (`CreateContainerConfigError` for a missing key, and so on).

use std::collections::BTreeMap;
use std::fmt;

use cloudmart_chart_check::{Render, Workload, parse_quantity, selector_matches};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSecurityContext, Probe as K8sProbe, SecurityContext};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Label `app.kubernetes.io/name`.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";

/// What a pod is for, which decides how the rehearsal waits for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Deployment or StatefulSet pod: counts once its readiness probe passes.
    Serving,
    /// Job pod: counts once it exits 0; retried up to `backoff_limit` times.
    Job { backoff_limit: u32 },
    /// The `helm test` hook Pod: run after everything is Ready; its exit code is the verdict.
    Test,
}

/// Restart policy of the pod's containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    Always,
    OnFailure,
    Never,
}

/// How a probe checks the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    Grpc { port: u16, service: String },
    Tcp { port: u16 },
    Http { port: u16, path: String },
    Exec { command: Vec<String> },
}

impl fmt::Display for ProbeAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeAction::Grpc { port, .. } => write!(f, "gRPC health :{port}"),
            ProbeAction::Tcp { port } => write!(f, "TCP :{port}"),
            ProbeAction::Http { port, path } => write!(f, "HTTP GET :{port}{path}"),
            ProbeAction::Exec { command } => write!(f, "exec {}", command.join(" ")),
        }
    }
}

/// A probe with the kubelet's timing fields (defaults as in the Kubernetes API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub action: ProbeAction,
    pub initial_delay_secs: u32,
    pub period_secs: u32,
    pub timeout_secs: u32,
    pub failure_threshold: u32,
}

/// A file of a ConfigMap or Secret volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFile {
    pub name: String,
    pub content: Vec<u8>,
    pub mode: u32,
}

/// A ConfigMap/Secret volume: files written on the host and bind-mounted read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileVolume {
    pub volume: String,
    pub mount_path: String,
    pub files: Vec<VolumeFile>,
}

/// An `emptyDir`, empty and world-writable like the kubelet's 0777 directory: on disk by
/// default, as the kubelet keeps it on the node's disk — a database's files there are
/// page cache, which the kernel reclaims, not memory counted against the container's
/// limit — or a tmpfs for `medium: Memory`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmptyDir {
    pub mount_path: String,
    /// `sizeLimit` (enforced on a tmpfs; the kubelet evicts a pod over it, the rehearsal
    /// does not watch a disk-backed one).
    pub size_bytes: Option<u64>,
    /// `medium: Memory`: a tmpfs, counted against the container's memory.
    pub memory: bool,
}

/// A StatefulSet's `volumeClaimTemplate` mounted in its pod: a named Docker volume per
/// pod that outlives the pod's containers (a restart keeps the data, like a PVC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The template's name (`data`); the PVC would be `<claim>-<pod>`.
    pub claim: String,
    pub mount_path: String,
}

/// One pod, as one container.
#[derive(Debug, Clone)]
pub struct PodPlan {
    /// The pod's name (Deployment/StatefulSet: `<name>-<ordinal>`), also its hostname.
    pub pod: String,
    /// `<Kind> <name>` of the owner, for messages.
    pub owner: String,
    pub role: Role,
    pub app: String,
    pub labels: BTreeMap<String, String>,
    pub container: String,
    pub image: String,
    /// `command` (replaces the image's entrypoint) and `args` (its cmd), `$(VAR)` expanded.
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_non_root: bool,
    pub supplemental_groups: Vec<i64>,
    pub read_only_root: bool,
    pub no_new_privileges: bool,
    pub cap_drop: Vec<String>,
    pub cap_add: Vec<String>,
    pub privileged: bool,
    pub cpus: Option<f64>,
    pub memory_bytes: Option<u64>,
    /// `resources.requests.cpu` in cores: what an HPA's utilisation is measured against.
    pub cpu_request: Option<f64>,
    pub empty_dirs: Vec<EmptyDir>,
    pub claims: Vec<Claim>,
    pub files: Vec<FileVolume>,
    pub ports: BTreeMap<String, u16>,
    pub startup: Option<Probe>,
    pub readiness: Option<Probe>,
    pub restart: Restart,
    pub termination_grace_secs: u32,
    /// DNS names this pod answers to: Service names (short and qualified) that select it,
    /// and its own StatefulSet name under the governing Service.
    pub aliases: Vec<String>,
}

impl PodPlan {
    /// The value of an environment variable of the container, as resolved.
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Everything the rehearsal will run, in manifest order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub namespace: String,
    pub pods: Vec<PodPlan>,
}

/// Options of [`Plan::build`].
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    pub namespace: String,
    /// Replicas per Deployment/StatefulSet name, overriding the manifest (and the HPA's
    /// `minReplicas` for a Deployment that leaves `replicas` to an HPA).
    pub replicas: BTreeMap<String, u32>,
}

/// A problem that keeps a pod from being created, named the way `kubectl describe` would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    pub pod: String,
    pub reason: &'static str,
    pub message: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pod {}: {}: {}", self.pod, self.reason, self.message)
    }
}

impl std::error::Error for PlanError {}

impl Plan {
    /// Resolves every pod of `render`. Fails on the first pod Kubernetes could not create.
    pub fn build(render: &Render, opts: &PlanOptions) -> Result<Plan, PlanError> {
        let mut pods = Vec::new();
        for w in &render.workloads {
            let owner = format!("{} {}", w.kind, w.name);
            let (role, count) = match w.kind {
                "Deployment" => {
                    let hpa_min = render
                        .hpas
                        .iter()
                        .filter(|h| h.spec.scale_target_ref.name == w.name)
                        .find_map(|h| h.spec.min_replicas);
                    let count = opts
                        .replicas
                        .get(&w.name)
                        .copied()
                        .unwrap_or_else(|| w.replicas.or(hpa_min).map_or(1, |n| n.max(0) as u32));
                    (Role::Serving, count)
                }
                "StatefulSet" => (
                    Role::Serving,
                    opts.replicas.get(&w.name).copied().unwrap_or(w.replicas.unwrap_or(1).max(0) as u32),
                ),
                "Job" => (Role::Job { backoff_limit: w.backoff_limit.unwrap_or(6).max(0) as u32 }, 1),
                "Pod" => (Role::Test, 1),
                _ => continue,
            };
            for ordinal in 0..count {
                let pod = match role {
                    Role::Serving => format!("{}-{ordinal}", w.name),
                    _ => w.name.clone(),
                };
                pods.push(pod_plan(render, opts, w, &owner, pod, role.clone())?);
            }
        }
        Ok(Plan { namespace: opts.namespace.clone(), pods })
    }

    /// The pods of one app (`app.kubernetes.io/name`).
    pub fn app(&self, app: &str) -> impl Iterator<Item = &PodPlan> {
        self.pods.iter().filter(move |p| p.app == app)
    }
}

/// Builds one pod.
pub fn pod_plan(
    render: &Render,
    opts: &PlanOptions,
    w: &Workload,
    owner: &str,
    pod: String,
    role: Role,
) -> Result<PodPlan, PlanError> {
    let err = |reason: &'static str, message: String| PlanError { pod: pod.clone(), reason, message };
    let spec = &w.spec;
    if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(err("Unsupported", "init containers are not rehearsed".into()));
    }
    let [c] = spec.containers.as_slice() else {
        return Err(err(
            "Unsupported",
            format!("{} containers; the rehearsal runs pods of one container", spec.containers.len()),
        ));
    };
    let image = c.image.clone().ok_or_else(|| err("InvalidImageName", format!("container {} has no image", c.name)))?;

    let metadata = PodMeta {
        name: &pod,
        namespace: &opts.namespace,
        labels: &w.labels,
        service_account: spec.service_account_name.as_deref(),
    };
    let env = resolve_env(render, c, &metadata)
        .map_err(|m| err("CreateContainerConfigError", format!("container {}: {m}", c.name)))?;
    let expand_all =
        |list: &Option<Vec<String>>| list.as_ref().map(|v| v.iter().map(|s| expand(s, &env)).collect::<Vec<_>>());

    let sc = Security::merge(spec.security_context.as_ref(), c.security_context.as_ref());
    if sc.run_as_non_root && sc.run_as_user == Some(0) {
        return Err(err(
            "CreateContainerConfigError",
            format!("container {} has runAsNonRoot and runAsUser 0", c.name),
        ));
    }

    let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    let cpus = limits.and_then(|l| l.get("cpu")).and_then(|q| parse_quantity(&q.0));
    let memory_bytes = limits.and_then(|l| l.get("memory")).and_then(|q| parse_quantity(&q.0)).map(|b| b as u64);
    let cpu_request = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("cpu"))
        .and_then(|q| parse_quantity(&q.0));

    let ports: BTreeMap<String, u16> = c
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_else(|| p.container_port.to_string()), p.container_port as u16))
        .collect();

    let (empty_dirs, claims, files) = volumes(render, w, c).map_err(|m| err("FailedMount", m))?;

    let probe = |p: Option<&K8sProbe>, which: &str| -> Result<Option<Probe>, PlanError> {
        p.map(|p| convert_probe(p, &ports)).transpose().map_err(|m| err("Unhealthy", format!("{which} probe: {m}")))
    };
    let startup = probe(c.startup_probe.as_ref(), "startup")?;
    let readiness = probe(c.readiness_probe.as_ref(), "readiness")?;

    let restart = match spec.restart_policy.as_deref() {
        Some("Never") => Restart::Never,
        Some("OnFailure") => Restart::OnFailure,
        _ => Restart::Always,
    };

    let aliases = aliases(render, w, &pod, &opts.namespace, &ports).map_err(|m| err("ServiceMisconfigured", m))?;

    Ok(PodPlan {
        owner: owner.to_owned(),
        role,
        app: w.labels.get(NAME_LABEL).cloned().unwrap_or_default(),
        labels: w.labels.clone(),
        container: c.name.clone(),
        image,
        command: expand_all(&c.command),
        args: expand_all(&c.args),
        env,
        run_as_user: sc.run_as_user,
        run_as_group: sc.run_as_group,
        run_as_non_root: sc.run_as_non_root,
        supplemental_groups: sc.supplemental_groups,
        read_only_root: sc.read_only_root,
        no_new_privileges: sc.no_new_privileges,
        cap_drop: sc.cap_drop,
        cap_add: sc.cap_add,
        privileged: sc.privileged,
        cpus,
        memory_bytes,
        cpu_request,
        empty_dirs,
        claims,
        files,
        ports,
        startup,
        readiness,
        restart,
        termination_grace_secs: spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u32,
        aliases,
        pod,
    })
}

/// What `fieldRef` can read.
struct PodMeta<'a> {
    name: &'a str,
    namespace: &'a str,
    labels: &'a BTreeMap<String, String>,
    service_account: Option<&'a str>,
}

/// The container's environment in Kubernetes order: `envFrom` first, then `env`, later
/// names overriding earlier ones; `$(VAR)` in values refers to variables defined before.
fn resolve_env(render: &Render, c: &Container, meta: &PodMeta<'_>) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match config_map(render, &r.name) {
                Some(data) => data.into_iter().for_each(|(k, v)| set(&mut env, format!("{prefix}{k}"), v)),
                None if r.optional == Some(true) => {}
                None => return Err(format!("envFrom: configmap \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &from.secret_ref {
            match secret(render, &r.name) {
                Some(data) => data.into_iter().for_each(|(k, v)| set(&mut env, format!("{prefix}{k}"), v)),
                None if r.optional == Some(true) => {}
                None => return Err(format!("envFrom: secret \"{}\" not found", r.name)),
            }
        }
    }
    for var in c.env.iter().flatten() {
        if let Some(value) = env_var_value(render, var, meta, &env)? {
            set(&mut env, var.name.clone(), value);
        }
    }
    Ok(env)
}

fn env_var_value(
    render: &Render,
    var: &EnvVar,
    meta: &PodMeta<'_>,
    before: &[(String, String)],
) -> Result<Option<String>, String> {
    let name = &var.name;
    let Some(from) = &var.value_from else {
        return Ok(Some(expand(var.value.as_deref().unwrap_or(""), before)));
    };
    if let Some(r) = &from.secret_key_ref {
        let optional = r.optional == Some(true);
        return match secret(render, &r.name) {
            None if optional => Ok(None),
            None => Err(format!("env {name}: secret \"{}\" not found", r.name)),
            Some(data) => match data.get(&r.key) {
                Some(v) => Ok(Some(v.clone())),
                None if optional => Ok(None),
                None => Err(format!("env {name}: couldn't find key {} in Secret {}/{}", r.key, meta.namespace, r.name)),
            },
        };
    }
    if let Some(r) = &from.config_map_key_ref {
        let optional = r.optional == Some(true);
        return match config_map(render, &r.name) {
            None if optional => Ok(None),
            None => Err(format!("env {name}: configmap \"{}\" not found", r.name)),
            Some(data) => match data.get(&r.key) {
                Some(v) => Ok(Some(v.clone())),
                None if optional => Ok(None),
                None => {
                    Err(format!("env {name}: couldn't find key {} in ConfigMap {}/{}", r.key, meta.namespace, r.name))
                }
            },
        };
    }
    if let Some(r) = &from.field_ref {
        let path = r.field_path.as_str();
        let label =
            |p: &str, prefix: &str| p.strip_prefix(prefix).and_then(|s| s.strip_suffix("']")).map(str::to_owned);
        let value = match path {
            "metadata.name" => meta.name.to_owned(),
            "metadata.namespace" => meta.namespace.to_owned(),
            "spec.serviceAccountName" => meta.service_account.unwrap_or("default").to_owned(),
            "spec.nodeName" => "rehearsal".to_owned(),
            p => match label(p, "metadata.labels['") {
                Some(k) => meta.labels.get(&k).cloned().unwrap_or_default(),
                None => {
                    return Err(format!(
                        "env {name}: fieldRef {p} is not rehearsed (known before the pod starts: metadata.name/namespace/labels, spec.serviceAccountName/nodeName)"
                    ));
                }
            },
        };
        return Ok(Some(value));
    }
    Err(format!("env {name}: resourceFieldRef is not rehearsed"))
}

/// Kubernetes `$(VAR)` expansion: known variables are replaced, unknown references stay
/// as written, `$$` is a literal `$`.
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn config_map(render: &Render, name: &str) -> Option<BTreeMap<String, String>> {
    render
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(name))
        .map(|c| c.data.clone().unwrap_or_default())
}

fn secret(render: &Render, name: &str) -> Option<BTreeMap<String, String>> {
    render.secrets.iter().find(|s| s.metadata.name.as_deref() == Some(name)).map(|s| {
        let mut out: BTreeMap<String, String> =
            s.data.iter().flatten().map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned())).collect();
        out.extend(s.string_data.clone().unwrap_or_default());
        out
    })
}

/// The merged security settings (container fields win over the pod's).
#[derive(Debug, Default)]
struct Security {
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
    run_as_non_root: bool,
    supplemental_groups: Vec<i64>,
    read_only_root: bool,
    no_new_privileges: bool,
    cap_drop: Vec<String>,
    cap_add: Vec<String>,
    privileged: bool,
}

impl Security {
    fn merge(pod: Option<&PodSecurityContext>, c: Option<&SecurityContext>) -> Security {
        let mut groups: Vec<i64> = pod.and_then(|p| p.supplemental_groups.clone()).unwrap_or_default();
        if let Some(fs) = pod.and_then(|p| p.fs_group) {
            groups.push(fs);
        }
        groups.sort_unstable();
        groups.dedup();
        let caps = c.and_then(|c| c.capabilities.as_ref());
        Security {
            run_as_user: c.and_then(|c| c.run_as_user).or(pod.and_then(|p| p.run_as_user)),
            run_as_group: c.and_then(|c| c.run_as_group).or(pod.and_then(|p| p.run_as_group)),
            run_as_non_root: c.and_then(|c| c.run_as_non_root).or(pod.and_then(|p| p.run_as_non_root)).unwrap_or(false),
            supplemental_groups: groups,
            read_only_root: c.and_then(|c| c.read_only_root_filesystem).unwrap_or(false),
            // Kubernetes: allowPrivilegeEscalation=false sets no_new_privs on the process.
            no_new_privileges: c.and_then(|c| c.allow_privilege_escalation) == Some(false),
            cap_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
            cap_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
            privileged: c.and_then(|c| c.privileged).unwrap_or(false),
        }
    }
}

fn port_of(port: &IntOrString, ports: &BTreeMap<String, u16>) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} out of range")),
        IntOrString::String(name) => {
            ports.get(name).copied().ok_or_else(|| format!("no container port named {name:?}"))
        }
    }
}

fn convert_probe(p: &K8sProbe, ports: &BTreeMap<String, u16>) -> Result<Probe, String> {
    let action = if let Some(g) = &p.grpc {
        ProbeAction::Grpc {
            port: u16::try_from(g.port).map_err(|_| "gRPC port out of range".to_owned())?,
            service: g.service.clone().unwrap_or_default(),
        }
    } else if let Some(t) = &p.tcp_socket {
        ProbeAction::Tcp { port: port_of(&t.port, ports)? }
    } else if let Some(h) = &p.http_get {
        ProbeAction::Http { port: port_of(&h.port, ports)?, path: h.path.clone().unwrap_or_else(|| "/".into()) }
    } else if let Some(e) = &p.exec {
        ProbeAction::Exec { command: e.command.clone().unwrap_or_default() }
    } else {
        return Err("no handler (grpc, tcpSocket, httpGet or exec)".into());
    };
    let pos = |v: Option<i32>, default: u32| v.map_or(default, |n| n.max(0) as u32);
    Ok(Probe {
        action,
        initial_delay_secs: pos(p.initial_delay_seconds, 0),
        period_secs: pos(p.period_seconds, 10).max(1),
        timeout_secs: pos(p.timeout_seconds, 1).max(1),
        failure_threshold: pos(p.failure_threshold, 3).max(1),
    })
}

/// The mounts of a container: emptyDirs, claims and ConfigMap/Secret files.
type Mounts = (Vec<EmptyDir>, Vec<Claim>, Vec<FileVolume>);

fn volumes(render: &Render, w: &Workload, c: &Container) -> Result<Mounts, String> {
    let mut empty_dirs = Vec::new();
    let mut claims = Vec::new();
    let mut files = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        if w.claims.contains(&m.name) && !w.spec.volumes.iter().flatten().any(|v| v.name == m.name) {
            if m.sub_path.as_ref().is_some_and(|s| !s.is_empty()) {
                return Err(format!("volume {}: subPath is not rehearsed", m.name));
            }
            claims.push(Claim { claim: m.name.clone(), mount_path: m.mount_path.clone() });
            continue;
        }
        let v = w.spec.volumes.iter().flatten().find(|v| v.name == m.name).ok_or_else(|| {
            format!(
                "volume {:?} mounted at {} is not declared (neither a pod volume nor a volumeClaimTemplate)",
                m.name, m.mount_path
            )
        })?;
        if m.sub_path.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(format!("volume {}: subPath is not rehearsed", m.name));
        }
        if let Some(e) = &v.empty_dir {
            empty_dirs.push(EmptyDir {
                mount_path: m.mount_path.clone(),
                size_bytes: e.size_limit.as_ref().and_then(|q| parse_quantity(&q.0)).map(|b| b as u64),
                memory: e.medium.as_deref() == Some("Memory"),
            });
        } else if let Some(cm) = &v.config_map {
            let data = match config_map(render, &cm.name) {
                Some(d) => d,
                None if cm.optional == Some(true) => BTreeMap::new(),
                None => {
                    return Err(format!(
                        "MountVolume.SetUp failed for volume {:?}: configmap {:?} not found",
                        v.name, cm.name
                    ));
                }
            };
            let mode = cm.default_mode.map_or(0o644, |m| m as u32);
            files.push(file_volume(&v.name, &m.mount_path, data, cm.items.as_deref(), mode)?);
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let data = match secret(render, &name) {
                Some(d) => d,
                None if s.optional == Some(true) => BTreeMap::new(),
                None => {
                    return Err(format!("MountVolume.SetUp failed for volume {:?}: secret {name:?} not found", v.name));
                }
            };
            let mode = s.default_mode.map_or(0o644, |m| m as u32);
            files.push(file_volume(&v.name, &m.mount_path, data, s.items.as_deref(), mode)?);
        } else {
            return Err(format!("volume {:?}: only emptyDir, configMap and secret volumes are rehearsed", v.name));
        }
    }
    Ok((empty_dirs, claims, files))
}

fn file_volume(
    volume: &str,
    mount_path: &str,
    data: BTreeMap<String, String>,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
    default_mode: u32,
) -> Result<FileVolume, String> {
    let files = match items {
        None => {
            data.into_iter().map(|(name, v)| VolumeFile { name, content: v.into_bytes(), mode: default_mode }).collect()
        }
        Some(items) => items
            .iter()
            .map(|i| {
                let v = data.get(&i.key).ok_or_else(|| format!("volume {volume:?}: no key {:?}", i.key))?;
                Ok(VolumeFile {
                    name: i.path.clone(),
                    content: v.clone().into_bytes(),
                    mode: i.mode.map_or(default_mode, |m| m as u32),
                })
            })
            .collect::<Result<_, String>>()?,
    };
    Ok(FileVolume { volume: volume.to_owned(), mount_path: mount_path.to_owned(), files })
}

/// DNS names of the pod: every Service selecting it (`svc`, `svc.ns`, `svc.ns.svc`,
/// `svc.ns.svc.cluster.local`) and, for a StatefulSet, `pod.<serviceName>[.ns.svc.cluster.local]`.
/// Docker's aliases cannot remap ports, so a Service whose port differs from its target
/// container port is refused.
fn aliases(
    render: &Render,
    w: &Workload,
    pod: &str,
    ns: &str,
    ports: &BTreeMap<String, u16>,
) -> Result<Vec<String>, String> {
    let mut out = vec![pod.to_owned()];
    let qualified = |name: &str| {
        vec![
            name.to_owned(),
            format!("{name}.{ns}"),
            format!("{name}.{ns}.svc"),
            format!("{name}.{ns}.svc.cluster.local"),
        ]
    };
    for svc in &render.services {
        let Some(spec) = &svc.spec else { continue };
        let Some(selector) = &spec.selector else { continue };
        let selector = LabelSelector { match_labels: Some(selector.clone()), match_expressions: None };
        if selector.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            || !selector_matches(Some(&selector), &w.labels)
        {
            continue;
        }
        let name = svc.metadata.name.clone().unwrap_or_default();
        for p in spec.ports.iter().flatten() {
            let target = match &p.target_port {
                None => p.port as u16,
                Some(t) => port_of(t, ports).map_err(|e| format!("Service {name} port {}: {e}", p.port))?,
            };
            if target != p.port as u16 {
                return Err(format!(
                    "Service {name} maps port {} to container port {target}; Docker network aliases cannot remap ports",
                    p.port
                ));
            }
        }
        out.extend(qualified(&name));
    }
    if w.kind == "StatefulSet"
        && let Some(governing) = render.services.iter().find(|s| {
            s.spec.as_ref().and_then(|sp| sp.cluster_ip.as_deref()) == Some("None")
                && s.spec
                    .as_ref()
                    .and_then(|sp| sp.selector.as_ref())
                    .is_some_and(|sel| sel.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
        })
    {
        let g = governing.metadata.name.clone().unwrap_or_default();
        out.push(format!("{pod}.{g}"));
        out.push(format!("{pod}.{g}.{ns}.svc.cluster.local"));
    }
    out.dedup();
    Ok(out)
}
