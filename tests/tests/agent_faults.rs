//! The agent processor killed in the middle of a turn: the turn's state is its events, so a new
//! processor finishes it; no read-only tool runs more than needed and no destructive tool runs
//! twice. Two cases kill the real `aurora processors` binary at a chosen moment; two start one on
//! exactly the events such a crash leaves behind.

use std::time::Duration;

use aurora_commands::postgres::PostgresEventStore;
use aurora_commands::{AppendRequest, EventStore, ExpectedVersion, NewEvent};
use aurora_events::chat::{
    ChatMode, ChatSessionEvent, ConfirmationGranted, ConfirmationRequested, LlmCallCompleted, MessageSubmitted, ModelToolCall,
    SessionCreated, ToolCallRequested, ToolCallStarted, TurnStarted,
};
use aurora_events::{Actor, OrgId, StreamId};
use aurora_testkit::scripted_llm::{ScriptedLlm, Step};
use aurora_tests::chat::ChatSocket;
use aurora_tests::{eventually, spawn_aurora_role, App, Caller, Roles, TestEnv};
use serde_json::json;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);
/// The gateway and the projections in the test; the processors (relay and agent) as a binary.
const WITHOUT_PROCESSORS: Roles = Roles { gateway: true, processors: false, projections: true };

async fn setup() -> (TestEnv, App, ScriptedLlm) {
    let llm = ScriptedLlm::start().await;
    let mut env = TestEnv::new().await;
    env.config.llm.base_url = llm.base_url.clone();
    let app = App::spawn(&env, WITHOUT_PROCESSORS).await;
    (env, app, llm)
}

fn processors(env: &TestEnv, llm: &ScriptedLlm) -> tokio::process::Child {
    spawn_aurora_role(env, &["processors"], &[("AURORA_LLM_BASE_URL", &llm.base_url), ("AURORA_LLM_MODEL", "scripted-model")])
}

