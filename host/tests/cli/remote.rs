//! The client commands against a running server: packs, rules, events,
//! runs, executions, tokens, workflows and sensors.

use std::process::Command;

use chrono::TimeZone as _;
use serde_json::{Value, json};

use super::{upload_workflows, wait_until};
use crate::common::{ServerProcess, client, guest, start_server};

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
fn run_reads_pairs_by_the_server_s_schema_and_tables_show_local_times() {
    let server = start_server();
    // `message` is a string on the server: `5` is sent as the text "5".
    let (code, out, err) = client(&server, &["run", "core.echo", "message=5"]);
    assert_eq!(code, 0, "{err}");
    let record: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(record["params"], json!({"message": "5"}));
    assert_eq!(record["stdout"], "5\n");

    // Text a number parameter cannot read is refused, and nothing is queued.
    let (code, out, err) = client(&server, &["run", "core.sleep", "seconds=abc"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        err.contains(
            r#"/seconds: expected a number or one of "NaN", "Infinity", "-Infinity", got `abc`"#
        ),
        "{err}"
    );
    let (_, listed, _) = client(&server, &["execution", "list", "--action", "core.sleep"]);
    assert_eq!(listed.lines().count(), 1, "only the header: {listed}");

    // A table shows the local time to the second; --json the milliseconds.
    let ms = record["created_at"].as_i64().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_attune"))
        .args(["execution", "list", "--action", "core.echo"])
        .env("ATTUNE_SERVER", &server.url)
        .env("ATTUNE_TOKEN", &server.token)
        .env("XDG_CONFIG_HOME", server.dir.path())
        .env("TZ", "IST-5:30")
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    let india = chrono::FixedOffset::east_opt(5 * 3600 + 1800).unwrap();
    let local = india
        .timestamp_millis_opt(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    assert!(local.ends_with("+05:30"), "{local}");
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("{} ", record["id"])))
        .unwrap_or_else(|| panic!("no row of {}: {table}", record["id"]));
    assert!(row.ends_with(&local), "{row} should end with {local}");
    assert!(!table.contains(&ms.to_string()), "{table}");
    let (_, json, _) = client(&server, &["execution", "list", "--json"]);
    let json: Value = serde_json::from_str(&json).unwrap();
    let listed = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == record["id"])
        .unwrap();
    assert_eq!(listed["created_at"], ms);
}

#[test]
fn executions_replay_one_by_id_and_a_rule_s_runs_as_a_table() {
    let server = start_server();
    let rule = server.dir.path().join("say.yaml");
    std::fs::write(
        &rule,
        "ref: core.say\ntrigger: core.manual\naction: core.echo\naction_params:\n  message: \"{{ event.payload.text }}\"\n",
    )
    .unwrap();
    let (code, _, err) = client(&server, &["rule", "create", "-f", rule.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for text in ["one", "two"] {
        let payload = format!("{{\"text\": \"{text}\"}}");
        let (code, _, err) = client(
            &server,
            &["event", "fire", "core.manual", "--payload", &payload],
        );
        assert_eq!(code, 0, "{err}");
    }
    wait_until("both runs end", || {
        let (_, out, _) = client(
            &server,
            &[
                "execution",
                "list",
                "--rule",
                "core.say",
                "--status",
                "succeeded",
                "--json",
            ],
        );
        serde_json::from_str::<Value>(&out).unwrap()["items"]
            .as_array()
            .is_some_and(|i| i.len() == 2)
    });

    let (code, out, err) = client(
        &server,
        &["execution", "replay", "--rule", "core.say", "--since", "1h"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines.iter().all(|l| l.contains("identical")), "{out}");

    let id = lines[0].split_whitespace().next().unwrap();
    let (code, out, err) = client(&server, &["execution", "replay", id, "--json"]);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["identical"], true, "{report}");
    assert_eq!(report["result"], "one");
    let (code, _, err) = client(
        &server,
        &["execution", "replay", id, "--pack-version", "9.9.9"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("has no version 9.9.9"), "{err}");
    let (code, _, err) = client(&server, &["execution", "replay"]);
    assert_eq!(code, 2, "an id or --rule is required: {err}");
}
