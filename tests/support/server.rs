//! A real server on `127.0.0.1:0` over a fresh database, for API tests.

use std::sync::atomic::{AtomicU32, Ordering};

use attune::api::ApiConfig;
use attune::server::{Server, ServerConfig};
pub use attune_engine::PipelineConfig;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::Connection;
use std::time::Duration;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the test's data directory.
    Sqlite,
    /// A fresh database on the PostgreSQL at 127.0.0.1:5432.
    Postgres,
}

/// Where to create and drop test databases; `ATTUNE_TEST_POSTGRES_URL` overrides.
fn admin_url() -> String {
    std::env::var("ATTUNE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn with_database(url: &str, db: &str) -> String {
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(url);
    format!("{base}/{db}")
}

/// A running server and a client that talks to it.
pub struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The admin token created on first start.
    pub admin: String,
    /// The engine's handle (storage, runtime, metrics…).
    pub core: attune_engine::Core,
    /// Its background tasks.
    pub pipeline: attune_engine::scheduler::Pipeline,
    /// The data directory.
    pub data_dir: tempfile::TempDir,
    client: reqwest::Client,
    config: ServerConfig,
    pg_database: Option<String>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A response: status and JSON body (`Value::Null` when empty or not JSON).
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Parsed body.
    pub body: Value,
}

