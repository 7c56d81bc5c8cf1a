//! The rules [`Render::check`] runs; each returns the problems it found (empty = pass).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, PodSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::netpol::NetPolicies;
use crate::render::{grpc_port, hosts, name_of, selector_is_empty};
use crate::{CLIENT_LABEL, Externals, HOST_VARS, Render, Workload};

impl Render {
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
}
