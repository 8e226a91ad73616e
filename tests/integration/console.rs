//! The console at `/ui` on a real server, both backends, without a
//! browser: every page for each role with fixture data, escaping of hostile
//! strings, sessions and their cookie, CSRF refusal, the run form's errors
//! at their fields, rule toggles and dry runs, live rows.

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::json;
use support::{TestServer, on_both_backends, wait_for};

const HOSTILE: &str = "<script>alert('owned')</script>";

/// A browser-like client: a session cookie, this server's `Origin` on
/// every POST, redirects not followed.
pub(crate) struct Ui {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

/// A page: status, headers and body.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .map_or("", |v| v.to_str().unwrap())
    }
}

impl Ui {
    pub(crate) fn new(s: &TestServer) -> Ui {
        Ui {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: s.base.clone(),
            cookie: None,
        }
    }

    /// Signs in with `token`; panics unless it works.
    pub(crate) async fn signed_in(s: &TestServer, token: &str) -> Ui {
        let mut ui = Ui::new(s);
        let a = ui.post("/ui/login", &[("token", token)]).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
        assert_eq!(a.location(), "/ui/executions");
        let cookie = a.headers.get(SET_COOKIE).unwrap().to_str().unwrap();
        ui.cookie = Some(cookie.split(';').next().unwrap().to_string());
        ui
    }

