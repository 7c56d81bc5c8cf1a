//! Persistence of deliveries and the per-region daily capacity: the
//! [`Delivery`] aggregate to and from its row.

use async_trait::async_trait;
use cloudmart_platform::{
    consumer::CreateProcessedEventsTable, db, outbox::CreateOutboxTable, proto::order::v1::ShippingAddress,
};
use sea_orm::{
    ActiveEnum,
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect,
    sea_query::{Expr, ExprTrait, OnConflict},
};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};

use crate::domain::{Delivery, DeliveryStatus, FailureReason};

pub mod deliveries {
    use sea_orm::entity::prelude::*;

    use crate::domain::{DeliveryStatus, FailureReason};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "deliveries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub delivery_id: String,
        /// One delivery per order.
        #[sea_orm(unique)]
        pub order_id: String,
        /// Stored as text (`SCHEDULED`, …): other tools read and write it with SQL.
        pub status: DeliveryStatus,
        pub ship_line1: String,
        pub ship_city: String,
        pub ship_postal_code: String,
        pub ship_country: String,
        /// Day the capacity was taken from (`YYYY-MM-DD`), when scheduled.
        pub capacity_day: Option<String>,
        pub scheduled_for: Option<ChronoDateTimeUtc>,
        pub failure_reason: Option<FailureReason>,
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

impl From<Delivery> for deliveries::ActiveModel {
    fn from(d: Delivery) -> Self {
        deliveries::ActiveModel {
            delivery_id: Set(d.delivery_id),
            order_id: Set(d.order_id),
            status: Set(d.status),
            ship_line1: Set(d.ship_to.line1),
            ship_city: Set(d.ship_to.city),
            ship_postal_code: Set(d.ship_to.postal_code),
            ship_country: Set(d.ship_to.country),
            capacity_day: Set(d.capacity_day),
            scheduled_for: Set(d.scheduled_for),
            failure_reason: Set(d.failure_reason),
            created_at: Set(d.created_at),
            updated_at: Set(d.updated_at),
        }
    }
}

impl From<deliveries::Model> for Delivery {
    /// A stored delivery (not a new one: [`Delivery::new`] makes those).
    fn from(row: deliveries::Model) -> Self {
        Delivery {
            delivery_id: row.delivery_id,
            order_id: row.order_id,
            status: row.status,
            ship_to: ShippingAddress {
                line1: row.ship_line1,
                city: row.ship_city,
                postal_code: row.ship_postal_code,
                country: row.ship_country,
            },
            capacity_day: row.capacity_day,
            scheduled_for: row.scheduled_for,
            failure_reason: row.failure_reason,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// Why a stored delivery could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A value this build does not know (written with SQL, or by a newer build): reading
    /// the row again cannot help.
    #[error("delivery {delivery_id} has bad {column} {value}")]
    BadValue { delivery_id: String, column: &'static str, value: String },
    /// The row does not decode for another reason.
    #[error("delivery for order {order_id} does not decode")]
    Undecodable {
        order_id: String,
        #[source]
        source: DbErr,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbErr),
}

impl LoadError {
    /// True when the row itself is at fault, so reading it again cannot help.
    pub fn is_corrupt_row(&self) -> bool {
        !matches!(self, LoadError::Db(_))
    }
}

struct CreateDeliveries;

impl MigrationName for CreateDeliveries {
    fn name(&self) -> &str {
        "m0001_delivery_deliveries"
    }
}

#[async_trait]
impl MigrationTrait for CreateDeliveries {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        db::create_table(m, deliveries::Entity).await?;
        db::create_table(m, capacity::Entity).await
    }
}

/// The delivery service's schema.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateOutboxTable), Box::new(CreateProcessedEventsTable), Box::new(CreateDeliveries)]
    }
}

/// The delivery of `order_id`, if it has one.
pub async fn find_by_order<C: ConnectionTrait>(db: &C, order_id: &str) -> Result<Option<Delivery>, LoadError> {
    match deliveries::Entity::find().filter(deliveries::Column::OrderId.eq(order_id)).one(db).await {
        Ok(row) => Ok(row.map(Delivery::from)),
        Err(e @ DbErr::Type(_)) => Err(undecodable(db, order_id, e).await),
        Err(e) => Err(e.into()),
    }
}

/// Why the row of `order_id` does not decode (`source`): its columns read again as plain
/// text, to name the value this build does not know.
async fn undecodable<C: ConnectionTrait>(db: &C, order_id: &str, source: DbErr) -> LoadError {
    let raw = deliveries::Entity::find()
        .select_only()
        .columns([deliveries::Column::DeliveryId, deliveries::Column::Status, deliveries::Column::FailureReason])
        .filter(deliveries::Column::OrderId.eq(order_id))
        .into_tuple::<(String, String, Option<String>)>()
        .one(db)
        .await;
    if let Ok(Some((delivery_id, status, reason))) = raw {
        if DeliveryStatus::try_from_value(&status).is_err() {
            return LoadError::BadValue { delivery_id, column: "status", value: status };
        }
        if let Some(reason) = reason
            && FailureReason::try_from_value(&reason).is_err()
        {
            return LoadError::BadValue { delivery_id, column: "failure_reason", value: reason };
        }
    }
    LoadError::Undecodable { order_id: order_id.to_owned(), source }
}

/// Stores a new delivery.
pub async fn insert<C: ConnectionTrait>(db: &C, delivery: Delivery) -> Result<(), DbErr> {
    deliveries::Entity::insert(deliveries::ActiveModel::from(delivery)).exec_without_returning(db).await?;
    Ok(())
}

/// Stores a transition of `delivery` (its status) if the stored one is still `from`;
/// false when it changed concurrently.
pub async fn update_status<C: ConnectionTrait>(
    db: &C,
    delivery: &Delivery,
    from: DeliveryStatus,
) -> Result<bool, DbErr> {
    let res = deliveries::Entity::update_many()
        .col_expr(deliveries::Column::Status, Expr::value(delivery.status))
        .col_expr(deliveries::Column::UpdatedAt, Expr::value(delivery.updated_at))
        .filter(deliveries::Column::DeliveryId.eq(&delivery.delivery_id))
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

#[cfg(test)]
mod tests {
    use sea_orm::{
        DbBackend,
        sea_query::{PostgresQueryBuilder, SqliteQueryBuilder},
    };

    use super::*;

    /// The typed columns are the text columns the migration always created: rows written
    /// before, and the tools that read and write them with SQL, stay valid.
    #[test]
    fn the_deliveries_table_is_unchanged() {
        let columns = |time: &str| {
            format!(
                r#"CREATE TABLE IF NOT EXISTS "deliveries" ( "delivery_id" varchar NOT NULL PRIMARY KEY, "order_id" varchar NOT NULL UNIQUE, "status" varchar NOT NULL, "ship_line1" varchar NOT NULL, "ship_city" varchar NOT NULL, "ship_postal_code" varchar NOT NULL, "ship_country" varchar NOT NULL, "capacity_day" varchar, "scheduled_for" {time}, "failure_reason" varchar, "created_at" {time} NOT NULL, "updated_at" {time} NOT NULL )"#
            )
        };
        let table = |backend| {
            sea_orm::Schema::new(backend).create_table_from_entity(deliveries::Entity).if_not_exists().to_owned()
        };
        assert_eq!(table(DbBackend::Postgres).to_string(PostgresQueryBuilder), columns("timestamp with time zone"));
        assert_eq!(table(DbBackend::Sqlite).to_string(SqliteQueryBuilder), columns("timestamp_with_timezone_text"));
    }
}
