//! `attune worker`: a standalone worker against a server.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::{Map, Value};

use crate::client::worker::{self as remote, RemoteWorkerConfig};
use attune_util::units::{parse_duration, parse_size};

/// Options of `attune worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Server URL.
    #[arg(long, env = "ATTUNE_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// A token with the `worker` role.
    #[arg(long, env = "ATTUNE_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Unique name; default `<hostname>-<pid>`.
    #[arg(long)]
    pub name: Option<String>,
    /// Capabilities to advertise, replacing the defaults (repeatable).
    #[arg(long = "capability")]
    pub capabilities: Vec<String>,
    /// Free labels as key=value (repeatable), e.g. region=eu.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Executions run at once; default the number of cores.
    #[arg(long, env = "ATTUNE_WORKERS")]
    pub concurrency: Option<usize>,
    /// Component and compiled-artifact cache; default `~/.cache/attune/worker`.
    #[arg(long, env = "ATTUNE_WORKER_CACHE")]
    pub cache_dir: Option<PathBuf>,
    /// Execution timeout when an execution sets none.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub default_timeout: Duration,
    /// Let actions reach private, loopback and link-local addresses (their
    /// pack's grant still applies).
    #[arg(long, env = "ATTUNE_ALLOW_PRIVATE_OUTBOUND")]
    pub allow_private_outbound: bool,
    /// How long a stop (Ctrl-C, SIGTERM) lets begun executions end and be
    /// reported; what was claimed but not begun is handed back at once. A
    /// second signal exits at once.
    #[arg(long, env = "ATTUNE_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Also trust the CA certificates in this PEM file: for an `https://`
    /// server and for actions' HTTPS requests (a private CA).
    #[arg(long, env = "ATTUNE_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Most disk one execution's `/scratch` may take; writes past it fail
    /// in the action with "no space".
    #[arg(long, env = "ATTUNE_SCRATCH_QUOTA", default_value = "64MiB", value_parser = parse_size)]
    pub scratch_quota: usize,
    #[command(flatten)]
    pub tracing: crate::telemetry::TracingArgs,
}

pub(super) async fn run(args: WorkerArgs) -> anyhow::Result<i32> {
    let mut labels = Map::new();
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("label `{l}` is not key=value"))?;
        labels.insert(k.to_string(), Value::String(v.to_string()));
    }
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    let cache_dir = args.cache_dir.clone().unwrap_or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir)
            .join(".cache/attune/worker")
    });
    let config = RemoteWorkerConfig {
        server: args.server.clone(),
        token: args.token.clone(),
        name: args
            .name
            .clone()
            .unwrap_or_else(|| format!("{host}-{}", std::process::id())),
        capabilities: if args.capabilities.is_empty() {
            attune_engine::worker::capabilities()
        } else {
            args.capabilities.clone()
        },
        labels: Value::Object(labels),
        concurrency: args
            .concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        cache_dir,
        default_timeout: args.default_timeout,
        allow_private_outbound: args.allow_private_outbound,
        ca_cert: args.ca_cert.clone(),
        scratch_quota_bytes: args.scratch_quota as u64,
        telemetry: crate::telemetry::start(
            &args.tracing,
            "attune-worker",
            args.ca_cert.as_deref(),
        )?,
    };
    eprintln!("worker {} serving {}", config.name, config.server);
    let stop = async {
        super::serve::stop_requested().await;
        eprintln!("stopping: handing back what never began, finishing what did");
    };
    let telemetry = config.telemetry.clone();
    remote::run_until(config, stop, args.drain_timeout).await?;
    if let Some(telemetry) = telemetry {
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    }
    Ok(0)
}
