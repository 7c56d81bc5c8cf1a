//! Property-test support (feature `fuzz`) for the services' malformed-input tests.
//!
//! Each service generates every request message of its API and every event it consumes
//! from the strategies here — hostile text (NUL and other control characters, whitespace
//! only, unicode, past the length limit, near-UUIDs), extreme numbers, missing nested
//! messages, huge repeated fields, arbitrary bytes as payloads and headers — and checks,
//! on the embedded SQLite database or on PostgreSQL when `TEST_DATABASE_URL` is set:
//! - nothing panics;
//! - a request is answered OK or refused with an expected code, never `INTERNAL`/`UNKNOWN`;
//!   an `INVALID_ARGUMENT` carries a `BadRequest` field violation naming the field
//!   ([`check_refusal`]), and any refusal leaves every table as it was ([`row_counts`]);
//! - an event either applies or fails permanently (the dead-letter queue), never
//!   transiently (a transient failure is retried forever: a poison pill), and a permanent
//!   failure writes nothing.
//!
//! The budget is fixed ([`CASES`] per property, `PROPTEST_CASES` overrides) and the seed
//! is deterministic, so `make test` stays bounded and a failure reproduces; a failure
//! found this way is kept as a named regression test next to the property.

use std::collections::BTreeMap;

pub use proptest;
use proptest::{
    prelude::*,
    test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner},
};
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, Statement};
use tonic::Code;
use tonic_types::StatusExt;

use crate::proto::order::v1 as opb;

/// Generated cases per property in `make test` (override with `PROPTEST_CASES`).
pub const CASES: u32 = 64;

/// A deterministic runner with the fixed case budget; no failure files (regressions are
/// kept as named tests).
pub fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(CASES);
    let config = Config { cases, failure_persistence: None, max_shrink_iters: 256, ..Config::default() };
    TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
}

/// Runs `test` over `strategy` with [`runner`], panicking with the minimal failing input.
pub fn check<S: Strategy>(name: &str, strategy: &S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    if let Err(e) = runner().run(strategy, test) {
        panic!("property {name} failed: {e}");
    }
}

/// Characters no stored text may hold: NUL (PostgreSQL refuses it in `text`), C0/C1
/// controls, DEL, and controls that `trim` would not remove.
pub fn control_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => Just('\u{0}'),
        1 => Just('\u{7}'),
        1 => Just('\u{1b}'),
        1 => Just('\u{7f}'),
        1 => Just('\u{9f}'),
        1 => Just('\n'),
    ]
}

/// A random UUID in its canonical form.
pub fn uuid() -> impl Strategy<Value = String> {
    any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string())
}

/// Text as a hostile client sends it: empty, blank, plausible, arbitrary unicode, with a
/// control character (often NUL) inside, around and far past the length limit, a UUID
/// with a NUL appended.
pub fn text() -> BoxedStrategy<String> {
    prop_oneof![
        2 => Just(String::new()),
        1 => "[ \t\r\n]{1,4}",
        5 => "[a-zA-Z0-9 ._-]{1,24}",
        2 => any::<String>(),
        1 => "\\PC{1,40}",
        4 => ("[a-zA-Z0-9 ]{0,12}", control_char(), "[a-zA-Z0-9 ]{0,12}").prop_map(|(a, c, b)| format!("{a}{c}{b}")),
        1 => (190usize..=210, "\\PC").prop_map(|(n, c)| c.repeat(n)),
        1 => (201usize..5_000).prop_map(|n| "x".repeat(n)),
        1 => uuid().prop_map(|u| format!("{u}\u{0}")),
    ]
    .boxed()
}

/// An id field: one of `known` (so lookups hit rows), a random UUID, or [`text`].
pub fn id(known: Vec<String>) -> BoxedStrategy<String> {
    if known.is_empty() {
        return prop_oneof![1 => uuid(), 2 => text()].boxed();
    }
    prop_oneof![2 => proptest::sample::select(known), 1 => uuid(), 2 => text()].boxed()
}

/// An `int32` with its edges: 0, ±1, the extremes, small positives, anything.
pub fn int32() -> BoxedStrategy<i32> {
    prop_oneof![
        1 => Just(0),
        1 => Just(-1),
        1 => Just(i32::MIN),
        1 => Just(i32::MAX),
        4 => 1..20i32,
        2 => any::<i32>(),
    ]
    .boxed()
}

/// An `int64` with its edges.
pub fn int64() -> BoxedStrategy<i64> {
    prop_oneof![
        1 => Just(0),
        1 => Just(-1),
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
        4 => 0..100_000i64,
        2 => any::<i64>(),
    ]
    .boxed()
}

