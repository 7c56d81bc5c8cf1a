//! The contract beyond the message definitions: what the `.proto` files cannot say but
//! every service and client relies on. This module is the one place that holds it.
//!
//! - [`topics`] — the Kafka topics (logical names, before `KAFKA_TOPIC_PREFIX`) and their
//!   dead-letter topics.
//! - [`CloudEvent`] — every event message with its CloudEvents `type` and its topic.
//! - [`reasons`] and the error model — business refusals are `FAILED_PRECONDITION` with
//!   `google.rpc.ErrorInfo{reason, domain: ERROR_DOMAIN}` ([`refusal`], [`reason_of`]);
//!   malformed input is `INVALID_ARGUMENT` with a `BadRequest` field violation naming the
//!   field ([`FieldError`], [`invalid_argument`]).
//! - The field rules shared by every request and event ([`text`], [`optional_text`],
//!   [`MAX_TEXT`]) and the [`Address`] value object (order and time-sale take one,
//!   delivery schedules to it).
//!
//! The platform crate knows none of these words: it publishes and consumes whatever
//! implements [`CloudEvent`] and creates the topics a service names.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{events::v1 as ev, order::v1::ShippingAddress};

/// Logical topic names (before `KAFKA_TOPIC_PREFIX`).
pub mod topics {
    pub const ORDER_EVENTS: &str = "order-events";
    pub const DELIVERY_EVENTS: &str = "delivery-events";
    pub const TIMESALE_EVENTS: &str = "timesale-events";
    /// Every topic of the contract, with its dead-letter topic (`<topic>.dlq`).
    pub const ALL: [&str; 6] = [
        ORDER_EVENTS,
        DELIVERY_EVENTS,
        TIMESALE_EVENTS,
        "order-events.dlq",
        "delivery-events.dlq",
        "timesale-events.dlq",
    ];
}

/// A protobuf event message with its place in the contract.
pub trait CloudEvent: prost::Message + Default {
    /// `ce_type`, e.g. `cloudmart.order.v1.OrderPlaced`.
    const TYPE: &'static str;
    /// Logical topic.
    const TOPIC: &'static str;
    /// The Kafka key (order id or purchase id): every event of one order (or purchase)
    /// lands on one partition, in order.
    fn key(&self) -> &str;
}

macro_rules! cloud_event {
    ($msg:ident, $ty:literal, $topic:expr, $key:ident) => {
        impl CloudEvent for ev::$msg {
            const TYPE: &'static str = $ty;
            const TOPIC: &'static str = $topic;
            fn key(&self) -> &str {
                &self.$key
            }
        }
    };
}

cloud_event!(OrderPlaced, "cloudmart.order.v1.OrderPlaced", topics::ORDER_EVENTS, order_id);
cloud_event!(OrderConfirmed, "cloudmart.order.v1.OrderConfirmed", topics::ORDER_EVENTS, order_id);
cloud_event!(OrderCancelled, "cloudmart.order.v1.OrderCancelled", topics::ORDER_EVENTS, order_id);
cloud_event!(DeliveryScheduled, "cloudmart.delivery.v1.DeliveryScheduled", topics::DELIVERY_EVENTS, order_id);
cloud_event!(DeliveryFailed, "cloudmart.delivery.v1.DeliveryFailed", topics::DELIVERY_EVENTS, order_id);
cloud_event!(DeliveryCancelled, "cloudmart.delivery.v1.DeliveryCancelled", topics::DELIVERY_EVENTS, order_id);
cloud_event!(TimeSalePurchased, "cloudmart.timesale.v1.TimeSalePurchased", topics::TIMESALE_EVENTS, purchase_id);
cloud_event!(
    TimeSaleStockRestored,
    "cloudmart.timesale.v1.TimeSaleStockRestored",
    topics::TIMESALE_EVENTS,
    purchase_id
);

/// The `ErrorInfo.domain` of cloudmart's refusals.
pub const ERROR_DOMAIN: &str = "cloudmart.io";

/// Business refusal reasons (`ErrorInfo.reason`), all `FAILED_PRECONDITION`.
pub mod reasons {
    pub const SOLD_OUT: &str = "SOLD_OUT";
    pub const LIMIT_EXCEEDED: &str = "LIMIT_EXCEEDED";
    pub const SALE_NOT_ACTIVE: &str = "SALE_NOT_ACTIVE";
    pub const UNSERVICEABLE_ADDRESS: &str = "UNSERVICEABLE_ADDRESS";
    pub const INVALID_STATE: &str = "INVALID_STATE";
}

/// `FAILED_PRECONDITION` with `ErrorInfo{reason, domain: cloudmart.io}`.
pub fn refusal(reason: &str, message: impl Into<String>) -> Status {
    Status::with_error_details(
        Code::FailedPrecondition,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::<String, String>::new()),
    )
}

/// The `ErrorInfo.reason` of a status, if it carries one.
pub fn reason_of(status: &Status) -> Option<String> {
    status.get_details_error_info().map(|i| i.reason)
}

/// `INVALID_ARGUMENT` naming `field`, with a `BadRequest` field violation.
pub fn invalid_argument(field: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field}: {description}"),
        ErrorDetails::with_bad_request_violation(field, description),
    )
}

