//! Replaying Python and JavaScript actions: their interpreters read the
//! clocks and draw random numbers through the host, so a journal recorded
//! by `attune action run --record` or by a server replays identically.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::common::{ServerProcess, client, start_server_with};
use super::{attune_in, json_of};

/// An action that reads the clocks and draws random numbers.
const CHANCE_WIT: &str = r#"package test:chance;

world chance {
    include attune:action/action@0.1.0;

    export roll: func() -> result<string, string>;
}
"#;

const CHANCE_PY: &str = r#"import os
import random
import time

import wit_world


class WitWorld(wit_world.WitWorld):
    def roll(self) -> str:
        return f"{time.time()} {time.monotonic()} {random.random()} {os.urandom(8).hex()} {hash('key')}"
"#;

const CHANCE_JS: &str = r#"export function roll() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return `${Date.now()} ${performance.now()} ${Math.random()} ${Array.from(bytes).join(',')}`;
}
"#;

/// Records a run of an interpreted action that reads both clocks and draws
/// random numbers, then replays the journal: the interpreter's clock and
/// randomness come from the journal, so the result is the same.
fn an_interpreted_action_replays_its_clocks_and_random_numbers(lang: &str, source: &str) {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let (code, _, err) = attune_in(
        &cache,
        work.path(),
        &["action", "new", "chance", "--lang", lang],
    );
    assert_eq!(code, 0, "{err}");
    let project = work.path().join("chance");
    std::fs::write(project.join("wit/world.wit"), CHANCE_WIT).unwrap();
    let app = if lang == "python" { "app.py" } else { "app.js" };
    std::fs::write(project.join(app), source).unwrap();
    let (code, out, err) = attune_in(&cache, &project, &["action", "build"]);
    assert_eq!(code, 0, "build failed: {err}");
    let component = out.trim().to_string();
    let journal = work.path().join("run.json");
    let journal = journal.to_str().unwrap();
    let record = ["action", "run", &component, "roll", "--record", journal];
    let (code, out, err) = attune_in(&cache, &project, &record);
    assert_eq!(code, 0, "{out}{err}");
    let recorded = json_of(&out)["result"].clone();
    let (_, out, _) = attune_in(&cache, &project, &["action", "run", &component, "roll"]);
    assert_ne!(json_of(&out)["result"], recorded, "a live run draws anew");

    let (code, out, err) = attune_in(&cache, &project, &["action", "replay", journal]);
    assert_eq!(code, 0, "{out}{err}");
    let replayed = json_of(&out);
    assert_eq!(replayed["identical"], true, "{replayed}");
    assert_eq!(replayed["result"], recorded);
}

#[test]
fn a_python_action_replays_its_clocks_and_random_numbers() {
    an_interpreted_action_replays_its_clocks_and_random_numbers("python", CHANCE_PY);
}

#[test]
fn a_javascript_action_replays_its_clocks_and_random_numbers() {
    an_interpreted_action_replays_its_clocks_and_random_numbers("js", CHANCE_JS);
}

/// An HTTP action that also reads the clock, draws a random number and
/// counts its runs in the pack's key-value store. `{SUFFIX}` is appended to
/// the URL it calls and `{EXTRA}` to its result, to build the next versions.
const TALLY_PY: &str = r#"import random
import time

import attune
import wit_world
from componentize_py_types import Err


class WitWorld(wit_world.WitWorld):
    def fetch(self, url: str) -> str:
        try:
            reply = attune.get(url + "{SUFFIX}")
        except attune.HttpError as e:
            raise Err(str(e))
        count = attune.kv_increment("count", 1)
        return f"status={reply.status} body={reply.text()} count={count} now={time.time()} draw={random.random()}{EXTRA}"
"#;

const TALLY_JS: &str = r#"import { kv } from './.attune/sdk/attune.js';

async function fetchUrl(url) {
  let reply;
  try {
    reply = await fetch(url + '{SUFFIX}');
  } catch (e) {
    throw `${e}`;
  }
  const count = kv.increment('count', 1n);
  return `status=${reply.status} body=${await reply.text()} count=${count} now=${Date.now()} draw=${Math.random()}{EXTRA}`;
}

export { fetchUrl as fetch };
"#;

/// The `tally` pack in `lang` at `version`, built from `source` with its
/// placeholders filled, as a pack archive granted loopback HTTP.
fn tally_pack(
    work: &Path,
    lang: &str,
    source: &str,
    version: &str,
    suffix: &str,
    extra: &str,
) -> String {
    let cache = work.join("cache");
    let root = work.join(version);
    std::fs::create_dir_all(&root).unwrap();
    let (code, _, err) = attune_in(
        &cache,
        &root,
        &["action", "new", "tally", "--http", "--lang", lang],
    );
    assert_eq!(code, 0, "{err}");
    let project = root.join("tally");
    let app = if lang == "python" { "app.py" } else { "app.js" };
    let source = source.replace("{SUFFIX}", suffix).replace("{EXTRA}", extra);
    std::fs::write(project.join(app), source).unwrap();
    let (code, out, err) = attune_in(&cache, &project, &["action", "build"]);
    assert_eq!(code, 0, "build failed: {err}");
    let pack = root.join("pack");
    std::fs::create_dir_all(&pack).unwrap();
    std::fs::copy(out.trim(), pack.join("tally.wasm")).unwrap();
    std::fs::write(
        pack.join("pack.toml"),
        format!(
            "name = \"tally\"\nversion = \"{version}\"\ncomponents = [\"tally.wasm\"]\n\
             allowed_outbound_hosts = [\"http://127.0.0.1:*\"]\n"
        ),
    )
    .unwrap();
    let archive = root.join("tally.tar.gz");
    let status = Command::new("tar")
        .arg("czf")
        .arg(&archive)
        .arg("-C")
        .arg(&pack)
        .args(["pack.toml", "tally.wasm"])
        .status()
        .unwrap();
    assert!(status.success());
    archive.to_str().unwrap().to_string()
}

