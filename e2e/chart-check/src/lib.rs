//! Checks over the manifests `helm template` renders from `charts/cloudmart`.
//!
//! [`Render::parse`] reads a multi-document YAML stream into `k8s-openapi` types;
//! [`Render::check`] runs every rule and returns the problems it found (empty = pass):
//!
//! * exactly one HorizontalPodAutoscaler, `autoscaling/v2` on CPU, targeting the time-sale
//!   Deployment (which exists and leaves `replicas` to the HPA);
//! * every container of every workload has CPU and memory requests and a memory limit;
//! * every cloudmart service container has gRPC startup/readiness/liveness probes on its
//!   gRPC port and the hardened `securityContext`; infrastructure containers are at least
//!   unprivileged, non-root and without privilege escalation;
//! * every Secret/ConfigMap/ServiceAccount a pod names exists in the render (or is
//!   declared external), and every in-namespace host a service is pointed at
//!   (`DELIVERY_ENDPOINT`, `KAFKA_BROKERS`, `OTEL_EXPORTER_OTLP_ENDPOINT`, `--*-endpoint`)
//!   is a rendered Service exposing that port;
//! * every Service selects the pods of a Deployment/StatefulSet and its named target
//!   ports exist there;
//! * a default-deny NetworkPolicy exists, no rule is open to everything, and the flows
//!   the design needs are allowed — evaluated like a CNI would, egress of the source and
//!   ingress of the destination — while a pod nobody vouched for reaches nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;

/// Label values of `app.kubernetes.io/name` that mark the three cloudmart services.
pub const SERVICES: [&str; 3] = ["order", "delivery", "timesale"];
/// Label every load/test/plugin pod carries to be let in.
pub const CLIENT_LABEL: (&str, &str) = ("cloudmart.io/client", "true");
/// Env vars whose value names hosts the service connects to.
pub const HOST_VARS: [&str; 3] = ["DELIVERY_ENDPOINT", "KAFKA_BROKERS", "OTEL_EXPORTER_OTLP_ENDPOINT"];

const NAME: &str = "app.kubernetes.io/name";

pub type Labels = BTreeMap<String, String>;

/// A pod-owning object (Deployment, StatefulSet, Job or bare Pod) reduced to what the
/// checks need.
#[derive(Debug, Clone)]
pub struct Workload {
    pub kind: &'static str,
    pub name: String,
    pub replicas: Option<i32>,
    /// A Job's `backoffLimit` (retries before it counts as failed).
    pub backoff_limit: Option<i32>,
    pub labels: Labels,
    pub spec: PodSpec,
    /// A StatefulSet's `volumeClaimTemplates` names: volumes each pod gets as its own
    /// PersistentVolumeClaim (outliving the pod's containers).
    pub claims: Vec<String>,
}

impl Workload {
    /// `app.kubernetes.io/name` of the pods.
    pub fn app(&self) -> &str {
        self.labels.get(NAME).map(String::as_str).unwrap_or("")
    }
    pub fn is_cloudmart_service(&self) -> bool {
        self.kind == "Deployment" && SERVICES.contains(&self.app())
    }
    fn containers(&self) -> impl Iterator<Item = &Container> {
        self.spec.init_containers.iter().flatten().chain(self.spec.containers.iter())
    }
    fn id(&self) -> String {
        format!("{} {}", self.kind, self.name)
    }
}

/// One rendered profile.
#[derive(Debug, Default)]
pub struct Render {
    pub workloads: Vec<Workload>,
    pub services: Vec<Service>,
    pub config_maps: Vec<ConfigMap>,
    pub secrets: Vec<Secret>,
    pub service_accounts: Vec<ServiceAccount>,
    pub hpas: Vec<HorizontalPodAutoscaler>,
    pub network_policies: Vec<NetworkPolicy>,
    /// Kinds seen, with counts (for the report).
    pub kinds: BTreeMap<String, usize>,
}

/// Objects that are expected to exist outside the render (external profile).
#[derive(Debug, Default, Clone)]
pub struct Externals {
    pub secrets: BTreeSet<String>,
}

impl Externals {
    /// From a comma separated list, e.g. `CHART_EXTERNAL_SECRETS`.
    pub fn from_list(list: &str) -> Self {
        Self { secrets: list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect() }
    }
}

fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value, what: &str) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("{what}: {e}"))
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

