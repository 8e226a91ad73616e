//! `/mcp` on a real server, both backends: the MCP handshake, tools from
//! actions, calls as executions, errors, limits, auth.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestServer, on_both_backends, wait_for};

/// An MCP session over streamable HTTP.
#[derive(Clone)]
struct Session {
    http: reqwest::Client,
    url: String,
    token: String,
    session: Option<String>,
    next: i64,
}

impl Session {
    /// Initializes a session with `token`.
    async fn open(s: &TestServer, token: &str) -> Session {
        let mut m = Session {
            http: reqwest::Client::new(),
            url: format!("{}/mcp", s.base),
            token: token.to_string(),
            session: None,
            next: 0,
        };
        let init = json!({"protocolVersion": "2025-06-18", "capabilities": {},
                          "clientInfo": {"name": "test", "version": "1"}});
        let (status, reply, headers) = m
            .post(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init}))
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(reply["result"]["serverInfo"]["name"], "attune", "{reply}");
        m.session = headers
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_string());
        let (status, ..) = m
            .post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        m
    }

    /// Sends `message` with the token and the session.
    async fn send(&self, message: &Value) -> reqwest::Response {
        let mut rb = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream")
            .json(message);
        if let Some(id) = &self.session {
            rb = rb.header("mcp-session-id", id);
        }
        rb.send().await.unwrap()
    }

    /// Posts `message`; the whole answer as text (every event of it).
    async fn raw(&self, message: Value) -> String {
        self.send(&message).await.text().await.unwrap()
    }

    async fn post(&self, message: Value) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let r = self.send(&message).await;
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        // The answer is one server-sent event (or plain JSON for errors).
        let reply = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find(|v| v.get("id").is_some())
            .or_else(|| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null);
        (status, reply, headers)
    }

    /// Sends a request; its JSON-RPC answer (`result` or `error`).
    async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let (_, reply, _) = self
            .post(json!({"jsonrpc": "2.0", "id": self.next, "method": method, "params": params}))
            .await;
        reply
    }

    async fn call(&mut self, tool: &str, arguments: Value) -> Value {
        self.request("tools/call", json!({"name": tool, "arguments": arguments}))
            .await
    }
}

