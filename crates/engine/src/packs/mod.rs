//! Packs: parsing uploads, validating their components, registering them.
//!
//! A pack is either one component (uploaded as `application/wasm` with its
//! name and version) or a `.tar.gz` with a `pack.toml` naming its components
//! and, optionally, rules. Registration is all or nothing: every component
//! is loaded by the runtime (validated, precompiled off the async executor,
//! signatures checked) and every rule validated before anything is stored.

pub mod archive;
mod grants;
pub use grants::{check_grants, quotas};
pub mod files;
pub mod oci;
pub mod sensors;
pub mod workflows;

use attune_runtime::PathError;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::Core;
use crate::rules::save::{self, Mode};
use crate::rules::{RuleInput, validate_rule};
use attune_runtime::{LoadError, LoadedComponent, Runtime, cache};
use attune_storage::{
    Grants, NewAction, NewComponent, NewPack, PackSource, Registered, RuleSpec, Storage,
    StorageError,
};

/// Longest a component may take to compile before the upload is refused.
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a pack could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The archive is malformed or unsafe.
    #[error("bad archive: {0}")]
    BadArchive(String),
    /// The upload or its content is too large.
    #[error("too large: {0}")]
    TooLarge(String),
    /// `pack.toml` is missing or invalid.
    #[error("pack.toml: {0}")]
    BadManifest(String),
    /// A component failed validation.
    #[error("component `{file}`: {reason}")]
    InvalidComponent {
        /// The component's file name in the pack.
        file: String,
        /// Why.
        reason: String,
    },
    /// A sensor in `pack.toml` is invalid: Each problem with its path.
    #[error("the sensors are invalid")]
    InvalidSensors {
        /// Each problem with its path.
        errors: Vec<PathError>,
    },
    /// A workflow is invalid; each problem with its path inside it.
    #[error("workflow `{file}` is invalid")]
    InvalidWorkflow {
        /// The workflow's file in the pack.
        file: String,
        /// Each problem with its path.
        errors: Vec<PathError>,
    },
    /// A rule in `pack.toml` is invalid; each problem with its path.
    #[error("rule `{rule}` is invalid")]
    InvalidRule {
        /// The rule's ref.
        rule: String,
        /// Each problem with its path.
        errors: Vec<PathError>,
    },
    /// A policy in `pack.toml` is invalid: each problem with its path.
    #[error("the policies are invalid")]
    InvalidPolicies {
        /// Each problem with its path.
        errors: Vec<PathError>,
    },
    /// Storage refused it (e.g. version conflict).
    #[error(transparent)]
    Database(#[from] StorageError),
    /// A grant is malformed: Each problem with its path.
    #[error("the grants are invalid")]
    InvalidGrants {
        /// Each problem with its path.
        errors: Vec<PathError>,
    },
    /// Saving its rules failed.
    #[error(transparent)]
    Engine(crate::EngineError),
}

/// `pack.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Pack name: lowercase letters, digits, `_` and `-`.
    pub name: String,
    /// Version string.
    pub version: String,
    /// What the pack is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Paths of the components inside the archive.
    #[serde(default)]
    pub components: Vec<String>,
    /// Paths of the workflows inside the archive (`workflows/<name>.yaml`).
    #[serde(default)]
    pub workflows: Vec<String>,
    /// Rules to register with the pack.
    #[serde(default)]
    pub rules: Vec<RuleInput>,
    /// Outbound HTTP destinations its actions may reach.
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Secrets its actions may read.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Sensors: exports polled on a schedule whose records become events.
    #[serde(default)]
    pub sensors: Vec<sensors::SensorInput>,
    /// Concurrency and rate policies on its actions (`action = "deploy"`).
    #[serde(default)]
    pub policies: Vec<crate::policies::PolicyInput>,
    /// Whether its executions record their journal for replay (on unless
    /// set false).
    #[serde(default = "recorded")]
    pub record: bool,
    /// Quota: most memory one linear memory of an execution may grow to.
    #[serde(default)]
    pub max_memory: Option<String>,
    /// Quota: most CPU time one execution may spend in the guest.
    #[serde(default)]
    pub max_cpu: Option<String>,
    /// Quota: most outbound HTTP requests one execution may send.
    #[serde(default)]
    pub max_outbound_requests: Option<u32>,
    /// `false`: outbound requests do not carry the execution's
    /// `traceparent`.
    #[serde(default)]
    pub propagate_trace: Option<bool>,
}

