//! The domain: packs, rules, triggers, the event door, the scheduler and
//! workers. Every function takes one [`Core`] handle and returns its own
//! errors ([`EngineError`]); nothing here knows HTTP.
//!
//! - [`core`] — the handle: storage, runtime, loaded components, caches,
//!   metrics, in-process signals, the event door.
//! - [`ingest`] — the one door for events (posted, webhook, timer) and
//!   direct runs, group-committed.
//! - [`rules`] — rule input, validation at save, the one place that saves a
//!   rule, criteria and templating.
//! - [`triggers`] — built-in trigger types, timer schedules, webhooks.
//! - [`actions`] — checking an action's parameters (a component export's
//!   or a workflow's).
//! - [`executions`] — direct runs, recording ends (and announcing them on
//!   `core.execution_finished`) and cancellation.
//! - [`output`] — an execution's output as it is written, for the API's and
//!   the console's streams.
//! - [`scheduler`] — the background tasks: timers, leases, retention.
//! - [`worker`] — the worker protocol, the one execution path, the embedded
//!   worker.
//! - [`packs`] — uploads: archives, manifests, validation, registration;
//!   packs pulled from OCI registries (`packs::oci`).
//! - [`secrets`] — values sealed at rest, set by admins, never returned.
//! - [`kv`] — packs' key-value state, for the embedded worker and the
//!   worker API alike.
//! - [`sensors`] — packs' exports polled on a schedule, their records
//!   turned into events on the pack's trigger types.
//! - [`catalog`], [`history`], [`tokens`] — what the surfaces read and
//!   change: installed packs, actions and trigger types; events,
//!   enforcements and executions; tokens and console sessions. Their
//!   records are re-exported in [`records`].
//! - [`workflows`] — workflow definitions, the pure step function, and the
//!   conductor that applies each step in one transaction.
//! - [`inquiries`] — people in the loop: answering a workflow's `ask`
//!   tasks, resuming its `wait` tasks on an event, timing both out.
//! - [`replay`] — an ended execution run again against its journal, by
//!   the component that ran or another registered version of its pack.
//! - [`telemetry`] — OpenTelemetry spans, one trace per cause, when the
//!   server exports them.

pub mod actions;
pub mod cache;
pub mod catalog;
pub mod core;
pub mod dispatch;
pub mod error;
pub mod executions;
pub mod history;
pub mod ingest;
pub mod inquiries;
pub mod kv;
pub mod metrics;
pub mod output;
pub mod packs;
pub mod policies;
pub mod records;
pub mod replay;
pub mod rules;
pub mod scheduler;
pub mod secrets;
pub mod sensors;
pub mod telemetry;
pub mod tokens;
pub mod triggers;
pub mod worker;
pub mod workflows;

pub use self::core::{Core, CoreConfig, PipelineConfig};
pub use error::EngineError;
