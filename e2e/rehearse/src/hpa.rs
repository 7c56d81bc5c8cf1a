//! The HorizontalPodAutoscaler algorithm, as documented (kubernetes.io, "Horizontal Pod
//! Autoscaling") and as the controller implements it (`pkg/controller/podautoscaler`),
//! for a CPU-utilisation target:
//!
//! 1. `desired = ceil(current × utilisation / target)`, unless the ratio is within the
//!    tolerance (0.1) of 1.0, when nothing changes;
//! 2. stabilisation: the recommendation is bounded by the *lowest* recommendation of the
//!    scale-up window and the *highest* of the scale-down window (so a dip does not remove
//!    pods before the window has passed);
//! 3. rate limits: each policy (`Pods` n or `Percent` p per `periodSeconds`) allows a
//!    change relative to the replica count at the start of its period, counting the
//!    changes already made in it; `selectPolicy: Max` takes the policy allowing the
//!    largest change, `Min` the smallest, `Disabled` none;
//! 4. `minReplicas ≤ desired ≤ maxReplicas`.
//!
//! [`Autoscaler::step`] is one pass of the controller (every 15 s by default).

use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscaler};

/// Kubernetes' default tolerance (`--horizontal-pod-autoscaler-tolerance`).
pub const TOLERANCE: f64 = 0.1;

/// The controller's default sync period (`--horizontal-pod-autoscaler-sync-period`).
pub const SYNC_PERIOD_SECS: u64 = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Pods,
    Percent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub value: u32,
    pub period_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    Max,
    Min,
    Disabled,
}

/// `behavior.scaleUp` or `behavior.scaleDown`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub stabilization_secs: u64,
    pub select: Select,
    pub policies: Vec<Policy>,
}

impl Rules {
    /// The API defaults for scale-up: no window, +100 % or +4 pods per 15 s, the larger.
    pub fn default_up() -> Rules {
        Rules {
            stabilization_secs: 0,
            select: Select::Max,
            policies: vec![
                Policy { kind: PolicyKind::Percent, value: 100, period_secs: 15 },
                Policy { kind: PolicyKind::Pods, value: 4, period_secs: 15 },
            ],
        }
    }

    /// The API defaults for scale-down: a 300 s window, −100 % per 15 s.
    pub fn default_down() -> Rules {
        Rules {
            stabilization_secs: 300,
            select: Select::Max,
            policies: vec![Policy { kind: PolicyKind::Percent, value: 100, period_secs: 15 }],
        }
    }

    fn from_api(r: Option<&HPAScalingRules>, default: Rules) -> Result<Rules, String> {
        let Some(r) = r else { return Ok(default) };
        let select = match r.select_policy.as_deref() {
            None | Some("Max") => Select::Max,
            Some("Min") => Select::Min,
            Some("Disabled") => Select::Disabled,
            Some(other) => return Err(format!("selectPolicy {other:?}")),
        };
        let policies = match &r.policies {
            None => default.policies.clone(),
            Some(list) => list
                .iter()
                .map(|p| {
                    let kind = match p.type_.as_str() {
                        "Pods" => PolicyKind::Pods,
                        "Percent" => PolicyKind::Percent,
                        other => return Err(format!("policy type {other:?}")),
                    };
                    Ok(Policy { kind, value: p.value.max(0) as u32, period_secs: p.period_seconds.max(1) as u64 })
                })
                .collect::<Result<_, String>>()?,
        };
        Ok(Rules {
            stabilization_secs: r.stabilization_window_seconds.map_or(default.stabilization_secs, |s| s.max(0) as u64),
            select,
            policies,
        })
    }
}

/// One HPA's settings and the history its behaviour needs.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// `averageUtilization` target, percent of the CPU request.
    pub target_utilization: f64,
    pub tolerance: f64,
    pub up: Rules,
    pub down: Rules,
    /// (time, recommendation) of past passes.
    recommendations: Vec<(f64, u32)>,
    /// (time, replicas added (+) or removed (−)) of past scaling.
    events: Vec<(f64, i64)>,
}

impl Autoscaler {
    pub fn new(min_replicas: u32, max_replicas: u32, target_utilization: f64, up: Rules, down: Rules) -> Autoscaler {
        Autoscaler {
            min_replicas,
            max_replicas,
            target_utilization,
            tolerance: TOLERANCE,
            up,
            down,
            recommendations: Vec::new(),
            events: Vec::new(),
        }
    }

