//! The resource budget of the whole install: requests and limits of every container,
//! with each HPA-scaled workload at its maximum.

use std::collections::BTreeMap;
use std::fmt;

use crate::{Render, parse_quantity};

impl Render {
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
