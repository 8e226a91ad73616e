//! The console in a real browser: headless Chromium over WebDriver
//! (`chromedriver`) against a real `attune serve`. Signs in, watches the
//! hello-world rule's executions appear without reloading, opens one, runs
//! `core.echo` from its generated form with a bad value and a good one,
//! toggles a rule, cancels a running `core.sleep`, answers a workflow's
//! ask from the form generated from its schema, and checks that pages
//! fit a phone's width. A screenshot of each page is saved under
//! `$CARGO_TARGET_TMPDIR/console-screenshots`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`tests/run.sh`
//! installs them); set `ATTUNE_SKIP_BROWSER=1` to skip it knowingly.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ServerProcess, free_port, start_server};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// chromedriver, stopped on drop.
struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Starts chromedriver, or says why not.
fn driver() -> Option<Driver> {
    let Some(binary) = find(&["chromedriver"]) else {
        if std::env::var_os("ATTUNE_SKIP_BROWSER").is_some() {
            eprintln!("skipped: no chromedriver and ATTUNE_SKIP_BROWSER is set");
            return None;
        }
        panic!(
            "the browser test needs chromium and chromium-driver (tests/run.sh installs them); \
             set ATTUNE_SKIP_BROWSER=1 to skip it"
        );
    };
    let port = free_port();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(Driver(child, port))
}

async fn browser(driver: &Driver) -> Client {
    let mut options = json!({
        "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,900", "--hide-scrollbars"],
    });
    if let Some(chromium) = find(&["chromium", "chromium-browser"]) {
        options["binary"] = json!(chromium);
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("a WebDriver session")
}

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    let path = shots().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

