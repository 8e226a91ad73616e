//! Per-execution overhead of the Attune runtime next to bare wasmtime.
//!
//! `attune/echo`: validate JSON params against the schema, convert to
//! component values, fresh sandboxed instance (scratch dir, capped output,
//! memory cap, epoch deadline), call, convert the result back to JSON.
//! `bare/echo`: what a minimal embedder does with the same component: a store
//! with a WASI context capturing stdout, `InstancePre::instantiate_async`, one
//! call with a hand-built `Val`. Both use the pooling allocator. The ratio of
//! the two medians is the runtime's overhead.
//!
//! `language/*`: the same `echo` action written in Rust (the core pack),
//! Python (`actions/text-py`) and JavaScript (`actions/json-js`), each run
//! through the Attune runtime; `load/*` loads each from the artifact cache;
//! `compile/*` compiles each from scratch. The Python and JavaScript examples
//! must be built first (`tests/run.sh` does, or `attune action build
//! actions/text-py` and `attune action build actions/json-js`); without them
//! their benchmarks are skipped with a note.

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use wasmtime::component::{Component, Linker, ResourceTable, Val};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use attune_runtime::{CacheOutcome, ExecutionRequest, LoadedComponent, Runtime, RuntimeConfig};

struct Bare {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// One `echo` execution through the runtime, its stdout checked.
fn echo(tokio: &tokio::runtime::Runtime, rt: &Runtime, pack: &LoadedComponent) {
    let out = tokio
        .block_on(pack.execute(
            rt,
            ExecutionRequest::new("echo", json!({"message": "hello, world"})),
        ))
        .unwrap();
    assert_eq!(out.stdout.text, "hello, world\n");
}

fn bench(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let core = core_pack();
    let bytes = &core[..];

    // Attune's runtime.
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let (pack, _) = rt.load(bytes).unwrap();
    let mut group = c.benchmark_group("echo");
    group.bench_function("attune", |b| b.iter(|| echo(&tokio, &rt, &pack)));

    // Bare wasmtime on the same component.
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(
        PoolingAllocationConfig::default(),
    ));
    let engine = Engine::new(&config).unwrap();
    let component = Component::new(&engine, bytes).unwrap();
    let mut linker: Linker<Bare> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    // The core pack imports attune:action/log (for `fail`); echo never calls it.
    linker
        .instance("attune:action/log@0.1.0")
        .unwrap()
        .func_new("log", |_, _, _, _| Ok(()))
        .unwrap();
    let pre = linker.instantiate_pre(&component).unwrap();
    let echo = component.get_export_index(None, "echo").unwrap();
    group.bench_function("bare", |b| {
        b.iter(|| {
            tokio.block_on(async {
                let stdout = MemoryOutputPipe::new(1 << 20);
                let wasi = WasiCtxBuilder::new().stdout(stdout.clone()).build();
                let mut store = Store::new(
                    &engine,
                    Bare {
                        wasi,
                        table: ResourceTable::new(),
                    },
                );
                let instance = pre.instantiate_async(&mut store).await.unwrap();
                let func = instance.get_func(&mut store, echo).unwrap();
                let mut results = [Val::Bool(false)];
                func.call_async(
                    &mut store,
                    &[Val::String("hello, world".into())],
                    &mut results,
                )
                .await
                .unwrap();
                assert_eq!(&stdout.contents()[..], b"hello, world\n");
            })
        })
    });
    group.finish();

    c.bench_function("noop/attune", |b| {
        b.iter(|| {
            tokio
                .block_on(pack.execute(&rt, ExecutionRequest::new("noop", json!({}))))
                .unwrap()
        })
    });
}

/// The core pack as the test guests' build left it.
fn core_pack() -> Vec<u8> {
    std::fs::read(std::path::Path::new(attune_test_guests::GUEST_DIR).join("core.wasm")).unwrap()
}

/// The `echo` components by language: (label, bytes).
fn echo_components() -> Vec<(&'static str, Vec<u8>)> {
    let actions = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../actions");
    let mut found = vec![("rust", core_pack())];
    for (label, file) in [
        ("python", "text-py/build/text.wasm"),
        ("js", "json-js/build/json.wasm"),
    ] {
        match std::fs::read(actions.join(file)) {
            Ok(bytes) => found.push((label, bytes)),
            Err(_) => eprintln!(
                "skipping {label}: build actions/{} first (`attune action build actions/{}`)",
                file.split('/').next().unwrap_or_default(),
                file.split('/').next().unwrap_or_default(),
            ),
        }
    }
    found
}

fn by_language(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let components = echo_components();

    let mut group = c.benchmark_group("language");
    for (label, bytes) in &components {
        let (pack, _) = rt.load(bytes).unwrap();
        group.bench_function(*label, |b| b.iter(|| echo(&tokio, &rt, &pack)));
    }
    group.finish();

    let mut group = c.benchmark_group("load");
    for (label, bytes) in &components {
        group.bench_function(*label, |b| {
            b.iter(|| {
                let (_, outcome) = rt.load(bytes).unwrap();
                assert_eq!(outcome, CacheOutcome::Hit);
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    let uncached = Runtime::new(RuntimeConfig::default()).unwrap();
    for (label, bytes) in &components {
        group.bench_function(*label, |b| b.iter(|| uncached.load(bytes).unwrap()));
    }
    group.finish();
}

criterion_group!(benches, bench, by_language);
criterion_main!(benches);
