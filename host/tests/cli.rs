//! The `attune` binary run as a real process: local commands (`local`),
//! client commands against a server (`remote`), and here the server's own
//! life: workers, signals, TLS, and `attune mcp`.
//!
//! These live in the host crate rather than the `tests` crate because only a
//! package's own integration tests are told where its binary is
//! (`CARGO_BIN_EXE_attune`).

mod common;
#[path = "cli/inquiry.rs"]
mod inquiry;
#[path = "cli/local.rs"]
mod local;
#[path = "cli/memory.rs"]
mod memory;
#[path = "cli/registry.rs"]
mod registry;
#[path = "cli/remote.rs"]
mod remote;

use std::process::Command;

use common::{ServerProcess, client, free_port, start_server, start_server_with};
use serde_json::{Value, json};

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
