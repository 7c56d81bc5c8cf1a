//! `kubectl-cloudmart`: parses the command line, infers the cluster from the kubeconfig
//! (or the in-cluster service account) and runs the command from the library.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use cloudmart_kubectl::cli::{Cli, Command};
use cloudmart_kubectl::{LoadOutcome, dry_run, job, load, status};

/// Exit code of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
const EXIT_INTERRUPTED: u8 = 130;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let release = cli.target();
    let mut out = std::io::stdout();
    match &cli.command {
        Command::Status => {
            status(client().await?, &release, &mut out).await?;
        }
        Command::Load(args) => {
            let opts = args.options();
            let unix_secs = SystemTime::now().duration_since(UNIX_EPOCH).context("system clock before 1970")?.as_secs();
            let job_name = job::job_name(&release, unix_secs);
            if args.dry_run {
                dry_run(&release, &opts, &job_name, &mut out)?;
                return Ok(ExitCode::SUCCESS);
            }
            let ctrl_c = async {
                // Without a signal handler, never interrupt (rather than at once).
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let outcome = load(client().await?, &release, &opts, &job_name, ctrl_c, &mut out).await?;
            if let LoadOutcome::Interrupted { .. } = outcome {
                return Ok(ExitCode::from(EXIT_INTERRUPTED));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A client for the cluster of the current kubeconfig context, or the in-cluster one.
async fn client() -> Result<kube::Client> {
    // kube's error already names every source it tried, so it is not chained again.
    kube::Client::try_default().await.map_err(|err| anyhow!("connecting to Kubernetes: {err}"))
}
