//! `cloudmart-rehearse`: runs what `helm install` would run, as Docker containers, and
//! checks the shop on it. `make rehearse` calls it; see `--help`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::{Args, Parser, Subcommand};
use cloudmart_rehearse::chaos;
use cloudmart_rehearse::checks::{self, CheckOptions};
use cloudmart_rehearse::docker::{Docker, RunContext, run_args};
use cloudmart_rehearse::experiments::{self, Rush};
use cloudmart_rehearse::rehearsal::{self, Options, Rehearsal, new_run_id};

/// Exit code of a run stopped by Ctrl-C or SIGTERM (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Parser, Debug)]
#[command(
    name = "cloudmart-rehearse",
    version,
    about = "Run the Helm chart's rendered workloads as Docker containers and check the shop on them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    render: RenderArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Render, start, wait for Ready, run the checks, remove everything.
    Up(UpArgs),
    /// Print the `docker run` line of every pod, without starting anything.
    Plan,
    /// Remove the containers and networks of every rehearsal (e.g. after `up --keep`).
    Down,
    /// Measure time-sale scaled by hand: the same open-loop rush against 1, 2, 4 replicas.
    ScaleOut(ScaleOutArgs),
    /// Replay the HPA algorithm on the chart's HPA with Docker's CPU figures while a rush runs.
    HpaReplay(HpaReplayArgs),
    /// A nemesis under mixed load: kills, partitions and freezes of every part, then the
    /// accounting (nothing lost, nothing doubled, nothing oversold) and the audit.
    Chaos(ChaosArgs),
}

