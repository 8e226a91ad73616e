//! Answering in the console ("Waiting for you", linked from the workflow's
//! page) and through a resume URL, which answers without a token: once,
//! and only while it has not expired.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use support::{TestServer, on_both_backends};

use super::{opened, start, token, upload};
use crate::console::Ui;

/// Asks operators; the note is short.
const FORM: &str = r#"
input: {type: object, properties: {host: {type: string}}, required: [host]}
tasks:
  approve:
    ask:
      prompt: "Restart {{ input.host }}?"
      schema: {type: object, properties: {ok: {type: boolean}, note: {type: string, maxLength: 10}}, required: [ok]}
    next:
      - when: "{{ result.ok }}"
        do: [restart]
  restart:
    action: core.echo
    input: {message: "restarting {{ input.host }}"}
output: {by: "{{ tasks.approve.result.answered_by }}", note: "{{ tasks.approve.result.note | default('') }}"}
"#;

/// Asks anyone who can read, with a resume URL allowed (a link viewers can
/// read may only answer what they may).
pub(super) const LINKED: &str = r#"
input: {type: object, properties: {host: {type: string}}, required: [host]}
tasks:
  approve:
    ask:
      prompt: "Restart {{ input.host }}?"
      schema: {type: object, properties: {ok: {type: boolean}, note: {type: string, maxLength: 10}}, required: [ok]}
      approvers: {roles: [viewer]}
      resume_url: true
    next:
      - when: "{{ result.ok }}"
        do: [restart]
  restart:
    action: core.echo
    input: {message: "restarting {{ input.host }}"}
output: {by: "{{ tasks.approve.result.answered_by }}", note: "{{ tasks.approve.result.note | default('') }}"}
"#;

/// The same ask, its link good for a second only.
const BRIEF: &str = r#"
input: {type: object}
tasks:
  approve:
    ask: {prompt: "now?", resume_url: true, approvers: {roles: [viewer]}, timeout: 2s}
"#;

/// An ask that allows no link.
const UNLINKED: &str = r#"
input: {type: object}
tasks:
  approve:
    ask: {prompt: "approvers only?"}
"#;

/// `url`'s query value `name`.
fn query<'a>(url: &'a str, name: &str) -> &'a str {
    url.split(['?', '&'])
        .find_map(|p| p.strip_prefix(&format!("{name}=")))
        .unwrap_or_default()
}

