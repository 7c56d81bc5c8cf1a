//! Clients and helpers shared by cloudmart's command-line tools and end-to-end tests.
//!
//! - [`bench`] — every figure of the benchmark report (`cloudmart-bench run`, `make bench`).
//! - [`load`] — the load generator (`cloudmart-load`): flash-sale purchases or orders through
//!   the saga.
//! - [`smoke_order`] — one order through the saga (`cloudmart-smoke`, `helm test`).
//! - [`smoke_purchase`] — one flash-sale purchase until its order exists (`cloudmart-smoke
//!   --scenario purchase`, `make rehearse`).

pub mod bench;
pub mod load;

use std::time::Duration;

use anyhow::Context;
use cloudmart_proto::order::v1::{self as pb, order_service_client::OrderServiceClient};
use cloudmart_proto::timesale::v1::{self as ts, time_sale_service_client::TimeSaleServiceClient};

/// The final state of a smoke order.
#[derive(Debug, Clone)]
pub struct SmokeOutcome {
    pub order_id: String,
    pub status: String,
    pub cancel_reason: String,
}

/// A channel to `endpoint`, retrying until `within` has passed (the service may still
/// be starting); `what` names the service in the error.
pub async fn connect_channel(
    endpoint: &str,
    within: Duration,
    what: &str,
) -> anyhow::Result<tonic::transport::Channel> {
    let target = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .with_context(|| format!("{what} endpoint {endpoint:?} is not a URL"))?;
    connect_endpoint(&target, within, what).await
}

/// A channel to `target`, retrying every 500 ms until `within` has passed (a service still
/// starting; in a fresh pod, a NetworkPolicy enforcer that has not admitted it yet).
pub async fn connect_endpoint(
    target: &tonic::transport::Endpoint,
    within: Duration,
    what: &str,
) -> anyhow::Result<tonic::transport::Channel> {
    let deadline = tokio::time::Instant::now() + within;
    let endpoint = target.uri();
    loop {
        match target.connect().await {
            Ok(c) => return Ok(c),
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("waiting for {what} at {endpoint}: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot reach {what} at {endpoint} within {}s", within.as_secs()));
            }
        }
    }
}

/// Connects to the order service, retrying until `within` has passed.
pub async fn connect_order(
    endpoint: &str,
    within: Duration,
) -> anyhow::Result<OrderServiceClient<tonic::transport::Channel>> {
    Ok(OrderServiceClient::new(connect_channel(endpoint, within, "order service").await?))
}

/// Places one order and polls it until CONFIRMED or CANCELLED.
pub async fn smoke_order(
    endpoint: &str,
    postal_code: &str,
    country: &str,
    timeout: Duration,
) -> anyhow::Result<SmokeOutcome> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut client = connect_order(endpoint, timeout).await?;
    let placed = client
        .place_order(pb::PlaceOrderRequest {
            customer_id: "smoke-test".into(),
            items: vec![pb::OrderItem { sku: "SMOKE-1".into(), quantity: 1, unit_price_cents: 100 }],
            shipping_address: Some(pb::ShippingAddress {
                line1: "1 Smoke St".into(),
                city: "Testville".into(),
                postal_code: postal_code.into(),
                country: country.into(),
            }),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .context("PlaceOrder failed")?
        .into_inner()
        .order
        .context("PlaceOrder returned no order")?;
    println!("placed order {} ({:?})", placed.order_id, placed.status());
    loop {
        let order = client
            .get_order(pb::GetOrderRequest { order_id: placed.order_id.clone() })
            .await
            .context("GetOrder failed")?
            .into_inner();
        match order.status() {
            pb::OrderStatus::Confirmed | pb::OrderStatus::Cancelled => {
                return Ok(SmokeOutcome {
                    order_id: order.order_id.clone(),
                    status: order.status().as_str_name().trim_start_matches("ORDER_STATUS_").to_owned(),
                    cancel_reason: order.cancel_reason,
                });
            }
            _ if tokio::time::Instant::now() >= deadline => {
                anyhow::bail!("order {} still {:?} after {timeout:?}", order.order_id, order.status())
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The final state of a smoke purchase.
#[derive(Debug, Clone)]
pub struct PurchaseOutcome {
    pub sale_id: String,
    pub purchase_id: String,
    /// `ORDERED` or `CANCELLED` (the proto name without its prefix).
    pub status: String,
    pub order_id: String,
}

/// Opens a one-hour flash sale of ten units, buys one and polls the purchase until the
/// order service has turned it into an order (`ORDERED`) or it was cancelled.
pub async fn smoke_purchase(endpoint: &str, timeout: Duration) -> anyhow::Result<PurchaseOutcome> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut client = TimeSaleServiceClient::new(connect_channel(endpoint, timeout, "time-sale service").await?);
    let now = chrono::Utc::now().timestamp();
    let sale = client
        .create_sale(ts::CreateSaleRequest {
            sku: "SMOKE-SALE-1".into(),
            title: "cloudmart-smoke flash sale".into(),
            price_cents: 100,
            total_stock: 10,
            per_customer_limit: 1,
            starts_at: Some(prost_types::Timestamp { seconds: now - 5, nanos: 0 }),
            ends_at: Some(prost_types::Timestamp { seconds: now + 3600, nanos: 0 }),
        })
        .await
        .context("CreateSale failed")?
        .into_inner();
    let purchase = client
        .purchase(ts::PurchaseRequest {
            sale_id: sale.sale_id.clone(),
            customer_id: "smoke-test".into(),
            quantity: 1,
            shipping_address: Some(pb::ShippingAddress {
                line1: "1 Smoke St".into(),
                city: "Testville".into(),
                postal_code: "04524".into(),
                country: "KR".into(),
            }),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .context("Purchase failed")?
        .into_inner()
        .purchase
        .context("Purchase returned no purchase")?;
    println!("sale {}: reserved purchase {}", sale.sale_id, purchase.purchase_id);
    loop {
        let p = client
            .get_purchase(ts::GetPurchaseRequest { purchase_id: purchase.purchase_id.clone() })
            .await
            .context("GetPurchase failed")?
            .into_inner();
        match p.status() {
            ts::PurchaseStatus::Ordered | ts::PurchaseStatus::Cancelled => {
                return Ok(PurchaseOutcome {
                    sale_id: sale.sale_id,
                    purchase_id: p.purchase_id.clone(),
                    status: p.status().as_str_name().trim_start_matches("PURCHASE_STATUS_").to_owned(),
                    order_id: p.order_id,
                });
            }
            _ if tokio::time::Instant::now() >= deadline => {
                anyhow::bail!("purchase {} still {:?} after {timeout:?}", p.purchase_id, p.status())
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
