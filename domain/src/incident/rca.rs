//! Reading the root-cause analysis an investigation's model wrote. The model answers with one
//! JSON object (the shape of [`Rca`]); it is refused, with every reason, when it claims a cause
//! without evidence, cites evidence that does not exist, or points evidence at a tool call the
//! investigation never made (or whose output was not kept). Texts are cut to their limits.

use std::collections::{BTreeSet, HashMap};

use aurora_events::incident::{Confidence, Rca};

use super::sources::{clip_line, clip_text};

pub const MAX_SUMMARY_CHARS: usize = 2_000;
pub const MAX_TEXT_CHARS: usize = 4_000;
pub const MAX_ITEMS: usize = 50;
/// Largest RCA kept, as JSON: it travels in one event.
pub const MAX_RCA_BYTES: usize = 128 * 1024;

/// A tool call the investigation made whose whole output is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownToolCall {
    pub tool_call_id: String,
    pub tool: String,
}

/// The JSON object in `answer` (bare, or in a Markdown code fence, or amid prose).
fn json_object(answer: &str) -> Option<&str> {
    let start = answer.find('{')?;
    let end = answer.rfind('}')?;
    (end > start).then(|| &answer[start..=end])
}

/// The `[n]` (and `[n, m]`) citations in `text`.
pub fn citations(text: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find(']') else { break };
        let inside = &rest[..close];
        let numbers: Option<Vec<u32>> = inside.split(',').map(|part| part.trim().parse::<u32>().ok()).collect();
        if let Some(numbers) = numbers.filter(|numbers| !numbers.is_empty()) {
            found.extend(numbers);
        }
        rest = &rest[close..];
    }
    found
}

/// The validated RCA in `answer`, or every reason it was refused.
pub fn read(answer: &str, known: &[KnownToolCall]) -> Result<Rca, Vec<String>> {
    let Some(object) = json_object(answer) else {
        return Err(vec!["the answer holds no JSON object; answer with the RCA as one JSON object".into()]);
    };
    let mut rca: Rca = serde_json::from_str(object).map_err(|error| vec![format!("the RCA does not have the required shape: {error}")])?;
    let mut problems = Vec::new();
    let tools: HashMap<&str, &str> = known.iter().map(|call| (call.tool_call_id.as_str(), call.tool.as_str())).collect();

    rca.summary = clip_text(&rca.summary, MAX_SUMMARY_CHARS);
    if rca.summary.is_empty() {
        problems.push("`summary` must say what happened".into());
    }
    rca.impact = clip_text(&rca.impact, MAX_TEXT_CHARS);
    if rca.evidence.len() > MAX_ITEMS {
        problems.push(format!("at most {MAX_ITEMS} evidence items"));
    }
    let mut ids = BTreeSet::new();
    for evidence in &mut rca.evidence {
        if evidence.id == 0 || !ids.insert(evidence.id) {
            problems.push(format!("evidence ids must be distinct numbers from 1; {} is not", evidence.id));
        }
        match tools.get(evidence.tool_call_id.as_str()) {
            Some(tool) => evidence.tool = (*tool).to_owned(),
            None => problems.push(format!(
                "evidence [{}] cites tool call `{}`, which this investigation did not make or which gave no result",
                evidence.id,
                clip_line(&evidence.tool_call_id, 80)
            )),
        }
        evidence.finding = clip_text(&evidence.finding, MAX_TEXT_CHARS);
        if evidence.finding.is_empty() {
            problems.push(format!("evidence [{}] must say what the tool output shows", evidence.id));
        }
    }
    let cause = &mut rca.root_cause;
    cause.statement =
        cause.statement.as_deref().map(|statement| clip_text(statement, MAX_TEXT_CHARS)).filter(|statement| !statement.is_empty());
    let mut cited: Vec<u32> = cause.evidence.clone();
    if let Some(statement) = &cause.statement {
        cited.extend(citations(statement));
    }
    match cause.confidence {
        Confidence::Confirmed | Confidence::Likely => {
            if cause.statement.is_none() {
                problems.push("a confirmed or likely root cause must state the cause".into());
            }
            if cited.is_empty() {
                problems.push(
                    "a confirmed or likely root cause must cite the evidence that supports it; without evidence the confidence is inconclusive"
                        .into(),
                );
            }
            for id in &cited {
                if !ids.contains(id) {
                    problems.push(format!("the root cause cites [{id}], which is no evidence item"));
                }
            }
            let mut supported: Vec<u32> =
                cause.evidence.iter().copied().chain(cited.iter().copied()).filter(|id| ids.contains(id)).collect();
            supported.sort_unstable();
            supported.dedup();
            cause.evidence = supported;
        }
        Confidence::Inconclusive => cause.evidence.retain(|id| ids.contains(id)),
    }
    rca.timeline.truncate(MAX_ITEMS);
    rca.ruled_out.truncate(MAX_ITEMS);
    rca.not_checked.truncate(MAX_ITEMS);
    rca.next_steps.truncate(MAX_ITEMS);
    for entry in &mut rca.timeline {
        entry.event = clip_text(&entry.event, MAX_TEXT_CHARS);
        entry.at = entry.at.as_deref().map(|at| clip_line(at, 64)).filter(|at| !at.is_empty());
    }
    for item in &mut rca.ruled_out {
        item.hypothesis = clip_text(&item.hypothesis, MAX_TEXT_CHARS);
        item.reason = clip_text(&item.reason, MAX_TEXT_CHARS);
    }
    for item in &mut rca.not_checked {
        item.what = clip_text(&item.what, MAX_TEXT_CHARS);
        item.reason = clip_text(&item.reason, MAX_TEXT_CHARS);
    }
    for (index, step) in rca.next_steps.iter_mut().enumerate() {
        step.action = clip_text(&step.action, MAX_TEXT_CHARS);
        step.undo = clip_text(&step.undo, MAX_TEXT_CHARS);
        if step.action.is_empty() || step.undo.is_empty() {
            problems.push(format!("next step {} must say what to do and how to undo it", index + 1));
        }
    }
    // Every [n] anywhere must resolve.
    let texts = std::iter::once(rca.summary.as_str())
        .chain(std::iter::once(rca.impact.as_str()))
        .chain(rca.timeline.iter().map(|entry| entry.event.as_str()))
        .chain(rca.ruled_out.iter().map(|item| item.reason.as_str()))
        .chain(rca.next_steps.iter().map(|step| step.action.as_str()));
    let dangling: BTreeSet<u32> = texts.flat_map(citations).filter(|id| !ids.contains(id)).collect();
    for id in dangling {
        problems.push(format!("[{id}] is cited but there is no evidence item {id}"));
    }
    let bytes = serde_json::to_vec(&rca).map(|json| json.len()).unwrap_or(usize::MAX);
    if bytes > MAX_RCA_BYTES {
        problems.push(format!("the RCA is {bytes} bytes of JSON; keep it under {MAX_RCA_BYTES}"));
    }
    if problems.is_empty() {
        Ok(rca)
    } else {
        Err(problems)
    }
}

