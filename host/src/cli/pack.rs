//! `attune pack upload|install|push|outdated|list|show|grant`: packs on a
//! server, and in OCI registries (`oci.rs`).

use std::path::PathBuf;

use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use super::client::ClientArgs;
use super::oci::{self, RegistryArgs};
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
    /// Install a pack from an OCI registry (admin): the server pulls
    /// `oci://REGISTRY/REPO:TAG` (or `@sha256:DIGEST`) from a registry it
    /// allows (`attune serve --allow-registry`), checks every layer against
    /// the manifest, and registers it as an upload.
    Install {
        /// `oci://REGISTRY/REPO:TAG` or `oci://REGISTRY/REPO@sha256:DIGEST`.
        reference: String,
    },
    /// Publish a pack to an OCI registry from this machine: a component
    /// (`.wasm`, with --version) as a standard Wasm OCI artifact, or a pack
    /// directory or `.tar.gz` with one layer per file.
    Push {
        /// A `.wasm` component, a pack directory, or a `.tar.gz` pack.
        path: PathBuf,
        /// `oci://REGISTRY/REPO:TAG`.
        reference: String,
        /// Pack name, for a single component (default: the file's stem).
        #[arg(long)]
        name: Option<String>,
        /// Pack version, for a single component.
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Compare the packs installed from registries with what the registries
    /// hold now: a new digest behind the installed tag, or newer version tags.
    Outdated {
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// List packs.
    List,
    /// Show a pack with its grants.
    Show {
        /// Pack name.
        name: String,
    },
    /// Replace what a pack is granted (admin): outbound HTTP destinations,
    /// secrets and quotas. Names none of them to revoke everything.
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
        /// Quota: most memory one linear memory of an execution may grow
        /// to (`64MiB`).
        #[arg(long, value_name = "SIZE")]
        max_memory: Option<String>,
        /// Quota: most CPU time one execution may spend in the guest (`2s`).
        #[arg(long, value_name = "DURATION")]
        max_cpu: Option<String>,
        /// Quota: most outbound HTTP requests one execution may send.
        #[arg(long, value_name = "N")]
        max_outbound_requests: Option<u32>,
        /// Whether its outbound requests carry the execution's W3C
        /// `traceparent` when tracing is on (default true).
        #[arg(long, value_name = "BOOL")]
        propagate_trace: Option<bool>,
    },
}

pub(super) async fn run(cmd: PackCommand, args: &ClientArgs) -> anyhow::Result<i32> {
    if let PackCommand::Push {
        path,
        reference,
        name,
        version,
        registry,
    } = cmd
    {
        let ca = args.ca_cert.as_deref();
        let v = oci::push(&path, &reference, name, version, &registry, ca).await?;
        if args.json {
            print_json(&v);
        } else {
            println!(
                "pushed {reference} {}",
                v["digest"].as_str().unwrap_or_default()
            );
        }
        return Ok(0);
    }
    let client = args.client()?;
    let out = match cmd {
        PackCommand::Push { .. } => unreachable!("pushed above"),
        PackCommand::Install { reference } => {
            let v = client.post("/packs", json!({"oci": reference})).await?;
            if !args.json {
                println!(
                    "{} {} {} from {reference} ({})",
                    v["outcome"].as_str().unwrap_or_default(),
                    v["pack"]["name"].as_str().unwrap_or_default(),
                    v["pack"]["version"].as_str().unwrap_or_default(),
                    v["pack"]["source"]["digest"].as_str().unwrap_or_default(),
                );
                return Ok(0);
            }
            v
        }
        PackCommand::Outdated { registry } => {
            let mut packs = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let path = match &after {
                    Some(a) => format!("/packs?limit=500&{}", query([("after", a.as_str())])),
                    None => "/packs?limit=500".to_string(),
                };
                let page = client.get(&path).await?;
                packs.extend(page["items"].as_array().cloned().unwrap_or_default());
                match page["next"].as_str() {
                    Some(n) => after = Some(n.to_string()),
                    None => break,
                }
            }
            let rows = oci::outdated(&packs, &registry, args.ca_cert.as_deref()).await?;
            if !args.json {
                table(
                    &oci::table_rows(&rows),
                    &[
                        "pack",
                        "version",
                        "reference",
                        "digest",
                        "status",
                        "newer_tags",
                    ],
                );
                return Ok(0);
            }
            serde_json::Value::Array(rows)
        }
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
            max_memory,
            max_cpu,
            max_outbound_requests,
            propagate_trace,
        } => {
            let mut grants = json!({"allowed_outbound_hosts": allow_outbound, "secrets": secrets});
            for (key, value) in [
                ("max_memory", max_memory.map(serde_json::Value::from)),
                ("max_cpu", max_cpu.map(serde_json::Value::from)),
                (
                    "max_outbound_requests",
                    max_outbound_requests.map(serde_json::Value::from),
                ),
                (
                    "propagate_trace",
                    propagate_trace.map(serde_json::Value::from),
                ),
            ] {
                if let Some(v) = value {
                    grants[key] = v;
                }
            }
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
