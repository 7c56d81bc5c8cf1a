//! The `OrderService` API edge: validation, idempotency, and the typed errors of each
//! operation ([`PlaceOrderError`], [`CancelOrderError`]), each mapped to a gRPC status in
//! one `From` impl.

use chrono::{DateTime, Datelike, Utc};
use cloudmart_platform::{
    db::{self, is_unique_violation},
    grpc::{internal, invalid_argument, not_found, refusal},
    outbox::OutboxSignal,
    proto::{
        contract::{Address, reasons},
        order::v1::{self as pb, order_service_server::OrderService},
    },
};
use sea_orm::{DatabaseConnection, DbErr};
use tonic::{Request, Response, Status};

use crate::{
    convert,
    domain::{self, FieldError, Order, OrderEvent, Origin, Transition},
    quote::{Quote, QuoteClient},
    store::{self, StoreError},
};

/// Implements `cloudmart.order.v1.OrderService`.
#[derive(Clone)]
pub struct OrderApi {
    pub(crate) db: DatabaseConnection,
    pub(crate) quotes: QuoteClient,
    pub(crate) signal: OutboxSignal,
}

/// Why `PlaceOrder` failed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceOrderError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// Delivery refused the address.
    #[error("unserviceable address: {0}")]
    Unserviceable(String),
    /// The insert lost an idempotency race, yet no order holds the key.
    #[error("idempotency conflict without a row")]
    IdempotencyConflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<DbErr> for PlaceOrderError {
    fn from(e: DbErr) -> Self {
        PlaceOrderError::Store(e.into())
    }
}

impl From<PlaceOrderError> for Status {
    fn from(e: PlaceOrderError) -> Self {
        match e {
            PlaceOrderError::Invalid(e) => e.into(),
            PlaceOrderError::Unserviceable(message) => refusal(reasons::UNSERVICEABLE_ADDRESS, message),
            e @ (PlaceOrderError::IdempotencyConflict | PlaceOrderError::Store(_)) => internal(e),
        }
    }
}

/// Why `CancelOrder` failed.
#[derive(Debug, thiserror::Error)]
pub enum CancelOrderError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("order {0} not found")]
    NotFound(String),
    /// The state machine refused (the order is already cancelled).
    #[error("{0}")]
    InvalidState(String),
    /// Every attempt lost to a concurrent change.
    #[error("order changed concurrently; retry")]
    Contended,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<DbErr> for CancelOrderError {
    fn from(e: DbErr) -> Self {
        CancelOrderError::Store(e.into())
    }
}

impl From<CancelOrderError> for Status {
    fn from(e: CancelOrderError) -> Self {
        match e {
            CancelOrderError::Invalid(e) => e.into(),
            CancelOrderError::NotFound(id) => not_found("order", &id),
            CancelOrderError::InvalidState(message) => refusal(reasons::INVALID_STATE, message),
            e @ CancelOrderError::Contended => Status::aborted(e.to_string()),
            CancelOrderError::Store(e) => e.into(),
        }
    }
}

/// A store failure in a read (`GetOrder`, `ListOrders`): the cause is logged.
impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        internal(e)
    }
}

const DEFAULT_PAGE_SIZE: i32 = 20;
const MAX_PAGE_SIZE: i32 = 100;

