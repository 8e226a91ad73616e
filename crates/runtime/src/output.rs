//! Captured stdout/stderr with a byte cap that truncates instead of trapping.
//!
//! wasmtime-wasi's `MemoryOutputPipe` traps the guest once full; an action that
//! prints too much should keep running with its output cut, so this pipe keeps
//! the first `cap` bytes, counts the rest and always accepts writes.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use serde::Serialize;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Largest write permit handed to the guest at once.
const PERMIT: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Buffer {
    kept: Vec<u8>,
    written: u64,
}

/// An in-memory output stream that keeps at most `cap` bytes.
///
/// It holds up to `slack` bytes more than it shows, so a secret that the
/// cap cuts through is still whole when it is redacted: redaction comes
/// first, then the cut (see `secrets::SecretSet::capture`).
#[derive(Debug, Clone)]
pub struct CappedPipe {
    cap: usize,
    slack: usize,
    buffer: Arc<Mutex<Buffer>>,
}

/// What a [`CappedPipe`] captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// The kept bytes, decoded as UTF-8 (invalid sequences replaced).
    pub text: String,
    /// How many bytes past the cap were dropped.
    pub dropped: u64,
    /// Whether the marker may say how many: not when the output could
    /// hold secrets, since the count (written before redaction) would tell
    /// their lengths.
    pub count_shown: bool,
}

impl Captured {
    /// The text with a truncation marker appended when bytes were dropped.
    pub fn marked(&self) -> String {
        if self.dropped == 0 {
            self.text.clone()
        } else if !self.count_shown {
            format!("{}\n[attune: output truncated]", self.text)
        } else {
            format!(
                "{}\n[attune: output truncated, {} bytes dropped]",
                self.text, self.dropped
            )
        }
    }
}

impl CappedPipe {
    /// A pipe that keeps at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self::with_slack(cap, 0)
    }

    /// A pipe that shows at most `cap` bytes and holds `slack` more.
    pub fn with_slack(cap: usize, slack: usize) -> Self {
        Self {
            cap,
            slack,
            buffer: Arc::default(),
        }
    }

    /// The bytes it shows at most.
    pub fn cap(&self) -> usize {
        self.cap
    }

    fn push(&self, bytes: &[u8]) {
        let mut buf = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let room = (self.cap + self.slack).saturating_sub(buf.kept.len());
        let take = room.min(bytes.len());
        buf.kept.extend_from_slice(&bytes[..take]);
        buf.written += bytes.len() as u64;
    }

    /// The held bytes from `offset` on, past the cap included (for
    /// streaming while the guest runs; the reader cuts them).
    pub fn since(&self, offset: usize) -> Vec<u8> {
        let buf = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        buf.kept
            .get(offset..)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    /// Whether more output could still change what the held bytes show:
    /// false once it holds all it ever will.
    pub fn may_grow(&self) -> bool {
        let buf = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        buf.kept.len() < self.cap + self.slack
    }

    /// The held bytes and how many were written in all.
    pub fn raw(&self) -> (Vec<u8>, u64) {
        let buf = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        (buf.kept.clone(), buf.written)
    }

    /// Everything captured so far, cut at the cap (nothing redacted).
    pub fn captured(&self) -> Captured {
        let buf = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let shown = &buf.kept[..buf.kept.len().min(self.cap)];
        Captured {
            text: String::from_utf8_lossy(shown).into_owned(),
            dropped: buf.written.saturating_sub(self.cap as u64),
            count_shown: true,
        }
    }
}

impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CappedPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// One line logged by the guest through `attune:action/log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// The message.
    pub message: String,
    /// Key/value fields, in the order given.
    pub fields: Vec<(String, String)>,
    /// Milliseconds since the execution started.
    pub at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bytes_and_counts_the_rest() {
        let mut pipe = CappedPipe::new(5);
        pipe.write(Bytes::from_static(b"hel")).unwrap();
        pipe.write(Bytes::from_static(b"lo, world")).unwrap();
        let got = pipe.captured();
        assert_eq!(got.text, "hello");
        assert_eq!(got.dropped, 7);
        assert!(got.marked().contains("7 bytes dropped"));
    }

    #[test]
    fn marks_nothing_when_under_the_cap() {
        let mut pipe = CappedPipe::new(64);
        pipe.write(Bytes::from_static(b"ok")).unwrap();
        assert_eq!(pipe.captured().marked(), "ok");
    }
}
