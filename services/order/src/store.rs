//! Persistence of orders (sea-orm), and the one function that applies a decided
//! transition together with its event (transactional outbox).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cloudmart_platform::{
    consumer::CreateProcessedEventsTable,
    outbox::{self, CreateOutboxTable},
    proto::{events::v1 as ev, order::v1 as pb},
};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Schema,
    sea_query::{Expr, Index},
};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};

use crate::domain::{Emit, LineItem, OrderStatus};

/// Source name in `ce_source`.
pub const SOURCE: &str = "order";

pub mod orders {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "orders")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub order_id: String,
        pub customer_id: String,
        pub status: String,
        pub cancel_reason: Option<String>,
        pub source: String,
        pub time_sale_purchase_id: Option<String>,
        /// Line items as JSON (`[{sku, quantity, unit_price_cents}]`).
        pub items: String,
        pub ship_line1: String,
        pub ship_city: String,
        pub ship_postal_code: String,
        pub ship_country: String,
        pub items_total_cents: i64,
        pub delivery_fee_cents: i64,
        pub quote_source: String,
        pub idempotency_key: Option<String>,
        /// Optimistic concurrency: every state change bumps it.
        pub version: i32,
        pub created_at: ChronoDateTimeUtc,
        pub updated_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub use orders::Model as OrderRow;

struct CreateOrders;

impl MigrationName for CreateOrders {
    fn name(&self) -> &str {
        "m0001_order_orders"
    }
}

#[async_trait]
impl MigrationTrait for CreateOrders {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let schema = Schema::new(m.get_database_backend());
        m.create_table(schema.create_table_from_entity(orders::Entity).if_not_exists().to_owned()).await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("orders_idempotency")
                .table(orders::Entity)
                .col(orders::Column::CustomerId)
                .col(orders::Column::IdempotencyKey)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("orders_by_customer")
                .table(orders::Entity)
                .col(orders::Column::CustomerId)
                .col(orders::Column::CreatedAt)
                .to_owned(),
        )
        .await
    }
}

/// The order service's schema.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateOutboxTable), Box::new(CreateProcessedEventsTable), Box::new(CreateOrders)]
    }
}

pub async fn find<C: ConnectionTrait>(db: &C, order_id: &str) -> Result<Option<OrderRow>, DbErr> {
    orders::Entity::find_by_id(order_id.to_owned()).one(db).await
}

pub async fn find_by_idempotency_key<C: ConnectionTrait>(
    db: &C,
    customer_id: &str,
    key: &str,
) -> Result<Option<OrderRow>, DbErr> {
    orders::Entity::find()
        .filter(orders::Column::CustomerId.eq(customer_id))
        .filter(orders::Column::IdempotencyKey.eq(key))
        .one(db)
        .await
}

/// One page of a customer's orders, newest first, after the `(created_at, order_id)` cursor.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    customer_id: &str,
    after: Option<(DateTime<Utc>, String)>,
    limit: u64,
) -> Result<Vec<OrderRow>, DbErr> {
    let mut q = orders::Entity::find().filter(orders::Column::CustomerId.eq(customer_id));
    if let Some((at, id)) = after {
        q = q.filter(
            Condition::any()
                .add(orders::Column::CreatedAt.lt(at))
                .add(Condition::all().add(orders::Column::CreatedAt.eq(at)).add(orders::Column::OrderId.lt(id))),
        );
    }
    q.order_by_desc(orders::Column::CreatedAt).order_by_desc(orders::Column::OrderId).limit(limit).all(db).await
}

/// Inserts a new PENDING order and its `OrderPlaced` in the caller's transaction.
pub async fn insert_placed<C: ConnectionTrait>(txn: &C, row: OrderRow) -> Result<(), DbErr> {
    let placed = ev::OrderPlaced {
        order_id: row.order_id.clone(),
        customer_id: row.customer_id.clone(),
        items: items_to_proto(&row.items),
        shipping_address: Some(address_to_proto(&row)),
        items_total_cents: row.items_total_cents,
        delivery_fee_cents: row.delivery_fee_cents,
        source: source_to_proto(&row.source) as i32,
        time_sale_purchase_id: row.time_sale_purchase_id.clone().unwrap_or_default(),
        placed_at: Some(ts(row.created_at)),
    };
    let am = orders::ActiveModel {
        order_id: Set(row.order_id),
        customer_id: Set(row.customer_id),
        status: Set(row.status),
        cancel_reason: Set(row.cancel_reason),
        source: Set(row.source),
        time_sale_purchase_id: Set(row.time_sale_purchase_id),
        items: Set(row.items),
        ship_line1: Set(row.ship_line1),
        ship_city: Set(row.ship_city),
        ship_postal_code: Set(row.ship_postal_code),
        ship_country: Set(row.ship_country),
        items_total_cents: Set(row.items_total_cents),
        delivery_fee_cents: Set(row.delivery_fee_cents),
        quote_source: Set(row.quote_source),
        idempotency_key: Set(row.idempotency_key),
        version: Set(row.version),
        created_at: Set(row.created_at),
        updated_at: Set(row.updated_at),
    };
    orders::Entity::insert(am).exec_without_returning(txn).await?;
    outbox::enqueue(txn, SOURCE, &placed).await?;
    Ok(())
}

