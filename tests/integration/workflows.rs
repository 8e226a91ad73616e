//! Workflows end to end on both backends: packs of YAML workflows over the
//! core pack's actions, run through the API like any action.

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestServer, on_both_backends, tar_gz};

/// Uploads pack `name` holding `workflows` (`(name, YAML)`), no component.
pub(crate) async fn upload(
    s: &TestServer,
    name: &str,
    workflows: &[(&str, &str)],
) -> support::Reply {
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

const SHAPES: &str = r#"
input: {type: object}
tasks:
  left: {action: core.echo, input: {message: left}, next: [{do: [joined, twice]}]}
  right: {action: core.echo, input: {message: right}, next: [{do: [joined, twice]}]}
  joined: {action: core.echo, input: {message: joined}, join: all}
  twice: {action: core.echo, input: {message: twice}}
  flaky:
    action: core.fail
    input: {message: flaky}
    retry: {count: 2, delay: 100ms}
    next: [{when: failed, do: slow}]
  slow:
    action: core.sleep
    input: {seconds: 5}
    timeout: 300ms
    next: [{when: "tasks.slow.status == 'failed'", publish: {slow: "{{ error }}"}}]
output: {slow: "{{ vars.slow }}"}
"#;

const SLEEPY: &str = r#"
input: {type: object}
tasks:
  nap: {action: core.sleep, input: {seconds: 30}, next: [{do: after}]}
  after: {action: core.echo, input: {message: never}}
"#;

const NESTED: &str = r#"
input: {type: object, properties: {who: {type: string}}, required: [who]}
tasks:
  inner:
    action: flows.chain
    input: {who: "{{ input.who }}", hosts: [x]}
    next: [{when: succeeded, publish: {inner: "{{ result.greeting }}"}}]
output: "{{ vars.inner }}"
"#;

fn tasks_named<'a>(kids: &'a [Value], name: &str) -> Vec<&'a Value> {
    kids.iter().filter(|k| k["task"] == name).collect()
}

