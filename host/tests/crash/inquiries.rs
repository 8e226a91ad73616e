//! A workflow waiting for a person, then for an event, survives `kill -9`
//! at each wait: the answer given after the restart resumes it, then the
//! event does, and each task runs once.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Api, Reaped, serve, server_log};
use crate::common::free_port;

const RUNBOOK: &str = r#"
input: {type: object, properties: {deploy: {type: string}}, required: [deploy]}
tasks:
  approve:
    ask:
      prompt: "Deploy {{ input.deploy }}?"
      schema: {type: object, properties: {ok: {type: boolean}}, required: [ok]}
    next: [{when: "{{ result.ok }}", do: finished}]
  finished:
    wait: {trigger: core.manual, criteria: "event.payload.id == input.deploy"}
    next: [{do: report}]
  report:
    action: core.echo
    input: {message: "{{ input.deploy }} done"}
output: {report: "{{ tasks.report.result }}"}
"#;

/// Waits for workflow `id`'s open inquiry of `kind`.
async fn open(api: &Api, id: i64, kind: &str, data: &Path) -> Value {
    let started = Instant::now();
    loop {
        let (_, page) = api
            .call(
                reqwest::Method::GET,
                &format!("/inquiries?execution={id}"),
                None,
            )
            .await;
        let found = page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["kind"] == kind && i["state"] == "open");
        if let Some(i) = found {
            return i.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no open {kind} in workflow {id}: {page}\n{}",
            server_log(data)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_workflow_survives_kill_9_and_resumes_on_the_answer_then_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut first = Reaped(serve(port, &data, &[]));
    let api = Api::ready(port, &data).await;
    api.upload(crate::common::workflow_pack(
        dir.path(),
        "ops",
        "deploy",
        RUNBOOK,
    ))
    .await;
    let (status, run) = api
        .call(
            reqwest::Method::POST,
            "/executions",
            Some(json!({"action": "ops.deploy", "params": {"deploy": "d-7"}})),
        )
        .await;
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_i64().unwrap();
    let ask = open(&api, id, "ask", &data).await;
    first.0.kill().unwrap(); // SIGKILL while it waits for a person
    first.0.wait().unwrap();

    let mut second = Reaped(serve(port, &data, &[]));
    let api = Api::ready(port, &data).await;
    let (status, answered) = api
        .call(
            reqwest::Method::POST,
            &format!("/inquiries/{}/respond", ask["id"]),
            Some(json!({"ok": true})),
        )
        .await;
    assert_eq!(status, 200, "{answered}\n{}", server_log(&data));
    open(&api, id, "wait", &data).await;
    second.0.kill().unwrap(); // and again while it waits for the event
    second.0.wait().unwrap();

    let _third = Reaped(serve(port, &data, &[]));
    let api = Api::ready(port, &data).await;
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            "/events",
            Some(json!({"trigger": "core.manual", "payload": {"id": "d-7"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let done = api.workflow_ended(id, &data).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"], json!({"report": "d-7 done"}), "{done}");
    let (_, tasks) = api
        .call(
            reqwest::Method::GET,
            &format!("/executions?parent={id}&fields=full"),
            None,
        )
        .await;
    let mut names: Vec<&str> = tasks["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["approve", "finished", "report"],
        "each task once: {tasks}"
    );
}
