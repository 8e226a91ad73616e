//! What the local commands share: a component runtime on this machine, and
//! loading a component from a file or the built-in packs.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::RuntimeArgs;
use crate::bundled;
use attune_runtime::http::OutboundConfig;
use attune_runtime::{CacheOutcome, Limits, LoadError, LoadedComponent, Runtime, RuntimeConfig};

/// A runtime for local runs with `limits` as its defaults.
pub(super) fn local_runtime(
    args: &RuntimeArgs,
    limits: Limits,
    outbound: OutboundConfig,
) -> anyhow::Result<Runtime> {
    let defaults = RuntimeConfig::default();
    let config = RuntimeConfig {
        cache_dir: args.cache_dir(),
        default_limits: limits,
        max_limits: Limits {
            timeout: limits.timeout.max(defaults.max_limits.timeout),
            memory_bytes: limits.memory_bytes.max(defaults.max_limits.memory_bytes),
            output_bytes: limits.output_bytes.max(defaults.max_limits.output_bytes),
        },
        max_instances: 4,
        outbound,
        ..defaults
    };
    Runtime::new(config).context("starting the component runtime")
}

/// Loads `component`: a file, or the name of a built-in pack.
pub(super) async fn load(rt: &Runtime, component: &str) -> Result<LoadedComponent, LoadError> {
    let path = Path::new(component);
    let bytes = match bundled::pack(component) {
        Some(bytes) if !path.exists() => bytes.to_vec(),
        _ => std::fs::read(path).map_err(|source| LoadError::Io {
            path: PathBuf::from(component),
            source,
        })?,
    };
    let rt = rt.clone();
    let (pack, outcome) = tokio::task::spawn_blocking(move || rt.load(&bytes))
        .await
        .map_err(|e| LoadError::Invalid(format!("compiler task failed: {e}")))??;
    tracing::debug!(
        digest = pack.digest(),
        cached = outcome == CacheOutcome::Hit,
        "component loaded"
    );
    Ok(pack)
}
