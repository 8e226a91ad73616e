//! The `attune:docs` section: WIT doc comments of a world and its exports.
//!
//! Shared by the SDK's `generate!` macro and `attune action build` (which
//! appends the section to Python and JavaScript components), so every
//! toolchain's components describe their actions the same way.

use std::collections::BTreeMap;

use wit_parser::{Resolve, WorldId, WorldItem, WorldKey};

/// The section's content: JSON with the world's docs and each function's.
pub fn section(resolve: &Resolve, world: WorldId) -> String {
    serde_json::json!({
        "version": 1,
        "world": resolve.worlds[world].docs.contents,
        "functions": function_docs(resolve, world),
    })
    .to_string()
}

/// Doc comments of every exported function, keyed the way the host names
/// actions: `func` at the top level, `interface.func` inside an interface.
fn function_docs(resolve: &Resolve, world: WorldId) -> BTreeMap<String, String> {
    let mut docs = BTreeMap::new();
    for (key, item) in &resolve.worlds[world].exports {
        match item {
            WorldItem::Function(f) => {
                if let Some(d) = &f.docs.contents {
                    docs.insert(f.name.clone(), d.clone());
                }
            }
            WorldItem::Interface { id, .. } => {
                let iface = &resolve.interfaces[*id];
                let prefix = match key {
                    WorldKey::Name(n) => n.clone(),
                    WorldKey::Interface(_) => iface.name.clone().unwrap_or_default(),
                };
                if let Some(d) = &iface.docs.contents {
                    docs.insert(prefix.clone(), d.clone());
                }
                for (name, f) in &iface.functions {
                    if let Some(d) = &f.docs.contents {
                        docs.insert(format!("{prefix}.{name}"), d.clone());
                    }
                }
            }
            WorldItem::Type { .. } => {}
        }
    }
    docs
}
