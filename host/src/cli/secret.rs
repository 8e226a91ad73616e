//! `attune secret set|list|delete`: secrets on a server. A value is read
//! from standard input (piped, or typed at a prompt), never from the
//! command line, where it would land in the shell history and `ps`.

use std::io::{BufRead as _, IsTerminal as _};

use clap::Subcommand;
use reqwest::Method;
use serde_json::json;
use zeroize::Zeroizing;

use super::client::ClientArgs;
use super::output::{print_json, table};
use crate::client::Body;

/// `attune secret …`
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create or replace a secret; the value comes from standard input.
    Set {
        /// Its name: letters, digits, `_`, `-`.
        name: String,
    },
    /// List secret names and when they were set.
    List,
    /// Delete a secret.
    Delete {
        /// Its name.
        name: String,
    },
}

/// Reads one value from standard input: a line typed at a prompt, or
/// everything piped in (without the final newline).
fn read_value(name: &str) -> anyhow::Result<Zeroizing<String>> {
    let stdin = std::io::stdin();
    let mut value = Zeroizing::new(String::new());
    if stdin.is_terminal() {
        eprint!("value of {name}: ");
        stdin.lock().read_line(&mut value)?;
    } else {
        std::io::Read::read_to_string(&mut stdin.lock(), &mut value)?;
    }
    let trimmed = Zeroizing::new(value.trim_end_matches(['\r', '\n']).to_string());
    anyhow::ensure!(!trimmed.is_empty(), "no value on standard input");
    Ok(trimmed)
}

pub(super) async fn run(cmd: SecretCommand, args: &ClientArgs) -> anyhow::Result<i32> {
    let client = args.client()?;
    match cmd {
        SecretCommand::Set { name } => {
            let value = read_value(&name)?;
            let body = Body::Json(json!({"value": value.as_str()}));
            client
                .call(Method::PUT, &format!("/secrets/{name}"), Some(body))
                .await?;
            eprintln!("secret {name} set");
        }
        SecretCommand::List => {
            let v = client.get("/secrets?limit=500").await?;
            if args.json {
                print_json(&v);
            } else {
                table(&v["items"], &["name", "created_at", "updated_at"]);
            }
        }
        SecretCommand::Delete { name } => {
            client
                .call(Method::DELETE, &format!("/secrets/{name}"), None)
                .await?;
            eprintln!("secret {name} deleted");
        }
    }
    Ok(0)
}