impl Manifest {
    /// What the manifest grants its pack, quotas included.
    pub fn grants(&self) -> Grants {
        Grants {
            allowed_outbound_hosts: self.allowed_outbound_hosts.clone(),
            secrets: self.secrets.clone(),
            max_memory: self.max_memory.clone(),
            max_cpu: self.max_cpu.clone(),
            max_outbound_requests: self.max_outbound_requests,
            propagate_trace: self.propagate_trace,
        }
    }
}

fn recorded() -> bool {
    true
}

/// A pack ready to validate: manifest plus component bytes.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The manifest.
    pub manifest: Manifest,
    /// `(file name, bytes)` of each component.
    pub components: Vec<(String, Vec<u8>)>,
    /// `(file name, text)` of each workflow.
    pub workflows: Vec<(String, String)>,
    /// The registry artifact it was pulled from; `None` for an upload.
    pub source: Option<PackSource>,
}

impl Upload {
    /// A pack of one component.
    pub fn single(name: &str, version: &str, bytes: Vec<u8>) -> Self {
        let file = format!("{name}.wasm");
        Upload {
            manifest: Manifest {
                name: name.to_string(),
                version: version.to_string(),
                description: None,
                components: vec![file.clone()],
                workflows: Vec::new(),
                rules: Vec::new(),
                allowed_outbound_hosts: Vec::new(),
                secrets: Vec::new(),
                sensors: Vec::new(),
                policies: Vec::new(),
                record: true,
                max_memory: None,
                max_cpu: None,
                max_outbound_requests: None,
                propagate_trace: None,
            },
            components: vec![(file, bytes)],
            workflows: Vec::new(),
            source: None,
        }
    }

    /// A pack from a `.tar.gz` holding `pack.toml`.
    pub fn from_archive(bytes: &[u8], max_unpacked: u64) -> Result<Self, PackError> {
        Self::from_files(archive::unpack(bytes, max_unpacked)?)
    }

    /// A pack from its files by path (`pack.toml` among them), however they
    /// arrived: an archive's entries or a registry artifact's layers.
    pub fn from_files(mut files: archive::Files) -> Result<Self, PackError> {
        let manifest = files
            .remove("pack.toml")
            .ok_or_else(|| PackError::BadManifest("missing at the archive's top level".into()))?;
        let manifest: Manifest = toml::from_str(
            std::str::from_utf8(&manifest)
                .map_err(|_| PackError::BadManifest("not UTF-8".into()))?,
        )
        .map_err(|e| PackError::BadManifest(e.to_string()))?;
        let mut components = Vec::new();
        for file in &manifest.components {
            let bytes = files.remove(file.trim_start_matches("./")).ok_or_else(|| {
                PackError::BadManifest(format!("component `{file}` is not in the archive"))
            })?;
            components.push((file.clone(), bytes));
        }
        let mut workflows = Vec::new();
        for file in &manifest.workflows {
            let bytes = files.remove(file.trim_start_matches("./")).ok_or_else(|| {
                PackError::BadManifest(format!("workflow `{file}` is not in the archive"))
            })?;
            let text = String::from_utf8(bytes)
                .map_err(|_| PackError::BadManifest(format!("workflow `{file}` is not UTF-8")))?;
            workflows.push((file.clone(), text));
        }
        Ok(Upload {
            manifest,
            components,
            workflows,
            source: None,
        })
    }
}

/// Whether `name` is a valid pack name.
pub fn valid_pack_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// What registering produced.
pub struct Outcome {
    /// The pack's name.
    pub name: String,
    /// Created, upgraded or unchanged.
    pub registered: Registered,
    /// Action refs of the pack.
    pub actions: Vec<String>,
    /// Rules registered with it.
    pub rules: Vec<RuleSpec>,
    /// Each loaded component by digest, for the caller's cache.
    pub loaded: Vec<LoadedComponent>,
}