    /// From a rendered `autoscaling/v2` HPA with one CPU `Utilization` metric.
    pub fn from_manifest(hpa: &HorizontalPodAutoscaler) -> Result<Autoscaler, String> {
        let spec = &hpa.spec;
        let target = spec
            .metrics
            .iter()
            .flatten()
            .find_map(|m| m.resource.as_ref().filter(|r| r.name == "cpu").and_then(|r| r.target.average_utilization))
            .ok_or("no cpu averageUtilization metric")?;
        let behavior = spec.behavior.as_ref();
        Ok(Autoscaler::new(
            spec.min_replicas.unwrap_or(1).max(1) as u32,
            spec.max_replicas.max(1) as u32,
            f64::from(target),
            Rules::from_api(behavior.and_then(|b| b.scale_up.as_ref()), Rules::default_up())?,
            Rules::from_api(behavior.and_then(|b| b.scale_down.as_ref()), Rules::default_down())?,
        ))
    }

    /// Step 1 alone: `ceil(current × utilisation / target)`, or `current` within tolerance.
    pub fn raw_recommendation(&self, current: u32, utilization: f64) -> u32 {
        let ratio = utilization / self.target_utilization;
        if (ratio - 1.0).abs() <= self.tolerance {
            return current;
        }
        (f64::from(current) * ratio).ceil().max(0.0) as u32
    }

    /// Step 1 the way the controller does it with pods that are not Ready yet (or Ready
    /// for less than the initial readiness delay) or have no metrics: the ratio is taken
    /// over the `ready` pods' utilisations (percent of request); if that says scale up,
    /// the others are counted at 0 % and the ratio recomputed — if it then reverses or
    /// falls within the tolerance, nothing changes ("further dampening the magnitude of
    /// a scale up"). For a scale-down they are set aside.
    pub fn recommendation_with_pods(&self, current: u32, ready: &[f64], unready: usize) -> u32 {
        if ready.is_empty() {
            return current;
        }
        let ratio = ready.iter().sum::<f64>() / ready.len() as f64 / self.target_utilization;
        if (ratio - 1.0).abs() <= self.tolerance {
            return current;
        }
        if ratio > 1.0 && unready > 0 {
            let all = ready.len() + unready;
            let new_ratio = ready.iter().sum::<f64>() / all as f64 / self.target_utilization;
            if new_ratio <= 1.0 || (new_ratio - 1.0).abs() <= self.tolerance {
                return current;
            }
            return (new_ratio * all as f64).ceil() as u32;
        }
        (ratio * ready.len() as f64).ceil().max(0.0) as u32
    }

    /// One controller pass at `now` with `current` replicas: `ready` holds the CPU (percent
    /// of request) of the pods that count, `unready` how many do not (yet). Returns the
    /// replica count to set and records the change for later rate limits.
    pub fn step_pods(&mut self, now: f64, current: u32, ready: &[f64], unready: usize) -> u32 {
        let raw = self.recommendation_with_pods(current, ready, unready);
        let desired = self.normalize(now, current, raw);
        if desired != current {
            self.events.push((now, i64::from(desired) - i64::from(current)));
        }
        desired
    }

    /// One controller pass at `now` (seconds) with `current` replicas, all Ready, whose
    /// average CPU is `utilization` percent of their request. Returns the replica count to
    /// set, and records the change (if any) for later rate limits.
    pub fn step(&mut self, now: f64, current: u32, utilization: f64) -> u32 {
        let raw = self.raw_recommendation(current, utilization);
        let desired = self.normalize(now, current, raw);
        if desired != current {
            self.events.push((now, i64::from(desired) - i64::from(current)));
        }
        desired
    }

    /// Steps 2–4 for a raw recommendation (exposed for the documentation's examples).
    pub fn normalize(&mut self, now: f64, current: u32, raw: u32) -> u32 {
        let stabilized = self.stabilize(now, current, raw);
        let limited = if stabilized > current {
            let limit = self.scale_up_limit(now, current).max(current);
            stabilized.min(limit.min(self.max_replicas))
        } else if stabilized < current {
            let limit = self.scale_down_limit(now, current).min(current);
            stabilized.max(limit.max(self.min_replicas))
        } else {
            stabilized
        };
        limited.clamp(self.min_replicas, self.max_replicas)
    }

