//! What `/metrics` shows, kept with `prometheus-client`: counters of what
//! the engine did and histograms of how long it took.
//!
//! Latencies are histograms in seconds, the Prometheus convention:
//! event→running (queueing), running→finished (run time) by action, and HTTP
//! requests by route. Gauges that are cheap to read (queue depth) are set
//! when they are known rather than queried per scrape.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route pattern (`/api/v1/executions/{id}`), or `unmatched`.
    pub route: String,
    /// The response status code.
    pub status: u16,
}

/// Labels of a latency by route (no status: one histogram per route).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The matched route pattern.
    pub route: String,
}

/// Labels of an execution measure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// The action's ref.
    pub action: String,
}

/// Labels of a count of host calls or bytes by kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The action's ref.
    pub action: String,
    /// The kind: `http`, `kv`, `secrets`, `log`; `sent`, `received`.
    pub kind: String,
}

/// Labels of a policy measure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// The policy's name (`ops.deploy#1`, `rule:ops.on_push#1`).
    pub policy: String,
}

/// 100 µs to ~26 s in 19 doubling steps.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

/// 64 KiB (one WebAssembly page) to 4 GiB in powers of two.
fn memory_sizes() -> Histogram {
    Histogram::new(exponential_buckets(65536.0, 2.0, 17))
}

/// 1 to 256 in powers of two.
fn batch_sizes() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 9))
}

