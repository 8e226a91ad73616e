//! Sensors end to end on both backends: a pack's exports polled on a
//! schedule (`actions/sensing`), their records becoming typed events.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestServer, guest_bytes, on_both_backends, tar_gz, wait_for};

/// Uploads pack `tracker` at `version` with the sensing component and
/// `sensors` (TOML `[[sensors]]` tables).
async fn upload(s: &TestServer, version: &str, sensors: &str) -> support::Reply {
    let manifest = format!(
        "name = \"tracker\"\nversion = \"{version}\"\ncomponents = [\"sensing.wasm\"]\n{sensors}"
    );
    let wasm = guest_bytes("sensing");
    s.upload_archive(tar_gz(&[
        ("pack.toml", manifest.as_bytes()),
        ("sensing.wasm", &wasm),
    ]))
    .await
}

fn sensor(name: &str, export: &str, every: &str) -> String {
    format!("[[sensors]]\nname = \"{name}\"\nexport = \"{export}\"\nevery = \"{every}\"\n")
}

/// Waits until `sensor` has a poll matching `check`; the sensor as shown.
async fn polled(s: &TestServer, sensor: &str, check: impl Fn(&Value) -> bool) -> Value {
    wait_for(Duration::from_secs(20), || async {
        let v = s.get(&format!("/api/v1/sensors/{sensor}")).await.body;
        v["runs"].as_array()?.iter().any(&check).then_some(v)
    })
    .await
    .unwrap_or_else(|| panic!("{sensor} never polled as expected"))
}

