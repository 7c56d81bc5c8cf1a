//! Request validation shared by the services: each check names the field it rejects,
//! so the API edge can answer `INVALID_ARGUMENT` with a `BadRequest` field violation.
//! The field rules themselves (`text`, `optional_text`, `MAX_TEXT`, [`FieldError`]) are
//! the contract's and re-exported here; this module adds ids, keys, quantities and event
//! attributes.

pub use cloudmart_proto::contract::{FieldError, MAX_TEXT, optional_text, text};

/// An event whose attributes or payload fail validation can never be applied: it is a
/// permanent failure (the record goes to the DLQ), never a transient one — the database
/// would refuse it on every retry (PostgreSQL and NUL), and the consumer would be stuck.
impl From<FieldError> for crate::consumer::HandleError {
    fn from(e: FieldError) -> Self {
        crate::consumer::HandleError::Permanent(anyhow::Error::new(e))
    }
}

/// An optional idempotency key (empty = none).
pub fn idempotency_key(value: &str) -> Result<Option<String>, FieldError> {
    let v = optional_text("idempotency_key", value)?;
    Ok(if v.is_empty() { None } else { Some(v) })
}

/// A text value an event carries into the database (an id, a name, an address line):
/// bounded and free of control characters, like [`optional_text`]; checked, not rewritten.
pub fn event_text(field: &str, value: &str) -> Result<(), FieldError> {
    optional_text(field, value).map(|_| ())
}

/// The CloudEvents attributes the idempotent consumer stores with every event
/// (`processed_events.event_id`, `.event_type`), checked before its transaction opens:
/// a NUL or an unbounded `ce_id` would otherwise fail the insert on every retry.
pub fn event_meta(meta: &crate::events::EventMeta) -> Result<(), FieldError> {
    text("ce_id", &meta.id)?;
    event_text("ce_type", &meta.ce_type)
}

/// A UUID-valued id field, normalised to its hyphenated lower-case form.
pub fn uuid(field: &str, value: &str) -> Result<String, FieldError> {
    uuid::Uuid::parse_str(value.trim()).map(|u| u.to_string()).map_err(|_| FieldError::new(field, "must be a UUID"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_keys() {
        assert_eq!(uuid("sale_id", "x").unwrap_err().field, "sale_id");
        assert!(uuid("sale_id", "67e55044-10b1-426f-9247-bb680e5fe0c8").is_ok());
        assert_eq!(idempotency_key("  ").unwrap(), None);
        assert_eq!(text("t", &"x".repeat(201)).unwrap_err().field, "t");
    }

    /// Regression: a NUL in a text field reached PostgreSQL and came back as INTERNAL.
    #[test]
    fn control_characters_are_refused_naming_the_field() {
        let e = text("customer_id", "al\u{0}ice").unwrap_err();
        assert_eq!(e.field, "customer_id");
        assert!(e.description.contains("U+0000"), "{}", e.description);
        assert_eq!(idempotency_key("k\u{0}").unwrap_err().field, "idempotency_key");
        assert_eq!(optional_text("reason", "a\u{7}b").unwrap_err().field, "reason");
        assert_eq!(optional_text("reason", "changed my mind").unwrap(), "changed my mind");
        assert_eq!(text("title", "Game console — 한정판").unwrap(), "Game console — 한정판");
    }

    /// Event attributes with a NUL are a permanent failure naming the header.
    #[test]
    fn event_attributes_are_checked() {
        let meta = crate::events::EventMeta {
            id: "e\u{0}1".into(),
            ce_type: "t".into(),
            source: "s".into(),
            time: String::new(),
            traceparent: None,
            tracestate: None,
        };
        assert_eq!(event_meta(&meta).unwrap_err().field, "ce_id");
        let meta = crate::events::EventMeta { id: "e1".into(), ce_type: "x".repeat(MAX_TEXT + 1), ..meta };
        let err = crate::consumer::HandleError::from(event_meta(&meta).unwrap_err());
        assert!(matches!(err, crate::consumer::HandleError::Permanent(_)), "{err}");
        assert!(err.to_string().contains("ce_type"), "{err}");
        assert!(event_text("order_id", "o-1").is_ok());
    }
}
