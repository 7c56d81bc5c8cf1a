//! The command line of `kubectl-cloudmart` (clap derive).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use cloudmart_load_report::ramp::{Ramp, parse_ramp};

use crate::job::DEFAULT_IMAGE;
use crate::{AUTOSCALED_SERVICE, LoadOptions, ORDER_GRPC_PORT, Release, TIMESALE_GRPC_PORT};

/// The namespace when neither `-n` nor the kubeconfig context names one.
pub const DEFAULT_NAMESPACE: &str = "cloudmart";

/// What the exit status means, for every command (printed under `--help`).
pub const EXIT_CODES: &str = "\
Exit status:
  0    done; every verdict asked for passed (load --expect-scale, audit, trace found)
  1    could not run: no cluster, a missing resource, a failed Job, bad input (message on stderr)
       (audit and dlq: also the tool's own exit status 1, e.g. `audit: N violation(s)`)
  2    bad flags (usage on stderr); audit and dlq: the tool could not run (its exit status 2)
  3    a verdict failed: load --expect-scale saw no scale-up by the HPA (or another
       service changed its replicas); trace found no trace of the order
  4    load --expect-scale-down: time-sale was not back at minReplicas in time
  130  interrupted (Ctrl-C or SIGTERM); the Job was deleted first

Cluster: --kubeconfig, else KUBECONFIG, else ~/.kube/config, else the pod's service account;
--context, else the kubeconfig's current context. Namespace: -n, else the context's namespace
when it names one, else `cloudmart`.";

/// kubectl plugin for a cloudmart release: status, an in-cluster load test with an
/// autoscaling verdict, an order's trace, and the invariant audit and dead-letter tools.
///
/// Installed on the PATH as `kubectl-cloudmart`, it runs as `kubectl cloudmart …`.
#[derive(Debug, Parser)]
#[command(name = "kubectl-cloudmart", bin_name = "kubectl cloudmart", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Path of the kubeconfig file to use (instead of KUBECONFIG or ~/.kube/config).
    #[arg(long, value_name = "PATH", global = true, display_order = 100)]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (instead of its current context).
    #[arg(long, value_name = "NAME", global = true, display_order = 101)]
    pub context: Option<String>,

    /// Namespace the cloudmart chart is installed in [default: the context's namespace when it
    /// names one, else `cloudmart`].
    #[arg(short = 'n', long, env = "NAMESPACE", global = true, display_order = 102)]
    pub namespace: Option<String>,

    /// Helm release name; resources are named `<release>-<part>`, e.g. `cloudmart-timesale`.
    #[arg(long, default_value = "cloudmart", global = true, display_order = 103)]
    pub release: String,

    /// Print the command's objects as `json` or `yaml` instead of a table (status, load, trace).
    /// With `load` the progress goes to stderr and the JSON report to stdout.
    #[arg(short = 'o', long, value_enum, global = true, display_order = 104)]
    pub output: Option<OutputFormat>,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The release the command works on: `-n`, else `context_namespace`, else `cloudmart`.
    pub fn target(&self, context_namespace: Option<&str>) -> Release {
        let namespace = self
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .or(context_namespace.filter(|n| !n.is_empty()))
            .unwrap_or(DEFAULT_NAMESPACE);
        Release::new(namespace, &self.release)
    }
}

/// `-o`: a machine-readable rendering of what a command prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Json,
    Yaml,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the order, delivery and time-sale Deployments, the release's pods and the
    /// time-sale autoscaler; optionally orders by status and the dead-letter depth.
    Status(StatusArgs),
    /// Run the load generator in the cluster as a Job, follow the HPA and every service's
    /// replicas while it runs, and report throughput, outcomes, latency and scaling.
    Load(LoadArgs),
    /// Find an order's trace in the release's Jaeger (through a port-forward to its pod) and
    /// print it as a tree of spans with their services and durations.
    Trace(TraceArgs),
    /// Check the system's invariants against the three databases: `cloudmart-audit` as a Job
    /// (exit status: the audit's).
    Audit(AuditArgs),
    /// The dead-letter topics: `cloudmart-audit dlq list|replay` as a Job.
    Dlq(DlqArgs),
}

