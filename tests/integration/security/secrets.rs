//! Secrets through templates, dry runs and the output cap; chains of
//! causes that never end.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Backend, Reply, TestServer, on_both_backends, wait_for};

const CANARY: &str = "S3cr3t-Val-9f1b2c7d";

/// Every way of computing on a secret that was once let through.
const COMPUTING: &[&str] = &[
    "{{ secrets.api_token | reverse }}",
    "{{ secrets.api_token | upper }}",
    "{{ secrets.api_token | list | join(' ') }}",
    "{{ secrets.api_token | urlencode }}",
    "{{ secrets.api_token[0:4] }}",
    "{{ secrets.api_token[0] }}",
    "x{{ secrets.api_token ~ 'y' }}",
    "{% if secrets.api_token == event.payload.g %}yes{% endif %}",
    "{% if true %}{{ 'a' + secrets.api_token }}{% endif %}",
    "{% for c in secrets.api_token %}{{ c }}{% endfor %}",
    "{% set s = secrets.api_token %}{{ s }}",
    "{{ secrets.api_token | length }}",
    "{{ secrets['api_token'] }}",
    "{{ secrets }}",
];

async fn send_as(s: &TestServer, token: &str, method: Method, path: &str, body: Value) -> Reply {
    s.send(s.request(method, path, Some(token)).json(&body))
        .await
}

/// Whether `text` holds the canary or any 4-byte piece of it, as it is or
/// reversed or upper-cased.
fn leaks(text: &str) -> bool {
    let reversed: String = CANARY.chars().rev().collect();
    [CANARY.to_string(), reversed, CANARY.to_uppercase()]
        .iter()
        .any(|v| {
            v.as_bytes()
                .windows(5)
                .any(|w| text.as_bytes().windows(5).any(|t| t == w))
        })
}

/// A rule on manual events, and two rules that each fire on the other's
/// finished runs (the first also on the manual rule's).
async fn ping_pong(s: &TestServer) {
    let rule = |r: &str, trigger: &str, criteria: Option<&str>| {
        let mut v = json!({"ref": r, "trigger": trigger, "action": "core.noop"});
        if let Some(c) = criteria {
            v["criteria"] = json!(c);
        }
        v
    };
    for r in [
        rule("core.start", "core.manual", None),
        rule(
            "core.ping",
            "core.execution_finished",
            Some("event.payload.rule == 'core.start' or event.payload.rule == 'core.pong'"),
        ),
        rule(
            "core.pong",
            "core.execution_finished",
            Some("event.payload.rule == 'core.ping'"),
        ),
    ] {
        let created = s.post("/api/v1/rules", r).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    }
}

/// A rule stored as an older release saved it, without today's checks.
async fn store_unchecked(s: &TestServer, r#ref: &str, message: &str, enabled: bool) {
    let spec = attune_storage::RuleSpec {
        r#ref: r#ref.into(),
        description: None,
        trigger: "core.manual".into(),
        trigger_params: json!({}),
        criteria: None,
        action: "core.echo".into(),
        action_params: json!({"message": message}),
        enabled,
        timeout_ms: None,
        max_attempts: 1,
        policies: Vec::new(),
    };
    s.core.storage.insert_rule(&spec).await.unwrap();
    s.core.cache.rules_changed();
}