/// An optional `google.protobuf.Timestamp`: missing, around now, or any seconds/nanos
/// (out of every database's range, negative or too many nanoseconds).
pub fn timestamp() -> BoxedStrategy<Option<prost_types::Timestamp>> {
    let now = chrono::Utc::now().timestamp();
    prop_oneof![
        1 => Just(None),
        4 => (now - 86_400..now + 86_400, 0..1_000_000_000i32)
            .prop_map(|(seconds, nanos)| Some(prost_types::Timestamp { seconds, nanos })),
        2 => (int64(), int32()).prop_map(|(seconds, nanos)| Some(prost_types::Timestamp { seconds, nanos })),
    ]
    .boxed()
}

/// A valid shipping address (in a serviceable country), for seeding fixtures.
pub fn valid_address() -> opb::ShippingAddress {
    opb::ShippingAddress {
        line1: "1 Main St".into(),
        city: "Seoul".into(),
        postal_code: "04524".into(),
        country: "KR".into(),
    }
}

/// An optional shipping address: missing, valid, or with [`text`] anywhere.
pub fn address() -> BoxedStrategy<Option<opb::ShippingAddress>> {
    let country = prop_oneof![3 => Just("KR".to_owned()), 1 => Just("kr".to_owned()), 2 => text()];
    let field = || prop_oneof![3 => "[A-Za-z0-9 ]{1,16}", 2 => text()];
    prop_oneof![
        1 => Just(None),
        5 => (field(), field(), field(), country).prop_map(|(line1, city, postal_code, country)| {
            Some(opb::ShippingAddress { line1, city, postal_code, country })
        }),
    ]
    .boxed()
}

/// A repeated field: usually a few elements, sometimes just past a typical limit,
/// sometimes thousands.
pub fn repeated<S: Strategy + 'static>(element: S) -> BoxedStrategy<Vec<S::Value>>
where
    S::Value: std::fmt::Debug,
{
    let element = element.boxed();
    prop_oneof![
        8 => proptest::collection::vec(element.clone(), 0..5),
        1 => proptest::collection::vec(element.clone(), 95..130),
        1 => proptest::collection::vec(element, 2_000..4_000),
    ]
    .boxed()
}

/// Arbitrary bytes as an event payload.
pub fn bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        4 => proptest::collection::vec(any::<u8>(), 1..128),
        1 => proptest::collection::vec(any::<u8>(), 1_000..10_000),
    ]
    .boxed()
}

/// One generated record: its Kafka headers (name, value bytes) and its payload.
pub type Record = (Vec<(String, Option<Vec<u8>>)>, Vec<u8>);

/// A record as a producer — or a broken one — might send it. `typed` yields a `ce_type`
/// and a payload encoding that type (with hostile fields, from the service's own
/// strategies); the record mostly carries both, sometimes truncated bytes, arbitrary
/// bytes, another `ce_type`, a missing or wrong header, a NUL or arbitrary bytes in a
/// header value.
pub fn record(typed: BoxedStrategy<(String, Vec<u8>)>) -> BoxedStrategy<Record> {
    let value = |v: &str| Some(v.as_bytes().to_vec());
    let spec = prop_oneof![12 => Just(value("1.0")), 1 => Just(None), 1 => Just(value("0.3"))];
    let id = prop_oneof![
        8 => uuid().prop_map(move |u| value(&u)),
        2 => text().prop_map(move |t| value(&t)),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Some),
        1 => (201usize..4_000).prop_map(move |n| value(&"e".repeat(n))),
        1 => Just(None),
    ];
    let other_type = prop_oneof![2 => text().prop_map(move |t| value(&t)), 1 => Just(None)];
    let source = prop_oneof![4 => Just(value("fuzz")), 1 => text().prop_map(move |t| value(&t))];
    let trace = prop_oneof![4 => Just(None), 1 => text().prop_map(move |t| value(&t))];
    let payload_kind = prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)];
    (
        typed,
        spec,
        id,
        prop_oneof![9 => Just(None), 1 => other_type.prop_map(Some)],
        source,
        trace,
        payload_kind,
        bytes(),
        any::<proptest::sample::Index>(),
    )
        .prop_map(|((ce_type, encoded), spec, id, other_type, source, trace, kind, random, cut)| {
            let ce_type = other_type.unwrap_or_else(|| Some(ce_type.into_bytes()));
            let payload = match kind {
                0 => encoded,
                1 if !encoded.is_empty() => encoded[..cut.index(encoded.len())].to_vec(),
                _ => random,
            };
            let headers = [
                ("ce_specversion", spec),
                ("ce_id", id),
                ("ce_type", ce_type),
                ("ce_source", source),
                ("content-type", Some(b"application/protobuf".to_vec())),
                ("traceparent", trace),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), Some(v))))
            .collect();
            (headers, payload)
        })
        .boxed()
}

