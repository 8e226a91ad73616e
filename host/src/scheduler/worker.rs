//! The worker embedded in `attune serve`: claims executions it can serve,
//! runs them in the sandbox, reports results, heartbeats its leases.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::PipelineConfig;
use crate::api::AppState;
use crate::runtime::output::CappedPipe;
use crate::runtime::{ExecutionContext, ExecutionRequest, Limits, Status};
use crate::storage::{ExecutionRecord, Finished};

/// What every worker of this build can run: the runtime kind and the
/// `attune:action` host interfaces it links.
pub fn capabilities() -> Vec<String> {
    vec![
        crate::runtime::pack::RUNTIME_KIND.to_string(),
        "attune:action/log@0.1.0".to_string(),
        "attune:action/context@0.1.0".to_string(),
    ]
}

/// The embedded worker.
pub struct EmbeddedWorker {
    results: tokio::sync::mpsc::UnboundedSender<(i64, i64, Finished)>,
    state: AppState,
    id: i64,
    capabilities: Vec<String>,
    config: PipelineConfig,
    slots: Arc<Semaphore>,
}

impl EmbeddedWorker {
    /// Registers the worker row (name `embedded@<host>`).
    pub async fn register(state: AppState, config: PipelineConfig) -> anyhow::Result<Self> {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
        let name = format!("embedded@{host}:{}", std::process::id());
        let capabilities = capabilities();
        let record = state
            .storage
            .upsert_worker(&name, &capabilities, &json!({"embedded": "true"}))
            .await?;
        let (results, rx) = tokio::sync::mpsc::unbounded_channel();
        state.dispatch.spawn(write_results(state.clone(), rx));
        Ok(Self {
            results,
            state,
            id: record.id,
            capabilities,
            slots: Arc::new(Semaphore::new(config.concurrency.max(1))),
            config,
        })
    }

    /// This worker's row id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Claims and runs work until the task is aborted.
    ///
    /// Short actions would spend more time being claimed than running if
    /// each claim only took as many executions as there are free slots, so
    /// the worker also claims ahead (as `scheduled`) about as much work as
    /// it expects to start within [`AHEAD_WINDOW`], judged by how long its
    /// recent runs took: hundreds of executions for a no-op, none for
    /// actions that take a second. A claimed-ahead execution is run only if
    /// marking it running finds the worker still holding it, so a cancel or
    /// an expired lease is respected.
    pub async fn run(self) {
        let heartbeat = (self.config.lease / 3).max(Duration::from_millis(100));
        let lease_ms = self.config.lease.as_millis() as i64;
        let mut next_heartbeat = tokio::time::Instant::now();
        let pace = Arc::new(Pace::default());
        let mut queue: VecDeque<ExecutionRecord> = VecDeque::new();
        let concurrency = self.config.concurrency.max(1);
        loop {
            if tokio::time::Instant::now() >= next_heartbeat {
                if let Err(e) = self.state.storage.heartbeat(self.id, lease_ms).await {
                    tracing::error!(error = %e, "worker heartbeat");
                }
                next_heartbeat = tokio::time::Instant::now() + heartbeat;
            }
            let free = self.slots.available_permits();
            // Whether the queue in the database may hold more for us.
            let mut more = false;
            if free > 0 && queue.len() < free {
                let ahead = pace.ahead(concurrency);
                let want = free + ahead - queue.len();
                // Nothing to claim ahead: straight into `running`, which
                // saves the start statement.
                let start = ahead == 0 && queue.is_empty();
                match self
                    .state
                    .storage
                    .claim(self.id, &self.capabilities, want as i64, lease_ms, start)
                    .await
                {
                    Ok(claimed) => {
                        more = claimed.len() == want;
                        if start {
                            for e in claimed {
                                self.spawn(e, &pace).await;
                            }
                        } else {
                            queue.extend(claimed);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "claiming executions"),
                }
            }
            // Claimed-ahead work into the free slots; each slot marks its
            // execution running itself, so the starts of several slots are
            // in flight at once and this loop never waits for one.
            let free = self.slots.available_permits();
            for e in queue.drain(..free.min(queue.len())) {
                self.spawn(e, &pace).await;
            }
            let free = self.slots.available_permits();
            if free > 0 && (more || !queue.is_empty()) {
                continue;
            }
            let mut wait = next_heartbeat.saturating_duration_since(tokio::time::Instant::now());
            // Idle (not just waiting for a slot): wake for the next retry too.
            if queue.is_empty()
                && let Ok(Some(due)) = self.state.storage.next_retry_due().await
            {
                let until = Duration::from_millis((due - crate::storage::now_ms()).max(0) as u64);
                wait = wait.min(until);
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.state.dispatch.work.notified() => {}
            }
        }
    }

    /// Runs a claimed execution in a free slot.
    async fn spawn(&self, e: ExecutionRecord, pace: &Arc<Pace>) {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open");
        let state = self.state.clone();
        let worker = self.id;
        let default_timeout = self.config.default_timeout;
        let results = self.results.clone();
        let pace = pace.clone();
        tokio::spawn(async move {
            if let Some(finished) = run_one(&state, worker, e, default_timeout, &pace).await {
                let _ = results.send(finished);
            }
            drop(permit);
            // A slot is free: look for more work.
            state.dispatch.wake_workers();
        });
    }
}

/// How much claimed-ahead work the worker may hold: what it expects to start
/// within this window.
pub const AHEAD_WINDOW: Duration = Duration::from_millis(10);

/// Most executions claimed ahead, whatever the pace.
const MAX_AHEAD: usize = 256;

/// Recent run time of the worker's executions (moving average, µs; 0 before
/// the first run).
#[derive(Default)]
struct Pace(AtomicU64);

impl Pace {
    fn record(&self, took: Duration) {
        let us = (took.as_micros() as u64).max(1);
        let old = self.0.load(Ordering::Relaxed);
        let new = if old == 0 { us } else { (old * 7 + us) / 8 };
        self.0.store(new, Ordering::Relaxed);
    }

