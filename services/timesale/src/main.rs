use clap::Parser;
use cloudmart_platform::{service::shutdown_signal, telemetry};
use cloudmart_timesale::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = telemetry::init(&config.telemetry, "timesale")?;
    let app = Application::build(config).await?;
    tracing::info!(grpc = %app.grpc_addr(), "cloudmart-timesale started");
    app.run_until_stopped(shutdown_signal()).await
}
