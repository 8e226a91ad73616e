//! Tracing: one OpenTelemetry trace per cause (a request, a timer tick, a
//! sensor poll) through its event, its rules' enforcements, the executions
//! they queue, their runs on workers and each host call, and workflow
//! tasks under their workflow.
//!
//! Off unless the server was given an exporter ([`Telemetry`] on
//! [`Core`](crate::Core)); then every span is built through the
//! OpenTelemetry SDK, whose sampler and batch exporter the host sets up.
//!
//! An execution's span begins when it is queued and ends when it ends,
//! perhaps on another node, and its run may be on a standalone worker: so
//! its span id (and its run's) is derived from the trace id and the
//! execution id, and the span is emitted once, when it ends, by whoever sees
//! that. The execution's row keeps only the `traceparent` of its parent.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceId, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracer, SdkTracerProvider};
use sha2::{Digest, Sha256};

pub use opentelemetry::trace::SpanContext as TraceContext;
pub use opentelemetry_sdk::trace::Span as LiveSpan;

thread_local! {
    /// The id the next span built on this thread takes (see [`ChosenIds`]).
    static NEXT_SPAN_ID: Cell<Option<SpanId>> = const { Cell::new(None) };
}

/// Random ids, except for a span built by [`Telemetry::ended`] with an id
/// derived beforehand: the SDK asks its id generator once per span, on the
/// thread that builds it.
#[derive(Debug, Default)]
pub struct ChosenIds(RandomIdGenerator);

impl IdGenerator for ChosenIds {
    fn new_trace_id(&self) -> TraceId {
        self.0.new_trace_id()
    }

    fn new_span_id(&self) -> SpanId {
        NEXT_SPAN_ID
            .with(Cell::take)
            .unwrap_or_else(|| self.0.new_span_id())
    }
}

/// A tracer provider builder with the id generator spans need; the host
/// adds its exporter and resource.
pub fn provider_builder() -> opentelemetry_sdk::trace::TracerProviderBuilder {
    SdkTracerProvider::builder().with_id_generator(ChosenIds::default())
}

/// The tracing of a server or a standalone worker.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

/// A finished span to emit.
pub struct Ended<'a> {
    pub name: String,
    pub kind: SpanKind,
    /// Its parent; `None`: a root.
    pub parent: Option<&'a SpanContext>,
    /// Its id, when derived beforehand.
    pub id: Option<SpanId>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    /// Its failure (`error.type`), if it failed.
    pub error: Option<String>,
}

impl Telemetry {
    /// Tracing through `provider` (built from [`provider_builder`]).
    pub fn new(provider: SdkTracerProvider) -> Self {
        let tracer = provider.tracer("attune");
        Self { provider, tracer }
    }

    /// Exports what is buffered and stops.
    pub fn shutdown(&self) {
        let _ = self.provider.force_flush();
        let _ = self.provider.shutdown();
    }

    /// Exports what is buffered now.
    pub fn flush(&self) {
        let _ = self.provider.force_flush();
    }

    /// Starts a span that ends when the caller ends it (or drops it).
    pub fn start(
        &self,
        name: impl Into<String>,
        kind: SpanKind,
        parent: Option<&SpanContext>,
        attributes: Vec<KeyValue>,
    ) -> LiveSpan {
        self.tracer
            .span_builder(name.into())
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &context_of(parent))
    }

    /// Emits a span that has already ended; its context.
    pub fn ended(&self, span: Ended<'_>) -> SpanContext {
        /// Forgets the chosen id however the build ends, so no other span
        /// on this thread takes it.
        struct Chosen;
        impl Drop for Chosen {
            fn drop(&mut self) {
                NEXT_SPAN_ID.with(|c| c.set(None));
            }
        }
        NEXT_SPAN_ID.with(|c| c.set(span.id));
        let chosen = Chosen;
        let mut live = self
            .tracer
            .span_builder(span.name)
            .with_kind(span.kind)
            .with_start_time(span.start)
            .with_attributes(span.attributes)
            .start_with_context(&self.tracer, &context_of(span.parent));
        drop(chosen);
        if let Some(error) = span.error {
            live.set_attribute(KeyValue::new("error.type", error.clone()));
            live.set_status(Status::error(error));
        }
        let context = live.span_context().clone();
        live.end_with_timestamp(span.end);
        context
    }
}

