//! `make rehearse`: the Helm chart, run as Docker containers.
//!
//! No Kubernetes runs on every machine, but Docker does. A rehearsal renders
//! `charts/cloudmart` with `helm template`, turns every rendered pod into one container
//! that honours what the manifest says — image, command/args, env (`valueFrom` and
//! `envFrom` resolved), security context, CPU/memory limits, `emptyDir` and ConfigMap
//! volumes, replicas — puts each Service name on the containers it selects as a network
//! alias, waits for the readiness probes like `helm install --wait`, runs the `helm test`
//! pod, and then checks the system through client containers ([`checks`]).
//!
//! - [`plan`]: manifests → [`plan::PodPlan`]s, every reference resolved before anything starts;
//! - [`docker`]: `docker run` arguments of a pod and the engine calls (the `docker` CLI);
//! - [`probe`]: gRPC health, TCP, HTTP and exec probes, run like the kubelet runs them;
//! - [`rehearsal`]: start, wait, run to completion, clean up;
//! - [`checks`]: the saga, the load Job, the trace and the audit;
//! - [`hpa`]: the HorizontalPodAutoscaler algorithm; [`experiments`]: scale-out by hand and
//!   the HPA replay on a running rehearsal (its PNG is drawn by `cloudmart-load-report`,
//!   the chart code `cloudmart-load` and `kubectl cloudmart` use);
//! - [`chaos`]: the nemesis of `make chaos` (kills, partitions, freezes under load, then
//!   the accounting and the audit).
//!
//! What it cannot show: Kubernetes scheduling, NetworkPolicy enforcement, the HPA
//! controller, kube-proxy (Service IPs and load balancing over endpoints: Docker's DNS
//! answers with every container of an alias, also one that is not Ready yet).

pub mod chaos;
pub mod checks;
pub mod docker;
pub mod experiments;
pub mod hpa;
pub mod plan;
pub mod probe;
pub mod rehearsal;