impl Reply {
    /// Error detail paths, for 422 answers.
    pub fn detail_paths(&self) -> Vec<String> {
        self.body["error"]["details"]
            .as_array()
            .map(|d| {
                d.iter()
                    .map(|x| x["path"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Tests fire timers every few hundred milliseconds, under the server's
/// default minimum; a test of the minimum itself sets one of its own.
fn quick_timers(pipeline: PipelineConfig) -> PipelineConfig {
    if pipeline.min_interval == PipelineConfig::default().min_interval {
        PipelineConfig {
            min_interval: std::time::Duration::from_millis(10),
            ..pipeline
        }
    } else {
        pipeline
    }
}

impl TestServer {
    /// Starts a server on `backend` with default settings.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, ApiConfig::default()).await
    }

    /// Starts a server on `backend` with `api` settings.
    pub async fn start_with(backend: Backend, api: ApiConfig) -> Self {
        Self::start_full(backend, api, PipelineConfig::default()).await
    }

    /// Starts a server with explicit API and pipeline settings.
    pub async fn start_full(backend: Backend, api: ApiConfig, pipeline: PipelineConfig) -> Self {
        Self::start_telling(backend, api, pipeline, None).await
    }

    /// Starts a server with `pipeline` that exports its trace spans
    /// through `telemetry`.
    pub async fn start_traced(
        backend: Backend,
        pipeline: PipelineConfig,
        telemetry: std::sync::Arc<attune_engine::telemetry::Telemetry>,
    ) -> Self {
        Self::start_telling(backend, ApiConfig::default(), pipeline, Some(telemetry)).await
    }

    async fn start_telling(
        backend: Backend,
        api: ApiConfig,
        pipeline: PipelineConfig,
        telemetry: Option<std::sync::Arc<attune_engine::telemetry::Telemetry>>,
    ) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let pipeline = quick_timers(pipeline);
        let data_dir = tempfile::tempdir().unwrap();
        let (database_url, pg_database) = match backend {
            Backend::Sqlite => (None, None),
            Backend::Postgres => {
                let name = format!(
                    "attune_t_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed)
                );
                let mut admin = sqlx::PgConnection::connect(&admin_url())
                    .await
                    .expect("PostgreSQL at 127.0.0.1:5432 (set ATTUNE_TEST_POSTGRES_URL)");
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                (Some(with_database(&admin_url(), &name)), Some(name))
            }
        };
        let config = ServerConfig {
            data_dir: data_dir.path().to_path_buf(),
            database_url,
            cache_dir: Some(std::env::temp_dir().join("attune-test-artifacts")),
            api,
            pipeline,
            outbound: attune_runtime::http::OutboundConfig {
                // The tests' remote ends listen on loopback.
                allow_private: true,
                ..Default::default()
            },
            max_result_bytes: 1 << 20,
            scratch_quota_bytes: 64 << 20,
            secrets_key_file: None,
            telemetry,
        };
        let server = Server::start(&config).await.expect("server starts");
        let admin = server
            .new_admin_token
            .clone()
            .expect("admin token on first start");
        Self::serve(server, config, admin, data_dir, pg_database).await
    }

    async fn serve(
        server: Server,
        config: ServerConfig,
        admin: String,
        data_dir: tempfile::TempDir,
        pg_database: Option<String>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let core = server.core.clone();
        let pipeline = server.pipeline.clone();
        let task = tokio::spawn(async move {
            attune::server::run(listener, server.core, server.api, None, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            base,
            admin,
            core,
            pipeline,
            data_dir,
            client: reqwest::Client::new(),
            config,
            pg_database,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server (its tasks end as if the process died) and starts a
    /// new one on the same data directory and database with `pipeline`.
    pub async fn restart(mut self, pipeline: PipelineConfig) -> Self {
        self.stop().await;
        let mut config = self.config.clone();
        config.pipeline = quick_timers(pipeline);
        let server = Server::start(&config).await.expect("server restarts");
        assert!(server.new_admin_token.is_none());
        let data_dir = std::mem::replace(&mut self.data_dir, tempfile::tempdir().unwrap());
        let pg = self.pg_database.take();
        Self::serve(server, config, self.admin.clone(), data_dir, pg).await
    }

    /// Another node on the same database (its own data directory), as a
    /// multi-node deployment runs; finish it before this one.
    pub async fn second_node(&self, pipeline: PipelineConfig) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = self.config.clone();
        config.data_dir = data_dir.path().to_path_buf();
        config.pipeline = quick_timers(pipeline);
        let server = Server::start(&config).await.expect("second node starts");
        Self::serve(server, config, self.admin.clone(), data_dir, None).await
    }

    async fn stop(&mut self) {
        self.core.dispatch.shutdown().await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.core.storage.close().await;
    }

    /// Stops the server and drops its PostgreSQL database.
    pub async fn finish(mut self) {
        self.stop().await;
        if let Some(name) = self.pg_database.take() {
            let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .unwrap();
        }
    }

    /// A request builder for `path` (under the base URL) with `token`.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut rb = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb
    }

    /// Sends and parses.
    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Reply {
        let response = rb.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    /// GET with the admin token.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::GET, path, Some(&self.admin)))
            .await
    }

    /// POST JSON with the admin token.
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(
            self.request(reqwest::Method::POST, path, Some(&self.admin))
                .json(&body),
        )
        .await
    }

    /// PUT JSON with the admin token.
    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(
            self.request(reqwest::Method::PUT, path, Some(&self.admin))
                .json(&body),
        )
        .await
    }

    /// DELETE with the admin token.
    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::DELETE, path, Some(&self.admin)))
            .await
    }

    /// Waits (up to 30 s) until execution `id` has ended; its full record.
    pub async fn ended(&self, id: i64) -> Value {
        super::wait_for(Duration::from_secs(30), || async {
            let e = self.get(&format!("/api/v1/executions/{id}")).await.body;
            let status = e["status"].as_str().unwrap_or_default();
            ["succeeded", "failed", "timed_out", "cancelled", "abandoned"]
                .contains(&status)
                .then_some(e)
        })
        .await
        .unwrap_or_else(|| panic!("execution {id} did not end"))
    }

    /// A standalone worker's settings for this server: `name`, one slot,
    /// every capability of this build, its cache in `dir`.
    pub fn worker_config(
        &self,
        name: &str,
        token: &str,
        dir: &std::path::Path,
    ) -> attune::client::worker::RemoteWorkerConfig {
        attune::client::worker::RemoteWorkerConfig {
            server: self.base.clone(),
            token: token.to_string(),
            name: name.into(),
            capabilities: attune_engine::worker::capabilities(),
            labels: serde_json::json!({}),
            concurrency: 1,
            cache_dir: dir.to_path_buf(),
            default_timeout: Duration::from_secs(30),
            allow_private_outbound: true,
            ca_cert: None,
            scratch_quota_bytes: 64 << 20,
            telemetry: None,
        }
    }

    /// Delivers `body` to webhook `hook`, signed with `key`; the status.
    pub async fn deliver(&self, hook: &str, key: &str, body: &[u8]) -> StatusCode {
        let rb = self
            .request(
                reqwest::Method::POST,
                &format!("/api/v1/webhooks/{hook}"),
                None,
            )
            .header("content-type", "application/json")
            .header(
                "X-Hub-Signature-256",
                attune_engine::triggers::webhook::sign(key, body),
            )
            .body(body.to_vec());
        self.send(rb).await.status
    }

    /// Creates a token with `role` and returns its secret.
    pub async fn token(&self, role: &str) -> String {
        let reply = self
            .post(
                "/api/v1/tokens",
                serde_json::json!({"name": role, "role": role}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["token"].as_str().unwrap().to_string()
    }

    /// Uploads a single component as pack `name` `version`.
    pub async fn upload_component(&self, name: &str, version: &str, bytes: Vec<u8>) -> Reply {
        self.send(
            self.request(
                reqwest::Method::POST,
                &format!("/api/v1/packs?name={name}&version={version}"),
                Some(&self.admin),
            )
            .header("content-type", "application/wasm")
            .body(bytes),
        )
        .await
    }

    /// Uploads a `.tar.gz` archive.
    pub async fn upload_archive(&self, bytes: Vec<u8>) -> Reply {
        self.send(
            self.request(reqwest::Method::POST, "/api/v1/packs", Some(&self.admin))
                .header("content-type", "application/gzip")
                .body(bytes),
        )
        .await
    }
}

/// Builds a `.tar.gz` from `(path, bytes)` entries, written as given (no
/// path checks, so tests can build hostile archives).
pub fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // set_path refuses `..`; write the raw name to build hostile archives.
        let name = header.as_old_mut().name.as_mut();
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// A `.tar.gz` holding one symlink entry.
pub fn tar_gz_with_symlink(link: &str, target: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    builder.append_link(&mut header, link, target).unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

/// Runs a test body once per backend, as two tests named `sqlite` and `postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($(async fn $name:ident($backend:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn body($backend: $crate::Backend) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    body($crate::Backend::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    body($crate::Backend::Postgres).await
                }
            }
        )*
    };
}

/// A rule running `core.noop` on webhook `hook` with key `key` (a literal
/// or a `{{ secrets.NAME }}` reference).
pub fn webhook_rule(r#ref: &str, hook: &str, key: &str) -> Value {
    serde_json::json!({
        "ref": r#ref, "trigger": "core.webhook",
        "trigger_params": {"name": hook, "secret": key},
        "action": "core.noop",
    })
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
