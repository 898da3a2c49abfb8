//! Events of incidents and of the webhooks that open them.
//!
//! An organisation's webhook endpoint (stream `webhook-<org id>`) has a token that admins rotate
//! and an optional shared secret per source; each delivery a monitoring tool makes is a stream of
//! its own (`webhook-<delivery id>`, the id derived from what was delivered, so a redelivery is
//! the same stream) holding `webhook.received` with the payload as the vendor sent it. The intake
//! processor reads the alerts out of it and records them on incidents (`incident-<incident id>`):
//! opened, alerts attached (with why they were grouped), fired again, resolved, detached; the
//! people's changes; the investigation with its thoughts and its root-cause analysis; the
//! postmortem's versions.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event_family;

/// A monitoring tool that sends alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertSource {
    Grafana,
    Alertmanager,
    Datadog,
    Pagerduty,
}

impl AlertSource {
    pub const ALL: [AlertSource; 4] = [AlertSource::Grafana, AlertSource::Alertmanager, AlertSource::Datadog, AlertSource::Pagerduty];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertSource::Grafana => "grafana",
            AlertSource::Alertmanager => "alertmanager",
            AlertSource::Datadog => "datadog",
            AlertSource::Pagerduty => "pagerduty",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|source| source.as_str() == text)
    }
}

impl std::fmt::Display for AlertSource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// How bad an incident is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Severity::Info, Severity::Warning, Severity::High, Severity::Critical].into_iter().find(|severity| severity.as_str() == text)
    }
}

/// `webhook.token_rotated`: the endpoint's URL token changed; the old one stops working. Only the
/// token's SHA-256 is recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookTokenRotated {
    /// SHA-256 of the token, hex.
    pub token_sha256: String,
}

/// `webhook.secret_set`: a source's shared secret was stored in the secret store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookSecretSet {
    pub source: AlertSource,
    /// Where the secret is (`vault:...`); never the secret.
    pub secret_ref: String,
    /// The secret store's version of it.
    pub secret_version: u64,
}

/// `webhook.secret_cleared`: the source needs no shared secret any more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookSecretCleared {
    pub source: AlertSource,
}

/// `webhook.received`: a delivery was accepted, as the vendor sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookReceived {
    pub delivery_id: Uuid,
    pub source: AlertSource,
    pub received_at: DateTime<Utc>,
    /// SHA-256 of the body as received, hex.
    pub body_sha256: String,
    /// The payload, parsed but otherwise untouched (unknown fields kept).
    pub payload: serde_json::Value,
}

event_family! {
    /// An organisation's webhook endpoint and every delivery made to it.
    pub enum WebhookEvent in "webhook", named by WebhookEventType {
        TokenRotated(WebhookTokenRotated) = ("webhook.token_rotated", 1),
        SecretSet(WebhookSecretSet) = ("webhook.secret_set", 1),
        SecretCleared(WebhookSecretCleared) = ("webhook.secret_cleared", 1),
        Received(WebhookReceived) = ("webhook.received", 1),
    }
}

/// Whether an alert is firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// One alert as a source described it, normalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Alert {
    pub source: AlertSource,
    /// The alert's identity at its source (sent by Alertmanager and Grafana, derived for the others).
    pub fingerprint: String,
    pub status: AlertStatus,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Links the source gave: its own page of the alert, a dashboard, a panel, a runbook.
    pub links: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
}

/// Why an alert joined an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupingRule {
    /// The alert opened the incident.
    Opened,
    /// Same service as the incident, within the grouping window.
    SameService,
    /// Enough labels in common with the incident, within the grouping window.
    MatchingLabels,
    /// Its service and the incident's depend on each other in the discovered service graph,
    /// within the grouping window (the reason names the path).
    DependencyPath,
    /// A person merged its incident into this one.
    Merged,
    /// A person split it off another incident into this one.
    Split,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Grouping {
    pub rule: GroupingRule,
    /// 1.0 for the same service, the share of labels in common for matching labels, one over the
    /// number of dependencies between the services for a dependency path.
    pub score: f64,
    /// In words, for the person who reads it.
    pub reason: String,
}

/// `incident.opened`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IncidentOpened {
    pub incident_id: Uuid,
    pub title: String,
    pub severity: Severity,
    pub source: AlertSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub opened_at: DateTime<Utc>,
    /// The incident this one was split off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_from: Option<Uuid>,
}

/// `alert.attached`: an alert joined the incident (the first one opened it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlertAttached {
    pub alert: Alert,
    pub grouping: Grouping,
    /// The delivery that brought it (none when a person moved it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<Uuid>,
    pub attached_at: DateTime<Utc>,
}

/// `alert.refired`: an alert of the incident fired again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlertRefired {
    pub source: AlertSource,
    pub fingerprint: String,
    pub delivery_id: Uuid,
    pub at: DateTime<Utc>,
    /// How many times it fired, this one included.
    pub firings: u32,
}

/// `alert.resolved`: the source says an alert of the incident stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlertResolved {
    pub source: AlertSource,
    pub fingerprint: String,
    pub resolved_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<Uuid>,
}

/// `alert.detached`: a person split an alert off the incident into another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlertDetached {
    pub source: AlertSource,
    pub fingerprint: String,
    pub to_incident: Uuid,
}

/// `incident.acknowledged`: someone is on it (the envelope's actor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IncidentAcknowledged {
    pub at: DateTime<Utc>,
}

/// `incident.severity_changed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SeverityChanged {
    pub from: Severity,
    pub to: Severity,
}

/// Why an investigation was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvestigationTrigger {
    /// The incident opened.
    Opened,
    /// A person asked for a new one.
    Requested,
}

