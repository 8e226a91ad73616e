//! Sandbox limits, proven with a guest that misbehaves on purpose
//! (`actions/hostile`). Each probe must end with the right status, and the
//! same runtime must serve a normal execution right after.

use std::time::Duration;

use attune_runtime::{Limits, Outcome, Status};
use serde_json::{Value, json};
use support::{run, run_limited};

/// Runs a probe, then proves the host still serves `core.echo`.
async fn probe(action: &str, params: Value, limits: Limits) -> Outcome {
    let out = run_limited("hostile", action, params, limits)
        .await
        .unwrap_or_else(|e| panic!("{action}: {e}"));
    let echo = run("core", "echo", json!({"message": "still here"}))
        .await
        .unwrap();
    assert_eq!(
        echo.status,
        Status::Succeeded,
        "host unhealthy after {action}"
    );
    assert_eq!(echo.stdout.text, "still here\n");
    out
}

fn limits() -> Limits {
    Limits::default()
}

fn error_text(out: &Outcome) -> String {
    out.error
        .as_ref()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn an_infinite_loop_times_out() {
    let limits = Limits {
        timeout: Duration::from_millis(300),
        ..limits()
    };
    let started = std::time::Instant::now();
    let out = probe("spin", json!({}), limits).await;
    assert_eq!(out.status, Status::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_guest_blocked_in_a_wasi_sleep_times_out() {
    let limits = Limits {
        timeout: Duration::from_millis(300),
        ..limits()
    };
    let started = std::time::Instant::now();
    let out = probe("nap", json!({"ms": 60_000}), limits).await;
    assert_eq!(out.status, Status::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn memory_growth_past_the_cap_fails_and_says_why() {
    let limits = Limits {
        memory_bytes: 32 << 20,
        ..limits()
    };
    let out = probe("grow", json!({"mib": 64}), limits).await;
    assert_eq!(out.status, Status::Failed);
    assert!(error_text(&out).contains("memory limit"), "{:?}", out.error);
    // Under the cap the same export succeeds.
    let out = probe("grow", json!({"mib": 8}), limits).await;
    assert_eq!(out.status, Status::Succeeded);
    assert_eq!(out.result, Some(json!(8)));
}

#[tokio::test]
async fn deep_recursion_fails_without_hurting_the_host() {
    let out = probe("recurse", json!({"depth": 100_000_000u64}), limits()).await;
    assert_eq!(out.status, Status::Failed);
    assert!(error_text(&out).contains("trap"), "{:?}", out.error);
}

#[tokio::test]
async fn host_files_and_directories_are_invisible() {
    for path in [
        "/etc/passwd",
        "/proc/self/environ",
        "../../etc/passwd",
        "/scratch/../etc/hostname",
    ] {
        let out = probe("read-file", json!({"path": path}), limits()).await;
        assert_eq!(out.status, Status::Failed, "read {path}: {:?}", out.result);
    }
    for path in ["/", "/etc", "..", "/scratch/.."] {
        let out = probe("list-dir", json!({"path": path}), limits()).await;
        assert_eq!(out.status, Status::Failed, "list {path}: {:?}", out.result);
    }
}

#[tokio::test]
async fn the_scratch_directory_is_writable_empty_and_private() {
    let out = probe("list-dir", json!({"path": "/scratch"}), limits()).await;
    assert_eq!(out.result, Some(json!([])));
    let out = probe(
        "write-file",
        json!({"path": "/scratch/note.txt", "contents": "mine"}),
        limits(),
    )
    .await;
    assert_eq!(out.status, Status::Succeeded);
    assert_eq!(out.result, Some(json!("mine")));
    // The next execution gets a fresh, empty scratch directory.
    let out = probe("list-dir", json!({"path": "/scratch"}), limits()).await;
    assert_eq!(out.result, Some(json!([])));
}

/// Runs `disk` steps and returns their result lines and the log's warnings.
async fn disk(steps: &[&str]) -> (Vec<String>, Vec<String>) {
    let out = probe("disk", json!({ "steps": steps }), limits()).await;
    assert_eq!(out.status, Status::Succeeded, "{:?}", out.error);
    let warnings = out
        .logs
        .iter()
        .filter(|l| l.level == "warn")
        .map(|l| l.message.clone())
        .collect();
    (
        serde_json::from_value(out.result.unwrap()).unwrap(),
        warnings,
    )
}

/// The number a result line starts with after `prefix`.
fn count_after(line: &str, prefix: &str) -> u64 {
    let rest = line
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{line}"));
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn scratch_writes_past_the_quota_fail_in_the_guest() {
    // 64 MiB by default: the 65th MiB fails in the guest (Rust's standard
    // library reports a failed stream write as an I/O error, a refused
    // `create` as "no space"), and the log says why.
    let (lines, warnings) = disk(&[
        "fill a",
        "delete a",
        "write b 40",
        "hold b",
        "delete b",
        "write c 40",
    ])
    .await;
    assert_eq!(count_after(&lines[0], "full after "), 64, "{lines:?}");
    // Deleting frees the room; a file unlinked but still open keeps it.
    assert_eq!(lines[1..5], ["deleted", "wrote 40 MiB", "held", "deleted"]);
    assert!(lines[5].starts_with("error: "), "{lines:?}");
    assert_eq!(
        warnings,
        ["/scratch is full: its quota of 67108864 bytes is used, so writes failed"]
    );

    // A sparse file counts its whole length; every entry counts a block.
    let (lines, _) = disk(&["sparse d 1000000000", "dirs 100000"]).await;
    assert!(lines[0].starts_with("error: "), "{lines:?}");
    assert!(lines[1].contains("No space left"), "{lines:?}");
    assert_eq!(
        count_after(&lines[1], ""),
        (64 << 20) / 4096 - 1,
        "{lines:?}"
    );

    // The next execution starts with the whole quota again.
    let (lines, warnings) = disk(&["write e 60"]).await;
    assert_eq!(lines, ["wrote 60 MiB"]);
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[tokio::test]
async fn writing_outside_the_scratch_directory_fails() {
    let outside = std::env::temp_dir().join("attune-sandbox-escape-probe");
    let _ = std::fs::remove_file(&outside);
    for path in [
        "/tmp/attune-sandbox-escape-probe",
        "/scratch/../attune-sandbox-escape-probe",
        "/attune-sandbox-escape-probe",
        outside.to_str().unwrap(),
    ] {
        let out = probe(
            "write-file",
            json!({"path": path, "contents": "x"}),
            limits(),
        )
        .await;
        assert_eq!(out.status, Status::Failed, "write {path}: {:?}", out.result);
    }
    assert!(!outside.exists());
}

#[tokio::test]
async fn the_host_environment_is_not_visible() {
    // SAFETY: set before any guest reads the environment; tests only read it.
    unsafe { std::env::set_var("ATTUNE_TEST_SECRET", "hunter2") };
    let out = probe("env", json!({}), limits()).await;
    assert_eq!(out.status, Status::Succeeded);
    assert_eq!(out.result, Some(json!([])));
}

#[tokio::test]
async fn sockets_are_denied() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    listener.set_nonblocking(true).unwrap();
    let out = probe("connect", json!({"addr": addr}), limits()).await;
    assert_eq!(out.status, Status::Failed, "{:?}", out.result);
    assert!(listener.accept().is_err(), "the guest reached the listener");
}

#[tokio::test]
async fn flooding_stdout_truncates_without_trapping() {
    let limits = Limits {
        output_bytes: 64 << 10,
        ..limits()
    };
    let out = probe("flood", json!({"bytes": 1 << 20}), limits).await;
    assert_eq!(out.status, Status::Succeeded, "{:?}", out.error);
    assert_eq!(out.result, Some(json!(1 << 20)));
    assert_eq!(out.stdout.text.len(), 64 << 10);
    assert_eq!(out.stdout.dropped, (1 << 20) - (64 << 10));
    assert_eq!(out.stderr.dropped, (1 << 20) - (64 << 10));
    assert!(out.stdout.marked().ends_with("bytes dropped]"));
}

#[tokio::test]
async fn a_panic_fails_with_the_trap_and_keeps_the_panic_message() {
    let out = probe("explode", json!({"message": "kaboom"}), limits()).await;
    assert_eq!(out.status, Status::Failed);
    assert!(error_text(&out).contains("trap"), "{:?}", out.error);
    assert!(out.stderr.text.contains("kaboom"), "{}", out.stderr.text);
}

#[tokio::test]
async fn log_lines_are_kept_and_capped() {
    let out = probe("chatter", json!({"count": 3}), limits()).await;
    assert_eq!(out.logs.len(), 3);
    assert_eq!(out.logs[2].fields, [("i".to_string(), "2".to_string())]);
    let cap = attune_runtime::log::MAX_LOG_LINES;
    let out = probe("chatter", json!({"count": cap + 10}), limits()).await;
    assert_eq!(out.status, Status::Succeeded);
    assert_eq!(out.logs.len(), cap);
    assert_eq!(out.logs_dropped, 10);
}

#[tokio::test]
async fn the_guest_sees_its_execution_context() {
    let mut request = attune_runtime::ExecutionRequest::new("whoami", json!({}));
    request.context.id = "exec-42".into();
    request.context.action = "hostile.whoami".into();
    request.context.attempt = 3;
    let out = support::pack("hostile")
        .execute(support::runtime(), request)
        .await
        .unwrap();
    assert_eq!(out.result, Some(json!(["exec-42", "hostile.whoami", 3])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_executions_are_isolated() {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..32 {
        set.spawn(async move {
            let out = run("core", "echo", json!({"message": format!("m{i}")}))
                .await
                .unwrap();
            assert_eq!(out.stdout.text, format!("m{i}\n"));
            assert_eq!(out.result, Some(json!(format!("m{i}"))));
        });
    }
    while let Some(joined) = set.join_next().await {
        joined.unwrap();
    }
}

#[tokio::test]
async fn executions_past_the_instance_pool_wait_for_a_slot_instead_of_failing() {
    use attune_runtime::{ExecutionRequest, Runtime, RuntimeConfig};
    let rt = Runtime::new(RuntimeConfig {
        max_instances: 2,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let (core, _) = rt.load(attune::bundled::CORE_PACK).unwrap();
    let began = std::time::Instant::now();
    let runs = (0..6).map(|_| {
        let (rt, core) = (rt.clone(), core.clone());
        async move {
            core.execute(&rt, ExecutionRequest::new("sleep", json!({"seconds": 0.2})))
                .await
                .unwrap()
        }
    });
    let outcomes = futures_util::future::join_all(runs).await;
    for o in &outcomes {
        assert_eq!(o.status, Status::Succeeded, "{:?}", o.error);
    }
    assert!(
        began.elapsed() >= Duration::from_millis(550),
        "two slots ran six sleeps in three waves: {:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn a_result_past_the_cap_fails_the_execution_and_says_why() {
    use attune_runtime::{ExecutionRequest, Runtime, RuntimeConfig};
    let rt = Runtime::new(RuntimeConfig {
        max_instances: 2,
        max_result_bytes: 100,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let (core, _) = rt.load(attune::bundled::CORE_PACK).unwrap();
    let echo = |message: String| {
        core.execute(
            &rt,
            ExecutionRequest::new("echo", json!({"message": message})),
        )
    };
    let small = echo("x".repeat(50)).await.unwrap();
    assert_eq!(small.status, Status::Succeeded);
    let big = echo("x".repeat(200)).await.unwrap();
    assert_eq!(big.status, Status::Failed);
    assert_eq!(big.result, None);
    let error = big.error.unwrap().to_string();
    assert!(
        error.contains("the result is 202 bytes") && error.contains("limit is 100"),
        "{error}"
    );
}

#[tokio::test]
async fn a_spinning_guest_s_cpu_time_is_counted_and_never_above_its_wall_time() {
    let limits = Limits {
        timeout: Duration::from_millis(800),
        ..limits()
    };
    let started = std::time::Instant::now();
    let out = probe("spin", json!({}), limits).await;
    let wall = started.elapsed().as_micros() as f64;
    assert_eq!(out.status, Status::TimedOut);
    let cpu = out.resources.cpu_us as f64;
    // Alone on a core it is all CPU; on a machine shared with the other
    // tests of this binary (two cores, many threads) a spinning thread
    // still gets a share of a core, never more than its wall time.
    assert!(
        cpu > 0.05 * wall && cpu <= wall * 1.05,
        "cpu {cpu} µs, wall {wall} µs"
    );
    assert_eq!(out.resources.instances, 1);
}

#[tokio::test]
async fn a_guest_sleeping_on_the_host_costs_almost_no_cpu() {
    let out = probe("nap", json!({"ms": 500}), limits()).await;
    assert_eq!(out.status, Status::Succeeded, "{:?}", out.error);
    assert!(out.resources.cpu_us < 50_000, "{} µs", out.resources.cpu_us);
}

#[tokio::test]
async fn peak_memory_grows_with_what_the_guest_allocates() {
    let small = probe("grow", json!({"mib": 1}), limits()).await;
    let large = probe("grow", json!({"mib": 16}), limits()).await;
    assert_eq!(large.status, Status::Succeeded);
    let (s, l) = (
        small.resources.peak_memory_bytes,
        large.resources.peak_memory_bytes,
    );
    assert!(
        s >= 1 << 20 && l >= 16 << 20 && l - s >= 15 << 20,
        "{s} then {l}"
    );
}
