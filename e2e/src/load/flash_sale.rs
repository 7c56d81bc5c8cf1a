//! The flash-sale scenario: `Purchase` calls on one sale of the time-sale service.
//!
//! The run creates a sale (or buys from `--sale-id`); attempt `i` buys one unit as
//! customer `i % --customers`, shipped to an ordinary address. Each answer is one
//! `purchase` outcome: succeeded, sold out, limit exceeded, not active, shed, timeout or
//! error.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cloudmart_proto::order::v1::ShippingAddress;
use cloudmart_proto::timesale::v1::{self as pb, time_sale_service_client::TimeSaleServiceClient};
use tonic::transport::Channel;

use super::schedule::Call;
use super::stats::{Operation, Outcome, Recorder, classify_status};
use super::{LoadOptions, timed, with_deadline};

/// A flash sale under load.
#[derive(Debug)]
pub struct FlashSale {
    clients: Vec<TimeSaleServiceClient<Channel>>,
    sale_id: String,
    /// Stock when the run started.
    stock: i32,
    /// Part of every customer id, so two runs on one sale do not share customers.
    run_id: String,
    customers: u64,
    call_timeout: Duration,
}

impl FlashSale {
    /// Creates the sale (or reads `--sale-id`) over `channels`.
    pub async fn prepare(opts: &LoadOptions, channels: Vec<Channel>, run_id: String) -> anyhow::Result<Self> {
        let clients: Vec<_> = channels.into_iter().map(TimeSaleServiceClient::new).collect();
        let mut admin = clients.first().cloned().context("no connection to the time-sale service")?;
        let sale = match &opts.sale_id {
            Some(id) => admin
                .get_sale(pb::GetSaleRequest { sale_id: id.clone() })
                .await
                .with_context(|| format!("--sale-id {id}: the sale cannot be read"))?
                .into_inner(),
            None => admin.create_sale(new_sale(opts)).await.context("CreateSale failed")?.into_inner(),
        };
        Ok(Self {
            clients,
            sale_id: sale.sale_id,
            stock: sale.remaining_stock,
            run_id,
            customers: opts.customers,
            call_timeout: opts.call_timeout,
        })
    }

    pub fn sale_id(&self) -> &str {
        &self.sale_id
    }

    /// What the run is about to do, for the first progress line.
    pub fn describe(&self) -> String {
        format!("sale {} ({} in stock)", self.sale_id, self.stock)
    }

    /// One purchase attempt: call `call.index`, recorded as a `purchase` answer.
    pub async fn purchase(self: Arc<Self>, call: Call, recorder: Arc<Recorder>) {
        let mut client = self.clients[call.index as usize % self.clients.len()].clone();
        let request = purchase(&self.sale_id, call.index % self.customers, &self.run_id);
        let (result, latency) =
            timed(self.call_timeout, client.purchase(with_deadline(request, self.call_timeout))).await;
        match result {
            Ok(_) => recorder.answer(call.step, Operation::Purchase, Outcome::Succeeded, Some(latency)),
            Err(status) => {
                let outcome = classify_status(Operation::Purchase, &status);
                if outcome == Outcome::Error {
                    recorder.error_sample(format!("{:?}: {}", status.code(), status.message()));
                }
                let latency = (outcome != Outcome::Timeout).then_some(latency);
                recorder.answer(call.step, Operation::Purchase, outcome, latency);
            }
        }
    }

    /// The sale's total and remaining stock now.
    pub async fn stock_now(&self) -> anyhow::Result<(i64, i64)> {
        let mut admin = self.clients[0].clone();
        let sale = admin
            .get_sale(pb::GetSaleRequest { sale_id: self.sale_id.clone() })
            .await
            .context("GetSale after the run failed")?
            .into_inner();
        Ok((i64::from(sale.total_stock), i64::from(sale.remaining_stock)))
    }
}

/// The sale a run creates: open from a few seconds ago until ten minutes after the load.
fn new_sale(opts: &LoadOptions) -> pb::CreateSaleRequest {
    let now = chrono::Utc::now().timestamp();
    let load_secs = i64::try_from(opts.schedule.duration().as_secs()).unwrap_or(i64::MAX / 2);
    pb::CreateSaleRequest {
        sku: "LOAD-1".into(),
        title: "cloudmart-load flash sale".into(),
        price_cents: 100,
        total_stock: opts.stock,
        per_customer_limit: opts.per_customer_limit,
        starts_at: Some(prost_types::Timestamp { seconds: now - 5, nanos: 0 }),
        ends_at: Some(prost_types::Timestamp { seconds: now.saturating_add(load_secs).saturating_add(600), nanos: 0 }),
    }
}

fn purchase(sale_id: &str, customer: u64, run: &str) -> pb::PurchaseRequest {
    pb::PurchaseRequest {
        sale_id: sale_id.to_owned(),
        customer_id: format!("load-{run}-{customer}"),
        quantity: 1,
        shipping_address: Some(ShippingAddress {
            line1: "1 Load St".into(),
            city: "Seoul".into(),
            postal_code: format!("{:05}", 10_000 + customer % 80_000),
            country: "KR".into(),
        }),
        idempotency_key: String::new(),
    }
}
