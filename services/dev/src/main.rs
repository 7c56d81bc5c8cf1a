//! `cloudmart-dev` (`make dev`): the whole shop in one process, with nothing installed
//! but the Rust toolchain — SQLite files under `--data-dir` and librdkafka's in-process
//! mock broker — printing each endpoint and a `grpcurl` example. Ctrl-C stops everything
//! cleanly (each service drains, commits offsets and flushes its outbox).

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use clap::Parser;
use cloudmart_platform::{
    app::build, config::TelemetryArgs, kafka::EmbeddedBroker, proto::contract::topics, service::shutdown_signal,
    telemetry,
};
use tokio_util::sync::CancellationToken;

/// Runs order, delivery and time-sale on embedded defaults.
#[derive(Parser, Debug)]
#[command(
    name = "cloudmart-dev",
    version,
    about = "Run the whole cloudmart shop locally: SQLite + an in-process Kafka-protocol broker"
)]
struct Args {
    /// Directory for the SQLite databases.
    #[arg(long, env = "CLOUDMART_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Use this Kafka instead of the embedded broker.
    #[arg(long, env = "KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// order gRPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    order_addr: SocketAddr,
    /// delivery gRPC address.
    #[arg(long, default_value = "127.0.0.1:50052")]
    delivery_addr: SocketAddr,
    /// time-sale gRPC address.
    #[arg(long, default_value = "127.0.0.1:50053")]
    timesale_addr: SocketAddr,
    /// Metrics of order, delivery and time-sale on 127.0.0.1 at this port and the next
    /// two (0 = ephemeral ports).
    #[arg(long, default_value_t = 9101)]
    metrics_port_base: u16,
    /// Postal codes whose deliveries always fail (to watch the compensation).
    #[arg(long, env = "FAULT_DELIVERY_FAIL_POSTAL_CODES", default_value = "99999")]
    fail_postal_codes: String,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

/// A service's configuration from its command line (a bad value names its flag).
fn parse<C: Parser>(argv: Vec<String>) -> anyhow::Result<C> {
    C::try_parse_from(&argv).with_context(|| argv[0].clone())
}

fn metrics_addr(base: u16, offset: u16) -> SocketAddr {
    let port = if base == 0 { 0 } else { base.saturating_add(offset) };
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = telemetry::init(&args.telemetry, "cloudmart-dev")?;
    std::fs::create_dir_all(&args.data_dir)?;

    let (_embedded, brokers) = match &args.kafka_brokers {
        Some(b) => (None, b.clone()),
        None => {
            let broker = EmbeddedBroker::start("", 3, &topics::ALL)?;
            let b = broker.bootstrap_servers().to_owned();
            (Some(broker), b)
        }
    };
    // The embedded broker was started with every topic of the contract.
    let create_topics = args.kafka_brokers.is_some();
    let data = args.data_dir.display();
    // Each service's configuration comes from its own command line, as `cloudmart-<name>
    // --flag …` would parse it; what is not given here keeps the service's default.
    let flags = |grpc: SocketAddr, metrics: SocketAddr, name: &str| -> Vec<String> {
        vec![
            format!("cloudmart-{name}"),
            format!("--grpc-addr={grpc}"),
            format!("--metrics-addr={metrics}"),
            format!("--database-url=sqlite://{data}/{name}.db"),
            format!("--kafka-brokers={brokers}"),
            format!("--kafka-create-topics={create_topics}"),
        ]
    };

    let mut delivery_flags = flags(args.delivery_addr, metrics_addr(args.metrics_port_base, 1), "delivery");
    delivery_flags.push(format!("--fault-delivery-fail-postal-codes={}", args.fail_postal_codes));
    let delivery = build::<cloudmart_delivery::Application>(parse(delivery_flags)?).await?;

    let mut order_flags = flags(args.order_addr, metrics_addr(args.metrics_port_base, 0), "order");
    order_flags.push(format!("--delivery-endpoint=http://{}", delivery.grpc_addr()));
    let order = build::<cloudmart_order::Application>(parse(order_flags)?).await?;

    let timesale_flags = flags(args.timesale_addr, metrics_addr(args.metrics_port_base, 2), "timesale");
    let timesale = build::<cloudmart_timesale::Application>(parse(timesale_flags)?).await?;

    let token = CancellationToken::new();
    let order_addr = order.grpc_addr();
    let delivery_addr = delivery.grpc_addr();
    let timesale_addr = timesale.grpc_addr();
    let mut tasks = tokio::task::JoinSet::new();
    let t = token.clone();
    tasks.spawn(async move { ("order", order.run_until_stopped(t.cancelled_owned()).await) });
    let t = token.clone();
    tasks.spawn(async move { ("delivery", delivery.run_until_stopped(t.cancelled_owned()).await) });
    let t = token.clone();
    tasks.spawn(async move { ("timesale", timesale.run_until_stopped(t.cancelled_owned()).await) });

    println!(
        r#"
cloudmart is running (Ctrl-C to stop)

  order     grpc://{order_addr}   cloudmart.order.v1.OrderService
  delivery  grpc://{delivery_addr}   cloudmart.delivery.v1.DeliveryService
  timesale  grpc://{timesale_addr}   cloudmart.timesale.v1.TimeSaleService
  metrics   {metrics} (order, delivery, timesale)
  kafka     {brokers}   ({kafka_kind})
  data      {data}/{{order,delivery,timesale}}.db (SQLite)
  fault     deliveries to postal code(s) {fail} always fail

Place an order (reflection is on, no .proto files needed):

  grpcurl -plaintext -d '{{"customer_id":"c1","idempotency_key":"k1",
    "items":[{{"sku":"BOOK-1","quantity":2,"unit_price_cents":1500}}],
    "shipping_address":{{"line1":"1 Main St","city":"Seoul","postal_code":"04524","country":"KR"}}}}' \
    {order_addr} cloudmart.order.v1.OrderService/PlaceOrder

  grpcurl -plaintext -d '{{"order_id":"<order_id>"}}' {order_addr} cloudmart.order.v1.OrderService/GetOrder
"#,
        kafka_kind = if args.kafka_brokers.is_some() { "external" } else { "embedded mock broker" },
        data = args.data_dir.display(),
        fail = args.fail_postal_codes,
        metrics = if args.metrics_port_base == 0 {
            "http://127.0.0.1:<ephemeral>/metrics".to_owned()
        } else {
            let b = args.metrics_port_base;
            format!("http://127.0.0.1:{{{b},{},{}}}/metrics", b + 1, b + 2)
        },
    );

    let mut result = Ok(());
    tokio::select! {
        _ = shutdown_signal() => println!("stopping…"),
        Some(res) = tasks.join_next() => {
            if let Ok((name, Err(e))) = res {
                result = Err(e.context(format!("{name} failed")));
            }
        }
    }
    token.cancel();
    while let Some(res) = tasks.join_next().await {
        if let Ok((name, Err(e))) = res {
            tracing::error!(service = name, error = format!("{e:#}"), "service stopped with an error");
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}
