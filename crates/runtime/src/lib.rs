//! The sandboxed component runtime: load, describe and run actions.
//!
//! Owns everything wasmtime: the engine (pooling allocator, epoch
//! interruption, async), the artifact cache ([`cache`]), the JSON ↔ WIT mapping
//! ([`schema`], [`values`]), the per-execution sandbox ([`host`], [`output`]),
//! execution itself ([`execute`]) and the journal of what a run received,
//! recorded or answered from in a replay ([`journal`]). It knows nothing of HTTP or SQL: the
//! API and workers hand it component bytes and JSON, and get JSON back.

pub mod bindings;
pub mod cache;
pub mod calls;
pub mod capabilities;
pub mod component;
pub mod context;
pub mod execute;
pub mod host;
pub mod http;
pub mod journal;
pub mod kv;
pub mod log;
pub mod meter;
pub mod output;
pub mod schema;
pub mod scratch;
pub mod secrets;
pub mod values;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, PoolingAllocationConfig};

pub use cache::CacheOutcome;
pub use calls::{CallSpan, HostCalls};
pub use component::{
    Action, ActionInfo, DOCS_SECTION, LoadedComponent, schema_errors, validator_errors,
};
pub use execute::{ExecuteError, ExecutionRequest, Outcome, Status};
pub use host::{ExecutionContext, LogLine};
pub use journal::{Divergence, Journal, JournalMode};
pub use meter::{Quotas, Resources};
pub use values::PathError;

use self::cache::ArtifactCache;
use self::host::HostState;

/// How often the epoch ticker advances: the granularity of deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Resource limits for one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time the call may take, instantiation included.
    pub timeout: Duration,
    /// Bytes each linear memory of the instance may grow to.
    pub memory_bytes: usize,
    /// Bytes of stdout kept (and, separately, of stderr); the rest is dropped.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            memory_bytes: 64 << 20,
            output_bytes: 1 << 20,
        }
    }
}

/// How to build a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where precompiled artifacts are kept; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Where per-execution scratch directories are created.
    pub scratch_dir: PathBuf,
    /// Limits used when a request sets none.
    pub default_limits: Limits,
    /// The most any request may ask for.
    pub max_limits: Limits,
    /// How many instances may be alive at once (pooling allocator slots);
    /// executions past it wait for a slot instead of failing.
    pub max_instances: u32,
    /// Largest component accepted, in bytes.
    pub max_component_bytes: usize,
    /// The operator's limits on outbound HTTP.
    pub outbound: http::OutboundConfig,
    /// Largest result (or typed error) an action may return, as JSON bytes;
    /// past it the execution fails and says so.
    pub max_result_bytes: usize,
    /// Most disk one execution's `/scratch` may take (files rounded up to
    /// 4 KiB blocks, a block per entry); writes past it fail in the guest.
    pub scratch_quota_bytes: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            scratch_dir: std::env::temp_dir().join("attune-scratch"),
            default_limits: Limits::default(),
            max_limits: Limits {
                timeout: Duration::from_secs(3600),
                memory_bytes: 4 << 30,
                output_bytes: 16 << 20,
            },
            max_instances: 64,
            max_component_bytes: 50 << 20,
            outbound: http::OutboundConfig::default(),
            max_result_bytes: 1 << 20,
            scratch_quota_bytes: 64 << 20,
        }
    }
}

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a valid WebAssembly component.
    #[error("not a valid component: {0}")]
    Invalid(String),
    /// The component is larger than allowed.
    #[error("component is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// An action's signature uses a type the JSON mapping cannot carry.
    #[error("action `{action}`, {place}: {reason}")]
    Unsupported {
        /// The action (function) name.
        action: String,
        /// `parameter `x`` or `result`.
        place: String,
        /// Which type and where.
        reason: schema::Unsupported,
    },
    /// The component imports something this host does not provide.
    #[error("component needs an import this host does not provide: {0}")]
    MissingImport(String),
    /// Reading the file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

struct RuntimeInner {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Option<ArtifactCache>,
    scratch: scratch::ScratchPool,
    config: RuntimeConfig,
    outbound: Arc<http::OutboundConfig>,
    /// One permit per pooling-allocator slot: an execution holds one from
    /// before its instance exists until the instance is gone.
    slots: tokio::sync::Semaphore,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// The component runtime. Cheap to clone; one per process is plenty.
#[derive(Clone)]
pub struct Runtime(Arc<RuntimeInner>);

impl Runtime {
    /// Builds the engine, the linker and the artifact cache.
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let engine = Engine::new(&engine_config(&config))
            .map_err(|e| anyhow::anyhow!("building the wasmtime engine: {e:#}"))?;
        let mut linker = Linker::new(&engine);
        // Linking is not granting: every standard WASI interface is linked so
        // components from any toolchain instantiate; the per-execution WASI
        // context denies sockets and host directories.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking WASI: {e:#}"))?;
        scratch::fs::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking the scratch quota: {e:#}"))?;
        capabilities::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking attune: {e:#}"))?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(ArtifactCache::open(dir, &engine)?),
            None => None,
        };
        let scratch = scratch::ScratchPool::new(&config.scratch_dir)?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        spawn_ticker(engine.weak(), stop_ticker.clone());
        Ok(Self(Arc::new(RuntimeInner {
            engine,
            linker,
            cache,
            scratch,
            outbound: Arc::new(config.outbound.clone()),
            slots: tokio::sync::Semaphore::new(config.max_instances.max(1) as usize),
            config,
            stop_ticker,
        })))
    }

