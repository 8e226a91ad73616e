//! `attune execution show` of a workflow: its tasks as a tree, nested
//! workflows indented under the task that ran them.

use std::collections::HashMap;

use serde_json::Value;

use crate::client::{Client, ClientError};

/// Tasks shown per workflow at most (a `with_items` of thousands is cut,
/// saying how many were left out).
const MAX_SHOWN: usize = 500;

/// The tree of workflow execution `root` (already fetched), one line per
/// task run: id, task, action, status.
pub async fn render(client: &Client, root: &Value) -> Result<String, ClientError> {
    let mut out = format!(
        "{} {} {}{}\n",
        root["id"],
        text(&root["action"]),
        text(&root["status"]),
        error_note(root)
    );
    let mut kinds: HashMap<String, bool> = HashMap::new();
    // Depth-first: each task's line, then (for a workflow) its own tasks.
    enum Item {
        Line(String),
        Tasks(i64, String),
    }
    let mut stack = vec![Item::Tasks(
        root["id"].as_i64().unwrap_or_default(),
        String::new(),
    )];
    while let Some(item) = stack.pop() {
        let (id, indent) = match item {
            Item::Line(line) => {
                out.push_str(&line);
                out.push('\n');
                continue;
            }
            Item::Tasks(id, indent) => (id, indent),
        };
        let page = client
            .get(&format!("/executions?parent={id}&limit={MAX_SHOWN}"))
            .await?;
        let mut children: Vec<Value> = page["items"].as_array().cloned().unwrap_or_default();
        children.reverse();
        let more = !page["next"].is_null();
        let mut items = Vec::new();
        for (n, child) in children.iter().enumerate() {
            let last = n + 1 == children.len() && !more;
            items.push(Item::Line(format!(
                "{indent}{} {} {} {} {}{}",
                if last { "└─" } else { "├─" },
                child["id"],
                text(&child["task"]),
                text(&child["action"]),
                text(&child["status"]),
                error_note(child)
            )));
            if is_workflow(client, &mut kinds, &child["action"]).await? {
                let deeper = format!("{indent}{}  ", if last { " " } else { "│" });
                items.push(Item::Tasks(
                    child["id"].as_i64().unwrap_or_default(),
                    deeper,
                ));
            }
        }
        if more {
            items.push(Item::Line(format!("{indent}└─ … more tasks")));
        }
        stack.extend(items.into_iter().rev());
    }
    Ok(out)
}

/// Whether `action` is a workflow (asked once per action).
async fn is_workflow(
    client: &Client,
    kinds: &mut HashMap<String, bool>,
    action: &Value,
) -> Result<bool, ClientError> {
    let action = text(action);
    if let Some(known) = kinds.get(&action) {
        return Ok(*known);
    }
    let workflow = match client.get(&format!("/actions/{action}")).await {
        Ok(a) => a["workflow"].is_object(),
        Err(_) => false,
    };
    kinds.insert(action, workflow);
    Ok(workflow)
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn error_note(e: &Value) -> String {
    match &e["error"] {
        Value::Null => String::new(),
        Value::String(s) => format!(" — {s}"),
        other => format!(" — {other}"),
    }
}
