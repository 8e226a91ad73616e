//! `attune worker`: a standalone worker that talks to the API over HTTP.
//!
//! It registers its capabilities, then three tasks share the work:
//! - the **claimer** long-polls `claim` for what its slots will begin soon:
//!   one per slot, plus, for short actions, what they begin within the
//!   pacing window (`engine::worker::pace`, the embedded worker's formula),
//!   asking again once the local queue is down to half, so the next
//!   assignments are here before a slot frees up;
//! - **slots**, as many as its concurrency, each run assignments through the
//!   engine's one execution path (`engine::worker::run`) with components
//!   downloaded by digest, verified, cached on disk and compiled once;
//! - the **reporter** sends reports in batches (whatever finished while the
//!   previous batch was in flight), and heartbeats extend leases and bring
//!   back cancellations.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::client::{Client, ClientError};
use attune_engine::worker::pace::Pace;
use attune_engine::worker::protocol::{Assignment, Beat, MAX_REPORTS, Recorded, Released, Report};
use attune_runtime::http::AllowedHosts;
use attune_runtime::{LoadedComponent, Runtime, RuntimeConfig, cache};

/// Settings of a standalone worker.
#[derive(Debug, Clone)]
pub struct RemoteWorkerConfig {
    /// Base URL of the server.
    pub server: String,
    /// A `worker` (or `admin`) token.
    pub token: String,
    /// Unique name of this worker.
    pub name: String,
    /// What it advertises.
    pub capabilities: Vec<String>,
    /// Free labels.
    pub labels: Value,
    /// Executions it runs at once.
    pub concurrency: usize,
    /// Where downloaded components and compiled artifacts are kept.
    pub cache_dir: PathBuf,
    /// Timeout of executions that set none.
    pub default_timeout: Duration,
    /// Let actions reach private addresses (their grant still applies).
    pub allow_private_outbound: bool,
    /// Also trust this PEM file's CA certificates, for the server and for
    /// actions' HTTPS requests.
    pub ca_cert: Option<PathBuf>,
    /// Most disk one execution's `/scratch` may take.
    pub scratch_quota_bytes: u64,
    /// Where its runs' spans go, when it exports them (they continue the
    /// traces the server started).
    pub telemetry: Option<Arc<attune_engine::telemetry::Telemetry>>,
}

/// Bytes of reports one `results` request carries at most (the server
/// accepts 64 MiB).
const MAX_BATCH_BYTES: usize = 16 << 20;

type Cancels = Arc<Mutex<HashMap<i64, oneshot::Sender<()>>>>;

