//! Wire types: what the API sends, with their OpenAPI schemas.
//!
//! Database rows are not sent as they are: each has a view here, so a column
//! added to a table (an internal one, a secret) never reaches a response
//! unless a view says so, and the published schema is these files.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorDetail};
use attune_engine::records::{
    ActionRecord, Grants, PackRecord, Page, Role, RuleRecord, RuleSpec, TokenRecord,
    TriggerTypeRecord, WorkerRecord,
};
use attune_runtime::PathError;

mod executions;
pub use executions::*;

/// Keyset pagination: `after` is the last ref/id of the previous page.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<i64>,
    /// Cursor from the previous page's `next`.
    pub after: Option<String>,
}

/// How a list is keyed, for checking its cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyed {
    /// By numeric id: `after` must be an id.
    Id,
    /// By ref or name: any `after`.
    Ref,
}

/// A checked page: `limit` from 1 to 500, `after` an id for id-keyed lists.
/// Out-of-range values are refused with their path rather than clamped.
pub fn page(limit: Option<i64>, after: Option<String>, keyed: Keyed) -> Result<Page, ApiError> {
    let mut details = Vec::new();
    if limit.is_some_and(|l| !(1..=attune_engine::records::MAX_PAGE).contains(&l)) {
        details.push(ErrorDetail {
            path: "/limit".into(),
            message: format!("must be from 1 to {}", attune_engine::records::MAX_PAGE),
        });
    }
    if keyed == Keyed::Id && after.as_deref().is_some_and(|a| a.parse::<i64>().is_err()) {
        details.push(ErrorDetail {
            path: "/after".into(),
            message: "must be the `next` cursor of a previous page (an id)".into(),
        });
    }
    if details.is_empty() {
        Ok(Page { limit, after })
    } else {
        Err(ApiError::Invalid {
            message: "the page is invalid".into(),
            details,
        })
    }
}

impl PageQuery {
    /// The checked page (see [`page`]).
    pub fn checked(self, keyed: Keyed) -> Result<Page, ApiError> {
        page(self.limit, self.after, keyed)
    }
}

/// What a pack is granted beyond the sandbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantsView {
    /// Outbound HTTP destinations, `scheme://host[:port]` (`*` and
    /// `*.domain` wildcards, CIDR hosts).
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Names of the secrets its actions may read.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Quota: most memory one linear memory of an execution may grow to
    /// (`64MiB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<String>,
    /// Quota: most CPU time one execution may spend in the guest (`2s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu: Option<String>,
    /// Quota: most outbound HTTP requests one execution may send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_outbound_requests: Option<u32>,
    /// `false`: its outbound requests do not carry the execution's W3C
    /// `traceparent` (they do when it is traced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagate_trace: Option<bool>,
}

impl From<Grants> for GrantsView {
    fn from(g: Grants) -> Self {
        GrantsView {
            allowed_outbound_hosts: g.allowed_outbound_hosts,
            secrets: g.secrets,
            max_memory: g.max_memory,
            max_cpu: g.max_cpu,
            max_outbound_requests: g.max_outbound_requests,
            propagate_trace: g.propagate_trace,
        }
    }
}

impl From<GrantsView> for Grants {
    fn from(g: GrantsView) -> Self {
        Grants {
            allowed_outbound_hosts: g.allowed_outbound_hosts,
            secrets: g.secrets,
            max_memory: g.max_memory,
            max_cpu: g.max_cpu,
            max_outbound_requests: g.max_outbound_requests,
            propagate_trace: g.propagate_trace,
        }
    }
}

/// A registered pack.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PackView {
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
    pub grants: GrantsView,
    /// The registry artifact it was installed from; null for an upload.
    pub source: Option<PackSourceView>,
}

/// Where a pack installed from an OCI registry came from.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PackSourceView {
    /// The reference it was installed by (`oci://REGISTRY/REPO:TAG` or
    /// `…@sha256:…`).
    pub reference: String,
    /// Digest of the manifest that was pulled.
    pub digest: String,
}

