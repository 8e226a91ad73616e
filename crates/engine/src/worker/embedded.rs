//! The worker embedded in `attune serve`: claims executions it can serve,
//! runs them in the sandbox, reports results, heartbeats its leases.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{Notify, oneshot};

use super::pace::Pace;
use super::protocol::Report;
use crate::Core;
use crate::core::PipelineConfig;
use crate::dispatch::lock;
use attune_storage::{ExecutionRecord, ExecutionStatus, Finished};

/// The embedded worker.
pub struct EmbeddedWorker {
    core: Core,
    id: i64,
    capabilities: Vec<String>,
    config: PipelineConfig,
    local: Arc<Local>,
}

/// A running embedded worker, as its server sees it.
#[derive(Clone)]
pub struct Handle {
    id: i64,
    local: Arc<Local>,
}

impl Handle {
    /// Begins a clean stop: nothing more is claimed, started or begun; waits
    /// until every execution a slot began has ended and its result is
    /// written, or until `deadline`. True when everything settled.
    pub async fn drain(&self, deadline: tokio::time::Instant) -> bool {
        let local = &self.local;
        local.stopping.store(true, Ordering::SeqCst);
        // Wait out a slot taking work right now (it holds this lock).
        drop(lock(&local.started));
        local.queued.notify_waiters();
        local.refill.notify_waiters();
        loop {
            let settled = local.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if local.busy.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return false;
            }
        }
    }

    /// Executions begun and not yet written.
    pub fn busy(&self) -> usize {
        self.local.busy.load(Ordering::SeqCst)
    }

    /// Hands back, once the worker's tasks are stopped, the work it claimed
    /// or marked running but never began.
    pub async fn release(&self, core: &Core) -> Result<u64, attune_storage::StorageError> {
        let marked: Vec<i64> = lock(&self.local.started)
            .drain(..)
            .map(|s| s.execution.id)
            .collect();
        core.storage.release_unstarted(self.id, &marked).await
    }
}

/// What the claiming loop, the starter and the slots share.
struct Local {
    /// Claimed executions not started yet, oldest first.
    queue: Mutex<VecDeque<ExecutionRecord>>,
    /// Executions marked running, each waiting for a slot.
    started: Mutex<VecDeque<Started>>,
    /// Work was put in `queue`.
    queued: Notify,
    /// Work was put in `started`.
    ready: Notify,
    /// A slot took work or went idle: the starter may start more.
    taken: Notify,
    /// `queue` ran low.
    refill: Notify,
    /// Slots waiting for work.
    idle: AtomicUsize,
    /// Recent run time of the actions.
    pace: Pace,
    results: tokio::sync::mpsc::UnboundedSender<(i64, i64, Finished)>,
    /// A clean stop began: claim, start and begin nothing more.
    stopping: AtomicBool,
    /// Executions a slot took whose result is not written yet.
    busy: AtomicUsize,
    /// `busy` went down.
    settled: Notify,
}

impl Local {
    fn len(&self) -> usize {
        lock(&self.queue).len()
    }

    /// The next started execution, counted busy until its result is
    /// written; waits (as an idle slot) while there is none, and for good
    /// once a clean stop began.
    async fn next(&self) -> Started {
        self.idle.fetch_add(1, Ordering::SeqCst);
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            // Checked under the lock `drain` takes, so an execution is
            // either begun and counted busy, or left for `release`.
            let next = {
                let mut started = lock(&self.started);
                let next = if self.stopping.load(Ordering::SeqCst) {
                    None
                } else {
                    started.pop_front()
                };
                if next.is_some() {
                    self.busy.fetch_add(1, Ordering::SeqCst);
                }
                next
            };
            if let Some(s) = next {
                self.idle.fetch_sub(1, Ordering::SeqCst);
                self.taken.notify_one();
                return s;
            }
            self.taken.notify_one();
            ready.await;
        }
    }
}

/// How every embedded worker's name begins; a standalone worker may not
/// register under it, so none can take a node's name before its server
/// first runs an embedded worker.
pub const EMBEDDED_PREFIX: &str = "embedded@";

