//! What Attune's outbound HTTP hook costs per request, next to wasmtime's
//! default `wasi:http` sender.
//!
//! The `actions/fetch` guest sends `n` GETs to a loopback server (one
//! connection each, `connection: close`) in one execution:
//! - `attune/n`: through the Attune runtime, so every request passes the
//!   send hook — grant match, the host's own DNS resolution and address
//!   check, clamped timeouts, byte and request caps, a log line;
//! - `recorded/n`: the same with the execution's journal recorded (each
//!   request fingerprinted, each response kept; clocks and random numbers
//!   through the journal);
//! - `bare/n`: a minimal embedder linking `wasi:http` with wasmtime's
//!   default hooks (no checks).
//!
//! Each pair runs with n = 1 and n = 41, so `(t(41) - t(1)) / 40` is one
//! request's cost with the per-execution cost taken out; the difference of
//! the two slopes is the hook's overhead per request, and `recorded` minus
//! `attune` what recording adds to each.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmtime::component::{Component, Linker, ResourceTable, Val};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView, default_hooks};

use attune_runtime::http::{AllowedHosts, OutboundConfig};
use attune_runtime::{ExecutionRequest, JournalMode, Runtime, RuntimeConfig, Status};

/// Request counts per execution.
const COUNTS: [u32; 2] = [1, 41];

struct Bare {
    wasi: WasiCtx,
    http: WasiHttpCtx,
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

impl WasiHttpView for Bare {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: default_hooks(),
        }
    }
}

/// A loopback HTTP/1.1 server answering `hello` on every connection.
async fn server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                    )
                    .await;
            });
        }
    });
    port
}

fn bench(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let port = tokio.block_on(server());
    let url = format!("http://127.0.0.1:{port}/");
    let path = std::path::Path::new(attune_test_guests::GUEST_DIR).join("fetch.wasm");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));

    let mut group = c.benchmark_group("outbound");
    group.measurement_time(Duration::from_secs(8));

    // Through Attune's hook.
    let rt = Runtime::new(RuntimeConfig {
        outbound: OutboundConfig {
            allow_private: true,
            ..OutboundConfig::default()
        },
        ..RuntimeConfig::default()
    })
    .unwrap();
    let (pack, _) = rt.load(&bytes).unwrap();
    let allowed = std::sync::Arc::new(AllowedHosts::parse(&["http://127.0.0.1:*".into()]).unwrap());
    for (name, journal) in [
        ("attune", JournalMode::Off),
        (
            "recorded",
            JournalMode::Record {
                cap: attune_runtime::journal::DEFAULT_CAP,
            },
        ),
    ] {
        for n in COUNTS {
            group.bench_function(format!("{name}/{n}"), |b| {
                b.iter(|| {
                    let mut request =
                        ExecutionRequest::new("get-many", json!({"url": url, "times": n}));
                    request.allowed_hosts = allowed.clone();
                    request.journal = journal.clone();
                    let out = tokio.block_on(pack.execute(&rt, request)).unwrap();
                    assert_eq!(out.status, Status::Succeeded, "{:?}", out.error);
                })
            });
        }
    }

    // Wasmtime's default sender, no checks.
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(
        PoolingAllocationConfig::default(),
    ));
    let engine = Engine::new(&config).unwrap();
    let component = Component::new(&engine, &bytes).unwrap();
    let mut linker: Linker<Bare> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).unwrap();
    let pre = linker.instantiate_pre(&component).unwrap();
    let export = component.get_export_index(None, "get-many").unwrap();
    for n in COUNTS {
        group.bench_function(format!("bare/{n}"), |b| {
            b.iter(|| {
                tokio.block_on(async {
                    let mut store = Store::new(
                        &engine,
                        Bare {
                            wasi: WasiCtxBuilder::new().build(),
                            http: WasiHttpCtx::new(),
                            table: ResourceTable::new(),
                        },
                    );
                    let instance = pre.instantiate_async(&mut store).await.unwrap();
                    let func = instance.get_func(&mut store, export).unwrap();
                    let mut results = [Val::Bool(false)];
                    func.call_async(
                        &mut store,
                        &[Val::String(url.clone()), Val::U32(n)],
                        &mut results,
                    )
                    .await
                    .unwrap();
                    assert!(
                        matches!(&results[0], Val::Result(Ok(_))),
                        "{:?}",
                        results[0]
                    );
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
