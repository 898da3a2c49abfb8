//! The alerts inside a monitoring tool's webhook payload, read as each vendor documents it:
//! Grafana unified alerting (webhook contact point, payload `version` "1"), Prometheus
//! Alertmanager (webhook payload version 4), Datadog (the Webhooks integration: its default
//! template, or the richer one Aurora documents) and PagerDuty (V3 webhooks). Unknown fields are
//! ignored; a field of the wrong type, a missing one, or a payload of another shape is a
//! [`SourceError`] naming what is wrong.
//!
//! Fingerprints: Alertmanager and Grafana send one per alert. A Datadog alert is its monitor and
//! the scope it fired for (`alert_id` + sorted `alert_scope`), or, from the default template, the
//! organisation and the event title without its `[Triggered]`/`[Recovered]` prefix. A PagerDuty
//! alert is the PagerDuty incident (`event.data.id`). Fingerprints other than the vendor's are
//! `sha256` hex of those parts, cut to 32 characters.
//!
//! Every text is cut to its limit and freed of control characters, rather than refused: a
//! delivery refused for one overlong label would lose every alert in it.

use std::collections::BTreeMap;

use aurora_events::incident::{Alert, AlertSource, AlertStatus, Severity};
use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const MAX_ALERTS_PER_DELIVERY: usize = 500;
pub const MAX_TITLE_CHARS: usize = 300;
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_KEY_CHARS: usize = 128;
pub const MAX_LABEL_VALUE_CHARS: usize = 1_024;
pub const MAX_ANNOTATIONS: usize = 32;
pub const MAX_ANNOTATION_CHARS: usize = 2_000;
pub const MAX_LINK_CHARS: usize = 2_048;

/// Why a payload is not what its source sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("the payload is not a {vendor} webhook payload: {reason}")]
    Shape { vendor: AlertSource, reason: String },
    #[error("a {vendor} payload carries at most {max} alerts; this one has {found}")]
    TooManyAlerts { vendor: AlertSource, max: usize, found: usize },
}

/// What a delivery says.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub alerts: Vec<Alert>,
    /// Why a well-formed delivery carries no alert to act on (a PagerDuty note, say).
    pub ignored: Option<String>,
}

/// The alerts of `payload` as `source` sends them.
pub fn parse(source: AlertSource, payload: &Value) -> Result<Parsed, SourceError> {
    let shape = |error: serde_json::Error| SourceError::Shape { vendor: source, reason: error.to_string() };
    if !payload.is_object() {
        return Err(SourceError::Shape { vendor: source, reason: "the payload must be a JSON object".into() });
    }
    let parsed = match source {
        AlertSource::Alertmanager => notification(source, payload, "4")?,
        AlertSource::Grafana => notification(source, payload, "1")?,
        AlertSource::Datadog => datadog(serde_json::from_value(payload.clone()).map_err(shape)?),
        AlertSource::Pagerduty => pagerduty(serde_json::from_value(payload.clone()).map_err(shape)?),
    };
    if parsed.alerts.len() > MAX_ALERTS_PER_DELIVERY {
        return Err(SourceError::TooManyAlerts { vendor: source, max: MAX_ALERTS_PER_DELIVERY, found: parsed.alerts.len() });
    }
    Ok(parsed)
}

/// The alerts of the notification Alertmanager (version 4) and Grafana (version 1) both send.
fn notification(source: AlertSource, payload: &Value, version: &str) -> Result<Parsed, SourceError> {
    let notification: Notification =
        serde_json::from_value(payload.clone()).map_err(|error| SourceError::Shape { vendor: source, reason: error.to_string() })?;
    if notification.version != version {
        return Err(SourceError::Shape {
            vendor: source,
            reason: format!("version is `{}`; Aurora reads version {version}", clip_line(&notification.version, 20)),
        });
    }
    notification.alerts(source)
}