impl EmbeddedWorker {
    /// Registers the worker row (name `embedded@<host>`).
    pub async fn register(core: Core, config: PipelineConfig) -> anyhow::Result<Self> {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
        let name = format!("{EMBEDDED_PREFIX}{host}/{}", core.config.node);
        let capabilities = super::capabilities();
        let record = core
            .storage
            .upsert_worker(
                &name,
                &capabilities,
                &json!({"embedded": "true"}),
                attune_storage::EMBEDDED_OWNER,
                false,
            )
            .await?;
        core.cache.workers_changed();
        // What a previous process of this node held is handed back (or
        // retried, or abandoned) now, before this one's heartbeats would
        // extend it.
        if core.storage.expire_leases(record.id).await? > 0 {
            let backoff = attune_util::units::millis(config.retry_backoff);
            let reaped = core.storage.reap_expired_leases(backoff).await?;
            tracing::warn!(
                retried = reaped.retried,
                abandoned = reaped.abandoned,
                requeued = reaped.requeued,
                "took back what this node's previous process held"
            );
        }
        let (results, rx) = tokio::sync::mpsc::unbounded_channel();
        let local = Arc::new(Local {
            queue: Mutex::default(),
            started: Mutex::default(),
            queued: Notify::new(),
            ready: Notify::new(),
            taken: Notify::new(),
            refill: Notify::new(),
            idle: AtomicUsize::new(0),
            pace: Pace::default(),
            results,
            stopping: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
            settled: Notify::new(),
        });
        core.dispatch
            .spawn(write_results(core.clone(), rx, local.clone()));
        Ok(Self {
            core,
            id: record.id,
            capabilities,
            config,
            local,
        })
    }

    /// This worker's row id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// What a clean stop needs to hand this worker's work back.
    pub fn handle(&self) -> Handle {
        Handle {
            id: self.id,
            local: self.local.clone(),
        }
    }

    /// Claims and runs work until the task is aborted (which also stops its
    /// slots).
    ///
    /// This loop claims work into a local queue; a starter marks it running
    /// (one write per batch) into a second queue; each of the `concurrency`
    /// slots is a loop that takes the next started execution, runs it and
    /// hands its result to the writer. Short actions would spend more time
    /// being claimed and started than running if each write only took as
    /// many executions as there are idle slots, so this loop claims ahead
    /// (as `scheduled`) about what the slots will begin within
    /// [`AHEAD_WINDOW`], and the starter marks running about what they will
    /// begin within [`PIPELINE_WINDOW`], both judged by recent run times:
    /// hundreds and dozens of executions for a no-op, none for actions that
    /// take a second (then idle slots get their work claimed straight into
    /// `running`). A claimed execution runs only if marking it running finds
    /// the worker still holding it, so a cancel or an expired lease is
    /// respected, and the database says `running` before anything runs.
    /// Extends this worker's leases and interrupts what was cancelled
    /// where [`crate::executions::cancel`] could not reach it directly: on
    /// another node, or between the claim and the cancel handle's
    /// registration.
    async fn heartbeat(&self, lease_ms: i64) {
        let beat = async {
            self.core.storage.heartbeat(self.id, lease_ms).await?;
            self.core.storage.cancel_requests(self.id).await
        };
        match beat.await {
            Ok(cancelled) => {
                for id in cancelled {
                    self.core.dispatch.cancel(id);
                }
            }
            Err(e) if e.is_refused() => {}
            Err(e) => tracing::error!(error = %e, "worker heartbeat"),
        }
    }

