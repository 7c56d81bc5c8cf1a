//! `cloudmart-bench run` (`make bench`): every figure of the benchmark report in one run,
//! each beside a reference measured in the same run on the same machine.
//!
//! | figure | what | reference |
//! |---|---|---|
//! | P1 ([`p1_hot_sale`]) | purchases/s on one hot sale, batched reservation | naive reservation (same PostgreSQL); a Redis stock counter decremented by a Lua script |
//! | P2 ([`p2_intake`]) | `PlaceOrder`/s (quote + order row + outbox row) | `pgbench` running the same SQL with the same client count |
//! | P3 ([`p3_saga`]) | `PlaceOrder` accepted → `CONFIRMED` observed, at 50 % of P2 | one Kafka hop (produce with acks=all → consume) on the same broker |
//! | P4 ([`p4_relay`]) | events/s draining a pre-filled outbox to Kafka (acks=all) | the same messages sent by the same producer straight from memory |
//! | P5 ([`p5_rest`]) | idle RSS, start → SERVING, image size per service | `redis-server` started the same way |
//!
//! Figures of `make bench-scale` (Docker rehearsal) join the report when their JSON files
//! exist ([`rehearsal`]). A figure whose tool or backend is missing is reported as not
//! measured, with the reason, and the run goes on. Timings are figures for the report,
//! never assertions: the machine may be shared and noisy.

mod p1_hot_sale;
mod p2_intake;
mod p3_saga;
mod p4_relay;
mod p5_rest;
mod redis;
mod rehearsal;
pub mod report;
mod warmup;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context;
use cloudmart_platform::{app::App, config::KafkaArgs, kafka::EmbeddedBroker};
use report::{Figure, Machine, Report};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use tokio_util::sync::CancellationToken;

/// What to run and against which backends.
#[derive(Debug, Clone)]
pub struct Options {
    /// Admin URL of the PostgreSQL server; every figure creates (and drops) its databases.
    pub database_url: String,
    /// Apache Kafka bootstrap servers; `None`: librdkafka's in-process mock cluster (P4
    /// and the saga's Kafka hops are then not representative, and say so).
    pub kafka_brokers: Option<String>,
    /// How the broker calls itself in the report (`Apache Kafka 4.4.0`).
    pub broker_name: Option<String>,
    /// Directory of the service release binaries (`cloudmart-order`, …) for P5.
    pub bin_dir: PathBuf,
    /// Where `report.{json,md}` and the working files go.
    pub out: PathBuf,
    /// Short runs (CI): fewer purchases, seconds instead of tens of seconds.
    pub quick: bool,
    /// Figures to run (`p1` … `p5`); empty: all.
    pub only: Vec<String>,
    /// Purchases in flight in P1 (gRPC and Redis alike).
    pub concurrency: usize,
    /// Clients of P2 (gRPC callers and pgbench connections alike).
    pub clients: usize,
}

/// Run lengths, full or `--quick`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub hot_sale_purchases: usize,
    pub redis_purchases: usize,
    pub intake: Duration,
    pub saga: Duration,
    pub outbox_rows: usize,
    pub idle: Duration,
}

impl Sizes {
    fn of(quick: bool) -> Self {
        if quick {
            Sizes {
                hot_sale_purchases: 1000,
                redis_purchases: 20_000,
                intake: Duration::from_secs(5),
                saga: Duration::from_secs(5),
                outbox_rows: 100_000,
                idle: Duration::from_secs(2),
            }
        } else {
            Sizes {
                hot_sale_purchases: 4000,
                redis_purchases: 100_000,
                intake: Duration::from_secs(20),
                saga: Duration::from_secs(20),
                outbox_rows: 100_000,
                idle: Duration::from_secs(5),
            }
        }
    }
}

/// Shared by the figures of one run.
pub(crate) struct Ctx {
    pub opts: Options,
    pub sizes: Sizes,
}

impl Ctx {
    /// `<bin_dir>/<name>`, if it exists.
    pub fn binary(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.opts.bin_dir.join(name);
        anyhow::ensure!(
            path.is_file(),
            "{} not found: build the services first (cargo build --release --bins), or pass --bin-dir",
            path.display()
        );
        Ok(path)
    }
}

