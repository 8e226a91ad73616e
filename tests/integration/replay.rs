//! Journals and replay: a run records every answer its sandbox received
//! (HTTP, clocks, random numbers, key-value state, secret reads by name)
//! and is replayed offline against them, by the same component or the
//! next version of it.

use std::sync::Arc;

use attune_runtime::http::{AllowedHosts, OutboundConfig};
use attune_runtime::journal::{Call, DEFAULT_CAP};
use attune_runtime::kv::{KvState, KvStore, MemoryKv};
use attune_runtime::secrets::SecretSet;
use attune_runtime::{
    ExecutionRequest, Journal, JournalMode, Outcome, Runtime, RuntimeConfig, Status,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestServer, guest_bytes, on_both_backends};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The secret the probe sends in a header and in its query.
pub const TOKEN: &str = "s3cr3t-t0ken-value";

/// A loopback HTTP server answering every request with its request line,
/// its `authorization` header and its body (so a secret sent comes back in
/// the response's body and in its `x-seen` header); stopped when the
/// returned handle is aborted.
pub async fn echo_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Some((text, mut body)) = support::read_head(&mut stream).await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let length: usize = support::header_of(&text, "content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while body.len() < length {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => body.extend_from_slice(&buf[..n]),
                    }
                }
                let sent = String::from_utf8_lossy(&body).to_string();
                let line = text.lines().next().unwrap_or("").to_string();
                let auth = support::header_of(&text, "authorization").unwrap_or_default();
                let body = format!("{line} | {auth} | {sent}");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-seen: {auth}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    (port, task)
}

/// A journal as text, with every recorded body decoded: where a secret
/// would show if it were kept.
pub fn readable(journal: &Value) -> String {
    use base64::Engine as _;
    let mut text = journal.to_string();
    for call in journal["calls"].as_array().into_iter().flatten() {
        if let Some(body) = call["response"]["body"].as_str() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(body)
                .expect("a base64 body");
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    text
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        max_instances: 4,
        outbound: OutboundConfig {
            allow_private: true,
            ..OutboundConfig::default()
        },
        ..RuntimeConfig::default()
    })
    .expect("runtime starts")
}

fn secrets() -> Arc<SecretSet> {
    Arc::new(SecretSet::new(
        ["token".to_string()],
        [(
            "token".to_string(),
            zeroize::Zeroizing::new(TOKEN.to_string()),
        )],
    ))
}

async fn probe(
    rt: &Runtime,
    guest: &str,
    url: &str,
    kv: Arc<dyn KvStore>,
    journal: JournalMode,
) -> Outcome {
    let (pack, _) = rt.load(&guest_bytes(guest)).expect("the guest loads");
    let mut request = ExecutionRequest::new("probe", json!({"url": url}));
    request.allowed_hosts =
        Arc::new(AllowedHosts::parse(&["http://127.0.0.1:*".to_string()]).unwrap());
    request.secrets = secrets();
    request.kv = KvState(Some(kv));
    request.journal = journal;
    pack.execute(rt, request).await.expect("it runs")
}