    pub async fn run(self) {
        let heartbeat = (self.config.lease / 3).max(Duration::from_millis(100));
        let lease_ms = attune_util::units::millis(self.config.lease);
        let mut next_heartbeat = tokio::time::Instant::now();
        let concurrency = self.config.concurrency.max(1);
        // What the last claim took: no more than the slots means work comes
        // a little at a time.
        let mut last_claimed = 0;
        let mut slots = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let local = self.local.clone();
            let core = self.core.clone();
            let (worker, default_timeout) = (self.id, self.config.default_timeout);
            slots.spawn(async move {
                loop {
                    let Started {
                        execution,
                        cancelled,
                    } = local.next().await;
                    let began = std::time::Instant::now();
                    let finished = execute(&core, &execution, default_timeout, cancelled).await;
                    local.pace.record(began.elapsed());
                    if local
                        .results
                        .send((execution.id, worker, finished))
                        .is_err()
                    {
                        local.busy.fetch_sub(1, Ordering::SeqCst);
                        local.settled.notify_waiters();
                    }
                }
            });
        }
        slots.spawn(starter(
            self.core.clone(),
            self.id,
            self.local.clone(),
            concurrency,
        ));
        loop {
            if self.local.stopping.load(Ordering::SeqCst) {
                // A clean stop: keep heartbeating (leases of what still
                // runs stay valid) and claim nothing.
                self.heartbeat(lease_ms).await;
                tokio::time::sleep(heartbeat).await;
                continue;
            }
            if tokio::time::Instant::now() >= next_heartbeat {
                self.heartbeat(lease_ms).await;
                next_heartbeat = tokio::time::Instant::now() + heartbeat;
            }
            let idle = self.local.idle.load(Ordering::SeqCst);
            let queued = self.local.len() + lock(&self.local.started).len();
            let ahead = self.local.pace.ahead(concurrency);
            // Nothing to claim ahead, or slots waiting on an empty queue
            // while work comes a little at a time: only for idle slots,
            // straight into `running` (which saves the start statement;
            // under load, a separate claim for them would cost more than it
            // saves). Otherwise top the queue up once it is down to half of
            // what may be held ahead.
            let trickle = queued == 0 && idle > 0 && last_claimed <= concurrency;
            let (want, start) = if ahead == 0 || trickle {
                (idle.saturating_sub(queued), true)
            } else if queued <= (ahead / 2).max(idle) {
                (ahead + idle - queued.min(ahead + idle), false)
            } else {
                (0, false)
            };
            let mut more = false;
            if want > 0 {
                match self
                    .core
                    .storage
                    .claim(self.id, &self.capabilities, want as i64, lease_ms, start)
                    .await
                {
                    Ok(claimed) => {
                        more = claimed.len() == want;
                        last_claimed = claimed.len();
                        if !claimed.is_empty() {
                            let metrics = &self.core.metrics;
                            metrics.claims_per_batch.observe(claimed.len() as f64);
                            let mut queue = lock(&self.local.queue);
                            queue.extend(claimed);
                            metrics.queue_depth.set(queue.len() as i64);
                            drop(queue);
                            self.local.queued.notify_one();
                        }
                    }
                    // A full disk is logged by the storage, once.
                    Err(e) if e.is_refused() => {}
                    Err(e) => tracing::error!(error = %e, "claiming executions"),
                }
            }
            if more && self.local.idle.load(Ordering::SeqCst) > 0 {
                continue;
            }
            let mut wait = next_heartbeat.saturating_duration_since(tokio::time::Instant::now());
            // Idle (not just busy): wake for the next retry too.
            if queued == 0
                && self.local.len() == 0
                && let Ok(Some(due)) = self.core.storage.next_retry_due().await
            {
                let until = Duration::from_millis((due - attune_storage::now_ms()).max(0) as u64);
                wait = wait.min(until);
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.core.dispatch.work.notified() => {}
                () = self.local.refill.notified() => {}
            }
        }
    }
}

/// A claimed execution this worker marked running, with its cancel handle.
struct Started {
    execution: ExecutionRecord,
    cancelled: oneshot::Receiver<()>,
}

/// Marks claimed executions running for the slots: as many as there are
/// idle slots, plus, for short actions, about what the slots will begin
/// within [`PIPELINE_WINDOW`], so the slots do not wait for the start write
/// and one write starts a batch.
async fn starter(core: Core, worker: i64, local: Arc<Local>, slots: usize) {
    loop {
        let taken = local.taken.notified();
        let queued = local.queued.notified();
        tokio::pin!(taken, queued);
        taken.as_mut().enable();
        queued.as_mut().enable();
        if local.stopping.load(Ordering::SeqCst) {
            return;
        }
        let target = local.idle.load(Ordering::SeqCst) + local.pace.pipeline(slots);
        let have = lock(&local.started).len();
        if have < target {
            let batch: Vec<ExecutionRecord> = {
                let mut queue = lock(&local.queue);
                let n = (target - have).min(queue.len());
                let batch = queue.drain(..n).collect();
                core.metrics.queue_depth.set(queue.len() as i64);
                batch
            };
            if local.len() <= local.pace.ahead(slots) / 2 {
                local.refill.notify_one();
            }
            if !batch.is_empty() {
                let started = start_all(&core, worker, batch).await;
                if !started.is_empty() {
                    lock(&local.started).extend(started);
                    local.ready.notify_waiters();
                }
                continue;
            }
        }
        tokio::select! {
            () = taken => {}
            () = queued => {}
        }
    }
}

