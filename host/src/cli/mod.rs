//! The `attune` command line: argument parsing and output.
//!
//! Subcommands call into the library and print JSON or tables; they hold no
//! logic of their own beyond turning flags into requests. Each command has
//! its file; the client commands share `client` (server and token),
//! `output` (JSON, and tables with local times) and `params` (`key=value`
//! read by the action's schema). `action inspect` and `action run` work on
//! a component file (or a built-in pack name) with no server.

mod action;
mod author;
mod bench;
mod client;
mod event;
mod execution;
mod inquiry;
mod local;
mod login;
mod oci;
mod output;
mod pack;
mod params;
mod replay;
mod rule;
mod run;
mod secret;
mod sensor;
mod serve;
mod token;
mod tree;
mod worker;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// `attune --version`: the release and the commit it was built from (the
/// build script finds it; `unknown` when it could not).
fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        format!(
            "{} (commit {})",
            env!("CARGO_PKG_VERSION"),
            option_env!("ATTUNE_COMMIT").unwrap_or("unknown")
        )
    })
}

/// Attune: event-driven automation whose actions are WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "attune", version = version(), about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: API, core pack, embedded SQLite unless --database-url says otherwise.
    Serve(serve::ServeArgs),
    /// Create and build action packs (new, build), inspect and run components
    /// locally (inspect, run), or list and show a server's actions (list, show).
    #[command(subcommand)]
    Action(action::ActionCommand),
    /// Upload, list and show packs on a server, and grant them outbound HTTP
    /// and secrets; push packs to OCI registries and install them from there.
    Pack {
        #[command(subcommand)]
        command: pack::PackCommand,
        #[command(flatten)]
        client: client::ClientArgs,
    },
    /// Create, list, show, enable, disable and delete rules on a server.
    Rule {
        #[command(subcommand)]
        command: rule::RuleCommand,
        #[command(flatten)]
        client: client::ClientArgs,
    },
    /// List, show and cancel executions on a server.
    Execution {
        #[command(subcommand)]
        command: execution::ExecutionCommand,
        #[command(flatten)]
        client: client::ClientArgs,
    },
    /// List, show and answer the asks of workflows waiting for a person.
    Inquiry {
        #[command(subcommand)]
        command: inquiry::InquiryCommand,
        #[command(flatten)]
        client: client::ClientArgs,
    },
    /// Fire and list events on a server.
    Event {
        #[command(subcommand)]
        command: event::EventCommand,
        #[command(flatten)]
        client: client::ClientArgs,
    },
    /// List and show packs' sensors with their last polls; enable and
    /// disable them.
    Sensor {
        #[command(subcommand)]
        command: sensor::SensorCommand,
        #[command(flatten)]
        client: client::ClientArgs,
    },
    /// Set, list and delete secrets on a server (admin).
    Secret {
        #[command(subcommand)]
        command: secret::SecretCommand,
        #[command(flatten)]
        client: client::ClientArgs,
    },
    /// Create, list and revoke API tokens (admin); `create --data-dir`
    /// works offline against the database.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
        #[command(flatten)]
        client: client::ClientArgs,
    },
    /// Run an action on a server and wait for its result.
    Run {
        #[command(flatten)]
        run: run::RunArgs,
        #[command(flatten)]
        client: client::ClientArgs,
    },
    /// Check and save a server URL and token for the client commands.
    Login(login::LoginArgs),
    /// Run a standalone worker that claims executions from a server.
    Worker(worker::WorkerArgs),
    /// Load a running server: N events or executions, then throughput and latency.
    Bench(bench::BenchArgs),
    /// Serve a server's actions as MCP tools on stdin/stdout, for desktop
    /// agents (each call runs through the server's API with the token).
    Mcp(McpArgs),
}

/// Options of `attune mcp`.
#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// How long a tool call waits for its execution before answering with
    /// its id (read it later with the `attune.execution` tool).
    #[arg(long, default_value = "60s", value_parser = attune_util::units::parse_duration)]
    pub wait: std::time::Duration,
    /// Actions offered as tools: patterns like `ops.*` or `core.echo`
    /// (repeatable); all by default.
    #[arg(long = "tool")]
    pub tools: Vec<String>,
    #[command(flatten)]
    pub client: client::ClientArgs,
}

/// Options shared by the local runtime commands.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// Directory for precompiled components, so a second load skips compiling.
    /// Defaults to `$XDG_CACHE_HOME/attune` or `~/.cache/attune`.
    #[arg(long, env = "ATTUNE_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Compile every time; keep no artifacts on disk.
    #[arg(long, global = true)]
    pub no_cache: bool,
}

impl RuntimeArgs {
    fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        self.cache_dir.clone().or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|base| base.join("attune").join("artifacts"))
        })
    }
}

/// The `attune` binary's entry: starts the async runtime and logging,
/// parses the command line and runs it; returns the process's exit code.
///
/// It lives in the library, not in `main.rs`, so that the futures of every
/// command are compiled once, here: polled from the binary, the whole
/// async call tree under [`run`] was compiled again in the binary crate,
/// after this one, on the first build's critical path.
pub fn main() -> std::process::ExitCode {
    // With transparent huge pages on for every mapping (`always`, a common
    // default), the kernel backs the allocator's arenas with 2 MiB pages as
    // they are first touched, so an idle server held tens of MiB it never
    // used. Ordinary pages keep it small; the sandbox's own memories are
    // not the allocator's and are sized per execution anyway.
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes no pointers; it sets a flag of this
    // process, inherited by its children.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the async runtime starts")
        .block_on(entry())
}

async fn entry() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ATTUNE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            // The server refused the request (bad input, not found, conflict…)
            // → 2, like a local invalid-input error; anything else → 70.
            let refused = matches!(
                e.downcast_ref::<crate::client::ClientError>(),
                Some(crate::client::ClientError::Api { status, .. }) if status.is_client_error()
            );
            std::process::ExitCode::from(if refused { 2 } else { 70 })
        }
    }
}

/// Runs the parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Action(cmd) => action::run(cmd).await,
        Command::Pack { command, client } => pack::run(command, &client).await,
        Command::Rule { command, client } => rule::run(command, &client).await,
        Command::Execution { command, client } => execution::run(command, &client).await,
        Command::Inquiry { command, client } => inquiry::run(command, &client).await,
        Command::Event { command, client } => event::run(command, &client).await,
        Command::Secret { command, client } => secret::run(command, &client).await,
        Command::Sensor { command, client } => sensor::run(command, &client).await,
        Command::Token { command, client } => token::run(command, &client).await,
        Command::Run { run, client } => run::run(run, &client).await,
        Command::Login(args) => login::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Mcp(args) => {
            let client = args.client.client()?;
            let options = crate::mcp::Options {
                wait: args.wait,
                tools: args.tools,
            };
            crate::mcp::api_backend::serve_stdio(client, options).await?;
            Ok(0)
        }
        Command::Worker(args) => worker::run(args).await,
    }
}
