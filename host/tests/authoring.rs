//! Writing actions in Rust, Python and JavaScript: `attune action new`,
//! `attune action build`, then `inspect` and `run` on what was built, all as
//! real processes with the real toolchains.
//!
//! Toolchains install once into `ATTUNE_TOOLS_DIR` (default: a folder in
//! cargo's target directory), so only the first run downloads them.

mod common;
#[path = "authoring/http.rs"]
mod http;
#[path = "authoring/replay.rs"]
mod replay;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{client, start_server};
use serde_json::{Value, json};

fn tools_dir() -> PathBuf {
    std::env::var_os("ATTUNE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("attune-tools"))
}

/// Runs `attune` with `cache` as its artifact cache; exit code, stdout, stderr.
fn attune_in(cache: &Path, cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_attune"))
        .args(args)
        .current_dir(cwd)
        .env("ATTUNE_CACHE_DIR", cache)
        .env("ATTUNE_TOOLS_DIR", tools_dir())
        // Rust projects share one target directory, so dependencies build once.
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("authored-rust"),
        )
        .output()
        .expect("attune runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// The action names `attune action inspect` printed.
fn action_names(inspected: &Value) -> Vec<&str> {
    inspected["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect()
}

/// The `.cwasm` artifacts in a cache directory, with their modification times.
fn artifacts(cache: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return vec![];
    };
    let mut found: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .map(|p| {
            let modified = p.metadata().unwrap().modified().unwrap();
            (p, modified)
        })
        .collect();
    found.sort();
    found
}

/// `new` → `build` → `inspect` → `run`, as an author following the README.
fn scaffold_build_and_run(lang: &str) {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let name = format!("hello-{lang}");

    let (code, out, err) = attune_in(
        &cache,
        work.path(),
        &["action", "new", &name, "--lang", lang],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("attune action build"), "{out}");
    let project = work.path().join(&name);
    assert!(project.join("wit/world.wit").is_file());
    assert!(project.join("README.md").is_file());

    let (code, out, err) = attune_in(&cache, &project, &["action", "build"]);
    assert_eq!(code, 0, "build failed: {err}");
    let built = project.join("build").join(format!("{name}.wasm"));
    assert_eq!(out.trim(), built.to_str().unwrap());
    assert!(err.contains("actions: greet"), "{err}");
    // Compiled once while building; every later command loads that artifact.
    let compiled = artifacts(&cache);
    assert_eq!(compiled.len(), 1, "{compiled:?}");

    let component = built.to_str().unwrap();
    let (code, out, err) = attune_in(&cache, &project, &["action", "inspect", component]);
    assert_eq!(code, 0, "{err}");
    let inspected = json_of(&out);
    let actions = inspected["actions"].as_array().unwrap();
    let names: Vec<&str> = actions
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["greet"], "toolchain exports are not actions");
    let greet = &actions[0];
    assert_eq!(
        greet["description"],
        "Greets `name`, `times` times (once when `times` is absent)."
    );
    assert_eq!(greet["params_schema"]["required"], json!(["name"]));
    assert_eq!(
        greet["params_schema"]["properties"]["name"],
        json!({"type": "string"})
    );
    assert_eq!(greet["error_schema"], json!({"type": "string"}));
    assert!(
        inspected["description"]
            .as_str()
            .unwrap()
            .contains(&format!("The `{name}` pack")),
        "{inspected}"
    );
    let capabilities = greet["capabilities"].as_array().unwrap();
    assert!(
        capabilities
            .iter()
            .all(|c| !c.as_str().unwrap().starts_with("wasi:")),
        "the WASI a toolchain imports needs no capability: {capabilities:?}"
    );

    let run = |params: &[&str]| {
        let mut args = vec!["action", "run", component, "greet"];
        for p in params {
            args.extend(["-p", p]);
        }
        let (code, out, err) = attune_in(&cache, &project, &args);
        (code, json_of(&out), err)
    };
    let (code, out, err) = run(&["name=world", "times=2"]);
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(out["status"], "succeeded");
    assert_eq!(out["result"], "hello, world, hello, world");
    assert_eq!(out["logs"][0]["level"], "info", "{out}");
    assert!(
        out["logs"][0]["message"]
            .as_str()
            .unwrap()
            .contains("greeting"),
        "{out}"
    );

    let (code, out, _) = run(&["name=world"]);
    assert_eq!(code, 0);
    assert_eq!(out["result"], "hello, world", "an absent option is None");

    let (code, out, _) = run(&["name=world", "times=11"]);
    assert_eq!(code, 1, "a typed error fails the execution: {out}");
    assert_eq!(out["status"], "failed");
    assert_eq!(out["error"], "times must be at most 10, got 11");

    let (code, out, _) = run(&["name=world", "times=-1"]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(out["error"]["details"][0]["path"], "/times");

    assert_eq!(
        artifacts(&cache),
        compiled,
        "inspect and run reused the artifact compiled by build"
    );
}

#[test]
fn a_new_python_action_builds_inspects_and_runs() {
    scaffold_build_and_run("python");
}

#[test]
fn a_new_javascript_action_builds_inspects_and_runs() {
    scaffold_build_and_run("js");
}

#[test]
fn a_new_rust_action_builds_inspects_and_runs() {
    scaffold_build_and_run("rust");
}

#[test]
fn new_refuses_bad_names_and_occupied_directories() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    for bad in ["Hello", "hello_world", "9lives", "world"] {
        let (code, _, err) = attune_in(&cache, work.path(), &["action", "new", bad]);
        assert_ne!(code, 0, "{bad} was accepted");
        assert!(err.contains(bad), "{err}");
    }
    std::fs::create_dir(work.path().join("taken")).unwrap();
    std::fs::write(work.path().join("taken/notes.txt"), "mine").unwrap();
    let (code, _, err) = attune_in(&cache, work.path(), &["action", "new", "taken"]);
    assert_ne!(code, 0);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(
        std::fs::read_to_string(work.path().join("taken/notes.txt")).unwrap(),
        "mine",
        "nothing overwritten"
    );
    let (code, _, err) = attune_in(
        &cache,
        work.path(),
        &["action", "new", "x", "--lang", "cobol"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("python"), "the choices are listed: {err}");
}

#[test]
fn build_explains_what_is_missing() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let (code, _, err) = attune_in(&cache, work.path(), &["action", "build"]);
    assert_ne!(code, 0);
    assert!(err.contains("attune action new"), "{err}");

    std::fs::write(work.path().join("app.py"), "").unwrap();
    let (code, _, err) = attune_in(&cache, work.path(), &["action", "build"]);
    assert_ne!(code, 0);
    assert!(err.contains("WIT folder"), "{err}");

    std::fs::create_dir(work.path().join("wit")).unwrap();
    std::fs::write(
        work.path().join("wit/a.wit"),
        "package a:b;\nworld one {}\nworld two {}\n",
    )
    .unwrap();
    let (code, _, err) = attune_in(&cache, work.path(), &["action", "build"]);
    assert_ne!(code, 0);
    assert!(err.contains("one, two") && err.contains("--world"), "{err}");
}

/// Builds an example pack of `actions/` where the benchmark finds it
/// (`actions/<dir>/build/<world>.wasm`); returns the component.
fn build_example(dir: &str, cache: &Path) -> String {
    let project = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../actions")
        .join(dir);
    let (code, out, err) = attune_in(cache, &project, &["action", "build"]);
    assert_eq!(code, 0, "building actions/{dir} failed: {err}");
    out.trim().to_string()
}

fn run_example(cache: &Path, component: &str, action: &str, params: Value) -> (i32, Value) {
    let (code, out, err) = attune_in(
        cache,
        Path::new("."),
        &[
            "action",
            "run",
            component,
            action,
            "--params",
            &params.to_string(),
        ],
    );
    assert!(!out.is_empty(), "{err}");
    (code, json_of(&out))
}

#[test]
fn the_python_example_formats_text() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let text = build_example("text-py", &cache);

    let (_, out, _) = attune_in(&cache, work.path(), &["action", "inspect", &text]);
    let inspected = json_of(&out);
    assert_eq!(
        action_names(&inspected),
        ["echo", "slugify", "wrap", "count"]
    );
    assert_eq!(
        inspected["actions"][3]["result_schema"]["required"],
        json!(["lines", "words", "characters"])
    );

    let (code, out) = run_example(&cache, &text, "echo", json!({"message": "hello, world"}));
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["result"], "hello, world");
    assert_eq!(out["stdout"], "hello, world\n");

    let (_, out) = run_example(
        &cache,
        &text,
        "slugify",
        json!({"text": "Hello, World! Ünïcode 2"}),
    );
    assert_eq!(out["result"], "hello-world-n-code-2");

    let (code, out) = run_example(
        &cache,
        &text,
        "wrap",
        json!({"text": "the quick brown fox jumps over the lazy dog", "width": 16}),
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out["result"],
        json!(["the quick brown", "fox jumps over", "the lazy dog"])
    );
    assert_eq!(
        out["logs"][0]["fields"],
        json!([["width", "16"], ["lines", "3"]])
    );

    let (code, out) = run_example(&cache, &text, "wrap", json!({"text": "x", "width": 5}));
    assert_eq!(code, 1);
    assert_eq!(out["error"], "width must be between 10 and 200, got 5");

    let (_, out) = run_example(&cache, &text, "count", json!({"text": "one two\nthree"}));
    assert_eq!(
        out["result"],
        json!({"lines": 2, "words": 3, "characters": 13})
    );

    // The same component on a server: uploaded, compiled once, run by the
    // embedded worker.
    let server = start_server();
    let (code, out, err) = client(
        &server,
        &[
            "pack",
            "upload",
            &text,
            "--name",
            "text",
            "--version",
            "0.1.0",
        ],
    );
    assert_eq!(code, 0, "{out} {err}");
    let (code, out, err) = client(&server, &["run", "text.slugify", "text=Attune runs Python"]);
    assert_eq!(code, 0, "{out} {err}");
    let execution: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(execution["status"], "succeeded", "{execution}");
    assert_eq!(execution["result"], "attune-runs-python");
}

