//! The intake: alerts out of webhook deliveries, onto incidents.
//!
//! Decisions about one organisation's alerts are taken one at a time, under a Postgres advisory
//! lock of that organisation, on the intake's own tables (`incident_intake_alerts`: which incident
//! each alert is on; `incident_intake_incidents`: which incidents may still take alerts), and
//! written there before the incident commands they lead to. Every command is idempotent, keyed
//! by the delivery and the alert, so a redelivered `webhook.received` records nothing twice, and
//! a delivery whose commands were cut off by a crash is finished from the decision it wrote.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aurora_adapters::graph::{AsOf, Direction};
use aurora_commands::HandleError;
use aurora_domain::incident::{sources, Incident, IncidentCommand, IncidentError, MAX_ALERTS};
use aurora_domain::DomainError;
use aurora_events::incident::{Alert, AlertSource, AlertStatus, Grouping, GroupingRule, IncidentEvent, WebhookEvent, WebhookReceived};
use aurora_events::{Actor, Envelope, EventPayload, OrgId};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::record;
use crate::reactor::Reactor;
use crate::Context;

/// Labels that name one instance of a problem rather than the problem: not compared when grouping.
const VOLATILE_LABELS: &[&str] = &[
    "alertname", "instance", "pod", "pod_name", "container", "host", "hostname", "__alert_rule_uid__", "monitor_id", "event_type", "metric",
    "grafana_folder", "urgency", "priority", "severity", "pagerduty_service_id",
];

pub struct Intake {
    pub context: Context,
}

/// What the intake decided for a new alert.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Decision {
    Open,
    Attach { grouping: Grouping },
}

/// The share of (label, value) pairs two alerts have in common, volatile labels left out.
pub fn label_score(one: &BTreeMap<String, String>, other: &BTreeMap<String, String>) -> f64 {
    let pairs = |labels: &BTreeMap<String, String>| -> std::collections::BTreeSet<(String, String)> {
        labels.iter().filter(|(key, _)| !VOLATILE_LABELS.contains(&key.as_str())).map(|(key, value)| (key.clone(), value.clone())).collect()
    };
    let (one, other) = (pairs(one), pairs(other));
    let union = one.union(&other).count();
    if union == 0 {
        return 0.0;
    }
    one.intersection(&other).count() as f64 / union as f64
}

/// The Postgres advisory lock under which an organisation's alerts are decided.
pub fn lock_key(org_id: OrgId) -> i64 {
    let bytes = org_id.0.as_bytes();
    i64::from_be_bytes(bytes[..8].try_into().expect("16 bytes")) ^ 0x1a7e_1a7e
}

/// The webhook actor of a source.
fn actor(received: &WebhookReceived) -> Actor {
    Actor::Webhook(received.source.as_str().to_owned())
}

/// The key of what the intake records about `alert` from `delivery_id` (`what`: open, attach, ...).
fn alert_key(delivery_id: Uuid, alert: &Alert, what: &str) -> Uuid {
    Uuid::new_v5(&delivery_id, format!("{}\0{}\0{what}", alert.source, alert.fingerprint).as_bytes())
}

/// Records whether an alert the intake knows is firing, as a notification received at `at` says.
async fn set_firing(
    executor: impl sqlx::PgExecutor<'_>,
    org_id: OrgId,
    alert: &Alert,
    firing: bool,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE incident_intake_alerts SET firing = $4, changed_at = GREATEST(changed_at, $5), updated_at = now() \
         WHERE org_id = $1 AND source = $2 AND fingerprint = $3",
    )
        .bind(org_id.0)
        .bind(alert.source.as_str())
        .bind(&alert.fingerprint)
        .bind(firing)
        .bind(at)
        .execute(executor)
        .await?;
    Ok(())
}

