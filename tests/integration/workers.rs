//! Standalone workers over HTTP, on SQLite and PostgreSQL: registration,
//! capability matching, shared load without double runs, cancellation.

use std::time::Duration;

use attune::client::worker::{self as remote, RemoteWorkerConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{PipelineConfig, TestServer, on_both_backends, wait_for};

const WAIT: Duration = Duration::from_secs(30);

async fn server_without_embedded_worker(backend: support::Backend) -> TestServer {
    let pipeline = PipelineConfig {
        embedded_worker: false,
        ..PipelineConfig::default()
    };
    TestServer::start_full(backend, Default::default(), pipeline).await
}

fn worker(
    s: &TestServer,
    name: &str,
    capabilities: Vec<String>,
    dir: &std::path::Path,
) -> tokio::task::JoinHandle<()> {
    let config = RemoteWorkerConfig {
        capabilities,
        labels: json!({"test": name}),
        ..s.worker_config(name, &s.admin, &dir.join(name))
    };
    tokio::spawn(async move {
        if let Err(e) = remote::run(config).await {
            panic!("worker stopped: {e:#}");
        }
    })
}

async fn status(s: &TestServer, id: i64) -> Value {
    s.get(&format!("/api/v1/executions/{id}")).await.body
}

on_both_backends! {
    async fn two_workers_share_the_load_and_nothing_runs_twice(backend) {
        let s = server_without_embedded_worker(backend).await;
        let dir = tempfile::tempdir().unwrap();
        let caps = attune_engine::worker::capabilities();
        let a = worker(&s, "w-a", caps.clone(), dir.path());
        let b = worker(&s, "w-b", caps, dir.path());
        let mut ids = Vec::new();
        for i in 0..20 {
            let r = s.post("/api/v1/executions", json!({"action": "core.sleep", "params": {"seconds": 0.05}})).await;
            assert_eq!(r.status, StatusCode::CREATED, "{i}: {}", r.body);
            ids.push(r.body["id"].as_i64().unwrap());
        }
        let records = wait_for(WAIT, || async {
            let mut all = Vec::new();
            for id in &ids {
                let e = status(&s, *id).await;
                if e["status"] != "succeeded" {
                    return None;
                }
                all.push(e);
            }
            Some(all)
        }).await.expect("every execution succeeded");
        let workers: std::collections::BTreeSet<i64> = records.iter().map(|e| e["worker"].as_i64().unwrap()).collect();
        assert_eq!(workers.len(), 2, "both workers took work: {workers:?}");
        assert!(records.iter().all(|e| e["attempt"] == 1), "nothing ran twice");
        // What each used, as its worker measured it, came with its report.
        assert!(records.iter().all(|e| e["resources"]["instances"] == 1 && e["resources"]["peak_memory_bytes"].as_u64() > Some(0)), "{records:?}");
        let listed = s.get("/api/v1/workers").await;
        let names: Vec<&str> = listed.body["items"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"w-a") && names.contains(&"w-b"), "{names:?}");
        a.abort();
        b.abort();
        s.finish().await;
    }

    async fn a_registration_is_checked_and_capped(backend) {
        let s = TestServer::start(backend).await;
        let long = "x".repeat(300);
        for (body, path) in [
            (json!({"name": "", "capabilities": []}), "/name"),
            (json!({"name": long, "capabilities": []}), "/name"),
            (json!({"name": "w", "capabilities": [long]}), "/capabilities/0"),
            (json!({"name": "w", "capabilities": [], "labels": [null, null]}), "/labels"),
            (json!({"name": "w", "capabilities": [], "labels": {"a/b": 1}}), "/labels/a~1b"),
        ] {
            let r = s.post("/api/v1/workers", body.clone()).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", r.body);
            assert_eq!(r.detail_paths(), [path], "{body}");
        }
        let r = s.post("/api/v1/workers", json!({"name": "w", "capabilities": [], "labels": {"region": "eu"}})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["labels"], json!({"region": "eu"}));
        s.finish().await;
    }

    async fn a_worker_token_acts_only_as_the_worker_it_registered(backend) {
        let s = TestServer::start(backend).await;
        let (a, b) = (s.token("worker").await, s.token("worker").await);
        let as_token = |token: &str, path: String, body: Value| {
            s.send(s.request(reqwest::Method::POST, &path, Some(token)).json(&body))
        };
        let caps = attune_engine::worker::capabilities();
        let registered = as_token(&a, "/api/v1/workers".into(), json!({"name": "w-a", "capabilities": caps})).await;
        assert_eq!(registered.status, StatusCode::OK, "{}", registered.body);
        let mine = registered.body["id"].as_i64().unwrap();
        let workers = s.get("/api/v1/workers").await.body;
        let embedded = workers["items"].as_array().unwrap().iter()
            .find(|w| w["labels"]["embedded"] == "true").expect("the embedded worker");
        let (embedded_id, embedded_name) = (embedded["id"].as_i64().unwrap(), embedded["name"].as_str().unwrap().to_string());
        assert!(embedded.get("token").is_none() && embedded.get("token_id").is_none(), "the owner is not shown: {embedded}");
        for id in [mine, embedded_id] {
            for (path, body) in [
                (format!("/api/v1/workers/{id}/heartbeat"), json!({})),
                (format!("/api/v1/workers/{id}/claim?max=1&wait_ms=0"), json!({})),
                (format!("/api/v1/workers/{id}/results"), json!([])),
                (format!("/api/v1/workers/{id}/release"), json!({"executions": []})),
                (format!("/api/v1/workers/{id}/executions/1/kv"), json!({"op": "get", "key": "k"})),
            ] {
                let r = as_token(&b, path.clone(), body).await;
                assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.body);
            }
        }
        // Another token's worker is forbidden; an embedded worker's name
        // is no registration's to take at all.
        for (name, refused) in [("w-a", StatusCode::FORBIDDEN), (embedded_name.as_str(), StatusCode::UNPROCESSABLE_ENTITY)] {
            let r = as_token(&b, "/api/v1/workers".into(), json!({"name": name, "capabilities": []})).await;
            assert_eq!(r.status, refused, "re-registering {name}: {}", r.body);
        }
        let beat = as_token(&a, format!("/api/v1/workers/{mine}/heartbeat"), json!({})).await;
        assert_eq!(beat.status, StatusCode::OK, "{}", beat.body);
        let again = as_token(&a, "/api/v1/workers".into(), json!({"name": "w-a", "capabilities": caps})).await;
        assert_eq!(again.body["id"].as_i64(), Some(mine), "its own token re-registers it");
        let admin = as_token(&s.admin, format!("/api/v1/workers/{mine}/heartbeat"), json!({})).await;
        assert_eq!(admin.status, StatusCode::FORBIDDEN, "nor may an admin token: {}", admin.body);
        s.finish().await;
    }

    async fn a_restarted_node_keeps_its_embedded_worker_row(backend) {
        let s = TestServer::start(backend).await;
        let embedded = |body: &Value| -> Vec<i64> {
            body["items"].as_array().unwrap().iter()
                .filter(|w| w["labels"]["embedded"] == "true")
                .map(|w| w["id"].as_i64().unwrap())
                .collect()
        };
        let before = embedded(&s.get("/api/v1/workers").await.body);
        assert_eq!(before.len(), 1);
        // Something running when the process dies.
        let id = s.post("/api/v1/executions", json!({"action": "core.sleep", "params": {"seconds": 60}})).await.body["id"].as_i64().unwrap();
        wait_for(WAIT, || async { (status(&s, id).await["status"] == "running").then_some(()) }).await.expect("running");
        let s = s.restart(PipelineConfig::default()).await;
        let after = embedded(&s.get("/api/v1/workers").await.body);
        assert_eq!(after, before, "the same node, the same worker");
        // Its heartbeats must not keep the dead process's execution alive.
        let e = wait_for(Duration::from_secs(10), || async {
            let e = status(&s, id).await;
            (e["status"] == "abandoned").then_some(e)
        }).await.expect("taken back at start, not held forever");
        assert_eq!(e["attempt"], 1);
        s.finish().await;
    }

    async fn an_execution_waits_for_a_worker_with_the_capabilities_it_needs(backend) {
        let s = server_without_embedded_worker(backend).await;
        let dir = tempfile::tempdir().unwrap();
        // This worker lacks attune:action/log, which the core pack imports.
        let weak = worker(&s, "w-weak", vec!["wasi-p2-component".into()], dir.path());
        let id = s.post("/api/v1/executions", json!({"action": "core.echo", "params": {"message": "x"}})).await.body["id"].as_i64().unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        let e = status(&s, id).await;
        assert_eq!(e["status"], "requested", "{e}");
        assert!(e["status_reason"].as_str().unwrap().contains("attune:action/log"), "{e}");
        let strong = worker(&s, "w-strong", attune_engine::worker::capabilities(), dir.path());
        let e = wait_for(WAIT, || async {
            let e = status(&s, id).await;
            (e["status"] == "succeeded").then_some(e)
        }).await.expect("the capable worker ran it");
        assert_eq!(e["stdout"], "x\n");
        weak.abort();
        strong.abort();
        s.finish().await;
    }

    async fn a_stopping_worker_finishes_what_began_and_hands_back_the_rest(backend) {
        let server = server_without_embedded_worker(backend).await;
        let s = &server;
        let dir = tempfile::tempdir().unwrap();
        let config = s.worker_config("stopping", &s.token("worker").await, dir.path());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let worker = tokio::spawn(remote::run_until(config, async { let _ = stop_rx.await; }, Duration::from_secs(20)));
        let post = |body: Value| async move { s.post("/api/v1/executions", body).await.body["id"].as_i64().unwrap() };
        // Quick runs first, so the worker claims ahead of its busy slot.
        let mut quick = Vec::new();
        for _ in 0..20 {
            quick.push(post(json!({"action": "core.noop"})).await);
        }
        for id in quick {
            wait_for(WAIT, || async { (status(s, id).await["status"] == "succeeded").then_some(()) }).await.expect("ran");
        }
        let sleeper = post(json!({"action": "core.sleep", "params": {"seconds": 2}})).await;
        wait_for(WAIT, || async { (status(s, sleeper).await["status"] == "running").then_some(()) }).await.expect("sleeping");
        let waiting = post(json!({"action": "core.echo", "params": {"message": "later"}})).await;
        wait_for(Duration::from_secs(5), || async { (status(s, waiting).await["worker"].is_i64()).then_some(()) })
            .await
            .expect("claimed ahead while the slot is busy");
        let _ = stop_tx.send(());
        worker.await.unwrap().expect("a clean stop");
        let slept = status(s, sleeper).await;
        assert_eq!(slept["status"], "succeeded", "finished and reported: {slept}");
        let back = status(s, waiting).await;
        assert_eq!(back["status"], "requested", "handed back, not begun: {back}");
        assert_eq!(back["worker"], Value::Null);
        assert_eq!(back["attempt"], 1);
        server.finish().await;
    }

    async fn cancelling_reaches_a_remote_worker_through_its_heartbeat(backend) {
        let s = server_without_embedded_worker(backend).await;
        let dir = tempfile::tempdir().unwrap();
        let w = worker(&s, "w-cancel", attune_engine::worker::capabilities(), dir.path());
        let id = s.post("/api/v1/executions", json!({"action": "core.sleep", "params": {"seconds": 60}})).await.body["id"].as_i64().unwrap();
        wait_for(WAIT, || async { (status(&s, id).await["status"] == "running").then_some(()) }).await.expect("running");
        let r = s.post(&format!("/api/v1/executions/{id}/cancel"), json!({})).await;
        assert_eq!(r.body["cancel_requested"], true);
        let e = wait_for(Duration::from_secs(40), || async {
            let e = status(&s, id).await;
            (e["status"] == "cancelled").then_some(e)
        }).await.expect("cancelled within a heartbeat");
        assert!(e["finished_at"].is_i64());
        w.abort();
        s.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_work_queued_on_one_node_wakes_workers_polling_another() {
    let quiet = PipelineConfig {
        embedded_worker: false,
        timers: false,
        ..PipelineConfig::default()
    };
    let a = TestServer::start_full(
        support::Backend::Postgres,
        Default::default(),
        quiet.clone(),
    )
    .await;
    let b = a.second_node(quiet).await;
    let dir = tempfile::tempdir().unwrap();
    let w = worker(
        &b,
        "w-on-b",
        attune_engine::worker::capabilities(),
        dir.path(),
    );
    // Let the worker settle into its long poll on node B.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = std::time::Instant::now();
    let id = a
        .post(
            "/api/v1/executions",
            json!({"action": "core.echo", "params": {"message": "cross"}}),
        )
        .await
        .body["id"]
        .as_i64()
        .unwrap();
    let e = wait_for(Duration::from_secs(15), || async {
        let e = status(&a, id).await;
        (e["status"] == "succeeded").then_some(e)
    })
    .await
    .expect("the worker on node B ran it");
    assert_eq!(e["stdout"], "cross\n");
    // Far sooner than the 20 s long poll would have returned on its own.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    w.abort();
    b.finish().await;
    a.finish().await;
}

/// Regression: deferred SQLite transactions that read, then write, failed
/// with "database is locked" under concurrent claimers and result writers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_and_result_writers_never_hit_a_locked_database() {
    let quiet = PipelineConfig {
        embedded_worker: false,
        timers: false,
        ..PipelineConfig::default()
    };
    let s = TestServer::start_full(support::Backend::Sqlite, Default::default(), quiet).await;
    let caps = attune_engine::worker::capabilities();
    for _ in 0..120 {
        let r = s
            .post("/api/v1/executions", json!({"action": "core.noop"}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..6 {
        let storage = s.core.storage.clone();
        let caps = caps.clone();
        tasks.spawn(async move {
            let me = storage
                .upsert_worker(&format!("c{n}"), &caps, &json!({}), 1, false)
                .await
                .unwrap();
            let mut done = 0;
            loop {
                let claimed = storage
                    .claim(me.id, &caps, 5, 30_000, true)
                    .await
                    .expect("claim");
                if claimed.is_empty() {
                    return done;
                }
                let results: Vec<_> = claimed
                    .iter()
                    .map(|e| {
                        let f = attune_storage::Finished {
                            status: attune_storage::ExecutionStatus::Succeeded,
                            result: None,
                            error: None,
                            stdout: String::new(),
                            stderr: String::new(),
                            logs: json!([]),
                            started_at: None,
                            attempt: None,
                            resources: None,
                            journal: None,
                        };
                        (e.id, me.id, f)
                    })
                    .collect();
                let written = storage
                    .finish_many(&results)
                    .await
                    .expect("finish")
                    .recorded;
                assert!(written.iter().all(|w| *w));
                done += written.len();
            }
        });
    }
    let mut total = 0;
    while let Some(n) = tasks.join_next().await {
        total += n.unwrap();
    }
    assert_eq!(
        total, 120,
        "every execution claimed and finished exactly once"
    );
    s.finish().await;
}

#[tokio::test]
async fn a_worker_registered_before_owners_were_recorded_is_taken_only_by_an_admin_token() {
    use sqlx::Connection;
    let s = TestServer::start(support::Backend::Sqlite).await;
    // As an admin registration left it before every one recorded its token.
    let url = format!("sqlite://{}", s.data_dir.path().join("attune.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO worker (name, capabilities, labels, last_heartbeat, created_at, token_id) \
         VALUES ('legacy', '[]', '{}', 0, 0, NULL)",
    )
    .execute(&mut db)
    .await
    .unwrap();
    db.close().await.unwrap();
    let register = |token: String| {
        let rb = s
            .request(reqwest::Method::POST, "/api/v1/workers", Some(&token))
            .json(&json!({"name": "legacy", "capabilities": []}));
        s.send(rb)
    };
    let r = register(s.token("worker").await).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "a worker token: {}",
        r.body
    );
    let r = register(s.admin.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let id = r.body["id"].as_i64().unwrap();
    let r = register(s.token("admin").await).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "now the first admin's: {}",
        r.body
    );
    let beat = s
        .post(&format!("/api/v1/workers/{id}/heartbeat"), json!({}))
        .await;
    assert_eq!(beat.status, StatusCode::OK, "{}", beat.body);
    s.finish().await;
}

/// Regression: a cancel asked on one node of an execution the embedded
/// worker of another node runs was only flagged; that worker never looked,
/// so the execution ran to its end (the same happened on one node when
/// the cancel came between the claim and the cancel handle's registration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_asked_on_another_node_reaches_an_embedded_worker() {
    let runs = PipelineConfig {
        timers: false,
        ..PipelineConfig::default()
    };
    let a = TestServer::start_full(support::Backend::Postgres, Default::default(), runs).await;
    let b = a
        .second_node(PipelineConfig {
            embedded_worker: false,
            timers: false,
            ..PipelineConfig::default()
        })
        .await;
    let id = a
        .post(
            "/api/v1/executions",
            json!({"action": "core.sleep", "params": {"seconds": 60}}),
        )
        .await
        .body["id"]
        .as_i64()
        .unwrap();
    wait_for(WAIT, || async {
        (status(&a, id).await["status"] == "running").then_some(())
    })
    .await
    .expect("running on node A");
    let r = b
        .post(&format!("/api/v1/executions/{id}/cancel"), json!({}))
        .await;
    assert_eq!(r.body["cancel_requested"], true, "{}", r.body);
    let e = wait_for(Duration::from_secs(40), || async {
        let e = status(&a, id).await;
        (e["status"] == "cancelled").then_some(e)
    })
    .await
    .expect("cancelled within a heartbeat of node A's worker");
    assert!(e["finished_at"].is_i64(), "{e}");
    b.finish().await;
    a.finish().await;
}