/// Flags of `kubectl cloudmart status`.
#[derive(Debug, Default, Args)]
pub struct StatusArgs {
    /// Also count the orders by status: `psql` in the release's PostgreSQL pod (needs
    /// pods/exec and the chart's own PostgreSQL).
    #[arg(long)]
    pub orders: bool,

    /// Also count the records of each dead-letter topic: `cloudmart-audit dlq list` as a Job
    /// (a few seconds; the broker must admit the Job's pod).
    #[arg(long)]
    pub dlq: bool,

    /// Image that holds `cloudmart-audit` (--dlq).
    #[arg(long, default_value = DEFAULT_IMAGE)]
    pub image: String,
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
#[command(after_help = "\
Verdict lines (stdout) with --expect-scale / --expect-scale-down, after the load report:
  verdict: PASS scale-up: …    or  verdict: FAIL scale-up: …     (exit 3 on FAIL)
  verdict: PASS scale-down: …  or  verdict: FAIL scale-down: …   (exit 4 on FAIL)
  verdict: SKIP scale-down: not checked: timesale did not scale up  (after a FAIL scale-up)
While the load runs: a row every --poll: TIME RATE/S P99 ORDER DELIVERY TIMESALE (ready/desired)
HPA CUR/DESIRED CPU/TARGET.")]
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

    /// Stock of the sale the run creates (flash-sale): a real flash sale sells out, and the
    /// rest of the rush is refused SOLD_OUT by time-sale alone — the load the autoscaler
    /// answers, without a saga backlog behind it. Default: the load generator's (1,000,000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=2_147_483_647))]
    pub stock: Option<u32>,

    /// Requests the load generator keeps in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// Image that holds `cloudmart-load` (`make deploy` loads `cloudmart/tools:dev`).
    #[arg(long, default_value = DEFAULT_IMAGE)]
    pub image: String,

    /// gRPC port of the time-sale Service.
    #[arg(long, value_name = "PORT", default_value_t = TIMESALE_GRPC_PORT)]
    pub timesale_port: u16,

    /// gRPC port of the order Service (the `orders` scenario).
    #[arg(long, value_name = "PORT", default_value_t = ORDER_GRPC_PORT)]
    pub order_port: u16,

    /// Seconds between two looks at the HPA, the Deployments and the Job while the load runs.
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub poll: u64,

    /// Keep the Job (and so its pod and logs) after the run instead of deleting it.
    #[arg(long)]
    pub keep: bool,

    /// Print the Job manifest as YAML and exit without contacting the cluster.
    #[arg(long)]
    pub dry_run: bool,

    /// Write a PNG chart of the run to this file: calls per second, latency (p50/p99) and
    /// outcomes per second, and every service's replicas with the HPA's desired count.
    #[arg(long, value_name = "FILE.png")]
    pub chart: Option<PathBuf>,

    /// Also write the run's report as JSON to this file (what `-o json` prints): the load
    /// generator's figures, the timeline of rate, p99 and replicas per service, the verdicts.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,

    /// Fail (exit 3) unless SERVICE was scaled above the HPA's minReplicas by the HPA during
    /// the run (its status went above min, with a lastScaleTime after the Job started) while
    /// the other services kept their replica counts. Only `timesale` autoscales.
    #[arg(long, value_name = "SERVICE", value_parser = parse_autoscaled)]
    pub expect_scale: Option<String>,

    /// After the load, wait until time-sale is back at the HPA's minReplicas; fail (exit 4)
    /// if it is not within --scale-down-timeout.
    #[arg(long, requires = "expect_scale")]
    pub expect_scale_down: bool,

    /// How long --expect-scale-down waits after the load ended, e.g. `10m`.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub scale_down_timeout: Duration,
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
            stock: self.stock,
            image: self.image.clone(),
            timesale_port: self.timesale_port,
            order_port: self.order_port,
            poll: Duration::from_secs(self.poll),
            keep: self.keep,
            chart: self.chart.clone(),
            report: self.report.clone(),
            expect_scale: self.expect_scale.is_some(),
            expect_scale_down: self.expect_scale_down.then_some(self.scale_down_timeout),
        }
    }
}

