use clap::Parser;
use cloudmart_order::{Application, Config};
use cloudmart_platform::{service::shutdown_signal, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = telemetry::init(&config.telemetry, "order")?;
    let app = Application::build(config).await?;
    tracing::info!(grpc = %app.grpc_addr(), "cloudmart-order started");
    app.run_until_stopped(shutdown_signal()).await
}
