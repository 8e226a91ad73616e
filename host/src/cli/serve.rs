//! `attune serve`: the server with its embedded SQLite by default.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;

use super::units::parse_size;
use crate::api::ApiConfig;
use crate::server::{self, ADMIN_TOKEN_FILE, Server, ServerConfig};

/// Options of `attune serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ATTUNE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Data directory: SQLite database, components, compiled artifacts, admin token.
    #[arg(long, env = "ATTUNE_DATA_DIR", default_value = "./attune-data")]
    pub data_dir: PathBuf,
    /// Database URL (`postgres://…` or `sqlite://…`); default: `attune.db` in the data directory.
    #[arg(long, env = "ATTUNE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Largest pack upload accepted, e.g. 50MiB.
    #[arg(long, env = "ATTUNE_MAX_UPLOAD", default_value = "50MiB", value_parser = parse_size)]
    pub max_upload: usize,
}

pub(super) async fn run(args: ServeArgs) -> anyhow::Result<i32> {
    let config = ServerConfig {
        data_dir: args.data_dir.clone(),
        database_url: args.database_url.clone(),
        cache_dir: None,
        api: ApiConfig {
            max_upload_bytes: args.max_upload,
            ..ApiConfig::default()
        },
    };
    let server = Server::start(&config).await?;
    if let Some(token) = &server.new_admin_token {
        eprintln!(
            "Created the admin token (shown once; also in {}):\n\n    {token}\n",
            args.data_dir.join(ADMIN_TOKEN_FILE).display()
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, "attune is listening");
    eprintln!("attune is listening on http://{}", listener.local_addr()?);
    server::run(listener, server.state, shutdown_signal()).await?;
    Ok(0)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    eprintln!("shutting down");
}
