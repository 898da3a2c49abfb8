//! Infrastructure changes from the chat, end to end: the scripted model asks for the deploy
//! tools over the real WebSocket, the real `tofu` binary plans and applies OpenTofu's built-in
//! `terraform_data` resources whose `local-exec` provisioners leave marks in a folder of the
//! test, the state lives behind Aurora's `http` backend, and the gateway serves `deployments`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aurora_testkit::scripted_llm::{ScriptedLlm, Step};
use aurora_tests::chat::ChatSocket;
use aurora_tests::{eventually, http, App, Caller, Roles, TestEnv};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

fn tofu() -> PathBuf {
    std::env::var("AURORA_DEPLOY_TOFU_BIN").expect("AURORA_DEPLOY_TOFU_BIN names the tofu binary (scripts/stack.sh env exports it)").into()
}

async fn deploy_app(configure: impl FnOnce(&mut TestEnv)) -> (TestEnv, App, ScriptedLlm) {
    let llm = ScriptedLlm::start().await;
    let mut env = TestEnv::new().await;
    env.config.llm.base_url = llm.base_url.clone();
    env.config.llm.model = "scripted-model".into();
    env.config.llm.timeout = Duration::from_secs(5);
    env.config.deploy.cli = tofu();
    configure(&mut env);
    let app = App::spawn(&env, Roles::ALL).await;
    (env, app, llm)
}

/// Everything the test can read of what Aurora kept: every event, the read models, the kept
/// tool results, and the objects of the store.
async fn everything_kept(env: &TestEnv) -> String {
    let mut kept = String::new();
    for sql in [
        "SELECT payload::text FROM events",
        "SELECT row_to_json(deployments)::text FROM deployments",
        "SELECT result::text FROM tool_results",
        "SELECT row_to_json(chat_messages)::text FROM chat_messages",
    ] {
        let rows: Vec<String> = sqlx::query_scalar(sql).fetch_all(&env.pool).await.unwrap();
        kept.push_str(&rows.join("\n"));
    }
    let root = env.config.objects.url.strip_prefix("file://").unwrap().to_owned();
    let mut folders = vec![PathBuf::from(root)];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                folders.push(entry.path());
            } else {
                kept.push_str(&String::from_utf8_lossy(&std::fs::read(entry.path()).unwrap()));
            }
        }
    }
    kept
}

/// A folder for the marks the provisioners leave.
fn marks() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aurora-deploy-marks-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).map(|text| text.lines().map(str::to_owned).collect()).unwrap_or_default()
}

/// A workspace of one `terraform_data` resource whose creation appends `applied` to
/// `{marks}/applied` (after `after_apply`, a shell command) and whose destruction appends
/// `destroyed` to `{marks}/destroyed`.
fn marker(marks: &Path, input: &str, after_apply: &str) -> String {
    let marks = marks.display();
    format!(
        "resource \"terraform_data\" \"mark\" {{\n  input = \"{input}\"\n\n  provisioner \"local-exec\" {{\n    command = \"echo applied >> {marks}/applied{after_apply}\"\n  }}\n\n  provisioner \"local-exec\" {{\n    when    = destroy\n    command = \"echo destroyed >> {marks}/destroyed\"\n  }}\n}}\n\noutput \"input\" {{\n  value = terraform_data.mark.output\n}}\n"
    )
}

/// One turn of the conversation: `steps` are what the model answers to `question`. Answers
/// the session's id.
async fn ask(socket: &mut ChatSocket, llm: &ScriptedLlm, session: Option<&str>, question: &str, steps: Vec<Step>) -> String {
    llm.script(question, steps);
    let mut frame = json!({ "type": "query", "text": question, "mode": "agent" });
    if let Some(session) = session {
        frame["session_id"] = json!(session);
    }
    let accepted = socket.request(frame).await;
    assert_eq!(accepted["type"], "accepted", "{accepted}");
    accepted["session_id"].as_str().unwrap().to_owned()
}

/// The outcome of the tool call `id`: its `tool_call.completed` or `tool_call.failed` frame.
async fn outcome(socket: &mut ChatSocket, id: &str) -> Value {
    socket
        .until(&format!("the outcome of {id}"), |frame| {
            (frame["type"] == "tool_call.completed" || frame["type"] == "tool_call.failed") && frame["payload"]["tool_call_id"] == id
        })
        .await
}

