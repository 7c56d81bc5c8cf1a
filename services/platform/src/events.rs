//! The CloudEvents Kafka binding (binary mode): the headers every event carries, the
//! dead-letter headers, and decoding. Which message goes to which topic under which
//! `ce_type` is the contract's ([`CloudEvent`], in `cloudmart_proto::contract`).

pub use cloudmart_proto::contract::CloudEvent;
use rdkafka::message::{Header, Headers, OwnedHeaders};

/// The dead-letter topic of `topic` (`<topic>.dlq`; the contract lists them in
/// [`topics::ALL`](cloudmart_proto::contract::topics::ALL)).
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// CloudEvents Kafka binding header names (binary mode) and our extras.
pub mod headers {
    pub const SPECVERSION: &str = "ce_specversion";
    pub const ID: &str = "ce_id";
    pub const TYPE: &str = "ce_type";
    pub const SOURCE: &str = "ce_source";
    pub const TIME: &str = "ce_time";
    pub const CONTENT_TYPE: &str = "content-type";
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
    /// Every header the consumer adds to a `<topic>.dlq` record starts with this; the
    /// record also keeps the original's key, payload and headers unchanged.
    pub const DLQ_PREFIX: &str = "dlq_";
    /// On `<topic>.dlq` records: why the consumer gave up on the message (the last error).
    pub const DLQ_ERROR: &str = "dlq_error";
    /// On `<topic>.dlq` records: where the message came from, `<topic>/<partition>/<offset>`
    /// (kept for compatibility; the same as [`DLQ_TOPIC`], [`DLQ_PARTITION`], [`DLQ_OFFSET`]).
    pub const DLQ_ORIGIN: &str = "dlq_origin";
    /// On `<topic>.dlq` records: the physical topic (with `KAFKA_TOPIC_PREFIX`) the message
    /// was consumed from — where a replay publishes it again.
    pub const DLQ_TOPIC: &str = "dlq_topic";
    /// On `<topic>.dlq` records: the original partition (decimal).
    pub const DLQ_PARTITION: &str = "dlq_partition";
    /// On `<topic>.dlq` records: the original offset (decimal).
    pub const DLQ_OFFSET: &str = "dlq_offset";
    /// On `<topic>.dlq` records: how many times the consumer tried the message before it
    /// gave up (decimal, >= 1; transient failures are retried, so > 1 means it failed
    /// transiently first and then permanently).
    pub const DLQ_ATTEMPTS: &str = "dlq_attempts";
    /// On `<topic>.dlq` records: when the consumer gave up, RFC 3339 UTC.
    pub const DLQ_FAILED_AT: &str = "dlq_failed_at";
    /// On records re-published by `cloudmart-audit dlq replay`: the dead-letter record they
    /// came from, `<dlq topic>/<partition>/<offset>`. Their `ce_id` is the original one,
    /// so a consumer that already applied the event ignores the replay.
    pub const REPLAYED_FROM: &str = "replayed_from";
    pub const PROTOBUF: &str = "application/protobuf";
}

/// The CloudEvents attributes of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMeta {
    pub id: String,
    pub ce_type: String,
    pub source: String,
    pub time: String,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl EventMeta {
    /// Kafka headers for this event (binary mode).
    pub fn to_headers(&self) -> OwnedHeaders {
        let mut h = OwnedHeaders::new()
            .insert(Header { key: headers::SPECVERSION, value: Some("1.0") })
            .insert(Header { key: headers::ID, value: Some(self.id.as_str()) })
            .insert(Header { key: headers::TYPE, value: Some(self.ce_type.as_str()) })
            .insert(Header { key: headers::SOURCE, value: Some(self.source.as_str()) })
            .insert(Header { key: headers::TIME, value: Some(self.time.as_str()) })
            .insert(Header { key: headers::CONTENT_TYPE, value: Some(headers::PROTOBUF) });
        if let Some(tp) = &self.traceparent {
            h = h.insert(Header { key: headers::TRACEPARENT, value: Some(tp.as_str()) });
        }
        if let Some(ts) = &self.tracestate {
            h = h.insert(Header { key: headers::TRACESTATE, value: Some(ts.as_str()) });
        }
        h
    }

    /// Reads the attributes back; names the first required header that is missing.
    pub fn from_headers<H: Headers>(h: Option<&H>) -> Result<Self, String> {
        let get = |name: &str| -> Option<String> {
            let h = h?;
            h.iter().find(|x| x.key == name).and_then(|x| x.value).map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let required = |name: &str| get(name).filter(|v| !v.is_empty()).ok_or_else(|| format!("missing header {name}"));
        let spec = required(headers::SPECVERSION)?;
        if spec != "1.0" {
            return Err(format!("unsupported {} {spec:?}", headers::SPECVERSION));
        }
        Ok(Self {
            id: required(headers::ID)?,
            ce_type: required(headers::TYPE)?,
            source: required(headers::SOURCE)?,
            time: get(headers::TIME).unwrap_or_default(),
            traceparent: get(headers::TRACEPARENT),
            tracestate: get(headers::TRACESTATE),
        })
    }
}

/// An event that can never be applied as it is — its payload does not decode, or a field
/// holds what no database stores — so it is always a permanent failure (the record goes
/// to the DLQ). Every consumer's typed error wraps it (`#[from] BadEvent`).
#[derive(Debug, thiserror::Error)]
pub enum BadEvent {
    #[error("payload does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error(transparent)]
    Invalid(#[from] crate::validate::FieldError),
}

impl crate::consumer::ApplyFailure for BadEvent {
    fn is_permanent(&self) -> bool {
        true
    }
}

/// Decodes `payload` as `E` when `ce_type` names it.
pub fn decode<E: CloudEvent>(payload: &[u8]) -> Result<E, BadEvent> {
    Ok(E::decode(payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let meta = EventMeta {
            id: "e1".into(),
            ce_type: "cloudmart.test.v1.Happened".into(),
            source: "order".into(),
            time: "2026-01-01T00:00:00Z".into(),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            tracestate: None,
        };
        let h = meta.to_headers();
        assert_eq!(EventMeta::from_headers(Some(&h)).unwrap(), meta);
    }

    #[test]
    fn missing_headers_are_named() {
        let h = OwnedHeaders::new().insert(Header { key: headers::SPECVERSION, value: Some("1.0") });
        assert_eq!(EventMeta::from_headers(Some(&h)).unwrap_err(), "missing header ce_id");
        assert_eq!(EventMeta::from_headers::<OwnedHeaders>(None).unwrap_err(), "missing header ce_specversion");
    }

    #[test]
    fn dead_letter_topics_are_in_the_contract() {
        use cloudmart_proto::contract::topics;
        for t in [topics::ORDER_EVENTS, topics::DELIVERY_EVENTS, topics::TIMESALE_EVENTS] {
            assert!(topics::ALL.contains(&dlq_topic(t).as_str()), "{t}");
        }
    }
}
