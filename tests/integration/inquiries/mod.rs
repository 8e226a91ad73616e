//! People in the loop on both backends: a workflow's `ask` answered
//! through the API (once, by whom its approvers allow, with an answer that
//! fits), timed out, cancelled; a `wait` resumed by the first matching
//! event; two nodes racing to answer.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Reply, TestServer, on_both_backends};

/// The runbook of the README: ask, then restart when the answer says so.
pub(super) const RUNBOOK: &str = r#"
input: {type: object, properties: {host: {type: string}}, required: [host]}
tasks:
  approve:
    ask:
      prompt: "Restart {{ input.host }}?"
      schema: {type: object, properties: {ok: {type: boolean}, note: {type: string}}, required: [ok]}
      approvers: {roles: [operator], tokens: []}
      self_approval: false
      timeout: 4h
      on_timeout: fail
    next:
      - when: "{{ result.ok }}"
        do: [restart]
  restart:
    action: core.echo
    input: {message: "restarting {{ input.host }}"}
output: {ok: "{{ tasks.approve.result.ok }}", by: "{{ tasks.approve.result.answered_by }}"}
"#;

/// Asks with a short timeout: `fail`, or `continue` to a fallback.
const HASTY: &str = r#"
input: {type: object, properties: {then: {type: string}}}
tasks:
  approve:
    ask: {prompt: "quick?", timeout: 1s, on_timeout: fail}
"#;

const PATIENT: &str = r#"
input: {type: object}
tasks:
  approve:
    ask: {prompt: "quick?", timeout: 1s, on_timeout: continue}
    next:
      - when: "{{ result.timed_out }}"
        do: fallback
  fallback:
    action: core.echo
    input: {message: "nobody answered"}
output: {fallback: "{{ tasks.fallback.result }}"}
"#;

/// Waits for the deploy it was told of.
const DEPLOY: &str = r#"
input: {type: object, properties: {deploy: {type: string}}, required: [deploy]}
tasks:
  finished:
    wait: {trigger: core.manual, criteria: "event.payload.id == input.deploy", timeout: 30s}
    next: [{do: report}]
  report:
    action: core.echo
    input: {message: "deploy {{ tasks.finished.result.payload.id }} finished"}
output: {report: "{{ tasks.report.result }}"}
"#;

/// Uploads pack `ops` holding `workflows` (`(name, YAML)`).
async fn upload(s: &TestServer, workflows: &[(&str, &str)]) -> Reply {
    crate::workflows::upload(s, "ops", workflows).await
}

