//! The part of the load generator's report that two programs share: the figures per
//! operation, per ramp step and per second, and the PNG chart drawn from them.
//!
//! `cloudmart-load` (crate `cloudmart-e2e`) measures and writes these figures into its
//! `CLOUDMART_LOAD_REPORT {json}` line; `kubectl cloudmart load` (crate `cloudmart-kubectl`)
//! reads them back from the pod log and draws the same chart with the autoscaler's replicas
//! added. The plugin must stay a small binary — it cannot depend on `cloudmart-e2e`, which
//! links librdkafka and sea-orm — so the shared types and the chart live here, in a crate
//! that needs only `serde`, `plotters` and `thiserror`.
//!
//! - [`model`]: the serde types ([`Second`], [`StepReport`], [`OperationReport`], …). Every
//!   field has a default, so a report from an older or newer load generator still parses.
//! - [`chart`]: [`chart::panels`] turns the series into the lines the chart draws (a pure
//!   function, tested against the report), [`chart::write_png`] draws them.
//! - [`ramp`]: the `--ramp` text both programs accept.

pub mod chart;
pub mod model;
pub mod ramp;

pub use chart::{ChartError, Line, Panel, panels, write_chart, write_png};
pub use model::{OperationReport, Percentiles, Quantiles, ReplicaSample, Second, StepReport};
