//! `attune serve`: the data directory, storage, first-start setup, and the
//! HTTP server.
//!
//! [`Server::start`] prepares everything (migrations, built-in trigger types,
//! the core pack, the admin token on first start) and [`run`] serves an
//! already-bound listener until `shutdown` resolves, so tests bind
//! `127.0.0.1:0` and pass the listener in.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::api::auth::{hash_token, new_token};
use crate::api::{ApiConfig, AppState, Metrics, PackCache};
use crate::packs::files::ComponentFiles;
use crate::packs::{self, Upload};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::storage::{Role, Storage};

/// Name of the file holding the first admin token, inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// What `attune serve` needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Data directory (SQLite file, components, artifact cache, admin token).
    pub data_dir: PathBuf,
    /// Database URL; `None` uses `sqlite://<data-dir>/attune.db`.
    pub database_url: Option<String>,
    /// Compiled-artifact cache; `None` uses `<data-dir>/artifacts`.
    pub cache_dir: Option<PathBuf>,
    /// API settings.
    pub api: ApiConfig,
    /// Timers, rules and the embedded worker.
    pub pipeline: crate::scheduler::PipelineConfig,
}

/// A prepared server: state ready to serve.
pub struct Server {
    /// Shared application state.
    pub state: AppState,
    /// The admin token, when this start created it.
    pub new_admin_token: Option<String>,
}

impl Server {
    /// Opens the data directory and database, applies migrations, stores
    /// built-in trigger types and the core pack, creates the admin token.
    pub async fn start(config: &ServerConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        let url = match &config.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", config.data_dir.join("attune.db").display()),
        };
        let storage = Storage::connect(&url)
            .await
            .with_context(|| format!("opening the database {}", redact(&url)))?;
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(
                config
                    .cache_dir
                    .clone()
                    .unwrap_or_else(|| config.data_dir.join("artifacts")),
            ),
            scratch_dir: config.data_dir.join("scratch"),
            ..RuntimeConfig::default()
        })?;
        let files = Arc::new(ComponentFiles::open(&config.data_dir.join("components"))?);
        let state = AppState {
            storage,
            runtime,
            files,
            packs: Arc::new(PackCache::default()),
            config: Arc::new(config.api.clone()),
            metrics: Arc::new(Metrics::default()),
            dispatch: Arc::new(crate::scheduler::Dispatch::default()),
            cache: Arc::default(),
        };
        for t in crate::triggers::builtin() {
            state.storage.upsert_trigger_type(t).await?;
        }
        let core = packs::register(
            &state.runtime,
            &state.storage,
            &state.files,
            Upload::single(
                "core",
                env!("CARGO_PKG_VERSION"),
                crate::builtin::CORE_PACK.to_vec(),
            ),
        )
        .await
        .context("registering the core pack")?;
        for p in core.loaded {
            state.packs.insert(p);
        }
        let new_admin_token = if state.storage.count_tokens().await? == 0 {
            let token = new_token();
            state
                .storage
                .insert_token("admin", Role::Admin, &hash_token(&token))
                .await?;
            write_private(&config.data_dir.join(ADMIN_TOKEN_FILE), &token)?;
            hello_world(&state).await?;
            Some(token)
        } else {
            None
        };
        crate::scheduler::start(&state, config.pipeline.clone()).await?;
        Ok(Server {
            state,
            new_admin_token,
        })
    }
}

/// The rule a fresh installation starts with: `core.echo` says hello every
/// ten seconds. Created on first start only, so deleting it sticks.
async fn hello_world(state: &AppState) -> anyhow::Result<()> {
    let rule = state
        .storage
        .insert_rule(&crate::storage::RuleSpec {
            r#ref: "core.timer_echo_10s".into(),
            description: Some("say hello every ten seconds".into()),
            trigger: "core.interval".into(),
            trigger_params: serde_json::json!({"every": "10s"}),
            criteria: None,
            action: "core.echo".into(),
            action_params: serde_json::json!({"message": "hello, world"}),
            enabled: true,
            timeout_ms: None,
            max_attempts: 1,
        })
        .await?;
    crate::scheduler::sync_rule(state, &rule).await?;
    Ok(())
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = crate::api::router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")
}

/// Writes `content` to a file only its owner can read.
pub(crate) fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{content}")?;
    Ok(())
}

/// Hides a password in a database URL for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_database_urls() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }
}
