//! NetworkPolicy evaluation as a CNI does it: a flow is allowed when the source's egress
//! and the destination's ingress both allow it (a pod no policy selects for a direction
//! is open in that direction).

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::render::selector_is_empty;
use crate::{Labels, Workload, selector_matches};

/// Where traffic goes, for peer matching.
enum Dest<'a> {
    /// A pod in the release's namespace.
    Pod(&'a Labels),
    /// Something outside the cluster.
    External,
    /// The cluster DNS in kube-system.
    Dns,
}

pub(crate) struct NetPolicies<'a>(pub(crate) &'a [NetworkPolicy]);

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
    pub(crate) fn allows(&self, from: &Workload, to: &Workload, port: i32, proto: &str) -> bool {
        self.egress_allows(from, Dest::Pod(&to.labels), Some(to), port, proto)
            && self.ingress_allows(from, to, port, proto)
    }

    pub(crate) fn allows_external(&self, from: &Workload, port: i32, proto: &str) -> bool {
        self.egress_allows(from, Dest::External, None, port, proto)
    }

    pub(crate) fn allows_dns(&self, from: &Workload) -> bool {
        self.egress_allows(from, Dest::Dns, None, 53, "UDP")
    }
}
