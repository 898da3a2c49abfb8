//! Retrieval quality and crash safety of the knowledge base: a small library of runbooks and
//! questions whose answers are known, recall@5 measured through `POST /v1/knowledge/search`;
//! a processor killed in the middle of a long document resumes it without duplicating a chunk;
//! and a fact in the second half of a 500-token chunk is found (the model reads 256 word pieces at
//! a time; the chunk is embedded as the mean of windows that cover all of it).

use std::time::Duration;

use aurora_tests::knowledge::{search, settled, uploaded};
use aurora_tests::{eventually, spawn_aurora_logged, App, Caller, Roles, TestEnv};
use serde_json::json;

/// (file, text)
const LIBRARY: &[(&str, &str)] = &[
    ("kafka.md", "# Kafka operations\n\n## Consumer lag\n\nWhen consumer lag grows on the orders topic, scale the orders-consumer deployment to six replicas and check for a poison message in the dead-letter topic.\n\n## Broker disk\n\nA broker whose disk is above 85 percent needs its retention lowered with kafka-configs; never delete segment files by hand.\n"),
    ("dns.md", "# DNS\n\n## Resolution failures\n\nIf services cannot resolve internal names, restart the CoreDNS pods in kube-system and verify the upstream forwarders in the Corefile.\n\n## Certificates\n\nTLS certificates are issued by cert-manager from the Let's Encrypt production issuer and renew thirty days before expiry.\n"),
    ("redis.md", "# Redis cache\n\n## Evictions\n\nA spike in evicted keys means the cache is too small: raise maxmemory on the session-cache cluster or shorten the session TTL.\n\n## Failover\n\nSentinel promotes a replica automatically; if it does not within a minute, run SENTINEL FAILOVER mymaster.\n"),
    ("deploys.md", "# Deployments\n\n## Rollback\n\nRoll back a bad release with argocd app rollback checkout, choosing the previous healthy revision from the history.\n\n## Freeze\n\nNo deployments run between December 20 and January 3 except security fixes approved by the release manager.\n"),
    ("postgres.md", "# PostgreSQL\n\n## Connection exhaustion\n\nWhen the database refuses connections, look for idle-in-transaction sessions in pg_stat_activity and terminate them; PgBouncer limits each service to forty connections.\n\n## Vacuum\n\nA table with heavy bloat gets a manual VACUUM (ANALYZE) at night; autovacuum is tuned to scale factor 0.05 on the orders table.\n"),
    ("oncall.md", "# On-call\n\n## Escalation\n\nSeverity one incidents page the incident commander immediately and open a bridge on the status page within ten minutes.\n\n## Handover\n\nThe outgoing engineer writes a handover note in the on-call channel every Monday morning.\n"),
];

