//! Traces: a real OTLP/HTTP receiver on loopback decodes what the server
//! exports (`opentelemetry-proto`), and one trace is followed from a signed
//! webhook that carries a `traceparent` through a workflow of two tasks,
//! one of which calls a loopback server, which sees the same trace; and
//! one from a sensor poll through the runs its records cause.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use support::{Backend, TestServer, tar_gz, wait_for};

type Spans = Arc<Mutex<Vec<Span>>>;

/// An OTLP/HTTP receiver: every span posted to `/v1/traces`, decoded.
async fn receiver() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut kept = kept.lock().unwrap();
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        kept.extend(scope.spans);
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, spans)
}

/// A loopback server that answers `ok` and keeps each request's
/// `traceparent` header.
async fn remote() -> (u16, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let kept = seen.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let Some((head, _)) = support::read_head(&mut stream).await else {
                    return;
                };
                let traceparent = support::header_of(&head, "traceparent");
                kept.lock().unwrap().push(traceparent.unwrap_or_default());
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (port, seen)
}

/// A server on SQLite with `pipeline` exporting its spans to a receiver;
/// the tracing and what the receiver got.
async fn traced(
    pipeline: support::PipelineConfig,
) -> (TestServer, Arc<attune_engine::telemetry::Telemetry>, Spans) {
    let (collector, spans) = receiver().await;
    let args = attune::telemetry::TracingArgs {
        otlp_endpoint: Some(collector),
    };
    let telemetry = attune::telemetry::start(&args, "attune-test", None)
        .unwrap()
        .expect("tracing on");
    let s = TestServer::start_traced(Backend::Sqlite, pipeline, telemetry.clone()).await;
    (s, telemetry, spans)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text_of(span: &Span) -> String {
    let mut all = span.name.clone();
    for kv in &span.attributes {
        all.push_str(&kv.key);
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Any::StringValue(s)) => all.push_str(s),
            Some(other) => all.push_str(&format!("{other:?}")),
            None => {}
        }
    }
    all
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Any> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const CANARY: &str = "trace-canary-7e31c0de";
const HOOK_KEY: &str = "hook-key-0123456789abcdef";

