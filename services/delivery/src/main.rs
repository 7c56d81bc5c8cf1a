use clap::Parser;
use cloudmart_delivery::{Application, Config};
use cloudmart_platform::{service::shutdown_signal, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = telemetry::init(&config.telemetry, "delivery")?;
    let app = Application::build(config).await?;
    tracing::info!(grpc = %app.grpc_addr(), "cloudmart-delivery started");
    app.run_until_stopped(shutdown_signal()).await
}
