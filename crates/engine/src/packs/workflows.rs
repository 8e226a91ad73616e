//! A pack's workflows at upload: parsed, checked against the actions they
//! name (this pack's and those already registered), and turned into actions.

use attune_runtime::PathError;
use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use super::PackError;
use crate::rules::secret_refs;
use crate::workflows::Workflow;
use crate::workflows::definition::Actions;
use attune_storage::{NewAction, Storage, TriggerTypeRecord};

/// The actions a pack's workflows may name (`ref → parameter schema`), and
/// the trigger types their `wait` tasks may.
struct Known(HashMap<String, Value>, HashMap<String, TriggerTypeRecord>);

impl Actions for Known {
    fn params_schema(&self, action: &str) -> Option<Value> {
        self.0.get(action).cloned()
    }

    fn trigger(&self, r#ref: &str) -> Option<TriggerTypeRecord> {
        self.1.get(r#ref).cloned()
    }
}

/// Parses and checks `files` (`(path, YAML)`) of pack `pack`, whose
/// component actions are `actions`; returns the workflows as actions.
pub async fn check(
    storage: &Storage,
    pack: &str,
    files: &[(String, String)],
    actions: &BTreeMap<String, NewAction>,
    triggers: &[TriggerTypeRecord],
    granted: &[String],
) -> Result<Vec<NewAction>, PackError> {
    let invalid = |file: &str, path: String, message: String| PackError::InvalidWorkflow {
        file: file.to_string(),
        errors: vec![PathError::new(path, message)],
    };
    let mut parsed: Vec<(&str, String, Workflow)> = Vec::new();
    for (file, text) in files {
        let name = file
            .trim_start_matches("./")
            .strip_prefix("workflows/")
            .and_then(|f| f.strip_suffix(".yaml").or_else(|| f.strip_suffix(".yml")))
            .filter(|n| crate::rules::valid_ref(&format!("{pack}.{n}")))
            .ok_or_else(|| {
                invalid(
                    file,
                    String::new(),
                    "a workflow is `workflows/<name>.yaml`, its name lowercase letters, digits, `_` or `-`".into(),
                )
            })?
            .to_string();
        let flow = Workflow::parse(text).map_err(|e| invalid(file, e.path, e.message))?;
        if actions.contains_key(&format!("{pack}.{name}"))
            || parsed.iter().any(|(_, n, _)| *n == name)
        {
            return Err(invalid(
                file,
                String::new(),
                format!("the pack already has an action `{pack}.{name}`"),
            ));
        }
        parsed.push((file, name, flow));
    }
    // What tasks may name: this pack's actions and workflows, then any
    // registered action of another pack.
    let mut known: HashMap<String, Value> = actions
        .values()
        .filter(|a| !a.sensor)
        .map(|a| (a.r#ref.clone(), a.params_schema.clone()))
        .collect();
    for (_, name, flow) in &parsed {
        known.insert(format!("{pack}.{name}"), flow.input.clone());
    }
    let mut known_triggers: HashMap<String, TriggerTypeRecord> = triggers
        .iter()
        .map(|t| (t.r#ref.clone(), t.clone()))
        .collect();
    for (_, _, flow) in &parsed {
        for wait in flow.tasks.values().filter_map(|t| t.wait.as_ref()) {
            if !known_triggers.contains_key(&wait.trigger)
                && let Some(t) = storage.get_trigger_type(&wait.trigger).await?
            {
                known_triggers.insert(t.r#ref.clone(), t);
            }
        }
        for task in flow.tasks.values().filter(|t| !t.action.is_empty()) {
            if known.contains_key(&task.action) || task.action.starts_with(&format!("{pack}.")) {
                continue;
            }
            if let Some(a) = storage.get_action(&task.action).await?
                && !a.sensor
            {
                known.insert(a.r#ref, a.params_schema);
            }
        }
    }
    let known = Known(known, known_triggers);
    let mut out = Vec::new();
    for (file, name, flow) in parsed {
        let mut errors = flow.check(&known);
        errors.extend(ungranted(storage, pack, granted, &flow).await?);
        if !errors.is_empty() {
            return Err(PackError::InvalidWorkflow {
                file: file.to_string(),
                errors,
            });
        }
        out.push(NewAction {
            r#ref: format!("{pack}.{name}"),
            name: name.clone(),
            component: String::new(),
            params_schema: flow.input.clone(),
            result_schema: json!({}),
            error_schema: None,
            capabilities: Vec::new(),
            description: flow.description.clone(),
            workflow: Some(serde_json::to_value(&flow).expect("a workflow serializes")),
            sensor: false,
            policies: Vec::new(),
        });
    }
    Ok(out)
}

/// Each secret a task hands to an action whose pack is not granted it
/// (`granted`: what this pack's manifest grants it), at the task's input.
async fn ungranted(
    storage: &Storage,
    pack: &str,
    granted: &[String],
    flow: &Workflow,
) -> Result<Vec<PathError>, PackError> {
    let mut errors = Vec::new();
    for (task_name, task) in &flow.tasks {
        let (refs, _) = secret_refs::refs_in_params(&task.input);
        if refs.is_empty() {
            continue;
        }
        let owner = task.action.split_once('.').map_or("", |(p, _)| p);
        let secrets = if owner == pack {
            granted.to_vec()
        } else {
            storage
                .get_pack(owner)
                .await?
                .map(|p| p.grants.secrets)
                .unwrap_or_default()
        };
        for (secret, paths) in refs {
            if !secrets.contains(&secret) {
                errors.push(PathError::new(
                    format!("/tasks/{task_name}/input{}", paths[0]),
                    format!(
                        "secret `{secret}` is not granted to pack `{owner}`; an admin grants it \
                         with `attune pack grant {owner} --secret {secret}`"
                    ),
                ));
            }
        }
    }
    Ok(errors)
}
