//! The `TimeSaleService` API edge: requests to domain calls, the domain to messages
//! (the one conversion of each aggregate and of [`PurchaseStatus`]), and each
//! operation's error to its `tonic::Status` (one `From` per error type).

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Datelike, Utc};
use cloudmart_platform::{
    grpc::{internal, not_found, refusal},
    metrics,
    proto::{
        contract::{Address, reasons},
        timesale::v1::{self as pb, time_sale_service_server::TimeSaleService},
    },
    validate::{self, FieldError},
};
use sea_orm::{DatabaseConnection, DbErr};
use tokio::sync::RwLock;
use tonic::{Request, Response, Status};

use crate::{
    domain::{Ask, Inactive, NewSale, Purchase, PurchaseStatus, Sale, SaleTerms},
    ledger::{Reserve, ReserveError, StockLedger},
    store,
};

#[derive(Clone)]
pub struct TimeSaleApi {
    pub(crate) db: DatabaseConnection,
    pub(crate) ledger: StockLedger,
    /// Sale terms never change once created, so they are cached; stock never is.
    pub(crate) terms: Arc<RwLock<HashMap<String, SaleTerms>>>,
}

/// Why CreateSale failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateSaleError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Db(#[from] DbErr),
}

impl From<CreateSaleError> for Status {
    fn from(e: CreateSaleError) -> Self {
        match e {
            CreateSaleError::Invalid(e) => e.into(),
            CreateSaleError::Db(e) => internal(e),
        }
    }
}

