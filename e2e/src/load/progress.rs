//! What a run shows while it runs: once a second the run builds a [`Snapshot`], and a
//! [`Progress`] shows it — as a live status line redrawn in place (`indicatif`) when
//! stderr is a terminal, or as a plain line every `--progress-every` otherwise (a pod log,
//! CI), so logs stay readable and greppable.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use cloudmart_load_report::Quantiles;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The state of a run at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Since the start of the load.
    pub elapsed: Duration,
    /// How long the load sends (answers and sagas may take longer).
    pub duration: Duration,
    /// Calls per second aimed for now (0: closed loop, or sending is over).
    pub target_rps: u32,
    /// The ramp step running now, 1-based, and the number of steps (ramps only).
    pub step: Option<(usize, usize)>,
    /// Calls sent per second over the last few seconds.
    pub rate: f64,
    /// Calls sent so far, and calls that were due while every slot was busy.
    pub sent: u64,
    pub not_sent: u64,
    /// p50/p99 over the last few seconds, by operation (main operation first).
    pub latency: Vec<(&'static str, Quantiles)>,
    /// Answers so far by operation and outcome class (classes with answers only).
    pub outcomes: Vec<(&'static str, Vec<(String, u64)>)>,
    /// Work still open after its call returned (orders whose saga is followed).
    pub open: usize,
}

impl Snapshot {
    /// Whether the load is still sending (rather than waiting for the last answers).
    pub fn sending(&self) -> bool {
        self.elapsed < self.duration
    }

    /// The status without the time: rate, latency, outcomes.
    pub fn status(&self) -> String {
        let mut parts = Vec::new();
        let target = match (self.target_rps, self.step) {
            (0, _) => String::new(),
            (rate, Some((step, steps))) => format!(" (target {rate}/s, step {step}/{steps})"),
            (rate, None) => format!(" (target {rate}/s)"),
        };
        if self.sending() {
            parts.push(format!("{} sent  {:.0}/s{target}", self.sent, self.rate));
        } else {
            parts.push(format!("{} sent, waiting for answers", self.sent));
        }
        for (op, q) in &self.latency {
            parts.push(format!("{op} p50 {} p99 {}", ms(q.p50), ms(q.p99)));
        }
        for (op, classes) in &self.outcomes {
            let counts: Vec<String> = classes.iter().map(|(class, n)| format!("{class} {n}")).collect();
            parts.push(format!("{op}: {}", counts.join(", ")));
        }
        if self.not_sent > 0 {
            parts.push(format!("not sent {} (saturated)", self.not_sent));
        }
        if self.open > 0 {
            parts.push(format!("{} sagas open", self.open));
        }
        parts.join("  ")
    }

    /// The plain progress line.
    pub fn line(&self) -> String {
        format!("t={:>4.0}s  {}", self.elapsed.as_secs_f64(), self.status())
    }
}

/// Milliseconds, with a decimal below 10.
fn ms(v: f64) -> String {
    if v < 10.0 { format!("{v:.1}ms") } else { format!("{v:.0}ms") }
}

/// Shows a run's progress.
pub trait Progress {
    /// A line to show once (what the run is about to do).
    fn info(&mut self, line: &str);
    /// The state once a second.
    fn update(&mut self, snapshot: &Snapshot);
    /// The run is over (before the report is printed).
    fn finish(&mut self);
}

/// The progress a run of `duration` should show on stderr: a live line when stderr is a
/// terminal, plain lines every `every` otherwise.
pub fn for_stderr(every: Duration, duration: Duration) -> Box<dyn Progress + Send> {
    if std::io::stderr().is_terminal() {
        Box::new(LiveLine::new(duration))
    } else {
        Box::new(Lines::new(std::io::stderr(), every))
    }
}

/// Plain lines, one every `every` (a log's way).
#[derive(Debug)]
pub struct Lines<W> {
    out: W,
    every: Duration,
    next: Duration,
}

impl<W: Write> Lines<W> {
    pub fn new(out: W, every: Duration) -> Self {
        Self { out, every, next: every }
    }

    /// What was written (tests).
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> Progress for Lines<W> {
    fn info(&mut self, line: &str) {
        // Progress is best effort: a closed stderr must not stop the load.
        let _ = writeln!(self.out, "{line}");
    }

    fn update(&mut self, snapshot: &Snapshot) {
        if snapshot.elapsed < self.next {
            return;
        }
        let _ = writeln!(self.out, "{}", snapshot.line());
        while self.next <= snapshot.elapsed {
            self.next += self.every.max(Duration::from_millis(1));
        }
    }

    fn finish(&mut self) {}
}

/// A status line redrawn in place on a terminal, with a bar over the load's duration.
#[derive(Debug)]
pub struct LiveLine {
    bar: ProgressBar,
}

/// Milliseconds of a duration, for the bar's length and position.
fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

impl LiveLine {
    fn new(duration: Duration) -> Self {
        let bar = ProgressBar::with_draw_target(Some(millis(duration)), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner:.green} {prefix:>5} [{bar:20.cyan/blue}] {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar }
    }
}

impl Progress for LiveLine {
    fn info(&mut self, line: &str) {
        self.bar.println(line);
    }

    fn update(&mut self, snapshot: &Snapshot) {
        self.bar.set_length(millis(snapshot.duration));
        self.bar.set_position(millis(snapshot.elapsed.min(snapshot.duration)));
        self.bar.set_prefix(format!("{:.0}s", snapshot.elapsed.as_secs_f64()));
        self.bar.set_message(snapshot.status());
    }

    fn finish(&mut self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(secs: u64) -> Snapshot {
        Snapshot {
            elapsed: Duration::from_secs(secs),
            duration: Duration::from_secs(20),
            target_rps: 200,
            step: Some((2, 3)),
            rate: 199.6,
            sent: 2000,
            not_sent: 0,
            latency: vec![("place", Quantiles { p50: 1.25, p99: 42.0 })],
            outcomes: vec![
                ("place", vec![("succeeded".into(), 1990), ("shed".into(), 10)]),
                ("saga", vec![("confirmed".into(), 1700)]),
            ],
            open: 12,
        }
    }

    #[test]
    fn the_line_shows_rate_percentiles_and_outcomes() {
        assert_eq!(
            snapshot(10).line(),
            "t=  10s  2000 sent  200/s (target 200/s, step 2/3)  place p50 1.2ms p99 42ms  \
             place: succeeded 1990, shed 10  saga: confirmed 1700  12 sagas open"
        );
        let over = Snapshot { not_sent: 5, open: 0, ..snapshot(25) };
        assert!(over.line().starts_with("t=  25s  2000 sent, waiting for answers"), "{}", over.line());
        assert!(over.line().ends_with("not sent 5 (saturated)"), "{}", over.line());
    }

    #[test]
    fn plain_lines_come_every_progress_every() {
        let mut lines = Lines::new(Vec::new(), Duration::from_secs(5));
        lines.info("starting");
        for s in 1..=12 {
            lines.update(&snapshot(s));
        }
        lines.update(&snapshot(30)); // a late tick prints once, not for each missed interval
        lines.update(&snapshot(31));
        let text = String::from_utf8(lines.into_inner()).unwrap();
        let times: Vec<&str> = text.lines().map(|l| l.split("s  ").next().unwrap_or("")).collect();
        assert_eq!(times, ["starting", "t=   5", "t=  10", "t=  30"]);
    }
}