/// The event the consumer would hand its handler for `record` on `topic`, or `None` when
/// its headers already send it to the DLQ (the consumer never calls the handler then).
pub fn inbound(topic: &str, record: &Record) -> Option<crate::consumer::InboundEvent> {
    use rdkafka::message::{Header, OwnedHeaders};
    let (headers, payload) = record;
    let mut h = OwnedHeaders::new();
    for (key, value) in headers {
        h = h.insert(Header { key: key.as_str(), value: value.as_deref() });
    }
    let meta = crate::events::EventMeta::from_headers(Some(&h)).ok()?;
    Some(crate::consumer::InboundEvent {
        meta,
        topic: topic.to_owned(),
        key: None,
        payload: payload.clone(),
        partition: 0,
        offset: 0,
    })
}

/// Checks one generated call: OK (unless `must_refuse`), or a refusal [`check_refusal`]
/// accepts — `INVALID_ARGUMENT` when `must_refuse` — that changed no table.
pub fn check_answer<T>(
    result: &Result<tonic::Response<T>, tonic::Status>,
    allowed: &[Code],
    must_refuse: bool,
    before: &BTreeMap<String, i64>,
    after: &BTreeMap<String, i64>,
) -> Result<(), TestCaseError> {
    match result {
        Ok(_) => prop_assert!(!must_refuse, "accepted a request every backend must refuse"),
        Err(status) => {
            check_refusal(status, allowed)?;
            prop_assert!(
                !must_refuse || status.code() == Code::InvalidArgument,
                "must be INVALID_ARGUMENT, got {:?}: {}",
                status.code(),
                status.message()
            );
            prop_assert_eq!(before, after, "a refused call changed the database");
        }
    }
    Ok(())
}

/// Checks one generated event: applied (unless `must_fail`), or failed permanently (the
/// DLQ) having changed no table. A transient failure is a poison pill: the consumer
/// would retry it forever and stall its partition.
pub fn check_applied(
    result: &Result<crate::consumer::Applied, crate::consumer::HandleError>,
    must_fail: bool,
    before: &BTreeMap<String, i64>,
    after: &BTreeMap<String, i64>,
) -> Result<(), TestCaseError> {
    use crate::consumer::HandleError;
    match result {
        Ok(_) => prop_assert!(!must_fail, "applied an event that must go to the DLQ"),
        Err(HandleError::Transient(e)) => {
            prop_assert!(false, "transient failure on generated input (retried forever): {e:#}")
        }
        Err(HandleError::Permanent(_)) => prop_assert_eq!(before, after, "a dead-lettered event changed the database"),
    }
    Ok(())
}

/// One service's API and consumer on one fresh, migrated database, driven from proptest's
/// synchronous closures: [`Harness::call`] checks an answer, [`Harness::consume`] a
/// consumed record (the services' malformed-input tests hold one each).
pub struct Harness {
    pub rt: tokio::runtime::Runtime,
    pub db: DatabaseConnection,
    /// Every API call under test only reads: it must change no table, even when it succeeds.
    pub read_only: bool,
}

impl Harness {
    /// A two-thread runtime and a fresh database named after `label` ([`TestDatabase`]),
    /// migrated with `M`.
    ///
    /// [`TestDatabase`]: crate::testkit::TestDatabase
    pub fn new<M: sea_orm_migration::MigratorTrait>(label: &str, read_only: bool) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let db = rt.block_on(async {
            let tdb = crate::testkit::TestDatabase::create(label).await.expect("database");
            let db = crate::db::connect(&tdb.url).await.expect("connect");
            crate::db::migrate::<M>(&db).await.expect("migrate");
            db
        });
        Self { rt, db, read_only }
    }

    /// Runs one generated `call` and checks it with [`call_checked`].
    pub fn call<T>(
        &self,
        allowed: &[Code],
        must_refuse: bool,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<(), TestCaseError> {
        self.rt.block_on(call_checked(&self.db, allowed, must_refuse, self.read_only, call))
    }

    /// Feeds a generated `record` on `topic` to `handler` and checks it with [`consume_checked`].
    pub fn consume<H: crate::consumer::EventHandler>(
        &self,
        handler: &H,
        topic: &str,
        record: &Record,
    ) -> Result<(), TestCaseError> {
        self.rt.block_on(consume_checked(&self.db, handler, topic, record))
    }
}

