//! `attune login`: check a server URL and token, and save them for the
//! client commands.

use clap::Args;

use crate::client::{Client, SavedLogin};

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
pub async fn run(args: LoginArgs) -> anyhow::Result<i32> {
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
