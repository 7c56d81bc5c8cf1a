//! The synchronous call to delivery for a fee quote, bounded by a timeout, with the
//! flat-fee fallback when delivery does not answer.

use std::time::Duration;

use cloudmart_platform::{
    grpc::{reason_of, reasons},
    proto::{delivery::v1 as dpb, delivery::v1::delivery_service_client::DeliveryServiceClient, order::v1 as pb},
    trace::{TracedChannel, traced_channel},
};
use tonic::{Code, transport::Channel};

/// Where a fee came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuoteSource {
    DeliveryService,
    Fallback,
}

impl QuoteSource {
    pub fn as_str(self) -> &'static str {
        match self {
            QuoteSource::DeliveryService => "DELIVERY_SERVICE",
            QuoteSource::Fallback => "FALLBACK",
        }
    }
}

/// A fee, or delivery's refusal to serve the address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Quote {
    Fee { cents: i64, source: QuoteSource },
    Unserviceable(String),
}

/// Calls `DeliveryService.QuoteDelivery` (a client span; the trace context travels in the
/// request metadata).
#[derive(Clone)]
pub struct QuoteClient {
    client: DeliveryServiceClient<TracedChannel>,
    timeout: Duration,
    fallback_fee_cents: i64,
}

impl QuoteClient {
    /// Connects lazily: a delivery service that is down at start-up is not an error.
    pub fn new(endpoint: &str, timeout: Duration, fallback_fee_cents: i64) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(endpoint.to_owned())
            .map_err(|e| anyhow::anyhow!("DELIVERY_ENDPOINT {endpoint:?} is not a URI: {e}"))?
            .connect_timeout(timeout)
            .connect_lazy();
        Ok(Self { client: DeliveryServiceClient::new(traced_channel(channel)), timeout, fallback_fee_cents })
    }

    /// Quotes a fee; falls back to the flat fee when delivery fails or is slow.
    pub async fn quote(&self, address: pb::ShippingAddress, items: Vec<pb::OrderItem>) -> Quote {
        let mut req = tonic::Request::new(dpb::QuoteDeliveryRequest { shipping_address: Some(address), items });
        req.set_timeout(self.timeout);
        let mut client = self.client.clone();
        match tokio::time::timeout(self.timeout, client.quote_delivery(req)).await {
            Ok(Ok(resp)) => Quote::Fee { cents: resp.into_inner().fee_cents, source: QuoteSource::DeliveryService },
            Ok(Err(status))
                if status.code() == Code::FailedPrecondition
                    && reason_of(&status).as_deref() == Some(reasons::UNSERVICEABLE_ADDRESS) =>
            {
                Quote::Unserviceable(status.message().to_owned())
            }
            Ok(Err(status)) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "quote failed; using the flat fee");
                self.fallback()
            }
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "quote timed out; using the flat fee");
                self.fallback()
            }
        }
    }

    fn fallback(&self) -> Quote {
        Quote::Fee { cents: self.fallback_fee_cents, source: QuoteSource::Fallback }
    }
}