/// (question, the file and heading that answer it)
const QUESTIONS: &[(&str, &str, &str)] = &[
    ("the orders consumers are falling behind, what should I do?", "kafka.md", "Consumer lag"),
    ("a kafka broker is running out of disk space", "kafka.md", "Broker disk"),
    ("pods cannot resolve service hostnames", "dns.md", "Resolution failures"),
    ("when do our TLS certificates renew?", "dns.md", "Certificates"),
    ("lots of keys are being evicted from the cache", "redis.md", "Evictions"),
    ("the redis primary died and no replica took over", "redis.md", "Failover"),
    ("how do I undo a broken release of checkout?", "deploys.md", "Rollback"),
    ("can we deploy during the holidays?", "deploys.md", "Freeze"),
    ("postgres says too many connections", "postgres.md", "Connection exhaustion"),
    ("a table is bloated", "postgres.md", "Vacuum"),
    ("who gets paged for a sev1?", "oncall.md", "Escalation"),
    ("when is the on-call handover?", "oncall.md", "Handover"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_at_5_over_a_small_runbook_library() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles::ALL).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let mut ids = Vec::new();
    for (name, text) in LIBRARY {
        ids.push(uploaded(&app, &ana, name, text.as_bytes().to_vec()).await["document_id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        assert_eq!(settled(&app, &ana, id, 1).await["status"], "ready");
    }
    for mode in ["hybrid", "vector"] {
        let mut found = 0;
        for (question, file, heading) in QUESTIONS {
            let hits = search(&app, &ana, json!({ "query": question, "limit": 5, "mode": mode })).await;
            let hit = hits.iter().position(|hit| {
                hit["title"] == *file && hit["heading_path"].as_array().is_some_and(|path| path.iter().any(|part| part == heading))
            });
            match hit {
                Some(_) => found += 1,
                None => eprintln!(
                    "{mode}: missed {question:?} (wanted {file} > {heading}); got {:?}",
                    hits.iter().map(|hit| (&hit["title"], &hit["heading_path"])).collect::<Vec<_>>()
                ),
            }
        }
        let recall = found as f64 / QUESTIONS.len() as f64;
        eprintln!("recall@5 ({mode}) = {recall:.2} ({found} of {})", QUESTIONS.len());
        assert!(recall >= 0.75, "recall@5 ({mode}) is {recall:.2}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fact_in_the_second_half_of_a_long_chunk_is_found() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles::ALL).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    // One section of about 450 word pieces: routine text first, the fact near its end.
    let filler = "The weekly report lists the open tickets, the closed tickets and the tickets waiting for review. ".repeat(20);
    let fact = "The vault unseal keys are held by Priya Raman and Tomasz Nowak in the Frankfurt office safe.";
    let text = format!("# Weekly routine\n\n{filler}{fact}\n");
    let document = uploaded(&app, &ana, "routine.md", text.into_bytes()).await;
    let indexed = settled(&app, &ana, document["document_id"].as_str().unwrap(), 1).await;
    assert_eq!(indexed["chunks"], 1, "the section is one chunk: {indexed}");
    assert!(indexed["tokens"].as_i64().unwrap() > 300, "a chunk longer than the model reads at once: {indexed}");
    // Distractors about the same routine, so the fact must be what matches.
    for index in 0..5 {
        let other =
            format!("# Routine {index}\n\nThe weekly report lists the open tickets of team {index} and the ones waiting for review.\n");
        let id = uploaded(&app, &ana, &format!("routine-{index}.md"), other.into_bytes()).await;
        settled(&app, &ana, id["document_id"].as_str().unwrap(), 1).await;
    }
    let hits = search(&app, &ana, json!({ "query": "who holds the vault unseal keys?", "mode": "vector", "limit": 3 })).await;
    assert_eq!(hits[0]["title"], "routine.md", "{hits:#?}");
    assert!(hits[0]["text"].as_str().unwrap().contains("Priya Raman"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_killed_mid_document_resumes_it_without_duplicates() {
    let env = TestEnv::new().await;
    let app = App::spawn(&env, Roles { gateway: true, processors: false, projections: true }).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    // About 50 chunks of distinct sentences.
    let text: String = (0..1_200)
        .map(|index| format!("Step {index}: check that service number {index} answers on port {} and record its version.\n", 8000 + index))
        .collect();
    let (processors, log) = spawn_aurora_logged(&env, &["processors"], &[]);
    let document = uploaded(&app, &ana, "long.txt", text.into_bytes()).await;
    let id = document["document_id"].as_str().unwrap().to_owned();
    let chunks_of = format!("SELECT count(*) FROM knowledge_chunks WHERE source_id = '{id}'");
    eventually("some chunks to be written", Duration::from_secs(120), || async { (env.count(&chunks_of).await >= 12).then_some(()) }).await;
    let mut processors = processors;
    processors.start_kill().unwrap();
    processors.wait().await.unwrap();
    let written = env.count(&chunks_of).await;
    let (restarted, restarted_log) = spawn_aurora_logged(&env, &["processors"], &[]);
    let indexed = settled(&app, &ana, &id, 1).await;
    assert_eq!(indexed["status"], "ready", "{indexed}");
    let chunks = indexed["chunks"].as_i64().unwrap();
    assert!(written < chunks, "the kill came too late to test anything: {written} of {chunks}");
    assert_eq!(env.count(&chunks_of).await, chunks);
    assert_eq!(env.count(&format!("SELECT count(*) FROM knowledge_vectors WHERE source_id = '{id}'")).await, chunks);
    assert_eq!(env.count(&format!("SELECT count(DISTINCT chunk_index) FROM knowledge_chunks WHERE source_id = '{id}'")).await, chunks);
    let resumed = std::fs::read_to_string(&restarted_log).unwrap();
    assert!(resumed.contains("resuming a document"), "the second processor did not resume: {}", restarted_log.display());
    eprintln!("killed after {written} of {chunks} chunks; first log {}", log.display());
    drop(restarted);
    app.stop().await;
}