/// Runs `tests/mcp_client.py` (the official MCP Python SDK, installed in a
/// venv kept in the target directory) with `args` and `token`; what it saw.
/// Panics with its output when it fails, an SDK that could not be
/// installed included.
async fn python_client(token: &str, args: &[&str]) -> Value {
    // The test binary sits in `<target>/<profile>/deps/`.
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/mcp_client.py");
    let mut command = std::process::Command::new("python3");
    command
        .arg(script)
        .arg(target.join("mcp-python-sdk"))
        .args(args)
        .env("ATTUNE_TOKEN", token);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python MCP client failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

async fn executions_of(s: &TestServer, action: &str) -> Vec<Value> {
    let r = s
        .get(&format!("/api/v1/executions?action={action}&limit=500"))
        .await;
    r.body["items"].as_array().unwrap().clone()
}

on_both_backends! {
    async fn every_action_is_a_tool_and_a_call_is_an_execution(backend) {
        let s = TestServer::start(backend).await;
        let mut m = Session::open(&s, &s.admin).await;
        let listed = m.request("tools/list", json!({})).await;
        let tools = listed["result"]["tools"].as_array().unwrap_or_else(|| panic!("{listed}"));
        let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["attune.execution", "core.echo", "core.fail", "core.http", "core.noop", "core.sleep"]);
        let echo = tools.iter().find(|t| t["name"] == "core.echo").unwrap();
        let action = s.get("/api/v1/actions/core.echo").await.body;
        assert_eq!(echo["inputSchema"], action["params_schema"], "the action's own schema");
        assert_eq!(echo["description"], action["description"]);

        let r = m.call("core.echo", json!({"message": "hi"})).await;
        assert_eq!(r["result"]["structuredContent"], json!({"result": "hi"}), "{r}");
        assert_eq!(r["result"]["isError"], false);
        let recorded = executions_of(&s, "core.echo").await;
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0]["status"], "succeeded");
        assert_eq!(recorded[0]["source"], "mcp");

        // Invalid arguments: a tool error (for the model to correct), every
        // problem with its path in the arguments, and no execution.
        let r = m.call("core.echo", json!({"message": 5, "extra": true})).await;
        assert_eq!(r["result"]["isError"], true, "{r}");
        let details = r["result"]["structuredContent"]["details"].as_array().unwrap_or_else(|| panic!("{r}"));
        let paths: Vec<&str> = details.iter().map(|d| d["path"].as_str().unwrap()).collect();
        assert!(paths.contains(&"/message"), "{r}");
        let text = r["result"]["content"][0]["text"].as_str().unwrap();
        for d in details {
            let line = format!("{}: {}", d["path"].as_str().unwrap(), d["message"].as_str().unwrap());
            assert!(text.contains(line.trim_start_matches(": ")), "every path in the text: {text}");
        }
        assert_eq!(executions_of(&s, "core.echo").await.len(), 1, "nothing was run");
        let r = m.call("attune.execution", json!({"id": "seven"})).await;
        assert_eq!(r["result"]["isError"], true, "{r}");
        assert!(r["result"]["content"][0]["text"].as_str().unwrap().contains("/id"), "{r}");

        // A failing action is a tool error, with the action's error.
        let r = m.call("core.fail", json!({"message": "boom"})).await;
        assert_eq!(r["result"]["isError"], true, "{r}");
        assert!(r["result"]["content"][0]["text"].as_str().unwrap().contains("boom"), "{r}");
        let r = m.call("ops.nothing", json!({})).await;
        assert!(r["error"].is_object(), "{r}");

        // A client that asks for progress hears about a run that takes a while.
        let events = m.raw(json!({"jsonrpc": "2.0", "id": 99, "method": "tools/call",
            "params": {"name": "core.sleep", "arguments": {"seconds": 1.5}, "_meta": {"progressToken": "nap"}}})).await;
        assert!(events.contains("notifications/progress") && events.contains("\"nap\""), "{events}");
        assert!(events.contains("\"id\":99"), "{events}");
        s.finish().await;
    }

    async fn a_long_call_answers_its_execution_id_and_a_cancel_stops_it(backend) {
        let api = attune::api::ApiConfig { mcp_wait: Duration::from_millis(300), ..Default::default() };
        let s = TestServer::start_with(backend, api).await;
        let mut m = Session::open(&s, &s.admin).await;
        let r = m.call("core.sleep", json!({"seconds": 1.0})).await;
        let id = r["result"]["structuredContent"]["execution"].as_i64().unwrap_or_else(|| panic!("{r}"));
        assert_eq!(r["result"]["structuredContent"]["status"], "running", "{r}");
        let done = wait_for(Duration::from_secs(10), || {
            let mut again = Session { next: 100, ..m.clone() };
            async move {
                let r = again.call("attune.execution", json!({"id": id})).await;
                (r["result"]["structuredContent"]["status"] == "succeeded").then_some(r)
            }
        })
        .await
        .expect("the run ended");
        assert_eq!(done["result"]["structuredContent"]["result"], 1.0);

        // The client cancels a call: its execution is cancelled.
        s.finish().await;
        let s2 = TestServer::start(backend).await;
        let mut m = Session::open(&s2, &s2.admin).await;
        let caller = Session { next: 41, ..m.clone() };
        let call = tokio::spawn(async move {
            let mut caller = caller;
            caller.call("core.sleep", json!({"seconds": 30.0})).await
        });
        let running = wait_for(Duration::from_secs(10), || async {
            executions_of(&s2, "core.sleep").await.into_iter().find(|e| e["status"] == "running")
        })
        .await
        .expect("the call runs");
        m.next = 50;
        let (status, ..) = m.post(json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                         "params": {"requestId": 42, "reason": "changed my mind"}})).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let e = s2.ended(running["id"].as_i64().unwrap()).await;
        assert_eq!(e["status"], "cancelled", "{e}");
        call.abort();
        s2.finish().await;
    }

    async fn mcp_needs_a_token_a_viewer_only_lists_and_foreign_hosts_are_refused(backend) {
        let s = TestServer::start(backend).await;
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                          "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
        let client = reqwest::Client::new();
        let r = client.post(format!("{}/mcp", s.base)).header("accept", "application/json, text/event-stream")
            .json(&init).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
        let r = client.post(format!("{}/mcp", s.base)).bearer_auth(&s.admin).header("host", "attacker.example")
            .header("accept", "application/json, text/event-stream").json(&init).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "DNS rebinding");

        let viewer = s.token("viewer").await;
        let mut m = Session::open(&s, &viewer).await;
        let listed = m.request("tools/list", json!({})).await;
        assert!(listed["result"]["tools"].as_array().unwrap().len() > 1, "{listed}");
        let r = m.call("core.echo", json!({"message": "hi"})).await;
        assert!(r["error"]["message"].as_str().unwrap().contains("operator"), "{r}");
        assert!(executions_of(&s, "core.echo").await.is_empty(), "a viewer ran nothing");
        s.finish().await;
    }

    async fn a_page_on_another_port_is_refused_and_a_session_ends_with_204(backend) {
        let s = TestServer::start(backend).await;
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                          "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
        let port = s.base.rsplit(':').next().unwrap();
        let client = reqwest::Client::new();
        let post = |origin: String| client.post(format!("{}/mcp", s.base)).bearer_auth(&s.admin)
            .header("origin", origin).header("accept", "application/json, text/event-stream").json(&init).send();
        // Another local web app (same host, another port) is another origin,
        // even with a token in hand.
        for origin in ["http://localhost:9999".to_string(), "http://127.0.0.1:9999".to_string(),
                       format!("https://127.0.0.1:{port}"), "null".to_string()] {
            let r = post(origin.clone()).await.unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{origin}");
        }
        let r = post(format!("http://127.0.0.1:{port}")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "the server's own origin");

        // Ending a session answers 204, as the official SDKs expect.
        let m = Session::open(&s, &s.admin).await;
        let r = m.http.delete(&m.url).bearer_auth(&m.token)
            .header("mcp-session-id", m.session.clone().unwrap()).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r = m.send(&json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"})).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "the session is gone");
        s.finish().await;
    }

    async fn the_official_python_sdk_lists_calls_and_corrects_over_http(backend) {
        let s = TestServer::start(backend).await;
        let seen = python_client(&s.admin, &["http", &format!("{}/mcp", s.base)]).await;
        assert_eq!(seen["invalid"]["isError"], true, "{seen}");
        let paths: Vec<&str> = seen["invalid"]["structuredContent"]["details"].as_array().unwrap()
            .iter().map(|d| d["path"].as_str().unwrap()).collect();
        assert!(paths.contains(&"/message"), "{seen}");
        // The hello-world timer runs core.echo too while pip installs.
        let by_mcp = executions_of(&s, "core.echo").await.into_iter().filter(|e| e["source"] == "mcp").count();
        assert_eq!(by_mcp, 1, "only the valid call ran");
        s.finish().await;
    }

    async fn clients_are_told_when_the_tools_change(backend) {
        let s = TestServer::start(backend).await;
        let m = Session::open(&s, &s.admin).await;
        // The stream a session's server-sent notifications arrive on.
        let mut stream = m.http.get(&m.url).bearer_auth(&m.token)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", m.session.clone().unwrap())
            .send().await.unwrap();
        assert_eq!(stream.status(), StatusCode::OK);
        let manifest = "name = \"flows\"\nversion = \"1\"\nworkflows = [\"workflows/hi.yaml\"]\n";
        let flow = "input: {type: object}\ntasks:\n  hi: {action: core.echo, input: {message: hi}}\n";
        let r = s.upload_archive(support::tar_gz(&[("pack.toml", manifest.as_bytes()), ("workflows/hi.yaml", flow.as_bytes())])).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let mut seen = String::new();
        let told = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(chunk) = stream.chunk().await.unwrap() {
                seen.push_str(&String::from_utf8_lossy(&chunk));
                if seen.contains("notifications/tools/list_changed") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(told, Ok(true), "{seen}");
        let mut m = m;
        let listed = m.request("tools/list", json!({})).await;
        let names: Vec<&str> = listed["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"flows.hi"), "a workflow is a tool too: {names:?}");
        s.finish().await;
    }

    async fn a_run_that_times_out_is_a_tool_error(backend) {
        let pipeline = support::PipelineConfig { default_timeout: Duration::from_millis(500), ..Default::default() };
        let s = TestServer::start_full(backend, Default::default(), pipeline).await;
        let mut m = Session::open(&s, &s.admin).await;
        let r = m.call("core.sleep", json!({"seconds": 5.0})).await;
        assert_eq!(r["result"]["isError"], true, "{r}");
        assert_eq!(r["result"]["structuredContent"]["status"], "timed_out", "{r}");
        assert!(r["result"]["content"][0]["text"].as_str().unwrap().contains("timed_out"), "{r}");
        s.finish().await;
    }
}

/// Asks before restarting; restarts when the answer says so.
const RESTART: &str = r#"
input: {type: object, properties: {host: {type: string}}, required: [host]}
tasks:
  approve:
    ask:
      prompt: "Restart {{ input.host }}?"
      schema: {type: object, properties: {ok: {type: boolean}, note: {type: string}}, required: [ok]}
    next:
      - when: "{{ result.ok }}"
        do: [restart]
  restart:
    action: core.echo
    input: {message: "restarting {{ input.host }}"}
"#;

/// The names of the tools `m` lists.
async fn tool_names(m: &mut Session) -> Vec<String> {
    let listed = m.request("tools/list", json!({})).await;
    listed["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

/// A tool error's text.
fn error_text(r: &Value) -> &str {
    assert_eq!(r["result"]["isError"], true, "a tool error: {r}");
    r["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
}

on_both_backends! {
    async fn attune_respond_is_offered_while_an_ask_is_open_and_answers_it_once(backend) {
        let s = TestServer::start(backend).await;
        let manifest = "name = \"ops\"\nversion = \"1\"\nworkflows = [\"workflows/restart.yaml\"]\n";
        let r = s.upload_archive(support::tar_gz(&[("pack.toml", manifest.as_bytes()), ("workflows/restart.yaml", RESTART.as_bytes())])).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let operator = s.token("operator").await;
        let viewer = s.token("viewer").await;
        let worker = s.token("worker").await;
        let mut m = Session::open(&s, &operator).await;
        assert!(!tool_names(&mut m).await.contains(&"attune.respond".to_string()), "nothing is open");
        // The stream the session's notifications arrive on.
        let mut stream = m.http.get(&m.url).bearer_auth(&m.token)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", m.session.clone().unwrap())
            .send().await.unwrap();
        assert_eq!(stream.status(), StatusCode::OK);

        let r = s.post("/api/v1/executions", json!({"action": "ops.restart", "params": {"host": "db1"}})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let flow = r.body["id"].as_i64().unwrap();
        let id = wait_for(Duration::from_secs(15), || async {
            let r = s.get(&format!("/api/v1/inquiries?execution={flow}")).await;
            r.body["items"][0]["id"].as_i64()
        })
        .await
        .expect("the ask opened");
        // The client is told the tools changed: an ask opened.
        let mut seen = String::new();
        let told = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(chunk) = stream.chunk().await.unwrap() {
                seen.push_str(&String::from_utf8_lossy(&chunk));
                if seen.contains("notifications/tools/list_changed") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(told, Ok(true), "{seen}");

        // Offered, listing the ask, to who may answer it.
        let listed = m.request("tools/list", json!({})).await;
        let tool = listed["result"]["tools"].as_array().unwrap().iter()
            .find(|t| t["name"] == "attune.respond").cloned().unwrap_or_else(|| panic!("offered: {listed}"));
        let description = tool["description"].as_str().unwrap();
        assert!(description.contains(&format!("inquiry {id} (task `approve` of workflow execution {flow}): \"Restart db1?\"")), "{description}");
        assert_eq!(tool["inputSchema"]["required"], json!(["inquiry", "answer"]), "{tool}");

        // Not to a viewer, who is refused, nor to a worker token.
        let mut v = Session::open(&s, &viewer).await;
        assert!(!tool_names(&mut v).await.contains(&"attune.respond".to_string()), "viewers are not approvers");
        let r = v.call("attune.respond", json!({"inquiry": id, "answer": {"ok": true}})).await;
        assert!(error_text(&r).contains("may be answered only by role operator"), "{r}");
        let mut w = Session::open(&s, &worker).await;
        let r = w.call("attune.respond", json!({"inquiry": id, "answer": {"ok": true}})).await;
        assert_eq!(r["result"]["structuredContent"]["error"], "forbidden", "{r}");

        // An answer that does not fit: every path, within the arguments.
        let r = m.call("attune.respond", json!({"inquiry": id, "answer": {"ok": "yes", "note": 5}})).await;
        let text = error_text(&r).to_string();
        let mut paths: Vec<&str> = r["result"]["structuredContent"]["details"].as_array().unwrap()
            .iter().map(|d| d["path"].as_str().unwrap()).collect();
        paths.sort();
        assert_eq!(paths, ["/answer/note", "/answer/ok"], "{r}");
        assert!(text.contains("/answer/ok: "), "{text}");
        let r = m.call("attune.respond", json!({"inquiry": id, "answer": "yes"})).await;
        assert!(error_text(&r).contains("/answer: must be an object"), "{r}");
        assert_eq!(s.get(&format!("/api/v1/inquiries/{id}")).await.body["state"], "open");

        let r = m.call("attune.respond", json!({"inquiry": id, "answer": {"ok": true, "note": "go"}})).await;
        assert_eq!(r["result"]["isError"], false, "{r}");
        assert_eq!(r["result"]["structuredContent"]["state"], "answered", "{r}");
        assert_eq!(r["result"]["structuredContent"]["answered_by"], "operator", "{r}");
        let e = s.ended(flow).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        let task = s.get(&format!("/api/v1/executions/{id}")).await.body;
        assert_eq!(task["result"]["note"], "go", "{task}");

        let r = m.call("attune.respond", json!({"inquiry": id, "answer": {"ok": false}})).await;
        assert!(error_text(&r).contains("already answered by operator"), "{r}");
        assert!(!tool_names(&mut m).await.contains(&"attune.respond".to_string()), "nothing is open any more");
        s.finish().await;
    }
}
