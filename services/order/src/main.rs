//! `cloudmart-order`: flags and env vars in `--help`; the start-up is the platform's
//! ([`cloudmart_platform::app::run`]).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cloudmart_platform::app::run::<cloudmart_order::Application>().await
}
