//! A loaded component: its actions, their schemas, and what it needs.
//!
//! Loading walks the component's exports once: every function, at the top level
//! or inside an exported interface, becomes an [`Action`] with JSON Schemas for
//! its parameters and result, a description from the `attune:docs` section the
//! SDK embeds, and a precomputed export index so calls skip name lookups.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};
use wasmtime::Engine;
use wasmtime::component::types::{ComponentItem, Type};
use wasmtime::component::{Component, ComponentExportIndex, InstancePre};

use super::host::HostState;
use super::values::{PathError, json_kind};
use super::{LoadError, schema};

/// Name of the custom section the SDK writes with WIT doc comments.
pub const DOCS_SECTION: &str = "attune:docs";

/// Exports that toolchains add for their own use, not actions: an exported
/// instance name with one of its functions, or `None` for a top-level function.
/// componentize-py exports `exports#init`; QuickJS-based JavaScript toolchains
/// export a top-level `init`.
const TOOLCHAIN_EXPORTS: &[(Option<&str>, &str)] = &[(Some("exports"), "init"), (None, "init")];

fn is_toolchain_export(instance: Option<&str>, func: &str) -> bool {
    TOOLCHAIN_EXPORTS.contains(&(instance, func))
}

/// What `attune action inspect` prints for one action.
#[derive(Debug, Clone, Serialize)]
pub struct ActionInfo {
    /// Name within the pack: `echo`, or `iface.func` for interface exports.
    pub name: String,
    /// JSON Schema of the parameters: an object keyed by parameter name.
    pub params_schema: Value,
    /// JSON Schema of the success value.
    pub result_schema: Value,
    /// JSON Schema of the typed error, when the function returns a `result`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_schema: Option<Value>,
    /// Capabilities a worker needs to run it.
    pub capabilities: Vec<String>,
    /// The WIT doc comment of the function, when the component carries it.
    pub description: Option<String>,
}

/// How a function's return maps onto an execution's result.
#[derive(Debug, Clone)]
pub(crate) enum Returns {
    /// No return value: the result is `null`.
    Nothing,
    /// A plain value: the result is that value.
    Value,
    /// A top-level `result<T, E>`: `ok` is the result, `err` fails the execution.
    Result,
}

/// One exported function of a loaded component.
pub struct Action {
    pub(crate) info: ActionInfo,
    pub(crate) params: Vec<(String, Type)>,
    pub(crate) returns: Returns,
    pub(crate) export: ComponentExportIndex,
    validator: jsonschema::Validator,
}

impl Action {
    /// Name, schemas, capabilities and description.
    pub fn info(&self) -> &ActionInfo {
        &self.info
    }

    /// Converts `params` to component values with the exact converter,
    /// reporting every error; the schema check is [`Action::validate`].
    pub fn convert_params(
        &self,
        params: &Value,
    ) -> Result<Vec<wasmtime::component::Val>, Vec<PathError>> {
        super::values::params_from_json(self.params.iter().map(|(n, t)| (n.as_str(), t)), params)
    }

    /// Checks `params` against the parameter schema, reporting every error.
    ///
    /// The JSON Schema check runs first; when it passes, the exact converter
    /// runs too, because JSON Schema validators compare numbers past 2^53
    /// through `f64` while WIT's 64-bit integers need exact bounds.
    pub fn validate(&self, params: &Value) -> Result<(), Vec<PathError>> {
        self.check(params).map(|_| ())
    }

    /// [`Action::validate`], keeping the converted values for the call.
    pub(crate) fn check(
        &self,
        params: &Value,
    ) -> Result<Vec<wasmtime::component::Val>, Vec<PathError>> {
        let mut errors = Vec::new();
        let mut vague = Vec::new();
        for e in self.validator.iter_errors(params) {
            if is_vague(&e) {
                vague.push(e.instance_path().to_string());
            } else {
                errors.extend(readable(&e));
            }
        }
        if errors.is_empty() && vague.is_empty() {
            return self.convert_params(params);
        }
        if !vague.is_empty() {
            // "not valid under any of the schemas in anyOf" helps nobody; the
            // converter knows which case was meant and what is wrong with it.
            let precise = self.convert_params(params).err().unwrap_or_default();
            for path in vague {
                let inside: Vec<PathError> = precise
                    .iter()
                    .filter(|p| p.path == path || p.path.starts_with(&format!("{path}/")))
                    .cloned()
                    .collect();
                if inside.is_empty() {
                    errors.push(PathError {
                        path,
                        message: "does not match any allowed form".into(),
                    });
                } else {
                    errors.extend(inside);
                }
            }
            errors.dedup();
        }
        Err(errors)
    }

