//! The event pipeline end to end through a real server, on SQLite and
//! PostgreSQL: timers, rules, templating, enforcements, the embedded worker,
//! leases, retries, timeouts, cancellation and restarts.

use std::time::Duration;

use attune_storage::{ExecutionFilter, ExecutionRecord, Page};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{PipelineConfig, TestServer, guest_bytes, on_both_backends, wait_for};

const WAIT: Duration = Duration::from_secs(20);

fn no_worker() -> PipelineConfig {
    PipelineConfig {
        embedded_worker: false,
        ..PipelineConfig::default()
    }
}

async fn executions_of_rule(s: &TestServer, rule: &str) -> Vec<ExecutionRecord> {
    let filter = ExecutionFilter {
        rule: Some(rule.into()),
        ..Default::default()
    };
    let page = Page {
        limit: Some(500),
        after: None,
    };
    s.core
        .storage
        .list_executions(&filter, &page)
        .await
        .unwrap()
}

async fn execution_params(s: &TestServer, id: i64) -> Value {
    execution(s, id).await["params"].clone()
}

async fn execution(s: &TestServer, id: i64) -> Value {
    s.get(&format!("/api/v1/executions/{id}")).await.body
}

/// RFC 3339 time `ms` from now.
fn chrono_now_plus(ms: i64) -> String {
    let t = std::time::SystemTime::now() + Duration::from_millis(ms as u64);
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // Format by hand to keep the tests free of a date library.
    let days = (secs / 86_400.0).floor() as i64;
    let rem = secs - days as f64 * 86_400.0;
    let (y, m, d) = civil_from_days(days);
    let h = (rem / 3600.0).floor();
    let min = ((rem - h * 3600.0) / 60.0).floor();
    let sec = rem - h * 3600.0 - min * 60.0;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:06.3}Z",
        h as i64, min as i64, sec
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A server that fires no timers by itself, so a test can fire them by hand.
async fn server_without_ticks(backend: support::Backend) -> TestServer {
    let pipeline = PipelineConfig {
        timers: false,
        ..no_worker()
    };
    TestServer::start_full(backend, Default::default(), pipeline).await
}

fn interval_rule(r#ref: &str, every: &str, message: &str) -> Value {
    json!({
        "ref": r#ref,
        "trigger": "core.interval",
        "trigger_params": {"every": every},
        "action": "core.echo",
        "action_params": {"message": message},
    })
}

