//! Infrastructure as code from the chat: the agent writes Terraform into a workspace of its chat
//! session (kept in the object store under `{org}/iac/{session}/`), reads it back, plans it with
//! the real CLI (OpenTofu's `tofu` by default) in a scratch directory of its own, and, after a
//! person approved the exact saved plan, applies that plan.
//!
//! A workspace is flat: its files are `.tf`, `.tf.json` or `.tfvars` files named by one path
//! segment, so no name can climb out of it (no `/`, no `..`, no absolute path) and no file is a
//! link: every file the CLI sees was written here, from bytes the store held.
//!
//! Each plan is a deployment (`deploy-<plan id>`): `deploy.planned`, then at most one apply,
//! `deploy.apply_started` and `deploy.applied`, `deploy.failed` or `deploy.outcome_unknown`.
//! The state is the workspace's, served to the CLI by [`state`].

mod state;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aurora_adapters::clouds::aws::Aws;
use aurora_adapters::objects::{ObjectError, ObjectKey};
use aurora_commands::{CommandMeta, HandleError};
use aurora_domain::deploy::{DeployCommand, DeployError, Deployment, Status};
use aurora_domain::DomainError;
use aurora_events::connection::Provider;
use aurora_events::deploy::{
    ChangeCounts, Changes, DeployApplied, DeployApplyStarted, DeployEvent, DeployFailed, DeployOutcomeUnknown, DeployPlanned,
    DeployStage, PlannedFile,
};
use aurora_events::EventPayload;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};
use uuid::Uuid;

use super::{Effect, Registry, Tool, ToolContext, ToolError};
use state::{StateServer, Workspace};

/// Registers the deploy tools.
pub fn register(tools: &mut Registry) {
    tools.add(IacWrite);
    tools.add(IacRead);
    tools.add(IacPlan);
    tools.add(IacApply);
    tools.add(IacDestroy);
}

/// Bytes of a run's output the model is shown (its tail); the whole is kept in the store.
const OUTPUT_SHOWN: usize = 6 * 1024;
/// The file Aurora adds to every run: it points the configuration's backend at [`state`].
const BACKEND_OVERRIDE: (&str, &str) = ("aurora_backend_override.tf", "terraform {\n  backend \"http\" {}\n}\n");
/// How long a run waits for the workspace's state lock before it gives up.
const LOCK_WAIT: &str = "-lock-timeout=5s";
/// The CLI commands whose output a person reads as it comes (the others answer JSON).
const STREAMED: &[&str] = &["init", "plan", "apply"];
/// How often what a run printed is sent to the chat.
const STREAM_EVERY: Duration = Duration::from_millis(200);
/// util-linux's `setpriv`, which gives the CLI a parent-death signal.
const SETPRIV: &str = "/usr/bin/setpriv";
/// Largest outputs kept in `deploy.applied`, in bytes of JSON.
const OUTPUTS_CAP: usize = 8 * 1024;

fn workspace_file(context: &ToolContext, name: &str) -> ObjectKey {
    ObjectKey::workspace(context.org_id.0, context.session_id, &["files", name])
}

fn store_error(error: ObjectError) -> ToolError {
    ToolError::Unavailable(error.to_string())
}