/// Runs the figures, writes `report.{json,md}` into `opts.out` and returns the report.
pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let ctx = Ctx { sizes: Sizes::of(opts.quick), opts };
    let wants = |p: &str| ctx.opts.only.is_empty() || ctx.opts.only.iter().any(|o| o.eq_ignore_ascii_case(p));
    std::fs::create_dir_all(&ctx.opts.out).with_context(|| format!("creating {}", ctx.opts.out.display()))?;
    let mut machine = machine(&ctx).await;
    eprintln!(
        "bench: backends: {}",
        machine.backends.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
    );

    if ["p1", "p2", "p3", "p4"].into_iter().any(wants) {
        warmup::broker(&ctx).await;
    }
    let mut figures: Vec<Figure> = Vec::new();
    if wants("p1") {
        figures.extend(p1_hot_sale::run(&ctx).await);
    }
    if wants("p2") || wants("p3") {
        figures.extend(p2_intake::run(&ctx, wants("p2"), wants("p3")).await);
    }
    if wants("p4") {
        figures.extend(p4_relay::run(&ctx).await);
    }
    if wants("p5") {
        figures.extend(p5_rest::run(&ctx).await);
    }
    figures.extend(rehearsal::figures(&ctx.opts.out));

    machine.duration_secs = started.elapsed().as_secs_f64();
    machine.started_at = started_at;
    let report = Report { machine, figures };
    report.write(&ctx.opts.out)?;
    Ok(report)
}

/// The one place that starts librdkafka's mock cluster, with the contract's topics.
fn embedded_broker(prefix: &str) -> anyhow::Result<EmbeddedBroker> {
    EmbeddedBroker::start(prefix, 3, contract_topics())
}

/// The contract's topics, with their dead-letter topics.
pub(crate) fn contract_topics() -> &'static [&'static str] {
    &cloudmart_platform::proto::contract::topics::ALL
}

/// A topic namespace for one figure: a fresh prefix on the real broker, or a mock cluster
/// of its own.
pub(crate) struct Topics {
    pub brokers: String,
    pub prefix: String,
    embedded: Option<EmbeddedBroker>,
}

impl Topics {
    pub fn new(ctx: &Ctx, label: &str) -> anyhow::Result<Self> {
        let prefix = format!("bench-{label}-{}-", short_id());
        match &ctx.opts.kafka_brokers {
            Some(b) => Ok(Self { brokers: b.clone(), prefix, embedded: None }),
            None => {
                let broker = embedded_broker(&prefix)?;
                Ok(Self { brokers: broker.bootstrap_servers().to_owned(), prefix, embedded: Some(broker) })
            }
        }
    }

    /// `--kafka-*` flags of a service in this namespace.
    pub fn flags(&self, group: &str) -> Vec<String> {
        let mut f = vec![
            format!("--kafka-brokers={}", self.brokers),
            format!("--kafka-topic-prefix={}", self.prefix),
            format!("--kafka-group-id={}{group}", self.prefix),
        ];
        if self.embedded.is_some() {
            // The mock cluster has the topics already and refuses CreateTopics.
            f.push("--kafka-create-topics=false".into());
        }
        f
    }

    /// The same as [`KafkaArgs`] for the platform's clients.
    pub fn args(&self) -> KafkaArgs {
        let mut k = KafkaArgs::new(self.brokers.clone());
        k.topic_prefix = self.prefix.clone();
        k.create_topics = self.embedded.is_none();
        k
    }

    /// Deletes this namespace's topics on the real broker (the mock cluster just stops).
    pub async fn delete(self, logical: &[&str]) {
        if self.embedded.is_some() {
            return;
        }
        use rdkafka::admin::{AdminClient, AdminOptions};
        let admin: Result<AdminClient<rdkafka::client::DefaultClientContext>, _> =
            rdkafka::ClientConfig::new().set("bootstrap.servers", &self.brokers).create();
        if let Ok(admin) = admin {
            let names: Vec<String> = logical.iter().map(|t| format!("{}{t}", self.prefix)).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
            let _ = tokio::time::timeout(Duration::from_secs(15), admin.delete_topics(&refs, &opts)).await;
        }
    }
}

pub(crate) fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// A database of its own on the PostgreSQL server, dropped by [`TempDb::drop`].
pub(crate) struct TempDb {
    pub url: String,
    name: String,
    admin: String,
}

impl TempDb {
    pub async fn create(admin: &str, label: &str) -> anyhow::Result<Self> {
        let name = format!("cm_bench_{label}_{}", short_id());
        let conn = Database::connect(admin).await.with_context(|| {
            format!("cannot reach PostgreSQL at {} (start it, or pass --database-url)", redact(admin))
        })?;
        conn.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await?;
        conn.close().await.ok();
        Ok(Self { url: database_url(admin, &name), name, admin: admin.to_owned() })
    }

    pub async fn drop(self) {
        if let Ok(conn) = Database::connect(self.admin.as_str()).await {
            let _ = conn.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)).await;
            conn.close().await.ok();
        }
    }
}

