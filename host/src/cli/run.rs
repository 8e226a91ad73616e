//! `attune run`: run an action on a server and wait for its result.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::client::ClientArgs;
use super::local::build_params;
use super::output::print_json;
use attune_util::units::parse_duration;

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
