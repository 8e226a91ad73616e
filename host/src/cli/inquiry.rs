//! `attune inquiry list|show|respond`: a workflow's `ask` tasks waiting
//! for a person, and their answers.
//!
//! `respond` reads the inquiry first and types each `key=value` by its
//! answer schema, as `attune run` types parameters by an action's schema
//! (see `params`); the server then checks the whole answer and, when it is
//! refused (not an approver, already answered, does not fit), its message
//! and every path are printed and the exit code is not zero.

use clap::Subcommand;
use serde_json::{Value, json};

use super::client::ClientArgs;
use super::output::{print_json, table};
use super::params::build_params;
use crate::client::query;

/// Characters of a prompt shown in a table.
const PROMPT_WIDTH: usize = 60;

/// `attune inquiry …`
#[derive(Debug, Subcommand)]
pub enum InquiryCommand {
    /// List the open asks you may answer, oldest first (or every inquiry
    /// of one workflow execution, in any state, with --execution).
    List {
        /// Only the inquiries of this workflow execution, in any state.
        #[arg(long)]
        execution: Option<i64>,
    },
    /// Show an inquiry: its prompt, answer schema, approvers, state and
    /// who answered.
    Show {
        /// Inquiry id (its task's execution id).
        id: i64,
    },
    /// Answer an ask; its workflow goes on with the answer as the task's
    /// result. Refused when you may not answer it, when it was already
    /// answered, timed out or closed, or when the answer does not fit its
    /// schema (every problem is printed with its path).
    #[command(
        after_help = "Examples:\n  attune inquiry respond 42 ok=true note=go\n  \
                            attune inquiry respond 42 -p ok=true -p note=go\n  \
                            attune inquiry respond 42 --answer '{\"ok\": true}'"
    )]
    Respond {
        /// Inquiry id (its task's execution id).
        id: i64,
        /// Answer fields as key=value, each value read as the inquiry's
        /// schema types it: as it is for a string (`note=5` is "5"), parsed
        /// for a number, integer or boolean, JSON for anything else. They
        /// override keys from --answer.
        #[arg(value_name = "KEY=VALUE")]
        fields: Vec<String>,
        /// An answer field as key=value (repeatable); the same as a
        /// positional KEY=VALUE.
        #[arg(short = 'p', long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// The answer as one JSON object (`--json` prints JSON instead).
        #[arg(long, value_name = "JSON")]
        answer: Option<String>,
    },
}

pub(super) async fn run(cmd: InquiryCommand, args: &ClientArgs) -> anyhow::Result<i32> {
    let client = args.client()?;
    let v = match cmd {
        InquiryCommand::List { execution } => {
            let path = match execution {
                Some(e) => format!("/inquiries?{}", query([("execution", &*e.to_string())])),
                None => "/inquiries".to_string(),
            };
            let v = client.get(&path).await?;
            if !args.json {
                let columns: &[&str] = match execution {
                    Some(_) => &[
                        "id",
                        "task",
                        "kind",
                        "state",
                        "prompt",
                        "answered_by",
                        "deadline",
                    ],
                    None => &["id", "execution", "task", "prompt", "deadline"],
                };
                table(&rows(&v["items"]), columns);
                return Ok(0);
            }
            v
        }
        InquiryCommand::Show { id } => client.get(&format!("/inquiries/{id}")).await?,
        InquiryCommand::Respond {
            id,
            fields,
            params,
            answer,
        } => {
            let pairs: Vec<String> = fields.into_iter().chain(params).collect();
            let inquiry = client.get(&format!("/inquiries/{id}")).await?;
            let schema = Some(&inquiry["schema"]).filter(|s| s.is_object());
            let answer = match build_params(answer.as_deref(), &pairs, schema) {
                Ok(answer) => answer,
                Err(e) => {
                    // `build_params` speaks of `--params` and the action's
                    // schema; here they are the answer and the inquiry's.
                    let message = e.message().replace("--params", "--answer").replace(
                        "parameters do not fit the action's",
                        "answer does not fit the inquiry's",
                    );
                    eprintln!("error: {message}");
                    for (path, message) in e.details() {
                        eprintln!("  {path}: {message}");
                    }
                    return Ok(2);
                }
            };
            let v = client
                .post(&format!("/inquiries/{id}/respond"), answer)
                .await?;
            if !args.json {
                println!(
                    "inquiry {id} {} by {}; workflow execution {} goes on",
                    v["state"].as_str().unwrap_or_default(),
                    v["answered_by"].as_str().unwrap_or("-"),
                    v["execution"]
                );
                return Ok(0);
            }
            v
        }
    };
    print_json(&v);
    Ok(0)
}

/// The list's items for a table: the prompt cut to [`PROMPT_WIDTH`] on one
/// line, the deadline (Unix ms) as a local time in RFC 3339, as the table
/// shows its `…_at` columns.
fn rows(items: &Value) -> Value {
    let rows = items
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let mut row = i.clone();
            row["prompt"] = match i["prompt"].as_str() {
                Some(p) => json!(truncate(p, PROMPT_WIDTH)),
                None => Value::Null,
            };
            row["deadline"] = match i["deadline"].as_i64() {
                Some(ms) => json!(local_time(ms, &chrono::Local)),
                None => Value::Null,
            };
            row
        })
        .collect();
    Value::Array(rows)
}

/// Unix milliseconds as RFC 3339 in `tz`, to the second (the milliseconds
/// when out of range).
fn local_time<Tz: chrono::TimeZone>(ms: i64, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    tz.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false))
        .unwrap_or_else(|| ms.to_string())
}

/// `text` on one line, at most `width` characters (an ellipsis ends what
/// was cut).
fn truncate(text: &str, width: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= width {
        return line;
    }
    let mut cut: String = line.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_cut_to_one_line_of_the_width() {
        assert_eq!(truncate("Restart db1?", 60), "Restart db1?");
        assert_eq!(truncate("Restart\n  db1?", 60), "Restart db1?");
        assert_eq!(truncate("abcdefgh", 5), "abcd…");
        assert_eq!(truncate("abcdefgh", 5).chars().count(), 5);
    }

    #[test]
    fn a_row_shows_the_deadline_as_a_time_and_no_prompt_as_a_dash() {
        assert_eq!(
            local_time(1_796_608_322_731, &chrono::Utc),
            "2026-12-07T01:52:02+00:00"
        );
        let items = json!([{"id": 7, "prompt": null, "deadline": null},
                           {"id": 8, "prompt": "x", "deadline": 1_796_608_322_731_i64}]);
        let rows = rows(&items);
        assert_eq!(rows[0]["deadline"], Value::Null);
        assert_eq!(rows[0]["prompt"], Value::Null);
        assert_eq!(
            rows[1]["deadline"],
            local_time(1_796_608_322_731, &chrono::Local)
        );
    }
}