/// Applies a decided transition with a version check, and enqueues its event. Returns
/// the new row, or `None` when a concurrent change won (reload and decide again).
pub async fn apply_transition<C: ConnectionTrait>(
    txn: &C,
    row: &OrderRow,
    status: OrderStatus,
    cancel_reason: Option<String>,
    emit: Emit,
) -> Result<Option<OrderRow>, DbErr> {
    let now = Utc::now();
    let res = orders::Entity::update_many()
        .col_expr(orders::Column::Status, Expr::value(status.as_str()))
        .col_expr(orders::Column::CancelReason, Expr::value(cancel_reason.clone()))
        .col_expr(orders::Column::Version, Expr::value(row.version + 1))
        .col_expr(orders::Column::UpdatedAt, Expr::value(now))
        .filter(orders::Column::OrderId.eq(row.order_id.as_str()))
        .filter(orders::Column::Version.eq(row.version))
        .exec(txn)
        .await?;
    if res.rows_affected == 0 {
        return Ok(None);
    }
    let purchase = row.time_sale_purchase_id.clone().unwrap_or_default();
    match emit {
        Emit::OrderConfirmed => {
            outbox::enqueue(
                txn,
                SOURCE,
                &ev::OrderConfirmed {
                    order_id: row.order_id.clone(),
                    time_sale_purchase_id: purchase,
                    confirmed_at: Some(ts(now)),
                },
            )
            .await?;
        }
        Emit::OrderCancelled => {
            outbox::enqueue(
                txn,
                SOURCE,
                &ev::OrderCancelled {
                    order_id: row.order_id.clone(),
                    reason: cancel_reason.clone().unwrap_or_default(),
                    time_sale_purchase_id: purchase,
                    cancelled_at: Some(ts(now)),
                },
            )
            .await?;
        }
    }
    Ok(Some(OrderRow {
        status: status.as_str().to_owned(),
        cancel_reason,
        version: row.version + 1,
        updated_at: now,
        ..row.clone()
    }))
}

pub use cloudmart_platform::proto_time as ts;

pub fn items_to_json(items: &[LineItem]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned())
}

fn items_to_proto(json: &str) -> Vec<pb::OrderItem> {
    let items: Vec<LineItem> = serde_json::from_str(json).unwrap_or_default();
    items
        .into_iter()
        .map(|i| pb::OrderItem { sku: i.sku, quantity: i.quantity, unit_price_cents: i.unit_price_cents })
        .collect()
}

fn address_to_proto(row: &OrderRow) -> pb::ShippingAddress {
    pb::ShippingAddress {
        line1: row.ship_line1.clone(),
        city: row.ship_city.clone(),
        postal_code: row.ship_postal_code.clone(),
        country: row.ship_country.clone(),
    }
}

fn source_to_proto(s: &str) -> pb::OrderSource {
    match s {
        "TIME_SALE" => pb::OrderSource::TimeSale,
        _ => pb::OrderSource::Regular,
    }
}

/// The API view of a stored order.
pub fn to_proto(row: &OrderRow) -> pb::Order {
    let status = match OrderStatus::parse(&row.status) {
        Some(OrderStatus::Pending) => pb::OrderStatus::Pending,
        Some(OrderStatus::Confirmed) => pb::OrderStatus::Confirmed,
        Some(OrderStatus::Cancelled) => pb::OrderStatus::Cancelled,
        None => pb::OrderStatus::Unspecified,
    };
    let quote_source = match row.quote_source.as_str() {
        "FALLBACK" => pb::QuoteSource::Fallback,
        "DELIVERY_SERVICE" => pb::QuoteSource::DeliveryService,
        _ => pb::QuoteSource::Unspecified,
    };
    pb::Order {
        order_id: row.order_id.clone(),
        customer_id: row.customer_id.clone(),
        items: items_to_proto(&row.items),
        shipping_address: Some(address_to_proto(row)),
        status: status as i32,
        cancel_reason: row.cancel_reason.clone().unwrap_or_default(),
        source: source_to_proto(&row.source) as i32,
        time_sale_purchase_id: row.time_sale_purchase_id.clone().unwrap_or_default(),
        items_total_cents: row.items_total_cents,
        delivery_fee_cents: row.delivery_fee_cents,
        quote_source: quote_source as i32,
        created_at: Some(ts(row.created_at)),
        updated_at: Some(ts(row.updated_at)),
    }
}
