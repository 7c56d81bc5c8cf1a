//! `cloudmart-bench` (`make bench`): local benchmarks with figures printed and written
//! to files. Timings live here, never in tests.
//!
//! `run`: every figure of the report (P1…P5, see `cloudmart_e2e::bench`), each beside its
//! reference, into `target/bench/report.{json,md}`. `readme`: copies `report.md` into
//! README.md's generated block and `docs/bench/report.md` (or `--check`s that they agree).
//!
//! `hot-sale`: purchases/s on ONE hot sale row for each reservation mode (`batched`,
//! `naive`), each on a fresh database of the same PostgreSQL server, through the real
//! gRPC API of an in-process time-sale service (embedded broker for its outbox relay).

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand, ValueEnum};
use cloudmart_platform::{kafka::EmbeddedBroker, proto::contract::topics};
use cloudmart_proto::{
    order::v1::ShippingAddress,
    timesale::v1::{self as pb, time_sale_service_client::TimeSaleServiceClient},
};
use cloudmart_timesale::{Application, Config, ReservationMode};
use futures::{StreamExt, stream};
use sea_orm::{ConnectionTrait, Database};

#[derive(Parser)]
#[command(name = "cloudmart-bench", version, about = "cloudmart benchmarks (figures printed and written to files)")]
struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Every figure (P1…P5) beside its reference: target/bench/report.{json,md}.
    Run(RunArgs),
    /// README.md's benchmark table from report.md (or --check that they agree).
    Readme(ReadmeArgs),
    /// Purchases/s on one hot sale: batched vs naive reservation.
    HotSale {
        /// Admin URL of the PostgreSQL server; a fresh database is created per mode.
        #[arg(
            long,
            env = "BENCH_DATABASE_URL",
            default_value = "postgres://postgres:postgres@127.0.0.1:5432/postgres"
        )]
        database_url: String,
        /// Purchases measured per mode (after a warm-up of 200).
        #[arg(long, default_value_t = 4000)]
        purchases: usize,
        /// Purchases in flight at once.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Where to write the report (Markdown and JSON).
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Admin URL of the PostgreSQL server; every figure creates and drops its databases.
    #[arg(long, env = "BENCH_DATABASE_URL", default_value = "postgres://postgres:postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    /// Apache Kafka bootstrap servers; unset: librdkafka's in-process mock cluster.
    #[arg(long, env = "BENCH_KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// The broker's name in the report (e.g. "Apache Kafka 4.4.0").
    #[arg(long, env = "BENCH_BROKER_NAME")]
    broker_name: Option<String>,
    /// Directory of the service release binaries (P5); default: this binary's directory.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where to write report.{json,md} and the working files.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Short runs (CI): figures are less stable.
    #[arg(long)]
    quick: bool,
    /// Only these figures (p1,p2,p3,p4,p5).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// P1: purchases in flight (gRPC and Redis alike).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// P2: callers placing orders, and pgbench's client count.
    #[arg(long, default_value_t = 16)]
    clients: usize,
}

#[derive(clap::Args)]
struct ReadmeArgs {
    /// The generated report.
    #[arg(long, default_value = "target/bench/report.md")]
    report: PathBuf,
    /// The README whose generated block is replaced.
    #[arg(long, default_value = "README.md")]
    readme: PathBuf,
    /// The committed copy of the report the README check compares against.
    #[arg(long, default_value = "docs/bench/report.md")]
    committed: PathBuf,
    /// Compare README.md with the committed copy instead of writing.
    #[arg(long)]
    check: bool,
}

