//! `attune execution list|show|cancel`: executions on a server.

use clap::Subcommand;
use serde_json::json;

use super::client::ClientArgs;
use super::output::{print_json, table};
use crate::client::query;

/// `attune execution …`
#[derive(Debug, Subcommand)]
pub enum ExecutionCommand {
    /// List executions, newest first.
    List {
        /// Only this status.
        #[arg(long)]
        status: Option<String>,
        /// Only this action.
        #[arg(long)]
        action: Option<String>,
        /// Only runs of this rule.
        #[arg(long)]
        rule: Option<String>,
        /// Only the tasks of this workflow execution.
        #[arg(long)]
        parent: Option<i64>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Show an execution with its result and output; a workflow as the
    /// tree of its tasks with their statuses (`--json` for the record).
    Show {
        /// Execution id.
        id: i64,
    },
    /// Cancel an execution.
    Cancel {
        /// Execution id.
        id: i64,
    },
}

pub(super) async fn run(cmd: ExecutionCommand, args: &ClientArgs) -> anyhow::Result<i32> {
    let client = args.client()?;
    let v = match cmd {
        ExecutionCommand::List {
            status,
            action,
            rule,
            parent,
            limit,
        } => {
            let limit = limit.to_string();
            let parent = parent.map(|p| p.to_string());
            let filters = [
                ("status", status),
                ("action", action),
                ("rule", rule),
                ("parent", parent),
            ];
            let pairs = std::iter::once(("limit", limit.as_str())).chain(
                filters
                    .iter()
                    .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v))),
            );
            let path = format!("/executions?{}", query(pairs));
            let v = client.get(&path).await?;
            if !args.json {
                table(
                    &v["items"],
                    &[
                        "id",
                        "action",
                        "status",
                        "rule",
                        "status_reason",
                        "created_at",
                    ],
                );
                return Ok(0);
            }
            v
        }
        ExecutionCommand::Show { id } => {
            let v = client.get(&format!("/executions/{id}")).await?;
            if !args.json && v["workflow"].is_object() {
                print!("{}", super::tree::render(&client, &v).await?);
                return Ok(0);
            }
            v
        }
        ExecutionCommand::Cancel { id } => {
            client
                .post(&format!("/executions/{id}/cancel"), json!({}))
                .await?
        }
    };
    print_json(&v);
    Ok(0)
}
