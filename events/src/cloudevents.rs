//! The CloudEvents 1.0 Kafka protocol binding, binary content mode: attributes travel as `ce_*`
//! headers, the payload is the record value, the stream id is the key. Aurora's own envelope
//! fields travel as CloudEvents extension attributes (lowercase alphanumeric names).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::envelope::Envelope;

pub const SPEC_VERSION: &str = "1.0";
pub const CONTENT_TYPE: &str = "application/json";

pub const H_ID: &str = "ce_id";
pub const H_TYPE: &str = "ce_type";
pub const H_SOURCE: &str = "ce_source";
pub const H_SPECVERSION: &str = "ce_specversion";
pub const H_TIME: &str = "ce_time";
pub const H_SUBJECT: &str = "ce_subject";
pub const H_CONTENT_TYPE: &str = "content-type";
pub const H_ORG: &str = "ce_auroraorg";
pub const H_ACTOR: &str = "ce_auroraactor";
pub const H_STREAM_VERSION: &str = "ce_aurorastreamversion";
pub const H_SCHEMA_VERSION: &str = "ce_auroraschemaversion";
pub const H_CORRELATION: &str = "ce_auroracorrelation";
pub const H_CAUSATION: &str = "ce_auroracausation";
pub const H_TRACEPARENT: &str = "ce_traceparent";

/// The CloudEvents `source` of every Aurora event of a category.
pub fn source_for(category: &str) -> String {
    format!("/aurora/{category}")
}

/// The headers and value of the record for `envelope`. The key is `envelope.stream`.
pub fn to_binary(envelope: &Envelope) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let value = serde_json::to_vec(&envelope.payload).expect("JSON values always serialize");
    (headers_of(envelope), value)
}

/// The `ce_*` headers of the record for `envelope` (its payload is not read).
pub fn headers_of(envelope: &Envelope) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        (H_ID, envelope.id.to_string()),
        (H_TYPE, envelope.event_type.clone()),
        (H_SOURCE, source_for(envelope.stream.category())),
        (H_SPECVERSION, SPEC_VERSION.to_owned()),
        (H_TIME, envelope.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true)),
        (H_SUBJECT, envelope.stream.to_string()),
        (H_CONTENT_TYPE, CONTENT_TYPE.to_owned()),
        (H_ORG, envelope.org_id.to_string()),
        (H_ACTOR, envelope.actor.to_string()),
        (H_STREAM_VERSION, envelope.stream_version.to_string()),
        (H_SCHEMA_VERSION, envelope.schema_version.to_string()),
        (H_CORRELATION, envelope.correlation_id.to_string()),
    ];
    if let Some(causation) = envelope.causation_id {
        headers.push((H_CAUSATION, causation.to_string()));
    }
    if let Some(traceparent) = &envelope.traceparent {
        headers.push((H_TRACEPARENT, traceparent.clone()));
    }
    headers
}

