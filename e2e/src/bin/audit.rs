//! `cloudmart-audit`: checks the system's invariants against the live databases and
//! exits 0 only when all hold. Run it after a test, a load run or a chaos experiment.
//!
//! - every order reached a terminal state (none PENDING for longer than `--settle-secs`);
//! - each order has at most one live delivery; a CONFIRMED order has a SCHEDULED one and
//!   a CANCELLED order none;
//! - per sale: `remaining_stock >= 0` and `remaining_stock + Σ non-cancelled purchases == total_stock`;
//! - no customer holds more than a sale's `per_customer_limit`;
//! - every outbox row is published.
//!
//! `cloudmart-audit dlq list|replay` inspects the dead-letter topics and re-publishes
//! chosen records to their topic after a fix (see [`dlq`]). Without a subcommand it runs
//! the audit above, with the same flags as always.

use std::collections::HashMap;

use clap::{Parser, Subcommand};
use sea_orm::{ConnectionTrait, DatabaseConnection, QueryResult, Statement};

#[path = "audit/dlq.rs"]
mod dlq;

#[derive(Parser, Debug)]
#[command(
    name = "cloudmart-audit",
    version,
    about = "Check cloudmart's invariants against the live databases (exit 0 = all hold); \
             `dlq list` / `dlq replay` inspect and replay the dead-letter topics",
    after_help = "Without a subcommand the invariants are audited (the flags above). \
                  `cloudmart-audit dlq --help` describes the dead-letter commands."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    audit: Args,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Dead-letter topics (`<topic>.dlq`): list what sits there, replay records after a fix.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
}

/// The invariant audit's flags (the default command).
#[derive(clap::Args, Debug)]
struct Args {
    /// Order service database URL.
    #[arg(long, env = "AUDIT_ORDER_DB")]
    order_db: Option<String>,
    /// Delivery service database URL.
    #[arg(long, env = "AUDIT_DELIVERY_DB")]
    delivery_db: Option<String>,
    /// Time-sale service database URL.
    #[arg(long, env = "AUDIT_TIMESALE_DB")]
    timesale_db: Option<String>,
    /// Orders younger than this may still be PENDING (the saga is in flight).
    #[arg(long, default_value_t = 60)]
    settle_secs: i64,
}

async fn rows(db: &DatabaseConnection, sql: &str) -> anyhow::Result<Vec<QueryResult>> {
    Ok(db.query_all_raw(Statement::from_string(db.get_database_backend(), sql.to_owned())).await?)
}

