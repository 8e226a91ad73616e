//! `attune serve`: the data directory, storage, first-start setup, and the
//! HTTP server.
//!
//! One server holds a data directory at a time: [`Server::start`] takes an
//! exclusive lock on its [`LOCK_FILE`] before it opens the database, as
//! PostgreSQL does with `postmaster.pid`, and the storage refuses writes
//! once that file or the database is no longer the one opened.
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
use crate::api::{ApiConfig, AppState};
use attune_engine::PipelineConfig;
use attune_engine::packs::files::ComponentFiles;
use attune_engine::packs::{self, Upload};
use attune_engine::rules::RuleInput;
use attune_engine::rules::save::{self, Mode};
use attune_engine::scheduler::Pipeline;
use attune_engine::secrets::SecretsKey;
use attune_engine::{Core, CoreConfig};
use attune_runtime::{Runtime, RuntimeConfig};
use attune_storage::{Role, Storage};
use attune_util::files::write_private;

/// Name of the file holding the first admin token, inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Name of the lock file inside the data directory: holds the pid of the
/// server that holds the directory.
pub const LOCK_FILE: &str = "attune.pid";

/// Name of the file holding the key that seals secrets, inside the data
/// directory (unless `--secrets-key-file` puts it elsewhere).
pub const SECRETS_KEY_FILE: &str = "secrets.key";

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
    pub pipeline: PipelineConfig,
    /// Limits on actions' outbound HTTP.
    pub outbound: attune_runtime::http::OutboundConfig,
    /// Largest result an action may return, in bytes of JSON.
    pub max_result_bytes: usize,
    /// Most disk one execution's `/scratch` may take.
    pub scratch_quota_bytes: u64,
    /// The key that seals secrets; `<data-dir>/secrets.key` when `None`.
    pub secrets_key_file: Option<PathBuf>,
    /// Where trace spans go, when they are exported.
    pub telemetry: Option<Arc<attune_engine::telemetry::Telemetry>>,
}

/// A prepared server: state ready to serve.
pub struct Server {
    /// Shared application state.
    pub core: Core,
    /// Its background tasks, for a clean stop.
    pub pipeline: Pipeline,
    /// The API's settings.
    pub api: ApiConfig,
    /// The admin token, when this start created it.
    pub new_admin_token: Option<String>,
    /// The data directory's lock, held while this value lives.
    pub lock: DataDirLock,
    /// The lock of an SQLite database's folder outside the data directory.
    pub database_lock: Option<DataDirLock>,
}

/// An exclusive `flock` on the data directory's [`LOCK_FILE`], released
/// when this is dropped or the process ends, however it ends: a lock left
/// by a server that died is simply taken by the next one. The file is left
/// in place (with the last holder's pid), since the storage watches it.
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    /// Takes the lock on `dir`, writing this process's pid into the lock
    /// file; fails at once, naming the holder's pid, when another process
    /// holds it.
    pub fn take(dir: &Path) -> anyhow::Result<Self> {
        use std::io::Write as _;
        let path = dir.join(LOCK_FILE);
        let mut options = std::fs::OpenOptions::new();
        // Not truncated on open: until the lock is ours, the file holds
        // the holder's pid, which the error names.
        options.read(true).write(true).create(true);
        // A lock file that is a link would have the pid written wherever it
        // points: refused (ELOOP), never followed.
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        let mut file = options
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd as _;
            // SAFETY: flock on a descriptor this function owns.
            let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if locked != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    anyhow::bail!(
                        "the data directory {} is in use by another attune server (pid {}); \
                         stop it, or give this one another --data-dir",
                        dir.display(),
                        holder.trim()
                    );
                }
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        file.set_len(0)?;
        writeln!(file, "{}", std::process::id())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(DataDirLock { _file: file })
    }
}