fn encode_token(order: &Order) -> String {
    format!("{}~{}", order.created_at.timestamp_micros(), order.order_id)
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

impl OrderApi {
    /// `PlaceOrder`: the order placed now, or the one an earlier call with the same
    /// idempotency key placed.
    async fn place(&self, req: pb::PlaceOrderRequest) -> Result<Order, PlaceOrderError> {
        let customer_id = domain::customer_id(&req.customer_id)?;
        let raw: Vec<(String, i32, i64)> =
            req.items.iter().map(|i| (i.sku.clone(), i.quantity, i.unit_price_cents)).collect();
        let lines = domain::line_items(&raw)?;
        let address = Address::parse(req.shipping_address.as_ref())?;
        let key = domain::idempotency_key(&req.idempotency_key)?;

        if let Some(k) = &key
            && let Some(existing) = store::find_by_idempotency_key(&self.db, &customer_id, k).await?
        {
            return Ok(existing);
        }

        let fee = match self.quotes.quote(address.to_proto(), convert::items(&lines.items)).await {
            Quote::Fee(fee) => fee,
            Quote::Unserviceable(message) => return Err(PlaceOrderError::Unserviceable(message)),
        };
        let order = Order::new(
            uuid::Uuid::new_v4().to_string(),
            customer_id,
            Origin::Request { idempotency_key: key.clone() },
            lines,
            address,
            fee,
            Utc::now(),
        );
        let (txn, span) = db::begin(&self.db, "place_order").await?;
        match store::insert_placed(&txn, &order).await {
            Ok(()) => {
                span.commit(txn).await?;
                self.signal.notify();
                tracing::info!(order_id = %order.order_id, customer_id = %order.customer_id, "order placed");
                crate::count_reached(order.status);
                Ok(order)
            }
            Err(StoreError::Db(e)) if is_unique_violation(&e) && key.is_some() => {
                // A concurrent retry with the same key won the race: answer with its order.
                txn.rollback().await?;
                let key = key.as_deref().unwrap_or_default();
                store::find_by_idempotency_key(&self.db, &order.customer_id, key)
                    .await?
                    .ok_or(PlaceOrderError::IdempotencyConflict)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `CancelOrder`: the cancelled order (or the order as it is, when the state machine
    /// absorbs the request).
    async fn cancel(&self, req: pb::CancelOrderRequest) -> Result<Order, CancelOrderError> {
        let id = domain::order_id(&req.order_id)?.to_string();
        let reason = cloudmart_platform::validate::optional_text("reason", &req.reason)?;
        let event = OrderEvent::CancelRequested { reason };
        for _attempt in 0..5 {
            let (txn, span) = db::begin(&self.db, "cancel_order").await?;
            let order = store::find(&txn, &id).await?.ok_or_else(|| CancelOrderError::NotFound(id.clone()))?;
            match order.decide(&event) {
                Transition::To(change) => match store::apply(&txn, &order, change).await? {
                    Some(updated) => {
                        span.commit(txn).await?;
                        self.signal.notify();
                        tracing::info!(order_id = %id, "order cancelled by request");
                        crate::count_reached(updated.status);
                        return Ok(updated);
                    }
                    None => continue,
                },
                Transition::Reject(message) => return Err(CancelOrderError::InvalidState(message)),
                Transition::Ignore => return Ok(order),
            }
        }
        Err(CancelOrderError::Contended)
    }
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        let order = self.place(request.into_inner()).await?;
        Ok(Response::new(pb::PlaceOrderResponse { order: Some(pb::Order::from(&order)) }))
    }

    async fn get_order(&self, request: Request<pb::GetOrderRequest>) -> Result<Response<pb::Order>, Status> {
        let id = domain::order_id(&request.get_ref().order_id)?.to_string();
        let order = store::find(&self.db, &id).await?.ok_or_else(|| not_found("order", &id))?;
        Ok(Response::new(pb::Order::from(&order)))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let req = request.into_inner();
        let customer_id = domain::customer_id(&req.customer_id)?;
        let size = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if (1..=MAX_PAGE_SIZE).contains(&n) => n,
            _ => return Err(invalid_argument("page_size", format!("must be between 0 and {MAX_PAGE_SIZE}"))),
        };
        let after = decode_token(&req.page_token)?;
        let mut orders = store::list(&self.db, &customer_id, after, size as u64 + 1).await?;
        let next_page_token = if orders.len() > size as usize {
            orders.truncate(size as usize);
            orders.last().map(encode_token).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListOrdersResponse {
            orders: orders.iter().map(pb::Order::from).collect(),
            next_page_token,
        }))
    }

    async fn cancel_order(&self, request: Request<pb::CancelOrderRequest>) -> Result<Response<pb::Order>, Status> {
        let order = self.cancel(request.into_inner()).await?;
        Ok(Response::new(pb::Order::from(&order)))
    }
}
