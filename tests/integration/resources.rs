//! What each execution used, recorded on it and summed in the metrics.

use reqwest::StatusCode;
use serde_json::json;
use support::{TestServer, on_both_backends};

on_both_backends! {
    async fn each_execution_records_what_it_used_and_the_metrics_sum_it(backend) {
        let s = TestServer::start(backend).await;
        let r = s.post("/api/v1/executions", json!({"action": "core.echo", "params": {"message": "hello"}})).await;
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
        let listed = s.get("/api/v1/executions?action=core.echo").await.body;
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
        assert!(metrics.contains(r#"attune_execution_cpu_seconds_count{action="core.echo"} 1"#), "{metrics}");
        assert!(metrics.contains(r#"attune_execution_peak_memory_bytes_count{action="core.echo"} 1"#), "{metrics}");
        s.finish().await;
    }
}
