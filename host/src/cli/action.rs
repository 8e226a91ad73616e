//! `attune action inspect|run`: work on a component with no server;
//! `new|build` live in [`super::author`].

use std::path::Path;
use std::time::Duration;

use clap::Subcommand;
use serde_json::{Value, json};

use super::RuntimeArgs;
use super::client::ClientArgs;
use super::local::{load, local_runtime};
use super::params::build_params;
use crate::client::query;
use attune_runtime::http::{AllowedHosts, OutboundConfig};
use attune_runtime::{ExecuteError, ExecutionRequest, Limits, LoadedComponent};
use attune_util::units::{parse_duration, parse_size};

/// Exit code for bad input: unreadable component, unknown action, invalid params.
pub const EXIT_INVALID: i32 = 2;
/// Exit code for an action that failed (returned `err` or trapped).
pub const EXIT_FAILED: i32 = 1;
/// Exit code for an action that ran out of time.
pub const EXIT_TIMED_OUT: i32 = 124;

/// `attune action …`
#[derive(Debug, Subcommand)]
pub enum ActionCommand {
    /// Create a ready-to-build action pack in Rust, Python or JavaScript.
    New(super::author::NewArgs),
    /// Build the action pack in a directory into one component
    /// (`build/<world>.wasm`), installing the Python or JavaScript toolchain
    /// on first use, and compile it for this machine.
    Build {
        #[command(flatten)]
        args: super::author::BuildArgs,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Print every action of a component with its parameter and result
    /// schemas, required capabilities and description, as JSON.
    Inspect {
        /// A component file (`.wasm`), or the name of a built-in pack (`core`).
        component: String,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Run one action of a component in the sandbox and print one JSON object:
    /// status, result, error, stdout, stderr, duration_ms. Exits 0 only when the
    /// action succeeded (1 failed, 124 timed out, 2 invalid input).
    Run {
        /// A component file (`.wasm`), or the name of a built-in pack (`core`).
        component: String,
        /// The action: its export name (`echo`), `iface.func` for interface
        /// exports; a `<pack>.` prefix is accepted.
        action: String,
        /// Parameters as one JSON object.
        #[arg(long, value_name = "JSON")]
        params: Option<String>,
        /// One parameter as key=value, the value read as the action's schema
        /// types it: as it is for a string (`message=5` is "5"), parsed for a
        /// number, integer or boolean, JSON for anything else (a string when
        /// it is not JSON). Repeatable; overrides keys from --params.
        #[arg(short = 'p', long = "param", value_name = "KEY=VALUE")]
        param: Vec<String>,
        /// Wall-clock limit, e.g. 500ms, 10s, 5m.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        timeout: Duration,
        /// Memory limit per linear memory, e.g. 64MiB.
        #[arg(long, default_value = "64MiB", value_parser = parse_size)]
        memory: usize,
        /// Bytes of stdout (and of stderr) kept; the rest is dropped and marked.
        #[arg(long, default_value = "1MiB", value_parser = parse_size)]
        output_limit: usize,
        /// Let the action send HTTP requests to this destination,
        /// `scheme://host[:port]` (`*` and `*.domain` wildcards, CIDR hosts).
        /// Repeatable; none by default.
        #[arg(long = "allow-outbound", value_name = "PATTERN")]
        allow_outbound: Vec<String>,
        /// Let it reach private, loopback and link-local addresses too.
        #[arg(long)]
        allow_private_outbound: bool,
        /// Also trust the CA certificates in this PEM file for the action's
        /// HTTPS requests (a private CA).
        #[arg(long, env = "ATTUNE_CA_CERT")]
        ca_cert: Option<std::path::PathBuf>,
        /// Grant it the secret NAME with this value, readable through
        /// `attune:action/secrets` and redacted from what it prints and
        /// returns. Repeatable.
        #[arg(long = "secret", value_name = "NAME=VALUE")]
        secret: Vec<String>,
        /// Grant it every secret of a file of `NAME=VALUE` lines (blank
        /// lines and `#` comments skipped).
        #[arg(long, value_name = "PATH")]
        secrets_file: Option<std::path::PathBuf>,
        /// Write the run's journal to this file (every answer the sandbox
        /// received, secrets redacted), for `attune action replay`.
        #[arg(long, value_name = "FILE")]
        record: Option<std::path::PathBuf>,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Replay a journal written by `attune action run --record` without a
    /// server: every host call is answered from it and nothing leaves the
    /// sandbox. Prints identical, both results and the first divergence;
    /// exits 0 only when identical.
    Replay(super::replay::ReplayArgs),
    /// List the actions registered on a server.
    List {
        /// Only this pack's actions.
        #[arg(long)]
        pack: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show an action registered on a server, with its schemas.
    Show {
        /// Action ref, e.g. core.echo.
        r#ref: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub(super) async fn run(cmd: ActionCommand) -> anyhow::Result<i32> {
    match cmd {
        ActionCommand::New(args) => super::author::new(args),
        ActionCommand::Build { args, runtime } => super::author::build(args, &runtime).await,
        ActionCommand::List { pack, client } => list(pack, &client).await,
        ActionCommand::Replay(args) => super::replay::replay_file(args).await,
        ActionCommand::Show { r#ref, client } => {
            print_json(&client.client()?.get(&format!("/actions/{ref}")).await?);
            Ok(0)
        }
        ActionCommand::Inspect { component, runtime } => {
            let rt = local_runtime(&runtime, Limits::default(), OutboundConfig::default())?;
            let pack = match load(&rt, &component).await {
                Ok(pack) => pack,
                Err(e) => return Ok(invalid("invalid_component", &format!("{e:#}"), vec![])),
            };
            print_json(&pack.inspect());
            Ok(0)
        }
        ActionCommand::Run {
            component,
            action,
            params,
            param,
            timeout,
            memory,
            output_limit,
            allow_outbound,
            allow_private_outbound,
            ca_cert,
            secret,
            secrets_file,
            record,
            runtime,
        } => {
            let secrets = match local_secrets(&secret, secrets_file.as_deref()) {
                Ok(s) => s,
                Err(msg) => return Ok(invalid("invalid_secret", &msg, vec![])),
            };
            let allowed = match AllowedHosts::parse(&allow_outbound) {
                Ok(a) => a,
                Err(errors) => {
                    let details = errors
                        .iter()
                        .map(|(n, m)| json!({"path": format!("/allow_outbound/{n}"), "message": m}))
                        .collect();
                    return Ok(invalid(
                        "invalid_grant",
                        "an --allow-outbound pattern is invalid",
                        details,
                    ));
                }
            };
            let limits = Limits {
                timeout,
                memory_bytes: memory,
                output_bytes: output_limit,
            };
            let outbound = OutboundConfig {
                allow_private: allow_private_outbound,
                tls: match &ca_cert {
                    Some(ca) => Some(std::sync::Arc::new(attune_util::tls::client_config(Some(
                        ca,
                    ))?)),
                    None => None,
                },
                ..OutboundConfig::default()
            };
            let rt = local_runtime(&runtime, limits, outbound)?;
            let pack = match load(&rt, &component).await {
                Ok(pack) => pack,
                Err(e) => return Ok(invalid("invalid_component", &format!("{e:#}"), vec![])),
            };
            let action = resolve_action(&pack, &component, &action);
            let schema = pack.action(&action).map(|a| &a.info().params_schema);
            let params = match build_params(params.as_deref(), &param, schema) {
                Ok(p) => p,
                Err(e) => {
                    let details = e
                        .details()
                        .iter()
                        .map(|(path, message)| json!({"path": path, "message": message}))
                        .collect();
                    return Ok(invalid("invalid_params", e.message(), details));
                }
            };
            let mut request = ExecutionRequest::new(action.clone(), params);
            request.context.action = format!("{}.{action}", pack_name(&component));
            request.limits = Some(limits);
            request.allowed_hosts = std::sync::Arc::new(allowed);
            request.secrets = std::sync::Arc::new(secrets);
            // One run, one process: its key-value state lives in memory.
            request.kv = attune_runtime::kv::KvState(Some(std::sync::Arc::new(
                attune_runtime::kv::MemoryKv::default(),
            )));
            if record.is_some() {
                request.journal = attune_runtime::JournalMode::Record {
                    cap: attune_runtime::journal::DEFAULT_CAP,
                };
            }
            match pack.execute(&rt, request).await {
                Ok(mut outcome) => {
                    if let (Some(path), Some(journal)) = (&record, &mut outcome.journal) {
                        journal.component = pack.digest().to_string();
                        journal.source = Some(component.clone());
                        super::replay::write_journal(path, journal)?;
                    }
                    let out = json!({
                        "status": outcome.status.as_str(),
                        "result": outcome.result,
                        "error": outcome.error,
                        "stdout": outcome.stdout.marked(),
                        "stderr": outcome.stderr.marked(),
                        "logs": outcome.logs,
                        "duration_ms": outcome.duration.as_secs_f64() * 1000.0,
                    });
                    print_json(&out);
                    Ok(match outcome.status {
                        attune_runtime::Status::Succeeded => 0,
                        attune_runtime::Status::Failed => EXIT_FAILED,
                        attune_runtime::Status::TimedOut => EXIT_TIMED_OUT,
                    })
                }
                Err(ExecuteError::InvalidParams(errors)) => {
                    let details = errors
                        .iter()
                        .map(|e| json!({"path": e.path, "message": e.message}))
                        .collect();
                    Ok(invalid(
                        "invalid_params",
                        "the parameters do not fit the action's schema",
                        details,
                    ))
                }
                Err(e @ ExecuteError::UnknownAction { .. }) => {
                    Ok(invalid("unknown_action", &e.to_string(), vec![]))
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// `attune action list`: a server's actions as a table.
async fn list(pack: Option<String>, args: &ClientArgs) -> anyhow::Result<i32> {
    let path = match pack {
        Some(p) => format!("/actions?limit=500&{}", query([("pack", p.as_str())])),
        None => "/actions?limit=500".into(),
    };
    let v = args.client()?.get(&path).await?;
    if args.json {
        print_json(&v);
    } else {
        super::output::table(&v["items"], &["ref", "description"]);
    }
    Ok(0)
}

/// Prints the API's error shape on stdout and a readable line per problem on
/// stderr; returns [`EXIT_INVALID`].
pub(super) fn invalid(code: &str, message: &str, details: Vec<Value>) -> i32 {
    eprintln!("error: {message}");
    for d in &details {
        let path = d["path"].as_str().filter(|p| !p.is_empty()).unwrap_or("/");
        eprintln!("  {path}: {}", d["message"].as_str().unwrap_or_default());
    }
    let body = json!({"error": {"code": code, "message": message, "details": details}});
    println!(
        "{}",
        serde_json::to_string_pretty(&body).unwrap_or_default()
    );
    EXIT_INVALID
}

/// Prints pretty JSON on stdout; a closed pipe (`| head`) is not an error.
pub(super) fn print_json(value: &Value) {
    use std::io::Write;
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// Accepts `echo`, or `core.echo` when the pack is called `core` (by file
/// stem or built-in name).
fn resolve_action(pack: &LoadedComponent, component: &str, action: &str) -> String {
    if pack.action(action).is_some() {
        return action.to_string();
    }
    action
        .strip_prefix(pack_name(component))
        .and_then(|rest| rest.strip_prefix('.'))
        .filter(|rest| pack.action(rest).is_some())
        .unwrap_or(action)
        .to_string()
}

/// The pack name of a component argument: its file stem, or the built-in name.
fn pack_name(component: &str) -> &str {
    Path::new(component)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(component)
}

/// The secrets granted by `--secret NAME=VALUE` and `--secrets-file`.
pub(super) fn local_secrets(
    pairs: &[String],
    file: Option<&std::path::Path>,
) -> Result<attune_runtime::secrets::SecretSet, String> {
    let text = match file {
        Some(path) => zeroize::Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
        ),
        None => zeroize::Zeroizing::new(String::new()),
    };
    let from_file = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let mut values = Vec::new();
    for pair in pairs.iter().map(String::as_str).chain(from_file) {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| "a secret is NAME=VALUE".to_string())?;
        let name = name.trim();
        if !attune_engine::secrets::valid_name(name) {
            return Err(format!(
                "`{name}` is not a secret name (1-128 letters, digits, `_` or `-`)"
            ));
        }
        values.push((name.to_string(), zeroize::Zeroizing::new(value.to_string())));
    }
    let names: Vec<String> = values.iter().map(|(n, _)| n.clone()).collect();
    Ok(attune_runtime::secrets::SecretSet::new(names, values))
}
