//! What an autoscaler (HPA, `autoscaling/v2`) and a Deployment say about scaling.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;

/// The figures of an HPA that `status` and `load` show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HpaView {
    /// Replicas the HPA last saw (`status.currentReplicas`).
    pub current_replicas: Option<i32>,
    /// Replicas the HPA wants (`status.desiredReplicas`).
    pub desired_replicas: Option<i32>,
    /// `spec.minReplicas` (Kubernetes defaults it to 1).
    pub min_replicas: i32,
    /// `spec.maxReplicas`.
    pub max_replicas: i32,
    /// Average CPU utilisation of the pods in percent of their request, when metrics exist.
    pub cpu_current: Option<i32>,
    /// Target CPU utilisation in percent.
    pub cpu_target: Option<i32>,
    /// When the HPA last changed the replica count (`status.lastScaleTime`), Unix ms.
    pub last_scale_unix_ms: Option<i64>,
}

impl HpaView {
    /// Reads the figures out of `hpa`.
    pub fn of(hpa: &HorizontalPodAutoscaler) -> Self {
        let spec = &hpa.spec;
        let status = hpa.status.as_ref();
        let cpu_target = spec
            .metrics
            .as_ref()
            .into_iter()
            .flatten()
            .filter_map(|m| m.resource.as_ref())
            .find(|r| r.name == "cpu")
            .and_then(|r| r.target.average_utilization);
        let cpu_current = status
            .and_then(|s| s.current_metrics.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|m| m.resource.as_ref())
            .find(|r| r.name == "cpu")
            .and_then(|r| r.current.average_utilization);
        Self {
            current_replicas: status.and_then(|s| s.current_replicas),
            desired_replicas: status.map(|s| s.desired_replicas),
            min_replicas: spec.min_replicas.unwrap_or(1),
            max_replicas: spec.max_replicas,
            cpu_current,
            cpu_target,
            last_scale_unix_ms: status.and_then(|s| s.last_scale_time.as_ref()).map(|t| t.0.as_millisecond()),
        }
    }

    /// The replicas the HPA has, or else wants, or else its minimum.
    pub fn replicas(&self) -> i32 {
        self.current_replicas.or(self.desired_replicas).unwrap_or(self.min_replicas)
    }

    /// CPU utilisation against the target, like kubectl: `142%/60%`, `<unknown>/60%`.
    pub fn cpu_text(&self) -> String {
        let percent = |v: Option<i32>| v.map_or_else(|| "<unknown>".to_owned(), |v| format!("{v}%"));
        format!("{}/{}", percent(self.cpu_current), percent(self.cpu_target))
    }
}

/// Replica counts of a Deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentView {
    /// Pods that are ready.
    pub ready: i32,
    /// Replicas asked for (`spec.replicas`, set by the HPA when it scales).
    pub desired: i32,
    /// Image of the first container.
    pub image: Option<String>,
}

impl DeploymentView {
    /// Reads the figures out of `deployment`.
    pub fn of(deployment: &Deployment) -> Self {
        let spec = &deployment.spec;
        Self {
            ready: deployment.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0),
            desired: spec.replicas.unwrap_or(1),
            image: spec.template.spec.as_ref().and_then(|p| p.containers.first()).and_then(|c| c.image.clone()),
        }
    }
}

/// A Unix time in ms as RFC 3339 (`2026-12-07T18:00:35Z`), or the number if out of range.
pub fn rfc3339(unix_ms: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond(unix_ms).map_or_else(|_| format!("{unix_ms} ms"), |t| t.to_string())
}

/// Text for an optional count: the number or `?`.
pub(crate) fn count_text(v: Option<i32>) -> String {
    v.map_or_else(|| "?".to_owned(), |v| v.to_string())
}
