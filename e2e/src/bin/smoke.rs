//! `cloudmart-smoke`: sends one order through the saga and waits for a terminal state.
//! Used by `helm test` in the cluster and by `make test` against the local system.

use std::time::Duration;

use clap::{Parser, ValueEnum};
use cloudmart_e2e::{SmokeOutcome, smoke_order};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Expect {
    /// CONFIRMED or CANCELLED.
    Terminal,
    Confirmed,
    Cancelled,
}

#[derive(Parser, Debug)]
#[command(name = "cloudmart-smoke", version, about = "Place one order and wait until the saga settles it")]
struct Args {
    /// Order service gRPC endpoint.
    #[arg(long, env = "ORDER_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    order_endpoint: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
    /// Shipping postal code (use a fault-injected one to see the compensation).
    #[arg(long, default_value = "04524")]
    postal_code: String,
    /// Shipping country.
    #[arg(long, default_value = "KR")]
    country: String,
    /// Which final state counts as success.
    #[arg(long, value_enum, default_value = "terminal")]
    expect: Expect,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match smoke_order(&args.order_endpoint, &args.postal_code, &args.country, Duration::from_secs(args.timeout_secs))
        .await
    {
        Ok(SmokeOutcome { order_id, status, cancel_reason }) => {
            println!(
                "order {order_id}: {status}{}",
                if cancel_reason.is_empty() { String::new() } else { format!(" ({cancel_reason})") }
            );
            let ok = match args.expect {
                Expect::Terminal => true,
                Expect::Confirmed => status == "CONFIRMED",
                Expect::Cancelled => status == "CANCELLED",
            };
            if ok {
                std::process::ExitCode::SUCCESS
            } else {
                eprintln!("expected {:?}", args.expect);
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("smoke test failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
