//! The `DeliveryService` API edge.

use cloudmart_platform::{
    grpc::{internal, invalid_argument, not_found, reasons, refusal},
    proto::{
        delivery::v1::{self as pb, delivery_service_server::DeliveryService},
        order::v1 as opb,
    },
    validate,
};
use sea_orm::DatabaseConnection;
use tonic::{Request, Response, Status};

use crate::{
    domain::{self, Rules},
    store::{self, DeliveryRow},
};

#[derive(Clone)]
pub struct DeliveryApi {
    pub(crate) db: DatabaseConnection,
    pub(crate) rules: Rules,
}

fn to_proto(row: &DeliveryRow) -> pb::Delivery {
    let status = match row.status.as_str() {
        "SCHEDULED" => pb::DeliveryStatus::Scheduled,
        "FAILED" => pb::DeliveryStatus::Failed,
        "CANCELLED" => pb::DeliveryStatus::Cancelled,
        _ => pb::DeliveryStatus::Unspecified,
    };
    pb::Delivery {
        delivery_id: row.delivery_id.clone(),
        order_id: row.order_id.clone(),
        status: status as i32,
        shipping_address: Some(opb::ShippingAddress {
            line1: row.ship_line1.clone(),
            city: row.ship_city.clone(),
            postal_code: row.ship_postal_code.clone(),
            country: row.ship_country.clone(),
        }),
        scheduled_for: row.scheduled_for.map(store::ts),
        failure_reason: row.failure_reason.clone().unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl DeliveryService for DeliveryApi {
    async fn quote_delivery(
        &self,
        request: Request<pb::QuoteDeliveryRequest>,
    ) -> Result<Response<pb::QuoteDeliveryResponse>, Status> {
        let req = request.into_inner();
        let addr = req.shipping_address.ok_or_else(|| invalid_argument("shipping_address", "is required"))?;
        for (field, value) in [
            ("shipping_address.line1", &addr.line1),
            ("shipping_address.city", &addr.city),
            ("shipping_address.postal_code", &addr.postal_code),
        ] {
            validate::optional_text(field, value)?;
        }
        let country = addr.country.trim().to_ascii_uppercase();
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid_argument("shipping_address.country", "must be a two-letter ISO 3166-1 code"));
        }
        if addr.postal_code.trim().is_empty() {
            return Err(invalid_argument("shipping_address.postal_code", "is required"));
        }
        let mut units: i64 = 0;
        for (i, item) in req.items.iter().enumerate() {
            if item.quantity <= 0 {
                return Err(invalid_argument(&format!("items[{i}].quantity"), "must be positive"));
            }
            units = units.saturating_add(i64::from(item.quantity));
        }
        if !self.rules.serves(&country) {
            return Err(refusal(
                reasons::UNSERVICEABLE_ADDRESS,
                format!("delivery does not serve country {country} (serves {})", self.rules.countries.join(",")),
            ));
        }
        let q = domain::quote(&country, units.max(1));
        Ok(Response::new(pb::QuoteDeliveryResponse { fee_cents: q.fee_cents, estimated_days: q.estimated_days }))
    }

    async fn get_delivery(&self, request: Request<pb::GetDeliveryRequest>) -> Result<Response<pb::Delivery>, Status> {
        let id = request.into_inner().order_id;
        let id =
            uuid::Uuid::parse_str(id.trim()).map_err(|_| invalid_argument("order_id", "must be a UUID"))?.to_string();
        let row = store::find_by_order(&self.db, &id)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found("delivery for order", &id))?;
        Ok(Response::new(to_proto(&row)))
    }
}