impl Server {
    /// Opens the data directory and database, applies migrations, stores
    /// built-in trigger types and the core pack, creates the admin token.
    pub async fn start(config: &ServerConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        let lock = DataDirLock::take(&config.data_dir)?;
        let url = match &config.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", config.data_dir.join("attune.db").display()),
        };
        // An SQLite file elsewhere (another data directory's, say) has one
        // server too: its folder's lock is taken as well.
        let db_lock = match sqlite_dir(&url) {
            Some(dir) if !same_dir(&dir, &config.data_dir) => Some(DataDirLock::take(&dir)?),
            _ => None,
        };
        let storage = Storage::connect(&url)
            .await
            .with_context(|| format!("opening the database {}", redact(&url)))?;
        storage.watch_file(&config.data_dir.join(LOCK_FILE));
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(
                config
                    .cache_dir
                    .clone()
                    .unwrap_or_else(|| config.data_dir.join("artifacts")),
            ),
            scratch_dir: config.data_dir.join("scratch"),
            outbound: config.outbound.clone(),
            max_result_bytes: config.max_result_bytes,
            scratch_quota_bytes: config.scratch_quota_bytes,
            // A component may be as large as an upload may be (and never
            // smaller than the default, which the core pack fits).
            max_component_bytes: config
                .api
                .max_upload_bytes
                .max(RuntimeConfig::default().max_component_bytes),
            // A slot for every execution the embedded worker runs at once
            // (more wait for one rather than fail).
            max_instances: (config.pipeline.concurrency as u32).max(64),
            ..RuntimeConfig::default()
        })?;
        let files = ComponentFiles::open(&config.data_dir.join("components"))?;
        let key_file = config
            .secrets_key_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join(SECRETS_KEY_FILE));
        let secrets = SecretsKey::open_or_create(&key_file).context("the secrets key")?;
        restrict(&config.data_dir).context("restricting the data directory")?;
        let core = Core::new(
            storage,
            runtime,
            files,
            CoreConfig {
                lease: config.pipeline.lease,
                min_interval: config.pipeline.min_interval,
                webhook_rate: config.pipeline.webhook_rate,
                max_chain_depth: config.pipeline.max_chain_depth.into(),
                journal_cap: config.pipeline.journal_cap,
                node: node_id(&config.data_dir)?,
            },
            secrets,
        );
        let mut core = core;
        core.telemetry = config.telemetry.clone();
        for t in attune_engine::triggers::builtin() {
            core.storage.upsert_trigger_type(t).await?;
        }
        packs::install(
            &core,
            Upload::single(
                "core",
                env!("CARGO_PKG_VERSION"),
                crate::bundled::CORE_PACK.to_vec(),
            ),
        )
        .await
        .context("registering the core pack")?;
        let new_admin_token = if core.storage.count_tokens().await? == 0 {
            let token = new_token();
            core.storage
                .insert_token("admin", Role::Admin, &hash_token(&token))
                .await?;
            let path = config.data_dir.join(ADMIN_TOKEN_FILE);
            write_private(&path, &token).with_context(|| format!("writing {}", path.display()))?;
            hello_world(&core).await?;
            Some(token)
        } else {
            None
        };
        let sealed = attune_engine::triggers::webhook::seal_literal_keys(&core)
            .await
            .context("moving literal webhook keys into secrets")?;
        if sealed > 0 {
            tracing::info!(rules = sealed, "moved literal webhook keys into secrets");
        }
        // Rules saved before the rules for secrets held stay, but do not
        // fire until fixed: say so once, at start.
        attune_engine::rules::save::warn_invalid(&core)
            .await
            .context("checking stored rules")?;
        let pipeline = attune_engine::scheduler::start(&core, config.pipeline.clone()).await?;
        Ok(Server {
            core,
            pipeline,
            api: config.api.clone(),
            new_admin_token,
            lock,
            database_lock: db_lock,
        })
    }
}

