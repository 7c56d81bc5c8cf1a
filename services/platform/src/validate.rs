//! Request validation shared by the services: each check names the field it rejects,
//! so the API edge can answer `INVALID_ARGUMENT` with a `BadRequest` field violation.

/// A request field that failed validation.
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

/// An event whose attributes or payload fail validation can never be applied: it is a
/// permanent failure (the record goes to the DLQ), never a transient one — the database
/// would refuse it on every retry (PostgreSQL and NUL), and the consumer would be stuck.
impl From<FieldError> for crate::consumer::HandleError {
    fn from(e: FieldError) -> Self {
        crate::consumer::HandleError::Permanent(anyhow::Error::new(e))
    }
}

impl From<FieldError> for tonic::Status {
    fn from(e: FieldError) -> Self {
        crate::grpc::invalid_argument(&e.field, e.description)
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

/// A validated shipping address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    pub line1: String,
    pub city: String,
    pub postal_code: String,
    pub country: String,
}

/// Validates all four fields of a shipping address (country: ISO 3166-1 alpha-2, upper-cased).
pub fn address(a: Option<&crate::proto::order::v1::ShippingAddress>) -> Result<Address, FieldError> {
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

impl Address {
    pub fn to_proto(&self) -> crate::proto::order::v1::ShippingAddress {
        crate::proto::order::v1::ShippingAddress {
            line1: self.line1.clone(),
            city: self.city.clone(),
            postal_code: self.postal_code.clone(),
            country: self.country.clone(),
        }
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
    use crate::proto::order::v1::ShippingAddress;

    #[test]
    fn addresses() {
        let good =
            ShippingAddress { line1: "1".into(), city: "c".into(), postal_code: "p".into(), country: "kr".into() };
        assert_eq!(address(Some(&good)).unwrap().country, "KR");
        assert_eq!(address(None).unwrap_err().field, "shipping_address");
        let bad = ShippingAddress { city: " ".into(), ..good.clone() };
        assert_eq!(address(Some(&bad)).unwrap_err().field, "shipping_address.city");
        let bad = ShippingAddress { country: "Korea".into(), ..good };
        assert_eq!(address(Some(&bad)).unwrap_err().field, "shipping_address.country");
    }

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
        let nul_line = ShippingAddress {
            line1: "1 Main\u{0}".into(),
            city: "c".into(),
            postal_code: "p".into(),
            country: "KR".into(),
        };
        assert_eq!(address(Some(&nul_line)).unwrap_err().field, "shipping_address.line1");
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
