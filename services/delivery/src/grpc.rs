//! The `DeliveryService` API edge: requests checked into typed errors, each operation's
//! error converted to a `tonic::Status` in one place.

use cloudmart_platform::{
    grpc::{internal, invalid_argument, not_found, refusal},
    proto::{
        contract::reasons,
        delivery::v1::{self as pb, delivery_service_server::DeliveryService},
    },
    validate::{self, FieldError},
};
use sea_orm::DatabaseConnection;
use tonic::{Request, Response, Status};

use crate::{
    domain::{self, Delivery, DeliveryStatus, Rules},
    store::{self, LoadError},
};

#[derive(Clone)]
pub struct DeliveryApi {
    pub(crate) db: DatabaseConnection,
    pub(crate) rules: Rules,
}

/// Why `QuoteDelivery` failed.
#[derive(Debug, thiserror::Error)]
pub enum QuoteError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("delivery does not serve country {country} (serves {served})")]
    Unserviceable { country: String, served: String },
}

impl From<QuoteError> for Status {
    fn from(e: QuoteError) -> Self {
        match e {
            QuoteError::Invalid(f) => invalid_argument(&f.field, f.description),
            QuoteError::Unserviceable { .. } => refusal(reasons::UNSERVICEABLE_ADDRESS, e.to_string()),
        }
    }
}

/// Why `GetDelivery` failed.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("delivery for order {0} not found")]
    NotFound(String),
    #[error("loading the delivery")]
    Load(#[from] LoadError),
}

impl From<GetError> for Status {
    fn from(e: GetError) -> Self {
        match e {
            GetError::Invalid(f) => invalid_argument(&f.field, f.description),
            GetError::NotFound(order_id) => not_found("delivery for order", &order_id),
            GetError::Load(e) => internal(format_args!("{:#}", anyhow::Error::new(e))),
        }
    }
}

/// The one mapping of the stored status to the API's (`UNSPECIFIED` is never stored).
impl From<DeliveryStatus> for pb::DeliveryStatus {
    fn from(s: DeliveryStatus) -> Self {
        match s {
            DeliveryStatus::Scheduled => pb::DeliveryStatus::Scheduled,
            DeliveryStatus::Failed => pb::DeliveryStatus::Failed,
            DeliveryStatus::Cancelled => pb::DeliveryStatus::Cancelled,
        }
    }
}

/// The API's status as a stored one; `UNSPECIFIED` is none.
impl TryFrom<pb::DeliveryStatus> for DeliveryStatus {
    type Error = FieldError;

    fn try_from(s: pb::DeliveryStatus) -> Result<Self, FieldError> {
        match s {
            pb::DeliveryStatus::Scheduled => Ok(DeliveryStatus::Scheduled),
            pb::DeliveryStatus::Failed => Ok(DeliveryStatus::Failed),
            pb::DeliveryStatus::Cancelled => Ok(DeliveryStatus::Cancelled),
            pb::DeliveryStatus::Unspecified => Err(FieldError::new("status", "must be specified")),
        }
    }
}

impl From<Delivery> for pb::Delivery {
    fn from(d: Delivery) -> Self {
        pb::Delivery {
            status: pb::DeliveryStatus::from(d.status).into(),
            delivery_id: d.delivery_id,
            order_id: d.order_id,
            shipping_address: Some(d.ship_to),
            scheduled_for: d.scheduled_for.map(store::ts),
            failure_reason: d.failure_reason.map(domain::FailureReason::code).unwrap_or_default(),
        }
    }
}

impl DeliveryApi {
    fn quote(&self, req: pb::QuoteDeliveryRequest) -> Result<domain::Quote, QuoteError> {
        let addr = req.shipping_address.ok_or_else(|| FieldError::new("shipping_address", "is required"))?;
        for (field, value) in [
            ("shipping_address.line1", &addr.line1),
            ("shipping_address.city", &addr.city),
            ("shipping_address.postal_code", &addr.postal_code),
        ] {
            validate::optional_text(field, value)?;
        }
        let country = addr.country.trim().to_ascii_uppercase();
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(FieldError::new("shipping_address.country", "must be a two-letter ISO 3166-1 code").into());
        }
        if addr.postal_code.trim().is_empty() {
            return Err(FieldError::new("shipping_address.postal_code", "is required").into());
        }
        let mut units: i64 = 0;
        for (i, item) in req.items.iter().enumerate() {
            if item.quantity <= 0 {
                return Err(FieldError::new(format!("items[{i}].quantity"), "must be positive").into());
            }
            units = units.saturating_add(i64::from(item.quantity));
        }
        if !self.rules.serves(&country) {
            return Err(QuoteError::Unserviceable { country, served: self.rules.countries.join(",") });
        }
        Ok(domain::quote(&country, units.max(1)))
    }

    async fn get(&self, req: pb::GetDeliveryRequest) -> Result<Delivery, GetError> {
        let order_id = validate::uuid("order_id", &req.order_id)?;
        store::find_by_order(&self.db, &order_id).await?.ok_or(GetError::NotFound(order_id))
    }
}

#[tonic::async_trait]
impl DeliveryService for DeliveryApi {
    async fn quote_delivery(
        &self,
        request: Request<pb::QuoteDeliveryRequest>,
    ) -> Result<Response<pb::QuoteDeliveryResponse>, Status> {
        let q = self.quote(request.into_inner())?;
        Ok(Response::new(pb::QuoteDeliveryResponse { fee_cents: q.fee_cents, estimated_days: q.estimated_days }))
    }

    async fn get_delivery(&self, request: Request<pb::GetDeliveryRequest>) -> Result<Response<pb::Delivery>, Status> {
        Ok(Response::new(self.get(request.into_inner()).await?.into()))
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::Iterable;

    use super::*;

    #[test]
    fn statuses_map_to_the_api_and_back() {
        for s in DeliveryStatus::iter() {
            assert_eq!(DeliveryStatus::try_from(pb::DeliveryStatus::from(s)), Ok(s));
        }
        assert!(DeliveryStatus::try_from(pb::DeliveryStatus::Unspecified).is_err());
    }
}