fn context_of(parent: Option<&SpanContext>) -> Context {
    match parent {
        Some(p) => Context::new().with_remote_span_context(p.clone()),
        None => Context::new(),
    }
}

tokio::task_local! {
    /// The span of the request being served, set around its handler by the
    /// API's tracing layer.
    pub static REQUEST: SpanContext;
}

/// The span of the request this task serves, if it is traced.
pub fn current() -> Option<SpanContext> {
    REQUEST.try_with(Clone::clone).ok()
}

/// The span context a W3C `traceparent` (and `tracestate`) header names,
/// when it is well formed.
pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_string(), traceparent.to_string());
    if let Some(state) = tracestate {
        carrier.insert("tracestate".to_string(), state.to_string());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.clone())
}

/// The W3C `traceparent` header of `context`.
pub fn header(context: &SpanContext) -> String {
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&context_of(Some(context)), &mut carrier);
    carrier.remove("traceparent").unwrap_or_default()
}

/// The span of execution `id` in the trace its `traceparent` (its parent's)
/// names, with the parent's flags.
pub fn execution_span(parent: &SpanContext, id: i64) -> SpanContext {
    derived(parent, &[b"execution", &id.to_le_bytes()])
}

/// The span of attempt `attempt` of execution `id` running on a worker.
pub fn run_span(parent: &SpanContext, id: i64, attempt: i64) -> SpanContext {
    derived(parent, &[b"run", &id.to_le_bytes(), &attempt.to_le_bytes()])
}

/// A span context in `parent`'s trace whose id is derived from the trace id
/// and `parts`, so every node derives the same one.
fn derived(parent: &SpanContext, parts: &[&[u8]]) -> SpanContext {
    let mut digest = Sha256::new();
    digest.update(parent.trace_id().to_bytes());
    for p in parts {
        digest.update((p.len() as u64).to_le_bytes());
        digest.update(p);
    }
    let bytes: [u8; 8] = digest.finalize()[..8].try_into().unwrap_or([1; 8]);
    let id = match SpanId::from_bytes(bytes) {
        SpanId::INVALID => SpanId::from_bytes([1; 8]),
        id => id,
    };
    SpanContext::new(
        parent.trace_id(),
        id,
        parent.trace_flags(),
        false,
        parent.trace_state().clone(),
    )
}

/// The span of execution `e`, when it is traced.
pub fn execution_of(e: &attune_storage::ExecutionRecord) -> Option<SpanContext> {
    let parent = parse(e.trace.as_deref()?, None)?;
    Some(execution_span(&parent, e.id))
}

impl Telemetry {
    /// Emits the spans of ended executions: each from its queueing to its
    /// end, under the span that caused it, with its time queued as a child.
    pub fn executions_ended(&self, ended: &[attune_storage::ExecutionRecord]) {
        for e in ended {
            let (Some(parent), Some(finished)) = (
                e.trace.as_deref().and_then(|t| parse(t, None)),
                e.finished_at,
            ) else {
                continue;
            };
            let own = execution_span(&parent, e.id);
            let mut attributes = vec![
                KeyValue::new("attune.action", e.action.clone()),
                KeyValue::new("attune.execution.id", e.id),
                KeyValue::new("attune.execution.status", e.status.as_str()),
                KeyValue::new("attune.attempt", e.attempt),
            ];
            if let Some(rule) = &e.rule {
                attributes.push(KeyValue::new("attune.rule", rule.clone()));
            }
            if let Some(task) = &e.task {
                attributes.push(KeyValue::new("attune.task", task.clone()));
            }
            let failed = (e.status != attune_storage::ExecutionStatus::Succeeded)
                .then(|| e.status.as_str().to_string());
            self.ended(Ended {
                name: format!("execution {}", e.action),
                kind: SpanKind::Internal,
                parent: Some(&parent),
                id: Some(own.span_id()),
                start: at_ms(e.created_at),
                end: at_ms(finished),
                attributes,
                error: failed,
            });
            if let Some(started) = e.started_at {
                self.ended(Ended {
                    name: "queued".into(),
                    kind: SpanKind::Internal,
                    parent: Some(&own),
                    id: None,
                    start: at_ms(e.created_at),
                    end: at_ms(started),
                    attributes: vec![KeyValue::new("attune.execution.id", e.id)],
                    error: None,
                });
            }
        }
    }

