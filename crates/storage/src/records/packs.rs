//! Packs, their components and actions, and trigger types.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A component to store with a pack.
#[derive(Debug, Clone)]
pub struct NewComponent {
    /// SHA-256, hex.
    pub digest: String,
    /// The component.
    pub bytes: Vec<u8>,
}

/// An action to register with a pack.
#[derive(Debug, Clone)]
pub struct NewAction {
    /// `<pack>.<name>`.
    pub r#ref: String,
    /// Name within the pack.
    pub name: String,
    /// Digest of the component exporting it; empty for a workflow.
    pub component: String,
    /// JSON Schema of the parameters.
    pub params_schema: Value,
    /// JSON Schema of the result.
    pub result_schema: Value,
    /// JSON Schema of the typed error.
    pub error_schema: Option<Value>,
    /// Required capabilities.
    pub capabilities: Vec<String>,
    /// Doc comment.
    pub description: Option<String>,
    /// A workflow's definition.
    pub workflow: Option<Value>,
    /// The export a sensor calls: not listed or run as an action.
    pub sensor: bool,
    /// Concurrency and rate policies (validated).
    pub policies: Vec<super::Policy>,
}

/// A pack to register.
#[derive(Debug, Clone)]
pub struct NewPack {
    /// Pack name.
    pub name: String,
    /// Version string.
    pub version: String,
    /// Description.
    pub description: Option<String>,
    /// Content digest (manifest + component digests).
    pub digest: String,
    /// What it is granted.
    pub grants: Grants,
    /// Its components.
    pub components: Vec<NewComponent>,
    /// Its actions.
    pub actions: Vec<NewAction>,
    /// Its sensors.
    pub sensors: Vec<NewSensor>,
    /// The trigger types its sensors emit.
    pub trigger_types: Vec<TriggerTypeRecord>,
    /// The registry artifact it was pulled from; `None` for an upload.
    pub source: Option<PackSource>,
    /// Whether its executions record their journal.
    pub record: bool,
}

/// Where a pack installed from an OCI registry came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackSource {
    /// The reference as given: `oci://REGISTRY/REPO:TAG` or `…@sha256:…`.
    pub reference: String,
    /// Digest of the manifest that was pulled (`sha256:…`).
    pub digest: String,
}

/// A sensor to register with its pack.
#[derive(Debug, Clone)]
pub struct NewSensor {
    /// `<pack>.<name>`, also its trigger type's ref.
    pub r#ref: String,
    /// The export it calls (an action row marked `sensor`).
    pub action: String,
    /// Its schedule as timers store it: interval in ms (0 for cron), and
    /// the cron schedule as JSON.
    pub every_ms: i64,
    /// See `every_ms`.
    pub schedule: Option<String>,
    /// What it watches.
    pub description: Option<String>,
    /// Its first poll (Unix ms).
    pub first_run_at: i64,
}

/// A sensor and where it stands.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SensorRecord {
    /// `<pack>.<name>`, its trigger type.
    pub r#ref: String,
    /// Its pack.
    pub pack: String,
    /// The export it calls.
    pub action: String,
    /// Interval in ms (0 for a cron schedule).
    pub every_ms: i64,
    /// Cron schedule, as JSON.
    pub schedule: Option<String>,
    /// What it watches.
    pub description: Option<String>,
    /// Whether it polls.
    pub enabled: bool,
    /// Unix ms of its next poll.
    pub next_run_at: i64,
    /// Failed polls in a row.
    pub failures: i64,
}

/// One poll of a sensor.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SensorRunRecord {
    /// The poll's execution.
    pub execution: i64,
    /// How it ended.
    pub status: String,
    /// Events it emitted.
    pub events: i64,
    /// Its error.
    #[sqlx(json(nullable))]
    pub error: Option<Value>,
    /// What was off (records dropped past the cap).
    pub warning: Option<String>,
    /// Unix ms.
    pub started_at: Option<i64>,
    /// Unix ms.
    pub finished_at: i64,
}

/// What [`super::Storage::register_pack`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// A new pack.
    Created,
    /// A new version of an existing pack.
    Upgraded,
    /// The same name, version and content were already there.
    Unchanged,
}

/// What a pack is granted beyond the sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Outbound HTTP destinations (`https://api.github.com`, `https://*.slack.com`).
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Names of the secrets its actions may read.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Most memory one linear memory of its executions may grow to
    /// (`64MiB`); the server's limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<String>,
    /// Most CPU time one execution may spend in the guest (`2s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu: Option<String>,
    /// Most outbound HTTP requests one execution may send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_outbound_requests: Option<u32>,
    /// `false`: its outbound requests do not carry the execution's W3C
    /// `traceparent` (they do by default when it is traced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagate_trace: Option<bool>,
}

/// A registered pack.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PackRecord {
    /// Pack name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Description.
    pub description: Option<String>,
    /// Content digest.
    pub digest: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// What it is granted.
    #[sqlx(json)]
    pub grants: Grants,
    /// The reference it was installed by, for a pack pulled from a
    /// registry ([`PackRecord::source`]).
    #[serde(skip)]
    pub oci_reference: Option<String>,
    /// The manifest digest pulled with it.
    #[serde(skip)]
    pub oci_digest: Option<String>,
    /// Whether its executions record their journal (`record` in pack.toml).
    pub record: bool,
}

impl PackRecord {
    /// The registry artifact it was installed from, if it was.
    pub fn source(&self) -> Option<PackSource> {
        let reference = self.oci_reference.clone()?;
        let digest = self.oci_digest.clone()?;
        Some(PackSource { reference, digest })
    }
}

/// A registered action.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ActionRecord {
    /// `<pack>.<name>`.
    pub r#ref: String,
    /// Its pack.
    pub pack: String,
    /// Name within the pack.
    pub name: String,
    /// Digest of its component; empty for a workflow.
    pub component: String,
    /// JSON Schema of the parameters, derived from WIT.
    #[sqlx(json)]
    pub params_schema: Value,
    /// JSON Schema of the success value.
    #[sqlx(json)]
    pub result_schema: Value,
    /// JSON Schema of the typed error, if the action returns a `result`.
    #[sqlx(json(nullable))]
    pub error_schema: Option<Value>,
    /// Capabilities a worker needs.
    #[sqlx(json)]
    pub capabilities: Vec<String>,
    /// WIT doc comment.
    pub description: Option<String>,
    /// A workflow's definition (its tasks run as child executions).
    #[sqlx(json(nullable))]
    pub workflow: Option<Value>,
    /// The export a sensor calls: not an action.
    pub sensor: bool,
    /// Concurrency and rate policies, from its pack's `pack.toml`.
    #[sqlx(json)]
    #[serde(default)]
    pub policies: Vec<super::Policy>,
}

/// A kind of trigger rules can listen to.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TriggerTypeRecord {
    /// e.g. `core.interval`.
    pub r#ref: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of a rule's `trigger_params`.
    #[sqlx(json)]
    pub params_schema: Value,
    /// JSON Schema of its events' payloads.
    #[sqlx(json)]
    pub payload_schema: Value,
}
