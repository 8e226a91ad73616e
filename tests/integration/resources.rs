//! What each execution used, recorded on it and summed in the metrics.

use reqwest::StatusCode;
use serde_json::json;
use support::{TestServer, on_both_backends};

on_both_backends! {
    async fn each_execution_records_what_it_used_and_the_metrics_sum_it(backend) {
        let s = TestServer::start(backend).await;
        // core.noop: the hello-world timer runs core.echo meanwhile.
        let r = s.post("/api/v1/executions", json!({"action": "core.noop", "params": {}})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let e = s.ended(r.body["id"].as_i64().unwrap()).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        let used = &e["resources"];
        assert!(used["cpu_us"].as_u64().unwrap() > 0, "{used}");
        // At least one 64 KiB page of linear memory.
        assert!(used["peak_memory_bytes"].as_u64().unwrap() >= 65536, "{used}");
        assert_eq!(used["instances"], 1, "{used}");
        assert_eq!(used["outbound_requests"], 0, "{used}");
        assert!(used["stdout_bytes"].is_u64() && used["stderr_bytes"].is_u64(), "{used}");
        // Lists carry it too.
        let listed = s.get("/api/v1/executions?action=core.noop").await.body;
        assert_eq!(listed["items"][0]["resources"], *used);

        // An execution that never ran in a sandbox has none.
        let r = s.post("/api/v1/executions", json!({"action": "core.sleep", "params": {"seconds": 30}})).await;
        let id = r.body["id"].as_i64().unwrap();
        s.post(&format!("/api/v1/executions/{id}/cancel"), json!({})).await;
        let cancelled = s.ended(id).await;
        if cancelled["started_at"].is_null() {
            assert!(cancelled.get("resources").is_none(), "{cancelled}");
        }

        let metrics = s.request(reqwest::Method::GET, "/metrics", Some(&s.admin)).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains(r#"attune_execution_cpu_seconds_count{action="core.noop"} 1"#), "{metrics}");
        assert!(metrics.contains(r#"attune_execution_peak_memory_bytes_count{action="core.noop"} 1"#), "{metrics}");
        s.finish().await;
    }
}

/// A pack archive of test guest `guest` named `name` with `extra` lines in
/// its manifest.
fn pack(name: &str, guest: &str, extra: &str) -> Vec<u8> {
    let manifest =
        format!("name = \"{name}\"\nversion = \"1.0.0\"\ncomponents = [\"{guest}.wasm\"]\n{extra}");
    support::tar_gz(&[
        ("pack.toml", manifest.as_bytes()),
        (&format!("{guest}.wasm"), &support::guest_bytes(guest)),
    ])
}

on_both_backends! {
    async fn each_quota_stops_its_guest_naming_the_quota_and_the_figure(backend) {
        let s = TestServer::start(backend).await;
        let bad = s.upload_archive(pack("hungry", "hostile", "max_cpu = \"soon\"\nmax_memory = \"1KiB\"\n")).await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
        assert_eq!(bad.detail_paths(), ["/pack.toml/max_memory", "/pack.toml/max_cpu"], "{}", bad.body);
        let r = s.upload_archive(pack("hungry", "hostile", "max_cpu = \"100ms\"\nmax_memory = \"4MiB\"\n")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let grants = s.get("/api/v1/packs/hungry").await.body["grants"].clone();
        assert_eq!(grants["max_cpu"], "100ms", "{grants}");
        assert_eq!(grants["max_memory"], "4MiB", "{grants}");

        let run = |action: &'static str, params: serde_json::Value| {
            let s = &s;
            async move {
                let r = s.post("/api/v1/executions", json!({"action": action, "params": params})).await;
                assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
                s.ended(r.body["id"].as_i64().unwrap()).await
            }
        };
        let spun = run("hungry.spin", json!({})).await;
        assert_eq!(spun["status"], "failed", "{spun}");
        let why = spun["error"].as_str().unwrap();
        assert!(why.starts_with("quota max_cpu of 100ms reached: it spent "), "{why}");
        let cpu = spun["resources"]["cpu_us"].as_u64().unwrap();
        assert!((100_000..2_000_000).contains(&cpu), "stopped soon after: {cpu} µs");

        let grown = run("hungry.grow", json!({"mib": 16})).await;
        assert_eq!(grown["status"], "failed", "{grown}");
        let why = grown["error"].as_str().unwrap();
        assert!(why.starts_with("quota max_memory of 4194304 bytes reached: it asked for "), "{why}");
        let small = run("hungry.grow", json!({"mib": 1})).await;
        assert_eq!(small["status"], "succeeded", "under the quota: {small}");

        let (port, _server) = crate::replay::echo_server().await;
        let r = s.upload_archive(pack("fetcher", "fetch", "allowed_outbound_hosts = [\"http://127.0.0.1:*\"]\n")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        // An admin sets a quota on its own.
        let r = s.put("/api/v1/packs/fetcher/grants", json!({
            "allowed_outbound_hosts": ["http://127.0.0.1:*"], "max_outbound_requests": 2,
        })).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let url = format!("http://127.0.0.1:{port}/");
        let two = run("fetcher.get-many", json!({"url": url, "times": 2})).await;
        assert_eq!(two["status"], "succeeded", "{two}");
        // Host calls by kind, and the bytes the answers carried.
        let used = &two["resources"];
        assert_eq!(used["host_calls"]["http"], 2, "{used}");
        assert_eq!(used["outbound_requests"], 2, "{used}");
        assert!(used["outbound_bytes_received"].as_u64().unwrap() > 20, "{used}");
        assert_eq!(used["outbound_bytes_sent"], 0, "GETs send no body: {used}");
        // Each call timed, for the console's timeline: names and times only.
        let calls = used["calls"].as_array().unwrap_or_else(|| panic!("{used}"));
        assert_eq!(calls.len(), 2, "{used}");
        assert_eq!(calls[0]["kind"], "http");
        assert_eq!(calls[0]["name"], "GET 127.0.0.1");
        assert!(calls[1]["start_us"].as_u64() >= calls[0]["start_us"].as_u64(), "{used}");
        assert!(calls[0].get("attributes").is_none(), "{used}");
        let three = run("fetcher.get-many", json!({"url": url, "times": 3})).await;
        assert_eq!(three["status"], "failed", "{three}");
        assert_eq!(three["error"], "quota max_outbound_requests of 2 reached: request 3 was refused");
        let metrics = s.request(reqwest::Method::GET, "/metrics", Some(&s.admin)).send().await.unwrap().text().await.unwrap();
        // Two and three (the refused one counts too).
        assert!(metrics.contains(r#"attune_execution_host_calls_total{action="fetcher.get-many",kind="http"} 5"#), "{metrics}");
        assert!(metrics.contains(r#"attune_execution_outbound_bytes_total{action="fetcher.get-many",kind="received"}"#), "{metrics}");
        let r = s.put("/api/v1/packs/fetcher/grants", json!({"max_outbound_requests": 0})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(r.detail_paths(), ["/max_outbound_requests"]);
        s.finish().await;
    }
}
