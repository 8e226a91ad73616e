//! Packs, their components and actions, and trigger types.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::storage::rows::DbRow;

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
}

/// A registered pack.
#[derive(Debug, Clone, Serialize)]
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
    pub grants: Grants,
}

impl PackRecord {
    pub(crate) fn from_row(r: &impl DbRow) -> Self {
        Self {
            grants: serde_json::from_value(r.json("grants")).unwrap_or_default(),
            name: r.text("name"),
            version: r.text("version"),
            description: r.opt_text("description"),
            digest: r.text("digest"),
            created_at: r.int("created_at"),
            updated_at: r.int("updated_at"),
        }
    }
}

/// A registered action.
#[derive(Debug, Clone, Serialize)]
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
    pub params_schema: Value,
    /// JSON Schema of the success value.
    pub result_schema: Value,
    /// JSON Schema of the typed error, if the action returns a `result`.
    pub error_schema: Option<Value>,
    /// Capabilities a worker needs.
    pub capabilities: Vec<String>,
    /// WIT doc comment.
    pub description: Option<String>,
    /// A workflow's definition (its tasks run as child executions).
    pub workflow: Option<Value>,
}

impl ActionRecord {
    pub(crate) fn from_row(r: &impl DbRow) -> Self {
        Self {
            r#ref: r.text("ref"),
            pack: r.text("pack"),
            name: r.text("name"),
            component: r.opt_text("component").unwrap_or_default(),
            params_schema: r.json("params_schema"),
            result_schema: r.json("result_schema"),
            error_schema: r.opt_json("error_schema"),
            capabilities: serde_json::from_value(r.json("capabilities")).unwrap_or_default(),
            description: r.opt_text("description"),
            workflow: r.opt_json("workflow"),
        }
    }
}

/// A kind of trigger rules can listen to.
#[derive(Debug, Clone, Serialize)]
pub struct TriggerTypeRecord {
    /// e.g. `core.interval`.
    pub r#ref: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of a rule's `trigger_params`.
    pub params_schema: Value,
    /// JSON Schema of its events' payloads.
    pub payload_schema: Value,
}

impl TriggerTypeRecord {
    pub(crate) fn from_row(r: &impl DbRow) -> Self {
        Self {
            r#ref: r.text("ref"),
            description: r.text("description"),
            params_schema: r.json("params_schema"),
            payload_schema: r.json("payload_schema"),
        }
    }
}
