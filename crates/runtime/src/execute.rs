//! Running one action in a fresh sandboxed instance.
//!
//! Per execution: params validated against the schema (all errors, with JSON
//! pointers) and converted before any guest code runs; a new `Store` with a
//! WASI context that has no environment, no network and only an empty scratch
//! directory; capped stdout/stderr; a memory cap; and a wall-clock deadline
//! enforced twice — epoch interruption makes a spinning guest yield every
//! tick, and a tokio timeout drops the call whether the guest spins or sleeps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use wasmtime::Store;
use wasmtime::component::{ResourceTable, Val};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::component::Returns;
use super::host::{ExecutionContext, HostState, LogLine, MemoryCap};
use super::http::{AllowedHosts, Outbound};
use super::journal::kv::JournaledKv;
use super::journal::{Divergence, FORMAT, Journal, JournalMode, Tape, clocks};
use super::kv::KvState;
use super::log::LogState;
use super::output::{CappedPipe, Captured};
use super::scratch::quota::ScratchQuota;
use super::secrets::{SecretSet, SecretsState};
use super::values::{self, PathError};
use super::{Limits, LoadedComponent, Runtime};
use wasmtime_wasi_http::WasiHttpCtx;

/// Where the scratch directory appears inside the guest.
pub const SCRATCH_GUEST_PATH: &str = "/scratch";

/// How many bytes a guest may hand the host in one host call.
const HOSTCALL_FUEL: usize = 16 << 20;

/// How an execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The action returned normally (an `ok` for `result` returns).
    Succeeded,
    /// The action returned `err`, trapped, or ran out of memory.
    Failed,
    /// The deadline passed first.
    TimedOut,
}

impl Status {
    /// The status name used in JSON and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ExecutionRequest {
    /// The action's name within the pack.
    pub action: String,
    /// JSON object of parameters.
    pub params: Value,
    /// Limits; `None` uses the runtime's defaults. Clamped to the maximum.
    pub limits: Option<Limits>,
    /// Identity shown to the guest through `attune:action/context`.
    pub context: ExecutionContext,
    /// Where it may send HTTP requests (its pack's grant); nowhere when empty.
    pub allowed_hosts: Arc<AllowedHosts>,
    /// The secrets it may read, each value redacted from its outcome.
    pub secrets: Arc<SecretSet>,
    /// Its pack's key-value store; every call fails without one.
    pub kv: KvState,
    /// Pipes to capture stdout and stderr into, so the caller can watch
    /// output while the guest runs; fresh ones when `None`. Their capacity
    /// is the caller's; `limits.output_bytes` applies to fresh ones.
    pub output: Option<(CappedPipe, CappedPipe)>,
    /// Whether to record a journal, or to answer from one.
    pub journal: JournalMode,
    /// Its pack's quotas.
    pub quotas: super::Quotas,
    /// The W3C `traceparent` its outbound requests carry, when it is
    /// traced and its grant propagates it.
    pub traceparent: Option<String>,
}

impl ExecutionRequest {
    /// A request with default limits and a local context.
    pub fn new(action: impl Into<String>, params: Value) -> Self {
        let action = action.into();
        Self {
            allowed_hosts: Arc::default(),
            secrets: Arc::default(),
            kv: KvState::default(),
            context: ExecutionContext {
                id: "local".into(),
                action: action.clone(),
                attempt: 1,
                depth: 0,
            },
            action,
            params,
            limits: None,
            output: None,
            journal: JournalMode::Off,
            quotas: super::Quotas::default(),
            traceparent: None,
        }
    }
}

/// How an execution went: everything kept on its record.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Final status.
    pub status: Status,
    /// The returned value (`ok` payload for `result` returns) when succeeded.
    pub result: Option<Value>,
    /// The `err` payload, or a message for traps and timeouts, when not succeeded.
    pub error: Option<Value>,
    /// Captured stdout.
    #[serde(skip)]
    pub stdout: Captured,
    /// Captured stderr.
    #[serde(skip)]
    pub stderr: Captured,
    /// Lines logged through `attune:action/log`.
    pub logs: Vec<LogLine>,
    /// Log lines dropped past the cap.
    pub logs_dropped: u64,
    /// Wall-clock time from instantiation to return.
    #[serde(skip)]
    pub duration: Duration,
    /// What it used: CPU in the guest, peak memory, requests, output.
    pub resources: super::Resources,
    /// Its journal, when it was recorded.
    #[serde(skip)]
    pub journal: Option<Journal>,
    /// Where a replay first asked for what its journal did not hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub divergence: Option<Divergence>,
    /// Its host calls as spans, in start order (at most
    /// [`crate::calls::MAX_SPANS`]).
    #[serde(skip)]
    pub calls: Vec<crate::calls::CallSpan>,
}