impl Render {
    /// Parses a multi-document YAML stream (`helm template` output).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut render = Render::default();
        for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
            let value = serde_json::Value::deserialize(doc).map_err(|e| format!("document {i}: {e}"))?;
            if value.is_null() {
                continue;
            }
            let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("").to_owned();
            let name = value.pointer("/metadata/name").and_then(|k| k.as_str()).unwrap_or("").to_owned();
            let what = format!("{kind} {name}");
            *render.kinds.entry(kind.clone()).or_default() += 1;
            match kind.as_str() {
                "Deployment" => {
                    let d: Deployment = decode(value, &what)?;
                    let spec = d.spec;
                    render.workloads.push(Workload {
                        kind: "Deployment",
                        name: name_of(&d.metadata),
                        replicas: spec.replicas,
                        backoff_limit: None,
                        claims: Vec::new(),
                        labels: spec.template.metadata.and_then(|m| m.labels).unwrap_or_default(),
                        spec: spec.template.spec.ok_or_else(|| format!("{what}: no pod spec"))?,
                    });
                }
                "StatefulSet" => {
                    let s: StatefulSet = decode(value, &what)?;
                    let spec = s.spec;
                    render.workloads.push(Workload {
                        kind: "StatefulSet",
                        name: name_of(&s.metadata),
                        replicas: Some(spec.replicas.unwrap_or(1)),
                        backoff_limit: None,
                        claims: spec
                            .volume_claim_templates
                            .iter()
                            .flatten()
                            .filter_map(|c| c.metadata.name.clone())
                            .collect(),
                        labels: spec.template.metadata.and_then(|m| m.labels).unwrap_or_default(),
                        spec: spec.template.spec.ok_or_else(|| format!("{what}: no pod spec"))?,
                    });
                }
                "Job" => {
                    let j: Job = decode(value, &what)?;
                    let spec = j.spec.ok_or_else(|| format!("{what}: no spec"))?;
                    render.workloads.push(Workload {
                        kind: "Job",
                        name: name_of(&j.metadata),
                        replicas: Some(spec.parallelism.unwrap_or(1)),
                        backoff_limit: Some(spec.backoff_limit.unwrap_or(6)),
                        claims: Vec::new(),
                        labels: spec.template.metadata.and_then(|m| m.labels).unwrap_or_default(),
                        spec: spec.template.spec.ok_or_else(|| format!("{what}: no pod spec"))?,
                    });
                }
                "Pod" => {
                    let p: Pod = decode(value, &what)?;
                    render.workloads.push(Workload {
                        kind: "Pod",
                        name: name_of(&p.metadata),
                        replicas: Some(1),
                        backoff_limit: None,
                        claims: Vec::new(),
                        labels: p.metadata.labels.unwrap_or_default(),
                        spec: p.spec.ok_or_else(|| format!("{what}: no spec"))?,
                    });
                }
                "Service" => render.services.push(decode(value, &what)?),
                "ConfigMap" => render.config_maps.push(decode(value, &what)?),
                "Secret" => render.secrets.push(decode(value, &what)?),
                "ServiceAccount" => render.service_accounts.push(decode(value, &what)?),
                "HorizontalPodAutoscaler" => {
                    if value.get("apiVersion").and_then(|v| v.as_str()) != Some("autoscaling/v2") {
                        return Err(format!("{what}: apiVersion must be autoscaling/v2"));
                    }
                    render.hpas.push(decode(value, &what)?)
                }
                "NetworkPolicy" => render.network_policies.push(decode(value, &what)?),
                _ => {}
            }
        }
        Ok(render)
    }

    fn workload_by_app(&self, app: &str) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.app() == app && w.kind != "Pod" && w.kind != "Job")
    }

    /// Runs every check; returns the problems found.
    pub fn check(&self, externals: &Externals) -> Vec<String> {
        let mut problems = Vec::new();
        problems.extend(self.check_hpa());
        problems.extend(self.check_resources());
        problems.extend(self.check_hardening());
        problems.extend(self.check_references(externals));
        problems.extend(self.check_service_selectors());
        problems.extend(self.check_network_policies());
        problems
    }

    /// Exactly one HPA (autoscaling/v2, CPU), on the time-sale Deployment; order and
    /// delivery have fixed replica counts.
    pub fn check_hpa(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.hpas.len() != 1 {
            let names: Vec<_> = self.hpas.iter().map(|h| name_of(&h.metadata)).collect();
            p.push(format!("expected exactly one HorizontalPodAutoscaler, found {}: {names:?}", self.hpas.len()));
        }
        let timesale = self.workloads.iter().find(|w| w.kind == "Deployment" && w.app() == "timesale");
        let Some(timesale) = timesale else {
            p.push("no time-sale Deployment (app.kubernetes.io/name=timesale)".into());
            return p;
        };
        for hpa in &self.hpas {
            let id = format!("HorizontalPodAutoscaler {}", name_of(&hpa.metadata));
            let spec = &hpa.spec;
            let target = &spec.scale_target_ref;
            if target.kind != "Deployment" || target.name != timesale.name {
                p.push(format!(
                    "{id} targets {} {}, not the time-sale Deployment {}",
                    target.kind, target.name, timesale.name
                ));
            }
            if target.api_version.as_deref() != Some("apps/v1") {
                p.push(format!("{id}: scaleTargetRef.apiVersion must be apps/v1"));
            }
            let min = spec.min_replicas.unwrap_or(1);
            if min < 1 || spec.max_replicas < min {
                p.push(format!("{id}: replicas {min}..{} make no sense", spec.max_replicas));
            }
            let cpu = spec.metrics.iter().flatten().any(|m| {
                m.type_ == "Resource"
                    && m.resource.as_ref().is_some_and(|r| {
                        r.name == "cpu" && r.target.type_ == "Utilization" && r.target.average_utilization.is_some()
                    })
            });
            if !cpu {
                p.push(format!("{id}: no CPU utilisation metric"));
            }
            if spec.behavior.as_ref().and_then(|b| b.scale_up.as_ref()).is_none()
                || spec.behavior.as_ref().and_then(|b| b.scale_down.as_ref()).is_none()
            {
                p.push(format!("{id}: behavior.scaleUp/scaleDown not tuned"));
            }
        }
        if !self.hpas.is_empty() && timesale.replicas.is_some() {
            p.push(format!("{}: sets spec.replicas although an HPA owns it", timesale.id()));
        }
        for app in ["order", "delivery"] {
            match self.workload_by_app(app) {
                Some(w) if w.replicas.is_none() => p.push(format!("{}: no fixed replica count", w.id())),
                Some(_) => {}
                None => p.push(format!("no {app} Deployment")),
            }
        }
        p
    }

    /// CPU and memory requests (and a memory limit) on every container.
    pub fn check_resources(&self) -> Vec<String> {
        let mut p = Vec::new();
        for w in &self.workloads {
            for c in w.containers() {
                let r = c.resources.as_ref();
                let requests = r.and_then(|r| r.requests.as_ref());
                let limits = r.and_then(|r| r.limits.as_ref());
                for res in ["cpu", "memory"] {
                    if !requests.is_some_and(|m| m.contains_key(res)) {
                        p.push(format!("{} container {}: no {res} request", w.id(), c.name));
                    }
                }
                if !limits.is_some_and(|m| m.contains_key("memory")) {
                    p.push(format!("{} container {}: no memory limit", w.id(), c.name));
                }
            }
        }
        p
    }

    /// gRPC probes and the hardened securityContext on the services; infrastructure at
    /// least unprivileged.
    pub fn check_hardening(&self) -> Vec<String> {
        let mut p = Vec::new();
        for w in &self.workloads {
            let pod_sc = w.spec.security_context.as_ref();
            let pod_non_root = pod_sc.and_then(|s| s.run_as_non_root) == Some(true);
            let pod_seccomp = pod_sc.and_then(|s| s.seccomp_profile.as_ref()).map(|s| s.type_.as_str());
            for c in w.containers() {
                let id = format!("{} container {}", w.id(), c.name);
                let sc = c.security_context.as_ref();
                let non_root = sc.and_then(|s| s.run_as_non_root).map_or(pod_non_root, |v| v);
                let no_escalation = sc.and_then(|s| s.allow_privilege_escalation) == Some(false);
                let privileged = sc.and_then(|s| s.privileged) == Some(true);
                if privileged {
                    p.push(format!("{id}: privileged"));
                }
                if !no_escalation {
                    p.push(format!("{id}: allowPrivilegeEscalation is not false"));
                }
                if !non_root {
                    p.push(format!("{id}: runAsNonRoot is not true"));
                }
                if !w.is_cloudmart_service() && w.kind != "Pod" {
                    continue;
                }
                // cloudmart images (services and the test pod): fully hardened
                if sc.and_then(|s| s.read_only_root_filesystem) != Some(true) {
                    p.push(format!("{id}: readOnlyRootFilesystem is not true"));
                }
                let drops_all = sc
                    .and_then(|s| s.capabilities.as_ref())
                    .and_then(|c| c.drop.as_ref())
                    .is_some_and(|d| d.iter().any(|x| x == "ALL"));
                if !drops_all {
                    p.push(format!("{id}: capabilities.drop does not contain ALL"));
                }
                let seccomp = sc.and_then(|s| s.seccomp_profile.as_ref()).map(|s| s.type_.as_str()).or(pod_seccomp);
                if seccomp != Some("RuntimeDefault") {
                    p.push(format!("{id}: seccompProfile is not RuntimeDefault"));
                }
                if !w.is_cloudmart_service() {
                    continue;
                }
                let grpc_port = c
                    .ports
                    .iter()
                    .flatten()
                    .find(|port| port.name.as_deref() == Some("grpc"))
                    .map(|port| port.container_port);
                let Some(grpc_port) = grpc_port else {
                    p.push(format!("{id}: no container port named grpc"));
                    continue;
                };
                for (probe_name, probe) in [
                    ("startupProbe", &c.startup_probe),
                    ("readinessProbe", &c.readiness_probe),
                    ("livenessProbe", &c.liveness_probe),
                ] {
                    match probe.as_ref().and_then(|pr| pr.grpc.as_ref()) {
                        None => p.push(format!("{id}: no gRPC {probe_name}")),
                        Some(g) if g.port != grpc_port => {
                            p.push(format!("{id}: {probe_name} probes port {} not the gRPC port {grpc_port}", g.port))
                        }
                        Some(_) => {}
                    }
                }
                let tmp = c.volume_mounts.iter().flatten().any(|m| m.mount_path == "/tmp");
                if !tmp {
                    p.push(format!("{id}: no writable /tmp volume"));
                }
            }
            if w.is_cloudmart_service() && w.spec.automount_service_account_token != Some(false) {
                p.push(format!("{}: automountServiceAccountToken is not false", w.id()));
            }
        }
        p
    }

    /// Env/envFrom/volume references to Secrets and ConfigMaps, service accounts, and the
    /// hosts the services are pointed at.
    pub fn check_references(&self, externals: &Externals) -> Vec<String> {
        let mut p = Vec::new();
        let secrets: BTreeSet<String> = self.secrets.iter().map(|s| name_of(&s.metadata)).collect();
        let config_maps: BTreeMap<String, &ConfigMap> =
            self.config_maps.iter().map(|c| (name_of(&c.metadata), c)).collect();
        let accounts: BTreeSet<String> = self.service_accounts.iter().map(|s| name_of(&s.metadata)).collect();
        let secret_ok = |name: &str| secrets.contains(name) || externals.secrets.contains(name);
        for w in &self.workloads {
            if let Some(sa) = w.spec.service_account_name.as_deref()
                && sa != "default"
                && !accounts.contains(sa)
            {
                p.push(format!("{}: ServiceAccount {sa} is not rendered", w.id()));
            }
            for v in w.spec.volumes.iter().flatten() {
                if let Some(cm) = &v.config_map
                    && !config_maps.contains_key(&cm.name)
                {
                    p.push(format!("{} volume {}: ConfigMap {} does not exist", w.id(), v.name, cm.name));
                }
                if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.as_deref())
                    && !secret_ok(s)
                {
                    p.push(format!("{} volume {}: Secret {s} does not exist", w.id(), v.name));
                }
            }
            for c in w.containers() {
                let id = format!("{} container {}", w.id(), c.name);
                // (var, value) pairs the container sees, for the host check
                let mut seen: Vec<(String, String)> = Vec::new();
                for e in c.env_from.iter().flatten() {
                    if let Some(r) = &e.config_map_ref {
                        match config_maps.get(&r.name) {
                            None => p.push(format!("{id}: envFrom ConfigMap {} does not exist", r.name)),
                            Some(cm) => seen.extend(cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone()))),
                        }
                    }
                    if let Some(r) = &e.secret_ref
                        && !secret_ok(&r.name)
                    {
                        p.push(format!("{id}: envFrom Secret {} does not exist", r.name));
                    }
                }
                for e in c.env.iter().flatten() {
                    if let Some(v) = &e.value {
                        seen.push((e.name.clone(), v.clone()));
                    }
                    let Some(from) = &e.value_from else { continue };
                    if let Some(r) = &from.secret_key_ref
                        && !secret_ok(&r.name)
                    {
                        p.push(format!("{id}: env {} names Secret {} which does not exist", e.name, r.name));
                    }
                    if let Some(r) = &from.config_map_key_ref {
                        match config_maps.get(&r.name) {
                            None => {
                                p.push(format!("{id}: env {} names ConfigMap {} which does not exist", e.name, r.name))
                            }
                            Some(cm) if !cm.data.as_ref().is_some_and(|d| d.contains_key(&r.key)) => {
                                p.push(format!("{id}: env {}: ConfigMap {} has no key {}", e.name, r.name, r.key))
                            }
                            Some(_) => {}
                        }
                    }
                }
                // hosts: env vars, and `--xxx-endpoint <url>` arguments
                let mut targets: Vec<(String, String)> =
                    seen.into_iter().filter(|(k, _)| HOST_VARS.contains(&k.as_str())).collect();
                let argv: Vec<&String> = c.command.iter().flatten().chain(c.args.iter().flatten()).collect();
                for pair in argv.windows(2) {
                    if pair[0].starts_with("--") && pair[0].ends_with("-endpoint") {
                        targets.push((pair[0].clone(), pair[1].clone()));
                    }
                }
                for (var, value) in targets {
                    for (host, port) in hosts(&value) {
                        if host.contains('.') || host == "localhost" || host.parse::<std::net::IpAddr>().is_ok() {
                            continue; // outside the namespace: not ours to check
                        }
                        let svc = self.services.iter().find(|s| name_of(&s.metadata) == host);
                        match (svc, port) {
                            (None, _) => p.push(format!("{id}: {var}={value}: no Service named {host}")),
                            (Some(s), Some(port)) => {
                                let ports = s.spec.as_ref().and_then(|s| s.ports.as_ref());
                                if !ports.is_some_and(|ps| ps.iter().any(|sp| sp.port == port)) {
                                    p.push(format!("{id}: {var}={value}: Service {host} has no port {port}"));
                                }
                            }
                            (Some(_), None) => {}
                        }
                    }
                }
            }
        }
        p
    }

    /// Every Service selects the pods of a Deployment/StatefulSet, with its target ports.
    pub fn check_service_selectors(&self) -> Vec<String> {
        let mut p = Vec::new();
        for s in &self.services {
            let id = format!("Service {}", name_of(&s.metadata));
            let spec = s.spec.clone().unwrap_or_default();
            let selector = spec.selector.unwrap_or_default();
            if selector.is_empty() {
                p.push(format!("{id}: no selector"));
                continue;
            }
            let owners: Vec<&Workload> = self
                .workloads
                .iter()
                .filter(|w| matches!(w.kind, "Deployment" | "StatefulSet"))
                .filter(|w| selector.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
                .collect();
            if owners.is_empty() {
                p.push(format!("{id}: selector {selector:?} matches no Deployment/StatefulSet pods"));
                continue;
            }
            for sp in spec.ports.iter().flatten() {
                if let Some(IntOrString::String(target)) = &sp.target_port {
                    let found = owners.iter().any(|w| {
                        w.spec
                            .containers
                            .iter()
                            .flat_map(|c| c.ports.iter().flatten())
                            .any(|cp| cp.name.as_deref() == Some(target))
                    });
                    if !found {
                        p.push(format!("{id}: targetPort {target} is not a container port of the selected pods"));
                    }
                }
            }
        }
        p
    }

    /// Default deny, no open rule, and each needed flow allowed.
    pub fn check_network_policies(&self) -> Vec<String> {
        let mut p = Vec::new();
        let np = NetPolicies(&self.network_policies);
        let default_deny = self.network_policies.iter().any(|n| {
            let Some(spec) = &n.spec else { return false };
            let types = spec.policy_types.clone().unwrap_or_default();
            selector_is_empty(spec.pod_selector.as_ref())
                && types.iter().any(|t| t == "Ingress")
                && types.iter().any(|t| t == "Egress")
                && spec.ingress.as_ref().is_none_or(Vec::is_empty)
                && spec.egress.as_ref().is_none_or(Vec::is_empty)
        });
        if !default_deny {
            p.push("no default-deny NetworkPolicy (podSelector {}, policyTypes [Ingress, Egress], no rules)".into());
        }
        for n in &self.network_policies {
            let id = format!("NetworkPolicy {}", name_of(&n.metadata));
            let Some(spec) = &n.spec else { continue };
            for r in spec.ingress.iter().flatten() {
                if r.from.as_ref().is_none_or(Vec::is_empty) && r.ports.as_ref().is_none_or(Vec::is_empty) {
                    p.push(format!("{id}: an ingress rule allows everything"));
                }
            }
            for r in spec.egress.iter().flatten() {
                if r.to.as_ref().is_none_or(Vec::is_empty) && r.ports.as_ref().is_none_or(Vec::is_empty) {
                    p.push(format!("{id}: an egress rule allows everything"));
                }
            }
        }

        let pod = |app: &str| self.workloads.iter().find(|w| w.app() == app);
        let mut need = |from: &Workload, to_app: &str, port: i32, external: bool| match pod(to_app) {
            Some(to) => {
                if !np.allows(from, to, port, "TCP") {
                    p.push(format!("NetworkPolicies block {} -> {} port {port}", from.app(), to.app()));
                }
            }
            None if external => {
                if !np.allows_external(from, port, "TCP") {
                    p.push(format!("NetworkPolicies block {} -> external {to_app} port {port}", from.app()));
                }
            }
            None => p.push(format!("no {to_app} workload")),
        };
        let services: Vec<&Workload> = self.workloads.iter().filter(|w| w.is_cloudmart_service()).collect();
        for s in &services {
            need(s, "postgresql", 5432, true);
            need(s, "kafka", 9092, true);
            let otlp = self.env_value(s, "OTEL_EXPORTER_OTLP_ENDPOINT");
            if pod("jaeger").is_some() || otlp.is_some() {
                let port = otlp.as_deref().and_then(|v| hosts(v).first().and_then(|h| h.1)).unwrap_or(4317);
                need(s, "jaeger", port, true);
            }
        }
        if let (Some(order), Some(delivery)) = (pod("order"), pod("delivery")) {
            need(order, "delivery", grpc_port(delivery).unwrap_or(50052), false);
        }
        if let Some(topics) = pod("kafka-topics")
            && pod("kafka").is_some()
        {
            need(topics, "kafka", 9092, false);
        }
        // client pods (helm test, load generator) -> every service
        let client = Workload {
            kind: "Pod",
            name: "synthetic-client".into(),
            replicas: Some(1),
            backoff_limit: None,
            claims: Vec::new(),
            labels: [(CLIENT_LABEL.0.to_owned(), CLIENT_LABEL.1.to_owned())].into(),
            spec: PodSpec::default(),
        };
        for s in &services {
            if let Some(port) = grpc_port(s) {
                need(&client, s.app(), port, false);
            }
        }
        // DNS for every pod
        for w in self.workloads.iter().chain(std::iter::once(&client)) {
            if !np.allows_dns(w) {
                p.push(format!("{}: NetworkPolicies block DNS (UDP 53 to kube-system)", w.id()));
            }
        }
        // least privilege: flows the design does not have stay closed
        let stranger = Workload { labels: [("app".to_owned(), "stranger".to_owned())].into(), ..client.clone() };
        for s in &services {
            if let Some(port) = grpc_port(s) {
                if np.allows(&stranger, s, port, "TCP") {
                    p.push(format!("an unlabelled pod can reach {} port {port}: not closed by default", s.app()));
                }
                for other in &services {
                    let sync_call = other.app() == "order" && s.app() == "delivery";
                    if other.app() != s.app() && !sync_call && np.allows(other, s, port, "TCP") {
                        p.push(format!(
                            "{} may call {} port {port}, a flow the design does not have",
                            other.app(),
                            s.app()
                        ));
                    }
                }
            }
        }
        if np.allows_external(&stranger, 443, "TCP") {
            p.push("an unlabelled pod may open connections to the outside".into());
        }
        p
    }

    /// The value a workload's first container sees for `var` (env or envFrom ConfigMap).
    pub fn env_value(&self, w: &Workload, var: &str) -> Option<String> {
        let c = w.spec.containers.first()?;
        if let Some(v) = c.env.iter().flatten().find(|e| e.name == var).and_then(|e| e.value.clone()) {
            return Some(v);
        }
        c.env_from.iter().flatten().filter_map(|e| e.config_map_ref.as_ref()).find_map(|r| {
            self.config_maps
                .iter()
                .find(|cm| name_of(&cm.metadata) == r.name)
                .and_then(|cm| cm.data.as_ref()?.get(var).cloned())
        })
    }

    /// Memory and CPU budget of the whole install at the HPA's maximum.
    pub fn budget(&self) -> Budget {
        let mut b = Budget::default();
        for w in &self.workloads {
            let hpa_max = self
                .hpas
                .iter()
                .map(|h| &h.spec)
                .find(|s| s.scale_target_ref.name == w.name && w.kind == "Deployment")
                .map(|s| (s.min_replicas.unwrap_or(1), s.max_replicas));
            let (min, max) = hpa_max.unwrap_or_else(|| {
                let r = i64::from(w.replicas.unwrap_or(1));
                (r as i32, r as i32)
            });
            for c in &w.spec.containers {
                let r = c.resources.clone().unwrap_or_default();
                let get = |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
                           k: &str| {
                    m.as_ref().and_then(|m| m.get(k)).and_then(|q| parse_quantity(&q.0)).unwrap_or(0.0)
                };
                let line = BudgetLine {
                    what: format!("{} {}/{}", w.kind, w.name, c.name),
                    replicas: (min, max),
                    cpu_request: get(&r.requests, "cpu"),
                    cpu_limit: get(&r.limits, "cpu"),
                    mem_request: get(&r.requests, "memory"),
                    mem_limit: get(&r.limits, "memory"),
                    transient: matches!(w.kind, "Job" | "Pod"),
                };
                b.lines.push(line);
            }
        }
        b
    }
}

