//! The postmortem draft Aurora writes when an incident resolves: Markdown with the sections a
//! team fills in (summary, timeline, root cause, impact, contributing factors, resolution, action
//! items, lessons), filled from what the incident recorded — its alerts, its latest RCA, its
//! times. What only people know is left marked for them, not invented.

use std::fmt::Write;

use aurora_events::incident::{Confidence, Resolution};
use chrono::{DateTime, Utc};

use super::{Incident, InvestigationStatus};

/// A line of the incident's own timeline: when, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moment {
    pub at: DateTime<Utc>,
    pub what: String,
}

const FOR_THE_TEAM: &str = "_To be written by the team._";

/// The draft of `incident`'s postmortem. `moments` is its recorded timeline, oldest first.
pub fn draft(incident: &Incident, moments: &[Moment], resolution: Option<Resolution>) -> String {
    let mut out = String::new();
    let rca = incident
        .investigations
        .iter()
        .rev()
        .find(|investigation| investigation.status == InvestigationStatus::Completed)
        .and_then(|investigation| investigation.rca.as_ref());
    let _ = writeln!(out, "# Postmortem: {}\n", incident.title);
    let service = incident.service.as_deref().unwrap_or("unknown service");
    let severity = incident.severity.map(|severity| severity.as_str()).unwrap_or("warning");
    let _ = writeln!(out, "_Draft written by Aurora from the incident's record; edit it freely. Every version is kept._\n");
    let _ = writeln!(out, "## Summary\n");
    match rca {
        Some(rca) => {
            let _ = writeln!(out, "{}\n", rca.summary);
        }
        None => {
            let _ =
                writeln!(out, "A {severity} incident on {service}. No investigation completed, so there is no analysis to summarise.\n");
        }
    }
    let _ = writeln!(out, "- Service: {service}\n- Severity: {severity}\n- Alerts: {}", incident.alerts.len());
    if let (Some(opened), Some(resolved)) = (incident.opened_at, incident.resolved_at) {
        let minutes = (resolved - opened).num_minutes();
        let _ = writeln!(out, "- Duration: {minutes} min ({} to {})", opened.to_rfc3339(), resolved.to_rfc3339());
    }
    let _ = writeln!(out, "\n## Timeline\n");
    for moment in moments {
        let _ = writeln!(out, "- {} — {}", moment.at.format("%Y-%m-%d %H:%M:%S UTC"), moment.what);
    }
    if let Some(rca) = rca {
        for entry in &rca.timeline {
            let _ = writeln!(out, "- {} — {} (from the investigation)", entry.at.as_deref().unwrap_or("time unknown"), entry.event);
        }
    }
    let _ = writeln!(out, "\n## Root cause\n");
    match rca {
        Some(rca) => {
            let confidence = match rca.root_cause.confidence {
                Confidence::Confirmed => "confirmed",
                Confidence::Likely => "likely",
                Confidence::Inconclusive => "inconclusive",
            };
            let statement = rca.root_cause.statement.as_deref().unwrap_or("The evidence did not support a cause.");
            let _ = writeln!(out, "{statement} (confidence: {confidence})\n");
            for evidence in &rca.evidence {
                let _ = writeln!(
                    out,
                    "[{}] {} — from `{}` (tool call {})",
                    evidence.id, evidence.finding, evidence.tool, evidence.tool_call_id
                );
            }
        }
        None => {
            let _ = writeln!(out, "{FOR_THE_TEAM}");
        }
    }
    let _ = writeln!(out, "\n## Impact\n");
    let _ = writeln!(out, "{}", rca.map(|rca| rca.impact.as_str()).filter(|impact| !impact.is_empty()).unwrap_or(FOR_THE_TEAM));
    let _ = writeln!(out, "\n## Contributing factors\n");
    match rca.filter(|rca| !rca.ruled_out.is_empty() || !rca.not_checked.is_empty()) {
        Some(rca) => {
            for item in &rca.ruled_out {
                let _ = writeln!(out, "- Ruled out: {} — {}", item.hypothesis, item.reason);
            }
            for item in &rca.not_checked {
                let _ = writeln!(out, "- Not checked: {} — {}", item.what, item.reason);
            }
            let _ = writeln!(out, "\n{FOR_THE_TEAM}");
        }
        None => {
            let _ = writeln!(out, "{FOR_THE_TEAM}");
        }
    }
    let _ = writeln!(out, "\n## Resolution\n");
    let _ = writeln!(
        out,
        "{}",
        match resolution {
            Some(Resolution::AlertsResolved) => "Every alert of the incident resolved at its source.",
            Some(Resolution::Manual) => "A person resolved the incident.",
            None => "Resolved.",
        }
    );
    let _ = writeln!(out, "\n## Action items\n");
    match rca.filter(|rca| !rca.next_steps.is_empty()) {
        Some(rca) => {
            for step in &rca.next_steps {
                let risk = match step.risk {
                    aurora_events::incident::Risk::Low => "low",
                    aurora_events::incident::Risk::Medium => "medium",
                    aurora_events::incident::Risk::High => "high",
                };
                let _ = writeln!(out, "- [ ] {} (risk: {risk}; undo: {})", step.action, step.undo);
            }
        }
        None => {
            let _ = writeln!(out, "{FOR_THE_TEAM}");
        }
    }
    let _ = writeln!(out, "\n## Lessons\n\n{FOR_THE_TEAM}");
    out
}
