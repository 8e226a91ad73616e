//! Crashes and outages against a real `attune serve` process: `kill -9` while
//! events arrive, and (with PostgreSQL installed) the database stopped under
//! load. What got a 2xx must not be lost, and nothing may run twice.

mod common;
#[path = "crash/inquiries.rs"]
mod inquiries;
#[path = "crash/policies.rs"]
mod policies;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use serde_json::{Value, json};

/// `attune serve` on `port` with `data_dir`, and the extra arguments.
fn serve(port: u16, data_dir: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_attune"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log(data_dir))
        .spawn()
        .unwrap()
}

/// The server's log, appended to `serve.log` in its data directory, so a
/// failure can show what the server said.
fn log(data_dir: &Path) -> std::fs::File {
    std::fs::create_dir_all(data_dir).unwrap();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join("serve.log"))
        .unwrap()
}

fn server_log(data_dir: &Path) -> String {
    let text = std::fs::read_to_string(data_dir.join("serve.log")).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(40).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Kills the child when dropped, so a failing test leaves no server behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn ready(port: u16, data_dir: &Path) -> Api {
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let started = Instant::now();
        loop {
            let token = std::fs::read_to_string(data_dir.join("admin.token")).ok();
            let ready = http.get(format!("{base}/readyz")).send().await;
            if let (Some(token), Ok(r)) = (token, ready)
                && r.status().is_success()
            {
                return Api {
                    http,
                    base,
                    token: token.trim().to_string(),
                };
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the server did not get ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            rb = rb.json(&body);
        }
        match rb.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    /// Uploads a pack archive; panics unless it is registered.
    async fn upload(&self, archive: Vec<u8>) {
        common::upload_pack(&self.http, &self.base, &self.token, archive).await;
    }

    /// Waits (up to 60 s) until workflow `id` is no longer running; its
    /// record.
    async fn workflow_ended(&self, id: i64, data_dir: &Path) -> Value {
        let started = Instant::now();
        loop {
            let (_, e) = self
                .call(reqwest::Method::GET, &format!("/executions/{id}"), None)
                .await;
            if !matches!(e["status"].as_str(), Some("running") | None) {
                return e;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the workflow never ended: {e}\n{}",
                server_log(data_dir)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every execution, whole, following the list's cursor.
    async fn executions(&self) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = String::new();
        loop {
            let path = format!("/executions?fields=full&limit=500{after}");
            let (status, page) = self.call(reqwest::Method::GET, &path, None).await;
            assert_eq!(status, 200, "{page}");
            all.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next"].as_str() {
                Some(next) => after = format!("&after={next}"),
                None => return all,
            }
        }
    }
}

/// The markers of the events answered with a 2xx, with when they were, and
/// every status answered (0: no answer).
/// The markers acknowledged and when, every status answered, and the
/// slowest answer.
type Posted = (
    Vec<(String, Instant)>,
    std::collections::BTreeSet<u16>,
    Duration,
);

/// Posts events from a task of its own at `rate` a second for `lasting`.
fn sending(api: &Api, rate: u32, lasting: Duration) -> tokio::task::JoinHandle<Posted> {
    let api = api.clone();
    tokio::spawn(async move { post_events(&api, "ev", rate, Instant::now() + lasting).await })
}

/// Posts one manual event a tick at `rate` per second until `until`.
async fn post_events(api: &Api, prefix: &str, rate: u32, until: Instant) -> Posted {
    let mut acknowledged = Vec::new();
    let mut statuses = std::collections::BTreeSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    let mut slowest = Duration::ZERO;
    let mut n = 0;
    while Instant::now() < until {
        tick.tick().await;
        n += 1;
        let marker = format!("{prefix}-{n}");
        let asked = Instant::now();
        let (status, _) = api
            .call(
                reqwest::Method::POST,
                "/events",
                Some(json!({"trigger": "core.manual", "payload": {"marker": marker}})),
            )
            .await;
        slowest = slowest.max(asked.elapsed());
        statuses.insert(status);
        if (200..300).contains(&status) {
            acknowledged.push((marker, Instant::now()));
        }
    }
    (acknowledged, statuses, slowest)
}

async fn echo_rule(api: &Api) {
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            "/rules",
            Some(json!({
                "ref": "core.crash_echo",
                "trigger": "core.manual",
                "action": "core.echo",
                "action_params": {"message": "{{ event.payload.marker }}"},
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// Waits until every execution has ended; then checks that each marker in
/// `acknowledged` ran exactly once and no marker ran twice. Returns the
/// executions by marker.
async fn every_event_ran_once(
    api: &Api,
    acknowledged: &[(String, Instant)],
) -> HashMap<String, Value> {
    let started = Instant::now();
    let executions = loop {
        let all = api.executions().await;
        let open = all
            .iter()
            .filter(|e| {
                matches!(
                    e["status"].as_str(),
                    Some("requested" | "scheduled" | "running")
                )
            })
            .count();
        if open == 0 {
            break all;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{open} executions never ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut by_marker: HashMap<String, Value> = HashMap::new();
    for e in executions {
        let marker = e["params"]["message"].as_str().unwrap().to_string();
        if let Some(before) = by_marker.insert(marker.clone(), e.clone()) {
            panic!("{marker} ran twice: {before} and {e}");
        }
    }
    for (marker, _) in acknowledged {
        let e = by_marker
            .get(marker)
            .unwrap_or_else(|| panic!("acknowledged event {marker} has no execution"));
        assert!(
            matches!(e["status"].as_str(), Some("succeeded" | "abandoned")),
            "{e}"
        );
    }
    by_marker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_stream_loses_no_acknowledged_event_and_runs_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // A short lease, so the executions the dead server's worker held are
    // taken back soon after the restart.
    let args = ["--lease", "1s"];
    let mut first = Reaped(serve(port, dir.path(), &args));
    let api = Api::ready(port, dir.path()).await;
    echo_rule(&api).await;

    let sender = sending(&api, 200, Duration::from_secs(4));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.0.kill().unwrap(); // SIGKILL: no drain, no final writes
    first.0.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _second = Reaped(serve(port, dir.path(), &args));
    let (acknowledged, _, _) = sender.await.unwrap();
    let api = Api::ready(port, dir.path()).await;
    assert!(
        acknowledged.len() > 100,
        "only {} events were acknowledged",
        acknowledged.len()
    );
    let ran = every_event_ran_once(&api, &acknowledged).await;
    let succeeded = ran.values().filter(|e| e["status"] == "succeeded").count();
    eprintln!(
        "{} events acknowledged, {} executions, {succeeded} succeeded",
        acknowledged.len(),
        ran.len()
    );
}

const RELAY: &str = r#"
input: {type: object}
tasks:
  first: {action: core.echo, input: {message: first}, next: [{do: nap}]}
  nap: {action: core.sleep, input: {seconds: 2}, next: [{when: succeeded, do: fan}]}
  fan:
    action: core.echo
    with_items: "{{ [1, 2, 3] }}"
    concurrency: 2
    input: {message: "item {{ item }}"}
    next: [{when: succeeded, do: last}]
  last: {action: core.echo, input: {message: last}}
output: {last: "{{ tasks.last.result }}"}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_survives_a_kill_mid_task_and_runs_each_task_once() {
    let dir = tempfile::tempdir().unwrap();
    let archive = common::workflow_pack(dir.path(), "flows", "relay", RELAY);
    let data = dir.path().join("data");
    let port = free_port();
    let args = ["--lease", "1s"];
    let mut first = Reaped(serve(port, &data, &args));
    let api = Api::ready(port, &data).await;
    api.upload(archive).await;
    // Two attempts: the task the kill interrupts runs again in the same
    // execution once its lease expires.
    let (status, run) = api
        .call(
            reqwest::Method::POST,
            "/executions",
            Some(json!({"action": "flows.relay", "params": {}, "max_attempts": 2})),
        )
        .await;
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_i64().unwrap();
    let children = |api: Api| async move {
        let (_, page) = api
            .call(
                reqwest::Method::GET,
                &format!("/executions?parent={id}&limit=500"),
                None,
            )
            .await;
        page["items"].as_array().cloned().unwrap_or_default()
    };
    let started = Instant::now();
    while !children(api.clone())
        .await
        .iter()
        .any(|c| c["task"] == "nap" && c["status"] == "running")
    {
        assert!(started.elapsed() < Duration::from_secs(20), "nap never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.0.kill().unwrap(); // SIGKILL while `nap` sleeps
    first.0.wait().unwrap();
    let _second = Reaped(serve(port, &data, &args));
    let api = Api::ready(port, &data).await;
    let workflow = api.workflow_ended(id, &data).await;
    assert_eq!(workflow["status"], "succeeded", "{workflow}");
    assert_eq!(workflow["result"], json!({"last": "last"}));
    let mut tasks: Vec<String> = children(api.clone())
        .await
        .iter()
        .map(|c| c["task"].as_str().unwrap().to_string())
        .collect();
    tasks.sort();
    assert_eq!(
        tasks,
        ["fan[0]", "fan[1]", "fan[2]", "first", "last", "nap"],
        "each task ran once"
    );
    let nap = children(api.clone())
        .await
        .into_iter()
        .find(|c| c["task"] == "nap")
        .unwrap();
    let (_, attempts) = api
        .call(
            reqwest::Method::GET,
            &format!("/executions/{}/attempts", nap["id"]),
            None,
        )
        .await;
    eprintln!("nap's attempts: {attempts}");
}

/// A PostgreSQL instance of the test's own, in its own directory on its own
/// port, stopped and started at will; removed on drop.
struct PrivatePostgres {
    bin: std::path::PathBuf,
    data: std::path::PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PrivatePostgres {
    fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path().join("bin"))
                    .filter(|b| b.join("initdb").exists())
                    .max()
            })
            .expect("PostgreSQL's server programs under /usr/lib/postgresql/<version>/bin");
        let dir = tempfile::tempdir().unwrap();
        // initdb refuses to run as root; the instance then belongs to `postgres`.
        if is_root() {
            let ok = Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let pg = PrivatePostgres {
            bin,
            data: dir.path().join("data"),
            port: free_port(),
            _dir: dir,
        };
        let data = pg.data.to_string_lossy().into_owned();
        pg.run(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        pg.resume();
        pg
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// One of PostgreSQL's programs, run as `postgres` when the test is root.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn resume(&self) {
        let data = self.data.to_string_lossy().into_owned();
        let socket = self.data.parent().unwrap().to_string_lossy().into_owned();
        let options = format!(
            "-p {} -k {socket} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        let log = format!("{socket}/postgres.log");
        self.run(
            "pg_ctl",
            &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
        );
    }

    fn stop(&self) {
        let data = self.data.to_string_lossy().into_owned();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data.to_string_lossy().into_owned();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_recovers_by_itself_and_loses_nothing_acknowledged() {
    let pg = PrivatePostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = pg.url();
    let _server = Reaped(serve(port, dir.path(), &["--database-url", &url]));
    let api = Api::ready(port, dir.path()).await;
    echo_rule(&api).await;

    let sender = sending(&api, 50, Duration::from_secs(16));
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.stop();
    let down = Instant::now();
    let mut unready = 0;
    while down.elapsed() < Duration::from_secs(10) {
        let asked = Instant::now();
        let r = api.http.get(format!("{}/readyz", api.base)).send().await;
        match r {
            Ok(r) if r.status() == 503 => {
                unready += 1;
                assert!(
                    asked.elapsed() < Duration::from_secs(3),
                    "/readyz took {:?}",
                    asked.elapsed()
                );
            }
            Ok(r) => panic!("/readyz answered {} with the database down", r.status()),
            Err(e) => panic!(
                "/readyz did not answer with the database down: {e}\n{}",
                server_log(dir.path())
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(unready >= 3, "/readyz said 503 only {unready} times");
    pg.resume();
    let back = Instant::now();
    Api::ready(port, dir.path()).await;
    eprintln!("ready again {:?} after the database", back.elapsed());

    let (acknowledged, statuses, slowest) = sender.await.unwrap();
    // Refused while the database was away: 503, never a 500, and within
    // one wait for a connection (5 s), not one for each read and write a
    // batch would make (a client's timeout, 10 s, shows as 0).
    eprintln!("event posts answered {statuses:?}, the slowest in {slowest:?}");
    assert!(
        statuses.iter().all(|s| matches!(s, 201 | 503)),
        "event posts answered {statuses:?}"
    );
    assert!(
        slowest < Duration::from_secs(8),
        "an event post took {slowest:?}"
    );
    let before = acknowledged.iter().filter(|(_, at)| *at < down).count();
    let after = acknowledged.iter().filter(|(_, at)| *at > back).count();
    assert!(before > 50, "too few events before the outage: {before}");
    assert!(after > 50, "too few events after the outage: {after}");
    let ran = every_event_ran_once(&api, &acknowledged).await;
    eprintln!(
        "{} events acknowledged, {} executions",
        acknowledged.len(),
        ran.len()
    );
}

// Faults of the machine under the server: a full disk, a second server on
// one data directory, the data directory deleted.

/// `attune serve` with its log in `log_file` (outside the data directory,
/// which may fill up or disappear).
fn serve_logging(port: u16, data_dir: &Path, log_file: &Path, extra: &[&str]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_attune"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// One event post: its marker, when it was sent, its status (0: no
/// answer) and the error message of a refusal.
#[derive(Debug, Clone)]
struct Post {
    marker: String,
    sent: Instant,
    status: u16,
    message: String,
    retry_after: Option<String>,
}

/// Posts one manual event a tick at `rate` per second until `until`.
fn posting(api: &Api, rate: u32, until: Instant) -> tokio::task::JoinHandle<Vec<Post>> {
    let api = api.clone();
    tokio::spawn(async move {
        let mut posts = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
        let mut n = 0;
        while Instant::now() < until {
            tick.tick().await;
            n += 1;
            let marker = format!("ev-{n}");
            let sent = Instant::now();
            let r = api
                .http
                .post(format!("{}/api/v1/events", api.base))
                .bearer_auth(&api.token)
                .json(&json!({"trigger": "core.manual", "payload": {"marker": marker}}))
                .send()
                .await;
            let (status, message, retry_after) = match r {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let retry_after = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    let message = body["error"]["message"].as_str().unwrap_or("").to_string();
                    (status, message, retry_after)
                }
                Err(_) => (0, String::new(), None),
            };
            posts.push(Post {
                marker,
                sent,
                status,
                message,
                retry_after,
            });
        }
        posts
    })
}

/// `/readyz`: its status (0: no answer) and error message.
async fn readyz(api: &Api) -> (u16, String) {
    match api.http.get(format!("{}/readyz", api.base)).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (
                status,
                body["error"]["message"].as_str().unwrap_or("").to_string(),
            )
        }
        Err(_) => (0, String::new()),
    }
}

/// A tmpfs of `size` mounted on `dir`, unmounted when dropped (even when
/// the test fails).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(ok.success(), "mounting a tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `path` until the disk is full.
fn fill(path: &Path) {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 256 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

/// Waits for `child` to exit within `limit`; returns how long it took and
/// its exit code.
fn exits_within(child: &mut Child, limit: Duration) -> (Duration, Option<i32>) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (started.elapsed(), status.code());
        }
        assert!(
            started.elapsed() < limit,
            "the server did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_with_507_recovers_by_itself_and_loses_nothing_acknowledged() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let _tmpfs = Tmpfs::mount(&mnt, "40m");
    let data = mnt.join("data");
    let log_file = dir.path().join("serve.log");
    let port = free_port();
    let drain = Duration::from_secs(5);
    let mut server = Reaped(serve_logging(
        port,
        &data,
        &log_file,
        &["--drain-timeout", "5s"],
    ));
    let api = Api::ready(port, &data).await;
    echo_rule(&api).await;
    let log_lines = || {
        std::fs::read_to_string(&log_file)
            .unwrap_or_default()
            .lines()
            .count()
    };

    let sender = posting(&api, 50, Instant::now() + Duration::from_secs(14));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lines_before = log_lines();
    let filler = mnt.join("filler");
    fill(&filler);
    let full = Instant::now();
    // While the disk is full: not ready, with the reason; reads go on.
    let mut unready = 0;
    while full.elapsed() < Duration::from_secs(5) {
        let (status, message) = readyz(&api).await;
        if status == 503 {
            assert!(message.contains("disk"), "{message}");
            unready += 1;
        }
        let (status, body) = api
            .call(reqwest::Method::GET, "/events?limit=1", None)
            .await;
        assert_eq!(status, 200, "a read with the disk full: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(unready >= 5, "/readyz said 503 only {unready} times");
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    // Ready again by itself.
    loop {
        if readyz(&api).await.0 == 200 {
            break;
        }
        assert!(
            freed.elapsed() < Duration::from_secs(15),
            "not ready again after space returned\n{}",
            std::fs::read_to_string(&log_file).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("ready again {:?} after space returned", freed.elapsed());
    let posts = sender.await.unwrap();
    let mut statuses: std::collections::BTreeMap<u16, usize> = Default::default();
    for p in &posts {
        *statuses.entry(p.status).or_default() += 1;
    }
    eprintln!("event posts answered {statuses:?}");
    for p in posts.iter().filter(|p| p.status != 201) {
        assert!(matches!(p.status, 507 | 503), "{p:?}");
        assert!(p.message.contains("disk"), "{p:?}");
        assert!(p.retry_after.is_some(), "{p:?}");
    }
    assert!(
        statuses.get(&507).is_some_and(|n| *n > 0),
        "no post was refused: {statuses:?}"
    );
    let acknowledged: Vec<(String, Instant)> = posts
        .iter()
        .filter(|p| p.status == 201)
        .map(|p| (p.marker.clone(), p.sent))
        .collect();
    let after = posts
        .iter()
        .filter(|p| p.status == 201 && p.sent > freed)
        .count();
    assert!(
        after > 20,
        "only {after} events were stored after the fault"
    );
    let ran = every_event_ran_once(&api, &acknowledged).await;
    let lines = log_lines() - lines_before;
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    for line in log.lines().skip(lines_before) {
        eprintln!("  log: {line}");
    }
    eprintln!(
        "{} events acknowledged, {} executions, {lines} log lines for the fault",
        acknowledged.len(),
        ran.len()
    );
    assert!(
        lines < 20,
        "{lines} log lines for the fault:\n{}",
        std::fs::read_to_string(&log_file).unwrap_or_default()
    );

    // A stop asked for while the disk is full still ends within the drain
    // deadline, with actions running whose results cannot be written.
    for _ in 0..2 {
        let (status, body) = api
            .call(
                reqwest::Method::POST,
                "/executions",
                Some(json!({"action": "core.sleep", "params": {"seconds": 1}})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let sender = posting(&api, 50, Instant::now() + Duration::from_secs(4));
    tokio::time::sleep(Duration::from_millis(300)).await;
    fill(&filler);
    let full = Instant::now();
    while readyz(&api).await.0 != 503 {
        assert!(full.elapsed() < Duration::from_secs(10), "never unready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sigterm(&server.0);
    let (took, code) = exits_within(&mut server.0, drain + Duration::from_secs(3));
    eprintln!("stopped with the disk full in {took:?}, exit code {code:?}");
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    for line in log.lines().skip(lines_before + lines) {
        eprintln!("  log: {line}");
    }
    assert!(
        log.contains("results written"),
        "the stop did not say what it could not write"
    );
    let _ = sender.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_a_data_directory_exits_naming_the_holder_and_a_dead_ones_lock_is_taken()
{
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log_file = dir.path().join("serve.log");
    let port = free_port();
    let mut first = Reaped(serve_logging(port, &data, &log_file, &[]));
    Api::ready(port, &data).await;
    let out = Command::new(env!("CARGO_BIN_EXE_attune"))
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second server started: {stderr}");
    assert!(
        stderr.contains(&format!("pid {}", first.0.id())),
        "the error names no holder: {stderr}"
    );
    // The first one is still serving.
    let api = Api::ready(port, &data).await;
    assert_eq!(readyz(&api).await.0, 200);
    // A server that died leaves its lock file; the next one takes it.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    assert!(data.join("attune.pid").exists());
    let _second = Reaped(serve_logging(port, &data, &log_file, &[]));
    Api::ready(port, &data).await;
    let pid = std::fs::read_to_string(data.join("attune.pid")).unwrap();
    assert_eq!(pid.trim(), _second.0.id().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_deleted_under_the_server_stops_it_and_nothing_is_acknowledged_after() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log_file = dir.path().join("serve.log");
    let port = free_port();
    let mut server = Reaped(serve_logging(port, &data, &log_file, &[]));
    let api = Api::ready(port, &data).await;
    echo_rule(&api).await;
    let sender = posting(&api, 50, Instant::now() + Duration::from_secs(6));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    std::fs::remove_dir_all(&data).unwrap();
    let deleted = Instant::now();
    let mut unready = false;
    let (took, code) = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break (deleted.elapsed(), status.code());
        }
        let (status, _) = readyz(&api).await;
        unready |= status == 503;
        assert!(
            deleted.elapsed() < Duration::from_secs(10),
            "the server still runs 10 s after its data directory was deleted\n{}",
            std::fs::read_to_string(&log_file).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("stopped {took:?} after the deletion, exit code {code:?}, seen unready: {unready}");
    assert_ne!(code, Some(0), "the server exited as if asked to");
    let posts = sender.await.unwrap();
    let late: Vec<&Post> = posts
        .iter()
        .filter(|p| p.status == 201 && p.sent > deleted)
        .collect();
    assert!(late.is_empty(), "acknowledged after the deletion: {late:?}");
    assert!(
        posts.iter().any(|p| p.status == 201 && p.sent < deleted),
        "nothing was acknowledged before the deletion"
    );
    assert!(
        !data.exists(),
        "the server created its data directory again"
    );
}
