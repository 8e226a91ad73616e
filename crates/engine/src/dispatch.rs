//! Wake-ups, cancellation and live output inside one process: what the
//! engine's tasks and the surfaces signal to each other without a database
//! round trip.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, oneshot};

use attune_runtime::output::CappedPipe;
use attune_runtime::secrets::{LiveOutput, SecretSet};
use attune_storage::Storage;

/// Wake-ups and cancellation shared by the API and the background tasks.
#[derive(Default)]
pub struct Dispatch {
    /// Work was queued.
    pub work: Notify,
    /// A timer rule changed.
    pub timers: Notify,
    /// An execution ended (a workflow may take it in) or a workflow was
    /// cancelled.
    pub finished: Notify,
    /// Packs (and so the actions) changed: an upload, upgrade or deletion.
    pub packs_changed: Notify,
    /// An execution a policy limited ended or was cancelled, or executions
    /// now wait on a policy: the admission task's wake-up (see
    /// [`Dispatch::slot_freed`] and [`Dispatch::now_waiting`]).
    pub gates: Notify,
    /// Whether executions may wait on a policy, as this node last saw:
    /// set when it queues one `delayed`, and by each admission pass.
    gates_waiting: AtomicBool,
    cancels: Mutex<HashMap<i64, oneshot::Sender<()>>>,
    live: Mutex<HashMap<i64, LiveOutput>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Dispatch {
    /// Wakes every worker waiting for work: the embedded one (a stored
    /// permit if it is busy) and long-polling remote ones.
    pub fn wake_workers(&self) {
        self.work.notify_waiters();
        self.work.notify_one();
    }

    /// Tells every worker that work was queued: local ones directly, and on
    /// PostgreSQL every other node through `NOTIFY`, so long-polling workers
    /// attached to another API node wake too.
    pub async fn work_queued(&self, storage: &Storage) {
        self.wake_workers();
        if let Err(e) = storage.notify_work().await {
            tracing::warn!(error = %e, "could not notify other nodes");
        }
    }

    /// A slot a policy held is free: wakes the admission task when
    /// executions may wait for it. When none did at its last pass and none
    /// was queued here since, nothing is read: executions another node
    /// queued since are let through by that node's own task.
    pub fn slot_freed(&self) {
        if self.gates_waiting.load(Ordering::Acquire) {
            self.gates.notify_one();
        }
    }

    /// Executions were just queued `delayed`: wakes the admission task.
    pub fn now_waiting(&self) {
        self.gates_waiting.store(true, Ordering::Release);
        self.gates.notify_one();
    }

    /// What an admission pass found: whether executions still wait.
    pub fn gates_seen(&self, waiting: bool) {
        self.gates_waiting.store(waiting, Ordering::Release);
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

    /// Publishes the output pipes of an execution running in this process,
    /// with the secrets to redact from them.
    pub fn watch(&self, id: i64, pipes: (CappedPipe, CappedPipe), secrets: Arc<SecretSet>) {
        let (stdout, stderr) = pipes;
        lock(&self.live).insert(
            id,
            LiveOutput {
                stdout,
                stderr,
                secrets,
            },
        );
    }

    /// The live stdout/stderr of an execution running in this process.
    pub fn output(&self, id: i64) -> Option<LiveOutput> {
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

    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        lock(&self.tasks).push(tokio::spawn(task));
    }
}

/// Locks `m`, taking the data of a poisoned lock (a panicked holder left it
/// consistent: every critical section here is a single map operation).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
