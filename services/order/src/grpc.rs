//! The `OrderService` API edge: validation, idempotency, mapping to gRPC statuses.

use chrono::{DateTime, Datelike, Utc};
use cloudmart_platform::{
    db::{self, is_unique_violation},
    grpc::{internal, invalid_argument, not_found, reasons, refusal},
    outbox::OutboxSignal,
    proto::order::v1::{self as pb, order_service_server::OrderService},
};
use sea_orm::{DatabaseConnection, DbErr};
use tonic::{Request, Response, Status};

use crate::{
    domain::{self, FieldError, OrderEvent, OrderStatus, Transition},
    quote::{Quote, QuoteClient},
    store::{self, OrderRow},
};

/// Implements `cloudmart.order.v1.OrderService`.
#[derive(Clone)]
pub struct OrderApi {
    pub(crate) db: DatabaseConnection,
    pub(crate) quotes: QuoteClient,
    pub(crate) signal: OutboxSignal,
}

fn bad(e: FieldError) -> Status {
    invalid_argument(&e.field, e.description)
}

fn db_err(e: DbErr) -> Status {
    internal(e)
}

const DEFAULT_PAGE_SIZE: i32 = 20;
const MAX_PAGE_SIZE: i32 = 100;

fn encode_token(row: &OrderRow) -> String {
    format!("{}~{}", row.created_at.timestamp_micros(), row.order_id)
}