    async fn answer(&self, rb: reqwest::RequestBuilder) -> Answer {
        let rb = match &self.cookie {
            Some(c) => rb.header("cookie", c),
            None => rb,
        };
        let r = rb.send().await.unwrap();
        Answer {
            status: r.status(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap_or_default(),
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Answer {
        self.answer(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub(crate) async fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        self.post_from(path, form, Some(&self.base.clone())).await
    }

    pub(crate) async fn post_from(
        &self,
        path: &str,
        form: &[(&str, &str)],
        origin: Option<&str>,
    ) -> Answer {
        let mut rb = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some(o) = origin {
            rb = rb.header("origin", o);
        }
        self.answer(rb).await
    }
}

/// A finished echo of a hostile string, a rule with a hostile description
/// and its enforcement: `(execution id, rule ref)`.
async fn fixtures(s: &TestServer) -> (i64, String) {
    let r = s
        .post(
            "/api/v1/executions",
            json!({"action": "core.echo", "params": {"message": HOSTILE}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["id"].as_i64().unwrap();
    s.ended(id).await;
    let rule = json!({
        "ref": "ops.hostile", "description": HOSTILE, "trigger": "core.manual",
        "action": "core.echo", "action_params": {"message": "{{ event.payload.text }}"}, "enabled": true,
        "policies": [{"concurrency": 5, "key": format!("{{{{ params.message }}}}{HOSTILE}")}],
    });
    let r = s.post("/api/v1/rules", rule).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = s
        .post(
            "/api/v1/events",
            json!({"trigger": "core.manual", "payload": {"text": HOSTILE}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (id, "ops.hostile".into())
}

/// Whether `html` carries `HOSTILE` only escaped.
fn escaped(html: &str) -> bool {
    !html.contains("<script>alert") && !html.contains("alert('owned')</script>")
}

on_both_backends! {
    async fn every_page_renders_for_each_role_and_escapes_what_it_shows(backend) {
        let s = TestServer::start(backend).await;
        let (id, rule) = fixtures(&s).await;
        let pages = [
            "/ui/executions".to_string(),
            "/ui/executions?status=succeeded&since=1h".into(),
            "/ui/executions?status=delayed".into(),
            format!("/ui/executions/{id}"),
            format!("/ui/executions/{id}?level=warn"),
            "/ui/rules".into(),
            format!("/ui/rules/{rule}"),
            "/ui/packs".into(),
            "/ui/actions/core.echo".into(),
            "/ui/actions/core.http".into(),
            "/ui/events".into(),
            "/ui/workers".into(),
            "/ui/logout".into(),
        ];
        for role in ["viewer", "operator", "admin"] {
            let token = if role == "admin" { s.admin.clone() } else { s.token(role).await };
            let ui = Ui::signed_in(&s, &token).await;
            for page in &pages {
                let a = ui.get(page).await;
                assert_eq!(a.status, StatusCode::OK, "{role} {page}: {}", a.body);
                assert!(escaped(&a.body), "{role} {page} shows a raw script:\n{}", a.body);
                assert!(a.body.contains("Sign out"), "{role} {page}");
                if page.starts_with("/ui/rules/") {
                    assert!(a.body.contains("<code>rule:ops.hostile#1</code> at most 5 running per"), "{}", a.body);
                }
                assert_eq!(a.headers["x-frame-options"], "DENY");
                assert!(a.headers["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
                assert_eq!(a.headers["cache-control"], "no-store");
                assert!(a.headers.contains_key("x-request-id"), "traced under an id");
            }
            let detail = ui.get(&format!("/ui/executions/{id}")).await.body;
            assert!(detail.contains("&lt;script&gt;alert("), "the hostile output is shown, escaped");
            assert!(detail.contains("id=\"resources\"") && detail.contains("ms CPU"), "what it used: {detail}");
            let rules = ui.get("/ui/rules").await.body;
            assert!(rules.contains("&lt;script&gt;"), "the hostile description is shown, escaped");
            let action = ui.get("/ui/actions/core.echo").await.body;
            // Its timeline, and the spread of its action's runs.
            assert!(detail.contains("id=\"timeline\"") && detail.contains("<rect class=\"bar\""), "{detail}");
            assert!(action.contains("id=\"usage\"") && action.contains("CPU p50"), "{action}");
            // A viewer is offered no button that would fail.
            let operator = role != "viewer";
            assert_eq!(detail.contains("id=\"rerun\""), operator, "{role}");
            assert_eq!(detail.contains("id=\"replay\""), operator, "{role}");
            assert_eq!(action.contains("id=\"run\""), operator, "{role}");
            assert_eq!(rules.contains("/disable\""), operator, "{role}");
            if !operator {
                let a = ui.post(&format!("/ui/executions/{id}/rerun"), &[]).await;
                assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
                let a = ui.post(&format!("/ui/executions/{id}/replay"), &[("pack_version", "")]).await;
                assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
                let a = ui.post(&format!("/ui/rules/{rule}/disable"), &[]).await;
                assert_eq!(a.status, StatusCode::FORBIDDEN);
                assert_eq!(s.get(&format!("/api/v1/rules/{rule}")).await.body["enabled"], true);
            }
        }
        // The event page names the rule that matched, and its run exists.
        let ui = Ui::signed_in(&s, &s.admin).await;
        let ran = wait_for(std::time::Duration::from_secs(10), || async {
            let e = s.get(&format!("/api/v1/executions?rule={rule}")).await.body;
            e["items"].as_array().filter(|i| !i.is_empty()).cloned()
        }).await.expect("the rule ran");
        let events = ui.get("/ui/events").await.body;
        assert!(events.contains(&format!("/ui/rules/{rule}")), "{events}");
        let shown = ui.get(&format!("/ui/rules/{rule}")).await.body;
        assert!(shown.contains(&format!("/ui/executions/{}", ran[0]["id"])), "its enforcement links its run");
        let a = ui.get("/ui/executions/999999").await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        let a = ui.get("/ui/nowhere").await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        assert!(a.body.contains("no such page"));
        s.finish().await;
    }

    async fn sessions_cookies_and_origins_keep_strangers_out(backend) {
        let s = TestServer::start(backend).await;
        let anon = Ui::new(&s);
        for page in ["/ui/", "/ui/executions", "/ui/executions/1", "/ui/rules", "/ui/workers"] {
            let a = anon.get(page).await;
            assert_eq!(a.status, StatusCode::SEE_OTHER, "{page}");
            assert!(a.location().starts_with("/ui/"), "{page}");
        }
        assert_eq!(anon.get("/ui/executions").await.location(), "/ui/login");
        let mut forged = Ui::new(&s);
        forged.cookie = Some("attune_session=attune_0000".into());
        assert_eq!(forged.get("/ui/executions").await.location(), "/ui/login");
        assert_eq!(anon.get("/ui/login").await.status, StatusCode::OK);

        // Wrong tokens, worker tokens and other origins cannot sign in.
        let a = anon.post("/ui/login", &[("token", "attune_nonsense")]).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert!(a.headers.get(SET_COOKIE).is_none());
        let worker = s.token("worker").await;
        assert_eq!(anon.post("/ui/login", &[("token", &worker)]).await.status, StatusCode::UNAUTHORIZED);
        let long = "x".repeat(100_000);
        assert_eq!(anon.post("/ui/login", &[("token", &long)]).await.status, StatusCode::UNAUTHORIZED);
        for origin in [Some("http://evil.example"), Some("null"), None] {
            let a = anon.post_from("/ui/login", &[("token", &s.admin)], origin).await;
            assert_eq!(a.status, StatusCode::FORBIDDEN, "{origin:?}");
            assert!(a.headers.get(SET_COOKIE).is_none());
        }

        // The cookie: HttpOnly, SameSite=Strict, only for /ui, expiring; not
        // Secure over plain HTTP.
        let a = anon.post("/ui/login", &[("token", &s.admin)]).await;
        let cookie = a.headers[SET_COOKIE].to_str().unwrap().to_string();
        for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=28800"] {
            assert!(cookie.contains(flag), "{cookie}");
        }
        assert!(!cookie.contains("Secure"), "{cookie}");
        assert!(!cookie.contains(&s.admin), "the cookie is not the token");

        // A signed-in user's change from another origin is refused, and
        // nothing changes.
        let operator = s.token("operator").await;
        let ui = Ui::signed_in(&s, &operator).await;
        let rule = s.get("/api/v1/rules").await.body["items"][0]["ref"].as_str().unwrap().to_string();
        for origin in [Some("http://evil.example"), None] {
            let a = ui.post_from(&format!("/ui/rules/{rule}/disable"), &[], origin).await;
            assert_eq!(a.status, StatusCode::FORBIDDEN, "{origin:?}");
            assert!(a.body.contains("Origin"), "{}", a.body);
        }
        assert_eq!(s.get(&format!("/api/v1/rules/{rule}")).await.body["enabled"], true);
        let a = ui.post(&format!("/ui/rules/{rule}/disable"), &[]).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER);
        assert_eq!(s.get(&format!("/api/v1/rules/{rule}")).await.body["enabled"], false);

        // Signing out ends the session; so does revoking its token.
        let a = ui.post("/ui/logout", &[]).await;
        assert_eq!(a.location(), "/ui/login");
        assert!(a.headers[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
        assert_eq!(ui.get("/ui/executions").await.status, StatusCode::SEE_OTHER);
        let viewer = s.post("/api/v1/tokens", json!({"name": "v", "role": "viewer"})).await.body;
        let ui = Ui::signed_in(&s, viewer["token"].as_str().unwrap()).await;
        assert_eq!(ui.get("/ui/executions").await.status, StatusCode::OK);
        let r = s.delete(&format!("/api/v1/tokens/{}", viewer["id"])).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        let gone = wait_for(std::time::Duration::from_secs(5), || async {
            (ui.get("/ui/executions").await.status == StatusCode::SEE_OTHER).then_some(())
        }).await;
        assert!(gone.is_some(), "a revoked token's session ends");

        // Assets are public, cached for good, and sniff-proof.
        let page = Ui::new(&s).get("/ui/login").await.body;
        let style = page.split("href=\"").nth(1).unwrap().split('"').next().unwrap().replace("&#x2f;", "/");
        let style = style.as_str();
        for asset in [style, "/ui/assets/htmx-2.0.11.min.js", "/ui/assets/htmx-ext-sse-2.2.4.min.js", "/ui/assets/htmx.LICENSE"] {
            let a = anon.get(asset).await;
            assert_eq!(a.status, StatusCode::OK, "{asset}");
            assert!(a.headers["cache-control"].to_str().unwrap().contains("immutable"), "{asset}");
            assert_eq!(a.headers["x-content-type-options"], "nosniff");
        }
        assert_eq!(anon.get("/ui/assets/../Cargo.toml").await.status, StatusCode::NOT_FOUND);
        // Forms are bounded.
        let big = "x".repeat(300 << 10);
        let ui = Ui::signed_in(&s, &s.admin).await;
        let a = ui.post(&format!("/ui/rules/{rule}/test"), &[("payload", &big)]).await;
        assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
        s.finish().await;
    }

    async fn the_run_form_reports_at_fields_and_runs_rules_toggle_and_dry_run(backend) {
        let s = TestServer::start(backend).await;
        let ui = Ui::signed_in(&s, &s.admin).await;
        // A missing or unreadable value: 422, the form again with the error
        // at its field, and nothing run.
        let a = ui.post("/ui/actions/core.echo", &[("/message", "")]).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
        let field = a.body.split("data-field=\"&#x2f;message\"").nth(1).expect("the field");
        assert!(field.split("</div>").next().unwrap().contains("missing required field"), "{}", a.body);
        let a = ui.post("/ui/actions/core.sleep", &[("/seconds", "soon")]).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(a.body.contains("must be a number"), "{}", a.body);
        assert!(a.body.contains("value=\"soon\""), "the value is kept");
        let a = ui.post("/ui/actions/core.echo", &[("_json", "{\"message\": 5}")]).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
        let r = s.get("/api/v1/executions").await.body;
        assert_eq!(r["items"].as_array().unwrap().iter().filter(|e| e["rule"].is_null()).count(), 0);

        // A good value runs, as the console, and the page shows the result.
        let a = ui.post("/ui/actions/core.echo", &[("/message", "from the form")]).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
        let id: i64 = a.location().rsplit('/').next().unwrap().parse().unwrap();
        let e = s.ended(id).await;
        assert_eq!(e["result"], "from the form");
        assert_eq!(e["source"], "console");
        let page = ui.get(&format!("/ui/executions/{id}")).await.body;
        assert!(page.contains("&quot;from the form&quot;"), "{page}");
        // Re-run makes a new execution of the same params.
        let a = ui.post(&format!("/ui/executions/{id}/rerun"), &[]).await;
        let again: i64 = a.location().rsplit('/').next().unwrap().parse().unwrap();
        assert!(again > id);
        assert_eq!(s.ended(again).await["result"], "from the form");
        // Replay shows the verdict and both results side by side.
        let a = ui.post(&format!("/ui/executions/{id}/replay"), &[("pack_version", "")]).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert!(a.body.contains("id=\"verdict\"><span class=\"status s-succeeded\">identical</span>"), "{}", a.body);
        assert!(a.body.contains("id=\"replayed\"") && a.body.matches("from the form").count() >= 2, "{}", a.body);
        let a = ui.post(&format!("/ui/executions/{id}/replay"), &[("pack_version", "9.9.9")]).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);

        // Cancel a running sleep.
        let a = ui.post("/ui/actions/core.sleep", &[("/seconds", "30")]).await;
        let sleep: i64 = a.location().rsplit('/').next().unwrap().parse().unwrap();
        wait_for(std::time::Duration::from_secs(10), || async {
            (s.get(&format!("/api/v1/executions/{sleep}")).await.body["status"] == "running").then_some(())
        }).await.expect("the sleep runs");
        let page = ui.get(&format!("/ui/executions/{sleep}")).await.body;
        assert!(page.contains(&format!("sse-connect=\"/ui/executions/{sleep}/output\"")), "live output");
        let a = ui.post(&format!("/ui/executions/{sleep}/cancel"), &[]).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER);
        assert_eq!(s.ended(sleep).await["status"], "cancelled");
        // The counts by status, over the last hour and day.
        let list = ui.get("/ui/executions").await.body;
        for window in ["1h", "24h"] {
            assert!(list.contains(&format!("status=cancelled&since={window}\">1</a>")), "{list}");
            assert!(list.contains(&format!("status=failed&since={window}\">0</a>")), "{list}");
        }

        // The live list sends the rows, with the newest execution.
        let mut live = ui.http.get(format!("{}/ui/executions/live", s.base))
            .header("cookie", ui.cookie.clone().unwrap()).send().await.unwrap();
        assert_eq!(live.headers()["content-type"], "text/event-stream");
        let first = live.chunk().await.unwrap().unwrap();
        let first = String::from_utf8_lossy(&first);
        assert!(first.starts_with("event: rows"), "{first}");
        assert!(first.contains(&format!("/ui/executions/{sleep}")), "{first}");

        // A workflow's page lists its tasks, a nested workflow's too.
        let archive = support::tar_gz(&[
            ("pack.toml", b"name = \"flows\"\nversion = \"1\"\nworkflows = [\"workflows/inner.yaml\", \"workflows/outer.yaml\"]\n"),
            ("workflows/inner.yaml", b"input: {type: object}\ntasks:\n  say: {action: core.echo, input: {message: deep}}\n"),
            ("workflows/outer.yaml", b"input: {type: object}\ntasks:\n  nest: {action: flows.inner, input: {}}\n"),
        ]);
        let r = s.upload_archive(archive).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let a = ui.post("/ui/actions/flows.outer", &[]).await;
        let outer: i64 = a.location().rsplit('/').next().unwrap().parse().unwrap();
        assert_eq!(s.ended(outer).await["status"], "succeeded");
        let page = ui.get(&format!("/ui/executions/{outer}")).await.body;
        let inner = page.split("<h2>Tasks</h2>").nth(1).expect("the outer workflow lists its tasks");
        assert!(inner.contains("flows.inner"), "{page}");
        let inner_id = s.get(&format!("/api/v1/executions?parent={outer}")).await.body["items"][0]["id"].as_i64().unwrap();
        let page = ui.get(&format!("/ui/executions/{inner_id}")).await.body;
        let tasks = page.split("<h2>Tasks</h2>").nth(1).expect("the nested workflow lists its tasks");
        assert!(tasks.contains("core.echo"), "{page}");
        let plain = ui.get(&format!("/ui/executions/{id}")).await.body;
        assert!(!plain.contains("<h2>Tasks</h2>"));

        // Keyset pages: 50 a page, the next after the last id shown, with
        // the filters kept.
        for _ in 0..50 {
            let r = s.post("/api/v1/executions", json!({"action": "core.noop"})).await;
            assert_eq!(r.status, StatusCode::CREATED);
        }
        let first = ui.get("/ui/executions?action=core.noop").await.body;
        assert_eq!(first.matches("<tr id=\"execution-").count(), 50);
        let older = first.split("class=\"more\" href=\"").nth(1).expect("a link to older ones");
        let older = older.split('"').next().unwrap().replace("&amp;", "&").replace("&#x2f;", "/");
        assert!(older.contains("action=core.noop") && older.contains("after="), "{older}");
        let second = ui.get(&older).await.body;
        assert_eq!(second.matches("<tr id=\"execution-").count(), 0, "all 50 were on the first page");
        let bad = ui.get("/ui/executions?status=sleeping&since=soon").await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(bad.body.contains("&#x2f;status") && bad.body.contains("&#x2f;since"), "{}", bad.body);

        // Dry run: a match with its rendered params, then bad JSON kept.
        let rule = s.get("/api/v1/rules").await.body["items"][0]["ref"].as_str().unwrap().to_string();
        let a = ui.post(&format!("/ui/rules/{rule}/test"), &[("payload", "{}")]).await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(a.body.contains("Would match."), "{}", a.body);
        let a = ui.post(&format!("/ui/rules/{rule}/test"), &[("payload", "{oops")]).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(a.body.contains("not JSON"), "{}", a.body);
        assert!(a.body.contains("{oops"), "the payload is kept");
        // Toggle off and on.
        ui.post(&format!("/ui/rules/{rule}/disable"), &[]).await;
        assert_eq!(s.get(&format!("/api/v1/rules/{rule}")).await.body["enabled"], false);
        assert!(ui.get(&format!("/ui/rules/{rule}")).await.body.contains(">Enable<"));
        ui.post(&format!("/ui/rules/{rule}/enable"), &[]).await;
        assert_eq!(s.get(&format!("/api/v1/rules/{rule}")).await.body["enabled"], true);
        s.finish().await;
    }
}

on_both_backends! {
    async fn an_operator_edits_a_rule_s_policies_and_problems_show_at_their_paths(backend) {
        let s = TestServer::start(backend).await;
        let rule = json!({
            "ref": "ops.paced", "trigger": "core.manual",
            "action": "core.echo", "action_params": {"message": "{{ event.payload.text }}"},
        });
        let r = s.post("/api/v1/rules", rule).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let path = "/ui/rules/ops.paced/policies";
        // A viewer is refused, and nothing changes.
        let viewer = Ui::signed_in(&s, &s.token("viewer").await).await;
        let a = viewer.post(path, &[("policies", r#"[{"concurrency": 1}]"#)]).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
        assert!(s.get("/api/v1/rules/ops.paced").await.body["policies"].is_null());

        let ui = Ui::signed_in(&s, &s.token("operator").await).await;
        let page = ui.get("/ui/rules/ops.paced").await.body;
        assert!(page.contains("id=\"save-policies\""), "{page}");
        let typed = r#"[{"concurrency": 2, "key": "{{ params.message }}", "rate": "5/1s", "on_limit": "cancel"}]"#;
        let a = ui.post(path, &[("policies", typed)]).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
        let stored = s.get("/api/v1/rules/ops.paced").await.body;
        assert_eq!(
            stored["policies"],
            json!([{"concurrency": 2, "key": "{{ params.message }}", "rate": "5/1s", "on_limit": "cancel"}]),
            "{stored}"
        );
        let page = ui.get("/ui/rules/ops.paced").await.body;
        assert!(page.contains("rule:ops.paced#1"), "{page}");

        // Bad input: kept as typed, each problem at its path, nothing saved.
        for (typed, shown) in [
            ("[{oops", "not a JSON array"),
            (r#"[{"concurrency": 0}]"#, "&#x2f;policies&#x2f;0&#x2f;concurrency"),
            (r#"[{"concurrency": 1, "key": "{{ secrets.token }}"}]"#, "&#x2f;policies&#x2f;0&#x2f;key"),
            (r#"[{"concurrency": 1, "rate": "often"}]"#, "&#x2f;policies&#x2f;0&#x2f;rate"),
        ] {
            let a = ui.post(path, &[("policies", typed)]).await;
            assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{typed}: {}", a.body);
            assert!(a.body.contains(shown), "{typed}: {}", a.body);
            assert!(a.body.contains("id=\"policy-errors\""), "{}", a.body);
        }
        let too_big = format!("[{}]", " ".repeat(20_000));
        let a = ui.post(path, &[("policies", &too_big)]).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(a.body.contains(r#""rate": "5/1s""#), "the stored policies show again: {}", a.body);
        assert_eq!(s.get("/api/v1/rules/ops.paced").await.body["policies"][0]["concurrency"], 2);
        // Only the policies change: a rule disabled meanwhile stays disabled.
        s.post("/api/v1/rules/ops.paced/disable", json!({})).await;
        let a = ui.post(path, &[("policies", r#"[{"concurrency": 3}]"#)]).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
        let stored = s.get("/api/v1/rules/ops.paced").await.body;
        assert_eq!((stored["enabled"].clone(), stored["policies"][0]["concurrency"].clone()), (json!(false), json!(3)));

        // Emptied: no policies.
        let a = ui.post(path, &[("policies", "")]).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
        assert!(s.get("/api/v1/rules/ops.paced").await.body["policies"].is_null());
        s.finish().await;
    }
}