/// `investigation.requested`: queued; it starts when the organisation has a free slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InvestigationRequested {
    pub investigation_id: Uuid,
    pub trigger: InvestigationTrigger,
    pub requested_at: DateTime<Utc>,
}

/// What an investigation may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InvestigationLimits {
    pub wall_time_secs: u64,
    pub tool_calls: u32,
    pub llm_calls: u32,
    pub tokens: u32,
}

/// `investigation.started`: the agent runs it in chat session `session_id`, read-only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InvestigationStarted {
    pub investigation_id: Uuid,
    pub session_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub limits: InvestigationLimits,
}

/// `investigation.thought_recorded`: one sentence of the agent's reasoning, as it works.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ThoughtRecorded {
    pub investigation_id: Uuid,
    /// 1 for the first thought of the investigation.
    pub seq: u32,
    pub text: String,
    /// The tools the agent called right after this reasoning, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<String>,
}

/// How sure an RCA is of its root cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    /// The evidence shows the cause.
    Confirmed,
    /// The evidence points at the cause without proving it.
    Likely,
    /// The evidence does not support a cause.
    Inconclusive,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RootCause {
    pub confidence: Confidence,
    /// The cause, with `[n]` citations; none when inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// The evidence items (their `id`) that support it; at least one unless inconclusive.
    #[serde(default)]
    pub evidence: Vec<u32>,
}

/// One finding, and the tool call whose output shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Evidence {
    /// What `[n]` in the texts refers to.
    pub id: u32,
    pub tool_call_id: String,
    /// The tool that was called (filled in from the record, not the model).
    #[serde(default)]
    pub tool: String,
    pub finding: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TimelineEntry {
    /// When, as the evidence gives it (RFC 3339 when known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    pub event: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RuledOut {
    pub hypothesis: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NotChecked {
    pub what: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NextStep {
    pub action: String,
    pub risk: Risk,
    /// How to undo it.
    pub undo: String,
}

/// A root-cause analysis, validated: every `[n]` resolves to an evidence item, every evidence
/// item to a tool call of the investigation whose output is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Rca {
    /// What happened, in a few sentences.
    pub summary: String,
    pub root_cause: RootCause,
    pub evidence: Vec<Evidence>,
    pub impact: String,
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
    #[serde(default)]
    pub ruled_out: Vec<RuledOut>,
    #[serde(default)]
    pub not_checked: Vec<NotChecked>,
    #[serde(default)]
    pub next_steps: Vec<NextStep>,
}

/// `investigation.completed`: the agent's RCA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InvestigationCompleted {
    pub investigation_id: Uuid,
    pub rca: Rca,
    pub completed_at: DateTime<Utc>,
    pub tool_calls: u32,
    pub tokens: u32,
}

/// Why an investigation ended without an RCA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvestigationFailure {
    WallTimeLimit,
    ToolCallLimit,
    LlmCallLimit,
    TokenLimit,
    LlmUnavailable,
    /// The model's RCA was refused twice (the reasons are in the message).
    InvalidRca,
    Cancelled,
}

/// `investigation.failed`: ended without an RCA; the thoughts so far stay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InvestigationFailed {
    pub investigation_id: Uuid,
    pub reason: InvestigationFailure,
    pub message: String,
    pub failed_at: DateTime<Utc>,
}

/// How an incident came to be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// Its last firing alert resolved.
    AlertsResolved,
    /// A person resolved it.
    Manual,
}

/// `incident.resolved`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IncidentResolved {
    pub resolved_at: DateTime<Utc>,
    /// From opening to now.
    pub duration_secs: u64,
    pub resolution: Resolution,
}

/// `incident.reopened`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IncidentReopened {
    pub at: DateTime<Utc>,
}

/// `incident.merged`: a person merged this incident into another; its alerts move there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IncidentMerged {
    pub into: Uuid,
    pub at: DateTime<Utc>,
}

/// Who wrote a postmortem version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PostmortemOrigin {
    /// Drafted by Aurora when the incident resolved.
    Drafted,
    Edited,
    Restored,
}

/// `postmortem.saved`: a version of the incident's postmortem, whole (Markdown).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PostmortemSaved {
    /// 1 for the draft.
    pub version: u32,
    pub markdown: String,
    pub origin: PostmortemOrigin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<u32>,
}

event_family! {
    /// Everything that happens to one incident.
    pub enum IncidentEvent in "incident", named by IncidentEventType {
        Opened(IncidentOpened) = ("incident.opened", 1),
        AlertAttached(AlertAttached) = ("alert.attached", 1),
        AlertRefired(AlertRefired) = ("alert.refired", 1),
        AlertResolved(AlertResolved) = ("alert.resolved", 1),
        AlertDetached(AlertDetached) = ("alert.detached", 1),
        Acknowledged(IncidentAcknowledged) = ("incident.acknowledged", 1),
        SeverityChanged(SeverityChanged) = ("incident.severity_changed", 1),
        InvestigationRequested(InvestigationRequested) = ("investigation.requested", 1),
        InvestigationStarted(InvestigationStarted) = ("investigation.started", 1),
        ThoughtRecorded(ThoughtRecorded) = ("investigation.thought_recorded", 1),
        InvestigationCompleted(InvestigationCompleted) = ("investigation.completed", 1),
        InvestigationFailed(InvestigationFailed) = ("investigation.failed", 1),
        Resolved(IncidentResolved) = ("incident.resolved", 1),
        Reopened(IncidentReopened) = ("incident.reopened", 1),
        Merged(IncidentMerged) = ("incident.merged", 1),
        PostmortemSaved(PostmortemSaved) = ("postmortem.saved", 1),
    }
}

/// Registers this feature's event families.
pub fn register(families: &mut crate::catalog::Families) {
    families.add::<WebhookEvent>();
    families.add::<IncidentEvent>();
}