    fn stabilize(&mut self, now: f64, current: u32, raw: u32) -> u32 {
        let keep = self.up.stabilization_secs.max(self.down.stabilization_secs) as f64;
        self.recommendations.retain(|(t, _)| now - t <= keep);
        self.recommendations.push((now, raw));
        let within =
            |secs: u64| self.recommendations.iter().filter(move |(t, _)| now - t <= secs as f64).map(|(_, r)| *r);
        let up = within(self.up.stabilization_secs).min().unwrap_or(raw);
        let down = within(self.down.stabilization_secs).max().unwrap_or(raw);
        current.max(up).min(down)
    }

    /// Replicas changed (signed sum) within `period` seconds before `now`, by direction.
    fn changed_within(&self, now: f64, period: u64, up: bool) -> i64 {
        self.events.iter().filter(|(t, d)| now - t < period as f64 && (*d > 0) == up).map(|(_, d)| d.abs()).sum()
    }

    fn scale_up_limit(&self, now: f64, current: u32) -> u32 {
        let proposals = self.up.policies.iter().map(|p| {
            let start = i64::from(current) - self.changed_within(now, p.period_secs, true);
            match p.kind {
                PolicyKind::Pods => start + i64::from(p.value),
                PolicyKind::Percent => (start as f64 * (1.0 + f64::from(p.value) / 100.0)).ceil() as i64,
            }
        });
        let pick = match self.up.select {
            Select::Disabled => return current,
            Select::Max => proposals.max(),
            Select::Min => proposals.min(),
        };
        pick.map_or(current, |n| n.clamp(0, i64::from(u32::MAX)) as u32)
    }