#[test]
fn the_javascript_example_transforms_json() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let json_pack = build_example("json-js", &cache);

    let (_, out, _) = attune_in(&cache, work.path(), &["action", "inspect", &json_pack]);
    let inspected = json_of(&out);
    let pick = &inspected["actions"][1];
    assert_eq!(pick["name"], "pick");
    assert!(
        pick["description"]
            .as_str()
            .unwrap()
            .starts_with("Picks dotted `paths`"),
        "{pick}"
    );

    let (code, out) = run_example(&cache, &json_pack, "echo", json!({"message": "hi"}));
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["stdout"], "hi\n");

    let document = json!({"user": {"name": "ada", "roles": ["admin"]}, "items": [{"id": 7}]});
    let (code, out) = run_example(
        &cache,
        &json_pack,
        "pick",
        json!({"document": document.to_string(), "paths": ["user.name", "items.0.id", "nope"]}),
    );
    assert_eq!(code, 0, "{out}");
    let picked: Value = serde_json::from_str(out["result"].as_str().unwrap()).unwrap();
    assert_eq!(picked, json!({"user.name": "ada", "items.0.id": 7}));
    let levels: Vec<&str> = out["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["level"].as_str().unwrap())
        .collect();
    assert_eq!(levels, ["warn", "info"], "{out}");

    let (code, out) = run_example(
        &cache,
        &json_pack,
        "pick",
        json!({"document": "{not json", "paths": []}),
    );
    assert_eq!(code, 1);
    assert!(
        out["error"]
            .as_str()
            .unwrap()
            .starts_with("document is not JSON"),
        "{out}"
    );

    let (code, out) = run_example(
        &cache,
        &json_pack,
        "stats",
        json!({"numbers": [2, 4.5, -1]}),
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out["result"],
        json!({"count": 3, "min": -1.0, "max": 4.5, "mean": 1.8333333333333333})
    );
    let (code, out) = run_example(&cache, &json_pack, "stats", json!({"numbers": []}));
    assert_eq!(code, 1);
    assert_eq!(out["error"], "numbers is empty");
}

