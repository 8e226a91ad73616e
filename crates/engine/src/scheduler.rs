//! The event pipeline inside the server: timers fire, events meet rules,
//! enforcements create executions, the embedded worker runs them, leases
//! expire into retries.
//!
//! Nothing here polls the database in a hot loop: the timer task sleeps until
//! the next tick is due (or a rule changes), the worker waits for a
//! notification when work is queued (or its heartbeat), and the reaper runs
//! at lease granularity.

use std::time::Duration;

use super::Core;
pub use super::core::PipelineConfig;
use super::ingest::IncomingEvent;
use super::worker::embedded::{EmbeddedWorker, Handle};
use attune_storage::now_ms;
use attune_util::units::millis;

/// Relays `NOTIFY attune_work` from other nodes to this node's workers.
async fn listen_task(core: Core) {
    loop {
        match core.storage.work_listener().await {
            Ok(Some(mut listener)) => loop {
                match listener.recv().await {
                    Ok(_) => core.dispatch.wake_workers(),
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

/// The running pipeline of this process: what a clean stop needs.
#[derive(Clone, Default)]
pub struct Pipeline {
    embedded: Option<Handle>,
}

/// Starts the timer, worker, reaper, reconciler, workflow conductor and
/// retention tasks.
pub async fn start(core: &Core, config: PipelineConfig) -> anyhow::Result<Pipeline> {
    let dispatch = core.dispatch.clone();
    dispatch.spawn(listen_task(core.clone()));
    if config.timers {
        dispatch.spawn(timer_task(core.clone()));
    }
    dispatch.spawn(reaper_task(core.clone(), config.clone()));
    dispatch.spawn(reconcile_task(core.clone()));
    dispatch.spawn(super::workflows::conductor_task(core.clone()));
    dispatch.spawn(super::policies::admission_task(core.clone()));
    if let Some(retention) = config.retention {
        dispatch.spawn(retention_task(core.clone(), retention));
    }
    let mut pipeline = Pipeline::default();
    if config.embedded_worker {
        let w = EmbeddedWorker::register(core.clone(), config).await?;
        pipeline.embedded = Some(w.handle());
        dispatch.spawn(w.run());
    }
    Ok(pipeline)
}

impl Pipeline {
    /// Stops cleanly within `drain`: the embedded worker claims and begins
    /// nothing more, and what it began may end and have its result written
    /// until the deadline (what is still running then is taken back by the
    /// lease, retried or abandoned, at the next start). Then the background
    /// tasks stop and the work claimed ahead but never begun goes back to
    /// the queue for other nodes or the next start.
    pub async fn stop(&self, core: &Core, drain: Duration) {
        if let Some(worker) = &self.embedded {
            let deadline = tokio::time::Instant::now() + drain;
            if !worker.drain(deadline).await {
                tracing::warn!(
                    running = worker.busy(),
                    "stopped before these executions ended or had their results written; \
                     their leases bring them back"
                );
            }
        }
        core.dispatch.shutdown().await;
        if let Some(worker) = &self.embedded {
            // Bounded: a stop must end even when the database hangs; what
            // is not handed back returns with its lease.
            match tokio::time::timeout(RELEASE_WAIT, worker.release(core)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(released = n, "handed unstarted executions back"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not hand unstarted executions back")
                }
                Err(_) => tracing::warn!("could not hand unstarted executions back in time"),
            }
        }
    }
}

/// Least wait between two passes of the timer task after a write failed:
/// a tick that could not be recorded stays due, and must not be retried in
/// a loop while the disk is full.
const AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Background failures are logged, except the database refusing writes:
/// the storage logs when that begins and ends, not each tick it refuses.
fn quiet_storage(e: &attune_storage::StorageError) -> bool {
    e.is_refused()
}

/// Longest a stop waits to hand unstarted work back.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

async fn timer_task(core: Core) {
    loop {
        let mut failed = false;
        match core.storage.fire_due_timers(100).await {
            Ok(ticks) => {
                // Every tick through the event door, concurrently so that
                // they share its batches; each reaches only its own rule.
                let admitted = ticks.into_iter().map(|tick| record_tick(&core, tick));
                futures_util::future::join_all(admitted).await;
            }
            Err(e) => {
                failed = true;
                if !quiet_storage(&e) {
                    tracing::error!(error = %e, "firing timers");
                }
            }
        }
        if let Err(e) = super::sensors::fire(&core).await {
            failed = true;
            if !quiet_storage(&e) {
                tracing::error!(error = %e, "polling sensors");
            }
        }
        let timer = core.storage.next_timer_due().await;
        let sensor = core.storage.next_sensor_due().await;
        let wait = match (timer, sensor) {
            (Ok(a), Ok(b)) => match a.into_iter().chain(b).min() {
                Some(due) => Duration::from_millis((due - now_ms()).clamp(0, 60_000) as u64),
                None => Duration::from_secs(60),
            },
            _ => AFTER_FAILURE,
        };
        let wait = if failed {
            wait.max(AFTER_FAILURE)
        } else {
            wait
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = core.dispatch.timers.notified() => {}
        }
    }
}

/// Records a timer's tick as an event that only its rule sees.
async fn record_tick(core: &Core, tick: attune_storage::Tick) {
    let rules = match core.storage.get_rule(&tick.rule).await {
        Ok(rule) => rule.into_iter().filter(|r| r.spec.enabled).collect(),
        Err(e) => {
            tracing::error!(rule = tick.rule, error = %e, "reading a timer's rule");
            return;
        }
    };
    let event = IncomingEvent {
        trigger: tick.trigger.to_string(),
        payload: tick.payload,
        source: Some(tick.rule.clone()),
        rules: Some(rules),
        depth: 0,
        trace: None,
        requested_by: None,
    };
    if let Err(e) = core.ingest.event(core, event).await
        && !e.is_refused()
    {
        tracing::error!(rule = tick.rule, error = %e, "recording a timer event");
    }
}

async fn reaper_task(core: Core, config: PipelineConfig) {
    let period = (config.lease / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        match core
            .storage
            .reap_expired_leases(millis(config.retry_backoff))
            .await
        {
            Ok(r) if r.retried + r.abandoned + r.requeued > 0 => {
                tracing::warn!(
                    retried = r.retried,
                    abandoned = r.abandoned,
                    requeued = r.requeued,
                    "expired leases"
                );
                core.dispatch.work_queued(&core.storage).await;
                core.dispatch.finished.notify_one();
                core.dispatch.gates.notify_one();
                crate::executions::announce(&core, &r.abandoned_ids).await;
            }
            Ok(_) => {}
            Err(e) if quiet_storage(&e) => {}
            Err(e) => tracing::error!(error = %e, "reaping leases"),
        }
    }
}

/// Enforces events whose enforcements were never stored, at start and then
/// every [`RECONCILE_PERIOD`].
async fn reconcile_task(core: Core) {
    loop {
        match crate::ingest::reconcile(&core, crate::ingest::RECONCILE_AFTER).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                events = n,
                "enforced events a crash or failed write had left"
            ),
            Err(e) if e.is_refused() => {}
            Err(e) => tracing::error!(error = %e, "reconciling events"),
        }
        tokio::time::sleep(RECONCILE_PERIOD).await;
    }
}

/// How often stored-but-unenforced events are looked for.
const RECONCILE_PERIOD: Duration = Duration::from_secs(15);

async fn retention_task(core: Core, retention: Duration) {
    loop {
        let cutoff = now_ms() - millis(retention);
        match core.storage.prune(cutoff).await {
            Ok((executions, events)) if executions + events > 0 => {
                tracing::info!(executions, events, "pruned old history");
            }
            Ok(_) => {}
            Err(e) if quiet_storage(&e) => {}
            Err(e) => tracing::error!(error = %e, "pruning history"),
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
