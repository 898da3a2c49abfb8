//! One deployment (stream `deploy-<deployment id>`): a saved plan, applied at most once. A plan
//! is approved and started once; a started apply ends applied, failed, or with an unknown
//! outcome, and none of them can be started again: a new attempt is a new plan.

use aurora_events::deploy::{Changes, DeployApplied, DeployApplyStarted, DeployEvent, DeployFailed, DeployOutcomeUnknown, DeployPlanned};

use crate::text::{bounded, Lines};
use crate::{Aggregate, DomainError, ErrorKind};

pub const MAX_REASON_CHARS: usize = 2_000;
/// A resource's address as a plan lists it (longer ones are cut); with at most
/// [`Changes::MAX_ADDRESSES`] of each kind, a plan's changes stay far below the event limit.
pub const MAX_ADDRESS_CHARS: usize = 300;

#[derive(Debug, Clone, PartialEq)]
pub enum DeployCommand {
    Plan(DeployPlanned),
    StartApply(DeployApplyStarted),
    Finish(DeployApplied),
    Fail(DeployFailed),
    MarkOutcomeUnknown(DeployOutcomeUnknown),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeployError {
    #[error("there is no such plan")]
    NotFound,
    #[error("this plan was applied already, or its apply ran; plan again to change anything")]
    AlreadyStarted,
    #[error("this plan's deployment ended ({0}); plan again")]
    Ended(&'static str),
}

impl DeployError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            DeployError::NotFound => ErrorKind::NotFound("deployment".into()),
            DeployError::AlreadyStarted | DeployError::Ended(_) => ErrorKind::InvalidState,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Planned,
    Applying,
    Applied,
    Failed,
    OutcomeUnknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Planned => "planned",
            Status::Applying => "applying",
            Status::Applied => "applied",
            Status::Failed => "failed",
            Status::OutcomeUnknown => "outcome_unknown",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deployment {
    pub planned: Option<DeployPlanned>,
    pub status: Option<Status>,
}

impl Deployment {
    fn status(&self) -> Result<Status, DomainError> {
        self.status.ok_or_else(|| DeployError::NotFound.into())
    }
}

impl Aggregate for Deployment {
    type Command = DeployCommand;
    type Event = DeployEvent;

    fn decide(&self, command: DeployCommand) -> Result<Vec<DeployEvent>, DomainError> {
        match command {
            DeployCommand::Plan(planned) => {
                if self.exists() {
                    return Ok(Vec::new());
                }
                let changes = &planned.changes;
                let lists = [&changes.create, &changes.change, &changes.replace, &changes.destroy];
                if lists.iter().any(|list| list.len() > Changes::MAX_ADDRESSES) {
                    return Err(DomainError::InvalidInput { field: "changes", reason: "lists too many addresses".into() });
                }
                for address in lists.into_iter().flatten() {
                    bounded("changes", address, MAX_ADDRESS_CHARS, Lines::One)?;
                }
                Ok(vec![DeployEvent::Planned(planned)])
            }
            DeployCommand::StartApply(started) => match self.status()? {
                Status::Planned => Ok(vec![DeployEvent::ApplyStarted(started)]),
                _ => Err(DeployError::AlreadyStarted.into()),
            },
            DeployCommand::Finish(applied) => match self.status()? {
                Status::Applying => Ok(vec![DeployEvent::Applied(applied)]),
                Status::Applied => Ok(Vec::new()),
                Status::Planned => Err(DeployError::Ended("it was never started").into()),
                status => Err(DeployError::Ended(status.as_str()).into()),
            },
            DeployCommand::Fail(mut failed) => match self.status()? {
                Status::Planned | Status::Applying => {
                    failed.reason = bounded("reason", &failed.reason, MAX_REASON_CHARS, Lines::Many)?;
                    Ok(vec![DeployEvent::Failed(failed)])
                }
                Status::Failed => Ok(Vec::new()),
                status => Err(DeployError::Ended(status.as_str()).into()),
            },
            DeployCommand::MarkOutcomeUnknown(unknown) => match self.status()? {
                Status::Applying => Ok(vec![DeployEvent::OutcomeUnknown(unknown)]),
                Status::OutcomeUnknown => Ok(Vec::new()),
                status => Err(DeployError::Ended(status.as_str()).into()),
            },
        }
    }

    fn evolve(mut self, event: &DeployEvent) -> Self {
        self.status = Some(match event {
            DeployEvent::Planned(planned) => {
                self.planned = Some(planned.clone());
                Status::Planned
            }
            DeployEvent::ApplyStarted(_) => Status::Applying,
            DeployEvent::Applied(_) => Status::Applied,
            DeployEvent::Failed(_) => Status::Failed,
            DeployEvent::OutcomeUnknown(_) => Status::OutcomeUnknown,
        });
        self
    }

    fn exists(&self) -> bool {
        self.status.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;
    use aurora_events::deploy::DeployStage;
    use uuid::Uuid;

    fn planned(id: Uuid) -> DeployEvent {
        DeployEvent::Planned(DeployPlanned {
            deployment_id: id,
            session_id: Uuid::nil(),
            destroy: false,
            files: Vec::new(),
            changes: Changes { create: vec!["terraform_data.mark".into()], ..Changes::default() },
            plan_prefix: "org/iac/session/plans/id".into(),
        })
    }

    fn started(id: Uuid) -> DeployApplyStarted {
        DeployApplyStarted { deployment_id: id, tool_call_id: "call_1".into(), approved_by: None }
    }

    #[test]
    fn a_plan_is_started_once() {
        let id = Uuid::now_v7();
        given::<Deployment>([planned(id)]).when(DeployCommand::StartApply(started(id))).then([DeployEvent::ApplyStarted(started(id))]);
        given::<Deployment>([planned(id), DeployEvent::ApplyStarted(started(id))])
            .when(DeployCommand::StartApply(started(id)))
            .then_error(DeployError::AlreadyStarted.into());
        given::<Deployment>([]).when(DeployCommand::StartApply(started(id))).then_error(DeployError::NotFound.into());
    }

    #[test]
    fn a_lost_apply_is_never_started_again() {
        let id = Uuid::now_v7();
        let unknown = DeployEvent::OutcomeUnknown(DeployOutcomeUnknown { deployment_id: id, lock: None, state_version: Some(3) });
        given::<Deployment>([planned(id), DeployEvent::ApplyStarted(started(id)), unknown])
            .when(DeployCommand::StartApply(started(id)))
            .then_error(DeployError::AlreadyStarted.into());
    }

    #[test]
    fn a_failure_reason_is_bounded() {
        let id = Uuid::now_v7();
        let failed = DeployFailed {
            deployment_id: id,
            stage: DeployStage::Stale,
            reason: "x".repeat(MAX_REASON_CHARS + 1),
            output_key: None,
            state_version: None,
            duration_ms: 0,
        };
        given::<Deployment>([planned(id)])
            .when(DeployCommand::Fail(failed))
            .then_error(DomainError::InvalidInput { field: "reason", reason: format!("must be at most {MAX_REASON_CHARS} characters") });
    }
}
