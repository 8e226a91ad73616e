//! An execution's timeline for its page: the span waterfall drawn from what
//! its record holds (queued, running, each host call its worker timed, and
//! a workflow's tasks), so no tracing backend is needed to see it.

use serde::Serialize;
use serde_json::Value;

use attune_storage::{ExecutionRecord, now_ms};

/// One bar of the waterfall.
#[derive(Debug, Serialize)]
pub struct Bar {
    /// What it is: `queued`, `running`, a call's name, a task's name.
    pub label: String,
    /// `queued`, `running`, `http`, `kv`, `secret`, `task`.
    pub kind: String,
    /// Where it starts and how wide it is, in % of the whole.
    pub left: f64,
    pub width: f64,
    /// How long it took, in ms.
    pub ms: f64,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Indented one step: a call within the run.
    pub nested: bool,
}

/// The bars of `e` and its `tasks` (a workflow's), in time order; none
/// before it started.
pub fn bars(e: &ExecutionRecord, tasks: &[ExecutionRecord]) -> Vec<Bar> {
    let Some(started) = e.started_at else {
        return Vec::new();
    };
    let origin = e.created_at as f64;
    let end = e.finished_at.unwrap_or_else(now_ms) as f64;
    let whole = (end - origin).max(1.0);
    let pct = |at_ms: f64| ((at_ms - origin) / whole * 100.0).clamp(0.0, 100.0);
    let bar = |label: String, kind: &str, from: f64, to: f64, error, nested| Bar {
        left: pct(from),
        width: (pct(to) - pct(from)).max(0.3),
        ms: (to - from).max(0.0),
        label,
        kind: kind.into(),
        error,
        nested,
    };
    let mut out = vec![
        bar(
            "queued".into(),
            "queued",
            origin,
            started as f64,
            None,
            false,
        ),
        bar(
            "running".into(),
            "running",
            started as f64,
            end,
            None,
            false,
        ),
    ];
    let calls = e
        .resources
        .as_ref()
        .and_then(|r| r["calls"].as_array())
        .into_iter()
        .flatten();
    for call in calls {
        let at = started as f64 + call["start_us"].as_f64().unwrap_or(0.0) / 1000.0;
        let took = call["duration_us"].as_f64().unwrap_or(0.0) / 1000.0;
        out.push(bar(
            call["name"].as_str().unwrap_or_default().to_string(),
            call["kind"].as_str().unwrap_or("call"),
            at,
            at + took,
            call["error"].as_str().map(str::to_string),
            true,
        ));
    }
    for t in tasks {
        let from = t.started_at.unwrap_or(t.created_at) as f64;
        let to = t.finished_at.map_or(end, |f| f as f64);
        let failed = matches!(t.status.as_str(), "failed" | "timed_out" | "abandoned")
            .then(|| t.status.as_str().to_string());
        let label = t.task.clone().unwrap_or_else(|| t.action.clone());
        out.push(bar(label, "task", from, to, failed, true));
    }
    out
}

/// The `p`-th percentile (0–100) of `values`, nearest rank; `None` when
/// empty.
pub fn percentile(values: &mut [u64], p: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

/// The p50 and p99 of a figure of `resources` (`cpu_us`,
/// `peak_memory_bytes`) over the executions given.
pub fn spread(resources: &[Value], figure: &str) -> Option<(u64, u64)> {
    let mut values: Vec<u64> = resources
        .iter()
        .filter_map(|r| r[figure].as_u64())
        .collect();
    Some((
        percentile(&mut values, 50.0)?,
        percentile(&mut values, 99.0)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&mut v, 50.0), Some(50));
        assert_eq!(percentile(&mut v, 99.0), Some(99));
        assert_eq!(percentile(&mut [7], 99.0), Some(7));
        assert_eq!(percentile(&mut [], 50.0), None);
        let used = [
            serde_json::json!({"cpu_us": 10}),
            serde_json::json!({"cpu_us": 30}),
            serde_json::json!({}),
        ];
        assert_eq!(spread(&used, "cpu_us"), Some((10, 30)));
    }
}