/// A Python action that tries what the sandbox forbids.
const PROBE_WIT: &str = r#"package test:probe;

world probe {
    include attune:action/action@0.1.0;

    // Not `connect`: componentize-py links exports next to libc's symbols.
    export try-connect: func(port: u16) -> result<string, string>;
    export try-read: func(path: string) -> result<string, string>;
    export env-names: func() -> list<string>;
}
"#;

const PROBE_PY: &str = r#"import os
import socket

import wit_world
from componentize_py_types import Err


class WitWorld(wit_world.WitWorld):
    def try_connect(self, port: int) -> str:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except Exception as e:
            raise Err(f"{type(e).__name__}: {e}")
        return "connected"

    def try_read(self, path: str) -> str:
        try:
            with open(path) as f:
                return f.read()
        except Exception as e:
            raise Err(f"{type(e).__name__}: {e}")

    def env_names(self) -> list[str]:
        return sorted(os.environ)
"#;

#[test]
fn python_actions_stay_in_the_sandbox() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let (code, _, err) = attune_in(
        &cache,
        work.path(),
        &["action", "new", "probe", "--lang", "python"],
    );
    assert_eq!(code, 0, "{err}");
    let project = work.path().join("probe");
    std::fs::write(project.join("wit/world.wit"), PROBE_WIT).unwrap();
    std::fs::write(project.join("app.py"), PROBE_PY).unwrap();
    let (code, out, err) = attune_in(&cache, &project, &["action", "build"]);
    assert_eq!(code, 0, "{err}");
    let component = out.trim().to_string();

    let (_, out, _) = attune_in(&cache, &project, &["action", "inspect", &component]);
    let imports = json_of(&out)["imports"].clone();
    assert!(
        imports
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i.as_str().unwrap().starts_with("wasi:sockets/tcp@")),
        "componentize-py imports sockets, and they link: {imports}"
    );

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (code, out) = run_example(&cache, &component, "try-connect", json!({"port": port}));
    assert_eq!(code, 1, "{out}");
    assert_eq!(out["status"], "failed");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "no connection reached the host"
    );

    let secret = work.path().join("secret.txt");
    std::fs::write(&secret, "host file").unwrap();
    let (code, out) = run_example(
        &cache,
        &component,
        "try-read",
        json!({"path": secret.to_str().unwrap()}),
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        !out.to_string().contains("host file"),
        "host files stay out of reach: {out}"
    );

    let (code, out) = run_example(&cache, &component, "env-names", json!({}));
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out["result"],
        json!([]),
        "the host's environment is not passed in"
    );
}
