//! The HTTP API over a real listener, on SQLite and on PostgreSQL.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{TestServer, guest_bytes, on_both_backends, tar_gz, tar_gz_with_symlink};

fn echo_rule(r#ref: &str) -> Value {
    json!({
        "ref": r#ref,
        "description": "say hello every ten seconds",
        "trigger": "core.interval",
        "trigger_params": {"every": "10s"},
        "action": "core.echo",
        "action_params": {"message": "hello, world"},
        "enabled": true
    })
}

/// A server whose embedded worker is off, so executions stay queued.
async fn without_worker(backend: support::Backend) -> TestServer {
    let pipeline = support::PipelineConfig {
        embedded_worker: false,
        ..Default::default()
    };
    TestServer::start_full(backend, Default::default(), pipeline).await
}

fn manifest(name: &str, version: &str, components: &[&str], extra: &str) -> String {
    let list: Vec<String> = components.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        "name = \"{name}\"\nversion = \"{version}\"\ndescription = \"test pack\"\ncomponents = [{}]\n{extra}",
        list.join(", ")
    )
}

on_both_backends! {
    async fn health_and_readiness_need_no_token_metrics_and_the_document_do(backend) {
        let s = TestServer::start(backend).await;
        for path in ["/healthz", "/readyz"] {
            let r = s.send(s.request(Method::GET, path, None)).await;
            assert_eq!(r.status, StatusCode::OK, "{path}");
        }
        for path in ["/metrics", "/api/v1/openapi.json"] {
            let r = s.send(s.request(Method::GET, path, None)).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        }
        let metrics = s.request(Method::GET, "/metrics", Some(&s.admin)).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("attune_http_requests_total"), "{metrics}");
        for histogram in ["attune_http_request_duration_seconds", "attune_execution_queued_seconds"] {
            assert!(metrics.contains(&format!("# TYPE {histogram} histogram")), "{histogram}: {metrics}");
        }
        s.finish().await;
    }

    async fn the_last_admin_token_cannot_be_revoked(backend) {
        let s = TestServer::start(backend).await;
        let tokens = s.get("/api/v1/tokens").await.body;
        let first = tokens["items"][0]["id"].as_i64().unwrap();
        let refused = s.send(s.request(Method::DELETE, &format!("/api/v1/tokens/{first}"), Some(&s.admin))).await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
        assert_eq!(s.get("/api/v1/tokens").await.status, StatusCode::OK, "the admin token still works");
        let second = s.token("admin").await;
        let revoked = s.send(s.request(Method::DELETE, &format!("/api/v1/tokens/{first}"), Some(&second))).await;
        assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.body);
        let listed = s.send(s.request(Method::GET, "/api/v1/tokens", Some(&second))).await;
        let live_admins: Vec<i64> = listed.body["items"].as_array().unwrap().iter()
            .filter(|t| t["role"] == "admin" && t["revoked_at"].is_null())
            .map(|t| t["id"].as_i64().unwrap())
            .collect();
        assert_eq!(live_admins.len(), 1);
        let again = s.send(s.request(Method::DELETE, &format!("/api/v1/tokens/{}", live_admins[0]), Some(&second))).await;
        assert_eq!(again.status, StatusCode::CONFLICT, "the new one is now the last");
        s.finish().await;
    }

    async fn out_of_range_pages_and_bad_cursors_are_refused_not_clamped(backend) {
        let s = TestServer::start(backend).await;
        for (path, field) in [
            ("/api/v1/executions?limit=0", "/limit"),
            ("/api/v1/executions?limit=501", "/limit"),
            ("/api/v1/events?after=abc", "/after"),
            ("/api/v1/workers?limit=-3", "/limit"),
            ("/api/v1/rules?limit=100000", "/limit"),
        ] {
            let r = s.get(path).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {}", r.body);
            assert_eq!(r.detail_paths(), [field], "{path}");
        }
        assert_eq!(s.get("/api/v1/rules?after=core.a&limit=500").await.status, StatusCode::OK, "rules are keyed by ref");
        s.finish().await;
    }

    async fn bad_path_parameters_and_wrong_methods_answer_in_the_error_shape(backend) {
        let s = TestServer::start(backend).await;
        let bad = s.get("/api/v1/executions/not-a-number").await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert_eq!(bad.body["error"]["code"], "bad_request", "{}", bad.body);
        for (method, path) in [(Method::PUT, "/api/v1/executions"), (Method::DELETE, "/healthz"), (Method::PATCH, "/api/v1/rules/x.y")] {
            let r = s.send(s.request(method.clone(), path, Some(&s.admin))).await;
            assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_eq!(r.body["error"]["code"], "method_not_allowed", "{method} {path}: {}", r.body);
        }
        s.finish().await;
    }

    async fn every_answer_carries_a_request_id_and_keeps_the_callers(backend) {
        let s = TestServer::start(backend).await;
        let r = s.request(Method::GET, "/healthz", None).send().await.unwrap();
        let id = r.headers().get("x-request-id").expect("a request id").to_str().unwrap().to_string();
        assert_eq!(id.len(), 36, "a UUID: {id}");
        let again = s.request(Method::GET, "/healthz", None).send().await.unwrap();
        assert_ne!(again.headers()["x-request-id"].to_str().unwrap(), id, "each request its own");
        let kept = s.request(Method::GET, "/no/such/route", None).header("x-request-id", "trace-me-42").send().await.unwrap();
        assert_eq!(kept.status(), StatusCode::NOT_FOUND);
        assert_eq!(kept.headers()["x-request-id"], "trace-me-42");
        s.finish().await;
    }

    async fn the_core_pack_is_registered_on_first_start(backend) {
        let s = TestServer::start(backend).await;
        let r = s.get("/api/v1/actions?pack=core").await;
        assert_eq!(r.status, StatusCode::OK);
        let refs: Vec<&str> = r.body["items"].as_array().unwrap().iter()
            .map(|a| a["ref"].as_str().unwrap()).collect();
        assert_eq!(refs, ["core.echo", "core.fail", "core.http", "core.noop", "core.sleep"]);
        let echo = s.get("/api/v1/actions/core.echo").await;
        assert_eq!(echo.body["params_schema"]["required"], json!(["message"]));
        assert_eq!(echo.body["capabilities"][0], "wasi-p2-component");
        let triggers = s.get("/api/v1/trigger-types").await;
        let types: Vec<&str> = triggers.body["items"].as_array().unwrap().iter()
            .map(|t| t["ref"].as_str().unwrap()).collect();
        assert_eq!(types, ["core.cron", "core.execution_finished", "core.inquiry_answered", "core.inquiry_opened", "core.interval", "core.manual", "core.once", "core.webhook"]);
        s.finish().await;
    }

    async fn requests_without_a_valid_token_are_refused(backend) {
        let s = TestServer::start(backend).await;
        let r = s.send(s.request(Method::GET, "/api/v1/rules", None)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.body["error"]["code"], "unauthorized");
        let r = s.send(s.request(Method::GET, "/api/v1/rules", Some("attune_nonsense"))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        s.finish().await;
    }

    async fn roles_limit_what_a_token_may_do(backend) {
        let s = TestServer::start(backend).await;
        let viewer = s.token("viewer").await;
        let operator = s.token("operator").await;
        let worker = s.token("worker").await;

        let r = s.send(s.request(Method::GET, "/api/v1/rules", Some(&viewer))).await;
        assert_eq!(r.status, StatusCode::OK);
        let r = s.send(s.request(Method::POST, "/api/v1/rules", Some(&viewer)).json(&echo_rule("core.v"))).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.body["error"]["code"], "forbidden");
        let r = s.send(s.request(Method::POST, "/api/v1/rules", Some(&operator)).json(&echo_rule("core.o"))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let r = s.send(
            s.request(Method::POST, "/api/v1/packs?name=x&version=1", Some(&operator))
                .header("content-type", "application/wasm")
                .body(guest_bytes("types")),
        ).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = s.send(s.request(Method::GET, "/api/v1/actions", Some(&worker))).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        s.finish().await;
    }

    async fn a_revoked_token_stops_working(backend) {
        let s = TestServer::start(backend).await;
        let created = s.post("/api/v1/tokens", json!({"name": "ci", "role": "viewer"})).await;
        let token = created.body["token"].as_str().unwrap().to_string();
        let id = created.body["id"].as_i64().unwrap();
        let listed = s.get("/api/v1/tokens").await;
        assert!(listed.body.to_string().find(&token).is_none(), "secrets must not be listed");
        let r = s.send(s.request(Method::GET, "/api/v1/packs", Some(&token))).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(s.delete(&format!("/api/v1/tokens/{id}")).await.status, StatusCode::NO_CONTENT);
        let r = s.send(s.request(Method::GET, "/api/v1/packs", Some(&token))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        s.finish().await;
    }

    async fn a_token_revoked_on_another_node_stops_working_within_a_second(backend) {
        let s = TestServer::start(backend).await;
        let created = s.post("/api/v1/tokens", json!({"name": "elsewhere", "role": "viewer"})).await;
        let token = created.body["token"].as_str().unwrap().to_string();
        let r = s.send(s.request(Method::GET, "/api/v1/packs", Some(&token))).await;
        assert_eq!(r.status, StatusCode::OK);
        // Revoked in the database, as another node would, behind this node's back.
        let revoked_at = std::time::Instant::now();
        assert!(s.core.storage.revoke_token(created.body["id"].as_i64().unwrap()).await.unwrap());
        let refused = support::wait_for(std::time::Duration::from_secs(5), || async {
            let r = s.send(s.request(Method::GET, "/api/v1/packs", Some(&token))).await;
            (r.status == StatusCode::UNAUTHORIZED).then_some(())
        }).await;
        assert!(refused.is_some(), "the revoked token kept working");
        assert!(revoked_at.elapsed() < std::time::Duration::from_secs(3), "{:?}", revoked_at.elapsed());
        s.finish().await;
    }

    async fn a_single_component_upload_registers_its_actions_idempotently(backend) {
        let s = TestServer::start(backend).await;
        let r = s.upload_component("types", "1.0.0", guest_bytes("types")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["outcome"], "created");
        assert!(r.body["actions"].as_array().unwrap().contains(&json!("types.roundtrip.u64s")));
        let again = s.upload_component("types", "1.0.0", guest_bytes("types")).await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(again.body["outcome"], "unchanged");
        let conflict = s.upload_component("types", "1.0.0", guest_bytes("hostile")).await;
        assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.body);
        let upgrade = s.upload_component("types", "2.0.0", guest_bytes("hostile")).await;
        assert_eq!(upgrade.status, StatusCode::CREATED);
        assert_eq!(upgrade.body["outcome"], "upgraded");
        let gone = s.get("/api/v1/actions/types.roundtrip.u64s").await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
        assert_eq!(s.get("/api/v1/actions/types.spin").await.status, StatusCode::OK);
        s.finish().await;
    }

    async fn bad_components_are_refused_and_nothing_is_registered(backend) {
        let s = TestServer::start(backend).await;
        let cases: [(&str, Vec<u8>); 4] = [
            ("garbage", b"definitely not wasm".to_vec()),
            ("resourceful", guest_bytes("resourceful")),
            ("needy", guest_bytes("needy")),
            ("coremodule", b"\0asm\x01\0\0\0".to_vec()),
        ];
        for (name, bytes) in cases {
            let r = s.upload_component(name, "1", bytes).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {}", r.body);
            assert_eq!(r.body["error"]["code"], "validation_failed");
            assert_eq!(r.detail_paths(), [format!("/components/{name}.wasm")], "{name}");
            assert_eq!(s.get(&format!("/api/v1/packs/{name}")).await.status, StatusCode::NOT_FOUND);
        }
        let r = s.upload_component("resourceful", "1", guest_bytes("resourceful")).await;
        let message = r.body["error"]["details"][0]["message"].as_str().unwrap();
        assert!(message.contains("resource"), "{message}");
        let r = s.upload_component("needy", "1", guest_bytes("needy")).await;
        let message = r.body["error"]["details"][0]["message"].as_str().unwrap();
        assert!(message.contains("test:needy/elsewhere"), "{message}");
        s.finish().await;
    }

    async fn oversized_uploads_are_refused(backend) {
        let api = attune::api::ApiConfig { max_upload_bytes: 1024, ..Default::default() };
        let s = TestServer::start_with(backend, api).await;
        let r = s.upload_component("types", "1", guest_bytes("types")).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
        assert_eq!(r.body["error"]["code"], "payload_too_large");
        s.finish().await;
    }

    async fn a_larger_upload_limit_raises_the_component_limit_with_it(backend) {
        let api = attune::api::ApiConfig { max_upload_bytes: 80 << 20, ..Default::default() };
        let s = TestServer::start_with(backend, api).await;
        assert_eq!(s.core.runtime.config().max_component_bytes, 80 << 20, "a component as large as an upload fits");
        s.finish().await;
        let s = TestServer::start_with(backend, attune::api::ApiConfig { max_upload_bytes: 1024, ..Default::default() }).await;
        assert_eq!(s.core.runtime.config().max_component_bytes, 50 << 20, "never below the default the core pack fits");
        s.finish().await;
    }

    async fn uploads_are_refused_before_their_body_is_read(backend) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let api = attune::api::ApiConfig { max_upload_bytes: 1024, ..Default::default() };
        let s = TestServer::start_with(backend, api).await;
        let viewer = s.token("viewer").await;
        let addr = s.base.trim_start_matches("http://").to_string();
        // Declares 60 MB and sends a few bytes: an answer that waited for
        // the body would never come.
        for (token, declared, expect) in [(&viewer, 60 << 20, "403"), (&s.admin, 60 << 20, "413"), (&s.admin, 0, "413")] {
            let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let length = if declared > 0 { format!("content-length: {declared}\r\n") } else { "transfer-encoding: chunked\r\n".into() };
            let head = format!(
                "POST /api/v1/packs?name=x&version=1 HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-type: application/wasm\r\n{length}\r\n"
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            if declared == 0 {
                // Chunked with no declared length: 2 KiB past the 1 KiB cap, then silence.
                stream.write_all(format!("800\r\n{}\r\n", "x".repeat(0x800)).as_bytes()).await.unwrap();
            } else {
                stream.write_all(b"\0asm").await.unwrap();
            }
            let mut answer = vec![0u8; 512];
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer))
                .await
                .expect("answered without the rest of the body")
                .unwrap();
            let status_line = String::from_utf8_lossy(&answer[..n]).lines().next().unwrap_or_default().to_string();
            assert!(status_line.contains(expect), "{declared}: {status_line}");
        }
        assert_eq!(s.get("/api/v1/packs/x").await.status, StatusCode::NOT_FOUND, "nothing stored");
        s.finish().await;
    }

    async fn archive_bombs_and_floods_are_refused_and_nothing_is_written(backend) {
        let api = attune::api::ApiConfig { max_upload_bytes: 1 << 20, ..Default::default() };
        let s = TestServer::start_with(backend, api).await;
        let manifest = manifest("bomb", "1", &["types.wasm"], "");
        // 16 MiB of zeros in a few KiB: past the 4 MiB an archive may
        // unpack to under a 1 MiB upload limit.
        type Archive = tar::Builder<flate2::write::GzEncoder<Vec<u8>>>;
        let build = |entries: &mut dyn FnMut(&mut Archive)| {
            let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
            let mut header = tar::Header::new_gnu();
            header.set_size(manifest.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, "pack.toml", manifest.as_bytes()).unwrap();
            entries(&mut tar);
            tar.into_inner().unwrap().finish().unwrap()
        };
        let bomb = build(&mut |tar| {
            let zeros = vec![0u8; 16 << 20];
            let mut header = tar::Header::new_gnu();
            header.set_size(zeros.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, "types.wasm", zeros.as_slice()).unwrap();
        });
        assert!(bomb.len() < 1 << 20, "the bomb fits the upload limit: {}", bomb.len());
        let r = s.upload_archive(bomb).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("unpacks to more than"), "{}", r.body);
        // 100,000 empty entries.
        let flood = build(&mut |tar| {
            for n in 0..100_000 {
                let mut header = tar::Header::new_gnu();
                header.set_size(0);
                header.set_mode(0o644);
                header.set_cksum();
                tar.append_data(&mut header, format!("f/{n}"), std::io::empty()).unwrap();
            }
        });
        assert_eq!(s.get("/api/v1/packs/bomb").await.status, StatusCode::NOT_FOUND, "nothing stored");
        s.finish().await;
        // Under the default upload limit, which the flood fits.
        let s = TestServer::start(backend).await;
        let r = s.upload_archive(flood).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("entries"), "{}", r.body);
        assert_eq!(s.get("/api/v1/packs/bomb").await.status, StatusCode::NOT_FOUND, "nothing stored");
        s.finish().await;
    }

    async fn an_archive_registers_components_and_rules_together(backend) {
        let s = TestServer::start(backend).await;
        let types = guest_bytes("types");
        let toml = manifest("demo", "1.0.0", &["wasm/types.wasm"],
            "[[rules]]\nref = \"demo.add_on_event\"\ntrigger = \"core.manual\"\naction = \"demo.add\"\naction_params = { a = 1, b = \"{{ event.payload.b }}\" }\n");
        let archive = tar_gz(&[("pack.toml", toml.as_bytes()), ("wasm/types.wasm", &types)]);
        let r = s.upload_archive(archive).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["rules"], json!(["demo.add_on_event"]));
        assert_eq!(s.get("/api/v1/rules/demo.add_on_event").await.status, StatusCode::OK);
        assert_eq!(s.get("/api/v1/packs/demo").await.body["description"], "test pack");
        s.finish().await;
    }

    async fn unsafe_or_broken_archives_are_refused(backend) {
        let s = TestServer::start(backend).await;
        let types = guest_bytes("types");
        let ok_manifest = manifest("evil", "1", &["types.wasm"], "");
        let cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
            ("parent traversal", tar_gz(&[("pack.toml", ok_manifest.as_bytes()), ("../types.wasm", &types)]), StatusCode::BAD_REQUEST),
            ("nested traversal", tar_gz(&[("pack.toml", ok_manifest.as_bytes()), ("a/../../x", b"x")]), StatusCode::BAD_REQUEST),
            ("absolute path", tar_gz(&[("pack.toml", ok_manifest.as_bytes()), ("/etc/types.wasm", &types)]), StatusCode::BAD_REQUEST),
            ("symlink", tar_gz_with_symlink("types.wasm", "/etc/passwd"), StatusCode::BAD_REQUEST),
            ("not gzip", b"plain bytes".to_vec(), StatusCode::BAD_REQUEST),
            ("no manifest", tar_gz(&[("types.wasm", &types)]), StatusCode::UNPROCESSABLE_ENTITY),
            ("unknown manifest key", tar_gz(&[("pack.toml", format!("{ok_manifest}colour = \"red\"\n").as_bytes()), ("types.wasm", &types)]), StatusCode::UNPROCESSABLE_ENTITY),
            ("missing component", tar_gz(&[("pack.toml", ok_manifest.as_bytes())]), StatusCode::UNPROCESSABLE_ENTITY),
        ];
        for (what, archive, status) in cases {
            let r = s.upload_archive(archive).await;
            assert_eq!(r.status, status, "{what}: {}", r.body);
            assert!(r.body["error"]["code"].is_string(), "{what}");
        }
        // One bad component spoils the whole pack.
        let both = manifest("mixed", "1", &["types.wasm", "resourceful.wasm"], "");
        let resourceful = guest_bytes("resourceful");
        let r = s.upload_archive(tar_gz(&[("pack.toml", both.as_bytes()), ("types.wasm", &types), ("resourceful.wasm", &resourceful)])).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(s.get("/api/v1/packs/mixed").await.status, StatusCode::NOT_FOUND);
        assert_eq!(s.get("/api/v1/actions/mixed.add").await.status, StatusCode::NOT_FOUND);
        // So does one bad rule.
        let bad_rule = manifest("ruled", "1", &["types.wasm"], "[[rules]]\nref = \"ruled.r\"\ntrigger = \"core.manual\"\naction = \"ruled.add\"\naction_params = { a = \"x\" }\n");
        let r = s.upload_archive(tar_gz(&[("pack.toml", bad_rule.as_bytes()), ("types.wasm", &types)])).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        let paths = r.detail_paths();
        assert!(paths.contains(&"/rules/ruled.r/action_params/a".to_string()), "{paths:?}");
        assert!(paths.contains(&"/rules/ruled.r/action_params/b".to_string()), "{paths:?}");
        assert_eq!(s.get("/api/v1/packs/ruled").await.status, StatusCode::NOT_FOUND);
        s.finish().await;
    }

    async fn rules_are_validated_against_wit_when_saved(backend) {
        let s = TestServer::start(backend).await;
        assert_eq!(s.upload_component("types", "1", guest_bytes("types")).await.status, StatusCode::CREATED);
        let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
            (json!({"action_params": {}}), vec![("/action_params/message", "missing required field")]),
            (json!({"action_params": {"message": 5}}), vec![("/action_params/message", "expected string, got number")]),
            (json!({"action_params": {"message": "x", "extra": 1}}), vec![("/action_params/extra", "unknown field")]),
            (json!({"action": "types.roundtrip.u8s", "action_params": {"v": 256}}), vec![("/action_params/v", "greater than the maximum of 255")]),
            (json!({"action": "types.roundtrip.points", "action_params": {"v": [{"x": 1, "y": 2}, {"x": "one", "y": 2}]}}), vec![("/action_params/v/1/x", "expected integer")]),
            (json!({"action": "core.nope"}), vec![("/action", "unknown action")]),
            (json!({"trigger": "core.nope"}), vec![("/trigger", "unknown trigger type")]),
            (json!({"trigger_params": {"every": "often"}}), vec![("/trigger_params/every", "")]),
            (json!({"trigger_params": {}}), vec![("/trigger_params/every", "missing required field")]),
            (json!({"criteria": "event.payload.count >"}), vec![("/criteria", "not a valid expression")]),
            (json!({"action_params": {"message": "{{ event.payload.x "}}), vec![("/action_params/message", "not a valid template")]),
            (json!({"ref": "NoDot"}), vec![("/ref", "")]),
            (json!({"timeout": "soon"}), vec![("/timeout", "")]),
        ];
        for (patch, expected) in cases {
            let mut rule = echo_rule("core.checked");
            for (k, v) in patch.as_object().unwrap() {
                rule[k] = v.clone();
            }
            let r = s.post("/api/v1/rules", rule.clone()).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{rule}: {}", r.body);
            let details = r.body["error"]["details"].as_array().unwrap();
            for (path, message) in expected {
                assert!(
                    details.iter().any(|d| d["path"] == path && d["message"].as_str().unwrap().contains(message)),
                    "{rule}: want {path} ~ {message:?}, got {details:?}"
                );
            }
        }
        // Several problems come back together.
        let mut rule = echo_rule("core.many");
        rule["trigger_params"] = json!({"every": 10});
        rule["action_params"] = json!({"message": 1});
        let r = s.post("/api/v1/rules", rule).await;
        assert_eq!(r.detail_paths().len(), 2, "{}", r.body);
        s.finish().await;
    }

    async fn templated_params_are_checked_when_they_render_not_when_saved(backend) {
        let s = without_worker(backend).await;
        let mut rule = echo_rule("core.templated");
        rule["trigger"] = json!("core.manual");
        rule["trigger_params"] = json!({});
        rule["action_params"] = json!({"message": "{{ event.payload.host }} is down"});
        rule["criteria"] = json!("event.payload.severity == \"critical\"");
        let r = s.post("/api/v1/rules", rule).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        // No worker is registered yet: saved, with a warning.
        let warning = r.body["warnings"][0].as_str().unwrap();
        assert!(warning.contains("no live worker"), "{warning}");
        s.finish().await;
    }

    async fn rules_can_be_read_updated_toggled_and_deleted(backend) {
        let s = TestServer::start(backend).await;
        assert_eq!(s.post("/api/v1/rules", echo_rule("core.my_echo")).await.status, StatusCode::CREATED);
        let dup = s.post("/api/v1/rules", echo_rule("core.my_echo")).await;
        assert_eq!(dup.status, StatusCode::CONFLICT);
        let shown = s.get("/api/v1/rules/core.my_echo").await;
        assert_eq!(shown.body["action_params"], json!({"message": "hello, world"}));
        assert_eq!(shown.body["trigger_params"], json!({"every": "10s"}));

        let mut changed = echo_rule("core.my_echo");
        changed["action_params"] = json!({"message": "changed"});
        let r = s.put("/api/v1/rules/core.my_echo", changed).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["rule"]["action_params"]["message"], "changed");
        let mut broken = echo_rule("core.my_echo");
        broken["action_params"] = json!({});
        assert_eq!(s.put("/api/v1/rules/core.my_echo", broken).await.status, StatusCode::UNPROCESSABLE_ENTITY);

        let r = s.post("/api/v1/rules/core.my_echo/disable", json!({})).await;
        assert_eq!(r.body["enabled"], false);
        let listed = s.get("/api/v1/rules?enabled=false").await;
        assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
        let r = s.post("/api/v1/rules/core.my_echo/enable", json!({})).await;
        assert_eq!(r.body["enabled"], true);
        assert_eq!(s.delete("/api/v1/rules/core.my_echo").await.status, StatusCode::NO_CONTENT);
        assert_eq!(s.get("/api/v1/rules/core.my_echo").await.status, StatusCode::NOT_FOUND);
        assert_eq!(s.delete("/api/v1/rules/core.my_echo").await.status, StatusCode::NOT_FOUND);
        s.finish().await;
    }

    async fn lists_are_paginated_with_a_cursor(backend) {
        let s = TestServer::start(backend).await;
        for i in 0..5 {
            let r = s.post("/api/v1/rules", echo_rule(&format!("core.r{i}"))).await;
            assert_eq!(r.status, StatusCode::CREATED);
        }
        let mut seen = Vec::new();
        let mut path = "/api/v1/rules?limit=2".to_string();
        for _ in 0..10 {
            let r = s.get(&path).await;
            let items = r.body["items"].as_array().unwrap();
            assert!(items.len() <= 2);
            seen.extend(items.iter().map(|i| i["ref"].as_str().unwrap().to_string()));
            match r.body["next"].as_str() {
                Some(next) => path = format!("/api/v1/rules?limit=2&after={next}"),
                None => break,
            }
        }
        // The hello-world rule of a fresh installation is listed too.
        assert_eq!(seen, ["core.r0", "core.r1", "core.r2", "core.r3", "core.r4", "core.timer_echo_10s"]);

        for i in 0..3 {
            s.post("/api/v1/events", json!({"trigger": "core.manual", "payload": {"i": i}})).await;
        }
        let first = s.get("/api/v1/events?limit=2").await;
        let ids: Vec<i64> = first.body["items"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
        assert!(ids[0] > ids[1], "newest first: {ids:?}");
        let next = first.body["next"].as_str().unwrap();
        let second = s.get(&format!("/api/v1/events?limit=2&after={next}")).await;
        assert_eq!(second.body["items"].as_array().unwrap().len(), 1);
        assert!(second.body["next"].is_null());
        s.finish().await;
    }

    async fn manual_events_are_recorded(backend) {
        let s = TestServer::start(backend).await;
        let r = s.post("/api/v1/events", json!({"trigger": "core.manual", "payload": {"host": "db1"}})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let id = r.body["id"].as_i64().unwrap();
        let shown = s.get(&format!("/api/v1/events/{id}")).await;
        assert_eq!(shown.body["payload"], json!({"host": "db1"}));
        let r = s.post("/api/v1/events", json!({"trigger": "core.interval", "payload": {}})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        let r = s.post("/api/v1/events", json!({"trigger": "core.manual", "payload": [1]})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.detail_paths(), ["/payload"]);
        s.finish().await;
    }

    async fn direct_runs_are_checked_queued_and_cancellable(backend) {
        let s = without_worker(backend).await;
        let r = s.post("/api/v1/executions", json!({"action": "core.echo", "params": {"message": 1}})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.detail_paths(), ["/params/message"]);
        let r = s.post("/api/v1/executions", json!({"action": "core.missing"})).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = s.post("/api/v1/executions", json!({"action": "core.echo", "params": {"message": "hi"}, "timeout": "5s"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["status"], "requested");
        assert_eq!(r.body["timeout_ms"], 5000);
        assert!(r.body["status_reason"].as_str().unwrap().contains("waiting for a worker"));
        let id = r.body["id"].as_i64().unwrap();
        let listed = s.get("/api/v1/executions?status=requested").await;
        assert_eq!(listed.body["items"][0]["id"], id);
        assert!(listed.body["items"][0].get("params").is_none(), "a list sends summaries: {}", listed.body);
        let full = s.get("/api/v1/executions?status=requested&fields=full").await;
        assert_eq!(full.body["items"][0]["params"], json!({"message": "hi"}), "{}", full.body);
        assert_eq!(s.get(&format!("/api/v1/executions/{id}")).await.body["params"], json!({"message": "hi"}), "the detail is whole");
        let bad = s.get("/api/v1/executions?fields=everything").await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
        let r = s.post(&format!("/api/v1/executions/{id}/cancel"), json!({})).await;
        assert_eq!(r.body["status"], "cancelled");
        assert!(r.body["finished_at"].is_i64());
        assert_eq!(s.post("/api/v1/executions/999999/cancel", json!({})).await.status, StatusCode::NOT_FOUND);
        s.finish().await;
    }

    async fn bad_input_always_gets_the_error_shape(backend) {
        let s = TestServer::start(backend).await;
        let malformed = s.send(
            s.request(Method::POST, "/api/v1/rules", Some(&s.admin))
                .header("content-type", "application/json")
                .body("{\"ref\": "),
        ).await;
        assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
        assert_eq!(malformed.body["error"]["code"], "bad_request");
        let wrong_shape = s.post("/api/v1/rules", json!({"ref": 5})).await;
        assert_eq!(wrong_shape.status, StatusCode::UNPROCESSABLE_ENTITY);
        let no_type = s.send(s.request(Method::POST, "/api/v1/rules", Some(&s.admin)).body("{}")).await;
        assert_eq!(no_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let unknown = s.get("/api/v1/nothing-here").await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        assert_eq!(unknown.body["error"]["code"], "not_found");
        let bad_query = s.get("/api/v1/rules?limit=many").await;
        assert_eq!(bad_query.status, StatusCode::BAD_REQUEST);
        assert!(bad_query.body["error"]["message"].is_string());
        let wrong_type = s.send(
            s.request(Method::POST, "/api/v1/packs", Some(&s.admin))
                .header("content-type", "text/plain")
                .body("hello"),
        ).await;
        assert_eq!(wrong_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        s.finish().await;
    }

    async fn the_openapi_document_describes_every_route_consistently(backend) {
        let s = TestServer::start(backend).await;
        let doc = s.get("/api/v1/openapi.json").await.body;
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        for p in ["/api/v1/packs", "/api/v1/rules", "/api/v1/rules/{ref}", "/api/v1/executions/{id}/cancel", "/api/v1/events", "/api/v1/workers", "/api/v1/workers/{id}/reassign", "/api/v1/trigger-types"] {
            assert!(paths.contains_key(p), "{p} missing");
        }
        // Every operation answers with documented responses, errors among
        // them in the one shape, and every $ref resolves.
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}");
                assert_eq!(op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody", "{method} {path}");
            }
        }
        // Values that may be any JSON (a result may be a string) are not documented as objects.
        let execution = &doc["components"]["schemas"]["ExecutionView"]["properties"];
        for field in ["result", "error", "params", "logs"] {
            assert!(execution[field].get("type").is_none(), "{field}: {}", execution[field]);
        }
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r.trim_start_matches('#');
            assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
        }
        s.finish().await;
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    if let Some(s) = v.as_str() {
                        out.push(s.to_string());
                    }
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_refs(i, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_admin_token_is_created_once_and_readable_only_by_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let s = TestServer::start(support::Backend::Sqlite).await;
    let path = s.data_dir.path().join(attune::server::ADMIN_TOKEN_FILE);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), s.admin);
    let config = attune::server::ServerConfig {
        data_dir: s.data_dir.path().to_path_buf(),
        database_url: None,
        cache_dir: None,
        api: Default::default(),
        pipeline: Default::default(),
        outbound: Default::default(),
        max_result_bytes: 1 << 20,
        scratch_quota_bytes: 64 << 20,
        secrets_key_file: None,
        telemetry: None,
    };
    let data_dir = s.data_dir.path().to_path_buf();
    let mode_of = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode_of(&data_dir),
        0o700,
        "the data directory is its owner's"
    );
    assert_eq!(
        mode_of(&data_dir.join("attune.db")),
        0o600,
        "the database holds params and outputs"
    );
    assert_eq!(mode_of(&data_dir.join("components")), 0o700);
    s.core.dispatch.shutdown().await;
    s.core.storage.close().await;
    // Loosened by someone else meanwhile: the next start tightens them again.
    for (p, mode) in [
        (data_dir.clone(), 0o755),
        (data_dir.join("attune.db"), 0o644),
        (path.clone(), 0o644),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let again = attune::server::Server::start(&config).await.unwrap();
    assert!(
        again.new_admin_token.is_none(),
        "a second start must not mint another admin token"
    );
    assert!(data_dir.join("attune.db").exists());
    assert_eq!(mode_of(&data_dir), 0o700);
    assert_eq!(mode_of(&data_dir.join("attune.db")), 0o600);
    assert_eq!(mode_of(&path), 0o600);
}
