//! Shared helpers for Attune's integration tests: one runtime per test
//! process, the guest components built from `actions/`, and shortcuts to run
//! an action and look at its outcome.

mod registry;
mod server;

pub use registry::{REGISTRY_BIN, Registry};

pub use server::{
    Backend, PipelineConfig, Reply, TestServer, tar_gz, tar_gz_with_symlink, wait_for, webhook_rule,
};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use attune_runtime::{
    ExecuteError, ExecutionRequest, Limits, LoadedComponent, Outcome, Runtime, RuntimeConfig,
};
use serde_json::Value;

/// Path of a guest component built from `actions/<name>`.
pub fn guest_path(name: &str) -> PathBuf {
    PathBuf::from(attune_test_guests::GUEST_DIR).join(format!("{name}.wasm"))
}

/// Bytes of a guest component built from `actions/<name>`.
pub fn guest_bytes(name: &str) -> Vec<u8> {
    let path = guest_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The runtime shared by every test in this process (no artifact cache).
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            max_instances: 32,
            ..RuntimeConfig::default()
        })
        .expect("runtime starts")
    })
}

/// The loaded guest `name`, compiled once per process.
pub fn pack(name: &str) -> LoadedComponent {
    static PACKS: OnceLock<Mutex<HashMap<String, LoadedComponent>>> = OnceLock::new();
    let packs = PACKS.get_or_init(Default::default);
    if let Some(p) = packs.lock().unwrap().get(name) {
        return p.clone();
    }
    let (pack, _) = runtime()
        .load(&guest_bytes(name))
        .unwrap_or_else(|e| panic!("loading guest {name}: {e}"));
    packs
        .lock()
        .unwrap()
        .entry(name.to_string())
        .or_insert(pack)
        .clone()
}

/// Runs `action` of guest `guest` with `params` and default limits.
pub async fn run(guest: &str, action: &str, params: Value) -> Result<Outcome, ExecuteError> {
    pack(guest)
        .execute(runtime(), ExecutionRequest::new(action, params))
        .await
}

/// Runs with explicit limits.
pub async fn run_limited(
    guest: &str,
    action: &str,
    params: Value,
    limits: Limits,
) -> Result<Outcome, ExecuteError> {
    let mut request = ExecutionRequest::new(action, params);
    request.limits = Some(limits);
    pack(guest).execute(runtime(), request).await
}

/// Reads an HTTP/1 request's head from `stream`: the head as text and the
/// bytes read past it (the start of the body); `None` when the peer
/// closed first.
pub async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let rest = head.split_off(end);
    Some((String::from_utf8_lossy(&head).into_owned(), rest))
}

/// The value of header `name` in a request head as [`read_head`] gives it.
pub fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    })
}