    /// The wasmtime engine (for embedding and benchmarks).
    pub fn engine(&self) -> &Engine {
        &self.0.engine
    }

    /// Scratch directories for executions.
    pub(crate) fn scratch(&self) -> &scratch::ScratchPool {
        &self.0.scratch
    }

    /// The configuration this runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.0.config
    }

    /// Waits for a free instance slot.
    pub(crate) async fn slot(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.0
            .slots
            .acquire()
            .await
            .expect("the slot semaphore is never closed")
    }

    /// The limits on outbound HTTP, shared by every execution.
    pub(crate) fn outbound(&self) -> Arc<http::OutboundConfig> {
        self.0.outbound.clone()
    }

    /// Validates, compiles (or loads the cached artifact) and describes a
    /// component. Blocking and CPU-heavy: call it off the async executor.
    pub fn load(&self, bytes: &[u8]) -> Result<(LoadedComponent, CacheOutcome), LoadError> {
        let limit = self.0.config.max_component_bytes;
        if bytes.len() > limit {
            return Err(LoadError::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        if !wasmparser::Parser::is_component(bytes) {
            let hint = if wasmparser::Parser::is_core_wasm(bytes) {
                "this is a core module; build with `--target wasm32-wasip2` to get a component"
            } else {
                "missing the WebAssembly component header"
            };
            return Err(LoadError::Invalid(hint.to_string()));
        }
        let digest = cache::digest(bytes);
        let engine = &self.0.engine;
        let (component, outcome) = match &self.0.cache {
            Some(cache) => cache.load_or_compile(engine, &digest, bytes),
            None => wasmtime::component::Component::new(engine, bytes)
                .map(|c| (c, CacheOutcome::Compiled)),
        }
        .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;

        let docs = component::read_docs(bytes);
        let (actions, imports, capabilities) = component::describe(engine, &component, &docs)?;
        let pre = self
            .0
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::MissingImport(format!("{e:#}")))?;
        Ok((
            LoadedComponent(Arc::new(component::ComponentInner {
                digest,
                pre,
                actions,
                imports,
                capabilities,
                description: docs.world_description(),
            })),
            outcome,
        ))
    }

    /// Reads and loads a component file.
    pub fn load_file(&self, path: &Path) -> Result<(LoadedComponent, CacheOutcome), LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.load(&bytes)
    }

    /// Clamps requested limits to what the operator allows.
    pub fn clamp(&self, limits: Limits) -> Limits {
        let max = self.0.config.max_limits;
        Limits {
            timeout: limits.timeout.min(max.timeout),
            memory_bytes: limits.memory_bytes.min(max.memory_bytes),
            output_bytes: limits.output_bytes.min(max.output_bytes),
        }
    }
}

/// Bytes of each memory and table reset in place rather than given back to
/// the kernel when a slot is reused.
const KEEP_RESIDENT: usize = 2 << 20;

fn engine_config(config: &RuntimeConfig) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    let n = config.max_instances.max(1);
    // Components from some toolchains hold several core instances, memories
    // and tables each; size the pools for that, not for one module.
    pool.total_component_instances(n)
        .total_core_instances(n * 16)
        .total_memories(n * 4)
        .total_tables(n * 8)
        .total_stacks(n)
        .max_memory_size(config.max_limits.memory_bytes)
        .table_elements(100_000)
        .max_core_instance_size(16 << 20)
        .max_component_instance_size(16 << 20)
        // Resetting a slot with `madvise` flushes the TLB of every core the
        // process runs on (an interrupt per core, per execution); where the
        // kernel can say which pages an execution dirtied (Linux 6.7+),
        // those are reset in place and stay resident instead.
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT);

    let mut cfg = Config::new();
    cfg.wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool))
        .max_wasm_stack(1 << 20)
        .async_stack_size(4 << 20);
    cfg
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the runtime drops.
fn spawn_ticker(engine: wasmtime::EngineWeak, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("attune-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .expect("spawning the epoch ticker thread");
}
