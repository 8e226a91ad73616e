//! Packs' key-value state: what `attune:action/kv` calls do, wherever the
//! guest runs.
//!
//! [`answer`] performs one [`KvCall`] for one pack against the database,
//! checking the caps again (a standalone worker's calls arrive over the
//! network). The embedded worker reaches it through [`PackKv`]; a standalone
//! worker sends the same calls to the worker API, which answers with it.
//! Either way the guest sees a [`Kv`] store.

use serde_json::Value;

use super::worker::protocol::{KvCall, KvFailure};
use attune_runtime::kv::{
    KvError, KvStore, MAX_KEYS_PER_PACK, MAX_LISTED, check_key, check_value, too_many_keys,
};
use attune_storage::{KvRefusal, Page, Storage, now_ms};

/// Performs `call` on `pack`'s keys: a string or null for `get`, null for
/// `set`, a bool for `delete`, a list for `list_keys`, the sum for
/// `increment`.
pub async fn answer(storage: &Storage, pack: &str, call: KvCall) -> Result<Value, KvError> {
    let unavailable = |e: attune_storage::StorageError| {
        tracing::warn!(pack, error = %e, "key-value call failed");
        KvError::Unavailable("the key-value store is unavailable".into())
    };
    let refused = |r: KvRefusal| match r {
        KvRefusal::TooManyKeys => too_many_keys(),
        KvRefusal::NotAnInteger => KvError::NotAnInteger,
    };
    match call {
        KvCall::Get { key } => {
            check_key(&key)?;
            let v = storage.kv_get(pack, &key).await.map_err(unavailable)?;
            Ok(v.map_or(Value::Null, Value::String))
        }
        KvCall::Set { key, value, ttl_ms } => {
            check_key(&key)?;
            check_value(&value)?;
            let expires_at = ttl_ms.map(|t| now_ms().saturating_add(t.min(i64::MAX as u64) as i64));
            storage
                .kv_set(pack, &key, &value, expires_at, MAX_KEYS_PER_PACK)
                .await
                .map_err(unavailable)?
                .map_err(refused)?;
            Ok(Value::Null)
        }
        KvCall::Delete { key } => {
            check_key(&key)?;
            let gone = storage.kv_delete(pack, &key).await.map_err(unavailable)?;
            Ok(Value::Bool(gone))
        }
        KvCall::ListKeys { prefix } => {
            let page = Page {
                limit: Some(MAX_LISTED as i64),
                after: None,
            };
            let keys = storage
                .kv_list(pack, &prefix, &page)
                .await
                .map_err(unavailable)?;
            Ok(Value::Array(
                keys.into_iter().map(|k| Value::String(k.key)).collect(),
            ))
        }
        KvCall::Increment { key, delta } => {
            check_key(&key)?;
            let sum = storage
                .kv_increment(pack, &key, delta, MAX_KEYS_PER_PACK)
                .await
                .map_err(unavailable)?
                .map_err(refused)?;
            Ok(Value::from(sum))
        }
    }
}

/// Something that performs [`KvCall`]s for one pack.
#[async_trait::async_trait]
pub trait KvTransport: Send + Sync {
    /// Performs one call.
    async fn call(&self, call: KvCall) -> Result<Value, KvError>;
}

/// The guest's store over a transport.
pub struct Kv<T>(pub T);

fn odd(what: &str) -> KvError {
    KvError::Unavailable(format!("the key-value store answered {what} oddly"))
}

#[async_trait::async_trait]
impl<T: KvTransport> KvStore for Kv<T> {
    async fn get(&self, key: &str) -> Result<Option<String>, KvError> {
        match self.0.call(KvCall::Get { key: key.into() }).await? {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            _ => Err(odd("get")),
        }
    }

    async fn set(
        &self,
        key: &str,
        value: &str,
        ttl: Option<std::time::Duration>,
    ) -> Result<(), KvError> {
        let ttl_ms = ttl.map(|t| t.as_millis().min(u64::MAX as u128) as u64);
        self.0
            .call(KvCall::Set {
                key: key.into(),
                value: value.into(),
                ttl_ms,
            })
            .await
            .map(|_| ())
    }

    async fn delete(&self, key: &str) -> Result<bool, KvError> {
        let v = self.0.call(KvCall::Delete { key: key.into() }).await?;
        v.as_bool().ok_or_else(|| odd("delete"))
    }

    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        let v = self
            .0
            .call(KvCall::ListKeys {
                prefix: prefix.into(),
            })
            .await?;
        serde_json::from_value(v).map_err(|_| odd("list-keys"))
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let v = self
            .0
            .call(KvCall::Increment {
                key: key.into(),
                delta,
            })
            .await?;
        v.as_i64().ok_or_else(|| odd("increment"))
    }
}

/// The embedded worker's transport: straight to the database.
pub struct PackKv {
    /// The database.
    pub storage: Storage,
    /// Whose keys.
    pub pack: String,
}

#[async_trait::async_trait]
impl KvTransport for PackKv {
    async fn call(&self, call: KvCall) -> Result<Value, KvError> {
        answer(&self.storage, &self.pack, call).await
    }
}

impl From<KvError> for KvFailure {
    fn from(e: KvError) -> Self {
        match e {
            KvError::TooLarge(message) => KvFailure {
                kind: "too_large".into(),
                message,
            },
            KvError::NotAnInteger => KvFailure {
                kind: "not_an_integer".into(),
                message: "the value is not a whole number".into(),
            },
            KvError::Unavailable(message) => KvFailure {
                kind: "unavailable".into(),
                message,
            },
        }
    }
}

impl From<KvFailure> for KvError {
    fn from(f: KvFailure) -> Self {
        match f.kind.as_str() {
            "too_large" => KvError::TooLarge(f.message),
            "not_an_integer" => KvError::NotAnInteger,
            _ => KvError::Unavailable(f.message),
        }
    }
}
/// A page of a pack's keys under `prefix`, by key; `None` when there is
/// no such pack.
pub async fn list(
    core: &crate::Core,
    pack: &str,
    prefix: &str,
    page: &Page,
) -> Result<Option<Vec<attune_storage::KvRecord>>, crate::EngineError> {
    if core.storage.get_pack(pack).await?.is_none() {
        return Ok(None);
    }
    Ok(Some(core.storage.kv_list(pack, prefix, page).await?))
}
