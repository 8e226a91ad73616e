//! What the local commands share: a component runtime on this machine,
//! loading a component from a file or the built-in packs, and parameters
//! from `--params` and `-p key=value`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Map, Value};

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

/// Merges `--params` JSON with `-p key=value` pairs.
pub fn build_params(json_params: Option<&str>, pairs: &[String]) -> Result<Value, String> {
    let mut map = match json_params {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(other) => {
                return Err(format!(
                    "--params must be a JSON object, got {}",
                    attune_runtime::values::json_kind(&other)
                ));
            }
            Err(e) => return Err(format!("--params is not valid JSON: {e}")),
        },
    };
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not key=value"))?;
        if key.is_empty() {
            return Err(format!("`{pair}` has an empty key"));
        }
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
        map.insert(key.to_string(), value);
    }
    Ok(Value::Object(map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pairs_are_json_when_they_parse_and_strings_otherwise() {
        let p = build_params(
            Some(r#"{"a": 1, "b": "x"}"#),
            &[
                "b=2".into(),
                "c=hello, world".into(),
                "d=[1,2]".into(),
                "e=".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            p,
            json!({"a": 1, "b": 2, "c": "hello, world", "d": [1, 2], "e": ""})
        );
    }

    #[test]
    fn rejects_params_that_are_not_an_object() {
        assert!(
            build_params(Some("[1]"), &[])
                .unwrap_err()
                .contains("JSON object")
        );
        assert!(
            build_params(Some("{"), &[])
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(build_params(None, &["novalue".into()]).is_err());
    }
}
