//! Persistence of orders (sea-orm): the `orders` row and its mapping to and from the
//! [`Order`] aggregate, and the one function that applies a decided change together with
//! its event (transactional outbox).
//!
//! The row keeps its plain columns (text for the status, source and quote source, whose
//! values are the enums' `string_value`s; the line items as JSON text): a row that does
//! not map back to an `Order` — items that are not JSON line items, a time-sale order
//! without its purchase id — is a [`StoreError`], never a silently different order.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cloudmart_platform::{
    consumer::CreateProcessedEventsTable,
    db,
    outbox::{self, CreateOutboxTable},
    proto::{events::v1 as ev, order::v1 as pb},
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, sea_query::Expr,
};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};

use crate::{
    convert,
    domain::{Address, Change, Emit, Fee, LineItem, Order, OrderSource, Origin},
};

/// Source name in `ce_source`.
pub const SOURCE: &str = "order";

pub mod orders {
    use sea_orm::entity::prelude::*;

    use crate::domain::{OrderSource, OrderStatus, QuoteSource};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "orders")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub order_id: String,
        pub customer_id: String,
        pub status: OrderStatus,
        pub cancel_reason: Option<String>,
        pub source: OrderSource,
        pub time_sale_purchase_id: Option<String>,
        /// Line items as JSON text (`[{sku, quantity, unit_price_cents}]`, serde of
        /// [`crate::domain::LineItem`]).
        pub items: String,
        pub ship_line1: String,
        pub ship_city: String,
        pub ship_postal_code: String,
        pub ship_country: String,
        pub items_total_cents: i64,
        pub delivery_fee_cents: i64,
        pub quote_source: QuoteSource,
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
        use orders::Column::{CreatedAt, CustomerId, IdempotencyKey};
        db::create_table(m, orders::Entity).await?;
        let mut idempotency = db::index("orders_idempotency", orders::Entity, [CustomerId, IdempotencyKey]);
        m.create_index(idempotency.unique().to_owned()).await?;
        m.create_index(db::index("orders_by_customer", orders::Entity, [CustomerId, CreatedAt])).await
    }
}

/// The order service's schema.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateOutboxTable), Box::new(CreateProcessedEventsTable), Box::new(CreateOrders)]
    }
}

/// A row that cannot be read or written as an [`Order`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] DbErr),
    /// `orders.items` is not JSON line items (a corrupt row; retrying cannot help).
    #[error("order {order_id}: items are not JSON line items")]
    Items {
        order_id: String,
        #[source]
        source: serde_json::Error,
    },
    /// A time-sale order without its purchase id (a corrupt row).
    #[error("order {order_id}: time-sale order without a time_sale_purchase_id")]
    NoPurchaseId { order_id: String },
}

impl TryFrom<OrderRow> for Order {
    type Error = StoreError;

