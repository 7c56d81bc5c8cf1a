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
//!
//! Modules: [`render`] (the stream → typed objects), [`checks`] (the rules),
//! [`netpol`] (NetworkPolicy evaluation), [`budget`] (resources of the whole install).

use std::collections::BTreeMap;

mod budget;
mod checks;
mod netpol;
mod render;
#[cfg(test)]
mod tests;

pub use budget::{Budget, BudgetLine, Totals};
pub use render::{Externals, Render, Workload, find_helm, hosts, parse_quantity, selector_matches};

/// Label values of `app.kubernetes.io/name` that mark the three cloudmart services.
pub const SERVICES: [&str; 3] = ["order", "delivery", "timesale"];
/// Label every load/test/plugin pod carries to be let in.
pub const CLIENT_LABEL: (&str, &str) = ("cloudmart.io/client", "true");
/// Env vars whose value names hosts the service connects to.
pub const HOST_VARS: [&str; 3] = ["DELIVERY_ENDPOINT", "KAFKA_BROKERS", "OTEL_EXPORTER_OTLP_ENDPOINT"];

pub(crate) const NAME: &str = "app.kubernetes.io/name";

pub type Labels = BTreeMap<String, String>;
