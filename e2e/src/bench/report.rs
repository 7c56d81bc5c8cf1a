//! The benchmark report: one [`Figure`] per measured quantity, each beside the reference
//! measured in the same run, and the [`Machine`] it ran on. Written as
//! `target/bench/report.json` and `target/bench/report.md`; the README's benchmark table is
//! the Markdown file, copied between two marker comments ([`README_BEGIN`],
//! [`README_END`]) by `cloudmart-bench readme`, and `docs/bench/report.md` is the committed
//! copy the README check compares against ([`readme_block`]).

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// What a figure must reach.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Goal {
    /// Informational: no goal.
    #[default]
    None,
    /// `value >= x`.
    AtLeast(f64),
    /// `value <= x`.
    AtMost(f64),
    /// `value / reference_value >= x`.
    RatioAtLeast(f64),
}

/// One figure of the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Figure {
    /// `P1` … `P5`, `scale-out`, `hpa`.
    pub id: String,
    /// What is measured (`hot sale: purchases/s, batched reservation`).
    pub name: String,
    /// `None` when not measured (see `note`).
    pub value: Option<f64>,
    pub unit: String,
    /// What the value is compared with (measured in the same run).
    pub reference: String,
    pub reference_value: Option<f64>,
    /// `value / reference_value`.
    pub ratio: Option<f64>,
    /// The goal in words (`≥ 10× reference`), empty when there is none.
    pub goal: String,
    /// `None` when there is no goal or nothing was measured.
    pub meets_goal: Option<bool>,
    /// How it was measured, or why it was not.
    pub note: String,
    /// The goal as evaluated (its words are `goal`).
    #[serde(skip)]
    goal_kind: Goal,
}

impl Figure {
    /// A measured figure without reference or goal yet.
    pub fn new(id: &str, name: &str, value: f64, unit: &str) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            value: Some(value),
            unit: unit.into(),
            reference: String::new(),
            reference_value: None,
            ratio: None,
            goal: String::new(),
            meets_goal: None,
            note: String::new(),
            goal_kind: Goal::None,
        }
    }

    /// A figure that could not be measured, with the reason.
    pub fn not_measured(id: &str, name: &str, unit: &str, goal: Goal, reason: impl Into<String>) -> Self {
        let mut f = Self::new(id, name, 0.0, unit);
        f.value = None;
        f.note = reason.into();
        f.with_goal(goal)
    }

    /// Sets the reference; `value` may be `None` when the reference itself failed.
    pub fn with_reference(mut self, reference: impl Into<String>, value: Option<f64>) -> Self {
        self.reference = reference.into();
        self.reference_value = value;
        self.ratio = match (self.value, value) {
            (Some(v), Some(r)) if r > 0.0 => Some(v / r),
            _ => None,
        };
        self.evaluate()
    }

    /// Sets the goal and evaluates it.
    pub fn with_goal(mut self, goal: Goal) -> Self {
        let unit = &self.unit;
        self.goal = match goal {
            Goal::None => String::new(),
            Goal::AtLeast(x) => format!("≥ {} {unit}", number(x)),
            Goal::AtMost(x) => format!("≤ {} {unit}", number(x)),
            Goal::RatioAtLeast(x) => format!("≥ {}× reference", number(x)),
        };
        self.goal_kind = goal;
        self.evaluate()
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    fn evaluate(mut self) -> Self {
        self.meets_goal = match (self.goal_kind, self.value) {
            (Goal::None, _) | (_, None) => None,
            (Goal::AtLeast(x), Some(v)) => Some(v >= x),
            (Goal::AtMost(x), Some(v)) => Some(v <= x),
            (Goal::RatioAtLeast(x), Some(_)) => self.ratio.map(|r| r >= x),
        };
        self
    }
}

/// The machine and backends a report was measured on.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub memory_mib: u64,
    pub postgresql: String,
    pub broker: String,
    pub redis: String,
    pub pgbench: String,
    pub docker: String,
    pub git_revision: String,
    /// Which backend each part used (`database`, `kafka`, `redis`, …).
    pub backends: Vec<(String, String)>,
    /// UTC start of the run.
    pub started_at: String,
    pub duration_secs: f64,
    /// `quick` when run with `--quick` (short runs, figures less stable).
    pub mode: String,
}

/// `target/bench/report.json`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Report {
    pub machine: Machine,
    pub figures: Vec<Figure>,
}

