//! The `StockLedger`: reserves stock for purchases, never overselling, with any number
//! of time-sale replicas on one database.
//!
//! Two modes (`--reservation`):
//! - `naive`: one transaction per request; the stock row is decremented by a
//!   conditional update (`… WHERE remaining_stock >= q`) and the customer's allocation
//!   likewise. Correct, but every purchase of a hot sale queues on the same row lock,
//!   held until its own commit (one WAL flush per purchase).
//! - `batched` (default): concurrent purchases of the same sale are coalesced. One task
//!   per sale takes whatever requests are waiting (up to [`MAX_BATCH`]), opens one
//!   transaction, locks the sale row (`SELECT … FOR UPDATE` on PostgreSQL), reads the
//!   customers' allocations and idempotency keys in two queries, decides every request
//!   in arrival order with the pure [`domain::decide_batch`], writes the stock once
//!   (still a conditional update), the purchases and their events in multi-row inserts,
//!   and commits once. Every caller gets its own exact answer. No time window is waited
//!   for: a batch is simply what piled up while the previous commit was in flight, so a
//!   quiet sale sees batches of one and no added latency. Because the database row is
//!   locked and the update is conditional, replicas with their own batchers stay
//!   correct. If a batch transaction fails (say, a racing retry with the same key on
//!   another replica), its requests are answered one by one in naive mode.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use chrono::Utc;
use clap::ValueEnum;
use cloudmart_platform::{
    db::{self, is_unique_violation},
    outbox::{self, OutboxSignal},
    proto::contract::Address,
    proto::events::v1 as ev,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QuerySelect};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::{
    domain::{self, Ask, Decision, Purchase, SaleTerms},
    store,
};

pub const SOURCE: &str = "timesale";
/// Most requests decided in one transaction.
pub const MAX_BATCH: usize = 256;

/// How purchases reserve stock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum ReservationMode {
    /// One transaction per request (for comparison).
    Naive,
    /// Concurrent purchases of a sale coalesced into one transaction.
    #[default]
    Batched,
}

/// A validated purchase request.
#[derive(Clone, Debug)]
pub struct Reserve {
    /// Who asks for how many units, under which idempotency key.
    pub ask: Ask,
    pub address: Address,
    /// The request's span: its trace continues through the event, even when another
    /// task writes the batch.
    pub span: tracing::Span,
}

/// Why a reservation was refused (or failed). The refusals say which sale, so their
/// message is the one the client reads.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error("sale {sale_id} is sold out")]
    SoldOut { sale_id: String },
    #[error("the per-customer limit of {limit} for sale {sale_id} is reached")]
    LimitExceeded { sale_id: String, limit: i32 },
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error("reservation task stopped")]
    Stopped,
}

impl ReserveError {
    fn sold_out(sale: &SaleTerms) -> Self {
        Self::SoldOut { sale_id: sale.sale_id.clone() }
    }

    fn limit_exceeded(sale: &SaleTerms) -> Self {
        Self::LimitExceeded { sale_id: sale.sale_id.clone(), limit: sale.per_customer_limit }
    }
}

type Reply = oneshot::Sender<Result<Purchase, ReserveError>>;

struct Job {
    req: Reserve,
    reply: Reply,
}

/// Reserves stock; see the module docs.
#[derive(Clone)]
pub struct StockLedger {
    db: DatabaseConnection,
    mode: ReservationMode,
    signal: OutboxSignal,
    batchers: Arc<Mutex<HashMap<String, mpsc::Sender<Job>>>>,
}

impl StockLedger {
    pub fn new(db: DatabaseConnection, mode: ReservationMode, signal: OutboxSignal) -> Self {
        Self { db, mode, signal, batchers: Arc::default() }
    }

    pub fn mode(&self) -> ReservationMode {
        self.mode
    }

    /// Reserves `req.quantity` units of `sale` for the customer.
    pub async fn reserve(&self, sale: &SaleTerms, req: Reserve) -> Result<Purchase, ReserveError> {
        match self.mode {
            ReservationMode::Naive => {
                let purchase = reserve_one(&self.db, sale, req).await?;
                self.signal.notify();
                Ok(purchase)
            }
            ReservationMode::Batched => {
                let (tx, rx) = oneshot::channel();
                let mut job = Job { req, reply: tx };
                loop {
                    let sender = self.batcher(sale);
                    match sender.send(job).await {
                        Ok(()) => break,
                        // The batcher ended (idle); start a new one and resend.
                        Err(mpsc::error::SendError(j)) => {
                            self.batchers.lock().expect("batchers lock").remove(&sale.sale_id);
                            job = j;
                        }
                    }
                }
                rx.await.map_err(|_| ReserveError::Stopped)?
            }
        }
    }