/// A token named `name` with `role`.
async fn token(s: &TestServer, name: &str, role: &str) -> String {
    let r = s
        .post("/api/v1/tokens", json!({"name": name, "role": role}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["token"].as_str().unwrap().to_string()
}

/// `method` `path` with `body` as `token`.
async fn call(
    s: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Reply {
    let mut rb = s.request(method, path, Some(token));
    if let Some(body) = body {
        rb = rb.json(&body);
    }
    s.send(rb).await
}

/// Starts `action` with `params` as `token`; its id.
async fn start(s: &TestServer, token: &str, action: &str, params: Value) -> i64 {
    let body = json!({"action": action, "params": params});
    let r = call(s, Method::POST, "/api/v1/executions", token, Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_i64().unwrap()
}

/// Waits for workflow `execution`'s first inquiry to open; its view.
async fn opened(s: &TestServer, execution: i64) -> Value {
    support::wait_for(Duration::from_secs(15), || async {
        let r = s
            .get(&format!("/api/v1/inquiries?execution={execution}"))
            .await;
        r.body["items"]
            .as_array()
            .and_then(|items| items.first().cloned())
    })
    .await
    .unwrap_or_else(|| panic!("workflow {execution} opened no inquiry"))
}

/// An error reply's message.
pub(super) fn message(r: &Reply) -> &str {
    r.body["error"]["message"].as_str().unwrap_or_default()
}

async fn respond(s: &TestServer, token: &str, id: i64, answer: Value) -> Reply {
    let path = format!("/api/v1/inquiries/{id}/respond");
    call(s, Method::POST, &path, token, Some(answer)).await
}

on_both_backends! {
    async fn an_ask_is_answered_once_by_whom_its_approvers_allow(backend) {
        let s = TestServer::start(backend).await;
        let r = upload(&s, &[("restart", RUNBOOK)]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let alice = token(&s, "alice", "operator").await;
        let bob = token(&s, "bob", "operator").await;
        let val = token(&s, "val", "viewer").await;
        let worker = token(&s, "w", "worker").await;
        let flow = start(&s, &alice, "ops.restart", json!({"host": "db1"})).await;
        let ask = opened(&s, flow).await;
        let id = ask["id"].as_i64().unwrap();
        assert_eq!(ask["execution"], flow, "{ask}");
        assert_eq!(ask["task"], "approve");
        assert_eq!(ask["prompt"], "Restart db1?");
        assert_eq!(ask["schema"]["required"], json!(["ok"]));
        assert_eq!(ask["state"], "open");
        assert!(ask["deadline"].as_i64().unwrap() > ask["created_at"].as_i64().unwrap() + 3_600_000);
        let task = s.get(&format!("/api/v1/executions/{id}")).await.body;
        assert_eq!(task["status"], "pending", "{task}");
        assert_eq!(task["action"], "core.ask");
        assert_eq!(task["parent"], flow);

        // Who may answer sees it; who may not does not, and is refused.
        let listed = |t: String| {
            let s = &s;
            async move { call(s, Method::GET, "/api/v1/inquiries", &t, None).await.body["items"].clone() }
        };
        assert_eq!(listed(bob.clone()).await.as_array().unwrap().len(), 1);
        assert_eq!(listed(s.admin.clone()).await.as_array().unwrap().len(), 1);
        assert_eq!(listed(alice.clone()).await, json!([]), "self-approval is off");
        assert_eq!(listed(val.clone()).await, json!([]), "viewers are not approvers");
        let r = respond(&s, &alice, id, json!({"ok": true})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        assert!(message(&r).contains("started its workflow"), "{}", r.body);
        let r = respond(&s, &val, id, json!({"ok": true})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        let r = respond(&s, &worker, id, json!({"ok": true})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        let r = s.send(s.request(Method::POST, &format!("/api/v1/inquiries/{id}/respond"), None).json(&json!({"ok": true}))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);

        // An answer that does not fit is refused with its path.
        let r = respond(&s, &bob, id, json!({"ok": "yes", "note": 5})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        let mut paths = r.detail_paths();
        paths.sort();
        assert_eq!(paths, ["/note", "/ok"], "{}", r.body);
        let r = respond(&s, &bob, id, json!([1])).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        // Nor may an answer pass itself off as a timeout or another approver.
        let r = respond(&s, &bob, id, json!({"ok": false, "timed_out": true})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(r.detail_paths(), ["/timed_out"], "{}", r.body);
        // Cancelling the ask alone would answer it: refused.
        let r = call(&s, Method::POST, &format!("/api/v1/executions/{id}/cancel"), &alice, Some(json!({}))).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        assert!(message(&r).contains("cancel the workflow"), "{}", r.body);

        // One answer wins; the next is told who gave it.
        let r = respond(&s, &bob, id, json!({"ok": true, "note": "go"})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["state"], "answered");
        assert_eq!(r.body["answered_by"], "bob");
        let r = respond(&s, &s.admin, id, json!({"ok": false})).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        assert!(message(&r).contains("answered by bob"), "{}", r.body);

        let e = s.ended(flow).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        assert_eq!(e["result"], json!({"ok": true, "by": "bob"}), "{e}");
        let task = s.get(&format!("/api/v1/executions/{id}")).await.body;
        assert_eq!(task["status"], "succeeded");
        assert_eq!(task["result"]["ok"], true);
        assert_eq!(task["result"]["note"], "go");
        assert_eq!(task["result"]["answered_by"], "bob");
        let r = s.get(&format!("/api/v1/executions?parent={flow}&fields=full")).await;
        let restart = r.body["items"].as_array().unwrap().iter()
            .find(|k| k["task"] == "restart").cloned().expect("the restart ran");
        assert_eq!(restart["result"], "restarting db1");
        s.finish().await;
    }

    async fn an_unanswered_ask_times_out_and_fails_or_continues(backend) {
        let s = TestServer::start(backend).await;
        let r = upload(&s, &[("hasty", HASTY), ("patient", PATIENT)]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let hasty = start(&s, &s.admin, "ops.hasty", json!({})).await;
        let patient = start(&s, &s.admin, "ops.patient", json!({})).await;
        let e = s.ended(hasty).await;
        assert_eq!(e["status"], "failed", "{e}");
        assert!(e["error"].as_str().unwrap().contains("no answer within 1s"), "{e}");
        let ask = opened(&s, hasty).await;
        assert_eq!(ask["state"], "timed_out", "{ask}");
        let task = s.get(&format!("/api/v1/executions/{}", ask["id"])).await.body;
        assert_eq!(task["status"], "timed_out", "{task}");
        let r = respond(&s, &s.admin, ask["id"].as_i64().unwrap(), json!({})).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        assert!(message(&r).contains("timed out"), "{}", r.body);

        let e = s.ended(patient).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        assert_eq!(e["result"], json!({"fallback": "nobody answered"}), "{e}");
        let ask = opened(&s, patient).await;
        let task = s.get(&format!("/api/v1/executions/{}", ask["id"])).await.body;
        assert_eq!(task["result"], json!({"timed_out": true}), "{task}");
        s.finish().await;
    }

    async fn a_wait_resumes_on_the_first_matching_event_only(backend) {
        let s = TestServer::start(backend).await;
        let r = upload(&s, &[("deploy", DEPLOY)]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let flow = start(&s, &s.admin, "ops.deploy", json!({"deploy": "d-2"})).await;
        let wait = opened(&s, flow).await;
        assert_eq!(wait["kind"], "wait");
        assert_eq!(wait["trigger"], "core.manual");
        let id = wait["id"].as_i64().unwrap();
        // Not an ask: nobody answers it.
        let r = respond(&s, &s.admin, id, json!({})).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        let post = |deploy: &str| {
            let body = json!({"trigger": "core.manual", "payload": {"id": deploy}});
            let s = &s;
            async move {
                let r = s.post("/api/v1/events", body).await;
                assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
                r.body["id"].as_i64().unwrap()
            }
        };
        post("d-1").await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let still = s.get(&format!("/api/v1/inquiries/{id}")).await.body;
        assert_eq!(still["state"], "open", "another deploy's event does not resume it: {still}");
        let event = post("d-2").await;
        let e = s.ended(flow).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        assert_eq!(e["result"], json!({"report": "deploy d-2 finished"}), "{e}");
        let done = s.get(&format!("/api/v1/inquiries/{id}")).await.body;
        assert_eq!(done["state"], "answered");
        assert_eq!(done["answered_by"], format!("event {event}"));
        let task = s.get(&format!("/api/v1/executions/{id}")).await.body;
        assert_eq!(task["result"]["id"], event, "{task}");
        s.finish().await;
    }

    async fn an_ask_of_a_cancelled_workflow_is_closed_and_refuses_answers(backend) {
        let s = TestServer::start(backend).await;
        let r = upload(&s, &[("restart", RUNBOOK)]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let flow = start(&s, &s.admin, "ops.restart", json!({"host": "db2"})).await;
        let ask = opened(&s, flow).await;
        let r = s.post(&format!("/api/v1/executions/{flow}/cancel"), json!({})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let e = s.ended(flow).await;
        assert_eq!(e["status"], "cancelled", "{e}");
        let task = s.ended(ask["id"].as_i64().unwrap()).await;
        assert_eq!(task["status"], "cancelled", "{task}");
        let bob = token(&s, "bob", "operator").await;
        let r = respond(&s, &bob, ask["id"].as_i64().unwrap(), json!({"ok": true})).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        assert!(message(&r).contains("cancelled"), "{}", r.body);
        s.finish().await;
    }

    async fn asks_and_waits_are_checked_at_upload_with_every_problem_at_its_path(backend) {
        let s = TestServer::start(backend).await;
        let bad = r#"
tasks:
  a:
    ask:
      prompt: "{{ secrets.token }}"
      schema: {type: string}
      approvers: {roles: [worker]}
      timeout: soon
    retry: {count: 1}
    next: [{do: b}]
  b:
    wait: {trigger: ops.nothing, criteria: "event.payload.x ==", timeout: 0s}
    next: [{do: c}]
  c:
    action: core.echo
    ask: {prompt: both}
    input: {message: x}
  d:
    ask: {prompt: ok, schema: {type: object, properties: {answered_by: {type: string}}}}
  e:
    ask: {prompt: "a link anyone could read", resume_url: true, self_approval: false}
"#;
        let r = upload(&s, &[("bad", bad)]).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        let paths = r.detail_paths();
        for expected in [
            "/tasks/a/ask/prompt", "/tasks/a/ask/schema/type", "/tasks/a/ask/approvers/roles/0",
            "/tasks/a/ask/timeout", "/tasks/a/retry", "/tasks/b/wait/trigger",
            "/tasks/b/wait/criteria", "/tasks/b/wait/timeout", "/tasks/c",
            "/tasks/d/ask/schema/properties/answered_by", "/tasks/e/ask/resume_url",
        ] {
            assert!(paths.iter().any(|p| p.ends_with(expected)), "{expected} in {}", r.body);
        }
        s.finish().await;
    }
}

/// Two nodes on one PostgreSQL, two people answering at once: one answer
/// wins, the other is told who gave it, and the workflow goes on once; and
/// timeouts, which both nodes look for, end each ask once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_answers_racing_on_two_nodes_end_the_ask_once() {
    let s = TestServer::start(support::Backend::Postgres).await;
    let other = s.second_node(Default::default()).await;
    let r = upload(&s, &[("restart", RUNBOOK), ("hasty", HASTY)]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let bob = token(&s, "bob", "operator").await;
    let carol = token(&s, "carol", "operator").await;
    for round in 0..5 {
        let flow = start(
            &s,
            &s.admin,
            "ops.restart",
            json!({"host": format!("db{round}")}),
        )
        .await;
        let id = opened(&s, flow).await["id"].as_i64().unwrap();
        let (a, b) = tokio::join!(
            respond(&s, &bob, id, json!({"ok": true})),
            respond(&other, &carol, id, json!({"ok": true})),
        );
        let mut statuses = [a.status, b.status];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::CONFLICT],
            "{} / {}",
            a.body,
            b.body
        );
        let (winner, loser) = if a.status == StatusCode::OK {
            ("bob", &b)
        } else {
            ("carol", &a)
        };
        assert!(
            message(loser).contains(&format!("answered by {winner}")),
            "{}",
            loser.body
        );
        let e = s.ended(flow).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        let r = s.get(&format!("/api/v1/executions?parent={flow}")).await;
        assert_eq!(
            r.body["items"].as_array().unwrap().len(),
            2,
            "the restart ran once: {}",
            r.body
        );
    }
    // Timeouts fire once however many nodes look: each ask's end is
    // announced once.
    let rule = json!({"ref": "ops.ended_asks", "trigger": "core.execution_finished",
                      "criteria": "event.payload.action == 'core.ask'", "action": "core.noop"});
    let r = s.post("/api/v1/rules", rule).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let mut flows = Vec::new();
    for n in 0..6 {
        let node = if n % 2 == 0 { &s } else { &other };
        flows.push(start(node, &node.admin, "ops.hasty", json!({})).await);
    }
    for flow in &flows {
        let e = s.ended(*flow).await;
        assert_eq!(e["status"], "failed", "{e}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = s
        .get("/api/v1/executions?rule=ops.ended_asks&limit=100")
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 6, "{}", r.body);
    other.finish().await;
    s.finish().await;
}

mod events;
mod pages;
