//! What the event door's batch inserts cost on the embedded SQLite
//! database: `events/n` inserts `n` events in one statement (six parameters
//! each; the statement the door's transaction begins with), `runs/n` queues
//! `n` direct executions in one (ten each; the door's write for direct
//! runs). The write connection is the one every write waits for, so its
//! time per batch bounds the rate of the whole pipeline.
//!
//! `cargo bench -p attune-storage --bench storage`

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::json;

use attune_storage::{NewEvent, NewExecution, Storage};

/// Batch sizes: a lone entry, a typical batch under load, the largest.
const SIZES: [usize; 3] = [1, 64, 256];

fn run(n: usize) -> NewExecution {
    NewExecution {
        source: Some("bench".into()),
        ..NewExecution::of("core.noop", json!({"n": n}), vec![])
    }
}

fn writes(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let storage: Storage = rt.block_on(Storage::connect(&url)).unwrap();
    let payload = json!({"marker": "bench", "n": 1});
    let mut group = c.benchmark_group("storage");
    for n in SIZES {
        let events: Vec<NewEvent<'_>> = (0..n)
            .map(|_| NewEvent {
                source: Some("bench"),
                ..NewEvent::of("core.manual", &payload)
            })
            .collect();
        group.bench_with_input(BenchmarkId::new("events", n), &events, |b, events| {
            b.iter(|| rt.block_on(storage.insert_events(events)).unwrap());
        });
        let runs: Vec<NewExecution> = (0..n).map(run).collect();
        group.bench_with_input(BenchmarkId::new("runs", n), &runs, |b, runs| {
            b.iter(|| rt.block_on(storage.insert_executions(runs)).unwrap());
        });
    }
    group.finish();
}

criterion_group!(benches, writes);
criterion_main!(benches);