/// The notification Alertmanager (version 4) and Grafana (version 1) both send.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    version: String,
    alerts: Vec<NotifiedAlert>,
    #[serde(default)]
    common_labels: BTreeMap<String, String>,
    #[serde(default)]
    common_annotations: BTreeMap<String, String>,
    #[serde(default, rename = "externalURL")]
    external_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotifiedAlert {
    status: String,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
    // Grafana's links.
    #[serde(default, rename = "silenceURL")]
    silence_url: Option<String>,
    #[serde(default, rename = "dashboardURL")]
    dashboard_url: Option<String>,
    #[serde(default, rename = "panelURL")]
    panel_url: Option<String>,
    #[serde(default)]
    value_string: Option<String>,
}

impl Notification {
    fn alerts(self, source: AlertSource) -> Result<Parsed, SourceError> {
        let mut alerts = Vec::with_capacity(self.alerts.len());
        for (index, notified) in self.alerts.into_iter().enumerate() {
            let status = match notified.status.as_str() {
                "firing" => AlertStatus::Firing,
                "resolved" => AlertStatus::Resolved,
                other => {
                    return Err(SourceError::Shape {
                        vendor: source,
                        reason: format!("alerts[{index}].status is `{}`, not firing or resolved", clip_line(other, 20)),
                    })
                }
            };
            let mut labels = notified.labels;
            for (key, value) in &self.common_labels {
                labels.entry(key.clone()).or_insert_with(|| value.clone());
            }
            let mut annotations = notified.annotations;
            for (key, value) in &self.common_annotations {
                annotations.entry(key.clone()).or_insert_with(|| value.clone());
            }
            if let Some(values) = notified.value_string.filter(|values| !values.is_empty()) {
                annotations.entry("values".into()).or_insert(values);
            }
            // Alertmanager's own fingerprint is a hash of the labels: the same when it is absent.
            let fingerprint = match notified.fingerprint.filter(|fingerprint| !fingerprint.trim().is_empty()) {
                Some(fingerprint) => clip_line(&fingerprint, 128),
                None => derived(labels.iter().flat_map(|(key, value)| [key.as_str(), value.as_str()])),
            };
            let mut links = BTreeMap::new();
            for (name, url) in [
                ("source", notified.generator_url),
                ("silence", notified.silence_url),
                ("dashboard", notified.dashboard_url),
                ("panel", notified.panel_url),
                ("runbook", annotations.get("runbook_url").cloned()),
                ("external", self.external_url.clone()),
            ] {
                if let Some(url) = url.filter(|url| !url.trim().is_empty()) {
                    links.insert(name.to_owned(), clip_line(&url, MAX_LINK_CHARS));
                }
            }
            let title = labels
                .get("alertname")
                .or_else(|| annotations.get("summary"))
                .cloned()
                .unwrap_or_else(|| format!("{source} alert {fingerprint}"));
            let severity = labels.get("severity").or_else(|| labels.get("priority")).and_then(|value| severity_of(value));
            alerts.push(normalised(Alert {
                source,
                fingerprint,
                status,
                title,
                severity,
                service: None,
                environment: None,
                labels,
                annotations,
                links,
                starts_at: notified.starts_at.as_deref().and_then(timestamp),
                ends_at: notified.ends_at.as_deref().and_then(timestamp),
            }));
        }
        Ok(Parsed { alerts, ignored: None })
    }
}

