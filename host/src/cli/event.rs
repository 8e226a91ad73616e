//! `attune event fire|list`: events on a server.

use clap::Subcommand;
use serde_json::{Value, json};

use super::client::ClientArgs;
use super::output::{print_json, table};

/// `attune event …`
#[derive(Debug, Subcommand)]
pub enum EventCommand {
    /// Fire a manual event.
    Fire {
        /// Trigger type ref (core.manual).
        trigger: String,
        /// Payload, a JSON object.
        #[arg(long, default_value = "{}")]
        payload: String,
    },
    /// List events, newest first.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
}

pub(super) async fn run(cmd: EventCommand, args: &ClientArgs) -> anyhow::Result<i32> {
    let client = args.client()?;
    let v = match cmd {
        EventCommand::Fire { trigger, payload } => {
            let payload: Value = serde_json::from_str(&payload)
                .map_err(|e| anyhow::anyhow!("--payload is not JSON: {e}"))?;
            client
                .post("/events", json!({"trigger": trigger, "payload": payload}))
                .await?
        }
        EventCommand::List { limit } => {
            let v = client.get(&format!("/events?limit={limit}")).await?;
            if !args.json {
                table(&v["items"], &["id", "trigger", "source", "created_at"]);
                return Ok(0);
            }
            v
        }
    };
    print_json(&v);
    Ok(0)
}
