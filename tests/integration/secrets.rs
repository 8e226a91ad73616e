//! Secrets on a server, on both backends: admins set them, nobody reads a
//! value back, the database holds no plaintext, webhook keys refer to them,
//! and no response shows a literal webhook key.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{TestServer, on_both_backends};

const CANARY: &str = "attune-plaintext-canary-7c1f0a9e5b";

async fn deliver(s: &TestServer, hook: &str, key: &str, body: &[u8]) -> StatusCode {
    let rb = s
        .request(Method::POST, &format!("/api/v1/webhooks/{hook}"), None)
        .header("content-type", "application/json")
        .header(
            "X-Hub-Signature-256",
            attune::engine::triggers::webhook::sign(key, body),
        )
        .body(body.to_vec());
    s.send(rb).await.status
}

fn webhook_rule(r#ref: &str, hook: &str, key: &str) -> Value {
    json!({
        "ref": r#ref, "trigger": "core.webhook",
        "trigger_params": {"name": hook, "secret": key},
        "action": "core.noop",
    })
}

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
        let r = s.post("/api/v1/rules", webhook_rule("core.gh", "gh", "{{ secrets.gh_hook }}")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["rule"]["trigger_params"]["secret"], "{{ secrets.gh_hook }}", "a reference is shown as it is");
        assert_eq!(deliver(&s, "gh", first, b"{}").await, StatusCode::ACCEPTED);
        assert_eq!(deliver(&s, "gh", "wrong-key-wrong-key-wrong", b"{}").await, StatusCode::UNAUTHORIZED);
        let second = "second-key-second-key-second";
        s.put("/api/v1/secrets/gh_hook", json!({"value": second})).await;
        assert_eq!(deliver(&s, "gh", first, b"{}").await, StatusCode::UNAUTHORIZED, "rotated away");
        assert_eq!(deliver(&s, "gh", second, b"{}").await, StatusCode::ACCEPTED);
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
        assert_eq!(shown.body["trigger_params"]["secret"], "********");
        let listed = s.send(s.request(Method::GET, "/api/v1/rules", Some(&viewer))).await;
        assert!(!listed.body.to_string().contains(key), "{}", listed.body);
        // Sending back what was read keeps the stored key.
        let mut rule = shown.body.clone();
        for internal in ["id", "created_at", "updated_at", "timeout_ms"] {
            rule.as_object_mut().unwrap().remove(internal);
        }
        let put = s.put("/api/v1/rules/core.lit", rule).await;
        assert_eq!(put.status, StatusCode::OK, "{}", put.body);
        assert_eq!(deliver(&s, "lit", key, b"{}").await, StatusCode::ACCEPTED, "the key survived the round trip");
        s.finish().await;
    }
}

#[tokio::test]
async fn the_database_holds_no_plaintext_secret() {
    let s = TestServer::start(support::Backend::Sqlite).await;
    s.put("/api/v1/secrets/canary", json!({"value": CANARY}))
        .await;
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
