//! `attune pack upload|list|show|grant`: packs on a server.

use std::path::PathBuf;

use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use super::client::ClientArgs;
use super::output::{print_json, table};
use crate::client::{Body, query};

/// `attune pack …`
#[derive(Debug, Subcommand)]
pub enum PackCommand {
    /// Upload a component (.wasm, with --name and --version) or a pack archive (.tar.gz).
    Upload {
        /// The file.
        file: PathBuf,
        /// Pack name, for a single component.
        #[arg(long)]
        name: Option<String>,
        /// Pack version, for a single component.
        #[arg(long)]
        version: Option<String>,
    },
    /// List packs.
    List,
    /// Show a pack with its grants.
    Show {
        /// Pack name.
        name: String,
    },
    /// Replace what a pack is granted (admin): outbound HTTP destinations
    /// and secrets. Names none of either to revoke everything.
    Grant {
        /// Pack name.
        name: String,
        /// An outbound HTTP destination, `scheme://host[:port]` (`*` and
        /// `*.domain` wildcards, CIDR hosts). Repeatable.
        #[arg(long = "allow-outbound", value_name = "PATTERN")]
        allow_outbound: Vec<String>,
        /// A secret its actions may read. Repeatable.
        #[arg(long = "secret", value_name = "NAME")]
        secrets: Vec<String>,
    },
}

pub(super) async fn run(cmd: PackCommand, args: &ClientArgs) -> anyhow::Result<i32> {
    let client = args.client()?;
    let out = match cmd {
        PackCommand::Upload {
            file,
            name,
            version,
        } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
            let is_wasm = file.extension().is_some_and(|e| e == "wasm");
            let (path, content_type) = if is_wasm {
                let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("pack");
                let name = name.unwrap_or_else(|| stem.to_string());
                let version =
                    version.ok_or_else(|| anyhow::anyhow!("a .wasm upload needs --version"))?;
                (
                    format!(
                        "/packs?{}",
                        query([("name", name.as_str()), ("version", version.as_str())])
                    ),
                    "application/wasm",
                )
            } else {
                ("/packs".to_string(), "application/gzip")
            };
            let v = client
                .call(
                    Method::POST,
                    &path,
                    Some(Body::Bytes {
                        content_type,
                        bytes,
                    }),
                )
                .await?;
            if !args.json {
                println!(
                    "{} {} {}: {}",
                    v["outcome"].as_str().unwrap_or_default(),
                    v["pack"]["name"].as_str().unwrap_or_default(),
                    v["pack"]["version"].as_str().unwrap_or_default(),
                    v["actions"]
                        .as_array()
                        .map(|a| a.len())
                        .unwrap_or(0)
                        .to_string()
                        + " actions"
                );
                return Ok(0);
            }
            v
        }
        PackCommand::Show { name } => client.get(&format!("/packs/{name}")).await?,
        PackCommand::Grant {
            name,
            allow_outbound,
            secrets,
        } => {
            let grants = json!({"allowed_outbound_hosts": allow_outbound, "secrets": secrets});
            client
                .call(
                    Method::PUT,
                    &format!("/packs/{name}/grants"),
                    Some(Body::Json(grants)),
                )
                .await?
        }
        PackCommand::List => {
            let v = client.get("/packs").await?;
            if !args.json {
                table(&v["items"], &["name", "version", "description"]);
                return Ok(0);
            }
            v
        }
    };
    print_json(&out);
    Ok(0)
}