/// (host, port) pairs of `http://host:port`, `host:port,host:port` or `postgres://u:p@host:port/db`.
pub fn hosts(value: &str) -> Vec<(String, Option<i32>)> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let rest = item.split_once("://").map_or(item, |(_, r)| r);
            let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
            let authority = rest.split(['/', '?']).next().unwrap_or("");
            match authority.rsplit_once(':') {
                Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => {
                    (h.to_owned(), p.parse().ok())
                }
                _ => (authority.to_owned(), None),
            }
        })
        .collect()
}

fn grpc_port(w: &Workload) -> Option<i32> {
    w.spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("grpc"))
        .map(|p| p.container_port)
}

fn selector_is_empty(s: Option<&LabelSelector>) -> bool {
    s.is_none_or(|s| {
        s.match_labels.as_ref().is_none_or(BTreeMap::is_empty) && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
    })
}

/// Kubernetes label-selector semantics (an absent or empty selector matches everything).
pub fn selector_matches(s: Option<&LabelSelector>, labels: &Labels) -> bool {
    let Some(s) = s else { return true };
    let labels_ok = s.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = s.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        let have = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// Where traffic goes, for peer matching.
enum Dest<'a> {
    /// A pod in the release's namespace.
    Pod(&'a Labels),
    /// Something outside the cluster.
    External,
    /// The cluster DNS in kube-system.
    Dns,
}

struct NetPolicies<'a>(&'a [NetworkPolicy]);

