//! The `TimeSaleService` API edge.

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Datelike, Utc};
use cloudmart_platform::{
    grpc::{internal, not_found, reasons, refusal},
    metrics,
    proto::timesale::v1::{self as pb, time_sale_service_server::TimeSaleService},
    validate::{self, FieldError},
};
use sea_orm::DatabaseConnection;
use tokio::sync::RwLock;
use tonic::{Request, Response, Status};

use crate::{
    domain::{self, PurchaseStatus, SaleTerms},
    ledger::{Reserve, ReserveError, StockLedger},
    store::{self, PurchaseRow, SaleRow},
};

#[derive(Clone)]
pub struct TimeSaleApi {
    pub(crate) db: DatabaseConnection,
    pub(crate) ledger: StockLedger,
    /// Sale terms never change once created, so they are cached; stock never is.
    pub(crate) terms: Arc<RwLock<HashMap<String, SaleTerms>>>,
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

fn sale_to_proto(s: &SaleRow) -> pb::Sale {
    pb::Sale {
        sale_id: s.sale_id.clone(),
        sku: s.sku.clone(),
        title: s.title.clone(),
        price_cents: s.price_cents,
        total_stock: s.total_stock,
        remaining_stock: s.remaining_stock,
        per_customer_limit: s.per_customer_limit,
        starts_at: Some(store::ts(s.starts_at)),
        ends_at: Some(store::ts(s.ends_at)),
    }
}

pub fn purchase_to_proto(p: &PurchaseRow) -> pb::Purchase {
    let status = match PurchaseStatus::parse(&p.status) {
        Some(PurchaseStatus::Reserved) => pb::PurchaseStatus::Reserved,
        Some(PurchaseStatus::Ordered) => pb::PurchaseStatus::Ordered,
        Some(PurchaseStatus::Cancelled) => pb::PurchaseStatus::Cancelled,
        None => pb::PurchaseStatus::Unspecified,
    };
    pb::Purchase {
        purchase_id: p.purchase_id.clone(),
        sale_id: p.sale_id.clone(),
        customer_id: p.customer_id.clone(),
        quantity: p.quantity,
        status: status as i32,
        order_id: p.order_id.clone().unwrap_or_default(),
    }
}

impl TimeSaleApi {
    async fn sale_terms(&self, sale_id: &str) -> Result<SaleTerms, Status> {
        if let Some(t) = self.terms.read().await.get(sale_id) {
            return Ok(t.clone());
        }
        let row =
            store::find_sale(&self.db, sale_id).await.map_err(internal)?.ok_or_else(|| not_found("sale", sale_id))?;
        let t = store::terms(&row);
        self.terms.write().await.insert(sale_id.to_owned(), t.clone());
        Ok(t)
    }
}

#[tonic::async_trait]
impl TimeSaleService for TimeSaleApi {
    async fn create_sale(&self, request: Request<pb::CreateSaleRequest>) -> Result<Response<pb::Sale>, Status> {
        let r = request.into_inner();
        let sku = validate::text("sku", &r.sku)?;
        let title = validate::text("title", &r.title)?;
        let (starts_at, ends_at) = domain::sale_numbers(
            r.price_cents,
            r.total_stock,
            r.per_customer_limit,
            time("starts_at", r.starts_at)?,
            time("ends_at", r.ends_at)?,
        )?;
        let row = SaleRow {
            sale_id: uuid::Uuid::new_v4().to_string(),
            sku,
            title,
            price_cents: r.price_cents,
            total_stock: r.total_stock,
            remaining_stock: r.total_stock,
            per_customer_limit: r.per_customer_limit,
            starts_at,
            ends_at,
            created_at: Utc::now(),
        };
        store::insert_sale(&self.db, row.clone()).await.map_err(internal)?;
        tracing::info!(sale_id = %row.sale_id, sku = %row.sku, stock = row.total_stock, "sale created");
        Ok(Response::new(sale_to_proto(&row)))
    }

