//! An execution's output as it is written: the API's and the console's
//! output streams read it from here.

use futures_util::Stream;

use super::Core;
use attune_storage::ExecutionRecord;

/// One piece of an execution's output.
#[derive(Debug, Clone)]
pub enum Output {
    /// New stdout text (redacted).
    Stdout(String),
    /// New stderr text (redacted).
    Stderr(String),
    /// The execution ended; the last item.
    End(Box<ExecutionRecord>),
}

/// How often a stream looks for new output.
const TICK: std::time::Duration = std::time::Duration::from_millis(200);

/// Execution `id`'s output: new stdout and stderr text as it is written
/// (live while this node runs it, at the end otherwise), then its end.
pub fn stream(core: Core, id: i64) -> impl Stream<Item = Output> {
    struct Progress {
        core: Core,
        id: i64,
        // Bytes of (redacted) stdout and stderr already sent.
        sent: (usize, usize),
        done: bool,
        first: bool,
    }
    let start = Progress {
        core,
        id,
        sent: (0, 0),
        done: false,
        first: true,
    };
    let ticks = futures_util::stream::unfold(start, |mut p| async move {
        if p.done {
            return None;
        }
        if !p.first {
            tokio::time::sleep(TICK).await;
        }
        p.first = false;
        let mut out = Vec::new();
        let (o, e) = p.sent;
        if let Some(live) = p.core.dispatch.output(p.id) {
            let (stdout, o) = live.since(&live.stdout, o);
            let (stderr, e) = live.since(&live.stderr, e);
            out.extend((!stdout.is_empty()).then_some(Output::Stdout(stdout)));
            out.extend((!stderr.is_empty()).then_some(Output::Stderr(stderr)));
            p.sent = (o, e);
        } else if let Ok(Some(record)) = p.core.storage.get_execution(p.id).await
            && record.status.is_finished()
        {
            let rest = |text: &Option<String>, sent: usize| -> String {
                let bytes = text.as_deref().unwrap_or_default().as_bytes();
                String::from_utf8_lossy(bytes.get(sent..).unwrap_or_default()).into_owned()
            };
            let (stdout, stderr) = (rest(&record.stdout, o), rest(&record.stderr, e));
            out.extend((!stdout.is_empty()).then_some(Output::Stdout(stdout)));
            out.extend((!stderr.is_empty()).then_some(Output::Stderr(stderr)));
            out.push(Output::End(Box::new(record)));
            p.done = true;
        }
        Some((futures_util::stream::iter(out), p))
    });
    futures_util::StreamExt::flatten(ticks)
}
