//! The commands that need no server: `--version`, `action inspect` and
//! `action run`.

use std::process::Command;

use serde_json::{Value, json};

use crate::common::{attune, guest};

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
fn run_reads_pair_values_as_their_parameters_types() {
    // `count` is a u16, `tags` a list (JSON), `name` an option<string>.
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
    let (code, out, _) = attune(&[
        "action",
        "run",
        &guest("types"),
        "roundtrip.many",
        "-p",
        "count=3",
        "-p",
        "tags=[]",
        "-p",
        "name=5",
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["result"], "3:5:");
}

#[test]
fn a_number_given_to_a_string_parameter_is_its_text() {
    let (code, out, err) = attune(&["action", "run", "core", "echo", "-p", "message=5"]);
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(out["result"], "5");
    assert_eq!(out["stdout"], "5\n");
}

#[test]
fn text_a_numeric_parameter_cannot_read_is_refused_naming_it_and_its_type() {
    let (code, out, stderr) = attune(&[
        "action",
        "run",
        &guest("types"),
        "roundtrip.many",
        "-p",
        "count=abc",
        "-p",
        "tags=[]",
    ]);
    assert_eq!(code, 2);
    assert_eq!(out["error"]["code"], "invalid_params");
    assert!(out.get("status").is_none(), "the guest must not run: {out}");
    assert_eq!(
        out["error"]["details"],
        json!([{"path": "/count", "message": "expected an integer, got `abc`"}])
    );
    assert!(
        stderr.contains("/count: expected an integer, got `abc`"),
        "{stderr}"
    );
    let (code, _, stderr) = attune(&["action", "run", "core", "sleep", "-p", "seconds=abc"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains(
            r#"/seconds: expected a number or one of "NaN", "Infinity", "-Infinity", got `abc`"#
        ),
        "{stderr}"
    );
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
