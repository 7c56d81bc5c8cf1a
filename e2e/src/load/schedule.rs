//! When calls are due: the open-loop schedule — one rate, or a `--ramp` of rates held for
//! `--step` each — and the pacer that hands out the calls due by a moment.
//!
//! The schedule is arithmetic on the time since the start of the load, with no clock of
//! its own, so the tests can ask it about any moment. Call `k` (counting from 0) is due
//! when the calls scheduled so far reach `k + 1`: at a constant 100/s, call 0 is due at
//! 10 ms and call 99 at 1 s. A call belongs to the step it is due in.

use std::time::Duration;

/// One step of the schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// Calls per second; 0 only in a closed loop.
    pub rate: u32,
    /// When the step starts, in seconds after the start of the load.
    pub start_secs: f64,
    /// How long it lasts, in seconds.
    pub secs: f64,
}

impl Step {
    fn end_secs(&self) -> f64 {
        self.start_secs + self.secs
    }

    /// Calls the step schedules in all.
    fn calls(&self) -> f64 {
        f64::from(self.rate) * self.secs
    }
}

/// The rates of a run over time.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    steps: Vec<Step>,
}

/// A call handed out by the [`Pacer`] (or by a closed-loop worker).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// 0, 1, 2, … in the order the calls are due.
    pub index: u64,
    /// Index of the schedule step it belongs to.
    pub step: usize,
}

impl Schedule {
    /// `rate` calls per second for `duration`; rate 0 is a closed loop (as fast as the
    /// concurrency allows).
    pub fn constant(rate: u32, duration: Duration) -> Self {
        Self { steps: vec![Step { rate, start_secs: 0.0, secs: duration.as_secs_f64() }] }
    }

    /// The `rates` one after the other, each for `step`.
    ///
    /// An empty ramp is one step of rate 0 (a closed loop): [`parse_ramp`] refuses it.
    pub fn ramp(rates: &[u32], step: Duration) -> Self {
        if rates.is_empty() {
            return Self::constant(0, step);
        }
        let secs = step.as_secs_f64();
        let steps =
            rates.iter().enumerate().map(|(i, &rate)| Step { rate, start_secs: i as f64 * secs, secs }).collect();
        Self { steps }
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Whether this is one step of rate 0: a closed loop, not paced.
    pub fn is_closed_loop(&self) -> bool {
        self.steps.iter().all(|s| s.rate == 0)
    }

    /// Whether the schedule has more than one step.
    pub fn is_ramp(&self) -> bool {
        self.steps.len() > 1
    }

    /// Total length of the load.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.steps.last().map_or(0.0, Step::end_secs))
    }

    /// The highest rate of any step.
    pub fn peak_rate(&self) -> u32 {
        self.steps.iter().map(|s| s.rate).max().unwrap_or(0)
    }

    /// The step running `elapsed` after the start (`None` once the load is over).
    pub fn step_at(&self, elapsed: Duration) -> Option<usize> {
        let t = elapsed.as_secs_f64();
        self.steps.iter().position(|s| t >= s.start_secs && t < s.end_secs())
    }

    /// The rate aimed for `elapsed` after the start (0 once the load is over).
    pub fn target_at(&self, elapsed: Duration) -> u32 {
        self.step_at(elapsed).map_or(0, |i| self.steps[i].rate)
    }

    /// Calls scheduled in `[0, elapsed]`, as a real number (the pacer sends its floor).
    fn scheduled_by(&self, elapsed: Duration) -> f64 {
        let t = elapsed.as_secs_f64();
        self.steps.iter().map(|s| f64::from(s.rate) * (t - s.start_secs).clamp(0.0, s.secs)).sum()
    }

    /// Calls due by `elapsed` after the start (all of them once the load is over).
    pub fn due_by(&self, elapsed: Duration) -> u64 {
        // The epsilon keeps 0.29 * 100 = 28.999… from losing a call to rounding.
        (self.scheduled_by(elapsed) + 1e-9).floor() as u64
    }

    /// Calls the whole schedule sends (0 for a closed loop: as many as it can).
    pub fn total_calls(&self) -> u64 {
        self.due_by(self.duration())
    }

    /// When call `index` is due (`None` past the end, and in a closed loop).
    pub fn due_time(&self, index: u64) -> Option<Duration> {
        let mut needed = index as f64 + 1.0;
        for s in &self.steps {
            if s.rate > 0 && needed <= s.calls() + 1e-9 {
                return Some(Duration::from_secs_f64(s.start_secs + needed / f64::from(s.rate)));
            }
            needed -= s.calls();
        }
        None
    }

    /// The step call `index` is due in (the last step for a call past the end).
    pub fn step_of_call(&self, index: u64) -> usize {
        let mut needed = index as f64 + 1.0;
        for (i, s) in self.steps.iter().enumerate() {
            if needed <= s.calls() + 1e-9 {
                return i;
            }
            needed -= s.calls();
        }
        self.steps.len().saturating_sub(1)
    }
}

/// Hands out the calls of an open-loop schedule as they fall due.
#[derive(Debug)]
pub struct Pacer {
    schedule: Schedule,
    handed_out: u64,
}

impl Pacer {
    pub fn new(schedule: Schedule) -> Self {
        Self { schedule, handed_out: 0 }
    }

    /// The calls due by `elapsed` that were not handed out yet.
    pub fn due(&mut self, elapsed: Duration) -> Vec<Call> {
        let due = self.schedule.due_by(elapsed);
        let calls =
            (self.handed_out..due).map(|index| Call { index, step: self.schedule.step_of_call(index) }).collect();
        self.handed_out = self.handed_out.max(due);
        calls
    }
}