impl Outcome {
    /// Replaces every value of `secrets` in what the run left behind
    /// (stdout and stderr are redacted as they are captured, the result and
    /// error before they are measured).
    fn redact(&mut self, secrets: &SecretSet) {
        if secrets.values().next().is_none() {
            return;
        }
        if let Some(d) = &mut self.divergence {
            d.expected = secrets.redact_url(&d.expected).into_owned();
            d.got = secrets.redact_url(&d.got).into_owned();
        }
        for line in &mut self.logs {
            line.message = secrets.redact(&line.message).into_owned();
            for (k, v) in &mut line.fields {
                *k = secrets.redact(k).into_owned();
                *v = secrets.redact(v).into_owned();
            }
        }
        // The spans hold nothing the guest chose freely (a standard method,
        // a masked host, a granted name), and are redacted all the same.
        for call in &mut self.calls {
            call.name = secrets.redact(&call.name).into_owned();
            for (_, v) in &mut call.attributes {
                *v = secrets.redact(v).into_owned();
            }
            if let Some(e) = &mut call.error {
                *e = secrets.redact(e).into_owned();
            }
        }
    }
}

/// Why an execution did not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// No such action in the pack.
    #[error("no action `{name}` in this component; it has: {available}")]
    UnknownAction {
        /// The name asked for.
        name: String,
        /// Comma-separated list of the actions it does have.
        available: String,
    },
    /// The parameters do not fit the action's schema; the guest was not called.
    #[error("invalid parameters: {}", describe(.0))]
    InvalidParams(Vec<PathError>),
    /// The sandbox could not be prepared (host-side problem).
    #[error("could not prepare the sandbox: {0}")]
    Sandbox(String),
}

