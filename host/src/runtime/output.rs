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
    dropped: u64,
}

/// An in-memory output stream that keeps at most `cap` bytes.
#[derive(Debug, Clone)]
pub struct CappedPipe {
    cap: usize,
    buffer: Arc<Mutex<Buffer>>,
}

/// What a [`CappedPipe`] captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// The kept bytes, decoded as UTF-8 (invalid sequences replaced).
    pub text: String,
    /// How many bytes past the cap were dropped.
    pub dropped: u64,
}

impl Captured {
    /// The text with a truncation marker appended when bytes were dropped.
    pub fn marked(&self) -> String {
        if self.dropped == 0 {
            self.text.clone()
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
        Self {
            cap,
            buffer: Arc::default(),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut buf = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.cap.saturating_sub(buf.kept.len());
        let take = room.min(bytes.len());
        buf.kept.extend_from_slice(&bytes[..take]);
        buf.dropped += (bytes.len() - take) as u64;
    }

    /// The kept bytes from `offset` on (for streaming while the guest runs).
    pub fn since(&self, offset: usize) -> Vec<u8> {
        let buf = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        buf.kept
            .get(offset..)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    /// Everything captured so far.
    pub fn captured(&self) -> Captured {
        let buf = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        Captured {
            text: String::from_utf8_lossy(&buf.kept).into_owned(),
            dropped: buf.dropped,
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