async fn outbox_backlog(db: &DatabaseConnection) -> anyhow::Result<i64> {
    let r = rows(db, "SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL").await?;
    Ok(r.first().map(|r| r.try_get::<i64>("", "n")).transpose()?.unwrap_or(0))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Dlq(cmd)) = cli.command {
        return match dlq::run(cmd).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cloudmart-audit dlq: {e:#}");
                std::process::ExitCode::from(2)
            }
        };
    }
    match run(cli.audit).await {
        Ok(0) => {
            println!("audit: all invariants hold");
            std::process::ExitCode::SUCCESS
        }
        Ok(n) => {
            println!("audit: {n} violation(s)");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("audit failed to run: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<usize> {
    anyhow::ensure!(
        args.order_db.is_some() || args.delivery_db.is_some() || args.timesale_db.is_some(),
        "give at least one of --order-db, --delivery-db, --timesale-db"
    );
    let mut violations = Vec::new();
    let connect = |u: &Option<String>| {
        let u = u.clone();
        async move {
            match u {
                // retried for a while: in a fresh pod (`kubectl cloudmart audit`) the
                // NetworkPolicy enforcer may not admit the first packets yet
                Some(u) => {
                    cloudmart_platform::db::connect_with_retry(&u, std::time::Duration::from_secs(30)).await.map(Some)
                }
                None => Ok(None),
            }
        }
    };
    let order = connect(&args.order_db).await?;
    let delivery = connect(&args.delivery_db).await?;
    let timesale = connect(&args.timesale_db).await?;

    let mut order_status: HashMap<String, String> = HashMap::new();
    if let Some(db) = &order {
        let cutoff = chrono::Utc::now() - chrono::Duration::seconds(args.settle_secs);
        for r in rows(db, "SELECT order_id, status, created_at FROM orders").await? {
            let id: String = r.try_get("", "order_id")?;
            let status: String = r.try_get("", "status")?;
            let created: chrono::DateTime<chrono::Utc> = r.try_get("", "created_at")?;
            if status == "PENDING" && created < cutoff {
                violations.push(format!("order {id} still PENDING after {}s", args.settle_secs));
            }
            order_status.insert(id, status);
        }
        let n = outbox_backlog(db).await?;
        if n > 0 {
            violations.push(format!("order outbox: {n} unpublished row(s)"));
        }
        println!("orders: {} checked", order_status.len());
    }
    if let Some(db) = &delivery {
        let mut live: HashMap<String, usize> = HashMap::new();
        let mut statuses: HashMap<String, String> = HashMap::new();
        for r in rows(db, "SELECT order_id, status FROM deliveries").await? {
            let id: String = r.try_get("", "order_id")?;
            let status: String = r.try_get("", "status")?;
            if status == "SCHEDULED" {
                *live.entry(id.clone()).or_default() += 1;
            }
            statuses.insert(id, status);
        }
        for (id, n) in &live {
            if *n > 1 {
                violations.push(format!("order {id} has {n} live deliveries"));
            }
        }
        for (id, status) in &order_status {
            let d = statuses.get(id).map(String::as_str);
            match (status.as_str(), d) {
                ("CONFIRMED", Some("SCHEDULED")) | ("PENDING", _) => {}
                ("CONFIRMED", other) => violations.push(format!("order {id} CONFIRMED but its delivery is {other:?}")),
                ("CANCELLED", Some("SCHEDULED")) => {
                    violations.push(format!("order {id} CANCELLED but its delivery is SCHEDULED"))
                }
                _ => {}
            }
        }
        let n = outbox_backlog(db).await?;
        if n > 0 {
            violations.push(format!("delivery outbox: {n} unpublished row(s)"));
        }
        println!("deliveries: {} checked", statuses.len());
    }
    if let Some(db) = &timesale {
        let sales = rows(
            db,
            "SELECT s.sale_id, s.total_stock, s.remaining_stock, s.per_customer_limit, \
             COALESCE((SELECT SUM(p.quantity) FROM purchases p WHERE p.sale_id = s.sale_id AND p.status <> 'CANCELLED'), 0) AS held \
             FROM sales s",
        )
        .await?;
        for r in &sales {
            let id: String = r.try_get("", "sale_id")?;
            let total: i32 = r.try_get("", "total_stock")?;
            let remaining: i32 = r.try_get("", "remaining_stock")?;
            let held: i64 = r.try_get("", "held")?;
            if remaining < 0 {
                violations.push(format!("sale {id}: remaining_stock {remaining} < 0"));
            }
            if i64::from(remaining) + held != i64::from(total) {
                violations.push(format!("sale {id}: remaining {remaining} + held {held} != total {total}"));
            }
        }
        for r in rows(
            db,
            "SELECT p.sale_id, p.customer_id, SUM(p.quantity) AS held, MAX(s.per_customer_limit) AS lim \
             FROM purchases p JOIN sales s ON s.sale_id = p.sale_id WHERE p.status <> 'CANCELLED' \
             GROUP BY p.sale_id, p.customer_id HAVING SUM(p.quantity) > MAX(s.per_customer_limit)",
        )
        .await?
        {
            let sale: String = r.try_get("", "sale_id")?;
            let customer: String = r.try_get("", "customer_id")?;
            violations.push(format!("sale {sale}: customer {customer} exceeds the per-customer limit"));
        }
        let n = outbox_backlog(db).await?;
        if n > 0 {
            violations.push(format!("timesale outbox: {n} unpublished row(s)"));
        }
        println!("sales: {} checked", sales.len());
    }
    for v in &violations {
        println!("VIOLATION: {v}");
    }
    Ok(violations.len())
}
