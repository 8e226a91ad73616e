//! Policies end to end on both backends: keyed concurrency, rates,
//! `cancel` and `drop`, two nodes on one database, workflows whose tasks
//! are limited, and what bad policies are refused with.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{PipelineConfig, TestServer, on_both_backends, tar_gz, wait_for};

/// A rule on `core.manual` events whose `payload.s` becomes `core.sleep`'s
/// seconds, with `policies`; events tell its rule by `payload.rule`.
fn sleep_rule(r#ref: &str, policies: Value) -> Value {
    json!({
        "ref": r#ref, "trigger": "core.manual", "criteria": format!("event.payload.rule == '{}'", r#ref),
        "action": "core.sleep", "action_params": {"seconds": "{{ event.payload.s }}"},
        "policies": policies,
    })
}

/// Posts `n` events for `rule`, the `i`th sleeping `seconds(i)`, through
/// `nodes` in turn; returns their ids.
async fn post_events(
    nodes: &[&TestServer],
    rule: &str,
    n: usize,
    seconds: impl Fn(usize) -> f64,
) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..n {
        let node = nodes[i % nodes.len()];
        let r = node
            .post(
                "/api/v1/events",
                json!({"trigger": "core.manual", "payload": {"rule": rule, "s": seconds(i)}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        ids.push(r.body["id"].as_i64().unwrap());
    }
    ids
}

/// The executions of `rule`, oldest first, once `n` of them ended.
async fn ended(s: &TestServer, rule: &str, n: usize) -> Vec<Value> {
    let found = wait_for(Duration::from_secs(60), || async {
        let r = s
            .get(&format!(
                "/api/v1/executions?rule={rule}&fields=full&limit=500"
            ))
            .await;
        let mut items = r.body["items"].as_array().cloned().unwrap_or_default();
        let done = items
            .iter()
            .filter(|e| {
                !["delayed", "requested", "scheduled", "running"]
                    .contains(&e["status"].as_str().unwrap())
            })
            .count();
        items.reverse();
        (items.len() >= n && done == items.len()).then_some(items)
    })
    .await;
    match found {
        Some(items) => items,
        None => {
            let r = s
                .get(&format!(
                    "/api/v1/executions?rule={rule}&fields=full&limit=500"
                ))
                .await;
            let states: Vec<String> = r.body["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|e| {
                    format!(
                        "{} {} {} {}",
                        e["id"], e["status"], e["started_at"], e["status_reason"]
                    )
                })
                .collect();
            panic!("{n} executions of {rule} did not end: {states:#?}")
        }
    }
}

fn times(e: &Value) -> (i64, i64) {
    (
        e["started_at"].as_i64().unwrap(),
        e["finished_at"].as_i64().unwrap(),
    )
}

/// More slots than keys, so that keys run side by side.
fn roomy() -> PipelineConfig {
    PipelineConfig {
        concurrency: 4,
        ..Default::default()
    }
}

on_both_backends! {
    async fn one_at_a_time_per_key_in_order_of_arrival(backend) {
        let s = TestServer::start_full(backend, Default::default(), roomy()).await;
        let rule = sleep_rule("core.per_host", json!([{"concurrency": 1, "key": "{{ params.seconds }}"}]));
        let r = s.post("/api/v1/rules", rule).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["rule"]["policies"][0]["concurrency"], 1, "{}", r.body);
        // 60 events over 3 keys (the three durations).
        let keys = [0.05, 0.06, 0.07];
        post_events(&[&s], "core.per_host", 60, |i| keys[i % 3]).await;
        // Some wait, visibly, with the policy and key as the reason.
        let delayed = s.get("/api/v1/executions?rule=core.per_host&status=delayed&fields=full&limit=5").await;
        let first = &delayed.body["items"][0];
        assert_eq!(first["status"], "delayed", "{}", delayed.body);
        assert!(first["status_reason"].as_str().unwrap().contains("policy rule:core.per_host#1 (key `0.0"), "{first}");
        let listed = s.get("/api/v1/policies").await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
        let policy = listed.body["items"].as_array().unwrap().iter()
            .find(|p| p["name"] == "rule:core.per_host#1").cloned().unwrap();
        assert_eq!(policy["action"], "core.sleep");
        let running: i64 = policy["keys"].as_array().unwrap().iter().map(|k| k["running"].as_i64().unwrap()).sum();
        assert!(running <= 3, "{policy}");

        let all = ended(&s, "core.per_host", 60).await;
        assert_eq!(all.len(), 60);
        let mut by_key: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
        for e in &all {
            assert_eq!(e["status"], "succeeded", "{e}");
            by_key.entry(e["params"]["seconds"].to_string()).or_default().push(e);
        }
        assert_eq!(by_key.len(), 3);
        let mut overlapped_keys = false;
        for (key, runs) in &by_key {
            assert_eq!(runs.len(), 20);
            // In order of arrival, never two at once.
            for pair in runs.windows(2) {
                let (a, b) = (times(pair[0]), times(pair[1]));
                assert!(pair[0]["id"].as_i64() < pair[1]["id"].as_i64());
                assert!(b.0 >= a.1, "key {key}: {} started at {} before {} ended at {}", pair[1]["id"], b.0, pair[0]["id"], a.1);
            }
            let (start, end) = (times(runs[0]).0, times(runs[19]).1);
            overlapped_keys |= by_key.values().any(|other| !std::ptr::eq(other, runs)
                && times(other[0]).0 < end && start < times(other[19]).1);
        }
        // Keys are independent: they ran side by side.
        assert!(overlapped_keys);
        // Nothing holds or waits any more: no key is listed, and the gates
        // of the ended executions are forgotten within seconds.
        let listed = s.get("/api/v1/policies").await;
        let policy = listed.body["items"].as_array().unwrap().iter()
            .find(|p| p["name"] == "rule:core.per_host#1").cloned().unwrap();
        assert_eq!(policy["keys"], json!([]), "{policy}");
        let forgotten = wait_for(Duration::from_secs(20), || async {
            (s.core.storage.gate_rows().await.unwrap() == 0).then_some(())
        })
        .await;
        assert!(forgotten.is_some(), "{} gates left", s.core.storage.gate_rows().await.unwrap());
        s.finish().await;
    }

    async fn a_rate_spreads_starts_over_windows(backend) {
        let s = TestServer::start_full(backend, Default::default(), roomy()).await;
        let r = s.post("/api/v1/rules", sleep_rule("core.paced", json!([{"rate": "5/1s"}]))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        post_events(&[&s], "core.paced", 20, |_| 0.0).await;
        let all = ended(&s, "core.paced", 20).await;
        let mut starts: Vec<i64> = all.iter().map(|e| times(e).0).collect();
        starts.sort_unstable();
        assert!(starts[19] - starts[0] >= 3000, "20 starts in {} ms", starts[19] - starts[0]);
        for (i, w) in starts.windows(6).enumerate() {
            assert!(w[5] - w[0] >= 1000, "six starts within one second from #{i}: {starts:?}");
        }
        s.finish().await;
    }

    async fn cancel_and_drop_leave_their_records(backend) {
        let s = TestServer::start_full(backend, Default::default(), roomy()).await;
        for (r#ref, on_limit) in [("core.cancelling", "cancel"), ("core.dropping", "drop")] {
            let rule = sleep_rule(r#ref, json!([{"concurrency": 1, "on_limit": on_limit}]));
            let r = s.post("/api/v1/rules", rule).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        }
        post_events(&[&s], "core.cancelling", 3, |_| 1.0).await;
        let dropping = post_events(&[&s], "core.dropping", 3, |_| 1.0).await;

        let cancelling = ended(&s, "core.cancelling", 3).await;
        let statuses: Vec<&str> = cancelling.iter().map(|e| e["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["succeeded", "cancelled", "cancelled"]);
        for e in &cancelling[1..] {
            let reason = e["status_reason"].as_str().unwrap();
            assert!(reason.contains("policy rule:core.cancelling#1") && reason.contains("1 of 1 running"), "{reason}");
        }

        let dropped = ended(&s, "core.dropping", 1).await;
        assert_eq!(dropped.len(), 1, "only the first was created");
        for event in &dropping[1..] {
            let enforcements = s.core.storage.enforcements_of(*event).await.unwrap();
            let (rule, status, reason, execution) = &enforcements[0];
            assert_eq!((rule.as_str(), status.as_str(), *execution), ("core.dropping", "dropped", None));
            assert!(reason.as_deref().unwrap().contains("policy rule:core.dropping#1"), "{reason:?}");
        }
        let metrics = s.request(reqwest::Method::GET, "/metrics", Some(&s.admin)).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("attune_policy_cancelled_total{policy=\"rule:core.cancelling#1\"} 2"), "{metrics}");
        assert!(metrics.contains("attune_policy_dropped_total{policy=\"rule:core.dropping#1\"} 2"), "{metrics}");
        s.finish().await;
    }

    async fn a_lost_worker_frees_its_slot_with_its_lease(backend) {
        // A node killed mid-run (kill -9) hands nothing back: its execution
        // stays claimed until the lease expires. Here a worker that claims
        // and then vanishes stands in for it, with no other worker running.
        let quick = PipelineConfig { lease: Duration::from_secs(1), embedded_worker: false, ..Default::default() };
        let s = TestServer::start_full(backend, Default::default(), quick).await;
        let r = s.post("/api/v1/rules", sleep_rule("core.held", json!([{"concurrency": 1}]))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        post_events(&[&s], "core.held", 1, |_| 0.0).await;
        let caps: Vec<String> = attune_engine::worker::capabilities();
        let owner = s.get("/api/v1/tokens").await.body["items"][0]["id"].as_i64().unwrap();
        let ghost = s.core.storage.upsert_worker("ghost", &caps, &json!({}), owner, false).await.unwrap().id;
        let claimed = wait_for(Duration::from_secs(10), || async {
            let c = s.core.storage.claim(ghost, &caps, 1, 1000, true).await.unwrap();
            (!c.is_empty()).then_some(c)
        }).await.expect("the first was admitted");
        post_events(&[&s], "core.held", 1, |_| 0.0).await;
        let waiting = s.get("/api/v1/executions?rule=core.held&status=delayed").await;
        assert_eq!(waiting.body["items"].as_array().unwrap().len(), 1, "{}", waiting.body);
        // Once the lease expires the first is abandoned and the second is
        // let through to the queue, for any worker to take.
        let admitted = wait_for(Duration::from_secs(20), || async {
            let r = s.get("/api/v1/executions?rule=core.held&fields=full").await;
            let items = r.body["items"].as_array().cloned().unwrap_or_default();
            (items.len() == 2 && items[0]["status"] == "requested").then_some(items)
        }).await.expect("the second was let through after the lease");
        assert_eq!(admitted[1]["id"].as_i64(), Some(claimed[0].id));
        assert_eq!(admitted[1]["status"], "abandoned", "{}", admitted[1]);
        s.finish().await;
    }

    async fn twenty_workflows_through_a_task_limited_to_one(backend) {
        let s = TestServer::start_full(backend, Default::default(), roomy()).await;
        let manifest = "name = \"napper\"\nversion = \"1\"\ncomponents = [\"hostile.wasm\"]\n\
            workflows = [\"workflows/twice.yaml\"]\n\
            [[policies]]\naction = \"nap\"\nconcurrency = 1\n";
        let flow = "input: {type: object, properties: {ms: {type: integer}}, required: [ms]}\n\
            tasks:\n  first:\n    action: napper.nap\n    input: {ms: \"{{ input.ms }}\"}\n    next: [{when: succeeded, do: second}]\n\
            \x20 second:\n    action: napper.nap\n    input: {ms: \"{{ input.ms }}\"}\n";
        let hostile = support::guest_bytes("hostile");
        let r = s.upload_archive(tar_gz(&[
            ("pack.toml", manifest.as_bytes()),
            ("hostile.wasm", &hostile),
            ("workflows/twice.yaml", flow.as_bytes()),
        ])).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let mut ids = Vec::new();
        for _ in 0..20 {
            let r = s.post("/api/v1/executions", json!({"action": "napper.twice", "params": {"ms": 10}})).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
            ids.push(r.body["id"].as_i64().unwrap());
        }
        for id in ids {
            let e = s.ended(id).await;
            assert_eq!(e["status"], "succeeded", "{e}");
        }
        // The 40 naps never overlapped.
        let naps = s.get("/api/v1/executions?action=napper.nap&fields=full&limit=100").await.body;
        let mut spans: Vec<(i64, i64)> = naps["items"].as_array().unwrap().iter().map(times).collect();
        assert_eq!(spans.len(), 40);
        spans.sort_unstable();
        for pair in spans.windows(2) {
            assert!(pair[1].0 >= pair[0].1, "two naps at once: {pair:?}");
        }
        s.finish().await;
    }

    async fn an_action_s_own_policy_limits_direct_runs_too(backend) {
        let s = TestServer::start_full(backend, Default::default(), roomy()).await;
        let manifest = "name = \"napper\"\nversion = \"1\"\ncomponents = [\"hostile.wasm\"]\n\
            [[policies]]\naction = \"nap\"\nconcurrency = 1\non_limit = \"drop\"\n";
        let hostile = support::guest_bytes("hostile");
        let r = s.upload_archive(tar_gz(&[("pack.toml", manifest.as_bytes()), ("hostile.wasm", &hostile)])).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let action = s.get("/api/v1/actions/napper.nap").await;
        assert_eq!(action.status, StatusCode::OK);
        let first = s.post("/api/v1/executions", json!({"action": "napper.nap", "params": {"ms": 1500}})).await;
        assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
        let second = s.post("/api/v1/executions", json!({"action": "napper.nap", "params": {"ms": 1}})).await;
        assert_eq!(second.status, StatusCode::CONFLICT, "{}", second.body);
        let message = second.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("policy napper.nap#1") && message.contains("1 of 1 running"), "{message}");
        let listed = s.get("/api/v1/policies").await.body;
        let policy = listed["items"].as_array().unwrap().iter().find(|p| p["name"] == "napper.nap#1").cloned().unwrap();
        assert_eq!(policy["policy"]["on_limit"], "drop", "{policy}");
        assert_eq!(policy["keys"][0]["running"], 1, "{policy}");
        let done = s.ended(first.body["id"].as_i64().unwrap()).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        // Its slot is free again.
        let third = s.post("/api/v1/executions", json!({"action": "napper.nap", "params": {"ms": 1}})).await;
        assert_eq!(third.status, StatusCode::CREATED, "{}", third.body);
        s.finish().await;
    }

    async fn bad_policies_are_refused_with_their_paths(backend) {
        let s = TestServer::start(backend).await;
        let rule = sleep_rule("core.bad", json!([
            {"concurrency": 0},
            {"concurrency": -3},
            {"rate": "lots"},
            {"concurrency": 1, "key": "{{ secrets.token }}"},
            {"concurrency": 1, "key": "{{ params.host }}"},
            {"concurrency": 1, "on_limit": "explode"},
        ]));
        let r = s.post("/api/v1/rules", rule).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(r.detail_paths(), [
            "/policies/0/concurrency", "/policies/1/concurrency", "/policies/2/rate",
            "/policies/3/key", "/policies/4/key", "/policies/5/on_limit",
        ], "{}", r.body);
        assert!(s.get("/api/v1/rules/core.bad").await.status == StatusCode::NOT_FOUND);

        let hostile = support::guest_bytes("hostile");
        let manifest = "name = \"napper\"\nversion = \"1\"\ncomponents = [\"hostile.wasm\"]\n\
            [[policies]]\naction = \"snooze\"\nconcurrency = 1\n\
            [[policies]]\naction = \"nap\"\nrate = \"5/forever\"\n\
            [[policies]]\naction = \"nap\"\nconcurrency = 2\nkey = \"{{ params.seconds }}\"\n";
        let r = s.upload_archive(tar_gz(&[("pack.toml", manifest.as_bytes()), ("hostile.wasm", &hostile)])).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(r.detail_paths(), [
            "/pack.toml/policies/0/action", "/pack.toml/policies/1/rate", "/pack.toml/policies/2/key",
        ], "{}", r.body);
        assert_eq!(s.get("/api/v1/packs/napper").await.status, StatusCode::NOT_FOUND);
        s.finish().await;
    }
}

/// Two nodes on one PostgreSQL, each taking events and running executions,
/// never run two executions of a policy with a limit of one at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_never_exceed_a_limit_of_one() {
    let s = TestServer::start_full(support::Backend::Postgres, Default::default(), roomy()).await;
    let other = s.second_node(roomy()).await;
    let r = s
        .post(
            "/api/v1/rules",
            sleep_rule("core.single", json!([{"concurrency": 1}])),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Both nodes take events at once, and both run executions.
    let (here, there) = ([&s], [&other]);
    let (a, b) = tokio::join!(
        post_events(&here, "core.single", 15, |_| 0.02),
        post_events(&there, "core.single", 15, |_| 0.02),
    );
    assert_eq!(a.len() + b.len(), 30);
    let all = ended(&s, "core.single", 30).await;
    let mut spans: Vec<(i64, i64)> = all
        .iter()
        .map(|e| {
            assert_eq!(e["status"], "succeeded", "{e}");
            times(e)
        })
        .collect();
    spans.sort_unstable();
    for pair in spans.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "two ran at once: {pair:?}");
    }
    let workers: std::collections::BTreeSet<i64> =
        all.iter().filter_map(|e| e["worker"].as_i64()).collect();
    assert_eq!(workers.len(), 2, "both nodes ran some");
    other.finish().await;
    s.finish().await;
}
