//! Infrastructure as code from the chat: the agent writes Terraform into a workspace of its chat
//! session (kept in the object store under `{org}/iac/{session}/`), reads it back, and plans it
//! with the real CLI (OpenTofu's `tofu` by default) in a scratch directory of its own.
//!
//! A workspace is flat: its files are `.tf`, `.tf.json` or `.tfvars` files named by one path
//! segment, so no name can climb out of it (no `/`, no `..`, no absolute path) and no file is a
//! link: every file the CLI sees was written here, from bytes the store held.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use aurora_adapters::objects::{ObjectError, ObjectKey};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Effect, Registry, Tool, ToolContext, ToolError};

/// Registers the deploy tools.
pub fn register(tools: &mut Registry) {
    tools.add(IacWrite);
    tools.add(IacRead);
    tools.add(IacPlan);
}

/// The object-store area of workspaces.
const AREA: &str = "iac";
/// Bytes of a run's output the model is shown (its tail); the whole is kept in the store.
const OUTPUT_SHOWN: usize = 6 * 1024;

fn workspace_file(context: &ToolContext, name: &str) -> ObjectKey {
    ObjectKey::scoped(context.org_id.0, AREA, context.session_id, &["files", name])
}

fn store_error(error: ObjectError) -> ToolError {
    ToolError::Unavailable(error.to_string())
}