/// A request or event field that failed validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub description: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

impl std::error::Error for FieldError {}

impl From<FieldError> for Status {
    fn from(e: FieldError) -> Self {
        invalid_argument(&e.field, e.description)
    }
}

/// Longest free-text value accepted.
pub const MAX_TEXT: usize = 200;

/// A required, trimmed, bounded text field.
pub fn text(field: &str, value: &str) -> Result<String, FieldError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    optional_text(field, v)
}

/// An optional, trimmed, bounded text field (empty allowed). Control characters are
/// refused on every backend: PostgreSQL cannot store U+0000 in text at all (it would
/// surface as INTERNAL), and the others have no business in names, ids or addresses.
pub fn optional_text(field: &str, value: &str) -> Result<String, FieldError> {
    let v = value.trim();
    if v.len() > MAX_TEXT {
        return Err(FieldError::new(field, format!("must be at most {MAX_TEXT} bytes")));
    }
    if let Some(c) = v.chars().find(|c| c.is_control()) {
        return Err(FieldError::new(field, format!("must not contain control characters (found U+{:04X})", c as u32)));
    }
    Ok(v.to_owned())
}

/// A validated shipping address: four trimmed, bounded lines, the country an upper-case
/// ISO 3166-1 alpha-2 code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    pub line1: String,
    pub city: String,
    pub postal_code: String,
    pub country: String,
}

impl Address {
    /// Validates all four fields of a request's `shipping_address`, naming the first that
    /// fails (`shipping_address.city`).
    pub fn parse(a: Option<&ShippingAddress>) -> Result<Self, FieldError> {
        let a = a.ok_or_else(|| FieldError::new("shipping_address", "is required"))?;
        let out = Address {
            line1: text("shipping_address.line1", &a.line1)?,
            city: text("shipping_address.city", &a.city)?,
            postal_code: text("shipping_address.postal_code", &a.postal_code)?,
            country: text("shipping_address.country", &a.country)?.to_ascii_uppercase(),
        };
        if out.country.len() != 2 || !out.country.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(FieldError::new("shipping_address.country", "must be a two-letter ISO 3166-1 code"));
        }
        Ok(out)
    }

    pub fn to_proto(&self) -> ShippingAddress {
        ShippingAddress {
            line1: self.line1.clone(),
            city: self.city.clone(),
            postal_code: self.postal_code.clone(),
            country: self.country.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_contract() {
        assert_eq!(<ev::OrderPlaced as CloudEvent>::TOPIC, "order-events");
        assert_eq!(<ev::DeliveryFailed as CloudEvent>::TOPIC, "delivery-events");
        assert_eq!(<ev::TimeSalePurchased as CloudEvent>::TOPIC, "timesale-events");
        for t in [topics::ORDER_EVENTS, topics::DELIVERY_EVENTS, topics::TIMESALE_EVENTS] {
            assert!(topics::ALL.contains(&format!("{t}.dlq").as_str()), "{t} has no dead-letter topic");
        }
    }

    #[test]
    fn refusals_carry_reason_and_bad_requests_the_field() {
        let s = refusal(reasons::SOLD_OUT, "sold out");
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(reason_of(&s).as_deref(), Some("SOLD_OUT"));
        let s = Status::from(FieldError::new("items[0].quantity", "must be > 0"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("items[0].quantity"));
        assert_eq!(s.get_details_bad_request().unwrap().field_violations[0].field, "items[0].quantity");
    }

    #[test]
    fn addresses() {
        let good =
            ShippingAddress { line1: "1".into(), city: "c".into(), postal_code: "p".into(), country: "kr".into() };
        assert_eq!(Address::parse(Some(&good)).unwrap().country, "KR");
        assert_eq!(Address::parse(Some(&good)).unwrap().to_proto().country, "KR");
        assert_eq!(Address::parse(None).unwrap_err().field, "shipping_address");
        let bad = ShippingAddress { city: " ".into(), ..good.clone() };
        assert_eq!(Address::parse(Some(&bad)).unwrap_err().field, "shipping_address.city");
        let bad = ShippingAddress { country: "Korea".into(), ..good.clone() };
        assert_eq!(Address::parse(Some(&bad)).unwrap_err().field, "shipping_address.country");
        let nul_line = ShippingAddress { line1: "1 Main\u{0}".into(), ..good };
        assert_eq!(Address::parse(Some(&nul_line)).unwrap_err().field, "shipping_address.line1");
    }

    /// Regression: a NUL in a text field reached PostgreSQL and came back as INTERNAL.
    #[test]
    fn control_characters_are_refused_naming_the_field() {
        let e = text("customer_id", "al\u{0}ice").unwrap_err();
        assert_eq!(e.field, "customer_id");
        assert!(e.description.contains("U+0000"), "{}", e.description);
        assert_eq!(optional_text("reason", "a\u{7}b").unwrap_err().field, "reason");
        assert_eq!(optional_text("reason", "changed my mind").unwrap(), "changed my mind");
        assert_eq!(text("title", "Game console — 한정판").unwrap(), "Game console — 한정판");
        assert_eq!(text("t", &"x".repeat(MAX_TEXT + 1)).unwrap_err().field, "t");
    }
}
