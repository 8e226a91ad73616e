//! `attune sensor list|show|enable|disable`: packs' sensors on a server.

use clap::Subcommand;
use serde_json::json;

use super::client::ClientArgs;
use super::output::{print_json, table};

/// `attune sensor …`
#[derive(Debug, Subcommand)]
pub enum SensorCommand {
    /// List sensors with their schedules and state.
    List,
    /// Show a sensor with its last polls (status, events, error).
    Show {
        /// Sensor ref, `<pack>.<name>`.
        r#ref: String,
    },
    /// Enable a sensor: it polls from now on.
    Enable {
        /// Sensor ref.
        r#ref: String,
    },
    /// Disable a sensor: it polls no more.
    Disable {
        /// Sensor ref.
        r#ref: String,
    },
}

pub(super) async fn run(cmd: SensorCommand, args: &ClientArgs) -> anyhow::Result<i32> {
    let client = args.client()?;
    let v = match cmd {
        SensorCommand::List => {
            let v = client.get("/sensors?limit=500").await?;
            if !args.json {
                table(
                    &v["items"],
                    &[
                        "ref",
                        "export",
                        "every_ms",
                        "enabled",
                        "failures",
                        "next_run_at",
                    ],
                );
                return Ok(0);
            }
            v
        }
        SensorCommand::Show { r#ref } => client.get(&format!("/sensors/{ref}")).await?,
        SensorCommand::Enable { r#ref } => {
            client
                .post(&format!("/sensors/{ref}/enable"), json!({}))
                .await?
        }
        SensorCommand::Disable { r#ref } => {
            client
                .post(&format!("/sensors/{ref}/disable"), json!({}))
                .await?
        }
    };
    print_json(&v);
    Ok(0)
}
