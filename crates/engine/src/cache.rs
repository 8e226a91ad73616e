//! Short-lived read caches for the hot path: enabled rules per trigger type,
//! action records per ref, the worker list, live API tokens, packs' grants
//! and sealed secrets (ciphertext only: a value is opened where it is used).
//!
//! Every event would otherwise read its rules, every execution its action
//! and every request its token again. Entries live one second and are
//! dropped at once when this node changes a rule, a pack or a secret or
//! revokes a token; another node's change shows within that second. Only
//! tokens and secrets that exist are remembered: an unknown one is looked
//! up every time.
//! A map that reaches [`MAX_ENTRIES`] keys is emptied, so refs made up by
//! callers (direct runs name any action) cannot grow it without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attune_runtime::http::AllowedHosts;
use attune_storage::{
    ActionRecord, Grants, RuleRecord, SealedSecret, Storage, StorageError, TokenRecord,
    WorkerRecord,
};

/// How long a cached read stays fresh.
const TTL: Duration = Duration::from_secs(1);

/// Keys one map holds at most.
const MAX_ENTRIES: usize = 4096;

type Entry<T> = (Instant, T);

/// The fresh entry for `key`, or what `fetch` reads, remembered.
async fn get_or_fetch<T: Clone>(
    map: &Mutex<HashMap<String, Entry<T>>>,
    key: &str,
    fetch: impl Future<Output = Result<T, StorageError>>,
) -> Result<T, StorageError> {
    get_or_fetch_if(map, key, fetch, |_| true).await
}

/// [`get_or_fetch`] remembering only what `keep` accepts.
async fn get_or_fetch_if<T: Clone>(
    map: &Mutex<HashMap<String, Entry<T>>>,
    key: &str,
    fetch: impl Future<Output = Result<T, StorageError>>,
    keep: impl Fn(&T) -> bool,
) -> Result<T, StorageError> {
    if let Some((at, value)) = lock(map).get(key)
        && at.elapsed() < TTL
    {
        return Ok(value.clone());
    }
    let value = fetch.await?;
    if !keep(&value) {
        return Ok(value);
    }
    let mut map = lock(map);
    if map.len() >= MAX_ENTRIES {
        map.clear();
    }
    map.insert(key.to_string(), (Instant::now(), value.clone()));
    Ok(value)
}

/// The caches.
/// A pack's grants as stored, and its outbound grant parsed once.
#[derive(Debug)]
pub struct PackGrants {
    /// As stored (sent to standalone workers).
    pub grants: Grants,
    /// Where its actions may send HTTP requests.
    pub outbound: Arc<AllowedHosts>,
    /// Whether its executions record their journal.
    pub record: bool,
}

