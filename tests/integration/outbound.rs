//! Outbound HTTP from actions (`wasi:http`), on loopback only: grants,
//! private-address blocking, limits and the request log, through the
//! runtime directly and through a server run on both backends.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use attune_runtime::http::{AllowedHosts, OutboundConfig};
use attune_runtime::{ExecutionRequest, Outcome, Runtime, RuntimeConfig, Status};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestServer, guest_bytes, on_both_backends, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A tiny HTTP/1.1 server on 127.0.0.1 that counts connections and keeps
/// each request's head: `/` answers `hello`, `/big` 10,000 bytes, `/stall` a
/// head and then silence, `/echo` JSON of the method, the `authorization`
/// header and the body.
struct Remote {
    port: u16,
    connections: Arc<AtomicUsize>,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
}

async fn remote() -> Remote {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = connections.clone();
    let kept = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let kept = kept.clone();
            tokio::spawn(async move {
                let Some((text, mut body)) = support::read_head(&mut stream).await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                kept.lock().unwrap().push(text.clone());
                let header = |name: &str| support::header_of(&text, name);
                let length: usize = header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while body.len() < length {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => body.extend_from_slice(&buf[..n]),
                    }
                }
                let method = text.split_whitespace().next().unwrap_or("").to_string();
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                let reply = |body: &[u8]| {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(body);
                    r
                };
                match path.as_str() {
                    "/echo" => {
                        let echoed = json!({
                            "method": method,
                            "authorization": header("authorization"),
                            "body": String::from_utf8_lossy(&body),
                        });
                        let _ = stream
                            .write_all(&reply(echoed.to_string().as_bytes()))
                            .await;
                    }
                    "/big" => {
                        let _ = stream.write_all(&reply(&[b'x'; 10_000])).await;
                    }
                    "/stall" => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nsome")
                            .await;
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    _ => {
                        let _ = stream.write_all(&reply(b"hello")).await;
                    }
                }
            });
        }
    });
    Remote {
        port,
        connections,
        heads,
    }
}

fn runtime_with(outbound: OutboundConfig) -> Runtime {
    Runtime::new(RuntimeConfig {
        max_instances: 8,
        outbound,
        ..RuntimeConfig::default()
    })
    .expect("runtime starts")
}

fn private_ok() -> OutboundConfig {
    OutboundConfig {
        allow_private: true,
        ..OutboundConfig::default()
    }
}

async fn fetch(rt: &Runtime, grant: &[&str], action: &str, params: Value) -> Outcome {
    let (pack, _) = rt
        .load(&guest_bytes("fetch"))
        .expect("the fetch guest loads");
    let mut request = ExecutionRequest::new(action, params);
    let grant: Vec<String> = grant.iter().map(|s| s.to_string()).collect();
    request.allowed_hosts = Arc::new(AllowedHosts::parse(&grant).expect("a valid grant"));
    pack.execute(rt, request).await.expect("it runs")
}

fn error_of(o: &Outcome) -> String {
    o.error.as_ref().map(Value::to_string).unwrap_or_default()
}

/// Fetches `url` with `grant` and checks that it is refused for its
/// address (before any connection).
async fn assert_prohibited(rt: &Runtime, grant: &str, url: &str) {
    let o = fetch(rt, &[grant], "get", json!({"url": url})).await;
    assert_eq!(o.status, Status::Failed, "{url}");
    assert!(
        error_of(&o).contains("DestinationIpProhibited"),
        "{url}: {}",
        error_of(&o)
    );
}

#[tokio::test]
async fn a_request_to_an_allowed_host_succeeds_and_is_logged() {
    let remote = remote().await;
    let rt = runtime_with(private_ok());
    let url = format!("http://127.0.0.1:{}/", remote.port);
    let o = fetch(&rt, &["http://127.0.0.1:*"], "get", json!({"url": url})).await;
    assert_eq!(o.status, Status::Succeeded, "{:?}", o.error);
    assert_eq!(o.result, Some(json!({"status": 200, "body": "hello"})));
    let line = o
        .logs
        .iter()
        .find(|l| l.message.starts_with("http GET"))
        .expect("a request log line");
    assert_eq!(
        line.message,
        format!("http GET http://127.0.0.1:{} 200", remote.port)
    );
    let field = |k: &str| {
        line.fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field("status").as_deref(), Some("200"));
    assert_eq!(field("bytes").as_deref(), Some("5"));
    assert!(field("ms").is_some());
}

