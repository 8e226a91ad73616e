//! `attune rule create|list|show|enable|disable|delete`: rules on a server.

use std::path::PathBuf;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::client::ClientArgs;
use super::output::{print_json, table};

/// `attune rule …`
#[derive(Debug, Subcommand)]
pub enum RuleCommand {
    /// Create a rule from a YAML or JSON file.
    Create {
        /// The rule document.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// List rules.
    List,
    /// Show a rule.
    Show {
        /// Rule ref.
        r#ref: String,
    },
    /// Enable a rule.
    Enable {
        /// Rule ref.
        r#ref: String,
    },
    /// Disable a rule.
    Disable {
        /// Rule ref.
        r#ref: String,
    },
    /// Delete a rule.
    Delete {
        /// Rule ref.
        r#ref: String,
    },
}

pub(super) async fn run(cmd: RuleCommand, args: &ClientArgs) -> anyhow::Result<i32> {
    let client = args.client()?;
    let v = match cmd {
        RuleCommand::Create { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
            let doc: Value = serde_norway::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let v = client.post("/rules", doc).await?;
            for w in v["warnings"].as_array().into_iter().flatten() {
                eprintln!("warning: {}", w.as_str().unwrap_or_default());
            }
            v
        }
        RuleCommand::List => {
            let v = client.get("/rules?limit=500").await?;
            if !args.json {
                table(&v["items"], &["ref", "trigger", "action", "enabled"]);
                return Ok(0);
            }
            v
        }
        RuleCommand::Show { r#ref } => client.get(&format!("/rules/{ref}")).await?,
        RuleCommand::Enable { r#ref } => {
            client
                .post(&format!("/rules/{ref}/enable"), json!({}))
                .await?
        }
        RuleCommand::Disable { r#ref } => {
            client
                .post(&format!("/rules/{ref}/disable"), json!({}))
                .await?
        }
        RuleCommand::Delete { r#ref } => {
            client
                .call(Method::DELETE, &format!("/rules/{ref}"), None)
                .await?;
            eprintln!("deleted {ref}");
            return Ok(0);
        }
    };
    print_json(&v);
    Ok(0)
}
