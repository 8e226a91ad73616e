//! The one execution path: an [`Assignment`] in, a [`Report`] out.
//!
//! The embedded worker and `attune worker` both run every execution through
//! [`run`]; they differ only in where the component comes from (the
//! server's pack cache, or a download verified by digest) and where the
//! report goes (the database, or the worker API).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::protocol::{Assignment, Report};
use attune_runtime::http::AllowedHosts;
use attune_runtime::kv::KvState;
use attune_runtime::output::CappedPipe;
use attune_runtime::{
    ExecuteError, ExecutionContext, ExecutionRequest, JournalMode, Limits, LoadedComponent,
    Outcome, Runtime, Status,
};
use attune_storage::{ExecutionStatus, now_ms};

/// What a run may reach beyond its sandbox.
pub struct Reach {
    /// Where it may send HTTP requests (its pack's grant).
    pub outbound: Arc<AllowedHosts>,
    /// Its pack's key-value store.
    pub kv: KvState,
    /// Where its spans go, when this worker exports them.
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
}

/// Runs `assignment` with the component `pack` resolves to and what it may
/// `reach`, unless `cancelled` fires first. `output` receives stdout and
/// stderr as they are written (for live streaming); `default_timeout`
/// applies when the assignment sets none.
pub async fn run(
    runtime: &Runtime,
    assignment: &Assignment,
    pack: impl Future<Output = Result<LoadedComponent, String>>,
    reach: Reach,
    default_timeout: Duration,
    output: Option<(CappedPipe, CappedPipe)>,
    mut cancelled: oneshot::Receiver<()>,
) -> Report {
    let report = async {
        let id = assignment.id;
        if cancelled.try_recv().is_ok() {
            return Report::without_output(
                id,
                ExecutionStatus::Cancelled,
                "cancelled before it ran",
            );
        }
        // The recorded start is when the execution was marked running, which
        // may have been before a slot was free; the action begins now.
        let began = now_ms();
        let pack = match pack.await {
            Ok(p) => p,
            Err(e) => return Report::without_output(id, ExecutionStatus::Failed, e),
        };
        let limits = Limits {
            timeout: assignment
                .timeout_ms
                .map(|ms| Duration::from_millis(ms.max(0) as u64))
                .unwrap_or(default_timeout),
            ..runtime.config().default_limits
        };
        // Its trace: the execution's span (derived, emitted by the server)
        // and this run's, which its outbound requests name as their parent.
        let traced = assignment
            .trace
            .as_deref()
            .and_then(|t| crate::telemetry::parse(t, None))
            .map(|parent| {
                let execution = crate::telemetry::execution_span(&parent, id);
                let run = crate::telemetry::run_span(&execution, id, assignment.attempt);
                (execution, run)
            });
        let began_at = std::time::SystemTime::now();
        let request = ExecutionRequest {
            traceparent: traced
                .as_ref()
                .filter(|_| assignment.propagate_trace)
                .map(|(_, run)| crate::telemetry::header(run)),
            action: assignment.export.clone(),
            params: assignment.params.clone(),
            limits: Some(limits),
            allowed_hosts: reach.outbound,
            secrets: Arc::new(assignment.secrets.to_set()),
            kv: reach.kv,
            context: ExecutionContext {
                id: id.to_string(),
                action: assignment.action.clone(),
                attempt: assignment.attempt.clamp(1, u32::MAX as i64) as u32,
                depth: assignment.depth,
            },
            output,
            quotas: assignment.quotas,
            journal: match assignment.journal_cap {
                Some(cap) => JournalMode::Record { cap: cap as usize },
                None => JournalMode::Off,
            },
        };
        let outcome = tokio::select! {
            r = pack.execute(runtime, request) => Some(r),
            _ = cancelled => None,
        };
        if let (Some(telemetry), Some((execution, run))) = (&reach.telemetry, &traced) {
            let (error, calls, resources) = match &outcome {
                Some(Ok(o)) => (
                    (o.status != Status::Succeeded).then(|| o.status.as_str().to_string()),
                    o.calls.as_slice(),
                    Some(o.resources),
                ),
                Some(Err(_)) => (Some("failed".to_string()), &[][..], None),
                None => (Some("cancelled".to_string()), &[][..], None),
            };
            let mut attributes = vec![
                opentelemetry::KeyValue::new("attune.action", assignment.action.clone()),
                opentelemetry::KeyValue::new("attune.execution.id", id),
                opentelemetry::KeyValue::new("attune.attempt", assignment.attempt),
            ];
            if let Some(r) = resources {
                attributes.extend([
                    opentelemetry::KeyValue::new("attune.cpu_us", r.cpu_us as i64),
                    opentelemetry::KeyValue::new(
                        "attune.peak_memory_bytes",
                        r.peak_memory_bytes as i64,
                    ),
                ]);
            }
            telemetry.run_ended(run, execution, began_at, attributes, error, calls);
        }
        let mut report = report(id, outcome);
        if let Some(journal) = &mut report.journal {
            journal.component.clone_from(&assignment.component);
            // The execution's row holds these already; a replay on the
            // server reads them there.
            journal.params = serde_json::Value::Null;
            (journal.result, journal.error) = (None, None);
            journal.status.clear();
        }
        Report {
            started_at: Some(began),
            ..report
        }
    }
    .await;
    // Every report names its attempt, so one that arrives after the
    // execution moved on to another attempt is not recorded for it.
    Report {
        attempt: Some(assignment.attempt),
        ..report
    }
}

/// The report of a run that ended with `outcome` (`None`: cancelled).
pub fn report(id: i64, outcome: Option<Result<Outcome, ExecuteError>>) -> Report {
    match outcome {
        None => Report::without_output(id, ExecutionStatus::Cancelled, "cancelled while running"),
        Some(Err(err)) => Report::without_output(id, ExecutionStatus::Failed, err.to_string()),
        Some(Ok(o)) => Report {
            id,
            status: match o.status {
                Status::Succeeded => ExecutionStatus::Succeeded,
                Status::Failed => ExecutionStatus::Failed,
                Status::TimedOut => ExecutionStatus::TimedOut,
            },
            result: o.result,
            error: o.error,
            stdout: o.stdout.marked(),
            stderr: o.stderr.marked(),
            logs: serde_json::to_value(&o.logs).unwrap_or_default(),
            started_at: None,
            attempt: None,
            resources: Some(o.resources),
            journal: o.journal,
            calls: o.calls,
        },
    }
}