async fn kill(mut child: tokio::process::Child) {
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

async fn count_events(env: &TestEnv, session_id: &str, event_type: &str) -> i64 {
    env.count(&format!("SELECT count(*) FROM events WHERE stream = 'chat-{session_id}' AND event_type = '{event_type}'")).await
}

async fn wait_for_event(env: &TestEnv, session_id: &str, event_type: &str) {
    eventually(event_type, WAIT, || async { (count_events(env, session_id, event_type).await > 0).then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_killed_while_the_answer_streams_is_replaced_and_the_turn_completes() {
    let (env, app, llm) = setup().await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let story = "word ".repeat(150);
    llm.script("tell a long story", vec![Step::slow_text(&story, Duration::from_millis(10))]);
    let first = processors(&env, &llm);
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    let accepted = socket.request(json!({ "type": "query", "text": "tell a long story", "mode": "ask" })).await;
    let session_id = accepted["session_id"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        socket.event("delta").await;
    }
    kill(first).await;
    assert_eq!(count_events(&env, &session_id, "chat.assistant_message_completed").await, 0, "killed mid-stream");

    let _second = processors(&env, &llm);
    let answer = socket.event("chat.assistant_message_completed").await;
    assert_eq!(answer["payload"]["text"], story);
    assert_eq!(count_events(&env, &session_id, "chat.turn_started").await, 1);
    assert_eq!(count_events(&env, &session_id, "llm.call_completed").await, 1);
    assert_eq!(count_events(&env, &session_id, "chat.assistant_message_completed").await, 1);
    assert_eq!(llm.requests_for("tell a long story").len(), 2, "the unrecorded call was made again");
    // The restarted call streamed from its start again.
    let restarts = socket.frames.iter().filter(|frame| frame["type"] == "delta" && frame["seq"] == 0).count();
    assert_eq!(restarts, 2);
    socket.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_killed_while_a_confirmation_waits_runs_the_tool_once_after_the_yes() {
    let (env, app, llm) = setup().await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let target = ana.create_session_id(&app, "to archive").await;
    llm.script(
        "archive that session",
        vec![Step::tool("call_archive", "archive_chat_session", json!({ "session_id": target })), Step::text("Done.")],
    );
    let first = processors(&env, &llm);
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    let accepted = socket.request(json!({ "type": "query", "text": "archive that session", "mode": "agent" })).await;
    let session_id = accepted["session_id"].as_str().unwrap().to_owned();
    let requested = socket.event("confirmation.requested").await;
    kill(first).await;

    // The yes arrives while no processor runs; it waits in the log.
    let answered = socket
        .request(json!({ "type": "confirm", "session_id": session_id, "confirmation_id": requested["payload"]["confirmation_id"], "approve": true }))
        .await;
    assert_eq!(answered["type"], "confirmation_answered");
    let _second = processors(&env, &llm);
    socket.event("chat.assistant_message_completed").await;
    assert_eq!(count_events(&env, &session_id, "tool_call.started").await, 1);
    assert_eq!(count_events(&env, &session_id, "tool_call.completed").await, 1);
    assert_eq!(count_events(&env, &target, "chat.session_archived").await, 1, "archived once");
    socket.close().await;
    app.stop().await;
}

/// Appends `events` to a new chat session of `org` as the crash left them, then returns its id.
async fn session_left_by_a_crash(env: &TestEnv, org: Uuid, user: Uuid, events: Vec<ChatSessionEvent>) -> String {
    let store = PostgresEventStore::new(env.pool.clone());
    let session_id = Uuid::now_v7();
    let mut all =
        vec![ChatSessionEvent::Created(SessionCreated { session_id, title: "crashed".into(), owner: Actor::user(user), context: None })];
    all.extend(events);
    store
        .append(AppendRequest {
            stream: StreamId::new("chat", session_id.to_string()).unwrap(),
            expected: ExpectedVersion::NoStream,
            command_id: None,
            org_id: OrgId(org),
            actor: Actor::processor("agent"),
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            traceparent: None,
            occurred_at: chrono::Utc::now(),
            events: all.iter().map(NewEvent::from_payload).collect(),
        })
        .await
        .unwrap();
    session_id.to_string()
}

fn turn_with_a_tool_call(turn_id: Uuid, user: Uuid, question: &str, call: &ToolCallRequested, mode: ChatMode) -> Vec<ChatSessionEvent> {
    vec![
        ChatSessionEvent::MessageSubmitted(MessageSubmitted {
            turn_id,
            text: question.into(),
            mode,
            submitted_by: Actor::user(user),
            limits: None,
        }),
        ChatSessionEvent::TurnStarted(TurnStarted {
            turn_id,
            started_at: chrono::Utc::now(),
            model: "scripted-model".into(),
            tools: vec![],
        }),
        ChatSessionEvent::LlmCallCompleted(LlmCallCompleted {
            turn_id,
            call_index: 1,
            model: "scripted-model".into(),
            prompt_tokens: 10,
            completion_tokens: 10,
            latency_ms: 5,
            first_token_ms: Some(1),
            text: String::new(),
            tool_calls: vec![ModelToolCall {
                tool_call_id: call.tool_call_id.clone(),
                name: call.name.clone(),
                arguments: call.arguments.to_string(),
            }],
            finish_reason: Some("tool_calls".into()),
        }),
        ChatSessionEvent::ToolCallRequested(call.clone()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_left_after_a_tool_call_was_requested_runs_that_tool_once_and_completes() {
    let (env, app, llm) = setup().await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let turn_id = Uuid::now_v7();
    let call = ToolCallRequested {
        turn_id,
        tool_call_id: "call_list".into(),
        name: "list_chat_sessions".into(),
        arguments: json!({}),
        destructive: false,
    };
    llm.script("what sessions exist?", vec![Step::tool("call_list", "list_chat_sessions", json!({})), Step::text("Just this one.")]);
    let session_id = session_left_by_a_crash(
        &env,
        ana.org,
        ana.user_id,
        turn_with_a_tool_call(turn_id, ana.user_id, "what sessions exist?", &call, ChatMode::Ask),
    )
    .await;
    let _processors = processors(&env, &llm);
    wait_for_event(&env, &session_id, "chat.assistant_message_completed").await;
    assert_eq!(count_events(&env, &session_id, "tool_call.completed").await, 1);
    assert_eq!(count_events(&env, &session_id, "llm.call_completed").await, 2, "the recorded call was not made again");
    let requests = llm.requests_for("what sessions exist?");
    assert_eq!(requests.len(), 1, "only the call after the tool result");
    assert!(requests[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|message| message["role"] == "tool" && message["tool_call_id"] == "call_list"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destructive_tool_started_before_a_crash_is_never_run_again() {
    let (env, app, llm) = setup().await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let target = ana.create_session_id(&app, "maybe archived").await;
    let (turn_id, confirmation_id) = (Uuid::now_v7(), Uuid::now_v7());
    let call = ToolCallRequested {
        turn_id,
        tool_call_id: "call_archive".into(),
        name: "archive_chat_session".into(),
        arguments: json!({ "session_id": target }),
        destructive: true,
    };
    let mut events = turn_with_a_tool_call(turn_id, ana.user_id, "archive it now", &call, ChatMode::Agent);
    events.push(ChatSessionEvent::ConfirmationRequested(ConfirmationRequested {
        turn_id,
        confirmation_id,
        tool_call_id: "call_archive".into(),
        tool: "archive_chat_session".into(),
        arguments: call.arguments.clone(),
        expires_at: chrono::Utc::now() + chrono::Duration::minutes(5),
        preview: None,
    }));
    events.push(ChatSessionEvent::ConfirmationGranted(ConfirmationGranted { confirmation_id, answered_by: None }));
    // The processor recorded that the tool started, then died before its outcome.
    events.push(ChatSessionEvent::ToolCallStarted(ToolCallStarted { turn_id, tool_call_id: "call_archive".into() }));
    llm.script(
        "archive it now",
        vec![Step::tool("call_archive", "archive_chat_session", json!({})), Step::text("I could not tell whether it worked.")],
    );
    let session_id = session_left_by_a_crash(&env, ana.org, ana.user_id, events).await;
    let _processors = processors(&env, &llm);
    wait_for_event(&env, &session_id, "chat.assistant_message_completed").await;
    let error: String = sqlx::query_scalar(&format!(
        "SELECT payload->>'error' FROM events WHERE stream = 'chat-{session_id}' AND event_type = 'tool_call.failed'"
    ))
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(error.contains("unknown"), "{error}");
    assert_eq!(count_events(&env, &target, "chat.session_archived").await, 0, "not run again");
    assert_eq!(count_events(&env, &session_id, "tool_call.started").await, 1);
    app.stop().await;
}