/// What a Datadog webhook sends: the default template's fields, and those of the template Aurora
/// documents. Every `$VARIABLE` arrives as a string.
#[derive(Debug, Deserialize)]
struct DatadogPayload {
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    event_type: Option<String>,
    title: String,
    #[serde(default)]
    date: Option<Value>,
    #[serde(default)]
    org: Option<DatadogOrg>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    alert_id: Option<Value>,
    #[serde(default)]
    alert_transition: Option<String>,
    #[serde(default)]
    alert_type: Option<String>,
    #[serde(default)]
    alert_title: Option<String>,
    #[serde(default)]
    alert_status: Option<String>,
    #[serde(default)]
    alert_scope: Option<String>,
    #[serde(default)]
    alert_priority: Option<String>,
    #[serde(default)]
    alert_metric: Option<String>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    tags: Option<String>,
    #[serde(default)]
    link: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DatadogOrg {
    #[serde(default)]
    id: Option<Value>,
}

/// A Datadog value that may be a number or a string (`"$ALERT_ID"` or `$ALERT_ID`).
fn scalar_text(value: &Option<Value>) -> Option<String> {
    match value {
        Some(Value::String(text)) if !text.trim().is_empty() => Some(text.trim().to_owned()),
        Some(Value::Number(number)) => Some(number.to_string()),
        _ => None,
    }
}

/// `[Triggered] CPU high` → (`Triggered`, `CPU high`).
fn datadog_title(title: &str) -> (Option<&str>, &str) {
    let title = title.trim();
    if let Some(rest) = title.strip_prefix('[') {
        if let Some((status, rest)) = rest.split_once(']') {
            return (Some(status.trim()), rest.trim());
        }
    }
    (None, title)
}

fn datadog(payload: DatadogPayload) -> Parsed {
    let (title_status, bare_title) = datadog_title(&payload.title);
    let transition = payload.alert_transition.as_deref().filter(|text| !text.is_empty()).or(title_status).unwrap_or("Triggered");
    let resolved = transition.contains("Recovered") || payload.alert_type.as_deref() == Some("success");
    let status = if resolved { AlertStatus::Resolved } else { AlertStatus::Firing };
    let mut labels = BTreeMap::new();
    for tag in payload.tags.iter().chain(payload.alert_scope.iter()).flat_map(|tags| tags.split(',')) {
        let tag = tag.trim();
        if tag.is_empty() {
            continue;
        }
        match tag.split_once(':') {
            Some((key, value)) => labels.insert(key.to_owned(), value.to_owned()),
            None => labels.insert(tag.to_owned(), String::new()),
        };
    }
    if let Some(host) = payload.hostname.as_deref().filter(|host| !host.is_empty()) {
        labels.insert("host".into(), host.to_owned());
    }
    if let Some(metric) = payload.alert_metric.as_deref().filter(|metric| !metric.is_empty()) {
        labels.insert("metric".into(), metric.to_owned());
    }
    if let Some(event_type) = payload.event_type.as_deref().filter(|event_type| !event_type.is_empty()) {
        labels.insert("event_type".into(), event_type.to_owned());
    }
    let monitor = scalar_text(&payload.alert_id);
    let fingerprint = match &monitor {
        Some(monitor) => {
            let mut scope: Vec<&str> =
                payload.alert_scope.as_deref().unwrap_or("").split(',').map(str::trim).filter(|part| !part.is_empty()).collect();
            scope.sort_unstable();
            derived(["datadog-monitor", monitor.as_str()].into_iter().chain(scope))
        }
        None => {
            let org = payload.org.as_ref().and_then(|org| scalar_text(&org.id)).unwrap_or_default();
            derived(["datadog-title", org.as_str(), bare_title])
        }
    };
    if let Some(monitor) = monitor {
        labels.insert("monitor_id".into(), monitor);
    }
    let mut annotations = BTreeMap::new();
    if let Some(body) = payload.body.filter(|body| !body.is_empty()) {
        annotations.insert("message".into(), body);
    }
    if let Some(status) = payload.alert_status.filter(|status| !status.is_empty()) {
        annotations.insert("status".into(), status);
    }
    if let Some(event_id) = scalar_text(&payload.id) {
        annotations.insert("event_id".into(), event_id);
    }
    annotations.insert("transition".into(), transition.to_owned());
    let mut links = BTreeMap::new();
    if let Some(link) = payload.link.filter(|link| !link.is_empty()) {
        links.insert("source".into(), link);
    }
    let severity = payload
        .alert_priority
        .as_deref()
        .and_then(severity_of)
        .or_else(|| if transition.contains("Warn") { Some(Severity::Warning) } else { None })
        .or_else(|| payload.alert_type.as_deref().and_then(severity_of));
    let title = payload.alert_title.filter(|title| !title.trim().is_empty()).unwrap_or_else(|| bare_title.to_owned());
    let at = payload.date.as_ref().and_then(|date| match date {
        Value::String(text) => text.trim().parse::<i64>().ok().and_then(epoch).or_else(|| timestamp(text)),
        Value::Number(number) => number.as_i64().and_then(epoch),
        _ => None,
    });
    let (starts_at, ends_at) = if resolved { (None, at) } else { (at, None) };
    let alert = Alert {
        source: AlertSource::Datadog,
        fingerprint,
        status,
        title,
        severity,
        service: None,
        environment: None,
        labels,
        annotations,
        links,
        starts_at,
        ends_at,
    };
    Parsed { alerts: vec![normalised(alert)], ignored: None }
}

/// A Datadog date: epoch milliseconds (or seconds, for small numbers).
fn epoch(value: i64) -> Option<DateTime<Utc>> {
    if value > 100_000_000_000 {
        Utc.timestamp_millis_opt(value).single()
    } else {
        Utc.timestamp_opt(value, 0).single()
    }
}

#[derive(Debug, Deserialize)]
struct PagerDutyWebhook {
    event: PagerDutyEvent,
}

#[derive(Debug, Deserialize)]
struct PagerDutyEvent {
    id: String,
    event_type: String,
    #[serde(default)]
    resource_type: Option<String>,
    occurred_at: String,
    data: PagerDutyData,
}

#[derive(Debug, Deserialize)]
struct PagerDutyData {
    id: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    number: Option<u64>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    incident_key: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    service: Option<PagerDutyReference>,
    #[serde(default)]
    priority: Option<PagerDutyReference>,
    #[serde(default)]
    urgency: Option<String>,
    #[serde(default)]
    escalation_policy: Option<PagerDutyReference>,
}

#[derive(Debug, Deserialize)]
struct PagerDutyReference {
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    id: Option<String>,
}

fn pagerduty(webhook: PagerDutyWebhook) -> Parsed {
    let event = webhook.event;
    let is_incident = event.resource_type.as_deref().unwrap_or("incident") == "incident"
        && event.data.kind.as_deref().is_none_or(|kind| kind == "incident");
    let status = match event.event_type.as_str() {
        "incident.triggered" | "incident.reopened" | "incident.unacknowledged" => Some(AlertStatus::Firing),
        "incident.resolved" => Some(AlertStatus::Resolved),
        _ => None,
    };
    let Some(status) = status.filter(|_| is_incident) else {
        return Parsed { alerts: Vec::new(), ignored: Some(format!("PagerDuty `{}` changes no alert", clip_line(&event.event_type, 60))) };
    };
    let data = event.data;
    let service = data.service.as_ref().and_then(|service| service.summary.clone());
    let mut labels = BTreeMap::new();
    if let Some(service) = &service {
        labels.insert("service".into(), service.clone());
    }
    if let Some(service_id) = data.service.as_ref().and_then(|service| service.id.clone()) {
        labels.insert("pagerduty_service_id".into(), service_id);
    }
    if let Some(urgency) = &data.urgency {
        labels.insert("urgency".into(), urgency.clone());
    }
    if let Some(priority) = data.priority.as_ref().and_then(|priority| priority.summary.clone()) {
        labels.insert("priority".into(), priority);
    }
    if let Some(policy) = data.escalation_policy.as_ref().and_then(|policy| policy.summary.clone()) {
        labels.insert("escalation_policy".into(), policy);
    }
    let mut annotations = BTreeMap::new();
    annotations.insert("event_id".into(), event.id.clone());
    annotations.insert("event_type".into(), event.event_type.clone());
    if let Some(number) = data.number {
        annotations.insert("number".into(), number.to_string());
    }
    if let Some(key) = data.incident_key {
        annotations.insert("incident_key".into(), key);
    }
    if let Some(status) = data.status {
        annotations.insert("pagerduty_status".into(), status);
    }
    let mut links = BTreeMap::new();
    if let Some(url) = data.html_url {
        links.insert("source".into(), url);
    }
    let severity = data
        .priority
        .as_ref()
        .and_then(|priority| priority.summary.as_deref())
        .and_then(severity_of)
        .or_else(|| data.urgency.as_deref().and_then(severity_of));
    let occurred = timestamp(&event.occurred_at);
    let alert = Alert {
        source: AlertSource::Pagerduty,
        fingerprint: derived(["pagerduty", data.id.as_str()]),
        status,
        title: data.title.unwrap_or_else(|| format!("PagerDuty incident {}", data.id)),
        severity,
        service,
        environment: None,
        labels,
        annotations,
        links,
        starts_at: data.created_at.as_deref().and_then(timestamp).or(occurred),
        ends_at: if status == AlertStatus::Resolved { occurred } else { None },
    };
    Parsed { alerts: vec![normalised(alert)], ignored: None }
}

/// An RFC 3339 time; Go's zero time (`0001-01-01T00:00:00Z`, "not ended") is none.
fn timestamp(text: &str) -> Option<DateTime<Utc>> {
    let time = DateTime::parse_from_rfc3339(text.trim()).ok()?.with_timezone(&Utc);
    (time.timestamp() > 0).then_some(time)
}

/// A fingerprint from parts: SHA-256 hex of them, NUL-separated, cut to 32 characters.
fn derived<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    format!("{:x}", hasher.finalize())[..32].to_owned()
}