/// `--expect-scale`: the one service the chart autoscales.
fn parse_autoscaled(text: &str) -> Result<String, String> {
    if text == AUTOSCALED_SERVICE {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` does not autoscale: the chart has a HorizontalPodAutoscaler for `{AUTOSCALED_SERVICE}` only"
        ))
    }
}

/// Flags of `kubectl cloudmart trace`.
#[derive(Debug, Args)]
#[command(after_help = "\
Output (stdout): per trace found, a line `trace <TRACE_ID>: <N> spans, services <a,b,…>, <duration>`,
then one line per span (start offset, duration, service, name and kind, as a tree), then
`  by service:` with a line per service. No trace: `error: no trace of order …` on stderr, exit 3.")]
pub struct TraceArgs {
    /// The order's id (a UUID, as PlaceOrder or GetPurchase returned it).
    #[arg(value_name = "ORDER_ID")]
    pub order_id: String,

    /// How far back to search.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub lookback: Duration,

    /// Search again every 2 s until a trace is found (and has every --require-service), for
    /// at most this long; spans reach Jaeger in batches, seconds after the calls.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait: Option<Duration>,

    /// A service the trace must have spans of, e.g. `delivery` (repeatable); no such trace is
    /// "not found" (exit 3).
    #[arg(long = "require-service", value_name = "SERVICE")]
    pub require_services: Vec<String>,

    /// Jaeger's query API at this URL (`http://HOST:PORT`) instead of a port-forward to the
    /// release's Jaeger pod, e.g. an external Jaeger or `make jaeger`.
    #[arg(long, value_name = "URL")]
    pub jaeger_url: Option<String>,
}

/// Flags of the Jobs that run a tool of the tools image (`audit`, `dlq`).
#[derive(Debug, Clone, Args)]
pub struct ToolJobArgs {
    /// Image that holds `cloudmart-audit`.
    #[arg(long, default_value = DEFAULT_IMAGE, global = true)]
    pub image: String,

    /// Give up (and delete the Job) when the tool has not finished after this long.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration, global = true)]
    pub timeout: Duration,

    /// Seconds between two looks at the Job.
    #[arg(long, value_name = "SECS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub poll: u64,

    /// Keep the Job (and so its pod and logs) after the run instead of deleting it.
    #[arg(long, global = true)]
    pub keep: bool,
}

/// Flags of `kubectl cloudmart audit`.
#[derive(Debug, Args)]
#[command(after_help = "\
Output: the audit's own lines (`orders: N checked`, …, `VIOLATION: …`) and its verdict,
`audit: all invariants hold` (exit 0) or `audit: N violation(s)` (exit 1).")]
pub struct AuditArgs {
    /// Orders younger than this many seconds may still be PENDING (their saga is in flight).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub settle_secs: u32,

    #[command(flatten)]
    pub job: ToolJobArgs,
}

/// Flags of `kubectl cloudmart dlq`.
#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,

    #[command(flatten)]
    pub job: ToolJobArgs,
}

/// The topics that have a dead-letter topic (`<topic>.dlq`).
pub const DLQ_SOURCE_TOPICS: [&str; 3] = ["order-events", "delivery-events", "timesale-events"];

/// `dlq list|replay`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// One line per dead-letter record: DLQ topic and `PARTITION:OFFSET`, origin, ce_id,
    /// ce_type, attempts, failure time and error; then `<topic>.dlq: N record(s)` per topic.
    List {
        /// Source topic whose `<topic>.dlq` is listed (repeatable; default: all three).
        #[arg(long, value_parser = DLQ_SOURCE_TOPICS)]
        topic: Vec<String>,
    },
    /// Re-publish dead-letter records to their original topic after the cause was fixed
    /// (consumers apply a replayed event at most once).
    Replay {
        /// Source topic whose `<topic>.dlq` the records are taken from.
        #[arg(long, value_parser = DLQ_SOURCE_TOPICS)]
        topic: String,
        /// A record as `dlq list` prints it: `PARTITION:OFFSET`, or a bare `OFFSET` (repeatable).
        #[arg(long = "offset", value_name = "[PARTITION:]OFFSET", value_parser = parse_dlq_offset,
              required_unless_present = "all", conflicts_with = "all")]
        offsets: Vec<String>,
        /// Replay every record of the DLQ that has a `ce_id`.
        #[arg(long)]
        all: bool,
        /// Print what would be replayed; publish nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `dlq replay --offset`: `PARTITION:OFFSET` or `OFFSET`, numbers >= 0 (checked here so a
