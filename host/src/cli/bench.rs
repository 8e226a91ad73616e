//! `attune bench`: a load generator against a running server.
//!
//! Posts N manual events (through a rule running the action), N signed
//! webhook deliveries (through a webhook rule), N direct executions, or N
//! runs of a workflow chaining the action K times, at a
//! given rate or as fast as possible with bounded concurrency, waits until
//! every execution has finished, then reports
//! executions completed per second and the latency from the request to the
//! execution running (p50/p99), computed from the server's own timestamps.
//! With `--policy`, the rule carries a concurrency policy whose key never
//! collides, to measure what admission costs. With `--page`, it times a
//! console page instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::client::ClientArgs;
use crate::client::{Body, Client};
use attune_engine::triggers::webhook::sign;
use reqwest::Method;

/// Options of `attune bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// How many events (or executions) to send.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Requests per second; 0 sends as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Action to run.
    #[arg(long, default_value = "core.noop")]
    pub action: String,
    /// Parameters of the action, as a JSON object.
    #[arg(long, default_value = "{}")]
    pub params: String,
    /// Post direct executions instead of events through a rule.
    #[arg(long, conflicts_with = "webhook")]
    pub direct: bool,
    /// Post signed webhook deliveries (a `core.webhook` rule with a fresh
    /// secret) instead of manual events.
    #[arg(long)]
    pub webhook: bool,
    /// Run a workflow of this many tasks in a row, each the action, as
    /// direct executions (a pack holding it is uploaded first): tasks per
    /// second against `--direct` runs of the action show the workflow
    /// overhead per task.
    #[arg(long, conflicts_with_all = ["webhook", "direct"],
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub workflow_tasks: Option<u32>,
    /// Time this console page instead (e.g. `/ui/executions`): sign in
    /// with the token, GET it `--count` times, `--concurrency` at once, and
    /// report pages per second and p50/p99 of each answer read whole.
    #[arg(long, conflicts_with_all = ["webhook", "direct", "workflow_tasks"])]
    pub page: Option<String>,
    /// Put a policy on the rule: at most one running per key, the key
    /// rendered from `--policy-key` (with the default, give the action a
    /// `message` from the event, e.g. `--action core.echo --params
    /// '{"message": "n{{ event.payload.i }}"}'`, so that keys never
    /// collide): the cost of admission, against the same run without it.
    #[arg(long, conflicts_with_all = ["direct", "workflow_tasks", "page"])]
    pub policy: bool,
    /// The key template of `--policy`'s policy.
    #[arg(long, default_value = "{{ params.message }}", requires = "policy")]
    pub policy_key: String,
    /// Give up waiting for completion after this long.
    #[arg(long, default_value = "300s", value_parser = attune_util::units::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub(super) async fn run(args: BenchArgs) -> anyhow::Result<i32> {
    let client = args.client.client()?;
    if let Some(page) = &args.page {
        return pages(&client, page, &args).await;
    }
    let mut params: Value = serde_json::from_str(&args.params)?;
    let tag = format!("bench{}", attune_storage::now_ms());
    let rule = format!("bench.{tag}");
    let secret = crate::api::auth::new_token();
    let direct = args.direct || args.workflow_tasks.is_some();
    let policies = if args.policy {
        json!([{"concurrency": 1, "key": args.policy_key}])
    } else {
        json!([])
    };
    let mut action = args.action.clone();
    if let Some(tasks) = args.workflow_tasks {
        let archive = chain_pack(&tag, &action, &params, tasks)?;
        let body = Body::Bytes {
            content_type: "application/gzip",
            bytes: archive,
        };
        client.call(Method::POST, "/packs", Some(body)).await?;
        action = format!("{tag}.chain");
        params = json!({});
    }
    if args.webhook {
        client
            .post(
                "/rules",
                json!({"ref": rule, "trigger": "core.webhook",
                       "trigger_params": {"name": tag, "secret": secret},
                       "action": action, "action_params": params, "policies": policies}),
            )
            .await?;
    } else if !direct {
        client
            .post(
                "/rules",
                json!({"ref": rule, "trigger": "core.manual",
                       "criteria": format!("event.payload.tag == \"{tag}\""),
                       "action": action, "action_params": params, "policies": policies}),
            )
            .await?;
    }
    let what = if args.workflow_tasks.is_some() {
        "workflow runs"
    } else if direct {
        "executions"
    } else if args.webhook {
        "webhook deliveries"
    } else {
        "events"
    };
    eprintln!(
        "sending {} {what} ({})…",
        args.count,
        if args.rate == 0 {
            "as fast as possible".to_string()
        } else {
            format!("{}/s", args.rate)
        }
    );
    let started = Instant::now();
    let slots = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.count {
        if args.rate > 0 {
            let due = started + Duration::from_secs_f64(i as f64 / args.rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = slots.clone().acquire_owned().await?;
        let client = client.clone();
        let (path, body) = if direct {
            let run = json!({"action": action, "params": params});
            ("/executions".to_string(), Body::Json(run))
        } else if args.webhook {
            let bytes = json!({"i": i}).to_string().into_bytes();
            let signature = sign(&secret, &bytes);
            (
                format!("/webhooks/{tag}"),
                Body::Signed { bytes, signature },
            )
        } else {
            let event = json!({"trigger": "core.manual", "payload": {"tag": tag, "i": i}});
            ("/events".to_string(), Body::Json(event))
        };
        tasks.spawn(async move {
            let r = client.call(Method::POST, &path, Some(body)).await;
            drop(permit);
            // An event or execution answers its id; a delivery its event's.
            r.map(|v| v["id"].as_i64().or(v["event"].as_i64()).unwrap_or_default())
        });
    }
    let mut ids = Vec::with_capacity(args.count);
    let mut failures = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined? {
            Ok(id) => ids.push(id),
            Err(e) => {
                failures += 1;
                if failures <= 3 {
                    eprintln!("request failed: {e}");
                }
            }
        }
    }
    let sent = started.elapsed();
    eprintln!(
        "sent in {:.2}s ({:.0}/s); waiting for the executions…",
        sent.as_secs_f64(),
        ids.len() as f64 / sent.as_secs_f64()
    );

    let records = collect(
        &client,
        &args,
        direct.then_some(action.as_str()),
        &rule,
        &ids,
    )
    .await?;
    let done: Vec<&Value> = records
        .iter()
        .filter(|e| e["finished_at"].is_i64())
        .collect();
    let mut latencies: Vec<i64> = done
        .iter()
        .filter_map(|e| Some(e["started_at"].as_i64()? - e["created_at"].as_i64()?))
        .collect();
    latencies.sort_unstable();
    let first = records
        .iter()
        .filter_map(|e| e["created_at"].as_i64())
        .min()
        .unwrap_or(0);
    let last = done
        .iter()
        .filter_map(|e| e["finished_at"].as_i64())
        .max()
        .unwrap_or(first);
    let span = ((last - first).max(1)) as f64 / 1000.0;
    let pct = |p: f64| -> i64 {
        if latencies.is_empty() {
            return 0;
        }
        latencies[((latencies.len() as f64 - 1.0) * p).round() as usize]
    };
    let succeeded = done.iter().filter(|e| e["status"] == "succeeded").count();
    let report = json!({
        "requested": args.count,
        "request_failures": failures,
        "executions": records.len(),
        "finished": done.len(),
        "succeeded": succeeded,
        "executions_per_second": (done.len() as f64 / span).round(),
        "latency_to_running_ms": {"p50": pct(0.50), "p99": pct(0.99), "max": latencies.last().copied().unwrap_or(0)},
        "wall_seconds": span,
    });
    let mut report = report;
    if args.policy {
        report["policy"] = json!(args.policy_key);
    }
    if let Some(tasks) = args.workflow_tasks {
        report["tasks_per_second"] = json!((done.len() as f64 * f64::from(tasks) / span).round());
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    if !direct {
        let _ = client
            .call(reqwest::Method::DELETE, &format!("/rules/{rule}"), None)
            .await;
    }
    if args.workflow_tasks.is_some() {
        let _ = client
            .call(reqwest::Method::DELETE, &format!("/packs/{tag}"), None)
            .await;
    }
    Ok(if done.len() == args.count && failures == 0 {
        0
    } else {
        1
    })
}

/// Times console page `path`: `--count` GETs, `--concurrency` at once.
async fn pages(client: &Client, path: &str, args: &BenchArgs) -> anyhow::Result<i32> {
    let cookie = client.console_session().await?;
    eprintln!("getting {path} {} times…", args.count);
    let slots = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for _ in 0..args.count {
        let permit = slots.clone().acquire_owned().await?;
        let (client, cookie, path) = (client.clone(), cookie.clone(), path.to_string());
        tasks.spawn(async move {
            let r = client.page(&path, &cookie).await;
            drop(permit);
            r
        });
    }
    let mut times = Vec::with_capacity(args.count);
    let mut failures = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined? {
            Ok((status, took)) if status.is_success() => times.push(took.as_secs_f64() * 1000.0),
            Ok((status, _)) => {
                failures += 1;
                if failures <= 3 {
                    eprintln!("{path} answered {status}");
                }
            }
            Err(e) => {
                failures += 1;
                if failures <= 3 {
                    eprintln!("request failed: {e}");
                }
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        times
            .get(((times.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(0.0, |ms| (ms * 100.0).round() / 100.0)
    };
    let report = json!({
        "page": path,
        "requested": args.count,
        "failures": failures,
        "pages_per_second": (times.len() as f64 / wall).round(),
        "ms": {"p50": pct(0.50), "p99": pct(0.99), "max": pct(1.0)},
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(if failures == 0 { 0 } else { 1 })
}

/// Reads every execution of the run once all have finished (or time is up).
/// `direct`: the action the executions were asked for directly.
async fn collect(
    client: &Client,
    args: &BenchArgs,
    direct: Option<&str>,
    rule: &str,
    ids: &[i64],
) -> anyhow::Result<Vec<Value>> {
    let deadline = Instant::now() + args.timeout;
    let min_id = ids.iter().min().copied().unwrap_or(0);
    loop {
        let mut records = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = if let Some(action) = direct {
                format!(
                    "/executions?limit=500&{}",
                    crate::client::query([("action", action)])
                )
            } else {
                format!("/executions?limit=500&rule={rule}")
            };
            if let Some(a) = &after {
                path.push_str(&format!("&after={a}"));
            }
            let page = client.get(&path).await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            let stop = items
                .last()
                .and_then(|e| e["id"].as_i64())
                .is_some_and(|id| direct.is_some() && id < min_id);
            records.extend(items.into_iter().filter(|e| {
                direct.is_none() || e["id"].as_i64().is_some_and(|id| ids.contains(&id))
            }));
            after = page["next"].as_str().map(str::to_string);
            if after.is_none() || stop {
                break;
            }
        }
        let finished = records.iter().filter(|e| e["finished_at"].is_i64()).count();
        if finished >= ids.len() || Instant::now() >= deadline {
            return Ok(records);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A pack `tag` holding the workflow `chain`: `tasks` runs of `action` with
/// `params`, one after another, as a `.tar.gz`.
fn chain_pack(tag: &str, action: &str, params: &Value, tasks: u32) -> anyhow::Result<Vec<u8>> {
    let steps: serde_json::Map<String, Value> = (0..tasks)
        .map(|i| {
            let mut task = json!({"action": action, "input": params});
            if i + 1 < tasks {
                task["next"] = json!([{"when": "succeeded", "do": [format!("t{}", i + 1)]}]);
            }
            (format!("t{i}"), task)
        })
        .collect();
    let workflow = json!({"input": {"type": "object"}, "tasks": steps});
    let manifest =
        format!("name = \"{tag}\"\nversion = \"1\"\nworkflows = [\"workflows/chain.yaml\"]\n");
    // JSON is YAML.
    let files = [
        ("pack.toml", manifest.into_bytes()),
        ("workflows/chain.yaml", workflow.to_string().into_bytes()),
    ];
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, path, bytes.as_slice())?;
    }
    Ok(tar.into_inner()?.finish()?)
}