/// A workspace file's name: one segment of letters, digits, `_`, `-` and `.`, ending in `.tf`,
/// `.tf.json` or `.tfvars`.
fn file_name(name: &str) -> Result<&str, ToolError> {
    let fits = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && [".tf", ".tf.json", ".tfvars"].iter().any(|suffix| name.len() > suffix.len() && name.ends_with(suffix));
    if fits {
        Ok(name)
    } else {
        Err(ToolError::Refused(format!(
            "`{}` is not a workspace file name: use one name (no folders, no `/` or `..`) of letters, digits, `_`, `-` and `.`, \
             ending in .tf, .tf.json or .tfvars, at most 100 characters",
            name.chars().take(120).collect::<String>().escape_debug()
        )))
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// The names of the workspace's files.
async fn workspace_names(context: &ToolContext) -> Result<Vec<String>, ToolError> {
    let prefix = ObjectKey::scoped(context.org_id.0, AREA, context.session_id, &["files"]);
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
    /// Plan the destruction of everything the workspace manages instead.
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
         Returns what would be created, changed, replaced and destroyed, and any diagnostics. Changes nothing.";
    /// `init` and `plan` have their own limits (the deploy configuration); this bounds both.
    const TIMEOUT: Duration = Duration::from_secs(3 * 3600);

    async fn run(&self, context: &ToolContext, args: PlanArgs) -> Result<Value, ToolError> {
        let files = workspace(context).await?;
        if files.is_empty() {
            return Err(ToolError::Refused("the workspace has no files; write them with iac_write first".into()));
        }
        let scratch = Scratch::new()?;
        let manifest: Vec<Value> = files.iter().map(|(name, bytes)| json!({ "path": name, "sha256": sha256(bytes) })).collect();
        for (name, bytes) in &files {
            tokio::fs::write(scratch.path().join(name), bytes).await.map_err(|error| unavailable("write the workspace", error))?;
        }
        let cli = Cli { context, dir: scratch.path() };
        let mut output = String::new();
        let init = cli.run(&["init", "-input=false", "-no-color"], context.deploy.init_timeout, &mut output).await?;
        let plan_id = Uuid::now_v7();
        let keep = |name: &str| ObjectKey::scoped(context.org_id.0, AREA, context.session_id, &["plans", &plan_id.to_string(), name]);
        let mut answer = json!({ "workspace": context.session_id, "files": manifest });
        if !init.success {
            answer["result"] = json!("init_failed");
            answer["diagnostics"] = json!(tail(&output, OUTPUT_SHOWN));
            return Ok(answer);
        }
        let validate = cli.run(&["validate", "-json", "-no-color"], context.deploy.run_timeout, &mut String::new()).await?;
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
        let unformatted = cli.run(&["fmt", "-check", "-list=true", "-no-color"], context.deploy.run_timeout, &mut String::new()).await?;
        answer["unformatted_files"] = json!(unformatted.stdout.lines().filter(|line| !line.trim().is_empty()).collect::<Vec<_>>());
        answer["diagnostics"] = json!(diagnostics);
        if !validate.success {
            answer["result"] = json!("invalid");
            return Ok(answer);
        }
        let mut plan = vec!["plan", "-input=false", "-no-color", "-out=aurora.tfplan", "-detailed-exitcode"];
        if args.destroy {
            plan.push("-destroy");
        }
        let planned = cli.run(&plan, context.deploy.run_timeout, &mut output).await?;
        // -detailed-exitcode: 0 no changes, 2 changes, 1 an error.
        if planned.code != Some(0) && planned.code != Some(2) {
            answer["result"] = json!("plan_failed");
            answer["output"] = json!(tail(&output, OUTPUT_SHOWN));
            return Ok(answer);
        }
        let shown = cli.run(&["show", "-json", "-no-color", "aurora.tfplan"], context.deploy.run_timeout, &mut String::new()).await?;
        let summary = summary(&serde_json::from_str(&shown.stdout).unwrap_or(Value::Null));
        let plan_file = tokio::fs::read(scratch.path().join("aurora.tfplan")).await.map_err(|error| unavailable("read the plan", error))?;
        context.objects.put(&keep("plan.tfplan"), plan_file.into()).await.map_err(store_error)?;
        context.objects.put(&keep("output.txt"), output.clone().into_bytes().into()).await.map_err(store_error)?;
        context.objects.put(&keep("files.json"), answer["files"].to_string().into_bytes().into()).await.map_err(store_error)?;
        answer["result"] = json!(if planned.code == Some(2) { "changes" } else { "no_changes" });
        answer["plan_id"] = json!(plan_id);
        answer["destroy"] = json!(args.destroy);
        answer["changes"] = summary;
        answer["output"] = json!(tail(&output, OUTPUT_SHOWN));
        Ok(answer)
    }
}

/// What a saved plan would do, by kind of change, with the resources' addresses.
fn summary(plan: &Value) -> Value {
    let (mut create, mut change, mut replace, mut destroy) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for resource in plan["resource_changes"].as_array().into_iter().flatten() {
        let address = resource["address"].as_str().unwrap_or_default().to_owned();
        let actions: Vec<&str> = resource["change"]["actions"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        match actions.as_slice() {
            ["create"] => create.push(address),
            ["update"] => change.push(address),
            ["delete", "create"] | ["create", "delete"] => replace.push(address),
            ["delete"] => destroy.push(address),
            _ => {}
        }
    }
    json!({ "create": create, "change": change, "replace": replace, "destroy": destroy })
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

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The CLI run in one scratch directory, with an environment of its own: nothing of the
/// processor's (its database, vault or object-store credentials) reaches it.
struct Cli<'a> {
    context: &'a ToolContext,
    dir: &'a Path,
}

struct Ran {
    success: bool,
    code: Option<i32>,
    stdout: String,
}

impl Cli<'_> {
    /// Runs the CLI with `args`, killed after `limit`; its output (both streams) is appended to `output`.
    async fn run(&self, args: &[&str], limit: Duration, output: &mut String) -> Result<Ran, ToolError> {
        let mut command = tokio::process::Command::new(&self.context.deploy.cli);
        command
            .args(args)
            .current_dir(self.dir)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.dir)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("TF_CLI_CONFIG_FILE", "/dev/null")
            .env("CHECKPOINT_DISABLE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = command.spawn().map_err(|error| {
            ToolError::Unavailable(format!("could not start the Terraform CLI `{}`: {error}", self.context.deploy.cli.display()))
        })?;
        let finished = match tokio::time::timeout(limit, child.wait_with_output()).await {
            Ok(finished) => finished.map_err(|error| unavailable("run the Terraform CLI", error))?,
            Err(_) => {
                return Err(ToolError::Unavailable(format!(
                    "`{} {}` did not finish within {} s and was stopped",
                    self.context.deploy.cli.file_name().unwrap_or_default().to_string_lossy(),
                    args.first().unwrap_or(&""),
                    limit.as_secs()
                )))
            }
        };
        let stdout = String::from_utf8_lossy(&finished.stdout).into_owned();
        output.push_str(&stdout);
        output.push_str(&String::from_utf8_lossy(&finished.stderr));
        Ok(Ran { success: finished.status.success(), code: finished.status.code(), stdout })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_would_leave_the_workspace_is_refused() {
        for name in ["../main.tf", "/etc/main.tf", "a/b.tf", ".hidden.tf", "main.sh", ".tf", "main.tf\n", ""] {
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
            summary(&plan),
            json!({ "create": ["terraform_data.a"], "change": [], "replace": ["terraform_data.b"], "destroy": ["terraform_data.d"] })
        );
    }
}