#[tokio::test]
async fn an_unlisted_host_is_denied_before_any_connection() {
    let remote = remote().await;
    let rt = runtime_with(private_ok());
    let url = format!("http://127.0.0.1:{}/", remote.port);
    for grant in [
        &[][..],
        &["http://127.0.0.2:*"],
        &[&*format!("https://127.0.0.1:{}", remote.port)],
    ] {
        let o = fetch(&rt, grant, "get", json!({"url": url})).await;
        assert_eq!(o.status, Status::Failed, "{grant:?}");
        assert!(
            error_of(&o).contains("HttpRequestDenied"),
            "{grant:?}: {}",
            error_of(&o)
        );
        assert!(
            o.logs.iter().any(|l| l.message.contains("denied")),
            "{:?}",
            o.logs
        );
    }
    assert_eq!(
        remote.connections.load(Ordering::SeqCst),
        0,
        "no connection was made"
    );
}

#[tokio::test]
async fn private_addresses_are_denied_unless_the_operator_allows_them() {
    let remote = remote().await;
    let strict = runtime_with(OutboundConfig::default());
    for (grant, url) in [
        (
            "http://127.0.0.1:*",
            format!("http://127.0.0.1:{}/", remote.port),
        ),
        // A name that resolves to loopback is checked by its address.
        (
            "http://localhost:*",
            format!("http://localhost:{}/", remote.port),
        ),
    ] {
        assert_prohibited(&strict, grant, &url).await;
    }
    assert_eq!(
        remote.connections.load(Ordering::SeqCst),
        0,
        "no connection was made"
    );
    let open = runtime_with(private_ok());
    let url = format!("http://localhost:{}/", remote.port);
    let o = fetch(&open, &["http://localhost:*"], "get", json!({"url": url})).await;
    assert_eq!(o.status, Status::Succeeded, "{}", error_of(&o));
}