    /// Whether the JSON Schema document alone accepts `params`.
    pub fn schema_accepts(&self, params: &Value) -> bool {
        self.validator.is_valid(params)
    }
}

/// Whether a schema error only says "none of the alternatives matched".
pub(crate) fn is_vague(e: &jsonschema::ValidationError<'_>) -> bool {
    use jsonschema::error::ValidationErrorKind;
    matches!(
        e.kind(),
        ValidationErrorKind::AnyOf { .. }
            | ValidationErrorKind::OneOfNotValid { .. }
            | ValidationErrorKind::OneOfMultipleValid { .. }
    )
}

/// Turns a schema error into messages people read: `expected string, got
/// number` at the offending value, missing and unknown fields at their own path.
pub(crate) fn readable(e: &jsonschema::ValidationError<'_>) -> Vec<PathError> {
    use jsonschema::error::{TypeKind, ValidationErrorKind};
    let path = e.instance_path().to_string();
    let child = |name: &str| format!("{path}/{}", name.replace('~', "~0").replace('/', "~1"));
    match e.kind() {
        ValidationErrorKind::Type {
            kind: TypeKind::Single(expected),
        } => vec![PathError {
            message: format!("expected {expected}, got {}", json_kind(e.instance())),
            path,
        }],
        ValidationErrorKind::Required { property } => vec![PathError {
            path: child(property.as_str().unwrap_or_default()),
            message: "missing required field".into(),
        }],
        ValidationErrorKind::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|name| PathError {
                path: child(name),
                message: "unknown field".into(),
            })
            .collect(),
        _ => vec![PathError {
            message: e.to_string(),
            path,
        }],
    }
}

pub(crate) struct ComponentInner {
    pub(crate) digest: String,
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) actions: Vec<Action>,
    pub(crate) imports: Vec<String>,
    pub(crate) capabilities: Vec<String>,
    pub(crate) description: Option<String>,
}

/// A validated, precompiled, pre-instantiated component: a pack of actions.
///
/// Cheap to clone; share it between executions.
#[derive(Clone)]
pub struct LoadedComponent(pub(crate) Arc<ComponentInner>);

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("digest", &self.digest())
            .field(
                "actions",
                &self
                    .actions()
                    .iter()
                    .map(|a| &a.info.name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl LoadedComponent {
    /// SHA-256 of the component bytes, hex.
    pub fn digest(&self) -> &str {
        &self.0.digest
    }

    /// Every action, in export order.
    pub fn actions(&self) -> &[Action] {
        &self.0.actions
    }

    /// The action called `name` (`echo`, or `iface.func`).
    pub fn action(&self, name: &str) -> Option<&Action> {
        self.0.actions.iter().find(|a| a.info.name == name)
    }

    /// Every interface the component imports, as written in the component.
    pub fn imports(&self) -> &[String] {
        &self.0.imports
    }

    /// What a worker needs to run this pack's actions.
    pub fn capabilities(&self) -> &[String] {
        &self.0.capabilities
    }

    /// The world's doc comment, when the component carries it.
    pub fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }

    /// `{"actions": [...]}` as `attune action inspect` prints it.
    pub fn inspect(&self) -> Value {
        json!({
            "digest": self.digest(),
            "description": self.description(),
            "imports": self.imports(),
            "actions": self.actions().iter().map(|a| &a.info).collect::<Vec<_>>(),
        })
    }
}

/// Doc comments read from the `attune:docs` custom section.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Docs {
    #[serde(default)]
    world: Option<String>,
    #[serde(default)]
    functions: BTreeMap<String, String>,
}

