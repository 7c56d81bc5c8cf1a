//! The rehearsal's figures (`make bench-scale`, Docker): `scale-out.json` and
//! `hpa-replay.json` in the output directory join the report when they exist. They are
//! not measured by this run; each figure's note says when its file was written, so a
//! figure from an earlier run is never mistaken for this one's.

use std::path::Path;

use serde_json::Value;

use super::report::{Figure, Goal};

pub(crate) fn figures(out: &Path) -> Vec<Figure> {
    let mut figures = Vec::new();
    let scale = out.join("scale-out.json");
    match read(&scale) {
        Some((rows, when)) => {
            let rows = rows.as_array().cloned().unwrap_or_default();
            let rate = |r: &Value| r.get("purchases_per_s").and_then(Value::as_f64);
            let one = rows.iter().find(|r| r.get("replicas").and_then(Value::as_u64) == Some(1)).and_then(rate);
            for r in &rows {
                let (Some(n), Some(v)) = (r.get("replicas").and_then(Value::as_u64), rate(r)) else { continue };
                let oversell = r.get("oversell").and_then(Value::as_i64).unwrap_or(0);
                let mut f = Figure::new("scale-out", &format!("time-sale purchases/s at {n} replica(s)"), v, "purchases/s")
                    .with_note(format!(
                        "`make bench-scale` on the Docker rehearsal of the chart ({}, written {when}); oversell {oversell}.",
                        scale.display()
                    ));
                if n != 1 {
                    f = f.with_reference("1 replica", one);
                }
                figures.push(f.with_goal(Goal::None));
            }
        }
        None => figures.push(
            Figure::not_measured("scale-out", "time-sale purchases/s at 1/2/4 replicas", "purchases/s", Goal::None, "")
                .with_note(format!("{} not found: `make bench-scale` needs Docker.", scale.display())),
        ),
    }
    let hpa = out.join("hpa-replay.json");
    match read(&hpa) {
        Some((replay, when)) => {
            let note = format!("`make bench-scale` HPA replay ({}, written {when}).", hpa.display());
            if let Some(v) = replay.get("first_added_ready_secs").and_then(Value::as_f64) {
                figures
                    .push(Figure::new("hpa", "load start → first added replica Ready", v, "s").with_note(note.clone()));
            }
            if let Some(v) = replay.get("max_replicas_seen").and_then(Value::as_f64) {
                figures.push(Figure::new("hpa", "time-sale replicas at most", v, "replicas").with_note(note));
            }
        }
        None => figures.push(
            Figure::not_measured("hpa", "HPA replay", "s", Goal::None, "")
                .with_note(format!("{} not found: `make bench-scale` needs Docker.", hpa.display())),
        ),
    }
    figures
}

/// The JSON of `path` and when it was written (UTC).
fn read(path: &Path) -> Option<(Value, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let value = serde_json::from_str(&text).ok()?;
    let when = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| chrono::DateTime::<chrono::Utc>::from(t).format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| "at an unknown time".into());
    Some((value, when))
}
