//! [`Core`]: the one handle the engine's functions take — storage, the
//! component runtime, loaded components, read caches, metrics, in-process
//! signals and the event door — and nothing of HTTP.
//!
//! Surfaces (the API, the console, MCP) hold a `Core` and call the engine
//! with it; background tasks hold clones of it. Every field is cheap to
//! clone and shared.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cache::ReadCache;
use super::dispatch::{Dispatch, lock};
use super::error::EngineError;
use super::ingest::Ingest;
use super::metrics::Metrics;
use super::packs::files::ComponentFiles;
use super::secrets::SecretsKey;
use attune_runtime::{LoadedComponent, Runtime};
use attune_storage::Storage;

/// Settings the engine reads while it runs.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// The shortest interval a timer rule may fire at.
    pub min_interval: Duration,
    /// This node's name, stable across restarts (its embedded worker keeps
    /// one row instead of a new one per start).
    pub node: String,
    /// Deliveries one webhook accepts per second (twice as many at once).
    pub webhook_rate: u32,
    /// The deepest chain of causes rules still see (see [`IncomingEvent::depth`](super::ingest::IncomingEvent::depth)).
    pub max_chain_depth: i64,
    /// Most bytes of calls one execution's journal keeps (0: record none).
    pub journal_cap: usize,
}

impl CoreConfig {
    /// [`CoreConfig::lease`] in milliseconds.
    pub fn lease_ms(&self) -> i64 {
        attune_util::units::millis(self.lease)
    }

    /// How long a worker counts as alive after its last heartbeat: a lease,
    /// and never under a second.
    pub fn worker_ttl_ms(&self) -> i64 {
        self.lease_ms().max(1000)
    }
}

/// Deliveries one webhook accepts per second by default.
pub const DEFAULT_WEBHOOK_RATE: u32 = 1000;

/// The deepest chain of causes rules see by default.
pub const DEFAULT_MAX_CHAIN_DEPTH: u32 = 8;

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            min_interval: Duration::from_secs(1),
            node: format!("pid-{}", std::process::id()),
            webhook_rate: DEFAULT_WEBHOOK_RATE,
            max_chain_depth: DEFAULT_MAX_CHAIN_DEPTH.into(),
            journal_cap: attune_runtime::journal::DEFAULT_CAP,
        }
    }
}

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Run an embedded worker.
    pub embedded_worker: bool,
    /// Fire timers on this node (every node may: ticks are claimed, never doubled).
    pub timers: bool,
    /// Executions the embedded worker runs at once.
    pub concurrency: usize,
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// First retry delay; doubles per attempt.
    pub retry_backoff: Duration,
    /// Default execution timeout.
    pub default_timeout: Duration,
    /// Delete finished executions and events older than this; `None` keeps all.
    pub retention: Option<Duration>,
    /// The shortest interval a timer rule may fire at.
    pub min_interval: Duration,
    /// Deliveries one webhook accepts per second (twice as many at once).
    pub webhook_rate: u32,
    /// The deepest chain of causes rules still see.
    pub max_chain_depth: u32,
    /// Most bytes of calls one execution's journal keeps (0: record none).
    pub journal_cap: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            embedded_worker: true,
            timers: true,
            concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            lease: Duration::from_secs(30),
            retry_backoff: Duration::from_secs(1),
            default_timeout: Duration::from_secs(30),
            retention: None,
            min_interval: Duration::from_secs(1),
            webhook_rate: DEFAULT_WEBHOOK_RATE,
            max_chain_depth: DEFAULT_MAX_CHAIN_DEPTH,
            journal_cap: attune_runtime::journal::DEFAULT_CAP,
        }
    }
}

/// The engine's handle. Cheap to clone.
#[derive(Clone)]
pub struct Core {
    /// The database.
    pub storage: Storage,
    /// The component runtime.
    pub runtime: Runtime,
    /// Component files on disk.
    pub files: Arc<ComponentFiles>,
    /// Loaded components.
    pub components: Arc<ComponentCache>,
    /// Hot-path read caches.
    pub cache: Arc<ReadCache>,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    /// Wake-ups, cancellation and live output.
    pub dispatch: Arc<Dispatch>,
    /// The one door events and direct runs enter through.
    pub ingest: Arc<Ingest>,
    /// Settings.
    pub config: Arc<CoreConfig>,
    /// The key that seals secrets.
    pub secrets: Arc<SecretsKey>,
    /// Deliveries per webhook, rate-limited.
    pub hooks: Arc<crate::triggers::webhook::HookLimiter>,
    /// Tracing, when spans are exported.
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
}

impl Core {
    /// A core over `storage`, `runtime` and the component directory.
    pub fn new(
        storage: Storage,
        runtime: Runtime,
        files: ComponentFiles,
        config: CoreConfig,
        secrets: SecretsKey,
    ) -> Self {
        let hooks = crate::triggers::webhook::HookLimiter::new(config.webhook_rate);
        Core {
            storage,
            runtime,
            files: Arc::new(files),
            components: Arc::default(),
            cache: Arc::default(),
            metrics: Arc::default(),
            dispatch: Arc::default(),
            ingest: Arc::default(),
            config: Arc::new(config),
            secrets: Arc::new(secrets),
            hooks: Arc::new(hooks),
            telemetry: None,
        }
    }

    /// Why the database takes no writes now, if it does not.
    pub fn refusal(&self) -> Option<attune_storage::Refusal> {
        self.storage.refusal()
    }

    /// Whether the database answers a query now.
    pub async fn database_answers(&self) -> bool {
        self.storage.ping().await
    }

    /// The loaded component with this digest (see [`ComponentCache::get`]).
    pub async fn component(&self, digest: &str) -> Result<LoadedComponent, EngineError> {
        self.components
            .get(digest, &self.runtime, &self.storage, &self.files)
            .await
    }
}

/// Loaded components by digest, so executions and rule checks reuse them.
#[derive(Default)]
pub struct ComponentCache {
    loaded: Mutex<HashMap<String, LoadedComponent>>,
}

impl ComponentCache {
    /// Remembers a loaded component.
    pub fn insert(&self, pack: LoadedComponent) {
        lock(&self.loaded).insert(pack.digest().to_string(), pack);
    }

    /// The loaded component with this digest, loading it from disk or the
    /// database when needed.
    pub async fn get(
        &self,
        digest: &str,
        runtime: &Runtime,
        storage: &Storage,
        files: &ComponentFiles,
    ) -> Result<LoadedComponent, EngineError> {
        if let Some(p) = lock(&self.loaded).get(digest) {
            return Ok(p.clone());
        }
        let bytes = match files.read(digest) {
            Ok(b) => b,
            Err(_) => {
                let b = storage
                    .component_bytes(digest)
                    .await?
                    .ok_or_else(|| EngineError::not_found("component", digest))?;
                let _ = files.store(digest, &b);
                b
            }
        };
        let pack = super::packs::load_bounded(runtime, bytes)
            .await
            .map_err(|e| {
                EngineError::Internal(anyhow::anyhow!("reloading component {digest}: {e}"))
            })?;
        self.insert(pack.clone());
        Ok(pack)
    }
}
