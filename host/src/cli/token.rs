//! `attune token create|list|revoke`: API tokens on a server, or — with
//! `--data-dir` (or `--database-url`) — straight against the database, for
//! the operator who lost every admin token.

use anyhow::Context as _;
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use super::client::ClientArgs;
use super::output::{print_json, table};
use crate::api::auth::{hash_token, new_token};
use attune_storage::{Role, Storage};

/// `attune token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (shown once).
    Create {
        /// A name to recognise it by.
        name: String,
        /// viewer, operator, admin or worker.
        #[arg(long, default_value = "viewer")]
        role: String,
        /// Create it offline in this data directory's database (the server's
        /// `--data-dir`), without a server or a token.
        #[arg(long, conflicts_with = "database_url")]
        data_dir: Option<std::path::PathBuf>,
        /// Create it offline in this database (the server's `--database-url`).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// List tokens (names, roles and times; never a token).
    List,
    /// Revoke a token by id (the last admin token cannot be).
    Revoke {
        /// Its id, from `attune token list`.
        id: i64,
    },
}

pub(super) async fn run(cmd: TokenCommand, args: &ClientArgs) -> anyhow::Result<i32> {
    match cmd {
        TokenCommand::Create {
            name,
            role,
            data_dir,
            database_url,
        } => {
            let url = match (data_dir, database_url) {
                (Some(dir), _) => Some(format!("sqlite://{}", dir.join("attune.db").display())),
                (None, url) => url,
            };
            let Some(url) = url else {
                let v = args
                    .client()?
                    .post("/tokens", json!({"name": name, "role": role}))
                    .await?;
                return print_created(&v, args.json);
            };
            let role = Role::parse(&role).with_context(|| {
                format!("unknown role `{role}`; expected viewer, operator, admin or worker")
            })?;
            if url.starts_with("sqlite://") {
                let path = url.trim_start_matches("sqlite://");
                anyhow::ensure!(
                    std::path::Path::new(path).exists(),
                    "no database at {path}: is that the server's --data-dir?"
                );
            }
            let storage = Storage::connect(&url)
                .await
                .context("opening the database")?;
            let token = new_token();
            let record = storage
                .insert_token(&name, role, &hash_token(&token))
                .await?;
            storage.close().await;
            print_created(
                &json!({"id": record.id, "name": record.name, "role": role.as_str(),
                        "created_at": record.created_at, "token": token}),
                args.json,
            )
        }
        TokenCommand::List => {
            let v = args.client()?.get("/tokens?limit=500").await?;
            if args.json {
                print_json(&v);
            } else {
                table(
                    &v["items"],
                    &["id", "name", "role", "created_at", "revoked_at"],
                );
            }
            Ok(0)
        }
        TokenCommand::Revoke { id } => {
            args.client()?
                .call(Method::DELETE, &format!("/tokens/{id}"), None)
                .await?;
            eprintln!("token {id} revoked");
            Ok(0)
        }
    }
}

fn print_created(v: &serde_json::Value, json: bool) -> anyhow::Result<i32> {
    if json {
        print_json(v);
    } else {
        eprintln!(
            "created token {} ({}, {}); it is shown once:",
            v["id"], v["name"], v["role"]
        );
        println!("{}", v["token"].as_str().unwrap_or_default());
    }
    Ok(0)
}