/// Why Purchase was refused (or failed).
#[derive(Debug, thiserror::Error)]
pub enum PurchaseError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("sale {0} not found")]
    SaleNotFound(String),
    #[error("sale {sale_id} {why}")]
    SaleNotActive { sale_id: String, why: Inactive },
    /// More than any customer may hold, refused before the ledger is asked.
    #[error("quantity {quantity} exceeds the per-customer limit of {limit}")]
    QuantityOverLimit { quantity: i32, limit: i32 },
    #[error(transparent)]
    Reserve(#[from] ReserveError),
    #[error(transparent)]
    Db(#[from] DbErr),
}

impl From<PurchaseError> for Status {
    fn from(e: PurchaseError) -> Self {
        match e {
            PurchaseError::Invalid(e) => e.into(),
            PurchaseError::SaleNotFound(id) => not_found("sale", &id),
            PurchaseError::SaleNotActive { .. } => refusal(reasons::SALE_NOT_ACTIVE, e.to_string()),
            PurchaseError::QuantityOverLimit { .. } | PurchaseError::Reserve(ReserveError::LimitExceeded { .. }) => {
                refusal(reasons::LIMIT_EXCEEDED, e.to_string())
            }
            PurchaseError::Reserve(ReserveError::SoldOut { .. }) => refusal(reasons::SOLD_OUT, e.to_string()),
            PurchaseError::Reserve(ReserveError::Db(_) | ReserveError::Stopped) | PurchaseError::Db(_) => internal(e),
        }
    }
}

/// `PURCHASE_STATUS_UNSPECIFIED`: not a status a purchase can be in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("purchase status is unspecified")]
pub struct UnspecifiedStatus;

impl From<PurchaseStatus> for pb::PurchaseStatus {
    fn from(s: PurchaseStatus) -> Self {
        match s {
            PurchaseStatus::Reserved => pb::PurchaseStatus::Reserved,
            PurchaseStatus::Ordered => pb::PurchaseStatus::Ordered,
            PurchaseStatus::Cancelled => pb::PurchaseStatus::Cancelled,
        }
    }
}

impl TryFrom<pb::PurchaseStatus> for PurchaseStatus {
    type Error = UnspecifiedStatus;

    fn try_from(s: pb::PurchaseStatus) -> Result<Self, UnspecifiedStatus> {
        match s {
            pb::PurchaseStatus::Unspecified => Err(UnspecifiedStatus),
            pb::PurchaseStatus::Reserved => Ok(PurchaseStatus::Reserved),
            pb::PurchaseStatus::Ordered => Ok(PurchaseStatus::Ordered),
            pb::PurchaseStatus::Cancelled => Ok(PurchaseStatus::Cancelled),
        }
    }
}

impl From<&Sale> for pb::Sale {
    fn from(s: &Sale) -> Self {
        pb::Sale {
            sale_id: s.terms.sale_id.clone(),
            sku: s.terms.sku.clone(),
            title: s.title.clone(),
            price_cents: s.terms.price_cents,
            total_stock: s.total_stock,
            remaining_stock: s.remaining_stock,
            per_customer_limit: s.terms.per_customer_limit,
            starts_at: Some(store::ts(s.terms.starts_at)),
            ends_at: Some(store::ts(s.terms.ends_at)),
        }
    }
}

impl From<&Purchase> for pb::Purchase {
    fn from(p: &Purchase) -> Self {
        pb::Purchase {
            purchase_id: p.purchase_id.clone(),
            sale_id: p.sale_id.clone(),
            customer_id: p.customer_id.clone(),
            quantity: p.quantity,
            status: pb::PurchaseStatus::from(p.status).into(),
            order_id: p.order_id.clone().unwrap_or_default(),
        }
    }
}

/// A sale time: a valid `Timestamp` (nanos in 0..1e9) between 1970 and 9999 — what every
/// backend stores (PostgreSQL refuses times outside 4713 BC..294276 AD, which surfaced as
/// INTERNAL) and RFC 3339 prints.
fn time(field: &str, t: Option<prost_types::Timestamp>) -> Result<Option<DateTime<Utc>>, FieldError> {
    let Some(t) = t else { return Ok(None) };
    let nanos = u32::try_from(t.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| FieldError::new(field, "nanos must be between 0 and 999999999"))?;
    DateTime::<Utc>::from_timestamp(t.seconds, nanos)
        .filter(|at| (1970..=9999).contains(&at.year()))
        .map(Some)
        .ok_or_else(|| FieldError::new(field, "must be between 1970-01-01 and 9999-12-31"))
}

impl TimeSaleApi {
    async fn sale_terms(&self, sale_id: &str) -> Result<SaleTerms, PurchaseError> {
        if let Some(t) = self.terms.read().await.get(sale_id) {
            return Ok(t.clone());
        }
        let sale = store::find_sale(&self.db, sale_id)
            .await?
            .ok_or_else(|| PurchaseError::SaleNotFound(sale_id.to_owned()))?;
        self.terms.write().await.insert(sale_id.to_owned(), sale.terms.clone());
        Ok(sale.terms)
    }

    async fn create(&self, r: pb::CreateSaleRequest) -> Result<Sale, CreateSaleError> {
        let new = NewSale {
            sku: validate::text("sku", &r.sku)?,
            title: validate::text("title", &r.title)?,
            price_cents: r.price_cents,
            total_stock: r.total_stock,
            per_customer_limit: r.per_customer_limit,
            starts_at: time("starts_at", r.starts_at)?,
            ends_at: time("ends_at", r.ends_at)?,
        };
        let sale = Sale::new(uuid::Uuid::new_v4().to_string(), new, Utc::now())?;
        store::insert_sale(&self.db, &sale).await?;
        tracing::info!(sale_id = %sale.terms.sale_id, sku = %sale.terms.sku, stock = sale.total_stock, "sale created");
        Ok(sale)
    }

    async fn buy(&self, r: pb::PurchaseRequest) -> Result<Purchase, PurchaseError> {
        let sale_id = validate::uuid("sale_id", &r.sale_id)?;
        let customer_id = validate::text("customer_id", &r.customer_id)?;
        if r.quantity <= 0 {
            return Err(FieldError::new("quantity", "must be at least 1").into());
        }
        let address = Address::parse(r.shipping_address.as_ref())?;
        let key = validate::idempotency_key(&r.idempotency_key)?;
        let sale = self.sale_terms(&sale_id).await?;
        if let Some(k) = &key
            && let Some(p) = store::find_purchase_by_key(&self.db, &customer_id, k).await?
        {
            return Ok(p);
        }
        sale.check_active(Utc::now()).map_err(|why| PurchaseError::SaleNotActive { sale_id, why })?;
        if r.quantity > sale.per_customer_limit {
            return Err(PurchaseError::QuantityOverLimit { quantity: r.quantity, limit: sale.per_customer_limit });
        }
        let req = Reserve {
            ask: Ask { customer_id, quantity: r.quantity, idempotency_key: key },
            address,
            span: tracing::Span::current(),
        };
        let result = self.ledger.reserve(&sale, req).await;
        let outcome = match &result {
            Ok(_) => "reserved",
            Err(ReserveError::SoldOut { .. }) => "sold_out",
            Err(ReserveError::LimitExceeded { .. }) => "limit_exceeded",
            Err(ReserveError::Db(_) | ReserveError::Stopped) => "error",
        };
        metrics::counter("timesale_purchases_total", "Purchase attempts by outcome.", &[("outcome", outcome)]);
        Ok(result?)
    }
}

#[tonic::async_trait]
impl TimeSaleService for TimeSaleApi {
    async fn create_sale(&self, request: Request<pb::CreateSaleRequest>) -> Result<Response<pb::Sale>, Status> {
        let sale = self.create(request.into_inner()).await?;
        Ok(Response::new((&sale).into()))
    }

    async fn get_sale(&self, request: Request<pb::GetSaleRequest>) -> Result<Response<pb::Sale>, Status> {
        let id = validate::uuid("sale_id", &request.get_ref().sale_id)?;
        let sale = store::find_sale(&self.db, &id).await.map_err(internal)?.ok_or_else(|| not_found("sale", &id))?;
        let labels = [("sale_id", sale.terms.sale_id.as_str())];
        if sale.terms.ends_at > Utc::now() {
            metrics::gauge(
                "timesale_stock_remaining",
                "Remaining stock of a sale (as last read).",
                &labels,
                i64::from(sale.remaining_stock),
            );
        } else {
            metrics::gauge_remove("timesale_stock_remaining", &labels);
        }
        Ok(Response::new((&sale).into()))
    }

    async fn list_sales(
        &self,
        request: Request<pb::ListSalesRequest>,
    ) -> Result<Response<pb::ListSalesResponse>, Status> {
        let at = request.get_ref().active_only.then(Utc::now);
        let sales = store::list_sales(&self.db, at).await.map_err(internal)?;
        Ok(Response::new(pb::ListSalesResponse { sales: sales.iter().map(pb::Sale::from).collect() }))
    }

    async fn purchase(&self, request: Request<pb::PurchaseRequest>) -> Result<Response<pb::PurchaseResponse>, Status> {
        let purchase = self.buy(request.into_inner()).await?;
        Ok(Response::new(pb::PurchaseResponse { purchase: Some((&purchase).into()) }))
    }

    async fn get_purchase(&self, request: Request<pb::GetPurchaseRequest>) -> Result<Response<pb::Purchase>, Status> {
        let id = validate::uuid("purchase_id", &request.get_ref().purchase_id)?;
        let p =
            store::find_purchase(&self.db, &id).await.map_err(internal)?.ok_or_else(|| not_found("purchase", &id))?;
        Ok(Response::new((&p).into()))
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::Iterable;

    use super::*;

    #[test]
    fn purchase_statuses_convert_to_and_from_the_contract() {
        for s in PurchaseStatus::iter() {
            assert_eq!(PurchaseStatus::try_from(pb::PurchaseStatus::from(s)), Ok(s));
        }
        assert_eq!(PurchaseStatus::try_from(pb::PurchaseStatus::Unspecified), Err(UnspecifiedStatus));
    }
}
