//! An ask's events: `core.inquiry_opened` carries the prompt (and the
//! resume URL when the ask allows one) for a rule to post to chat, and
//! `core.inquiry_answered` the answer; a rule whose workflow asks again on
//! every opened ask stops at the chain's bound.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use support::{TestServer, on_both_backends, wait_for};

use super::{RUNBOOK, message, opened, respond, start, token, upload};
use crate::inquiries::pages::LINKED;

/// The runs of rule `rule` (not their tasks), oldest first.
async fn runs_of(s: &TestServer, rule: &str) -> Vec<serde_json::Value> {
    let r = s
        .get(&format!(
            "/api/v1/executions?rule={rule}&fields=full&limit=100"
        ))
        .await;
    let mut items = r.body["items"].as_array().cloned().unwrap_or_default();
    items.retain(|e| e["parent"].is_null());
    items.reverse();
    items
}

const ASKS_AGAIN: &str = r#"
input: {type: object}
tasks:
  again:
    ask: {prompt: "again?"}
"#;

/// A second approval, asked when the first is answered.
const SECOND: &str = r#"
input: {type: object}
tasks:
  confirm:
    ask: {prompt: "Sure?", self_approval: false}
"#;

on_both_backends! {
    async fn self_approval_follows_the_token_through_the_chain_it_caused(backend) {
        let s = TestServer::start(backend).await;
        let r = upload(&s, &[("restart", RUNBOOK), ("second", SECOND)]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        for rule in [
            json!({"ref": "chain.after_noop", "trigger": "core.execution_finished",
                   "criteria": "event.payload.action == 'core.noop'",
                   "action": "ops.restart", "action_params": {"host": "db9"}}),
            json!({"ref": "chain.second", "trigger": "core.inquiry_answered",
                   "criteria": "event.payload.task == 'approve'", "action": "ops.second"}),
        ] {
            let r = s.post("/api/v1/rules", rule).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        }
        let alice = token(&s, "alice", "operator").await;
        let bob = token(&s, "bob", "operator").await;
        // Another token that happens to share alice's name is someone else.
        let namesake = token(&s, "alice", "operator").await;
        // Alice runs an action; a rule on its end starts the restart, whose
        // ask refuses self-approval: it is alice's doing.
        let noop = start(&s, &alice, "core.noop", json!({})).await;
        s.ended(noop).await;
        let flow = wait_for(Duration::from_secs(15), || async {
            runs_of(&s, "chain.after_noop").await.first().map(|e| e["id"].as_i64().unwrap())
        })
        .await
        .expect("the rule started the restart");
        let id = opened(&s, flow).await["id"].as_i64().unwrap();
        let r = respond(&s, &alice, id, json!({"ok": true})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        assert!(message(&r).contains("started its workflow"), "{}", r.body);
        // Bob's answer starts the second approval: bob's doing, so not his
        // to confirm; the namesake may.
        let r = respond(&s, &bob, id, json!({"ok": true})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let second = wait_for(Duration::from_secs(15), || async {
            runs_of(&s, "chain.second").await.first().map(|e| e["id"].as_i64().unwrap())
        })
        .await
        .expect("the answer started the second approval");
        let confirm = opened(&s, second).await["id"].as_i64().unwrap();
        let r = respond(&s, &bob, confirm, json!({})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        let r = respond(&s, &namesake, confirm, json!({})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(s.ended(second).await["status"], "succeeded");
        s.finish().await;
    }

    async fn the_author_of_the_rule_that_started_a_workflow_may_not_approve_it(backend) {
        let s = TestServer::start(backend).await;
        let r = upload(&s, &[("restart", RUNBOOK)]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let alice = token(&s, "alice", "operator").await;
        let bob = token(&s, "bob", "operator").await;
        let carol = token(&s, "carol", "operator").await;
        // Alice writes a rule that restarts on whatever bob posts.
        let rule = json!({"ref": "chain.on_post", "trigger": "core.manual",
                          "action": "ops.restart", "action_params": {"host": "db3"}});
        let r = s.send(s.request(reqwest::Method::POST, "/api/v1/rules", Some(&alice)).json(&rule)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let body = json!({"trigger": "core.manual", "payload": {}});
        let r = s.send(s.request(reqwest::Method::POST, "/api/v1/events", Some(&bob)).json(&body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let flow = wait_for(Duration::from_secs(15), || async {
            runs_of(&s, "chain.on_post").await.first().map(|e| e["id"].as_i64().unwrap())
        })
        .await
        .expect("the rule started the restart");
        let id = opened(&s, flow).await["id"].as_i64().unwrap();
        for (who, token) in [("bob, who posted", &bob), ("alice, who wrote the rule", &alice)] {
            let r = respond(&s, token, id, json!({"ok": true})).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{who}: {}", r.body);
        }
        let r = respond(&s, &carol, id, json!({"ok": true})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        s.finish().await;
    }

    async fn an_ask_announces_its_prompt_and_link_and_its_answer(backend) {
        let s = TestServer::start(backend).await;
        let r = upload(&s, &[("linked", LINKED)]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        for (r#ref, trigger, message) in [
            ("chat.opened", "core.inquiry_opened", "{{ event.payload.prompt }} {{ event.payload.resume_url }}"),
            ("chat.answered", "core.inquiry_answered", "{{ event.payload.answered_by }} said {{ 'yes' if event.payload.answer.ok else 'no' }}"),
        ] {
            let rule = json!({"ref": r#ref, "trigger": trigger, "action": "core.echo",
                              "action_params": {"message": message}});
            let r = s.post("/api/v1/rules", rule).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        }
        let bob = token(&s, "bob", "operator").await;
        let flow = start(&s, &s.admin, "ops.linked", json!({"host": "db1"})).await;
        let id = opened(&s, flow).await["id"].as_i64().unwrap();
        let posted = wait_for(Duration::from_secs(15), || async {
            runs_of(&s, "chat.opened").await.into_iter().find(|e| e["status"] == "succeeded")
        })
        .await
        .expect("the opened ask was posted");
        let text = posted["result"].as_str().unwrap();
        let url = s.get(&format!("/api/v1/inquiries/{id}")).await.body["resume_url"].clone();
        assert_eq!(text, format!("Restart db1? {}", url.as_str().unwrap()), "{posted}");
        let r = respond(&s, &bob, id, json!({"ok": true})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let said = wait_for(Duration::from_secs(15), || async {
            runs_of(&s, "chat.answered").await.into_iter().find(|e| e["status"] == "succeeded")
        })
        .await
        .expect("the answer was posted");
        assert_eq!(said["result"], "bob said yes", "{said}");
        s.finish().await;
    }

    async fn a_rule_asking_again_on_every_opened_ask_stops_at_the_chain_bound(backend) {
        let s = TestServer::start(backend).await;
        let r = upload(&s, &[("again", ASKS_AGAIN)]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let rule = json!({"ref": "chat.loop", "trigger": "core.inquiry_opened", "action": "ops.again"});
        let r = s.post("/api/v1/rules", rule).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        start(&s, &s.admin, "ops.again", json!({})).await;
        // Each opened ask starts one more workflow, one deeper, until the
        // chain's bound holds the event that would go deeper.
        let settled = wait_for(Duration::from_secs(30), || async {
            let before = runs_of(&s, "chat.loop").await.len();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let after = runs_of(&s, "chat.loop").await.len();
            (after > 0 && after == before).then_some(after)
        })
        .await
        .expect("the chain stopped");
        assert!(settled <= 8, "{settled} workflows started by the rule");
        let events = s.get("/api/v1/events?trigger=core.inquiry_opened&limit=100").await.body;
        let held = &events["items"][0];
        assert!(held["held_reason"].as_str().unwrap_or_default().contains("max-chain-depth"), "{events}");
        let open = s.get("/api/v1/inquiries").await.body["items"].as_array().unwrap().len();
        assert_eq!(open, settled + 1, "one ask each, and nothing more");
        s.finish().await;
    }
}
