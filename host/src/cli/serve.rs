//! `attune serve`: the server with its embedded SQLite by default.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;

use std::time::Duration;

use crate::api::ApiConfig;
use crate::server::{self, ADMIN_TOKEN_FILE, Server, ServerConfig};
use attune_engine::PipelineConfig;
use attune_runtime::http::OutboundConfig;
use attune_util::units::{parse_duration, parse_size};

/// Options of `attune serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ATTUNE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Data directory: SQLite database, components, compiled artifacts, admin token.
    #[arg(long, env = "ATTUNE_DATA_DIR", default_value = "./attune-data")]
    pub data_dir: PathBuf,
    /// Database URL (`postgres://…` or `sqlite://…`); default: `attune.db` in the data directory.
    #[arg(long, env = "ATTUNE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Largest pack upload accepted, e.g. 50MiB.
    #[arg(long, env = "ATTUNE_MAX_UPLOAD", default_value = "50MiB", value_parser = parse_size)]
    pub max_upload: usize,
    /// Executions the embedded worker runs at once; 0 runs no embedded worker.
    /// Default: the number of cores.
    #[arg(long, env = "ATTUNE_WORKERS", default_value_t = default_workers())]
    pub workers: usize,
    /// Execution timeout when a rule or request sets none, e.g. 30s.
    #[arg(long, env = "ATTUNE_DEFAULT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub default_timeout: Duration,
    /// How long a worker's claim lasts without a heartbeat; its executions are
    /// retried or abandoned after that.
    #[arg(long, env = "ATTUNE_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub lease: Duration,
    /// Delete finished executions and events older than this many days; 0 keeps everything.
    #[arg(long, env = "ATTUNE_RETENTION_DAYS", default_value_t = 0)]
    pub retention_days: u64,
    /// Let actions reach private, loopback and link-local addresses (their
    /// pack's grant still applies).
    #[arg(long, env = "ATTUNE_ALLOW_PRIVATE_OUTBOUND")]
    pub allow_private_outbound: bool,
    /// The shortest interval a timer rule may fire at.
    #[arg(long, env = "ATTUNE_MIN_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub min_interval: Duration,
    /// Deliveries one webhook accepts per second (twice as many at once);
    /// past it a delivery is answered 429.
    #[arg(long, env = "ATTUNE_WEBHOOK_RATE", default_value_t = attune_engine::core::DEFAULT_WEBHOOK_RATE,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub webhook_rate: u32,
    /// The deepest chain of causes rules still see: an event caused by an
    /// execution (`core.execution_finished`) is one deeper than the event
    /// behind that execution; past this depth it is stored, no rule fires,
    /// and the reason is on the event. Stops rules that feed each other.
    #[arg(long, env = "ATTUNE_MAX_CHAIN_DEPTH", default_value_t = attune_engine::core::DEFAULT_MAX_CHAIN_DEPTH,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_chain_depth: u32,
    /// Most bytes one execution's journal may hold (its HTTP exchanges,
    /// key-value calls, clock readings): past it the execution is marked
    /// not replayable and its journal is not kept. 0 records none.
    #[arg(long, env = "ATTUNE_JOURNAL_CAP", default_value = "1MiB", value_parser = parse_size)]
    pub journal_cap: usize,
    /// The key that seals secrets (hex, mode 0600); default
    /// `<data-dir>/secrets.key`, created on first start.
    #[arg(long, env = "ATTUNE_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// Largest result an action may return (JSON); past it the execution fails.
    #[arg(long, env = "ATTUNE_MAX_RESULT", default_value = "1MiB", value_parser = parse_size)]
    pub max_result: usize,
    /// How long an MCP tool call (`/mcp`) waits for its execution before
    /// answering with its id.
    #[arg(long, env = "ATTUNE_MCP_WAIT", default_value = "60s", value_parser = parse_duration)]
    pub mcp_wait: std::time::Duration,
    /// Actions `/mcp` offers as tools: patterns like `ops.*` or `core.echo`
    /// (repeatable); all by default.
    #[arg(long = "mcp-tool")]
    pub mcp_tools: Vec<String>,
    /// A host name `/mcp` answers to besides loopback ones (repeatable): its
    /// `Host` and `Origin` checks keep DNS rebinding out.
    #[arg(long = "mcp-host")]
    pub mcp_host: Vec<String>,
    /// Most disk one execution's `/scratch` may take; writes past it fail
    /// in the action with "no space".
    #[arg(long, env = "ATTUNE_SCRATCH_QUOTA", default_value = "64MiB", value_parser = parse_size)]
    pub scratch_quota: usize,
    #[command(flatten)]
    pub tracing: crate::telemetry::TracingArgs,
    /// How long a stop (Ctrl-C, SIGTERM) waits for open requests and
    /// running executions before exiting; a second signal exits at once.
    #[arg(long, env = "ATTUNE_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "ATTUNE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "ATTUNE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Also trust the CA certificates in this PEM file for actions' HTTPS
    /// requests (a private CA). For PostgreSQL, put `sslmode=verify-full`
    /// and `sslrootcert=<file>` in the database URL.
    #[arg(long, env = "ATTUNE_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// A registry packs may be installed from (`POST /api/v1/packs` with
    /// `{"oci": …}`): `host` or `host:port`, repeatable or comma-separated;
    /// none by default. Every connection of a pull, redirects and token
    /// requests included, follows the outbound rules of actions: no
    /// private, loopback or metadata address.
    #[arg(
        long = "allow-registry",
        env = "ATTUNE_ALLOW_REGISTRY",
        value_delimiter = ','
    )]
    pub allow_registry: Vec<String>,
    /// A registry on a loopback address (`127.0.0.1:5000`, `localhost:5000`)
    /// packs may be installed from, over plain HTTP (repeatable). Only
    /// loopback addresses are reached for it.
    #[arg(
        long = "insecure-registry",
        env = "ATTUNE_INSECURE_REGISTRY",
        value_delimiter = ','
    )]
    pub insecure_registry: Vec<String>,
    /// Credentials for registries, in Docker's `config.json` format
    /// (`{"auths": {"ghcr.io": {"auth": "<base64 user:password>"}}}`).
    /// Read at start; never stored, logged or shown.
    #[arg(long, env = "ATTUNE_REGISTRY_AUTH")]
    pub registry_auth: Option<PathBuf>,
}

