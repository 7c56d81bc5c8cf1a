//! Persistence of sales, purchases and per-customer allocations (sea-orm); maps the
//! [`Sale`] and [`Purchase`] aggregates to and from their rows.
//!
//! Stock lives in `sales.remaining_stock` and only ever moves by conditional updates
//! (`… WHERE remaining_stock >= q`), so no replica can oversell whatever it believes.
//! Lock order everywhere: the sale row first, then allocations — purchases and
//! stock restores never deadlock each other.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cloudmart_platform::{
    consumer::CreateProcessedEventsTable, db, outbox::CreateOutboxTable, proto::contract::Address,
};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    sea_query::{Expr, ExprTrait, OnConflict},
};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};

use crate::domain::{Purchase, PurchaseStatus, Sale, SaleTerms};

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

    use crate::domain::PurchaseStatus;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "purchases")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub purchase_id: String,
        pub sale_id: String,
        pub customer_id: String,
        pub quantity: i32,
        pub status: PurchaseStatus,
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
        use purchases::Column::{CustomerId, IdempotencyKey, SaleId, Status};
        db::create_table(m, sales::Entity).await?;
        db::create_table(m, purchases::Entity).await?;
        db::create_table(m, allocations::Entity).await?;
        let mut idempotency = db::index("purchases_idempotency", purchases::Entity, [CustomerId, IdempotencyKey]);
        m.create_index(idempotency.unique().to_owned()).await?;
        m.create_index(db::index("purchases_by_sale", purchases::Entity, [SaleId, Status])).await
    }
}

/// The time-sale service's schema.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateOutboxTable), Box::new(CreateProcessedEventsTable), Box::new(CreateTables)]
    }
}

impl From<SaleRow> for Sale {
    fn from(row: SaleRow) -> Self {
        Sale {
            terms: SaleTerms {
                sale_id: row.sale_id,
                sku: row.sku,
                price_cents: row.price_cents,
                per_customer_limit: row.per_customer_limit,
                starts_at: row.starts_at,
                ends_at: row.ends_at,
            },
            title: row.title,
            total_stock: row.total_stock,
            remaining_stock: row.remaining_stock,
            created_at: row.created_at,
        }
    }
}

fn sale_am(sale: &Sale) -> sales::ActiveModel {
    let t = &sale.terms;
    sales::ActiveModel {
        sale_id: Set(t.sale_id.clone()),
        sku: Set(t.sku.clone()),
        title: Set(sale.title.clone()),
        price_cents: Set(t.price_cents),
        total_stock: Set(sale.total_stock),
        remaining_stock: Set(sale.remaining_stock),
        per_customer_limit: Set(t.per_customer_limit),
        starts_at: Set(t.starts_at),
        ends_at: Set(t.ends_at),
        created_at: Set(sale.created_at),
    }
}

pub async fn insert_sale<C: ConnectionTrait>(db: &C, sale: &Sale) -> Result<(), DbErr> {
    sales::Entity::insert(sale_am(sale)).exec_without_returning(db).await?;
    Ok(())
}

pub async fn find_sale<C: ConnectionTrait>(db: &C, sale_id: &str) -> Result<Option<Sale>, DbErr> {
    Ok(sales::Entity::find_by_id(sale_id.to_owned()).one(db).await?.map(Sale::from))
}

pub async fn list_sales<C: ConnectionTrait>(db: &C, active_at: Option<DateTime<Utc>>) -> Result<Vec<Sale>, DbErr> {
    let mut q = sales::Entity::find();
    if let Some(now) = active_at {
        q = q.filter(sales::Column::StartsAt.lte(now)).filter(sales::Column::EndsAt.gt(now));
    }
    let rows = q.order_by_asc(sales::Column::StartsAt).order_by_asc(sales::Column::SaleId).all(db).await?;
    Ok(rows.into_iter().map(Sale::from).collect())
}

pub async fn find_purchase<C: ConnectionTrait>(db: &C, purchase_id: &str) -> Result<Option<Purchase>, DbErr> {
    Ok(purchases::Entity::find_by_id(purchase_id.to_owned()).one(db).await?.map(Purchase::from))
}

pub async fn find_purchase_by_key<C: ConnectionTrait>(
    db: &C,
    customer_id: &str,
    key: &str,
) -> Result<Option<Purchase>, DbErr> {
    let row = purchases::Entity::find()
        .filter(purchases::Column::CustomerId.eq(customer_id))
        .filter(purchases::Column::IdempotencyKey.eq(key))
        .one(db)
        .await?;
    Ok(row.map(Purchase::from))
}

/// Purchases of `customers` carrying one of `keys` (batched idempotency look-up).
pub async fn find_purchases_by_keys<C: ConnectionTrait>(
    db: &C,
    customers: Vec<String>,
    keys: Vec<String>,
) -> Result<Vec<Purchase>, DbErr> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let rows = purchases::Entity::find()
        .filter(purchases::Column::CustomerId.is_in(customers))
        .filter(purchases::Column::IdempotencyKey.is_in(keys))
        .all(db)
        .await?;
    Ok(rows.into_iter().map(Purchase::from).collect())
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