#[derive(Args, Debug, Clone)]
struct ChaosArgs {
    /// Seed of the fault schedule (default: drawn from the clock, printed to reproduce).
    #[arg(long)]
    seed: Option<u64>,
    /// Minimum length of the fault schedule in seconds (every kind of fault is injected
    /// at least once, however short).
    #[arg(long, default_value_t = 0)]
    duration_secs: u64,
    /// Client requests started per second (open loop; each retries with its idempotency
    /// key while the system is down).
    #[arg(long, default_value_t = 8.0)]
    rate: f64,
    /// Keep the load on until at least this many requests were sent.
    #[arg(long, default_value_t = 300)]
    min_requests: u64,
    /// Seconds to wait for quiescence after the load.
    #[arg(long, default_value_t = 300)]
    settle_secs: u64,
    /// Where chaos.json goes.
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
    /// Seconds pods may take to become Ready.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

#[derive(Args, Debug, Clone)]
struct RushArgs {
    /// Purchase attempts per second (open loop).
    #[arg(long)]
    rps: Option<u32>,
    /// Seconds the rush lasts.
    #[arg(long)]
    secs: Option<u64>,
    /// Calls in flight at most.
    #[arg(long, default_value_t = 64)]
    concurrency: u32,
    /// HTTP/2 connections of the load generator (each resolves the Service name).
    #[arg(long, default_value_t = 8)]
    connections: u32,
    /// Where the JSON (and PNG) go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Seconds pods may take to become Ready.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

impl RushArgs {
    fn rush(&self, rps: u32, secs: u64) -> Rush {
        Rush {
            rps: self.rps.unwrap_or(rps),
            secs: self.secs.unwrap_or(secs),
            concurrency: self.concurrency,
            connections: self.connections,
        }
    }
}

#[derive(Args, Debug, Clone)]
struct ScaleOutArgs {
    /// Time-sale replica counts to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    steps: Vec<u32>,
    #[command(flatten)]
    rush: RushArgs,
}

#[derive(Args, Debug, Clone)]
struct HpaReplayArgs {
    /// Seconds between two passes of the algorithm (the controller's sync period).
    #[arg(long, default_value_t = 15)]
    sync_secs: u64,
    /// Seconds to keep replaying after the rush ended (to see the scale-down begin).
    #[arg(long, default_value_t = 150)]
    cooldown_secs: u64,
    #[command(flatten)]
    rush: RushArgs,
}

#[derive(Args, Debug, Clone)]
struct RenderArgs {
    /// The chart to render.
    #[arg(long, global = true, default_value = "charts/cloudmart")]
    chart: PathBuf,
    /// Values files, in order (default: the rehearsal profile).
    #[arg(short = 'f', long = "values", global = true, value_name = "FILE")]
    values: Vec<PathBuf>,
    /// `helm --set` overrides (repeatable), e.g. to break the wiring on purpose.
    #[arg(long, global = true, value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[arg(long, global = true, default_value = "cloudmart")]
    release: String,
    #[arg(short = 'n', long, global = true, default_value = "cloudmart")]
    namespace: String,
    /// Replicas of a Deployment or StatefulSet, overriding the render (repeatable).
    #[arg(long, global = true, value_name = "NAME=N", value_parser = parse_replicas)]
    replicas: Vec<(String, u32)>,
    /// helm binary.
    #[arg(long, global = true, env = "HELM", default_value = "helm")]
    helm: String,
    /// docker binary.
    #[arg(long, global = true, env = "DOCKER", default_value = "docker")]
    docker: String,
    /// Where ConfigMap/Secret volume files are written (a directory per run).
    #[arg(long, global = true, default_value = "target/rehearse")]
    work_dir: PathBuf,
}

#[derive(Args, Debug, Clone)]
struct UpArgs {
    /// Seconds pods may take to become Ready (`helm install --timeout`).
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Leave everything running afterwards (remove it with `cloudmart-rehearse down`).
    #[arg(long)]
    keep: bool,
    /// Purchases per second of the load Job.
    #[arg(long, default_value_t = 50)]
    load_rps: u32,
    /// Seconds the load Job sends.
    #[arg(long, default_value_t = 10)]
    load_secs: u64,
    /// Deadline of each client pod, in seconds.
    #[arg(long, default_value_t = 90)]
    client_timeout_secs: u64,
}

fn parse_replicas(s: &str) -> Result<(String, u32), String> {
    let (name, n) = s.split_once('=').ok_or_else(|| format!("expected NAME=N, got {s:?}"))?;
    let n = n.parse().map_err(|_| format!("replicas of {name}: {n:?} is not a number"))?;
    Ok((name.to_owned(), n))
}

impl RenderArgs {
    fn options(&self, timeout: Duration) -> Options {
        let values =
            if self.values.is_empty() { vec![self.chart.join("ci/rehearse-values.yaml")] } else { self.values.clone() };
        Options {
            chart: self.chart.clone(),
            values,
            set: self.set.clone(),
            release: self.release.clone(),
            namespace: self.namespace.clone(),
            helm: self.helm.clone(),
            docker: self.docker.clone(),
            timeout,
            // Docker bind mounts need absolute paths.
            work_dir: std::path::absolute(&self.work_dir).unwrap_or_else(|_| self.work_dir.clone()),
            replicas: self.replicas.iter().cloned().collect::<BTreeMap<_, _>>(),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Plan => print_plan(&cli.render),
        Command::Down => down(&cli.render).await,
        Command::Up(args) => up(&cli.render, &args).await,
        Command::ScaleOut(args) => {
            let rush = args.rush.rush(1500, 30);
            let out = args.rush.out.clone();
            let mut render = cli.render.clone();
            if args.steps.is_empty() || args.steps.contains(&0) {
                eprintln!("rehearse: every --steps count must be at least 1");
                return ExitCode::from(2);
            }
            // start with one replica; the experiment adds the others
            render.replicas.push((format!("{}-{}", render.release, experiments::APP), 1));
            let counts = args.steps.clone();
            session(&render, args.rush.timeout_secs, async move |r: &mut Rehearsal| {
                let rows = experiments::scale_out(r, &counts, rush, &out).await?;
                Ok(rows.iter().all(|row| row.oversell == 0))
            })
            .await
        }
        Command::Chaos(args) => {
            let seed = args.seed.unwrap_or_else(|| {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
                    % 1_000_000
            });
            let opts = chaos::ChaosOptions {
                seed,
                duration: Duration::from_secs(args.duration_secs),
                rate: args.rate,
                min_requests: args.min_requests,
                settle: Duration::from_secs(args.settle_secs),
                out: args.out.clone(),
            };
            if !(args.rate > 0.0 && args.rate.is_finite()) {
                eprintln!("rehearse: --rate must be a positive number of requests per second");
                return ExitCode::from(2);
            }
            let mut render = cli.render.clone();
            // two time-sale replicas; the broker's and the database's data on volumes that
            // outlive their containers (persistence on: a restart must lose nothing)
            render.replicas.push((format!("{}-{}", render.release, experiments::APP), 2));
            render.set.push("kafka.persistence.enabled=true".into());
            render.set.push("postgresql.persistence.enabled=true".into());
            session(&render, args.timeout_secs, async move |r: &mut Rehearsal| {
                let figures = chaos::run(r, &opts).await?;
                println!("\n{}", figures.line());
                for p in &figures.problems {
                    println!("    PROBLEM: {p}");
                }
                println!("chaos: {}", if figures.passed() { "PASSED" } else { "FAILED" });
                Ok(figures.passed())
            })
            .await
        }
        Command::HpaReplay(args) => {
            let rush = args.rush.rush(200, 120);
            let out = args.rush.out.clone();
            let (sync, cooldown) = (args.sync_secs, args.cooldown_secs);
            session(&cli.render, args.rush.timeout_secs, async move |r: &mut Rehearsal| {
                let replay = experiments::hpa_replay(r, rush, sync, cooldown, &out).await?;
                Ok(replay.max_replicas_seen > 1)
            })
            .await
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rehearse: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_plan(args: &RenderArgs) -> Result<ExitCode> {
    let opts = args.options(Duration::from_secs(300));
    let (_, plan) = rehearsal::plan(&opts)?;
    let run_id = "cmrPLAN";
    let files = opts.work_dir.join(run_id);
    let ctx = RunContext { run_id, network: run_id, files_dir: &files };
    for pod in &plan.pods {
        println!("# {} ({:?})", pod.owner, pod.role);
        let line: Vec<String> = run_args(pod, &ctx).iter().map(|a| shell_quote(a)).collect();
        println!("{} run {}\n", opts.docker, line.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

async fn down(args: &RenderArgs) -> Result<ExitCode> {
    let n = Docker::new(&args.docker).remove_run(None).await?;
    println!("removed {n} rehearsal containers and their networks");
    Ok(ExitCode::SUCCESS)
}

async fn up(args: &RenderArgs, up: &UpArgs) -> Result<ExitCode> {
    let opts = args.options(Duration::from_secs(up.timeout_secs));
    let run_id = new_run_id();
    let docker = Docker::new(&opts.docker);
    let files_dir = opts.work_dir.join(&run_id);
    let work = rehearse(&opts, up, &run_id);
    let outcome = tokio::select! {
        r = work => r.map(Some),
        signal = interrupted() => Err(anyhow!("interrupted by {signal}")).map(|()| None),
    };
    let interrupted = matches!(&outcome, Err(e) if e.to_string().starts_with("interrupted"));
    if up.keep && !interrupted {
        println!(
            "==> --keep: run {run_id} left running (network {run_id}); `cloudmart-rehearse down` (or `make rehearse ARGS=down`) removes it"
        );
    } else {
        match Rehearsal::cleanup(&docker, &run_id, &files_dir).await {
            Ok(n) => println!("==> removed {n} containers, network {run_id} and {}", files_dir.display()),
            Err(e) => eprintln!("rehearse: cleanup of run {run_id} failed: {e:#} (run `cloudmart-rehearse down`)"),
        }
    }
    match outcome {
        Ok(Some(true)) => {
            println!("rehearse: PASSED");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Some(false)) | Ok(None) => Ok(ExitCode::FAILURE),
        Err(e) if interrupted => {
            eprintln!("rehearse: {e}");
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
        Err(e) => Err(e),
    }
}

/// Starts a rehearsal, waits for Ready, runs `body` on it and removes everything (also on
/// failure, Ctrl-C or SIGTERM).
async fn session(
    args: &RenderArgs,
    timeout_secs: u64,
    body: impl AsyncFnOnce(&mut Rehearsal) -> Result<bool>,
) -> Result<ExitCode> {
    let opts = args.options(Duration::from_secs(timeout_secs));
    let run_id = new_run_id();
    let docker = Docker::new(&opts.docker);
    let files_dir = opts.work_dir.join(&run_id);
    let work = async {
        let mut r = Rehearsal::start(&opts, &run_id).await?;
        let pods = r.plan.pods.clone();
        r.wait_ready(&pods, opts.timeout).await?;
        body(&mut r).await
    };
    let outcome = tokio::select! {
        r = work => r,
        signal = interrupted() => Err(anyhow!("interrupted by {signal}")),
    };
    match Rehearsal::cleanup(&docker, &run_id, &files_dir).await {
        Ok(n) => println!("==> removed {n} containers, network {run_id} and {}", files_dir.display()),
        Err(e) => eprintln!("rehearse: cleanup of run {run_id} failed: {e:#} (run `cloudmart-rehearse down`)"),
    }
    match outcome? {
        true => Ok(ExitCode::SUCCESS),
        false => Ok(ExitCode::FAILURE),
    }
}

/// The whole rehearsal; Ok(true) when every check passed.
async fn rehearse(opts: &Options, up: &UpArgs, run_id: &str) -> Result<bool> {
    let mut r = Rehearsal::start(opts, run_id).await?;
    println!("==> waiting for every pod to be Ready and every Job to succeed (timeout {} s)", opts.timeout.as_secs());
    let pods = r.plan.pods.clone();
    r.wait_ready(&pods, opts.timeout).await?;
    let checks = checks::run_all(
        &mut r,
        &CheckOptions {
            load_rps: up.load_rps,
            load_secs: up.load_secs,
            client_timeout: Duration::from_secs(up.client_timeout_secs),
        },
    )
    .await;
    println!("\n==> summary");
    let mut ok = true;
    for c in &checks {
        match &c.outcome {
            Ok(_) => println!("    PASS  {}", c.name),
            Err(why) => {
                ok = false;
                println!("    FAIL  {}: {}", c.name, why.lines().next().unwrap_or(""));
            }
        }
    }
    Ok(ok)
}

/// Resolves on Ctrl-C or SIGTERM, naming it.
async fn interrupted() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "Ctrl-C";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
        // Parsing reaches every field (a flag defined twice with two types panics here).
        for line in [
            &["cloudmart-rehearse", "up", "--keep", "--set", "a=b", "--replicas", "cloudmart-order=2"][..],
            &["cloudmart-rehearse", "scale-out", "--steps", "1,2", "--rps", "10", "--replicas", "x=1"],
            &["cloudmart-rehearse", "hpa-replay", "--sync-secs", "5", "-f", "v.yaml"],
            &["cloudmart-rehearse", "plan"],
            &["cloudmart-rehearse", "chaos", "--seed", "7", "--duration-secs", "600", "--rate", "5"],
            &["cloudmart-rehearse", "down"],
        ] {
            super::Cli::try_parse_from(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        }
        assert!(super::Cli::try_parse_from(["cloudmart-rehearse"]).is_err(), "a command is required");
    }
}