    fn batcher(&self, sale: &SaleTerms) -> mpsc::Sender<Job> {
        let mut map = self.batchers.lock().expect("batchers lock");
        if let Some(s) = map.get(&sale.sale_id)
            && !s.is_closed()
        {
            return s.clone();
        }
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        map.insert(sale.sale_id.clone(), tx.clone());
        tokio::spawn(run_batcher(self.db.clone(), sale.clone(), rx, self.signal.clone()));
        tx
    }
}

async fn run_batcher(db: DatabaseConnection, sale: SaleTerms, mut rx: mpsc::Receiver<Job>, signal: OutboxSignal) {
    let idle = std::time::Duration::from_secs(60);
    loop {
        let first = match tokio::time::timeout(idle, rx.recv()).await {
            Ok(Some(j)) => j,
            // Closed, or idle for a minute: end; the next purchase starts a new batcher.
            _ => return,
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let reqs: Vec<Reserve> = jobs.iter().map(|j| j.req.clone()).collect();
        let started = std::time::Instant::now();
        let result = reserve_batch(&db, &sale, &reqs).await;
        tracing::debug!(size = reqs.len(), elapsed = ?started.elapsed(), "reservation batch");
        match result {
            Ok(results) => {
                signal.notify();
                for (job, res) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(res);
                }
            }
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), size = jobs.len(), "batch failed; answering its requests one by one");
                for job in jobs {
                    let span = job.req.span.clone();
                    let res = reserve_one(&db, &sale, job.req).instrument(span).await;
                    let _ = job.reply.send(res);
                }
                signal.notify();
            }
        }
    }
}

fn new_purchase(sale: &SaleTerms, req: &Reserve) -> Purchase {
    Purchase::reserve(uuid::Uuid::new_v4().to_string(), &sale.sale_id, &req.ask, &req.address, Utc::now())
}

fn purchased_event(sale: &SaleTerms, p: &Purchase) -> ev::TimeSalePurchased {
    ev::TimeSalePurchased {
        purchase_id: p.purchase_id.clone(),
        sale_id: sale.sale_id.clone(),
        customer_id: p.customer_id.clone(),
        sku: sale.sku.clone(),
        quantity: p.quantity,
        unit_price_cents: sale.price_cents,
        shipping_address: Some(p.address.to_proto()),
        purchased_at: Some(store::ts(p.created_at)),
    }
}

/// One request, one transaction (naive mode, and the fallback of a failed batch).
pub async fn reserve_one(db: &DatabaseConnection, sale: &SaleTerms, req: Reserve) -> Result<Purchase, ReserveError> {
    let ask = &req.ask;
    if let Some(k) = &ask.idempotency_key
        && let Some(existing) = store::find_purchase_by_key(db, &ask.customer_id, k).await?
    {
        return Ok(existing);
    }
    let (txn, span) = db::begin(db, "reserve_one").await?;
    if !store::take_stock(&txn, &sale.sale_id, ask.quantity).await? {
        txn.rollback().await?;
        return Err(ReserveError::sold_out(sale));
    }
    if !store::allocate(&txn, &sale.sale_id, &ask.customer_id, ask.quantity, sale.per_customer_limit).await? {
        txn.rollback().await?;
        return Err(ReserveError::limit_exceeded(sale));
    }
    let purchase = new_purchase(sale, &req);
    let event = purchased_event(sale, &purchase);
    let write = async {
        store::insert_purchases(&txn, std::slice::from_ref(&purchase)).await?;
        outbox::enqueue(&txn, SOURCE, &event).await?;
        Ok::<_, DbErr>(())
    };
    match write.await {
        Ok(()) => {
            span.commit(txn).await?;
            Ok(purchase)
        }
        Err(e) if is_unique_violation(&e) && ask.idempotency_key.is_some() => {
            txn.rollback().await?;
            let k = ask.idempotency_key.as_deref().unwrap_or_default();
            store::find_purchase_by_key(db, &ask.customer_id, k).await?.ok_or(ReserveError::Db(e))
        }
        Err(e) => Err(e.into()),
    }
}

