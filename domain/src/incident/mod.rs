//! The incident aggregate (stream `incident-<incident id>`): its alerts and why each joined, its
//! lifecycle (acknowledged, resolved — by its alerts or by a person —, reopened, merged), its
//! severity, its investigations with their thoughts and RCAs, and its postmortem's versions.
//! The intake decides which incident an alert belongs to (`intake`); this aggregate decides
//! whether the incident can take it.

pub mod postmortem;
pub mod rca;
pub mod sources;
pub mod webhook;

use std::collections::BTreeMap;

use aurora_events::incident::{
    Alert, AlertAttached, AlertDetached, AlertRefired, AlertResolved, AlertSource, AlertStatus, Grouping, GroupingRule,
    IncidentAcknowledged, IncidentEvent, IncidentMerged, IncidentOpened, IncidentReopened, IncidentResolved, InvestigationCompleted,
    InvestigationFailed, InvestigationFailure, InvestigationLimits, InvestigationRequested, InvestigationStarted, InvestigationTrigger,
    PostmortemOrigin, PostmortemSaved, Rca, Resolution, Severity, SeverityChanged, ThoughtRecorded,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::text::{bounded, Lines};
use crate::{Aggregate, DomainError, ErrorKind};

/// Alerts one incident holds at most.
pub const MAX_ALERTS: usize = 50;
pub const MAX_THOUGHT_CHARS: usize = 2_000;
pub const MAX_FAILURE_CHARS: usize = 2_000;
pub const MAX_POSTMORTEM_CHARS: usize = 100_000;
/// Postmortem versions one incident keeps at most.
pub const MAX_POSTMORTEM_VERSIONS: usize = 200;

#[derive(Debug, Clone, PartialEq)]
pub enum IncidentCommand {
    /// Opens the incident with its first alert; `investigation_id` queues its investigation.
    Open {
        incident_id: Uuid,
        alert: Alert,
        delivery_id: Option<Uuid>,
        at: DateTime<Utc>,
        split_from: Option<Uuid>,
        investigation_id: Option<Uuid>,
    },
    Attach {
        alert: Alert,
        grouping: Grouping,
        delivery_id: Option<Uuid>,
        at: DateTime<Utc>,
    },
    Refire {
        source: AlertSource,
        fingerprint: String,
        delivery_id: Uuid,
        at: DateTime<Utc>,
    },
    ResolveAlert {
        source: AlertSource,
        fingerprint: String,
        delivery_id: Option<Uuid>,
        at: DateTime<Utc>,
    },
    Detach {
        source: AlertSource,
        fingerprint: String,
        to_incident: Uuid,
    },
    Acknowledge {
        at: DateTime<Utc>,
    },
    ChangeSeverity {
        to: Severity,
    },
    RequestInvestigation {
        investigation_id: Uuid,
        trigger: InvestigationTrigger,
        at: DateTime<Utc>,
    },
    StartInvestigation {
        investigation_id: Uuid,
        session_id: Uuid,
        at: DateTime<Utc>,
        limits: InvestigationLimits,
    },
    /// Records one thought; the caller keys it (the event and sentence it comes from) so that it is recorded once.
    RecordThought {
        investigation_id: Uuid,
        text: String,
        tool_calls: Vec<String>,
    },
    CompleteInvestigation {
        investigation_id: Uuid,
        rca: Box<Rca>,
        at: DateTime<Utc>,
        tool_calls: u32,
        tokens: u32,
    },
    FailInvestigation {
        investigation_id: Uuid,
        reason: InvestigationFailure,
        message: String,
        at: DateTime<Utc>,
    },
    Resolve {
        at: DateTime<Utc>,
    },
    Reopen {
        at: DateTime<Utc>,
    },
    Merge {
        into: Uuid,
        at: DateTime<Utc>,
    },
    SavePostmortem {
        markdown: String,
        origin: PostmortemOrigin,
    },
    RestorePostmortem {
        version: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IncidentError {
    #[error("incident does not exist")]
    NotFound,
    #[error("incident {0} already exists")]
    AlreadyExists(Uuid),
    #[error("the incident is resolved; reopen it first")]
    Resolved,
    #[error("the incident was merged into {0}")]
    Merged(Uuid),
    #[error("the incident holds {max} alerts at most")]
    Full { max: usize },
    #[error("the incident has no alert {0}")]
    AlertNotFound(String),
    #[error("the incident's only alert cannot be split off")]
    LastAlert,
    #[error("an investigation of this incident is queued or running; wait for it")]
    InvestigationInProgress,
    #[error("investigation does not exist")]
    InvestigationNotFound,
    #[error("the incident is not resolved")]
    NotResolved,
    #[error("an incident cannot be merged into itself")]
    SameIncident,
    #[error("postmortem version {0} does not exist")]
    PostmortemVersionNotFound(u32),
    #[error("the incident keeps {max} postmortem versions at most")]
    TooManyVersions { max: usize },
}

impl IncidentError {
    pub fn kind(&self) -> ErrorKind {
        use IncidentError as E;
        match self {
            E::NotFound => ErrorKind::NotFound("incident".into()),
            E::AlertNotFound(fingerprint) => ErrorKind::NotFound(format!("alert {fingerprint}")),
            E::InvestigationNotFound => ErrorKind::NotFound("investigation".into()),
            E::PostmortemVersionNotFound(version) => ErrorKind::NotFound(format!("postmortem version {version}")),
            E::AlreadyExists(_) => ErrorKind::AlreadyExists,
            E::TooManyVersions { .. } => ErrorKind::QuotaExceeded,
            E::Resolved | E::Merged(_) | E::Full { .. } | E::LastAlert | E::InvestigationInProgress | E::NotResolved | E::SameIncident => {
                ErrorKind::InvalidState
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentStatus {
    Open,
    Acknowledged,
    Resolved,
    Merged,
}

impl IncidentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Open => "open",
            IncidentStatus::Acknowledged => "acknowledged",
            IncidentStatus::Resolved => "resolved",
            IncidentStatus::Merged => "merged",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttachedAlert {
    pub alert: Alert,
    pub grouping: Grouping,
    pub firing: bool,
    pub firings: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvestigationStatus {
    Queued,
    Running,
    Completed,
    Failed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Investigation {
    pub investigation_id: Uuid,
    pub status: InvestigationStatus,
    pub session_id: Option<Uuid>,
    pub thoughts: u32,
    pub rca: Option<Rca>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Incident {
    pub incident_id: Option<Uuid>,
    pub title: String,
    pub severity: Option<Severity>,
    pub source: Option<AlertSource>,
    pub service: Option<String>,
    pub environment: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub status: Option<IncidentStatus>,
    pub opened_at: Option<DateTime<Utc>>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub merged_into: Option<Uuid>,
    pub alerts: Vec<AttachedAlert>,
    pub investigations: Vec<Investigation>,
    pub postmortems: Vec<String>,
}

impl Incident {
    pub fn alert(&self, source: AlertSource, fingerprint: &str) -> Option<&AttachedAlert> {
        self.alerts.iter().find(|attached| attached.alert.source == source && attached.alert.fingerprint == fingerprint)
    }

    fn alert_mut(&mut self, source: AlertSource, fingerprint: &str) -> Option<&mut AttachedAlert> {
        self.alerts.iter_mut().find(|attached| attached.alert.source == source && attached.alert.fingerprint == fingerprint)
    }

    pub fn investigation(&self, investigation_id: Uuid) -> Option<&Investigation> {
        self.investigations.iter().find(|investigation| investigation.investigation_id == investigation_id)
    }

    fn investigation_mut(&mut self, investigation_id: Uuid) -> Option<&mut Investigation> {
        self.investigations.iter_mut().find(|investigation| investigation.investigation_id == investigation_id)
    }

    /// The investigation queued or running, if any.
    pub fn active_investigation(&self) -> Option<&Investigation> {
        self.investigations
            .iter()
            .find(|investigation| matches!(investigation.status, InvestigationStatus::Queued | InvestigationStatus::Running))
    }

    /// Whether the incident takes alerts and people's changes: open or acknowledged.
    pub fn is_open(&self) -> bool {
        matches!(self.status, Some(IncidentStatus::Open | IncidentStatus::Acknowledged))
    }

    fn require(&self) -> Result<(), DomainError> {
        if self.exists() {
            Ok(())
        } else {
            Err(IncidentError::NotFound.into())
        }
    }

    fn require_open(&self) -> Result<(), DomainError> {
        self.require()?;
        match self.status {
            Some(IncidentStatus::Merged) => Err(IncidentError::Merged(self.merged_into.unwrap_or_default()).into()),
            Some(IncidentStatus::Resolved) => Err(IncidentError::Resolved.into()),
            _ => Ok(()),
        }
    }

    fn require_not_merged(&self) -> Result<(), DomainError> {
        self.require()?;
        match self.status {
            Some(IncidentStatus::Merged) => Err(IncidentError::Merged(self.merged_into.unwrap_or_default()).into()),
            _ => Ok(()),
        }
    }

    fn running(&self, investigation_id: Uuid) -> Result<Option<&Investigation>, DomainError> {
        self.require()?;
        let investigation = self.investigation(investigation_id).ok_or_else(|| DomainError::from(IncidentError::InvestigationNotFound))?;
        Ok((investigation.status == InvestigationStatus::Running).then_some(investigation))
    }

    fn resolved_event(&self, at: DateTime<Utc>, resolution: Resolution) -> IncidentEvent {
        let opened_at = self.opened_at.unwrap_or(at);
        IncidentEvent::Resolved(IncidentResolved {
            resolved_at: at,
            duration_secs: (at - opened_at).num_seconds().max(0) as u64,
            resolution,
        })
    }
}

fn attached(alert: Alert, grouping: Grouping, delivery_id: Option<Uuid>, at: DateTime<Utc>) -> IncidentEvent {
    IncidentEvent::AlertAttached(AlertAttached { alert, grouping, delivery_id, attached_at: at })
}

impl Aggregate for Incident {
    type Command = IncidentCommand;
    type Event = IncidentEvent;

    fn decide(&self, command: IncidentCommand) -> Result<Vec<IncidentEvent>, DomainError> {
        use IncidentCommand as C;
        use IncidentEvent as E;
        match command {
            C::Open { incident_id, alert, delivery_id, at, split_from, investigation_id } => {
                if self.exists() {
                    return Err(IncidentError::AlreadyExists(incident_id).into());
                }
                let opened = IncidentOpened {
                    incident_id,
                    title: alert.title.clone(),
                    severity: alert.severity.unwrap_or(Severity::Warning),
                    source: alert.source,
                    service: alert.service.clone(),
                    environment: alert.environment.clone(),
                    labels: alert.labels.clone(),
                    opened_at: at,
                    split_from,
                };
                let grouping = match split_from {
                    Some(from) => {
                        Grouping { rule: GroupingRule::Split, score: 1.0, reason: format!("split off incident {from} by a person") }
                    }
                    None => Grouping { rule: GroupingRule::Opened, score: 1.0, reason: "the first alert of the incident".into() },
                };
                let mut events = vec![E::Opened(opened), attached(alert, grouping, delivery_id, at)];
                if let Some(investigation_id) = investigation_id {
                    events.push(E::InvestigationRequested(InvestigationRequested {
                        investigation_id,
                        trigger: InvestigationTrigger::Opened,
                        requested_at: at,
                    }));
                }
                Ok(events)
            }
            C::Attach { alert, grouping, delivery_id, at } => {
                self.require_open()?;
                if self.alert(alert.source, &alert.fingerprint).is_some() {
                    return Ok(Vec::new());
                }
                if self.alerts.len() >= MAX_ALERTS {
                    return Err(IncidentError::Full { max: MAX_ALERTS }.into());
                }
                Ok(vec![attached(alert, grouping, delivery_id, at)])
            }
            C::Refire { source, fingerprint, delivery_id, at } => {
                self.require_open()?;
                let alert =
                    self.alert(source, &fingerprint).ok_or_else(|| DomainError::from(IncidentError::AlertNotFound(fingerprint.clone())))?;
                Ok(vec![E::AlertRefired(AlertRefired { source, fingerprint, delivery_id, at, firings: alert.firings + 1 })])
            }
            C::ResolveAlert { source, fingerprint, delivery_id, at } => {
                self.require_not_merged()?;
                let alert =
                    self.alert(source, &fingerprint).ok_or_else(|| DomainError::from(IncidentError::AlertNotFound(fingerprint.clone())))?;
                if !alert.firing {
                    return Ok(Vec::new());
                }
                let mut events =
                    vec![E::AlertResolved(AlertResolved { source, fingerprint: fingerprint.clone(), resolved_at: at, delivery_id })];
                let others_firing = self
                    .alerts
                    .iter()
                    .any(|other| other.firing && !(other.alert.source == source && other.alert.fingerprint == fingerprint));
                if !others_firing && self.is_open() {
                    events.push(self.resolved_event(at, Resolution::AlertsResolved));
                }
                Ok(events)
            }
            C::Detach { source, fingerprint, to_incident } => {
                self.require_open()?;
                if self.alert(source, &fingerprint).is_none() {
                    return Err(IncidentError::AlertNotFound(fingerprint).into());
                }
                if self.alerts.len() == 1 {
                    return Err(IncidentError::LastAlert.into());
                }
                Ok(vec![E::AlertDetached(AlertDetached { source, fingerprint, to_incident })])
            }
            C::Acknowledge { at } => {
                self.require_open()?;
                if self.acknowledged_at.is_some() {
                    return Ok(Vec::new());
                }
                Ok(vec![E::Acknowledged(IncidentAcknowledged { at })])
            }
            C::ChangeSeverity { to } => {
                self.require_not_merged()?;
                let from = self.severity.unwrap_or(Severity::Warning);
                if from == to {
                    return Ok(Vec::new());
                }
                Ok(vec![E::SeverityChanged(SeverityChanged { from, to })])
            }
            C::RequestInvestigation { investigation_id, trigger, at } => {
                self.require_not_merged()?;
                if self.investigation(investigation_id).is_some() {
                    return Ok(Vec::new());
                }
                if self.active_investigation().is_some() {
                    return Err(IncidentError::InvestigationInProgress.into());
                }
                Ok(vec![E::InvestigationRequested(InvestigationRequested { investigation_id, trigger, requested_at: at })])
            }
            C::StartInvestigation { investigation_id, session_id, at, limits } => {
                self.require()?;
                let investigation =
                    self.investigation(investigation_id).ok_or_else(|| DomainError::from(IncidentError::InvestigationNotFound))?;
                if investigation.status != InvestigationStatus::Queued {
                    return Ok(Vec::new());
                }
                Ok(vec![E::InvestigationStarted(InvestigationStarted { investigation_id, session_id, started_at: at, limits })])
            }
            C::RecordThought { investigation_id, text, tool_calls } => {
                let Some(investigation) = self.running(investigation_id)? else { return Ok(Vec::new()) };
                let text = sources::clip_text(&text, MAX_THOUGHT_CHARS);
                if text.is_empty() {
                    return Ok(Vec::new());
                }
                let tool_calls = tool_calls.into_iter().take(20).map(|name| sources::clip_line(&name, 100)).collect();
                Ok(vec![E::ThoughtRecorded(ThoughtRecorded { investigation_id, seq: investigation.thoughts + 1, text, tool_calls })])
            }
            C::CompleteInvestigation { investigation_id, rca, at, tool_calls, tokens } => {
                if self.running(investigation_id)?.is_none() {
                    return Ok(Vec::new());
                }
                Ok(vec![E::InvestigationCompleted(InvestigationCompleted {
                    investigation_id,
                    rca: *rca,
                    completed_at: at,
                    tool_calls,
                    tokens,
                })])
            }
            C::FailInvestigation { investigation_id, reason, message, at } => {
                self.require()?;
                let investigation =
                    self.investigation(investigation_id).ok_or_else(|| DomainError::from(IncidentError::InvestigationNotFound))?;
                if !matches!(investigation.status, InvestigationStatus::Queued | InvestigationStatus::Running) {
                    return Ok(Vec::new());
                }
                let message = sources::clip_text(&message, MAX_FAILURE_CHARS);
                Ok(vec![E::InvestigationFailed(InvestigationFailed { investigation_id, reason, message, failed_at: at })])
            }
            C::Resolve { at } => {
                self.require_not_merged()?;
                if self.status == Some(IncidentStatus::Resolved) {
                    return Ok(Vec::new());
                }
                Ok(vec![self.resolved_event(at, Resolution::Manual)])
            }
            C::Reopen { at } => {
                self.require_not_merged()?;
                if self.status != Some(IncidentStatus::Resolved) {
                    return Err(IncidentError::NotResolved.into());
                }
                Ok(vec![E::Reopened(IncidentReopened { at })])
            }
            C::Merge { into, at } => {
                self.require()?;
                if self.incident_id == Some(into) {
                    return Err(IncidentError::SameIncident.into());
                }
                if self.merged_into == Some(into) {
                    return Ok(Vec::new());
                }
                self.require_not_merged()?;
                Ok(vec![E::Merged(IncidentMerged { into, at })])
            }
            C::SavePostmortem { markdown, origin } => {
                self.require()?;
                let markdown = bounded("markdown", &markdown, MAX_POSTMORTEM_CHARS, Lines::Many)?;
                if markdown.is_empty() {
                    return Err(DomainError::InvalidInput { field: "markdown", reason: "must not be empty".into() });
                }
                if origin == PostmortemOrigin::Drafted && !self.postmortems.is_empty() {
                    return Ok(Vec::new());
                }
                if self.postmortems.last() == Some(&markdown) {
                    return Ok(Vec::new());
                }
                if self.postmortems.len() >= MAX_POSTMORTEM_VERSIONS {
                    return Err(IncidentError::TooManyVersions { max: MAX_POSTMORTEM_VERSIONS }.into());
                }
                let version = self.postmortems.len() as u32 + 1;
                Ok(vec![E::PostmortemSaved(PostmortemSaved { version, markdown, origin, restored_from: None })])
            }
            C::RestorePostmortem { version } => {
                self.require()?;
                let index = (version as usize).checked_sub(1).filter(|index| *index < self.postmortems.len());
                let markdown = index
                    .map(|index| self.postmortems[index].clone())
                    .ok_or_else(|| DomainError::from(IncidentError::PostmortemVersionNotFound(version)))?;
                if self.postmortems.len() >= MAX_POSTMORTEM_VERSIONS {
                    return Err(IncidentError::TooManyVersions { max: MAX_POSTMORTEM_VERSIONS }.into());
                }
                let next = self.postmortems.len() as u32 + 1;
                Ok(vec![E::PostmortemSaved(PostmortemSaved {
                    version: next,
                    markdown,
                    origin: PostmortemOrigin::Restored,
                    restored_from: Some(version),
                })])
            }
        }
    }

    fn evolve(mut self, event: &IncidentEvent) -> Self {
        use IncidentEvent as E;
        match event {
            E::Opened(opened) => {
                self.incident_id = Some(opened.incident_id);
                self.title = opened.title.clone();
                self.severity = Some(opened.severity);
                self.source = Some(opened.source);
                self.service = opened.service.clone();
                self.environment = opened.environment.clone();
                self.labels = opened.labels.clone();
                self.status = Some(IncidentStatus::Open);
                self.opened_at = Some(opened.opened_at);
            }
            E::AlertAttached(attached) => self.alerts.push(AttachedAlert {
                alert: attached.alert.clone(),
                grouping: attached.grouping.clone(),
                firing: attached.alert.status == AlertStatus::Firing,
                firings: 1,
            }),
            E::AlertRefired(refired) => {
                if let Some(alert) = self.alert_mut(refired.source, &refired.fingerprint) {
                    alert.firing = true;
                    alert.firings = refired.firings;
                }
            }
            E::AlertResolved(resolved) => {
                if let Some(alert) = self.alert_mut(resolved.source, &resolved.fingerprint) {
                    alert.firing = false;
                }
            }
            E::AlertDetached(detached) => self
                .alerts
                .retain(|attached| !(attached.alert.source == detached.source && attached.alert.fingerprint == detached.fingerprint)),
            E::Acknowledged(acknowledged) => {
                self.acknowledged_at = Some(acknowledged.at);
                if self.status == Some(IncidentStatus::Open) {
                    self.status = Some(IncidentStatus::Acknowledged);
                }
            }
            E::SeverityChanged(changed) => self.severity = Some(changed.to),
            E::InvestigationRequested(requested) => self.investigations.push(Investigation {
                investigation_id: requested.investigation_id,
                status: InvestigationStatus::Queued,
                session_id: None,
                thoughts: 0,
                rca: None,
            }),
            E::InvestigationStarted(started) => {
                if let Some(investigation) = self.investigation_mut(started.investigation_id) {
                    investigation.status = InvestigationStatus::Running;
                    investigation.session_id = Some(started.session_id);
                }
            }
            E::ThoughtRecorded(thought) => {
                if let Some(investigation) = self.investigation_mut(thought.investigation_id) {
                    investigation.thoughts = thought.seq;
                }
            }
            E::InvestigationCompleted(completed) => {
                if let Some(investigation) = self.investigation_mut(completed.investigation_id) {
                    investigation.status = InvestigationStatus::Completed;
                    investigation.rca = Some(completed.rca.clone());
                }
            }
            E::InvestigationFailed(failed) => {
                if let Some(investigation) = self.investigation_mut(failed.investigation_id) {
                    investigation.status = InvestigationStatus::Failed;
                }
            }
            E::Resolved(resolved) => {
                self.status = Some(IncidentStatus::Resolved);
                self.resolved_at = Some(resolved.resolved_at);
            }
            E::Reopened(_) => {
                self.status = Some(if self.acknowledged_at.is_some() { IncidentStatus::Acknowledged } else { IncidentStatus::Open });
                self.resolved_at = None;
            }
            E::Merged(merged) => {
                self.status = Some(IncidentStatus::Merged);
                self.merged_into = Some(merged.into);
            }
            E::PostmortemSaved(saved) => self.postmortems.push(saved.markdown.clone()),
        }
        self
    }

    fn exists(&self) -> bool {
        self.incident_id.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;

    fn at(minute: u32) -> DateTime<Utc> {
        chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 1, 3, minute, 0).unwrap()
    }

    fn alert(fingerprint: &str) -> Alert {
        Alert {
            source: AlertSource::Alertmanager,
            fingerprint: fingerprint.into(),
            status: AlertStatus::Firing,
            title: "HighLatency".into(),
            severity: Some(Severity::Critical),
            service: Some("checkout".into()),
            environment: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            links: BTreeMap::new(),
            starts_at: None,
            ends_at: None,
        }
    }

    fn opened(incident: &Incident) -> Vec<IncidentEvent> {
        incident
            .decide(IncidentCommand::Open {
                incident_id: Uuid::nil(),
                alert: alert("a"),
                delivery_id: None,
                at: at(0),
                split_from: None,
                investigation_id: None,
            })
            .unwrap()
    }

    fn grouping() -> Grouping {
        Grouping { rule: GroupingRule::SameService, score: 1.0, reason: "same service".into() }
    }

    #[test]
    fn the_last_alert_resolving_resolves_the_incident_with_its_duration() {
        let mut history = opened(&Incident::default());
        history.push(attached(alert("b"), grouping(), None, at(1)));
        let resolve = |fingerprint: &str, minute| IncidentCommand::ResolveAlert {
            source: AlertSource::Alertmanager,
            fingerprint: fingerprint.into(),
            delivery_id: None,
            at: at(minute),
        };
        given::<Incident>(history.clone()).when(resolve("a", 10)).then([IncidentEvent::AlertResolved(AlertResolved {
            source: AlertSource::Alertmanager,
            fingerprint: "a".into(),
            resolved_at: at(10),
            delivery_id: None,
        })]);
        history.extend(given::<Incident>(history.clone()).state_after(resolve("a", 10)));
        let events = given::<Incident>(history.clone()).state_after(resolve("b", 20));
        assert_eq!(events.len(), 2);
        assert!(
            matches!(&events[1], IncidentEvent::Resolved(resolved) if resolved.duration_secs == 20 * 60 && resolved.resolution == Resolution::AlertsResolved)
        );
        history.extend(events);
        given::<Incident>(history).when(resolve("b", 21)).then([]);
    }

    #[test]
    fn a_resolved_incident_takes_no_alerts_until_reopened() {
        let mut history = opened(&Incident::default());
        history.push(IncidentEvent::Resolved(IncidentResolved { resolved_at: at(5), duration_secs: 300, resolution: Resolution::Manual }));
        let attach = IncidentCommand::Attach { alert: alert("c"), grouping: grouping(), delivery_id: None, at: at(6) };
        given::<Incident>(history.clone()).when(attach).then_error(IncidentError::Resolved.into());
        given::<Incident>(history)
            .when(IncidentCommand::Reopen { at: at(7) })
            .then([IncidentEvent::Reopened(IncidentReopened { at: at(7) })]);
    }

    #[test]
    fn an_incident_holds_at_most_fifty_alerts() {
        let mut history = opened(&Incident::default());
        for index in 1..MAX_ALERTS {
            history.push(attached(alert(&format!("f{index}")), grouping(), None, at(1)));
        }
        let attach = IncidentCommand::Attach { alert: alert("one-more"), grouping: grouping(), delivery_id: None, at: at(2) };
        given::<Incident>(history).when(attach).then_error(IncidentError::Full { max: MAX_ALERTS }.into());
    }

    #[test]
    fn one_investigation_at_a_time_and_thoughts_numbered_in_order() {
        let history = opened(&Incident::default());
        let first = Uuid::from_u128(1);
        let request =
            |id| IncidentCommand::RequestInvestigation { investigation_id: id, trigger: InvestigationTrigger::Requested, at: at(1) };
        let mut history = history;
        history.extend(given::<Incident>(history.clone()).state_after(request(first)));
        given::<Incident>(history.clone()).when(request(first)).then([]);
        given::<Incident>(history.clone()).when(request(Uuid::from_u128(2))).then_error(IncidentError::InvestigationInProgress.into());
        let thought = IncidentCommand::RecordThought { investigation_id: first, text: "Looking at logs.".into(), tool_calls: Vec::new() };
        given::<Incident>(history.clone()).when(thought.clone()).then([]);
        let limits = InvestigationLimits { wall_time_secs: 60, tool_calls: 5, llm_calls: 5, tokens: 1000 };
        history.extend(given::<Incident>(history.clone()).state_after(IncidentCommand::StartInvestigation {
            investigation_id: first,
            session_id: Uuid::nil(),
            at: at(2),
            limits,
        }));
        history.extend(given::<Incident>(history.clone()).state_after(thought.clone()));
        let second = given::<Incident>(history).state_after(thought);
        assert!(matches!(&second[..], [IncidentEvent::ThoughtRecorded(recorded)] if recorded.seq == 2));
    }

    #[test]
    fn postmortem_versions_are_kept_and_restorable() {
        let mut history = opened(&Incident::default());
        for text in ["# Draft", "# Edited"] {
            let origin = if text == "# Draft" { PostmortemOrigin::Drafted } else { PostmortemOrigin::Edited };
            history
                .extend(given::<Incident>(history.clone()).state_after(IncidentCommand::SavePostmortem { markdown: text.into(), origin }));
        }
        given::<Incident>(history.clone()).when(IncidentCommand::RestorePostmortem { version: 1 }).then([IncidentEvent::PostmortemSaved(
            PostmortemSaved { version: 3, markdown: "# Draft".into(), origin: PostmortemOrigin::Restored, restored_from: Some(1) },
        )]);
        given::<Incident>(history)
            .when(IncidentCommand::RestorePostmortem { version: 9 })
            .then_error(IncidentError::PostmortemVersionNotFound(9).into());
    }
}
