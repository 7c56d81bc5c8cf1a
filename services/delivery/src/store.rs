//! Persistence of deliveries and the per-region daily capacity.

use async_trait::async_trait;
use chrono::Utc;
use cloudmart_platform::{consumer::CreateProcessedEventsTable, outbox::CreateOutboxTable};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Schema,
    sea_query::{Expr, ExprTrait, OnConflict},
};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};

pub mod deliveries {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "deliveries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub delivery_id: String,
        /// One delivery per order.
        #[sea_orm(unique)]
        pub order_id: String,
        pub status: String,
        pub ship_line1: String,
        pub ship_city: String,
        pub ship_postal_code: String,
        pub ship_country: String,
        /// Day the capacity was taken from (`YYYY-MM-DD`), when scheduled.
        pub capacity_day: Option<String>,
        pub scheduled_for: Option<ChronoDateTimeUtc>,
        pub failure_reason: Option<String>,
        pub created_at: ChronoDateTimeUtc,
        pub updated_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod capacity {
    use sea_orm::entity::prelude::*;

    /// Deliveries taken per postal code and day.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "region_capacity")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub postal_code: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub day: String,
        pub used: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub use deliveries::Model as DeliveryRow;

struct CreateDeliveries;

impl MigrationName for CreateDeliveries {
    fn name(&self) -> &str {
        "m0001_delivery_deliveries"
    }
}

#[async_trait]
impl MigrationTrait for CreateDeliveries {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let schema = Schema::new(m.get_database_backend());
        m.create_table(schema.create_table_from_entity(deliveries::Entity).if_not_exists().to_owned()).await?;
        m.create_table(schema.create_table_from_entity(capacity::Entity).if_not_exists().to_owned()).await
    }
}

/// The delivery service's schema.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateOutboxTable), Box::new(CreateProcessedEventsTable), Box::new(CreateDeliveries)]
    }
}

pub async fn find_by_order<C: ConnectionTrait>(db: &C, order_id: &str) -> Result<Option<DeliveryRow>, DbErr> {
    deliveries::Entity::find().filter(deliveries::Column::OrderId.eq(order_id)).one(db).await
}

pub async fn insert<C: ConnectionTrait>(db: &C, row: DeliveryRow) -> Result<(), DbErr> {
    let am = deliveries::ActiveModel {
        delivery_id: Set(row.delivery_id),
        order_id: Set(row.order_id),
        status: Set(row.status),
        ship_line1: Set(row.ship_line1),
        ship_city: Set(row.ship_city),
        ship_postal_code: Set(row.ship_postal_code),
        ship_country: Set(row.ship_country),
        capacity_day: Set(row.capacity_day),
        scheduled_for: Set(row.scheduled_for),
        failure_reason: Set(row.failure_reason),
        created_at: Set(row.created_at),
        updated_at: Set(row.updated_at),
    };
    deliveries::Entity::insert(am).exec_without_returning(db).await?;
    Ok(())
}

/// Moves a delivery from `from` to CANCELLED; false when it was not in `from` any more.
pub async fn cancel<C: ConnectionTrait>(db: &C, delivery_id: &str, from: &str) -> Result<bool, DbErr> {
    let res = deliveries::Entity::update_many()
        .col_expr(deliveries::Column::Status, Expr::value("CANCELLED"))
        .col_expr(deliveries::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(deliveries::Column::DeliveryId.eq(delivery_id))
        .filter(deliveries::Column::Status.eq(from))
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

/// Takes one unit of capacity for `(postal_code, day)` if fewer than `limit` are taken.
/// A conditional update, so concurrent replicas never exceed the limit.
pub async fn take_capacity<C: ConnectionTrait>(
    db: &C,
    postal_code: &str,
    day: &str,
    limit: u32,
) -> Result<bool, DbErr> {
    let seed =
        capacity::ActiveModel { postal_code: Set(postal_code.to_owned()), day: Set(day.to_owned()), used: Set(0) };
    capacity::Entity::insert(seed)
        .on_conflict(OnConflict::columns([capacity::Column::PostalCode, capacity::Column::Day]).do_nothing().to_owned())
        .exec_without_returning(db)
        .await?;
    let res = capacity::Entity::update_many()
        .col_expr(capacity::Column::Used, Expr::col(capacity::Column::Used).add(1))
        .filter(capacity::Column::PostalCode.eq(postal_code))
        .filter(capacity::Column::Day.eq(day))
        .filter(capacity::Column::Used.lt(limit as i32))
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

/// Gives back one unit (a scheduled delivery was cancelled).
pub async fn release_capacity<C: ConnectionTrait>(db: &C, postal_code: &str, day: &str) -> Result<(), DbErr> {
    capacity::Entity::update_many()
        .col_expr(capacity::Column::Used, Expr::col(capacity::Column::Used).sub(1))
        .filter(capacity::Column::PostalCode.eq(postal_code))
        .filter(capacity::Column::Day.eq(day))
        .filter(capacity::Column::Used.gt(0))
        .exec(db)
        .await?;
    Ok(())
}

pub use cloudmart_platform::proto_time as ts;
