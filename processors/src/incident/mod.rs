//! The incident feature's processors.
//!
//! The intake reads each accepted webhook delivery and records its alerts on incidents: a repeat
//! firing of an open alert on its incident, a resolution on its incident (which resolves when its
//! last alert does), a new alert on an open incident it groups with (same service, or enough labels
//! in common, within the window), or on a new incident. It decides one organisation at a time and
//! writes what it decided before it records it, so a redelivered delivery decides the same again.
//!
//! The investigator runs each requested investigation as a read-only agent turn in a chat session
//! of its own, a configurable number at once per organisation and the rest in order; records the
//! agent's reasoning as thoughts while it works; reads the RCA it ends with (refused once with the
//! reasons and asked again, then failed); and drafts the postmortem when an incident resolves.

pub mod intake;
pub mod investigator;

use std::sync::Arc;

use aurora_commands::{CommandMeta, HandleError};
use aurora_domain::incident::{Incident, IncidentCommand};
use aurora_events::incident::IncidentEvent;
use aurora_events::{Actor, Envelope, EventPayload, OrgId};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::reactor;
use crate::{Context, Processors};

/// Registers the intake and the investigator.
pub fn register(processors: &mut Processors) {
    processors.add("incident_intake", |context: Context, shutdown: CancellationToken| async move {
        reactor::run(Arc::new(intake::Intake { context: context.clone() }), context, shutdown).await
    });
    processors.add("investigator", |context: Context, shutdown: CancellationToken| async move {
        let investigator = Arc::new(investigator::Investigator::new(&context));
        reactor::run(investigator, context, shutdown).await
    });
}

/// Records `command` on incident `incident_id`, once per `key`, as caused by `cause`.
async fn record(context: &Context, org_id: OrgId, incident_id: Uuid, actor: Actor, key: Uuid, cause: &Envelope, command: IncidentCommand) -> Result<(), HandleError> {
    let meta = CommandMeta::caused_by(org_id, actor, key, cause);
        context.commands.handle::<Incident>(&IncidentEvent::stream_of(incident_id), command, &meta, None).await?;
    aurora_commands::relay::wake(&context.pool).await;
    Ok(())
}