    /// Emits a run's span (`run`, derived beforehand) from `began` to now,
    /// with a child per host call.
    pub fn run_ended(
        &self,
        run: &SpanContext,
        parent: &SpanContext,
        began: SystemTime,
        attributes: Vec<KeyValue>,
        error: Option<String>,
        calls: &[attune_runtime::CallSpan],
    ) {
        let name = attributes
            .iter()
            .find(|kv| kv.key.as_str() == "attune.action")
            .map_or_else(|| "run".to_string(), |kv| format!("run {}", kv.value));
        let own = self.ended(Ended {
            name,
            kind: SpanKind::Internal,
            parent: Some(parent),
            id: Some(run.span_id()),
            start: began,
            end: SystemTime::now(),
            attributes,
            error,
        });
        for call in calls {
            let start = began + Duration::from_micros(call.start_us);
            let kind = if call.kind == "http" {
                SpanKind::Client
            } else {
                SpanKind::Internal
            };
            self.ended(Ended {
                name: call.name.clone(),
                kind,
                parent: Some(&own),
                id: None,
                start,
                end: start + Duration::from_micros(call.duration_us),
                attributes: call.attributes.iter().map(attribute).collect(),
                error: call.error.clone(),
            });
        }
    }
}

/// A host call's attribute, numbers as numbers.
fn attribute((key, value): &(String, String)) -> KeyValue {
    const NUMERIC: [&str; 3] = [
        "server.port",
        "http.response.status_code",
        "attune.http.bytes_received",
    ];
    match value.parse::<i64>() {
        Ok(n) if NUMERIC.contains(&key.as_str()) => KeyValue::new(key.clone(), n),
        _ => KeyValue::new(key.clone(), value.clone()),
    }
}

/// Unix milliseconds as a time.
pub fn at_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_round_trip_and_derived_spans_stay_in_the_trace() {
        let header_in = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let parent = parse(header_in, Some("vendor=x")).expect("valid");
        assert_eq!(header(&parent), header_in);
        assert_eq!(parent.trace_state().get("vendor"), Some("x"));
        assert!(parse("00-zz-yy-01", None).is_none());
        assert!(
            parse(
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                None
            )
            .is_none()
        );

        let e = execution_span(&parent, 7);
        assert_eq!(e.trace_id(), parent.trace_id());
        assert_ne!(e.span_id(), parent.span_id());
        assert_eq!(
            e,
            execution_span(&parent, 7),
            "every node derives the same id"
        );
        assert_ne!(e.span_id(), execution_span(&parent, 8).span_id());
        assert_ne!(run_span(&e, 7, 1).span_id(), run_span(&e, 7, 2).span_id());
        assert!(e.is_sampled());
    }

    /// Keeps what it is given.
    #[derive(Debug, Clone, Default)]
    struct Kept(std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

    impl opentelemetry_sdk::trace::SpanExporter for Kept {
        async fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    #[test]
    fn a_span_emitted_after_the_fact_takes_its_derived_id() {
        let exporter = Kept::default();
        let provider = provider_builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let telemetry = Telemetry::new(provider);
        let parent = parse(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            None,
        )
        .unwrap();
        let chosen = execution_span(&parent, 42);
        let start = at_ms(1_000);
        let got = telemetry.ended(Ended {
            name: "execution core.noop".into(),
            kind: SpanKind::Internal,
            parent: Some(&parent),
            id: Some(chosen.span_id()),
            start,
            end: at_ms(1_500),
            attributes: vec![KeyValue::new("attune.execution.id", 42)],
            error: Some("failed".into()),
        });
        assert_eq!(got.span_id(), chosen.span_id());
        // The next span gets a random id again.
        let other = telemetry.ended(Ended {
            name: "other".into(),
            kind: SpanKind::Internal,
            parent: Some(&parent),
            id: None,
            start,
            end: start,
            attributes: vec![],
            error: None,
        });
        assert_ne!(other.span_id(), chosen.span_id());
        let spans = exporter.0.lock().unwrap().clone();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].span_context.span_id(), chosen.span_id());
        assert_eq!(spans[0].parent_span_id, parent.span_id());
        assert_eq!(spans[0].start_time, start);
    }
}
