//! `cloudmart-load`: the flash-sale load generator (see `cloudmart_e2e::load`).
//!
//! Progress goes to stderr every few seconds; the final report goes to stderr as a table
//! and to stdout as one line `CLOUDMART_LOAD_REPORT {json}` (what `kubectl cloudmart load`
//! reads from the pod's log), and to `--report <file>` when asked.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use cloudmart_e2e::load::{LoadOptions, parse_duration, run};

#[derive(Parser, Debug)]
#[command(
    name = "cloudmart-load",
    version,
    about = "Flash-sale load generator: creates a sale and sends Purchase calls at a fixed rate",
    after_help = "Example: cloudmart-load --timesale-endpoint http://127.0.0.1:50053 --sale-rps 300 --duration 2m"
)]
struct Args {
    /// Time-sale service gRPC endpoint.
    #[arg(long, env = "TIMESALE_ENDPOINT", default_value = "http://127.0.0.1:50053")]
    timesale_endpoint: String,
    /// Purchase attempts per second (open loop); 0 = closed loop, as fast as --concurrency allows.
    #[arg(long, env = "SALE_RPS", default_value_t = 200)]
    sale_rps: u32,
    /// How long to send (e.g. 90s, 2m).
    #[arg(long, env = "DURATION", default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Calls in flight at most; a call due while all are busy is counted as not sent.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    concurrency: u32,
    /// HTTP/2 connections to spread the calls over (reaches several replicas behind a Service).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    connections: u32,
    /// Stock of the sale the run creates.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(i32).range(1..))]
    stock: i32,
    /// Per-customer limit of the sale the run creates.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    per_customer_limit: i32,
    /// Distinct customers (attempts cycle through them).
    #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    customers: u64,
    /// Buy from this existing sale instead of creating one.
    #[arg(long)]
    sale_id: Option<String>,
    /// Deadline of one call.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    call_timeout: Duration,
    /// How often to print a progress line.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    progress_every: Duration,
    /// Also write the JSON report to this file.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let opts = LoadOptions {
        timesale_endpoint: args.timesale_endpoint,
        sale_rps: args.sale_rps,
        duration: args.duration,
        concurrency: args.concurrency as usize,
        connections: args.connections as usize,
        stock: args.stock,
        per_customer_limit: args.per_customer_limit,
        customers: args.customers,
        sale_id: args.sale_id,
        call_timeout: args.call_timeout,
        progress_every: args.progress_every,
    };
    let run = run(&opts, |line| eprintln!("{line}"));
    let report = tokio::select! {
        r = run => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("cloudmart-load: interrupted");
            return ExitCode::from(130);
        }
    };
    match report {
        Ok(report) => {
            eprint!("{}", report.table());
            println!("{}", report.line());
            if let Some(path) = args.report {
                let json = serde_json::to_string_pretty(&report).expect("a report serializes");
                if let Err(e) = std::fs::write(&path, json) {
                    eprintln!("cloudmart-load: cannot write the report to {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cloudmart-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}