/// A loopback HTTP server that answers `hello` to `connections`
/// connections and then stops; its port.
fn hello_server(connections: usize) -> (u16, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        for _ in 0..connections {
            let (mut stream, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            );
        }
    });
    (port, server)
}

/// A database of its own on the PostgreSQL the tests use, dropped on drop.
struct Database {
    admin: String,
    name: String,
}

impl Database {
    fn create() -> Self {
        let admin = std::env::var("ATTUNE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("attune_replay_{}_{}", std::process::id(), rand_suffix());
        let db = Self { admin, name };
        db.psql(&format!("CREATE DATABASE {}", db.name));
        db
    }

    fn url(&self) -> String {
        let base = self
            .admin
            .rsplit_once('/')
            .map_or(self.admin.as_str(), |(b, _)| b);
        format!("{base}/{}", self.name)
    }

    fn psql(&self, sql: &str) {
        let out = Command::new("psql")
            .args([self.admin.as_str(), "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                self.admin.as_str(),
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Runs `attune args…` against `server`; the exit code and stdout as JSON.
fn call(server: &ServerProcess, args: &[&str]) -> (i32, Value) {
    let (code, out, err) = client(server, args);
    let json = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out} {err}"));
    (code, json)
}

/// The issue's story on a server, for an interpreted action: it runs twice
/// (the counter reaches 2), the remote server stops, and the first run
/// replays identically from its journal (HTTP, clock, random number and
/// counter as recorded); the next version, which adds a field, differs by
/// exactly that field; the one after, which calls another URL, diverges at
/// that call. On SQLite and on PostgreSQL.
fn a_server_replays_an_interpreted_action(lang: &str, source: &str) {
    let work = tempfile::tempdir().unwrap();
    let v1 = tally_pack(work.path(), lang, source, "1.0.0", "", "");
    let v2 = tally_pack(work.path(), lang, source, "1.1.0", "", " extra=yes");
    let v3 = tally_pack(work.path(), lang, source, "1.2.0", "/other", "");
    for backend in ["sqlite", "postgres"] {
        let db = (backend == "postgres").then(Database::create);
        let url = db.as_ref().map(Database::url);
        let mut args = vec!["--allow-private-outbound"];
        if let Some(url) = &url {
            args.extend(["--database-url", url.as_str()]);
        }
        let server = start_server_with(&args);
        let (code, out, err) = client(&server, &["pack", "upload", &v1]);
        assert_eq!(code, 0, "{backend}: {out} {err}");

        let (port, remote) = hello_server(2);
        let target = format!("url=http://127.0.0.1:{port}/v1");
        let (code, first) = call(&server, &["run", "tally.fetch", &target]);
        assert_eq!(code, 0, "{backend}: {first}");
        let recorded = first["result"].as_str().unwrap().to_string();
        assert!(
            recorded.starts_with("status=200 body=hello count=1 now="),
            "{backend}: {recorded}"
        );
        let (_, second) = call(&server, &["run", "tally.fetch", &target]);
        assert!(
            second["result"].as_str().unwrap().contains(" count=2 "),
            "{backend}: {second}"
        );
        remote.join().unwrap();

        let id = first["id"].to_string();
        let (code, same) = call(&server, &["execution", "replay", &id]);
        assert_eq!(code, 0, "{backend}: {same}");
        assert_eq!(same["identical"], true, "{backend}: {same}");
        assert_eq!(same["result"], recorded.as_str(), "{backend}: {same}");
        assert_eq!(same["divergence"], Value::Null, "{backend}: {same}");

        let (code, out, err) = client(&server, &["pack", "upload", &v2]);
        assert_eq!(code, 0, "{backend}: {out} {err}");
        let (code, next) = call(
            &server,
            &["execution", "replay", &id, "--pack-version", "1.1.0"],
        );
        assert_eq!(code, 1, "{backend}: {next}");
        assert_eq!(next["identical"], false, "{backend}: {next}");
        assert_eq!(
            next["original_result"],
            recorded.as_str(),
            "{backend}: {next}"
        );
        assert_eq!(
            next["result"],
            format!("{recorded} extra=yes"),
            "{backend}: {next}"
        );
        assert_eq!(next["divergence"], Value::Null, "{backend}: {next}");

        let (code, out, err) = client(&server, &["pack", "upload", &v3]);
        assert_eq!(code, 0, "{backend}: {out} {err}");
        let (code, moved) = call(
            &server,
            &["execution", "replay", &id, "--pack-version", "1.2.0"],
        );
        assert_eq!(code, 1, "{backend}: {moved}");
        let d = &moved["divergence"];
        assert!(d["call"].as_u64().unwrap() >= 1, "{backend}: {moved}");
        let (expected, got) = (d["expected"].as_str().unwrap(), d["got"].as_str().unwrap());
        assert!(
            expected.starts_with("http GET http://127.0.0.1:"),
            "{backend}: {d}"
        );
        assert!(
            expected.contains(&format!(":{port}/v1")) && !expected.contains("/other"),
            "{backend}: {d}"
        );
        assert!(got.contains(&format!(":{port}/v1/other")), "{backend}: {d}");
        drop(server);
        drop(db);
    }
}

#[test]
fn a_server_replays_a_python_action_and_its_next_versions() {
    a_server_replays_an_interpreted_action("python", TALLY_PY);
}

#[test]
fn a_server_replays_a_javascript_action_and_its_next_versions() {
    a_server_replays_an_interpreted_action("js", TALLY_JS);
}
