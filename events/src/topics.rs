//! Topic names. One topic per stream category; a deployment-wide prefix lets several Aurora
//! installations (or test runs) share one broker without seeing each other's records.

/// The topic that carries a stream category's events, e.g. `aurora.chat`.
pub fn topic_for_category(prefix: &str, category: &str) -> String {
    format!("{prefix}aurora.{category}")
}

/// Poison records land here with the error that stopped them.
pub fn dead_letter_topic(prefix: &str) -> String {
    format!("{prefix}aurora.deadletter")
}

/// Every event topic of this build, for consumers that subscribe to all of them.
pub fn all_event_topics(prefix: &str) -> Vec<String> {
    let mut categories: Vec<&str> = crate::catalog::all_event_types().iter().map(|info| info.category).collect();
    categories.sort_unstable();
    categories.dedup();
    categories.into_iter().map(|category| topic_for_category(prefix, category)).collect()
}

/// LLM token deltas on their way to the browser: short retention, not event-sourced (the
/// completed message is an event). Key: the chat session id. Value: a [`crate::chat::TokenDelta`], or a
/// [`crate::chat::ToolOutputDelta`] when the record's `aurora_delta` header says `tool_output`.
pub fn deltas_topic(prefix: &str) -> String {
    format!("{prefix}aurora.chat.deltas")
}
