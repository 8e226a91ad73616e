//! A server killed while its executions hold a policy's slot: the slot is
//! freed when the lease expires, and what waited behind it runs.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Api, Reaped, serve, server_log};
use crate::common::free_port;

/// The executions of `rule`, oldest first.
async fn of_rule(api: &Api, rule: &str) -> Vec<Value> {
    let (status, page) = api
        .call(
            reqwest::Method::GET,
            &format!("/executions?rule={rule}&fields=full&limit=100"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let mut items = page["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(|e| e["id"].as_i64());
    items
}

async fn post(api: &Api, seconds: f64) {
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            "/events",
            Some(json!({"trigger": "core.manual", "payload": {"s": seconds}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_holding_a_slot_frees_it_with_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let args = ["--lease", "1s"];
    let mut first = Reaped(serve(port, &data, &args));
    let api = Api::ready(port, &data).await;
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            "/rules",
            Some(json!({
                "ref": "core.held_slot", "trigger": "core.manual",
                "action": "core.sleep", "action_params": {"seconds": "{{ event.payload.s }}"},
                "policies": [{"concurrency": 1}],
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // One sleeps long enough to be killed holding the slot; one waits.
    post(&api, 60.0).await;
    let started = Instant::now();
    while !of_rule(&api, "core.held_slot")
        .await
        .iter()
        .any(|e| e["status"] == "running")
    {
        assert!(started.elapsed() < Duration::from_secs(20), "never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    post(&api, 0.0).await;
    let waiting = of_rule(&api, "core.held_slot").await;
    assert_eq!(waiting.len(), 2, "{waiting:?}");
    assert_eq!(waiting[1]["status"], "delayed", "{}", waiting[1]);
    first.0.kill().unwrap(); // SIGKILL while the first holds the slot
    first.0.wait().unwrap();

    let _second = Reaped(serve(port, &data, &args));
    let api = Api::ready(port, &data).await;
    let restarted = Instant::now();
    let runs = loop {
        let runs = of_rule(&api, "core.held_slot").await;
        if runs.iter().all(|e| {
            !matches!(
                e["status"].as_str(),
                Some("delayed" | "requested" | "scheduled" | "running")
            )
        }) {
            break runs;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "the held slot was never freed: {runs:?}\n{}",
            server_log(&data)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The killed run's lease expired and ended it (one attempt); the one
    // that waited then ran, never beside it.
    assert_eq!(runs[0]["status"], "abandoned", "{}", runs[0]);
    assert_eq!(runs[1]["status"], "succeeded", "{}", runs[1]);
    let freed = runs[0]["finished_at"].as_i64().unwrap();
    let next = runs[1]["started_at"].as_i64().unwrap();
    assert!(
        next >= freed,
        "started at {next} before the slot was freed at {freed}"
    );
}