/// Points an alert the intake knows on incident `from` at incident `to`.
async fn move_alert(executor: impl sqlx::PgExecutor<'_>, org_id: OrgId, source: AlertSource, fingerprint: &str, from: Uuid, to: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE incident_intake_alerts SET incident_id = $4 WHERE org_id = $1 AND source = $2 AND fingerprint = $3 AND incident_id = $5")
        .bind(org_id.0)
        .bind(source.as_str())
        .bind(fingerprint)
        .bind(to)
        .bind(from)
        .execute(executor)
        .await?;
    Ok(())
}

/// A new incident of one alert that may take more.
async fn track_incident(
    executor: impl sqlx::PgExecutor<'_>,
    incident_id: Uuid,
    org_id: OrgId,
    service: &Option<String>,
    labels: &BTreeMap<String, String>,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO incident_intake_incidents (incident_id, org_id, service, labels, alerts, last_alert_at, open) VALUES ($1, $2, $3, $4, 1, $5, true) \
         ON CONFLICT (incident_id) DO NOTHING",
    )
    .bind(incident_id)
    .bind(org_id.0)
    .bind(service)
    .bind(sqlx::types::Json(labels))
    .bind(at)
    .execute(executor)
    .await?;
    Ok(())
}

/// Whether an incident may still take alerts.
async fn set_open(executor: impl sqlx::PgExecutor<'_>, incident_id: Uuid, open: bool) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE incident_intake_incidents SET open = $2 WHERE incident_id = $1").bind(incident_id).bind(open).execute(executor).await?;
    Ok(())
}

