//! What the binary tests share: running `attune` and a real server.

#![allow(dead_code)]

use std::process::{Command, Output};

use serde_json::Value;

/// Runs `attune` with a shared artifact cache; returns the exit code, stdout
/// as JSON, and stderr.
pub fn attune(args: &[&str]) -> (i32, Value, String) {
    let cache = std::env::temp_dir().join("attune-cli-test-cache");
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_attune"))
        .args(args)
        .env("ATTUNE_CACHE_DIR", &cache)
        .output()
        .expect("attune runs");
    let stdout = String::from_utf8(stdout).unwrap();
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {stdout}"));
    (
        status.code().unwrap(),
        json,
        String::from_utf8(stderr).unwrap(),
    )
}

/// A server started from the binary, stopped on drop.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub url: String,
    pub token: String,
    pub dir: tempfile::TempDir,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port that was free a moment ago, for a server to listen on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn start_server() -> ServerProcess {
    start_server_with(&[])
}

/// A server started with extra `attune serve` arguments.
pub fn start_server_with(extra: &[&str]) -> ServerProcess {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_attune"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let token_file = dir.path().join("admin.token");
    for _ in 0..300 {
        if token_file.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let token = std::fs::read_to_string(&token_file)
                .unwrap()
                .trim()
                .to_string();
            return ServerProcess {
                child,
                url,
                token,
                dir,
            };
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the server did not start");
}

pub fn client(server: &ServerProcess, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_attune"))
        .args(args)
        .env("ATTUNE_SERVER", &server.url)
        .env("ATTUNE_TOKEN", &server.token)
        .env("XDG_CONFIG_HOME", server.dir.path())
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A test guest built by the host's build script.
pub fn guest(name: &str) -> String {
    format!("{}/{name}.wasm", attune_test_guests::GUEST_DIR)
}

/// A pack `pack` holding one workflow, `workflows/<name>.yaml` with `yaml`,
/// as `.tar.gz` bytes (built with `tar` in `dir`).
#[allow(dead_code)] // not every test binary uploads workflows
pub fn workflow_pack(dir: &std::path::Path, pack: &str, name: &str, yaml: &str) -> Vec<u8> {
    let root = dir.join(format!("{pack}-pack"));
    let file = format!("workflows/{name}.yaml");
    std::fs::create_dir_all(root.join("workflows")).unwrap();
    std::fs::write(
        root.join("pack.toml"),
        format!("name = \"{pack}\"\nversion = \"1\"\nworkflows = [\"{file}\"]\n"),
    )
    .unwrap();
    std::fs::write(root.join(&file), yaml).unwrap();
    let archive = dir.join(format!("{pack}.tar.gz"));
    let tarred = std::process::Command::new("tar")
        .arg("czf")
        .arg(&archive)
        .arg("-C")
        .arg(&root)
        .args(["pack.toml", &file])
        .status()
        .unwrap();
    assert!(tarred.success());
    std::fs::read(&archive).unwrap()
}

/// Uploads a pack archive to the server at `base` as `token`; panics unless
/// it is registered.
pub async fn upload_pack(http: &reqwest::Client, base: &str, token: &str, archive: Vec<u8>) {
    let r = http
        .post(format!("{base}/api/v1/packs"))
        .bearer_auth(token)
        .header("content-type", "application/gzip")
        .body(archive)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}