impl Docs {
    pub(crate) fn world_description(&self) -> Option<String> {
        self.world.clone()
    }
}

/// Finds the `attune:docs` section anywhere in the component (the SDK's
/// section sits inside the core module that `wasm-component-ld` wrapped).
pub(crate) fn read_docs(bytes: &[u8]) -> Docs {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else { break };
        if let wasmparser::Payload::CustomSection(section) = payload
            && section.name() == DOCS_SECTION
        {
            return serde_json::from_slice(section.data()).unwrap_or_default();
        }
    }
    Docs::default()
}

/// Maps an import name to the capability a worker must advertise, or `None`
/// for the standard WASI interfaces every worker links.
pub fn capability_for_import(import: &str) -> Option<String> {
    let (package, rest) = import.split_once('/').unwrap_or((import, ""));
    let package_no_version = package.split('@').next().unwrap_or(package);
    if super::capabilities::BASELINE_PACKAGES.contains(&package_no_version) {
        return None;
    }
    if let Some(wasi) = package_no_version.strip_prefix("wasi:") {
        // WASI interfaces are matched on their major line: `@0.2`.
        let (iface, version) = rest.split_once('@').unwrap_or((rest, ""));
        let line: Vec<&str> = version.split('.').take(2).collect();
        let line = line.join(".");
        return Some(if line.is_empty() {
            format!("wasi:{wasi}/{iface}")
        } else {
            format!("wasi:{wasi}/{iface}@{line}")
        });
    }
    Some(import.to_string())
}

/// What [`describe`] finds: actions, imports, required capabilities.
pub(crate) type Described = (Vec<Action>, Vec<String>, Vec<String>);

/// Walks the component's exports and builds its actions.
pub(crate) fn describe(
    engine: &Engine,
    component: &Component,
    docs: &Docs,
) -> Result<Described, LoadError> {
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let mut capabilities = vec![super::capabilities::RUNTIME_KIND.to_string()];
    for import in &imports {
        if let Some(cap) = capability_for_import(import)
            && !capabilities.contains(&cap)
        {
            capabilities.push(cap);
        }
    }

    let mut actions = Vec::new();
    for (export_name, item) in ty.exports(engine) {
        match item.ty {
            ComponentItem::ComponentFunc(func) => {
                if is_toolchain_export(None, export_name) {
                    continue;
                }
                let index = component
                    .get_export_index(None, export_name)
                    .ok_or_else(|| {
                        LoadError::Invalid(format!("export `{export_name}` vanished"))
                    })?;
                actions.push(action(export_name, &func, index, docs, &capabilities)?);
            }
            ComponentItem::ComponentInstance(instance) => {
                let Some(parent) = component.get_export_index(None, export_name) else {
                    continue;
                };
                let short = interface_short_name(export_name);
                for (func_name, inner) in instance.exports(engine) {
                    let ComponentItem::ComponentFunc(func) = inner.ty else {
                        continue;
                    };
                    if is_toolchain_export(Some(export_name), func_name) {
                        continue;
                    }
                    let index = component
                        .get_export_index(Some(&parent), func_name)
                        .ok_or_else(|| {
                            LoadError::Invalid(format!(
                                "export `{export_name}#{func_name}` vanished"
                            ))
                        })?;
                    let name = format!("{short}.{func_name}");
                    actions.push(action(&name, &func, index, docs, &capabilities)?);
                }
            }
            _ => {}
        }
    }
    let mut seen = std::collections::HashSet::new();
    for a in &actions {
        if !seen.insert(a.info.name.clone()) {
            return Err(LoadError::Invalid(format!(
                "two exports map to the action name `{}`",
                a.info.name
            )));
        }
    }
    Ok((actions, imports, capabilities))
}

/// `attune:demo/text@0.1.0` → `text`; a plain kebab name stays as it is.
fn interface_short_name(export: &str) -> &str {
    let no_version = export.split('@').next().unwrap_or(export);
    no_version.rsplit('/').next().unwrap_or(no_version)
}

