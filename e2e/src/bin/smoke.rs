//! `cloudmart-smoke`: sends one order (or one flash-sale purchase) through the saga and
//! waits for a terminal state. Used by `helm test` in the cluster, by `make rehearse` from
//! a client container, and by `make test` against the local system.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use cloudmart_e2e::{PurchaseOutcome, SmokeOutcome, smoke_order, smoke_purchase};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Scenario {
    /// PlaceOrder on the order service, then poll the order.
    Order,
    /// CreateSale + Purchase on the time-sale service, then poll the purchase until the
    /// order service has made it an order.
    Purchase,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Expect {
    /// Any final state: CONFIRMED or CANCELLED (an order), ORDERED or CANCELLED (a purchase).
    Terminal,
    /// The order was CONFIRMED.
    Confirmed,
    /// The order or the purchase was CANCELLED.
    Cancelled,
    /// The purchase became an order.
    Ordered,
}

#[derive(Parser, Debug)]
#[command(
    name = "cloudmart-smoke",
    version,
    about = "Place one order (or buy once in a flash sale) and wait until the saga settles it"
)]
struct Args {
    /// What to send.
    #[arg(long, value_enum, default_value = "order")]
    scenario: Scenario,
    /// Order service gRPC endpoint (scenario `order`).
    #[arg(long, env = "ORDER_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    order_endpoint: String,
    /// Time-sale service gRPC endpoint (scenario `purchase`).
    #[arg(long, env = "TIMESALE_ENDPOINT", default_value = "http://127.0.0.1:50053")]
    timesale_endpoint: String,
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
    /// With `--expect cancelled`: the cancel reason the order must carry (e.g. DELIVERY_FAILED).
    #[arg(long, value_name = "REASON")]
    expect_reason: Option<String>,
}

impl Args {
    /// Refuses combinations that could never succeed, before anything is sent.
    fn validate(&self) -> Result<(), String> {
        let allowed: &[Expect] = match self.scenario {
            Scenario::Order => &[Expect::Terminal, Expect::Confirmed, Expect::Cancelled],
            Scenario::Purchase => &[Expect::Terminal, Expect::Ordered, Expect::Cancelled],
        };
        if !allowed.contains(&self.expect) {
            return Err(
                format!("--expect {:?} does not apply to --scenario {:?}", self.expect, self.scenario).to_lowercase()
            );
        }
        if self.expect_reason.is_some() && (self.scenario, self.expect) != (Scenario::Order, Expect::Cancelled) {
            return Err("--expect-reason needs --scenario order --expect cancelled".into());
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let timeout = Duration::from_secs(args.timeout_secs);
    let verdict = match args.scenario {
        Scenario::Order => match smoke_order(&args.order_endpoint, &args.postal_code, &args.country, timeout).await {
            Ok(SmokeOutcome { order_id, status, cancel_reason }) => {
                println!(
                    "order {order_id}: {status}{}",
                    if cancel_reason.is_empty() { String::new() } else { format!(" ({cancel_reason})") }
                );
                let status_ok = match args.expect {
                    Expect::Terminal => true,
                    Expect::Confirmed => status == "CONFIRMED",
                    Expect::Cancelled | Expect::Ordered => status == "CANCELLED",
                };
                match &args.expect_reason {
                    Some(want) if status_ok && !cancel_reason.starts_with(want.as_str()) => {
                        Err(format!("expected cancel reason {want}, got {cancel_reason:?}"))
                    }
                    _ if status_ok => Ok(()),
                    _ => Err(format!("expected {:?}, got {status}", args.expect)),
                }
            }
            Err(e) => Err(format!("{e:#}")),
        },
        Scenario::Purchase => match smoke_purchase(&args.timesale_endpoint, timeout).await {
            Ok(PurchaseOutcome { sale_id, purchase_id, status, order_id }) => {
                println!("purchase {purchase_id} (sale {sale_id}): {status} order {order_id}");
                match args.expect {
                    Expect::Terminal => Ok(()),
                    Expect::Ordered if status == "ORDERED" && !order_id.is_empty() => Ok(()),
                    Expect::Cancelled if status == "CANCELLED" => Ok(()),
                    want => Err(format!("expected {want:?}, got {status}")),
                }
            }
            Err(e) => Err(format!("{e:#}")),
        },
    };
    match verdict {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smoke test failed: {e}");
            ExitCode::FAILURE
        }
    }
}
