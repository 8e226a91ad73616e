//! Packs' key-value state on a server, on both backends: what actions keep
//! outlives their runs, stays within its pack, is capped, expires, is
//! readable by admins only, and works the same from a standalone worker.

use std::time::Duration;

use attune::client::worker as remote;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{PipelineConfig, TestServer, guest_bytes, on_both_backends};

/// Runs `action` of pack `pack` (the hostile guest) to its end; its record.
async fn run(s: &TestServer, pack: &str, action: &str, params: Value) -> Value {
    let r = s
        .post(
            "/api/v1/executions",
            json!({"action": format!("{pack}.{action}"), "params": params}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    s.ended(r.body["id"].as_i64().unwrap()).await
}

/// The result of a run that must succeed.
async fn ok(s: &TestServer, pack: &str, action: &str, params: Value) -> Value {
    let e = run(s, pack, action, params).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    e["result"].clone()
}

/// Runs the same calls on `pack`: state kept across runs, caps, expiry.
async fn keeps_state(s: &TestServer, pack: &str) {
    assert_eq!(
        ok(s, pack, "remember", json!({"key": "cursor", "value": "41"})).await,
        Value::Null
    );
    assert_eq!(
        ok(s, pack, "count", json!({"key": "cursor", "delta": 1})).await,
        42
    );
    assert_eq!(ok(s, pack, "recall", json!({"key": "cursor"})).await, "42");
    assert_eq!(
        ok(s, pack, "count", json!({"key": "fresh", "delta": -3})).await,
        -3
    );
    assert_eq!(
        ok(s, pack, "keys", json!({"prefix": ""})).await,
        json!(["cursor", "fresh"])
    );
    assert_eq!(
        ok(s, pack, "keys", json!({"prefix": "cu"})).await,
        json!(["cursor"])
    );
    assert_eq!(ok(s, pack, "forget", json!({"key": "fresh"})).await, true);
    assert_eq!(ok(s, pack, "forget", json!({"key": "fresh"})).await, false);
    ok(s, pack, "remember", json!({"key": "word", "value": "x"})).await;
    let nan = run(s, pack, "count", json!({"key": "word", "delta": 1})).await;
    assert_eq!(nan["error"], "not-an-integer", "{nan}");
    let long_key = run(
        s,
        pack,
        "remember",
        json!({"key": "k".repeat(257), "value": "v"}),
    )
    .await;
    assert!(
        long_key["error"].as_str().unwrap().starts_with("too-large"),
        "{long_key}"
    );
    let big = run(
        s,
        pack,
        "remember",
        json!({"key": "big", "value": "v".repeat(64 * 1024 + 1)}),
    )
    .await;
    assert!(
        big["error"].as_str().unwrap().starts_with("too-large"),
        "{big}"
    );
    ok(
        s,
        pack,
        "remember",
        json!({"key": "brief", "value": "v", "ttl-ms": 1}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        ok(s, pack, "recall", json!({"key": "brief"})).await,
        Value::Null,
        "expired"
    );
}

on_both_backends! {
    async fn actions_keep_state_in_their_packs_store(backend) {
        let s = TestServer::start(backend).await;
        for pack in ["hostile", "other"] {
            assert_eq!(s.upload_component(pack, "1", guest_bytes("hostile")).await.status, StatusCode::CREATED);
        }
        keeps_state(&s, "hostile").await;
        assert_eq!(ok(&s, "other", "recall", json!({"key": "cursor"})).await, Value::Null,
            "another pack sees none of its keys");
        let listed = s.get("/api/v1/packs/hostile/kv").await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
        let keys: Vec<&str> = listed.body["items"].as_array().unwrap().iter()
            .map(|k| k["key"].as_str().unwrap()).collect();
        assert_eq!(keys, ["cursor", "word"]);
        assert_eq!(listed.body["items"][0]["value"], "42");
        let prefixed = s.get("/api/v1/packs/hostile/kv?prefix=w").await;
        assert_eq!(prefixed.body["items"].as_array().unwrap().len(), 1);
        let viewer = s.token("operator").await;
        let denied = s.send(s.request(Method::GET, "/api/v1/packs/hostile/kv", Some(&viewer))).await;
        assert_eq!(denied.status, StatusCode::FORBIDDEN);
        assert_eq!(s.get("/api/v1/packs/nope/kv").await.status, StatusCode::NOT_FOUND);
        // Deleting the pack deletes its keys.
        assert_eq!(s.delete("/api/v1/packs/other").await.status, StatusCode::NO_CONTENT);
        assert_eq!(s.delete("/api/v1/packs/hostile").await.status, StatusCode::NO_CONTENT);
        assert_eq!(s.upload_component("hostile", "2", guest_bytes("hostile")).await.status, StatusCode::CREATED);
        assert_eq!(ok(&s, "hostile", "recall", json!({"key": "cursor"})).await, Value::Null);
        s.finish().await;
    }

    async fn a_standalone_worker_keeps_state_through_the_worker_api(backend) {
        let pipeline = PipelineConfig { embedded_worker: false, ..PipelineConfig::default() };
        let s = TestServer::start_full(backend, Default::default(), pipeline).await;
        assert_eq!(s.upload_component("hostile", "1", guest_bytes("hostile")).await.status, StatusCode::CREATED);
        let dir = tempfile::tempdir().unwrap();
        let token = s.token("worker").await;
        let config = s.worker_config("kv-worker", &token, dir.path());
        let worker = tokio::spawn(async move { remote::run(config).await });
        keeps_state(&s, "hostile").await;
        // Only while it holds an execution, and only its own.
        let id = s.get("/api/v1/workers").await.body["items"].as_array().unwrap().iter()
            .find(|w| w["name"] == "kv-worker").unwrap()["id"].as_i64().unwrap();
        let done = s.get("/api/v1/executions?limit=1").await.body["items"][0]["id"].as_i64().unwrap();
        let late = s.send(s.request(Method::POST, &format!("/api/v1/workers/{id}/executions/{done}/kv"), Some(&token))
            .json(&json!({"op": "get", "key": "cursor"}))).await;
        assert_eq!(late.status, StatusCode::FORBIDDEN, "{}", late.body);
        worker.abort();
        s.finish().await;
    }
}