fn decode_token(token: &str) -> Result<Option<(DateTime<Utc>, String)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    // Both halves reach the database as query parameters: the id must be the UUID a
    // token carries (a NUL would make PostgreSQL fail the query), the time one a row
    // can have (PostgreSQL refuses timestamps outside 4713 BC..294276 AD).
    let bad = || invalid_argument("page_token", "is not a token returned by ListOrders");
    let (micros, id) = token.split_once('~').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let at =
        DateTime::<Utc>::from_timestamp_micros(micros).filter(|t| (1970..=9999).contains(&t.year())).ok_or_else(bad)?;
    let id = uuid::Uuid::parse_str(id).map_err(|_| bad())?;
    Ok(Some((at, id.to_string())))
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        let req = request.into_inner();
        let customer_id = domain::customer_id(&req.customer_id).map_err(bad)?;
        let raw: Vec<(String, i32, i64)> =
            req.items.iter().map(|i| (i.sku.clone(), i.quantity, i.unit_price_cents)).collect();
        let (items, total) = domain::line_items(&raw).map_err(bad)?;
        let address = cloudmart_platform::validate::address(req.shipping_address.as_ref()).map_err(bad)?;
        let key = domain::idempotency_key(&req.idempotency_key).map_err(bad)?;

        if let Some(k) = &key
            && let Some(existing) = store::find_by_idempotency_key(&self.db, &customer_id, k).await.map_err(db_err)?
        {
            return Ok(Response::new(pb::PlaceOrderResponse { order: Some(store::to_proto(&existing)) }));
        }

        let proto_address = address.to_proto();
        let proto_items = items
            .iter()
            .map(|i| pb::OrderItem { sku: i.sku.clone(), quantity: i.quantity, unit_price_cents: i.unit_price_cents })
            .collect();
        let (fee, quote_source) = match self.quotes.quote(proto_address, proto_items).await {
            Quote::Fee { cents, source } => (cents, source),
            Quote::Unserviceable(msg) => return Err(refusal(reasons::UNSERVICEABLE_ADDRESS, msg)),
        };

        let now = Utc::now();
        let row = OrderRow {
            order_id: uuid::Uuid::new_v4().to_string(),
            customer_id: customer_id.clone(),
            status: OrderStatus::Pending.as_str().to_owned(),
            cancel_reason: None,
            source: "REGULAR".to_owned(),
            time_sale_purchase_id: None,
            items: store::items_to_json(&items),
            ship_line1: address.line1,
            ship_city: address.city,
            ship_postal_code: address.postal_code,
            ship_country: address.country,
            items_total_cents: total,
            delivery_fee_cents: fee,
            quote_source: quote_source.as_str().to_owned(),
            idempotency_key: key.clone(),
            version: 0,
            created_at: now,
            updated_at: now,
        };
        let (txn, span) = db::begin(&self.db, "place_order").await.map_err(db_err)?;
        match store::insert_placed(&txn, row.clone()).await {
            Ok(()) => {
                span.commit(txn).await.map_err(db_err)?;
                self.signal.notify();
                tracing::info!(order_id = %row.order_id, customer_id = %row.customer_id, "order placed");
                cloudmart_platform::metrics::counter(
                    "orders_total",
                    "Orders reaching a status through this process.",
                    &[("status", "PENDING")],
                );
                Ok(Response::new(pb::PlaceOrderResponse { order: Some(store::to_proto(&row)) }))
            }
            Err(e) if is_unique_violation(&e) && key.is_some() => {
                // A concurrent retry with the same key won the race: answer with its order.
                txn.rollback().await.map_err(db_err)?;
                let existing =
                    store::find_by_idempotency_key(&self.db, &customer_id, key.as_deref().unwrap_or_default())
                        .await
                        .map_err(db_err)?
                        .ok_or_else(|| internal("idempotency conflict without a row"))?;
                Ok(Response::new(pb::PlaceOrderResponse { order: Some(store::to_proto(&existing)) }))
            }
            Err(e) => Err(db_err(e)),
        }
    }

    async fn get_order(&self, request: Request<pb::GetOrderRequest>) -> Result<Response<pb::Order>, Status> {
        let id = domain::order_id(&request.get_ref().order_id).map_err(bad)?.to_string();
        let row = store::find(&self.db, &id).await.map_err(db_err)?.ok_or_else(|| not_found("order", &id))?;
        Ok(Response::new(store::to_proto(&row)))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let req = request.into_inner();
        let customer_id = domain::customer_id(&req.customer_id).map_err(bad)?;
        let size = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if (1..=MAX_PAGE_SIZE).contains(&n) => n,
            _ => return Err(invalid_argument("page_size", format!("must be between 0 and {MAX_PAGE_SIZE}"))),
        };
        let after = decode_token(&req.page_token)?;
        let mut rows = store::list(&self.db, &customer_id, after, size as u64 + 1).await.map_err(db_err)?;
        let next_page_token = if rows.len() > size as usize {
            rows.truncate(size as usize);
            rows.last().map(encode_token).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListOrdersResponse {
            orders: rows.iter().map(store::to_proto).collect(),
            next_page_token,
        }))
    }

    async fn cancel_order(&self, request: Request<pb::CancelOrderRequest>) -> Result<Response<pb::Order>, Status> {
        let req = request.into_inner();
        let id = domain::order_id(&req.order_id).map_err(bad)?.to_string();
        let reason = cloudmart_platform::validate::optional_text("reason", &req.reason)?;
        let event = OrderEvent::CancelRequested { reason };
        for _attempt in 0..5 {
            let (txn, span) = db::begin(&self.db, "cancel_order").await.map_err(db_err)?;
            let row = store::find(&txn, &id).await.map_err(db_err)?.ok_or_else(|| not_found("order", &id))?;
            let status =
                OrderStatus::parse(&row.status).ok_or_else(|| internal(format!("bad status {}", row.status)))?;
            match domain::decide(status, &event) {
                Transition::To { status, cancel_reason, emit } => {
                    match store::apply_transition(&txn, &row, status, cancel_reason, emit).await.map_err(db_err)? {
                        Some(updated) => {
                            span.commit(txn).await.map_err(db_err)?;
                            self.signal.notify();
                            tracing::info!(order_id = %id, "order cancelled by request");
                            cloudmart_platform::metrics::counter(
                                "orders_total",
                                "Orders reaching a status through this process.",
                                &[("status", "CANCELLED")],
                            );
                            return Ok(Response::new(store::to_proto(&updated)));
                        }
                        None => continue,
                    }
                }
                Transition::Reject(msg) => return Err(refusal(reasons::INVALID_STATE, msg)),
                Transition::Ignore => return Ok(Response::new(store::to_proto(&row))),
            }
        }
        Err(Status::aborted("order changed concurrently; retry"))
    }
}
