//! `attune worker`: a standalone worker that talks to the API over HTTP.
//!
//! It registers its capabilities, long-polls for executions it can run,
//! downloads components by digest (verified, cached on disk and compiled
//! once), runs them in its own sandboxed runtime, reports results, and
//! heartbeats its leases — learning from each heartbeat which of its running
//! executions were cancelled.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot};

use super::worker::finished_from;
use crate::client::{Client, ClientError};
use crate::runtime::{
    ExecutionContext, ExecutionRequest, Limits, Pack, Runtime, RuntimeConfig, cache,
};

/// Settings of a standalone worker.
#[derive(Debug, Clone)]
pub struct RemoteWorkerConfig {
    /// Server URL.
    pub server: String,
    /// A `worker` (or `admin`) token.
    pub token: String,
    /// Unique worker name.
    pub name: String,
    /// Capabilities to advertise.
    pub capabilities: Vec<String>,
    /// Labels.
    pub labels: Value,
    /// Executions run at once.
    pub concurrency: usize,
    /// Where components and compiled artifacts are cached.
    pub cache_dir: PathBuf,
    /// Execution timeout when the execution sets none.
    pub default_timeout: Duration,
}

type Cancels = Arc<Mutex<HashMap<i64, oneshot::Sender<()>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the worker until the task is dropped or registration fails.
pub async fn run(config: RemoteWorkerConfig) -> anyhow::Result<()> {
    let client = Client::new(&config.server, &config.token);
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(config.cache_dir.join("artifacts")),
        scratch_dir: config.cache_dir.join("scratch"),
        max_instances: (config.concurrency as u32).max(1) * 2,
        ..RuntimeConfig::default()
    })?;
    std::fs::create_dir_all(config.cache_dir.join("components"))?;
    let me = client
        .post(
            "/workers",
            json!({"name": config.name, "capabilities": config.capabilities, "labels": config.labels}),
        )
        .await?;
    let id = me["id"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("registration answered {me}"))?;
    tracing::info!(id, name = config.name, "worker registered");
    let cancels: Cancels = Arc::default();

    // Heartbeats: extend leases, learn about cancellations.
    let beat_client = client.clone();
    let beat_cancels = cancels.clone();
    let heartbeat = tokio::spawn(async move {
        let mut period = Duration::from_secs(5);
        loop {
            match beat_client
                .post(&format!("/workers/{id}/heartbeat"), json!({}))
                .await
            {
                Ok(beat) => {
                    if let Some(lease) = beat["lease_ms"].as_u64() {
                        period = Duration::from_millis((lease / 3).max(100));
                    }
                    for c in beat["cancel"].as_array().into_iter().flatten() {
                        if let Some(tx) = c.as_i64().and_then(|c| lock(&beat_cancels).remove(&c)) {
                            let _ = tx.send(());
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            }
            tokio::time::sleep(period).await;
        }
    });
    let _stop_heartbeat = AbortOnDrop(heartbeat);

    let packs: Arc<tokio::sync::Mutex<HashMap<String, Pack>>> = Arc::default();
    let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
    loop {
        let permit = slots.clone().acquire_owned().await?;
        let free = slots.available_permits() + 1;
        let assignments = match client
            .call(
                Method::POST,
                &format!("/workers/{id}/claim?max={free}&wait_ms=20000"),
                None,
            )
            .await
        {
            Ok(v) => v.as_array().cloned().unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "claim failed; retrying");
                drop(permit);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut permit = Some(permit);
        for a in assignments {
            let permit = match permit.take() {
                Some(p) => p,
                None => slots.clone().acquire_owned().await?,
            };
            let ctx = Ctx {
                client: client.clone(),
                runtime: runtime.clone(),
                packs: packs.clone(),
                cancels: cancels.clone(),
                cache_dir: config.cache_dir.clone(),
                default_timeout: config.default_timeout,
                worker: id,
            };
            tokio::spawn(async move {
                ctx.run(a).await;
                drop(permit);
            });
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Ctx {
    client: Client,
    runtime: Runtime,
    packs: Arc<tokio::sync::Mutex<HashMap<String, Pack>>>,
    cancels: Cancels,
    cache_dir: PathBuf,
    default_timeout: Duration,
    worker: i64,
}

impl Ctx {
    async fn run(self, a: Value) {
        let e = &a["execution"];
        let id = e["id"].as_i64().unwrap_or_default();
        let base = format!("/workers/{}/executions/{id}", self.worker);
        if let Err(err) = self.client.post(&format!("{base}/start"), json!({})).await {
            tracing::warn!(id, error = %err, "could not start (lease lost?)");
            return;
        }
        let finished = match self.pack(a["component"].as_str().unwrap_or_default()).await {
            Err(err) => finished_from(Some(Err(crate::runtime::ExecuteError::Sandbox(err)))),
            Ok(pack) => {
                let limits = Limits {
                    timeout: e["timeout_ms"]
                        .as_u64()
                        .map(Duration::from_millis)
                        .unwrap_or(self.default_timeout),
                    ..self.runtime.config().default_limits
                };
                let request = ExecutionRequest {
                    action: a["export"].as_str().unwrap_or_default().to_string(),
                    params: e["params"].clone(),
                    limits: Some(limits),
                    context: ExecutionContext {
                        id: id.to_string(),
                        action: e["action"].as_str().unwrap_or_default().to_string(),
                        attempt: e["attempt"].as_u64().unwrap_or(1) as u32,
                    },
                    output: None,
                };
                let (tx, rx) = oneshot::channel();
                lock(&self.cancels).insert(id, tx);
                let outcome = tokio::select! {
                    r = pack.execute(&self.runtime, request) => Some(r),
                    _ = rx => None,
                };
                lock(&self.cancels).remove(&id);
                finished_from(outcome)
            }
        };
        let report = json!({
            "status": finished.status,
            "result": finished.result,
            "error": finished.error,
            "stdout": finished.stdout,
            "stderr": finished.stderr,
            "logs": finished.logs,
        });
        if let Err(err) = self.client.post(&format!("{base}/finish"), report).await {
            tracing::warn!(id, error = %err, "could not report the result");
        }
    }

    /// The loaded component with `digest`: from memory, the disk cache, or
    /// downloaded (and its digest checked).
    async fn pack(&self, digest: &str) -> Result<Pack, String> {
        let mut packs = self.packs.lock().await;
        if let Some(p) = packs.get(digest) {
            return Ok(p.clone());
        }
        let file = self
            .cache_dir
            .join("components")
            .join(format!("{digest}.wasm"));
        let bytes = match std::fs::read(&file) {
            Ok(b) if cache::digest(&b) == digest => b,
            _ => {
                let bytes = self
                    .download(digest)
                    .await
                    .map_err(|e| format!("downloading component {digest}: {e}"))?;
                if cache::digest(&bytes) != digest {
                    return Err(format!("component {digest} arrived with another digest"));
                }
                let _ = std::fs::write(&file, &bytes);
                bytes
            }
        };
        let pack = crate::packs::load_bounded(&self.runtime, bytes).await?;
        packs.insert(digest.to_string(), pack.clone());
        Ok(pack)
    }

    async fn download(&self, digest: &str) -> Result<Vec<u8>, ClientError> {
        self.client.bytes(&format!("/components/{digest}")).await
    }
}
