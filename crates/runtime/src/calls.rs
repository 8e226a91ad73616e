//! What a guest asked of the host during one run: each call counted by
//! kind, the bytes its outbound requests sent and received, and a span per
//! call (start and duration from the run's start, attributes, error) that
//! the engine turns into trace spans and the console into a waterfall.
//!
//! Span attributes follow the OpenTelemetry semantic conventions and never
//! hold a secret's value, a key-value key or value, or a URL's path or
//! query: only a method, a host, a port, a status, a size, an operation's
//! name or a secret's name.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Spans kept per run; calls past it are counted, not kept.
pub const MAX_SPANS: usize = 256;

/// Host calls of one run by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct HostCalls {
    /// Outbound HTTP requests (denied ones included).
    pub http: u32,
    /// Key-value calls that reached the store.
    pub kv: u32,
    /// Secret reads (granted or not).
    pub secrets: u32,
    /// Lines logged through `attune:action/log` (dropped ones included).
    pub log: u32,
}

/// One host call as a span, timed from the run's start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CallSpan {
    /// `http`, `kv` or `secret`.
    pub kind: String,
    /// `GET example.com`, `kv increment`, `secret api_token`.
    pub name: String,
    /// Microseconds from the run's start to the call.
    pub start_us: u64,
    /// Microseconds the call took (for HTTP, until its body ended).
    pub duration_us: u64,
    /// Attributes by semantic-convention name, as strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<(String, String)>,
    /// Why it failed (`error.type`), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug)]
struct Inner {
    started: Instant,
    counts: HostCalls,
    sent: u64,
    received: u64,
    spans: Vec<CallSpan>,
}

/// The record of one run's host calls, shared by the host interfaces.
#[derive(Debug, Clone)]
pub struct Calls(Arc<Mutex<Inner>>);

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Calls {
    /// A record for a run that started at `started`.
    pub fn new(started: Instant) -> Self {
        Self(Arc::new(Mutex::new(Inner {
            started,
            counts: HostCalls::default(),
            sent: 0,
            received: 0,
            spans: Vec::new(),
        })))
    }

    /// Counts one call of `kind` (its span comes with [`Calls::span`]).
    pub fn count(&self, kind: fn(&mut HostCalls) -> &mut u32) {
        let mut inner = lock(&self.0);
        let n = kind(&mut inner.counts);
        *n = n.saturating_add(1);
    }

    /// Keeps the span of a call that began at `began` and ends now.
    pub fn span(
        &self,
        kind: &str,
        name: String,
        began: Instant,
        attributes: Vec<(String, String)>,
        error: Option<String>,
    ) {
        let mut inner = lock(&self.0);
        if inner.spans.len() >= MAX_SPANS {
            return;
        }
        let micros = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let span = CallSpan {
            kind: kind.into(),
            name,
            start_us: micros(began.saturating_duration_since(inner.started)),
            duration_us: micros(began.elapsed()),
            attributes,
            error,
        };
        inner.spans.push(span);
    }

    /// Adds to the bytes outbound requests sent and received.
    pub fn bytes(&self, sent: u64, received: u64) {
        let mut inner = lock(&self.0);
        inner.sent = inner.sent.saturating_add(sent);
        inner.received = inner.received.saturating_add(received);
    }

    /// The counts, the bytes sent and received, and the spans in start
    /// order.
    pub fn finish(&self) -> (HostCalls, u64, u64, Vec<CallSpan>) {
        let mut inner = lock(&self.0);
        let mut spans = std::mem::take(&mut inner.spans);
        spans.sort_by_key(|s| s.start_us);
        (inner.counts, inner.sent, inner.received, spans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_call_and_keeps_spans_up_to_the_cap_in_start_order() {
        let started = Instant::now();
        let calls = Calls::new(started);
        let later = started + std::time::Duration::from_millis(5);
        calls.span("kv", "kv get".into(), later, vec![], None);
        calls.span("secret", "secret token".into(), started, vec![], None);
        for _ in 0..MAX_SPANS + 10 {
            calls.count(|c| &mut c.kv);
            calls.span("kv", "kv get".into(), started, vec![], None);
        }
        calls.bytes(3, 7);
        calls.bytes(1, 1);
        let (counts, sent, received, spans) = calls.finish();
        assert_eq!(counts.kv, MAX_SPANS as u32 + 10);
        assert_eq!((sent, received), (4, 8));
        assert_eq!(spans.len(), MAX_SPANS);
        assert_eq!(spans[0].name, "secret token");
        assert!(spans.iter().any(|s| s.start_us >= 5_000));
    }
}
