//! The event pipeline inside the server: timers fire, events meet rules,
//! enforcements create executions, the embedded worker runs them, leases
//! expire into retries.
//!
//! Nothing here polls the database in a hot loop: the timer task sleeps until
//! the next tick is due (or a rule changes), the worker waits for a
//! notification when work is queued (or its heartbeat), and the reaper runs
//! at lease granularity.

pub mod intake;
pub mod remote;
pub mod render;
pub mod worker;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

use crate::api::AppState;
use crate::runtime::output::CappedPipe;
use crate::storage::{
    EventRecord, ExecutionRecord, NewEnforcement, NewExecution, RuleRecord, now_ms,
};

/// Wake-ups and cancellation shared by the API and the background tasks.
#[derive(Default)]
pub struct Dispatch {
    /// Work was queued.
    pub work: Notify,
    /// A timer rule changed.
    pub timers: Notify,
    cancels: Mutex<HashMap<i64, oneshot::Sender<()>>>,
    live: Mutex<HashMap<i64, (CappedPipe, CappedPipe)>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Posted events, written in batches.
    pub intake: intake::Intake,
    /// The embedded worker, once registered.
    embedded: std::sync::OnceLock<worker::Handle>,
}

impl Dispatch {
    /// Wakes every worker waiting for work: the embedded one (a stored
    /// permit if it is busy) and long-polling remote ones.
    pub fn wake_workers(&self) {
        self.work.notify_waiters();
        self.work.notify_one();
    }

    /// Registers a running execution's cancel handle.
    pub fn on_cancel(&self, id: i64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        lock(&self.cancels).insert(id, tx);
        rx
    }

    /// Forgets a finished execution's cancel handle and live output.
    pub fn done(&self, id: i64) {
        lock(&self.cancels).remove(&id);
        lock(&self.live).remove(&id);
    }

    /// Publishes the output pipes of an execution running in this process.
    pub fn watch(&self, id: i64, pipes: (CappedPipe, CappedPipe)) {
        lock(&self.live).insert(id, pipes);
    }

    /// The live stdout/stderr of an execution running in this process.
    pub fn output(&self, id: i64) -> Option<(CappedPipe, CappedPipe)> {
        lock(&self.live).get(&id).cloned()
    }

    /// Interrupts a running execution of this process; false if none.
    pub fn cancel(&self, id: i64) -> bool {
        lock(&self.cancels)
            .remove(&id)
            .is_some_and(|tx| tx.send(()).is_ok())
    }

    /// Stops every background task and waits until they are gone.
    pub async fn shutdown(&self) {
        let tasks: Vec<_> = lock(&self.tasks).drain(..).collect();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        lock(&self.tasks).push(tokio::spawn(task));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Run an embedded worker.
    pub embedded_worker: bool,
    /// Fire timers on this node (every node may: ticks are claimed, never doubled).
    pub timers: bool,
    /// Executions the embedded worker runs at once.
    pub concurrency: usize,
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// First retry delay; doubles per attempt.
    pub retry_backoff: Duration,
    /// Default execution timeout.
    pub default_timeout: Duration,
    /// Delete finished executions and events older than this; `None` keeps all.
    pub retention: Option<Duration>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            embedded_worker: true,
            timers: true,
            concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            lease: Duration::from_secs(30),
            retry_backoff: Duration::from_secs(1),
            default_timeout: Duration::from_secs(30),
            retention: None,
        }
    }
}

/// Tells every worker that work was queued: local ones directly, and on
/// PostgreSQL every other node through `NOTIFY`, so long-polling workers
/// attached to another API node wake too.
pub async fn work_queued(state: &AppState) {
    state.dispatch.wake_workers();
    if let Err(e) = state.storage.notify_work().await {
        tracing::warn!(error = %e, "could not notify other nodes");
    }
}

