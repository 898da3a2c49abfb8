//! The knowledge base end to end, through HTTP, SSE and the agent, against the real stack:
//! Postgres with pgvector, the object store, the real embedding model, documents made by real
//! producers (fpdf2, python-docx).

use std::time::Duration;

use aurora_testkit::scripted_llm::{ScriptedLlm, Step};
use aurora_tests::chat::ChatSocket;
use aurora_tests::knowledge::{document, make_documents, search, search_for, settled, stored_files, upload, uploaded, EventStream};
use aurora_tests::{eventually, http, problem, App, Caller, Roles, TestEnv};
use reqwest::StatusCode;
use serde_json::{json, Value};

const ONCALL_V1: &str = "# On-call handbook\n\nThe on-call rotation changes every Monday at 09:00 UTC.\n\n\
## Pager\n\nAcknowledge a page within five minutes, or it escalates to the secondary.\n\n\
## Dashboards\n\nThe latency dashboard is called Checkout Golden Signals.\n";
const ONCALL_V2: &str = "# On-call handbook\n\nThe on-call rotation changes every Thursday at 14:00 UTC.\n\n\
## Pager\n\nAcknowledge a page within ten minutes, or it escalates to the engineering manager.\n";

fn text_of(hits: &[Value]) -> String {
    hits.iter().map(|hit| hit["text"].as_str().unwrap_or_default()).collect::<Vec<_>>().join("\n---\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbooks_are_uploaded_indexed_searched_versioned_and_deleted() {
    let documents = make_documents();
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles::ALL).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let ed = Caller::join(&app.base_url, &ana, "ed", "editor").await;
    let vic = Caller::join(&app.base_url, &ana, "vic", "viewer").await;
    let eve = Caller::register(&app.base_url, "eve").await;
    let mut live = EventStream::open(vic.apply(http().get(app.url("/v1/knowledge/events")))).await;
    let mut elsewhere = EventStream::open(eve.apply(http().get(app.url("/v1/knowledge/events")))).await;

    let pdf = uploaded(&app, &ed, "payments-runbook.pdf", std::fs::read(documents.join("payments-runbook.pdf")).unwrap()).await;
    assert_eq!((pdf["kind"].as_str(), pdf["version"].as_u64(), pdf["status"].as_str()), (Some("pdf"), Some(1), Some("processing")));
    let docx = uploaded(&app, &ed, "database-runbook.docx", std::fs::read(documents.join("database-runbook.docx")).unwrap()).await;
    let markdown = uploaded(&app, &ed, "oncall.md", ONCALL_V1.as_bytes().to_vec()).await;
    let (pdf_id, docx_id, markdown_id) =
        (pdf["document_id"].as_str().unwrap(), docx["document_id"].as_str().unwrap(), markdown["document_id"].as_str().unwrap());

    // The status streams to the viewer live: processing, then ready, for each document.
    for id in [pdf_id, docx_id, markdown_id] {
        live.until("a document processing", Duration::from_secs(60), |event| event["document_id"] == id && event["status"] == "processing")
            .await;
        live.until("a document ready", Duration::from_secs(120), |event| event["document_id"] == id && event["status"] == "ready").await;
    }
    let pdf = settled(&app, &ed, pdf_id, 1).await;
    assert_eq!((pdf["pages"].as_i64(), pdf["status"].as_str()), (Some(3), Some("ready")), "{pdf}");
    assert!(pdf["chunks"].as_i64().unwrap() >= 1 && pdf["tokens"].as_i64().unwrap() > 20, "{pdf}");
    let docx = settled(&app, &ed, docx_id, 1).await;
    assert_eq!(docx["status"], "ready", "{docx}");

    // Search: the PDF passage with its page, the DOCX table under its heading path.
    let hits = search_for(&app, &vic, "how do I restart the payments gateway?").await;
    assert_eq!((hits[0]["title"].as_str(), hits[0]["page"].as_u64()), (Some("payments-runbook.pdf"), Some(2)), "{hits:#?}");
    assert!(hits[0]["text"].as_str().unwrap().contains("systemctl restart payments-gateway"), "{hits:#?}");
    let hits = search_for(&app, &vic, "who owns billing?").await;
    let owner = hits.iter().find(|hit| hit["text"].as_str().unwrap().contains("Omar Haddad")).unwrap_or_else(|| panic!("{hits:#?}"));
    assert_eq!(owner["heading_path"], json!(["Database operations", "Contacts"]), "{owner}");
    assert_eq!(owner["title"], "database-runbook.docx");
    let hits = search_for(&app, &vic, "promote the replica during a failover").await;
    assert_eq!(hits[0]["heading_path"], json!(["Database operations", "Failover"]), "{hits:#?}");
    // Vector-only search answers too, and both modes say why each result ranked.
    let vector = search(&app, &vic, json!({ "query": "what is the latency dashboard called", "mode": "vector", "limit": 3 })).await;
    assert!(vector[0]["text"].as_str().unwrap().contains("Checkout Golden Signals"), "{vector:#?}");
    assert!(vector[0]["similarity"].as_f64().unwrap() > 0.3 && vector[0]["text_rank"].is_null());

    // The same name again is version 2 of the same document; version 1's chunks go.
    let second = uploaded(&app, &ed, "OnCall.md", ONCALL_V2.as_bytes().to_vec()).await;
    assert_eq!((second["document_id"].as_str(), second["version"].as_u64()), (Some(markdown_id), Some(2)), "{second}");
    let markdown = settled(&app, &ed, markdown_id, 2).await;
    assert_eq!(markdown["versions"].as_array().unwrap().len(), 2, "{markdown}");
    let found = text_of(&search_for(&app, &vic, "when does the on-call rotation change?").await);
    assert!(found.contains("Thursday") && !found.contains("Monday"), "{found}");
    let old = env.count(&format!("SELECT count(*) FROM knowledge_chunks WHERE source_id = '{markdown_id}' AND source_version = 1")).await;
    assert_eq!(old, 0);
    let listed: Vec<Value> = vic.apply(http().get(app.url("/v1/knowledge/documents"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.len(), 3, "{listed:#?}");

    // Another organisation: its stream heard nothing, and every route answers 404 or nothing.
    elsewhere.drain(Duration::from_millis(500)).await;
    assert!(elsewhere.events.is_empty(), "{:#?}", elsewhere.events);
    assert_eq!(document(&app, &eve, pdf_id).await.status(), StatusCode::NOT_FOUND);
    let refused = eve.apply(http().delete(app.url(&format!("/v1/knowledge/documents/{pdf_id}")))).send().await.unwrap();
    problem(refused, StatusCode::NOT_FOUND).await;
    assert!(search_for(&app, &eve, "restart the payments gateway").await.is_empty());
    let eve_token = eve.create_token(&app, "admin").await;
    let by_token = http().get(app.url(&format!("/v1/knowledge/documents/{docx_id}"))).bearer_auth(&eve_token).send().await.unwrap();
    assert_eq!(by_token.status(), StatusCode::NOT_FOUND);

    // A viewer reads and searches but neither uploads nor deletes, by cookie or by token.
    let refused = upload(&app, &vic, "more.md", b"# More\n".to_vec()).await;
    problem(refused, StatusCode::FORBIDDEN).await;
    let refused = vic.apply(http().delete(app.url(&format!("/v1/knowledge/documents/{pdf_id}")))).send().await.unwrap();
    problem(refused, StatusCode::FORBIDDEN).await;
    let viewer_token = ana.create_token(&app, "viewer").await;
    let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(b"# x\n".to_vec()).file_name("x.md"));
    let refused = http().post(app.url("/v1/knowledge/documents")).bearer_auth(&viewer_token).multipart(form).send().await.unwrap();
    problem(refused, StatusCode::FORBIDDEN).await;
    let by_token =
        http().post(app.url("/v1/knowledge/search")).bearer_auth(&viewer_token).json(&json!({ "query": "payments" })).send().await.unwrap();
    assert_eq!(by_token.status(), StatusCode::OK);
    let bad_query = vic.apply(http().post(app.url("/v1/knowledge/search"))).json(&json!({ "query": "  " })).send().await.unwrap();
    problem(bad_query, StatusCode::BAD_REQUEST).await;

    // Deleting: the document, its chunks, its vectors and its files go; search forgets it.
    let files_before = stored_files(&env.config.objects.url);
    assert_eq!(files_before.iter().filter(|path| path.to_string_lossy().contains(markdown_id)).count(), 2, "{files_before:?}");
    let deleted = ed.apply(http().delete(app.url(&format!("/v1/knowledge/documents/{markdown_id}")))).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::ACCEPTED);
    live.until("the deletion", Duration::from_secs(30), |event| event["document_id"] == markdown_id && event["status"] == "deleted").await;
    eventually("the deleted document's chunks, vectors and files to go", Duration::from_secs(30), || async {
        let chunks = env.count(&format!("SELECT count(*) FROM knowledge_chunks WHERE source_id = '{markdown_id}'")).await;
        let vectors = env.count(&format!("SELECT count(*) FROM knowledge_vectors WHERE source_id = '{markdown_id}'")).await;
        let files = stored_files(&env.config.objects.url).iter().filter(|path| path.to_string_lossy().contains(markdown_id)).count();
        (chunks == 0 && vectors == 0 && files == 0).then_some(())
    })
    .await;
    assert_eq!(document(&app, &ed, markdown_id).await.status(), StatusCode::NOT_FOUND);
    assert!(!text_of(&search_for(&app, &vic, "on-call rotation Thursday").await).contains("Thursday"));

    // The memory: admins write it, viewers read it, and it is bounded.
    let put =
        |caller: &Caller, text: String| caller.apply(http().put(app.url("/v1/knowledge/memory"))).json(&json!({ "text": text })).send();
    problem(put(&ed, "Prod runs in eu-west-1.".into()).await.unwrap(), StatusCode::FORBIDDEN).await;
    assert_eq!(put(&ana, "Prod runs in eu-west-1.\nNever restart the ledger on Fridays.".into()).await.unwrap().status(), StatusCode::OK);
    problem(put(&ana, "x".repeat(5_001)).await.unwrap(), StatusCode::BAD_REQUEST).await;
    let memory = eventually("the memory to be readable", Duration::from_secs(30), || async {
        let memory: Value = vic.apply(http().get(app.url("/v1/knowledge/memory"))).send().await.unwrap().json().await.unwrap();
        memory["text"].as_str().filter(|text| text.contains("ledger")).map(str::to_owned)
    })
    .await;
    assert!(memory.starts_with("Prod runs in eu-west-1."));
    let other: Value = eve.apply(http().get(app.url("/v1/knowledge/memory"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(other["text"], "");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_documents_fail_with_a_reason_and_bad_uploads_keep_nothing() {
    let documents = make_documents();
    let mut env = TestEnv::new().await;
    env.config.knowledge.max_upload_bytes = 1024 * 1024;
    env.config.knowledge.max_docx_uncompressed_bytes = 10 * 1024 * 1024;
    let app = App::spawn(&env, Roles::ALL).await;
    let ed = Caller::register(&app.base_url, "ed").await;
    let read = |name: &str| std::fs::read(documents.join(name)).unwrap();

    // Files that are what they say but cannot be indexed: each fails with a reason to act on.
    let cases = [
        ("encrypted.pdf", "encrypted", "password"),
        ("scanned.pdf", "no_text_layer", "OCR"),
        ("truncated.pdf", "corrupt", "PDF"),
        ("bomb.docx", "unsafe", "unpacks"),
        ("xxe.docx", "unsafe", "DTD"),
        ("not-a-document.docx", "corrupt", "not a Word document"),
    ];
    let mut ids = Vec::new();
    for (name, _, _) in cases {
        ids.push(uploaded(&app, &ed, name, read(name)).await["document_id"].as_str().unwrap().to_owned());
    }
    ids.push(uploaded(&app, &ed, "blank.md", b"  \n\n  \n".to_vec()).await["document_id"].as_str().unwrap().to_owned());
    for ((name, code, hint), id) in cases.iter().chain([("blank.md", "empty", "no text")].iter()).zip(&ids) {
        let failed = settled(&app, &ed, id, 1).await;
        assert_eq!((failed["status"].as_str(), failed["failure_code"].as_str()), (Some("failed"), Some(*code)), "{name}: {failed}");
        assert!(failed["failure_reason"].as_str().unwrap().contains(hint), "{name}: {failed}");
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let first_line = passwd.lines().next().unwrap_or("root:x:0:0");
    assert_eq!(
        env.count(&format!("SELECT count(*) FROM knowledge_chunks WHERE content LIKE '%{}%'", first_line.replace('\'', "''"))).await,
        0
    );

    // Refused at the door, with nothing stored: wrong content behind a right name, unknown
    // types, an empty file, a file over the limit, a form without a file, a JSON body.
    let files_before = stored_files(&env.config.objects.url);
    let refusals: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        ("runbook.pdf", read("database-runbook.docx"), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("runbook.docx", read("payments-runbook.pdf"), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("notes.md", read("payments-runbook.pdf"), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("photo.png", b"\x89PNG\r\n\x1a\n".to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("empty.txt", Vec::new(), StatusCode::BAD_REQUEST),
        // Just over the 1 MiB limit: the gateway answers 413 once the limit is passed and closes
        // the connection, and the few unread bytes still fit the socket's buffers (a file 200 KB
        // over the limit met a broken pipe while still being written, before the answer was read).
        ("huge.txt", "all work and no play\n".repeat(50_000).into_bytes(), StatusCode::PAYLOAD_TOO_LARGE),
    ];
    for (name, bytes, status) in refusals {
        let body = problem(upload(&app, &ed, name, bytes).await, status).await;
        assert!(body["detail"].as_str().is_some_and(|detail| !detail.is_empty()), "{name}: {body}");
    }
    let no_file = reqwest::multipart::Form::new().text("note", "no file here");
    problem(ed.apply(http().post(app.url("/v1/knowledge/documents"))).multipart(no_file).send().await.unwrap(), StatusCode::BAD_REQUEST)
        .await;
    let json_body = ed.apply(http().post(app.url("/v1/knowledge/documents"))).json(&json!({ "file": "x" })).send().await.unwrap();
    problem(json_body, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    // An upload cut off mid-stream: the connection drops, nothing is stored or recorded.
    let boundary = "aurora-test-boundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.md\"\r\nContent-Type: text/markdown\r\n\r\n"
    );
    let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
        Ok(bytes::Bytes::from(head)),
        Ok(bytes::Bytes::from("# Cut\n".repeat(10_000))),
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut")),
    ];
    let cut = ed
        .apply(http().post(app.url("/v1/knowledge/documents")))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
        .send()
        .await;
    if let Ok(response) = cut {
        assert!(response.status().is_client_error(), "a cut-off upload was accepted: {}", response.status());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stored_files(&env.config.objects.url), files_before, "a refused or cut-off upload left a file");
    let listed: Vec<Value> = ed.apply(http().get(app.url("/v1/knowledge/documents"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.len(), cases.len() + 1, "only the accepted documents are listed: {listed:#?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_document_of_one_organisation_holds_up_no_other() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles::ALL).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let eve = Caller::register(&app.base_url, "eve").await;
    // Some sixty chunks of up to 500 word pieces: several batches of the embedding model.
    let mut long = String::from("# Platform runbook\n\n");
    for section in 1..=60 {
        long.push_str(&format!("## Service {section}\n\n"));
        for step in 0..30 {
            long.push_str(&format!(
                "Step {step} for service {section}: check that the health endpoint answers, then compare the error rate. "
            ));
        }
        long.push_str("\n\n");
    }
    let long = uploaded(&app, &ana, "platform.md", long.into_bytes()).await;
    let long_id = long["document_id"].as_str().unwrap().to_owned();
    eventually("ana's long document being indexed", Duration::from_secs(60), || async {
        let body: Value = document(&app, &ana, &long_id).await.json().await.ok()?;
        body["processing_started_at"].is_string().then_some(())
    })
    .await;
    // Another organisation's short one is indexed while the long one still is.
    let short = uploaded(&app, &eve, "oncall.md", ONCALL_V1.as_bytes().to_vec()).await;
    let short = settled(&app, &eve, short["document_id"].as_str().unwrap(), 1).await;
    assert_eq!(short["status"], "ready", "{short}");
    let meanwhile: Value = document(&app, &ana, &long_id).await.json().await.unwrap();
    assert_eq!(meanwhile["status"], "processing", "the short document waited for the long one of another organisation: {meanwhile}");
    let long = settled(&app, &ana, &long_id, 1).await;
    assert_eq!(long["status"], "ready", "{long}");
    assert!(long["chunks"].as_i64().unwrap() >= 40, "{long}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_refuse_what_does_not_fit_and_keep_nothing_of_it() {
    let mut env = TestEnv::new().await;
    env.config.knowledge.max_documents = 2;
    env.config.knowledge.max_total_bytes = 3_000;
    let app = App::spawn(&env, Roles::ALL).await;
    let ed = Caller::register(&app.base_url, "ed").await;
    let other = Caller::register(&app.base_url, "other").await;
    uploaded(&app, &ed, "a.md", "# A\n".repeat(300).into_bytes()).await;
    // Over the bytes left (3,000 - 1,200): refused while streaming, nothing kept.
    let body = problem(upload(&app, &ed, "b.md", "# B\n".repeat(500).into_bytes()).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["type"].as_str().map(|kind| kind.ends_with("quota-exceeded")), Some(true), "{body}");
    uploaded(&app, &ed, "b.md", "# B\n".repeat(100).into_bytes()).await;
    // A third document is one too many; a new version of one kept is not.
    let body = problem(upload(&app, &ed, "c.md", b"# C\n".to_vec()).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(body["detail"].as_str().unwrap().contains("2 documents"), "{body}");
    let version = uploaded(&app, &ed, "b.md", b"# B2\n".to_vec()).await;
    assert_eq!(version["version"], 2);
    // Quotas are per organisation.
    uploaded(&app, &other, "c.md", b"# C\n".to_vec()).await;
    let files = stored_files(&env.config.objects.url);
    assert_eq!(files.len(), 4, "{files:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_searches_the_runbooks_first_and_cites_document_and_page() {
    let documents = make_documents();
    let llm = ScriptedLlm::start().await;
    let mut env = TestEnv::new().await;
    env.config.llm.base_url = llm.base_url.clone();
    env.config.llm.model = "scripted-model".into();
    let app = App::spawn(&env, Roles::ALL).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let eve = Caller::register(&app.base_url, "eve").await;
    let pdf = uploaded(&app, &ana, "payments-runbook.pdf", std::fs::read(documents.join("payments-runbook.pdf")).unwrap()).await;
    settled(&app, &ana, pdf["document_id"].as_str().unwrap(), 1).await;
    let put = ana.apply(http().put(app.url("/v1/knowledge/memory"))).json(&json!({ "text": "Payments is tier 0." })).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    eventually("the memory to be projected", Duration::from_secs(30), || async {
        let memory: Value = ana.apply(http().get(app.url("/v1/knowledge/memory"))).send().await.unwrap().json().await.unwrap();
        (memory["text"] == "Payments is tier 0.").then_some(())
    })
    .await;

    let question = "card payments are failing, what do we do?";
    llm.script(
        question,
        vec![
            Step::tool("call_kb", "knowledge_base_search", json!({ "query": "card authorisations failing escalation", "limit": 3 })),
            Step::text("Page the payments on-call [payments-runbook.pdf, page 3]."),
        ],
    );
    let mut socket = ChatSocket::open(&app.base_url, &ana).await;
    socket.request(json!({ "type": "query", "text": question, "mode": "ask" })).await;
    let completed = socket.event("tool_call.completed").await;
    let results = completed["payload"]["result"]["results"].as_array().cloned().unwrap_or_default();
    let first = results.first().unwrap_or_else(|| panic!("{completed}"));
    assert_eq!((first["document"].as_str(), first["page"].as_u64()), (Some("payments-runbook.pdf"), Some(3)), "{completed}");
    assert_eq!(first["citation"], "payments-runbook.pdf, page 3");
    socket.event("chat.assistant_message_completed").await;
    let request = &llm.requests_for(question)[0];
    let prompt = request["messages"][0]["content"].as_str().unwrap();
    assert!(prompt.contains("knowledge_base_search") && prompt.contains("Before anything else"), "{prompt}");
    assert!(prompt.contains("Payments is tier 0."), "the memory is in the prompt: {prompt}");
    let offered: Vec<&str> = request["tools"].as_array().unwrap().iter().map(|tool| tool["function"]["name"].as_str().unwrap()).collect();
    assert!(offered.contains(&"knowledge_base_search") && offered.contains(&"past_conversations_search"), "{offered:?}");

    // The completed turn is indexed: a later question finds it among past conversations.
    let later = "have we dealt with card payments failing before?";
    llm.script(
        later,
        vec![Step::tool("call_past", "past_conversations_search", json!({ "query": "card payments failing" })), Step::text("Yes.")],
    );
    let past = eventually("the turn to be indexed", Duration::from_secs(60), || async {
        let count = env.count("SELECT count(*) FROM knowledge_chunks WHERE source_kind = 'conversation'").await;
        (count >= 1).then_some(count)
    })
    .await;
    assert_eq!(past, 1);
    socket.request(json!({ "type": "query", "text": later, "mode": "ask" })).await;
    let completed = socket
        .until("the past conversations", |frame| frame["type"] == "tool_call.completed" && frame["payload"]["tool_call_id"] == "call_past")
        .await;
    assert!(completed["payload"]["result"].to_string().contains("Page the payments on-call"), "{completed}");
    socket.event("chat.assistant_message_completed").await;
    socket.close().await;

    // Another organisation's agent finds none of it.
    llm.script(
        "eve asks",
        vec![Step::tool("call_eve", "knowledge_base_search", json!({ "query": "payments on-call escalation" })), Step::text("Nothing.")],
    );
    let mut socket = ChatSocket::open(&app.base_url, &eve).await;
    socket.request(json!({ "type": "query", "text": "eve asks", "mode": "ask" })).await;
    let completed = socket.event("tool_call.completed").await;
    assert_eq!(completed["payload"]["result"]["results"], json!([]), "{completed}");
    socket.close().await;
    app.stop().await;
}
