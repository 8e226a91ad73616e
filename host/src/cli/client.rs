//! Client commands against a running server: packs, actions, rules,
//! executions, events, `run`, and `login`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::local::build_params;
use crate::client::{Body, Client, ClientError, SavedLogin, query};
use attune_util::units::parse_duration;

/// Where the server is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server URL; default from `attune login`, else http://127.0.0.1:8080.
    #[arg(long, env = "ATTUNE_SERVER", global = true)]
    pub server: Option<String>,
    /// API token; default from `attune login`.
    #[arg(long, env = "ATTUNE_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Also trust the CA certificates in this PEM file for `https://`
    /// servers (a private CA).
    #[arg(long, env = "ATTUNE_CA_CERT", global = true)]
    pub ca_cert: Option<std::path::PathBuf>,
}

impl ClientArgs {
    pub(super) fn client(&self) -> Result<Client, ClientError> {
        let saved = SavedLogin::load()?;
        let server = self
            .server
            .clone()
            .or(saved.server)
            .unwrap_or_else(|| "http://127.0.0.1:8080".into());
        let token = self.token.clone().or(saved.token).ok_or_else(|| {
            ClientError::Config(
                "no token: pass --token, set ATTUNE_TOKEN, or run `attune login`".into(),
            )
        })?;
        Client::with_ca(&server, &token, self.ca_cert.as_deref())
    }
}

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

/// `attune action …`
#[derive(Debug, Subcommand)]
pub enum ActionClientCommand {
    /// List actions.
    List {
        /// Only this pack's actions.
        #[arg(long)]
        pack: Option<String>,
    },
    /// Show an action with its schemas.
    Show {
        /// Action ref, e.g. core.echo.
        r#ref: String,
    },
}

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

/// Options of `attune run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Action ref, e.g. core.echo.
    pub action: String,
    /// Parameters as key=value (value parsed as JSON when it parses).
    pub params: Vec<String>,
    /// How long to wait for the result.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub wait: Duration,
    /// Execution timeout, e.g. 30s; the server default when absent.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Attempts if the worker running it vanishes (1-10).
    #[arg(long, default_value_t = 1)]
    pub max_attempts: i64,
}

/// Options of `attune login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Server URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// API token (e.g. the content of <data-dir>/admin.token).
    #[arg(long)]
    pub token: String,
    /// Also trust the CA certificates in this PEM file (a private CA).
    #[arg(long, env = "ATTUNE_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
}

/// Saves the server and token after checking them.
pub async fn login(args: LoginArgs) -> anyhow::Result<i32> {
    let client = Client::with_ca(&args.server, &args.token, args.ca_cert.as_deref())?;
    client.get("/packs?limit=1").await?;
    let path = SavedLogin {
        server: Some(args.server),
        token: Some(args.token),
    }
    .save()?;
    eprintln!("logged in; saved to {}", path.display());
    Ok(0)
}

pub(super) async fn pack(cmd: PackCommand, args: &ClientArgs) -> anyhow::Result<i32> {
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

pub(super) async fn action(cmd: ActionClientCommand, args: &ClientArgs) -> anyhow::Result<i32> {
    let client = args.client()?;
    match cmd {
        ActionClientCommand::List { pack } => {
            let path = match pack {
                Some(p) => format!("/actions?limit=500&{}", query([("pack", p.as_str())])),
                None => "/actions?limit=500".into(),
            };
            let v = client.get(&path).await?;
            if args.json {
                print_json(&v);
            } else {
                table(&v["items"], &["ref", "description"]);
            }
        }
        ActionClientCommand::Show { r#ref } => {
            print_json(&client.get(&format!("/actions/{ref}")).await?)
        }
    }
    Ok(0)
}

pub(super) async fn rule(cmd: RuleCommand, args: &ClientArgs) -> anyhow::Result<i32> {
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

pub(super) async fn execution(cmd: ExecutionCommand, args: &ClientArgs) -> anyhow::Result<i32> {
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
                    &["id", "action", "status", "rule", "created_at"],
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

pub(super) async fn event(cmd: EventCommand, args: &ClientArgs) -> anyhow::Result<i32> {
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

/// Statuses after which an execution does not change.
const FINISHED: &[&str] = &["succeeded", "failed", "timed_out", "cancelled", "abandoned"];

/// `attune run`: queue an execution and wait for its result.
pub(super) async fn run(cmd: RunArgs, args: &ClientArgs) -> anyhow::Result<i32> {
    let client = args.client()?;
    let params = build_params(None, &cmd.params).map_err(|e| anyhow::anyhow!(e))?;
    let created = client
        .post(
            "/executions",
            json!({"action": cmd.action, "params": params, "timeout": cmd.timeout,
                   "max_attempts": cmd.max_attempts}),
        )
        .await?;
    let id = created["id"].as_i64().unwrap_or_default();
    let deadline = Instant::now() + cmd.wait;
    let mut delay = Duration::from_millis(50);
    let mut current = created;
    while !FINISHED.contains(&current["status"].as_str().unwrap_or_default()) {
        if Instant::now() >= deadline {
            eprintln!(
                "execution {id} is still {} after {:?}{}",
                current["status"].as_str().unwrap_or_default(),
                cmd.wait,
                current["status_reason"]
                    .as_str()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
            print_json(&current);
            return Ok(3);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
        current = client.get(&format!("/executions/{id}")).await?;
    }
    print_json(&current);
    Ok(if current["status"] == "succeeded" {
        0
    } else {
        1
    })
}

pub(super) fn print_json(v: &Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_default()
    );
}

/// Prints `items` as an aligned table of `columns`.
pub(super) fn table(items: &Value, columns: &[&str]) {
    use std::io::Write;
    let cell = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.lines().next().unwrap_or_default().to_string(),
        other => other.to_string(),
    };
    let rows: Vec<Vec<String>> = items
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| columns.iter().map(|c| cell(&item[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = std::io::stdout().lock();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let _ = writeln!(
        out,
        "{}",
        line(columns.iter().map(|c| c.to_uppercase()).collect())
    );
    for r in rows {
        let _ = writeln!(out, "{}", line(r));
    }
}
