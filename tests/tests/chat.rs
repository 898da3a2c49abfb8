//! Chatting with the agent end to end: real WebSocket clients through the gateway, the agent
//! processor on the chat topic, projections, and a scripted OpenAI-compatible model read by the
//! real `async-openai` client.

use std::time::Duration;

use aurora_adapters::kafka::header_str;
use aurora_testkit::scripted_llm::{ScriptedLlm, Step};
use aurora_tests::chat::ChatSocket;
use aurora_tests::{eventually, http, metric, App, Caller, Roles, TestEnv};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

async fn chat_app(configure: impl FnOnce(&mut TestEnv)) -> (TestEnv, App, ScriptedLlm) {
    let llm = ScriptedLlm::start().await;
    let mut env = TestEnv::new().await;
    env.config.llm.base_url = llm.base_url.clone();
    env.config.llm.model = "scripted-model".into();
    env.config.llm.timeout = Duration::from_secs(5);
    configure(&mut env);
    let app = App::spawn(&env, Roles::ALL).await;
    (env, app, llm)
}

async fn event_types(env: &TestEnv, session_id: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT event_type FROM events WHERE stream = $1 ORDER BY stream_version")
        .bind(format!("chat-{session_id}"))
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_streams_in_and_the_turn_is_recorded() {
    let (env, app, llm) = chat_app(|_| {}).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    llm.script(
        "why is checkout slow?",
        // Paced like a model: the whole answer takes most of a second, longer than a loaded
        // broker takes to hand the gateway what it holds.
        vec![Step::slow_text("The database pool is exhausted since the deploy.", Duration::from_millis(100))],
    );
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    let accepted = socket.request(json!({ "type": "query", "text": "why is checkout slow?", "mode": "ask" })).await;
    assert_eq!(accepted["type"], "accepted");
    let session_id = accepted["session_id"].as_str().unwrap().to_owned();
    let turn_id = accepted["turn_id"].as_str().unwrap().to_owned();
    let answer = socket.event("chat.assistant_message_completed").await;
    assert_eq!(answer["payload"]["text"], "The database pool is exhausted since the deploy.");
    // The answer streamed in, in order, before it was complete. Deltas and events ride different
    // topics, so the last deltas may reach the gateway after the completion: those are dropped.
    let whole = "The database pool is exhausted since the deploy.";
    let streamed = socket.streamed_text(&turn_id);
    assert!(!streamed.is_empty(), "the answer streamed before it was complete");
    assert!(whole.starts_with(&streamed), "the deltas arrived in order: {streamed:?}");

    let types = event_types(&env, &session_id).await;
    assert_eq!(
        types,
        ["chat.session_created", "chat.message_submitted", "chat.turn_started", "llm.call_completed", "chat.assistant_message_completed"]
    );
    let llm_call: Value = sqlx::query_scalar("SELECT payload FROM events WHERE stream = $1 AND event_type = 'llm.call_completed'")
        .bind(format!("chat-{session_id}"))
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(llm_call["model"], "scripted-model");
    assert!(llm_call["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(llm_call["completion_tokens"], 8, "usage from the stream's final chunk");
    assert_eq!(answer["payload"]["completion_tokens"], 8);

    // The conversation pages out of the read model.
    let page = eventually("the conversation in the read model", WAIT, || async {
        let page: Value =
            ana.apply(http().get(app.url(&format!("/v1/chat/sessions/{session_id}/messages")))).send().await.unwrap().json().await.unwrap();
        (page["items"].as_array().is_some_and(|items| items.len() == 2)).then_some(page)
    })
    .await;
    assert_eq!(page["items"][0]["kind"], "user");
    assert_eq!(page["items"][1]["kind"], "assistant");
    assert_eq!(page["items"][1]["text"], "The database pool is exhausted since the deploy.");

    // The next question carries the history to the model.
    llm.script("and the fix?", vec![Step::text("Raise the pool size.")]);
    socket.request(json!({ "type": "query", "session_id": session_id, "text": "and the fix?", "mode": "ask" })).await;
    socket
        .until("the second answer", |frame| {
            frame["type"] == "chat.assistant_message_completed" && frame["payload"]["text"] == "Raise the pool size."
        })
        .await;
    let second = llm.requests_for("and the fix?").pop().unwrap();
    let roles: Vec<&str> = second["messages"].as_array().unwrap().iter().map(|message| message["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(second["messages"][2]["content"], "The database pool is exhausted since the deploy.");
    let completed = socket.frames.iter().position(|frame| frame["type"] == "chat.assistant_message_completed").unwrap();
    assert!(
        !socket.frames[completed..].iter().any(|frame| frame["type"] == "delta" && frame["turn_id"] == turn_id.as_str()),
        "no delta of an answer comes after the answer"
    );
    socket.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_are_shown_as_they_happen_and_their_results_reach_the_model() {
    let (env, app, llm) = chat_app(|_| {}).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    ana.create_session_id(&app, "payments outage").await;
    eventually("the session in the read model", WAIT, || async {
        (env.count("SELECT count(*) FROM chat_sessions").await == 1).then_some(())
    })
    .await;
    llm.script(
        "which sessions do we have?",
        vec![Step::tool("call_list", "list_chat_sessions", json!({ "limit": 10 })), Step::text("You have one session: payments outage.")],
    );
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    let accepted = socket.request(json!({ "type": "query", "text": "which sessions do we have?", "mode": "ask" })).await;
    let requested = socket.event("tool_call.requested").await;
    assert_eq!(requested["payload"]["name"], "list_chat_sessions");
    assert_eq!(requested["payload"]["arguments"], json!({ "limit": 10 }));
    assert_eq!(requested["payload"]["destructive"], false);
    let completed = socket.event("tool_call.completed").await;
    assert!(completed["payload"]["result"].to_string().contains("payments outage"));
    socket.event("chat.assistant_message_completed").await;

    // The model saw the tool's result, and in ask mode was offered no destructive tool.
    let requests = llm.requests_for("which sessions do we have?");
    assert_eq!(requests.len(), 2);
    let offered: Vec<&str> =
        requests[0]["tools"].as_array().unwrap().iter().map(|tool| tool["function"]["name"].as_str().unwrap()).collect();
    assert!(offered.contains(&"list_chat_sessions") && offered.contains(&"read_audit_log"));
    assert!(!offered.contains(&"archive_chat_session"), "ask mode offers no destructive tool: {offered:?}");
    let parameters = &requests[0]["tools"][0]["function"]["parameters"];
    assert_eq!(parameters["type"], "object", "arguments are described by a JSON Schema: {parameters}");
    assert!(requests[0]["messages"][0]["content"].as_str().unwrap().contains("list_chat_sessions"), "the system prompt names the tools");
    let tool_message = requests[1]["messages"].as_array().unwrap().iter().find(|message| message["role"] == "tool").unwrap();
    assert_eq!(tool_message["tool_call_id"], "call_list");
    assert!(tool_message["content"].as_str().unwrap().contains("payments outage"));

    // The whole result is retrievable.
    let session_id = accepted["session_id"].as_str().unwrap();
    let whole: Value = ana
        .apply(http().get(app.url(&format!("/v1/chat/sessions/{session_id}/tool-calls/call_list"))))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(whole["result"].as_array().unwrap().iter().any(|session| session["title"] == "payments outage"), "{whole}");
    socket.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destructive_tool_waits_for_its_owner_and_runs_once() {
    let (env, app, llm) = chat_app(|_| {}).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let viewer = Caller::join(&app.base_url, &ana, "vic", "viewer").await;
    let editor = Caller::join(&app.base_url, &ana, "ed", "editor").await;
    let target = ana.create_session_id(&app, "old incident").await;
    llm.script(
        "archive the old incident",
        vec![
            Step::tool("call_archive", "archive_chat_session", json!({ "session_id": target, "reason": "done" })),
            Step::text("Archived."),
        ],
    );
    // The editor asks; the admin and the editor (the owner) may answer; the viewer may not.
    let mut socket = ChatSocket::open(&app.base_url, &editor).await;
    let accepted = socket.request(json!({ "type": "query", "text": "archive the old incident", "mode": "agent" })).await;
    let session_id = accepted["session_id"].as_str().unwrap().to_owned();
    let requested = socket.event("confirmation.requested").await;
    let confirmation_id = requested["payload"]["confirmation_id"].as_str().unwrap().to_owned();
    assert_eq!(requested["payload"]["tool"], "archive_chat_session");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!event_types(&env, &target).await.contains(&"chat.session_archived".to_owned()), "nothing ran before a yes");

    let mut viewer_socket = ChatSocket::open(&app.base_url, &viewer).await;
    let refused = viewer_socket
        .request(json!({ "type": "confirm", "session_id": session_id, "confirmation_id": confirmation_id, "approve": true }))
        .await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["code"], "forbidden");

    let answered =
        socket.request(json!({ "type": "confirm", "session_id": session_id, "confirmation_id": confirmation_id, "approve": true })).await;
    assert_eq!(answered["type"], "confirmation_answered");
    socket.event("tool_call.completed").await;
    socket.event("chat.assistant_message_completed").await;
    let twice =
        socket.request(json!({ "type": "confirm", "session_id": session_id, "confirmation_id": confirmation_id, "approve": false })).await;
    assert_eq!(twice["code"], "conflict");
    assert!(twice["detail"].as_str().unwrap().contains("already answered"));

    // The tool changed real state, once, as the user who asked.
    let archived: Vec<(String, String)> =
        sqlx::query_as("SELECT event_type, actor FROM events WHERE stream = $1 AND event_type = 'chat.session_archived'")
            .bind(format!("chat-{target}"))
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(archived, vec![("chat.session_archived".to_owned(), format!("user:{}", editor.user_id))]);
    let view = eventually("the archived session in the read model", WAIT, || async {
        let view: Value =
            ana.apply(http().get(app.url(&format!("/v1/chat/sessions/{target}")))).send().await.unwrap().json().await.unwrap();
        (view["archived"] == true).then_some(view)
    })
    .await;
    assert_eq!(view["archived"], true);
    let types = event_types(&env, &session_id).await;
    assert_eq!(types.iter().filter(|kind| *kind == "tool_call.started").count(), 1);
    assert_eq!(types.iter().filter(|kind| *kind == "confirmation.granted").count(), 1);
    socket.close().await;
    viewer_socket.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_and_expired_confirmations_never_run_the_tool() {
    // Long enough that the refusal below is read well before the confirmation expires on a busy
    // machine: with one second, a loaded full run failed on the refusal's error, most likely
    // because the confirmation had expired first (the failure did not show the error's text).
    let (env, app, llm) = chat_app(|env| env.config.agent.confirmation_ttl = Duration::from_secs(5)).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let target = ana.create_session_id(&app, "keep me").await;
    for question in ["archive it, please", "archive it, later"] {
        llm.script(
            question,
            vec![Step::tool("call_1", "archive_chat_session", json!({ "session_id": target })), Step::text("Understood.")],
        );
    }
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    let first = socket.request(json!({ "type": "query", "text": "archive it, please", "mode": "agent" })).await;
    let session_id = first["session_id"].as_str().unwrap().to_owned();
    let requested = socket.event("confirmation.requested").await;
    socket
        .request(json!({ "type": "confirm", "session_id": session_id, "confirmation_id": requested["payload"]["confirmation_id"], "approve": false }))
        .await;
    let failed = socket.event("tool_call.failed").await;
    assert!(failed["payload"]["error"].as_str().unwrap().contains("declined"));
    socket.event("chat.assistant_message_completed").await;

    // Nobody answers: the durable timer expires it after five seconds.
    socket.request(json!({ "type": "query", "session_id": session_id, "text": "archive it, later", "mode": "agent" })).await;
    socket.event("confirmation.requested").await;
    socket.event("confirmation.expired").await;
    let failed = socket
        .until("the expired call's failure", |frame| {
            frame["type"] == "tool_call.failed" && frame["payload"]["error"].as_str().unwrap().contains("in time")
        })
        .await;
    assert_eq!(failed["payload"]["tool_call_id"], "call_1");
    socket
        .until("the second answer", |frame| {
            frame["type"] == "chat.assistant_message_completed" && frame["stream_version"].as_u64().unwrap() > 10
        })
        .await;
    assert!(!event_types(&env, &target).await.contains(&"chat.session_archived".to_owned()));
    // Both confirmations had a timer; the answered one's fired as a no-op.
    assert_eq!(env.count("SELECT count(*) FROM timers WHERE fired_at IS NOT NULL").await, 2);
    assert_eq!(
        env.count(&format!("SELECT count(*) FROM events WHERE stream = 'chat-{session_id}' AND event_type = 'confirmation.expired'")).await,
        1
    );
    socket.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_turn_is_cancelled_at_its_next_step() {
    let (env, app, llm) = chat_app(|_| {}).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let long = "word ".repeat(400);
    llm.script("tell me everything", vec![Step::slow_text(&long, Duration::from_millis(20))]);
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    let accepted = socket.request(json!({ "type": "query", "text": "tell me everything", "mode": "ask" })).await;
    socket.event("delta").await;
    let cancel = socket.request(json!({ "type": "cancel", "session_id": accepted["session_id"], "turn_id": accepted["turn_id"] })).await;
    assert_eq!(cancel["type"], "cancel_requested");
    socket.event("chat.turn_cancelled").await;
    let types = event_types(&env, accepted["session_id"].as_str().unwrap()).await;
    assert!(!types.contains(&"chat.assistant_message_completed".to_owned()));
    assert_eq!(types.last().unwrap(), "chat.turn_cancelled");
    // The session takes the next question.
    let next =
        socket.request(json!({ "type": "query", "session_id": accepted["session_id"], "text": "short, please", "mode": "ask" })).await;
    assert_eq!(next["type"], "accepted");
    socket.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_silent_model_ends_the_turn_with_a_message() {
    let (_env, app, llm) = chat_app(|env| env.config.llm.timeout = Duration::from_secs(1)).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    llm.script("break please", vec![Step::Error(500)]);
    llm.script("hang please", vec![Step::Hang]);
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    socket.request(json!({ "type": "query", "text": "break please", "mode": "ask" })).await;
    let failed = socket.event("chat.turn_failed").await;
    assert_eq!(failed["payload"]["reason"], "llm_unavailable");
    assert!(failed["payload"]["message"].as_str().unwrap().contains("could not answer"));
    socket.request(json!({ "type": "query", "text": "hang please", "mode": "ask" })).await;
    let failed = socket
        .until("the timed-out turn", |frame| {
            frame["type"] == "chat.turn_failed" && frame["payload"]["message"].as_str().unwrap().contains("within")
        })
        .await;
    assert_eq!(failed["payload"]["reason"], "llm_unavailable");
    socket.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_turn_is_stopped_by_its_limits_and_says_which() {
    let (_env, app, llm) = chat_app(|env| {
        env.config.agent.max_tool_calls = 2;
        env.config.agent.max_llm_calls = 3;
    })
    .await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let again = || Step::tool(&format!("call_{}", Uuid::now_v7().simple()), "list_chat_sessions", json!({}));
    llm.script("loop forever", vec![again(), again(), again(), again()]);
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    socket.request(json!({ "type": "query", "text": "loop forever", "mode": "ask" })).await;
    let failed = socket.event("chat.turn_failed").await;
    assert_eq!(failed["payload"]["reason"], "tool_call_limit");
    assert!(failed["payload"]["message"].as_str().unwrap().contains("2 tool calls"));
    socket.close().await;
    app.stop().await;

    // With room for tools but not for model calls, the model-call limit stops it.
    let (_env, app, llm) = chat_app(|env| {
        env.config.agent.max_tool_calls = 20;
        env.config.agent.max_llm_calls = 3;
    })
    .await;
    let ana = Caller::register(&app.base_url, "ana").await;
    llm.script("loop forever", vec![again(), again(), again(), again()]);
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    socket.request(json!({ "type": "query", "text": "loop forever", "mode": "ask" })).await;
    let failed = socket.event("chat.turn_failed").await;
    assert_eq!(failed["payload"]["reason"], "llm_call_limit");
    assert!(failed["payload"]["message"].as_str().unwrap().contains("3 model calls"));
    assert_eq!(llm.requests_for("loop forever").len(), 3);
    socket.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_beyond_the_context_budget_is_trimmed_oldest_first() {
    let (_env, app, llm) = chat_app(|env| env.config.llm.context_tokens = 800).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    let mut session_id = Value::Null;
    for index in 0..6 {
        let question = format!("question {index}: {}", "x".repeat(300));
        llm.script(&question, vec![Step::text(&format!("answer {index} {}", "y ".repeat(100)))]);
        let mut frame = json!({ "type": "query", "text": question, "mode": "ask" });
        if !session_id.is_null() {
            frame["session_id"] = session_id.clone();
        }
        let accepted = socket.request(frame).await;
        session_id = accepted["session_id"].clone();
        socket
            .until("the answer", |frame| {
                frame["type"] == "chat.assistant_message_completed"
                    && frame["payload"]["text"].as_str().unwrap().starts_with(&format!("answer {index}"))
            })
            .await;
    }
    let last = llm.requests().pop().unwrap();
    let messages = last["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system", "the system prompt is kept");
    assert!(messages.last().unwrap()["content"].as_str().unwrap().starts_with("question 5"), "the turn's question is kept");
    let text = serde_json::to_string(messages).unwrap();
    assert!(!text.contains("question 0"), "the oldest exchange was dropped");
    assert!(text.contains("question 4"), "the newest exchange was kept");
    assert!(text.len() / 4 < 1000, "the request stays near the budget: {} characters", text.len());
    socket.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_sees_the_turn_in_progress() {
    let (_env, app, llm) = chat_app(|_| {}).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    llm.script("stream slowly", vec![Step::slow_text(&"token ".repeat(200), Duration::from_millis(20))]);
    let mut first = ChatSocket::open(&app.base_url, &ana).await;
    let accepted = first.request(json!({ "type": "query", "text": "stream slowly", "mode": "ask" })).await;
    for _ in 0..5 {
        first.event("delta").await;
    }
    first.close().await;
    let mut again = ChatSocket::open(&app.base_url, &ana).await;
    let subscribed = again.request(json!({ "type": "subscribe", "session_id": accepted["session_id"] })).await;
    assert_eq!(subscribed["type"], "subscribed");
    assert_eq!(subscribed["running_turn"]["turn_id"], accepted["turn_id"]);
    assert_eq!(subscribed["running_turn"]["question"], "stream slowly");
    assert!(subscribed["partial"]["text"].as_str().unwrap().starts_with("token token token "), "{subscribed}");
    let answer = again.event("chat.assistant_message_completed").await;
    assert_eq!(answer["payload"]["text"], "token ".repeat(200));
    again.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_and_other_sessions_get_typed_errors() {
    let (env, app, _llm) = chat_app(|_| {}).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let viewer = Caller::join(&app.base_url, &ana, "vic", "viewer").await;
    let eve = Caller::register(&app.base_url, "eve").await;
    let ours = ana.create_session_id(&app, "ours").await;
    let mut socket = ChatSocket::open(&app.base_url, &eve).await;

    socket.send_raw("{ not json").await;
    let malformed = socket.until("an error", |frame| frame["type"] == "error").await;
    assert_eq!(malformed["code"], "bad_frame");
    socket.send_raw(r#"{"type":"query","text":"x"}"#).await;
    let missing = socket.until("an error", |frame| frame["type"] == "error" && frame["detail"].as_str().unwrap().contains("mode")).await;
    assert_eq!(missing["code"], "bad_frame");
    socket.send_raw(r#"{"type":"shout"}"#).await;
    socket.until("an error", |frame| frame["type"] == "error" && frame["detail"].as_str().unwrap().contains("shout")).await;

    let unknown = socket.request(json!({ "type": "query", "session_id": Uuid::now_v7(), "text": "hi", "mode": "ask" })).await;
    assert_eq!(unknown["code"], "not_found");
    for frame in [
        json!({ "type": "query", "session_id": ours, "text": "hi", "mode": "ask" }),
        json!({ "type": "subscribe", "session_id": ours }),
        json!({ "type": "confirm", "session_id": ours, "confirmation_id": Uuid::now_v7(), "approve": true }),
        json!({ "type": "cancel", "session_id": ours, "turn_id": Uuid::now_v7() }),
    ] {
        let answer = socket.request(frame.clone()).await;
        assert_eq!(answer["code"], "not_found", "another organisation's session answered {answer} to {frame}");
    }
    let empty = socket.request(json!({ "type": "query", "text": "   ", "mode": "ask" })).await;
    assert_eq!(empty["code"], "bad_request");
    let mut viewer_socket = ChatSocket::open(&app.base_url, &viewer).await;
    let refused = viewer_socket.request(json!({ "type": "query", "session_id": ours, "text": "hi", "mode": "ask" })).await;
    assert_eq!(refused["code"], "forbidden");
    assert_eq!(env.count(&format!("SELECT count(*) FROM events WHERE stream = 'chat-{ours}'")).await, 1, "nothing was recorded");
    socket.close().await;
    viewer_socket.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_deleted_and_their_messages_paged_over_rest() {
    let (_env, app, llm) = chat_app(|_| {}).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    let mut session_id = Value::Null;
    for index in 0..3 {
        let question = format!("q{index}");
        llm.script(&question, vec![Step::text(&format!("a{index}"))]);
        let mut frame = json!({ "type": "query", "text": question, "mode": "ask" });
        if !session_id.is_null() {
            frame["session_id"] = session_id.clone();
        }
        session_id = socket.request(frame).await["session_id"].clone();
        socket
            .until("an answer", |frame| {
                frame["type"] == "chat.assistant_message_completed" && frame["payload"]["text"] == format!("a{index}")
            })
            .await;
    }
    let session_id = session_id.as_str().unwrap().to_owned();
    let page = |after: Option<i64>| {
        let url = match after {
            Some(after) => app.url(&format!("/v1/chat/sessions/{session_id}/messages?limit=4&after={after}")),
            None => app.url(&format!("/v1/chat/sessions/{session_id}/messages?limit=4")),
        };
        let request = ana.apply(http().get(url));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    eventually("six messages", WAIT, || async {
        let first = page(None).await;
        let second = page(first["next_after"].as_i64()).await;
        // Until the session is projected the pages are 404 problems, without items.
        let count = |page: &Value| page["items"].as_array().map_or(0, Vec::len);
        (count(&first) + count(&second) == 6).then_some(())
    })
    .await;
    let first = page(None).await;
    let texts: Vec<&str> = first["items"].as_array().unwrap().iter().map(|item| item["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["q0", "a0", "q1", "a1"]);
    let rest = page(first["next_after"].as_i64()).await;
    assert!(rest["next_after"].is_null());

    let deleted = ana.apply(http().delete(app.url(&format!("/v1/chat/sessions/{session_id}")))).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    eventually("the session gone from the list", WAIT, || async {
        let list: Value =
            ana.apply(http().get(app.url("/v1/chat/sessions?include_archived=true"))).send().await.unwrap().json().await.unwrap();
        list.as_array().unwrap().is_empty().then_some(())
    })
    .await;
    let gone = ana.apply(http().get(app.url(&format!("/v1/chat/sessions/{session_id}")))).send().await.unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    let refused = socket.request(json!({ "type": "query", "session_id": session_id, "text": "more?", "mode": "ask" })).await;
    assert_eq!(refused["code"], "not_found");
    socket.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_on_another_gateway_follows_the_same_conversation() {
    let (env, first_gateway, llm) = chat_app(|_| {}).await;
    let second_gateway = App::spawn(&env, Roles { gateway: true, processors: false, projections: false }).await;
    let ana = Caller::register(&first_gateway.base_url, "ana").await;
    llm.script("who answers?", vec![Step::slow_text("whichever gateway holds your socket", Duration::from_millis(100))]);
    // The watcher follows the session before the question, so that it can miss none of the deltas.
    let session_id = ana.create_session_id(&first_gateway, "who answers").await;
    let mut watching = ChatSocket::open(&second_gateway.base_url, &ana).await;
    watching.request(json!({ "type": "subscribe", "session_id": session_id })).await;
    let mut asking = ChatSocket::open(&first_gateway.base_url, &ana).await;
    let accepted = asking.request(json!({ "type": "query", "text": "who answers?", "mode": "ask", "session_id": session_id })).await;
    let turn_id = accepted["turn_id"].as_str().unwrap().to_owned();
    let whole = "whichever gateway holds your socket";
    let answer = watching.event("chat.assistant_message_completed").await;
    assert_eq!(answer["payload"]["text"], whole);
    // The answer streamed to this socket too, in order (a last delta later than the completion is
    // dropped).
    let streamed = watching.streamed_text(&turn_id);
    assert!(!streamed.is_empty() && whole.starts_with(&streamed), "the watcher saw the answer stream in: {streamed:?}");
    asking.close().await;
    watching.close().await;
    second_gateway.stop().await;
    first_gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_past_its_wall_time_is_stopped_and_says_so() {
    let (env, app, llm) = chat_app(|env| env.config.agent.max_turn = Duration::from_secs(1)).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let target = ana.create_session_id(&app, "slow decision").await;
    llm.script(
        "archive it when you are sure",
        vec![Step::tool("call_1", "archive_chat_session", json!({ "session_id": target })), Step::text("Done.")],
    );
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    let accepted = socket.request(json!({ "type": "query", "text": "archive it when you are sure", "mode": "agent" })).await;
    let requested = socket.event("confirmation.requested").await;
    // The person takes longer than the turn may run.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    socket
        .request(json!({ "type": "confirm", "session_id": accepted["session_id"], "confirmation_id": requested["payload"]["confirmation_id"], "approve": true }))
        .await;
    let failed = socket.event("chat.turn_failed").await;
    assert_eq!(failed["payload"]["reason"], "wall_time_limit");
    assert!(failed["payload"]["message"].as_str().unwrap().contains("1 s"));
    // The confirmed tool itself still ran, once; only the next model call was refused.
    assert_eq!(
        env.count(&format!("SELECT count(*) FROM events WHERE stream = 'chat-{target}' AND event_type = 'chat.session_archived'")).await,
        1
    );
    assert_eq!(llm.requests_for("archive it when you are sure").len(), 1);
    socket.close().await;
    app.stop().await;
}

/// At rest the consumers keep no fetch open on the broker; an announced question wakes the agent
/// and the gateway's hub, and the answer streams as it does when they are awake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_after_a_quiet_spell_wakes_the_resting_consumers() {
    let (_env, app, llm) = chat_app(|_| {}).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    llm.script("is it quiet?", vec![Step::text("Quiet since noon.")]);
    let (agent, hub) = ("{consumer=\"processor:agent\"}", "{consumer=\"chat hub\"}");
    eventually("the agent and the hub at rest", WAIT, || async {
        let resting = metric(&app.base_url, &format!("aurora_consumer_resting{agent}")).await == 1
            && metric(&app.base_url, &format!("aurora_consumer_resting{hub}")).await == 1;
        resting.then_some(())
    })
    .await;
    let agent_wakeups = metric(&app.base_url, &format!("aurora_consumer_wakeups_total{agent}")).await;
    let hub_wakeups = metric(&app.base_url, &format!("aurora_consumer_wakeups_total{hub}")).await;

    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    let accepted = socket.request(json!({ "type": "query", "text": "is it quiet?", "mode": "ask" })).await;
    let turn_id = accepted["turn_id"].as_str().unwrap().to_owned();
    let answer = socket.event("chat.assistant_message_completed").await;
    assert_eq!(answer["payload"]["text"], "Quiet since noon.");
    assert!("Quiet since noon.".starts_with(&socket.streamed_text(&turn_id)), "what streamed is the answer's beginning");
    assert!(
        metric(&app.base_url, &format!("aurora_consumer_wakeups_total{agent}")).await > agent_wakeups,
        "the agent woke for the question"
    );
    assert!(metric(&app.base_url, &format!("aurora_consumer_wakeups_total{hub}")).await > hub_wakeups, "the hub woke for the answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_question_through_the_agent_to_the_answer() {
    let (env, app, llm) = chat_app(|_| {}).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    llm.script("is the queue backed up?", vec![Step::text("No: it drains within a second.")]);
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let accepted = socket
        .request(json!({
            "type": "query", "text": "is the queue backed up?", "mode": "ask",
            "traceparent": format!("00-{trace_id}-{client_span}-01"),
        }))
        .await;
    let session_id = accepted["session_id"].as_str().unwrap().to_owned();
    let parts = |traceparent: &str| traceparent.split('-').map(str::to_owned).collect::<Vec<String>>();
    let gateway_span = parts(accepted["traceparent"].as_str().unwrap());
    assert_eq!(gateway_span[1], trace_id, "the gateway continues the client's trace");
    assert_ne!(gateway_span[2], client_span, "in a span of its own");
    socket.event("chat.assistant_message_completed").await;

    let rows: Vec<(Uuid, String, Option<Uuid>, Option<String>)> =
        sqlx::query_as("SELECT event_id, event_type, causation_id, traceparent FROM events WHERE stream = $1 ORDER BY stream_version")
            .bind(format!("chat-{session_id}"))
            .fetch_all(&env.pool)
            .await
            .unwrap();
    let submitted = rows.iter().find(|row| row.1 == "chat.message_submitted").unwrap();
    assert_eq!(parts(submitted.3.as_deref().unwrap())[2], gateway_span[2], "the question carries the gateway's span");
    let answered: Vec<_> = rows.iter().skip_while(|row| row.1 != "chat.turn_started").collect();
    assert_eq!(answered.len(), 3, "turn started, model call, answer: {rows:?}");
    let agent_span = parts(answered[0].3.as_deref().expect("the agent's events carry a traceparent"));
    for (_, event_type, causation_id, traceparent) in answered {
        assert_eq!(*causation_id, Some(submitted.0), "{event_type} names the question as its cause");
        let span = parts(traceparent.as_deref().unwrap());
        assert_eq!(span[1], trace_id, "{event_type} is in the client's trace");
        assert_eq!(span[2], agent_span[2], "{event_type} is recorded in the agent's span");
    }
    assert_ne!(agent_span[2], gateway_span[2], "the agent works in a span of its own");

    // The trace context travels on the Kafka record, where another consumer picks it up.
    let topic = aurora_events::topics::topic_for_category(&env.config.kafka.topic_prefix, "chat");
    let records = aurora_tests::kafka::read_all(&env.config, &topic).await;
    let answer_id = rows.last().unwrap().0.to_string();
    let record = records.iter().find(|record| header_str(*record, "ce_id") == Some(answer_id.as_str())).unwrap();
    assert_eq!(header_str(record, "ce_traceparent").map(parts).unwrap()[1], trace_id);
    socket.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_collector_when_one_is_configured() {
    let receiver = aurora_tests::otlp::TraceReceiver::start().await;
    let endpoint = receiver.endpoint.clone();
    let (_env, app, llm) = chat_app(|env| env.config.telemetry.otlp_endpoint = Some(endpoint)).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    llm.script("any errors?", vec![Step::text("None in the last hour.")]);
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    socket
        .request(
            json!({ "type": "query", "text": "any errors?", "mode": "ask", "traceparent": format!("00-{trace_id}-b7ad6b7169203331-01") }),
        )
        .await;
    socket.event("chat.assistant_message_completed").await;
    socket.close().await;
    // Stopping flushes what the batch holds.
    app.stop().await;
    let spans = eventually("the question's spans at the collector", WAIT, || async {
        let spans: Vec<_> = receiver.spans().into_iter().filter(|span| span.trace_id == trace_id).collect();
        (spans.iter().any(|span| span.name == "agent.pass") && spans.iter().any(|span| span.name == "chat.question")).then_some(spans)
    })
    .await;
    let question = spans.iter().find(|span| span.name == "chat.question").unwrap();
    assert_eq!(question.parent_span_id, "b7ad6b7169203331", "the gateway's span is a child of the client's");
    let pass = spans.iter().find(|span| span.name == "agent.pass").unwrap();
    assert_eq!(pass.parent_span_id, question.span_id, "the agent's span is a child of the gateway's, across Kafka");
}
