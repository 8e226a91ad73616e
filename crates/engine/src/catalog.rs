//! What is installed: packs with their grants, their actions and the
//! trigger types, read and changed here so every change drops the caches
//! that hold it and wakes what waits on it.

use attune_storage::{ActionRecord, Grants, PackRecord, Page, TriggerTypeRecord};

use crate::{Core, EngineError};

/// One pack.
pub async fn pack(core: &Core, name: &str) -> Result<Option<PackRecord>, EngineError> {
    Ok(core.storage.get_pack(name).await?)
}

/// A page of packs, by name.
pub async fn packs(core: &Core, page: &Page) -> Result<Vec<PackRecord>, EngineError> {
    Ok(core.storage.list_packs(page).await?)
}

/// Replaces a pack's grants (checked by the caller with
/// [`crate::packs::check_grants`]); `None` when there is no such pack.
pub async fn set_grants(
    core: &Core,
    name: &str,
    grants: &Grants,
) -> Result<Option<PackRecord>, EngineError> {
    if !core.storage.set_grants(name, grants).await? {
        return Ok(None);
    }
    core.cache.actions_changed();
    pack(core, name).await
}

/// Deletes a pack with its actions; whether there was one.
pub async fn delete_pack(core: &Core, name: &str) -> Result<bool, EngineError> {
    let deleted = core.storage.delete_pack(name).await?;
    if deleted {
        core.cache.actions_changed();
        core.dispatch.packs_changed.notify_waiters();
    }
    Ok(deleted)
}

/// A page of actions (sensors left out), by ref, of one pack or all.
pub async fn actions(
    core: &Core,
    pack: Option<&str>,
    page: &Page,
) -> Result<Vec<ActionRecord>, EngineError> {
    Ok(core.storage.list_actions(pack, page).await?)
}

/// One action that can be run (a sensor is not), as the database has it.
pub async fn action(core: &Core, r#ref: &str) -> Result<Option<ActionRecord>, EngineError> {
    Ok(core.storage.get_action(r#ref).await?.filter(|a| !a.sensor))
}

/// One action or sensor export through this node's read cache: for the
/// paths that run it, where a lookup per execution would cost a query.
pub async fn cached_export(core: &Core, r#ref: &str) -> Result<Option<ActionRecord>, EngineError> {
    Ok(core.cache.action(&core.storage, r#ref).await?)
}

/// A page of trigger types, by ref.
pub async fn trigger_types(
    core: &Core,
    page: &Page,
) -> Result<Vec<TriggerTypeRecord>, EngineError> {
    Ok(core.storage.list_trigger_types(page).await?)
}

/// One trigger type.
pub async fn trigger_type(
    core: &Core,
    r#ref: &str,
) -> Result<Option<TriggerTypeRecord>, EngineError> {
    Ok(core.storage.get_trigger_type(r#ref).await?)
}
