//! What every client command takes: where the server is, how to
//! authenticate, and whether to print JSON.

use clap::Args;

use crate::client::{Client, ClientError, SavedLogin};

/// Where the server is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server URL; default from `attune login`, else http://127.0.0.1:8080.
    #[arg(long, env = "ATTUNE_SERVER", global = true)]
    pub server: Option<String>,
    /// API token; default from `attune login`.
    #[arg(long, env = "ATTUNE_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON as it is (times in Unix milliseconds) instead
    /// of tables (times in local RFC 3339).
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