/// Every metric the server exports, registered once.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route and status.
    pub http_requests: Family<RouteLabels, Counter>,
    /// HTTP request latency by route.
    pub http_latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    /// Packs registered or upgraded.
    pub packs_registered: Counter,
    /// Executions queued.
    pub executions_requested: Counter,
    /// Events recorded.
    pub events_recorded: Counter,
    /// Events no rule saw: their chain of causes went too deep.
    pub events_held: Counter,
    /// Writes of the event door, each holding one or more events or runs.
    pub event_batches: Counter,
    /// Executions ended, by action.
    pub executions_finished: Family<ActionLabels, Counter>,
    /// From creation (the event) to running.
    pub queued_seconds: Histogram,
    /// From running to finished, by action.
    pub run_seconds: Family<ActionLabels, Histogram, fn() -> Histogram>,
    /// Executions a claim took at once.
    pub claims_per_batch: Histogram,
    /// Guest CPU time per execution, by action.
    pub cpu_seconds: Family<ActionLabels, Histogram, fn() -> Histogram>,
    /// Peak linear memory per execution, by action.
    pub memory_bytes: Family<ActionLabels, Histogram, fn() -> Histogram>,
    /// Host calls, by action and kind.
    pub host_calls: Family<KindLabels, Counter>,
    /// Bytes of outbound request and response bodies, by action and
    /// direction (`sent`, `received`).
    pub outbound_bytes: Family<KindLabels, Counter>,
    /// Executions claimed by this node's embedded worker and not yet begun.
    pub queue_depth: Gauge,
    /// Executions holding a policy's slot, by policy (read per scrape).
    pub policy_running: Family<PolicyLabels, Gauge>,
    /// Executions waiting for a policy, by policy (read per scrape).
    pub policy_waiting: Family<PolicyLabels, Gauge>,
    /// Executions a policy cancelled on this node.
    pub policy_cancelled: Family<PolicyLabels, Counter>,
    /// Executions a policy refused to create on this node.
    pub policy_dropped: Family<PolicyLabels, Counter>,
    /// Policies whose gauges were set, to zero them when they go.
    pub policies_seen: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("attune");
        let m = Metrics {
            http_requests: Family::default(),
            http_latency: Family::new_with_constructor(latency),
            packs_registered: Counter::default(),
            executions_requested: Counter::default(),
            events_recorded: Counter::default(),
            events_held: Counter::default(),
            event_batches: Counter::default(),
            executions_finished: Family::default(),
            queued_seconds: latency(),
            run_seconds: Family::new_with_constructor(latency),
            cpu_seconds: Family::new_with_constructor(latency),
            memory_bytes: Family::new_with_constructor(memory_sizes),
            host_calls: Family::default(),
            outbound_bytes: Family::default(),
            claims_per_batch: batch_sizes(),
            queue_depth: Gauge::default(),
            policy_running: Family::default(),
            policy_waiting: Family::default(),
            policy_cancelled: Family::default(),
            policy_dropped: Family::default(),
            policies_seen: Default::default(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            m.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            m.http_latency.clone(),
        );
        registry.register(
            "packs_registered",
            "Packs registered or upgraded",
            m.packs_registered.clone(),
        );
        registry.register(
            "executions_requested",
            "Executions queued",
            m.executions_requested.clone(),
        );
        registry.register(
            "events_recorded",
            "Events recorded",
            m.events_recorded.clone(),
        );
        registry.register(
            "events_held",
            "Events stored that no rule saw, their chain of causes past --max-chain-depth",
            m.events_held.clone(),
        );
        registry.register(
            "event_batches",
            "Writes of the event door, each holding one or more events or runs",
            m.event_batches.clone(),
        );
        registry.register(
            "executions_finished",
            "Executions ended, by action",
            m.executions_finished.clone(),
        );
        registry.register(
            "execution_queued_seconds",
            "Time from an execution's creation to running",
            m.queued_seconds.clone(),
        );
        registry.register(
            "execution_run_seconds",
            "Time from running to finished, by action",
            m.run_seconds.clone(),
        );
        registry.register(
            "execution_cpu_seconds",
            "Guest CPU time per execution (measured around each poll of the guest), by action",
            m.cpu_seconds.clone(),
        );
        registry.register(
            "execution_peak_memory_bytes",
            "Peak linear memory per execution, by action",
            m.memory_bytes.clone(),
        );
        registry.register(
            "execution_host_calls",
            "Calls executions made to the host, by action and kind",
            m.host_calls.clone(),
        );
        registry.register(
            "execution_outbound_bytes",
            "Bytes of executions' outbound HTTP bodies, by action and direction",
            m.outbound_bytes.clone(),
        );
        registry.register(
            "claims_per_batch",
            "Executions one claim took",
            m.claims_per_batch.clone(),
        );
        registry.register(
            "embedded_queue_depth",
            "Executions the embedded worker claimed and has not begun",
            m.queue_depth.clone(),
        );
        registry.register(
            "policy_running",
            "Executions holding a policy's slot (queued for a worker, claimed or running), by policy",
            m.policy_running.clone(),
        );
        registry.register(
            "policy_waiting",
            "Executions delayed by a policy, by policy",
            m.policy_waiting.clone(),
        );
        registry.register(
            "policy_cancelled",
            "Executions a policy cancelled (on_limit = cancel), by policy",
            m.policy_cancelled.clone(),
        );
        registry.register(
            "policy_dropped",
            "Executions a policy refused to create (on_limit = drop), by policy",
            m.policy_dropped.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The text exposition format (OpenMetrics, which Prometheus reads).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Records that an execution created at `created_at` (Unix ms) is
    /// running now.
    pub fn queued(&self, created_at: i64) {
        let ms = (attune_storage::now_ms() - created_at).max(0);
        self.queued_seconds.observe(ms as f64 / 1000.0);
    }

    /// Records what one execution of `action` used (its `resources` as
    /// stored: `cpu_us`, `peak_memory_bytes`).
    pub fn used(&self, action: &str, resources: &serde_json::Value) {
        let labels = ActionLabels {
            action: action.to_string(),
        };
        if let Some(us) = resources["cpu_us"].as_u64() {
            self.cpu_seconds
                .get_or_create(&labels)
                .observe(us as f64 / 1_000_000.0);
        }
        if let Some(bytes) = resources["peak_memory_bytes"].as_u64() {
            self.memory_bytes
                .get_or_create(&labels)
                .observe(bytes as f64);
        }
        let by_kind = |family: &Family<KindLabels, Counter>, kind: &str, n: Option<u64>| {
            if let Some(n) = n.filter(|n| *n > 0) {
                let labels = KindLabels {
                    action: action.to_string(),
                    kind: kind.to_string(),
                };
                family.get_or_create(&labels).inc_by(n);
            }
        };
        for kind in ["http", "kv", "secrets", "log"] {
            by_kind(
                &self.host_calls,
                kind,
                resources["host_calls"][kind].as_u64(),
            );
        }
        for (kind, field) in [
            ("sent", "outbound_bytes_sent"),
            ("received", "outbound_bytes_received"),
        ] {
            by_kind(&self.outbound_bytes, kind, resources[field].as_u64());
        }
    }

    /// Records one finished execution of `action` that ran for `ms`.
    pub fn finished(&self, action: &str, ms: Option<i64>) {
        let labels = ActionLabels {
            action: action.to_string(),
        };
        self.executions_finished.get_or_create(&labels).inc();
        if let Some(ms) = ms {
            self.run_seconds
                .get_or_create(&labels)
                .observe(ms.max(0) as f64 / 1000.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms_with_their_labels() {
        let m = Metrics::default();
        m.event_batches.inc();
        m.http_requests
            .get_or_create(&RouteLabels {
                route: "/api/v1/events".into(),
                status: 202,
            })
            .inc();
        m.finished("core.noop", Some(3));
        let text = m.render();
        assert!(text.contains("attune_event_batches_total 1"), "{text}");
        assert!(
            text.contains(r#"attune_http_requests_total{route="/api/v1/events",status="202"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"attune_execution_run_seconds_count{action="core.noop"} 1"#),
            "{text}"
        );
    }
}