    /// Executions to claim beyond the free slots: `slots` runs in parallel,
    /// so about `slots × window / run time` start within the window.
    fn ahead(&self, slots: usize) -> usize {
        match self.0.load(Ordering::Relaxed) {
            0 => 0,
            us => ((slots as u64 * AHEAD_WINDOW.as_micros() as u64 / us) as usize).min(MAX_AHEAD),
        }
    }
}

/// Runs one claimed execution; returns how it ended, for the result writer.
async fn run_one(
    state: &AppState,
    worker: i64,
    e: ExecutionRecord,
    default_timeout: Duration,
    pace: &Pace,
) -> Option<(i64, i64, Finished)> {
    // The whole turn of the slot, start included: what paces claiming ahead.
    let began = std::time::Instant::now();
    let id = e.id;
    if e.status != "running" {
        match state.storage.mark_running(id, worker).await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(err) => {
                tracing::error!(id, error = %err, "marking running");
                return None;
            }
        }
    }
    let finished = execute(state, &e, default_timeout).await;
    pace.record(began.elapsed());
    Some((id, worker, finished))
}

/// Most results written in one transaction.
const RESULT_BATCH: usize = 256;

/// Group commit of results: whatever finished while the previous batch was
/// being written goes into the next transaction together. The slot of an
/// execution is free as soon as it has run; a crash before the write is
/// covered by the lease (the execution is retried or abandoned).
async fn write_results(
    state: AppState,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(i64, i64, Finished)>,
) {
    let mut batch = Vec::with_capacity(RESULT_BATCH);
    while rx.recv_many(&mut batch, RESULT_BATCH).await > 0 {
        if let Err(err) = state.storage.finish_many(&batch).await {
            tracing::error!(count = batch.len(), error = %err, "recording results");
        }
        batch.clear();
    }
}

async fn execute(state: &AppState, e: &ExecutionRecord, default_timeout: Duration) -> Finished {
    let failed = |message: String| Finished {
        status: "failed".into(),
        result: None,
        error: Some(Value::String(message)),
        stdout: String::new(),
        stderr: String::new(),
        logs: json!([]),
    };
    let action = match state.cache.action(&state.storage, &e.action).await {
        Ok(Some(a)) => a,
        Ok(None) => return failed(format!("action {} is no longer registered", e.action)),
        Err(err) => return failed(format!("looking up the action: {err}")),
    };
    let pack = match state.pack(&action.component).await {
        Ok(p) => p,
        Err(err) => return failed(format!("loading the component: {err}")),
    };
    let limits = Limits {
        timeout: e
            .timeout_ms
            .map(|ms| Duration::from_millis(ms as u64))
            .unwrap_or(default_timeout),
        ..state.runtime.config().default_limits
    };
    let pipes = (
        CappedPipe::new(limits.output_bytes),
        CappedPipe::new(limits.output_bytes),
    );
    state.dispatch.watch(e.id, pipes.clone());
    let request = ExecutionRequest {
        action: action.name.clone(),
        params: e.params.clone(),
        limits: Some(limits),
        context: ExecutionContext {
            id: e.id.to_string(),
            action: e.action.clone(),
            attempt: e.attempt as u32,
        },
        output: Some(pipes),
    };
    let cancelled = state.dispatch.on_cancel(e.id);
    let outcome = tokio::select! {
        r = pack.execute(&state.runtime, request) => Some(r),
        _ = cancelled => None,
    };
    state.dispatch.done(e.id);
    finished_from(outcome)
}

/// How a run ended, as stored: `None` means it was cancelled while running.
pub fn finished_from(
    outcome: Option<Result<crate::runtime::Outcome, crate::runtime::ExecuteError>>,
) -> Finished {
    match outcome {
        None => Finished {
            status: "cancelled".into(),
            result: None,
            error: Some(Value::String("cancelled while running".into())),
            stdout: String::new(),
            stderr: String::new(),
            logs: json!([]),
        },
        Some(Err(err)) => Finished {
            status: "failed".into(),
            result: None,
            error: Some(Value::String(err.to_string())),
            stdout: String::new(),
            stderr: String::new(),
            logs: json!([]),
        },
        Some(Ok(o)) => Finished {
            status: match o.status {
                Status::Succeeded => "succeeded",
                Status::Failed => "failed",
                Status::TimedOut => "timed_out",
            }
            .into(),
            result: o.result,
            error: o.error,
            stdout: o.stdout.marked(),
            stderr: o.stderr.marked(),
            logs: serde_json::to_value(&o.logs).unwrap_or_default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_AHEAD, Pace};
    use std::time::Duration;

    #[test]
    fn claims_ahead_only_what_starts_within_the_window() {
        let pace = Pace::default();
        assert_eq!(pace.ahead(2), 0, "nothing measured: no claim ahead");
        pace.record(Duration::from_micros(100));
        // Two slots, 100 µs a run: 200 start within 10 ms.
        assert_eq!(pace.ahead(2), 200);
        pace.record(Duration::from_nanos(10));
        assert!(pace.ahead(2) <= MAX_AHEAD);
        let slow = Pace::default();
        slow.record(Duration::from_secs(1));
        assert_eq!(slow.ahead(16), 0, "second-long actions are not hoarded");
        // The average follows recent runs.
        for _ in 0..200 {
            slow.record(Duration::from_millis(1));
        }
        assert_eq!(slow.ahead(2), 20);
    }
}