#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    #[error("record has no `{0}` header")]
    MissingHeader(&'static str),
    #[error("header `{header}` is not valid: {reason}")]
    BadHeader { header: &'static str, reason: String },
    #[error("record value is not JSON: {0}")]
    BadValue(#[from] serde_json::Error),
    #[error("record has no value")]
    MissingValue,
}

/// Reads an envelope back from a record's headers (looked up by name) and value.
pub fn from_binary<'a>(header: impl Fn(&str) -> Option<&'a str>, value: Option<&[u8]>) -> Result<Envelope, BindingError> {
    fn required<'a>(header: &impl Fn(&str) -> Option<&'a str>, name: &'static str) -> Result<&'a str, BindingError> {
        header(name).ok_or(BindingError::MissingHeader(name))
    }
    fn parsed<T: std::str::FromStr>(name: &'static str, text: &str) -> Result<T, BindingError>
    where
        T::Err: std::fmt::Display,
    {
        text.parse().map_err(|error: T::Err| BindingError::BadHeader { header: name, reason: error.to_string() })
    }

    let spec_version = required(&header, H_SPECVERSION)?;
    if spec_version != SPEC_VERSION {
        return Err(BindingError::BadHeader { header: H_SPECVERSION, reason: format!("expected {SPEC_VERSION}, found {spec_version}") });
    }
    let occurred_at: DateTime<Utc> = DateTime::parse_from_rfc3339(required(&header, H_TIME)?)
        .map_err(|error| BindingError::BadHeader { header: H_TIME, reason: error.to_string() })?
        .with_timezone(&Utc);
    let causation_id = header(H_CAUSATION).map(|text| parsed::<Uuid>(H_CAUSATION, text)).transpose()?;
    let value = value.ok_or(BindingError::MissingValue)?;
    Ok(Envelope {
        id: parsed(H_ID, required(&header, H_ID)?)?,
        event_type: required(&header, H_TYPE)?.to_owned(),
        schema_version: parsed(H_SCHEMA_VERSION, required(&header, H_SCHEMA_VERSION)?)?,
        stream: parsed(H_SUBJECT, required(&header, H_SUBJECT)?)?,
        stream_version: parsed(H_STREAM_VERSION, required(&header, H_STREAM_VERSION)?)?,
        org_id: parsed(H_ORG, required(&header, H_ORG)?)?,
        actor: parsed(H_ACTOR, required(&header, H_ACTOR)?)?,
        occurred_at,
        correlation_id: parsed(H_CORRELATION, required(&header, H_CORRELATION)?)?,
        causation_id,
        traceparent: header(H_TRACEPARENT).map(str::to_owned),
        payload: serde_json::from_slice(value)?,
    })
}

/// The same event in the CloudEvents JSON format (structured mode), as `aurora events tail`
/// prints it.
pub fn to_structured_json(envelope: &Envelope) -> serde_json::Value {
    let mut event = json!({
        "specversion": SPEC_VERSION,
        "id": envelope.id,
        "type": envelope.event_type,
        "source": source_for(envelope.stream.category()),
        "subject": envelope.stream.to_string(),
        "time": envelope.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        "datacontenttype": CONTENT_TYPE,
        "auroraorg": envelope.org_id,
        "auroraactor": envelope.actor.to_string(),
        "aurorastreamversion": envelope.stream_version,
        "auroraschemaversion": envelope.schema_version,
        "auroracorrelation": envelope.correlation_id,
        "data": envelope.payload,
    });
    let object = event.as_object_mut().expect("built as an object");
    if let Some(causation) = envelope.causation_id {
        object.insert("auroracausation".into(), json!(causation));
    }
    if let Some(traceparent) = &envelope.traceparent {
        object.insert("traceparent".into(), json!(traceparent));
    }
    event
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::envelope::{Actor, OrgId};

    fn sample() -> Envelope {
        Envelope {
            id: Uuid::now_v7(),
            event_type: "chat.session_renamed".into(),
            schema_version: 1,
            stream: "chat-abc".parse().unwrap(),
            stream_version: 3,
            org_id: OrgId(Uuid::now_v7()),
            actor: Actor::user(Uuid::from_u128(1)),
            occurred_at: Utc::now(),
            correlation_id: Uuid::now_v7(),
            causation_id: Some(Uuid::now_v7()),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            payload: json!({ "title": "t" }),
        }
    }

    #[test]
    fn binary_mode_round_trips_every_field() {
        let envelope = sample();
        let (headers, value) = to_binary(&envelope);
        let by_name: HashMap<&str, &str> = headers.iter().map(|(name, text)| (*name, text.as_str())).collect();
        let decoded = from_binary(|name| by_name.get(name).copied(), Some(&value)).unwrap();
        // Timestamps travel with microsecond precision.
        assert_eq!(decoded.occurred_at.timestamp_micros(), envelope.occurred_at.timestamp_micros());
        assert_eq!(Envelope { occurred_at: envelope.occurred_at, ..decoded }, envelope);
    }

    #[test]
    fn records_without_required_headers_are_rejected_by_name() {
        let error = from_binary(|name| (name == H_SPECVERSION).then_some("1.0"), Some(b"{}")).unwrap_err();
        assert!(matches!(error, BindingError::MissingHeader(H_TIME)), "{error}");
    }
}