    fn scale_down_limit(&self, now: f64, current: u32) -> u32 {
        let proposals = self.down.policies.iter().map(|p| {
            let start = i64::from(current) + self.changed_within(now, p.period_secs, false);
            match p.kind {
                PolicyKind::Pods => start - i64::from(p.value),
                // The controller truncates: int32(float64(start) * (1 - value/100)).
                PolicyKind::Percent => (start as f64 * (1.0 - f64::from(p.value) / 100.0)) as i64,
            }
        });
        // For scale-down, "Max" is the policy allowing the largest change: the lowest floor.
        let pick = match self.down.select {
            Select::Disabled => return current,
            Select::Max => proposals.min(),
            Select::Min => proposals.max(),
        };
        pick.map_or(current, |n| n.clamp(0, i64::from(u32::MAX)) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_window(mut r: Rules) -> Rules {
        r.stabilization_secs = 0;
        r
    }

    /// "if the current metric value is 200m, and the desired value is 100m, the number of
    /// replicas will be doubled … if the current value is instead 50m, you'll halve the
    /// number of replicas … skips any scaling action if the ratio is sufficiently close to
    /// 1.0 (within a configurable tolerance, 0.1 by default)."
    #[test]
    fn the_documented_ratio_and_tolerance() {
        let a = Autoscaler::new(1, 100, 100.0, Rules::default_up(), Rules::default_down());
        assert_eq!(a.raw_recommendation(4, 200.0), 8);
        assert_eq!(a.raw_recommendation(4, 50.0), 2);
        assert_eq!(a.raw_recommendation(4, 109.0), 4, "within tolerance");
        assert_eq!(a.raw_recommendation(4, 91.0), 4, "within tolerance");
        assert_eq!(a.raw_recommendation(4, 111.0), 5, "ceil(4 × 1.11) = 5");
        assert_eq!(a.raw_recommendation(3, 0.0), 0, "then minReplicas applies");
    }

    /// The documentation's scale-down example: policies Pods 4/60 s and Percent 10/60 s,
    /// from 80 to 10 replicas: "during the first step 8 replicas will be reduced. In the
    /// next iteration when the number of replicas is 72, 10% of the pods is 7.2 but the
    /// number is rounded up to 8 … When the number of replicas falls below 40 the first
    /// policy (Pods) is applied and 4 replicas will be reduced at a time."
    #[test]
    fn the_documented_scale_down_policies() {
        let down = Rules {
            stabilization_secs: 0,
            select: Select::Max,
            policies: vec![
                Policy { kind: PolicyKind::Pods, value: 4, period_secs: 60 },
                Policy { kind: PolicyKind::Percent, value: 10, period_secs: 60 },
            ],
        };
        let mut a = Autoscaler::new(1, 100, 50.0, Rules::default_up(), down);
        let mut current = 80;
        let mut path = vec![current];
        let mut now = 0.0;
        while current > 10 {
            let next = a.normalize(now, current, 10);
            a.events.push((now, i64::from(next) - i64::from(current)));
            current = next;
            path.push(current);
            now += 60.0; // one pass per period: earlier changes no longer count
        }
        assert_eq!(&path[..4], &[80, 72, 64, 57], "10 % (rounded up) while above 40");
        let below_40: Vec<u32> = path.windows(2).filter(|w| w[0] < 40 && w[1] > 10).map(|w| w[0] - w[1]).collect();
        assert!(
            !below_40.is_empty() && below_40.iter().all(|&d| d == 4),
            "below 40 the Pods policy removes 4 at a time: {path:?}"
        );
        assert_eq!(*path.last().expect("non-empty"), 10, "and it stops at the target: {path:?}");
    }

    /// The default scale-up behaviour: "at most 4 pods or 100% of currently running
    /// replicas will be added every 15 seconds".
    #[test]
    fn the_default_scale_up_rate() {
        let mut a = Autoscaler::new(1, 100, 50.0, Rules::default_up(), Rules::default_down());
        assert_eq!(a.normalize(0.0, 1, 40), 5, "1 pod: +4 pods beats +100 %");
        let mut a = Autoscaler::new(1, 100, 50.0, Rules::default_up(), Rules::default_down());
        assert_eq!(a.normalize(0.0, 10, 40), 20, "10 pods: +100 % beats +4");
    }

    /// Changes made within a policy's period count against it.
    #[test]
    fn changes_within_the_period_count() {
        let up = Rules {
            stabilization_secs: 0,
            select: Select::Max,
            policies: vec![Policy { kind: PolicyKind::Pods, value: 2, period_secs: 60 }],
        };
        let mut a = Autoscaler::new(1, 10, 50.0, up, no_window(Rules::default_down()));
        assert_eq!(a.step(0.0, 1, 500.0), 3, "+2");
        assert_eq!(a.step(15.0, 3, 500.0), 3, "2 already added in this 60 s period");
        assert_eq!(a.step(61.0, 3, 500.0), 5, "a new period");
    }

    /// A scale-down window keeps the highest recommendation of the window.
    #[test]
    fn the_scale_down_window_holds_the_peak() {
        let down = Rules { stabilization_secs: 120, ..Rules::default_down() };
        let mut a = Autoscaler::new(1, 8, 60.0, Rules::default_up(), down);
        assert_eq!(a.step(0.0, 4, 60.0), 4);
        assert_eq!(a.step(15.0, 4, 10.0), 4, "a dip inside the window changes nothing");
        assert_eq!(a.step(90.0, 4, 10.0), 4);
        assert_eq!(a.step(136.0, 4, 10.0), 1, "once the peak left the window: ceil(4 × 10/60) = 1");
    }

    /// "if any not-yet-ready pods were present, and the workload would have scaled up …
    /// the controller conservatively assumes that the not-yet-ready pods are consuming 0%
    /// … If the new ratio reverses the scale direction, or is within the tolerance, the
    /// controller doesn't take any scaling action."
    #[test]
    fn not_yet_ready_pods_dampen_a_scale_up() {
        let a = Autoscaler::new(1, 10, 60.0, Rules::default_up(), Rules::default_down());
        assert_eq!(a.recommendation_with_pods(2, &[103.0], 1), 2, "103 % over 2 pods is 51.5 %: reversed, no action");
        assert_eq!(
            a.recommendation_with_pods(3, &[120.0, 120.0], 1),
            4,
            "240 % over 3 pods is 80 %: ratio 1.33, ceil(1.33 × 3) = 4"
        );
        assert_eq!(a.recommendation_with_pods(2, &[103.0], 0), 2, "all Ready: ceil(1.72 × 1) = 2");
        assert_eq!(a.recommendation_with_pods(1, &[300.0], 0), 5, "ceil(5 × 1)");
        assert_eq!(
            a.recommendation_with_pods(4, &[10.0, 10.0], 2),
            1,
            "a scale-down sets the unready aside: ceil(0.17 × 2)"
        );
        assert_eq!(a.recommendation_with_pods(4, &[], 4), 4, "no metrics: no action");
    }

    #[test]
    fn min_and_max_replicas_bound_everything() {
        let mut a = Autoscaler::new(2, 3, 50.0, Rules::default_up(), no_window(Rules::default_down()));
        assert_eq!(a.step(0.0, 2, 1000.0), 3);
        assert_eq!(a.step(100.0, 3, 0.0), 2);
    }

    #[test]
    fn disabled_policies_never_scale_that_way() {
        let up = Rules { select: Select::Disabled, ..Rules::default_up() };
        let mut a = Autoscaler::new(1, 10, 50.0, up, Rules::default_down());
        assert_eq!(a.step(0.0, 2, 500.0), 2);
    }
}