#[tokio::test]
async fn a_recorded_run_replays_identically_offline_and_the_next_versions_show_their_change() {
    let rt = runtime();
    let (port, server) = echo_server().await;
    let url = format!("http://127.0.0.1:{port}/probe");
    let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
    kv.set("counter", "41", None).await.unwrap();
    let live = probe(
        &rt,
        "replayable",
        &url,
        kv.clone(),
        JournalMode::Record { cap: DEFAULT_CAP },
    )
    .await;
    assert_eq!(live.status, Status::Succeeded, "{:?}", live.error);
    let result = live.result.clone().unwrap();
    assert_eq!(result["counter"], 42);
    assert_eq!(result["token"], true);
    let journal = live.journal.clone().expect("a journal");
    assert_eq!(journal.not_replayable, None);
    assert_eq!(journal.result, live.result);
    let kinds: Vec<&str> = journal
        .calls
        .iter()
        .map(|c| match c {
            Call::Wall { .. } => "wall",
            Call::Monotonic { .. } => "monotonic",
            Call::Http { .. } => "http",
            Call::Kv { .. } => "kv",
            Call::Secret { .. } => "secret",
        })
        .collect();
    for kind in ["wall", "monotonic", "http", "kv", "secret"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let text = readable(&serde_json::to_value(&journal).unwrap());
    assert!(text.contains("Bearer ******** | token=********"), "{text}");
    assert!(
        !text.contains(TOKEN),
        "no secret value in the journal: {text}"
    );

    // The world moves on: the server is gone and the counter changed.
    server.abort();
    kv.set("counter", "1000", None).await.unwrap();
    let replay = |guest: &'static str| {
        let journal = Arc::new(journal.clone());
        let (rt, url) = (&rt, url.clone());
        async move {
            let blank: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
            probe(rt, guest, &url, blank, JournalMode::Replay(journal)).await
        }
    };
    let same = replay("replayable").await;
    assert_eq!(same.divergence, None);
    assert_eq!((same.status, &same.result), (live.status, &live.result));
    assert_eq!(kv.get("counter").await, Ok(Some("1000".into())), "no write");

    let extra = replay("replayable_extra").await;
    assert_eq!(extra.divergence, None);
    let mut expected = result.clone();
    expected["extra"] = json!("next");
    assert_eq!(extra.result, Some(expected), "one more field");

    let moved = replay("replayable_moved").await;
    let divergence = moved.divergence.expect("a divergence");
    assert!(
        divergence.expected.contains("POST http://127.0.0.1"),
        "{divergence:?}"
    );
    assert!(divergence.expected.contains("/probe?t="), "{divergence:?}");
    assert!(divergence.got.contains("/probe/moved?t="), "{divergence:?}");
    assert!(divergence.expected.contains("********"), "{divergence:?}");
    assert_eq!(moved.status, Status::Failed);
}

#[tokio::test]
async fn a_journal_past_its_cap_marks_the_run_not_replayable() {
    let rt = runtime();
    let (port, _server) = echo_server().await;
    let url = format!("http://127.0.0.1:{port}/probe");
    let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
    let o = probe(
        &rt,
        "replayable",
        &url,
        kv,
        JournalMode::Record { cap: 200 },
    )
    .await;
    assert_eq!(o.status, Status::Succeeded, "{:?}", o.error);
    let journal: Journal = o.journal.unwrap();
    assert!(journal.calls.is_empty());
    let why = journal.not_replayable.expect("a reason");
    assert!(why.contains("cap of 200 bytes"), "{why}");
}

#[tokio::test]
async fn a_run_not_recording_keeps_no_journal() {
    let rt = runtime();
    let (port, _server) = echo_server().await;
    let url = format!("http://127.0.0.1:{port}/probe");
    let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
    let o = probe(&rt, "replayable", &url, kv, JournalMode::Off).await;
    assert_eq!(o.status, Status::Succeeded, "{:?}", o.error);
    assert!(o.journal.is_none());
    assert_eq!(
        o.result.as_ref().map(|r| r["counter"].clone()),
        Some(Value::from(1))
    );
}

/// A pack archive of the probe guest `guest` as `replayable` `version`,
/// granted loopback and the secret `token`; `extra` adds manifest lines.
fn probe_pack(guest: &str, version: &str, extra: &str) -> Vec<u8> {
    let manifest = format!(
        "name = \"replayable\"\nversion = \"{version}\"\ncomponents = [\"replayable.wasm\"]\n\
         allowed_outbound_hosts = [\"http://127.0.0.1:*\"]\nsecrets = [\"token\"]\n{extra}"
    );
    support::tar_gz(&[
        ("pack.toml", manifest.as_bytes()),
        ("replayable.wasm", &guest_bytes(guest)),
    ])
}