/// What the tool call `id` printed, as streamed to the socket, once it holds `needle`.
async fn streamed_output(socket: &mut ChatSocket, id: &str, needle: &str) -> String {
    let text = |frames: &[Value]| -> String {
        let mut pieces: Vec<(u64, String)> = frames
            .iter()
            .filter(|frame| frame["type"] == "tool_output" && frame["tool_call_id"] == id)
            .map(|frame| (frame["seq"].as_u64().unwrap(), frame["text"].as_str().unwrap().to_owned()))
            .collect();
        pieces.sort();
        pieces.into_iter().map(|(_, piece)| piece).collect()
    };
    loop {
        let so_far = text(&socket.frames);
        if so_far.contains(needle) {
            return so_far;
        }
        socket.until(&format!("{id}'s output `{needle}`"), |frame| frame["type"] == "tool_output" && frame["tool_call_id"] == id).await;
    }
}

async fn answered(socket: &mut ChatSocket, text: &str) {
    socket
        .until(&format!("the answer `{text}`"), |frame| {
            frame["type"] == "chat.assistant_message_completed" && frame["payload"]["text"] == text
        })
        .await;
}

async fn confirm(socket: &mut ChatSocket, session: &str, requested: &Value, approve: bool) {
    let answer = socket
        .request(json!({
            "type": "confirm", "session_id": session, "confirmation_id": requested["payload"]["confirmation_id"], "approve": approve,
        }))
        .await;
    assert_eq!(answer["type"], "confirmation_answered", "{answer}");
}

/// Asks for `iac_apply` of `plan_id` as the tool call `id` (the model then answers `text`),
/// says yes to its confirmation, and answers the call's outcome.
async fn approved_apply(
    socket: &mut ChatSocket,
    llm: &ScriptedLlm,
    session: &str,
    question: &str,
    id: &str,
    plan_id: &str,
    text: &str,
) -> Value {
    let steps = vec![Step::tool(id, "iac_apply", json!({ "plan_id": plan_id })), Step::text(text)];
    ask(socket, llm, Some(session), question, steps).await;
    let requested = socket.event("confirmation.requested").await;
    confirm(socket, session, &requested, true).await;
    outcome(socket, id).await
}

/// Writes `main.tf` and plans it, in a new session when `session` is none: the session and the
/// plan's answer.
async fn write_and_plan(socket: &mut ChatSocket, llm: &ScriptedLlm, session: Option<&str>, main_tf: &str, tag: &str) -> (String, Value) {
    let session = ask(
        socket,
        llm,
        session,
        &format!("write and plan the marker ({tag})"),
        vec![
            Step::tool(&format!("write_{tag}"), "iac_write", json!({ "files": [{ "path": "main.tf", "content": main_tf }] })),
            Step::tool(&format!("plan_{tag}"), "iac_plan", json!({})),
            Step::text(&format!("Planned {tag}.")),
        ],
    )
    .await;
    let written = outcome(socket, &format!("write_{tag}")).await;
    assert_eq!(written["type"], "tool_call.completed", "{written}");
    let planned = outcome(socket, &format!("plan_{tag}")).await;
    assert_eq!(planned["type"], "tool_call.completed", "{planned}");
    answered(socket, &format!("Planned {tag}.")).await;
    (session, planned["payload"]["result"].clone())
}

