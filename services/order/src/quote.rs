//! The synchronous call to delivery for a fee quote: bounded by a timeout, behind a
//! circuit breaker ([`cloudmart_platform::breaker`]), with the flat-fee fallback when
//! delivery does not answer or the breaker is open.
//!
//! The stack, outermost first: circuit breaker (fails fast while delivery is unwell) →
//! deadline (`QUOTE_TIMEOUT_MS`; a timeout counts as a failure) → traced gRPC channel.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use anyhow::Context as _;
use cloudmart_platform::{
    breaker::{BreakerConfig, BreakerError, CircuitBreaker, CircuitBreakerLayer, State},
    grpc::reason_of,
    proto::{
        contract::reasons, delivery::v1 as dpb, delivery::v1::delivery_service_client::DeliveryServiceClient,
        order::v1 as pb,
    },
    trace::{TracedChannel, traced_channel},
};
use tonic::{Code, Status, transport::Channel};
use tower::{Layer, Service, ServiceExt};

use crate::domain::{Fee, QuoteSource};

/// A fee (from delivery, or the flat fallback), or delivery's refusal to serve the address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Quote {
    Fee(Fee),
    Unserviceable(String),
}

/// One `DeliveryService.QuoteDelivery` call under a deadline: the service the circuit
/// breaker wraps (a client span; the trace context travels in the request metadata).
#[derive(Clone)]
pub struct QuoteCall {
    client: DeliveryServiceClient<TracedChannel>,
    timeout: Duration,
}

impl Service<dpb::QuoteDeliveryRequest> for QuoteCall {
    type Response = dpb::QuoteDeliveryResponse;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Status>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, body: dpb::QuoteDeliveryRequest) -> Self::Future {
        let mut client = self.client.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let mut req = tonic::Request::new(body);
            req.set_timeout(timeout);
            match tokio::time::timeout(timeout, client.quote_delivery(req)).await {
                Ok(result) => result.map(tonic::Response::into_inner),
                Err(_) => Err(Status::deadline_exceeded(format!("no quote within {timeout:?}"))),
            }
        })
    }
}

/// Which quote outcomes tell that delivery is unwell. A refusal of the address (or of the
/// request) is a healthy answer; so is any reply that is not about availability.
pub fn is_failure(result: &Result<dpb::QuoteDeliveryResponse, Status>) -> bool {
    match result {
        Ok(_) => false,
        Err(status) => matches!(
            status.code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Internal
                | Code::Unknown
                | Code::Cancelled
        ),
    }
}

type Classifier = fn(&Result<dpb::QuoteDeliveryResponse, Status>) -> bool;

/// Quotes fees from delivery through a circuit breaker, falling back to the flat fee.
#[derive(Clone)]
pub struct QuoteClient {
    call: CircuitBreaker<QuoteCall, Classifier>,
    timeout: Duration,
    fallback_fee_cents: i64,
}

impl QuoteClient {
    /// Connects lazily: a delivery service that is down at start-up is not an error.
    pub fn new(
        endpoint: &str,
        timeout: Duration,
        fallback_fee_cents: i64,
        breaker: BreakerConfig,
    ) -> anyhow::Result<Self> {
        breaker.validate().map_err(anyhow::Error::msg).context("quote circuit breaker")?;
        let channel = Channel::from_shared(endpoint.to_owned())
            .with_context(|| format!("DELIVERY_ENDPOINT {endpoint:?} is not a URI"))?
            .connect_timeout(timeout)
            .connect_lazy();
        let call = QuoteCall { client: DeliveryServiceClient::new(traced_channel(channel)), timeout };
        let layer = CircuitBreakerLayer::new("delivery-quote", breaker, is_failure as Classifier);
        Ok(Self { call: layer.layer(call), timeout, fallback_fee_cents })
    }

    /// The breaker's state (for tests and diagnostics).
    pub fn breaker_state(&self) -> State {
        self.call.state()
    }

    /// Quotes a fee; falls back to the flat fee when delivery fails, is slow, or the
    /// breaker is open.
    pub async fn quote(&self, address: pb::ShippingAddress, items: Vec<pb::OrderItem>) -> Quote {
        let req = dpb::QuoteDeliveryRequest { shipping_address: Some(address), items };
        let mut call = self.call.clone();
        let result = match call.ready().await {
            Ok(svc) => svc.call(req).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(resp) => Quote::Fee(Fee { cents: resp.fee_cents, source: QuoteSource::DeliveryService }),
            Err(BreakerError::Inner(status))
                if status.code() == Code::FailedPrecondition
                    && reason_of(&status).as_deref() == Some(reasons::UNSERVICEABLE_ADDRESS) =>
            {
                Quote::Unserviceable(status.message().to_owned())
            }
            Err(BreakerError::Inner(status)) if status.code() == Code::DeadlineExceeded => {
                tracing::warn!(timeout = ?self.timeout, "quote timed out; using the flat fee");
                self.fallback()
            }
            Err(BreakerError::Inner(status)) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "quote failed; using the flat fee");
                self.fallback()
            }
            Err(open @ BreakerError::Open { .. }) => {
                tracing::debug!(%open, "quote skipped; using the flat fee");
                self.fallback()
            }
        }
    }

    fn fallback(&self) -> Quote {
        Quote::Fee(Fee { cents: self.fallback_fee_cents, source: QuoteSource::Fallback })
    }
}