    async fn get_sale(&self, request: Request<pb::GetSaleRequest>) -> Result<Response<pb::Sale>, Status> {
        let id = validate::uuid("sale_id", &request.get_ref().sale_id)?;
        let row = store::find_sale(&self.db, &id).await.map_err(internal)?.ok_or_else(|| not_found("sale", &id))?;
        if row.ends_at > Utc::now() {
            metrics::gauge(
                "timesale_stock_remaining",
                "Remaining stock of a sale (as last read).",
                &[("sale_id", &row.sale_id)],
                i64::from(row.remaining_stock),
            );
        } else {
            metrics::gauge_remove("timesale_stock_remaining", &[("sale_id", &row.sale_id)]);
        }
        Ok(Response::new(sale_to_proto(&row)))
    }

    async fn list_sales(
        &self,
        request: Request<pb::ListSalesRequest>,
    ) -> Result<Response<pb::ListSalesResponse>, Status> {
        let at = request.get_ref().active_only.then(Utc::now);
        let rows = store::list_sales(&self.db, at).await.map_err(internal)?;
        Ok(Response::new(pb::ListSalesResponse { sales: rows.iter().map(sale_to_proto).collect() }))
    }

    async fn purchase(&self, request: Request<pb::PurchaseRequest>) -> Result<Response<pb::PurchaseResponse>, Status> {
        let r = request.into_inner();
        let sale_id = validate::uuid("sale_id", &r.sale_id)?;
        let customer_id = validate::text("customer_id", &r.customer_id)?;
        if r.quantity <= 0 {
            return Err(FieldError::new("quantity", "must be at least 1").into());
        }
        let address = validate::address(r.shipping_address.as_ref())?;
        let key = validate::idempotency_key(&r.idempotency_key)?;
        let sale = self.sale_terms(&sale_id).await?;
        if let Some(k) = &key
            && let Some(p) = store::find_purchase_by_key(&self.db, &customer_id, k).await.map_err(internal)?
        {
            return Ok(Response::new(pb::PurchaseResponse { purchase: Some(purchase_to_proto(&p)) }));
        }
        let now = Utc::now();
        if !sale.is_active(now) {
            let when = if now < sale.starts_at { "has not started yet" } else { "has ended" };
            return Err(refusal(reasons::SALE_NOT_ACTIVE, format!("sale {sale_id} {when}")));
        }
        if r.quantity > sale.per_customer_limit {
            return Err(refusal(
                reasons::LIMIT_EXCEEDED,
                format!("quantity {} exceeds the per-customer limit of {}", r.quantity, sale.per_customer_limit),
            ));
        }
        let req = Reserve {
            customer_id,
            quantity: r.quantity,
            idempotency_key: key,
            address,
            span: tracing::Span::current(),
        };
        let result = self.ledger.reserve(&sale, req).await;
        let outcome = match &result {
            Ok(_) => "reserved",
            Err(ReserveError::SoldOut) => "sold_out",
            Err(ReserveError::LimitExceeded) => "limit_exceeded",
            Err(_) => "error",
        };
        metrics::counter("timesale_purchases_total", "Purchase attempts by outcome.", &[("outcome", outcome)]);
        match result {
            Ok(p) => Ok(Response::new(pb::PurchaseResponse { purchase: Some(purchase_to_proto(&p)) })),
            Err(ReserveError::SoldOut) => Err(refusal(reasons::SOLD_OUT, format!("sale {sale_id} is sold out"))),
            Err(ReserveError::LimitExceeded) => Err(refusal(
                reasons::LIMIT_EXCEEDED,
                format!("the per-customer limit of {} for sale {sale_id} is reached", sale.per_customer_limit),
            )),
            Err(e) => Err(internal(e)),
        }
    }

    async fn get_purchase(&self, request: Request<pb::GetPurchaseRequest>) -> Result<Response<pb::Purchase>, Status> {
        let id = validate::uuid("purchase_id", &request.get_ref().purchase_id)?;
        let p =
            store::find_purchase(&self.db, &id).await.map_err(internal)?.ok_or_else(|| not_found("purchase", &id))?;
        Ok(Response::new(purchase_to_proto(&p)))
    }
}