on_both_backends! {
    async fn the_console_lists_what_waits_for_you_and_answers_from_the_schema_s_form(backend) {
        let s = TestServer::start(backend).await;
        let r = upload(&s, &[("form", FORM)]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let bob = token(&s, "bob", "operator").await;
        let val = token(&s, "val", "viewer").await;
        let flow = start(&s, &s.admin, "ops.form", json!({"host": "<db1>"})).await;
        let id = opened(&s, flow).await["id"].as_i64().unwrap();

        let ui = Ui::signed_in(&s, &bob).await;
        let page = ui.get(&format!("/ui/executions/{flow}")).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains(&format!("/ui/inquiries#inquiry-{id}")), "the workflow links to its ask");
        let page = ui.get("/ui/inquiries").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains("Restart &lt;db1&gt;?"), "the prompt, escaped: {}", page.body);
        assert!(!page.body.contains("<db1>"));
        let field = |name: &str| page.body.contains(&format!("name=\"&#x2f;{name}\""));
        assert!(field("ok") && field("note"), "{}", page.body);
        let viewer = Ui::signed_in(&s, &val).await;
        let page = viewer.get("/ui/inquiries").await;
        assert!(page.body.contains("Nothing is waiting for you"), "{}", page.body);
        let a = viewer.post(&format!("/ui/inquiries/{id}"), &[("/ok", "true")]).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);

        // A note too long shows the form again, the problem at its field.
        let path = format!("/ui/inquiries/{id}");
        let a = ui.post(&path, &[("/ok", "true"), ("/note", "far too long a note")]).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
        assert!(a.body.contains("field-error"), "{}", a.body);
        // From another origin, refused.
        let a = ui.post_from(&path, &[("/ok", "true")], Some("http://evil.example")).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        let a = ui.post(&path, &[("/ok", "true"), ("/note", "go")]).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
        assert_eq!(a.location(), format!("/ui/executions/{flow}"));
        let e = s.ended(flow).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        assert_eq!(e["result"], json!({"by": "bob", "note": "go"}), "{e}");
        let a = ui.post(&path, &[("/ok", "true")]).await;
        assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
        assert!(a.body.contains("already answered by bob"), "{}", a.body);
        s.finish().await;
    }

    async fn a_resume_url_answers_without_a_token_once_and_only_until_it_expires(backend) {
        let s = TestServer::start(backend).await;
        let r = upload(&s, &[("linked", LINKED), ("brief", BRIEF), ("unlinked", UNLINKED)]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let worker = token(&s, "w", "worker").await;
        let flow = start(&s, &s.admin, "ops.linked", json!({"host": "db1"})).await;
        let ask = opened(&s, flow).await;
        let id = ask["id"].as_i64().unwrap();
        let shown = s.get(&format!("/api/v1/inquiries/{id}")).await.body;
        let url = shown["resume_url"].as_str().expect("those who may answer see the link").to_string();
        assert!(url.starts_with(&format!("/ui/respond/{id}?expires=")), "{url}");
        let r = s.send(s.request(reqwest::Method::GET, &format!("/api/v1/inquiries/{id}"), Some(&worker))).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "a worker token reads no inquiry");

        // No session needed: the prompt and the form, nothing else.
        let anyone = Ui::new(&s);
        let page = anyone.get(&url).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(page.body.contains("Restart db1?"));
        assert!(!page.body.contains("Sign out") && !page.body.contains("/ui/rules"), "{}", page.body);
        // A forged or altered link is refused.
        let forged = url.replace(&query(&url, "sig")[..4], "0000");
        assert_eq!(anyone.get(&forged).await.status, StatusCode::FORBIDDEN);
        let later = url.replace(query(&url, "expires"), &(query(&url, "expires").parse::<i64>().unwrap() + 1).to_string());
        assert_eq!(anyone.get(&later).await.status, StatusCode::FORBIDDEN);
        let other = url.replace(&format!("/ui/respond/{id}?"), &format!("/ui/respond/{}?", id + 1));
        assert_eq!(anyone.get(&other).await.status, StatusCode::FORBIDDEN);

        let form = |ok: &'static str| {
            vec![("_expires", query(&url, "expires").to_string()), ("_sig", query(&url, "sig").to_string()), ("/ok", ok.to_string())]
        };
        let post = |fields: Vec<(&'static str, String)>| {
            let anyone = &anyone;
            async move {
                let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
                anyone.post(&format!("/ui/respond/{id}"), &pairs).await
            }
        };
        let a = post(form("true")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert!(a.body.contains("Your answer was recorded"), "{}", a.body);
        let e = s.ended(flow).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        assert_eq!(e["result"]["by"], "resume URL", "{e}");
        // Used: refused, whether opened or posted again.
        let a = post(form("false")).await;
        assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
        assert!(a.body.contains("this link was used"), "{}", a.body);
        assert_eq!(anyone.get(&url).await.status, StatusCode::CONFLICT);

        // Expired: refused, even while nothing else ended the ask.
        let flow = start(&s, &s.admin, "ops.brief", json!({})).await;
        let id = opened(&s, flow).await["id"].as_i64().unwrap();
        let url = s.get(&format!("/api/v1/inquiries/{id}")).await.body["resume_url"].as_str().unwrap().to_string();
        assert_eq!(anyone.get(&url).await.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(2_200)).await;
        let page = anyone.get(&url).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
        assert!(page.body.contains("expired"), "{}", page.body);

        // An ask that allows no link has none, and a link made up for it fails.
        let flow = start(&s, &s.admin, "ops.unlinked", json!({})).await;
        let id = opened(&s, flow).await["id"].as_i64().unwrap();
        let shown = s.get(&format!("/api/v1/inquiries/{id}")).await.body;
        assert_eq!(shown["resume_url"], serde_json::Value::Null, "{shown}");
        let made_up = format!("/ui/respond/{id}?expires=99999999999999&sig={}", "ab".repeat(32));
        assert_eq!(anyone.get(&made_up).await.status, StatusCode::FORBIDDEN);
        s.finish().await;
    }
}