/// Waits up to `secs` for `check` to hold, looking every 200 ms.
async fn until<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let began = Instant::now();
    while !check().await {
        assert!(
            began.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn text(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The ids of the executions listed on the page.
async fn listed(c: &Client) -> Vec<i64> {
    let rows = c
        .find_all(Locator::Css("#rows tr[id^='execution-']"))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for row in rows {
        if let Ok(Some(id)) = row.attr("id").await {
            ids.extend(id.trim_start_matches("execution-").parse::<i64>().ok());
        }
    }
    ids
}

async fn api(server: &ServerProcess, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}/api/v1{path}", server.url))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Clicks the element `css` finds.
async fn click(c: &Client, css: &str) {
    let e = c.find(Locator::Css(css)).await;
    e.unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Types `keys` into the element `css` finds.
async fn type_into(c: &Client, css: &str, keys: &str) {
    let e = c.find(Locator::Css(css)).await;
    e.unwrap_or_else(|e| panic!("{css}: {e}"))
        .send_keys(keys)
        .await
        .unwrap();
}

/// The path of the page shown.
async fn path(c: &Client) -> String {
    c.current_url().await.unwrap().path().to_string()
}

/// Waits until the page is at `want`.
async fn at(c: &Client, want: &str) {
    until(10, want, || async { path(c).await == want }).await;
}

/// Waits until `css` shows `want`, live or after a reload.
async fn shown(c: &Client, css: &str, want: &str) {
    until(20, want, || async {
        let seen = text(c, css).await.contains(want);
        if !seen {
            let _ = c.refresh().await;
        }
        seen
    })
    .await;
}

/// Uploads a pack whose workflow asks before it restarts, and runs it;
/// the workflow's execution id.
async fn asking_workflow(server: &ServerProcess) -> i64 {
    let archive = common::workflow_pack(
        server.dir.path(),
        "ops",
        "restart",
        r#"
input: {type: object, properties: {host: {type: string}}, required: [host]}
tasks:
  approve:
    ask:
      prompt: "Restart {{ input.host }}?"
      schema: {type: object, properties: {ok: {type: boolean}, note: {type: string}}, required: [ok]}
    next: [{when: "{{ result.ok }}", do: [restart]}]
  restart:
    action: core.echo
    input: {message: "restarting {{ input.host }}"}
"#,
    );
    let http = reqwest::Client::new();
    common::upload_pack(&http, &server.url, &server.token, archive).await;
    let run: Value = http
        .post(format!("{}/api/v1/executions", server.url))
        .bearer_auth(&server.token)
        .json(&json!({"action": "ops.restart", "params": {"host": "db1"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    run["id"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let Some(driver) = driver() else { return };
    let server = start_server();
    let c = browser(&driver).await;
    let url = |path: &str| format!("{}{path}", server.url);

    // Not signed in: the login page.
    c.goto(&url("/ui/")).await.unwrap();
    at(&c, "/ui/login").await;
    shot(&c, "login").await;
    type_into(&c, "input[name=token]", "attune_wrong").await;
    click(&c, "form button").await;
    until(10, "the refusal", || async {
        text(&c, "[role=alert]").await.contains("unknown")
    })
    .await;
    type_into(&c, "input[name=token]", &server.token).await;
    click(&c, "form button").await;
    at(&c, "/ui/executions").await;

    // The hello-world rule's runs appear without a reload.
    let newest = listed(&c).await.into_iter().max().unwrap_or(0);
    until(40, "a new execution in the list", || async {
        listed(&c).await.iter().any(|id| *id > newest)
    })
    .await;
    assert_eq!(path(&c).await, "/ui/executions", "no navigation happened");
    shot(&c, "executions").await;

    // Open one.
    let first = listed(&c).await[0];
    click(&c, &format!("#execution-{first} a")).await;
    at(&c, &format!("/ui/executions/{first}")).await;
    assert!(
        text(&c, "#stdout").await.contains("hello"),
        "its output is shown"
    );
    shot(&c, "execution").await;

    // core.echo from the generated form: a bad value, then a good one.
    c.goto(&url("/ui/actions/core.echo")).await.unwrap();
    click(&c, "#run").await;
    let error = "[data-field='/message'] .field-error";
    until(10, "the error at its field", || async {
        text(&c, error).await.contains("missing required field")
    })
    .await;
    shot(&c, "action-error").await;
    type_into(
        &c,
        "[data-field='/message'] input",
        "hello from the browser",
    )
    .await;
    click(&c, "#run").await;
    until(10, "the run's page", || async {
        path(&c).await.starts_with("/ui/executions/")
    })
    .await;
    shown(&c, "main", "succeeded").await;
    assert!(
        text(&c, "main")
            .await
            .contains("\"hello from the browser\"")
    );
    shot(&c, "execution-echo").await;

    // Toggle the hello-world rule off and on.
    c.goto(&url("/ui/rules")).await.unwrap();
    shot(&c, "rules").await;
    let rule = api(&server, "/rules").await["items"][0]["ref"]
        .as_str()
        .unwrap()
        .to_string();
    for (button, now, enabled) in [
        ("button.toggle", "Enable", false),
        ("#toggle", "Disable", true),
    ] {
        click(&c, button).await;
        until(10, now, || async { text(&c, "#toggle").await == now }).await;
        assert_eq!(
            api(&server, &format!("/rules/{rule}")).await["enabled"],
            enabled
        );
        if !enabled {
            shot(&c, "rule").await;
        }
    }

    // Cancel a running sleep.
    c.goto(&url("/ui/actions/core.sleep")).await.unwrap();
    type_into(&c, "[data-field='/seconds'] input", "60").await;
    click(&c, "#run").await;
    until(10, "the sleep's page", || async {
        path(&c).await.starts_with("/ui/executions/")
    })
    .await;
    let sleep = path(&c).await.rsplit('/').next().unwrap().to_string();
    until(20, "the sleep running", || async {
        api(&server, &format!("/executions/{sleep}")).await["status"] == "running"
    })
    .await;
    c.refresh().await.unwrap();
    click(&c, "#cancel").await;
    shown(&c, ".state", "cancelled").await;
    assert_eq!(
        api(&server, &format!("/executions/{sleep}")).await["status"],
        "cancelled"
    );

    // A workflow that asks: answered from its generated form.
    let flow = asking_workflow(&server).await;
    c.goto(&url(&format!("/ui/executions/{flow}")))
        .await
        .unwrap();
    shown(&c, "#asking", "Restart db1?").await;
    click(&c, "#asking a").await;
    at(&c, "/ui/inquiries").await;
    shot(&c, "inquiries").await;
    click(&c, "[data-field='/ok'] input").await;
    type_into(&c, "[data-field='/note'] input", "go ahead").await;
    click(&c, "form[action^='/ui/inquiries/'] button").await;
    at(&c, &format!("/ui/executions/{flow}")).await;
    shown(&c, ".state", "succeeded").await;
    let answer = api(&server, &format!("/inquiries?execution={flow}")).await;
    assert_eq!(answer["items"][0]["state"], "answered", "{answer}");
    let task = answer["items"][0]["id"].as_i64().unwrap();
    let result = &api(&server, &format!("/executions/{task}")).await["result"];
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["note"], "go ahead", "{result}");

    // The other pages, wide and phone-wide; nothing wider than a phone.
    for (name, page) in [
        ("packs", "/ui/packs"),
        ("action", "/ui/actions/core.http"),
        ("events", "/ui/events"),
        ("workers", "/ui/workers"),
        ("waiting", "/ui/inquiries"),
    ] {
        c.goto(&url(page)).await.unwrap();
        c.find(Locator::Css("main h1")).await.unwrap();
        shot(&c, name).await;
    }
    c.set_window_size(390, 844).await.unwrap();
    for page in [
        "/ui/executions",
        &format!("/ui/executions/{first}"),
        "/ui/rules",
        "/ui/actions/core.echo",
    ] {
        c.goto(&url(page)).await.unwrap();
        c.find(Locator::Css("main h1")).await.unwrap();
        let fits = c
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(fits, json!(true), "{page} is wider than a phone");
    }
    shot(&c, "action-phone").await;

    // Sign out; the pages are closed again.
    c.set_window_size(1280, 900).await.unwrap();
    c.goto(&url("/ui/executions")).await.unwrap();
    click(&c, "form.who button").await;
    at(&c, "/ui/login").await;
    c.goto(&url("/ui/executions")).await.unwrap();
    at(&c, "/ui/login").await;
    c.close().await.unwrap();
}