impl From<PurchaseRow> for Purchase {
    fn from(row: PurchaseRow) -> Self {
        Purchase {
            purchase_id: row.purchase_id,
            sale_id: row.sale_id,
            customer_id: row.customer_id,
            quantity: row.quantity,
            status: row.status,
            order_id: row.order_id,
            idempotency_key: row.idempotency_key,
            address: Address {
                line1: row.ship_line1,
                city: row.ship_city,
                postal_code: row.ship_postal_code,
                country: row.ship_country,
            },
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

fn purchase_am(p: &Purchase) -> purchases::ActiveModel {
    purchases::ActiveModel {
        purchase_id: Set(p.purchase_id.clone()),
        sale_id: Set(p.sale_id.clone()),
        customer_id: Set(p.customer_id.clone()),
        quantity: Set(p.quantity),
        status: Set(p.status),
        order_id: Set(p.order_id.clone()),
        idempotency_key: Set(p.idempotency_key.clone()),
        ship_line1: Set(p.address.line1.clone()),
        ship_city: Set(p.address.city.clone()),
        ship_postal_code: Set(p.address.postal_code.clone()),
        ship_country: Set(p.address.country.clone()),
        created_at: Set(p.created_at),
        updated_at: Set(p.updated_at),
    }
}

pub async fn insert_purchases<C: ConnectionTrait>(db: &C, new: &[Purchase]) -> Result<(), DbErr> {
    for chunk in new.chunks(cloudmart_platform::db::INSERT_CHUNK) {
        purchases::Entity::insert_many(chunk.iter().map(purchase_am)).exec_without_returning(db).await?;
    }
    Ok(())
}

/// Moves a purchase from `from` to `to` (and sets `order_id` if given). False when it
/// was no longer in `from`.
pub async fn move_purchase<C: ConnectionTrait>(
    db: &C,
    purchase_id: &str,
    from: PurchaseStatus,
    to: PurchaseStatus,
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

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use cloudmart_platform::{db, testkit::TestDatabase};
    use sea_orm::{ActiveEnum, Iterable, Statement};

    use super::*;
    use crate::domain::{Ask, NewSale};

    /// Other tools read `purchases.status` with SQL (cloudmart-audit, the chaos
    /// nemesis): the stored strings are part of the contract.
    #[test]
    fn purchase_statuses_are_stored_as_their_names() {
        let stored: Vec<String> = PurchaseStatus::iter().map(|s| s.to_value()).collect();
        assert_eq!(stored, ["RESERVED", "ORDERED", "CANCELLED"]);
        for s in PurchaseStatus::iter() {
            assert_eq!(PurchaseStatus::try_from_value(&s.to_value()).unwrap(), s);
        }
        assert!(PurchaseStatus::try_from_value(&"LOST".to_owned()).is_err());
    }

    /// A sale and a purchase come back from their rows as they went in; the status
    /// column holds what SQL readers expect and moves only from the state it is in.
    #[tokio::test]
    async fn aggregates_round_trip_through_their_rows() {
        let tdb = TestDatabase::create("timesale_store_rows").await.unwrap();
        let conn = db::connect(&tdb.url).await.unwrap();
        db::migrate::<Migrator>(&conn).await.unwrap();
        // Whole seconds: PostgreSQL keeps microseconds.
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let new = NewSale {
            sku: "SKU-1".into(),
            title: "Console".into(),
            price_cents: 1_000,
            total_stock: 5,
            per_customer_limit: 2,
            starts_at: Some(at),
            ends_at: Some(at + chrono::Duration::hours(1)),
        };
        let sale = Sale::new(uuid::Uuid::new_v4().to_string(), new, at).unwrap();
        insert_sale(&conn, &sale).await.unwrap();
        assert_eq!(find_sale(&conn, &sale.terms.sale_id).await.unwrap().as_ref(), Some(&sale));

        let ask = Ask { customer_id: "c-1".into(), quantity: 2, idempotency_key: Some("k-1".into()) };
        let address = Address {
            line1: "1 Main St".into(),
            city: "Seoul".into(),
            postal_code: "04524".into(),
            country: "KR".into(),
        };
        let p = Purchase::reserve(uuid::Uuid::new_v4().to_string(), &sale.terms.sale_id, &ask, &address, at);
        insert_purchases(&conn, std::slice::from_ref(&p)).await.unwrap();
        assert_eq!(find_purchase(&conn, &p.purchase_id).await.unwrap().as_ref(), Some(&p));
        assert_eq!(find_purchase_by_key(&conn, "c-1", "k-1").await.unwrap().as_ref(), Some(&p));

        let status = || async {
            let sql = "SELECT status FROM purchases";
            let row = conn.query_one_raw(Statement::from_string(conn.get_database_backend(), sql)).await.unwrap();
            row.unwrap().try_get::<String>("", "status").unwrap()
        };
        assert_eq!(status().await, "RESERVED");
        let (reserved, ordered) = (PurchaseStatus::Reserved, PurchaseStatus::Ordered);
        assert!(move_purchase(&conn, &p.purchase_id, reserved, ordered, Some("o-1")).await.unwrap());
        assert!(!move_purchase(&conn, &p.purchase_id, reserved, ordered, None).await.unwrap(), "no longer RESERVED");
        assert_eq!(status().await, "ORDERED");
        let moved = find_purchase(&conn, &p.purchase_id).await.unwrap().unwrap();
        assert_eq!((moved.status, moved.order_id.as_deref()), (ordered, Some("o-1")));
    }
}