/// Runs one generated `call` against `db` and checks its answer with [`check_answer`];
/// with `read_only`, also that it changed no table even when it succeeded.
pub async fn call_checked<T>(
    db: &DatabaseConnection,
    allowed: &[Code],
    must_refuse: bool,
    read_only: bool,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<(), TestCaseError> {
    let before = row_counts(db).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
    let result = call.await;
    let after = row_counts(db).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
    if read_only {
        prop_assert_eq!(&before, &after, "a read-only call changed the database");
    }
    check_answer(&result, allowed, must_refuse, &before, &after)
}

/// Feeds a generated `record` on `topic` to `handler` through the consumer's step and
/// checks the outcome with [`check_applied`] (records whose headers the consumer would
/// dead-letter before any handler runs are skipped: [`inbound`] refuses them).
pub async fn consume_checked<H: crate::consumer::EventHandler>(
    db: &DatabaseConnection,
    handler: &H,
    topic: &str,
    record: &Record,
) -> Result<(), TestCaseError> {
    let Some(event) = inbound(topic, record) else { return Ok(()) };
    let must_fail = has_nul([event.meta.id.as_str(), event.meta.ce_type.as_str()]);
    let before = row_counts(db).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
    let result = crate::consumer::apply(db, handler, &event).await;
    let after = row_counts(db).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
    check_applied(&result, must_fail, &before, &after)
}

/// Feeds `event` to `handler` through the consumer's step, which must fail permanently
/// (the DLQ) having written nothing; returns the error text (a regression case's check).
pub async fn expect_permanent<H: crate::consumer::EventHandler>(
    db: &DatabaseConnection,
    handler: &H,
    event: &crate::consumer::InboundEvent,
) -> String {
    let before = row_counts(db).await.expect("row counts");
    let result = crate::consumer::apply(db, handler, event).await;
    assert_eq!(row_counts(db).await.expect("row counts"), before, "nothing written");
    match result {
        Err(crate::consumer::HandleError::Permanent(e)) => format!("{e:#}"),
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

/// Whether any of `fields` holds a NUL: input every backend must refuse.
pub fn has_nul<'a>(fields: impl IntoIterator<Item = &'a str>) -> bool {
    fields.into_iter().any(|f| f.contains('\0'))
}

/// Checks a refusal of generated input: its code is one of `allowed` (never `INTERNAL`,
/// `UNKNOWN`, …), and an `INVALID_ARGUMENT` names the field in a `BadRequest` violation
/// and at the start of its message.
pub fn check_refusal(status: &tonic::Status, allowed: &[Code]) -> Result<(), TestCaseError> {
    prop_assert!(
        allowed.contains(&status.code()),
        "unexpected {:?}: {} (allowed: {allowed:?})",
        status.code(),
        status.message()
    );
    if status.code() == Code::InvalidArgument {
        let bad = status.get_details_bad_request();
        prop_assert!(bad.is_some(), "INVALID_ARGUMENT without BadRequest: {}", status.message());
        let violations = bad.map(|b| b.field_violations).unwrap_or_default();
        prop_assert!(!violations.is_empty(), "BadRequest without a field violation: {}", status.message());
        let field = &violations[0].field;
        prop_assert!(!field.is_empty(), "field violation with an empty field: {}", status.message());
        prop_assert!(
            status.message().starts_with(field.as_str()),
            "message {:?} does not start with the field {field:?}",
            status.message()
        );
    }
    Ok(())
}

/// Rows per table of `db` (every table, migrations' bookkeeping included): equal before
/// and after a refused call means the call wrote nothing.
pub async fn row_counts(db: &DatabaseConnection) -> Result<BTreeMap<String, i64>, sea_orm::DbErr> {
    let backend = db.get_database_backend();
    let list = match backend {
        DatabaseBackend::Postgres => "SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema()",
        _ => "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    };
    let mut counts = BTreeMap::new();
    for row in db.query_all_raw(Statement::from_string(backend, list)).await? {
        let table: String = row.try_get("", "name")?;
        let sql = format!("SELECT COUNT(*) AS n FROM \"{}\"", table.replace('"', "\"\""));
        let n: i64 = match db.query_one_raw(Statement::from_string(backend, sql)).await? {
            Some(r) => r.try_get("", "n")?,
            None => 0,
        };
        counts.insert(table, n);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_must_name_a_field() {
        let named = crate::grpc::invalid_argument("customer_id", "is required");
        assert!(check_refusal(&named, &[Code::InvalidArgument]).is_ok());
        let bare = tonic::Status::invalid_argument("bad");
        assert!(check_refusal(&bare, &[Code::InvalidArgument]).is_err());
        assert!(check_refusal(&tonic::Status::internal("boom"), &[Code::InvalidArgument]).is_err());
    }

    #[tokio::test]
    async fn row_counts_list_every_table() {
        let db = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
        db.execute_unprepared("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2);").await.unwrap();
        assert_eq!(row_counts(&db).await.unwrap().get("t"), Some(&2));
    }
}
