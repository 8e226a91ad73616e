//! Group commit for posted events.
//!
//! Each `POST /events` hands its event to one writer task and waits. The
//! writer takes everything that arrived meanwhile as one batch: the events in
//! one statement, then every rule's verdict on each, then all enforcements and
//! executions in one transaction of two statements, and one wake-up for the
//! workers. Under load a batch holds many events, so the database sees a few
//! statements per batch instead of several per event; alone, an event waits
//! for nobody.

use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::storage::{EventRecord, NewEvent};

/// Events written together at most.
const MAX_BATCH: usize = 256;

/// What one request gets back: the event and how many executions it queued.
type Reply = Result<(EventRecord, usize), String>;

struct Request {
    trigger: String,
    payload: Value,
    source: Option<String>,
    reply: oneshot::Sender<Reply>,
}

/// The handle requests go through; the writer starts with the first event.
#[derive(Default)]
pub struct Intake(OnceLock<mpsc::UnboundedSender<Request>>);

impl Intake {
    /// Records an event and enforces the rules listening to its trigger;
    /// returns the event and the number of executions queued.
    pub async fn submit(
        &self,
        state: &AppState,
        trigger: &str,
        payload: Value,
        source: Option<&str>,
    ) -> Result<(EventRecord, usize), ApiError> {
        let sender = self.0.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            state.dispatch.spawn(writer(state.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        sender
            .send(Request {
                trigger: trigger.to_string(),
                payload,
                source: source.map(str::to_string),
                reply,
            })
            .map_err(|_| ApiError::Unavailable("the server is shutting down".into()))?;
        match answer.await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(message)) => Err(ApiError::Internal(anyhow::anyhow!(message))),
            Err(_) => Err(ApiError::Unavailable("the server is shutting down".into())),
        }
    }
}

async fn writer(state: AppState, mut rx: mpsc::UnboundedReceiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let requests = std::mem::take(&mut batch);
        state.metrics.event_batches.fetch_add(1, Ordering::Relaxed);
        match write(&state, &requests).await {
            Ok(done) => {
                for (request, done) in requests.into_iter().zip(done) {
                    let _ = request.reply.send(Ok(done));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = requests.len(), "recording events");
                let message = format!("recording events: {e}");
                for request in requests {
                    let _ = request.reply.send(Err(message.clone()));
                }
            }
        }
    }
}

async fn write(
    state: &AppState,
    requests: &[Request],
) -> anyhow::Result<Vec<(EventRecord, usize)>> {
    let new: Vec<NewEvent<'_>> = requests
        .iter()
        .map(|r| NewEvent {
            trigger: &r.trigger,
            payload: &r.payload,
            source: r.source.as_deref(),
        })
        .collect();
    let events = state.storage.insert_events(&new).await?;
    let mut items = Vec::new();
    let mut owners = Vec::new();
    for (n, event) in events.iter().enumerate() {
        let rules = state
            .cache
            .enabled_rules(&state.storage, &event.trigger)
            .await?;
        let planned = super::plan(state, event, rules)
            .await
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        owners.extend(std::iter::repeat_n(n, planned.len()));
        items.extend(planned);
    }
    let mut queued = vec![0; events.len()];
    for (outcome, owner) in state.storage.enforce_many(&items).await?.iter().zip(owners) {
        if outcome.is_some() {
            queued[owner] += 1;
        }
    }
    if queued.iter().any(|&q| q > 0) {
        super::work_queued(state).await;
    }
    Ok(events.into_iter().zip(queued).collect())
}
