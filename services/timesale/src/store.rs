//! Persistence of sales, purchases and per-customer allocations (sea-orm).
//!
//! Stock lives in `sales.remaining_stock` and only ever moves by conditional updates
//! (`… WHERE remaining_stock >= q`), so no replica can oversell whatever it believes.
//! Lock order everywhere: the sale row first, then allocations — purchases and
//! stock restores never deadlock each other.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cloudmart_platform::{consumer::CreateProcessedEventsTable, outbox::CreateOutboxTable};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, Schema,
    sea_query::{Expr, ExprTrait, Index, OnConflict},
};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};

use crate::domain::SaleTerms;

pub mod sales {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sales")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub sale_id: String,
        pub sku: String,
        pub title: String,
        pub price_cents: i64,
        pub total_stock: i32,
        pub remaining_stock: i32,
        pub per_customer_limit: i32,
        pub starts_at: ChronoDateTimeUtc,
        pub ends_at: ChronoDateTimeUtc,
        pub created_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod purchases {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "purchases")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub purchase_id: String,
        pub sale_id: String,
        pub customer_id: String,
        pub quantity: i32,
        pub status: String,
        pub order_id: Option<String>,
        pub idempotency_key: Option<String>,
        pub ship_line1: String,
        pub ship_city: String,
        pub ship_postal_code: String,
        pub ship_country: String,
        pub created_at: ChronoDateTimeUtc,
        pub updated_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod allocations {
    use sea_orm::entity::prelude::*;

    /// Units a customer holds in a sale (non-cancelled purchases).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "customer_allocations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub sale_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub customer_id: String,
        pub quantity: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub use purchases::Model as PurchaseRow;
pub use sales::Model as SaleRow;

struct CreateTables;

impl MigrationName for CreateTables {
    fn name(&self) -> &str {
        "m0001_timesale_tables"
    }
}

#[async_trait]
impl MigrationTrait for CreateTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let schema = Schema::new(m.get_database_backend());
        m.create_table(schema.create_table_from_entity(sales::Entity).if_not_exists().to_owned()).await?;
        m.create_table(schema.create_table_from_entity(purchases::Entity).if_not_exists().to_owned()).await?;
        m.create_table(schema.create_table_from_entity(allocations::Entity).if_not_exists().to_owned()).await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("purchases_idempotency")
                .table(purchases::Entity)
                .col(purchases::Column::CustomerId)
                .col(purchases::Column::IdempotencyKey)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("purchases_by_sale")
                .table(purchases::Entity)
                .col(purchases::Column::SaleId)
                .col(purchases::Column::Status)
                .to_owned(),
        )
        .await
    }
}

/// The time-sale service's schema.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateOutboxTable), Box::new(CreateProcessedEventsTable), Box::new(CreateTables)]
    }
}

pub fn terms(row: &SaleRow) -> SaleTerms {
    SaleTerms {
        sale_id: row.sale_id.clone(),
        sku: row.sku.clone(),
        price_cents: row.price_cents,
        per_customer_limit: row.per_customer_limit,
        starts_at: row.starts_at,
        ends_at: row.ends_at,
    }
}

pub async fn insert_sale<C: ConnectionTrait>(db: &C, row: SaleRow) -> Result<(), DbErr> {
    let am = sales::ActiveModel {
        sale_id: Set(row.sale_id),
        sku: Set(row.sku),
        title: Set(row.title),
        price_cents: Set(row.price_cents),
        total_stock: Set(row.total_stock),
        remaining_stock: Set(row.remaining_stock),
        per_customer_limit: Set(row.per_customer_limit),
        starts_at: Set(row.starts_at),
        ends_at: Set(row.ends_at),
        created_at: Set(row.created_at),
    };
    sales::Entity::insert(am).exec_without_returning(db).await?;
    Ok(())
}

