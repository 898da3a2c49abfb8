//! Events of one deployment (`deploy-<deployment id>`): a saved plan of a chat session's
//! Terraform workspace, and what became of it: approved and applied, failed, or lost with the
//! processor that ran it. The files, the plan, the run's output and the state are in the object
//! store; an event names where, with the files' hashes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{event_family, Actor};

/// A file of the workspace as it was planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlannedFile {
    pub path: String,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

/// What a plan does, by kind of change: the resources' addresses (at most
/// [`Changes::MAX_ADDRESSES`] of each kind; the counts are whole).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Changes {
    pub create: Vec<String>,
    pub change: Vec<String>,
    pub replace: Vec<String>,
    pub destroy: Vec<String>,
    /// How many of each kind there are, when more than the addresses listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<ChangeCounts>,
}

impl Changes {
    pub const MAX_ADDRESSES: usize = 100;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChangeCounts {
    pub create: u32,
    pub change: u32,
    pub replace: u32,
    pub destroy: u32,
}

/// `deploy.planned`: a plan of the workspace was saved and can be approved and applied once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeployPlanned {
    pub deployment_id: Uuid,
    /// The chat session whose workspace was planned.
    pub session_id: Uuid,
    /// A plan that destroys everything the workspace manages.
    pub destroy: bool,
    pub files: Vec<PlannedFile>,
    pub changes: Changes,
    /// Where the saved plan, its output and its files' list are (`{org}/iac/{session}/plans/{id}/`).
    pub plan_prefix: String,
}

/// `deploy.apply_started`: a person approved the plan and the CLI starts applying it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeployApplyStarted {
    pub deployment_id: Uuid,
    pub tool_call_id: String,
    /// Who said yes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<Actor>,
}

/// `deploy.applied`: the plan was applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeployApplied {
    pub deployment_id: Uuid,
    /// The state version the apply left (the object `{org}/iac/{session}/state/{version}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_version: Option<u32>,
    /// The root module's outputs, sensitive ones withheld (at most 8 KiB of JSON).
    pub outputs: serde_json::Value,
    /// Where the run's whole output is.
    pub output_key: String,
    pub duration_ms: u64,
}

/// Where a deployment failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeployStage {
    /// The workspace changed since the plan, or the state did: plan again.
    Stale,
    /// Another run holds the workspace's state lock.
    Locked,
    Init,
    Apply,
    /// The CLI ran past its time limit and was stopped.
    Timeout,
    /// The turn was cancelled and the CLI stopped.
    Cancelled,
}

/// `deploy.failed`: the plan was not applied, or not wholly; the state says how far it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeployFailed {
    pub deployment_id: Uuid,
    pub stage: DeployStage,
    /// What went wrong, for a person (at most 2,000 characters).
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_version: Option<u32>,
    pub duration_ms: u64,
}

/// `deploy.outcome_unknown`: the processor stopped while the apply ran, so nobody knows how far
/// it got; it is never re-run. The lock it held and the state it left say what is known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeployOutcomeUnknown {
    pub deployment_id: Uuid,
    /// The lock the lost run held, as the CLI described it, released now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<serde_json::Value>,
    /// The latest state version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_version: Option<u32>,
}

event_family! {
    /// Everything that happens to one deployment.
    pub enum DeployEvent in "deploy", named by DeployEventType {
        Planned(DeployPlanned) = ("deploy.planned", 1),
        ApplyStarted(DeployApplyStarted) = ("deploy.apply_started", 1),
        Applied(DeployApplied) = ("deploy.applied", 1),
        Failed(DeployFailed) = ("deploy.failed", 1),
        OutcomeUnknown(DeployOutcomeUnknown) = ("deploy.outcome_unknown", 1),
    }
}

/// Registers this feature's event family.
pub fn register(families: &mut crate::catalog::Families) {
    families.add::<DeployEvent>();
}