const FLOW: &str = r#"
input: {type: object}
tasks:
  say:
    action: core.echo
    input: {message: "starting"}
    next: [{when: succeeded, do: [call]}]
  call:
    action: traced.get
    input: {url: "http://127.0.0.1:PORT/hook?t={{ secrets.trace_token }}"}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_signed_webhook_through_a_workflow_to_the_remote_end() {
    let (s, telemetry, spans) = traced(Default::default()).await;
    let (port, seen) = remote().await;
    let r = s
        .put("/api/v1/secrets/trace_token", json!({"value": CANARY}))
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    let manifest = "name = \"traced\"\nversion = \"1.0.0\"\ncomponents = [\"get.wasm\"]\n\
                    workflows = [\"workflows/flow.yaml\"]\nsecrets = [\"trace_token\"]\n\
                    allowed_outbound_hosts = [\"http://127.0.0.1:*\"]\n";
    let flow = FLOW.replace("PORT", &port.to_string());
    let r = s
        .upload_archive(tar_gz(&[
            ("pack.toml", manifest.as_bytes()),
            ("get.wasm", &support::guest_bytes("fetch")),
            ("workflows/flow.yaml", flow.as_bytes()),
        ]))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = s
        .post(
            "/api/v1/rules",
            json!({
                "ref": "traced.on_hook", "trigger": "core.webhook",
                "trigger_params": {"name": "traced", "secret": HOOK_KEY},
                "action": "traced.flow", "action_params": {},
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    let body = br#"{"deploy": 7}"#.to_vec();
    let sent = s
        .send(
            s.request(reqwest::Method::POST, "/api/v1/webhooks/traced", None)
                .header("content-type", "application/json")
                .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
                .header("tracestate", "caller=1")
                .header(
                    "X-Hub-Signature-256",
                    attune_engine::triggers::webhook::sign(HOOK_KEY, &body),
                )
                .body(body),
        )
        .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    let flow_id = wait_for(Duration::from_secs(30), || async {
        let listed = s.get("/api/v1/executions?action=traced.flow").await.body;
        listed["items"][0]["id"].as_i64()
    })
    .await
    .expect("the workflow was queued");
    let ended = s.ended(flow_id).await;
    assert_eq!(ended["status"], "succeeded", "{ended}");

    // Every span of the trace reaches the receiver.
    let wanted = [
        "POST /api/v1/webhooks/{name}",
        "event core.webhook",
        "rules core.webhook",
        "enforcement traced.on_hook",
        "execution traced.flow",
        "execution core.echo",
        "execution traced.get",
        "run core.echo",
        "run traced.get",
        "GET 127.0.0.1",
        "queued",
    ];
    let by_name = spans_of(&telemetry, &spans, TRACE, &wanted).await;

    // Each under its cause.
    let id = |name: &str| hex(&by_name[name].span_id);
    let parent = |name: &str| hex(&by_name[name].parent_span_id);
    assert_eq!(parent("POST /api/v1/webhooks/{name}"), CALLER_SPAN);
    for (child, cause) in [
        ("event core.webhook", "POST /api/v1/webhooks/{name}"),
        ("rules core.webhook", "event core.webhook"),
        ("enforcement traced.on_hook", "rules core.webhook"),
        ("execution traced.flow", "enforcement traced.on_hook"),
        ("execution core.echo", "execution traced.flow"),
        ("execution traced.get", "execution traced.flow"),
        ("run traced.get", "execution traced.get"),
        ("run core.echo", "execution core.echo"),
        ("GET 127.0.0.1", "run traced.get"),
    ] {
        assert_eq!(parent(child), id(cause), "{child} under {cause}");
    }
    let request = &by_name["POST /api/v1/webhooks/{name}"];
    assert!(
        matches!(
            attribute(request, "http.response.status_code"),
            Some(Any::IntValue(202))
        ),
        "{request:?}"
    );
    let call = &by_name["GET 127.0.0.1"];
    assert!(
        matches!(attribute(call, "http.request.method"), Some(Any::StringValue(m)) if m == "GET")
    );
    assert!(
        matches!(attribute(call, "server.port"), Some(Any::IntValue(p)) if *p == i64::from(port))
    );
    assert!(matches!(
        attribute(call, "http.response.status_code"),
        Some(Any::IntValue(200))
    ));
    let run = &by_name["execution traced.get"];
    assert!(
        matches!(attribute(run, "attune.action"), Some(Any::StringValue(a)) if a == "traced.get")
    );

    // The remote end saw the run's span in the same trace.
    let traceparents = seen.lock().unwrap().clone();
    assert_eq!(
        traceparents,
        [format!("00-{TRACE}-{}-01", id("run traced.get"))],
        "{traceparents:?}"
    );
    // No secret (the token in the URL, the webhook's key) in any span.
    for span in spans.lock().unwrap().iter() {
        let text = text_of(span);
        assert!(!text.contains(CANARY) && !text.contains(HOOK_KEY), "{text}");
    }
    s.finish().await;
}

/// Every span the receiver got, once the server exported what it buffered.
async fn flushed(telemetry: &Arc<attune_engine::telemetry::Telemetry>, spans: &Spans) -> Vec<Span> {
    let telemetry = telemetry.clone();
    tokio::task::spawn_blocking(move || telemetry.flush())
        .await
        .unwrap();
    spans.lock().unwrap().clone()
}

/// The spans of trace `trace` by name, once every one of `wanted` arrived.
async fn spans_of(
    telemetry: &Arc<attune_engine::telemetry::Telemetry>,
    spans: &Spans,
    trace: &str,
    wanted: &[&str],
) -> HashMap<String, Span> {
    wait_for(Duration::from_secs(30), || async {
        let mine: HashMap<String, Span> = flushed(telemetry, spans)
            .await
            .into_iter()
            .filter(|s| hex(&s.trace_id) == trace)
            .map(|s| (s.name.clone(), s))
            .collect();
        wanted.iter().all(|w| mine.contains_key(*w)).then_some(mine)
    })
    .await
    .unwrap_or_else(|| panic!("not every span of {trace} arrived: {wanted:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_runs_and_mcp_calls_continue_the_caller_s_trace() {
    let (s, telemetry, spans) = traced(Default::default()).await;
    let direct = "0af7651916cd43dd8448eb211c80319c";
    let r = s
        .send(
            s.request(reqwest::Method::POST, "/api/v1/executions", Some(&s.admin))
                .header("traceparent", format!("00-{direct}-{CALLER_SPAN}-01"))
                .json(&json!({"action": "core.noop", "params": {}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    s.ended(r.body["id"].as_i64().unwrap()).await;
    let got = spans_of(
        &telemetry,
        &spans,
        direct,
        &[
            "POST /api/v1/executions",
            "execution core.noop",
            "run core.noop",
        ],
    )
    .await;
    assert_eq!(
        hex(&got["POST /api/v1/executions"].parent_span_id),
        CALLER_SPAN
    );
    assert_eq!(
        got["execution core.noop"].parent_span_id,
        got["POST /api/v1/executions"].span_id
    );

    // An MCP tool call: the session's initialization carries no trace; the
    // call does.
    let mcp = format!("{}/mcp", s.base);
    let client = reqwest::Client::new();
    let post =
        |message: serde_json::Value, session: Option<String>, traceparent: Option<String>| {
            let mut rb = client
                .post(&mcp)
                .bearer_auth(&s.admin)
                .header("accept", "application/json, text/event-stream")
                .json(&message);
            if let Some(id) = session {
                rb = rb.header("mcp-session-id", id);
            }
            if let Some(t) = traceparent {
                rb = rb.header("traceparent", t);
            }
            rb.send()
        };
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}});
    let opened = post(init, None, None).await.unwrap();
    let session = opened.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    opened.text().await.unwrap();
    post(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        Some(session.clone()),
        None,
    )
    .await
    .unwrap();
    let agent = "5b8aa5a2d2c872e8321cf37308d69df2";
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "core.echo", "arguments": {"message": "traced"}}});
    let answer = post(
        call,
        Some(session),
        Some(format!("00-{agent}-{CALLER_SPAN}-01")),
    )
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(answer.contains("traced"), "{answer}");
    let got = spans_of(
        &telemetry,
        &spans,
        agent,
        &["POST /mcp", "execution core.echo", "run core.echo"],
    )
    .await;
    assert_eq!(hex(&got["POST /mcp"].parent_span_id), CALLER_SPAN);
    assert_eq!(
        got["execution core.echo"].parent_span_id,
        got["POST /mcp"].span_id
    );
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_worker_continues_the_trace() {
    let pipeline = support::PipelineConfig {
        embedded_worker: false,
        ..Default::default()
    };
    let (s, telemetry, spans) = traced(pipeline).await;
    let dir = tempfile::tempdir().unwrap();
    let config = attune::client::worker::RemoteWorkerConfig {
        telemetry: Some(telemetry.clone()),
        ..s.worker_config("traced-worker", &s.admin, dir.path())
    };
    let worker = tokio::spawn(async move {
        attune::client::worker::run(config)
            .await
            .expect("the worker runs");
    });
    let trace = "2c0e7aa2fd6e4c3f9b1a77c0d7e5f001";
    let r = s
        .send(
            s.request(reqwest::Method::POST, "/api/v1/executions", Some(&s.admin))
                .header("traceparent", format!("00-{trace}-{CALLER_SPAN}-01"))
                .json(&json!({"action": "core.echo", "params": {"message": "far"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let e = s.ended(r.body["id"].as_i64().unwrap()).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    let got = spans_of(
        &telemetry,
        &spans,
        trace,
        &["execution core.echo", "run core.echo"],
    )
    .await;
    // The worker's run sits under the execution span the server emitted.
    assert_eq!(
        got["run core.echo"].parent_span_id,
        got["execution core.echo"].span_id
    );
    worker.abort();
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_poll_traces_its_events_through_the_runs_they_cause() {
    let (s, telemetry, spans) = traced(Default::default()).await;
    let manifest = "name = \"tracker\"\nversion = \"1\"\ncomponents = [\"sensing.wasm\"]\n\
                    [[sensors]]\nname = \"new_issues\"\nexport = \"scan\"\nevery = \"1s\"\n";
    let r = s
        .upload_archive(tar_gz(&[
            ("pack.toml", manifest.as_bytes()),
            ("sensing.wasm", &support::guest_bytes("sensing")),
        ]))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let rule = json!({"ref": "tracker.echo_issue", "trigger": "tracker.new_issues",
                      "action": "core.echo", "action_params": {"message": "{{ event.payload.title }}"}});
    let r = s.post("/api/v1/rules", rule).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // A trace whose every link arrived, from the poll to the rule's runs.
    let links = [
        ("event tracker.new_issues", "execution tracker.scan"),
        ("rules tracker.new_issues", "event tracker.new_issues"),
        ("enforcement tracker.echo_issue", "rules tracker.new_issues"),
        ("execution core.echo", "enforcement tracker.echo_issue"),
        ("run core.echo", "execution core.echo"),
    ];
    let complete = wait_for(Duration::from_secs(40), || async {
        let all = flushed(&telemetry, &spans).await;
        let polls = all
            .iter()
            .filter(|s| s.name == "sensor poll tracker.new_issues");
        for poll in polls {
            let mine: Vec<&Span> = all.iter().filter(|s| s.trace_id == poll.trace_id).collect();
            let named = |n: &'static str| mine.iter().filter(move |s| s.name == n);
            // Each span of a link has its parent among the spans of
            // its cause, and both are there.
            let linked = named("execution tracker.scan").all(|e| e.parent_span_id == poll.span_id)
                && links.iter().all(|(child, cause)| {
                    named(child).count() > 0
                        && named(child).all(|c| named(cause).any(|p| p.span_id == c.parent_span_id))
                });
            if linked {
                return Some(mine.iter().map(|s| text_of(s)).collect::<Vec<_>>());
            }
        }
        None
    })
    .await;
    let texts = complete.unwrap_or_else(|| {
        let names: Vec<String> = spans
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        panic!("no sensor poll was traced through to its runs: {names:?}")
    });
    // Two records a poll, each an event enforced under its own span.
    assert!(
        texts
            .iter()
            .filter(|t| t.starts_with("event tracker.new_issues"))
            .count()
            >= 2,
        "{texts:?}"
    );
    s.finish().await;
}