/// Marks claimed executions running in one write, keeping those the worker
/// still holds (not cancelled, lease not expired); ones claimed straight
/// into `running` need nothing. Each cancel handle is registered first, so a
/// cancel from then on reaches the execution even before it begins.
async fn start_all(core: &Core, worker: i64, batch: Vec<ExecutionRecord>) -> Vec<Started> {
    let handles: Vec<oneshot::Receiver<()>> = batch
        .iter()
        .map(|e| core.dispatch.on_cancel(e.id))
        .collect();
    let unstarted: Vec<i64> = batch
        .iter()
        .filter(|e| e.status != ExecutionStatus::Running)
        .map(|e| e.id)
        .collect();
    let held: std::collections::HashSet<i64> =
        match core.storage.start_many(worker, &unstarted).await {
            Ok(held) => held.into_iter().collect(),
            Err(err) => {
                // Still claimed: the lease brings them back.
                if !err.is_refused() {
                    tracing::error!(error = %err, "marking claimed executions running");
                }
                Default::default()
            }
        };
    batch
        .into_iter()
        .zip(handles)
        .filter_map(|(e, cancelled)| {
            if e.status == ExecutionStatus::Running || held.contains(&e.id) {
                core.metrics.queued(e.created_at);
                let execution = ExecutionRecord {
                    status: ExecutionStatus::Running,
                    ..e
                };
                Some(Started {
                    execution,
                    cancelled,
                })
            } else {
                core.dispatch.done(e.id);
                None
            }
        })
        .collect()
}

/// Most results written in one transaction.
const RESULT_BATCH: usize = 256;

/// Group commit of results: whatever finished while the previous batch was
/// being written goes into the next transaction together. The slot of an
/// execution is free as soon as it has run; a crash before the write is
/// covered by the lease (the execution is retried or abandoned).
async fn write_results(
    core: Core,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(i64, i64, Finished)>,
    local: Arc<Local>,
) {
    let mut batch = Vec::with_capacity(RESULT_BATCH);
    while rx.recv_many(&mut batch, RESULT_BATCH).await > 0 {
        // While the database is unreachable or refuses writes (a full
        // disk) the results wait here and the write is tried again:
        // dropping them would leave their executions running under a
        // worker that keeps heartbeating, to be run again once their lease
        // expires. A full disk is retried every second at most, so results
        // are written soon after space returns, before the lease runs out;
        // the storage logs that state, not each attempt.
        let mut pause = Duration::from_millis(100);
        while let Err(err) = crate::executions::finish(&core, &batch).await {
            if err.refusal() == Some(attune_storage::Refusal::Gone) {
                tracing::error!(
                    count = batch.len(),
                    "results not recorded: the data directory is gone"
                );
                break;
            }
            if err.is_refused() {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                continue;
            }
            if !err.is_unavailable() {
                tracing::error!(count = batch.len(), error = %err, "recording results");
                break;
            }
            tracing::warn!(count = batch.len(), error = %err, retry_in = ?pause, "recording results");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
        local.busy.fetch_sub(batch.len(), Ordering::SeqCst);
        local.settled.notify_waiters();
        batch.clear();
    }
}

/// Runs a started execution through the one execution path, with its
/// output published for live streaming and its cancel handle registered.
async fn execute(
    core: &Core,
    e: &ExecutionRecord,
    default_timeout: Duration,
    cancelled: oneshot::Receiver<()>,
) -> Finished {
    let action = match core.cache.action(&core.storage, &e.action).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            core.dispatch.done(e.id);
            return Finished::without_output(
                ExecutionStatus::Failed,
                format!("action {} is no longer registered", e.action),
            );
        }
        Err(err) => {
            core.dispatch.done(e.id);
            return Finished::without_output(
                ExecutionStatus::Failed,
                format!("looking up the action: {err}"),
            );
        }
    };
    let kv = crate::kv::Kv(crate::kv::PackKv {
        storage: core.storage.clone(),
        pack: action.pack.clone(),
    });
    let (assignment, grants) = match super::assign(core, e, action).await {
        Ok(a) => a,
        Err(err) => {
            core.dispatch.done(e.id);
            return Finished::without_output(
                ExecutionStatus::Failed,
                format!("reading the pack's grants: {err}"),
            );
        }
    };
    let limits = core.runtime.config().default_limits;
    let secrets = Arc::new(assignment.secrets.to_set());
    let pipes = (
        secrets.pipe(limits.output_bytes),
        secrets.pipe(limits.output_bytes),
    );
    core.dispatch.watch(e.id, pipes.clone(), secrets);
    let pack = async {
        core.component(&assignment.component)
            .await
            .map_err(|err| format!("loading the component: {err}"))
    };
    let began = std::time::Instant::now();
    let report: Report = super::run::run(
        &core.runtime,
        &assignment,
        pack,
        super::run::Reach {
            outbound: grants.outbound.clone(),
            kv: attune_runtime::kv::KvState(Some(Arc::new(kv))),
            telemetry: core.telemetry.clone(),
        },
        default_timeout,
        Some(pipes),
        cancelled,
    )
    .await;
    core.dispatch.done(e.id);
    core.metrics
        .finished(&e.action, Some(began.elapsed().as_millis() as i64));
    report.into_finished()
}