/// Relays `NOTIFY attune_work` from other nodes to this node's workers.
async fn listen_task(state: AppState) {
    loop {
        match state.storage.work_listener().await {
            Ok(Some(mut listener)) => loop {
                match listener.recv().await {
                    Ok(_) => state.dispatch.wake_workers(),
                    Err(e) => {
                        tracing::warn!(error = %e, "lost the notification channel; reconnecting");
                        break;
                    }
                }
            },
            Ok(None) => return,
            Err(e) => tracing::warn!(error = %e, "could not listen for work notifications"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Brings a rule's timer in line with its definition and wakes the timer task.
pub async fn sync_rule(
    state: &AppState,
    rule: &RuleRecord,
) -> Result<(), crate::storage::StorageError> {
    let plan = crate::triggers::schedule::Plan::of(&rule.spec.trigger, &rule.spec.trigger_params)
        .ok()
        .flatten();
    state.storage.sync_timer(rule, plan.as_ref()).await?;
    state.cache.rules_changed();
    state.dispatch.timers.notify_one();
    Ok(())
}

/// Starts the timer, worker, reaper and retention tasks.
pub async fn start(state: &AppState, config: PipelineConfig) -> anyhow::Result<()> {
    let dispatch = state.dispatch.clone();
    dispatch.spawn(listen_task(state.clone()));
    if config.timers {
        dispatch.spawn(timer_task(state.clone()));
    }
    dispatch.spawn(reaper_task(state.clone(), config.clone()));
    if let Some(retention) = config.retention {
        dispatch.spawn(retention_task(state.clone(), retention));
    }
    if config.embedded_worker {
        let w = worker::EmbeddedWorker::register(state.clone(), config).await?;
        let _ = dispatch.embedded.set(w.handle());
        dispatch.spawn(w.run());
    }
    Ok(())
}

/// Stops the background tasks and hands the work the embedded worker
/// claimed ahead, but never started, back to the queue for other nodes or
/// the next start.
pub async fn stop(state: &AppState) {
    state.dispatch.shutdown().await;
    if let Some(worker) = state.dispatch.embedded.get() {
        match worker.release(state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "handed unstarted executions back"),
            Err(e) => tracing::warn!(error = %e, "could not hand unstarted executions back"),
        }
    }
}

async fn timer_task(state: AppState) {
    loop {
        match state.storage.fire_due_timers(100).await {
            Ok(fired) => {
                for (rule, event) in fired {
                    if let Err(e) = process_event(&state, &event, Some(&rule)).await {
                        tracing::error!(rule, error = %e, "processing a timer event");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "firing timers"),
        }
        let wait = match state.storage.next_timer_due().await {
            Ok(Some(due)) => Duration::from_millis((due - now_ms()).clamp(0, 60_000) as u64),
            Ok(None) => Duration::from_secs(60),
            Err(_) => Duration::from_secs(1),
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = state.dispatch.timers.notified() => {}
        }
    }
}

async fn reaper_task(state: AppState, config: PipelineConfig) {
    let period = (config.lease / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        match state
            .storage
            .reap_expired_leases(config.retry_backoff.as_millis() as i64)
            .await
        {
            Ok(r) if r.retried + r.abandoned + r.requeued > 0 => {
                tracing::warn!(
                    retried = r.retried,
                    abandoned = r.abandoned,
                    requeued = r.requeued,
                    "expired leases"
                );
                work_queued(&state).await;
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "reaping leases"),
        }
    }
}

async fn retention_task(state: AppState, retention: Duration) {
    loop {
        let cutoff = now_ms() - retention.as_millis() as i64;
        match state.storage.prune(cutoff).await {
            Ok((executions, events)) if executions + events > 0 => {
                tracing::info!(executions, events, "pruned old history");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "pruning history"),
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// What a rule would do with an event (the dry run of `POST /rules/{ref}/test`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Verdict {
    /// Whether the criteria hold.
    pub matched: bool,
    /// The rendered action params, when it matched and rendered.
    pub params: Option<serde_json::Value>,
    /// Why it would not run (criteria error, template error, invalid params).
    pub errors: Vec<crate::api::error::ErrorDetail>,
}

/// Evaluates `rule` against `event` without storing anything.
pub async fn evaluate(
    state: &AppState,
    rule: &RuleRecord,
    event: &EventRecord,
) -> Result<(Verdict, Option<crate::storage::ActionRecord>), crate::api::error::ApiError> {
    use crate::api::error::ErrorDetail;
    let ctx = render::context(event, &rule.spec.r#ref);
    let detail = |path: &str, message: String| ErrorDetail {
        path: path.to_string(),
        message,
    };
    let matched = match render::matches(rule.spec.criteria.as_deref(), &ctx) {
        Ok(m) => m,
        Err(e) => {
            return Ok((
                Verdict {
                    matched: false,
                    params: None,
                    errors: vec![detail("/criteria", e)],
                },
                None,
            ));
        }
    };
    if !matched {
        return Ok((
            Verdict {
                matched,
                params: None,
                errors: vec![],
            },
            None,
        ));
    }
    let params = match render::render(&rule.spec.action_params, &ctx) {
        Ok(p) => p,
        Err((path, message)) => {
            return Ok((
                Verdict {
                    matched,
                    params: None,
                    errors: vec![detail(&format!("/action_params{path}"), message)],
                },
                None,
            ));
        }
    };
    let Some(action) = state
        .cache
        .action(&state.storage, &rule.spec.action)
        .await?
    else {
        return Ok((
            Verdict {
                matched,
                params: Some(params),
                errors: vec![detail(
                    "/action",
                    format!("unknown action `{}`", rule.spec.action),
                )],
            },
            None,
        ));
    };
    let pack = state.pack(&action.component).await?;
    let errors = match pack.action(&action.name).map(|a| a.validate(&params)) {
        Some(Ok(())) => vec![],
        Some(Err(errs)) => errs
            .into_iter()
            .map(|e| detail(&format!("/action_params{}", e.path), e.message))
            .collect(),
        None => vec![detail(
            "/action",
            format!("unknown action `{}`", rule.spec.action),
        )],
    };
    Ok((
        Verdict {
            matched,
            params: Some(params),
            errors,
        },
        Some(action),
    ))
}

/// Runs an event through the rules listening to its trigger (or only `only`):
/// criteria, templating, validation, one enforcement per (rule, event).
pub async fn process_event(
    state: &AppState,
    event: &EventRecord,
    only: Option<&str>,
) -> Result<Vec<ExecutionRecord>, crate::api::error::ApiError> {
    let rules = match only {
        Some(r) => state
            .storage
            .get_rule(r)
            .await?
            .into_iter()
            .filter(|r| r.spec.enabled)
            .collect(),
        None => {
            state
                .cache
                .enabled_rules(&state.storage, &event.trigger)
                .await?
        }
    };
    let items = plan(state, event, rules).await?;
    let created: Vec<ExecutionRecord> = state
        .storage
        .enforce_many(&items)
        .await?
        .into_iter()
        .flatten()
        .collect();
    if !created.is_empty() {
        work_queued(state).await;
    }
    Ok(created)
}

/// What `rules` make of `event`: an enforcement for each rule that matched
/// (with its execution) or could not be evaluated (with the reason).
pub(crate) async fn plan(
    state: &AppState,
    event: &EventRecord,
    rules: Vec<RuleRecord>,
) -> Result<Vec<NewEnforcement>, crate::api::error::ApiError> {
    let mut items = Vec::new();
    for rule in rules {
        let (verdict, action) = evaluate(state, &rule, event).await?;
        if !verdict.matched && verdict.errors.is_empty() {
            continue;
        }
        let r#ref = &rule.spec.r#ref;
        let (execution, reason) = match (verdict.errors.is_empty(), action) {
            (true, Some(action)) => (
                Some(NewExecution {
                    action: action.r#ref.clone(),
                    params: verdict.params.clone().unwrap_or_default(),
                    capabilities: action.capabilities.clone(),
                    status_reason: None,
                    rule: Some(r#ref.clone()),
                    enforcement: None,
                    max_attempts: rule.spec.max_attempts,
                    timeout_ms: rule.spec.timeout_ms,
                }),
                None,
            ),
            _ => {
                let reason = verdict
                    .errors
                    .iter()
                    .map(|e| format!("{}: {}", e.path, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                tracing::warn!(rule = %r#ref, event = event.id, reason, "rule not enforced");
                (None, Some(reason))
            }
        };
        items.push(NewEnforcement {
            rule: r#ref.clone(),
            event: event.id,
            params: verdict.params,
            reason,
            execution,
        });
    }
    Ok(items)
}
