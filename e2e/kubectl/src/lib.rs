//! `kubectl cloudmart`: a kubectl plugin for a cloudmart Helm release.
//!
//! Users run `kubectl cloudmart status` to see the three service Deployments and the
//! time-sale HorizontalPodAutoscaler, and `kubectl cloudmart load` to run the load
//! generator inside the cluster (as a Kubernetes Job) and get a report that joins the load
//! generator's figures with what the autoscaler did meanwhile.
//!
//! # Layout
//!
//! - [`cli`]: the command line (clap derive). `main.rs` only parses it, infers a
//!   [`kube::Client`] from the kubeconfig (or the in-cluster service account) and dispatches.
//! - [`status`]: `kubectl cloudmart status`.
//! - [`job`]: the load-generator Job manifest, built from k8s-openapi types; `load --dry-run`
//!   prints it.
//! - [`load`]: `kubectl cloudmart load`: create the Job, sample the HPA while it runs, read
//!   the report line from the pod log, delete the Job.
//! - [`scaling`]: reading replicas and CPU utilisation out of an HPA.
//! - [`report`]: the load generator's `CLOUDMART_LOAD_REPORT {json}` line and the printed report.
//! - [`chart`]: `load --chart`: the load generator's chart with the HPA's replicas added,
//!   drawn by `cloudmart-load-report` (the crate `cloudmart-load` draws its chart with).
//!
//! Every operation takes a `kube::Client`, its options and a writer for its output, so the
//! tests drive them against a scripted fake API server and read what a user would see.

pub mod chart;
pub mod cli;
pub mod job;
pub mod load;
pub mod report;
pub mod scaling;
pub mod status;

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
