//! AWS connections end to end, against moto with signature checking on: keys and roles checked
//! through STS before they are kept, kept in OpenBao and nowhere else, listed with the account
//! and regions they reach, used by the agent's tools with the calling organisation's
//! credentials, rotated and removed — and refused for other organisations and lower roles.

use std::time::Duration;

use aurora_adapters::clouds::aws::Aws;
use aurora_testkit::scripted_llm::{ScriptedLlm, Step};
use aurora_tests::aws::{set_up_account, xml_field};
use aurora_tests::chat::ChatSocket;
use aurora_tests::servers::{PrivateMoto, ScratchVault};
use aurora_tests::{eventually, http, problem, App, Caller, Roles, TestEnv};
use reqwest::StatusCode;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

async fn connections(app: &App, caller: &Caller) -> Vec<Value> {
    caller.apply(http().get(app.url("/v1/connections"))).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_keys_and_roles_are_checked_kept_in_openbao_used_by_the_agent_rotated_and_removed() {
    let moto = PrivateMoto::start(Some(5));
    let vault = ScratchVault::start();
    let llm = ScriptedLlm::start().await;
    let mut env = TestEnv::new().await;
    env.config.vault = vault.config();
    env.config.connections.aws_endpoint = Some(moto.endpoint());
    let account = set_up_account(&env.config.connections).await;
    env.config.connections.aws_access_key_id = Some(account.user.access_key_id.clone());
    env.config.connections.aws_secret_access_key = Some(account.user.secret_access_key.clone().into());
    env.config.llm.base_url = llm.base_url.clone();
    env.config.llm.model = "scripted-model".into();

    // Something to find: an instance, run with the user's key now that signatures are checked.
    let aws = Aws::new(&env.config.connections, account.user.clone());
    let images = aws.query("ec2", "us-east-1", "DescribeImages", "2016-11-15", &[("Owner.1", "amazon".into())]).await.unwrap();
    let image = xml_field(&images, "imageId");
    let ran = aws
        .query(
            "ec2",
            "us-east-1",
            "RunInstances",
            "2016-11-15",
            &[("ImageId", image), ("MinCount", "1".into()), ("MaxCount", "1".into()), ("InstanceType", "t3.micro".into())],
        )
        .await
        .unwrap();
    let instance_id = xml_field(&ran, "instanceId");

    let app = App::spawn(&env, Roles::ALL).await;
    let ana = Caller::register(&app.base_url, "ana").await;
    let ed = Caller::join(&app.base_url, &ana, "ed", "editor").await;
    let vic = Caller::join(&app.base_url, &ana, "vic", "viewer").await;
    let eve = Caller::register(&app.base_url, "eve").await;
    let connect = |caller: &Caller, body: Value| caller.apply(http().post(app.url("/v1/connections"))).json(&body).send();

    // A wrong secret key: AWS (moto) refuses the signature, nothing is kept or recorded.
    let wrong = "wrongwrongwrongwrongwrongwrongwrongwrong";
    let refused = connect(
        &ana,
        json!({ "provider": "aws", "credentials": { "access_key_id": account.user.access_key_id, "secret_access_key": wrong } }),
    )
    .await
    .unwrap();
    let body = problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(body["detail"].as_str().unwrap().contains("refused the credentials"), "{body}");
    assert!(!body.to_string().contains(wrong));
    assert_eq!(env.count("SELECT count(*) FROM events WHERE stream LIKE 'connection-%'").await, 0, "a refused key is not recorded");
    let listed = vault.bao(&["kv", "list", "-mount=kv", &format!("aurora/orgs/{}/connections", ana.org)]).output().unwrap();
    assert!(!listed.status.success(), "a refused key reached OpenBao: {}", String::from_utf8_lossy(&listed.stdout));

    // Editors and viewers do not connect, by cookie or by token.
    let keys = json!({ "provider": "aws", "credentials": { "access_key_id": account.user.access_key_id, "secret_access_key": account.user.secret_access_key } });
    problem(connect(&ed, keys.clone()).await.unwrap(), StatusCode::FORBIDDEN).await;
    problem(connect(&vic, keys.clone()).await.unwrap(), StatusCode::FORBIDDEN).await;
    let viewer_token = ana.create_token(&app, "viewer").await;
    let by_token = http().post(app.url("/v1/connections")).bearer_auth(&viewer_token).json(&keys).send().await.unwrap();
    problem(by_token, StatusCode::FORBIDDEN).await;

    // The right key: checked, kept in OpenBao, recorded with its reference only.
    let created = connect(&ana, keys.clone()).await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let connection_id = created["connection_id"].as_str().unwrap().to_owned();
    assert!(created["account"].as_str().unwrap().contains("123456789012"), "{created}");
    let payload: Value = sqlx::query_scalar("SELECT payload FROM events WHERE stream = $1 AND event_type = 'connection.established'")
        .bind(format!("connection-{connection_id}"))
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(payload["secret_ref"], format!("vault:kv/data/aurora/orgs/{}/connections/{connection_id}", ana.org));
    assert!(!payload.to_string().contains(&account.user.secret_access_key));
    let stored = vault
        .bao(&["kv", "get", "-mount=kv", "-field=secret_access_key", &format!("aurora/orgs/{}/connections/{connection_id}", ana.org)])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&stored.stdout).trim(), account.user.secret_access_key);

    // The processor lists the account and its regions; viewers see the status.
    let listed = eventually("the inventory of the AWS connection", WAIT, || async {
        connections(&app, &vic).await.into_iter().find(|connection| connection["inventory_at"].is_string())
    })
    .await;
    assert_eq!(listed["status"], "connected");
    let inventory = listed["inventory"].as_array().unwrap();
    assert!(inventory.iter().any(|item| item["kind"] == "account" && item["id"] == "123456789012"), "{listed}");
    assert!(inventory.iter().any(|item| item["kind"] == "region" && item["id"] == "eu-west-1"), "{listed}");
    assert!(!listed.to_string().contains(&account.user.secret_access_key));

    // The agent: its prompt names the account, its tools include AWS's and no other provider's,
    // and the tool answers with the organisation's instance.
    llm.script(
        "what runs in us-east-1?",
        vec![Step::tool("call_ec2", "aws_ec2_instances", json!({ "region": "us-east-1" })), Step::text("One instance runs.")],
    );
    let mut socket = ChatSocket::open(&app.base_url, &ed).await;
    socket.request(json!({ "type": "query", "text": "what runs in us-east-1?", "mode": "ask" })).await;
    let completed = socket.event("tool_call.completed").await;
    assert!(completed["payload"]["result"].to_string().contains(&instance_id), "{completed}");
    socket.event("chat.assistant_message_completed").await;
    let first = &llm.requests_for("what runs in us-east-1?")[0];
    let offered: Vec<&str> = first["tools"].as_array().unwrap().iter().map(|tool| tool["function"]["name"].as_str().unwrap()).collect();
    assert!(offered.contains(&"aws_ec2_instances") && offered.contains(&"aws_cloudwatch_logs"), "{offered:?}");
    assert!(
        !offered.iter().any(|name| name.starts_with("github_") || name.starts_with("datadog_")),
        "tools of unconnected providers: {offered:?}"
    );
    let prompt = first["messages"][0]["content"].as_str().unwrap();
    assert!(
        prompt.contains("AWS")
            && prompt.contains("123456789012")
            && prompt.contains("reaches: account 123456789012")
            && prompt.contains(" more"),
        "{prompt}"
    );

    // A bad argument and an unknown log group come back as messages the model can act on.
    llm.script(
        "any errors?",
        vec![
            Step::tool("call_logs", "aws_cloudwatch_logs", json!({ "log_group": "/aws/lambda/missing", "since_minutes": 30 })),
            Step::tool("call_bad", "aws_ec2_instances", json!({ "region": "Not A Region" })),
            Step::text("No logs."),
        ],
    );
    socket.request(json!({ "type": "query", "text": "any errors?", "mode": "ask" })).await;
    let missing = socket
        .until("the logs tool's failure", |frame| frame["type"] == "tool_call.failed" && frame["payload"]["tool_call_id"] == "call_logs")
        .await;
    assert!(missing["payload"]["error"].as_str().unwrap().contains("ResourceNotFoundException"), "{missing}");
    let bad = socket
        .until("the refused region", |frame| frame["type"] == "tool_call.failed" && frame["payload"]["tool_call_id"] == "call_bad")
        .await;
    assert!(bad["payload"]["error"].as_str().unwrap().contains("region"), "{bad}");
    socket.event("chat.assistant_message_completed").await;

    // Another organisation sees nothing of it, and its agent has no AWS tools.
    for (method, path) in [("GET", format!("/v1/connections/{connection_id}")), ("DELETE", format!("/v1/connections/{connection_id}"))] {
        let response = eve.apply(http().request(method.parse().unwrap(), app.url(&path))).send().await.unwrap();
        problem(response, StatusCode::NOT_FOUND).await;
    }
    let rotate_elsewhere = eve
        .apply(http().put(app.url(&format!("/v1/connections/{connection_id}/credentials"))))
        .json(&json!({ "credentials": keys["credentials"] }))
        .send()
        .await
        .unwrap();
    problem(rotate_elsewhere, StatusCode::NOT_FOUND).await;
    assert!(connections(&app, &eve).await.is_empty());

    // A role assumed with the organisation's external id.
    let external: Value = ana.apply(http().get(app.url("/v1/connections/aws/external-id"))).send().await.unwrap().json().await.unwrap();
    let eve_external: Value = eve.apply(http().get(app.url("/v1/connections/aws/external-id"))).send().await.unwrap().json().await.unwrap();
    assert!(external["external_id"].as_str().unwrap().starts_with("aurora-"));
    assert_ne!(external["external_id"], eve_external["external_id"]);
    let role =
        connect(&ana, json!({ "provider": "aws", "name": "prod role", "credentials": { "role_arn": account.role_arn } })).await.unwrap();
    assert_eq!(role.status(), StatusCode::CREATED, "{}", role.text().await.unwrap());

    // Rotation: a bad new key changes nothing; a good one is a new version, used next.
    let rotate = |credentials: Value| {
        ana.apply(http().put(app.url(&format!("/v1/connections/{connection_id}/credentials"))))
            .json(&json!({ "credentials": credentials }))
            .send()
    };
    let refused = rotate(json!({ "access_key_id": account.user.access_key_id, "secret_access_key": wrong })).await.unwrap();
    problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
    let second_key = aws.query("iam", "us-east-1", "CreateAccessKey", "2010-05-08", &[("UserName", "aurora-test".into())]).await.unwrap();
    let (second_id, second_secret) = (xml_field(&second_key, "AccessKeyId"), xml_field(&second_key, "SecretAccessKey"));
    let rotated = rotate(json!({ "access_key_id": second_id, "secret_access_key": second_secret })).await.unwrap();
    assert_eq!(rotated.status(), StatusCode::OK);
    assert_eq!(rotated.json::<Value>().await.unwrap()["secret_version"], 2);
    let stored = vault
        .bao(&["kv", "get", "-mount=kv", "-field=access_key_id", &format!("aurora/orgs/{}/connections/{connection_id}", ana.org)])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&stored.stdout).trim(), second_id);

    // OpenBao's audit log shows the reads of this connection's secret (inventory, tool calls).
    let secret_path = format!("kv/data/aurora/orgs/{}/connections/{connection_id}", ana.org);
    let reads = vault
        .audit_log()
        .into_iter()
        .filter(|entry| {
            entry["type"] == "request" && entry["request"]["operation"] == "read" && entry["request"]["path"] == secret_path.as_str()
        })
        .count();
    assert!(reads >= 3, "{reads} audited reads of {secret_path}");

    // Removal deletes every version, records it, and the tools are gone.
    problem(vic.apply(http().delete(app.url(&format!("/v1/connections/{connection_id}")))).send().await.unwrap(), StatusCode::FORBIDDEN)
        .await;
    let removed = ana.apply(http().delete(app.url(&format!("/v1/connections/{connection_id}")))).send().await.unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    let metadata = vault
        .bao(&["kv", "metadata", "get", "-mount=kv", &format!("aurora/orgs/{}/connections/{connection_id}", ana.org)])
        .output()
        .unwrap();
    assert!(!metadata.status.success(), "the secret survived its connection");
    eventually("the removal in the read model", WAIT, || async {
        let one: Value =
            ana.apply(http().get(app.url(&format!("/v1/connections/{connection_id}")))).send().await.unwrap().json().await.unwrap();
        (one["status"] == "removed").then_some(())
    })
    .await;
    problem(ana.apply(http().delete(app.url(&format!("/v1/connections/{connection_id}")))).send().await.unwrap(), StatusCode::NOT_FOUND)
        .await;
    socket.close().await;
    app.stop().await;
}
