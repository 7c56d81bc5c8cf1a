//! `cloudmart-bench` (`make bench`): local benchmarks with figures printed and written
//! to files. Timings live here, never in tests.
//!
//! `run`: every figure of the report (P1…P5, see `cloudmart_e2e::bench`), each beside its
//! reference, into `target/bench/report.{json,md}`. `readme`: copies `report.md` into
//! README.md's generated block and `docs/bench/report.md` (or `--check`s that they agree).
//! `run --only p1` is the hot sale alone (batched vs naive vs Redis).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

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
}

#[derive(clap::Args)]
struct RunArgs {
    /// Admin URL of the PostgreSQL server; every figure creates and drops its databases.
    /// Its query (e.g. `sslmode`) carries over to every database, service and pgbench.
    /// Plaintext by default, as the chart's PostgreSQL serves it.
    #[arg(
        long,
        env = "BENCH_DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable"
    )]
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
    }
    Ok(())
}
