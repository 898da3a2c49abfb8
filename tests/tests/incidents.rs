//! Incidents end to end against the real stack: the four sources' documented payloads posted
//! over HTTP, the intake and the investigator as processors, the agent with the scripted
//! OpenAI-compatible model and the real knowledge tools, the read models, the change stream.

use std::time::Duration;

use aurora_commands::postgres::PostgresEventStore;
use aurora_commands::{AppendRequest, EventStore, ExpectedVersion, NewEvent};
use aurora_events::incident::{AlertSource, WebhookEvent, WebhookReceived};
use aurora_events::{Actor, EventPayload, OrgId};
use aurora_testkit::scripted_llm::{ScriptedLlm, Step};
use aurora_tests::chat::ChatSocket;
use aurora_tests::incidents::{
    accepted, alertmanager, datadog_default, datadog_documented, deliver, detail, detail_until, grafana, incidents, incidents_until,
    pagerduty, pagerduty_signature, rca_json, webhook_token, Fired,
};
use aurora_tests::knowledge::EventStream;
use aurora_tests::servers::ScratchVault;
use aurora_tests::{eventually, http, problem, App, Caller, Roles, TestEnv};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// A test world with the scripted model and a scratch OpenBao (the webhooks' shared secrets).
async fn incident_app(configure: impl FnOnce(&mut TestEnv)) -> (TestEnv, App, ScriptedLlm, ScratchVault) {
    let llm = ScriptedLlm::start().await;
    let vault = ScratchVault::start();
    let mut env = TestEnv::new().await;
    env.config.vault = vault.config();
    env.config.llm.base_url = llm.base_url.clone();
    env.config.llm.model = "scripted-model".into();
    env.config.llm.timeout = Duration::from_secs(5);
    configure(&mut env);
    let app = App::spawn(&env, Roles::ALL).await;
    (env, app, llm, vault)
}

