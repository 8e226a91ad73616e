//! The `attune` binary's local commands, run as a real process.
//!
//! These live in the host crate rather than the `tests` crate because only a
//! package's own integration tests are told where its binary is
//! (`CARGO_BIN_EXE_attune`).

mod common;

use std::process::Command;

use common::{ServerProcess, attune, client, free_port, guest, start_server, start_server_with};
use serde_json::{Value, json};

#[test]
fn version_names_the_release_and_the_commit_it_was_built_from() {
    let out = Command::new(env!("CARGO_BIN_EXE_attune"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(
        text.trim(),
        format!("attune {} (commit {head})", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn inspect_prints_every_action_with_schemas_capabilities_and_description() {
    let (code, out, _) = attune(&["action", "inspect", "core"]);
    assert_eq!(code, 0);
    let actions = out["actions"].as_array().unwrap();
    let names: Vec<&str> = actions
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "noop", "sleep", "fail", "http"]);
    for a in actions {
        for key in [
            "params_schema",
            "result_schema",
            "capabilities",
            "description",
        ] {
            assert!(a.get(key).is_some(), "{key} missing in {a}");
        }
    }
    assert_eq!(
        actions[0]["params_schema"]["properties"]["message"]["type"],
        "string"
    );
}

#[test]
fn inspect_works_on_a_component_built_without_the_sdk() {
    let (code, out, _) = attune(&["action", "inspect", &guest("types")]);
    assert_eq!(code, 0);
    let names: Vec<&str> = out["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"add"));
    assert!(names.contains(&"roundtrip.nested-options"));
}

#[test]
fn run_echo_succeeds_and_prints_the_execution_record() {
    let (code, out, _) = attune(&[
        "action",
        "run",
        "core",
        "echo",
        "-p",
        "message=hello, world",
    ]);
    assert_eq!(code, 0);
    assert_eq!(out["status"], "succeeded");
    assert_eq!(out["result"], "hello, world");
    assert_eq!(out["error"], Value::Null);
    assert_eq!(out["stdout"], "hello, world\n");
    assert_eq!(out["stderr"], "");
    assert!(out["duration_ms"].as_f64().unwrap() >= 0.0);
}

#[test]
fn run_accepts_the_pack_prefix_and_json_params() {
    let (code, out, _) = attune(&[
        "action",
        "run",
        "core",
        "core.echo",
        "--params",
        r#"{"message": "from json"}"#,
    ]);
    assert_eq!(code, 0);
    assert_eq!(out["result"], "from json");
}

#[test]
fn run_parses_pair_values_as_json_when_they_parse() {
    let (code, out, _) = attune(&[
        "action",
        "run",
        &guest("types"),
        "roundtrip.many",
        "-p",
        "count=3",
        "-p",
        r#"tags=["a","b"]"#,
        "-p",
        "name=plain text",
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["result"], "3:plain text:a,b");
}

#[test]
fn a_typed_error_exits_one_with_the_error_value() {
    let (code, out, _) = attune(&["action", "run", "core", "fail", "-p", "message=nope"]);
    assert_eq!(code, 1);
    assert_eq!(out["status"], "failed");
    assert_eq!(out["error"], json!({"code": 1, "message": "nope"}));
}

#[test]
fn a_timeout_exits_nonzero_as_timed_out() {
    let (code, out, _) = attune(&[
        "action",
        "run",
        "core",
        "sleep",
        "-p",
        "seconds=10",
        "--timeout",
        "200ms",
    ]);
    assert_eq!(code, 124);
    assert_eq!(out["status"], "timed_out");
}

#[test]
fn the_memory_flag_caps_the_guest() {
    let hostile = guest("hostile");
    let (code, out, _) = attune(&[
        "action", "run", &hostile, "grow", "-p", "mib=40", "--memory", "16MiB",
    ]);
    assert_eq!(code, 1);
    assert_eq!(out["status"], "failed");
    let (code, _, _) = attune(&[
        "action", "run", &hostile, "grow", "-p", "mib=40", "--memory", "128MiB",
    ]);
    assert_eq!(code, 0);
}

#[test]
fn invalid_params_list_every_error_and_exit_two() {
    let (code, out, stderr) = attune(&[
        "action",
        "run",
        &guest("types"),
        "roundtrip.many",
        "--params",
        r#"{"count": 70000, "name": 1, "bogus": true}"#,
    ]);
    assert_eq!(code, 2);
    assert_eq!(out["error"]["code"], "invalid_params");
    assert!(out.get("status").is_none(), "the guest must not run: {out}");
    let paths: Vec<&str> = out["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    for p in ["/count", "/name", "/tags", "/bogus"] {
        assert!(paths.contains(&p), "{p} missing: {out}");
    }
    assert!(stderr.contains("/count"), "{stderr}");
}

#[test]
fn unknown_actions_and_bad_files_exit_two() {
    let (code, out, _) = attune(&["action", "run", "core", "nope"]);
    assert_eq!(code, 2);
    assert_eq!(out["error"]["code"], "unknown_action");
    assert!(out["error"]["message"].as_str().unwrap().contains("echo"));

    let not_wasm = std::env::temp_dir().join("attune-cli-not-wasm.wasm");
    std::fs::write(&not_wasm, b"hello").unwrap();
    let (code, out, _) = attune(&["action", "inspect", not_wasm.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(out["error"]["code"], "invalid_component");
}

#[test]
fn client_commands_drive_a_running_server() {
    let server = start_server();
    let (code, out, _) = client(&server, &["action", "list"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("REF"), "{out}");
    assert!(out.contains("core.echo"), "{out}");

    let (code, out, err) = client(
        &server,
        &["pack", "upload", &guest("types"), "--version", "1"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("created types 1"), "{out}");

    let rule = server.dir.path().join("rule.yaml");
    std::fs::write(
        &rule,
        "ref: core.timer_echo_20s\ntrigger: core.interval\ntrigger_params:\n  every: 10s\naction: core.echo\naction_params:\n  message: hello, world\n",
    )
    .unwrap();
    let (code, out, err) = client(&server, &["rule", "create", "-f", rule.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("core.timer_echo_20s"));
    assert!(
        !err.contains("warning"),
        "the embedded worker serves core.echo: {err}"
    );
    let (_, out, _) = client(&server, &["rule", "list", "--json"]);
    let listed: Value = serde_json::from_str(&out).unwrap();
    let refs: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ref"].as_str().unwrap())
        .collect();
    assert_eq!(refs, ["core.timer_echo_10s", "core.timer_echo_20s"]);

    std::fs::write(
        &rule,
        "ref: core.bad\ntrigger: core.interval\ntrigger_params:\n  every: 10s\naction: core.echo\naction_params:\n  message: 5\n",
    )
    .unwrap();
    let (code, _, err) = client(&server, &["rule", "create", "-f", rule.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("/action_params/message: expected string, got number"),
        "{err}"
    );

    let (code, out, _) = client(
        &server,
        &[
            "event",
            "fire",
            "core.manual",
            "--payload",
            r#"{"host": "db1"}"#,
        ],
    );
    assert_eq!(code, 0);
    assert!(out.contains("db1"));

    // The embedded worker runs it; `run` waits and prints the record.
    let (code, out, err) = client(&server, &["run", "core.echo", "message=hi"]);
    assert_eq!(code, 0, "{err}");
    let record: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["stdout"], "hi\n");

    // A run that outlasts --wait is reported as still going, then cancelled.
    let (code, out, err) = client(
        &server,
        &["run", "core.sleep", "seconds=30", "--wait", "500ms"],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("is still"), "{err}");
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let (code, _, _) = client(&server, &["execution", "cancel", &id]);
    assert_eq!(code, 0);
    let mut status = String::new();
    for _ in 0..100 {
        let (_, out, _) = client(&server, &["execution", "show", &id]);
        status = serde_json::from_str::<Value>(&out).unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string();
        if status == "cancelled" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(status, "cancelled");

    let (code, _, err) = client(&server, &["rule", "show", "core.nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("no rule"), "{err}");

    // bench times a console page, signed in with the token.
    let (code, out, err) = client(
        &server,
        &["bench", "--page", "/ui/executions", "--count", "5"],
    );
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["failures"], 0, "{out}");
    assert!(report["ms"]["p50"].as_f64().unwrap() > 0.0, "{out}");
}

/// A child process killed when dropped, so a failing test leaves none behind.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_attune(args: &[&str], envs: &[(&str, &str)]) -> Reaped {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_attune"));
    cmd.args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    Reaped(cmd.spawn().unwrap())
}

fn status_of(server: &ServerProcess, id: &str) -> Value {
    let (_, out, _) = client(server, &["execution", "show", id]);
    serde_json::from_str(&out).unwrap_or(Value::Null)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..300 {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn a_killed_worker_s_executions_are_retried_or_abandoned_never_stuck_running() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _server_child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_attune"))
            .args([
                "serve",
                "--listen",
                &listen,
                "--workers",
                "0",
                "--lease",
                "1s",
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let token_file = dir.path().join("admin.token");
    wait_until("the server", || {
        token_file.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let server = ServerProcess {
        child: Command::new("true").spawn().unwrap(),
        url: format!("http://{listen}"),
        token: std::fs::read_to_string(&token_file)
            .unwrap()
            .trim()
            .to_string(),
        dir: tempfile::tempdir().unwrap(),
    };
    let worker_args = |name: &'static str| {
        vec![
            "worker".to_string(),
            "--name".into(),
            name.into(),
            "--concurrency".into(),
            "2".into(),
            "--cache-dir".into(),
            dir.path().join(name).to_string_lossy().into_owned(),
        ]
    };
    let envs = [
        ("ATTUNE_SERVER", server.url.as_str()),
        ("ATTUNE_TOKEN", server.token.as_str()),
    ];
    let first: Vec<String> = worker_args("first");
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    let mut doomed = spawn_attune(&first, &envs);

    let submit = |attempts: &str| {
        let (_, out, _) = client(
            &server,
            &[
                "run",
                "core.sleep",
                "seconds=3",
                "--max-attempts",
                attempts,
                "--wait",
                "1ms",
            ],
        );
        serde_json::from_str::<Value>(&out).unwrap()["id"]
            .as_i64()
            .unwrap()
            .to_string()
    };
    let retried = submit("2");
    let lost = submit("1");
    wait_until("both running on the first worker", || {
        status_of(&server, &retried)["status"] == "running"
            && status_of(&server, &lost)["status"] == "running"
    });
    let first_worker = status_of(&server, &retried)["worker"].clone();
    doomed.0.kill().unwrap(); // SIGKILL: no goodbye, no final report
    doomed.0.wait().unwrap();

    wait_until("the single-attempt execution to be abandoned", || {
        status_of(&server, &lost)["status"] == "abandoned"
    });
    let second: Vec<String> = worker_args("second");
    let second: Vec<&str> = second.iter().map(String::as_str).collect();
    let _rescuer = spawn_attune(&second, &envs);
    wait_until("the retry to succeed", || {
        status_of(&server, &retried)["status"] == "succeeded"
    });
    let e = status_of(&server, &retried);
    assert_eq!(e["attempt"], 2);
    assert_ne!(e["worker"], first_worker);
    let abandoned = status_of(&server, &lost);
    assert!(
        abandoned["status_reason"]
            .as_str()
            .unwrap()
            .contains("stopped heartbeating")
    );
}

/// One request over a fresh connection; the status code and the body.
fn raw_http(server: &ServerProcess, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = server.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        server.token,
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn signal(server: &ServerProcess, name: &str) {
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// Waits for the server process to exit; its exit code and how long it took.
fn exit_of(server: &mut ServerProcess, limit: std::time::Duration) -> (i32, std::time::Duration) {
    let began = std::time::Instant::now();
    while began.elapsed() < limit {
        if let Some(status) = server.child.try_wait().unwrap() {
            return (status.code().unwrap_or(-1), began.elapsed());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("the server did not exit within {limit:?}");
}

/// A long action with its output stream open, so neither the HTTP drain nor
/// the worker would end by themselves.
fn busy(server: &ServerProcess) -> std::net::TcpStream {
    use std::io::Write;
    let (status, body) = raw_http(
        server,
        "POST",
        "/api/v1/executions",
        r#"{"action": "core.sleep", "params": {"seconds": 60}}"#,
    );
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_i64()
        .unwrap();
    let addr = server.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /api/v1/executions/{id}/output HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\r\n",
        server.token
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    stream
}

#[cfg(unix)]
#[test]
fn a_stop_waits_for_the_drain_deadline_at_most() {
    let mut server = start_server_with(&["--drain-timeout", "2s"]);
    let _stream = busy(&server);
    signal(&server, "-TERM");
    let (code, took) = exit_of(&mut server, std::time::Duration::from_secs(15));
    assert_eq!(code, 0);
    assert!(
        took >= std::time::Duration::from_millis(1500) && took < std::time::Duration::from_secs(8),
        "the open stream and the running action hold the stop until the deadline: {took:?}"
    );
}

#[cfg(unix)]
#[test]
fn a_second_signal_stops_at_once() {
    let mut server = start_server_with(&["--drain-timeout", "60s"]);
    let _stream = busy(&server);
    signal(&server, "-INT");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(server.child.try_wait().unwrap().is_none(), "still draining");
    signal(&server, "-INT");
    let (code, took) = exit_of(&mut server, std::time::Duration::from_secs(5));
    assert_eq!(code, 130);
    assert!(took < std::time::Duration::from_secs(3), "{took:?}");
}

/// A private CA and a certificate it signed for 127.0.0.1, as PEM files in
/// `dir`: (ca.pem, cert.pem, key.pem).
fn private_ca(dir: &std::path::Path) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let path = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    (
        path("ca.pem", ca.pem()),
        path("cert.pem", cert.pem()),
        path("key.pem", key.serialize_pem()),
    )
}

#[test]
fn serve_speaks_https_and_clients_trust_a_private_ca_they_are_given() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(certs.path());
    let mut server = start_server_with(&["--tls-cert", &cert, "--tls-key", &key]);
    server.url = server.url.replace("http://", "https://");
    let (code, out, err) = client(&server, &["action", "list", "--ca-cert", &ca]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("core.echo"), "{out}");
    let (code, _, err) = client(&server, &["action", "list"]);
    assert_ne!(code, 0, "an unknown issuer is refused");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // Over TLS the console's session cookie is Secure.
    let cookie = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pem = std::fs::read(&ca).unwrap();
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = http
            .post(format!("{}/ui/login", server.url))
            .header("origin", &server.url)
            .form(&[("token", &server.token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        r.headers()["set-cookie"].to_str().unwrap().to_string()
    });
    assert!(cookie.contains("; Secure"), "{cookie}");
    server.url = server.url.replace("https://", "http://");
    let (code, _, _) = client(&server, &["action", "list"]);
    assert_ne!(code, 0, "no plain HTTP on the TLS port");
    let bad = start_server_attempt(&["--tls-cert", &ca, "--tls-key", &cert]);
    assert!(bad.contains("--tls-cert/--tls-key"), "{bad}");
}

/// Runs `attune serve` with `extra` that should refuse to start; its stderr.
fn start_server_attempt(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_attune"))
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(extra)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn tokens_are_created_listed_and_revoked_and_an_operator_locked_out_gets_back_in() {
    let server = start_server();
    let (code, out, err) = client(&server, &["token", "create", "ci", "--role", "operator"]);
    assert_eq!(code, 0, "{err}");
    let operator = out.trim().to_string();
    assert_eq!(operator.len(), server.token.len(), "{out}");
    let (_, listed, _) = client(&server, &["token", "list", "--json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(
        !listed.to_string().contains(&operator),
        "no token in a listing"
    );
    let admin_id = items.iter().find(|t| t["role"] == "admin").unwrap()["id"]
        .as_i64()
        .unwrap();
    let (code, _, err) = client(&server, &["token", "revoke", &admin_id.to_string()]);
    assert_ne!(code, 0);
    assert!(err.contains("last admin token"), "{err}");
    // Offline, against the data directory: a new admin token works at once.
    let dir = server.dir.path().to_string_lossy().into_owned();
    let (code, out, err) = attune_raw(&[
        "token",
        "create",
        "rescue",
        "--role",
        "admin",
        "--data-dir",
        &dir,
    ]);
    assert_eq!(code, 0, "{err}");
    let rescue = ServerProcess {
        child: Command::new("true").spawn().unwrap(),
        url: server.url.clone(),
        token: out.trim().to_string(),
        dir: tempfile::tempdir().unwrap(),
    };
    let (code, _, err) = client(&rescue, &["token", "list"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = attune_raw(&["token", "create", "x", "--data-dir", "/nonexistent"]);
    assert_ne!(code, 0);
    assert!(err.contains("no database"), "{err}");
}

/// Runs `attune` with `args`; exit code, stdout, stderr.
fn attune_raw(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_attune"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Uploads pack `flows` holding `workflows` (`(name, yaml)`) with `attune
/// pack upload`, as a `.tar.gz` made by `tar`.
fn upload_workflows(server: &ServerProcess, workflows: &[(&str, &str)]) {
    let pack = server.dir.path().join("flows");
    std::fs::create_dir_all(pack.join("workflows")).unwrap();
    let files: Vec<String> = workflows
        .iter()
        .map(|(name, _)| format!("workflows/{name}.yaml"))
        .collect();
    let listed: Vec<String> = files.iter().map(|f| format!("\"{f}\"")).collect();
    std::fs::write(
        pack.join("pack.toml"),
        format!(
            "name = \"flows\"\nversion = \"1\"\nworkflows = [{}]\n",
            listed.join(", ")
        ),
    )
    .unwrap();
    for ((_, yaml), file) in workflows.iter().zip(&files) {
        std::fs::write(pack.join(file), yaml).unwrap();
    }
    let archive = server.dir.path().join("flows.tar.gz");
    let tarred = std::process::Command::new("tar")
        .arg("czf")
        .arg(&archive)
        .arg("-C")
        .arg(&pack)
        .arg("pack.toml")
        .args(&files)
        .status()
        .unwrap();
    assert!(tarred.success());
    let (code, out, err) = client(server, &["pack", "upload", archive.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_workflow_runs_from_the_cli_and_shows_as_a_tree_of_its_tasks() {
    let server = start_server();
    upload_workflows(
        &server,
        &[
            (
                "inner",
                "input: {type: object, properties: {n: {type: integer}}}\ntasks:\n  fan: {action: core.echo, with_items: \"{{ range(input.n) | list }}\", input: {message: \"item {{ item }}\"}}\n",
            ),
            (
                "outer",
                "input: {type: object}\ntasks:\n  inner: {action: flows.inner, input: {n: 2}, next: [{do: boom}]}\n  boom: {action: core.fail, input: {message: kaput}}\n",
            ),
        ],
    );

    // `run` waits for the workflow like for any action.
    let (code, out, _) = client(&server, &["run", "flows.outer"]);
    assert_eq!(code, 1, "the workflow fails: {out}");
    let run: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(run["status"], "failed");
    let id = run["id"].to_string();
    let (code, tree, err) = client(&server, &["execution", "show", &id]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = tree.lines().collect();
    assert!(
        lines[0].starts_with(&format!("{id} flows.outer failed")),
        "{tree}"
    );
    assert!(
        lines[1].starts_with("├─ ") && lines[1].contains(" inner flows.inner succeeded"),
        "{tree}"
    );
    assert!(
        lines[2].starts_with("│  ├─ ") && lines[2].contains(" fan[0] core.echo succeeded"),
        "{tree}"
    );
    assert!(
        lines[3].starts_with("│  └─ ") && lines[3].contains(" fan[1] core.echo succeeded"),
        "{tree}"
    );
    assert!(
        lines[4].starts_with("└─ ") && lines[4].contains(" boom core.fail failed — "),
        "{tree}"
    );
    assert!(lines[4].contains("kaput"), "{tree}");
    // --json keeps the record, with the workflow's progress.
    let (_, json, _) = client(&server, &["execution", "show", &id, "--json"]);
    let record: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(record["workflow"]["tasks"]["boom"]["status"], "failed");
}

#[test]
fn sensors_are_listed_shown_and_toggled_from_the_cli() {
    let server = start_server();
    let pack = server.dir.path().join("tracker");
    std::fs::create_dir_all(&pack).unwrap();
    std::fs::copy(guest("sensing"), pack.join("sensing.wasm")).unwrap();
    std::fs::write(
        pack.join("pack.toml"),
        "name = \"tracker\"\nversion = \"1\"\ncomponents = [\"sensing.wasm\"]\n\n[[sensors]]\nname = \"new_issues\"\nexport = \"scan\"\nevery = \"1s\"\n",
    )
    .unwrap();
    let archive = server.dir.path().join("tracker.tar.gz");
    let tarred = std::process::Command::new("tar")
        .arg("czf")
        .arg(&archive)
        .arg("-C")
        .arg(&pack)
        .args(["pack.toml", "sensing.wasm"])
        .status()
        .unwrap();
    assert!(tarred.success());
    let (code, out, err) = client(&server, &["pack", "upload", archive.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");

    let (code, list, err) = client(&server, &["sensor", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        list.lines()
            .any(|l| l.starts_with("tracker.new_issues") && l.contains("scan")),
        "{list}"
    );
    wait_until("a poll", || {
        let (_, shown, _) = client(&server, &["sensor", "show", "tracker.new_issues"]);
        serde_json::from_str::<Value>(&shown).is_ok_and(|v| v["runs"][0]["events"] == 2)
    });
    let (code, out, _) = client(&server, &["sensor", "disable", "tracker.new_issues"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["enabled"],
        false
    );
    let (code, out, _) = client(&server, &["sensor", "enable", "tracker.new_issues"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["enabled"],
        true
    );
    let (code, _, err) = client(&server, &["sensor", "show", "tracker.nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("no sensor"), "{err}");
}

#[test]
fn attune_mcp_serves_the_tools_over_stdio_through_the_server() {
    use std::io::{BufRead, BufReader, Write};
    let server = start_server();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_attune"))
        .args(["mcp", "--tool", "core.*"])
        .env("ATTUNE_SERVER", &server.url)
        .env("ATTUNE_TOKEN", &server.token)
        .env("XDG_CONFIG_HOME", server.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A watchdog: a message that never comes fails the test instead of
    // hanging it (and kills nothing once the test is over).
    let pid = child.id().to_string();
    let over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watched = over.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(60));
        if !watched.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut send = |message: Value| {
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
    };
    // The next message matching `wanted` (an answer's id, a method).
    let mut next = |wanted: &dyn Fn(&Value) -> bool| -> Value {
        loop {
            let line = lines.next().expect("a message").unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            if wanted(&v) {
                return v;
            }
        }
    };
    let mut answer = |id: i64| next(&|v: &Value| v["id"] == id);
    send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}),
    );
    assert_eq!(answer(1)["result"]["serverInfo"]["name"], "attune");
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    let tools = answer(2);
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"core.echo") && names.contains(&"attune.execution"),
        "{names:?}"
    );
    send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                "params": {"name": "core.echo", "arguments": {"message": "over stdio"}}}));
    let r = answer(3);
    assert_eq!(
        r["result"]["structuredContent"]["result"], "over stdio",
        "{r}"
    );
    send(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                "params": {"name": "core.echo", "arguments": {}}}));
    let r = answer(4);
    assert_eq!(
        r["result"]["isError"], true,
        "a tool error the model can read: {r}"
    );
    assert!(
        r["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("/message"),
        "{r}"
    );

    // A pack uploaded meanwhile: the client is told the tools changed.
    upload_workflows(
        &server,
        &[(
            "hi",
            "input: {type: object}\ntasks:\n  hi: {action: core.echo, input: {message: hi}}\n",
        )],
    );
    let told = next(&|v: &Value| v["method"] == "notifications/tools/list_changed");
    assert_eq!(told["jsonrpc"], "2.0");
    let _ = child.kill();
    let _ = child.wait();
    over.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// `attune mcp` driven by the official MCP Python SDK (`tests/mcp_client.py`,
/// which installs it into a venv in the target directory and fails when it
/// cannot): tools listed, a call, invalid arguments answered as a tool
/// error naming their path, and a clean close.
#[test]
fn the_official_python_sdk_uses_attune_mcp_over_stdio() {
    let server = start_server();
    // The test binary sits in `<target>/<profile>/deps/`.
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/mcp_client.py"
        ))
        .arg(target.join("mcp-python-sdk"))
        .args(["stdio", env!("CARGO_BIN_EXE_attune"), "--tool", "core.*"])
        .env("ATTUNE_SERVER", &server.url)
        .env("ATTUNE_TOKEN", &server.token)
        .env("XDG_CONFIG_HOME", server.dir.path())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python MCP client failed:\n{stdout}\n{stderr}"
    );
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(seen["invalid"]["isError"], true, "{seen}");
    let paths: Vec<&str> = seen["invalid"]["structuredContent"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"/message"), "{seen}");
}
