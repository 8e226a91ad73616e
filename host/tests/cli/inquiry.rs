//! `attune inquiry list|show|respond` against a running server: a
//! workflow's `ask` listed, shown, refused with its paths, answered once.

use serde_json::Value;

use super::wait_until;
use crate::common::{ServerProcess, client, start_server};

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

/// Uploads pack `ops` holding `workflows/restart.yaml` with `attune pack
/// upload`, as a `.tar.gz` made by `tar`.
fn upload_ops(server: &ServerProcess) {
    let pack = server.dir.path().join("ops");
    std::fs::create_dir_all(pack.join("workflows")).unwrap();
    std::fs::write(
        pack.join("pack.toml"),
        "name = \"ops\"\nversion = \"1\"\nworkflows = [\"workflows/restart.yaml\"]\n",
    )
    .unwrap();
    std::fs::write(pack.join("workflows/restart.yaml"), RESTART).unwrap();
    let archive = server.dir.path().join("ops.tar.gz");
    let tarred = std::process::Command::new("tar")
        .arg("czf")
        .arg(&archive)
        .arg("-C")
        .arg(&pack)
        .args(["pack.toml", "workflows/restart.yaml"])
        .status()
        .unwrap();
    assert!(tarred.success());
    let (code, out, err) = client(server, &["pack", "upload", archive.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Execution `id` as the API shows it (a workflow too, which `show`
/// without `--json` draws as a tree).
fn execution(server: &ServerProcess, id: &str) -> Value {
    let (_, out, _) = client(server, &["execution", "show", id, "--json"]);
    serde_json::from_str(&out).unwrap_or(Value::Null)
}

/// The inquiries of workflow execution `flow`, in any state.
fn inquiries_of(server: &ServerProcess, flow: &str) -> Vec<Value> {
    let (code, out, err) = client(server, &["inquiry", "list", "--execution", flow, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["items"].as_array().unwrap().clone()
}

#[test]
fn an_ask_is_listed_shown_refused_with_its_paths_and_answered_once_from_the_cli() {
    let server = start_server();
    upload_ops(&server);
    let (code, out, err) = client(
        &server,
        &["run", "ops.restart", "host=db1", "--wait", "1ms"],
    );
    assert_eq!(code, 3, "still waiting for its answer: {out}{err}");
    let flow = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_i64()
        .unwrap()
        .to_string();
    wait_until("the ask to open", || {
        inquiries_of(&server, &flow)
            .first()
            .is_some_and(|i| i["state"] == "open")
    });
    let id = inquiries_of(&server, &flow)[0]["id"]
        .as_i64()
        .unwrap()
        .to_string();

    // Listed as a table, the prompt and the workflow in its row.
    let (code, out, err) = client(&server, &["inquiry", "list"]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["ID", "EXECUTION", "TASK", "PROMPT", "DEADLINE"]);
    let row: Vec<&str> = lines
        .next()
        .expect("one open ask")
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        [id.as_str(), &flow, "approve", "Restart", "db1?", "-"],
        "{out}"
    );
    assert_eq!(lines.next(), None, "{out}");

    let (code, out, err) = client(&server, &["inquiry", "show", &id]);
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["prompt"], "Restart db1?");
    assert_eq!(shown["state"], "open");
    assert_eq!(shown["may_answer"], true);

    // `yes` is no boolean: refused before sending, naming the path.
    let (code, out, err) = client(&server, &["inquiry", "respond", &id, "-p", "ok=yes"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("/ok: expected a boolean"), "{err}");
    // What the server refuses comes with its paths too.
    let (code, out, err) = client(
        &server,
        &[
            "inquiry",
            "respond",
            &id,
            "--answer",
            r#"{"ok": true, "note": 5}"#,
        ],
    );
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("does not fit the inquiry's schema") && err.contains("/note"),
        "{err}"
    );
    assert_eq!(inquiries_of(&server, &flow)[0]["state"], "open");

    let (code, out, err) = client(
        &server,
        &["inquiry", "respond", &id, "-p", "ok=true", "-p", "note=go"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("inquiry {id} answered by ")), "{out}");
    wait_until("the workflow to succeed", || {
        execution(&server, &flow)["status"] == "succeeded"
    });
    let task = execution(&server, &id);
    assert_eq!(task["result"]["ok"], true, "{task}");
    assert_eq!(task["result"]["note"], "go", "{task}");

    // Once only; and no longer listed.
    let (code, out, err) = client(&server, &["inquiry", "respond", &id, "ok=false"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("already answered"), "{err}");
    let (code, out, _) = client(&server, &["inquiry", "list"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "only the header: {out}");
}

/// Sets its flag when dropped: the test is over.
struct Over(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for Over {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn attune_mcp_offers_an_open_ask_over_stdio_and_answers_it_through_the_server() {
    use std::io::{BufRead, BufReader, Write};
    let server = start_server();
    upload_ops(&server);
    let (code, out, err) = client(
        &server,
        &["run", "ops.restart", "host=db2", "--wait", "1ms"],
    );
    assert_eq!(code, 3, "{out}{err}");
    let flow = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_i64()
        .unwrap()
        .to_string();
    wait_until("the ask to open", || {
        !inquiries_of(&server, &flow).is_empty()
    });
    let id = inquiries_of(&server, &flow)[0]["id"].as_i64().unwrap();
    let mut child = super::Reaped(
        std::process::Command::new(env!("CARGO_BIN_EXE_attune"))
            .arg("mcp")
            .env("ATTUNE_SERVER", &server.url)
            .env("ATTUNE_TOKEN", &server.token)
            .env("XDG_CONFIG_HOME", server.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // A watchdog: an answer that never comes fails the test instead of
    // hanging it.
    let pid = child.0.id().to_string();
    let over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watched = over.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(60));
        if !watched.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid])
                .status();
        }
    });
    // Over when the test is, passed or failed: the pid is not ours after.
    let _over = Over(over);
    let mut stdin = child.0.stdin.take().unwrap();
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    // Each request's answer (notifications in between are skipped).
    let mut ask = |id: i64, method: &str, params: Value| -> Value {
        let message =
            serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
        loop {
            let line = lines.next().expect("an answer").unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == id {
                return v;
            }
        }
    };
    let init = serde_json::json!({"protocolVersion": "2025-06-18", "capabilities": {},
                                  "clientInfo": {"name": "t", "version": "1"}});
    assert_eq!(
        ask(1, "initialize", init)["result"]["serverInfo"]["name"],
        "attune"
    );
    let listed = ask(2, "tools/list", serde_json::json!({}));
    let tool = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "attune.respond")
        .cloned()
        .unwrap_or_else(|| panic!("offered: {listed}"));
    assert!(
        tool["description"].as_str().unwrap().contains(&format!(
            "inquiry {id} (task `approve` of workflow execution {flow}): \"Restart db2?\""
        )),
        "{tool}"
    );
    let call = |answer: Value| serde_json::json!({"name": "attune.respond", "arguments": {"inquiry": id, "answer": answer}});
    let r = ask(3, "tools/call", call(serde_json::json!({"ok": "yes"})));
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert_eq!(
        r["result"]["structuredContent"]["details"][0]["path"], "/answer/ok",
        "{r}"
    );
    let r = ask(4, "tools/call", call(serde_json::json!({"ok": false})));
    assert_eq!(r["result"]["isError"], false, "{r}");
    assert_eq!(r["result"]["structuredContent"]["state"], "answered", "{r}");
    wait_until("the workflow to succeed", || {
        execution(&server, &flow)["status"] == "succeeded"
    });
    let r = ask(5, "tools/call", call(serde_json::json!({"ok": true})));
    assert!(
        r["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("already answered"),
        "{r}"
    );
}