/// A severity from the words monitoring tools use for it.
pub fn severity_of(text: &str) -> Option<Severity> {
    let text = text.trim().to_ascii_lowercase();
    Some(match text.as_str() {
        "critical" | "crit" | "page" | "emergency" | "fatal" | "p1" | "sev1" | "sev-1" | "sev0" | "disaster" => Severity::Critical,
        "high" | "error" | "major" | "p2" | "sev2" | "sev-2" => Severity::High,
        "warning" | "warn" | "minor" | "medium" | "p3" | "sev3" | "sev-3" | "average" => Severity::Warning,
        "info" | "informational" | "low" | "none" | "p4" | "p5" | "sev4" | "sev5" | "success" => Severity::Info,
        _ => return None,
    })
}

const SERVICE_LABELS: &[&str] =
    &["service", "service_name", "service.name", "app", "application", "app.kubernetes.io/name", "k8s_app", "job"];
const ENVIRONMENT_LABELS: &[&str] = &["env", "environment", "deployment.environment", "stage"];

/// `alert` with its service and environment read from its labels, and every text within its limit.
fn normalised(mut alert: Alert) -> Alert {
    alert.service = alert.service.or_else(|| SERVICE_LABELS.iter().find_map(|key| alert.labels.get(*key)).cloned());
    alert.environment = alert.environment.or_else(|| ENVIRONMENT_LABELS.iter().find_map(|key| alert.labels.get(*key)).cloned());
    alert.title = clip_line(&alert.title, MAX_TITLE_CHARS);
    if alert.title.is_empty() {
        alert.title = format!("{} alert", alert.source);
    }
    alert.fingerprint = clip_line(&alert.fingerprint, 128);
    alert.service = alert.service.map(|service| clip_line(&service, MAX_LABEL_VALUE_CHARS)).filter(|service| !service.is_empty());
    alert.environment =
        alert.environment.map(|environment| clip_line(&environment, MAX_LABEL_VALUE_CHARS)).filter(|environment| !environment.is_empty());
    alert.labels = clip_map(alert.labels, MAX_LABELS, MAX_LABEL_VALUE_CHARS, false);
    alert.annotations = clip_map(alert.annotations, MAX_ANNOTATIONS, MAX_ANNOTATION_CHARS, true);
    alert.links = clip_map(alert.links, 16, MAX_LINK_CHARS, false);
    alert
}

