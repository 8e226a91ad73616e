//! `attune execution list|show|cancel|replay`: executions on a server.

use clap::Subcommand;
use serde_json::{Value, json};

use super::client::ClientArgs;
use super::output::{print_json, table};
use crate::client::{Client, query};
use attune_util::units::parse_duration;

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
    /// Replay an ended execution against its journal (nothing leaves the
    /// sandbox): one by id, or every run of a rule since a time, printed as
    /// a table of identical / different / diverged.
    Replay {
        /// Execution id.
        #[arg(required_unless_present = "rule", conflicts_with = "rule")]
        id: Option<i64>,
        /// Run this registered version of the pack instead of the one that ran.
        #[arg(long)]
        pack_version: Option<String>,
        /// Replay the runs of this rule.
        #[arg(long, requires = "since")]
        rule: Option<String>,
        /// With --rule: runs created this long ago or later (`24h`, `30m`).
        #[arg(long, value_parser = parse_duration)]
        since: Option<std::time::Duration>,
        /// With --rule: most runs to replay.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
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
        ExecutionCommand::Replay {
            id: Some(id),
            pack_version,
            ..
        } => {
            let v = replay(&client, id, pack_version.as_deref()).await?;
            if !args.json {
                print_json(&v);
                return Ok(if v["identical"] == true { 0 } else { 1 });
            }
            v
        }
        ExecutionCommand::Replay {
            rule,
            since,
            pack_version,
            limit,
            ..
        } => {
            let since = since.unwrap_or_default();
            let since = now_ms() - since.as_millis() as i64;
            return replay_many(
                &client,
                args.json,
                rule.as_deref().unwrap_or_default(),
                since,
                pack_version.as_deref(),
                limit as usize,
            )
            .await;
        }
    };
    print_json(&v);
    Ok(0)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn replay(client: &Client, id: i64, pack_version: Option<&str>) -> anyhow::Result<Value> {
    let body = match pack_version {
        Some(v) => json!({ "pack_version": v }),
        None => json!({}),
    };
    Ok(client
        .post(&format!("/executions/{id}/replay"), body)
        .await?)
}

/// Replays every ended run of `rule` created at or after `since` (at most
/// `limit`), oldest first, and prints one line each: identical, different
/// (the result changed), diverged (the run asked for what its journal did
/// not hold) or not replayed (no journal, and why). Exits 1 unless all
/// were identical.
async fn replay_many(
    client: &Client,
    json_out: bool,
    rule: &str,
    since: i64,
    pack_version: Option<&str>,
    limit: usize,
) -> anyhow::Result<i32> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    while ids.len() < limit {
        let since = since.to_string();
        let mut pairs = vec![("rule", rule), ("since", since.as_str()), ("limit", "500")];
        if let Some(a) = &after {
            pairs.push(("after", a.as_str()));
        }
        let page = client.get(&format!("/executions?{}", query(pairs))).await?;
        for e in page["items"].as_array().into_iter().flatten() {
            let ended = matches!(
                e["status"].as_str(),
                Some("succeeded" | "failed" | "timed_out")
            );
            if ended && let Some(id) = e["id"].as_i64() {
                ids.push(id);
            }
        }
        after = page["next"].as_str().map(str::to_string);
        if after.is_none() {
            break;
        }
    }
    ids.truncate(limit);
    ids.reverse();
    let mut rows = Vec::new();
    let mut all_identical = true;
    for id in ids {
        let (outcome, detail) = match replay(client, id, pack_version).await {
            Ok(v) if v["identical"] == true => ("identical", String::new()),
            Ok(v) if v["divergence"].is_object() => (
                "diverged",
                format!(
                    "call {}: expected {}, got {}",
                    v["divergence"]["call"], v["divergence"]["expected"], v["divergence"]["got"]
                ),
            ),
            Ok(v) => (
                "different",
                format!("{} → {}", v["original_result"], v["result"]),
            ),
            Err(e) => ("not replayed", e.to_string()),
        };
        all_identical &= outcome == "identical";
        rows.push(json!({ "id": id, "outcome": outcome, "detail": detail }));
    }
    if json_out {
        print_json(&Value::Array(rows));
    } else {
        table(&Value::Array(rows), &["id", "outcome", "detail"]);
    }
    Ok(if all_identical { 0 } else { 1 })
}
