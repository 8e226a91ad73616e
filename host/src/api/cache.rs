//! Short-lived read caches for the hot path: enabled rules per trigger type,
//! action records per ref, and the worker list.
//!
//! Every event would otherwise read its rules and every execution its action
//! again. Entries live one second and are dropped at once when this node
//! changes a rule or a pack; another node's change shows within that second.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::storage::{ActionRecord, RuleRecord, Storage, StorageError, WorkerRecord};

/// How long a cached read stays fresh.
const TTL: Duration = Duration::from_secs(1);

type Entry<T> = (Instant, T);

/// The caches.
#[derive(Default)]
pub struct ReadCache {
    rules: Mutex<HashMap<String, Entry<Vec<RuleRecord>>>>,
    actions: Mutex<HashMap<String, Entry<Option<ActionRecord>>>>,
    workers: Mutex<Option<Entry<Vec<WorkerRecord>>>>,
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
        if let Some((at, rules)) = lock(&self.rules).get(trigger)
            && at.elapsed() < TTL
        {
            return Ok(rules.clone());
        }
        let rules = storage.enabled_rules(trigger).await?;
        lock(&self.rules).insert(trigger.to_string(), (Instant::now(), rules.clone()));
        Ok(rules)
    }

    /// The action with this ref.
    pub async fn action(
        &self,
        storage: &Storage,
        r#ref: &str,
    ) -> Result<Option<ActionRecord>, StorageError> {
        if let Some((at, action)) = lock(&self.actions).get(r#ref)
            && at.elapsed() < TTL
        {
            return Ok(action.clone());
        }
        let action = storage.get_action(r#ref).await?;
        lock(&self.actions).insert(r#ref.to_string(), (Instant::now(), action.clone()));
        Ok(action)
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

    /// Forgets cached rules (a rule changed here).
    pub fn rules_changed(&self) {
        lock(&self.rules).clear();
    }

    /// Forgets cached actions (a pack changed here).
    pub fn actions_changed(&self) {
        lock(&self.actions).clear();
    }
}
