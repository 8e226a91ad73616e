//! Sensors: a pack's exports polled on a durable schedule, whose records
//! become events on the pack's own trigger types.
//!
//! A poll is an ordinary execution of the export (so it runs in the
//! sandbox, on a worker whose capabilities cover its imports, with the
//! pack's grants and limits). [`fire`] queues the polls that are due —
//! claimed once across nodes and restarts, like a timer tick; [`harvest`]
//! takes in the polls that ended, each exactly once: its records are stored
//! as events (one statement a poll) with the poll's record in one
//! transaction, then enforced like any event (`ingest::enforce_stored`).
//! A failed poll (trap, timeout, `err`) delays the sensor's next one,
//! doubling up to [`MAX_BACKOFF_MS`].

use serde_json::Value;

use super::{Core, EngineError};
use attune_storage::{ExecutionStatus, PollEnded, PollRecord, StorageError, now_ms};
use attune_util::schedule::Plan;

/// Events one poll may emit; records past it are dropped with a warning.
pub const MAX_EVENTS: usize = 1000;

/// The longest a failing sensor's next poll is delayed.
pub const MAX_BACKOFF_MS: i64 = 3_600_000;

/// Queues the polls that are due; wakes the workers when there are some.
pub async fn fire(core: &Core) -> Result<usize, StorageError> {
    // Each traced poll starts a trace of its own.
    let trace = |sensor: &str| {
        let telemetry = core.telemetry.as_ref()?;
        let mut span = telemetry.start(
            format!("sensor poll {sensor}"),
            opentelemetry::trace::SpanKind::Internal,
            None,
            vec![opentelemetry::KeyValue::new(
                "attune.sensor",
                sensor.to_string(),
            )],
        );
        let context = opentelemetry::trace::Span::span_context(&span).clone();
        opentelemetry::trace::Span::end(&mut span);
        Some(super::telemetry::header(&context))
    };
    let polls = core.storage.fire_due_sensors(100, &trace).await?;
    if !polls.is_empty() {
        core.metrics.executions_requested.inc_by(polls.len() as u64);
        core.dispatch.work_queued(&core.storage).await;
    }
    Ok(polls.len())
}

/// Takes in the polls that ended: each once across nodes, its records
/// stored as events in the same transaction, then enforced like any event
/// (a crash in between leaves them to the event reconciler). Returns how
/// many it took in.
pub async fn harvest(core: &Core) -> Result<usize, EngineError> {
    let ended = core.storage.polls_ended(100).await?;
    let mut taken = 0;
    for poll in &ended {
        let (events, record) = if poll.status == ExecutionStatus::Succeeded {
            let (events, warning) = records(poll);
            let record = PollRecord {
                warning,
                backoff_until: None,
            };
            (events, record)
        } else {
            tracing::warn!(sensor = %poll.sensor, status = %poll.status, error = ?poll.error, "sensor poll failed");
            let record = PollRecord {
                warning: None,
                backoff_until: Some(now_ms() + backoff(core, poll).await?),
            };
            (Vec::new(), record)
        };
        let Some(stored) = core.storage.take_in_poll(poll, &record, &events).await? else {
            continue;
        };
        taken += 1;
        if !stored.is_empty() {
            core.metrics.events_recorded.inc_by(stored.len() as u64);
            let traces = event_spans(core, poll, &stored);
            super::ingest::enforce_stored(core, &stored, &traces).await?;
        }
    }
    Ok(taken)
}

/// The span of each event a traced poll's records became, a child of the
/// poll's execution; none when the poll is not traced.
fn event_spans(
    core: &Core,
    poll: &PollEnded,
    stored: &[attune_storage::EventRecord],
) -> Vec<Option<super::telemetry::TraceContext>> {
    let (Some(telemetry), Some(parent)) = (
        &core.telemetry,
        poll.trace
            .as_deref()
            .and_then(|t| super::telemetry::parse(t, None)),
    ) else {
        return Vec::new();
    };
    let execution = super::telemetry::execution_span(&parent, poll.execution);
    let now = std::time::SystemTime::now();
    stored
        .iter()
        .map(|event| {
            Some(telemetry.ended(super::telemetry::Ended {
                name: format!("event {}", event.trigger),
                kind: opentelemetry::trace::SpanKind::Internal,
                parent: Some(&execution),
                id: None,
                start: poll.finished_at.map_or(now, super::telemetry::at_ms),
                end: now,
                attributes: vec![
                    opentelemetry::KeyValue::new("attune.trigger", event.trigger.clone()),
                    opentelemetry::KeyValue::new("attune.event.id", event.id),
                    opentelemetry::KeyValue::new("attune.sensor", poll.sensor.clone()),
                ],
                error: None,
            }))
        })
        .collect()
}

/// The records of a successful poll, cut at [`MAX_EVENTS`] with a warning.
fn records(poll: &PollEnded) -> (Vec<Value>, Option<String>) {
    let mut records = match &poll.result {
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    };
    let warning = (records.len() > MAX_EVENTS).then(|| {
        format!(
            "{} records; the first {MAX_EVENTS} became events, the rest were dropped",
            records.len()
        )
    });
    records.truncate(MAX_EVENTS);
    (records, warning)
}

/// How long to wait after this failure: the sensor's interval (a minute for
/// a cron schedule) doubled for each failure in a row, this one included,
/// up to the cap.
async fn backoff(core: &Core, poll: &PollEnded) -> Result<i64, EngineError> {
    let Some(sensor) = core.storage.get_sensor(&poll.sensor).await? else {
        return Ok(0);
    };
    let base = match Plan::from_stored(sensor.every_ms, sensor.schedule.as_deref()) {
        Some(Plan::Interval { every_ms }) => every_ms,
        _ => 60_000,
    };
    let doublings = (sensor.failures + 1).clamp(1, 20) as u32;
    Ok(base
        .saturating_mul(1i64 << doublings)
        .min(MAX_BACKOFF_MS)
        .max(base))
}

/// A page of sensors, by ref.
pub async fn list(
    core: &Core,
    page: &attune_storage::Page,
) -> Result<Vec<attune_storage::SensorRecord>, EngineError> {
    Ok(core.storage.list_sensors(page).await?)
}

/// One sensor with its latest `runs` polls, newest first.
pub async fn get(
    core: &Core,
    r#ref: &str,
    runs: i64,
) -> Result<
    Option<(
        attune_storage::SensorRecord,
        Vec<attune_storage::SensorRunRecord>,
    )>,
    EngineError,
> {
    let Some(sensor) = core.storage.get_sensor(r#ref).await? else {
        return Ok(None);
    };
    let runs = core.storage.sensor_runs(r#ref, runs).await?;
    Ok(Some((sensor, runs)))
}

/// Turns a sensor's polling on or off, and wakes the timer task so the
/// change takes effect at once. `None` when there is no such sensor.
pub async fn set_enabled(
    core: &Core,
    r#ref: &str,
    enabled: bool,
) -> Result<Option<attune_storage::SensorRecord>, EngineError> {
    let sensor = core.storage.set_sensor_enabled(r#ref, enabled).await?;
    if sensor.is_some() {
        core.dispatch.timers.notify_one();
    }
    Ok(sensor)
}
