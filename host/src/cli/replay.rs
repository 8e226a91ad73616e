//! `attune action replay FILE`: a journal written by `attune action run
//! --record` replayed on this machine, by the component that ran or
//! another version of it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::json;

use super::RuntimeArgs;
use super::action::{EXIT_FAILED, invalid, local_secrets, print_json};
use super::local::{load, local_runtime};
use attune_runtime::http::OutboundConfig;
use attune_runtime::journal::same_value;
use attune_runtime::{ExecutionRequest, Journal, JournalMode, Limits};
use attune_util::units::parse_duration;

/// Most bytes of a journal file read.
const MAX_JOURNAL_FILE: u64 = 64 << 20;

/// `attune action replay …`
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The journal file.
    journal: PathBuf,
    /// Replay with this component (another version) instead of the one
    /// the journal names.
    #[arg(long, value_name = "FILE")]
    component: Option<String>,
    /// Grant the secret NAME with this value (the replay reads secrets as
    /// they are now; the journal holds only their names). Repeatable.
    #[arg(long = "secret", value_name = "NAME=VALUE")]
    secret: Vec<String>,
    /// Grant every secret of a file of `NAME=VALUE` lines.
    #[arg(long, value_name = "PATH")]
    secrets_file: Option<PathBuf>,
    /// Wall-clock limit.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: std::time::Duration,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// Writes `journal` to `path` (readable by its owner only: it holds what
/// the run received).
pub(super) fn write_journal(path: &Path, journal: &Journal) -> anyhow::Result<()> {
    use std::io::Write;
    let text = serde_json::to_vec_pretty(journal)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing the journal {}", path.display()))?;
    file.write_all(&text)?;
    Ok(())
}

pub(super) async fn replay_file(args: ReplayArgs) -> anyhow::Result<i32> {
    let journal = match read_journal(&args.journal) {
        Ok(j) => j,
        Err(e) => return Ok(invalid("invalid_journal", &format!("{e:#}"), vec![])),
    };
    if let Some(why) = &journal.not_replayable {
        return Ok(invalid(
            "not_replayable",
            &format!("the run is not replayable: {why}"),
            vec![],
        ));
    }
    let secrets = match local_secrets(&args.secret, args.secrets_file.as_deref()) {
        Ok(s) => s,
        Err(msg) => return Ok(invalid("invalid_secret", &msg, vec![])),
    };
    let source = match args.component.clone().or_else(|| journal.source.clone()) {
        Some(s) => s,
        None => {
            return Ok(invalid(
                "no_component",
                "the journal names no component; pass --component FILE",
                vec![],
            ));
        }
    };
    let limits = Limits {
        timeout: args.timeout,
        ..Limits::default()
    };
    let rt = local_runtime(&args.runtime, limits, OutboundConfig::default())?;
    let pack = match load(&rt, &source).await {
        Ok(p) => p,
        Err(e) => return Ok(invalid("invalid_component", &format!("{e:#}"), vec![])),
    };
    // Without --component the very component recorded must run.
    if args.component.is_none() && !journal.component.is_empty() {
        let digest = pack.digest();
        if digest != journal.component {
            return Ok(invalid(
                "component_changed",
                &format!(
                    "{source} is not the component that was recorded (digest {digest}, recorded {}); \
                     pass --component to replay another version",
                    journal.component
                ),
                vec![],
            ));
        }
    }
    let mut request = ExecutionRequest::new(journal.action.clone(), journal.params.clone());
    request.limits = Some(limits);
    request.secrets = Arc::new(secrets);
    request.journal = JournalMode::Replay(Arc::new(journal.clone()));
    let outcome = match pack.execute(&rt, request).await {
        Ok(o) => o,
        Err(e) => return Ok(invalid("replay_failed", &e.to_string(), vec![])),
    };
    let identical = outcome.divergence.is_none()
        && outcome.status.as_str() == journal.status
        && same_value(&outcome.result, &journal.result)
        && same_value(&outcome.error, &journal.error);
    print_json(&json!({
        "identical": identical,
        "result": outcome.result,
        "original_result": journal.result,
        "divergence": outcome.divergence,
        "status": outcome.status.as_str(),
        "original_status": journal.status,
        "error": outcome.error,
        "original_error": journal.error,
        "component": pack.digest(),
    }));
    Ok(if identical { 0 } else { EXIT_FAILED })
}

fn read_journal(path: &Path) -> anyhow::Result<Journal> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut text = Vec::new();
    file.take(MAX_JOURNAL_FILE + 1).read_to_end(&mut text)?;
    anyhow::ensure!(
        text.len() as u64 <= MAX_JOURNAL_FILE,
        "{} is over {MAX_JOURNAL_FILE} bytes",
        path.display()
    );
    serde_json::from_slice(&text).with_context(|| format!("{} is not a journal", path.display()))
}
