//! `attune:action/kv`: state that outlives one execution, scoped to the
//! action's pack.
//!
//! The runtime knows only the [`KvStore`] trait: the embedded worker hands
//! each run a store over the server's database, a standalone worker one
//! over the worker API, and `attune action run` one in memory. Each store
//! is already scoped to one pack, so a guest names keys, never packs. The
//! caps ([`MAX_KEY_BYTES`], [`MAX_VALUE_BYTES`]) are checked here before a
//! store is asked; the per-pack key count is the store's to enforce.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker};

use super::bindings::attune::action::kv;
use super::calls::Calls;

pub use kv::Error as KvError;

/// The capability string a worker advertises for it.
pub const CAPABILITY: &str = "attune:action/kv@0.1.0";

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Longest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 << 10;
/// Most keys one pack may hold.
pub const MAX_KEYS_PER_PACK: usize = 10_000;
/// Most keys one `list-keys` returns.
pub const MAX_LISTED: usize = 1_000;

/// One pack's key-value state.
#[async_trait::async_trait]
pub trait KvStore: Send + Sync {
    /// The value of `key`, unless absent or expired.
    async fn get(&self, key: &str) -> Result<Option<String>, KvError>;
    /// Sets `key`, expiring after `ttl` when given; fails past the key cap.
    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), KvError>;
    /// Removes `key`; true when it was set.
    async fn delete(&self, key: &str) -> Result<bool, KvError>;
    /// Keys starting with `prefix`, in order, at most [`MAX_LISTED`].
    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, KvError>;
    /// Adds `delta` to the whole number at `key` (absent: 0).
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError>;
}

/// Checks a key against the cap.
pub fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(KvError::TooLarge(format!(
            "a key is 1 to {MAX_KEY_BYTES} bytes; this one is {}",
            key.len()
        )));
    }
    Ok(())
}

/// Checks a value against the cap.
pub fn check_value(value: &str) -> Result<(), KvError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(KvError::TooLarge(format!(
            "a value is at most {MAX_VALUE_BYTES} bytes; this one is {}",
            value.len()
        )));
    }
    Ok(())
}

/// The error for a pack already holding [`MAX_KEYS_PER_PACK`] keys.
pub fn too_many_keys() -> KvError {
    KvError::TooLarge(format!(
        "the pack holds {MAX_KEYS_PER_PACK} keys, the most allowed"
    ))
}

/// One run's store; `None` when the run has none (every call fails).
#[derive(Default, Clone)]
pub struct KvState(pub Option<Arc<dyn KvStore>>);

impl std::fmt::Debug for KvState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "KvState(store)"
        } else {
            "KvState(none)"
        })
    }
}

impl KvState {
    fn store(&self) -> Result<&Arc<dyn KvStore>, KvError> {
        self.0
            .as_ref()
            .ok_or_else(|| KvError::Unavailable("no key-value store in this run".into()))
    }
}

impl kv::Host for KvState {
    async fn get(&mut self, key: String) -> Result<Option<String>, KvError> {
        check_key(&key)?;
        self.store()?.get(&key).await
    }

    async fn set(
        &mut self,
        key: String,
        value: String,
        ttl_ms: Option<u64>,
    ) -> Result<(), KvError> {
        check_key(&key)?;
        check_value(&value)?;
        self.store()?
            .set(&key, &value, ttl_ms.map(Duration::from_millis))
            .await
    }

    async fn delete(&mut self, key: String) -> Result<bool, KvError> {
        check_key(&key)?;
        self.store()?.delete(&key).await
    }

    async fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, KvError> {
        if prefix.len() > MAX_KEY_BYTES {
            return Ok(Vec::new());
        }
        self.store()?.list_keys(&prefix).await
    }

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, KvError> {
        check_key(&key)?;
        self.store()?.increment(&key, delta).await
    }
}

/// A store that counts each call on its run's [`Calls`] with a span
/// naming the operation only (a key or value may hold anything).
pub(crate) struct CountedKv {
    pub inner: Arc<dyn KvStore>,
    pub calls: Calls,
}