/// What the intake knows of an alert.
struct Known {
    incident_id: Uuid,
    delivery_id: Uuid,
    decision: sqlx::types::Json<Decision>,
    firing: bool,
    /// When the notification last applied to it was received (unknown for rows older than that).
    changed_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A resolution read before the alert was seen firing.
struct EarlyResolution {
    delivery_id: Uuid,
    received_at: chrono::DateTime<chrono::Utc>,
    resolved_at: chrono::DateTime<chrono::Utc>,
}

/// What the intake has seen of an alert.
struct Seen {
    known: Option<Known>,
    early: Option<EarlyResolution>,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for Seen {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        let known = match row.try_get::<Option<Uuid>, _>("incident_id")? {
            Some(incident_id) => Some(Known {
                incident_id,
                delivery_id: row.try_get("delivery_id")?,
                decision: row.try_get("decision")?,
                firing: row.try_get("firing")?,
                changed_at: row.try_get("changed_at")?,
            }),
            None => None,
        };
        let early = match row.try_get::<Option<Uuid>, _>("early_delivery_id")? {
            Some(delivery_id) => Some(EarlyResolution {
                delivery_id,
                received_at: row.try_get("early_received_at")?,
                resolved_at: row.try_get("early_resolved_at")?,
            }),
            None => None,
        };
        Ok(Self { known, early })
    }
}

#[derive(sqlx::FromRow)]
struct Candidate {
    incident_id: Uuid,
    service: Option<String>,
    labels: sqlx::types::Json<BTreeMap<String, String>>,
}

impl Intake {
    async fn receive(&self, envelope: &Envelope, received: WebhookReceived) -> anyhow::Result<()> {
        let parsed = match sources::parse(received.source, &received.payload) {
            Ok(parsed) => parsed,
            Err(error) => {
                // The gateway accepted only what parses; an older build's delivery may not.
                tracing::warn!(delivery_id = %received.delivery_id, %error, "a recorded delivery holds no readable alerts");
                return Ok(());
            }
        };
        if parsed.alerts.is_empty() {
            return Ok(());
        }
        let mut connection = self.context.pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1)").bind(lock_key(envelope.org_id)).execute(&mut *connection).await?;
        let mut outcome = Ok(());
        for alert in parsed.alerts {
            outcome = self.alert(&mut connection, envelope, &received, alert).await;
            if outcome.is_err() {
                break;
            }
        }
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)").bind(lock_key(envelope.org_id)).execute(&mut *connection).await;
        if unlocked.is_err() {
            // A connection whose lock state is unknown must not go back to the pool.
            connection.detach();
        }
        outcome
    }

    async fn alert(&self, connection: &mut PgConnection, envelope: &Envelope, received: &WebhookReceived, alert: Alert) -> anyhow::Result<()> {
        let org_id = envelope.org_id;
        // One row, whether the alert is known or not: what the intake knows of it, and a
        // resolution read before it fired.
        let Seen { known, early } = sqlx::query_as(
            "SELECT k.incident_id, k.delivery_id, k.decision, k.firing, k.changed_at, \
                    e.delivery_id AS early_delivery_id, e.received_at AS early_received_at, e.resolved_at AS early_resolved_at \
             FROM (SELECT $1::uuid AS org_id, $2::text AS source, $3::text AS fingerprint) alert \
             LEFT JOIN incident_intake_alerts k USING (org_id, source, fingerprint) \
             LEFT JOIN incident_intake_early_resolutions e USING (org_id, source, fingerprint)",
        )
        .bind(org_id.0)
        .bind(alert.source.as_str())
        .bind(&alert.fingerprint)
        .fetch_one(&mut *connection)
        .await?;
        // A notification received before the last one applied to this alert, read after it.
        let outdated = known.as_ref().and_then(|known| known.changed_at).is_some_and(|changed_at| changed_at > received.received_at);
        let key = |what: &str| alert_key(received.delivery_id, &alert, what);
        match (alert.status, known) {
            (AlertStatus::Resolved, None) => {
                // Its firing may sit on another partition, still to be read: kept for it.
                sqlx::query(
                    "INSERT INTO incident_intake_early_resolutions (org_id, source, fingerprint, delivery_id, received_at, resolved_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (org_id, source, fingerprint) DO UPDATE \
                     SET delivery_id = EXCLUDED.delivery_id, received_at = EXCLUDED.received_at, resolved_at = EXCLUDED.resolved_at \
                     WHERE incident_intake_early_resolutions.received_at < EXCLUDED.received_at",
                )
                .bind(org_id.0)
                .bind(alert.source.as_str())
                .bind(&alert.fingerprint)
                .bind(received.delivery_id)
                .bind(received.received_at)
                .bind(alert.ends_at.unwrap_or(received.received_at))
                .execute(&mut *connection)
                .await?;
                tracing::debug!(fingerprint = %alert.fingerprint, "a resolved alert not seen firing (yet): kept for its firing");
                Ok(())
            }
            (AlertStatus::Resolved, Some(_)) if outdated => {
                tracing::debug!(fingerprint = %alert.fingerprint, "a resolution older than what the alert did since: nothing to do");
                Ok(())
            }
            (AlertStatus::Resolved, Some(known)) => {
                let command = IncidentCommand::ResolveAlert {
                    source: alert.source,
                    fingerprint: alert.fingerprint.clone(),
                    delivery_id: Some(received.delivery_id),
                    at: alert.ends_at.unwrap_or(received.received_at),
                };
                match record(&self.context, org_id, known.incident_id, actor(received), key("resolve"), envelope, command).await {
                    Ok(()) | Err(HandleError::Domain(_)) => {}
                    Err(error) => return Err(error.into()),
                }
                set_firing(&mut *connection, org_id, &alert, false, received.received_at).await?;
                Ok(())
            }
            (AlertStatus::Firing, Some(known)) if known.delivery_id == received.delivery_id => {
                // This delivery decided before and may not have finished: finish it.
                self.carry_out(connection, envelope, received, &alert, known.incident_id, known.decision.0).await?;
                self.resolve_early(connection, envelope, received, &alert, early).await
            }
            (AlertStatus::Firing, Some(known)) if outdated && !known.firing => {
                tracing::debug!(fingerprint = %alert.fingerprint, "a firing older than the alert's resolution: nothing to do");
                Ok(())
            }
            (AlertStatus::Firing, Some(known)) => {
                let command = IncidentCommand::Refire {
                    source: alert.source,
                    fingerprint: alert.fingerprint.clone(),
                    delivery_id: received.delivery_id,
                    at: received.received_at,
                };
                match record(&self.context, org_id, known.incident_id, actor(received), key("refire"), envelope, command).await {
                    Ok(()) => {
                        // (An outdated one, of an alert still firing, adds to the count only.)
                        set_firing(&mut *connection, org_id, &alert, true, received.received_at).await?;
                        Ok(())
                    }
                    // Its incident is resolved or merged away: the alert firing again is news.
                    Err(HandleError::Domain(_)) => self.place(connection, envelope, received, alert).await,
                    Err(error) => Err(error.into()),
                }
            }
            (AlertStatus::Firing, None) => {
                self.place(connection, envelope, received, alert.clone()).await?;
                self.resolve_early(connection, envelope, received, &alert, early).await
            }
        }
    }

    /// Ends a firing alert just placed with the resolution read before it, when that came later;
    /// forgets the resolution either way.
    async fn resolve_early(
        &self,
        connection: &mut PgConnection,
        envelope: &Envelope,
        received: &WebhookReceived,
        alert: &Alert,
        early: Option<EarlyResolution>,
    ) -> anyhow::Result<()> {
        let Some(early) = early else { return Ok(()) };
        let org_id = envelope.org_id;
        if early.received_at > received.received_at {
            let incident_id: Uuid =
                sqlx::query_scalar("SELECT incident_id FROM incident_intake_alerts WHERE org_id = $1 AND source = $2 AND fingerprint = $3")
                    .bind(org_id.0)
                    .bind(alert.source.as_str())
                    .bind(&alert.fingerprint)
                    .fetch_one(&mut *connection)
                    .await?;
            let command = IncidentCommand::ResolveAlert {
                source: alert.source,
                fingerprint: alert.fingerprint.clone(),
                delivery_id: Some(early.delivery_id),
                at: early.resolved_at,
            };
            // Keyed as the resolution would have been, had it been read in order.
            match record(&self.context, org_id, incident_id, actor(received), alert_key(early.delivery_id, alert, "resolve"), envelope, command).await {
                Ok(()) | Err(HandleError::Domain(_)) => {}
                Err(error) => return Err(error.into()),
            }
            set_firing(&mut *connection, org_id, alert, false, early.received_at).await?;
            tracing::debug!(%incident_id, fingerprint = %alert.fingerprint, "a resolution read before its firing ended it");
        }
        sqlx::query("DELETE FROM incident_intake_early_resolutions WHERE org_id = $1 AND source = $2 AND fingerprint = $3 AND delivery_id = $4")
            .bind(org_id.0)
            .bind(alert.source.as_str())
            .bind(&alert.fingerprint)
            .bind(early.delivery_id)
            .execute(&mut *connection)
            .await?;
        Ok(())
    }

    /// Decides the incident of a new firing alert, writes the decision, and carries it out.
    async fn place(&self, connection: &mut PgConnection, envelope: &Envelope, received: &WebhookReceived, alert: Alert) -> anyhow::Result<()> {
        let config = &self.context.config.incident;
        let window_start = received.received_at - chrono::Duration::from_std(config.group_window).unwrap_or_default();
        let candidates: Vec<Candidate> = sqlx::query_as(
            "SELECT incident_id, service, labels FROM incident_intake_incidents \
             WHERE org_id = $1 AND open AND last_alert_at >= $2 AND alerts < $3 ORDER BY last_alert_at DESC LIMIT 50",
        )
        .bind(envelope.org_id.0)
        .bind(window_start)
        .bind(MAX_ALERTS as i32)
        .fetch_all(&mut *connection)
        .await?;
        let best = candidates
            .iter()
            .filter_map(|candidate| {
                if alert.service.is_some() && candidate.service == alert.service {
                    let service = alert.service.clone().unwrap_or_default();
                    return Some((candidate, Grouping { rule: GroupingRule::SameService, score: 1.0, reason: format!("same service `{service}` within the grouping window") }));
                }
                let score = label_score(&candidate.labels.0, &alert.labels);
                (score >= config.group_min_score).then(|| {
                    let reason = format!("{:.0}% of labels in common within the grouping window", score * 100.0);
                    (candidate, Grouping { rule: GroupingRule::MatchingLabels, score, reason })
                })
            })
            .map(|(candidate, grouping)| (candidate.incident_id, grouping))
            .max_by(|(_, one), (_, other)| one.score.total_cmp(&other.score));
        let best = match best {
            Some(found) if found.1.score >= 1.0 => Some(found),
            found => {
                let linked = self.linked(connection, envelope.org_id, &alert, &candidates).await?;
                found.into_iter().chain(linked).max_by(|(_, one), (_, other)| one.score.total_cmp(&other.score))
            }
        };
        let (incident_id, decision) = match best {
            Some((incident_id, grouping)) => (incident_id, Decision::Attach { grouping }),
            None => (Uuid::new_v5(&received.delivery_id, format!("{}\0{}\0incident", alert.source, alert.fingerprint).as_bytes()), Decision::Open),
        };
        sqlx::query(
            "INSERT INTO incident_intake_alerts (org_id, source, fingerprint, incident_id, delivery_id, decision, firing, changed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, true, $7) \
             ON CONFLICT (org_id, source, fingerprint) DO UPDATE SET incident_id = EXCLUDED.incident_id, delivery_id = EXCLUDED.delivery_id, \
                 decision = EXCLUDED.decision, firing = true, changed_at = GREATEST(incident_intake_alerts.changed_at, EXCLUDED.changed_at), updated_at = now()",
        )
        .bind(envelope.org_id.0)
        .bind(alert.source.as_str())
        .bind(&alert.fingerprint)
        .bind(incident_id)
        .bind(received.delivery_id)
        .bind(sqlx::types::Json(&decision))
        .bind(received.received_at)
        .execute(&mut *connection)
        .await?;
        self.carry_out(connection, envelope, received, &alert, incident_id, decision).await
    }

    /// The candidate whose service depends on the alert's, or the alert's on it, through the
    /// fewest dependencies of the discovered graph (at most `AURORA_INCIDENT_GROUP_GRAPH_DEPTH`),
    /// with the path between them as the reason. Services are matched to the graph by name.
    async fn linked(&self, connection: &mut PgConnection, org_id: OrgId, alert: &Alert, candidates: &[Candidate]) -> anyhow::Result<Option<(Uuid, Grouping)>> {
        let depth = self.context.config.incident.group_graph_depth;
        let Some(service) = alert.service.as_deref().filter(|_| depth > 0) else { return Ok(None) };
        if !candidates.iter().any(|candidate| candidate.service.as_deref().is_some_and(|other| !other.eq_ignore_ascii_case(service))) {
            return Ok(None);
        }
        let Some(node) = self.context.graph.reader(&mut *connection).named(org_id.0, service).await? else { return Ok(None) };
        let mut reached = Vec::new();
        for direction in [Direction::Upstream, Direction::Downstream] {
            let walked = self.context.graph.reader(&mut *connection).reach(org_id.0, node.node_id, direction, depth, AsOf::Now).await?;
            reached.extend(walked.into_iter().map(|found| (direction, found)));
        }
        let nearest = candidates
            .iter()
            .filter_map(|candidate| {
                let other = candidate.service.as_deref()?;
                let found = reached.iter().filter(|(_, found)| found.name.eq_ignore_ascii_case(other)).min_by_key(|(_, found)| found.distance)?;
                Some((candidate, found))
            })
            .min_by_key(|(_, (_, found))| found.distance);
        let Some((candidate, (direction, found))) = nearest else { return Ok(None) };
        // The walk that reached it says which way the path goes: upstream, the alert's service
        // depends on it; downstream, it depends on the alert's service.
        let (from, to) = match direction {
            Direction::Upstream => (node.node_id, found.node_id),
            Direction::Downstream => (found.node_id, node.node_id),
        };
        let Some(path) = self.context.graph.reader(&mut *connection).path(org_id.0, from, to, depth, AsOf::Now).await? else { return Ok(None) };
        let reason = format!("`{service}` and `{}` depend on each other in the service graph: {}", found.name, path.describe());
        let score = 1.0 / path.dependencies.len().max(1) as f64;
        Ok(Some((candidate.incident_id, Grouping { rule: GroupingRule::DependencyPath, score, reason: sources::clip_text(&reason, 1000) })))
    }

    async fn carry_out(
        &self,
        connection: &mut PgConnection,
        envelope: &Envelope,
        received: &WebhookReceived,
        alert: &Alert,
        incident_id: Uuid,
        decision: Decision,
    ) -> anyhow::Result<()> {
        let org_id = envelope.org_id;
        let key = |what: &str| alert_key(received.delivery_id, alert, what);
        match decision {
            Decision::Open => {
                let investigation_id = self.context.config.incident.auto_investigate.then(|| Uuid::new_v5(&incident_id, b"investigation-1"));
                let command = IncidentCommand::Open {
                    incident_id,
                    alert: alert.clone(),
                    delivery_id: Some(received.delivery_id),
                    at: received.received_at,
                    split_from: None,
                    investigation_id,
                };
                match record(&self.context, org_id, incident_id, actor(received), key("open"), envelope, command).await {
                    Ok(()) | Err(HandleError::Domain(DomainError::Incident(IncidentError::AlreadyExists(_)))) => {}
                    Err(error) => return Err(error.into()),
                }
                tracing::info!(%incident_id, source = %alert.source, fingerprint = %alert.fingerprint, "incident opened");
                track_incident(&mut *connection, incident_id, org_id, &alert.service, &alert.labels, received.received_at).await?;
                Ok(())
            }
            Decision::Attach { grouping } => {
                let command = IncidentCommand::Attach { alert: alert.clone(), grouping, delivery_id: Some(received.delivery_id), at: received.received_at };
                match record(&self.context, org_id, incident_id, actor(received), key("attach"), envelope, command).await {
                    Ok(()) => {
                        sqlx::query(
                            "UPDATE incident_intake_incidents SET alerts = alerts + 1, last_alert_at = GREATEST(last_alert_at, $2) WHERE incident_id = $1",
                        )
                        .bind(incident_id)
                        .bind(received.received_at)
                        .execute(&mut *connection)
                        .await?;
                        Ok(())
                    }
                    // The incident stopped taking alerts (resolved, merged or full) since the
                    // intake last heard: it takes none now, and the alert is placed again.
                    Err(HandleError::Domain(refusal)) => {
                        tracing::debug!(%incident_id, %refusal, "the grouped incident takes no more alerts");
                        set_open(&mut *connection, incident_id, false).await?;
                        Box::pin(self.place(connection, envelope, received, alert.clone())).await
                    }
                    Err(error) => Err(error.into()),
                }
            }
        }
    }

    /// Keeps the intake's tables in step with what people did to incidents.
    async fn incident_changed(&self, envelope: &Envelope, event: IncidentEvent) -> anyhow::Result<()> {
        let incident_id = Uuid::parse_str(envelope.stream.id())?;
        let pool = &self.context.pool;
        match event {
            IncidentEvent::Resolved(_) => set_open(pool, incident_id, false).await?,
            IncidentEvent::Reopened(_) => set_open(pool, incident_id, true).await?,
            IncidentEvent::Opened(opened) if opened.split_from.is_some() => {
                track_incident(pool, incident_id, envelope.org_id, &opened.service, &opened.labels, opened.opened_at).await?
            }
            IncidentEvent::AlertDetached(detached) => {
                move_alert(pool, envelope.org_id, detached.source, &detached.fingerprint, incident_id, detached.to_incident).await?;
                sqlx::query("UPDATE incident_intake_incidents SET alerts = GREATEST(alerts - 1, 0) WHERE incident_id = $1").bind(incident_id).execute(pool).await?;
            }
            IncidentEvent::Merged(merged) => {
                set_open(pool, incident_id, false).await?;
                let (incident, _) = self.context.commands.load::<Incident>(&envelope.stream, envelope.org_id).await?;
                for attached in incident.alerts {
                    let alert = attached.alert;
                    let grouping = Grouping { rule: GroupingRule::Merged, score: 1.0, reason: format!("merged from incident {incident_id} by a person") };
                    let key = Uuid::new_v5(&envelope.id, format!("{}\0{}", alert.source, alert.fingerprint).as_bytes());
                    let (source, fingerprint, firing) = (alert.source, alert.fingerprint.clone(), attached.firing);
                    let command = IncidentCommand::Attach { alert, grouping, delivery_id: None, at: merged.at };
                    match record(&self.context, envelope.org_id, merged.into, envelope.actor.clone(), key, envelope, command).await {
                        Ok(()) => {}
                        Err(HandleError::Domain(refusal)) => {
                            tracing::warn!(%incident_id, into = %merged.into, %refusal, "an alert of a merged incident could not move");
                            continue;
                        }
                        Err(error) => return Err(error.into()),
                    }
                    if !firing {
                        let resolve = IncidentCommand::ResolveAlert { source, fingerprint: fingerprint.clone(), delivery_id: None, at: merged.at };
                        let key = Uuid::new_v5(&key, b"resolved");
                        match record(&self.context, envelope.org_id, merged.into, envelope.actor.clone(), key, envelope, resolve).await {
                            Ok(()) | Err(HandleError::Domain(_)) => {}
                            Err(error) => return Err(error.into()),
                        }
                    }
                    move_alert(pool, envelope.org_id, source, &fingerprint, incident_id, merged.into).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[async_trait]
impl Reactor for Intake {
    fn name(&self) -> &'static str {
        "incident_intake"
    }

    fn topics(&self, prefix: &str) -> Vec<String> {
        vec![WebhookEvent::topic(prefix), IncidentEvent::topic(prefix)]
    }

    async fn react(&self, envelope: &Envelope) -> anyhow::Result<()> {
        if envelope.stream.category() == WebhookEvent::CATEGORY {
            return match WebhookEvent::decode(&envelope.event_type, envelope.schema_version, envelope.payload.clone()) {
                Ok(WebhookEvent::Received(received)) => self.receive(envelope, received).await,
                _ => Ok(()),
            };
        }
        match IncidentEvent::decode(&envelope.event_type, envelope.schema_version, envelope.payload.clone()) {
            Ok(event) => self.incident_changed(envelope, event).await,
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_in_common_score_without_the_volatile_ones() {
        let labels = |pairs: &[(&str, &str)]| pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect::<BTreeMap<_, _>>();
        let one = labels(&[("alertname", "A"), ("cluster", "eu-1"), ("namespace", "shop"), ("instance", "x")]);
        let other = labels(&[("alertname", "B"), ("cluster", "eu-1"), ("namespace", "shop"), ("instance", "y")]);
        assert_eq!(label_score(&one, &other), 1.0);
        let third = labels(&[("cluster", "eu-1"), ("namespace", "billing")]);
        assert!((label_score(&one, &third) - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(label_score(&labels(&[("alertname", "A")]), &labels(&[("alertname", "A")])), 0.0);
    }
}
