//! `cloudmart-load`: the load generator (see `cloudmart_e2e::load`).
//!
//! Progress goes to stderr: a live line on a terminal, a plain line every
//! `--progress-every` otherwise. The final report goes to stderr as a table and to stdout
//! as one line `CLOUDMART_LOAD_REPORT {json}` (what `kubectl cloudmart load` reads from the
//! pod's log), to `--report <file>` as JSON and to `--chart <file.png>` as a chart when
//! asked.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use cloudmart_e2e::load::{
    LoadOptions, LoadReport, OrderMix, Ramp, SagaOptions, Scenario, Schedule, parse_duration, parse_ramp, parse_share,
    progress, run,
};

const EXAMPLES: &str = "\
Examples:
  # Flash sale: 300 purchases/s for 2 minutes on a new sale of the local time-sale service
  cloudmart-load --timesale-endpoint http://127.0.0.1:50053 --sale-rps 300 --duration 2m

  # Orders: 50 orders/s for 30 s, 10 % shipped to a postal code whose delivery fails
  # (the delivery service's FAULT_DELIVERY_FAIL_POSTAL_CODES; `make dev` fails 99999),
  # 5 % cancelled once accepted; every saga followed to CONFIRMED or CANCELLED
  cloudmart-load --scenario orders --order-endpoint http://127.0.0.1:50051 --rate 50 --duration 30s \\
      --fault-share 0.1 --fault-postal-code 99999 --cancel-share 0.05

  # Ramp: 100, then 200, then 400 purchases/s, 20 s each (60 s in all), figures per step,
  # the report as JSON and a chart of rate, latency and outcomes over time
  cloudmart-load --ramp 100,200,400 --step 20s --report load.json --chart load.png

Output: progress on stderr (a live line on a terminal, a plain line every --progress-every
otherwise); at the end the table on stderr and one line `CLOUDMART_LOAD_REPORT {json}` on
stdout. Exit status 0 when the run completed (whatever the answers were), 1 when it could not
run, 2 for bad flags, 130 when interrupted.";

#[derive(Parser, Debug)]
#[command(
    name = "cloudmart-load",
    version,
    about = "Load generator: flash-sale purchases or orders through the saga, at a fixed rate or a ramp of rates",
    after_help = EXAMPLES
)]
struct Args {
    /// What to send: `flash-sale` (Purchase calls on a new sale) or `orders` (PlaceOrder calls,
    /// each order followed until CONFIRMED or CANCELLED).
    #[arg(long, value_enum, default_value = "flash-sale")]
    scenario: Scenario,
    /// Time-sale service gRPC endpoint (flash-sale).
    #[arg(long, env = "TIMESALE_ENDPOINT", default_value = "http://127.0.0.1:50053")]
    timesale_endpoint: String,
    /// Order service gRPC endpoint (orders).
    #[arg(long, env = "ORDER_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    order_endpoint: String,
    /// Calls per second (open loop: the rate holds however slowly the service answers);
    /// 0 = closed loop, as fast as --concurrency allows.
    #[arg(
        long,
        visible_alias = "rate",
        value_name = "RPS",
        env = "SALE_RPS",
        default_value_t = 200,
        conflicts_with = "ramp"
    )]
    sale_rps: u32,
    /// How long to send (e.g. 90s, 2m, 500ms). With --ramp and no --step, split evenly
    /// between the steps.
    #[arg(long, env = "DURATION", value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Rates per second one after the other, comma-separated (e.g. 100,200,400), each held
    /// for --step; the report has the figures of every step. Replaces --sale-rps.
    #[arg(long, value_name = "RATES", value_parser = parse_ramp)]
    ramp: Option<Ramp>,
    /// How long each --ramp step lasts (e.g. 20s); the run then lasts steps × step.
    #[arg(long, value_name = "DURATION", requires = "ramp", conflicts_with = "duration", value_parser = parse_duration)]
    step: Option<Duration>,
    /// Calls in flight at most; a call due while all are busy is counted as not sent.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    concurrency: u32,
    /// HTTP/2 connections to spread the calls over (reaches several replicas behind a Service).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    connections: u32,
    /// Stock of the sale the run creates (flash-sale).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(i32).range(1..))]
    stock: i32,
    /// Per-customer limit of the sale the run creates (flash-sale).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    per_customer_limit: i32,
    /// Distinct customers (calls cycle through them).
    #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    customers: u64,
    /// Buy from this existing sale instead of creating one (flash-sale).
    #[arg(long)]
    sale_id: Option<String>,
    /// Share of the orders shipped to --fault-postal-code, whose delivery should fail and
    /// the order end CANCELLED with DELIVERY_FAILED (orders; 0 to 1).
    #[arg(long, value_name = "SHARE", default_value = "0.1", value_parser = parse_share)]
    fault_share: f64,
    /// Postal code of the fault-injected orders (orders): one the delivery service is
    /// configured to fail, i.e. listed in its FAULT_DELIVERY_FAIL_POSTAL_CODES (`make dev`
    /// fails 99999).
    #[arg(long, value_name = "CODE", default_value = "99999")]
    fault_postal_code: String,
    /// Share of the orders cancelled (CancelOrder) as soon as they are accepted (orders; 0 to 1).
    #[arg(long, value_name = "SHARE", default_value = "0.05", value_parser = parse_share)]
    cancel_share: f64,
    /// Give up on an accepted order still PENDING after this long (orders).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    saga_timeout: Duration,
    /// First wait before polling an accepted order with GetOrder; the wait then doubles up to
    /// 1 s. The saga latency comes from the order's own timestamps, not from this (orders).
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = parse_duration)]
    saga_poll: Duration,
    /// Deadline of one call.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    call_timeout: Duration,
    /// How often to print a progress line when stderr is not a terminal (a pod log, CI); on a
    /// terminal a live line is redrawn instead.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    progress_every: Duration,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Also draw a PNG chart of the report's per-second series to this file: calls per second
    /// against the target, latency p50/p99, outcomes per second.
    #[arg(long, value_name = "FILE.png")]
    chart: Option<PathBuf>,
}