impl NetPolicies<'_> {
    fn selecting<'b>(&'b self, labels: &'b Labels, ty: &'b str) -> impl Iterator<Item = &'b NetworkPolicy> + 'b {
        self.0.iter().filter(move |n| {
            n.spec.as_ref().is_some_and(|s| {
                let types = s.policy_types.clone().unwrap_or_else(|| {
                    let mut t = vec!["Ingress".to_owned()];
                    if s.egress.is_some() {
                        t.push("Egress".into());
                    }
                    t
                });
                types.iter().any(|t| t == ty) && selector_matches(s.pod_selector.as_ref(), labels)
            })
        })
    }

    fn peer_matches(peer: &NetworkPolicyPeer, dest: &Dest<'_>) -> bool {
        match dest {
            Dest::Pod(labels) => {
                if peer.ip_block.is_some() {
                    return true; // an ipBlock can cover pod IPs too
                }
                match &peer.namespace_selector {
                    // same namespace
                    None => selector_matches(peer.pod_selector.as_ref(), labels),
                    // all namespaces (ours included)
                    Some(ns) if selector_is_empty(Some(ns)) => selector_matches(peer.pod_selector.as_ref(), labels),
                    // a namespace chosen by label: not provably ours
                    Some(_) => false,
                }
            }
            Dest::External => peer.ip_block.is_some(),
            Dest::Dns => {
                peer.ip_block.is_some()
                    || peer.namespace_selector.as_ref().is_some_and(|ns| {
                        selector_is_empty(Some(ns))
                            || ns.match_labels.as_ref().and_then(|m| m.get("kubernetes.io/metadata.name"))
                                == Some(&"kube-system".to_owned())
                    })
            }
        }
    }

    fn port_matches(
        ports: Option<&Vec<NetworkPolicyPort>>,
        dest_pod: Option<&Workload>,
        port: i32,
        proto: &str,
    ) -> bool {
        let Some(ports) = ports.filter(|p| !p.is_empty()) else {
            return true;
        };
        ports.iter().any(|pp| {
            if pp.protocol.as_deref().unwrap_or("TCP") != proto {
                return false;
            }
            match &pp.port {
                None => true,
                Some(IntOrString::Int(p)) => *p == port || pp.end_port.is_some_and(|end| (*p..=end).contains(&port)),
                Some(IntOrString::String(name)) => dest_pod.is_some_and(|w| {
                    w.spec
                        .containers
                        .iter()
                        .flat_map(|c| c.ports.iter().flatten())
                        .any(|cp| cp.name.as_deref() == Some(name) && cp.container_port == port)
                }),
            }
        })
    }

    fn egress_allows(
        &self,
        from: &Workload,
        dest: Dest<'_>,
        dest_pod: Option<&Workload>,
        port: i32,
        proto: &str,
    ) -> bool {
        let mut isolated = false;
        for n in self.selecting(&from.labels, "Egress") {
            isolated = true;
            let rules = n.spec.as_ref().and_then(|s| s.egress.as_ref());
            for r in rules.into_iter().flatten() {
                let peers_ok =
                    r.to.as_ref()
                        .filter(|t| !t.is_empty())
                        .is_none_or(|t| t.iter().any(|p| Self::peer_matches(p, &dest)));
                if peers_ok && Self::port_matches(r.ports.as_ref(), dest_pod, port, proto) {
                    return true;
                }
            }
        }
        !isolated
    }

    fn ingress_allows(&self, from: &Workload, to: &Workload, port: i32, proto: &str) -> bool {
        let mut isolated = false;
        for n in self.selecting(&to.labels, "Ingress") {
            isolated = true;
            let rules = n.spec.as_ref().and_then(|s| s.ingress.as_ref());
            for r in rules.into_iter().flatten() {
                let src = Dest::Pod(&from.labels);
                let peers_ok = r
                    .from
                    .as_ref()
                    .filter(|f| !f.is_empty())
                    .is_none_or(|f| f.iter().any(|p| Self::peer_matches(p, &src)));
                if peers_ok && Self::port_matches(r.ports.as_ref(), Some(to), port, proto) {
                    return true;
                }
            }
        }
        !isolated
    }

    /// Pod-to-pod in the namespace: egress of the source and ingress of the destination.
    fn allows(&self, from: &Workload, to: &Workload, port: i32, proto: &str) -> bool {
        self.egress_allows(from, Dest::Pod(&to.labels), Some(to), port, proto)
            && self.ingress_allows(from, to, port, proto)
    }

    fn allows_external(&self, from: &Workload, port: i32, proto: &str) -> bool {
        self.egress_allows(from, Dest::External, None, port, proto)
    }

    fn allows_dns(&self, from: &Workload) -> bool {
        self.egress_allows(from, Dest::Dns, None, 53, "UDP")
    }
}