impl From<PackRecord> for PackView {
    fn from(r: PackRecord) -> Self {
        PackView {
            source: r.source().map(|s| PackSourceView {
                reference: s.reference,
                digest: s.digest,
            }),
            grants: r.grants.into(),
            name: r.name,
            version: r.version,
            description: r.description,
            digest: r.digest,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A registered action.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActionView {
    /// `<pack>.<name>`.
    pub r#ref: String,
    /// Its pack.
    pub pack: String,
    /// Name within the pack.
    pub name: String,
    /// Digest of its component; empty for a workflow.
    pub component: String,
    /// JSON Schema of the parameters, derived from WIT (a workflow's
    /// `input`).
    #[schema(value_type = Object)]
    pub params_schema: Value,
    /// JSON Schema of the success value.
    #[schema(value_type = Object)]
    pub result_schema: Value,
    /// JSON Schema of the typed error, if the action returns a `result`.
    pub error_schema: Option<Value>,
    /// Capabilities a worker needs.
    pub capabilities: Vec<String>,
    /// WIT doc comment.
    pub description: Option<String>,
    /// A workflow's definition: its tasks run as child executions.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub workflow: Option<Value>,
}

impl From<ActionRecord> for ActionView {
    fn from(r: ActionRecord) -> Self {
        ActionView {
            r#ref: r.r#ref,
            pack: r.pack,
            name: r.name,
            component: r.component,
            params_schema: r.params_schema,
            result_schema: r.result_schema,
            error_schema: r.error_schema,
            capabilities: r.capabilities,
            description: r.description,
            workflow: r.workflow,
        }
    }
}

/// A kind of trigger rules can listen to.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TriggerTypeView {
    /// e.g. `core.interval`.
    pub r#ref: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of a rule's `trigger_params`.
    #[schema(value_type = Object)]
    pub params_schema: Value,
    /// JSON Schema of its events' payloads.
    #[schema(value_type = Object)]
    pub payload_schema: Value,
}

impl From<TriggerTypeRecord> for TriggerTypeView {
    fn from(r: TriggerTypeRecord) -> Self {
        TriggerTypeView {
            r#ref: r.r#ref,
            description: r.description,
            params_schema: r.params_schema,
            payload_schema: r.payload_schema,
        }
    }
}

/// A stored rule.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RuleView {
    /// Internal id.
    pub id: i64,
    /// `<pack>.<name>`, unique.
    pub r#ref: String,
    /// What it is for.
    pub description: Option<String>,
    /// Trigger type ref.
    pub trigger: String,
    /// Parameters of the trigger.
    #[schema(value_type = Object)]
    pub trigger_params: Value,
    /// Expression over `event`; the rule fires when it is true.
    pub criteria: Option<String>,
    /// Action ref.
    pub action: String,
    /// Parameters for the action; strings may hold `{{ event… }}` templates.
    #[schema(value_type = Object)]
    pub action_params: Value,
    /// Whether it fires.
    pub enabled: bool,
    /// Execution timeout in milliseconds; default when absent.
    pub timeout_ms: Option<i64>,
    /// Attempts each execution gets (retries after a lost worker).
    pub max_attempts: i64,
    /// Concurrency and rate policies on its executions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<attune_engine::policies::PolicyInput>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// Why the server disabled it (its trigger type went away with its pack).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Why it does not fire until fixed (listed with `invalid=true`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<ErrorDetail>,
}

impl From<RuleRecord> for RuleView {
    fn from(r: RuleRecord) -> Self {
        let RuleSpec {
            r#ref,
            description,
            trigger,
            trigger_params,
            criteria,
            action,
            action_params,
            enabled,
            timeout_ms,
            max_attempts,
            policies,
        } = r.spec;
        RuleView {
            id: r.id,
            r#ref,
            description,
            trigger_params: attune_engine::triggers::webhook::masked(&trigger, &trigger_params),
            trigger,
            criteria,
            action,
            action_params,
            enabled,
            timeout_ms,
            max_attempts,
            policies: policies.iter().map(Into::into).collect(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            disabled_reason: r.disabled_reason,
            problems: Vec::new(),
        }
    }
}

/// A worker that registered with the server.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkerView {
    /// Id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// What it can run.
    pub capabilities: Vec<String>,
    /// Free labels.
    #[schema(value_type = Object)]
    pub labels: Value,
    /// Unix ms.
    pub last_heartbeat: i64,
    /// Unix ms.
    pub created_at: i64,
}

impl From<WorkerRecord> for WorkerView {
    fn from(r: WorkerRecord) -> Self {
        WorkerView {
            id: r.id,
            name: r.name,
            capabilities: r.capabilities,
            labels: r.labels,
            last_heartbeat: r.last_heartbeat,
            created_at: r.created_at,
        }
    }
}

/// An API token (never its secret or hash).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenView {
    /// Id.
    pub id: i64,
    /// Name, for people.
    pub name: String,
    /// worker, viewer, operator or admin.
    #[schema(value_type = String)]
    pub role: Role,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms, when revoked.
    pub revoked_at: Option<i64>,
}

impl From<TokenRecord> for TokenView {
    fn from(r: TokenRecord) -> Self {
        TokenView {
            id: r.id,
            name: r.name,
            role: r.role,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        }
    }
}

impl From<PathError> for ErrorDetail {
    fn from(e: PathError) -> Self {
        ErrorDetail {
            path: e.path,
            message: e.message,
        }
    }
}
