//! Workflows end to end on both backends: packs of YAML workflows over the
//! core pack's actions, run through the API like any action.

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestServer, on_both_backends, tar_gz};

/// Uploads pack `name` holding `workflows` (`(name, YAML)`), no component.
async fn upload(s: &TestServer, name: &str, workflows: &[(&str, &str)]) -> support::Reply {
    let files: Vec<String> = workflows
        .iter()
        .map(|(n, _)| format!("\"workflows/{n}.yaml\""))
        .collect();
    let manifest = format!(
        "name = \"{name}\"\nversion = \"1\"\nworkflows = [{}]\n",
        files.join(", ")
    );
    let paths: Vec<String> = workflows
        .iter()
        .map(|(n, _)| format!("workflows/{n}.yaml"))
        .collect();
    let mut entries: Vec<(&str, &[u8])> = vec![("pack.toml", manifest.as_bytes())];
    for ((_, text), path) in workflows.iter().zip(&paths) {
        entries.push((path.as_str(), text.as_bytes()));
    }
    s.upload_archive(tar_gz(&entries)).await
}

/// Runs `action` with `params` and waits for its end.
async fn run(s: &TestServer, action: &str, params: Value) -> Value {
    let r = s
        .post(
            "/api/v1/executions",
            json!({"action": action, "params": params}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    s.ended(r.body["id"].as_i64().unwrap()).await
}

/// The tasks of workflow execution `id`, oldest first.
async fn children(s: &TestServer, id: i64) -> Vec<Value> {
    let r = s
        .get(&format!(
            "/api/v1/executions?parent={id}&fields=full&limit=500"
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut items = r.body["items"].as_array().unwrap().clone();
    items.reverse();
    items
}

const CHAIN: &str = r#"
description: Greets, then reports
input:
  type: object
  properties: {who: {type: string}, hosts: {type: array, items: {type: string}}}
  required: [who, hosts]
tasks:
  greet:
    action: core.echo
    input: {message: "hello {{ input.who }}"}
    next:
      - when: succeeded
        publish: {greeting: "{{ result }}"}
        do: [each]
  each:
    action: core.echo
    with_items: "{{ input.hosts }}"
    concurrency: 2
    input: {message: "{{ item }} got {{ vars.greeting }}"}
    next: [{when: succeeded, do: report}]
  report:
    action: core.echo
    input: {message: "{{ tasks.each.results | length }} hosts"}
output: {greeting: "{{ vars.greeting }}", report: "{{ tasks.report.result }}", each: "{{ tasks.each.results }}"}
"#;

const HANDLED: &str = r#"
input: {type: object}
tasks:
  boom:
    action: core.fail
    input: {message: "disk full"}
    next:
      - {when: failed, do: page}
  page:
    action: core.echo
    input: {message: "paged: {{ tasks.boom.error }}"}
output: {paged: "{{ tasks.page.result }}"}
"#;

const UNHANDLED: &str = r#"
input: {type: object}
tasks:
  boom:
    action: core.fail
    input: {message: "disk full"}
    next:
      - {when: succeeded, do: never}
  never:
    action: core.echo
    input: {message: "not reached"}
"#;

on_both_backends! {
    async fn a_chain_publishes_runs_items_in_order_and_renders_its_output(backend) {
        let s = TestServer::start(backend).await;
        let r = upload(&s, "flows", &[("chain", CHAIN)]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let action = s.get("/api/v1/actions/flows.chain").await;
        assert_eq!(action.status, StatusCode::OK, "{}", action.body);

        let hosts = ["a", "b", "c", "d", "e"];
        let e = run(&s, "flows.chain", json!({"who": "ops", "hosts": hosts})).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        let each: Vec<String> = hosts.iter().map(|h| format!("{h} got hello ops")).collect();
        assert_eq!(
            e["result"],
            json!({"greeting": "hello ops", "report": "5 hosts", "each": each})
        );
        let kids = children(&s, e["id"].as_i64().unwrap()).await;
        let tasks: Vec<&str> = kids.iter().map(|k| k["task"].as_str().unwrap()).collect();
        assert_eq!(tasks.len(), 7, "{tasks:?}");
        assert_eq!(tasks[0], "greet");
        assert_eq!(tasks[6], "report");
        for k in &kids {
            assert_eq!(k["status"], "succeeded");
            assert_eq!(k["parent"], e["id"]);
        }
        // Never more than two items at once.
        let items: Vec<&Value> = kids.iter().filter(|k| k["task"].as_str().unwrap().starts_with("each[")).collect();
        for k in &items {
            let (start, end) = (k["started_at"].as_i64().unwrap(), k["finished_at"].as_i64().unwrap());
            let overlapping = items.iter().filter(|o| {
                o["started_at"].as_i64().unwrap() < end && o["finished_at"].as_i64().unwrap() > start
            }).count();
            assert!(overlapping <= 2, "{overlapping} items ran at once");
        }
        s.finish().await;
    }

    async fn a_handled_failure_succeeds_and_an_unhandled_one_fails_with_its_error(backend) {
        let s = TestServer::start(backend).await;
        let r = upload(&s, "flows", &[("handled", HANDLED), ("unhandled", UNHANDLED)]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

        let e = run(&s, "flows.handled", json!({})).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        assert!(e["result"]["paged"].as_str().unwrap().contains("disk full"), "{e}");

        let e = run(&s, "flows.unhandled", json!({})).await;
        assert_eq!(e["status"], "failed", "{e}");
        assert!(e["error"].to_string().contains("disk full"), "{e}");
        let kids = children(&s, e["id"].as_i64().unwrap()).await;
        assert_eq!(kids.len(), 1, "the succeeded branch never ran");
        s.finish().await;
    }
}