/// Every IPv6 form that embeds a loopback or metadata IPv4 address is that
/// address: refused without a connection, whatever the grant. The probe
/// runs in a network namespace of its own with only loopback up, so a
/// filter that let one through could still reach nothing off this machine.
#[test]
fn ipv6_forms_of_loopback_and_metadata_addresses_are_refused() {
    let name = "outbound::ipv6_forms_of_loopback_and_metadata_addresses_are_refused_in_a_namespace";
    let out = std::process::Command::new("unshare")
        .args(["-rn", "sh", "-c", "ip link set lo up && exec \"$@\"", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", name, "--ignored", "--nocapture"])
        .output()
        .expect("unshare runs (util-linux)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "the probe ran: {text}");
}

/// The probe of [`ipv6_forms_of_loopback_and_metadata_addresses_are_refused`],
/// run only inside its namespace.
#[tokio::test]
#[ignore = "run by ipv6_forms_of_loopback_and_metadata_addresses_are_refused in a network namespace"]
async fn ipv6_forms_of_loopback_and_metadata_addresses_are_refused_in_a_namespace() {
    let remote = remote().await;
    let strict = runtime_with(OutboundConfig::default());
    for host in [
        "[::127.0.0.1]",
        "[::ffff:0:127.0.0.1]",
        "[::ffff:127.0.0.1]",
        "[64:ff9b::127.0.0.1]",
        "[2002:7f00:1::1]",
        "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
        "[::169.254.169.254]",
        "[::ffff:0:169.254.169.254]",
        "[2002:a9fe:a9fe::1]",
        "[64:ff9b:1::a9fe:a9fe]",
    ] {
        let url = format!("http://{host}:{}/", remote.port);
        assert_prohibited(&strict, "http://*:*", &url).await;
    }
    assert_eq!(
        remote.connections.load(Ordering::SeqCst),
        0,
        "no connection was made"
    );
}

#[tokio::test]
async fn limits_end_requests_with_an_error_not_a_hang() {
    let remote = remote().await;
    let rt = runtime_with(OutboundConfig {
        allow_private: true,
        max_requests: 3,
        max_response_bytes: 1000,
        between_bytes_timeout: Duration::from_millis(300),
        ..OutboundConfig::default()
    });
    let grant = ["http://127.0.0.1:*"];
    let base = format!("http://127.0.0.1:{}", remote.port);
    let o = fetch(
        &rt,
        &grant,
        "get-many",
        json!({"url": format!("{base}/"), "times": 5}),
    )
    .await;
    assert_eq!(o.status, Status::Failed);
    assert!(
        error_of(&o).contains("request 3") && error_of(&o).contains("HttpRequestDenied"),
        "{}",
        error_of(&o)
    );
    assert!(
        o.logs
            .iter()
            .any(|l| l.message.contains("more than 3 requests")),
        "{:?}",
        o.logs
    );

    let o = fetch(&rt, &grant, "get", json!({"url": format!("{base}/big")})).await;
    assert_eq!(o.status, Status::Failed, "a body past the cap is an error");
    assert!(
        o.logs
            .iter()
            .any(|l| l.message.contains("more than 1000 bytes")),
        "{:?}",
        o.logs
    );

    let began = Instant::now();
    let o = fetch(&rt, &grant, "get", json!({"url": format!("{base}/stall")})).await;
    assert_eq!(o.status, Status::Failed, "a stalled server is an error");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "ended within the limit: {:?}",
        began.elapsed()
    );
    assert!(
        o.logs.iter().any(|l| l.message.contains("stalled")),
        "{:?}",
        o.logs
    );
}

on_both_backends! {
    async fn pack_toml_grants_are_checked_at_upload_and_shown(backend) {
        let s = TestServer::start(backend).await;
        let wasm = guest_bytes("fetch");
        let manifest = |hosts: &str| format!(
            "name = \"fetcher\"\nversion = \"1.0.0\"\ncomponents = [\"fetch.wasm\"]\nallowed_outbound_hosts = [{hosts}]\nsecrets = [\"slack_token\"]\n"
        );
        let bad = manifest(r#""https://api.github.com", "https://user@x.example""#);
        let r = s.upload_archive(support::tar_gz(&[("pack.toml", bad.as_bytes()), ("fetch.wasm", &wasm)])).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(r.detail_paths(), ["/pack.toml/allowed_outbound_hosts/1"]);
        assert_eq!(s.get("/api/v1/packs/fetcher").await.status, StatusCode::NOT_FOUND, "nothing stored");
        let good = manifest(r#""https://api.github.com", "https://*.slack.com""#);
        let r = s.upload_archive(support::tar_gz(&[("pack.toml", good.as_bytes()), ("fetch.wasm", &wasm)])).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let shown = s.get("/api/v1/packs/fetcher").await;
        assert_eq!(shown.body["grants"], json!({
            "allowed_outbound_hosts": ["https://api.github.com", "https://*.slack.com"],
            "secrets": ["slack_token"],
        }));
        s.finish().await;
    }

    async fn a_pack_granted_a_host_reaches_it_through_a_server_run(backend) {
        let remote = remote().await;
        let s = TestServer::start(backend).await;
        let r = s.upload_component("fetch", "1.0.0", guest_bytes("fetch")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let shown = s.get("/api/v1/packs/fetch").await;
        assert_eq!(shown.body["grants"], json!({"allowed_outbound_hosts": [], "secrets": []}), "a single .wasm upload has no grants");
        let url = format!("http://127.0.0.1:{}/", remote.port);
        let body = json!({"action": "fetch.get", "params": {"url": url}});
        let denied = s.post("/api/v1/executions", body.clone()).await;
        let denied = wait_for(Duration::from_secs(30), || async {
            let e = s.get(&format!("/api/v1/executions/{}", denied.body["id"])).await.body;
            e["finished_at"].is_i64().then_some(e)
        }).await.expect("it finishes");
        assert_eq!(denied["status"], "failed");
        assert!(denied["error"].as_str().unwrap().contains("HttpRequestDenied"), "{denied}");

        let viewer = s.token("viewer").await;
        let r = s.send(s.request(reqwest::Method::PUT, "/api/v1/packs/fetch/grants", Some(&viewer))
            .json(&json!({"allowed_outbound_hosts": ["http://127.0.0.1:*"]}))).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "only admins grant");
        let bad = s.put("/api/v1/packs/fetch/grants", json!({"allowed_outbound_hosts": ["http://127.0.0.1:*", "*"]})).await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(bad.detail_paths(), ["/allowed_outbound_hosts/1"]);
        let granted = s.put("/api/v1/packs/fetch/grants", json!({"allowed_outbound_hosts": ["http://127.0.0.1:*"]})).await;
        assert_eq!(granted.status, StatusCode::OK, "{}", granted.body);
        assert_eq!(granted.body["grants"]["allowed_outbound_hosts"], json!(["http://127.0.0.1:*"]));

        let ok = s.post("/api/v1/executions", body).await;
        let ok = wait_for(Duration::from_secs(30), || async {
            let e = s.get(&format!("/api/v1/executions/{}", ok.body["id"])).await.body;
            e["finished_at"].is_i64().then_some(e)
        }).await.expect("it finishes");
        assert_eq!(ok["status"], "succeeded", "{ok}");
        assert_eq!(ok["result"], json!({"status": 200, "body": "hello"}));
        assert!(ok["logs"].as_array().unwrap().iter().any(|l| l["message"].as_str().unwrap().contains(" 200")), "{ok}");
        s.finish().await;
    }

    async fn core_http_calls_what_the_core_pack_is_granted_with_secrets_redacted(backend) {
        let remote = remote().await;
        let s = TestServer::start(backend).await;
        let url = format!("http://127.0.0.1:{}/echo", remote.port);
        let direct = json!({"action": "core.http", "params": {"url": url}});
        let r = s.post("/api/v1/executions", direct.clone()).await;
        let denied = s.ended(r.body["id"].as_i64().unwrap()).await;
        assert_eq!(denied["status"], "failed");
        assert!(denied["error"].as_str().unwrap().contains("HttpRequestDenied"), "the core pack starts with no grant: {denied}");
        assert_eq!(remote.connections.load(Ordering::SeqCst), 0);

        let granted = s.put("/api/v1/packs/core/grants",
            json!({"allowed_outbound_hosts": ["http://127.0.0.1:*"], "secrets": ["api_token"]})).await;
        assert_eq!(granted.status, StatusCode::OK, "{}", granted.body);
        let token = "tok-3f9a0c8e1d7b";
        s.put("/api/v1/secrets/api_token", json!({"value": token})).await;
        let rule = s.post("/api/v1/rules", json!({
            "ref": "core.notify", "trigger": "core.manual", "action": "core.http",
            "action_params": {
                "url": url, "method": "POST",
                "headers": [["authorization", "Bearer {{ secrets.api_token }}"], ["content-type", "text/plain"]],
                "body": "{{ event.payload.text }}", "timeout": 5,
            },
        })).await;
        assert_eq!(rule.status, StatusCode::CREATED, "{}", rule.body);
        s.post("/api/v1/events", json!({"trigger": "core.manual", "payload": {"text": "deployed"}})).await;
        let id = wait_for(Duration::from_secs(30), || async {
            s.get("/api/v1/executions?rule=core.notify").await.body["items"][0]["id"].as_i64()
        }).await.expect("the rule ran");
        let done = s.ended(id).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["result"]["status"], 200);
        let echoed: Value = serde_json::from_str(done["result"]["body"].as_str().unwrap()).unwrap();
        assert_eq!(echoed, json!({"method": "POST", "authorization": "Bearer ********", "body": "deployed"}),
            "the remote saw the token; the record shows it masked");
        assert_eq!(done["params"]["headers"][0][1], "Bearer ********");
        assert!(!done.to_string().contains(token), "{done}");
        let heads = remote.heads.lock().unwrap().clone();
        assert!(heads.iter().any(|h| h.contains(&format!("Bearer {token}"))), "{heads:?}");
        s.finish().await;
    }
}

/// An HTTPS server on 127.0.0.1 with a certificate from a fresh private CA;
/// its port and the CA's PEM file.
async fn tls_remote(dir: &std::path::Path) -> (u16, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let config = attune_util::tls::server_config(&cert_path, &key_path).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nsecure",
                    )
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (port, ca_path)
}

#[tokio::test]
async fn https_reaches_a_server_of_a_private_ca_only_when_the_operator_trusts_it() {
    let dir = tempfile::tempdir().unwrap();
    let (port, ca) = tls_remote(dir.path()).await;
    let url = format!("https://127.0.0.1:{port}/");
    let allowed = Arc::new(AllowedHosts::parse(&["https://127.0.0.1:*".to_string()]).unwrap());
    let get = |rt: Runtime| {
        let (url, allowed) = (url.clone(), allowed.clone());
        async move {
            let (pack, _) = rt.load(&guest_bytes("fetch")).unwrap();
            let mut request = ExecutionRequest::new("get", json!({"url": url}));
            request.allowed_hosts = allowed;
            pack.execute(&rt, request).await.unwrap()
        }
    };
    let untrusted = get(runtime_with(private_ok())).await;
    assert_eq!(untrusted.status, Status::Failed);
    assert!(
        format!("{:?}", untrusted.error)
            .to_lowercase()
            .contains("tls"),
        "{:?}",
        untrusted.error
    );
    let trusting = OutboundConfig {
        tls: Some(Arc::new(
            attune_util::tls::client_config(Some(&ca)).unwrap(),
        )),
        ..private_ok()
    };
    let trusted = get(runtime_with(trusting)).await;
    assert_eq!(trusted.status, Status::Succeeded, "{:?}", trusted.error);
    assert_eq!(
        trusted.result,
        Some(json!({"status": 200, "body": "secure"}))
    );
}