impl Args {
    /// The rates over time: a ramp, or one rate for --duration.
    fn schedule(&self) -> Schedule {
        match &self.ramp {
            Some(Ramp(rates)) => {
                let steps = u32::try_from(rates.len()).unwrap_or(u32::MAX).max(1);
                Schedule::ramp(rates, self.step.unwrap_or(self.duration / steps))
            }
            None => Schedule::constant(self.sale_rps, self.duration),
        }
    }

    fn options(&self) -> LoadOptions {
        LoadOptions {
            scenario: self.scenario,
            timesale_endpoint: self.timesale_endpoint.clone(),
            order_endpoint: self.order_endpoint.clone(),
            schedule: self.schedule(),
            concurrency: self.concurrency as usize,
            connections: self.connections as usize,
            stock: self.stock,
            per_customer_limit: self.per_customer_limit,
            customers: self.customers,
            sale_id: self.sale_id.clone(),
            call_timeout: self.call_timeout,
            mix: OrderMix {
                fault_share: self.fault_share,
                cancel_share: self.cancel_share,
                fault_postal_code: self.fault_postal_code.trim().to_owned(),
            },
            saga: SagaOptions { timeout: self.saga_timeout, first_poll: self.saga_poll },
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let opts = args.options();
    if let Err(e) = opts.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if args.chart.is_some()
        && let Err(e) = cloudmart_load_report::chart::font()
    {
        // Before the load, not after it: the chart needs a font.
        eprintln!("error: --chart: {e}");
        return ExitCode::from(2);
    }
    let mut progress = progress::for_stderr(args.progress_every, opts.schedule.duration());
    let report = tokio::select! {
        r = run(&opts, progress.as_mut()) => r,
        _ = tokio::signal::ctrl_c() => {
            progress.finish();
            eprintln!("cloudmart-load: interrupted");
            return ExitCode::from(130);
        }
    };
    match report.and_then(|report| write_outputs(&report, &args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloudmart-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The table (stderr), the report line (stdout), and the files asked for.
fn write_outputs(report: &LoadReport, args: &Args) -> anyhow::Result<()> {
    eprint!("{}", report.table());
    println!("{}", report.line());
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(report).context("serializing the report")?;
        std::fs::write(path, json).with_context(|| format!("--report: cannot write {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    if let Some(path) = &args.chart {
        write_chart(report, path)?;
        eprintln!("chart written to {}", path.display());
    }
    Ok(())
}

fn write_chart(report: &LoadReport, path: &Path) -> anyhow::Result<()> {
    cloudmart_load_report::write_chart(path, &report.chart_title(), &report.series, &[])
        .with_context(|| format!("--chart {}", path.display()))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("cloudmart-load").chain(args.iter().copied()))
    }

    #[test]
    fn every_flag_is_documented() {
        Args::command().debug_assert();
        for arg in Args::command().get_arguments() {
            assert!(arg.get_help().is_some(), "--{} has no help", arg.get_id());
        }
    }

    #[test]
    fn the_defaults_are_a_flash_sale_at_200_per_second_for_a_minute() {
        let opts = parse(&[]).unwrap().options();
        assert_eq!(opts.scenario, Scenario::FlashSale);
        assert_eq!(opts.schedule, Schedule::constant(200, Duration::from_secs(60)));
        assert_eq!((opts.concurrency, opts.connections), (64, 8));
        assert_eq!(opts.mix, OrderMix { fault_share: 0.1, cancel_share: 0.05, fault_postal_code: "99999".into() });
        assert_eq!(opts.validate(), Ok(()));
    }

    #[test]
    fn ramps_take_a_step_or_split_the_duration() {
        let stepped = parse(&["--ramp", "10,20", "--step", "5s"]).unwrap().options();
        assert_eq!(stepped.schedule, Schedule::ramp(&[10, 20], Duration::from_secs(5)));
        assert_eq!(stepped.schedule.duration(), Duration::from_secs(10));
        let split = parse(&["--ramp", "10,20,30", "--duration", "30s"]).unwrap().options();
        assert_eq!(split.schedule, Schedule::ramp(&[10, 20, 30], Duration::from_secs(10)));
        let orders = parse(&["--scenario", "orders", "--rate", "50"]).unwrap().options();
        assert_eq!((orders.scenario, orders.schedule.peak_rate()), (Scenario::Orders, 50));
    }

    #[test]
    fn bad_flags_are_refused_naming_the_flag() {
        let refused = |args: &[&str]| parse(args).unwrap_err().to_string();
        assert!(refused(&["--ramp", "10,0"]).contains("--ramp"));
        assert!(refused(&["--ramp", "10,20", "--sale-rps", "5"]).contains("cannot be used with"));
        assert!(refused(&["--step", "5s"]).contains("--ramp"));
        assert!(refused(&["--ramp", "10", "--step", "5s", "--duration", "9s"]).contains("cannot be used with"));
        assert!(refused(&["--fault-share", "1.5"]).contains("--fault-share"));
        assert!(refused(&["--scenario", "checkout"]).contains("--scenario"));
        assert!(refused(&["--saga-timeout", "soon"]).contains("--saga-timeout"));
        let both = parse(&["--scenario", "orders", "--fault-share", "0.6", "--cancel-share", "0.6"]).unwrap();
        assert!(both.options().validate().unwrap_err().to_string().contains("--cancel-share 0.6"));
    }
}