/// Validates every component and rule, then registers the pack at once.
pub async fn register(
    runtime: &Runtime,
    storage: &Storage,
    files: &files::ComponentFiles,
    upload: Upload,
) -> Result<Outcome, PackError> {
    let manifest = &upload.manifest;
    if !valid_pack_name(&manifest.name) {
        return Err(PackError::BadManifest(format!(
            "pack name `{}` must be lowercase letters, digits, `_` or `-`",
            manifest.name
        )));
    }
    if manifest.version.trim().is_empty() {
        return Err(PackError::BadManifest("version is empty".into()));
    }
    check_grants(&manifest.grants()).map_err(|errors| PackError::InvalidGrants { errors })?;
    if upload.components.is_empty() && upload.workflows.is_empty() {
        return Err(PackError::BadManifest(
            "a pack needs at least one component or workflow".into(),
        ));
    }

    let mut loaded: Vec<(String, LoadedComponent)> = Vec::new();
    let mut components = Vec::new();
    let mut actions: BTreeMap<String, NewAction> = BTreeMap::new();
    for (file, bytes) in &upload.components {
        let pack = load_bounded(runtime, bytes.clone())
            .await
            .map_err(|reason| PackError::InvalidComponent {
                file: file.clone(),
                reason,
            })?;
        for action in pack.actions() {
            let info = action.info();
            let r#ref = format!("{}.{}", manifest.name, info.name);
            if actions.contains_key(&r#ref) {
                return Err(PackError::InvalidComponent {
                    file: file.clone(),
                    reason: format!("action `{}` is exported by two components", info.name),
                });
            }
            actions.insert(
                r#ref.clone(),
                NewAction {
                    r#ref,
                    name: info.name.clone(),
                    component: pack.digest().to_string(),
                    params_schema: info.params_schema.clone(),
                    result_schema: info.result_schema.clone(),
                    error_schema: info.error_schema.clone(),
                    capabilities: info.capabilities.clone(),
                    description: info.description.clone(),
                    workflow: None,
                    sensor: false,
                    policies: Vec::new(),
                },
            );
        }
        components.push(NewComponent {
            digest: pack.digest().to_string(),
            bytes: bytes.clone(),
        });
        loaded.push((file.clone(), pack));
    }

    let (sensors, trigger_types) = sensors::check(&manifest.name, &manifest.sensors, &mut actions)?;
    let flows = workflows::check(
        storage,
        &manifest.name,
        &upload.workflows,
        &actions,
        &trigger_types,
        &manifest.secrets,
    )
    .await?;
    for flow in flows {
        actions.insert(flow.r#ref.clone(), flow);
    }
    attach_policies(&manifest.name, &manifest.policies, &mut actions)?;

    // Rules shipped with the pack are checked against the actions above.
    let mut rules: Vec<RuleSpec> = Vec::new();
    for input in &manifest.rules {
        let trigger = storage.get_trigger_type(&input.trigger).await?;
        let name = input.action.strip_prefix(&format!("{}.", manifest.name));
        let export = name.and_then(|name| loaded.iter().find_map(|(_, p)| p.action(name)));
        let flow = actions.get(&input.action).filter(|a| a.workflow.is_some());
        let by_export = |params: &serde_json::Value| export.map_or(Ok(()), |a| a.validate(params));
        let by_schema = |params: &serde_json::Value| {
            let errors = flow.map(|a| attune_runtime::schema_errors(&a.params_schema, params));
            errors.filter(|e| !e.is_empty()).map_or(Ok(()), Err)
        };
        let check: Option<crate::rules::ParamsCheck<'_>> = match (export, flow) {
            (Some(_), _) => Some(&by_export),
            (None, Some(_)) => Some(&by_schema),
            (None, None) => None,
        };
        let target = actions
            .get(&input.action)
            .map(|a| (&a.params_schema, a.workflow.is_none() && !a.sensor))
            .or(export.map(|e| (&e.info().params_schema, true)));
        let spec = validate_rule(input, trigger.as_ref(), check, target).map_err(|errors| {
            PackError::InvalidRule {
                rule: input.r#ref.clone(),
                errors,
            }
        })?;
        rules.push(spec);
    }

    let digest = cache::digest(
        json!({
            "name": manifest.name,
            "version": manifest.version,
            "description": manifest.description,
            "components": loaded.iter().map(|(f, p)| (f, p.digest())).collect::<Vec<_>>(),
            "workflows": upload.workflows,
            "sensors": format!("{:?}", manifest.sensors),
            "policies": manifest.policies,
            "rules": rules,
        })
        .to_string()
        .as_bytes(),
    );
    let description = manifest.description.clone().or_else(|| {
        loaded
            .iter()
            .find_map(|(_, p)| p.description().map(str::to_string))
    });
    for c in &components {
        files
            .store(&c.digest, &c.bytes)
            .map_err(|e| PackError::Database(StorageError::Database(sqlx::Error::Io(e))))?;
    }
    let new = NewPack {
        grants: manifest.grants(),
        name: manifest.name.clone(),
        version: manifest.version.clone(),
        description,
        digest,
        components,
        actions: actions.into_values().collect(),
        sensors,
        trigger_types,
        source: upload.source.clone(),
        record: manifest.record,
    };
    let registered = storage.register_pack(&new).await?;
    // Rules are saved by `install`, through the one place that saves rules;
    // an unchanged pack leaves its rules as they are now.
    if registered == Registered::Unchanged {
        rules.clear();
    }
    Ok(Outcome {
        name: new.name,
        registered,
        actions: new.actions.iter().map(|a| a.r#ref.clone()).collect(),
        rules,
        loaded: loaded.into_iter().map(|(_, p)| p).collect(),
    })
}

/// Checks `pack.toml`'s `[[policies]]` and puts each on its action.
fn attach_policies(
    pack: &str,
    inputs: &[crate::policies::PolicyInput],
    actions: &mut BTreeMap<String, NewAction>,
) -> Result<(), PackError> {
    let mut errors = Vec::new();
    let mut by_action: BTreeMap<String, Vec<(usize, crate::policies::PolicyInput)>> =
        BTreeMap::new();
    for (n, input) in inputs.iter().enumerate() {
        match input.action.as_deref() {
            None => errors.push(PathError::new(
                format!("/policies/{n}/action"),
                "name the action it limits (`action = \"deploy\"`)",
            )),
            Some(name) if !actions.contains_key(&format!("{pack}.{name}")) => {
                errors.push(PathError::new(
                    format!("/policies/{n}/action"),
                    format!("pack `{pack}` has no action `{name}`"),
                ))
            }
            Some(name) => by_action
                .entry(format!("{pack}.{name}"))
                .or_default()
                .push((n, input.clone())),
        }
    }
    for (r#ref, listed) in by_action {
        let action = actions.get_mut(&r#ref).expect("checked above");
        let on_workers = action.workflow.is_none() && !action.sensor;
        let policies: Vec<_> = listed.iter().map(|(_, p)| p.clone()).collect();
        match crate::policies::check(&policies, &action.params_schema, on_workers, "") {
            Ok(checked) => action.policies = checked,
            Err(found) => errors.extend(found.into_iter().map(|e| {
                // `/<n>/…` within the action's list → `/policies/<n>/…` in
                // pack.toml; a problem with the whole list → `/policies`.
                if e.path.is_empty() {
                    return PathError::new("/policies", e.message);
                }
                let mut parts = e.path.splitn(3, '/').skip(1);
                let index = parts.next().and_then(|i| i.parse::<usize>().ok());
                let rest = parts.next().map(|r| format!("/{r}")).unwrap_or_default();
                let n = index.and_then(|i| listed.get(i)).map_or(0, |(n, _)| *n);
                PathError::new(format!("/policies/{n}{rest}"), e.message)
            })),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(PackError::InvalidPolicies { errors })
    }
}

/// Loads a component on a blocking thread, bounded in time.
pub async fn load_bounded(runtime: &Runtime, bytes: Vec<u8>) -> Result<LoadedComponent, String> {
    let rt = runtime.clone();
    let task = tokio::task::spawn_blocking(move || rt.load(&bytes));
    match tokio::time::timeout(COMPILE_TIMEOUT, task).await {
        Err(_) => Err(format!(
            "compiling took longer than {}s",
            COMPILE_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Err(format!("the compiler task failed: {e}")),
        Ok(Ok(Err(e @ LoadError::TooLarge { .. }))) => Err(e.to_string()),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Ok(Ok((pack, _)))) => Ok(pack),
    }
}

/// What [`install`] did.
pub struct Installed {
    /// The pack's name.
    pub name: String,
    /// Created, upgraded or unchanged.
    pub registered: Registered,
    /// Refs of its actions.
    pub actions: Vec<String>,
    /// Refs of the rules it brought and saved.
    pub rules: Vec<String>,
}

/// Registers `upload` and makes it live: its components loaded in the pack
/// cache, the action cache refreshed, its rules saved (and their timers
/// synced) through the one place that saves rules.
pub async fn install(core: &Core, upload: Upload) -> Result<Installed, PackError> {
    let outcome = register(&core.runtime, &core.storage, &core.files, upload).await?;
    for p in &outcome.loaded {
        core.components.insert(p.clone());
    }
    core.cache.actions_changed();
    let mut rules = Vec::new();
    for spec in &outcome.rules {
        save::store(core, spec, Mode::Upsert, &spec.r#ref)
            .await
            .map_err(|e| match e {
                crate::EngineError::Database(s) => PackError::Database(s),
                other => PackError::Engine(other),
            })?;
        rules.push(spec.r#ref.clone());
    }
    if outcome.registered != Registered::Unchanged {
        core.metrics.packs_registered.inc();
        core.dispatch.packs_changed.notify_waiters();
    }
    Ok(Installed {
        name: outcome.name,
        registered: outcome.registered,
        actions: outcome.actions,
        rules,
    })
}
