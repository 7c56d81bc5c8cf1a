//! `kubectl cloudmart`: a kubectl plugin for a cloudmart Helm release.
//!
//! - `status`: the three service Deployments, the release's pods and the time-sale
//!   HorizontalPodAutoscaler (`-o json|yaml` for scripts); `--orders` adds the orders by
//!   status (`psql` in the release's PostgreSQL pod), `--dlq` the dead-letter depth.
//! - `load`: the load generator inside the cluster (a Kubernetes Job), with a live table of
//!   rate, p99, every service's replicas and the HPA, a report joining the load generator's
//!   figures with what the autoscaler did, and — `--expect-scale timesale
//!   [--expect-scale-down]` — verdicts that the HPA, and only it, scaled time-sale up (and
//!   back down).
//! - `trace ORDER_ID`: the order's trace from the release's Jaeger, found through a
//!   port-forward to the Jaeger pod and printed as a tree of spans.
//! - `audit`, `dlq list|replay`: `cloudmart-audit` from the tools image as a Job, with the
//!   databases and the broker the services use.
//!
//! Every command honours `--kubeconfig`, `--context`, `-n` (default: the context's
//! namespace, else `cloudmart`) and `--release`.
//!
//! # Layout
//!
//! - [`cli`]: the command line (clap derive) and the exit statuses. `main.rs` only parses
//!   it, connects ([`cluster`]) and dispatches.
//! - [`cluster`]: kubeconfig, context and namespace; the connection check.
//! - [`status`](mod@status): `kubectl cloudmart status`.
//! - [`job`]: the Job manifests (load generator, tools), built from k8s-openapi types;
//!   `load --dry-run` prints the load Job. [`jobrun`]: following and deleting a Job.
//! - [`load`](mod@load): `kubectl cloudmart load`. [`timeline`]: its samples and live table;
//!   [`verdict`]: the scale-up/scale-down verdicts from the samples; [`scaling`]: reading
//!   an HPA and a Deployment; [`report`]: the load generator's report line and the printed
//!   and JSON reports; [`chart`]: `load --chart`, drawn by `cloudmart-load-report` (the
//!   crate `cloudmart-load` draws its chart with) with a replica panel per service.
//! - [`trace`]: `kubectl cloudmart trace` (Jaeger's JSON, the span tree); [`jaeger`]:
//!   finding the Jaeger pod, the port-forward and the HTTP query API.
//! - [`tools`]: `kubectl cloudmart audit` and `dlq`.
//!
//! Every operation takes a `kube::Client`, its options and a writer for its output, so the
//! tests drive them against a scripted fake API server and read what a user would see.

pub mod chart;
pub mod cli;
pub mod cluster;
pub mod jaeger;
pub mod job;
pub mod jobrun;
pub mod load;
pub mod report;
pub mod scaling;
pub mod status;
pub mod timeline;
pub mod tools;
pub mod trace;
pub mod verdict;

pub use cli::Scenario;
pub use load::{LoadOptions, LoadOutcome, LoadSummary, dry_run, load};
pub use status::status;

/// The three services of the chart, in the order `status` shows them.
pub const SERVICES: [&str; 3] = ["order", "delivery", "timesale"];

/// The service the chart autoscales (and the load test targets).
pub const AUTOSCALED_SERVICE: &str = "timesale";

/// gRPC port of the time-sale Service.
pub const TIMESALE_GRPC_PORT: u16 = 50053;

/// gRPC port of the order Service (the `orders` scenario).
pub const ORDER_GRPC_PORT: u16 = 50051;

/// Where a cloudmart release lives: its namespace and its Helm release name.
///
/// The chart names every resource `<release>-<part>`, e.g. Deployment, Service and HPA
/// `cloudmart-timesale` for release `cloudmart`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Namespace the chart is installed in.
    pub namespace: String,
    /// Helm release name.
    pub name: String,
}

impl Release {
    /// A release `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }

    /// Name of the release's resource for `part`, e.g. `cloudmart-timesale`.
    pub fn resource(&self, part: &str) -> String {
        format!("{}-{}", self.name, part)
    }
}