/// The registries of `--allow-registry`, `--insecure-registry`,
/// `--registry-auth` and `--ca-cert`, checked before anything starts.
fn registries(args: &ServeArgs) -> anyhow::Result<attune_engine::packs::oci::RegistryConfig> {
    let credentials = match &args.registry_auth {
        Some(path) => attune_engine::packs::oci::auth::Credentials::from_docker_config(path)
            .context("--registry-auth")?,
        None => Default::default(),
    };
    for host in args.allow_registry.iter().chain(&args.insecure_registry) {
        if host.is_empty() || host.contains('/') || host.contains("://") {
            anyhow::bail!("registry `{host}`: give a host or host:port, without scheme or path");
        }
    }
    Ok(attune_engine::packs::oci::RegistryConfig {
        allowed: args.allow_registry.clone(),
        insecure: args.insecure_registry.clone(),
        credentials,
        ca_cert: args.ca_cert.clone(),
        ..Default::default()
    })
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

pub(super) async fn run(args: ServeArgs) -> anyhow::Result<i32> {
    // TLS material is checked before anything starts.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(std::sync::Arc::new(
            attune_util::tls::server_config(cert, key).context("--tls-cert/--tls-key")?,
        )),
        _ => None,
    };
    let outbound_tls = match &args.ca_cert {
        Some(ca) => Some(std::sync::Arc::new(
            attune_util::tls::client_config(Some(ca)).context("--ca-cert")?,
        )),
        None => None,
    };
    let config = ServerConfig {
        data_dir: args.data_dir.clone(),
        database_url: args.database_url.clone(),
        cache_dir: None,
        api: ApiConfig {
            max_upload_bytes: args.max_upload,
            mcp_wait: args.mcp_wait,
            mcp_tools: args.mcp_tools.clone(),
            mcp_hosts: args.mcp_host.clone(),
            secure_cookies: false,
            registries: std::sync::Arc::new(registries(&args)?),
        },
        pipeline: PipelineConfig {
            embedded_worker: args.workers > 0,
            concurrency: args.workers.max(1),
            default_timeout: args.default_timeout,
            lease: args.lease,
            retention: (args.retention_days > 0)
                .then(|| Duration::from_secs(args.retention_days.saturating_mul(86_400))),
            min_interval: args.min_interval,
            webhook_rate: args.webhook_rate,
            max_chain_depth: args.max_chain_depth,
            journal_cap: args.journal_cap,
            ..PipelineConfig::default()
        },
        outbound: OutboundConfig {
            allow_private: args.allow_private_outbound,
            tls: outbound_tls,
            ..OutboundConfig::default()
        },
        max_result_bytes: args.max_result,
        scratch_quota_bytes: args.scratch_quota as u64,
        secrets_key_file: args.secrets_key_file.clone(),
        telemetry: crate::telemetry::start(&args.tracing, "attune", args.ca_cert.as_deref())
            .context("--otlp-endpoint")?,
    };
    let server = Server::start(&config).await?;
    if let Some(token) = &server.new_admin_token {
        eprintln!(
            "Created the admin token (shown once; also in {}):\n\n    {token}\n",
            args.data_dir.join(ADMIN_TOKEN_FILE).display()
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(address = %listener.local_addr()?, scheme, "attune is listening");
    eprintln!(
        "attune is listening on {scheme}://{}",
        listener.local_addr()?
    );
    // A stop: no new connections, open requests (a long-poll, an output
    // stream) get until the deadline, then what the worker began may finish
    // and be recorded until the same deadline; a second signal exits at once.
    // A data directory deleted or replaced under the server stops it too,
    // at once: nothing it does from then on could be stored.
    let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<Stop>();
    let storage = server.core.storage.clone();
    let signal = async move {
        let why = tokio::select! {
            () = stop_requested() => Stop::Asked,
            () = data_dir_gone(&storage) => Stop::DataDirGone,
        };
        let _ = stopping_tx.send(why);
    };
    let serving = server::run(
        listener,
        server.core.clone(),
        server.api.clone(),
        tls,
        signal,
    );
    tokio::pin!(serving);
    let mut stopping = stopping;
    let drain = |why| match why {
        Stop::Asked => args.drain_timeout,
        Stop::DataDirGone => GONE_DRAIN.min(args.drain_timeout),
    };
    let (deadline, why) = tokio::select! {
        r = &mut serving => {
            r?;
            // Serving ends once a stop began: say which.
            let why = stopping.try_recv().unwrap_or(Stop::Asked);
            (tokio::time::Instant::now() + drain(why), why)
        }
        why = &mut stopping => {
            let why = why.unwrap_or(Stop::Asked);
            let deadline = tokio::time::Instant::now() + drain(why);
            match tokio::time::timeout_at(deadline, &mut serving).await {
                Ok(r) => r?,
                Err(_) => tracing::warn!("requests still open at the drain deadline were closed"),
            }
            (deadline, why)
        }
    };
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    server.pipeline.stop(&server.core, left).await;
    if let Some(telemetry) = server.core.telemetry.clone() {
        // The exporter sends on this runtime: flushed from a thread of
        // its own, so the runtime can answer.
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    }
    match why {
        Stop::Asked => Ok(0),
        Stop::DataDirGone => anyhow::bail!(
            "stopped: the data directory {} was deleted or replaced under the server",
            args.data_dir.display()
        ),
    }
}

/// Why the server stops.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// Ctrl-C or SIGTERM.
    Asked,
    /// The data directory is no longer the one the server opened.
    DataDirGone,
}

/// How often an idle server checks that its data directory is still the
/// one it opened (a `stat` of two files; writes check it themselves).
const DATA_DIR_CHECK: Duration = Duration::from_secs(2);

/// How long a server whose data directory went away lets open requests
/// finish: they can store nothing, so only long enough to answer.
const GONE_DRAIN: Duration = Duration::from_secs(1);

/// Resolves once the files the storage opened are deleted or replaced.
async fn data_dir_gone(storage: &attune_storage::Storage) {
    loop {
        tokio::time::sleep(DATA_DIR_CHECK).await;
        if storage.refusal() == Some(attune_storage::Refusal::Gone) {
            return;
        }
    }
}

/// Resolves on the first Ctrl-C or SIGTERM, after which a second one exits
/// the process at once (code 130).
pub(super) async fn stop_requested() {
    shutdown_signal().await;
    tokio::spawn(async {
        shutdown_signal().await;
        eprintln!("stopping now");
        std::process::exit(130);
    });
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    eprintln!("shutting down");
}