on_both_backends! {
    async fn an_operator_cannot_read_a_secret_through_any_template(backend) {
        let s = TestServer::start(backend).await;
        s.put("/api/v1/secrets/api_token", json!({"value": CANARY})).await;
        let operator = s.token("operator").await;
        // Not granted to the core pack: a whole reference is refused too,
        // naming the secret and the pack.
        let rule = |r: &str, message: &str| json!({"ref": r, "trigger": "core.manual",
            "action": "core.echo", "action_params": {"message": message}});
        let r = send_as(&s, &operator, Method::POST, "/api/v1/rules",
            rule("ops.whole", "Bearer {{ secrets.api_token }}")).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(r.detail_paths(), ["/action_params/message"]);
        let message = r.body["error"]["details"][0]["message"].as_str().unwrap();
        assert!(message.contains("api_token") && message.contains("`core`"), "{message}");
        let grant = s.put("/api/v1/packs/core/grants", json!({"secrets": ["api_token"]})).await;
        assert_eq!(grant.status, StatusCode::OK, "{}", grant.body);
        // Granted: every computation on it is still refused at save.
        for (n, template) in COMPUTING.iter().enumerate() {
            let r = send_as(&s, &operator, Method::POST, "/api/v1/rules",
                rule(&format!("ops.attack{n}"), template)).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{template}: {}", r.body);
            assert_eq!(r.detail_paths(), ["/action_params/message"], "{template}");
        }
        for criteria in ["secrets.api_token == 'x'", "event.payload.g in secrets.api_token"] {
            let mut body = rule("ops.crit", "{{ event.payload.g }}");
            body["criteria"] = json!(criteria);
            let r = send_as(&s, &operator, Method::POST, "/api/v1/rules", body).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{criteria}: {}", r.body);
            assert!(r.detail_paths().contains(&"/criteria".to_string()), "{}", r.body);
        }
        // Rules saved before these checks stay, do not fire, and are listed.
        store_unchecked(&s, "ops.legacy", "{{ secrets.api_token | reverse }}", true).await;
        let invalid = s.get("/api/v1/rules?invalid=true").await;
        assert_eq!(invalid.status, StatusCode::OK, "{}", invalid.body);
        assert_eq!(invalid.body["items"][0]["ref"], "ops.legacy", "{}", invalid.body);
        assert_eq!(invalid.body["items"][0]["problems"][0]["path"], "/action_params/message");
        assert_eq!(invalid.body["items"].as_array().unwrap().len(), 1, "{}", invalid.body);
        // The whole reference is allowed, and its run shows only masks.
        let r = send_as(&s, &operator, Method::POST, "/api/v1/rules",
            rule("ops.whole", "Bearer {{ secrets.api_token }}")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let e = send_as(&s, &operator, Method::POST, "/api/v1/events",
            json!({"trigger": "core.manual", "payload": {"g": "S"}})).await;
        assert!(e.status.is_success(), "{}", e.body);
        let id = wait_for(std::time::Duration::from_secs(30), || async {
            s.get("/api/v1/executions?rule=ops.whole").await.body["items"][0]["id"].as_i64()
        }).await.expect("the whole reference ran");
        let done = s.ended(id).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["result"], "Bearer ********");
        assert_eq!(done["stdout"], "Bearer ********\n");
        let legacy = s.get("/api/v1/executions?rule=ops.legacy").await;
        assert_eq!(legacy.body["items"].as_array().map(Vec::len), Some(0), "{}", legacy.body);
        // Nothing any role can read holds a byte of it.
        let viewer = s.token("viewer").await;
        for token in [&viewer, &operator] {
            for path in ["/api/v1/executions?fields=full", "/api/v1/events", "/api/v1/rules",
                         "/api/v1/rules?invalid=true", &format!("/api/v1/executions/{id}")] {
                let r = s.send(s.request(Method::GET, path, Some(token))).await;
                assert!(!leaks(&r.body.to_string()), "{path}: {}", r.body);
            }
        }
        s.finish().await;
    }

    async fn the_dry_run_answers_the_same_whatever_the_secret_holds(backend) {
        let s = TestServer::start(backend).await;
        s.put("/api/v1/packs/core/grants", json!({"secrets": ["api_token"]})).await;
        s.put("/api/v1/secrets/api_token", json!({"value": CANARY})).await;
        let viewer = s.token("viewer").await;
        let saved = [
            "{{ secrets.api_token }}",
            "Bearer {{ secrets.api_token }}",
            "{{ event.payload.g }}:{{ secrets.api_token }}",
        ];
        for (n, t) in saved.iter().enumerate() {
            let r = s.post("/api/v1/rules", json!({"ref": format!("core.ok{n}"),
                "trigger": "core.manual", "action": "core.echo", "enabled": false,
                "action_params": {"message": t}})).await;
            assert_eq!(r.status, StatusCode::CREATED, "{t}: {}", r.body);
        }
        // The oracle of old: a render that fails when a guess is wrong.
        let oracles = [
            "{% if secrets.api_token[0] != event.payload.g %}{{ undefined_thing }}{% endif %}",
            "{{ secrets.api_token | reverse }}",
            "{% if secrets.api_token.startswith(event.payload.g) %}{{ 1 }}{% else %}{{ nope.x }}{% endif %}",
        ];
        for (n, t) in oracles.iter().enumerate() {
            store_unchecked(&s, &format!("core.oracle{n}"), t, false).await;
        }
        let refs: Vec<String> = (0..saved.len()).map(|n| format!("core.ok{n}"))
            .chain((0..oracles.len()).map(|n| format!("core.oracle{n}"))).collect();
        let mut answers = Vec::new();
        for value in [CANARY, "zzzz-other-value"] {
            s.put("/api/v1/secrets/api_token", json!({"value": value})).await;
            let mut these = Vec::new();
            for r in &refs {
                for guess in ["S", "z", "S3", "x"] {
                    let a = send_as(&s, &viewer, Method::POST, &format!("/api/v1/rules/{r}/test"),
                        json!({"payload": {"g": guess}})).await;
                    assert!(!leaks(&a.body.to_string()), "{r}: {}", a.body);
                    these.push(format!("{r} {guess} {} {}", a.status, a.body));
                }
            }
            answers.push(these);
        }
        assert_eq!(answers[0], answers[1], "a dry run's answer depends on the secret");
        assert!(answers[0].iter().any(|a| a.contains("Bearer ********")), "{:?}", answers[0]);
        s.finish().await;
    }

    async fn a_secret_cut_by_the_output_cap_is_masked_whole(backend) {
        let s = TestServer::start(backend).await;
        s.put("/api/v1/packs/core/grants", json!({"secrets": ["api_token"]})).await;
        s.put("/api/v1/secrets/api_token", json!({"value": CANARY})).await;
        let r = s.post("/api/v1/rules", json!({"ref": "core.fill", "trigger": "core.manual",
            "action": "core.echo",
            "action_params": {"message": "{{ event.payload.pad }}{{ secrets.api_token }}"}})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        // stdout keeps 1 MiB: the secret starts 6 bytes before the cut.
        let cap = 1 << 20;
        for (n, before) in [6, 1].into_iter().enumerate() {
            let pad = "A".repeat(cap - before);
            let e = s.post("/api/v1/events", json!({"trigger": "core.manual", "payload": {"pad": pad}})).await;
            assert!(e.status.is_success(), "{}", e.body);
            let id = wait_for(std::time::Duration::from_secs(30), || async {
                let runs = s.get("/api/v1/executions?rule=core.fill").await.body;
                (runs["items"].as_array()?.len() == n + 1).then(|| runs["items"][0]["id"].as_i64()).flatten()
            }).await.expect("queued");
            let done = s.ended(id).await;
            let stdout = done["stdout"].as_str().unwrap();
            assert!(stdout.contains("output truncated"), "cut: {}", &stdout[stdout.len() - 80..]);
            assert!(!stdout.contains(&CANARY[..before]), "{before}: {}", &stdout[stdout.len() - 80..]);
            assert!(stdout.contains("AAAA********"), "{}", &stdout[stdout.len() - 80..]);
            // How many bytes were cut would tell the secret's length.
            assert!(stdout.ends_with("[attune: output truncated]"), "{}", &stdout[stdout.len() - 80..]);
            // The result is measured as redacted: its size holds the mask's
            // length, not the secret's.
            let redacted_json = cap - before + "********".len() + 2;
            assert_eq!(done["error"], format!("the result is {redacted_json} bytes of JSON; the limit is {cap}"));
        }
        s.finish().await;
    }

    async fn rules_that_feed_each_other_stop_at_the_chain_depth(backend) {
        let s = TestServer::start(backend).await;
        ping_pong(&s).await;
        s.post("/api/v1/events", json!({"trigger": "core.manual", "payload": {}})).await;
        let held = wait_for(std::time::Duration::from_secs(30), || async {
            let events = s.get("/api/v1/events?trigger=core.execution_finished&limit=500").await.body;
            events["items"].as_array()?.iter().find(|e| e["held_reason"].is_string()).cloned()
        })
        .await
        .expect("the chain was held");
        assert_eq!(held["depth"], 9, "{held}");
        assert!(held["held_reason"].as_str().unwrap().contains("--max-chain-depth"), "{held}");
        // It stays stopped: one run per depth from 0 to 8.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let runs = s.get("/api/v1/executions?limit=500").await.body;
        assert_eq!(runs["items"].as_array().unwrap().len(), 9, "{runs}");
        let text = reqwest::Client::new()
            .get(format!("{}/metrics", s.base))
            .bearer_auth(&s.admin)
            .send().await.unwrap().text().await.unwrap();
        assert!(text.lines().any(|l| l.starts_with("attune_events_held_total 1")), "{text}");
        s.finish().await;
    }
}

#[tokio::test]
async fn a_depth_bound_can_be_set_per_server() {
    let pipeline = support::PipelineConfig {
        max_chain_depth: 2,
        ..Default::default()
    };
    let s = TestServer::start_full(Backend::Sqlite, Default::default(), pipeline).await;
    ping_pong(&s).await;
    s.post(
        "/api/v1/events",
        json!({"trigger": "core.manual", "payload": {}}),
    )
    .await;
    wait_for(std::time::Duration::from_secs(30), || async {
        let events = s.get("/api/v1/events").await.body;
        events["items"]
            .as_array()?
            .iter()
            .any(|e| e["held_reason"].is_string())
            .then_some(())
    })
    .await
    .expect("held at depth 3");
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    // The manual run, then ping at depth 1 and pong at depth 2.
    let runs = s.get("/api/v1/executions").await.body;
    assert_eq!(runs["items"].as_array().unwrap().len(), 3, "{runs}");
    s.finish().await;
}

on_both_backends! {
    async fn a_secret_cut_by_url_parsing_never_reaches_the_request_log(backend) {
        let s = TestServer::start(backend).await;
        const AWS: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        s.put("/api/v1/secrets/aws_secret", json!({"value": AWS})).await;
        s.put("/api/v1/packs/core/grants", json!({"secrets": ["aws_secret"]})).await;
        let operator = s.token("operator").await;
        let r = send_as(&s, &operator, Method::POST, "/api/v1/rules", json!({
            "ref": "core.url", "trigger": "core.manual", "action": "core.http",
            "action_params": {"url": "http://{{ secrets.aws_secret }}"}})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        send_as(&s, &operator, Method::POST, "/api/v1/events", json!({"trigger": "core.manual", "payload": {}})).await;
        let id = wait_for(std::time::Duration::from_secs(30), || async {
            s.get("/api/v1/executions?rule=core.url").await.body["items"][0]["id"].as_i64()
        }).await.expect("ran");
        let done = s.ended(id).await;
        let shown = done.to_string();
        assert!(shown.contains("http GET http://********:80 denied"), "{shown}");
        assert!(!shown.contains("wJalr") && !shown.contains("K7MD"), "{shown}");
        s.finish().await;
    }

    async fn a_workflow_hands_each_task_only_what_its_own_pack_is_granted(backend) {
        let s = TestServer::start(backend).await;
        assert_eq!(s.upload_component("hostile", "1", support::guest_bytes("hostile")).await.status, StatusCode::CREATED);
        s.put("/api/v1/secrets/api_token", json!({"value": CANARY})).await;
        s.put("/api/v1/packs/core/grants", json!({"secrets": ["api_token"]})).await;
        s.put("/api/v1/packs/hostile/grants", json!({"secrets": ["api_token"]})).await;
        let flow = r#"
input: {type: object}
tasks:
  a:
    action: core.echo
    input: {message: "{{ secrets.api_token }}"}
    next: [{when: succeeded, do: [b]}]
  b:
    action: hostile.remember
    input: {key: stash, value: "{{ secrets.api_token }}"}
"#;
        let manifest = "name = \"flows\"\nversion = \"1\"\nworkflows = [\"workflows/two.yaml\"]\n";
        let r = s.upload_archive(support::tar_gz(&[("pack.toml", manifest.as_bytes()),
            ("workflows/two.yaml", flow.as_bytes())])).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        // The grant of `hostile` goes; `core`'s stays.
        s.put("/api/v1/packs/hostile/grants", json!({"secrets": []})).await;
        let operator = s.token("operator").await;
        let run = send_as(&s, &operator, Method::POST, "/api/v1/executions",
            json!({"action": "flows.two", "params": {}})).await;
        let done = s.ended(run.body["id"].as_i64().unwrap()).await;
        assert_eq!(done["status"], "failed", "task b may not get the secret: {done}");
        let recall = send_as(&s, &operator, Method::POST, "/api/v1/executions",
            json!({"action": "hostile.recall", "params": {"key": "stash"}})).await;
        let recalled = s.ended(recall.body["id"].as_i64().unwrap()).await;
        assert!(!leaks(&recalled.to_string()), "{recalled}");
        assert_eq!(recalled["result"], Value::Null, "nothing was stashed: {recalled}");
        s.finish().await;
    }

    async fn an_action_posting_to_its_own_webhook_stops_at_the_chain_depth(backend) {
        let s = TestServer::start(backend).await;
        s.put("/api/v1/packs/core/grants", json!({"allowed_outbound_hosts": ["http://127.0.0.1:*"]})).await;
        let key = "operator-own-key-0123456789";
        let body = r#"{"loop":1}"#;
        let signature = attune_engine::triggers::webhook::sign(key, body.as_bytes());
        let r = s.post("/api/v1/rules", json!({
            "ref": "core.selfhook", "trigger": "core.webhook",
            "trigger_params": {"name": "selfhook", "secret": key},
            "action": "core.http",
            "action_params": {"url": format!("{}/api/v1/webhooks/selfhook", s.base), "method": "POST",
                "headers": [["x-hub-signature-256", signature], ["content-type", "application/json"]],
                "body": body, "timeout": 5}})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let first = s.send(s.request(Method::POST, "/api/v1/webhooks/selfhook", None)
            .header("x-hub-signature-256", &signature).header("content-type", "application/json")
            .body(body)).await;
        assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
        let held = wait_for(std::time::Duration::from_secs(60), || async {
            let events = s.get("/api/v1/events?trigger=core.webhook&limit=100").await.body;
            events["items"].as_array()?.iter().find(|e| e["held_reason"].is_string()).cloned()
        }).await.expect("the loop was held");
        assert_eq!(held["depth"], 9, "{held}");
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let events = s.get("/api/v1/events?trigger=core.webhook&limit=100").await.body;
        assert_eq!(events["items"].as_array().unwrap().len(), 10, "depths 0 to 9: {events}");
        s.finish().await;
    }
}
