//! Secrets on a server, on both backends: admins set them, nobody reads a
//! value back, the database holds no plaintext, webhook keys refer to them,
//! and no response shows a literal webhook key.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{PipelineConfig, TestServer, guest_bytes, on_both_backends, wait_for, webhook_rule};

const CANARY: &str = "attune-plaintext-canary-7c1f0a9e5b";

on_both_backends! {
    async fn admins_set_list_and_delete_secrets_and_nobody_reads_a_value(backend) {
        let s = TestServer::start(backend).await;
        let r = s.put("/api/v1/secrets/slack_token", json!({"value": CANARY})).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        let listed = s.get("/api/v1/secrets").await;
        assert_eq!(listed.body["items"][0]["name"], "slack_token");
        assert!(listed.body["items"][0]["updated_at"].is_i64());
        assert!(!listed.body.to_string().contains(CANARY), "no value in a listing");
        for role in ["viewer", "operator"] {
            let token = s.token(role).await;
            for (method, path, body) in [
                (Method::GET, "/api/v1/secrets", None),
                (Method::PUT, "/api/v1/secrets/x", Some(json!({"value": "v"}))),
                (Method::DELETE, "/api/v1/secrets/slack_token", None),
            ] {
                let mut rb = s.request(method.clone(), path, Some(&token));
                if let Some(b) = body {
                    rb = rb.json(&b);
                }
                assert_eq!(s.send(rb).await.status, StatusCode::FORBIDDEN, "{role} {method} {path}");
            }
        }
        let bad = s.put("/api/v1/secrets/bad%20name", json!({"value": "v"})).await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(bad.detail_paths(), ["/name"]);
        let empty = s.put("/api/v1/secrets/empty", json!({"value": ""})).await;
        assert_eq!(empty.detail_paths(), ["/value"]);
        let gone = s.send(s.request(Method::DELETE, "/api/v1/secrets/slack_token", Some(&s.admin))).await;
        assert_eq!(gone.status, StatusCode::NO_CONTENT);
        let again = s.send(s.request(Method::DELETE, "/api/v1/secrets/slack_token", Some(&s.admin))).await;
        assert_eq!(again.status, StatusCode::NOT_FOUND);
        s.finish().await;
    }

    async fn webhook_keys_refer_to_secrets_and_rotate_with_them(backend) {
        let s = TestServer::start(backend).await;
        let missing = s.post("/api/v1/rules", webhook_rule("core.gh", "gh", "{{ secrets.gh_hook }}")).await;
        assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", missing.body);
        assert_eq!(missing.detail_paths(), ["/trigger_params/secret"]);
        let first = "first-key-first-key-first";
        s.put("/api/v1/secrets/gh_hook", json!({"value": first})).await;
        // A key that could name any secret would answer guesses of its value.
        let ungranted = s.post("/api/v1/rules", webhook_rule("core.gh", "gh", "{{ secrets.gh_hook }}")).await;
        assert_eq!(ungranted.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", ungranted.body);
        assert!(ungranted.body.to_string().contains("attune pack grant core --secret gh_hook"), "{}", ungranted.body);
        s.put("/api/v1/packs/core/grants", json!({"secrets": ["gh_hook"]})).await;
        let r = s.post("/api/v1/rules", webhook_rule("core.gh", "gh", "{{ secrets.gh_hook }}")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["rule"]["trigger_params"]["secret"], "{{ secrets.gh_hook }}", "a reference is shown as it is");
        assert_eq!(s.deliver("gh", first, b"{}").await, StatusCode::ACCEPTED);
        assert_eq!(s.deliver("gh", "wrong-key-wrong-key-wrong", b"{}").await, StatusCode::UNAUTHORIZED);
        let second = "second-key-second-key-second";
        s.put("/api/v1/secrets/gh_hook", json!({"value": second})).await;
        assert_eq!(s.deliver("gh", first, b"{}").await, StatusCode::UNAUTHORIZED, "rotated away");
        assert_eq!(s.deliver("gh", second, b"{}").await, StatusCode::ACCEPTED);
        s.finish().await;
    }

    async fn each_hook_is_rate_limited_and_unknown_names_share_one_limit(backend) {
        let pipeline = support::PipelineConfig { webhook_rate: 20, ..Default::default() };
        let s = TestServer::start_full(backend, Default::default(), pipeline).await;
        s.put("/api/v1/secrets/gh_hook", json!({"value": "first-key-first-key-first"})).await;
        s.put("/api/v1/packs/core/grants", json!({"secrets": ["gh_hook"]})).await;
        let r = s.post("/api/v1/rules", webhook_rule("core.gh", "gh", "{{ secrets.gh_hook }}")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let burst = s.core.hooks.burst();
        let mut statuses = Vec::new();
        for n in 0..burst + 40 {
            let hook = if n % 2 == 0 { "gh".to_string() } else { format!("probe-{n}") };
            statuses.push((n % 2, s.deliver(&hook, "wrong-key-wrong-key-wrong", b"{}").await));
        }
        for kind in [0, 1] {
            let of_kind: Vec<_> = statuses.iter().filter(|(k, _)| *k == kind).map(|(_, s)| *s).collect();
            assert!(of_kind.iter().all(|s| *s == StatusCode::UNAUTHORIZED || *s == StatusCode::TOO_MANY_REQUESTS));
            assert!(of_kind.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count() >= burst / 2, "{kind}");
        }
        // The known hook used about half its burst; the unknown names share one.
        assert!(statuses.iter().filter(|(k, s)| *k == 0 && *s == StatusCode::TOO_MANY_REQUESTS).count() == 0);
        // Many at once, so the bucket cannot refill in between.
        let names: Vec<String> = (0..burst * 2).map(|n| format!("more-{n}")).collect();
        let answers = futures_util::future::join_all(names.iter().map(|n| s.deliver(n, "x", b"{}"))).await;
        let throttled = answers.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
        assert!(throttled > 0, "unknown names run out of their shared bucket");
        assert_eq!(s.deliver("gh", "first-key-first-key-first", b"{}").await, StatusCode::ACCEPTED,
            "a known hook keeps its own bucket");
        s.finish().await;
    }

    async fn no_response_shows_a_literal_webhook_key(backend) {
        let s = TestServer::start(backend).await;
        let key = "literal-key-literal-key-literal";
        let r = s.post("/api/v1/rules", webhook_rule("core.lit", "lit", key)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert!(!r.body.to_string().contains(key), "{}", r.body);
        let viewer = s.token("viewer").await;
        let shown = s.send(s.request(Method::GET, "/api/v1/rules/core.lit", Some(&viewer))).await;
        assert_eq!(shown.body["trigger_params"]["secret"], r#"{{ secrets["webhook:core.lit"] }}"#,
            "a literal key is moved into the rule's own key");
        let names = s.get("/api/v1/secrets").await;
        assert_eq!(names.body["items"][0]["name"], "webhook:core.lit");
        let listed = s.send(s.request(Method::GET, "/api/v1/rules", Some(&viewer))).await;
        assert!(!listed.body.to_string().contains(key), "{}", listed.body);
        // Sending back what was read keeps the stored key.
        let mut rule = shown.body.clone();
        for internal in ["id", "created_at", "updated_at", "timeout_ms"] {
            rule.as_object_mut().unwrap().remove(internal);
        }
        let put = s.put("/api/v1/rules/core.lit", rule).await;
        assert_eq!(put.status, StatusCode::OK, "{}", put.body);
        assert_eq!(s.deliver("lit", key, b"{}").await, StatusCode::ACCEPTED, "the key survived the round trip");
        s.finish().await;
    }
}

#[tokio::test]
async fn the_database_holds_no_plaintext_secret() {
    let s = TestServer::start(support::Backend::Sqlite).await;
    s.put("/api/v1/secrets/canary", json!({"value": CANARY}))
        .await;
    // A run that reads it and one whose params carry it, both ended.
    assert_eq!(
        s.upload_component("hostile", "1", guest_bytes("hostile"))
            .await
            .status,
        StatusCode::CREATED
    );
    s.put(
        "/api/v1/packs/hostile/grants",
        json!({"secrets": ["canary"]}),
    )
    .await;
    assert_eq!(leak(&s, "canary").await["status"], "succeeded");
    s.put("/api/v1/packs/core/grants", json!({"secrets": ["canary"]}))
        .await;
    let r = s
        .post(
            "/api/v1/rules",
            json!({"ref": "core.carry", "trigger": "core.manual", "action": "core.echo",
        "action_params": {"message": "{{ secrets.canary }}"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    s.post(
        "/api/v1/events",
        json!({"trigger": "core.manual", "payload": {}}),
    )
    .await;
    let id = wait_for(std::time::Duration::from_secs(30), || async {
        s.get("/api/v1/executions?rule=core.carry").await.body["items"][0]["id"].as_i64()
    })
    .await
    .unwrap();
    assert_eq!(s.ended(id).await["result"], "********");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(s.data_dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            if bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()) {
                seen.push(path.display().to_string());
            }
        }
    }
    assert!(seen.is_empty(), "plaintext found in {seen:?}");
    assert!(s.data_dir.path().join("attune.db").exists());
    s.finish().await;
}

async fn leak(s: &TestServer, name: &str) -> Value {
    let r = s
        .post(
            "/api/v1/executions",
            json!({"action": "hostile.leak", "params": {"name": name}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    s.ended(r.body["id"].as_i64().unwrap()).await
}

on_both_backends! {
    async fn a_guest_reads_only_granted_secrets_and_every_trace_of_them_is_redacted(backend) {
        let s = TestServer::start(backend).await;
        assert_eq!(s.upload_component("hostile", "1", guest_bytes("hostile")).await.status, StatusCode::CREATED);
        s.put("/api/v1/secrets/api_token", json!({"value": CANARY})).await;
        let denied = leak(&s, "api_token").await;
        assert_eq!(denied["status"], "failed");
        assert_eq!(denied["error"], "denied", "not granted: {denied}");
        let grant = s.put("/api/v1/packs/hostile/grants", json!({"secrets": ["api_token", "unset"]})).await;
        assert_eq!(grant.status, StatusCode::OK, "{}", grant.body);
        assert_eq!(leak(&s, "unset").await["error"], "not-found");
        assert_eq!(leak(&s, "other").await["error"], "denied");
        let read = leak(&s, "api_token").await;
        assert_eq!(read["status"], "succeeded", "{read}");
        assert_eq!(read["result"], "********");
        assert_eq!(read["stdout"], "the secret is ********\n");
        assert_eq!(read["stderr"], "********\n");
        assert_eq!(read["logs"][0]["message"], "read ********");
        assert!(!read.to_string().contains(CANARY), "{read}");
        let id = read["id"].as_i64().unwrap();
        let streamed = s.request(Method::GET, &format!("/api/v1/executions/{id}/output"), Some(&s.admin))
            .send().await.unwrap().text().await.unwrap();
        assert!(streamed.contains("the secret is ********"), "{streamed}");
        assert!(!streamed.contains(CANARY), "{streamed}");
        let listed = s.get("/api/v1/executions?fields=full").await;
        assert!(!listed.body.to_string().contains(CANARY));
        // Rotation: the next run reads the new value.
        s.put("/api/v1/secrets/api_token", json!({"value": "rotated-value-123"})).await;
        let after = leak(&s, "api_token").await;
        assert_eq!(after["result"], "********");
        s.finish().await;
    }

    async fn rule_templates_use_secrets_that_records_show_masked(backend) {
        let s = TestServer::start(backend).await;
        let rule = json!({
            "ref": "core.say_token", "trigger": "core.manual", "action": "core.echo",
            "action_params": {"message": "token={{ secrets.api_token }}"},
        });
        let missing = s.post("/api/v1/rules", rule.clone()).await;
        assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", missing.body);
        assert!(missing.detail_paths().contains(&"/action_params".to_string()), "{}", missing.body);
        s.put("/api/v1/secrets/api_token", json!({"value": CANARY})).await;
        let ungranted = s.post("/api/v1/rules", rule.clone()).await;
        assert_eq!(ungranted.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", ungranted.body);
        assert_eq!(ungranted.detail_paths(), ["/action_params/message"]);
        s.put("/api/v1/packs/core/grants", json!({"secrets": ["api_token"]})).await;
        let r = s.post("/api/v1/rules", rule).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let dry = s.post("/api/v1/rules/core.say_token/test", json!({"payload": {}})).await;
        assert_eq!(dry.body["params"]["message"], "token=********", "{}", dry.body);
        let e = s.post("/api/v1/events", json!({"trigger": "core.manual", "payload": {}})).await;
        assert!(e.status.is_success(), "{}", e.body);
        let id = wait_for(std::time::Duration::from_secs(30), || async {
            s.get("/api/v1/executions?rule=core.say_token").await.body["items"][0]["id"].as_i64()
        })
        .await
        .expect("the rule ran");
        let done = s.ended(id).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["params"]["message"], "token=********");
        assert_eq!(done["result"], "token=********", "the echoed value is redacted too");
        assert!(!done.to_string().contains(CANARY));
        let events = s.get("/api/v1/events").await;
        assert!(!events.body.to_string().contains(CANARY));
        s.finish().await;
    }
}

/// Stores a webhook rule as it is given, as an older version saved it.
async fn store_raw_webhook_rule(s: &TestServer, r#ref: &str, hook: &str, key: &str) {
    let spec: attune_storage::RuleSpec = serde_json::from_value(json!({
        "ref": r#ref, "trigger": "core.webhook",
        "trigger_params": {"name": hook, "secret": key},
        "action": "core.noop", "action_params": {}, "enabled": true, "max_attempts": 1,
    }))
    .unwrap();
    s.core.storage.insert_rule(&spec).await.unwrap();
}

async fn stored_key(s: &TestServer, r#ref: &str) -> Value {
    let rule = s.core.storage.get_rule(r#ref).await.unwrap().unwrap();
    rule.spec.trigger_params["secret"].clone()
}

async fn secret_names(s: &TestServer) -> Vec<String> {
    s.get("/api/v1/secrets").await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

on_both_backends! {
    async fn webhook_keys_stored_the_old_ways_become_rules_own_keys_at_start(backend) {
        let s = TestServer::start(backend).await;
        // A literal in the clear, as stored before keys became secrets.
        let literal = "legacy-key-legacy-key-legacy";
        store_raw_webhook_rule(&s, "core.legacy", "legacy", literal).await;
        // A key moved into `webhook_<pack>_<rule>`, sealed under that name.
        let moved = "moved-key-moved-key-moved-key";
        let sealed = s.core.secrets.seal("webhook_core_moved", moved);
        s.core.storage.put_secret("webhook_core_moved", &sealed).await.unwrap();
        store_raw_webhook_rule(&s, "core.moved", "moved", "{{ secrets.webhook_core_moved }}").await;
        // A secret an admin named and a rule refers to stays as it is.
        s.put("/api/v1/secrets/gh_hook", json!({"value": "gh-key-gh-key-gh-key-gh"})).await;
        store_raw_webhook_rule(&s, "core.gh", "gh", "{{ secrets.gh_hook }}").await;
        let s = s.restart(PipelineConfig::default()).await;
        assert_eq!(stored_key(&s, "core.legacy").await, r#"{{ secrets["webhook:core.legacy"] }}"#);
        assert_eq!(stored_key(&s, "core.moved").await, r#"{{ secrets["webhook:core.moved"] }}"#);
        assert_eq!(stored_key(&s, "core.gh").await, "{{ secrets.gh_hook }}");
        assert_eq!(secret_names(&s).await, ["gh_hook", "webhook:core.legacy", "webhook:core.moved", "webhook_core_moved"],
            "the old secret stays: only an admin deletes a secret");
        assert_eq!(s.deliver("legacy", literal, b"{}").await, StatusCode::ACCEPTED);
        assert_eq!(s.deliver("moved", moved, b"{}").await, StatusCode::ACCEPTED, "re-sealed under its new name");
        assert_eq!(s.deliver("gh", "gh-key-gh-key-gh-key-gh", b"{}").await, StatusCode::ACCEPTED);
        // A second start finds nothing to do and breaks nothing.
        let s = s.restart(PipelineConfig::default()).await;
        assert_eq!(stored_key(&s, "core.moved").await, r#"{{ secrets["webhook:core.moved"] }}"#);
        assert_eq!(s.deliver("moved", moved, b"{}").await, StatusCode::ACCEPTED);
        assert_eq!(s.deliver("legacy", literal, b"{}").await, StatusCode::ACCEPTED);
        s.finish().await;
    }

    async fn a_webhook_key_follows_its_rule_when_renamed_and_goes_with_it(backend) {
        let s = TestServer::start(backend).await;
        let key = "follow-key-follow-key-follow";
        let r = s.post("/api/v1/rules", webhook_rule("core.old", "hook", key)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        // Renamed by sending back what was read, under a new ref.
        let mut rule = s.get("/api/v1/rules/core.old").await.body;
        for internal in ["id", "created_at", "updated_at", "timeout_ms"] {
            rule.as_object_mut().unwrap().remove(internal);
        }
        rule["ref"] = json!("core.new");
        let put = s.put("/api/v1/rules/core.old", rule.clone()).await;
        assert_eq!(put.status, StatusCode::OK, "{}", put.body);
        assert_eq!(put.body["rule"]["trigger_params"]["secret"], r#"{{ secrets["webhook:core.new"] }}"#, "{}", put.body);
        assert_eq!(secret_names(&s).await, ["webhook:core.new"]);
        assert_eq!(s.deliver("hook", key, b"{}").await, StatusCode::ACCEPTED, "the key moved with the rule");
        // A new rule under the old ref does not get the key back.
        rule["ref"] = json!("core.old");
        let r = s.post("/api/v1/rules", rule).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        // A rule that refers to a secret keeps no key of its own.
        s.put("/api/v1/secrets/gh_hook", json!({"value": "gh-key-gh-key-gh-key-gh"})).await;
        s.put("/api/v1/packs/core/grants", json!({"secrets": ["gh_hook"]})).await;
        let put = s.put("/api/v1/rules/core.new", webhook_rule("core.new", "hook", "{{ secrets.gh_hook }}")).await;
        assert_eq!(put.status, StatusCode::OK, "{}", put.body);
        assert_eq!(secret_names(&s).await, ["gh_hook"]);
        assert_eq!(s.deliver("hook", key, b"{}").await, StatusCode::UNAUTHORIZED);
        // Deleting a rule deletes its key.
        let put = s.put("/api/v1/rules/core.new", webhook_rule("core.new", "hook", key)).await;
        assert_eq!(put.status, StatusCode::OK, "{}", put.body);
        assert_eq!(secret_names(&s).await, ["gh_hook", "webhook:core.new"]);
        assert_eq!(s.delete("/api/v1/rules/core.new").await.status, StatusCode::NO_CONTENT);
        assert_eq!(secret_names(&s).await, ["gh_hook"]);
        s.finish().await;
    }
}
