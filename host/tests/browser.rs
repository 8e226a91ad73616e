//! The console in a real browser: headless Chromium over WebDriver
//! (`chromedriver`) against a real `attune serve`. Signs in, watches the
//! hello-world rule's executions appear without reloading, opens one, runs
//! `core.echo` from its generated form with a bad value and a good one,
//! toggles a rule, cancels a running `core.sleep`, and checks that pages
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let Some(driver) = driver() else { return };
    let server = start_server();
    let c = browser(&driver).await;
    let url = |path: &str| format!("{}{path}", server.url);

    // Not signed in: the login page.
    c.goto(&url("/ui/")).await.unwrap();
    until(10, "the login page", || async {
        c.current_url().await.unwrap().path() == "/ui/login"
    })
    .await;
    shot(&c, "login").await;
    c.find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys("attune_wrong")
        .await
        .unwrap();
    c.find(Locator::Css("form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(10, "the refusal", || async {
        text(&c, "[role=alert]").await.contains("unknown")
    })
    .await;
    let field = c.find(Locator::Css("input[name=token]")).await.unwrap();
    field.send_keys(&server.token).await.unwrap();
    c.find(Locator::Css("form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(10, "the executions page", || async {
        c.current_url().await.unwrap().path() == "/ui/executions"
    })
    .await;

    // The hello-world rule's runs appear without a reload.
    let before = listed(&c).await;
    let newest = before.iter().copied().max().unwrap_or(0);
    until(40, "a new execution in the list", || async {
        listed(&c).await.iter().any(|id| *id > newest)
    })
    .await;
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/ui/executions",
        "no navigation happened"
    );
    shot(&c, "executions").await;

    // Open one.
    let first = listed(&c).await[0];
    c.find(Locator::Css(&format!("#execution-{first} a")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(10, "the execution page", || async {
        c.current_url().await.unwrap().path() == format!("/ui/executions/{first}")
    })
    .await;
    assert!(
        text(&c, "#stdout").await.contains("hello"),
        "its output is shown"
    );
    shot(&c, "execution").await;

    // core.echo from the generated form: a bad value, then a good one.
    c.goto(&url("/ui/actions/core.echo")).await.unwrap();
    c.find(Locator::Id("run"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(10, "the error at its field", || async {
        text(&c, "[data-field='/message'] .field-error")
            .await
            .contains("missing required field")
    })
    .await;
    shot(&c, "action-error").await;
    let message = c
        .find(Locator::Css("[data-field='/message'] input"))
        .await
        .unwrap();
    message.send_keys("hello from the browser").await.unwrap();
    c.find(Locator::Id("run"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(20, "the result", || async {
        c.source()
            .await
            .unwrap_or_default()
            .contains("&quot;hello from the browser&quot;")
            || text(&c, "pre.json")
                .await
                .contains("hello from the browser")
                && text(&c, ".state").await.contains("succeeded")
            || {
                // The run may end after the page loaded: the page hears of
                // it over its event stream; reload otherwise.
                let done = text(&c, "#outcome").await.contains("succeeded");
                if !done {
                    let _ = c.refresh().await;
                }
                done
            }
    })
    .await;
    shot(&c, "execution-echo").await;

    // Toggle the hello-world rule off and on.
    c.goto(&url("/ui/rules")).await.unwrap();
    shot(&c, "rules").await;
    let rule = api(&server, "/rules").await["items"][0]["ref"]
        .as_str()
        .unwrap()
        .to_string();
    c.find(Locator::Css("button.toggle"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(10, "the rule off", || async {
        text(&c, "#toggle").await == "Enable"
    })
    .await;
    assert_eq!(
        api(&server, &format!("/rules/{rule}")).await["enabled"],
        false
    );
    shot(&c, "rule").await;
    c.find(Locator::Id("toggle"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(10, "the rule on", || async {
        text(&c, "#toggle").await == "Disable"
    })
    .await;
    assert_eq!(
        api(&server, &format!("/rules/{rule}")).await["enabled"],
        true
    );

    // Cancel a running sleep.
    c.goto(&url("/ui/actions/core.sleep")).await.unwrap();
    let seconds = c
        .find(Locator::Css("[data-field='/seconds'] input"))
        .await
        .unwrap();
    seconds.send_keys("60").await.unwrap();
    c.find(Locator::Id("run"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(10, "the sleep's page", || async {
        c.current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/ui/executions/")
    })
    .await;
    let sleep = c
        .current_url()
        .await
        .unwrap()
        .path()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    until(20, "the sleep running", || async {
        api(&server, &format!("/executions/{sleep}")).await["status"] == "running"
    })
    .await;
    c.refresh().await.unwrap();
    c.find(Locator::Id("cancel"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(20, "the sleep cancelled", || async {
        let shown = text(&c, ".state").await.contains("cancelled")
            || text(&c, "#outcome").await.contains("cancelled");
        if !shown {
            let _ = c.refresh().await;
        }
        shown
    })
    .await;
    assert_eq!(
        api(&server, &format!("/executions/{sleep}")).await["status"],
        "cancelled"
    );

    // The other pages, wide and phone-wide; nothing wider than a phone.
    for (name, path) in [
        ("packs", "/ui/packs"),
        ("action", "/ui/actions/core.http"),
        ("events", "/ui/events"),
        ("workers", "/ui/workers"),
    ] {
        c.goto(&url(path)).await.unwrap();
        c.find(Locator::Css("main h1")).await.unwrap();
        shot(&c, name).await;
    }
    c.set_window_size(390, 844).await.unwrap();
    for path in [
        "/ui/executions",
        &format!("/ui/executions/{first}"),
        "/ui/rules",
        "/ui/actions/core.echo",
    ] {
        c.goto(&url(path)).await.unwrap();
        c.find(Locator::Css("main h1")).await.unwrap();
        let fits = c
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(fits, json!(true), "{path} is wider than a phone");
    }
    shot(&c, "executions-phone").await;

    // Sign out.
    c.set_window_size(1280, 900).await.unwrap();
    c.goto(&url("/ui/executions")).await.unwrap();
    c.find(Locator::Css("form.who button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(10, "the login page", || async {
        c.current_url().await.unwrap().path() == "/ui/login"
    })
    .await;
    c.goto(&url("/ui/executions")).await.unwrap();
    until(10, "the login page again", || async {
        c.current_url().await.unwrap().path() == "/ui/login"
    })
    .await;
    c.close().await.unwrap();
}