fn by_source<'a>(list: &'a [Value], source: &str) -> &'a Value {
    list.iter().find(|incident| incident["source"] == source).unwrap_or_else(|| panic!("no {source} incident in {list:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_of_every_source_are_investigated_into_cited_honest_rcas() {
    let (_env, app, llm, _vault) = incident_app(|_| {}).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let ed = Caller::join(&app.base_url, &ana, "ed", "editor").await;
    let vic = Caller::join(&app.base_url, &ana, "vic", "viewer").await;
    let eve = Caller::register(&app.base_url, "eve").await;
    let token = webhook_token(&app, &ana).await;
    let set = ana
        .apply(http().put(app.url("/v1/incidents/webhook/secrets/pagerduty")))
        .json(&json!({ "secret": "pd-signing-secret-1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::NO_CONTENT);
    let mut live = EventStream::open(vic.apply(http().get(app.url("/v1/incidents/events")))).await;
    let mut elsewhere = EventStream::open(eve.apply(http().get(app.url("/v1/incidents/events")))).await;

    llm.script_containing(
        "Incident: CheckoutLatencyHigh",
        vec![
            Step::reasoned(
                "The alert says checkout p99 latency is high. I will search the runbooks for it first.",
                "call_kb",
                "knowledge_base_search",
                json!({ "query": "checkout latency" }),
            ),
            Step::text(&rca_json(
                "Checkout latency rose after the 03:00 deploy [1].",
                "confirmed",
                Some("A slow query shipped in the latest deploy [1]."),
                &[(1, "call_kb", "the runbook search answered for checkout latency")],
            )),
        ],
    );
    llm.script_containing(
        "Incident: CheckoutErrorRate",
        vec![Step::text(&rca_json("Errors rose; nothing shows why.", "inconclusive", None, &[]))],
    );
    llm.script_containing(
        "Incident: CPU high on web-1",
        vec![
            Step::reasoned(
                "Has this happened before? Earlier incidents may say.",
                "call_past",
                "past_investigations_search",
                json!({ "query": "CPU high web-1" }),
            ),
            Step::text(&rca_json(
                "CPU saturated on web-1 [1].",
                "likely",
                Some("A runaway batch job [1]."),
                &[(1, "call_past", "earlier incidents searched")],
            )),
        ],
    );
    // PagerDuty's investigation first claims a cause with no evidence: refused, asked again.
    llm.script_containing(
        "Incident: Ledger API down",
        vec![Step::text(&rca_json("The ledger went down.", "likely", Some("A bad deploy."), &[]))],
    );
    llm.script_containing(
        "Your RCA was refused",
        vec![Step::text(&rca_json("The ledger went down; the cause is not shown.", "inconclusive", None, &[]))],
    );

    let org = ana.org;
    let am =
        alertmanager("CheckoutLatencyHigh", &[Fired::firing("CheckoutLatencyHigh", "checkout", "checkout-1:9100", "a1b2c3d4e5f60718")]);
    let answer = accepted(&app, org, "alertmanager", &token, &am, &[]).await;
    assert_eq!((answer["alerts"].as_u64(), answer["duplicate"].as_bool()), (Some(1), Some(false)));
    accepted(&app, org, "grafana", &token, &grafana(&Fired::firing("CheckoutErrorRate", "payments-web", "", "c6eadffa33fcdf37")), &[])
        .await;
    accepted(&app, org, "datadog", &token, &datadog_default("Triggered", "CPU high on web-1", "5001"), &[]).await;
    let pd = pagerduty("01DEN0ZKJYXJSKG1CW1DH2ZWAM", "incident.triggered", "PGR0VU2", "Ledger API down");
    let signature = pagerduty_signature("pd-signing-secret-1", &pd);
    accepted(&app, org, "pagerduty", &token, &pd, &[("x-pagerduty-signature", signature.as_str())]).await;

    let list = incidents_until(&app, &vic, "", "four incidents investigated", |list| {
        list.len() == 4 && list.iter().all(|incident| matches!(incident["investigation_status"].as_str(), Some("completed" | "failed")))
    })
    .await;
    assert_eq!(by_source(&list, "alertmanager")["confidence"], "confirmed", "{list:#?}");
    assert_eq!(by_source(&list, "grafana")["confidence"], "inconclusive");
    assert_eq!(by_source(&list, "datadog")["confidence"], "likely");
    assert_eq!(by_source(&list, "pagerduty")["confidence"], "inconclusive", "the refused cause is not kept");
    assert_eq!(by_source(&list, "pagerduty")["service"], "Ledger API");
    assert_eq!(by_source(&list, "alertmanager")["severity"], "critical");
    let refusal = llm.requests().iter().any(|request| request.to_string().contains("must cite the evidence"));
    assert!(refusal, "the model was told why its RCA was refused");

    // The confirmed RCA cites a tool call whose whole output is retrievable; the thoughts are sentences.
    let checkout_id = by_source(&list, "alertmanager")["incident_id"].as_str().unwrap().to_owned();
    let checkout = detail(&app, &vic, &checkout_id).await;
    let rca = &checkout["investigations"][0]["rca"];
    assert_eq!(
        (rca["evidence"][0]["tool_call_id"].as_str(), rca["evidence"][0]["tool"].as_str()),
        (Some("call_kb"), Some("knowledge_base_search")),
        "{rca:#}"
    );
    assert_eq!(rca["root_cause"]["evidence"], json!([1]));
    assert_eq!(rca["not_checked"][0]["reason"], "no AWS connection");
    let thoughts: Vec<&str> =
        checkout["thoughts"].as_array().unwrap().iter().map(|thought| thought["data"]["text"].as_str().unwrap()).collect();
    assert_eq!(thoughts, vec!["The alert says checkout p99 latency is high.", "I will search the runbooks for it first."], "{checkout:#}");
    let call = checkout["tool_calls"].as_array().unwrap().iter().find(|call| call["tool_call_id"] == "call_kb").unwrap();
    assert_eq!(call["status"], "completed");
    let output = vic.apply(http().get(app.url(call["output_url"].as_str().unwrap()))).send().await.unwrap();
    assert_eq!(output.status(), StatusCode::OK);
    let output: Value = output.json().await.unwrap();
    assert!(output["result"]["results"].is_array(), "{output}");
    let not_ours = eve.apply(http().get(app.url(call["output_url"].as_str().unwrap()))).send().await.unwrap();
    assert_eq!(not_ours.status(), StatusCode::NOT_FOUND);
    // The payload is kept as received: Go's `\u003e` and `\u0026` are the characters they escape.
    let delivered = &checkout["deliveries"][0]["payload"];
    assert_eq!(delivered["alerts"][0]["annotations"]["description"], "p99 latency > 2s for 5m & rising");
    assert_eq!(checkout["alerts"][0]["links"]["runbook"], "https://runbooks.example.com/checkout");

    // The background run was offered read-only tools only, and told what the incident is.
    let investigation = llm.requests().into_iter().find(|request| request.to_string().contains("Incident: CheckoutLatencyHigh")).unwrap();
    let offered: Vec<String> =
        investigation["tools"].as_array().unwrap().iter().map(|tool| tool["function"]["name"].as_str().unwrap().to_owned()).collect();
    assert!(
        offered.contains(&"past_investigations_search".to_owned()) && offered.contains(&"knowledge_base_search".to_owned()),
        "{offered:?}"
    );
    assert!(!offered.contains(&"archive_chat_session".to_owned()), "a destructive tool was offered to a background run: {offered:?}");
    assert!(investigation.to_string().contains("checkout-1:9100"), "the alert's labels are in the brief");
    // The investigations' sessions are nobody's chat.
    let sessions: Value = vic.apply(http().get(app.url("/v1/chat/sessions"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(sessions, json!([]));

    // The viewer watched it live; the other organisation saw nothing.
    live.until("a thought, live", Duration::from_secs(30), |entry| {
        entry["event_type"] == "investigation.thought_recorded" && entry["incident_id"] == checkout_id.as_str()
    })
    .await;
    live.until("the RCA, live", Duration::from_secs(30), |entry| entry["event_type"] == "investigation.completed").await;
    elsewhere.drain(Duration::from_millis(500)).await;
    assert!(elsewhere.events.is_empty(), "another organisation's stream showed {:#?}", elsewhere.events);
    // Resuming with Last-Event-ID replays what came after it, in order.
    let first = live.events.first().unwrap()["position"].as_i64().unwrap();
    let mut resumed =
        EventStream::open(vic.apply(http().get(app.url("/v1/incidents/events")).header("last-event-id", first.to_string()))).await;
    let next = resumed.until("the next change", Duration::from_secs(10), |_| true).await;
    assert_eq!(next["position"].as_i64(), live.events.get(1).and_then(|entry| entry["position"].as_i64()));

    // A follow-up chat knows the incident and its RCA.
    let opened = ed.apply(http().post(app.url(&format!("/v1/incidents/{checkout_id}/chat")))).send().await.unwrap();
    assert_eq!(opened.status(), StatusCode::CREATED);
    let session_id = opened.json::<Value>().await.unwrap()["session_id"].as_str().unwrap().to_owned();
    llm.script("what should we do first?", vec![Step::text("Roll back the deploy.")]);
    let mut socket = ChatSocket::open(&app.base_url, &ed).await;
    let asked =
        socket.request(json!({ "type": "query", "text": "what should we do first?", "mode": "ask", "session_id": session_id })).await;
    assert_eq!(asked["type"], "accepted", "{asked}");
    socket.event("chat.assistant_message_completed").await;
    let request = llm.requests_for("what should we do first?").pop().unwrap();
    let system = request["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("A slow query shipped in the latest deploy [1]."), "{system}");
    let metrics: Value = vic.apply(http().get(app.url("/v1/incidents/metrics"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(metrics["incidents"], 4);
    assert!(metrics["median_time_to_rca_secs"].as_f64().is_some(), "{metrics}");
    app.stop().await;
}

/// A change stream opened with `?ticket=` (a browser's `EventSource` sends no header).
async fn stream_by_ticket(app: &App, path: &str, ticket: &str) -> EventStream {
    EventStream::open(http().get(app.url(&format!("{path}?ticket={ticket}")))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_streams_take_a_ticket_and_end_with_the_membership_or_the_credential() {
    let (_env, app, llm, _vault) = incident_app(|_| {}).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let vic = Caller::join(&app.base_url, &ana, "vic", "viewer").await;
    let ed = Caller::join(&app.base_url, &ana, "ed", "editor").await;
    let eve = Caller::register(&app.base_url, "eve").await;
    let token = webhook_token(&app, &ana).await;
    let vics_token = vic.create_token(&app, "viewer").await;

    // A ticket opens one stream, once; a made-up one none.
    let ticket = vic.ticket(&app).await;
    let mut vic_by_ticket = stream_by_ticket(&app, "/v1/incidents/events", &ticket).await;
    for used in [ticket.as_str(), "auw_made_up"] {
        let again = http().get(app.url(&format!("/v1/incidents/events?ticket={used}"))).send().await.unwrap();
        let refused = problem(again, StatusCode::UNAUTHORIZED).await;
        assert!(refused["detail"].as_str().unwrap().contains("ticket"), "{refused}");
    }
    let mut vic_documents = stream_by_ticket(&app, "/v1/knowledge/events", &vic.ticket(&app).await).await;
    let mut vic_by_cookie = EventStream::open(vic.apply(http().get(app.url("/v1/incidents/events")))).await;
    let mut vic_by_token = EventStream::open(http().get(app.url("/v1/incidents/events")).bearer_auth(&vics_token)).await;
    let mut ed_by_cookie = EventStream::open(ed.apply(http().get(app.url("/v1/incidents/events")))).await;
    let mut ed_by_ticket = stream_by_ticket(&app, "/v1/incidents/events", &ed.ticket(&app).await).await;
    let mut elsewhere = stream_by_ticket(&app, "/v1/incidents/events", &eve.ticket(&app).await).await;

    // Each shows the organisation's changes, the other organisation's none.
    llm.script_containing("Incident: StreamedAlert", vec![Step::text(&rca_json("Nothing shows why.", "inconclusive", None, &[]))]);
    let am = alertmanager("StreamedAlert", &[Fired::firing("StreamedAlert", "search", "search-1:9100", "5e1f00d2a9b3c4e7")]);
    accepted(&app, ana.org, "alertmanager", &token, &am, &[]).await;
    for stream in [&mut vic_by_ticket, &mut vic_by_cookie, &mut vic_by_token, &mut ed_by_cookie, &mut ed_by_ticket] {
        stream.until("the incident opened", Duration::from_secs(30), |entry| entry["event_type"] == "incident.opened").await;
    }
    elsewhere.drain(Duration::from_millis(500)).await;
    assert!(elsewhere.events.is_empty(), "another organisation's stream showed {:#?}", elsewhere.events);
    // The streams stay open past the first recheck (two seconds) while the caller may read.
    assert!(!vic_by_cookie.ends_within(Duration::from_secs(3)).await, "a member's stream ended");

    // Logging out ends the session's streams, the one opened with its ticket too.
    let logout = ed.apply(http().post(app.url("/v1/auth/logout"))).send().await.unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert!(ed_by_cookie.ends_within(Duration::from_secs(10)).await, "a logged-out session's stream went on");
    assert!(ed_by_ticket.ends_within(Duration::from_secs(10)).await, "a stream opened with a logged-out session's ticket went on");

    // A member removed stops receiving, however the stream was opened.
    let removed = ana.apply(http().delete(app.url(&format!("/v1/org/members/{}", vic.user_id)))).send().await.unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    for (how, stream) in [
        ("ticket", &mut vic_by_ticket),
        ("ticket, documents", &mut vic_documents),
        ("cookie", &mut vic_by_cookie),
        ("token", &mut vic_by_token),
    ] {
        assert!(stream.ends_within(Duration::from_secs(10)).await, "a removed member's stream ({how}) went on");
    }
    assert!(!elsewhere.ends_within(Duration::from_millis(500)).await, "another organisation's stream ended");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_repeats_resolutions_grouping_split_and_merge() {
    let (_env, app, _llm, _vault) = incident_app(|env| env.config.incident.auto_investigate = false).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let ed = Caller::join(&app.base_url, &ana, "ed", "editor").await;
    let vic = Caller::join(&app.base_url, &ana, "vic", "viewer").await;
    let token = webhook_token(&app, &ana).await;
    let org = ana.org;

    // Two alerts of one service in one notification: one incident; the second grouped with a reason.
    let both = alertmanager(
        "HighLatency",
        &[Fired::firing("HighLatency", "checkout", "a:9100", "fp-a"), Fired::firing("HighErrors", "checkout", "b:9100", "fp-b")],
    );
    let first = accepted(&app, org, "alertmanager", &token, &both, &[]).await;
    let again = accepted(&app, org, "alertmanager", &token, &both, &[]).await;
    assert_eq!(
        (again["duplicate"].as_bool(), again["delivery_id"].clone()),
        (Some(true), first["delivery_id"].clone()),
        "a redelivery is recognised"
    );
    let list = incidents_until(&app, &vic, "", "one incident with two alerts", |list| list.len() == 1 && list[0]["alert_count"] == 2).await;
    let incident_id = list[0]["incident_id"].as_str().unwrap().to_owned();
    let found = detail(&app, &vic, &incident_id).await;
    let rules: Vec<&str> = found["alerts"].as_array().unwrap().iter().map(|alert| alert["grouping_rule"].as_str().unwrap()).collect();
    assert_eq!(rules, vec!["opened", "same_service"]);
    assert_eq!(found["alerts"][1]["grouping_reason"], "same service `checkout` within the grouping window");

    // A repeat firing of alert a is recorded on it; a mixed notification resolves b and fires a again.
    let repeat = alertmanager("HighLatency-repeat", &[Fired::firing("HighLatency", "checkout", "a:9100", "fp-a")]);
    accepted(&app, org, "alertmanager", &token, &repeat, &[]).await;
    detail_until(&app, &vic, &incident_id, "alert a fired twice", |found| found["alerts"][0]["firings"] == 2).await;
    let mixed = alertmanager(
        "HighLatency-mixed",
        &[Fired::firing("HighLatency", "checkout", "a:9100", "fp-a"), Fired::resolved("HighErrors", "checkout", "b:9100", "fp-b")],
    );
    accepted(&app, org, "alertmanager", &token, &mixed, &[]).await;
    let partly = detail_until(&app, &vic, &incident_id, "b resolved, a firing", |found| found["incident"]["firing_count"] == 1).await;
    assert_eq!(partly["incident"]["status"], "open", "one alert still fires");
    assert_eq!(partly["alerts"][0]["firings"], 3);
    assert_eq!(incidents(&app, &vic, "").await.len(), 1, "no repeat opened a new incident");

    // An alert of another service with the same cluster and namespace groups by labels.
    let mut related = Fired::firing("PodRestarts", "inventory", "c:9100", "fp-c");
    related.extra_labels = r#","cluster":"eu-1","namespace":"shop""#;
    let mut anchor = Fired::firing("DiskFull", "billing", "d:9100", "fp-d");
    anchor.extra_labels = r#","cluster":"eu-1","namespace":"shop""#;
    accepted(&app, org, "alertmanager", &token, &alertmanager("DiskFull", &[anchor]), &[]).await;
    let list = incidents_until(&app, &vic, "", "the billing incident", |list| list.len() == 2).await;
    let billing_id = list.iter().find(|incident| incident["service"] == "billing").unwrap()["incident_id"].as_str().unwrap().to_owned();
    accepted(&app, org, "alertmanager", &token, &alertmanager("PodRestarts", &[related]), &[]).await;
    let billing =
        detail_until(&app, &vic, &billing_id, "the inventory alert grouped by labels", |found| found["incident"]["alert_count"] == 2).await;
    let grouped = &billing["alerts"][1];
    assert_eq!(grouped["grouping_rule"], "matching_labels");
    assert!(grouped["grouping_score"].as_f64().unwrap() >= 0.5, "{grouped}");

    // Split it off again, then merge it back.
    let split = ed
        .apply(http().post(app.url(&format!("/v1/incidents/{billing_id}/split"))))
        .json(&json!({ "alerts": [{ "source": "alertmanager", "fingerprint": "fp-c" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(split.status(), StatusCode::CREATED);
    let split_id = split.json::<Value>().await.unwrap()["incident_id"].as_str().unwrap().to_owned();
    let split_off = detail_until(&app, &vic, &split_id, "the split incident", |found| found["incident"]["alert_count"] == 1).await;
    assert_eq!(split_off["incident"]["split_from"], billing_id.as_str());
    detail_until(&app, &vic, &billing_id, "one alert left", |found| found["incident"]["alert_count"] == 1).await;
    let last = ed
        .apply(http().post(app.url(&format!("/v1/incidents/{billing_id}/split"))))
        .json(&json!({ "alerts": [{ "source": "alertmanager", "fingerprint": "fp-d" }] }))
        .send()
        .await
        .unwrap();
    problem(last, StatusCode::UNPROCESSABLE_ENTITY).await;
    let merged = ed
        .apply(http().post(app.url(&format!("/v1/incidents/{split_id}/merge"))))
        .json(&json!({ "into": billing_id }))
        .send()
        .await
        .unwrap();
    assert_eq!(merged.status(), StatusCode::OK);
    detail_until(&app, &vic, &billing_id, "the alert merged back", |found| {
        found["incident"]["alert_count"] == 2 && found["alerts"].as_array().unwrap().iter().any(|alert| alert["grouping_rule"] == "merged")
    })
    .await;
    detail_until(&app, &vic, &split_id, "the merged incident closed", |found| found["incident"]["status"] == "merged").await;

    // People's changes, each with its actor; a viewer may not make them.
    let viewer_ack = vic.apply(http().post(app.url(&format!("/v1/incidents/{incident_id}/acknowledge")))).send().await.unwrap();
    problem(viewer_ack, StatusCode::FORBIDDEN).await;
    let ack = ed.apply(http().post(app.url(&format!("/v1/incidents/{incident_id}/acknowledge")))).send().await.unwrap();
    assert_eq!(ack.status(), StatusCode::OK);
    let severity = ed
        .apply(http().post(app.url(&format!("/v1/incidents/{incident_id}/severity"))))
        .json(&json!({ "severity": "high" }))
        .send()
        .await
        .unwrap();
    assert_eq!(severity.status(), StatusCode::OK);
    let acked = detail_until(&app, &vic, &incident_id, "acknowledged, high", |found| found["incident"]["severity"] == "high").await;
    assert_eq!(acked["incident"]["acknowledged_by"], format!("user:{}", ed.user_id));
    assert!(acked["incident"]["time_to_acknowledge_secs"].as_f64().is_some());

    // The last alert resolving resolves the incident with its duration; the postmortem is drafted.
    let ended = alertmanager("HighLatency-end", &[Fired::resolved("HighLatency", "checkout", "a:9100", "fp-a")]);
    accepted(&app, org, "alertmanager", &token, &ended, &[]).await;
    let resolved = detail_until(&app, &vic, &incident_id, "resolved with a postmortem draft", |found| {
        found["incident"]["status"] == "resolved" && found["postmortem_versions"].as_array().is_some_and(|versions| !versions.is_empty())
    })
    .await;
    assert_eq!(resolved["incident"]["resolution"], "alerts_resolved");
    assert!(resolved["incident"]["duration_secs"].as_i64().is_some());
    let draft: Value =
        vic.apply(http().get(app.url(&format!("/v1/incidents/{incident_id}/postmortem")))).send().await.unwrap().json().await.unwrap();
    let markdown = draft["markdown"].as_str().unwrap();
    for section in [
        "## Summary",
        "## Timeline",
        "## Root cause",
        "## Impact",
        "## Contributing factors",
        "## Resolution",
        "## Action items",
        "## Lessons",
    ] {
        assert!(markdown.contains(section), "{section} missing from {markdown}");
    }
    assert!(markdown.contains(&format!("Acknowledged by user:{}", ed.user_id)), "{markdown}");
    let edited = ed
        .apply(http().put(app.url(&format!("/v1/incidents/{incident_id}/postmortem"))))
        .json(&json!({ "markdown": "# Postmortem\n\nWe rolled back." }))
        .send()
        .await
        .unwrap();
    assert_eq!(edited.status(), StatusCode::OK);
    let restored = ed
        .apply(http().post(app.url(&format!("/v1/incidents/{incident_id}/postmortem/restore"))))
        .json(&json!({ "version": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(restored.status(), StatusCode::OK);
    let latest: Value = eventually("three versions", Duration::from_secs(30), || async {
        let latest: Value =
            vic.apply(http().get(app.url(&format!("/v1/incidents/{incident_id}/postmortem")))).send().await.unwrap().json().await.unwrap();
        (latest["version"] == 3).then_some(latest)
    })
    .await;
    assert_eq!((latest["origin"].as_str(), latest["restored_from"].as_i64()), (Some("restored"), Some(1)));
    assert_eq!(latest["markdown"], draft["markdown"]);
    let second: Value = vic
        .apply(http().get(app.url(&format!("/v1/incidents/{incident_id}/postmortem/versions/2"))))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second["markdown"], "# Postmortem\n\nWe rolled back.");
    let export = vic.apply(http().get(app.url(&format!("/v1/incidents/{incident_id}/postmortem/export")))).send().await.unwrap();
    assert!(export.headers()["content-type"].to_str().unwrap().starts_with("text/markdown"));
    assert_eq!(export.text().await.unwrap(), markdown);

    // Reopened by a person; filters and pages.
    let reopen = ed.apply(http().post(app.url(&format!("/v1/incidents/{incident_id}/reopen")))).send().await.unwrap();
    assert_eq!(reopen.status(), StatusCode::OK);
    detail_until(&app, &vic, &incident_id, "reopened", |found| found["incident"]["status"] == "acknowledged").await;
    let page: Value = vic.apply(http().get(app.url("/v1/incidents?limit=1"))).send().await.unwrap().json().await.unwrap();
    let cursor = page["next_cursor"].as_str().unwrap();
    let next: Value = vic
        .apply(http().get(app.url(&format!("/v1/incidents?limit=1&cursor={}", urlencode(cursor)))))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(page["incidents"][0]["incident_id"], next["incidents"][0]["incident_id"]);
    assert_eq!(incidents(&app, &vic, "?service=billing").await.len(), 1);
    assert_eq!(incidents(&app, &vic, "?status=merged").await.len(), 1);
    assert_eq!(incidents(&app, &vic, "?source=grafana").await.len(), 0);
    let bad = vic.apply(http().get(app.url("/v1/incidents?status=exploded"))).send().await.unwrap();
    problem(bad, StatusCode::BAD_REQUEST).await;
    app.stop().await;
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_deliveries_are_refused_and_reach_no_processor() {
    let (env, app, _llm, _vault) = incident_app(|env| env.config.incident.auto_investigate = false).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let eve = Caller::register(&app.base_url, "eve").await;
    let token = webhook_token(&app, &ana).await;
    let eve_token = webhook_token(&app, &eve).await;
    let org = ana.org;
    let good = alertmanager("Good", &[Fired::firing("Good", "checkout", "a:9100", "fp-good")]);

    // Unknown organisation, token or source: 404, the same for each.
    for (org_text, source, token_text) in [
        (uuid::Uuid::now_v7().to_string(), "alertmanager", token.as_str()),
        ("not-a-uuid".to_owned(), "alertmanager", token.as_str()),
        (org.to_string(), "alertmanager", "awh_wrong"),
        (org.to_string(), "alertmanager", eve_token.as_str()),
        (org.to_string(), "nagios", token.as_str()),
    ] {
        let response = http()
            .post(app.url(&format!("/v1/webhooks/{org_text}/{source}/{token_text}")))
            .header("content-type", "application/json")
            .body(good.clone())
            .send()
            .await
            .unwrap();
        problem(response, StatusCode::NOT_FOUND).await;
    }
    // Bad bodies: 400 with a problem document; oversized 413; not JSON 415.
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("malformed", b"{\"version\": \"4\", \"alerts\": [".to_vec()),
        ("wrong type", br#"{"version":"4","alerts":[{"status":"firing","labels":"not a map"}]}"#.to_vec()),
        ("missing field", br#"{"version":"4"}"#.to_vec()),
        ("array for object", br#"[{"version":"4","alerts":[]}]"#.to_vec()),
        ("nested deep", deep.into_bytes()),
        ("invalid utf-8", vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}']),
        ("empty", Vec::new()),
        ("old version", br#"{"version":"3","alerts":[]}"#.to_vec()),
    ];
    for (what, body) in cases {
        let response = http()
            .post(aurora_tests::incidents::webhook_url(&app, org, "alertmanager", &token))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let refused = problem(response, StatusCode::BAD_REQUEST).await;
        assert!(refused["detail"].as_str().is_some_and(|detail| !detail.is_empty()), "{what}: {refused}");
    }
    let huge = format!(r#"{{"version":"4","alerts":[],"padding":"{}"}}"#, "x".repeat(300 * 1024));
    problem(deliver(&app, org, "alertmanager", &token, &huge, &[]).await, StatusCode::PAYLOAD_TOO_LARGE).await;
    let wrong_type = http()
        .post(aurora_tests::incidents::webhook_url(&app, org, "alertmanager", &token))
        .header("content-type", "text/plain")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    problem(wrong_type, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    // Signatures: PagerDuty's HMAC, including two signatures while its secret rotates.
    let set = |secret: &'static str| {
        let request = ana.apply(http().put(app.url("/v1/incidents/webhook/secrets/pagerduty"))).json(&json!({ "secret": secret }));
        async move { assert_eq!(request.send().await.unwrap().status(), StatusCode::NO_CONTENT) }
    };
    set("old-signing-secret").await;
    let pd = pagerduty("evt-1", "incident.triggered", "PDINC1", "Queue backlog");
    problem(deliver(&app, org, "pagerduty", &token, &pd, &[]).await, StatusCode::UNAUTHORIZED).await;
    let forged = pagerduty_signature("not-the-secret", &pd);
    problem(deliver(&app, org, "pagerduty", &token, &pd, &[("x-pagerduty-signature", forged.as_str())]).await, StatusCode::UNAUTHORIZED)
        .await;
    set("new-signing-secret").await;
    let old = pagerduty_signature("old-signing-secret", &pd);
    problem(deliver(&app, org, "pagerduty", &token, &pd, &[("x-pagerduty-signature", old.as_str())]).await, StatusCode::UNAUTHORIZED).await;
    let rotating = format!("{},{}", pagerduty_signature("old-signing-secret", &pd), pagerduty_signature("new-signing-secret", &pd));
    accepted(&app, org, "pagerduty", &token, &pd, &[("x-pagerduty-signature", rotating.as_str())]).await;
    // A shared secret for Alertmanager is its bearer token.
    let set_am = ana
        .apply(http().put(app.url("/v1/incidents/webhook/secrets/alertmanager")))
        .json(&json!({ "secret": "am-bearer-secret" }))
        .send()
        .await
        .unwrap();
    assert_eq!(set_am.status(), StatusCode::NO_CONTENT);
    problem(deliver(&app, org, "alertmanager", &token, &good, &[("authorization", "Bearer wrong")]).await, StatusCode::UNAUTHORIZED).await;
    accepted(&app, org, "alertmanager", &token, &good, &[("authorization", "Bearer am-bearer-secret")]).await;
    // A rotated token stops the old one at once, also on another gateway that checked it before
    // (it keeps endpoints for 5 s unless told of a change: it must have been told).
    let other_gateway = App::spawn(&env, Roles { gateway: true, processors: false, projections: false }).await;
    accepted(&other_gateway, org, "alertmanager", &token, &good, &[("authorization", "Bearer am-bearer-secret")]).await;
    let new_token = webhook_token(&app, &ana).await;
    problem(
        deliver(&app, org, "alertmanager", &token, &good, &[("authorization", "Bearer am-bearer-secret")]).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    eventually("the other gateway to refuse the old token", Duration::from_secs(4), || async {
        let response = deliver(&other_gateway, org, "alertmanager", &token, &good, &[("authorization", "Bearer am-bearer-secret")]).await;
        (response.status() == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    other_gateway.stop().await;
    let again = accepted(&app, org, "alertmanager", &new_token, &good, &[("authorization", "Bearer am-bearer-secret")]).await;
    assert_eq!(again["duplicate"], true);
    // A PagerDuty event that changes no alert is accepted and ignored.
    let note = pagerduty("evt-2", "incident.annotated", "PDINC1", "Queue backlog");
    let signature = pagerduty_signature("new-signing-secret", &note);
    let ignored = accepted(&app, org, "pagerduty", &new_token, &note, &[("x-pagerduty-signature", signature.as_str())]).await;
    assert!(ignored["ignored"].is_string());

    // Only the accepted deliveries were recorded; the Datadog documented template works too.
    accepted(&app, org, "datadog", &new_token, &datadog_documented("Triggered", "CPU high", "4242", "service:search,env:prod"), &[]).await;
    let list = incidents_until(&app, &ana, "", "the three incidents", |list| list.len() == 3).await;
    assert!(list.iter().any(|incident| incident["service"] == "search"), "{list:#?}");
    assert_eq!(env.count("SELECT count(*) FROM events WHERE event_type = 'webhook.received'").await, 4);
    // No token or shared secret is in any event or read model; the secrets are in the secret store.
    for secret in [token.as_str(), new_token.as_str(), "old-signing-secret", "new-signing-secret", "am-bearer-secret"] {
        let leaks = env.count(&format!("SELECT count(*) FROM events WHERE payload::text LIKE '%{secret}%'")).await
            + env.count(&format!("SELECT count(*) FROM incident_timeline WHERE data::text LIKE '%{secret}%'")).await;
        assert_eq!(leaks, 0, "a secret reached the record");
    }
    // A NUL inside a vendor's string is recorded, replaced, rather than refused.
    let with_nul = alertmanager("Nul", &[Fired::firing(r"Nul\u0000Alert", "nul", "a:1", "fp-nul")]);
    accepted(&app, org, "alertmanager", &new_token, &with_nul, &[("authorization", "Bearer am-bearer-secret")]).await;
    incidents_until(&app, &ana, "", "the incident of the alert with a NUL", |list| list.len() == 4).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_deliveries_is_limited_per_organisation_and_the_refused_are_not_recorded() {
    let (env, app, _llm, _vault) = incident_app(|env| {
        env.config.incident.auto_investigate = false;
        env.config.incident.webhook_rate_limit = 5;
        env.config.incident.webhook_rate_window = Duration::from_secs(60);
    })
    .await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let eve = Caller::register(&app.base_url, "eve").await;
    let (ana_token, eve_token) = (webhook_token(&app, &ana).await, webhook_token(&app, &eve).await);
    let alert =
        |index: usize| alertmanager(&format!("Flood{index}"), &[Fired::firing("Flood", "flood", "a:1", &format!("fp-flood-{index}"))]);
    for index in 0..5 {
        accepted(&app, ana.org, "alertmanager", &ana_token, &alert(index), &[]).await;
    }
    let refused = deliver(&app, ana.org, "alertmanager", &ana_token, &alert(5), &[]).await;
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After says when the window ends: {retry_after}");
    let body = problem(refused, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body["status"], 429);
    // Another organisation's deliveries go on; a wrong token is still not found, not limited.
    accepted(&app, eve.org, "alertmanager", &eve_token, &alert(0), &[]).await;
    problem(deliver(&app, ana.org, "alertmanager", "awh_wrong", &alert(6), &[]).await, StatusCode::NOT_FOUND).await;
    incidents_until(&app, &eve, "", "eve's incident", |list| list.len() == 1).await;
    // Ana's five alerts of one service group into one incident.
    incidents_until(&app, &ana, "", "ana's five accepted alerts", |list| {
        list.iter().map(|incident| incident["alert_count"].as_i64().unwrap()).sum::<i64>() == 5
    })
    .await;
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'webhook.received' AND org_id = $1")
        .bind(ana.org)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(recorded, 5, "the refused delivery recorded nothing");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_accepted_while_processors_are_down_are_handled_when_they_return() {
    let llm = ScriptedLlm::start().await;
    let mut env = TestEnv::new().await;
    env.config.llm.base_url = llm.base_url.clone();
    env.config.incident.auto_investigate = false;
    let gateway = App::spawn(&env, Roles { gateway: true, processors: false, projections: true }).await;
    let ana = Caller::register(&gateway.base_url, "ana").await;
    let token = webhook_token(&gateway, &ana).await;
    for index in 0..5 {
        let fingerprint = format!("fp-down-{index}");
        let service = format!("service-{index}");
        let body = alertmanager(&format!("Down{index}"), &[Fired::firing("Down", &service, "x:1", &fingerprint)]);
        accepted(&gateway, ana.org, "alertmanager", &token, &body, &[]).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(incidents(&gateway, &ana, "").await.is_empty(), "nothing acts while the processors are down");
    let processors = App::spawn(&env, Roles { gateway: false, processors: true, projections: false }).await;
    incidents_until(&gateway, &ana, "", "every accepted alert became an incident", |list| list.len() == 5).await;
    processors.stop().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organisation_whose_intake_is_held_up_holds_up_no_other() {
    let llm = ScriptedLlm::start().await;
    let mut env = TestEnv::new().await;
    env.config.llm.base_url = llm.base_url.clone();
    env.config.incident.auto_investigate = false;
    let app = App::spawn(&env, Roles::ALL).await;
    let (ana, eve) = (Caller::register(&app.base_url, "ana").await, Caller::register(&app.base_url, "eve").await);
    let (ana_token, eve_token) = (webhook_token(&app, &ana).await, webhook_token(&app, &eve).await);
    // Ana's decisions wait on her organisation's intake lock, held here as a slow or stuck
    // decision of hers would hold it.
    let mut holder = env.pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(aurora_processors::incident::intake::lock_key(aurora_events::OrgId(ana.org)))
        .execute(&mut *holder)
        .await
        .unwrap();
    for index in 0..3 {
        let body =
            alertmanager(&format!("Held{index}"), &[Fired::firing("Held", &format!("held-{index}"), "x:1", &format!("fp-held-{index}"))]);
        accepted(&app, ana.org, "alertmanager", &ana_token, &body, &[]).await;
    }
    let body = alertmanager("Free", &[Fired::firing("Free", "free", "x:1", "fp-free")]);
    accepted(&app, eve.org, "alertmanager", &eve_token, &body, &[]).await;
    incidents_until(&app, &eve, "", "eve's incident, delivered after ana's", |list| list.len() == 1).await;
    assert!(incidents(&app, &ana, "").await.is_empty(), "ana's alerts wait for her intake");
    sqlx::query("SELECT pg_advisory_unlock_all()").execute(&mut *holder).await.unwrap();
    drop(holder);
    incidents_until(&app, &ana, "", "ana's incidents once her intake goes on", |list| list.len() == 3).await;
    app.stop().await;
}

/// Records a delivery of `body` received at `received_at`, as the gateway records one: what the
/// intake reads, in the order this test chooses.
async fn record_delivery(env: &TestEnv, org: Uuid, body: &str, received_at: chrono::DateTime<chrono::Utc>) {
    let payload: Value = serde_json::from_str(body).unwrap();
    let body_sha256 = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(body.as_bytes()));
    let delivery_id = Uuid::now_v7();
    let received =
        WebhookEvent::Received(WebhookReceived { delivery_id, source: AlertSource::Alertmanager, received_at, body_sha256, payload });
    PostgresEventStore::new(env.pool.clone())
        .append(AppendRequest {
            stream: WebhookEvent::stream_of(delivery_id),
            expected: ExpectedVersion::NoStream,
            command_id: None,
            org_id: OrgId(org),
            actor: Actor::Webhook("alertmanager".into()),
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            traceparent: None,
            occurred_at: chrono::Utc::now(),
            events: vec![NewEvent::from_payload(&received)],
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_read_out_of_order_end_where_they_were_sent() {
    // One organisation's deliveries are streams of their own, on several partitions: a
    // resolution can be read before the firing sent before it. Here the intake reads them so.
    let (env, app, _llm, _vault) = incident_app(|env| env.config.incident.auto_investigate = false).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let now = chrono::Utc::now();
    let fired = alertmanager("Late", &[Fired::firing("Late", "queue", "q:1", "fp-late")]);
    let resolved = alertmanager("Late", &[Fired::resolved("Late", "queue", "q:1", "fp-late")]);
    record_delivery(&env, ana.org, &resolved, now).await;
    let early = format!("SELECT count(*) FROM incident_intake_early_resolutions WHERE org_id = '{}'", ana.org);
    eventually("the resolution read", Duration::from_secs(30), || async { (env.count(&early).await == 1).then_some(()) }).await;
    record_delivery(&env, ana.org, &fired, now - chrono::Duration::seconds(60)).await;
    let list = incidents_until(&app, &ana, "", "the alert opened and ended by the resolution sent after it", |list| {
        list.len() == 1 && list[0]["status"] == "resolved"
    })
    .await;
    let incident_id = list[0]["incident_id"].as_str().unwrap().to_owned();
    let found = detail(&app, &ana, &incident_id).await;
    assert_eq!(found["incident"]["firing_count"], 0, "{found:#}");

    // A firing sent before that resolution and read after it opens nothing; the new alert sent
    // with it (read after it, in the same notification) shows it was read.
    let stale =
        alertmanager("Stale", &[Fired::firing("Late", "queue", "q:1", "fp-late"), Fired::firing("Fresh", "mail", "m:1", "fp-fresh")]);
    record_delivery(&env, ana.org, &stale, now - chrono::Duration::seconds(30)).await;
    let list = incidents_until(&app, &ana, "", "the fresh alert's incident", |list| list.len() == 2).await;
    let late = list.iter().find(|incident| incident["incident_id"] == incident_id.as_str()).expect("the first incident");
    assert_eq!(late["status"], "resolved", "an outdated firing reopens nothing: {list:#?}");
    assert_eq!(detail(&app, &ana, &incident_id).await["alerts"][0]["firings"], 1, "nor counts as a firing");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_investigation_that_hits_a_limit_fails_with_its_reason_and_keeps_its_thoughts() {
    let (_env, app, llm, _vault) = incident_app(|env| {
        env.config.incident.investigation_tool_calls = 1;
        env.config.incident.max_concurrent_investigations = 1;
    })
    .await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let token = webhook_token(&app, &ana).await;
    llm.script_containing(
        "Incident: ToolHungry",
        vec![
            Step::reasoned("First the runbooks.", "call_1", "knowledge_base_search", json!({ "query": "a" })),
            Step::reasoned("Then the past incidents.", "call_2", "past_investigations_search", json!({ "query": "b" })),
        ],
    );
    llm.script_containing("Incident: Queued", vec![Step::text(&rca_json("Nothing found.", "inconclusive", None, &[]))]);
    accepted(&app, ana.org, "alertmanager", &token, &alertmanager("ToolHungry", &[Fired::firing("ToolHungry", "one", "x:1", "fp-1")]), &[])
        .await;
    accepted(&app, ana.org, "alertmanager", &token, &alertmanager("Queued", &[Fired::firing("Queued", "two", "x:1", "fp-2")]), &[]).await;
    let list = incidents_until(&app, &ana, "", "both investigations ended", |list| {
        list.len() == 2 && list.iter().all(|incident| matches!(incident["investigation_status"].as_str(), Some("completed" | "failed")))
    })
    .await;
    let hungry = list.iter().find(|incident| incident["title"] == "ToolHungry").unwrap();
    assert_eq!(hungry["investigation_status"], "failed");
    let found = detail(&app, &ana, hungry["incident_id"].as_str().unwrap()).await;
    let investigation = &found["investigations"][0];
    assert_eq!(investigation["failure_reason"], "tool_call_limit", "{investigation:#}");
    assert!(investigation["failure_message"].as_str().unwrap().contains("limit of 1 tool calls"));
    let thoughts: Vec<&str> =
        found["thoughts"].as_array().unwrap().iter().map(|thought| thought["data"]["text"].as_str().unwrap()).collect();
    assert_eq!(thoughts, vec!["First the runbooks.", "Then the past incidents."]);
    // With one slot, the two never ran at once: whichever started second started after the first ended.
    let queued =
        detail(&app, &ana, list.iter().find(|incident| incident["title"] == "Queued").unwrap()["incident_id"].as_str().unwrap()).await;
    let span = |investigation: &Value| {
        let at = |field: &str| chrono::DateTime::parse_from_rfc3339(investigation[field].as_str().unwrap()).unwrap();
        (at("started_at"), at("ended_at"))
    };
    let (one, other) = (span(investigation), span(&queued["investigations"][0]));
    assert!(other.0 >= one.1 || one.0 >= other.1, "the investigations overlapped: {one:?} and {other:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_rca_is_asked_again_within_what_is_left_of_the_limits() {
    let (_env, app, llm, _vault) = incident_app(|env| env.config.incident.investigation_tool_calls = 1).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let token = webhook_token(&app, &ana).await;
    // The first answer claims a cause with no evidence, after the one tool call the investigation has.
    llm.script_containing(
        "Incident: Overspent",
        vec![
            Step::reasoned("First the runbooks.", "call_1", "knowledge_base_search", json!({ "query": "overspent" })),
            Step::text(&rca_json("It broke.", "likely", Some("A bad deploy."), &[])),
        ],
    );
    // Asked again, it reaches for another tool: none is left.
    llm.script_containing(
        "Your RCA was refused",
        vec![
            Step::reasoned("Let me look at past incidents.", "call_2", "past_investigations_search", json!({ "query": "overspent" })),
            Step::text(&rca_json("It broke; nothing shows why.", "inconclusive", None, &[])),
        ],
    );
    let am = alertmanager("Overspent", &[Fired::firing("Overspent", "billing", "billing-1:9100", "0fe1a2b3c4d5e6f7")]);
    accepted(&app, ana.org, "alertmanager", &token, &am, &[]).await;
    let list = incidents_until(&app, &ana, "", "the investigation ended", |list| {
        list.len() == 1 && matches!(list[0]["investigation_status"].as_str(), Some("completed" | "failed"))
    })
    .await;
    let found = detail(&app, &ana, list[0]["incident_id"].as_str().unwrap()).await;
    let investigation = &found["investigations"][0];
    assert_eq!(investigation["status"], "failed", "the retry had a budget of its own: {investigation:#}");
    assert_eq!(investigation["failure_reason"], "tool_call_limit", "{investigation:#}");
    let message = investigation["failure_message"].as_str().unwrap();
    assert!(message.starts_with("Asked again for its RCA with what was left"), "{message}");
    let asked_again = llm.requests().iter().filter(|request| request.to_string().contains("Your RCA was refused")).count();
    assert_eq!(asked_again, 1, "the model was asked for the RCA again once, and called no more after its tool was refused");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_cancels_a_queued_and_a_running_investigation_and_the_queue_goes_on() {
    let (env, app, llm, _vault) = incident_app(|env| env.config.incident.max_concurrent_investigations = 1).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let token = webhook_token(&app, &ana).await;
    llm.script_containing("Incident: Endless", vec![Step::slow_text(&"Still looking. ".repeat(600), Duration::from_millis(20))]);
    llm.script_containing("Incident: Next", vec![Step::text(&rca_json("Nothing found.", "inconclusive", None, &[]))]);
    let fire = |name: &'static str, service: &'static str| alertmanager(name, &[Fired::firing(name, service, "x:1", name)]);
    accepted(&app, ana.org, "alertmanager", &token, &fire("Endless", "one"), &[]).await;
    let endless = incidents_until(&app, &ana, "", "the endless investigation running", |list| {
        list.len() == 1 && list[0]["investigation_status"] == "running"
    })
    .await[0]["incident_id"]
        .as_str()
        .unwrap()
        .to_owned();
    accepted(&app, ana.org, "alertmanager", &token, &fire("Waiting", "two"), &[]).await;
    let waiting = incidents_until(&app, &ana, "", "the second investigation queued", |list| {
        list.iter().any(|incident| incident["title"] == "Waiting" && incident["investigation_status"] == "queued")
    })
    .await
    .into_iter()
    .find(|incident| incident["title"] == "Waiting")
    .unwrap()["incident_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (on_app, as_ana) = (&app, &ana);
    let investigation_of = |incident_id: String| async move {
        let found = detail(on_app, as_ana, &incident_id).await;
        found["investigations"][0]["investigation_id"].as_str().unwrap().to_owned()
    };
    let cancel = |incident_id: String, investigation_id: String| {
        let request =
            as_ana.apply(http().post(on_app.url(&format!("/v1/incidents/{incident_id}/investigations/{investigation_id}/cancel"))));
        async move { request.send().await.unwrap() }
    };

    // The queued one ends at once and never starts.
    let queued = investigation_of(waiting.clone()).await;
    assert_eq!(cancel(waiting.clone(), queued.clone()).await.status(), StatusCode::OK);
    let found =
        detail_until(&app, &ana, &waiting, "the queued investigation cancelled", |found| found["investigations"][0]["status"] == "failed")
            .await;
    assert_eq!(found["investigations"][0]["failure_reason"], "cancelled");
    assert!(found["investigations"][0]["started_at"].is_null(), "it never started: {found:#}");

    // The running one ends at once, keeps what it thought, and its agent turn stops.
    let running = investigation_of(endless.clone()).await;
    assert_eq!(cancel(endless.clone(), running.clone()).await.status(), StatusCode::OK);
    let found =
        detail_until(&app, &ana, &endless, "the running investigation cancelled", |found| found["investigations"][0]["status"] == "failed")
            .await;
    assert_eq!(found["investigations"][0]["failure_reason"], "cancelled");
    let session_id = found["investigations"][0]["session_id"].as_str().unwrap().to_owned();
    let stopped = format!("SELECT count(*) FROM events WHERE stream = 'chat-{session_id}' AND event_type = 'chat.turn_cancelled'");
    eventually("the investigation's turn stopped", Duration::from_secs(30), || async { (env.count(&stopped).await == 1).then_some(()) })
        .await;
    let answered =
        format!("SELECT count(*) FROM events WHERE stream = 'chat-{session_id}' AND event_type = 'chat.assistant_message_completed'");
    assert_eq!(env.count(&answered).await, 0, "the agent did not finish the cancelled investigation");
    // Ended is ended.
    let again = cancel(endless.clone(), running).await;
    assert_eq!(problem(again, StatusCode::CONFLICT).await["status"], 409);
    let unknown = cancel(endless.clone(), Uuid::now_v7().to_string()).await;
    problem(unknown, StatusCode::NOT_FOUND).await;

    // The slot is free: the next investigation runs to its RCA.
    accepted(&app, ana.org, "alertmanager", &token, &fire("Next", "three"), &[]).await;
    incidents_until(&app, &ana, "", "the next investigation completed", |list| {
        list.iter().any(|incident| incident["title"] == "Next" && incident["investigation_status"] == "completed")
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wall_time_and_token_limits_end_an_investigation() {
    let (_env, app, llm, _vault) = incident_app(|env| env.config.incident.investigation_tokens = 50).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let token = webhook_token(&app, &ana).await;
    llm.script_containing(
        "Incident: TokenHungry",
        vec![
            Step::reasoned("Searching.", "call_1", "knowledge_base_search", json!({ "query": "a" })),
            Step::text(&rca_json("x", "inconclusive", None, &[])),
        ],
    );
    accepted(
        &app,
        ana.org,
        "alertmanager",
        &token,
        &alertmanager("TokenHungry", &[Fired::firing("TokenHungry", "one", "x:1", "fp-1")]),
        &[],
    )
    .await;
    let list =
        incidents_until(&app, &ana, "", "the investigation ended", |list| list.len() == 1 && list[0]["investigation_status"] == "failed")
            .await;
    let found = detail(&app, &ana, list[0]["incident_id"].as_str().unwrap()).await;
    assert_eq!(found["investigations"][0]["failure_reason"], "token_limit", "{found:#}");
    app.stop().await;

    let (_env, app, llm, _vault) = incident_app(|env| env.config.incident.investigation_wall_time = Duration::from_secs(1)).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let token = webhook_token(&app, &ana).await;
    llm.script_containing(
        "Incident: Slow",
        vec![
            Step::slow_reasoned(
                "Searching the runbooks slowly, one word at a time.",
                Duration::from_millis(200),
                "call_1",
                "knowledge_base_search",
                json!({ "query": "a" }),
            ),
            Step::text(&rca_json("x", "inconclusive", None, &[])),
        ],
    );
    accepted(&app, ana.org, "alertmanager", &token, &alertmanager("Slow", &[Fired::firing("Slow", "one", "x:1", "fp-1")]), &[]).await;
    let list = incidents_until(&app, &ana, "", "the slow investigation ended", |list| {
        list.len() == 1 && list[0]["investigation_status"] == "failed"
    })
    .await;
    let found = detail(&app, &ana, list[0]["incident_id"].as_str().unwrap()).await;
    assert_eq!(found["investigations"][0]["failure_reason"], "wall_time_limit", "{found:#}");
    assert_eq!(found["thoughts"][0]["data"]["text"], "Searching the runbooks slowly, one word at a time.", "the thoughts so far stay");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_killed_mid_investigation_resumes_it_and_records_each_thought_once() {
    let llm = ScriptedLlm::start().await;
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles { gateway: true, processors: false, projections: true }).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let token = webhook_token(&app, &ana).await;
    llm.script_containing(
        "Incident: KilledMidway",
        vec![
            Step::reasoned("First the runbooks.", "call_1", "knowledge_base_search", json!({ "query": "killed midway" })),
            Step::slow_reasoned(
                "Now the earlier incidents, read slowly so that the processor dies while this streams.",
                Duration::from_millis(150),
                "call_2",
                "past_investigations_search",
                json!({ "query": "killed midway" }),
            ),
            Step::text(&rca_json(
                "It resumed [1].",
                "likely",
                Some("A crash mid-way [1]."),
                &[(1, "call_1", "the runbook search answered")],
            )),
        ],
    );
    let processor_env = [("AURORA_LLM_BASE_URL", llm.base_url.as_str()), ("AURORA_LLM_MODEL", "scripted-model")];
    let (processors, log) = aurora_tests::spawn_aurora_logged(&env, &["processors"], &processor_env);
    accepted(
        &app,
        ana.org,
        "alertmanager",
        &token,
        &alertmanager("KilledMidway", &[Fired::firing("KilledMidway", "one", "x:1", "fp-1")]),
        &[],
    )
    .await;
    let incident = incidents_until(&app, &ana, "", "the incident", |list| list.len() == 1).await;
    let incident_id = incident[0]["incident_id"].as_str().unwrap().to_owned();
    // The first call's thought is in; the second call is streaming: kill the processors now.
    detail_until(&app, &ana, &incident_id, "the first thought", |found| {
        found["thoughts"].as_array().is_some_and(|thoughts| thoughts.len() == 1)
    })
    .await;
    eventually("the second model call under way", Duration::from_secs(30), || async {
        (llm.requests().iter().filter(|request| request.to_string().contains("KilledMidway")).count() >= 2).then_some(())
    })
    .await;
    let mut processors = processors;
    processors.start_kill().unwrap();
    processors.wait().await.unwrap();
    eprintln!("killed; first log {}", log.display());
    let (restarted, _) = aurora_tests::spawn_aurora_logged(&env, &["processors"], &processor_env);
    let found = detail_until(&app, &ana, &incident_id, "the investigation completed after the restart", |found| {
        found["investigations"][0]["status"] == "completed"
    })
    .await;
    let thoughts: Vec<&str> =
        found["thoughts"].as_array().unwrap().iter().map(|thought| thought["data"]["text"].as_str().unwrap()).collect();
    assert_eq!(
        thoughts,
        vec!["First the runbooks.", "Now the earlier incidents, read slowly so that the processor dies while this streams."],
        "each thought once, in order"
    );
    assert_eq!(found["investigations"][0]["confidence"], "likely");
    let started = found["timeline"].as_array().unwrap().iter().filter(|entry| entry["event_type"] == "investigation.started").count();
    assert_eq!(started, 1);
    drop(restarted);
    app.stop().await;
}