async fn probe_on(s: &TestServer, url: &str) -> Value {
    let r = s
        .post(
            "/api/v1/executions",
            json!({"action": "replayable.probe", "params": {"url": url}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    s.ended(r.body["id"].as_i64().unwrap()).await
}

async fn replay_on(s: &TestServer, id: i64, token: &str, body: Option<Value>) -> support::Reply {
    let mut rb = s.request(
        reqwest::Method::POST,
        &format!("/api/v1/executions/{id}/replay"),
        Some(token),
    );
    if let Some(body) = body {
        rb = rb.json(&body);
    }
    s.send(rb).await
}

on_both_backends! {
    async fn an_execution_replays_identically_after_the_world_moved_on_and_against_later_versions(backend) {
        let (port, server) = echo_server().await;
        let url = format!("http://127.0.0.1:{port}/probe");
        let s = TestServer::start(backend).await;
        let r = s.upload_archive(probe_pack("replayable", "0.1.0", "")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let r = s.put("/api/v1/secrets/token", json!({"value": TOKEN})).await;
        assert!(r.status.is_success(), "{}", r.body);

        let first = probe_on(&s, &url).await;
        assert_eq!(first["status"], "succeeded", "{first}");
        assert_eq!(first["result"]["counter"], 1);
        let id = first["id"].as_i64().unwrap();
        // The world moves on: the counter changes and the server goes away.
        let second = probe_on(&s, &url).await;
        assert_eq!(second["result"]["counter"], 2);
        server.abort();

        let stored = s.core.storage.journal(id).await.unwrap().expect("a journal");
        assert_eq!(stored.not_replayable, None);
        let text = readable(&stored.journal);
        assert!(text.contains("token=********"), "{text}");
        assert!(!text.contains(TOKEN), "no secret value in the journal: {text}");

        let operator = s.token("operator").await;
        let same = replay_on(&s, id, &operator, None).await;
        assert_eq!(same.status, StatusCode::OK, "{}", same.body);
        assert_eq!(same.body["identical"], true, "{}", same.body);
        assert_eq!(same.body["result"], first["result"]);
        assert_eq!(same.body["original_result"], first["result"]);
        assert_eq!(same.body["divergence"], Value::Null);
        assert_eq!(s.get("/api/v1/executions?action=replayable.probe").await.body["items"]
            .as_array().unwrap().len(), 2, "a replay records no execution");

        let viewer = s.token("viewer").await;
        let r = replay_on(&s, id, &viewer, None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);

        // The next version returns one more field.
        let r = s.upload_archive(probe_pack("replayable_extra", "0.2.0", "")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let next = replay_on(&s, id, &operator, Some(json!({"pack_version": "0.2.0"}))).await;
        assert_eq!(next.status, StatusCode::OK, "{}", next.body);
        assert_eq!(next.body["identical"], false, "{}", next.body);
        assert_eq!(next.body["divergence"], Value::Null);
        assert_eq!(next.body["result"]["extra"], "next");
        assert_eq!(next.body["original_result"], first["result"]);
        // The recorded version stays replayable after the upgrade.
        let again = replay_on(&s, id, &operator, Some(json!({"pack_version": "0.1.0"}))).await;
        assert_eq!(again.body["identical"], true, "{}", again.body);
        let again = replay_on(&s, id, &operator, None).await;
        assert_eq!(again.body["identical"], true, "{}", again.body);

        // A version calling another URL diverges at that call.
        let r = s.upload_archive(probe_pack("replayable_moved", "0.3.0", "")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let moved = replay_on(&s, id, &operator, Some(json!({"pack_version": "0.3.0"}))).await;
        assert_eq!(moved.body["identical"], false, "{}", moved.body);
        let d = &moved.body["divergence"];
        assert!(d["expected"].as_str().unwrap().contains("/probe?t=********"), "{d}");
        assert!(d["got"].as_str().unwrap().contains("/probe/moved?t=********"), "{d}");
        assert!(d["call"].as_u64().unwrap() >= 1, "{d}");
        assert!(!moved.body.to_string().contains(TOKEN));

        let r = replay_on(&s, id, &operator, Some(json!({"pack_version": "9.9.9"}))).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
        let r = replay_on(&s, id, &operator, Some(json!({"version": "0.2.0"}))).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "unknown fields: {}", r.body);
        let r = replay_on(&s, 999_999, &operator, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
        // A deleted pack's versions go with it: nothing of it runs again.
        assert_eq!(s.delete("/api/v1/packs/replayable").await.status, StatusCode::NO_CONTENT);
        let r = replay_on(&s, id, &operator, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
        let r = replay_on(&s, id, &operator, Some(json!({"pack_version": "0.2.0"}))).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
        s.finish().await;
    }

    async fn record_false_keeps_no_journal_and_a_journal_past_the_cap_is_not_replayable(backend) {
        let (port, _server) = echo_server().await;
        let url = format!("http://127.0.0.1:{port}/probe");
        let s = TestServer::start_full(backend, Default::default(), support::PipelineConfig {
            journal_cap: 300,
            ..Default::default()
        }).await;
        let r = s.upload_archive(probe_pack("replayable", "0.1.0", "record = false\n")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let quiet = probe_on(&s, &url).await;
        assert_eq!(quiet["status"], "succeeded", "{quiet}");
        let id = quiet["id"].as_i64().unwrap();
        assert!(s.core.storage.journal(id).await.unwrap().is_none());
        let r = replay_on(&s, id, &s.token("operator").await, None).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("record = false"), "{}", r.body);

        let r = s.upload_archive(probe_pack("replayable", "0.2.0", "")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let big = probe_on(&s, &url).await;
        assert_eq!(big["status"], "succeeded", "{big}");
        let id = big["id"].as_i64().unwrap();
        let stored = s.core.storage.journal(id).await.unwrap().expect("a journal row");
        let why = stored.not_replayable.expect("past the cap");
        assert!(why.contains("cap of 300 bytes"), "{why}");
        let r = replay_on(&s, id, &s.token("operator").await, None).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("not replayable"), "{}", r.body);
        s.finish().await;
    }
}

/// POSTs `body` to `path` with `token`.
async fn post_as(s: &TestServer, token: &str, path: &str, body: Value) -> support::Reply {
    s.send(
        s.request(reqwest::Method::POST, path, Some(token))
            .json(&body),
    )
    .await
}

on_both_backends! {
    async fn a_worker_s_journal_is_bounded_and_cannot_make_a_replay_run_other_code(backend) {
        let pipeline = support::PipelineConfig {
            embedded_worker: false,
            journal_cap: 1000,
            ..Default::default()
        };
        let s = TestServer::start_full(backend, Default::default(), pipeline).await;
        let caps = attune_engine::worker::capabilities();
        let token = s.token("worker").await;
        let worker = post_as(&s, &token, "/api/v1/workers", json!({"name": "w", "capabilities": caps}))
            .await.body["id"].as_i64().unwrap();
        let mut ids = Vec::new();
        for _ in 0..2 {
            let r = s.post("/api/v1/executions", json!({"action": "core.noop", "params": {}})).await;
            ids.push(r.body["id"].as_i64().unwrap());
        }
        let claimed = post_as(&s, &token, &format!("/api/v1/workers/{worker}/claim?max=2&wait_ms=5000"), json!({})).await;
        let assignments = claimed.body.as_array().unwrap().clone();
        assert_eq!(assignments.len(), 2, "{}", claimed.body);
        assert_eq!(assignments[0]["journal_cap"], 1000, "the assignment asks for a journal");
        let journal = |component: &str, padding: usize| json!({
            "format": 1, "action": "noop", "component": component, "params": {"pad": "x".repeat(padding)},
            "seed": "00", "calls": [], "status": "succeeded", "result": "forged",
        });
        let real = assignments[0]["component"].as_str().unwrap();
        let reports = json!([
            {"id": ids[0], "status": "succeeded", "result": null, "attempt": 1, "journal": journal(real, 5 << 20)},
            {"id": ids[1], "status": "succeeded", "result": null, "attempt": 1, "journal": journal(&"0".repeat(64), 0)},
        ]);
        let r = post_as(&s, &token, &format!("/api/v1/workers/{worker}/results"), reports).await;
        assert_eq!(r.body["recorded"], json!([true, true]), "{}", r.body);

        let big = s.core.storage.journal(ids[0]).await.unwrap().expect("kept, as not replayable");
        assert!(big.not_replayable.unwrap().contains("past this server's bound"));
        assert!(big.journal.to_string().len() < 4096, "the padding is not kept");
        let operator = s.token("operator").await;
        let r = replay_on(&s, ids[0], &operator, None).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        // A component that was never this action's does not run.
        let r = replay_on(&s, ids[1], &operator, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
        s.finish().await;
    }
}
