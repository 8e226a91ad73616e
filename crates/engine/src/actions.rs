//! What an action takes: its parameters checked against a component
//! export's WIT-derived validator or a workflow's input schema.

use serde_json::Value;

use super::{Core, EngineError};
use attune_runtime::PathError;
use attune_storage::ActionRecord;

/// Checks `params` against `action`: a component export's WIT-derived
/// validator, or a workflow's input schema. The outer error is the
/// engine's; the inner, every parameter problem.
pub async fn check_params(
    core: &Core,
    action: &ActionRecord,
    params: &Value,
) -> Result<Result<(), Vec<PathError>>, EngineError> {
    if action.sensor {
        return Err(EngineError::not_found("action", &action.r#ref));
    }
    if action.workflow.is_some() {
        let errors = attune_runtime::schema_errors(&action.params_schema, params);
        return Ok(if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        });
    }
    let pack = core.component(&action.component).await?;
    let export = pack
        .action(&action.name)
        .ok_or_else(|| EngineError::not_found("action", &action.r#ref))?;
    Ok(export.validate(params))
}
