//! The one door every event and every direct run enters through, with
//! group commit.
//!
//! Posted events, signed webhooks, timer ticks and direct executions each
//! hand their entry to one writer task and wait. The writer takes everything
//! that arrived meanwhile as one batch and records it in one transaction:
//! the events in one statement, then, with their ids known, every rule's
//! enforcement on each (criteria, templating, validation; bounded by fuel) as
//! the enforcements and executions, two statements more; the direct runs
//! in one statement. It answers, and wakes the workers once. Under load a
//! batch holds many entries, so the database sees a few statements per
//! batch instead of several per entry; alone, an entry waits for nobody.

use std::collections::HashMap;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::Core;
use super::error::EngineError;
use super::rules::evaluate::plan;
use super::telemetry::{LiveSpan, TraceContext};
use attune_storage::{
    Dropped, EventRecord, ExecutionRecord, NewEnforcement, NewEvent, NewExecution, Refusal,
    RuleRecord, StorageError,
};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status};

/// Entries written together at most.
const MAX_BATCH: usize = 256;

/// An event to record and enforce.
#[derive(Debug, Clone)]
pub struct IncomingEvent {
    /// Trigger type ref.
    pub trigger: String,
    /// Payload.
    pub payload: Value,
    /// Who produced it (the token's name, the hook's name, the timer's rule).
    pub source: Option<String>,
    /// Only these rules see it (a webhook's verified rules, a timer's rule);
    /// `None`: every enabled rule on its trigger.
    pub rules: Option<Vec<RuleRecord>>,
    /// How deep in a chain of causes it is: 0 for what came from outside
    /// (a post, a webhook, a tick, a sensor); an execution's
    /// `core.execution_finished` event is one deeper than the event behind
    /// the execution. Past the server's `max_chain_depth` it is stored and
    /// no rule sees it, so rules that feed each other stop by themselves.
    pub depth: i64,
    /// The span that caused it (the request it came in), when traced; a
    /// traced event without one starts a trace.
    pub trace: Option<TraceContext>,
    /// The id of the token that caused it (posted it, or asked for the run
    /// or gave the answer it announces), for asks that refuse
    /// self-approval.
    pub requested_by: Option<i64>,
}

impl IncomingEvent {
    /// Why no rule may see it (its chain is too deep), if so.
    fn held(&self, core: &Core) -> Option<String> {
        let max = core.config.max_chain_depth;
        (self.depth > max).then(|| {
            format!(
                "its chain of causes is {} deep, past the server's --max-chain-depth of {max}; \
                 no rule saw it",
                self.depth
            )
        })
    }
}

/// What recording an event did.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The event as stored.
    pub event: EventRecord,
    /// The executions it queued.
    pub executions: Vec<ExecutionRecord>,
    /// It is stored, but its rules' enforcements could not be yet; they will be
    /// (see [`reconcile`]).
    pub enforcement_pending: bool,
}

/// Why a write failed, as the waiting request learns it.
#[derive(Debug, Clone)]
struct Failure {
    /// The database could not be reached: a 503, worth retrying.
    unavailable: bool,
    /// The database takes no writes now (a full disk): the storage logs
    /// that state, not each batch it refuses.
    refused: Option<Refusal>,
    message: String,
}

impl Failure {
    fn of(what: &str, e: &StorageError) -> Failure {
        Failure {
            unavailable: e.is_unavailable(),
            refused: e.refusal(),
            message: format!("{what}: {e}"),
        }
    }
}

impl From<Failure> for EngineError {
    fn from(f: Failure) -> Self {
        if let Some(refusal) = f.refused {
            EngineError::Refused(refusal)
        } else if f.unavailable {
            EngineError::database_unavailable()
        } else {
            EngineError::Internal(anyhow::anyhow!(f.message))
        }
    }
}

