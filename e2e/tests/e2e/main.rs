//! End-to-end tests over real OS processes: the release binaries of the services (and
//! `cloudmart-dev`, `cloudmart-smoke`) on PostgreSQL + a real broker when
//! TEST_DATABASE_URL / TEST_KAFKA_BROKERS are set (CI), otherwise on SQLite files and an
//! embedded mock broker. `make test` builds the binaries first.

mod harness;

mod crash;
mod dev;
mod dlq;
mod pyclient;
mod readme;
mod saga;
mod timesale;
mod tracing;