/// Decides and writes a whole batch in one transaction.
pub async fn reserve_batch(
    db: &DatabaseConnection,
    sale: &SaleTerms,
    reqs: &[Reserve],
) -> Result<Vec<Result<Purchase, ReserveError>>, DbErr> {
    let (txn, span) = db::begin(db, "reserve_batch").await?;
    let mut lock = store::sales::Entity::find_by_id(sale.sale_id.clone());
    if txn.get_database_backend() == DbBackend::Postgres {
        lock = lock.lock_exclusive();
    }
    let Some(row) = lock.one(&txn).await? else {
        return Err(DbErr::RecordNotFound(format!("sale {}", sale.sale_id)));
    };

    let customers: Vec<String> =
        reqs.iter().map(|r| r.ask.customer_id.clone()).collect::<HashSet<_>>().into_iter().collect();
    let keys: Vec<String> =
        reqs.iter().filter_map(|r| r.ask.idempotency_key.clone()).collect::<HashSet<_>>().into_iter().collect();
    let replays: HashMap<(String, String), Purchase> = store::find_purchases_by_keys(&txn, customers.clone(), keys)
        .await?
        .into_iter()
        .filter_map(|p| p.idempotency_key.clone().map(|k| ((p.customer_id.clone(), k), p)))
        .collect();
    let allocated: HashMap<String, i32> = store::allocations_of(&txn, &sale.sale_id, customers)
        .await?
        .into_iter()
        .map(|a| (a.customer_id, a.quantity))
        .collect();

    // Requests already answered by an earlier transaction are replays, not asks.
    let mut asks = Vec::new();
    let mut ask_index = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let a = &r.ask;
        let replay =
            a.idempotency_key.as_ref().is_some_and(|k| replays.contains_key(&(a.customer_id.clone(), k.clone())));
        if !replay {
            asks.push(a.clone());
            ask_index.push(i);
        }
    }
    let (decisions, granted) = domain::decide_batch(row.remaining_stock, sale.per_customer_limit, &allocated, &asks);

    let mut results: Vec<Option<Result<Purchase, ReserveError>>> = (0..reqs.len()).map(|_| None).collect();
    let mut new_rows = Vec::new();
    let mut events = Vec::new();
    let mut added: HashMap<String, i32> = HashMap::new();
    let mut granted_rows: HashMap<usize, Purchase> = HashMap::new();
    for (ai, d) in decisions.iter().enumerate() {
        let i = ask_index[ai];
        let r = &reqs[i];
        let res = match d {
            Decision::Granted => {
                let p = new_purchase(sale, r);
                events.push((purchased_event(sale, &p), r.span.clone()));
                *added.entry(r.ask.customer_id.clone()).or_default() += r.ask.quantity;
                new_rows.push(p.clone());
                granted_rows.insert(ai, p.clone());
                Ok(p)
            }
            Decision::SoldOut => Err(ReserveError::sold_out(sale)),
            Decision::LimitExceeded => Err(ReserveError::limit_exceeded(sale)),
            Decision::SameAs(first) => match (&decisions[*first], granted_rows.get(first)) {
                (Decision::Granted, Some(p)) => Ok(p.clone()),
                (Decision::SoldOut, _) => Err(ReserveError::sold_out(sale)),
                _ => Err(ReserveError::limit_exceeded(sale)),
            },
        };
        results[i] = Some(res);
    }
    for (i, r) in reqs.iter().enumerate() {
        if results[i].is_none() {
            let k = r.ask.idempotency_key.clone().unwrap_or_default();
            results[i] = Some(Ok(replays[&(r.ask.customer_id.clone(), k)].clone()));
        }
    }

    if granted > 0 {
        if !store::take_stock(&txn, &sale.sale_id, granted).await? {
            // Cannot happen under the row lock; refuse the batch rather than oversell.
            return Err(DbErr::Custom(format!("stock of sale {} moved under the lock", sale.sale_id)));
        }
        type Units = Vec<(String, i32)>;
        let (existing, fresh): (Units, Units) = added.into_iter().partition(|(c, _)| allocated.contains_key(c));
        store::add_allocations(&txn, &sale.sale_id, &existing, &fresh).await?;
        store::insert_purchases(&txn, &new_rows).await?;
        outbox::enqueue_many_traced(&txn, SOURCE, &events).await?;
    }
    span.commit(txn).await?;
    Ok(results.into_iter().map(|r| r.expect("every request answered")).collect())
}
