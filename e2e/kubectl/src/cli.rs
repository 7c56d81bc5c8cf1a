//! The command line of `kubectl-cloudmart` (clap derive).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use cloudmart_load_report::ramp::{Ramp, parse_ramp};

use crate::job::DEFAULT_IMAGE;
use crate::{LoadOptions, Release};

/// kubectl plugin for a cloudmart release: status and in-cluster time-sale load tests.
///
/// Installed on the PATH as `kubectl-cloudmart`, it runs as `kubectl cloudmart …`. The
/// cluster comes from the usual kubeconfig (KUBECONFIG, ~/.kube/config, current context) or
/// the in-cluster service account.
#[derive(Debug, Parser)]
#[command(name = "kubectl-cloudmart", bin_name = "kubectl cloudmart", version)]
pub struct Cli {
    /// Namespace the cloudmart chart is installed in.
    #[arg(short = 'n', long, env = "NAMESPACE", default_value = "cloudmart", global = true, display_order = 100)]
    pub namespace: String,

    /// Helm release name; resources are named `<release>-<part>`, e.g. `cloudmart-timesale`.
    #[arg(long, default_value = "cloudmart", global = true, display_order = 101)]
    pub release: String,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The release the command works on.
    pub fn target(&self) -> Release {
        Release::new(&self.namespace, &self.release)
    }
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the order, delivery and time-sale Deployments and the time-sale autoscaler.
    Status,
    /// Run the time-sale load generator in the cluster as a Job, follow the autoscaler
    /// while it runs, and report throughput, outcomes, latency and scaling.
    Load(LoadArgs),
}

/// What the load Job sends (`cloudmart-load --scenario`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Purchase calls on a sale the run creates.
    FlashSale,
    /// PlaceOrder calls, each order followed through the saga.
    Orders,
}

impl Scenario {
    /// The value `cloudmart-load --scenario` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::FlashSale => "flash-sale",
            Scenario::Orders => "orders",
        }
    }
}

/// Flags of `kubectl cloudmart load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// What the load generator sends: `flash-sale` (Purchase calls on a new sale, the load
    /// the time-sale autoscaler answers) or `orders` (PlaceOrder calls through the order
    /// service, each followed until CONFIRMED or CANCELLED; no fault-injected orders, as the
    /// chart fails no postal code unless `delivery.fault.failPostalCodes` is set).
    #[arg(long, value_enum, default_value_t = Scenario::FlashSale)]
    pub scenario: Scenario,

    /// Calls per second the load generator aims for (purchase attempts, or orders).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "ramp")]
    pub sale_rps: u32,

    /// Rates per second one after the other, comma-separated (e.g. `100,200,400`), the
    /// --duration split evenly between them; the report has the figures of every step.
    /// Replaces --sale-rps.
    #[arg(long, value_name = "RATES", value_parser = parse_ramp)]
    pub ramp: Option<Ramp>,

    /// How long to generate load, e.g. `120s`, `2m` or `1m30s` (a bare number is seconds).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Requests the load generator keeps in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// Image that holds `cloudmart-load` (`make deploy` loads `cloudmart/tools:dev` into kind).
    #[arg(long, default_value = DEFAULT_IMAGE)]
    pub image: String,

    /// Seconds between two looks at the autoscaler and the Job while the load runs.
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub poll: u64,

    /// Keep the Job (and so its pod and logs) after the run instead of deleting it.
    #[arg(long)]
    pub keep: bool,

    /// Print the Job manifest as YAML and exit without contacting the cluster.
    #[arg(long)]
    pub dry_run: bool,

    /// Write a PNG chart of the run to this file: the load generator's calls per second,
    /// latency and outcomes per second, and the time-sale replicas the HPA had meanwhile.
    #[arg(long, value_name = "FILE.png")]
    pub chart: Option<PathBuf>,
}

impl LoadArgs {
    /// The options of a load run.
    pub fn options(&self) -> LoadOptions {
        LoadOptions {
            scenario: self.scenario,
            sale_rps: self.sale_rps,
            ramp: self.ramp.clone(),
            duration: self.duration,
            concurrency: self.concurrency,
            image: self.image.clone(),
            poll: Duration::from_secs(self.poll),
            keep: self.keep,
            chart: self.chart.clone(),
        }
    }
}

/// Parses `90`, `90s`, `2m`, `1m30s`, `1h` into whole seconds (at least one).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let invalid = || format!("invalid duration `{text}`: use e.g. `120s`, `2m` or `1m30s`");
    if text.is_empty() {
        return Err(invalid());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return positive(secs).ok_or_else(invalid);
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(invalid()),
        };
        let n: u64 = digits.parse().map_err(|_| invalid())?;
        digits.clear();
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(invalid)?;
    }
    if !digits.is_empty() {
        return Err(invalid());
    }
    positive(total).ok_or_else(invalid)
}

fn positive(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("120s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        for bad in ["", "0s", "0", "s", "2x", "1.5m", "10m5", "-3s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn cli_defaults_and_flags() {
        let cli = Cli::try_parse_from(["kubectl-cloudmart", "load"]).unwrap();
        let Command::Load(args) = &cli.command else { panic!("not load") };
        let opts = args.options();
        assert_eq!((opts.sale_rps, opts.concurrency), (200, 64));
        assert_eq!(opts.duration, Duration::from_secs(120));
        assert_eq!(opts.poll, Duration::from_secs(5));
        assert_eq!(opts.image, "cloudmart/tools:dev");
        assert!(!opts.keep && !args.dry_run);
        assert_eq!(opts.chart, None);
        assert_eq!(cli.release, "cloudmart");

        let cli = Cli::try_parse_from([
            "kubectl-cloudmart",
            "load",
            "-n",
            "shop",
            "--release",
            "cm",
            "--sale-rps",
            "500",
            "--duration",
            "2m",
            "--keep",
            "--chart",
            "out/load.png",
        ])
        .unwrap();
        assert_eq!(cli.target(), Release::new("shop", "cm"));
        let Command::Load(args) = &cli.command else { panic!("not load") };
        assert_eq!(args.options().duration, Duration::from_secs(120));
        assert_eq!(args.options().sale_rps, 500);
        assert!(args.keep);
        assert_eq!(args.options().chart, Some(PathBuf::from("out/load.png")));

        assert!(Cli::try_parse_from(["kubectl-cloudmart", "load", "--sale-rps", "0"]).is_err());
    }

    #[test]
    fn scenario_and_ramp_are_parsed_and_checked() {
        let cli =
            Cli::try_parse_from(["kubectl-cloudmart", "load", "--scenario", "orders", "--ramp", "50, 100"]).unwrap();
        let Command::Load(args) = &cli.command else { panic!("not load") };
        let opts = args.options();
        assert_eq!(opts.scenario, Scenario::Orders);
        assert_eq!(opts.ramp, Some(Ramp(vec![50, 100])));
        let defaults = Cli::try_parse_from(["kubectl-cloudmart", "load"]).unwrap();
        let Command::Load(args) = &defaults.command else { panic!("not load") };
        assert_eq!((args.scenario, args.ramp.clone()), (Scenario::FlashSale, None));

        let refused = |argv: &[&str]| Cli::try_parse_from(argv).unwrap_err().to_string();
        assert!(refused(&["kubectl-cloudmart", "load", "--ramp", "100,x"]).contains("\"x\" is not a rate"));
        assert!(refused(&["kubectl-cloudmart", "load", "--scenario", "checkout"]).contains("checkout"));
        assert!(
            refused(&["kubectl-cloudmart", "load", "--ramp", "100", "--sale-rps", "5"]).contains("cannot be used with")
        );
    }
}