fn describe(errors: &[PathError]) -> String {
    errors
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                if e.path.is_empty() { "/" } else { &e.path },
                e.message
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl LoadedComponent {
    /// Validates, converts and runs one action in a fresh instance.
    pub async fn execute(
        &self,
        runtime: &Runtime,
        request: ExecutionRequest,
    ) -> Result<Outcome, ExecuteError> {
        let action = self
            .action(&request.action)
            .ok_or_else(|| ExecuteError::UnknownAction {
                name: request.action.clone(),
                available: self
                    .actions()
                    .iter()
                    .map(|a| a.info().name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let args = action
            .check(&request.params)
            .map_err(ExecuteError::InvalidParams)?;
        let limits = runtime.clamp(request.limits.unwrap_or(runtime.config().default_limits));
        let quotas = request.quotas;
        // A quota below the server's limit is the one a guest meets.
        let memory_quota = quotas.max_memory.filter(|q| *q < limits.memory_bytes);

        // A full pool makes the execution wait, never fail; its clock starts
        // once it has a slot.
        let _slot = runtime.slot().await;
        let scratch = runtime
            .scratch()
            .take()
            .map_err(|e| ExecuteError::Sandbox(format!("scratch directory: {e}")))?;
        let (stdout, stderr) = request.output.clone().unwrap_or_else(|| {
            (
                request.secrets.pipe(limits.output_bytes),
                request.secrets.pipe(limits.output_bytes),
            )
        });
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .arg(&request.context.action)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .preopened_dir(scratch.path(), SCRATCH_GUEST_PATH, FsPerms::ReadWrite)
            .map_err(|e| ExecuteError::Sandbox(format!("scratch directory: {e:#}")))?;
        wasi.initial_cwd(SCRATCH_GUEST_PATH);
        let (tape, seed) = match &request.journal {
            JournalMode::Off => (None, String::new()),
            JournalMode::Record { cap } => (Some(Tape::recording(*cap)), clocks::fresh_seed()),
            JournalMode::Replay(j) => (Some(Tape::replaying(j)), j.seed.clone()),
        };
        if let Some(tape) = &tape {
            clocks::install(&mut wasi, tape, &seed);
        }

        let started = Instant::now();
        let calls = crate::calls::Calls::new(started);
        let secrets = request.secrets;
        let depth = request.context.depth;
        let kv = match &tape {
            Some(tape) => KvState(Some(Arc::new(JournaledKv {
                inner: request.kv.0.clone(),
                tape: tape.clone(),
                secrets: secrets.clone(),
            }))),
            None => request.kv,
        };
        let kv = KvState(kv.0.map(|inner| {
            Arc::new(crate::kv::CountedKv {
                inner,
                calls: calls.clone(),
            }) as Arc<dyn crate::kv::KvStore>
        }));
        let mut outbound = Outbound::new(
            request.allowed_hosts,
            runtime.outbound(),
            started,
            secrets.clone(),
            depth,
        );
        if let Some(tape) = &tape {
            outbound = outbound.with_tape(tape.clone());
        }
        outbound.set_quota(quotas.max_outbound_requests);
        let outbound = outbound
            .with_calls(calls.clone())
            .with_traceparent(request.traceparent.as_deref());
        let mut store = Store::new(
            runtime.engine(),
            HostState {
                wasi: wasi.build(),
                scratch_quota: ScratchQuota::new(
                    scratch.path(),
                    runtime.config().scratch_quota_bytes,
                    started,
                ),
                table: ResourceTable::new(),
                limits: MemoryCap {
                    memory_bytes: memory_quota.unwrap_or(limits.memory_bytes),
                    table_elements: 100_000,
                    hit: false,
                    peak: 0,
                    refused: 0,
                },
                context: request.context,
                secrets: SecretsState(secrets.clone(), tape.clone(), Some(calls.clone())),
                kv,
                log: LogState::new(started),
                http: WasiHttpCtx::new(),
                outbound,
            },
        );
        store.limiter(|s| &mut s.limits);
        store.set_hostcall_fuel(HOSTCALL_FUEL);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);

        let result_count = match action.returns {
            Returns::Nothing => 0,
            Returns::Value | Returns::Result => 1,
        };
        let call = async {
            let instance = self.0.pre.instantiate_async(&mut store).await?;
            let func = instance
                .get_func(&mut store, action.export)
                .ok_or_else(|| wasmtime::format_err!("export disappeared"))?;
            let mut results = vec![Val::Bool(false); result_count];
            func.call_async(&mut store, &args, &mut results).await?;
            wasmtime::Result::<Vec<Val>>::Ok(results)
        };
        let (ran, cpu_us) = {
            let mut cpu_us = 0;
            let mut call = std::pin::pin!(call);
            let cpu_quota = quotas
                .max_cpu
                .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
            let metered = super::meter::Metered::new(call.as_mut(), &mut cpu_us, cpu_quota);
            let ran = tokio::time::timeout(limits.timeout, metered).await;
            (ran, cpu_us)
        };
        let duration = started.elapsed();

        let (status, result, error) = match ran {
            Err(_) => (
                Status::TimedOut,
                None,
                Some(Value::String(format!(
                    "timed out after {}",
                    humanize(limits.timeout)
                ))),
            ),
            Ok(None) => (
                Status::Failed,
                None,
                Some(Value::String(cpu_quota_reached(quotas, cpu_us))),
            ),
            Ok(Some(Err(e))) => {
                let mut message = trap_message(&e);
                if store.data().limits.hit && memory_quota.is_none() {
                    message.push_str(&format!(
                        " (memory limit of {} bytes reached)",
                        limits.memory_bytes
                    ));
                }
                (Status::Failed, None, Some(Value::String(message)))
            }
            Ok(Some(Ok(results))) => match (&action.returns, results.first()) {
                (Returns::Result, Some(Val::Result(Ok(v)))) => (
                    Status::Succeeded,
                    Some(v.as_deref().map_or(Value::Null, values::to_json)),
                    None,
                ),
                (Returns::Result, Some(Val::Result(Err(v)))) => (
                    Status::Failed,
                    None,
                    Some(v.as_deref().map_or(Value::Null, values::to_json)),
                ),
                (_, Some(v)) => (Status::Succeeded, Some(values::to_json(v)), None),
                (_, None) => (Status::Succeeded, Some(Value::Null), None),
            },
        };
        // Past a quota the run fails, whatever the guest made of it.
        let quota_hit = match (memory_quota, store.data().limits.hit) {
            (Some(q), true) => Some(format!(
                "quota max_memory of {q} bytes reached: it asked for {} bytes",
                store.data().limits.refused
            )),
            // A guest that passed its CPU quota and returned in the same
            // poll still passed it.
            _ if quotas
                .max_cpu
                .is_some_and(|q| u128::from(cpu_us) > q.as_micros()) =>
            {
                Some(cpu_quota_reached(quotas, cpu_us))
            }
            _ => store.data().outbound.quota_hit(),
        };
        let (status, result, error) = match quota_hit {
            Some(why) => (Status::Failed, None, Some(Value::String(why))),
            None => (status, result, error),
        };
        // Redacted before it is measured: a size taken before would tell a
        // secret's length.
        let (mut result, mut error) = (result, error);
        for v in [&mut result, &mut error].into_iter().flatten() {
            secrets.redact_json(v);
        }
        // A result past the cap would fill the database and every response
        // that carries it: the run fails instead, saying why.
        let max = runtime.config().max_result_bytes;
        let too_large = [("result", &result), ("error", &error)]
            .into_iter()
            .map(|(which, v)| (which, json_len(v)))
            .find(|(_, len)| *len > max);
        let (status, result, error) = match too_large {
            Some((which, len)) => {
                let message = format!("the {which} is {len} bytes of JSON; the limit is {max}");
                (Status::Failed, None, Some(Value::String(message)))
            }
            None => (status, result, error),
        };
        let mut state = store.into_data();
        // Response bodies the guest left open end here, writing what was
        // read to the journal before it is closed.
        drop(std::mem::take(&mut state.table));
        scratch.give_back(state.scratch_quota.created_nothing());
        // The guest's own lines, before the requests' join them.
        let logged = state.log.lines.len() as u64 + state.log.dropped;
        // Each request's line, in time order with what the guest logged.
        state.log.lines.extend(state.outbound.take_log());
        state.log.lines.extend(state.scratch_quota.take_log());
        state.log.lines.sort_by_key(|l| l.at_ms);
        let (mut host_calls, sent, received, call_spans) = calls.finish();
        host_calls.log = u32::try_from(logged).unwrap_or(u32::MAX);
        let stdout = secrets.capture(&stdout);
        let stderr = secrets.capture(&stderr);
        let resources = super::Resources {
            outbound_bytes_sent: sent,
            outbound_bytes_received: received,
            host_calls,
            cpu_us,
            peak_memory_bytes: state.limits.peak as u64,
            instances: 1,
            outbound_requests: state.outbound.requests(),
            stdout_bytes: stdout.text.len() as u64,
            stderr_bytes: stderr.text.len() as u64,
        };
        let (journal, divergence) = match (&request.journal, &tape) {
            (JournalMode::Record { .. }, Some(tape)) => {
                let (calls, over) = tape.finish_record();
                let mut params = request.params;
                secrets.redact_json(&mut params);
                let journal = Journal {
                    format: FORMAT,
                    action: request.action,
                    component: String::new(),
                    source: None,
                    params,
                    not_replayable: over,
                    seed,
                    calls,
                    status: status.as_str().into(),
                    result: result.clone(),
                    error: error.clone(),
                };
                (Some(journal), None)
            }
            (JournalMode::Replay(_), Some(tape)) => (None, tape.finish_replay()),
            _ => (None, None),
        };
        let mut outcome = Outcome {
            calls: call_spans,
            journal,
            divergence,
            status,
            result,
            error,
            // Redacted, then cut at the cap.
            stdout,
            stderr,
            resources,
            logs: state.log.lines,
            logs_dropped: state.log.dropped,
            duration,
        };
        outcome.redact(&secrets);
        Ok(outcome)
    }
}

/// The error of a run stopped by its CPU quota.
fn cpu_quota_reached(quotas: super::Quotas, cpu_us: u64) -> String {
    format!(
        "quota max_cpu of {} reached: it spent {:.1}ms of CPU in the guest",
        humanize(quotas.max_cpu.unwrap_or_default()),
        cpu_us as f64 / 1000.0
    )
}

/// Bytes of `v` as JSON, counted without building the text (every result
/// passes through here).
fn json_len(v: &Option<Value>) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    if let Some(v) = v {
        // Writing into a counter cannot fail.
        let _ = serde_json::to_writer(&mut count, v);
    }
    count.0
}

/// The guest-facing part of a call error: the trap, without host internals.
fn trap_message(e: &wasmtime::Error) -> String {
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        return format!("trap: {trap}");
    }
    if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return format!("exited with code {}", exit.0);
    }
    format!("{e}")
}

/// `30s`, `1.5s`, `250ms`.
pub(crate) fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}
