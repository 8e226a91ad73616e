//! Webhook keys and worker identities: every test names what must not
//! happen, does it, and checks that nothing changed.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{PipelineConfig, TestServer, on_both_backends, webhook_rule};

/// POSTs `body` to `path` with `token`.
async fn post_as(s: &TestServer, token: &str, path: &str, body: Value) -> support::Reply {
    s.send(s.request(Method::POST, path, Some(token)).json(&body))
        .await
}

on_both_backends! {
    async fn an_operators_webhook_rule_cannot_replace_another_rules_key(backend) {
        let s = TestServer::start(backend).await;
        let operator = s.token("operator").await;
        let admin_key = "admin-key-admin-key-admin-key";
        let operator_key = "operator-key-operator-key-op";
        let r = s.post("/api/v1/rules", webhook_rule("ops.deploy_hook", "deploy", admin_key)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let admin_rule = r.body["rule"].clone();
        // The ref whose old key name was the same as the admin rule's.
        let r = post_as(&s, &operator, "/api/v1/rules", webhook_rule("ops_deploy.hook", "deploy2", operator_key)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(s.deliver("deploy", admin_key, b"{}").await, StatusCode::ACCEPTED,
            "the admin rule's key is unchanged");
        assert_eq!(s.deliver("deploy", operator_key, b"{}").await, StatusCode::UNAUTHORIZED,
            "the operator's key does not sign for the admin's hook");
        assert_eq!(s.deliver("deploy2", operator_key, b"{}").await, StatusCode::ACCEPTED);
        assert_eq!(admin_rule["trigger_params"]["secret"], r#"{{ secrets["webhook:ops.deploy_hook"] }}"#,
            "the rule names its own key");
        // Nor by naming the admin rule's key, nor by creating its ref again.
        let borrowed = webhook_rule("ops.borrow", "deploy3", r#"{{ secrets["webhook:ops.deploy_hook"] }}"#);
        let r = post_as(&s, &operator, "/api/v1/rules", borrowed).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(r.detail_paths(), ["/trigger_params/secret"]);
        let r = post_as(&s, &operator, "/api/v1/rules", webhook_rule("ops.deploy_hook", "deploy", operator_key)).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        assert_eq!(s.deliver("deploy", admin_key, b"{}").await, StatusCode::ACCEPTED,
            "a refused save changed no key");
        assert_eq!(s.deliver("deploy", operator_key, b"{}").await, StatusCode::UNAUTHORIZED);
        // The namespace of rules' keys is closed to PUT /secrets, admins included.
        for name in ["webhook:ops.deploy_hook", "webhook:ops_deploy.hook", "webhook:other.rule", "webhook:"] {
            let r = s.put(&format!("/api/v1/secrets/{name}"), json!({"value": operator_key})).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {}", r.body);
            assert_eq!(r.detail_paths(), ["/name"], "{name}");
            let r = s.send(s.request(Method::DELETE, &format!("/api/v1/secrets/{name}"), Some(&s.admin))).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {}", r.body);
        }
        assert_eq!(s.deliver("deploy", admin_key, b"{}").await, StatusCode::ACCEPTED);
        assert_eq!(s.deliver("deploy", operator_key, b"{}").await, StatusCode::UNAUTHORIZED);
        let names: Vec<String> = s.get("/api/v1/secrets").await.body["items"].as_array().unwrap().iter()
            .map(|i| i["name"].as_str().unwrap().to_string()).collect();
        assert_eq!(names, ["webhook:ops.deploy_hook", "webhook:ops_deploy.hook"]);
        s.finish().await;
    }

    async fn no_token_can_take_the_name_of_a_servers_own_worker(backend) {
        let pipeline = PipelineConfig { embedded_worker: false, ..PipelineConfig::default() };
        let s = TestServer::start_full(backend, Default::default(), pipeline).await;
        let caps = attune_engine::worker::capabilities();
        let attacker = s.token("worker").await;
        for token in [&attacker, &s.admin] {
            let name = format!("embedded@localhost/{}", s.core.config.node);
            let r = post_as(&s, token, "/api/v1/workers", json!({"name": name, "capabilities": caps})).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
            assert_eq!(r.detail_paths(), ["/name"]);
        }
        // So a later start with an embedded worker still starts.
        let s = s.restart(PipelineConfig::default()).await;
        assert_eq!(s.get("/readyz").await.status, StatusCode::OK);
        s.finish().await;
    }

    async fn a_worker_registered_by_an_admin_cannot_be_adopted_by_another_token(backend) {
        let pipeline = PipelineConfig { embedded_worker: false, ..PipelineConfig::default() };
        let s = TestServer::start_full(backend, Default::default(), pipeline).await;
        let caps = attune_engine::worker::capabilities();
        let w1 = s.post("/api/v1/workers", json!({"name": "w1", "capabilities": caps})).await;
        assert_eq!(w1.status, StatusCode::OK, "{}", w1.body);
        let id = w1.body["id"].as_i64().unwrap();
        let exec = s.post("/api/v1/executions", json!({"action": "core.noop", "params": {}})).await;
        assert_eq!(exec.status, StatusCode::CREATED, "{}", exec.body);
        let exec = exec.body["id"].as_i64().unwrap();
        let claimed = s.post(&format!("/api/v1/workers/{id}/claim?max=1&wait_ms=5000"), json!({})).await;
        assert_eq!(claimed.body[0]["id"].as_i64(), Some(exec), "{}", claimed.body);
        let forged = json!([{"id": exec, "status": "succeeded", "result": "forged", "resources": {"cpu_us": 999}}]);
        let attacker = s.token("worker").await;
        let other_admin = s.token("admin").await;
        for (who, token) in [("a worker token", &attacker), ("another admin token", &other_admin)] {
            let r = post_as(&s, token, "/api/v1/workers", json!({"name": "w1", "capabilities": caps})).await;
            assert!(matches!(r.status, StatusCode::FORBIDDEN | StatusCode::CONFLICT), "{who} registers w1: {}", r.body);
            for (path, body) in [
                (format!("/api/v1/workers/{id}/results"), forged.clone()),
                (format!("/api/v1/workers/{id}/heartbeat"), json!({})),
                (format!("/api/v1/workers/{id}/claim?max=1&wait_ms=0"), json!({})),
                (format!("/api/v1/workers/{id}/release"), json!({"executions": [exec]})),
                (format!("/api/v1/workers/{id}/executions/{exec}/kv"), json!({"op": "get", "key": "k"})),
            ] {
                let r = post_as(&s, token, &path, body).await;
                assert_eq!(r.status, StatusCode::FORBIDDEN, "{who} {path}: {}", r.body);
            }
        }
        let e = s.get(&format!("/api/v1/executions/{exec}")).await.body;
        assert_eq!(e["status"], "running", "not forged: {e}");
        assert_eq!(e["worker"].as_i64(), Some(id));
        assert!(e["result"].is_null(), "{e}");
        // Only an admin reassigns, to a live worker or admin token.
        let new_owner = s.post("/api/v1/tokens", json!({"name": "w1-new", "role": "worker"})).await;
        let (new_id, new_secret) = (new_owner.body["id"].as_i64().unwrap(), new_owner.body["token"].as_str().unwrap().to_string());
        let operator = s.token("operator").await;
        for token in [&operator, &attacker] {
            let r = post_as(&s, token, &format!("/api/v1/workers/{id}/reassign"), json!({"token": new_id})).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        }
        let viewer_id = s.post("/api/v1/tokens", json!({"name": "v", "role": "viewer"})).await.body["id"].as_i64().unwrap();
        let r = s.post(&format!("/api/v1/workers/{id}/reassign"), json!({"token": viewer_id})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        let r = s.post(&format!("/api/v1/workers/{id}/reassign"), json!({"token": new_id})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["name"], "w1");
        // The previous owner is out, the new one is in.
        let r = s.post(&format!("/api/v1/workers/{id}/results"), forged.clone()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        let r = s.post(&format!("/api/v1/workers/{id}/heartbeat"), json!({})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        let r = post_as(&s, &new_secret, &format!("/api/v1/workers/{id}/heartbeat"), json!({})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = post_as(&s, &new_secret, "/api/v1/workers", json!({"name": "w1", "capabilities": caps})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["id"].as_i64(), Some(id), "the same worker");
        let real = json!([{"id": exec, "status": "succeeded", "result": null}]);
        let r = post_as(&s, &new_secret, &format!("/api/v1/workers/{id}/results"), real).await;
        assert_eq!(r.body["recorded"], json!([true]), "{}", r.body);
        let e = s.ended(exec).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        assert!(e["result"].is_null(), "{e}");
        s.finish().await;
    }

    async fn only_the_worker_holding_a_claim_can_finish_it(backend) {
        let pipeline = PipelineConfig { embedded_worker: false, ..PipelineConfig::default() };
        let s = TestServer::start_full(backend, Default::default(), pipeline).await;
        let caps = attune_engine::worker::capabilities();
        let (a, b) = (s.token("worker").await, s.token("worker").await);
        let wa = post_as(&s, &a, "/api/v1/workers", json!({"name": "wa", "capabilities": caps})).await.body["id"].as_i64().unwrap();
        let wb = post_as(&s, &b, "/api/v1/workers", json!({"name": "wb", "capabilities": caps})).await.body["id"].as_i64().unwrap();
        let exec = s.post("/api/v1/executions", json!({"action": "core.noop", "params": {}})).await.body["id"].as_i64().unwrap();
        let claimed = post_as(&s, &a, &format!("/api/v1/workers/{wa}/claim?max=1&wait_ms=5000"), json!({})).await;
        assert_eq!(claimed.body[0]["id"].as_i64(), Some(exec), "{}", claimed.body);
        // Another worker, acting as itself, reports on an execution it does not hold.
        let forged = json!([{"id": exec, "status": "succeeded", "result": "forged"}]);
        let r = post_as(&s, &b, &format!("/api/v1/workers/{wb}/results"), forged).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["recorded"], json!([false]));
        assert_eq!(s.get(&format!("/api/v1/executions/{exec}")).await.body["status"], "running");
        // Nor does its own worker, for an attempt it does not hold.
        let stale = json!([{"id": exec, "status": "succeeded", "result": "stale", "attempt": 2}]);
        let r = post_as(&s, &a, &format!("/api/v1/workers/{wa}/results"), stale).await;
        assert_eq!(r.body["recorded"], json!([false]), "{}", r.body);
        // The same report twice in one batch counts once in the metrics;
        // figures it leaves out are 0.
        let one = json!({"id": exec, "status": "succeeded", "result": null, "attempt": 1, "resources": {"cpu_us": 5, "instances": 1}});
        let r = post_as(&s, &a, &format!("/api/v1/workers/{wa}/results"), json!([one, one])).await;
        assert_eq!(r.body["recorded"], json!([true, true]), "{}", r.body);
        let e = s.ended(exec).await;
        assert_eq!(e["status"], "succeeded");
        assert!(e["result"].is_null(), "{e}");
        assert_eq!(e["resources"], json!({"cpu_us": 5, "peak_memory_bytes": 0, "instances": 1, "outbound_requests": 0, "stdout_bytes": 0, "stderr_bytes": 0,
            "outbound_bytes_sent": 0, "outbound_bytes_received": 0, "host_calls": {"http": 0, "kv": 0, "secrets": 0, "log": 0}}));
        let metrics = s.request(reqwest::Method::GET, "/metrics", Some(&s.admin)).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains(r#"attune_execution_cpu_seconds_count{action="core.noop"} 1"#), "{metrics}");
        s.finish().await;
    }
}