enum Entry {
    Event(
        IncomingEvent,
        oneshot::Sender<Result<Admitted, Failure>>,
        Option<Box<LiveSpan>>,
    ),
    Run(
        Box<NewExecution>,
        oneshot::Sender<Result<Result<ExecutionRecord, Dropped>, Failure>>,
    ),
}

/// The handle entries go through; the writer starts with the first entry.
#[derive(Default)]
pub struct Ingest(std::sync::OnceLock<mpsc::UnboundedSender<Entry>>);

fn stopping() -> EngineError {
    EngineError::Unavailable("the server is shutting down".into())
}

impl Ingest {
    fn send(&self, core: &Core, entry: Entry) -> Result<(), EngineError> {
        let sender = self.0.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            core.dispatch.spawn(writer(core.clone(), rx));
            tx
        });
        sender.send(entry).map_err(|_| stopping())
    }

    /// Records an event and enforces the rules that see it.
    pub async fn event(&self, core: &Core, event: IncomingEvent) -> Result<Admitted, EngineError> {
        let (reply, answer) = oneshot::channel();
        let span = core.telemetry.as_ref().map(|t| {
            t.start(
                format!("event {}", event.trigger),
                SpanKind::Internal,
                event
                    .trace
                    .clone()
                    .or_else(super::telemetry::current)
                    .as_ref(),
                vec![
                    KeyValue::new("attune.trigger", event.trigger.clone()),
                    KeyValue::new("attune.event.depth", event.depth),
                ],
            )
        });
        self.send(core, Entry::Event(event, reply, span.map(Box::new)))?;
        Ok(answer.await.map_err(|_| stopping())??)
    }

    /// Queues an execution that was asked for directly (validated already).
    pub async fn run(
        &self,
        core: &Core,
        run: NewExecution,
    ) -> Result<ExecutionRecord, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.send(core, Entry::Run(Box::new(run), reply))?;
        answer
            .await
            .map_err(|_| stopping())??
            .map_err(|d| EngineError::Conflict(format!("not created: {}", d.reason)))
    }
}

/// Records each batch: its events with their rules' enforcements in one
/// transaction, its direct runs in one statement; answers each entry and
/// wakes the workers once.
async fn writer(core: Core, mut rx: mpsc::UnboundedReceiver<Entry>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let entries = std::mem::take(&mut batch);
        core.metrics.event_batches.inc();
        let mut events = Vec::new();
        let mut spans = Vec::new();
        let mut runs = Vec::new();
        for entry in entries {
            match entry {
                Entry::Event(e, reply, span) => {
                    events.push((e, reply));
                    spans.push(span.map(|s| *s));
                }
                Entry::Run(r, reply) => runs.push((r, reply)),
            }
        }
        let mut woke = false;
        if !events.is_empty() {
            woke |= record(&core, events, spans).await;
        }
        if !runs.is_empty() {
            let new: Vec<NewExecution> = runs.iter().map(|(r, _)| (**r).clone()).collect();
            match core.storage.insert_executions(&new).await {
                Ok(records) => {
                    core.metrics
                        .executions_requested
                        .inc_by(records.iter().filter(|r| r.is_ok()).count() as u64);
                    crate::policies::queued(&core, records.iter().flatten());
                    for ((_, reply), record) in runs.into_iter().zip(records) {
                        let _ = reply.send(Ok(record));
                    }
                    woke = true;
                }
                Err(e) => refuse(runs, Failure::of("queueing executions", &e)),
            }
        }
        if woke {
            core.dispatch.work_queued(&core.storage).await;
        }
    }
}

type EventEntry = (IncomingEvent, oneshot::Sender<Result<Admitted, Failure>>);

/// Logs `failure` and answers every one of `entries` with it.
fn refuse<E, T>(entries: Vec<(E, oneshot::Sender<Result<T, Failure>>)>, failure: Failure) {
    if failure.refused.is_none() {
        tracing::error!(error = %failure.message, entries = entries.len(), "writing a batch");
    }
    for (_, reply) in entries {
        let _ = reply.send(Err(failure.clone()));
    }
}