async fn fire(s: &TestServer, payload: Value) -> i64 {
    let r = s
        .post(
            "/api/v1/events",
            json!({"trigger": "core.manual", "payload": payload}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_i64().unwrap()
}

/// Teaches an 8-slot embedded worker that its actions are quick, fills every
/// slot with a 3-second sleep, then queues an echo, which the worker marks
/// running ahead of a free slot. Returns the sleepers, the echo and the
/// echo's record once marked.
async fn marked_ahead_of_busy_slots(s: &TestServer) -> (Vec<i64>, i64, Value) {
    let post = |body: Value| async move {
        s.post("/api/v1/executions", body).await.body["id"]
            .as_i64()
            .unwrap()
    };
    let mut quick = Vec::new();
    for _ in 0..20 {
        quick.push(post(json!({"action": "core.noop"})).await);
    }
    for id in quick {
        s.ended(id).await;
    }
    let mut sleepers = Vec::new();
    for _ in 0..8 {
        sleepers.push(post(json!({"action": "core.sleep", "params": {"seconds": 3}})).await);
    }
    for id in &sleepers {
        wait_for(WAIT, || async {
            (execution(s, *id).await["status"] == "running").then_some(())
        })
        .await
        .expect("sleeping");
    }
    let waiting = post(json!({"action": "core.echo", "params": {"message": "never"}})).await;
    let marked = wait_for(Duration::from_secs(2), || async {
        let e = execution(s, waiting).await;
        (e["status"] == "running").then_some(e)
    })
    .await
    .expect("marked running while every slot was busy");
    for id in &sleepers {
        assert_eq!(
            execution(s, *id).await["status"],
            "running",
            "a slot was free"
        );
    }
    (sleepers, waiting, marked)
}

on_both_backends! {
    async fn a_timer_runs_echo_and_hello_world_lands_in_stdout(backend) {
        let s = TestServer::start(backend).await;
        // A fresh installation has the hello-world rule.
        let hello = s.get("/api/v1/rules/core.timer_echo_10s").await;
        assert_eq!(hello.body["action_params"], json!({"message": "hello, world"}));
        let r = s.post("/api/v1/rules", interval_rule("core.fast_hello", "200ms", "hello, world")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert!(r.body["warnings"].as_array().unwrap().is_empty(), "the embedded worker serves core: {}", r.body);
        let done = wait_for(WAIT, || async {
            executions_of_rule(&s, "core.fast_hello").await.into_iter().find(|e| e.status.as_str() == "succeeded")
        })
        .await
        .expect("the timer rule ran");
        assert_eq!(done.stdout.as_deref(), Some("hello, world\n"));
        assert_eq!(done.result, Some(json!("hello, world")));
        assert!(done.enforcement.is_some());
        assert!(done.worker.is_some());
        assert!(done.started_at.unwrap() >= done.scheduled_at.unwrap());
        assert!(done.finished_at.unwrap() >= done.started_at.unwrap());
        assert_eq!(done.queued_ms, Some(done.started_at.unwrap() - done.created_at));
        assert_eq!(done.running_ms, Some(done.finished_at.unwrap() - done.started_at.unwrap()));
        s.finish().await;
    }

    async fn rules_on_one_trigger_type_fire_at_their_own_rates(backend) {
        let s = TestServer::start(backend).await;
        s.post("/api/v1/rules", interval_rule("core.every_200ms", "200ms", "fast")).await;
        s.post("/api/v1/rules", interval_rule("core.every_700ms", "700ms", "slow")).await;
        tokio::time::sleep(Duration::from_millis(2200)).await;
        s.post("/api/v1/rules/core.every_200ms/disable", json!({})).await;
        s.post("/api/v1/rules/core.every_700ms/disable", json!({})).await;
        let fast = executions_of_rule(&s, "core.every_200ms").await;
        let slow = executions_of_rule(&s, "core.every_700ms").await;
        assert!(slow.len() >= 2, "slow fired {} times", slow.len());
        assert!(fast.len() >= 2 * slow.len(), "fast {} vs slow {}", fast.len(), slow.len());
        assert!(fast.iter().all(|e| e.params == json!({"message": "fast"})));
        assert!(slow.iter().all(|e| e.params == json!({"message": "slow"})));
        // Disabled rules stop firing.
        let before = executions_of_rule(&s, "core.every_200ms").await.len();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(executions_of_rule(&s, "core.every_200ms").await.len(), before);
        s.finish().await;
    }

    async fn cron_and_once_rules_fire_on_their_schedule(backend) {
        let s = TestServer::start(backend).await;
        let r = s.post("/api/v1/rules", json!({
            "ref": "core.every_second", "trigger": "core.cron",
            "trigger_params": {"expression": "* * * * * *", "timezone": "Europe/Paris"},
            "action": "core.echo", "action_params": {"message": "cron {{ event.payload.count }}"},
        })).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let at = chrono_now_plus(800);
        let r = s.post("/api/v1/rules", json!({
            "ref": "core.just_once", "trigger": "core.once", "trigger_params": {"at": at},
            "action": "core.echo", "action_params": {"message": "once"},
        })).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        wait_for(WAIT, || async {
            (executions_of_rule(&s, "core.every_second").await.iter().filter(|e| e.status.as_str() == "succeeded").count() >= 2).then_some(())
        }).await.expect("the cron rule fired twice");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let once = executions_of_rule(&s, "core.just_once").await;
        assert_eq!(once.len(), 1, "a one-shot fires exactly once");
        assert!(s.core.storage.timer_state("core.just_once").await.unwrap().is_none());
        s.post("/api/v1/rules/core.every_second/disable", json!({})).await;

        let bad = s.post("/api/v1/rules", json!({
            "ref": "core.bad_cron", "trigger": "core.cron",
            "trigger_params": {"expression": "whenever", "timezone": "Nowhere/Special"},
            "action": "core.echo", "action_params": {"message": "x"},
        })).await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(bad.detail_paths(), ["/trigger_params/expression"]);
        s.finish().await;
    }

    async fn timers_faster_than_the_minimum_interval_are_refused(backend) {
        let s = TestServer::start_full(backend, Default::default(), PipelineConfig {
            min_interval: Duration::from_secs(2),
            ..PipelineConfig::default()
        }).await;
        let r = s.post("/api/v1/rules", interval_rule("core.too_fast", "500ms", "x")).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(r.detail_paths(), ["/trigger_params/every"]);
        let huge = s.post("/api/v1/rules", interval_rule("core.huge", "9999999999999h", "x")).await;
        assert_eq!(huge.status, StatusCode::UNPROCESSABLE_ENTITY, "a duration past i64 ms is refused, not wrapped: {}", huge.body);
        assert_eq!(huge.detail_paths(), ["/trigger_params/every"]);
        let ok = s.post("/api/v1/rules", interval_rule("core.fine", "2s", "x")).await;
        assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
        s.finish().await;
    }

    async fn after_downtime_misfire_fires_once_or_skips(backend) {
        let s = server_without_ticks(backend).await;
        for (r#ref, misfire) in [("core.catch_up", "fire_once"), ("core.skip_missed", "skip")] {
            let r = s.post("/api/v1/rules", json!({
                "ref": r#ref, "trigger": "core.interval",
                "trigger_params": {"every": "1h", "misfire": misfire},
                "action": "core.noop",
            })).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
            // As if the server had been down for five ticks.
            let five_hours_ago = attune_storage::now_ms() - 5 * 3_600_000 - 1000;
            s.core.storage.set_timer_next(r#ref, five_hours_ago).await.unwrap();
        }
        let fired = s.core.storage.fire_due_timers(10).await.unwrap();
        let rules: Vec<&str> = fired.iter().map(|t| t.rule.as_str()).collect();
        assert_eq!(rules, ["core.catch_up"], "fire_once fires one tick, skip fires none");
        assert_eq!(fired[0].payload["missed"], 5);
        let (next, count, skipped) = s.core.storage.timer_state("core.catch_up").await.unwrap().unwrap();
        assert_eq!((count, skipped), (1, 5));
        assert!(next > attune_storage::now_ms());
        let (next, count, skipped) = s.core.storage.timer_state("core.skip_missed").await.unwrap().unwrap();
        assert_eq!((count, skipped), (0, 6));
        assert!(next > attune_storage::now_ms());
        // Nothing more is due: no tick fires twice.
        assert!(s.core.storage.fire_due_timers(10).await.unwrap().is_empty());
        s.finish().await;
    }

    async fn retention_prunes_old_events_and_finished_executions_only(backend) {
        let s = TestServer::start_full(backend, Default::default(), no_worker()).await;
        let old_event = fire(&s, json!({"old": true})).await;
        let done = s.post("/api/v1/executions", json!({"action": "core.noop"})).await.body["id"].as_i64().unwrap();
        s.post(&format!("/api/v1/executions/{done}/cancel"), json!({})).await;
        let queued = s.post("/api/v1/executions", json!({"action": "core.noop"})).await.body["id"].as_i64().unwrap();
        // Everything above is older than a cutoff one second ahead.
        let (executions, events) = s.core.storage.prune(attune_storage::now_ms() + 1000).await.unwrap();
        assert_eq!((executions, events), (1, 1));
        assert_eq!(s.get(&format!("/api/v1/events/{old_event}")).await.status, StatusCode::NOT_FOUND);
        assert_eq!(s.get(&format!("/api/v1/executions/{done}")).await.status, StatusCode::NOT_FOUND);
        assert_eq!(execution(&s, queued).await["status"], "requested", "unfinished work is kept");
        s.finish().await;
    }

    async fn output_streams_while_the_action_runs(backend) {
        let s = TestServer::start(backend).await;
        assert_eq!(s.upload_component("hostile", "1", guest_bytes("hostile")).await.status, StatusCode::CREATED);
        let r = s.post("/api/v1/executions", json!({"action": "hostile.drip", "params": {"lines": 4, "ms": 300}})).await;
        let id = r.body["id"].as_i64().unwrap();
        let response = s
            .request(reqwest::Method::GET, &format!("/api/v1/executions/{id}/output"), Some(&s.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let text = response.text().await.unwrap();
        let chunks = text.matches("event: stdout").count();
        assert!(chunks >= 2, "output should arrive in pieces while running:\n{text}");
        for i in 0..4 {
            assert!(text.contains(&format!("line {i}")), "{text}");
        }
        assert!(text.contains("event: end"), "{text}");
        assert!(text.contains("\"status\":\"succeeded\""), "{text}");
        // A finished execution replays its output and ends at once.
        let again = s.request(reqwest::Method::GET, &format!("/api/v1/executions/{id}/output"), Some(&s.admin))
            .send().await.unwrap().text().await.unwrap();
        assert!(again.contains("line 3") && again.contains("event: end"), "{again}");
        s.finish().await;
    }

    async fn manual_events_render_templates_and_respect_criteria(backend) {
        let s = TestServer::start(backend).await;
        let r = s.post("/api/v1/rules", json!({
            "ref": "core.page_on_critical",
            "trigger": "core.manual",
            "criteria": "event.payload.severity == \"critical\"",
            "action": "core.echo",
            "action_params": {"message": "{{ event.payload.host }} is down"},
        })).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        fire(&s, json!({"severity": "minor", "host": "db2"})).await;
        fire(&s, json!({"severity": "critical", "host": "db1"})).await;
        let runs = wait_for(WAIT, || async {
            let runs = executions_of_rule(&s, "core.page_on_critical").await;
            runs.iter().all(|e| e.status.as_str() == "succeeded").then_some(runs).filter(|r| !r.is_empty())
        }).await.expect("the critical event ran");
        assert_eq!(runs.len(), 1, "the minor event must not match");
        assert_eq!(runs[0].params, json!({"message": "db1 is down"}));
        assert_eq!(runs[0].stdout.as_deref(), Some("db1 is down\n"));

        // A lone expression keeps its JSON type: numbers reach an s64 parameter.
        assert_eq!(s.upload_component("types", "1", guest_bytes("types")).await.status, StatusCode::CREATED);
        let r = s.post("/api/v1/rules", json!({
            "ref": "types.sum", "trigger": "core.manual", "criteria": "event.payload.a is defined",
            "action": "types.add", "action_params": {"a": "{{ event.payload.a }}", "b": 2},
        })).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        fire(&s, json!({"a": 40})).await;
        let sum = wait_for(WAIT, || async {
            executions_of_rule(&s, "types.sum").await.into_iter().find(|e| e.status.as_str() == "succeeded")
        }).await.expect("types.add ran");
        assert_eq!(sum.params, json!({"a": 40, "b": 2}));
        assert_eq!(sum.result, Some(json!(42)));
        s.finish().await;
    }

    async fn signed_webhooks_fire_their_rule_and_bad_signatures_store_nothing(backend) {
        let s = TestServer::start(backend).await;
        let secret = "0123456789abcdef-webhook";
        let r = s.post("/api/v1/rules", json!({
            "ref": "core.on_deploy", "trigger": "core.webhook",
            "trigger_params": {"name": "deploy", "secret": secret},
            "action": "core.echo", "action_params": {"message": "deployed {{ event.payload.body.ref }}"},
        })).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let body = br#"{"ref": "v1.2.3"}"#.to_vec();
        let post = |signature: Option<String>, hook: &str, body: Vec<u8>| {
            let mut rb = s.request(reqwest::Method::POST, &format!("/api/v1/webhooks/{hook}"), None)
                .header("content-type", "application/json")
                .body(body);
            if let Some(sig) = signature {
                rb = rb.header("X-Hub-Signature-256", sig);
            }
            s.send(rb)
        };
        let bad = post(Some(attune_engine::triggers::webhook::sign("wrong-secret-wrong", &body)), "deploy", body.clone()).await;
        assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
        assert_eq!(post(None, "deploy", body.clone()).await.status, StatusCode::UNAUTHORIZED);
        let other = post(Some(attune_engine::triggers::webhook::sign(secret, &body)), "nobody", body.clone()).await;
        assert_eq!(other.status, StatusCode::UNAUTHORIZED);
        let page = Page { limit: Some(10), after: None };
        assert!(s.core.storage.list_events(Some("core.webhook"), &page).await.unwrap().is_empty(), "nothing stored");

        let ok = post(Some(attune_engine::triggers::webhook::sign(secret, &body)), "deploy", body.clone()).await;
        assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.body);
        let id = ok.body["executions"][0].as_i64().unwrap();
        let e = s.ended(id).await;
        assert_eq!(e["stdout"], "deployed v1.2.3\n");

        let huge = vec![b' '; 2 << 20];
        let r = post(Some(attune_engine::triggers::webhook::sign(secret, &huge)), "deploy", huge).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
        s.finish().await;
    }

    async fn rendered_params_that_do_not_fit_are_recorded_not_dropped(backend) {
        let s = TestServer::start(backend).await;
        s.post("/api/v1/rules", json!({
            "ref": "core.typed", "trigger": "core.manual",
            "action": "core.echo", "action_params": {"message": "{{ event.payload.n }}"},
        })).await;
        let event = fire(&s, json!({"n": 5})).await;
        let enforcements = s.core.storage.enforcements_of(event).await.unwrap();
        assert_eq!(enforcements.len(), 1);
        let (rule, status, reason, execution) = &enforcements[0];
        assert_eq!(rule, "core.typed");
        assert_eq!(status, "failed");
        assert!(reason.as_deref().unwrap().contains("/action_params/message"), "{reason:?}");
        assert!(execution.is_none());
        // An undefined value is recorded the same way.
        let event = fire(&s, json!({})).await;
        let enforcements = s.core.storage.enforcements_of(event).await.unwrap();
        assert!(enforcements[0].2.as_deref().unwrap().contains("undefined"), "{enforcements:?}");
        s.finish().await;
    }

    async fn a_runaway_template_is_recorded_and_does_not_stall_intake(backend) {
        let s = TestServer::start_full(backend, Default::default(), no_worker()).await;
        let spin = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}";
        let r = s.post("/api/v1/rules", json!({
            "ref": "core.spin", "trigger": "core.manual",
            "action": "core.echo", "action_params": {"message": spin},
        })).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let began = std::time::Instant::now();
        let event = fire(&s, json!({})).await;
        assert!(began.elapsed() < Duration::from_secs(5), "intake answered promptly: {:?}", began.elapsed());
        let enforcements = s.core.storage.enforcements_of(event).await.unwrap();
        assert_eq!(enforcements[0].1, "failed");
        assert!(enforcements[0].2.as_deref().unwrap().contains("fuel"), "{enforcements:?}");
        s.finish().await;
    }

    async fn redelivering_an_event_enforces_each_rule_once(backend) {
        let s = TestServer::start_full(backend, Default::default(), no_worker()).await;
        s.post("/api/v1/rules", json!({
            "ref": "core.once_per_event", "trigger": "core.manual",
            "action": "core.echo", "action_params": {"message": "x"},
        })).await;
        let id = fire(&s, json!({})).await;
        let event = s.core.storage.get_event(id).await.unwrap().unwrap();
        let rules = s.core.storage.enabled_rules("core.manual").await.unwrap();
        let items = attune_engine::rules::evaluate::plan(&s.core, &event, rules).await.unwrap();
        assert_eq!(items.len(), 1, "the rule matches the event again");
        let again = s.core.storage.enforce_many(&items, &[id]).await.unwrap();
        assert!(again.iter().all(Option::is_none), "a redelivered event must not create executions");
        assert_eq!(executions_of_rule(&s, "core.once_per_event").await.len(), 1);
        s.finish().await;
    }

    // Regression: the claim read a window of four candidates per wanted
    // execution and filtered by capability afterwards, so a queue headed by
    // more executions than that which the worker could not serve starved it.
    async fn a_claim_passes_over_what_the_worker_cannot_serve(backend) {
        let s = TestServer::start_full(backend, Default::default(), no_worker()).await;
        let storage = &s.core.storage;
        let worker = storage.upsert_worker("plain", &["wasi:cli/environment".to_string()], &json!({}), 1, false).await.unwrap();
        let needs = |caps: &[&str]| attune_storage::NewExecution::of(
            "core.noop", json!({}), caps.iter().map(|c| c.to_string()).collect());
        let mut runs: Vec<_> = (0..20).map(|_| needs(&["wasi:http/outgoing-handler"])).collect();
        runs.extend((0..3).map(|_| needs(&[])));
        runs.push(needs(&["wasi:cli/environment"]));
        runs.push(needs(&["wasi:cli/environment", "wasi:http/outgoing-handler"]));
        let queued: Vec<_> = storage
            .insert_executions(&runs)
            .await
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let servable: Vec<i64> = queued[20..24].iter().map(|e| e.id).collect();
        let caps = ["wasi:cli/environment".to_string()];
        // The oldest it can serve, in order, past the twenty it cannot.
        let first = storage.claim(worker.id, &caps, 2, 30_000, false).await.unwrap();
        assert_eq!(first.iter().map(|e| e.id).collect::<Vec<_>>(), servable[..2]);
        for e in &first {
            assert_eq!(e.status.as_str(), "scheduled");
            assert_eq!(e.worker, Some(worker.id));
            assert_eq!(e.started_at, None);
            let stored = storage.get_execution(e.id).await.unwrap().unwrap();
            assert_eq!(serde_json::to_value(e).unwrap(), serde_json::to_value(&stored).unwrap());
        }
        let rest = storage.claim(worker.id, &caps, 10, 30_000, true).await.unwrap();
        assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), servable[2..]);
        assert!(rest.iter().all(|e| e.status.as_str() == "running" && e.started_at.is_some()));
        assert!(storage.claim(worker.id, &caps, 10, 30_000, true).await.unwrap().is_empty());
        // Nothing it cannot serve moved.
        for e in queued[..20].iter().chain(&queued[24..]) {
            let stored = storage.get_execution(e.id).await.unwrap().unwrap();
            assert_eq!(stored.status.as_str(), "requested", "{}", e.id);
        }
        s.finish().await;
    }

    async fn what_queueing_returns_is_what_the_database_stored(backend) {
        let s = TestServer::start_full(backend, Default::default(), no_worker()).await;
        let storage = &s.core.storage;
        let stored_as = |e: &ExecutionRecord| {
            let mut v = serde_json::to_value(e).unwrap();
            v["sealed_params"] = json!(e.sealed_params);
            v
        };
        // Events: ids in the order given, fields as stored.
        let (a, b) = (json!({"n": "one"}), json!({"n": "two", "x": [2.5, null]}));
        let events = storage.insert_events(&[
            attune_storage::NewEvent { trigger: "core.manual", payload: &a, source: Some("x"), rules: None, depth: 0, held_reason: None, requested_by: Some(4) },
            attune_storage::NewEvent::of("core.manual", &b),
        ]).await.unwrap();
        assert!(events[0].id < events[1].id);
        for e in &events {
            let stored = storage.get_event(e.id).await.unwrap().unwrap();
            assert_eq!(serde_json::to_value(e).unwrap(), serde_json::to_value(&stored).unwrap());
        }
        // Direct runs, plain and not, in one batch.
        let plain = attune_storage::NewExecution::of("core.echo", json!({"message": "plain"}), vec![]);
        let full = attune_storage::NewExecution {
            status_reason: Some("waiting".into()),
            max_attempts: 3,
            timeout_ms: Some(1500),
            sealed_params: Some(vec![1, 2, 3]),
            not_before: attune_storage::now_ms() + 3_600_000,
            source: Some("mcp".into()),
            capabilities: vec!["wasi:http/outgoing-handler".into()],
            ..attune_storage::NewExecution::of("core.echo", json!({"message": "full"}), vec![])
        };
        let runs: Vec<_> = storage
            .insert_executions(&[plain.clone(), full, plain])
            .await
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(runs.len(), 3);
        assert!(runs[0].id < runs[1].id && runs[1].id < runs[2].id, "in the order given");
        for e in &runs {
            let stored = storage.get_execution(e.id).await.unwrap().unwrap();
            assert_eq!(stored_as(e), stored_as(&stored));
        }
        // Enforcements: a batch of new ones, then one that mixes an event
        // enforced already with a new one (its first write rolls back).
        s.post("/api/v1/rules", json!({
            "ref": "core.stored_as_returned", "trigger": "core.manual",
            "action": "core.echo", "action_params": {"message": "{{ event.payload.n }}"},
        })).await;
        let rules = storage.enabled_rules("core.manual").await.unwrap();
        let mut items = Vec::new();
        for e in &events {
            items.extend(attune_engine::rules::evaluate::plan(&s.core, e, rules.clone()).await.unwrap());
        }
        assert_eq!(items.len(), 2);
        let first = storage.enforce_many(&items[..1], &[events[0].id]).await.unwrap();
        let queued = storage.enforce_many(&items, &[events[0].id, events[1].id]).await.unwrap();
        assert!(queued[0].is_none(), "the event enforced already queues nothing again");
        for e in [first[0].as_ref().unwrap(), queued[1].as_ref().unwrap()] {
            let stored = storage.get_execution(e.id).await.unwrap().unwrap();
            assert_eq!(stored_as(e), stored_as(&stored));
            assert!(e.enforcement.is_some() && e.rule.as_deref() == Some("core.stored_as_returned"));
        }
        assert_eq!(executions_of_rule(&s, "core.stored_as_returned").await.len(), 2);
        s.finish().await;
    }

    async fn events_stored_without_their_enforcements_are_enforced_once_by_the_reconciler(backend) {
        let s = TestServer::start_full(backend, Default::default(), no_worker()).await;
        for r#ref in ["core.all", "core.other"] {
            let r = s.post("/api/v1/rules", json!({
                "ref": r#ref, "trigger": "core.manual", "action": "core.echo", "action_params": {"message": r#ref},
            })).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        }
        // Acknowledged and enforced at once: nothing for the reconciler.
        fire(&s, json!({})).await;
        assert_eq!(attune_engine::ingest::reconcile(&s.core, Duration::ZERO).await.unwrap(), 0);
        // Stored, then a crash before the enforcements: one event for every
        // rule, one addressed to `core.other` only (as a webhook's or a
        // timer's event is).
        let payload = json!({});
        let only = vec!["core.other".to_string()];
        let stored = s.core.storage.insert_events(&[
            attune_storage::NewEvent::of("core.manual", &payload),
            attune_storage::NewEvent { trigger: "core.manual", payload: &payload, source: None, rules: Some(&only), depth: 0, held_reason: None, requested_by: None },
        ]).await.unwrap();
        assert_eq!(executions_of_rule(&s, "core.all").await.len(), 1);
        assert_eq!(attune_engine::ingest::reconcile(&s.core, Duration::ZERO).await.unwrap(), 2);
        assert_eq!(executions_of_rule(&s, "core.all").await.len(), 2, "the crashed event reached every rule");
        assert_eq!(executions_of_rule(&s, "core.other").await.len(), 3, "and the addressed one only its rule");
        assert_eq!(attune_engine::ingest::reconcile(&s.core, Duration::ZERO).await.unwrap(), 0, "once");
        let of = |n: usize| stored[n].id;
        for n in [0, 1] {
            let shown = s.get(&format!("/api/v1/events/{}", of(n))).await;
            assert_eq!(shown.status, StatusCode::OK);
        }
        s.finish().await;
    }

    async fn events_and_their_enforcements_are_stored_in_one_transaction(backend) {
        let s = TestServer::start_full(backend, Default::default(), no_worker()).await;
        let r = s.post("/api/v1/rules", json!({
            "ref": "core.together", "trigger": "core.manual",
            "action": "core.echo", "action_params": {"message": "event {{ event.id }}"},
        })).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let storage = &s.core.storage;
        let rules = storage.enabled_rules("core.manual").await.unwrap();
        let payload = json!({"n": 1});
        let new = [
            attune_storage::NewEvent { trigger: "core.manual", payload: &payload, source: Some("x"), rules: None, depth: 0, held_reason: None, requested_by: None },
            attune_storage::NewEvent::of("core.manual", &payload),
        ];
        // The plan sees the events with their ids, within the transaction.
        let core = &s.core;
        let (events, queued) = storage.record_events(&new, |records| async move {
            let mut items = Vec::new();
            for e in &records {
                items.extend(attune_engine::rules::evaluate::plan(core, e, rules.clone()).await.unwrap());
            }
            (records, Ok::<_, String>(items))
        }).await.unwrap();
        let queued = queued.unwrap();
        assert_eq!(queued.len(), 2);
        for ((event, execution), e) in queued.iter().zip(&events) {
            assert_eq!(*event, e.id);
            assert_eq!(execution.params["message"], json!(format!("event {}", e.id)));
            let stored = storage.get_execution(execution.id).await.unwrap().unwrap();
            assert_eq!(serde_json::to_value(execution).unwrap(), serde_json::to_value(&stored).unwrap());
            let shown = storage.get_event(e.id).await.unwrap().unwrap();
            assert_eq!(serde_json::to_value(e).unwrap(), serde_json::to_value(&shown).unwrap());
        }
        assert_eq!(attune_engine::ingest::reconcile(&s.core, Duration::ZERO).await.unwrap(), 0, "nothing left unjudged");
        // A plan that fails keeps its events, unjudged, for the reconciler.
        let (kept, failed) = storage.record_events(&new[..1], |records| async move {
            (records, Err::<Vec<attune_storage::NewEnforcement>, _>("no enforcements".to_string()))
        }).await.unwrap();
        assert_eq!(failed.unwrap_err(), "no enforcements");
        assert!(storage.get_event(kept[0].id).await.unwrap().is_some());
        assert_eq!(executions_of_rule(&s, "core.together").await.len(), 2);
        assert_eq!(attune_engine::ingest::reconcile(&s.core, Duration::ZERO).await.unwrap(), 1);
        assert_eq!(executions_of_rule(&s, "core.together").await.len(), 3);
        s.finish().await;
    }

    async fn events_posted_at_once_are_batched_and_each_keeps_its_own_executions(backend) {
        let s = TestServer::start_full(backend, Default::default(), no_worker()).await;
        for (r#ref, criteria) in [("core.every_event", "true"), ("core.even_only", "event.payload.n % 2 == 0")] {
            let r = s.post("/api/v1/rules", json!({
                "ref": r#ref, "trigger": "core.manual", "criteria": criteria,
                "action": "core.echo", "action_params": {"message": "n={{ event.payload.n }}"},
            })).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        }
        // Far more requests at once than one write: they share batches.
        let posted = futures_util::future::join_all((0..120).map(|n| {
            let s = &s;
            async move {
                let r = s.post("/api/v1/events", json!({"trigger": "core.manual", "payload": {"n": n}})).await;
                assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
                (n, r.body)
            }
        })).await;
        let mut ids = std::collections::HashSet::new();
        for (n, event) in &posted {
            assert_eq!(event["payload"], json!({"n": n}), "each request gets its own event back");
            let id = event["id"].as_i64().unwrap();
            assert!(ids.insert(id), "event ids are distinct");
            let stored = s.core.storage.get_event(id).await.unwrap().unwrap();
            assert_eq!(stored.payload, json!({"n": n}));
            let enforcements = s.core.storage.enforcements_of(id).await.unwrap();
            let rules: Vec<&str> = enforcements.iter().map(|e| e.0.as_str()).collect();
            let expected: &[&str] = if n % 2 == 0 { &["core.every_event", "core.even_only"] } else { &["core.every_event"] };
            assert_eq!(rules.len(), expected.len(), "event {n}: {enforcements:?}");
            for (rule, status, _, execution) in &enforcements {
                assert!(expected.contains(&rule.as_str()), "{rule}");
                assert_eq!(status, "enforced");
                let e = execution.expect("an execution per enforcement");
                assert_eq!(execution_params(&s, e).await, json!({"message": format!("n={n}")}));
            }
        }
        assert_eq!(executions_of_rule(&s, "core.every_event").await.len(), 120);
        assert_eq!(executions_of_rule(&s, "core.even_only").await.len(), 60);
        let batches = s.core.metrics.event_batches.get();
        assert!(batches < 120, "120 concurrent events took {batches} writes");
        s.finish().await;
    }

    async fn concurrent_signed_webhooks_share_writes_and_each_gets_its_own_event_and_execution(backend) {
        let s = TestServer::start_full(backend, Default::default(), no_worker()).await;
        let (ours, theirs) = ("ours-secret-ours-secret", "theirs-secret-theirs");
        for (r#ref, secret) in [("core.hook_ours", ours), ("core.hook_theirs", theirs)] {
            let r = s.post("/api/v1/rules", json!({
                "ref": r#ref, "trigger": "core.webhook",
                "trigger_params": {"name": "shared", "secret": secret},
                "action": "core.echo", "action_params": {"message": "n={{ event.payload.body.n }}"},
            })).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        }
        let before = s.core.metrics.event_batches.get();
        let delivered = futures_util::future::join_all((0..60).map(|n| {
            let s = &s;
            async move {
                let body = json!({"n": n}).to_string().into_bytes();
                let rb = s.request(reqwest::Method::POST, "/api/v1/webhooks/shared", None)
                    .header("content-type", "application/json")
                    .header("X-Hub-Signature-256", attune_engine::triggers::webhook::sign(ours, &body))
                    .body(body);
                let r = s.send(rb).await;
                assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
                (n, r.body)
            }
        })).await;
        let mut events = std::collections::HashSet::new();
        for (n, delivery) in &delivered {
            let id = delivery["event"].as_i64().unwrap();
            assert!(events.insert(id), "each delivery gets its own event");
            let stored = s.core.storage.get_event(id).await.unwrap().unwrap();
            assert_eq!(stored.payload["body"], json!({"n": n}));
            assert_eq!(stored.source.as_deref(), Some("shared"));
            let executions = delivery["executions"].as_array().unwrap();
            assert_eq!(executions.len(), 1, "only the rule whose secret signed it: {delivery}");
            let e = executions[0].as_i64().unwrap();
            assert_eq!(execution_params(&s, e).await, json!({"message": format!("n={n}")}));
        }
        assert_eq!(executions_of_rule(&s, "core.hook_ours").await.len(), 60);
        assert!(executions_of_rule(&s, "core.hook_theirs").await.is_empty(), "a rule whose secret did not sign sees nothing");
        let batches = s.core.metrics.event_batches.get() - before;
        assert!(batches < 60, "60 concurrent deliveries took {batches} writes");
        s.finish().await;
    }

    async fn concurrent_direct_runs_share_writes_and_each_gets_its_own_execution(backend) {
        let s = TestServer::start_full(backend, Default::default(), no_worker()).await;
        let before = s.core.metrics.event_batches.get();
        let runs = futures_util::future::join_all((0..100).map(|n| {
            let s = &s;
            async move {
                let r = s.post("/api/v1/executions", json!({"action": "core.echo", "params": {"message": format!("run {n}")}})).await;
                assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
                (n, r.body)
            }
        })).await;
        let mut ids = std::collections::HashSet::new();
        for (n, e) in &runs {
            let id = e["id"].as_i64().unwrap();
            assert!(ids.insert(id), "execution ids are distinct");
            assert_eq!(e["params"], json!({"message": format!("run {n}")}), "each request gets its own execution back");
            assert_eq!(e["status"], "requested");
            assert_eq!(execution_params(&s, id).await, json!({"message": format!("run {n}")}));
        }
        let batches = s.core.metrics.event_batches.get() - before;
        assert!(batches < 100, "100 concurrent runs took {batches} writes");
        s.finish().await;
    }

    async fn the_rule_test_endpoint_is_a_dry_run(backend) {
        let s = TestServer::start(backend).await;
        s.post("/api/v1/rules", json!({
            "ref": "core.dry", "trigger": "core.manual", "criteria": "event.payload.n > 1",
            "action": "core.echo", "action_params": {"message": "n is {{ event.payload.n }}"},
        })).await;
        let r = s.post("/api/v1/rules/core.dry/test", json!({"payload": {"n": 3}})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["matched"], true);
        assert_eq!(r.body["params"], json!({"message": "n is 3"}));
        let r = s.post("/api/v1/rules/core.dry/test", json!({"payload": {"n": 0}})).await;
        assert_eq!(r.body["matched"], false);
        let r = s.post("/api/v1/rules/core.dry/test", json!({"payload": {}})).await;
        assert!(!r.body["errors"].as_array().unwrap().is_empty(), "{}", r.body);
        assert!(executions_of_rule(&s, "core.dry").await.is_empty());
        assert!(s.get("/api/v1/events").await.body["items"].as_array().unwrap().is_empty());
        s.finish().await;
    }

    async fn timeouts_end_as_timed_out_and_cancel_interrupts_a_running_guest(backend) {
        let s = TestServer::start(backend).await;
        let r = s.post("/api/v1/executions", json!({"action": "core.sleep", "params": {"seconds": 30}, "timeout": "300ms"})).await;
        let e = s.ended(r.body["id"].as_i64().unwrap()).await;
        assert_eq!(e["status"], "timed_out", "{e}");

        let r = s.post("/api/v1/executions", json!({"action": "core.sleep", "params": {"seconds": 30}})).await;
        let id = r.body["id"].as_i64().unwrap();
        wait_for(WAIT, || async { (execution(&s, id).await["status"] == "running").then_some(()) })
            .await
            .expect("it started");
        let started = std::time::Instant::now();
        let r = s.post(&format!("/api/v1/executions/{id}/cancel"), json!({})).await;
        assert_eq!(r.status, StatusCode::OK);
        let e = s.ended(id).await;
        assert_eq!(e["status"], "cancelled", "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        s.finish().await;
    }

    async fn an_execution_nobody_can_serve_waits_visibly_then_runs_when_a_worker_joins(backend) {
        let s = TestServer::start_full(backend, Default::default(), no_worker()).await;
        let r = s.post("/api/v1/executions", json!({"action": "core.echo", "params": {"message": "late"}})).await;
        let id = r.body["id"].as_i64().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let e = execution(&s, id).await;
        assert_eq!(e["status"], "requested");
        assert!(e["status_reason"].as_str().unwrap().contains("waiting for a worker"), "{e}");
        let worker = attune_engine::worker::embedded::EmbeddedWorker::register(s.core.clone(), PipelineConfig::default())
            .await
            .unwrap();
        let task = tokio::spawn(worker.run());
        let e = s.ended(id).await;
        assert_eq!(e["status"], "succeeded");
        assert_eq!(e["stdout"], "late\n");
        task.abort();
        s.finish().await;
    }

    async fn a_lost_worker_s_execution_is_retried_or_abandoned(backend) {
        let fast_leases = PipelineConfig {
            embedded_worker: false,
            lease: Duration::from_millis(600),
            retry_backoff: Duration::from_millis(100),
            ..PipelineConfig::default()
        };
        let s = TestServer::start_full(backend, Default::default(), fast_leases.clone()).await;
        let caps = attune_engine::worker::capabilities();
        let ghost = s.core.storage.upsert_worker("ghost", &caps, &json!({}), 1, false).await.unwrap();
        let retried = s.post("/api/v1/executions", json!({"action": "core.echo", "params": {"message": "again"}, "max_attempts": 2})).await.body["id"].as_i64().unwrap();
        let lost = s.post("/api/v1/executions", json!({"action": "core.echo", "params": {"message": "lost"}})).await.body["id"].as_i64().unwrap();
        // The ghost claims both, starts them, and never heartbeats again.
        let claimed = s.core.storage.claim(ghost.id, &caps, 10, 300, false).await.unwrap();
        assert_eq!(claimed.len(), 2);
        for e in &claimed {
            assert!(s.core.storage.mark_running(e.id, ghost.id).await.unwrap());
        }
        let abandoned = s.ended(lost).await;
        assert_eq!(abandoned["status"], "abandoned", "{abandoned}");
        let requeued = wait_for(WAIT, || async {
            let e = execution(&s, retried).await;
            (e["status"] == "requested" && e["attempt"] == 2).then_some(e)
        }).await.expect("the execution went back to the queue");
        assert!(requeued["status_reason"].as_str().unwrap().contains("retrying"), "{requeued}");
        // A live worker picks the retry up.
        let worker = attune_engine::worker::embedded::EmbeddedWorker::register(s.core.clone(), fast_leases).await.unwrap();
        let task = tokio::spawn(worker.run());
        let e = s.ended(retried).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        assert_eq!(e["attempt"], 2);
        assert_ne!(e["worker"], json!(ghost.id));
        // Both attempts are in its history.
        let history = s.get(&format!("/api/v1/executions/{retried}/attempts")).await.body;
        let history = history["items"].as_array().unwrap().clone();
        assert_eq!(history.len(), 2, "{history:?}");
        assert_eq!((history[0]["attempt"].clone(), history[0]["status"].clone()), (json!(1), json!("abandoned")));
        assert_eq!(history[0]["worker"], json!(ghost.id));
        assert_eq!((history[1]["attempt"].clone(), history[1]["status"].clone()), (json!(2), json!("succeeded")));
        assert!(history[1]["started_at"].as_i64() <= history[1]["finished_at"].as_i64());
        assert_eq!(s.get("/api/v1/executions/999999/attempts").await.status, StatusCode::NOT_FOUND);
        task.abort();
        s.finish().await;
    }

    async fn claimed_but_unstarted_work_goes_back_without_using_an_attempt(backend) {
        let fast_leases = PipelineConfig {
            embedded_worker: false,
            lease: Duration::from_millis(600),
            ..PipelineConfig::default()
        };
        let s = TestServer::start_full(backend, Default::default(), fast_leases.clone()).await;
        let caps = attune_engine::worker::capabilities();
        let storage = &s.core.storage;
        let ghost = storage.upsert_worker("ghost", &caps, &json!({}), 1, false).await.unwrap();
        let mut ids = Vec::new();
        for message in ["cancelled", "started", "unstarted"] {
            let r = s.post("/api/v1/executions", json!({"action": "core.echo", "params": {"message": message}})).await;
            ids.push(r.body["id"].as_i64().unwrap());
        }
        let claimed = storage.claim(ghost.id, &caps, 10, 1000, false).await.unwrap();
        assert_eq!(claimed.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
        assert!(claimed.iter().all(|e| e.status.as_str() == "scheduled"));
        // A cancel of claimed work stands: its worker may no longer start it.
        let cancelled = s.post(&format!("/api/v1/executions/{}/cancel", ids[0]), json!({})).await;
        assert_eq!(cancelled.body["status"], "cancelled", "{}", cancelled.body);
        assert!(!storage.mark_running(ids[0], ghost.id).await.unwrap());
        assert!(storage.mark_running(ids[1], ghost.id).await.unwrap());
        // The ghost vanishes: what it started used its only attempt; what it
        // never started is queued again as it was.
        assert_eq!(s.ended(ids[1]).await["status"], "abandoned");
        let requeued = wait_for(WAIT, || async {
            let e = execution(&s, ids[2]).await;
            (e["status"] == "requested").then_some(e)
        }).await.expect("the unstarted execution went back to the queue");
        assert_eq!(requeued["attempt"], 1, "{requeued}");
        assert_eq!(requeued["worker"], Value::Null);
        assert!(requeued["status_reason"].as_str().unwrap().contains("before starting"), "{requeued}");
        // A worker that stops cleanly hands back at once what it claimed or
        // marked running but never began.
        let other = storage.upsert_worker("other", &caps, &json!({}), 1, false).await.unwrap();
        assert_eq!(storage.claim(other.id, &caps, 10, 30_000, false).await.unwrap().len(), 1);
        assert!(storage.mark_running(ids[2], other.id).await.unwrap());
        assert_eq!(storage.release_unstarted(other.id, &[]).await.unwrap(), 0, "running, and not said to be unbegun");
        assert_eq!(storage.release_unstarted(other.id, &[ids[2]]).await.unwrap(), 1);
        let released = execution(&s, ids[2]).await;
        assert_eq!(released["status"], "requested", "{released}");
        assert_eq!(released["started_at"], Value::Null);
        let worker = attune_engine::worker::embedded::EmbeddedWorker::register(s.core.clone(), fast_leases).await.unwrap();
        let task = tokio::spawn(worker.run());
        let e = s.ended(ids[2]).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        assert_eq!(e["attempt"], 1);
        assert_eq!(e["stdout"], "unstarted\n");
        assert_eq!(execution(&s, ids[0]).await["status"], "cancelled");
        task.abort();
        s.finish().await;
    }

    async fn the_embedded_worker_claims_short_work_ahead_and_runs_each_once(backend) {
        let s = TestServer::start_full(backend, Default::default(), PipelineConfig {
            concurrency: 2,
            ..PipelineConfig::default()
        }).await;
        let mut ids = Vec::new();
        for _ in 0..300 {
            let r = s.post("/api/v1/executions", json!({"action": "core.noop"})).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
            ids.push(r.body["id"].as_i64().unwrap());
        }
        let runs = wait_for(Duration::from_secs(60), || async {
            let filter = ExecutionFilter { action: Some("core.noop".into()), ..Default::default() };
            let runs = s.core.storage.list_executions(&filter, &Page { limit: Some(500), after: None }).await.unwrap();
            (runs.len() == ids.len() && runs.iter().all(|e| e.finished_at.is_some())).then_some(runs)
        }).await.expect("every execution finished");
        assert!(runs.iter().all(|e| e.status.as_str() == "succeeded" && e.attempt == 1), "each ran once");
        // Claimed straight into `running`, scheduled and started coincide;
        // work claimed ahead waited, claimed, for a slot.
        let ahead = runs.iter().filter(|e| e.started_at > e.scheduled_at).count();
        assert!(ahead > 0, "nothing was claimed ahead");
        assert!(runs.iter().all(|e| e.scheduled_at.is_some() && e.started_at >= e.scheduled_at));
        assert!(runs.iter().all(|e| e.started_at <= e.finished_at), "a start after the finish");
        // The history holds the same (corrected) start.
        let last = runs.iter().max_by_key(|e| e.id).unwrap();
        let history = s.get(&format!("/api/v1/executions/{}/attempts", last.id)).await.body;
        assert_eq!(history["items"][0]["started_at"], json!(last.started_at), "{history}");
        assert_eq!(history["items"][0]["status"], "succeeded");
        s.finish().await;
    }

    async fn a_cancel_reaches_work_marked_running_before_its_slot_is_free(backend) {
        let s = TestServer::start_full(backend, Default::default(), PipelineConfig {
            concurrency: 8,
            ..PipelineConfig::default()
        }).await;
        let (sleepers, waiting, marked) = marked_ahead_of_busy_slots(&s).await;
        let r = s.post(&format!("/api/v1/executions/{waiting}/cancel"), json!({})).await;
        assert_eq!(r.body["cancel_requested"], true, "{}", r.body);
        let e = s.ended(waiting).await;
        assert_eq!(e["status"], "cancelled", "{e}");
        assert_eq!(e["error"], "cancelled before it ran");
        assert_eq!(e["stdout"], "", "the action never ran");
        assert!(e["started_at"].as_i64() >= marked["started_at"].as_i64());
        for id in sleepers {
            assert_eq!(s.ended(id).await["status"], "succeeded");
        }
        s.finish().await;
    }

    async fn a_clean_stop_hands_back_work_marked_running_but_not_begun(backend) {
        let s = TestServer::start_full(backend, Default::default(), PipelineConfig {
            concurrency: 8,
            ..PipelineConfig::default()
        }).await;
        let (sleepers, waiting, _) = marked_ahead_of_busy_slots(&s).await;
        // A drain shorter than the sleeps.
        s.pipeline.stop(&s.core, Duration::from_millis(100)).await;
        let released = execution(&s, waiting).await;
        assert_eq!(released["status"], "requested", "{released}");
        assert_eq!(released["worker"], Value::Null);
        assert_eq!(released["attempt"], 1);
        // What had begun stays with its lease, to be retried or abandoned.
        for id in sleepers {
            assert_eq!(execution(&s, id).await["status"], "running");
        }
        s.finish().await;
    }

    async fn a_clean_stop_lets_begun_work_finish_and_records_it_within_the_drain(backend) {
        let s = TestServer::start_full(backend, Default::default(), PipelineConfig {
            concurrency: 8,
            ..PipelineConfig::default()
        }).await;
        let (sleepers, waiting, _) = marked_ahead_of_busy_slots(&s).await;
        let began = std::time::Instant::now();
        s.pipeline.stop(&s.core, Duration::from_secs(20)).await;
        assert!(began.elapsed() < Duration::from_secs(10), "it stops when the work is done: {:?}", began.elapsed());
        for id in sleepers {
            let e = execution(&s, id).await;
            assert_eq!(e["status"], "succeeded", "finished and recorded, not left to the lease: {e}");
            assert_eq!(e["attempt"], 1);
        }
        let released = execution(&s, waiting).await;
        assert_eq!(released["status"], "requested", "not begun during the drain: {released}");
        s.finish().await;
    }

    async fn a_restart_loses_no_queued_execution_and_fires_no_tick_twice(backend) {
        let s = TestServer::start_full(backend, Default::default(), no_worker()).await;
        s.post("/api/v1/rules", interval_rule("core.ticker", "300ms", "tick")).await;
        let queued = s.post("/api/v1/executions", json!({"action": "core.echo", "params": {"message": "queued"}})).await.body["id"].as_i64().unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let s = s.restart(PipelineConfig::default()).await;
        let e = s.ended(queued).await;
        assert_eq!(e["status"], "succeeded");
        assert_eq!(e["stdout"], "queued\n");
        tokio::time::sleep(Duration::from_millis(800)).await;
        s.post("/api/v1/rules/core.ticker/disable", json!({})).await;
        let page = Page { limit: Some(500), after: None };
        let events = s.core.storage.list_events(Some("core.interval"), &page).await.unwrap();
        let mut counts: Vec<i64> = events
            .iter()
            .filter(|e| e.source.as_deref() == Some("core.ticker"))
            .map(|e| e.payload["count"].as_i64().unwrap())
            .collect();
        counts.sort();
        assert!(counts.len() >= 3, "{counts:?}");
        let expected: Vec<i64> = (1..=counts.len() as i64).collect();
        assert_eq!(counts, expected, "every tick exactly once");
        // Every tick's execution ran after the restart.
        let runs = wait_for(WAIT, || async {
            let runs = executions_of_rule(&s, "core.ticker").await;
            runs.iter().all(|e| e.status.as_str() == "succeeded").then_some(runs)
        }).await.expect("the queued ticks ran");
        assert_eq!(runs.len(), counts.len());
        s.finish().await;
    }
}