on_both_backends! {
    async fn joins_retries_timeouts_and_nested_workflows_behave(backend) {
        let s = TestServer::start(backend).await;
        let r = upload(&s, "flows", &[("chain", CHAIN), ("shapes", SHAPES), ("nested", NESTED)]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

        let e = run(&s, "flows.shapes", json!({})).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        assert!(e["result"]["slow"].to_string().contains("timed out"), "{e}");
        let kids = children(&s, e["id"].as_i64().unwrap()).await;
        assert_eq!(tasks_named(&kids, "joined").len(), 1, "join: all runs once");
        assert_eq!(tasks_named(&kids, "twice").len(), 2, "without a join, each arrival runs it");
        let flaky = tasks_named(&kids, "flaky");
        assert_eq!(flaky.len(), 3, "one run and two retries");
        assert!(flaky.iter().all(|k| k["status"] == "failed"));
        let gap = flaky[1]["created_at"].as_i64().unwrap() - flaky[0]["finished_at"].as_i64().unwrap();
        assert!(flaky[1]["started_at"].as_i64().unwrap() - flaky[0]["finished_at"].as_i64().unwrap() >= 100, "retried after its delay ({gap} ms to create)");
        assert_eq!(tasks_named(&kids, "slow")[0]["status"], "timed_out");
        // The detail route shows the tasks' states.
        let detail = s.get(&format!("/api/v1/executions/{}", e["id"])).await.body;
        assert_eq!(detail["workflow"]["tasks"]["flaky"]["runs"], 1);
        assert_eq!(detail["workflow"]["tasks"]["flaky"]["children"].as_array().unwrap().len(), 3);
        assert_eq!(detail["workflow"]["tasks"]["joined"]["status"], "succeeded");

        let e = run(&s, "flows.nested", json!({"who": "me"})).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        assert_eq!(e["result"], "hello me");
        let kids = children(&s, e["id"].as_i64().unwrap()).await;
        assert_eq!(kids[0]["action"], "flows.chain");
        assert_eq!(children(&s, kids[0]["id"].as_i64().unwrap()).await.len(), 3);
        s.finish().await;
    }

    async fn cancelling_a_workflow_cancels_its_tasks_and_starts_nothing_new(backend) {
        let s = TestServer::start(backend).await;
        let r = upload(&s, "flows", &[("sleepy", SLEEPY)]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let r = s.post("/api/v1/executions", json!({"action": "flows.sleepy", "params": {}})).await;
        let id = r.body["id"].as_i64().unwrap();
        let nap = support::wait_for(std::time::Duration::from_secs(10), || async {
            let kids = children(&s, id).await;
            kids.first().filter(|k| k["status"] == "running").cloned()
        })
        .await
        .expect("the first task runs");
        let r = s.post(&format!("/api/v1/executions/{id}/cancel"), json!({})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let e = s.ended(id).await;
        assert_eq!(e["status"], "cancelled", "{e}");
        let nap = s.ended(nap["id"].as_i64().unwrap()).await;
        assert_eq!(nap["status"], "cancelled", "{nap}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert_eq!(children(&s, id).await.len(), 1, "nothing new started");
        s.finish().await;
    }

    async fn a_workflow_is_checked_at_upload_with_every_problem_at_its_path(backend) {
        let s = TestServer::start(backend).await;
        let bad = r#"
tasks:
  a:
    action: core.echo
    input: {message: 5}
    next: [{when: succeeded, do: [b, nowhere]}]
  b: {action: ops.missing}
  c: {action: core.echo, input: {message: "{{ oops"}}
"#;
        let r = upload(&s, "broken", &[("deploy", bad)]).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        let paths = r.detail_paths();
        for expected in [
            "/workflows/deploy.yaml/tasks/a/input/message",
            "/workflows/deploy.yaml/tasks/a/next/0/do/1",
            "/workflows/deploy.yaml/tasks/b/action",
            "/workflows/deploy.yaml/tasks/c/input/message",
        ] {
            assert!(paths.iter().any(|p| p == expected), "{expected} in {paths:?}");
        }
        assert_eq!(s.get("/api/v1/packs/broken").await.status, StatusCode::NOT_FOUND, "nothing stored");
        // Parameters of a run are checked against the input schema.
        let r = upload(&s, "flows", &[("nested", NESTED), ("chain", CHAIN)]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let r = s.post("/api/v1/executions", json!({"action": "flows.nested", "params": {"who": 3}})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(r.detail_paths(), ["/params/who"]);
        s.finish().await;
    }

    async fn rules_chain_on_finished_executions_but_never_on_their_own(backend) {
        let s = TestServer::start(backend).await;
        let on_failure = json!({
            "ref": "ops.page_on_failure", "trigger": "core.execution_finished",
            "criteria": "event.payload.status == 'failed' and event.payload.action == 'core.fail'",
            "action": "core.echo",
            "action_params": {"message": "{{ event.payload.action }} failed: {{ event.payload.error }}"}
        });
        let r = s.post("/api/v1/rules", on_failure).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let every = json!({
            "ref": "ops.after_everything", "trigger": "core.execution_finished",
            "action": "core.noop", "action_params": {}
        });
        let r = s.post("/api/v1/rules", every).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

        let failed = run(&s, "core.fail", json!({"message": "boom"})).await;
        assert_eq!(failed["status"], "failed");
        let paged = support::wait_for(std::time::Duration::from_secs(10), || async {
            let r = s.get("/api/v1/executions?rule=ops.page_on_failure&fields=full").await;
            r.body["items"].as_array().and_then(|i| i.first().cloned())
        })
        .await
        .expect("the failure rule fired");
        let paged = s.ended(paged["id"].as_i64().unwrap()).await;
        assert!(paged["result"].as_str().unwrap().contains("core.fail failed"), "{paged}");

        // `after_everything` fires for core.fail and for the page, never
        // for its own core.noop runs.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let noops = s.get("/api/v1/executions?action=core.noop&limit=500").await;
        let noops = noops.body["items"].as_array().unwrap().len();
        assert_eq!(noops, 2, "one per other execution, none for its own");
        s.finish().await;
    }

    async fn a_task_input_uses_a_secret_that_no_record_shows(backend) {
        let s = TestServer::start(backend).await;
        const CANARY: &str = "wf-canary-4f1d9a7c";
        let r = s.put("/api/v1/secrets/api_token", json!({"value": CANARY})).await;
        assert!(r.status.is_success(), "{}", r.body);
        let flow = r#"
input: {type: object}
tasks:
  say:
    action: core.echo
    input: {message: "token {{ secrets.api_token }}"}
    next: [{when: succeeded, publish: {said: "{{ result }}"}}]
output: {said: "{{ vars.said }}"}
"#;
        // A task hands a secret only to an action whose pack is granted it.
        let r = upload(&s, "flows", &[("secretive", flow)]).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert!(r.body.to_string().contains("attune pack grant core --secret api_token"), "{}", r.body);
        s.put("/api/v1/packs/core/grants", json!({"secrets": ["api_token"]})).await;
        let leaky = flow.replace("output: {said: \"{{ vars.said }}\"}", "output: {said: \"{{ secrets.api_token }}\"}");
        let r = upload(&s, "flows", &[("secretive", &leaky)]).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "no secret in the output: {}", r.body);
        let r = upload(&s, "flows", &[("secretive", flow)]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let e = run(&s, "flows.secretive", json!({})).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        let kids = children(&s, e["id"].as_i64().unwrap()).await;
        assert_eq!(kids[0]["params"]["message"], "token ********", "masked in the record");
        // The action saw the real value (its echo is redacted on the way out).
        assert_eq!(kids[0]["result"], "token ********");
        let detail = s.get(&format!("/api/v1/executions/{}", e["id"])).await.body;
        for shown in [e.to_string(), detail.to_string(), serde_json::to_string(&kids).unwrap()] {
            assert!(!shown.contains(CANARY), "the secret leaked: {shown}");
        }
        s.finish().await;
    }
}
