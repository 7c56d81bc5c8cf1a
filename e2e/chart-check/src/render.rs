//! The rendered stream, decoded: [`Render::parse`] reads a multi-document YAML stream into
//! `k8s-openapi` types, one [`Workload`] per pod-owning object.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;

use crate::{Labels, NAME, SERVICES};

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
    pub(crate) fn containers(&self) -> impl Iterator<Item = &Container> {
        self.spec.init_containers.iter().flatten().chain(self.spec.containers.iter())
    }
    pub(crate) fn id(&self) -> String {
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

pub(crate) fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value, what: &str) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("{what}: {e}"))
}

pub(crate) fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
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

    pub(crate) fn workload_by_app(&self, app: &str) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.app() == app && w.kind != "Pod" && w.kind != "Job")
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

pub(crate) fn grpc_port(w: &Workload) -> Option<i32> {
    w.spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("grpc"))
        .map(|p| p.container_port)
}

pub(crate) fn selector_is_empty(s: Option<&LabelSelector>) -> bool {
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

/// A working helm binary for tests that render the chart: `$HELM`, `helm` on PATH, or the
/// one `make lint-charts` caches; `None` when there is none (the caller skips, saying so).
pub fn find_helm() -> Option<String> {
    let candidates = [
        std::env::var("HELM").ok(),
        Some("helm".to_owned()),
        std::env::var("CLOUDMART_CACHE")
            .ok()
            .or_else(|| std::env::var("HOME").ok().map(|h| format!("{h}/.cache/cloudmart")))
            .map(|c| format!("{c}/k8s-tools/bin/helm")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|h| std::process::Command::new(h).arg("version").output().is_ok_and(|o| o.status.success()))
}
