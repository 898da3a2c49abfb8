//! Helpers of the incident tests: the webhook endpoint, the vendors' payloads as they send them
//! (field order and escaping of their own encoders), and waiting for what the processors did.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::{eventually, http, App, Caller};

/// Makes the organisation's webhook token; returns it.
pub async fn webhook_token(app: &App, admin: &Caller) -> String {
    let response = admin.apply(http().post(app.url("/v1/incidents/webhook/token"))).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

pub fn webhook_url(app: &App, org: uuid::Uuid, source: &str, token: &str) -> String {
    app.url(&format!("/v1/webhooks/{org}/{source}/{token}"))
}

/// Posts `body` as the vendor does (`application/json`), with `headers`.
pub async fn deliver(app: &App, org: uuid::Uuid, source: &str, token: &str, body: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = http().post(webhook_url(app, org, source, token)).header("content-type", "application/json").body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// Delivers and expects 202; returns the answer.
pub async fn accepted(app: &App, org: uuid::Uuid, source: &str, token: &str, body: &str, headers: &[(&str, &str)]) -> Value {
    let response = deliver(app, org, source, token, body, headers).await;
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// PagerDuty's `X-PagerDuty-Signature` value of `body` with `secret`.
pub fn pagerduty_signature(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// One alert of an Alertmanager (or Grafana) notification.
pub struct Fired<'a> {
    pub status: &'a str,
    pub alertname: &'a str,
    pub service: &'a str,
    pub instance: &'a str,
    pub fingerprint: &'a str,
    pub extra_labels: &'a str,
}

impl<'a> Fired<'a> {
    pub fn firing(alertname: &'a str, service: &'a str, instance: &'a str, fingerprint: &'a str) -> Self {
        Self { status: "firing", alertname, service, instance, fingerprint, extra_labels: "" }
    }

    pub fn resolved(alertname: &'a str, service: &'a str, instance: &'a str, fingerprint: &'a str) -> Self {
        Self { status: "resolved", ..Self::firing(alertname, service, instance, fingerprint) }
    }
}

/// An Alertmanager webhook (version 4) as its Go encoder writes it: its field order, and `<`,
/// `>` and `&` escaped as `\u003c`, `\u003e`, `\u0026`.
pub fn alertmanager(group_key: &str, alerts: &[Fired]) -> String {
    let status = if alerts.iter().any(|alert| alert.status == "firing") { "firing" } else { "resolved" };
    let items: Vec<String> = alerts
        .iter()
        .map(|alert| {
            let ends = if alert.status == "firing" { "0001-01-01T00:00:00Z" } else { "2026-12-01T03:20:00Z" };
            format!(
                r#"{{"status":"{}","labels":{{"alertname":"{}","env":"prod","instance":"{}","service":"{}","severity":"critical"{}}},"annotations":{{"description":"p99 latency \u003e 2s for 5m \u0026 rising","runbook_url":"https://runbooks.example.com/checkout","summary":"{} on {}"}},"startsAt":"2026-12-01T03:00:00Z","endsAt":"{}","generatorURL":"http://prometheus:9090/graph?g0.expr=histogram_quantile%280.99%29\u0026g0.tab=1","fingerprint":"{}"}}"#,
                alert.status, alert.alertname, alert.instance, alert.service, alert.extra_labels, alert.alertname, alert.instance, ends, alert.fingerprint
            )
        })
        .collect();
    format!(
        r#"{{"receiver":"aurora","status":"{status}","alerts":[{}],"groupLabels":{{"alertname":"{}"}},"commonLabels":{{"env":"prod"}},"commonAnnotations":{{}},"externalURL":"http://alertmanager:9093","version":"4","groupKey":"{{}}:{{alertname=\"{group_key}\"}}","truncatedAlerts":0}}"#,
        items.join(","),
        group_key
    )
}

/// A Grafana unified-alerting webhook (version "1"), field order as Grafana sends it.
pub fn grafana(alert: &Fired) -> String {
    format!(
        r#"{{"receiver":"aurora","status":"{status}","orgId":1,"alerts":[{{"status":"{status}","labels":{{"alertname":"{name}","grafana_folder":"Checkout","service":"{service}","team":"payments"}},"annotations":{{"description":"Error rate is 7.5% (threshold 5%)","summary":"{name}"}},"startsAt":"2026-12-01T03:01:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"https://grafana.example.com/alerting/grafana/bdu8xq/view?orgId=1","fingerprint":"{fingerprint}","silenceURL":"https://grafana.example.com/alerting/silence/new?alertmanager=grafana\u0026matcher=alertname%3D{name}","dashboardURL":"https://grafana.example.com/d/checkout","panelURL":"https://grafana.example.com/d/checkout?viewPanel=2","values":{{"A":7.5,"C":1}},"valueString":"[ var='A' labels={{service={service}}} value=7.5 ]"}}],"groupLabels":{{"alertname":"{name}","grafana_folder":"Checkout"}},"commonLabels":{{"alertname":"{name}","grafana_folder":"Checkout","service":"{service}","team":"payments"}},"commonAnnotations":{{"summary":"{name}"}},"externalURL":"https://grafana.example.com/","version":"1","groupKey":"{{}}/{{}}:{{alertname=\"{name}\"}}","truncatedAlerts":0,"orgId":1,"title":"[FIRING:1] {name} Checkout (payments)","state":"alerting","message":"**Firing**\n\nValue: A=7.5\nLabels:\n - alertname = {name}\n"}}"#,
        status = alert.status,
        name = alert.alertname,
        service = alert.service,
        fingerprint = alert.fingerprint,
    )
}

/// Datadog's default webhook payload, every variable filled in as a string.
pub fn datadog_default(transition: &str, title: &str, event_id: &str) -> String {
    format!(
        "{{\n    \"body\": \"%%%\\nCPU usage on web-1 is above 90%\\n\\n[Monitor](https://app.datadoghq.com/monitors/4242)\\n%%%\",\n    \"last_updated\": \"1764558000000\",\n    \"event_type\": \"query_alert_monitor\",\n    \"title\": \"[{transition}] {title}\",\n    \"date\": \"1764558000000\",\n    \"org\": {{\n        \"id\": \"123456\",\n        \"name\": \"Acme\"\n    }},\n    \"id\": \"{event_id}\"\n}}"
    )
}

/// The payload template Aurora documents for Datadog, filled in.
pub fn datadog_documented(transition: &str, title: &str, monitor: &str, scope: &str) -> String {
    format!(
        r#"{{"title":"[{transition}] {title}","body":"CPU above 90%","date":"1764558000000","id":"7{monitor}","org":{{"id":"123456","name":"Acme"}},"alert_id":"{monitor}","alert_transition":"{transition}","alert_type":"error","alert_title":"{title}","alert_status":"system.cpu.user over host:web-1 was > 90.0 on average during the last 5m.","alert_scope":"{scope}","alert_priority":"P2","alert_metric":"system.cpu.user","hostname":"web-1","tags":"{scope},team:payments","link":"https://app.datadoghq.com/event/event?id=7{monitor}"}}"#
    )
}

/// A PagerDuty V3 webhook for `event_type` of incident `id`.
pub fn pagerduty(event_id: &str, event_type: &str, id: &str, title: &str) -> String {
    let status = if event_type == "incident.resolved" { "resolved" } else { "triggered" };
    format!(
        r#"{{"event":{{"id":"{event_id}","event_type":"{event_type}","resource_type":"incident","occurred_at":"2026-12-01T03:02:00.169Z","agent":{{"html_url":"https://acme.pagerduty.com/users/PLH1HKV","id":"PLH1HKV","self":"https://api.pagerduty.com/users/PLH1HKV","summary":"Tenex Engineer","type":"user_reference"}},"client":null,"data":{{"id":"{id}","type":"incident","self":"https://api.pagerduty.com/incidents/{id}","html_url":"https://acme.pagerduty.com/incidents/{id}","number":2,"status":"{status}","incident_key":"d3640fbd41094207a1c11e58e46b1662","created_at":"2026-12-01T03:02:00Z","title":"{title}","service":{{"html_url":"https://acme.pagerduty.com/services/PF9KMXH","id":"PF9KMXH","self":"https://api.pagerduty.com/services/PF9KMXH","summary":"Ledger API","type":"service_reference"}},"assignees":[{{"html_url":"https://acme.pagerduty.com/users/PTUXL6G","id":"PTUXL6G","self":"https://api.pagerduty.com/users/PTUXL6G","summary":"User 123","type":"user_reference"}}],"escalation_policy":{{"html_url":"https://acme.pagerduty.com/escalation_policies/PUS0KTE","id":"PUS0KTE","self":"https://api.pagerduty.com/escalation_policies/PUS0KTE","summary":"Default","type":"escalation_policy_reference"}},"teams":[],"priority":{{"html_url":"https://acme.pagerduty.com/account/incident_priorities","id":"PSO75BM","self":"https://api.pagerduty.com/priorities/PSO75BM","summary":"P1","type":"priority_reference"}},"urgency":"high","conference_bridge":{{"conference_number":"+1 1234123412,,987654321#","conference_url":"https://example.com"}},"resolve_reason":null}}}}}}"#
    )
}

/// The organisation's incidents (the first page).
pub async fn incidents(app: &App, caller: &Caller, query: &str) -> Vec<Value> {
    let response = caller.apply(http().get(app.url(&format!("/v1/incidents{query}")))).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let page: Value = response.json().await.unwrap();
    page["incidents"].as_array().unwrap().clone()
}

pub async fn detail(app: &App, caller: &Caller, incident_id: &str) -> Value {
    let response = caller.apply(http().get(app.url(&format!("/v1/incidents/{incident_id}")))).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    response.json().await.unwrap()
}

/// Waits until the incident's detail satisfies `check`.
pub async fn detail_until(app: &App, caller: &Caller, incident_id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(what, Duration::from_secs(60), || async {
        let response = caller.apply(http().get(app.url(&format!("/v1/incidents/{incident_id}")))).send().await.unwrap();
        // Not projected yet is not found yet.
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        let found: Value = response.json().await.unwrap();
        check(&found).then_some(found)
    })
    .await
}

/// Waits until the list (with `query`) satisfies `check`.
pub async fn incidents_until(app: &App, caller: &Caller, query: &str, what: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    eventually(what, Duration::from_secs(60), || async {
        let found = incidents(app, caller, query).await;
        check(&found).then_some(found)
    })
    .await
}

/// The final answer of a scripted investigation: an RCA as JSON text.
pub fn rca_json(summary: &str, confidence: &str, statement: Option<&str>, evidence: &[(u32, &str, &str)]) -> String {
    let evidence: Vec<Value> =
        evidence.iter().map(|(id, call, finding)| serde_json::json!({ "id": id, "tool_call_id": call, "finding": finding })).collect();
    let cited: Vec<u32> = evidence.iter().filter_map(|item| item["id"].as_u64().map(|id| id as u32)).collect();
    serde_json::json!({
        "summary": summary,
        "root_cause": { "confidence": confidence, "statement": statement, "evidence": if confidence == "inconclusive" { vec![] } else { cited } },
        "evidence": evidence,
        "impact": "Checkout requests failed for some customers.",
        "timeline": [{ "at": "2026-12-01T03:00:00Z", "event": "latency rose" }],
        "ruled_out": [{ "hypothesis": "a database outage", "reason": "the runbook search found no database alert" }],
        "not_checked": [{ "what": "AWS CloudWatch logs", "reason": "no AWS connection" }],
        "next_steps": [{ "action": "roll back the latest deploy", "risk": "low", "undo": "deploy it again" }],
    })
    .to_string()
}
