//! Read-only GitHub tools, run with the organisation's GitHub connection: recent commits and
//! deployments of a repository, a commit's diff, and code search.

use async_trait::async_trait;
use aurora_adapters::clouds::github::GitHub;
use aurora_events::connection::Provider;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::{argument, listing, Registry, Tool, ToolContext, ToolError};

/// Registers the GitHub tools.
pub fn register(tools: &mut Registry) {
    tools.add(RecentCommits);
    tools.add(RecentDeployments);
    tools.add(CommitDiff);
    tools.add(SearchCode);
}

async fn client(context: &ToolContext, connection: Option<&str>) -> Result<GitHub, ToolError> {
    let (_, secret) = context.credentials(Provider::Github, connection).await?;
    Ok(GitHub::new(&context.providers, &secret)?)
}

/// `owner/name`, each part of GitHub's allowed characters.
fn repository(text: &str) -> Result<&str, ToolError> {
    let text = argument("repository", text, 200)?;
    let valid_part = |part: &str| !part.is_empty() && part.chars().all(|character| character.is_ascii_alphanumeric() || matches!(character, '-' | '_' | '.'));
    match text.split_once('/') {
        Some((owner, name)) if valid_part(owner) && valid_part(name) && name != ".." => Ok(text),
        _ => Err(ToolError::Refused("`repository` must be owner/name".into())),
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitsArgs {
    /// The repository, owner/name.
    pub repository: String,
    /// Only commits after this time (RFC 3339).
    #[serde(default)]
    pub since: Option<String>,
    /// Only commits before this time (RFC 3339).
    #[serde(default)]
    pub until: Option<String>,
    /// At most this many (1 to 100, default 20).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Which GitHub connection, when the organisation has several (its name).
    #[serde(default)]
    pub connection: Option<String>,
}

fn time(field: &str, value: Option<&str>) -> Result<Option<String>, ToolError> {
    value
        .map(|text| {
            chrono::DateTime::parse_from_rfc3339(text.trim())
                .map(|time| time.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .map_err(|error| ToolError::Refused(format!("`{field}` is not an RFC 3339 time: {error}")))
        })
        .transpose()
}

pub struct RecentCommits;

#[async_trait]
impl Tool for RecentCommits {
    type Args = CommitsArgs;
    const NAME: &'static str = "github_commits";
    const DESCRIPTION: &'static str = "List recent commits of a GitHub repository (sha, author, date, message), optionally in a time window.";
    const PROVIDER: Option<Provider> = Some(Provider::Github);

    async fn run(&self, context: &ToolContext, args: CommitsArgs) -> Result<Value, ToolError> {
        let repository = repository(&args.repository)?;
        let (since, until) = (time("since", args.since.as_deref())?, time("until", args.until.as_deref())?);
        let limit = args.limit.unwrap_or(20).clamp(1, 100);
        let commits = client(context, args.connection.as_deref()).await?.commits(repository, since.as_deref(), until.as_deref(), limit).await?;
        Ok(listing(commits, limit, "since, until"))
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentsArgs {
    /// The repository, owner/name.
    pub repository: String,
    /// Only deployments to this environment, e.g. production.
    #[serde(default)]
    pub environment: Option<String>,
    /// At most this many (1 to 100, default 20).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Which GitHub connection, when the organisation has several (its name).
    #[serde(default)]
    pub connection: Option<String>,
}

pub struct RecentDeployments;

#[async_trait]
impl Tool for RecentDeployments {
    type Args = DeploymentsArgs;
    const NAME: &'static str = "github_deployments";
    const DESCRIPTION: &'static str = "List recent deployments of a GitHub repository: sha, ref, environment, who, when.";
    const PROVIDER: Option<Provider> = Some(Provider::Github);

    async fn run(&self, context: &ToolContext, args: DeploymentsArgs) -> Result<Value, ToolError> {
        let repository = repository(&args.repository)?;
        let environment = args.environment.as_deref().map(|environment| argument("environment", environment, 100)).transpose()?;
        let limit = args.limit.unwrap_or(20).clamp(1, 100);
        let deployments = client(context, args.connection.as_deref()).await?.deployments(repository, environment, limit).await?;
        Ok(listing(deployments, limit, "environment"))
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiffArgs {
    /// The repository, owner/name.
    pub repository: String,
    /// The commit's sha (or a prefix of at least 7 characters).
    pub sha: String,
    /// Which GitHub connection, when the organisation has several (its name).
    #[serde(default)]
    pub connection: Option<String>,
}

pub struct CommitDiff;

#[async_trait]
impl Tool for CommitDiff {
    type Args = DiffArgs;
    const NAME: &'static str = "github_commit_diff";
    const DESCRIPTION: &'static str = "Show one commit of a GitHub repository: message, author, and each changed file with its patch.";
    const PROVIDER: Option<Provider> = Some(Provider::Github);
    const OUTPUT_CAP: usize = 32 * 1024;

    async fn run(&self, context: &ToolContext, args: DiffArgs) -> Result<Value, ToolError> {
        let repository = repository(&args.repository)?;
        let sha = args.sha.trim();
        if !(7..=40).contains(&sha.len()) || !sha.chars().all(|character| character.is_ascii_hexdigit()) {
            return Err(ToolError::Refused("`sha` must be 7 to 40 hexadecimal characters".into()));
        }
        Ok(client(context, args.connection.as_deref()).await?.commit_diff(repository, sha).await?)
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchArgs {
    /// GitHub code search syntax, e.g. "timeout repo:acme/checkout" or "DATABASE_URL org:acme".
    pub query: String,
    /// At most this many results (1 to 100, default 20).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Which GitHub connection, when the organisation has several (its name).
    #[serde(default)]
    pub connection: Option<String>,
}

pub struct SearchCode;

#[async_trait]
impl Tool for SearchCode {
    type Args = SearchArgs;
    const NAME: &'static str = "github_search_code";
    const DESCRIPTION: &'static str = "Search code on GitHub: repository, path and link of each match.";
    const PROVIDER: Option<Provider> = Some(Provider::Github);

    async fn run(&self, context: &ToolContext, args: SearchArgs) -> Result<Value, ToolError> {
        let query = argument("query", &args.query, 256)?;
        Ok(client(context, args.connection.as_deref()).await?.search_code(query, args.limit.unwrap_or(20).clamp(1, 100)).await?)
    }
}