#[derive(Debug, Clone)]
struct Figures {
    mode: &'static str,
    seconds: f64,
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn database_url(admin: &str, name: &str) -> String {
    let (base, query) = admin.split_once('?').map(|(b, q)| (b, Some(q))).unwrap_or((admin, None));
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = base[scheme_end..].find('/').map(|i| &base[..scheme_end + i]).unwrap_or(base);
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

fn buy(sale_id: &str, i: usize) -> pb::PurchaseRequest {
    pb::PurchaseRequest {
        sale_id: sale_id.to_owned(),
        customer_id: format!("bench-{i}"),
        quantity: 1,
        shipping_address: Some(ShippingAddress {
            line1: "1 Main St".into(),
            city: "Seoul".into(),
            postal_code: "04524".into(),
            country: "KR".into(),
        }),
        idempotency_key: String::new(),
    }
}

async fn hot_sale(admin: &str, mode: ReservationMode, n: usize, concurrency: usize) -> anyhow::Result<Figures> {
    let name =
        format!("cm_bench_{}_{}", format!("{mode:?}").to_lowercase(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let conn = Database::connect(admin)
        .await
        .with_context(|| format!("cannot reach PostgreSQL at {admin} (start it, or pass --database-url)"))?;
    conn.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await?;
    let broker = EmbeddedBroker::start("", 3, &topics::ALL)?;
    let mode_flag = mode.to_possible_value().context("a reservation mode without a flag value")?;
    let config = Config::try_parse_from([
        "cloudmart-timesale".to_owned(),
        "--grpc-addr=127.0.0.1:0".to_owned(),
        "--metrics-addr=127.0.0.1:0".to_owned(),
        format!("--database-url={}", database_url(admin, &name)),
        format!("--kafka-brokers={}", broker.bootstrap_servers()),
        "--kafka-create-topics=false".to_owned(),
        format!("--reservation={}", mode_flag.get_name()),
        "--grpc-concurrency-limit=8192".to_owned(),
        "--grpc-request-timeout-ms=120000".to_owned(),
    ])?;
    let app = cloudmart_platform::app::build::<Application>(config).await?;
    let addr = app.grpc_addr();
    let token = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(token.clone().cancelled_owned()));

    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(TimeSaleServiceClient::connect(format!("http://{addr}")).await?);
    }
    let now = Utc::now().timestamp();
    let sale = clients[0]
        .clone()
        .create_sale(pb::CreateSaleRequest {
            sku: "HOT".into(),
            title: "Hot sale".into(),
            price_cents: 100,
            total_stock: (n + 1000) as i32,
            per_customer_limit: 1,
            starts_at: Some(prost_types::Timestamp { seconds: now - 60, nanos: 0 }),
            ends_at: Some(prost_types::Timestamp { seconds: now + 3600, nanos: 0 }),
        })
        .await?
        .into_inner();
    let run = |range: std::ops::Range<usize>| {
        let clients = clients.clone();
        let sale_id = sale.sale_id.clone();
        async move {
            stream::iter(range)
                .map(|i| {
                    let mut c = clients[i % clients.len()].clone();
                    let req = buy(&sale_id, i);
                    async move {
                        let t = std::time::Instant::now();
                        c.purchase(req).await.map(|_| t.elapsed())
                    }
                })
                .buffer_unordered(concurrency)
                .collect::<Vec<_>>()
                .await
        }
    };
    for r in run(n..n + 200).await {
        r?;
    }
    let started = std::time::Instant::now();
    let results = run(0..n).await;
    let seconds = started.elapsed().as_secs_f64();
    let mut lat: Vec<Duration> = results.into_iter().collect::<Result<_, _>>()?;
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    let figures = Figures {
        mode: if mode == ReservationMode::Batched { "batched" } else { "naive" },
        seconds,
        per_sec: n as f64 / seconds,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    };
    let left = clients[0].clone().get_sale(pb::GetSaleRequest { sale_id: sale.sale_id }).await?.into_inner();
    anyhow::ensure!(left.remaining_stock as usize == 1000 - 200, "stock accounting is off: {left:?}");
    token.cancel();
    task.await??;
    drop(broker);
    conn.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await.ok();
    Ok(figures)
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} CPU(s), {model}")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().bench {
        Bench::Run(a) => {
            let bin_dir = match a.bin_dir {
                Some(d) => d,
                None => std::env::current_exe()?.parent().context("no directory of cloudmart-bench")?.to_owned(),
            };
            let opts = cloudmart_e2e::bench::Options {
                database_url: a.database_url,
                kafka_brokers: a.kafka_brokers.filter(|b| !b.is_empty()),
                broker_name: a.broker_name.filter(|b| !b.is_empty()),
                bin_dir,
                out: a.out.clone(),
                quick: a.quick,
                only: a.only,
                concurrency: a.concurrency,
                clients: a.clients,
            };
            let report = cloudmart_e2e::bench::run(opts).await?;
            println!("{}", report.markdown());
            eprintln!("written to {}/report.{{json,md}}", a.out.display());
        }
        Bench::Readme(a) => cloudmart_e2e::bench::readme(&a.report, &a.readme, &a.committed, a.check)?,
        Bench::HotSale { database_url, purchases, concurrency, out } => {
            let mut rows = Vec::new();
            for mode in [ReservationMode::Batched, ReservationMode::Naive] {
                eprintln!("hot-sale: {mode:?}, {purchases} purchases, {concurrency} in flight …");
                rows.push(hot_sale(&database_url, mode, purchases, concurrency).await?);
            }
            let ratio = rows[0].per_sec / rows[1].per_sec;
            let mut md = format!(
                "## hot-sale ({})\n\nOne sale, {purchases} purchases by distinct customers, {concurrency} in flight over 4 gRPC \
                 connections, through the time-sale gRPC API on PostgreSQL ({}).\n\n| mode | purchases/s | p50 ms | p99 ms | seconds |\n|---|---:|---:|---:|---:|\n",
                Utc::now().format("%Y-%m-%d"),
                machine()
            );
            for r in &rows {
                md.push_str(&format!(
                    "| {} | {:.0} | {:.1} | {:.1} | {:.2} |\n",
                    r.mode, r.per_sec, r.p50_ms, r.p99_ms, r.seconds
                ));
            }
            md.push_str(&format!("\nbatched / naive = **{ratio:.1}×**\n"));
            println!("{md}");
            std::fs::create_dir_all(&out)?;
            std::fs::write(out.join("hot-sale.md"), &md)?;
            let json = format!(
                "{{\"machine\":{:?},\"purchases\":{purchases},\"concurrency\":{concurrency},\"ratio\":{ratio:.2},\"modes\":[{}]}}\n",
                machine(),
                rows.iter()
                    .map(|r| format!(
                        "{{\"mode\":\"{}\",\"per_sec\":{:.1},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"seconds\":{:.3}}}",
                        r.mode, r.per_sec, r.p50_ms, r.p99_ms, r.seconds
                    ))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            std::fs::write(out.join("hot-sale.json"), json)?;
            eprintln!("written to {}/hot-sale.{{md,json}}", out.display());
        }
    }
    Ok(())
}