pub use cloudmart_load_report::ramp::{MAX_RATE, MAX_STEPS, Ramp, parse_ramp};

/// Parses `120s`, `2m`, `1h`, `500ms` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, ""), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (examples: 90s, 2m, 500ms)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {s:?} (use ms, s, m or h)")),
    };
    if !(secs.is_finite() && secs > 0.0 && secs <= 7.0 * 86_400.0) {
        return Err(format!("{s:?} must be longer than 0 and at most 7 days"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a share such as `--fault-share 0.1`: a number from 0 to 1.
pub fn parse_share(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("{s:?} is not a share: use a number from 0 to 1 (0.1 = one in ten)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// `due` is within a microsecond of `secs` (the schedule computes in floating point).
    fn at(due: Option<Duration>, secs: f64) -> bool {
        due.is_some_and(|d| (d.as_secs_f64() - secs).abs() < 1e-6)
    }

    #[test]
    fn a_constant_rate_is_due_evenly_and_stops_at_the_end() {
        let s = Schedule::constant(100, Duration::from_secs(2));
        assert_eq!((s.due_by(ms(0)), s.due_by(ms(9)), s.due_by(ms(10)), s.due_by(ms(290))), (0, 0, 1, 29));
        assert_eq!((s.due_by(ms(1000)), s.due_by(ms(2000)), s.due_by(ms(60_000))), (100, 200, 200));
        assert_eq!(s.total_calls(), 200);
        assert!(at(s.due_time(0), 0.01) && at(s.due_time(99), 1.0) && at(s.due_time(199), 2.0));
        assert_eq!(s.due_time(200), None, "past the end");
        assert_eq!((s.target_at(ms(1500)), s.target_at(ms(2000))), (100, 0));
        assert!(!s.is_closed_loop() && !s.is_ramp());
    }

    #[test]
    fn a_ramp_steps_through_its_rates() {
        let s = Schedule::ramp(&[100, 200, 400], Duration::from_secs(10));
        assert_eq!(s.duration(), Duration::from_secs(30));
        assert_eq!((s.peak_rate(), s.is_ramp()), (400, true));
        assert_eq!(s.steps()[2], Step { rate: 400, start_secs: 20.0, secs: 10.0 });
        // 1,000 calls in the first step, then 2,000, then 4,000.
        assert_eq!((s.due_by(ms(10_000)), s.due_by(ms(15_000)), s.due_by(ms(30_000))), (1000, 2000, 7000));
        assert_eq!(
            (s.step_of_call(999), s.step_of_call(1000), s.step_of_call(2999), s.step_of_call(3000)),
            (0, 1, 1, 2)
        );
        assert_eq!(s.step_of_call(1_000_000), 2, "past the end: the last step");
        assert!(at(s.due_time(1000), 10.005), "first call of step 2: 1/200 s into it");
        assert!(at(s.due_time(6999), 30.0));
        assert_eq!((s.step_at(ms(9_999)), s.step_at(ms(10_000)), s.step_at(ms(30_000))), (Some(0), Some(1), None));
        assert_eq!((s.target_at(ms(0)), s.target_at(ms(25_000))), (100, 400));
    }

    #[test]
    fn every_due_call_is_handed_out_once_with_its_step() {
        let mut pacer = Pacer::new(Schedule::ramp(&[10, 20], Duration::from_secs(1)));
        assert!(pacer.due(ms(50)).is_empty());
        let first = pacer.due(ms(1000));
        assert_eq!(first.len(), 10);
        assert_eq!((first[0], first[9]), (Call { index: 0, step: 0 }, Call { index: 9, step: 0 }));
        assert!(pacer.due(ms(1000)).is_empty(), "nothing twice");
        let rest = pacer.due(ms(5000));
        assert_eq!(rest.len(), 20);
        assert!(rest.iter().all(|c| c.step == 1));
        assert_eq!(rest.last().map(|c| c.index), Some(29));
        assert!(pacer.due(ms(9000)).is_empty(), "nothing after the end");
    }

    #[test]
    fn a_rate_of_zero_is_a_closed_loop() {
        let s = Schedule::constant(0, Duration::from_secs(5));
        assert!(s.is_closed_loop());
        assert_eq!((s.due_by(ms(4000)), s.due_time(0), s.step_of_call(7)), (0, None, 0));
        assert_eq!(s.duration(), Duration::from_secs(5));
    }

    #[test]
    fn ramps_parse_and_refuse_nonsense() {
        assert_eq!(parse_ramp("100,200,400"), Ok(Ramp(vec![100, 200, 400])));
        assert_eq!(parse_ramp(" 50 , 60 "), Ok(Ramp(vec![50, 60])));
        assert_eq!(parse_ramp("7"), Ok(Ramp(vec![7])));
        for bad in ["", "100,,200", "100,0", "-5", "1.5", "fast", "2000000"] {
            let err = parse_ramp(bad).unwrap_err();
            assert!(err.contains("is not a rate"), "{bad:?}: {err}");
        }
        assert!(parse_ramp(&vec!["1"; 101].join(",")).unwrap_err().contains("too many"));
    }

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("120s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").unwrap_err().contains("longer than 0"));
        assert!(parse_duration("10d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("fast").unwrap_err().contains("not a duration"));
        assert!(parse_duration("").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn shares_are_numbers_from_zero_to_one() {
        assert_eq!((parse_share("0"), parse_share("0.1"), parse_share("1")), (Ok(0.0), Ok(0.1), Ok(1.0)));
        for bad in ["1.5", "-0.1", "ten", "NaN", ""] {
            assert!(parse_share(bad).unwrap_err().contains("is not a share"), "{bad:?}");
        }
    }
}