/// A workspace file's name: one segment of letters, digits, `_`, `-` and `.`, ending in `.tf`,
/// `.tf.json` or `.tfvars`, and not an override file (those would replace the backend Aurora
/// gives every run).
fn file_name(name: &str) -> Result<&str, ToolError> {
    let fits = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && [".tf", ".tf.json", ".tfvars"].iter().any(|suffix| name.len() > suffix.len() && name.ends_with(suffix))
        && !["override.tf", "override.tf.json"].iter().any(|suffix| name.ends_with(suffix));
    if fits {
        Ok(name)
    } else {
        Err(ToolError::Refused(format!(
            "`{}` is not a workspace file name: use one name (no folders, no `/` or `..`) of letters, digits, `_`, `-` and `.`, \
             ending in .tf, .tf.json or .tfvars (not an override file), at most 100 characters",
            name.chars().take(120).collect::<String>().escape_debug()
        )))
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// The names of the workspace's files.
async fn workspace_names(context: &ToolContext) -> Result<Vec<String>, ToolError> {
    let prefix = ObjectKey::workspace(context.org_id.0, context.session_id, &["files"]);
    let keys = context.objects.list(&prefix).await.map_err(store_error)?;
    Ok(keys.iter().filter_map(|key| key.rsplit('/').next()).filter(|name| file_name(name).is_ok()).map(str::to_owned).collect())
}

/// The workspace's files, by name, with their contents.
async fn workspace(context: &ToolContext) -> Result<Vec<(String, bytes::Bytes)>, ToolError> {
    let mut files = Vec::new();
    for name in workspace_names(context).await? {
        let bytes = context.objects.get(&workspace_file(context, &name)).await.map_err(store_error)?;
        files.push((name, bytes));
    }
    Ok(files)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WrittenFile {
    /// The file's name in the workspace, e.g. `main.tf` (no folders).
    pub path: String,
    /// The whole file; it replaces what the file held.
    pub content: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteArgs {
    /// The files to write or replace.
    pub files: Vec<WrittenFile>,
}

/// Writes Terraform files into the chat session's workspace.
pub struct IacWrite;

#[async_trait]
impl Tool for IacWrite {
    type Args = WriteArgs;
    const NAME: &'static str = "iac_write";
    const DESCRIPTION: &'static str = "Write or replace Terraform (.tf) files in this chat session's workspace. The person sees the code. \
         Plan it with iac_plan before anything is applied.";
    const EFFECT: Effect = Effect::Drafts;

    async fn run(&self, context: &ToolContext, args: WriteArgs) -> Result<Value, ToolError> {
        let limits = &context.deploy;
        if args.files.is_empty() {
            return Err(ToolError::Refused("give at least one file to write".into()));
        }
        let carried: usize = args.files.iter().map(|file| file.content.len()).sum();
        if carried > aurora_adapters::config::DeployConfig::MAX_FILE_BYTES {
            return Err(ToolError::Refused(format!(
                "one call may write at most {} bytes of files, and this one carries {carried}; write them in several calls",
                aurora_adapters::config::DeployConfig::MAX_FILE_BYTES
            )));
        }
        let mut names: Vec<&str> = Vec::new();
        for file in &args.files {
            let name = file_name(&file.path)?;
            if file.content.len() > limits.max_file_bytes {
                return Err(ToolError::Refused(format!(
                    "`{name}` is {} bytes, over the limit of {} bytes per file; split it",
                    file.content.len(),
                    limits.max_file_bytes
                )));
            }
            if file.content.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
                return Err(ToolError::Refused(format!("`{name}` holds control characters")));
            }
            if names.contains(&name) {
                return Err(ToolError::Refused(format!("`{name}` is given twice")));
            }
            names.push(name);
        }
        let existing = workspace_names(context).await?;
        let total = existing.iter().filter(|name| !names.contains(&name.as_str())).count() + names.len();
        if total > limits.max_files {
            return Err(ToolError::Refused(format!("a workspace holds at most {} files; this would make {total}", limits.max_files)));
        }
        let mut written = Vec::new();
        for file in args.files {
            let bytes = bytes::Bytes::from(file.content);
            let hash = sha256(&bytes);
            let size = bytes.len();
            context.objects.put(&workspace_file(context, &file.path), bytes).await.map_err(store_error)?;
            written.push(json!({ "path": file.path, "sha256": hash, "bytes": size }));
        }
        Ok(json!({ "workspace": context.session_id, "written": written }))
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadArgs {
    /// The file to read; without it, the workspace's files are listed.
    #[serde(default)]
    pub path: Option<String>,
}

/// Lists or reads the workspace's files.
pub struct IacRead;

#[async_trait]
impl Tool for IacRead {
    type Args = ReadArgs;
    const NAME: &'static str = "iac_read";
    const DESCRIPTION: &'static str = "List the Terraform files of this chat session's workspace, or read one of them.";
    const OUTPUT_CAP: usize = 80 * 1024;

    async fn run(&self, context: &ToolContext, args: ReadArgs) -> Result<Value, ToolError> {
        match args.path {
            Some(path) => {
                let name = file_name(&path)?;
                match context.objects.get(&workspace_file(context, name)).await {
                    Ok(bytes) => Ok(json!({ "path": name, "sha256": sha256(&bytes), "content": String::from_utf8_lossy(&bytes) })),
                    Err(ObjectError::NotFound(_)) => Err(ToolError::Refused(format!("the workspace has no file `{name}`"))),
                    Err(error) => Err(store_error(error)),
                }
            }
            None => {
                let files: Vec<Value> = workspace(context)
                    .await?
                    .into_iter()
                    .map(|(name, bytes)| json!({ "path": name, "sha256": sha256(&bytes), "bytes": bytes.len() }))
                    .collect();
                Ok(json!({ "workspace": context.session_id, "files": files }))
            }
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanArgs {
    /// Plan the destruction of everything the workspace manages instead (apply it with iac_destroy).
    #[serde(default)]
    pub destroy: bool,
}

/// Plans the workspace with the CLI and keeps the saved plan.
pub struct IacPlan;

#[async_trait]
impl Tool for IacPlan {
    type Args = PlanArgs;
    const NAME: &'static str = "iac_plan";
    const DESCRIPTION: &'static str = "Plan this chat session's Terraform workspace (init, validate, plan) and keep the saved plan. \
         Returns its plan_id and what would be created, changed, replaced and destroyed, and any diagnostics. Changes nothing.";
    /// `init` and `plan` have their own limits (the deploy configuration); this bounds both.
    const TIMEOUT: Duration = Duration::from_secs(3 * 3600);

    async fn run(&self, context: &ToolContext, args: PlanArgs) -> Result<Value, ToolError> {
        let files = workspace(context).await?;
        if files.is_empty() {
            return Err(ToolError::Refused("the workspace has no files; write them with iac_write first".into()));
        }
        let manifest: Vec<PlannedFile> = files.iter().map(|(name, bytes)| PlannedFile { path: name.clone(), sha256: sha256(bytes) }).collect();
        let run = Run::prepare(context, &files).await?;
        let mut output = String::new();
        let init = run.init(&mut output).await?;
        let plan_id = Uuid::now_v7();
        let keep = |name: &str| plan_key(context, plan_id, name);
        let mut answer = json!({ "workspace": context.session_id, "files": manifest });
        if !init.success() {
            answer["result"] = json!("init_failed");
            answer["diagnostics"] = json!(tail(&output, OUTPUT_SHOWN));
            return Ok(answer);
        }
        let validate = run.cli(&["validate", "-json", "-no-color"], context.deploy.run_timeout, &mut String::new()).await?;
        let diagnostics: Vec<Value> = serde_json::from_str::<Value>(&validate.stdout)
            .ok()
            .and_then(|report| report.get("diagnostics").cloned())
            .and_then(|diagnostics| diagnostics.as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .map(|diagnostic| {
                json!({
                    "severity": diagnostic["severity"],
                    "summary": diagnostic["summary"],
                    "detail": diagnostic["detail"],
                    "file": diagnostic["range"]["filename"],
                    "line": diagnostic["range"]["start"]["line"],
                })
            })
            .collect();
        let unformatted = run.cli(&["fmt", "-check", "-list=true", "-no-color"], context.deploy.run_timeout, &mut String::new()).await?;
        answer["unformatted_files"] = json!(unformatted.stdout.lines().filter(|line| !line.trim().is_empty()).collect::<Vec<_>>());
        answer["diagnostics"] = json!(diagnostics);
        if !validate.success() {
            answer["result"] = json!("invalid");
            return Ok(answer);
        }
        let mut plan = vec!["plan", "-input=false", "-no-color", LOCK_WAIT, "-out=aurora.tfplan", "-detailed-exitcode"];
        if args.destroy {
            plan.push("-destroy");
        }
        let planned = run.cli(&plan, context.deploy.run_timeout, &mut output).await?;
        // -detailed-exitcode: 0 no changes, 2 changes, 1 an error.
        if planned.ended != Ended::Exited(Some(0)) && planned.ended != Ended::Exited(Some(2)) {
            answer["result"] = json!(if planned.ended == Ended::Exited(Some(1)) { "plan_failed" } else { planned.ended.as_str() });
            answer["output"] = json!(tail(&output, OUTPUT_SHOWN));
            return Ok(answer);
        }
        let shown = run.cli(&["show", "-json", "-no-color", "aurora.tfplan"], context.deploy.run_timeout, &mut String::new()).await?;
        let changes = summary(&serde_json::from_str(&shown.stdout).unwrap_or(Value::Null));
        let plan_file = tokio::fs::read(run.dir().join("aurora.tfplan")).await.map_err(|error| unavailable("read the plan", error))?;
        context.objects.put(&keep("plan.tfplan"), plan_file.into()).await.map_err(store_error)?;
        context.objects.put(&keep("output.txt"), output.clone().into_bytes().into()).await.map_err(store_error)?;
        let planned_event = DeployPlanned {
            deployment_id: plan_id,
            session_id: context.session_id,
            destroy: args.destroy,
            files: manifest,
            changes: changes.clone(),
            plan_prefix: ObjectKey::workspace(context.org_id.0, context.session_id, &["plans", &plan_id.to_string()]).to_string(),
        };
        record(context, plan_id, DeployCommand::Plan(planned_event)).await?;
        answer["result"] = json!(if planned.ended == Ended::Exited(Some(2)) { "changes" } else { "no_changes" });
        answer["plan_id"] = json!(plan_id);
        answer["destroy"] = json!(args.destroy);
        answer["changes"] = json!(changes);
        answer["output"] = json!(tail(&output, OUTPUT_SHOWN));
        Ok(answer)
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyArgs {
    /// The plan to apply, as iac_plan answered it.
    pub plan_id: Uuid,
}

/// Applies an approved saved plan.
pub struct IacApply;

#[async_trait]
impl Tool for IacApply {
    type Args = ApplyArgs;
    const NAME: &'static str = "iac_apply";
    const DESCRIPTION: &'static str = "Apply a saved plan of this chat session's workspace, exactly as iac_plan made it. \
         A person sees the plan and must approve it; a workspace changed since the plan is refused (plan again).";
    const EFFECT: Effect = Effect::Destructive;
    /// `init` and `apply` have their own limits (the deploy configuration); this bounds both.
    const TIMEOUT: Duration = Duration::from_secs(3 * 3600);

    async fn preview(&self, context: &ToolContext, args: &ApplyArgs) -> Result<Option<Value>, ToolError> {
        preview(context, args.plan_id, false).await
    }

    async fn run(&self, context: &ToolContext, args: ApplyArgs) -> Result<Value, ToolError> {
        apply(context, args.plan_id, false).await
    }

    async fn abandoned(&self, context: &ToolContext, args: ApplyArgs) -> Result<Option<String>, ToolError> {
        abandoned(context, args.plan_id).await
    }
}

/// Applies an approved saved plan that destroys what the workspace manages.
pub struct IacDestroy;

#[async_trait]
impl Tool for IacDestroy {
    type Args = ApplyArgs;
    const NAME: &'static str = "iac_destroy";
    const DESCRIPTION: &'static str = "Destroy what this chat session's workspace manages, by applying a destroy plan \
         (iac_plan with destroy: true). A person sees the plan and must approve it.";
    const EFFECT: Effect = Effect::Destructive;
    const TIMEOUT: Duration = Duration::from_secs(3 * 3600);

    async fn preview(&self, context: &ToolContext, args: &ApplyArgs) -> Result<Option<Value>, ToolError> {
        preview(context, args.plan_id, true).await
    }

    async fn run(&self, context: &ToolContext, args: ApplyArgs) -> Result<Value, ToolError> {
        apply(context, args.plan_id, true).await
    }

    async fn abandoned(&self, context: &ToolContext, args: ApplyArgs) -> Result<Option<String>, ToolError> {
        abandoned(context, args.plan_id).await
    }
}

fn plan_key(context: &ToolContext, plan_id: Uuid, name: &str) -> ObjectKey {
    ObjectKey::deployment(context.org_id.0, context.session_id, plan_id, name)
}

/// The state of the session's workspace.
fn state_of(context: &ToolContext) -> Workspace {
    Workspace { pool: context.pool.clone(), objects: context.objects.clone(), org_id: context.org_id.0, workspace_id: context.session_id }
}

/// Records `command` on the deployment `plan_id`, once per tool call.
async fn record(context: &ToolContext, plan_id: Uuid, command: DeployCommand) -> Result<(), ToolError> {
    let kind = match &command {
        DeployCommand::Plan(_) => "plan",
        DeployCommand::StartApply(_) => "start",
        DeployCommand::Finish(_) => "finish",
        DeployCommand::Fail(_) => "fail",
        DeployCommand::MarkOutcomeUnknown(_) => "unknown",
    };
    let key = Uuid::new_v5(&context.tool_call_key, kind.as_bytes());
    let meta = CommandMeta::idempotent(context.org_id, context.actor.clone(), key);
    match context.commands.handle::<Deployment>(&DeployEvent::stream_of(plan_id), command, &meta, None).await {
        Ok(_) => Ok(()),
        Err(HandleError::Domain(error)) => Err(ToolError::Refused(error.to_string())),
        Err(error) => Err(ToolError::Unavailable(error.to_string())),
    }
}

/// Why a plan may not be applied now.
enum Refusal {
    /// The workspace changed since the plan.
    Stale(String),
    Other(ToolError),
}

impl From<ToolError> for Refusal {
    fn from(error: ToolError) -> Self {
        Refusal::Other(error)
    }
}

/// The plan `plan_id` of this session, if it may be applied now (by `iac_destroy` when `destroy`).
async fn applicable(context: &ToolContext, plan_id: Uuid, destroy: bool) -> Result<DeployPlanned, Refusal> {
    let (deployment, _) = context
        .commands
        .load::<Deployment>(&DeployEvent::stream_of(plan_id), context.org_id)
        .await
        .map_err(|error| ToolError::Unavailable(error.to_string()))?;
    let planned = match deployment.planned {
        Some(planned) if planned.session_id == context.session_id => planned,
        _ => return Err(ToolError::Refused(format!("this chat session has no plan {plan_id}; make one with iac_plan")).into()),
    };
    if deployment.status != Some(Status::Planned) {
        return Err(ToolError::Refused(DomainError::from(DeployError::AlreadyStarted).to_string()).into());
    }
    if planned.destroy != destroy {
        let (other, tool) = if planned.destroy { ("a destroy plan", "iac_destroy") } else { ("not a destroy plan", "iac_apply") };
        return Err(ToolError::Refused(format!("plan {plan_id} is {other}; apply it with {tool}")).into());
    }
    let now: Vec<PlannedFile> =
        workspace(context).await?.iter().map(|(name, bytes)| PlannedFile { path: name.clone(), sha256: sha256(bytes) }).collect();
    if now != planned.files {
        let changed: Vec<&str> = now
            .iter()
            .filter(|file| !planned.files.contains(file))
            .chain(planned.files.iter().filter(|file| !now.iter().any(|current| current.path == file.path)))
            .map(|file| file.path.as_str())
            .collect();
        return Err(Refusal::Stale(format!(
            "the workspace changed since plan {plan_id} ({}); plan it again and approve the new plan",
            changed.join(", ")
        )));
    }
    Ok(planned)
}

async fn preview(context: &ToolContext, plan_id: Uuid, destroy: bool) -> Result<Option<Value>, ToolError> {
    match applicable(context, plan_id, destroy).await {
        Ok(planned) => Ok(Some(json!({
            "plan_id": plan_id, "destroy": planned.destroy, "changes": planned.changes, "files": planned.files,
        }))),
        Err(Refusal::Stale(reason)) => Err(ToolError::Refused(reason)),
        Err(Refusal::Other(error)) => Err(error),
    }
}

/// Applies the approved plan `plan_id`: the saved plan file itself, on the files it was made of.
async fn apply(context: &ToolContext, plan_id: Uuid, destroy: bool) -> Result<Value, ToolError> {
    let started = Instant::now();
    let failed = |stage: DeployStage, reason: String, output_key: Option<String>, state_version: Option<u32>| DeployFailed {
        deployment_id: plan_id,
        stage,
        reason,
        output_key,
        state_version,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    match applicable(context, plan_id, destroy).await {
        Ok(_) => {}
        Err(Refusal::Stale(reason)) => {
            record(context, plan_id, DeployCommand::Fail(failed(DeployStage::Stale, reason.clone(), None, None))).await?;
            return Err(ToolError::Refused(reason));
        }
        Err(Refusal::Other(error)) => return Err(error),
    }
    let start = DeployApplyStarted { deployment_id: plan_id, tool_call_id: context.tool_call_id.clone(), approved_by: context.approved_by.clone() };
    record(context, plan_id, DeployCommand::StartApply(start)).await?;
    // From here on the deployment ends recorded, whatever fails.
    let (run, output, applied) = match execute(context, plan_id).await {
        Ok(executed) => executed,
        Err(error) => {
            let reason = format!("the run could not start: {error}");
            record(context, plan_id, DeployCommand::Fail(failed(DeployStage::Init, reason, None, None))).await?;
            return Err(error);
        }
    };
    let output_key = plan_key(context, plan_id, "apply.txt");
    if let Err(error) = context.objects.put(&output_key, output.clone().into_bytes().into()).await {
        tracing::warn!(%error, %plan_id, "could not keep an apply's output");
    }
    let output_key = output_key.to_string();
    let state_version = run.workspace.latest_version().await.unwrap_or_else(|error| {
        tracing::warn!(%error, %plan_id, "could not read the state's latest version");
        None
    });
    let mut answer = json!({ "plan_id": plan_id, "destroy": destroy, "state_version": state_version, "output": tail(&output, OUTPUT_SHOWN) });
    let stage = match &applied {
        None => Some((DeployStage::Init, "init failed".to_owned())),
        Some(ran) => match ran.ended {
            Ended::Exited(Some(0)) => None,
            Ended::TimedOut => Some((DeployStage::Timeout, format!("apply ran past {} s and was stopped", context.deploy.run_timeout.as_secs()))),
            Ended::Cancelled => Some((DeployStage::Cancelled, "the turn was cancelled and apply was stopped".to_owned())),
            Ended::Exited(_) if output.contains("Error acquiring the state lock") => {
                Some((DeployStage::Locked, "another run holds the workspace's state lock; nothing was applied".to_owned()))
            }
            Ended::Exited(_) if output.contains("Saved plan is stale") => {
                Some((DeployStage::Stale, "the state changed since the plan; plan again".to_owned()))
            }
            Ended::Exited(_) => Some((DeployStage::Apply, "apply failed; the output says where".to_owned())),
        },
    };
    if let Some((stage, reason)) = stage {
        record(context, plan_id, DeployCommand::Fail(failed(stage, reason.clone(), Some(output_key), state_version))).await?;
        answer["result"] = json!("failed");
        answer["stage"] = json!(stage);
        answer["reason"] = json!(reason);
        return Ok(answer);
    }
    let shown = run.cli(&["output", "-json", "-no-color"], context.deploy.run_timeout, &mut String::new()).await;
    let outputs = outputs(&shown.ok().and_then(|shown| serde_json::from_str(&shown.stdout).ok()).unwrap_or(Value::Null));
    let done = DeployApplied {
        deployment_id: plan_id,
        state_version,
        outputs: outputs.clone(),
        output_key,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    record(context, plan_id, DeployCommand::Finish(done)).await?;
    answer["result"] = json!("applied");
    answer["outputs"] = outputs;
    Ok(answer)
}

/// Runs `init` and `apply` of the saved plan `plan_id` on the workspace's files: the run, its
/// output, and how `apply` ended (none when `init` failed).
async fn execute(context: &ToolContext, plan_id: Uuid) -> Result<(Run<'_>, String, Option<Ran>), ToolError> {
    let files = workspace(context).await?;
    let run = Run::prepare(context, &files).await?;
    let plan_file = context.objects.get(&plan_key(context, plan_id, "plan.tfplan")).await.map_err(store_error)?;
    tokio::fs::write(run.dir().join("aurora.tfplan"), &plan_file).await.map_err(|error| unavailable("write the plan", error))?;
    let mut output = String::new();
    let init = run.init(&mut output).await?;
    let applied = if init.success() {
        Some(run.cli(&["apply", "-input=false", "-no-color", LOCK_WAIT, "aurora.tfplan"], context.deploy.run_timeout, &mut output).await?)
    } else {
        None
    };
    Ok((run, output, applied))
}

/// The apply of `plan_id` was lost with its processor: recorded as such, its lock released.
async fn abandoned(context: &ToolContext, plan_id: Uuid) -> Result<Option<String>, ToolError> {
    let (deployment, _) = context
        .commands
        .load::<Deployment>(&DeployEvent::stream_of(plan_id), context.org_id)
        .await
        .map_err(|error| ToolError::Unavailable(error.to_string()))?;
    if deployment.status != Some(Status::Applying) {
        return Ok(None);
    }
    let workspace = state_of(context);
    let lock = workspace.release().await?;
    let state_version = workspace.latest_version().await.map_err(store_error)?;
    let unknown = DeployOutcomeUnknown { deployment_id: plan_id, lock: lock.clone(), state_version };
    record(context, plan_id, DeployCommand::MarkOutcomeUnknown(unknown)).await?;
    let held = lock.map(|lock| format!(" It held the state lock {}, released now.", lock["ID"])).unwrap_or_default();
    let state = state_version.map(|version| format!("state version {version}")).unwrap_or_else(|| "no state".into());
    Ok(Some(format!(
        "Deployment {plan_id} was recorded as outcome unknown.{held} The workspace has {state}; plan again to see what the apply did."
    )))
}

/// The root module's outputs, sensitive ones withheld, at most [`OUTPUTS_CAP`] bytes.
fn outputs(shown: &Value) -> Value {
    let mut kept = serde_json::Map::new();
    for (name, output) in shown.as_object().into_iter().flatten() {
        let value = if output["sensitive"].as_bool().unwrap_or(false) { json!("(sensitive)") } else { output["value"].clone() };
        kept.insert(name.clone(), value);
    }
    let kept = Value::Object(kept);
    if kept.to_string().len() > OUTPUTS_CAP {
        return json!({ "note": "the outputs are larger than 8 KiB; read them from the state" });
    }
    kept
}

/// What a saved plan would do, by kind of change, with the resources' addresses.
fn summary(plan: &Value) -> Changes {
    let mut changes = Changes::default();
    let mut counts = ChangeCounts::default();
    for resource in plan["resource_changes"].as_array().into_iter().flatten() {
        let address: String = resource["address"].as_str().unwrap_or_default().chars().take(aurora_domain::deploy::MAX_ADDRESS_CHARS).collect();
        let actions: Vec<&str> = resource["change"]["actions"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let (list, count) = match actions.as_slice() {
            ["create"] => (&mut changes.create, &mut counts.create),
            ["update"] => (&mut changes.change, &mut counts.change),
            ["delete", "create"] | ["create", "delete"] => (&mut changes.replace, &mut counts.replace),
            ["delete"] => (&mut changes.destroy, &mut counts.destroy),
            _ => continue,
        };
        *count += 1;
        if list.len() < Changes::MAX_ADDRESSES {
            list.push(address);
        }
    }
    let listed = [&changes.create, &changes.change, &changes.replace, &changes.destroy].iter().map(|list| list.len() as u32).sum::<u32>();
    if listed < counts.create + counts.change + counts.replace + counts.destroy {
        changes.counts = Some(counts);
    }
    changes
}

fn unavailable(doing: &str, error: std::io::Error) -> ToolError {
    ToolError::Unavailable(format!("could not {doing}: {error}"))
}

/// The last `max` bytes of `text`, cut on a character boundary.
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// A directory of one run, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, ToolError> {
        let path = std::env::temp_dir().join(format!("aurora-iac-{}", Uuid::now_v7()));
        std::fs::create_dir(&path).map_err(|error| unavailable("make a scratch directory", error))?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the process group `group` leads: the CLI and everything its provisioners started.
async fn stop_group(group: Option<u32>) {
    let Some(group) = group else { return };
    match tokio::process::Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).status().await {
        Ok(status) if status.success() => {}
        outcome => tracing::warn!(group, ?outcome, "could not stop a Terraform CLI run"),
    }
}

/// One run of the CLI over a workspace: a scratch directory holding its files and the backend
/// override, the state server of the workspace, and the environment the CLI gets, which holds
/// nothing of the processor's (its database, vault or object-store credentials): only the state
/// server's address and password and the organisation's cloud credentials, read now.
struct Run<'a> {
    context: &'a ToolContext,
    scratch: Scratch,
    workspace: Workspace,
    /// Serves the state for as long as the run lives.
    state: StateServer,
    env: Vec<(&'static str, String)>,
    /// Values never shown: they are replaced in everything the CLI prints.
    secrets: Vec<String>,
}

/// How a CLI command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Exited(Option<i32>),
    TimedOut,
    Cancelled,
}

impl Ended {
    fn as_str(self) -> &'static str {
        match self {
            Ended::Exited(_) => "failed",
            Ended::TimedOut => "timed_out",
            Ended::Cancelled => "cancelled",
        }
    }
}

struct Ran {
    ended: Ended,
    stdout: String,
}

impl Ran {
    fn success(&self) -> bool {
        self.ended == Ended::Exited(Some(0))
    }
}

impl<'a> Run<'a> {
    async fn prepare(context: &'a ToolContext, files: &[(String, bytes::Bytes)]) -> Result<Run<'a>, ToolError> {
        let scratch = Scratch::new()?;
        for (name, bytes) in files {
            tokio::fs::write(scratch.0.join(name), bytes).await.map_err(|error| unavailable("write the workspace", error))?;
        }
        let (name, backend) = BACKEND_OVERRIDE;
        tokio::fs::write(scratch.0.join(name), backend).await.map_err(|error| unavailable("write the workspace", error))?;
        let workspace = state_of(context);
        let state = StateServer::start(workspace.clone()).await?;
        let mut env = state.env();
        let mut secrets = vec![state.password().to_owned()];
        // The organisation's clouds, read from the secret store for this run (the first
        // connection of each provider; its first project or subscription when it has several).
        for provider in [Provider::Aws, Provider::Gcp, Provider::Azure] {
            if !context.connected.has(provider) {
                continue;
            }
            let (connection, secret) = context.credentials(provider, None).await?;
            let first = |kind: &str| connection.inventory.iter().find(|item| item.kind == kind).map(|item| item.id.clone());
            let cloud = match provider {
                Provider::Aws => Aws::for_connection(&context.providers, &secret).await?.environment(),
                Provider::Gcp => aurora_adapters::clouds::gcp::environment(&secret, first("project").as_deref())?,
                _ => aurora_adapters::clouds::azure::environment(&secret, first("subscription").as_deref())?,
            };
            env.extend(cloud.vars);
            secrets.extend(cloud.secrets);
        }
        secrets.retain(|secret| secret.len() >= 4);
        Ok(Run { context, scratch, workspace, state, env, secrets })
    }

    fn dir(&self) -> &Path {
        &self.scratch.0
    }

    async fn init(&self, output: &mut String) -> Result<Ran, ToolError> {
        self.cli(&["init", "-input=false", "-no-color", LOCK_WAIT], self.context.deploy.init_timeout, output).await
    }

    /// `text` with every secret value replaced.
    fn redacted(&self, text: &[u8]) -> String {
        let mut text = String::from_utf8_lossy(text).into_owned();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "[redacted]");
            }
        }
        text
    }

    /// Runs the CLI with `args`, stopped after `limit` or when the turn is cancelled; its output
    /// (both streams, redacted) is appended to `output`.
    async fn cli(&self, args: &[&str], limit: Duration, output: &mut String) -> Result<Ran, ToolError> {
        let deploy = &self.context.deploy;
        // A processor that dies takes its CLI runs with it (the parent-death signal, set by
        // util-linux's `setpriv` where it is installed): no apply goes on unrecorded.
        let mut command = if Path::new(SETPRIV).exists() {
            let mut command = tokio::process::Command::new(SETPRIV);
            command.args(["--pdeathsig", "KILL", "--"]).arg(&deploy.cli);
            command
        } else {
            tokio::process::Command::new(&deploy.cli)
        };
        command
            .args(args)
            .current_dir(self.dir())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.dir())
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("TF_CLI_CONFIG_FILE", "/dev/null")
            .env("CHECKPOINT_DISABLE", "1")
            .envs(self.env.iter().map(|(name, value)| (*name, value.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that a stop reaches what its provisioners started too.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|error| ToolError::Unavailable(format!("could not start the Terraform CLI `{}`: {error}", deploy.cli.display())))?;
        let group = child.id();
        let mut out_lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut err_lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let streamed = STREAMED.contains(&args[0]);
        let deadline = tokio::time::Instant::now() + limit;
        let mut tick = tokio::time::interval(STREAM_EVERY);
        let (mut out_open, mut err_open) = (true, true);
        let (mut stdout, mut pending) = (String::new(), String::new());
        let mut take = |line: String, is_stdout: bool, pending: &mut String| {
            let line = self.redacted(line.as_bytes());
            if is_stdout {
                stdout.push_str(&line);
                stdout.push('\n');
            }
            output.push_str(&line);
            output.push('\n');
            if streamed {
                pending.push_str(&line);
                pending.push('\n');
            }
        };
        let stopped = loop {
            if !out_open && !err_open {
                break None;
            }
            tokio::select! {
                line = out_lines.next_line(), if out_open => match line {
                    Ok(Some(line)) => take(line, true, &mut pending),
                    _ => out_open = false,
                },
                line = err_lines.next_line(), if err_open => match line {
                    Ok(Some(line)) => take(line, false, &mut pending),
                    _ => err_open = false,
                },
                _ = tick.tick() => {
                    if !pending.is_empty() {
                        self.context.output.send(&std::mem::take(&mut pending));
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break Some(Ended::TimedOut),
                _ = self.context.cancel.cancelled() => break Some(Ended::Cancelled),
            }
        };
        let status = match stopped {
            None => match tokio::time::timeout_at(deadline, child.wait()).await {
                Ok(status) => Ok(status.map_err(|error| unavailable("run the Terraform CLI", error))?),
                Err(_) => Err(Ended::TimedOut),
            },
            Some(stop) => Err(stop),
        };
        let ended = match status {
            Ok(status) => Ended::Exited(status.code()),
            Err(stop) => {
                stop_group(group).await;
                match self.state.release_taken().await {
                    Ok(0) => {}
                    Ok(_) => output.push_str("[aurora] the stopped run's state lock was released\n"),
                    Err(error) => tracing::warn!(%error, "could not release a stopped run's state lock"),
                }
                let why = match stop {
                    Ended::Cancelled => "was stopped: the turn was cancelled".to_owned(),
                    _ => format!("ran past {} s and was stopped", limit.as_secs()),
                };
                let note = format!("[aurora] `{}` {why}\n", args[0]);
                output.push_str(&note);
                pending.push_str(&note);
                stop
            }
        };
        if streamed && !pending.is_empty() {
            self.context.output.send(&pending);
        }
        Ok(Ran { ended, stdout })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_would_leave_the_workspace_is_refused() {
        for name in ["../main.tf", "/etc/main.tf", "a/b.tf", ".hidden.tf", "main.sh", ".tf", "main.tf\n", "", "backend_override.tf", "override.tf.json"] {
            assert!(file_name(name).is_err(), "{name:?}");
        }
        for name in ["main.tf", "vars.tfvars", "network.tf.json", "a-b_c.tf"] {
            assert!(file_name(name).is_ok(), "{name:?}");
        }
    }

    #[test]
    fn a_plan_is_summarised_by_kind_of_change() {
        let plan = json!({ "resource_changes": [
            { "address": "terraform_data.a", "change": { "actions": ["create"] } },
            { "address": "terraform_data.b", "change": { "actions": ["delete", "create"] } },
            { "address": "terraform_data.c", "change": { "actions": ["no-op"] } },
            { "address": "terraform_data.d", "change": { "actions": ["delete"] } },
        ]});
        assert_eq!(
            json!(summary(&plan)),
            json!({ "create": ["terraform_data.a"], "change": [], "replace": ["terraform_data.b"], "destroy": ["terraform_data.d"] })
        );
    }
}
