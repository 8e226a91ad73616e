//! `attune run`: run an action on a server and wait for its result.

use std::time::{Duration, Instant};

use clap::Args;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::client::ClientArgs;
use super::output::print_json;
use super::params::build_params;
use crate::client::{Client, ClientError};
use attune_util::units::parse_duration;

/// Options of `attune run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Action ref, e.g. core.echo.
    pub action: String,
    /// Parameters as key=value, each value read as the action's schema
    /// types it: as it is for a string (`message=5` is "5"), parsed for a
    /// number, integer or boolean, JSON for anything else (a string when it
    /// is not JSON). They override keys from --params.
    pub params: Vec<String>,
    /// Parameters as one JSON object.
    #[arg(long = "params", value_name = "JSON")]
    pub params_json: Option<String>,
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

/// Statuses after which an execution does not change.
const FINISHED: &[&str] = &["succeeded", "failed", "timed_out", "cancelled", "abandoned"];

/// `attune run`: queue an execution and wait for its result.
pub(super) async fn run(cmd: RunArgs, args: &ClientArgs) -> anyhow::Result<i32> {
    let client = args.client()?;
    let schema = if cmd.params.is_empty() {
        None
    } else {
        params_schema(&client, &cmd.action).await?
    };
    let params = match build_params(cmd.params_json.as_deref(), &cmd.params, schema.as_ref()) {
        Ok(params) => params,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
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

/// The parameter schema of `action` on the server; `None` when there is no
/// such action, which the run's request then reports.
async fn params_schema(client: &Client, action: &str) -> Result<Option<Value>, ClientError> {
    match client.get(&format!("/actions/{action}")).await {
        Ok(mut v) => Ok(Some(v["params_schema"].take()).filter(Value::is_object)),
        Err(ClientError::Api { status, .. }) if status == StatusCode::NOT_FOUND => Ok(None),
        Err(e) => Err(e),
    }
}
