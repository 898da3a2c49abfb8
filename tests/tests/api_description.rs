//! The API description holds: schemathesis (PyPI) generates requests from `/openapi.json` — valid
//! ones and every kind of wrong one — and sends them with an admin's API token. No request may
//! get a server error, a status the description does not declare, or a content type it does not
//! declare. The seed is fixed and the number of examples bounded, so a run is repeatable.

use std::process::Stdio;
use std::time::Duration;

use aurora_tests::{App, Caller, Roles, TestEnv};

/// Examples generated per operation and phase.
const MAX_EXAMPLES: &str = "30";
const SEED: &str = "20261127";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_meet_no_server_error_and_only_declared_answers() {
    let home = std::env::var("AURORA_TEST_SCHEMATHESIS_HOME").expect("AURORA_TEST_SCHEMATHESIS_HOME (run through scripts/test)");
    // Its own broker: the thousands of requests leave a log the shared one need not carry.
    let broker = aurora_tests::servers::PrivateTansu::start();
    let mut env = TestEnv::with_servers(&aurora_tests::admin_database_url(), &broker.brokers()).await;
    // Nothing here waits on a fetch: long fetch waits keep this broker from taking a core from
    // the tests that run beside it (Tansu answers each fetch only after its wait).
    env.config.kafka.fetch_wait = Duration::from_millis(200);
    env.config.kafka.live_fetch_wait = Duration::from_millis(200);
    let app = App::spawn(&env, Roles::ALL).await;
    let admin = Caller::register(&app.base_url, "ana").await;
    // Something to find, so that reads of existing resources are exercised too.
    admin.create_session(&app, "checkout latency").await;
    let token = admin.create_token(&app, "admin").await;
    let reports = std::env::temp_dir().join(format!("aurora-schemathesis-{}", uuid::Uuid::now_v7().simple()));
    let output = tokio::process::Command::new(format!("{home}/bin/schemathesis"))
        .env("PYTHONPATH", &home)
        .env("NO_COLOR", "1")
        .current_dir(std::env::temp_dir())
        .args([
            "run",
            &app.url("/openapi.json"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance",
            "--seed",
            SEED,
            "--max-examples",
            MAX_EXAMPLES,
            "--generation-database",
            "none",
            "--workers",
            "1",
            // A status stream never ends; its own tests read it (tests/tests/knowledge.rs).
            "--exclude-path",
            "/v1/knowledge/events",
            "--exclude-path",
            "/v1/incidents/events",
            "--report-dir",
        ])
        .arg(&reports)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("schemathesis runs");
    let _ = std::fs::remove_dir_all(&reports);
    let printed = String::from_utf8_lossy(&output.stdout).replace(&token, "<token>");
    let errors = String::from_utf8_lossy(&output.stderr).replace(&token, "<token>");
    assert!(output.status.success(), "schemathesis found failures:\n{printed}\n{errors}");
    assert!(printed.contains("passed"), "schemathesis ran no operation:\n{printed}");
    app.stop().await;
}