/// Kubernetes quantity to a plain number (CPU in cores, memory in bytes).
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        _ => return None,
    };
    Some(n * mult)
}

#[derive(Debug, Clone)]
pub struct BudgetLine {
    pub what: String,
    /// (min, max) replicas; equal unless an HPA scales the workload.
    pub replicas: (i32, i32),
    pub cpu_request: f64,
    pub cpu_limit: f64,
    pub mem_request: f64,
    pub mem_limit: f64,
    /// Jobs and test pods: not part of the steady state.
    pub transient: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Budget {
    pub lines: Vec<BudgetLine>,
}

/// Totals: (cpu request, cpu limit, memory request, memory limit) in cores and bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Totals {
    pub cpu_request: f64,
    pub cpu_limit: f64,
    pub mem_request: f64,
    pub mem_limit: f64,
}

impl Budget {
    /// Steady-state totals with every HPA at `min` (false) or `max` (true) replicas.
    pub fn totals(&self, at_max: bool) -> Totals {
        let mut t = Totals { cpu_request: 0.0, cpu_limit: 0.0, mem_request: 0.0, mem_limit: 0.0 };
        for l in self.lines.iter().filter(|l| !l.transient) {
            let n = f64::from(if at_max { l.replicas.1 } else { l.replicas.0 });
            t.cpu_request += n * l.cpu_request;
            t.cpu_limit += n * l.cpu_limit;
            t.mem_request += n * l.mem_request;
            t.mem_limit += n * l.mem_limit;
        }
        t
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MI: f64 = 1024.0 * 1024.0;
        writeln!(f, "  {:<50} {:>9} {:>13} {:>16}", "container", "replicas", "cpu req/lim", "memory req/lim")?;
        for l in &self.lines {
            let reps = if l.replicas.0 == l.replicas.1 {
                format!("{}", l.replicas.0)
            } else {
                format!("{}..{}", l.replicas.0, l.replicas.1)
            };
            writeln!(
                f,
                "  {:<50} {:>9} {:>6.2}/{:<6.2} {:>5.0}Mi/{:<5.0}Mi{}",
                l.what,
                reps,
                l.cpu_request,
                l.cpu_limit,
                l.mem_request / MI,
                l.mem_limit / MI,
                if l.transient { "  (transient)" } else { "" }
            )?;
        }
        for (label, at_max) in [("total at HPA min", false), ("total at HPA max", true)] {
            let t = self.totals(at_max);
            writeln!(
                f,
                "  {label}: cpu {:.2}/{:.2} cores, memory {:.0}/{:.0} MiB (requests/limits)",
                t.cpu_request,
                t.cpu_limit,
                t.mem_request / MI,
                t.mem_limit / MI
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small, correct render: order, delivery, timesale (+HPA), postgres, kafka, jaeger.
    fn good() -> String {
        let mut docs = vec![r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: dns}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
    - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}}]
      ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: clients}
spec:
  podSelector: {matchLabels: {cloudmart.io/client: "true"}}
  policyTypes: [Egress]
  egress:
    - to: [{podSelector: {matchExpressions: [{key: app.kubernetes.io/name, operator: In, values: [order, delivery, timesale]}]}}]
      ports: [{port: 50051}, {port: 50052}, {port: 50053}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: infra}
spec:
  podSelector: {matchExpressions: [{key: app.kubernetes.io/name, operator: In, values: [postgresql, kafka, jaeger]}]}
  policyTypes: [Ingress, Egress]
  ingress:
    - from: [{podSelector: {matchExpressions: [{key: app.kubernetes.io/name, operator: In, values: [order, delivery, timesale]}]}}]
      ports: [{port: 5432}, {port: 9092}, {port: 4317}]
---
apiVersion: v1
kind: Secret
metadata: {name: db}
stringData: {url: "postgres://x"}
"#
        .to_owned()];
        for (app, port, hpa) in [("order", 50051, false), ("delivery", 50052, false), ("timesale", 50053, true)] {
            let callee = if app == "order" {
                "\n    - to: [{podSelector: {matchLabels: {app.kubernetes.io/name: delivery}}}]\n      ports: [{port: 50052}]"
            } else {
                ""
            };
            let caller = if app == "delivery" {
                "\n        - podSelector: {matchLabels: {app.kubernetes.io/name: order}}"
            } else {
                ""
            };
            let replicas = if hpa { String::new() } else { "\n  replicas: 1".to_owned() };
            docs.push(format!(
                r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: {app}-config}}
data: {{KAFKA_BROKERS: "kafka:9092", OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:4317"}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {app}}}
automountServiceAccountToken: false
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {app}}}
spec:{replicas}
  selector: {{matchLabels: {{app.kubernetes.io/name: {app}}}}}
  template:
    metadata: {{labels: {{app.kubernetes.io/name: {app}}}}}
    spec:
      serviceAccountName: {app}
      automountServiceAccountToken: false
      securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
        - name: {app}
          image: x
          ports: [{{name: grpc, containerPort: {port}}}]
          envFrom: [{{configMapRef: {{name: {app}-config}}}}]
          env: [{{name: DATABASE_URL, valueFrom: {{secretKeyRef: {{name: db, key: url}}}}}}]
          startupProbe: {{grpc: {{port: {port}}}}}
          readinessProbe: {{grpc: {{port: {port}}}}}
          livenessProbe: {{grpc: {{port: {port}}}}}
          resources: {{requests: {{cpu: 100m, memory: 64Mi}}, limits: {{memory: 128Mi}}}}
          securityContext: {{readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
          volumeMounts: [{{name: tmp, mountPath: /tmp}}]
      volumes: [{{name: tmp, emptyDir: {{}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {app}}}
spec:
  selector: {{app.kubernetes.io/name: {app}}}
  ports: [{{name: grpc, port: {port}, targetPort: grpc}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {app}}}
spec:
  podSelector: {{matchLabels: {{app.kubernetes.io/name: {app}}}}}
  policyTypes: [Ingress, Egress]
  ingress:
    - from:
        - podSelector: {{matchLabels: {{cloudmart.io/client: "true"}}}}{caller}
      ports: [{{port: {port}}}]
  egress:
    - to: [{{podSelector: {{matchExpressions: [{{key: app.kubernetes.io/name, operator: In, values: [postgresql, kafka, jaeger]}}]}}}}]
      ports: [{{port: 5432}}, {{port: 9092}}, {{port: 4317}}]{callee}
"#
            ));
            if hpa {
                docs.push(
                    r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: timesale}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: timesale}
  minReplicas: 1
  maxReplicas: 8
  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 60}}}]
  behavior: {scaleUp: {stabilizationWindowSeconds: 0}, scaleDown: {stabilizationWindowSeconds: 120}}