/// Records `events` and their rules' enforcements in one transaction, and
/// answers each; true when executions were queued. The rules are read
/// before the write, and evaluated (criteria, templating, validation;
/// bounded by fuel) once the events have their ids. Stored events are
/// acknowledged whatever their enforcements: if those could not be made, each
/// is admitted with `enforcement_pending` and [`reconcile`] enforces it
/// later.
async fn record(core: &Core, events: Vec<EventEntry>, mut spans: Vec<Option<LiveSpan>>) -> bool {
    let audiences = match prepare(core, &events).await {
        Ok(audiences) => audiences,
        Err(failure) => {
            end_spans(spans, Err(failure.message.as_str()), &[]);
            refuse(events, failure);
            return false;
        }
    };
    let traces: Vec<Option<TraceContext>> = spans
        .iter()
        .map(|s| s.as_ref().map(|s| s.span_context().clone()))
        .collect();
    let addressed: Vec<Option<Vec<String>>> = events
        .iter()
        .map(|(e, _)| {
            e.rules
                .as_ref()
                .map(|rules| rules.iter().map(|r| r.spec.r#ref.clone()).collect())
        })
        .collect();
    let held: Vec<Option<String>> = events.iter().map(|(e, _)| e.held(core)).collect();
    let new: Vec<NewEvent<'_>> = events
        .iter()
        .zip(&addressed)
        .zip(&held)
        .map(|(((e, _), rules), held)| NewEvent {
            trigger: &e.trigger,
            payload: &e.payload,
            source: e.source.as_deref(),
            rules: rules.as_deref(),
            depth: e.depth,
            held_reason: held.as_deref(),
            requested_by: e.requested_by,
        })
        .collect();
    let n_held = held.iter().flatten().count();
    if n_held > 0 {
        core.metrics.events_held.inc_by(n_held as u64);
        tracing::warn!(
            events = n_held,
            max = core.config.max_chain_depth,
            "events past the chain depth bound are stored, and no rule sees them"
        );
    }
    let recorded = core
        .storage
        .record_events(&new, |records| async move {
            let planned = plan_all(core, &records, audiences, &traces).await;
            (records, planned)
        })
        .await;
    let (records, enforcements) = match recorded {
        Ok(recorded) => recorded,
        Err(e) => {
            let failure = Failure::of("recording events", &e);
            end_spans(
                std::mem::take(&mut spans),
                Err(failure.message.as_str()),
                &[],
            );
            refuse(events, failure);
            return false;
        }
    };
    end_spans(spans, Ok(()), &records);
    core.metrics.events_recorded.inc_by(records.len() as u64);
    let (queued, pending) = match enforcements {
        Ok(queued) => (queued, false),
        Err(e) => {
            tracing::error!(error = %e, events = records.len(), "enforcing events; they are kept and enforced later");
            (Vec::new(), true)
        }
    };
    core.metrics
        .executions_requested
        .inc_by(queued.len() as u64);
    let woke = !queued.is_empty();
    crate::policies::queued(core, queued.iter().map(|(_, e)| e));
    let mut by_event: HashMap<i64, Vec<ExecutionRecord>> = HashMap::new();
    for (event, execution) in queued {
        by_event.entry(event).or_default().push(execution);
    }
    for ((_, reply), event) in events.into_iter().zip(records) {
        let _ = reply.send(Ok(Admitted {
            executions: by_event.remove(&event.id).unwrap_or_default(),
            enforcement_pending: pending,
            event,
        }));
    }
    woke
}

/// What a batch reads before the writer is held: the rules each event is
/// addressed to, and their actions and components, which evaluating the
/// rules reads (a component loaded for the first time after a restart is
/// then not loaded while every other write waits). A read that finds the
/// database unreachable fails the batch at once: the write would wait as
/// long again for a connection, and so would every entry queued behind the
/// batch. Other failures are the evaluation's to report.
async fn prepare(
    core: &Core,
    events: &[EventEntry],
) -> Result<Vec<Result<Vec<RuleRecord>, EngineError>>, Failure> {
    let mut audiences = Vec::with_capacity(events.len());
    for (incoming, _) in events {
        let audience = match &incoming.rules {
            _ if incoming.held(core).is_some() => Ok(Vec::new()),
            Some(rules) => Ok(rules.clone()),
            None => {
                core.cache
                    .enabled_rules(&core.storage, &incoming.trigger)
                    .await
            }
        };
        audiences.push(match audience {
            Ok(rules) => Ok(rules),
            Err(e) => Err(unless_unreachable("reading rules", e)?),
        });
    }
    let mut seen = std::collections::HashSet::new();
    for rule in audiences.iter().flatten().flatten() {
        if !seen.insert(rule.spec.action.as_str()) {
            continue;
        }
        let action = match core.cache.action(&core.storage, &rule.spec.action).await {
            Ok(Some(action)) => action,
            Ok(None) => continue,
            Err(e) => {
                unless_unreachable("reading actions", e)?;
                continue;
            }
        };
        if action.workflow.is_none()
            && !action.sensor
            && let Err(EngineError::Unavailable(message)) = core.component(&action.component).await
        {
            return Err(Failure {
                unavailable: true,
                refused: None,
                message,
            });
        }
    }
    Ok(audiences)
}

/// `e` as the evaluation reports it; the batch's failure when the database
/// could not be reached.
fn unless_unreachable(what: &str, e: StorageError) -> Result<EngineError, Failure> {
    if e.is_unavailable() {
        Err(Failure::of(what, &e))
    } else {
        Ok(e.into())
    }
}

/// What the rules each stored event is addressed to make of it; the
/// executions of a traced event (`traces`, by event; none for all when
/// empty) are traced under their enforcement's span.
async fn plan_all(
    core: &Core,
    records: &[EventRecord],
    audiences: Vec<Result<Vec<RuleRecord>, EngineError>>,
    traces: &[Option<TraceContext>],
) -> Result<Vec<NewEnforcement>, EngineError> {
    let mut items = Vec::new();
    for (n, (record, rules)) in records.iter().zip(audiences).enumerate() {
        let trace = traces.get(n).and_then(Option::as_ref);
        let (Some(telemetry), Some(trace)) = (&core.telemetry, trace) else {
            items.extend(plan(core, record, rules?).await?);
            continue;
        };
        let began = std::time::SystemTime::now();
        let planned = plan(core, record, rules?).await?;
        let rules_span = telemetry.ended(super::telemetry::Ended {
            name: format!("rules {}", record.trigger),
            kind: SpanKind::Internal,
            parent: Some(trace),
            id: None,
            start: began,
            end: std::time::SystemTime::now(),
            attributes: vec![
                KeyValue::new("attune.event.id", record.id),
                KeyValue::new("attune.rules", planned.len() as i64),
            ],
            error: None,
        });
        for mut enforcement in planned {
            let span = telemetry.ended(super::telemetry::Ended {
                name: format!("enforcement {}", enforcement.rule),
                kind: SpanKind::Internal,
                parent: Some(&rules_span),
                id: None,
                start: began,
                end: std::time::SystemTime::now(),
                attributes: vec![
                    KeyValue::new("attune.rule", enforcement.rule.clone()),
                    KeyValue::new("attune.event.id", record.id),
                ],
                error: enforcement.reason.clone().map(|_| "not_enforced".into()),
            });
            if let Some(execution) = &mut enforcement.execution {
                execution.trace = Some(super::telemetry::header(&span));
            }
            items.push(enforcement);
        }
    }
    Ok(items)
}

/// Ends the spans of a batch's events: each with its stored event's id, or
/// all with the batch's failure.
fn end_spans(spans: Vec<Option<LiveSpan>>, outcome: Result<(), &str>, records: &[EventRecord]) {
    for (n, span) in spans.into_iter().enumerate() {
        let Some(mut span) = span else { continue };
        match outcome {
            Ok(()) => {
                if let Some(r) = records.get(n) {
                    span.set_attribute(KeyValue::new("attune.event.id", r.id));
                }
            }
            Err(why) => {
                span.set_attribute(KeyValue::new("error.type", "not_recorded"));
                span.set_status(Status::error(why.to_string()));
            }
        }
        span.end();
    }
}

/// Plans and stores the enforcements of the rules each stored event is
/// addressed to, marking the events enforced in the same transaction;
/// returns how many executions were queued.
async fn enforce(
    core: &Core,
    records: &[EventRecord],
    audiences: Vec<Result<Vec<RuleRecord>, EngineError>>,
    traces: &[Option<TraceContext>],
) -> Result<usize, EngineError> {
    let items = plan_all(core, records, audiences, traces).await?;
    let ids: Vec<i64> = records.iter().map(|e| e.id).collect();
    let queued: Vec<ExecutionRecord> = core
        .storage
        .enforce_many(&items, &ids)
        .await?
        .into_iter()
        .flatten()
        .collect();
    crate::policies::queued(core, &queued);
    let queued = queued.len();
    core.metrics.executions_requested.inc_by(queued as u64);
    Ok(queued)
}

/// Enforces events stored outside the writer (a sensor poll's records,
/// stored with the poll's record): every enabled rule on each one's trigger,
/// traced under `traces` (each event's span, by event; none for all when
/// empty). A failure leaves them to [`reconcile`].
pub async fn enforce_stored(
    core: &Core,
    records: &[EventRecord],
    traces: &[Option<TraceContext>],
) -> Result<(), EngineError> {
    let mut audiences = Vec::with_capacity(records.len());
    for record in records {
        let rules = core
            .cache
            .enabled_rules(&core.storage, &record.trigger)
            .await?;
        audiences.push(Ok(rules));
    }
    if enforce(core, records, audiences, traces).await? > 0 {
        core.dispatch.work_queued(&core.storage).await;
    }
    Ok(())
}

/// How old an unenforced event must be before the periodic [`reconcile`]
/// takes it: older than any batch still being written.
pub const RECONCILE_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// Enforces events that were stored but whose enforcements never were (a crash
/// between the two writes, or a failed write): each against the rules it
/// was addressed to (only those still enabled) or every enabled rule on its
/// trigger. Safe to repeat: a (rule, event) pair is enforced once. Takes
/// events stored at least `min_age` ago; returns how many it enforced.
pub async fn reconcile(core: &Core, min_age: std::time::Duration) -> Result<usize, EngineError> {
    let mut done = 0;
    loop {
        let pending = core
            .storage
            .unenforced_events(attune_util::units::millis(min_age), MAX_BATCH as i64)
            .await?;
        if pending.is_empty() {
            break;
        }
        let mut records = Vec::with_capacity(pending.len());
        let mut audiences = Vec::with_capacity(pending.len());
        for (record, addressed) in pending {
            let rules = match addressed {
                Some(refs) => {
                    let mut rules = Vec::new();
                    for r in refs {
                        if let Some(rule) = core.storage.get_rule(&r).await?
                            && rule.spec.enabled
                        {
                            rules.push(rule);
                        }
                    }
                    rules
                }
                None => {
                    core.cache
                        .enabled_rules(&core.storage, &record.trigger)
                        .await?
                }
            };
            audiences.push(Ok(rules));
            records.push(record);
        }
        let queued = enforce(core, &records, audiences, &[]).await?;
        done += records.len();
        if queued > 0 {
            core.dispatch.work_queued(&core.storage).await;
        }
    }
    Ok(done)
}