#[derive(Default)]
pub struct ReadCache {
    rules: Mutex<HashMap<String, Entry<Vec<RuleRecord>>>>,
    actions: Mutex<HashMap<String, Entry<Option<ActionRecord>>>>,
    workers: Mutex<Option<Entry<Vec<WorkerRecord>>>>,
    tokens: Mutex<HashMap<String, Entry<Option<TokenRecord>>>>,
    grants: Mutex<HashMap<String, Entry<Arc<PackGrants>>>>,
    secrets: Mutex<HashMap<String, Entry<Option<SealedSecret>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ReadCache {
    /// Enabled rules on `trigger`.
    pub async fn enabled_rules(
        &self,
        storage: &Storage,
        trigger: &str,
    ) -> Result<Vec<RuleRecord>, StorageError> {
        get_or_fetch(&self.rules, trigger, storage.enabled_rules(trigger)).await
    }

    /// The action with this ref.
    pub async fn action(
        &self,
        storage: &Storage,
        r#ref: &str,
    ) -> Result<Option<ActionRecord>, StorageError> {
        get_or_fetch(&self.actions, r#ref, storage.get_action(r#ref)).await
    }

    /// Every registered worker.
    pub async fn workers(&self, storage: &Storage) -> Result<Vec<WorkerRecord>, StorageError> {
        if let Some((at, workers)) = lock(&self.workers).as_ref()
            && at.elapsed() < TTL
        {
            return Ok(workers.clone());
        }
        let workers = storage.all_workers().await?;
        *lock(&self.workers) = Some((Instant::now(), workers.clone()));
        Ok(workers)
    }

    /// The live token with this hash; `None` (not remembered) when there
    /// is none.
    pub async fn token(
        &self,
        storage: &Storage,
        hash: &str,
    ) -> Result<Option<TokenRecord>, StorageError> {
        get_or_fetch_if(
            &self.tokens,
            hash,
            storage.find_token(hash),
            Option::is_some,
        )
        .await
    }

    /// Forgets cached tokens (one was revoked here).
    pub fn tokens_changed(&self) {
        lock(&self.tokens).clear();
    }

    /// Forgets cached rules (a rule changed here).
    pub fn rules_changed(&self) {
        lock(&self.rules).clear();
    }

    /// Forgets cached actions and grants (a pack changed here).
    pub fn actions_changed(&self) {
        lock(&self.actions).clear();
        lock(&self.grants).clear();
    }

    /// What `pack` is granted, with its outbound grant parsed (nothing for a
    /// pack that is gone; nowhere for an invalid outbound grant).
    pub async fn grants(
        &self,
        storage: &Storage,
        pack: &str,
    ) -> Result<Arc<PackGrants>, StorageError> {
        let fetch = async {
            let (grants, record) = storage
                .get_pack(pack)
                .await?
                .map_or((Grants::default(), true), |p| (p.grants, p.record));
            let outbound =
                AllowedHosts::parse(&grants.allowed_outbound_hosts).unwrap_or_else(|errors| {
                    tracing::warn!(pack, ?errors, "ignoring an invalid outbound grant");
                    AllowedHosts::default()
                });
            Ok(Arc::new(PackGrants {
                record,
                grants,
                outbound: Arc::new(outbound),
            }))
        };
        get_or_fetch(&self.grants, pack, fetch).await
    }

    /// The sealed secret `name`; `None` (not remembered) when there is none.
    pub async fn secret(
        &self,
        storage: &Storage,
        name: &str,
    ) -> Result<Option<SealedSecret>, StorageError> {
        get_or_fetch_if(
            &self.secrets,
            name,
            storage.get_secret(name),
            Option::is_some,
        )
        .await
    }

    /// Forgets cached secrets (one was set or deleted here).
    pub fn secrets_changed(&self) {
        lock(&self.secrets).clear();
    }

    /// Forgets the worker list (a worker registered here).
    pub fn workers_changed(&self) {
        *lock(&self.workers) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fresh_entries_are_reused_and_a_full_map_is_emptied() {
        let map: Mutex<HashMap<String, Entry<u32>>> = Mutex::default();
        assert_eq!(get_or_fetch(&map, "a", async { Ok(1) }).await.unwrap(), 1);
        assert_eq!(
            get_or_fetch(&map, "a", async { Ok(2) }).await.unwrap(),
            1,
            "a fresh entry is not read again"
        );
        for n in 0..MAX_ENTRIES {
            get_or_fetch(&map, &n.to_string(), async { Ok(0) })
                .await
                .unwrap();
        }
        assert!(lock(&map).len() <= MAX_ENTRIES);
        assert!(!lock(&map).contains_key("a"), "the full map was emptied");
    }

    #[tokio::test]
    async fn what_keep_rejects_is_read_again() {
        let map: Mutex<HashMap<String, Entry<Option<u32>>>> = Mutex::default();
        let unknown = get_or_fetch_if(&map, "t", async { Ok(None) }, Option::is_some);
        assert_eq!(unknown.await.unwrap(), None);
        assert!(lock(&map).is_empty(), "an unknown key is not remembered");
        let known = get_or_fetch_if(&map, "t", async { Ok(Some(1)) }, Option::is_some);
        assert_eq!(known.await.unwrap(), Some(1));
        let again = get_or_fetch_if(&map, "t", async { Ok(None) }, Option::is_some);
        assert_eq!(again.await.unwrap(), Some(1), "a fresh known key is reused");
    }
}