pub async fn find_sale<C: ConnectionTrait>(db: &C, sale_id: &str) -> Result<Option<SaleRow>, DbErr> {
    sales::Entity::find_by_id(sale_id.to_owned()).one(db).await
}

pub async fn list_sales<C: ConnectionTrait>(db: &C, active_at: Option<DateTime<Utc>>) -> Result<Vec<SaleRow>, DbErr> {
    let mut q = sales::Entity::find();
    if let Some(now) = active_at {
        q = q.filter(sales::Column::StartsAt.lte(now)).filter(sales::Column::EndsAt.gt(now));
    }
    q.order_by_asc(sales::Column::StartsAt).order_by_asc(sales::Column::SaleId).all(db).await
}

pub async fn find_purchase<C: ConnectionTrait>(db: &C, purchase_id: &str) -> Result<Option<PurchaseRow>, DbErr> {
    purchases::Entity::find_by_id(purchase_id.to_owned()).one(db).await
}

pub async fn find_purchase_by_key<C: ConnectionTrait>(
    db: &C,
    customer_id: &str,
    key: &str,
) -> Result<Option<PurchaseRow>, DbErr> {
    purchases::Entity::find()
        .filter(purchases::Column::CustomerId.eq(customer_id))
        .filter(purchases::Column::IdempotencyKey.eq(key))
        .one(db)
        .await
}

/// Purchases of `customers` carrying one of `keys` (batched idempotency look-up).
pub async fn find_purchases_by_keys<C: ConnectionTrait>(
    db: &C,
    customers: Vec<String>,
    keys: Vec<String>,
) -> Result<Vec<PurchaseRow>, DbErr> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    purchases::Entity::find()
        .filter(purchases::Column::CustomerId.is_in(customers))
        .filter(purchases::Column::IdempotencyKey.is_in(keys))
        .all(db)
        .await
}

pub async fn allocations_of<C: ConnectionTrait>(
    db: &C,
    sale_id: &str,
    customers: Vec<String>,
) -> Result<Vec<allocations::Model>, DbErr> {
    allocations::Entity::find()
        .filter(allocations::Column::SaleId.eq(sale_id))
        .filter(allocations::Column::CustomerId.is_in(customers))
        .all(db)
        .await
}