/// `admin` with its database name replaced by `name`.
pub(crate) fn database_url(admin: &str, name: &str) -> String {
    let (base, query) = admin.split_once('?').map(|(b, q)| (b, Some(q))).unwrap_or((admin, None));
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = base[scheme_end..].find('/').map(|i| &base[..scheme_end + i]).unwrap_or(base);
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

pub(crate) fn redact(url: &str) -> String {
    cloudmart_platform::db::redact(url)
}

/// A service built in-process, serving until [`Running::stop`].
pub(crate) struct Running {
    pub addr: SocketAddr,
    pub db: DatabaseConnection,
    token: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub fn start(app: App) -> Self {
        let addr = app.grpc_addr();
        let db = app.db().clone();
        let token = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(token.clone().cancelled_owned()));
        Self { addr, db, token, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.token.cancel();
        self.task.await?
    }
}

/// The `p`-quantile (0..=1) of sorted `values`.
pub(crate) fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// A free loopback port (bound, then released: another process could take it in
/// between, which on a bench machine it does not).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The first line of `cmd args` (stdout or stderr), or why it failed.
fn tool_version(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
    String::from_utf8_lossy(&text).lines().next().map(|l| l.trim().to_owned())
}

/// pgbench: on `PATH`, else the newest PostgreSQL's.
pub(crate) fn pgbench_path() -> Option<PathBuf> {
    if tool_version("pgbench", &["--version"]).is_some() {
        return Some(PathBuf::from("pgbench"));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin/pgbench")))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop()
}

async fn machine(ctx: &Ctx) -> Machine {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_mib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .unwrap_or(0);
    let postgresql = match Database::connect(ctx.opts.database_url.as_str()).await {
        Ok(conn) => {
            let v = conn
                .query_one_raw(sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    "SELECT current_setting('server_version') AS v",
                ))
                .await
                .ok()
                .flatten()
                .and_then(|row| row.try_get::<String>("", "v").ok());
            conn.close().await.ok();
            format!("PostgreSQL {}", v.unwrap_or_else(|| "(version unknown)".into()))
        }
        Err(e) => format!("PostgreSQL unreachable ({e})"),
    };
    let broker = match (&ctx.opts.kafka_brokers, &ctx.opts.broker_name) {
        (Some(b), Some(name)) => format!("{name} at {b}"),
        (Some(b), None) => format!("Kafka broker at {b}"),
        (None, _) => "librdkafka mock cluster (in-process; no Apache Kafka given)".into(),
    };
    let redis = tool_version("redis-server", &["--version"])
        .map(|v| v.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "redis-server not installed".into());
    let pgbench = pgbench_path()
        .and_then(|p| tool_version(&p.to_string_lossy(), &["--version"]))
        .unwrap_or_else(|| "pgbench not installed".into());
    let docker = match std::process::Command::new(std::env::var("DOCKER").unwrap_or_else(|_| "docker".into()))
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
    {
        Ok(o) if o.status.success() => format!("Docker {}", String::from_utf8_lossy(&o.stdout).trim()),
        Ok(_) => "no Docker engine answers".into(),
        Err(_) => "docker not installed".into(),
    };
    let rev = tool_version("git", &["rev-parse", "--short=10", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    let backends = vec![
        ("database".to_owned(), format!("{postgresql} at {}", redact(&ctx.opts.database_url))),
        ("kafka".to_owned(), broker.clone()),
        ("redis".to_owned(), format!("{redis}, started by the bench on loopback, no persistence")),
        ("pgbench".to_owned(), pgbench.clone()),
        ("docker".to_owned(), docker.clone()),
    ];
    Machine {
        cores,
        cpu,
        memory_mib,
        postgresql,
        broker,
        redis,
        pgbench,
        docker,
        git_revision: if dirty { format!("{rev}-dirty") } else { rev },
        backends,
        started_at: String::new(),
        duration_secs: 0.0,
        mode: if ctx.opts.quick { "quick".into() } else { String::new() },
    }
}

/// `Path` of `name` in the output directory.
pub(crate) fn out_file(ctx: &Ctx, name: &str) -> PathBuf {
    Path::new(&ctx.opts.out).join(name)
}

/// `cloudmart-bench readme`: copies `report` to `committed` and into the generated block
/// of `readme`; with `check`, only verifies that `readme`'s block is `committed`.
pub fn readme(report: &Path, readme: &Path, committed: &Path, check: bool) -> anyhow::Result<()> {
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    if check {
        return report::check_readme(&read(readme)?, &read(committed)?).map_err(anyhow::Error::msg);
    }
    let text = read(report)?;
    if let Some(dir) = committed.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(committed, &text).with_context(|| format!("writing {}", committed.display()))?;
    let updated = report::with_readme_block(&read(readme)?, &text);
    std::fs::write(readme, updated).with_context(|| format!("writing {}", readme.display()))?;
    eprintln!("{} and {}: benchmark table from {}", readme.display(), committed.display(), report.display());
    Ok(())
}