fn clip_map(map: BTreeMap<String, String>, max_entries: usize, max_value_chars: usize, multiline: bool) -> BTreeMap<String, String> {
    map.into_iter()
        .map(|(key, value)| {
            (
                clip_line(&key, MAX_LABEL_KEY_CHARS),
                if multiline { clip_text(&value, max_value_chars) } else { clip_line(&value, max_value_chars) },
            )
        })
        .filter(|(key, _)| !key.is_empty())
        .take(max_entries)
        .collect()
}

/// `payload` with every NUL character in its strings and keys replaced (Postgres keeps no NUL in
/// JSON), so that a vendor's odd byte never makes a delivery unrecordable.
pub fn without_nul(payload: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let clean = |text: String| if text.contains('\0') { text.replace('\0', "\u{fffd}") } else { text };
    match payload {
        Value::String(text) => Value::String(clean(text)),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nul).collect()),
        Value::Object(fields) => Value::Object(fields.into_iter().map(|(key, value)| (clean(key), without_nul(value))).collect()),
        other => other,
    }
}

/// One line: control characters dropped, at most `max` characters.
pub fn clip_line(text: &str, max: usize) -> String {
    text.trim().chars().filter(|character| !character.is_control()).take(max).collect()
}

/// Text: control characters other than line breaks and tabs dropped, at most `max` characters.
pub fn clip_text(text: &str, max: usize) -> String {
    text.trim().chars().filter(|character| !character.is_control() || matches!(character, '\n' | '\t')).take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_alertmanager_notification_is_read_per_alert() {
        let payload = json!({
            "version": "4", "groupKey": "{}:{alertname=\"HighLatency\"}", "truncatedAlerts": 0, "status": "firing",
            "receiver": "aurora", "groupLabels": {"alertname": "HighLatency"},
            "commonLabels": {"alertname": "HighLatency", "service": "checkout", "env": "prod"},
            "commonAnnotations": {"summary": "p99 over 2s"}, "externalURL": "http://alertmanager:9093",
            "alerts": [
                {"status": "firing", "labels": {"alertname": "HighLatency", "instance": "a:9100", "severity": "critical"},
                 "annotations": {}, "startsAt": "2026-12-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                 "generatorURL": "http://prometheus/graph", "fingerprint": "1a2b3c"},
                {"status": "resolved", "labels": {"alertname": "HighLatency", "instance": "b:9100"},
                 "annotations": {}, "startsAt": "2026-12-01T09:00:00Z", "endsAt": "2026-12-01T09:30:00Z", "fingerprint": "4d5e6f"}
            ]
        });
        let parsed = parse(AlertSource::Alertmanager, &payload).unwrap();
        assert_eq!(parsed.alerts.len(), 2);
        let first = &parsed.alerts[0];
        assert_eq!((first.fingerprint.as_str(), first.status, first.severity), ("1a2b3c", AlertStatus::Firing, Some(Severity::Critical)));
        assert_eq!((first.service.as_deref(), first.environment.as_deref()), (Some("checkout"), Some("prod")));
        assert_eq!(first.annotations.get("summary").map(String::as_str), Some("p99 over 2s"));
        assert!(first.ends_at.is_none(), "Go's zero time means not ended");
        assert_eq!(parsed.alerts[1].status, AlertStatus::Resolved);
        assert!(parsed.alerts[1].ends_at.is_some());
    }

    #[test]
    fn wrong_shapes_are_named() {
        let wrong_type = json!({"version": "4", "alerts": {"status": "firing"}});
        let error = parse(AlertSource::Alertmanager, &wrong_type).unwrap_err().to_string();
        assert!(error.contains("invalid type"), "{error}");
        let missing = json!({"version": "4"});
        assert!(parse(AlertSource::Alertmanager, &missing).unwrap_err().to_string().contains("alerts"));
        assert!(parse(AlertSource::Grafana, &json!([1, 2])).is_err());
        let old_version = json!({"version": "3", "alerts": []});
        assert!(parse(AlertSource::Alertmanager, &old_version).unwrap_err().to_string().contains("version 4"));
        let bad_status = json!({"version": "1", "alerts": [{"status": "pending", "labels": {}}]});
        assert!(parse(AlertSource::Grafana, &bad_status).unwrap_err().to_string().contains("alerts[0].status"));
    }

    #[test]
    fn datadog_fingerprints_ignore_the_transition_in_the_title() {
        let triggered = json!({"title": "[Triggered] CPU high on web-1", "body": "%%%\nCPU > 90", "org": {"id": "42", "name": "acme"}, "id": "111", "date": "1764583200000", "event_type": "query_alert_monitor", "last_updated": "1764583200000"});
        let recovered = json!({"title": "[Recovered] CPU high on web-1", "body": "back", "org": {"id": "42", "name": "acme"}, "id": "112", "date": "1764583800000", "event_type": "query_alert_monitor", "last_updated": "1764583800000"});
        let (fired, ended) = (parse(AlertSource::Datadog, &triggered).unwrap(), parse(AlertSource::Datadog, &recovered).unwrap());
        assert_eq!(fired.alerts[0].fingerprint, ended.alerts[0].fingerprint);
        assert_eq!((fired.alerts[0].status, ended.alerts[0].status), (AlertStatus::Firing, AlertStatus::Resolved));
        assert_eq!(fired.alerts[0].title, "CPU high on web-1");
        let documented = json!({"title": "[Triggered] x", "alert_id": "9876", "alert_scope": "service:checkout,env:prod", "alert_transition": "Triggered", "alert_priority": "P1"});
        let reordered = json!({"title": "[Recovered] x", "alert_id": "9876", "alert_scope": "env:prod,service:checkout", "alert_transition": "Recovered"});
        let (one, two) = (parse(AlertSource::Datadog, &documented).unwrap(), parse(AlertSource::Datadog, &reordered).unwrap());
        assert_eq!(one.alerts[0].fingerprint, two.alerts[0].fingerprint);
        assert_eq!((one.alerts[0].service.as_deref(), one.alerts[0].severity), (Some("checkout"), Some(Severity::Critical)));
    }

    #[test]
    fn pagerduty_incidents_are_alerts_and_other_events_are_ignored() {
        let triggered = json!({"event": {"id": "e1", "event_type": "incident.triggered", "resource_type": "incident", "occurred_at": "2026-12-01T10:00:00Z",
            "data": {"id": "PGR0VU2", "type": "incident", "title": "Disk full", "service": {"id": "PF9KMXH", "summary": "API Service", "type": "service_reference"}, "urgency": "high"}}});
        let parsed = parse(AlertSource::Pagerduty, &triggered).unwrap();
        assert_eq!((parsed.alerts[0].service.as_deref(), parsed.alerts[0].severity), (Some("API Service"), Some(Severity::High)));
        let note = json!({"event": {"id": "e2", "event_type": "incident.annotated", "resource_type": "incident", "occurred_at": "2026-12-01T10:01:00Z", "data": {"id": "PGR0VU2", "type": "incident_note"}}});
        let parsed = parse(AlertSource::Pagerduty, &note).unwrap();
        assert!(parsed.alerts.is_empty() && parsed.ignored.is_some());
    }

    #[test]
    fn texts_are_cut_and_cleaned_not_refused() {
        let payload = json!({"version": "1", "alerts": [{"status": "firing", "labels": {"alertname": "a\u{0}b".to_owned() + &"x".repeat(5000)}, "fingerprint": "f"}]});
        let parsed = parse(AlertSource::Grafana, &payload).unwrap();
        let title = &parsed.alerts[0].title;
        assert_eq!(title.chars().count(), MAX_TITLE_CHARS);
        assert!(title.starts_with("abx"));
    }
}
