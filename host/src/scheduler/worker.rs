//! The worker embedded in `attune serve`: claims executions it can serve,
//! runs them in the sandbox, reports results, heartbeats its leases.

use std::sync::Arc;
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

    /// Claims and runs work until the task is aborted.
    pub async fn run(self) {
        let heartbeat = (self.config.lease / 3).max(Duration::from_millis(100));
        let lease_ms = self.config.lease.as_millis() as i64;
        let mut next_heartbeat = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_heartbeat {
                if let Err(e) = self.state.storage.heartbeat(self.id, lease_ms).await {
                    tracing::error!(error = %e, "worker heartbeat");
                }
                next_heartbeat = tokio::time::Instant::now() + heartbeat;
            }
            let free = self.slots.available_permits();
            let mut full_batch = false;
            if free > 0 {
                match self
                    .state
                    .storage
                    .claim(self.id, &self.capabilities, free as i64, lease_ms, true)
                    .await
                {
                    Ok(claimed) => {
                        full_batch = claimed.len() == free;
                        for e in claimed {
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
                            tokio::spawn(async move {
                                if let Some(finished) =
                                    run_one(&state, worker, e, default_timeout).await
                                {
                                    let _ = results.send(finished);
                                }
                                drop(permit);
                                // A slot is free: look for more work.
                                state.dispatch.wake_workers();
                            });
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "claiming executions"),
                }
            }
            if full_batch {
                continue;
            }
            let mut wait = next_heartbeat.saturating_duration_since(tokio::time::Instant::now());
            if let Ok(Some(due)) = self.state.storage.next_retry_due().await {
                let until = Duration::from_millis((due - crate::storage::now_ms()).max(0) as u64);
                wait = wait.min(until);
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.state.dispatch.work.notified() => {}
            }
        }
    }
}

/// Runs one claimed execution; returns how it ended, for the result writer.
async fn run_one(
    state: &AppState,
    worker: i64,
    e: ExecutionRecord,
    default_timeout: Duration,
) -> Option<(i64, i64, Finished)> {
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