/// The hello-world rule of a new installation, saved like any other.
async fn hello_world(core: &Core) -> anyhow::Result<()> {
    let input: RuleInput = serde_json::from_value(serde_json::json!({
        "ref": "core.timer_echo_10s",
        "description": "say hello every ten seconds",
        "trigger": "core.interval",
        "trigger_params": {"every": "10s"},
        "action": "core.echo",
        "action_params": {"message": "hello, world"},
    }))?;
    let (spec, _) = save::check(core, &input).await?;
    save::store(core, &spec, Mode::Create, &spec.r#ref).await?;
    Ok(())
}

/// Serves the API on `listener` until `shutdown` resolves: HTTPS when `tls`
/// is given, else plain HTTP.
pub async fn run(
    listener: TcpListener,
    core: Core,
    api: ApiConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let options = crate::mcp::Options {
        wait: api.mcp_wait,
        tools: api.mcp_tools.clone(),
    };
    let (mcp, end_sessions) =
        crate::mcp::engine_backend::service(core.clone(), options, &api.mcp_hosts);
    // A stop ends MCP sessions and the console's live streams too: their
    // open streams would hold the drain.
    let (closing, closed) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        end_sessions();
        let _ = closing.send(true);
    };
    let state = AppState {
        core,
        config: Arc::new(ApiConfig {
            secure_cookies: tls.is_some(),
            ..api
        }),
    };
    let mcp = axum::Router::new()
        .nest_service("/mcp", mcp)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::mcp::engine_backend::authenticate,
        ))
        .with_state(state.clone());
    let telemetry = state.core.telemetry.clone();
    let mut app = crate::api::router(state.clone())
        .merge(mcp)
        .merge(crate::console::router(state, closed));
    if let Some(telemetry) = telemetry {
        app = app.layer(axum::middleware::from_fn_with_state(
            telemetry,
            crate::api::request_span,
        ));
    }
    let app = crate::api::traced(app);
    match tls {
        // No Nagle delay: a streamed answer (an MCP call's event, an
        // execution's output) is written in pieces that must not wait for
        // the client's delayed ACK (measured: 44 ms an MCP call without).
        None => axum::serve(
            axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            app,
        )
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP"),
        Some(tls) => axum::serve(TlsListener::new(listener, tls), app)
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving HTTPS"),
    }
}

/// Longest a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Most TLS handshakes in progress at once; past it new connections wait.
const MAX_HANDSHAKES: usize = 256;

/// A TCP listener whose connections are TLS: each handshake runs in its own
/// task (bounded in time and in number), so a slow or silent client holds
/// up nobody, and finished ones are handed to `axum::serve`. Written here
/// because `axum::serve` takes any [`axum::serve::Listener`] but ships none
/// for TLS.
struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
    local: std::net::SocketAddr,
}

impl TlsListener {
    fn new(listener: TcpListener, tls: Arc<rustls::ServerConfig>) -> Self {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, ready) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            drop(permit);
                            let _ = ready.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Self { ready, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The acceptor task ended: no connection will come again.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// This node's id: random on first start, kept in `<data-dir>/node.id`, so
/// a restart is the same node (and its embedded worker the same worker).
fn node_id(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("node.id");
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_string());
    }
    let id = hex::encode(rand::random::<[u8; 8]>());
    write_private(&path, &id).with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// Makes the data directory and what it holds readable by its owner only:
/// the directory and its subdirectories 0700, the database (with its WAL),
/// the admin token and every other file 0600. Checked at every start, since
/// files created by other tools (or an older release) take the umask.
fn restrict(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let set = |path: &Path, mode: u32| -> std::io::Result<()> {
            let meta = std::fs::symlink_metadata(path)?;
            if meta.file_type().is_symlink() {
                return Ok(());
            }
            if meta.permissions().mode() & 0o777 != mode {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            }
            Ok(())
        };
        set(dir, 0o700)?;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                // Subdirectories hold components, artifacts and scratch
                // directories: the directory bit is enough to shut others out.
                set(&path, 0o700)?;
            } else {
                set(&path, 0o600)?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Hides a password in a database URL for messages.
/// The folder of an SQLite database URL's file (`None` for PostgreSQL or
/// an in-memory database).
fn sqlite_dir(url: &str) -> Option<PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path.contains(":memory:") {
        return None;
    }
    let parent = Path::new(path).parent()?;
    Some(if parent.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        parent.to_path_buf()
    })
}

/// Whether `a` and `b` name the same folder.
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

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

    #[cfg(unix)]
    #[test]
    fn a_lock_file_that_is_a_link_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(LOCK_FILE)).unwrap();
        assert!(DataDirLock::take(dir.path()).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }

    #[test]
    fn an_sqlite_database_elsewhere_is_locked_in_its_own_folder() {
        assert_eq!(
            sqlite_dir("sqlite:///srv/a/attune.db?mode=rwc"),
            Some(PathBuf::from("/srv/a"))
        );
        assert_eq!(sqlite_dir("sqlite://attune.db"), Some(PathBuf::from(".")));
        assert_eq!(sqlite_dir("sqlite::memory:"), None);
        assert_eq!(sqlite_dir("postgres://u@h/db"), None);
        let dir = tempfile::tempdir().unwrap();
        let _held = DataDirLock::take(dir.path()).unwrap();
        assert!(DataDirLock::take(dir.path()).is_err(), "one holder");
    }

    #[test]
    fn passwords_are_hidden_in_database_urls() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }
}