/// What the model is told the RCA must look like.
pub const FORMAT: &str = r#"{
  "summary": "what happened, in a few sentences, with [n] citations",
  "root_cause": {"confidence": "confirmed | likely | inconclusive", "statement": "the cause, with [n] citations (omit when inconclusive)", "evidence": [1]},
  "evidence": [{"id": 1, "tool_call_id": "the id of the tool call whose output shows it", "finding": "what that output shows"}],
  "impact": "who and what was affected",
  "timeline": [{"at": "RFC 3339 time if known", "event": "what happened then"}],
  "ruled_out": [{"hypothesis": "a cause considered", "reason": "why the evidence rules it out"}],
  "not_checked": [{"what": "what could not be checked", "reason": "why (for example: no connection for that provider)"}],
  "next_steps": [{"action": "what to do", "risk": "low | medium | high", "undo": "how to undo it"}]
}"#;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn known() -> Vec<KnownToolCall> {
        vec![KnownToolCall { tool_call_id: "call_1".into(), tool: "aws_cloudwatch_logs".into() }]
    }

    fn rca(confidence: &str, statement: Option<&str>, cause_evidence: Vec<u32>, evidence: serde_json::Value) -> String {
        json!({
            "summary": "Checkout failed for 20 minutes [1].",
            "root_cause": {"confidence": confidence, "statement": statement, "evidence": cause_evidence},
            "evidence": evidence, "impact": "checkout", "timeline": [], "ruled_out": [], "not_checked": [],
            "next_steps": [{"action": "roll back", "risk": "low", "undo": "redeploy v2"}]
        })
        .to_string()
    }

    #[test]
    fn a_cited_cause_is_accepted_and_its_tool_named() {
        let evidence = json!([{"id": 1, "tool_call_id": "call_1", "finding": "OOM kills at 10:02"}]);
        let answer = format!("Here it is:\n```json\n{}\n```", rca("confirmed", Some("memory leak [1]"), vec![], evidence));
        let read = read(&answer, &known()).unwrap();
        assert_eq!(read.evidence[0].tool, "aws_cloudwatch_logs");
        assert_eq!(read.root_cause.evidence, vec![1]);
    }

    #[test]
    fn a_cause_without_evidence_is_refused() {
        let refused = read(&rca("likely", Some("a bad deploy"), vec![], json!([])), &known()).unwrap_err();
        assert!(refused.iter().any(|problem| problem.contains("must cite the evidence")), "{refused:?}");
        assert!(refused.iter().any(|problem| problem.contains("[1] is cited")), "{refused:?}");
    }

    #[test]
    fn evidence_must_point_at_a_real_tool_call() {
        let evidence = json!([{"id": 1, "tool_call_id": "call_made_up", "finding": "x"}]);
        let refused = read(&rca("confirmed", Some("x [1]"), vec![1], evidence), &known()).unwrap_err();
        assert!(refused.iter().any(|problem| problem.contains("did not make")), "{refused:?}");
    }

    #[test]
    fn inconclusive_needs_no_cause() {
        let evidence = json!([{"id": 1, "tool_call_id": "call_1", "finding": "nothing unusual"}]);
        let read = read(&rca("inconclusive", None, vec![], evidence), &known()).unwrap();
        assert_eq!(read.root_cause.confidence, Confidence::Inconclusive);
        assert!(super::read("no json here", &known()).is_err());
    }

    #[test]
    fn citations_are_found_in_their_forms() {
        assert_eq!(citations("a [1] b [2, 3] c [x] [4]"), vec![1, 2, 3, 4]);
    }
}