impl CountedKv {
    async fn timed<T>(
        &self,
        op: &str,
        call: impl std::future::Future<Output = Result<T, KvError>>,
    ) -> Result<T, KvError> {
        let began = Instant::now();
        self.calls.count(|c| &mut c.kv);
        let answer = call.await;
        let error = answer.as_ref().err().map(|e| {
            match e {
                KvError::TooLarge(_) => "too_large",
                KvError::NotAnInteger => "not_an_integer",
                KvError::Unavailable(_) => "unavailable",
            }
            .to_string()
        });
        let attributes = vec![("attune.kv.operation".into(), op.to_string())];
        self.calls
            .span("kv", format!("kv {op}"), began, attributes, error);
        answer
    }
}

#[async_trait::async_trait]
impl KvStore for CountedKv {
    async fn get(&self, key: &str) -> Result<Option<String>, KvError> {
        self.timed("get", self.inner.get(key)).await
    }

    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), KvError> {
        self.timed("set", self.inner.set(key, value, ttl)).await
    }

    async fn delete(&self, key: &str) -> Result<bool, KvError> {
        self.timed("delete", self.inner.delete(key)).await
    }

    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        self.timed("list_keys", self.inner.list_keys(prefix)).await
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.timed("increment", self.inner.increment(key, delta))
            .await
    }
}

/// Links `attune:action/kv` to the store `get` finds in a store's data.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut KvState,
) -> wasmtime::Result<()> {
    kv::add_to_linker::<T, HasSelf<KvState>>(linker, get)
}

/// A store in memory, for `attune action run`: it lasts one process.
#[derive(Default)]
pub struct MemoryKv(Mutex<BTreeMap<String, (String, Option<Instant>)>>);

impl MemoryKv {
    fn live(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (String, Option<Instant>)>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, (_, expires)| expires.is_none_or(|e| e > now));
        map
    }
}

#[async_trait::async_trait]
impl KvStore for MemoryKv {
    async fn get(&self, key: &str) -> Result<Option<String>, KvError> {
        Ok(self.live().get(key).map(|(v, _)| v.clone()))
    }

    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), KvError> {
        let mut map = self.live();
        if !map.contains_key(key) && map.len() >= MAX_KEYS_PER_PACK {
            return Err(too_many_keys());
        }
        let expires = ttl.map(|t| Instant::now() + t);
        map.insert(key.to_string(), (value.to_string(), expires));
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.live().remove(key).is_some())
    }

    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        Ok(self
            .live()
            .range(prefix.to_string()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .take(MAX_LISTED)
            .cloned()
            .collect())
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let mut map = self.live();
        if !map.contains_key(key) && map.len() >= MAX_KEYS_PER_PACK {
            return Err(too_many_keys());
        }
        let entry = map.entry(key.to_string()).or_insert(("0".into(), None));
        let sum = add(&entry.0, delta)?;
        entry.0 = sum.to_string();
        Ok(sum)
    }
}

/// `current` (a whole number as text) plus `delta`, without overflow.
pub fn add(current: &str, delta: i64) -> Result<i64, KvError> {
    current
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_add(delta))
        .ok_or(KvError::NotAnInteger)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_store_sets_expires_lists_and_counts() {
        let kv = MemoryKv::default();
        kv.set("cursor", "41", None).await.unwrap();
        assert_eq!(kv.increment("cursor", 1).await, Ok(42));
        assert_eq!(kv.increment("fresh", -2).await, Ok(-2));
        kv.set("word", "x", None).await.unwrap();
        assert_eq!(kv.increment("word", 1).await, Err(KvError::NotAnInteger));
        kv.set("brief", "v", Some(Duration::from_millis(1)))
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(kv.get("brief").await, Ok(None), "expired");
        assert_eq!(kv.list_keys("").await.unwrap(), ["cursor", "fresh", "word"]);
        assert_eq!(kv.list_keys("c").await.unwrap(), ["cursor"]);
        assert_eq!(kv.delete("cursor").await, Ok(true));
        assert_eq!(kv.delete("cursor").await, Ok(false));
    }

    #[test]
    fn keys_and_values_are_capped_and_sums_do_not_overflow() {
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
        assert!(check_value(&"v".repeat(MAX_VALUE_BYTES + 1)).is_err());
        assert_eq!(add(&i64::MAX.to_string(), 1), Err(KvError::NotAnInteger));
    }
}