async fn deployment(app: &App, caller: &Caller, plan_id: &str, status: &str) -> Value {
    eventually(&format!("deployment {plan_id} {status}"), WAIT, || async {
        let response = caller.apply(http().get(app.url(&format!("/v1/deployments/{plan_id}")))).send().await.unwrap();
        if response.status() != StatusCode::OK {
            return None;
        }
        let view: Value = response.json().await.unwrap();
        (view["status"] == status).then_some(view)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_plan_is_applied_once_and_its_deployment_is_kept() {
    let (env, app, llm) = deploy_app(|_| {}).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let vic = Caller::join(&app.base_url, &ana, "vic", "viewer").await;
    let ed = Caller::join(&app.base_url, &ana, "ed", "editor").await;
    let eve = Caller::register(&app.base_url, "eve").await;
    let marks = marks();
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;

    // Written, then planned twice: two saved plans of the same files and the same (empty) state.
    let (session, first) = write_and_plan(&mut socket, &llm, None, &marker(&marks, "one", ""), "first").await;
    assert_eq!(first["result"], "changes", "{first}");
    assert_eq!(first["changes"]["create"], json!(["terraform_data.mark"]));
    assert_eq!(first["diagnostics"], json!([]));
    let first_plan = first["plan_id"].as_str().unwrap().to_owned();
    let second_plan = ask(
        &mut socket,
        &llm,
        Some(&session),
        "plan it once more",
        vec![Step::tool("plan_again", "iac_plan", json!({})), Step::text("Planned again.")],
    )
    .await;
    assert_eq!(second_plan, session);
    let second = outcome(&mut socket, "plan_again").await;
    let second_plan = second["payload"]["result"]["plan_id"].as_str().unwrap().to_owned();
    answered(&mut socket, "Planned again.").await;
    assert!(lines(&marks.join("applied")).is_empty(), "planning applies nothing");
    let listed = deployment(&app, &ana, &first_plan, "planned").await;
    assert_eq!(listed["changes"]["create"], json!(["terraform_data.mark"]));
    assert_eq!(listed["requested_by"], format!("user:{}", ana.user_id));

    // The confirmation shows the plan; nothing runs before the yes.
    ask(
        &mut socket,
        &llm,
        Some(&session),
        "apply the first plan",
        vec![Step::tool("apply_first", "iac_apply", json!({ "plan_id": first_plan })), Step::text("Applied.")],
    )
    .await;
    let requested = socket.event("confirmation.requested").await;
    assert_eq!(requested["payload"]["tool"], "iac_apply");
    assert_eq!(requested["payload"]["preview"]["changes"]["create"], json!(["terraform_data.mark"]), "{requested}");
    assert_eq!(requested["payload"]["preview"]["plan_id"], first_plan.as_str());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(lines(&marks.join("applied")).is_empty(), "nothing ran before a yes");
    confirm(&mut socket, &session, &requested, true).await;
    let applied = outcome(&mut socket, "apply_first").await;
    assert_eq!(applied["payload"]["result"]["result"], "applied", "{applied}");
    assert_eq!(applied["payload"]["result"]["outputs"]["input"], "one");
    answered(&mut socket, "Applied.").await;
    assert_eq!(lines(&marks.join("applied")), vec!["applied"], "applied once");
    // The person watched it run: the CLI's output streamed to the chat as it came.
    let streamed = streamed_output(&mut socket, "apply_first", "Apply complete!").await;
    assert!(streamed.contains("terraform_data.mark: Creating..."), "{streamed}");

    let view = deployment(&app, &ana, &first_plan, "applied").await;
    assert_eq!(view["approved_by"], format!("user:{}", ana.user_id));
    assert_eq!(view["session_id"], session.as_str());
    assert_eq!(view["outputs"]["input"], "one");
    let version = view["state_version"].as_i64().expect("the apply left a state version");
    assert!(view["duration_ms"].as_i64().unwrap() > 0);
    assert_eq!(view["links"]["state"], format!("/v1/deployments/{first_plan}/state"));
    // The state Aurora keeps is the CLI's own, with the resource in it; every version is kept.
    let state: Value =
        ana.apply(http().get(app.url(&format!("/v1/deployments/{first_plan}/state")))).send().await.unwrap().json().await.unwrap();
    assert_eq!(state["resources"][0]["type"], "terraform_data", "{state}");
    assert_eq!(state["outputs"]["input"]["value"], "one");
    let output = ed.apply(http().get(app.url(&format!("/v1/deployments/{first_plan}/output")))).send().await.unwrap();
    assert_eq!(output.status(), StatusCode::OK);
    assert!(output.text().await.unwrap().contains("Apply complete! Resources: 1 added"));
    let plan_text = ed.apply(http().get(app.url(&format!("/v1/deployments/{first_plan}/plan")))).send().await.unwrap();
    assert!(plan_text.text().await.unwrap().contains("terraform_data.mark will be created"));
    // Lower roles read the record, not the state nor the output; another organisation nothing.
    assert_eq!(vic.apply(http().get(app.url(&format!("/v1/deployments/{first_plan}")))).send().await.unwrap().status(), StatusCode::OK);
    for (caller, path, expected) in [
        (&vic, "output", StatusCode::FORBIDDEN),
        (&ed, "state", StatusCode::FORBIDDEN),
        (&eve, "state", StatusCode::NOT_FOUND),
        (&eve, "output", StatusCode::NOT_FOUND),
    ] {
        let response = caller.apply(http().get(app.url(&format!("/v1/deployments/{first_plan}/{path}")))).send().await.unwrap();
        assert_eq!(response.status(), expected, "{path} by {}", caller.email);
    }
    let theirs: Value = eve.apply(http().get(app.url("/v1/deployments"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(theirs["deployments"], json!([]));

    // The second plan was made before the first was applied: the state moved on, so it is
    // refused at apply time, after its yes, and nothing runs.
    let stale = approved_apply(&mut socket, &llm, &session, "apply the second plan", "apply_second", &second_plan, "Tried.").await;
    assert_eq!(stale["payload"]["result"]["result"], "failed", "{stale}");
    assert_eq!(stale["payload"]["result"]["stage"], "stale");
    answered(&mut socket, "Tried.").await;
    let view = deployment(&app, &ana, &second_plan, "failed").await;
    assert_eq!(view["failure_stage"], "stale");

    // An applied plan is never applied again; nobody is even asked.
    ask(
        &mut socket,
        &llm,
        Some(&session),
        "apply the first plan again",
        vec![Step::tool("apply_again", "iac_apply", json!({ "plan_id": first_plan })), Step::text("Refused.")],
    )
    .await;
    let again = outcome(&mut socket, "apply_again").await;
    assert_eq!(again["type"], "tool_call.failed");
    assert!(again["payload"]["error"].as_str().unwrap().contains("applied already"), "{again}");
    answered(&mut socket, "Refused.").await;

    // Destroy: a destroy plan, applied by iac_destroy (iac_apply refuses it), runs the
    // resource's destroy-time provisioner and leaves a new state version.
    ask(
        &mut socket,
        &llm,
        Some(&session),
        "plan the teardown",
        vec![Step::tool("plan_destroy", "iac_plan", json!({ "destroy": true })), Step::text("Teardown planned.")],
    )
    .await;
    let teardown = outcome(&mut socket, "plan_destroy").await;
    assert_eq!(teardown["payload"]["result"]["changes"]["destroy"], json!(["terraform_data.mark"]), "{teardown}");
    let destroy_plan = teardown["payload"]["result"]["plan_id"].as_str().unwrap().to_owned();
    answered(&mut socket, "Teardown planned.").await;
    ask(
        &mut socket,
        &llm,
        Some(&session),
        "tear it down",
        vec![
            Step::tool("wrong_tool", "iac_apply", json!({ "plan_id": destroy_plan })),
            Step::tool("destroy", "iac_destroy", json!({ "plan_id": destroy_plan })),
            Step::text("Torn down."),
        ],
    )
    .await;
    let wrong = outcome(&mut socket, "wrong_tool").await;
    assert!(wrong["payload"]["error"].as_str().unwrap().contains("iac_destroy"), "{wrong}");
    let requested = socket.event("confirmation.requested").await;
    assert_eq!(requested["payload"]["preview"]["destroy"], true);
    confirm(&mut socket, &session, &requested, true).await;
    let destroyed = outcome(&mut socket, "destroy").await;
    assert_eq!(destroyed["payload"]["result"]["result"], "applied", "{destroyed}");
    answered(&mut socket, "Torn down.").await;
    assert_eq!(lines(&marks.join("destroyed")), vec!["destroyed"]);
    assert_eq!(lines(&marks.join("applied")), vec!["applied"], "still applied once");
    let view = deployment(&app, &ana, &destroy_plan, "applied").await;
    assert!(view["state_version"].as_i64().unwrap() > version, "a new state version");
    let state: Value =
        ana.apply(http().get(app.url(&format!("/v1/deployments/{destroy_plan}/state")))).send().await.unwrap().json().await.unwrap();
    assert_eq!(state["resources"], json!([]), "{state}");

    // The session's deployments, newest first, a page at a time.
    let page: Value = vic
        .apply(http().get(app.url(&format!("/v1/deployments?session_id={session}&limit=2"))))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = page["deployments"].as_array().unwrap().iter().map(|d| d["deployment_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![destroy_plan.as_str(), second_plan.as_str()]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest: Value = vic
        .apply(http().get(app.url(&format!("/v1/deployments?session_id={session}&cursor={cursor}"))))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["deployments"][0]["deployment_id"], first_plan.as_str());
    assert_eq!(rest["next_cursor"], Value::Null);
    let failed: Value = vic.apply(http().get(app.url("/v1/deployments?status=failed"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(failed["deployments"].as_array().unwrap().len(), 1);
    let bad = vic.apply(http().get(app.url("/v1/deployments?status=gone"))).send().await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let types: Vec<String> = sqlx::query_scalar("SELECT event_type FROM events WHERE stream = $1 ORDER BY stream_version")
        .bind(format!("deploy-{first_plan}"))
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert_eq!(types, vec!["deploy.planned", "deploy.apply_started", "deploy.applied"]);
    socket.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_workspace_a_denied_yes_bad_code_and_bad_names_apply_nothing() {
    let (_env, app, llm) = deploy_app(|_| {}).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let marks = marks();
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    let (session, planned) = write_and_plan(&mut socket, &llm, None, &marker(&marks, "one", ""), "a").await;
    let plan_id = planned["plan_id"].as_str().unwrap().to_owned();

    // The file changes after the plan: the old plan is refused before anyone is asked.
    ask(
        &mut socket,
        &llm,
        Some(&session),
        "change it and apply the old plan",
        vec![
            Step::tool("rewrite", "iac_write", json!({ "files": [{ "path": "main.tf", "content": marker(&marks, "two", "") }] })),
            Step::tool("apply_old", "iac_apply", json!({ "plan_id": plan_id })),
            Step::text("Refused."),
        ],
    )
    .await;
    let stale = outcome(&mut socket, "apply_old").await;
    assert_eq!(stale["type"], "tool_call.failed");
    assert!(stale["payload"]["error"].as_str().unwrap().contains("changed since plan"), "{stale}");
    answered(&mut socket, "Refused.").await;
    assert!(!socket.frames.iter().any(|frame| frame["type"] == "confirmation.requested"), "nobody was asked");

    // A new plan, declined: nothing runs and the plan stays as it was.
    let (_, replanned) = write_and_plan(&mut socket, &llm, Some(&session), &marker(&marks, "two", ""), "b").await;
    let new_plan = replanned["plan_id"].as_str().unwrap().to_owned();
    ask(
        &mut socket,
        &llm,
        Some(&session),
        "apply the new plan",
        vec![Step::tool("apply_new", "iac_apply", json!({ "plan_id": new_plan })), Step::text("Declined.")],
    )
    .await;
    let requested = socket.event("confirmation.requested").await;
    confirm(&mut socket, &session, &requested, false).await;
    let declined = outcome(&mut socket, "apply_new").await;
    assert!(declined["payload"]["error"].as_str().unwrap().contains("declined"));
    answered(&mut socket, "Declined.").await;
    assert!(lines(&marks.join("applied")).is_empty());
    deployment(&app, &ana, &new_plan, "planned").await;

    // Code that does not parse comes back as diagnostics naming the file.
    ask(
        &mut socket,
        &llm,
        Some(&session),
        "write broken code",
        vec![
            Step::tool("broken", "iac_write", json!({ "files": [{ "path": "broken.tf", "content": "resource \"terraform_data\" {" }] })),
            Step::tool("plan_broken", "iac_plan", json!({})),
            Step::text("Broken."),
        ],
    )
    .await;
    let broken = outcome(&mut socket, "plan_broken").await;
    let result = &broken["payload"]["result"];
    assert!(matches!(result["result"].as_str(), Some("init_failed" | "invalid")), "{broken}");
    assert!(result["diagnostics"].to_string().contains("broken.tf"), "{broken}");
    assert!(result.get("plan_id").is_none());
    answered(&mut socket, "Broken.").await;

    // Names that would leave the workspace or replace its backend, and files over the limit.
    let too_big = "#".repeat(64 * 1024 + 1);
    ask(
        &mut socket,
        &llm,
        Some(&session),
        "write where it must not",
        vec![
            Step::tool("up", "iac_write", json!({ "files": [{ "path": "../main.tf", "content": "" }] })),
            Step::tool("absolute", "iac_write", json!({ "files": [{ "path": "/etc/aurora.tf", "content": "" }] })),
            Step::tool("override", "iac_write", json!({ "files": [{ "path": "backend_override.tf", "content": "" }] })),
            Step::tool("big", "iac_write", json!({ "files": [{ "path": "big.tf", "content": too_big }] })),
            Step::text("None written."),
        ],
    )
    .await;
    for id in ["up", "absolute", "override", "big"] {
        let refused = outcome(&mut socket, id).await;
        assert_eq!(refused["type"], "tool_call.failed", "{id}: {refused}");
    }
    answered(&mut socket, "None written.").await;
    ask(&mut socket, &llm, Some(&session), "list the files", vec![Step::tool("list", "iac_read", json!({})), Step::text("Listed.")]).await;
    let listed = outcome(&mut socket, "list").await;
    let names: Vec<&str> =
        listed["payload"]["result"]["files"].as_array().unwrap().iter().map(|file| file["path"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["broken.tf", "main.tf"]);
    socket.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_a_hanging_apply_and_a_cancel_are_refused_and_stopped() {
    let (env, app, llm) = deploy_app(|env| env.config.deploy.run_timeout = Duration::from_secs(8)).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let marks = marks();
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    // The apply writes its mark, then hangs well past the limit, then would write a second one.
    let hang = format!(" && sleep 60 && echo late >> {}/late", marks.display());
    let (session, planned) = write_and_plan(&mut socket, &llm, None, &marker(&marks, "one", &hang), "hang").await;
    let plan_id = planned["plan_id"].as_str().unwrap().to_owned();

    // Another run (another processor's) holds the workspace's state lock: the apply waits a
    // moment, then fails without running anything.
    sqlx::query("INSERT INTO deploy_state_locks (org_id, workspace_id, lock_id, info) VALUES ($1, $2, 'other-run', $3)")
        .bind(ana.org)
        .bind(Uuid::parse_str(&session).unwrap())
        .bind(json!({ "ID": "other-run", "Operation": "OperationTypeApply", "Who": "another processor" }))
        .execute(&env.pool)
        .await
        .unwrap();
    let locked = approved_apply(&mut socket, &llm, &session, "apply while locked", "apply_locked", &plan_id, "Locked.").await;
    assert_eq!(locked["payload"]["result"]["stage"], "locked", "{locked}");
    assert!(locked["payload"]["result"]["output"].as_str().unwrap().contains("ID=other-run"), "the holder is named: {locked}");
    answered(&mut socket, "Locked.").await;
    assert!(lines(&marks.join("applied")).is_empty(), "nothing ran beside the lock's holder");
    deployment(&app, &ana, &plan_id, "failed").await;

    // The lock goes; a new plan's apply hangs and is stopped at the run limit, with what it started.
    sqlx::query("DELETE FROM deploy_state_locks").execute(&env.pool).await.unwrap();
    let again = ask(
        &mut socket,
        &llm,
        Some(&session),
        "plan and apply the hanging one",
        vec![Step::tool("plan_hang", "iac_plan", json!({})), Step::text("Planned.")],
    )
    .await;
    assert_eq!(again, session);
    let replanned = outcome(&mut socket, "plan_hang").await;
    let hanging_plan = replanned["payload"]["result"]["plan_id"].as_str().unwrap().to_owned();
    answered(&mut socket, "Planned.").await;
    let stopped = approved_apply(&mut socket, &llm, &session, "apply the hanging plan", "apply_hang", &hanging_plan, "Stopped.").await;
    assert_eq!(stopped["payload"]["result"]["stage"], "timeout", "{stopped}");
    answered(&mut socket, "Stopped.").await;
    assert_eq!(lines(&marks.join("applied")), vec!["applied"]);
    // Nothing of the run is left: no process names the marks folder.
    let marks_text = marks.display().to_string();
    eventually("no process of the stopped run", Duration::from_secs(5), || async {
        let running = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| std::fs::read(entry.ok()?.path().join("cmdline")).ok())
            .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
            .any(|cmdline| cmdline.contains(&marks_text));
        (!running).then_some(())
    })
    .await;
    let view = deployment(&app, &ana, &hanging_plan, "failed").await;
    assert_eq!(view["failure_stage"], "timeout");
    assert_eq!(env.count("SELECT count(*) FROM deploy_state_locks").await, 0, "the stopped run's lock was released");

    // A person cancels the turn while the apply runs: the run is stopped at once, not at its limit.
    ask(
        &mut socket,
        &llm,
        Some(&session),
        "plan the hanging one again",
        vec![Step::tool("plan_cancel", "iac_plan", json!({})), Step::text("Planned again.")],
    )
    .await;
    let replanned = outcome(&mut socket, "plan_cancel").await;
    let cancelled_plan = replanned["payload"]["result"]["plan_id"].as_str().unwrap().to_owned();
    answered(&mut socket, "Planned again.").await;
    ask(
        &mut socket,
        &llm,
        Some(&session),
        "apply it, then I cancel",
        vec![Step::tool("apply_cancel", "iac_apply", json!({ "plan_id": cancelled_plan })), Step::text("Never said.")],
    )
    .await;
    let requested = socket.event("confirmation.requested").await;
    confirm(&mut socket, &session, &requested, true).await;
    eventually("the second apply's mark", WAIT, || async { (lines(&marks.join("applied")).len() == 2).then_some(()) }).await;
    let cancel = socket.request(json!({ "type": "cancel", "session_id": session, "turn_id": requested["payload"]["turn_id"] })).await;
    assert_eq!(cancel["type"], "cancel_requested", "{cancel}");
    let stopped = outcome(&mut socket, "apply_cancel").await;
    assert_eq!(stopped["payload"]["result"]["stage"], "cancelled", "{stopped}");
    socket.event("chat.turn_cancelled").await;
    let view = deployment(&app, &ana, &cancelled_plan, "failed").await;
    assert_eq!(view["failure_stage"], "cancelled");
    assert!(view["duration_ms"].as_i64().unwrap() < 8_000, "stopped before the run limit: {view}");
    assert!(lines(&marks.join("late")).is_empty(), "nothing ran past a stop");
    socket.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_killed_mid_apply_leaves_an_unknown_outcome_and_never_applies_again() {
    let llm = ScriptedLlm::start().await;
    let mut env = TestEnv::new().await;
    env.config.llm.base_url = llm.base_url.clone();
    // The gateway and projections here; the processors (relay, agent, the CLI runs) a binary.
    let app = App::spawn(&env, Roles { gateway: true, processors: false, projections: true }).await;
    let tofu = tofu().display().to_string();
    let processors = || {
        aurora_tests::spawn_aurora_role(
            &env,
            &["processors"],
            &[("AURORA_LLM_BASE_URL", &llm.base_url), ("AURORA_LLM_MODEL", "scripted-model"), ("AURORA_DEPLOY_TOFU_BIN", &tofu)],
        )
    };
    let ana = Caller::register(&app.base_url, "ana").await;
    let marks = marks();
    let mut first = processors();
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    let (session, planned) = write_and_plan(&mut socket, &llm, None, &marker(&marks, "one", " && sleep 60"), "slow").await;
    let plan_id = planned["plan_id"].as_str().unwrap().to_owned();
    ask(
        &mut socket,
        &llm,
        Some(&session),
        "apply the slow plan",
        vec![Step::tool("apply_slow", "iac_apply", json!({ "plan_id": plan_id })), Step::text("Lost.")],
    )
    .await;
    let requested = socket.event("confirmation.requested").await;
    confirm(&mut socket, &session, &requested, true).await;
    // The apply is under way (its provisioner ran) when its processor dies.
    eventually("the apply's mark", WAIT, || async { (!lines(&marks.join("applied")).is_empty()).then_some(()) }).await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();

    let _second = processors();
    let lost = outcome(&mut socket, "apply_slow").await;
    assert_eq!(lost["type"], "tool_call.failed", "{lost}");
    let error = lost["payload"]["error"].as_str().unwrap();
    assert!(error.contains("outcome unknown") && error.contains("plan again"), "{error}");
    answered(&mut socket, "Lost.").await;
    let view = deployment(&app, &ana, &plan_id, "outcome_unknown").await;
    assert_eq!(view["lost_lock"]["Operation"], "OperationTypeApply", "the lock says what was running: {view}");
    assert_eq!(env.count("SELECT count(*) FROM deploy_state_locks").await, 0, "the lost run's lock was released");
    assert_eq!(lines(&marks.join("applied")), vec!["applied"], "the apply ran once and was not run again");

    // The workspace can be planned again: what the lost apply did is whatever the state holds.
    ask(
        &mut socket,
        &llm,
        Some(&session),
        "plan after the loss",
        vec![Step::tool("replan", "iac_plan", json!({})), Step::text("Replanned.")],
    )
    .await;
    let replanned = outcome(&mut socket, "replan").await;
    assert!(matches!(replanned["payload"]["result"]["result"].as_str(), Some("changes" | "no_changes")), "{replanned}");
    answered(&mut socket, "Replanned.").await;
    assert_eq!(lines(&marks.join("applied")), vec!["applied"]);
    socket.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_cloud_credentials_reach_its_environment_and_nothing_that_is_kept_or_shown() {
    let moto = aurora_tests::servers::PrivateMoto::start(Some(5));
    let vault = aurora_tests::servers::ScratchVault::start();
    let connections = aurora_adapters::config::ConnectionsConfig { aws_endpoint: Some(moto.endpoint()), ..Default::default() };
    let account = aurora_tests::aws::set_up_account(&connections).await;
    // Azure, which cannot run here, answers in its documented formats from a local stand-in.
    let azure = aurora_testkit::providers::Providers::start().await;
    let (env, app, llm) = deploy_app(|env| {
        env.config.vault = vault.config();
        env.config.connections.aws_endpoint = Some(moto.endpoint());
        env.config.connections.azure_login_url = format!("{}/azure-login", azure.base_url);
        env.config.connections.azure_management_url = format!("{}/azure", azure.base_url);
        env.config.connections.allow_private_urls = true;
    })
    .await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let keys = json!({ "provider": "aws", "credentials": {
        "access_key_id": account.user.access_key_id, "secret_access_key": account.user.secret_access_key,
    }});
    let connected = ana.apply(http().post(app.url("/v1/connections"))).json(&keys).send().await.unwrap();
    assert_eq!(connected.status(), StatusCode::CREATED);
    let principal = json!({ "provider": "azure", "credentials": {
        "tenant_id": azure.azure_tenant, "client_id": azure.azure_client_id, "client_secret": azure.azure_client_secret,
    }});
    let connected = ana.apply(http().post(app.url("/v1/connections"))).json(&principal).send().await.unwrap();
    assert_eq!(connected.status(), StatusCode::CREATED);
    let secret = account.user.secret_access_key.clone();
    let azure_secret = azure.azure_client_secret.clone();
    let marks = marks();
    // The provisioner prints the run's secrets (the cloud key, the state server's password) and
    // leaves the key where only the test reads it.
    let main_tf = format!(
        "resource \"terraform_data\" \"leak\" {{\n  provisioner \"local-exec\" {{\n    command = \"echo key=$AWS_SECRET_ACCESS_KEY state=$TF_HTTP_PASSWORD region=$AWS_REGION azure=$ARM_CLIENT_SECRET tenant=$ARM_TENANT_ID; printf %s $AWS_SECRET_ACCESS_KEY > {marks}/key; printf %s $ARM_CLIENT_SECRET > {marks}/azure\"\n  }}\n}}\n",
        marks = marks.display()
    );
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    let (session, planned) = write_and_plan(&mut socket, &llm, None, &main_tf, "leak").await;
    let plan_id = planned["plan_id"].as_str().unwrap().to_owned();
    let applied = approved_apply(&mut socket, &llm, &session, "apply the leaky plan", "apply_leak", &plan_id, "Applied.").await;
    assert_eq!(applied["payload"]["result"]["result"], "applied", "{applied}");
    answered(&mut socket, "Applied.").await;
    deployment(&app, &ana, &plan_id, "applied").await;

    // The run had the organisation's key, read from the secret store for it.
    assert_eq!(std::fs::read_to_string(marks.join("key")).unwrap(), secret);
    assert_eq!(std::fs::read_to_string(marks.join("azure")).unwrap(), azure_secret);
    // What it printed was redacted wherever it went: the chat, the stored output, the events.
    let shown = applied["payload"]["result"]["output"].as_str().unwrap();
    let tenant = format!("key=[redacted] state=[redacted] region=us-east-1 azure=[redacted] tenant={}", azure.azure_tenant);
    assert!(shown.contains(&tenant), "{shown}");
    let streamed = streamed_output(&mut socket, "apply_leak", "key=").await;
    assert!(streamed.contains("key=[redacted]"), "{streamed}");
    let output = ana.apply(http().get(app.url(&format!("/v1/deployments/{plan_id}/output")))).send().await.unwrap().text().await.unwrap();
    assert!(output.contains("key=[redacted]"), "{output}");
    let frames = serde_json::to_string(&socket.frames).unwrap();
    let kept = everything_kept(&env).await;
    for (name, haystack) in [("the socket's frames", &frames), ("what Aurora kept", &kept), ("the stored output", &output)] {
        assert!(!haystack.contains(&secret), "the AWS secret key appears in {name}");
        assert!(!haystack.contains(&azure_secret), "the Azure client secret appears in {name}");
    }
    socket.close().await;
    app.stop().await;
}