"#
                    .to_owned(),
                );
            }
        }
        for (app, port) in [("postgresql", 5432), ("kafka", 9092), ("jaeger", 4317)] {
            docs.push(format!(
                r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: {app}}}
spec:
  serviceName: {app}
  selector: {{matchLabels: {{app.kubernetes.io/name: {app}}}}}
  template:
    metadata: {{labels: {{app.kubernetes.io/name: {app}}}}}
    spec:
      securityContext: {{runAsNonRoot: true}}
      containers:
        - name: {app}
          image: x
          ports: [{{name: main, containerPort: {port}}}]
          resources: {{requests: {{cpu: 100m, memory: 64Mi}}, limits: {{memory: 128Mi}}}}
          securityContext: {{allowPrivilegeEscalation: false}}
---
apiVersion: v1
kind: Service
metadata: {{name: {app}}}
spec:
  selector: {{app.kubernetes.io/name: {app}}}
  ports: [{{port: {port}, targetPort: main}}]
"#
            ));
        }
        docs.join("\n---\n")
    }

    fn problems(yaml: &str) -> Vec<String> {
        Render::parse(yaml).expect("parses").check(&Externals::default())
    }

    #[test]
    fn a_correct_render_passes() {
        assert_eq!(problems(&good()), Vec::<String>::new());
    }

    #[test]
    fn a_missing_probe_is_reported() {
        let yaml = good().replacen("          livenessProbe: {grpc: {port: 50053}}\n", "", 1);
        let p = problems(&yaml);
        assert!(p.iter().any(|m| m.contains("container timesale: no gRPC livenessProbe")), "{p:#?}");
    }

    #[test]
    fn a_second_hpa_is_reported() {
        let yaml = format!(
            "{}\n---\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {{name: order}}\nspec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: order}}\n  maxReplicas: 3\n",
            good()
        );
        let p = problems(&yaml);
        assert!(p.iter().any(|m| m.contains("expected exactly one HorizontalPodAutoscaler, found 2")), "{p:#?}");
        assert!(p.iter().any(|m| m.contains("targets Deployment order")), "{p:#?}");
    }

    #[test]
    fn missing_requests_and_soft_security_are_reported() {
        let yaml = good().replacen("requests: {cpu: 100m, memory: 64Mi}", "requests: {memory: 64Mi}", 1).replacen(
            "readOnlyRootFilesystem: true, ",
            "",
            1,
        );
        let p = problems(&yaml);
        assert!(p.iter().any(|m| m.contains("no cpu request")), "{p:#?}");
        assert!(p.iter().any(|m| m.contains("readOnlyRootFilesystem is not true")), "{p:#?}");
    }

    #[test]
    fn dangling_references_are_reported() {
        let yaml = good().replace("secretKeyRef: {name: db", "secretKeyRef: {name: nope").replacen(
            "KAFKA_BROKERS: \"kafka:9092\"",
            "KAFKA_BROKERS: \"kafka:9999\"",
            1,
        );
        let p = problems(&yaml);
        assert!(p.iter().any(|m| m.contains("names Secret nope which does not exist")), "{p:#?}");
        assert!(p.iter().any(|m| m.contains("Service kafka has no port 9999")), "{p:#?}");
        // ... unless declared external
        let ext = Externals::from_list("nope, other");
        let p = Render::parse(&yaml).unwrap().check_references(&ext);
        assert!(!p.iter().any(|m| m.contains("nope")), "{p:#?}");
    }

    #[test]
    fn a_service_selecting_nothing_is_reported() {
        let yaml = good().replacen(
            "selector: {app.kubernetes.io/name: jaeger}",
            "selector: {app.kubernetes.io/name: jager}",
            1,
        );
        let p = problems(&yaml);
        assert!(p.iter().any(|m| m.contains("Service jaeger: selector")), "{p:#?}");
    }

    #[test]
    fn network_policy_gaps_are_reported() {
        // no default deny: everything is open
        let p = problems(&good().replacen(
            "spec: {podSelector: {}, policyTypes: [Ingress, Egress]}",
            "spec: {podSelector: {matchLabels: {x: y}}, policyTypes: [Ingress]}",
            1,
        ));
        assert!(p.iter().any(|m| m.contains("no default-deny")), "{p:#?}");
        // order may no longer call delivery
        let p = problems(&good().replacen("\n    - to: [{podSelector: {matchLabels: {app.kubernetes.io/name: delivery}}}]\n      ports: [{port: 50052}]", "", 1));
        assert!(p.iter().any(|m| m == "NetworkPolicies block order -> delivery port 50052"), "{p:#?}");
        // DNS gone
        let p = problems(&good().replacen(
            "ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]",
            "ports: [{port: 53, protocol: TCP}]",
            1,
        ));
        assert!(p.iter().any(|m| m.contains("block DNS")), "{p:#?}");
        // an allow-all rule
        let p = problems(&format!(
            "{}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: open}}\nspec: {{podSelector: {{}}, ingress: [{{}}]}}\n",
            good()
        ));
        assert!(p.iter().any(|m| m.contains("NetworkPolicy open: an ingress rule allows everything")), "{p:#?}");
        // a stranger pod reaching a service needs an open egress too
        let p = problems(&format!(
            "{}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: open}}\nspec: {{podSelector: {{}}, policyTypes: [Ingress, Egress], ingress: [{{ports: [{{port: 50051}}]}}], egress: [{{ports: [{{port: 50051}}]}}]}}\n",
            good()
        ));
        assert!(p.iter().any(|m| m.contains("unlabelled pod can reach order port 50051")), "{p:#?}");
    }

    #[test]
    fn selectors_and_quantities() {
        let labels: Labels = [("a".to_owned(), "1".to_owned())].into();
        let sel: LabelSelector = serde_json::from_str(r#"{"matchExpressions":[{"key":"a","operator":"In","values":["1","2"]},{"key":"b","operator":"DoesNotExist"}]}"#).unwrap();
        assert!(selector_matches(Some(&sel), &labels));
        let sel: LabelSelector = serde_json::from_str(r#"{"matchLabels":{"a":"2"}}"#).unwrap();
        assert!(!selector_matches(Some(&sel), &labels));
        assert_eq!(parse_quantity("128Mi"), Some(128.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("1"), Some(1.0));
        assert_eq!(hosts("http://a-b:4317"), vec![("a-b".to_owned(), Some(4317))]);
        assert_eq!(hosts("k1:9092, k2.x:9093").len(), 2);
        assert_eq!(hosts("postgres://u:p@db:5432/x"), vec![("db".to_owned(), Some(5432))]);
    }

    #[test]
    fn budget_counts_hpa_max() {
        let r = Render::parse(&good()).unwrap();
        let b = r.budget();
        let min = b.totals(false);
        let max = b.totals(true);
        // 6 containers x 64Mi at min; timesale x8 at max => 13 x 64Mi
        assert_eq!(min.mem_request, 6.0 * 64.0 * 1024.0 * 1024.0);
        assert_eq!(max.mem_request, 13.0 * 64.0 * 1024.0 * 1024.0);
    }
}
