//! Tools over the organisation's knowledge: its runbooks and postmortems, its past
//! conversations and its past investigations' root-cause analyses, all searched by meaning and by
//! words (hybrid search).

use async_trait::async_trait;
use aurora_adapters::vectors::search::{SearchError, SearchHit, SearchMode};
use aurora_adapters::vectors::SourceKind;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Registry, Tool, ToolContext, ToolError};

pub const KNOWLEDGE_BASE_SEARCH: &str = "knowledge_base_search";
pub const PAST_CONVERSATIONS_SEARCH: &str = "past_conversations_search";
pub const PAST_INVESTIGATIONS_SEARCH: &str = "past_investigations_search";

/// Registers the knowledge tools.
pub fn register(tools: &mut Registry) {
    tools.add(KnowledgeBaseSearch);
    tools.add(PastConversationsSearch);
    tools.add(PastInvestigationsSearch);
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchArgs {
    /// What to look for, in words (1 to 1000 characters).
    pub query: String,
    /// At most this many results, 1 to 20 (default 5).
    #[serde(default)]
    pub limit: Option<usize>,
}

impl From<SearchError> for ToolError {
    fn from(error: SearchError) -> Self {
        match error {
            SearchError::InvalidQuery(reason) => ToolError::Refused(reason),
            other => ToolError::Unavailable(other.to_string()),
        }
    }
}

async fn search(context: &ToolContext, args: SearchArgs, kind: SourceKind) -> Result<Vec<SearchHit>, ToolError> {
    let limit = args.limit.unwrap_or(5).clamp(1, 20);
    Ok(context.knowledge.search(context.org_id.0, &args.query, &[kind], limit, SearchMode::Hybrid).await?)
}

/// Searches the runbooks and postmortems the organisation uploaded.
pub struct KnowledgeBaseSearch;

#[async_trait]
impl Tool for KnowledgeBaseSearch {
    type Args = SearchArgs;
    const NAME: &'static str = KNOWLEDGE_BASE_SEARCH;
    const DESCRIPTION: &'static str = "Search the organisation's runbooks, postmortems and other uploaded documents. Returns the \
         passages that best answer the query, each with its document, heading path and page: cite them as [document, page].";

    async fn run(&self, context: &ToolContext, args: SearchArgs) -> Result<Value, ToolError> {
        let hits = search(context, args, SourceKind::Document).await?;
        if hits.is_empty() {
            return Ok(json!({ "results": [], "note": "no document matches; the organisation may have uploaded none on this subject" }));
        }
        let results: Vec<Value> = hits
            .into_iter()
            .map(|hit| {
                let citation = match hit.page {
                    Some(page) => format!("{}, page {page}", hit.title),
                    None => hit.title.clone(),
                };
                json!({
                    "document": hit.title, "document_id": hit.source_id, "version": hit.version, "page": hit.page,
                    "heading_path": hit.heading_path, "citation": citation, "score": hit.score, "text": hit.content,
                })
            })
            .collect();
        Ok(json!({ "results": results }))
    }
}

/// Searches the organisation's earlier chat conversations.
pub struct PastConversationsSearch;

#[async_trait]
impl Tool for PastConversationsSearch {
    type Args = SearchArgs;
    const NAME: &'static str = PAST_CONVERSATIONS_SEARCH;
    const DESCRIPTION: &'static str = "Search the organisation's earlier chat conversations (each a question and Aurora's answer) for \
         how a similar question was handled before. Returns the turns that match best, with their session.";

    async fn run(&self, context: &ToolContext, args: SearchArgs) -> Result<Value, ToolError> {
        let hits = search(context, args, SourceKind::Conversation).await?;
        let results: Vec<Value> = hits
            .into_iter()
            .map(|hit| json!({ "session": hit.title, "session_id": hit.source_id, "score": hit.score, "text": hit.content }))
            .collect();
        Ok(json!({ "results": results }))
    }
}

/// Searches the root-cause analyses of the organisation's earlier incidents.
pub struct PastInvestigationsSearch;

#[async_trait]
impl Tool for PastInvestigationsSearch {
    type Args = SearchArgs;
    const NAME: &'static str = PAST_INVESTIGATIONS_SEARCH;
    const DESCRIPTION: &'static str = "Search the root-cause analyses of the organisation's earlier incidents for similar alerts: \
         what was found then, how sure it was, and what was done. Returns the best matches with their incident.";

    async fn run(&self, context: &ToolContext, args: SearchArgs) -> Result<Value, ToolError> {
        let hits = search(context, args, SourceKind::Investigation).await?;
        let results: Vec<Value> = hits
            .into_iter()
            .map(|hit| json!({ "incident": hit.title, "incident_id": hit.source_id, "score": hit.score, "text": hit.content }))
            .collect();
        Ok(json!({ "results": results }))
    }
}