/// typo fails before a Job starts).
fn parse_dlq_offset(text: &str) -> Result<String, String> {
    let number = |what: &str, v: &str| {
        v.parse::<u64>().map(|_| ()).map_err(|_| format!("{what} `{v}` is not a number >= 0 (use PARTITION:OFFSET)"))
    };
    match text.split_once(':') {
        Some((p, o)) => {
            number("partition", p)?;
            number("offset", o)?;
        }
        None => number("offset", text)?,
    }
    Ok(text.to_owned())
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

    fn parse(argv: &[&str]) -> Cli {
        Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("120s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        for bad in ["", "0s", "0", "s", "2x", "1.5m", "10m5", "-3s", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn cli_defaults_and_flags() {
        let cli = parse(&["kubectl-cloudmart", "load"]);
        let Command::Load(args) = &cli.command else { panic!("not load") };
        let opts = args.options();
        assert_eq!((opts.sale_rps, opts.concurrency), (200, 64));
        assert_eq!(opts.duration, Duration::from_secs(120));
        assert_eq!(opts.poll, Duration::from_secs(5));
        assert_eq!(opts.image, "cloudmart/tools:dev");
        assert_eq!((opts.timesale_port, opts.order_port), (50053, 50051));
        assert!(!opts.keep && !args.dry_run && !opts.expect_scale);
        assert_eq!((opts.chart, opts.report, opts.expect_scale_down), (None, None, None));
        assert_eq!(cli.release, "cloudmart");
        assert_eq!((cli.kubeconfig, cli.context, cli.output), (None, None, None));

        let cli = parse(&[
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
            "--timesale-port",
            "6000",
        ]);
        assert_eq!(cli.target(Some("ignored")), Release::new("shop", "cm"));
        let Command::Load(args) = &cli.command else { panic!("not load") };
        assert_eq!(args.options().duration, Duration::from_secs(120));
        assert_eq!(args.options().sale_rps, 500);
        assert_eq!(args.options().timesale_port, 6000);
        assert!(args.keep);
        assert_eq!(args.options().chart, Some(PathBuf::from("out/load.png")));

        assert!(Cli::try_parse_from(["kubectl-cloudmart", "load", "--sale-rps", "0"]).is_err());
    }

    #[test]
    fn global_flags_go_anywhere_and_the_namespace_falls_back_to_the_context_then_cloudmart() {
        // The e2e suite puts them after the subcommand and its arguments.
        let cli = parse(&[
            "kubectl-cloudmart",
            "trace",
            "0b6f2f1e-54a0-4d2b-9d7c-3a1c0e1f9a01",
            "--context",
            "cloudmart-local",
            "--kubeconfig",
            "/tmp/kc",
            "-o",
            "json",
        ]);
        assert_eq!(cli.context.as_deref(), Some("cloudmart-local"));
        assert_eq!(cli.kubeconfig, Some(PathBuf::from("/tmp/kc")));
        assert_eq!(cli.output, Some(OutputFormat::Json));
        // NAMESPACE may be set in the environment running the tests: only check without -n
        // when it is not.
        if std::env::var_os("NAMESPACE").is_none() {
            assert_eq!(cli.target(Some("shop")).namespace, "shop");
            assert_eq!(cli.target(Some("")).namespace, "cloudmart");
            assert_eq!(cli.target(None).namespace, "cloudmart");
        }
        let Command::Trace(args) = &cli.command else { panic!("not trace") };
        assert_eq!(args.lookback, Duration::from_secs(3600));
        assert_eq!(args.wait, None);
    }

    #[test]
    fn expect_scale_takes_only_the_autoscaled_service_and_scale_down_needs_it() {
        let cli = parse(&[
            "kubectl-cloudmart",
            "load",
            "--expect-scale",
            "timesale",
            "--expect-scale-down",
            "--scale-down-timeout",
            "5m",
        ]);
        let Command::Load(args) = &cli.command else { panic!("not load") };
        let opts = args.options();
        assert!(opts.expect_scale);
        assert_eq!(opts.expect_scale_down, Some(Duration::from_secs(300)));
        let default_timeout =
            parse(&["kubectl-cloudmart", "load", "--expect-scale", "timesale", "--expect-scale-down"]);
        let Command::Load(args) = &default_timeout.command else { panic!("not load") };
        assert_eq!(args.options().expect_scale_down, Some(Duration::from_secs(600)));

        let refused = |argv: &[&str]| Cli::try_parse_from(argv).unwrap_err().to_string();
        assert!(
            refused(&["kubectl-cloudmart", "load", "--expect-scale", "order"])
                .contains("the chart has a HorizontalPodAutoscaler for `timesale` only")
        );
        assert!(refused(&["kubectl-cloudmart", "load", "--expect-scale-down"]).contains("--expect-scale"));
    }

    #[test]
    fn scenario_and_ramp_are_parsed_and_checked() {
        let cli = parse(&["kubectl-cloudmart", "load", "--scenario", "orders", "--ramp", "50, 100"]);
        let Command::Load(args) = &cli.command else { panic!("not load") };
        let opts = args.options();
        assert_eq!(opts.scenario, Scenario::Orders);
        assert_eq!(opts.ramp, Some(Ramp(vec![50, 100])));
        let defaults = parse(&["kubectl-cloudmart", "load"]);
        let Command::Load(args) = &defaults.command else { panic!("not load") };
        assert_eq!((args.scenario, args.ramp.clone()), (Scenario::FlashSale, None));

        let refused = |argv: &[&str]| Cli::try_parse_from(argv).unwrap_err().to_string();
        assert!(refused(&["kubectl-cloudmart", "load", "--ramp", "100,x"]).contains("\"x\" is not a rate"));
        assert!(refused(&["kubectl-cloudmart", "load", "--scenario", "checkout"]).contains("checkout"));
        assert!(
            refused(&["kubectl-cloudmart", "load", "--ramp", "100", "--sale-rps", "5"]).contains("cannot be used with")
        );
    }

    #[test]
    fn audit_and_dlq_flags() {
        let cli = parse(&["kubectl-cloudmart", "audit", "--settle-secs", "5", "--image", "reg/tools:1"]);
        let Command::Audit(args) = &cli.command else { panic!("not audit") };
        assert_eq!((args.settle_secs, args.job.image.as_str()), (5, "reg/tools:1"));
        assert_eq!(args.job.timeout, Duration::from_secs(300));

        let cli = parse(&["kubectl-cloudmart", "dlq", "list", "--topic", "order-events"]);
        let Command::Dlq(DlqArgs { command: DlqCommand::List { topic }, .. }) = &cli.command else {
            panic!("not dlq list")
        };
        assert_eq!(topic, &["order-events"]);
        let cli = parse(&["kubectl-cloudmart", "dlq", "replay", "--topic", "delivery-events", "--offset", "0:12"]);
        let Command::Dlq(DlqArgs { command: DlqCommand::Replay { offsets, all, .. }, .. }) = &cli.command else {
            panic!("not dlq replay")
        };
        assert_eq!((offsets.as_slice(), *all), (&["0:12".to_owned()][..], false));

        let refused = |argv: &[&str]| Cli::try_parse_from(argv).unwrap_err().to_string();
        assert!(refused(&["kubectl-cloudmart", "dlq", "list", "--topic", "orders"]).contains("order-events"));
        assert!(
            refused(&["kubectl-cloudmart", "dlq", "replay", "--topic", "order-events", "--offset", "x:1"])
                .contains("partition `x` is not a number")
        );
        assert!(refused(&["kubectl-cloudmart", "dlq", "replay", "--topic", "order-events"]).contains("--offset"));
    }
}