/// `remaining_stock -= q` if at least `q` is left. False = not enough stock.
pub async fn take_stock<C: ConnectionTrait>(db: &C, sale_id: &str, q: i32) -> Result<bool, DbErr> {
    let res = sales::Entity::update_many()
        .col_expr(sales::Column::RemainingStock, Expr::col(sales::Column::RemainingStock).sub(q))
        .filter(sales::Column::SaleId.eq(sale_id))
        .filter(sales::Column::RemainingStock.gte(q))
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

/// `remaining_stock += q`, never above `total_stock`.
pub async fn give_back_stock<C: ConnectionTrait>(db: &C, sale_id: &str, q: i32) -> Result<bool, DbErr> {
    let res = sales::Entity::update_many()
        .col_expr(sales::Column::RemainingStock, Expr::col(sales::Column::RemainingStock).add(q))
        .filter(sales::Column::SaleId.eq(sale_id))
        .filter(Expr::col(sales::Column::RemainingStock).add(q).lte(Expr::col(sales::Column::TotalStock)))
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

/// Adds `q` to a customer's allocation if the total stays within `limit`.
pub async fn allocate<C: ConnectionTrait>(
    db: &C,
    sale_id: &str,
    customer_id: &str,
    q: i32,
    limit: i32,
) -> Result<bool, DbErr> {
    let seed = allocations::ActiveModel {
        sale_id: Set(sale_id.to_owned()),
        customer_id: Set(customer_id.to_owned()),
        quantity: Set(0),
    };
    allocations::Entity::insert(seed)
        .on_conflict(
            OnConflict::columns([allocations::Column::SaleId, allocations::Column::CustomerId]).do_nothing().to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    let res = allocations::Entity::update_many()
        .col_expr(allocations::Column::Quantity, Expr::col(allocations::Column::Quantity).add(q))
        .filter(allocations::Column::SaleId.eq(sale_id))
        .filter(allocations::Column::CustomerId.eq(customer_id))
        .filter(Expr::col(allocations::Column::Quantity).add(q).lte(limit))
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

/// Adds `q` to allocations known to be within the limit (batched path, under the sale lock).
pub async fn add_allocations<C: ConnectionTrait>(
    db: &C,
    sale_id: &str,
    existing: &[(String, i32)],
    new: &[(String, i32)],
) -> Result<(), DbErr> {
    for (customer, q) in existing {
        allocations::Entity::update_many()
            .col_expr(allocations::Column::Quantity, Expr::col(allocations::Column::Quantity).add(*q))
            .filter(allocations::Column::SaleId.eq(sale_id))
            .filter(allocations::Column::CustomerId.eq(customer.as_str()))
            .exec(db)
            .await?;
    }
    for chunk in new.chunks(cloudmart_platform::db::INSERT_CHUNK) {
        let rows = chunk.iter().map(|(c, q)| allocations::ActiveModel {
            sale_id: Set(sale_id.to_owned()),
            customer_id: Set(c.clone()),
            quantity: Set(*q),
        });
        allocations::Entity::insert_many(rows).exec_without_returning(db).await?;
    }
    Ok(())
}

pub async fn release_allocation<C: ConnectionTrait>(
    db: &C,
    sale_id: &str,
    customer_id: &str,
    q: i32,
) -> Result<(), DbErr> {
    allocations::Entity::update_many()
        .col_expr(allocations::Column::Quantity, Expr::col(allocations::Column::Quantity).sub(q))
        .filter(allocations::Column::SaleId.eq(sale_id))
        .filter(allocations::Column::CustomerId.eq(customer_id))
        .filter(allocations::Column::Quantity.gte(q))
        .exec(db)
        .await?;
    Ok(())
}

fn purchase_am(row: PurchaseRow) -> purchases::ActiveModel {
    purchases::ActiveModel {
        purchase_id: Set(row.purchase_id),
        sale_id: Set(row.sale_id),
        customer_id: Set(row.customer_id),
        quantity: Set(row.quantity),
        status: Set(row.status),
        order_id: Set(row.order_id),
        idempotency_key: Set(row.idempotency_key),
        ship_line1: Set(row.ship_line1),
        ship_city: Set(row.ship_city),
        ship_postal_code: Set(row.ship_postal_code),
        ship_country: Set(row.ship_country),
        created_at: Set(row.created_at),
        updated_at: Set(row.updated_at),
    }
}

pub async fn insert_purchases<C: ConnectionTrait>(db: &C, rows: Vec<PurchaseRow>) -> Result<(), DbErr> {
    for chunk in rows.chunks(cloudmart_platform::db::INSERT_CHUNK) {
        purchases::Entity::insert_many(chunk.iter().cloned().map(purchase_am)).exec_without_returning(db).await?;
    }
    Ok(())
}

/// Moves a purchase from `from` to `to` (and sets `order_id` if given). False when it
/// was no longer in `from`.
pub async fn move_purchase<C: ConnectionTrait>(
    db: &C,
    purchase_id: &str,
    from: &str,
    to: &str,
    order_id: Option<&str>,
) -> Result<bool, DbErr> {
    let mut q = purchases::Entity::update_many()
        .col_expr(purchases::Column::Status, Expr::value(to))
        .col_expr(purchases::Column::UpdatedAt, Expr::value(Utc::now()));
    if let Some(o) = order_id {
        q = q.col_expr(purchases::Column::OrderId, Expr::value(o));
    }
    let res = q
        .filter(purchases::Column::PurchaseId.eq(purchase_id))
        .filter(purchases::Column::Status.eq(from))
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

pub use cloudmart_platform::proto_time as ts;