fn action(
    name: &str,
    func: &wasmtime::component::types::ComponentFunc,
    export: ComponentExportIndex,
    docs: &Docs,
    capabilities: &[String],
) -> Result<Action, LoadError> {
    let description = docs.functions.get(name).cloned();
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    let mut params = Vec::new();
    for (param, ty) in func.params() {
        let s = schema::for_type(&ty).map_err(|e| LoadError::Unsupported {
            action: name.to_string(),
            place: format!("parameter `{param}`"),
            reason: e,
        })?;
        if !schema::is_nullable(&ty) {
            required.push(param.to_string());
        }
        properties.insert(param.to_string(), s);
        params.push((param.to_string(), ty));
    }
    let mut params_schema = json!({
        "$schema": schema::DIALECT,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    });
    if let Some(d) = &description {
        params_schema["description"] = Value::String(d.clone());
    }

    let result_err = |e| LoadError::Unsupported {
        action: name.to_string(),
        place: "result".to_string(),
        reason: e,
    };
    let results: Vec<Type> = func.results().collect();
    let (returns, result_schema, error_schema) = match results.as_slice() {
        [] => (Returns::Nothing, json!({"type": "null"}), None),
        [Type::Result(r)] => {
            let ok = match r.ok() {
                Some(t) => schema::for_type(&t).map_err(result_err)?,
                None => json!({"type": "null"}),
            };
            let err = match r.err() {
                Some(t) => schema::for_type(&t).map_err(result_err)?,
                None => json!({"type": "null"}),
            };
            (Returns::Result, ok, Some(err))
        }
        [t] => (
            Returns::Value,
            schema::for_type(t).map_err(result_err)?,
            None,
        ),
        _ => {
            return Err(LoadError::Invalid(format!(
                "function `{name}` returns several values; actions return at most one"
            )));
        }
    };

    let validator = jsonschema::validator_for(&params_schema)
        .map_err(|e| LoadError::Invalid(format!("schema of `{name}`: {e}")))?;
    Ok(Action {
        info: ActionInfo {
            name: name.to_string(),
            params_schema,
            result_schema,
            error_schema,
            capabilities: capabilities.to_vec(),
            description,
        },
        params,
        returns,
        export,
        validator,
    })
}

/// Every error `value` has against `schema`, in readable form. For schemas
/// that do not come from WIT (trigger parameters, payloads).
pub fn schema_errors(schema: &Value, value: &Value) -> Vec<PathError> {
    match jsonschema::validator_for(schema) {
        Ok(validator) => validator_errors(&validator, value),
        Err(e) => vec![PathError {
            path: String::new(),
            message: format!("the schema itself is invalid: {e}"),
        }],
    }
}

/// [`schema_errors`] with a validator compiled once, for schemas checked often.
pub fn validator_errors(validator: &jsonschema::Validator, value: &Value) -> Vec<PathError> {
    validator
        .iter_errors(value)
        .flat_map(|e| {
            if is_vague(&e) {
                vec![PathError {
                    path: e.instance_path().to_string(),
                    message: "does not match any allowed form".into(),
                }]
            } else {
                readable(&e)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_wasi_needs_no_capability() {
        assert_eq!(capability_for_import("wasi:cli/stdout@0.2.6"), None);
        assert_eq!(capability_for_import("wasi:sockets/tcp@0.2.0"), None);
    }

    #[test]
    fn http_and_attune_interfaces_are_capabilities() {
        assert_eq!(
            capability_for_import("wasi:http/outgoing-handler@0.2.6").as_deref(),
            Some("wasi:http/outgoing-handler@0.2")
        );
        assert_eq!(
            capability_for_import("attune:action/log@0.1.0").as_deref(),
            Some("attune:action/log@0.1.0")
        );
    }

    #[test]
    fn interface_exports_are_named_by_their_short_name() {
        assert_eq!(interface_short_name("attune:demo/text@0.1.0"), "text");
        assert_eq!(interface_short_name("text"), "text");
    }
}