impl Report {
    /// Writes `report.json` and `report.md` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = dir.join("report.json");
        std::fs::write(&json, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("writing {}", json.display()))?;
        let md = dir.join("report.md");
        std::fs::write(&md, self.markdown()).with_context(|| format!("writing {}", md.display()))?;
        Ok(())
    }

    /// The Markdown report: one line on the machine, the table, then the notes.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut s = String::new();
        s.push_str(&format!(
            "Measured {} at git `{}`{} on {} CPU(s) ({}), {:.1} GiB RAM; {}; {}; {}; {}. \
             The whole run took {:.0} s.\n\n",
            m.started_at,
            m.git_revision,
            if m.mode.is_empty() { String::new() } else { format!(" ({} mode)", m.mode) },
            m.cores,
            m.cpu,
            m.memory_mib as f64 / 1024.0,
            m.postgresql,
            m.broker,
            m.redis,
            m.pgbench,
            m.duration_secs,
        ));
        s.push_str("| | figure | value | reference (same run) | ratio | goal | met? |\n");
        s.push_str("|---|---|---:|---|---:|---|---|\n");
        for f in &self.figures {
            let value = match f.value {
                Some(v) => format!("{} {}", number(v), f.unit),
                None => "not measured".into(),
            };
            let reference = match (&f.reference_value, f.reference.is_empty()) {
                (_, true) => "—".to_owned(),
                (Some(v), false) => format!("{}: {} {}", f.reference, number(*v), f.unit),
                (None, false) => format!("{}: not measured", f.reference),
            };
            let ratio = f.ratio.map(|r| format!("{}×", ratio(r))).unwrap_or_else(|| "—".into());
            let goal = if f.goal.is_empty() { "—".to_owned() } else { f.goal.clone() };
            let met = match (f.meets_goal, f.value, f.goal.is_empty()) {
                (Some(true), _, _) => "yes".to_owned(),
                (Some(false), _, _) => "**no**".to_owned(),
                (None, None, false) => "**not measured**".to_owned(),
                _ => "—".to_owned(),
            };
            s.push_str(&format!(
                "| {} | {} | {value} | {reference} | {ratio} | {goal} | {met} |\n",
                f.id,
                escape(&f.name)
            ));
        }
        let missed: Vec<String> = self
            .figures
            .iter()
            .filter(|f| f.meets_goal == Some(false))
            .map(|f| format!("{} {}", f.id, f.name))
            .collect();
        let unmeasured: Vec<String> = self
            .figures
            .iter()
            .filter(|f| f.value.is_none() && !f.goal.is_empty())
            .map(|f| format!("{} {}", f.id, f.name))
            .collect();
        s.push('\n');
        if missed.is_empty() {
            s.push_str("Every measured figure with a goal meets it.\n");
        } else {
            s.push_str(&format!("**Missing their goal:** {}.\n", missed.join("; ")));
        }
        if !unmeasured.is_empty() {
            s.push_str(&format!("\n**Not measured in this run:** {}.\n", unmeasured.join("; ")));
        }
        s.push_str("\nBackends: ");
        s.push_str(&m.backends.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("; "));
        s.push_str(".\n\nNotes:\n\n");
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.figures {
            if !f.note.is_empty() && seen.insert(f.note.clone()) {
                s.push_str(&format!("- **{}** {}: {}\n", f.id, escape(&f.name), f.note));
            }
        }
        s
    }
}

fn escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// A number with as many digits as it deserves.
pub fn number(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || a == a.trunc() {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn ratio(r: f64) -> String {
    if r >= 10.0 { format!("{r:.1}") } else { format!("{r:.2}") }
}

/// Start marker of the generated block in README.md.
pub const README_BEGIN: &str =
    "<!-- bench-report:begin (generated from docs/bench/report.md by `make bench`; do not edit) -->";
/// End marker of the generated block in README.md.
pub const README_END: &str = "<!-- bench-report:end -->";

/// The generated block of `readme` (between the markers, without them), if it has one.
pub fn readme_block(readme: &str) -> Option<&str> {
    let start = readme.find(README_BEGIN)? + README_BEGIN.len();
    let end = start + readme[start..].find(README_END)?;
    Some(readme[start..end].trim_matches('\n'))
}

/// `readme` with its generated block replaced by `report` (appended under a heading when
/// the markers are missing).
pub fn with_readme_block(readme: &str, report: &str) -> String {
    let block = format!("{README_BEGIN}\n{}\n{README_END}", report.trim_matches('\n'));
    match (readme.find(README_BEGIN), readme.find(README_END)) {
        (Some(start), Some(end)) if end > start => {
            format!("{}{block}{}", &readme[..start], &readme[end + README_END.len()..])
        }
        _ => format!("{}\n\n{block}\n", readme.trim_end()),
    }
}

/// `Ok` when the README's generated block is `report` (both trimmed of blank lines).
pub fn check_readme(readme: &str, report: &str) -> Result<(), String> {
    match readme_block(readme) {
        None => Err(format!("README.md has no generated benchmark block ({README_BEGIN} … {README_END})")),
        Some(block) if block == report.trim_matches('\n') => Ok(()),
        Some(_) => Err("README.md's benchmark table differs from docs/bench/report.md: run `make bench` (or \
             `cloudmart-bench readme`) instead of editing either by hand"
            .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_are_evaluated() {
        let f = Figure::new("P1", "x", 100.0, "purchases/s")
            .with_goal(Goal::RatioAtLeast(10.0))
            .with_reference("naive", Some(20.0));
        assert_eq!((f.ratio, f.meets_goal), (Some(5.0), Some(false)));
        let f = Figure::new("P5", "rss", 12.0, "MiB").with_goal(Goal::AtMost(20.0));
        assert_eq!(f.meets_goal, Some(true));
        let f = Figure::not_measured("P5", "image", "MiB", Goal::AtMost(30.0), "no Docker");
        assert_eq!((f.value, f.meets_goal), (None, None));
        let report = Report { machine: Machine::default(), figures: vec![f] };
        assert!(report.markdown().contains("**not measured**"), "{}", report.markdown());
    }

    /// The README's benchmark table is `docs/bench/report.md`, as `make bench` wrote both:
    /// a hand edit of either fails here, without running a benchmark.
    #[test]
    fn readme_table_is_the_committed_report() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        if let Err(e) = check_readme(&read("README.md"), &read("docs/bench/report.md")) {
            panic!("{e}");
        }
    }

    #[test]
    fn readme_block_round_trips() {
        let readme = "# x\n\n## Benchmarks\n\ntext\n";
        let once = with_readme_block(readme, "| a |\n");
        assert_eq!(readme_block(&once), Some("| a |"));
        let twice = with_readme_block(&once, "| b |");
        assert_eq!(readme_block(&twice), Some("| b |"));
        assert!(twice.starts_with("# x") && !twice.contains("| a |"));
        assert!(check_readme(&twice, "\n| b |\n").is_ok());
        assert!(check_readme(&twice, "| a |").is_err());
        assert!(check_readme(readme, "| a |").is_err());
    }
}
