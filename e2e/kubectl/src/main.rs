//! `kubectl-cloudmart`: parses the command line, connects to the cluster of
//! `--kubeconfig`/`--context` (or the in-cluster service account), runs the command from
//! the library and turns its outcome into the exit status `--help` documents.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use cloudmart_kubectl::cli::{Cli, Command, OutputFormat};
use cloudmart_kubectl::cluster::{self, Connected, WithCluster};
use cloudmart_kubectl::jaeger::{JaegerTarget, find_jaeger};
use cloudmart_kubectl::status::StatusOptions;
use cloudmart_kubectl::tools::{ToolOptions, ToolOutcome, audit_job, dlq_job, run_tool};
use cloudmart_kubectl::trace::{RETRY_EVERY, TraceOptions, TraceOutcome, TraceView, find, render};
use cloudmart_kubectl::{LoadOutcome, dry_run, job, load, status};

/// Exit status of a run stopped by Ctrl-C or SIGTERM (128 + SIGINT), as shells report it.
const EXIT_INTERRUPTED: u8 = 130;

/// Exit status when `trace` found no trace.
const EXIT_NOT_FOUND: u8 = 3;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", cluster::describe_error(&err));
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM; never without signal handlers.
async fn interrupted() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Unix seconds now, for Job names.
fn unix_secs() -> Result<u64> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH).context("system clock before 1970")?.as_secs())
}

async fn connect(cli: &Cli) -> Result<Connected> {
    cluster::connect(cli.kubeconfig.as_deref(), cli.context.as_deref()).await
}

/// `-o` for commands that print no objects.
fn no_output_format(cli: &Cli, command: &str) -> Result<()> {
    if cli.output.is_some() {
        bail!("-o/--output is not supported by `{command}`: it prints the tool's own output");
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let mut stdout = std::io::stdout();
    match &cli.command {
        Command::Status(args) => {
            let connected = connect(&cli).await?;
            let release = cli.target(connected.namespace.as_deref());
            let dlq = match args.dlq {
                true => Some((
                    ToolOptions {
                        image: args.image.clone(),
                        timeout: Duration::from_secs(120),
                        poll: Duration::from_secs(1),
                        keep: false,
                    },
                    job::job_name(&release, "dlq", unix_secs()?),
                )),
                false => None,
            };
            let opts = StatusOptions { format: cli.output, orders: args.orders, dlq };
            status(connected.client.clone(), &release, &opts, &mut stdout).await.on_cluster(&connected)?;
        }
        Command::Load(args) => {
            let opts = args.options();
            if args.dry_run {
                let release = cli
                    .target(cluster::context_namespace(cli.kubeconfig.as_deref(), cli.context.as_deref()).as_deref());
                let job_name = job::job_name(&release, "load", unix_secs()?);
                dry_run(&release, &opts, &job_name, &mut stdout)?;
                return Ok(ExitCode::SUCCESS);
            }
            let connected = connect(&cli).await?;
            let release = cli.target(connected.namespace.as_deref());
            let job_name = job::job_name(&release, "load", unix_secs()?);
            // With -o, stdout carries the report only: the progress goes to stderr.
            let mut stderr = std::io::stderr();
            let progress: &mut dyn Write = if cli.output.is_some() { &mut stderr } else { &mut stdout };
            let outcome = load(connected.client.clone(), &release, &opts, &job_name, interrupted(), progress)
                .await
                .on_cluster(&connected)?;
            let summary = match outcome {
                LoadOutcome::Interrupted { .. } => return Ok(ExitCode::from(EXIT_INTERRUPTED)),
                LoadOutcome::Finished(summary) => summary,
            };
            match cli.output {
                Some(OutputFormat::Json) => {
                    let json = serde_json::to_string_pretty(&summary.run_report()).context("rendering the report")?;
                    writeln!(stdout, "{json}")?;
                }
                Some(OutputFormat::Yaml) => {
                    let yaml = serde_norway::to_string(&summary.run_report()).context("rendering the report")?;
                    stdout.write_all(yaml.as_bytes())?;
                }
                None => {}
            }
            return Ok(ExitCode::from(summary.exit_code()));
        }
        Command::Trace(args) => {
            let opts = TraceOptions {
                order_id: args.order_id.trim().to_owned(),
                lookback: args.lookback,
                wait: args.wait,
                require_services: args.require_services.clone(),
                retry_every: RETRY_EVERY,
            };
            cloudmart_kubectl::trace::check_order_id(&opts.order_id)?;
            let target = match &args.jaeger_url {
                Some(url) => JaegerTarget::from_url(url)?,
                None => {
                    let connected = connect(&cli).await?;
                    let release = cli.target(connected.namespace.as_deref());
                    find_jaeger(connected.client.clone(), &release).await.on_cluster(&connected)?
                }
            };
            let traces = match find(&target, &opts).await? {
                TraceOutcome::Found(traces) => traces,
                TraceOutcome::NotFound(why) => {
                    eprintln!("error: {why}");
                    return Ok(ExitCode::from(EXIT_NOT_FOUND));
                }
            };
            match cli.output {
                None => {
                    for (i, trace) in traces.iter().enumerate() {
                        if i > 0 {
                            writeln!(stdout)?;
                        }
                        render(trace, &mut stdout)?;
                    }
                }
                Some(format) => {
                    let views: Vec<TraceView> = traces.iter().map(TraceView::of).collect();
                    let doc = serde_json::json!({ "order_id": opts.order_id, "traces": views });
                    match format {
                        OutputFormat::Json => writeln!(stdout, "{}", serde_json::to_string_pretty(&doc)?)?,
                        OutputFormat::Yaml => stdout.write_all(serde_norway::to_string(&doc)?.as_bytes())?,
                    }
                }
            }
        }
        Command::Audit(args) => {
            no_output_format(&cli, "audit")?;
            let connected = connect(&cli).await?;
            let release = cli.target(connected.namespace.as_deref());
            let opts = ToolOptions::from(&args.job);
            let tool =
                audit_job(connected.client.clone(), &release, args.settle_secs, &opts).await.on_cluster(&connected)?;
            let job_name = job::job_name(&release, "audit", unix_secs()?);
            let outcome =
                run_tool(connected.client.clone(), &release, &tool, &opts, &job_name, interrupted(), &mut stdout)
                    .await
                    .on_cluster(&connected)?;
            return Ok(tool_exit(outcome));
        }
        Command::Dlq(args) => {
            no_output_format(&cli, "dlq")?;
            let connected = connect(&cli).await?;
            let release = cli.target(connected.namespace.as_deref());
            let opts = ToolOptions::from(&args.job);
            let tool =
                dlq_job(connected.client.clone(), &release, &args.command, &opts).await.on_cluster(&connected)?;
            let job_name = job::job_name(&release, "dlq", unix_secs()?);
            let outcome =
                run_tool(connected.client.clone(), &release, &tool, &opts, &job_name, interrupted(), &mut stdout)
                    .await
                    .on_cluster(&connected)?;
            return Ok(tool_exit(outcome));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The tool's exit status (0–255), or 130 when interrupted.
fn tool_exit(outcome: ToolOutcome) -> ExitCode {
    match outcome {
        ToolOutcome::Finished { exit_code, .. } => ExitCode::from(u8::try_from(exit_code).unwrap_or(1)),
        ToolOutcome::Interrupted { .. } => ExitCode::from(EXIT_INTERRUPTED),
    }
}