    fn try_from(row: OrderRow) -> Result<Self, StoreError> {
        let items: Vec<LineItem> = serde_json::from_str(&row.items)
            .map_err(|source| StoreError::Items { order_id: row.order_id.clone(), source })?;
        let origin = match row.source {
            OrderSource::Regular => Origin::Request { idempotency_key: row.idempotency_key },
            OrderSource::TimeSale => Origin::TimeSale {
                purchase_id: row
                    .time_sale_purchase_id
                    .ok_or_else(|| StoreError::NoPurchaseId { order_id: row.order_id.clone() })?,
            },
        };
        Ok(Order {
            order_id: row.order_id,
            customer_id: row.customer_id,
            status: row.status,
            cancel_reason: row.cancel_reason,
            origin,
            items,
            shipping_address: Address {
                line1: row.ship_line1,
                city: row.ship_city,
                postal_code: row.ship_postal_code,
                country: row.ship_country,
            },
            items_total_cents: row.items_total_cents,
            delivery_fee: Fee { cents: row.delivery_fee_cents, source: row.quote_source },
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// The row of a new order.
fn new_row(o: &Order) -> Result<orders::ActiveModel, StoreError> {
    let items =
        serde_json::to_string(&o.items).map_err(|source| StoreError::Items { order_id: o.order_id.clone(), source })?;
    Ok(orders::ActiveModel {
        order_id: Set(o.order_id.clone()),
        customer_id: Set(o.customer_id.clone()),
        status: Set(o.status),
        cancel_reason: Set(o.cancel_reason.clone()),
        source: Set(o.origin.source()),
        time_sale_purchase_id: Set(o.origin.time_sale_purchase_id().map(str::to_owned)),
        items: Set(items),
        ship_line1: Set(o.shipping_address.line1.clone()),
        ship_city: Set(o.shipping_address.city.clone()),
        ship_postal_code: Set(o.shipping_address.postal_code.clone()),
        ship_country: Set(o.shipping_address.country.clone()),
        items_total_cents: Set(o.items_total_cents),
        delivery_fee_cents: Set(o.delivery_fee.cents),
        quote_source: Set(o.delivery_fee.source),
        idempotency_key: Set(o.origin.idempotency_key().map(str::to_owned)),
        version: Set(o.version),
        created_at: Set(o.created_at),
        updated_at: Set(o.updated_at),
    })
}

fn order(row: Option<OrderRow>) -> Result<Option<Order>, StoreError> {
    row.map(Order::try_from).transpose()
}

pub async fn find<C: ConnectionTrait>(db: &C, order_id: &str) -> Result<Option<Order>, StoreError> {
    order(orders::Entity::find_by_id(order_id.to_owned()).one(db).await?)
}

pub async fn find_by_idempotency_key<C: ConnectionTrait>(
    db: &C,
    customer_id: &str,
    key: &str,
) -> Result<Option<Order>, StoreError> {
    let row = orders::Entity::find()
        .filter(orders::Column::CustomerId.eq(customer_id))
        .filter(orders::Column::IdempotencyKey.eq(key))
        .one(db)
        .await?;
    order(row)
}

/// One page of a customer's orders, newest first, after the `(created_at, order_id)` cursor.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    customer_id: &str,
    after: Option<(DateTime<Utc>, String)>,
    limit: u64,
) -> Result<Vec<Order>, StoreError> {
    let mut q = orders::Entity::find().filter(orders::Column::CustomerId.eq(customer_id));
    if let Some((at, id)) = after {
        q = q.filter(
            Condition::any()
                .add(orders::Column::CreatedAt.lt(at))
                .add(Condition::all().add(orders::Column::CreatedAt.eq(at)).add(orders::Column::OrderId.lt(id))),
        );
    }
    let rows =
        q.order_by_desc(orders::Column::CreatedAt).order_by_desc(orders::Column::OrderId).limit(limit).all(db).await?;
    rows.into_iter().map(Order::try_from).collect()
}

/// Inserts a new order and its `OrderPlaced` in the caller's transaction.
pub async fn insert_placed<C: ConnectionTrait>(txn: &C, order: &Order) -> Result<(), StoreError> {
    let placed = ev::OrderPlaced {
        order_id: order.order_id.clone(),
        customer_id: order.customer_id.clone(),
        items: convert::items(&order.items),
        shipping_address: Some(order.shipping_address.to_proto()),
        items_total_cents: order.items_total_cents,
        delivery_fee_cents: order.delivery_fee.cents,
        source: pb::OrderSource::from(order.origin.source()) as i32,
        time_sale_purchase_id: order.origin.time_sale_purchase_id().unwrap_or_default().to_owned(),
        placed_at: Some(ts(order.created_at)),
    };
    orders::Entity::insert(new_row(order)?).exec_without_returning(txn).await?;
    outbox::enqueue(txn, SOURCE, &placed).await?;
    Ok(())
}

/// Applies a decided change with a version check, and enqueues its event. Returns the
/// changed order, or `None` when a concurrent change won (reload and decide again).
pub async fn apply<C: ConnectionTrait>(txn: &C, order: &Order, change: Change) -> Result<Option<Order>, StoreError> {
    let emit = change.emit;
    let next = order.apply(change, Utc::now());
    let res = orders::Entity::update_many()
        .col_expr(orders::Column::Status, Expr::value(next.status))
        .col_expr(orders::Column::CancelReason, Expr::value(next.cancel_reason.clone()))
        .col_expr(orders::Column::Version, Expr::value(next.version))
        .col_expr(orders::Column::UpdatedAt, Expr::value(next.updated_at))
        .filter(orders::Column::OrderId.eq(order.order_id.as_str()))
        .filter(orders::Column::Version.eq(order.version))
        .exec(txn)
        .await?;
    if res.rows_affected == 0 {
        return Ok(None);
    }
    let purchase = next.origin.time_sale_purchase_id().unwrap_or_default().to_owned();
    match emit {
        Emit::OrderConfirmed => {
            let confirmed = ev::OrderConfirmed {
                order_id: next.order_id.clone(),
                time_sale_purchase_id: purchase,
                confirmed_at: Some(ts(next.updated_at)),
            };
            outbox::enqueue(txn, SOURCE, &confirmed).await?;
        }
        Emit::OrderCancelled => {
            let cancelled = ev::OrderCancelled {
                order_id: next.order_id.clone(),
                reason: next.cancel_reason.clone().unwrap_or_default(),
                time_sale_purchase_id: purchase,
                cancelled_at: Some(ts(next.updated_at)),
            };
            outbox::enqueue(txn, SOURCE, &cancelled).await?;
        }
    }
    Ok(Some(next))
}

pub use cloudmart_platform::proto_time as ts;

#[cfg(test)]
mod tests {
    use cloudmart_platform::testkit::TestDatabase;
    use sea_orm::{DbBackend, Statement};

    use super::*;
    use crate::domain::{OrderEvent, OrderStatus, QuoteSource, Transition, line_items};

    /// The table other tools read with SQL keeps its column types: the enums are text.
    #[test]
    fn the_orders_table_keeps_its_columns() {
        let cols = "( \"order_id\" varchar NOT NULL PRIMARY KEY, \"customer_id\" varchar NOT NULL, \
            \"status\" varchar NOT NULL, \"cancel_reason\" varchar, \"source\" varchar NOT NULL, \
            \"time_sale_purchase_id\" varchar, \"items\" varchar NOT NULL, \"ship_line1\" varchar NOT NULL, \
            \"ship_city\" varchar NOT NULL, \"ship_postal_code\" varchar NOT NULL, \"ship_country\" varchar NOT NULL, ";
        let expected = [
            (
                DbBackend::Postgres,
                "\"items_total_cents\" bigint NOT NULL, \"delivery_fee_cents\" bigint NOT NULL, \
                 \"quote_source\" varchar NOT NULL, \"idempotency_key\" varchar, \"version\" integer NOT NULL, \
                 \"created_at\" timestamp with time zone NOT NULL, \"updated_at\" timestamp with time zone NOT NULL )",
            ),
            (
                DbBackend::Sqlite,
                "\"items_total_cents\" integer NOT NULL, \"delivery_fee_cents\" integer NOT NULL, \
                 \"quote_source\" varchar NOT NULL, \"idempotency_key\" varchar, \"version\" integer NOT NULL, \
                 \"created_at\" timestamp_with_timezone_text NOT NULL, \
                 \"updated_at\" timestamp_with_timezone_text NOT NULL )",
            ),
        ];
        for (backend, rest) in expected {
            let ddl =
                backend.build(&sea_orm::Schema::new(backend).create_table_from_entity(orders::Entity)).to_string();
            assert_eq!(ddl, format!("CREATE TABLE \"orders\" {cols}{rest}"), "{backend:?}");
        }
    }

    fn placed(origin: Origin) -> Order {
        let address = Address {
            line1: "1 Main St".into(),
            city: "Seoul".into(),
            postal_code: "04524".into(),
            country: "KR".into(),
        };
        let lines = line_items(&[("SKU-1".into(), 2, 150)]).expect("valid");
        let at = DateTime::<Utc>::from_timestamp_micros(Utc::now().timestamp_micros()).expect("now");
        let fee = Fee { cents: 500, source: QuoteSource::Fallback };
        Order::new(uuid::Uuid::new_v4().to_string(), "c-1".into(), origin, lines, address, fee, at)
    }

    async fn columns(db: &sea_orm::DatabaseConnection, order_id: &str) -> Vec<String> {
        let sql = format!(
            "SELECT status, source, quote_source, items, cancel_reason FROM orders WHERE order_id = '{order_id}'"
        );
        let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await.unwrap().unwrap();
        (0..5).map(|i| row.try_get_by_index::<Option<String>>(i).unwrap().unwrap_or_default()).collect()
    }

    /// An order round-trips through its row; the row holds the words other tools read;
    /// a corrupt items column is an error, not an order without items.
    #[tokio::test]
    async fn orders_map_to_rows_and_back() {
        let tdb = TestDatabase::create("order_store_map").await.expect("database");
        let db = cloudmart_platform::db::connect(&tdb.url).await.expect("connect");
        cloudmart_platform::db::migrate::<Migrator>(&db).await.expect("migrate");

        let regular = placed(Origin::Request { idempotency_key: Some("k-1".into()) });
        insert_placed(&db, &regular).await.expect("insert");
        assert_eq!(find(&db, &regular.order_id).await.unwrap(), Some(regular.clone()));
        assert_eq!(find_by_idempotency_key(&db, "c-1", "k-1").await.unwrap(), Some(regular.clone()));
        assert_eq!(
            columns(&db, &regular.order_id).await,
            ["PENDING", "REGULAR", "FALLBACK", r#"[{"sku":"SKU-1","quantity":2,"unit_price_cents":150}]"#, ""]
        );

        let sale = placed(Origin::TimeSale { purchase_id: "p-1".into() });
        insert_placed(&db, &sale).await.expect("insert");
        let Transition::To(change) = sale.decide(&OrderEvent::Unserviceable) else { panic!("a change") };
        let cancelled = apply(&db, &sale, change.clone()).await.unwrap().expect("applied");
        assert_eq!(cancelled.status, OrderStatus::Cancelled);
        // (PostgreSQL keeps microseconds.)
        let stored = find(&db, &sale.order_id).await.unwrap().expect("stored");
        assert_eq!(Order { updated_at: cancelled.updated_at, ..stored.clone() }, cancelled);
        assert_eq!(stored.updated_at.timestamp_micros(), cancelled.updated_at.timestamp_micros());
        assert_eq!(apply(&db, &sale, change).await.unwrap(), None, "stale version");
        assert_eq!(columns(&db, &sale.order_id).await[..3], ["CANCELLED", "TIME_SALE", "FALLBACK"].map(String::from));
        assert_eq!(columns(&db, &sale.order_id).await[4], "UNSERVICEABLE_ADDRESS");

        let sql = format!("UPDATE orders SET items = 'not json' WHERE order_id = '{}'", regular.order_id);
        db.execute_unprepared(&sql).await.unwrap();
        let err = find(&db, &regular.order_id).await.unwrap_err();
        assert!(matches!(err, StoreError::Items { .. }), "{err:?}");
        assert!(list(&db, "c-1", None, 10).await.is_err(), "a page with a corrupt order is an error");
    }
}