/// An answer of the worker API as its protocol type.
fn decode<T: serde::de::DeserializeOwned>(answer: Result<Value, ClientError>) -> anyhow::Result<T> {
    Ok(serde_json::from_value(answer?)?)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a standalone worker until an unrecoverable error.
pub async fn run(config: RemoteWorkerConfig) -> anyhow::Result<()> {
    run_until(config, std::future::pending(), Duration::ZERO).await
}

/// Runs a standalone worker until an unrecoverable error or `stop`; then
/// stops cleanly within `drain`: it claims nothing more, hands back what it
/// claimed but never began, lets what began end and reports it.
pub async fn run_until(
    config: RemoteWorkerConfig,
    stop: impl std::future::Future<Output = ()>,
    drain: Duration,
) -> anyhow::Result<()> {
    let client = Client::with_ca(&config.server, &config.token, config.ca_cert.as_deref())?;
    let tls = match &config.ca_cert {
        Some(ca) => Some(Arc::new(attune_util::tls::client_config(Some(ca))?)),
        None => None,
    };
    let concurrency = config.concurrency.max(1);
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(config.cache_dir.join("artifacts")),
        scratch_dir: config.cache_dir.join("scratch"),
        max_instances: (concurrency as u32) * 2,
        scratch_quota_bytes: config.scratch_quota_bytes,
        outbound: attune_runtime::http::OutboundConfig {
            allow_private: config.allow_private_outbound,
            tls,
            ..Default::default()
        },
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
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(heartbeats(client.clone(), id, cancels.clone()));

    let (reports, report_rx) = mpsc::unbounded_channel();
    let reporting = tokio::spawn(reporter(client.clone(), id, report_rx));

    // The local queue; the claimer keeps it as long as the pace says.
    let (queue, queue_rx) = mpsc::unbounded_channel::<(Assignment, oneshot::Receiver<()>)>();
    let queue_rx = Arc::new(tokio::sync::Mutex::new(queue_rx));
    let local = Arc::new(Local::default());
    let packs = Packs {
        client: client.clone(),
        runtime: runtime.clone(),
        loaded: Arc::default(),
        dir: config.cache_dir.join("components"),
    };
    let mut slots = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let queue_rx = queue_rx.clone();
        let (runtime, packs, reports, cancels, local) = (
            runtime.clone(),
            packs.clone(),
            reports.clone(),
            cancels.clone(),
            local.clone(),
        );
        let default_timeout = config.default_timeout;
        let telemetry = config.telemetry.clone();
        slots.spawn(async move {
            loop {
                let Some((a, cancelled)) = queue_rx.lock().await.recv().await else {
                    return Ok::<(), anyhow::Error>(());
                };
                local.queued.fetch_sub(1, Ordering::SeqCst);
                local.taken.notify_one();
                if local.stopping.load(Ordering::SeqCst) {
                    lock(&cancels).remove(&a.id);
                    lock(&local.handed_back).push(a.id);
                    continue;
                }
                let began = std::time::Instant::now();
                let pack = packs.get(&a.component);
                let allowed =
                    Arc::new(AllowedHosts::parse(&a.allowed_outbound_hosts).unwrap_or_default());
                let kv = attune_engine::kv::Kv(RemoteKv {
                    client: packs.client.clone(),
                    path: format!("/workers/{id}/executions/{}/kv", a.id),
                });
                let report = attune_engine::worker::run::run(
                    &runtime,
                    &a,
                    pack,
                    attune_engine::worker::run::Reach {
                        outbound: allowed,
                        kv: attune_runtime::kv::KvState(Some(Arc::new(kv))),
                        telemetry: telemetry.clone(),
                    },
                    default_timeout,
                    None,
                    cancelled,
                )
                .await;
                local.pace.record(began.elapsed());
                lock(&cancels).remove(&a.id);
                if reports.send(report).is_err() {
                    return Ok(());
                }
            }
        });
    }
    let mut claiming = tokio::spawn(claimer(
        client.clone(),
        id,
        concurrency,
        queue,
        local.clone(),
        cancels,
    ));
    tokio::select! {
        r = &mut claiming => return r.map_err(|e| anyhow::anyhow!("the claimer failed: {e}"))?,
        Some(Err(e)) = tasks.join_next() => return Err(anyhow::anyhow!("a worker task failed: {e}")),
        Some(Ok(Err(e))) = slots.join_next() => return Err(e),
        () = stop => {}
    }
    // Begin nothing more. A claim the server may already have answered is
    // read, not dropped, so what it returns is handed back below instead
    // of waiting out its lease; a long-poll still waiting for work is
    // abandoned after a moment.
    local.stopping.store(true, Ordering::SeqCst);
    local.taken.notify_one();
    if tokio::time::timeout(CLAIM_GRACE, &mut claiming)
        .await
        .is_err()
    {
        claiming.abort();
    }
    // The claimer (and the queue's sender) is gone: the slots finish what
    // they began, set aside what is still queued, and end.
    let deadline = tokio::time::Instant::now() + drain;
    let ended = tokio::time::timeout_at(deadline, async {
        while slots.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if !ended {
        tracing::warn!("stopped before every execution ended; their leases bring them back");
        slots.abort_all();
    }
    let back: Vec<i64> = std::mem::take(&mut *lock(&local.handed_back));
    if !back.is_empty() {
        let path = format!("/workers/{id}/release");
        match decode::<Released>(client.post(&path, json!({"executions": back})).await) {
            Ok(r) => tracing::info!(released = r.released, "handed unstarted executions back"),
            Err(e) => {
                tracing::warn!(error = %e, "could not hand executions back; their leases will")
            }
        }
    }
    // Every sender is gone once the slots are: the reporter sends what is
    // left and ends.
    drop(reports);
    while slots.join_next().await.is_some() {}
    let flush = deadline.max(tokio::time::Instant::now() + Duration::from_secs(1));
    if tokio::time::timeout_at(flush, reporting).await.is_err() {
        tracing::warn!("stopped before every result was reported; their leases bring them back");
    }
    tasks.abort_all();
    Ok(())
}

/// How long a clean stop waits for a claim request in flight.
const CLAIM_GRACE: Duration = Duration::from_secs(2);

/// What the claimer and the slots share.
#[derive(Default)]
struct Local {
    /// Assignments claimed and not yet taken by a slot.
    queued: AtomicUsize,
    /// A slot took one.
    taken: Notify,
    /// Recent run time.
    pace: Pace,
    /// A clean stop began: begin nothing more.
    stopping: AtomicBool,
    /// Assignments set aside during a clean stop, to hand back.
    handed_back: Mutex<Vec<i64>>,
}

/// Long-polls for assignments: one per slot plus what the pace says the
/// slots begin within the window, refilled at half.
async fn claimer(
    client: Client,
    id: i64,
    slots: usize,
    queue: mpsc::UnboundedSender<(Assignment, oneshot::Receiver<()>)>,
    local: Arc<Local>,
    cancels: Cancels,
) -> anyhow::Result<()> {
    loop {
        if local.stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        let taken = local.taken.notified();
        tokio::pin!(taken);
        taken.as_mut().enable();
        let target = slots + local.pace.ahead(slots);
        let queued = local.queued.load(Ordering::SeqCst);
        if queued > target / 2 {
            taken.await;
            continue;
        }
        let want = target - queued;
        let path = format!("/workers/{id}/claim?max={want}&wait_ms=20000");
        let claimed = match decode::<Vec<Assignment>>(client.call(Method::POST, &path, None).await)
        {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "claim failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for a in claimed {
            if local.stopping.load(Ordering::SeqCst) {
                lock(&local.handed_back).push(a.id);
                continue;
            }
            let (tx, rx) = oneshot::channel();
            lock(&cancels).insert(a.id, tx);
            local.queued.fetch_add(1, Ordering::SeqCst);
            queue.send((a, rx))?;
        }
    }
}

/// Sends reports in batches: everything that finished while the previous
/// batch was in flight, up to [`MAX_REPORTS`] and [`MAX_BATCH_BYTES`].
async fn reporter(
    client: Client,
    id: i64,
    mut rx: mpsc::UnboundedReceiver<Report>,
) -> anyhow::Result<()> {
    let mut pending: Vec<Report> = Vec::new();
    loop {
        if pending.is_empty() && rx.recv_many(&mut pending, MAX_REPORTS).await == 0 {
            return Ok(());
        }
        while pending.len() < MAX_REPORTS {
            match rx.try_recv() {
                Ok(r) => pending.push(r),
                Err(_) => break,
            }
        }
        let mut bytes = 0;
        let take = pending
            .iter()
            .take_while(|r| {
                bytes += r.weight();
                bytes <= MAX_BATCH_BYTES
            })
            .count()
            .max(1);
        let batch: Vec<Report> = pending.drain(..take).collect();
        let body = serde_json::to_value(&batch)?;
        let path = format!("/workers/{id}/results");
        match decode::<Recorded>(client.post(&path, body).await) {
            Ok(r) => {
                for (report, recorded) in batch.iter().zip(r.recorded) {
                    if !recorded {
                        tracing::warn!(
                            id = report.id,
                            "result not recorded: no longer ours (lease expired?)"
                        );
                    }
                }
            }
            Err(e) => {
                // Keep them: the next batch tries again; a lease that expires
                // meanwhile hands them to another attempt.
                tracing::warn!(error = %e, count = batch.len(), "could not report results; retrying");
                pending.splice(0..0, batch);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Extends leases and stops executions that were cancelled.
async fn heartbeats(client: Client, id: i64, cancels: Cancels) -> anyhow::Result<()> {
    let mut period = Duration::from_secs(5);
    loop {
        let path = format!("/workers/{id}/heartbeat");
        match decode::<Beat>(client.post(&path, json!({})).await) {
            Ok(beat) => {
                period = Duration::from_millis((beat.lease_ms.max(300) / 3) as u64);
                for c in beat.cancel {
                    if let Some(tx) = lock(&cancels).remove(&c) {
                        let _ = tx.send(());
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
        tokio::time::sleep(period).await;
    }
}

/// Components by digest: loaded once, kept on disk, verified.
#[derive(Clone)]
struct Packs {
    client: Client,
    runtime: Runtime,
    loaded: Arc<tokio::sync::Mutex<HashMap<String, LoadedComponent>>>,
    dir: PathBuf,
}

impl Packs {
    async fn get(&self, digest: &str) -> Result<LoadedComponent, String> {
        let mut loaded = self.loaded.lock().await;
        if let Some(p) = loaded.get(digest) {
            return Ok(p.clone());
        }
        let file = self.dir.join(format!("{digest}.wasm"));
        let bytes = match std::fs::read(&file) {
            Ok(b) if cache::digest(&b) == digest => b,
            _ => {
                let bytes = self
                    .client
                    .bytes(&format!("/components/{digest}"))
                    .await
                    .map_err(|e| format!("downloading component {digest}: {e}"))?;
                if cache::digest(&bytes) != digest {
                    return Err(format!("component {digest} arrived with another digest"));
                }
                let _ = std::fs::write(&file, &bytes);
                bytes
            }
        };
        let pack = attune_engine::packs::load_bounded(&self.runtime, bytes).await?;
        loaded.insert(digest.to_string(), pack.clone());
        Ok(pack)
    }
}

/// A standalone worker's key-value transport: each call goes to the worker
/// API, which performs it for the execution's pack (and only while this
/// worker holds the execution).
struct RemoteKv {
    client: Client,
    path: String,
}

#[async_trait::async_trait]
impl attune_engine::kv::KvTransport for RemoteKv {
    async fn call(
        &self,
        call: attune_engine::worker::protocol::KvCall,
    ) -> Result<serde_json::Value, attune_runtime::kv::KvError> {
        let unavailable =
            |e: String| attune_runtime::kv::KvError::Unavailable(format!("the server: {e}"));
        let body = serde_json::to_value(&call).map_err(|e| unavailable(e.to_string()))?;
        let reply = self
            .client
            .post(&self.path, body)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let reply: attune_engine::worker::protocol::KvReply =
            serde_json::from_value(reply).map_err(|e| unavailable(e.to_string()))?;
        match reply.error {
            Some(failure) => Err(failure.into()),
            None => Ok(reply.value),
        }
    }
}