on_both_backends! {
    async fn a_sensor_s_records_become_typed_events_that_rules_act_on(backend) {
        let s = TestServer::start(backend).await;
        let sensors = sensor("new_issues", "scan", "1s");
        let r = upload(&s, "1", &sensors).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

        // The trigger type carries the record's schema; the export is no action.
        let t = s.get("/api/v1/trigger-types/tracker.new_issues").await;
        assert_eq!(t.status, StatusCode::OK, "{}", t.body);
        let fields = t.body["payload_schema"]["properties"].as_object().unwrap();
        assert_eq!(fields.keys().collect::<Vec<_>>(), ["id", "labels", "title"]);
        let actions = s.get("/api/v1/actions?pack=tracker").await.body;
        let refs: Vec<&str> = actions["items"].as_array().unwrap().iter().map(|a| a["ref"].as_str().unwrap()).collect();
        assert_eq!(refs, ["tracker.broken", "tracker.crash", "tracker.flood", "tracker.hello"], "`scan` runs a sensor");
        assert_eq!(s.get("/api/v1/actions/tracker.scan").await.status, StatusCode::NOT_FOUND);

        // A template reading a field the payload does not have is refused.
        let bad = json!({"ref": "tracker.bad", "trigger": "tracker.new_issues", "action": "core.echo",
                         "action_params": {"message": "{{ event.payload.nope }}"}});
        let r = s.post("/api/v1/rules", bad).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(r.detail_paths(), ["/action_params/message"]);
        let bad = json!({"ref": "tracker.bad", "trigger": "tracker.new_issues", "action": "core.echo",
                         "criteria": "event.payload.severity == 'high'", "action_params": {"message": "x"}});
        let r = s.post("/api/v1/rules", bad).await;
        assert_eq!(r.detail_paths(), ["/criteria"], "{}", r.body);

        let rule = json!({"ref": "tracker.echo_issue", "trigger": "tracker.new_issues", "action": "core.echo",
                          "criteria": "'bug' in event.payload.labels",
                          "action_params": {"message": "{{ event.payload.title }} (#{{ event.payload.id }})"}});
        let r = s.post("/api/v1/rules", rule).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let echoed = wait_for(Duration::from_secs(20), || async {
            let v = s.get("/api/v1/executions?rule=tracker.echo_issue&fields=full&limit=500").await.body;
            let results: Vec<String> = v["items"].as_array()?.iter()
                .filter_map(|e| e["result"].as_str().map(str::to_string)).collect();
            (results.len() >= 4).then_some(results)
        })
        .await
        .expect("the rule ran for the sensor's events");
        for n in 1..=4 {
            assert!(echoed.contains(&format!("issue {n} (#{n})")), "{echoed:?}");
        }
        let shown = polled(&s, "tracker.new_issues", |r| r["status"] == "succeeded" && r["events"] == 2).await;
        assert_eq!(shown["failures"], 0);
        assert_eq!(shown["every_ms"], 1000);

        // Disabled, it polls no more.
        let r = s.post("/api/v1/sensors/tracker.new_issues/disable", json!({})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before = s.get("/api/v1/sensors/tracker.new_issues").await.body["runs"].as_array().unwrap().len();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let after = s.get("/api/v1/sensors/tracker.new_issues").await.body["runs"].as_array().unwrap().len();
        assert_eq!(before, after, "no poll while disabled");
        s.finish().await;
    }

    async fn failing_sensors_are_recorded_and_backed_off_and_floods_are_cut(backend) {
        let s = TestServer::start(backend).await;
        let sensors = [sensor("failing", "broken", "1s"), sensor("crashing", "crash", "1s"), sensor("flooding", "flood", "1s")].concat();
        let r = upload(&s, "1", &sensors).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

        let failing = polled(&s, "tracker.failing", |r| r["status"] == "failed").await;
        let run = &failing["runs"][0];
        assert!(run["error"].to_string().contains("503"), "{run}");
        let crashing = polled(&s, "tracker.crashing", |r| r["status"] == "failed").await;
        assert!(crashing["runs"][0]["error"].to_string().contains("trap"), "{crashing}");
        let flooding = polled(&s, "tracker.flooding", |r| r["events"] == 1000).await;
        assert!(flooding["runs"][0]["warning"].as_str().unwrap().contains("1500 records"), "{flooding}");

        // Each failure doubles the wait: after three failures the next poll
        // is at least 8 s after the last.
        let backed = wait_for(Duration::from_secs(30), || async {
            let v = s.get("/api/v1/sensors/tracker.failing").await.body;
            (v["failures"].as_i64()? >= 3).then_some(v)
        })
        .await
        .expect("three failures");
        let last = backed["runs"][0]["finished_at"].as_i64().unwrap();
        assert!(backed["next_run_at"].as_i64().unwrap() - last >= 7_000, "{backed}");

        // Upgrading replaces the sensors; a rule on a sensor that went away
        // is disabled with the reason.
        let rule = json!({"ref": "tracker.on_flood", "trigger": "tracker.flooding", "action": "core.noop"});
        assert_eq!(s.post("/api/v1/rules", rule).await.status, StatusCode::CREATED);
        let r = upload(&s, "2", &sensor("failing", "broken", "1s")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(s.get("/api/v1/sensors/tracker.flooding").await.status, StatusCode::NOT_FOUND);
        assert_eq!(s.get("/api/v1/trigger-types/tracker.flooding").await.status, StatusCode::NOT_FOUND);
        let rule = s.get("/api/v1/rules/tracker.on_flood").await.body;
        assert_eq!(rule["enabled"], false, "{rule}");
        assert!(rule["disabled_reason"].as_str().unwrap().contains("tracker.flooding"), "{rule}");

        // Deleting the pack removes its sensors and their trigger types.
        assert_eq!(s.delete("/api/v1/packs/tracker").await.status, StatusCode::NO_CONTENT);
        let listed = s.get("/api/v1/sensors").await.body;
        assert_eq!(listed["items"], json!([]));
        assert_eq!(s.get("/api/v1/trigger-types/tracker.failing").await.status, StatusCode::NOT_FOUND);
        s.finish().await;
    }

    async fn a_bad_sensor_is_refused_at_upload_with_its_path(backend) {
        let s = TestServer::start(backend).await;
        let sensors = [sensor("a", "hello", "1s"), sensor("b", "missing", "1s"), sensor("c", "scan", "10ms")].concat();
        let r = upload(&s, "1", &sensors).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(r.detail_paths(), ["/pack.toml/sensors/0/export", "/pack.toml/sensors/1/export", "/pack.toml/sensors/2/every"]);
        s.finish().await;
    }

    async fn each_tick_polls_once_across_nodes_and_a_restart(backend) {
        let s = TestServer::start(backend).await;
        let r = upload(&s, "1", &sensor("new_issues", "scan", "1s")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        // A second node on the same database fires timers and sensors too
        // (on SQLite it shares the file).
        let other = s.second_node(Default::default()).await;
        tokio::time::sleep(Duration::from_millis(3500)).await;
        other.finish().await;
        // A poll the stop interrupted holds its sensor back until its lease
        // expires; a short lease lets the next ones come soon.
        let quick = support::PipelineConfig { lease: Duration::from_secs(1), ..Default::default() };
        let s = s.restart(quick).await;
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let polls = s.get("/api/v1/executions?action=tracker.scan&fields=full&limit=500").await.body;
        let mut created: Vec<i64> = polls["items"].as_array().unwrap().iter()
            .map(|e| e["created_at"].as_i64().unwrap()).collect();
        created.sort_unstable();
        assert!(created.len() >= 4, "{created:?}");
        for pair in created.windows(2) {
            assert!(pair[1] - pair[0] >= 900, "two polls for one tick: {created:?}");
        }
        // Each poll's records became events once: no id twice.
        let events = s.get("/api/v1/events?trigger=tracker.new_issues&limit=500").await.body;
        let ids: Vec<i64> = events["items"].as_array().unwrap().iter()
            .map(|e| e["payload"]["id"].as_i64().unwrap()).collect();
        let unique: std::collections::BTreeSet<i64> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
        assert!(ids.len() >= 8, "{ids:?}");
        s.finish().await;
    }
}
