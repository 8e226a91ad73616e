//! How much of the disk one execution's `/scratch` may take.
//!
//! Usage is counted in 4 KiB blocks: a file takes its length rounded up to a
//! block (so a sparse file counts its whole length), and every directory,
//! link and empty file takes one block, which bounds how many entries a guest
//! can create. Every call that can grow usage asks [`ScratchQuota::charge`]
//! first and fails with `insufficient-space` when the growth does not fit.
//!
//! Counting exactly on every call would mean walking the directory, so the
//! quota keeps an estimate that only grows: each write adds what it grows
//! its file by (read from the file's own metadata), each new entry a block,
//! and deletions and truncations add nothing. Only when a charge would not fit
//! the estimate is usage measured: the directory is walked, and files the
//! guest still holds open but has unlinked (invisible to the walk, still on
//! disk) are added from the handles the quota saw opened.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use crate::output::LogLine;

/// The unit of usage: what one block of a file or one entry takes.
pub const BLOCK: u64 = 4096;

/// What `bytes` of file content take, in whole blocks (at least one).
fn blocks(bytes: u64) -> u64 {
    bytes.div_ceil(BLOCK).max(1).saturating_mul(BLOCK)
}

/// The quota of one execution's scratch directory; cheap to clone.
#[derive(Clone)]
pub struct ScratchQuota(Arc<Mutex<Usage>>);

struct Usage {
    root: PathBuf,
    limit: u64,
    /// Never below the real usage.
    estimate: u64,
    /// Every file opened, to count the ones still open but unlinked.
    opened: Vec<Weak<std::fs::File>>,
    /// How many of `opened` were alive at the last pruning.
    alive: usize,
    started: Instant,
    /// Entries charged: none means the guest created nothing.
    entries: u64,
    /// Charges refused, and when the first was (ms since `started`).
    refused: u64,
    first_refused_ms: u64,
}

/// The quota would be exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl From<Full> for std::io::Error {
    fn from(_: Full) -> Self {
        std::io::Error::from_raw_os_error(libc::ENOSPC)
    }
}

impl ScratchQuota {
    /// A quota of `limit` bytes on the empty directory `root`, for an
    /// execution that started at `started`.
    pub fn new(root: &Path, limit: u64, started: Instant) -> Self {
        Self(Arc::new(Mutex::new(Usage {
            root: root.to_path_buf(),
            limit,
            estimate: 0,
            opened: Vec::new(),
            alive: 0,
            entries: 0,
            started,
            refused: 0,
            first_refused_ms: 0,
        })))
    }

    /// Remembers an opened file: while it is open it takes its space even
    /// once unlinked.
    pub fn opened(&self, file: &Arc<std::fs::File>) {
        let mut usage = self.0.lock().unwrap_or_else(|e| e.into_inner());
        usage.opened.push(Arc::downgrade(file));
        // Pruning when the list has doubled keeps opening O(1) amortized.
        if usage.opened.len() > 2 * usage.alive.max(16) {
            usage.opened.retain(|w| w.strong_count() > 0);
            usage.alive = usage.opened.len();
        }
    }

    /// Charges one new entry (file, directory or link).
    pub fn charge_entry(&self) -> Result<(), Full> {
        self.charge(BLOCK)?;
        self.0.lock().unwrap_or_else(|e| e.into_inner()).entries += 1;
        Ok(())
    }

    /// Whether no entry was ever charged, so the directory is still as
    /// empty as it was given (every entry is charged before it is created).
    pub fn created_nothing(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).entries == 0
    }

    /// Charges a write of `len` bytes to `file` at `offset`, or at its end
    /// when `offset` is `None`.
    pub fn charge_write(
        &self,
        file: &Arc<std::fs::File>,
        offset: Option<u64>,
        len: u64,
    ) -> Result<(), Full> {
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let end = match offset {
            Some(offset) => offset.saturating_add(len).max(size),
            None => size.saturating_add(len),
        };
        self.charge(blocks(end) - blocks(size))
    }

    /// Charges setting `file`'s length to `size`.
    pub fn charge_resize(&self, file: &Arc<std::fs::File>, size: u64) -> Result<(), Full> {
        let now = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.charge(blocks(size).saturating_sub(blocks(now)))
    }

    fn charge(&self, growth: u64) -> Result<(), Full> {
        let mut usage = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if growth == 0 {
            return Ok(());
        }
        if usage.estimate.saturating_add(growth) > usage.limit {
            usage.estimate = usage.measure();
            if usage.estimate.saturating_add(growth) > usage.limit {
                if usage.refused == 0 {
                    usage.first_refused_ms = usage.started.elapsed().as_millis() as u64;
                }
                usage.refused += 1;
                return Err(Full);
            }
        }
        usage.estimate += growth;
        Ok(())
    }

    /// A warning for the execution's log when writes were refused: guests
    /// often see only a generic I/O error, so the log says why.
    pub fn take_log(&self) -> Option<LogLine> {
        let mut usage = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let refused = std::mem::take(&mut usage.refused);
        (refused > 0).then(|| LogLine {
            level: "warn",
            message: format!(
                "/scratch is full: its quota of {} bytes is used, so writes failed",
                usage.limit
            ),
            fields: vec![("refused".into(), refused.to_string())],
            at_ms: usage.first_refused_ms,
        })
    }

    /// The usage now, measured.
    pub fn measure(&self) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).measure()
    }
}

impl Usage {
    /// Walks the directory, then adds the files written here that are still
    /// open but no longer in it.
    fn measure(&mut self) -> u64 {
        let mut seen = HashSet::new();
        let mut total = 0u64;
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                if !seen.insert((meta.dev(), meta.ino())) {
                    continue;
                }
                if meta.is_dir() {
                    total = total.saturating_add(BLOCK);
                    dirs.push(entry.path());
                } else if meta.is_file() {
                    total = total.saturating_add(blocks(meta.len()));
                } else {
                    total = total.saturating_add(BLOCK);
                }
            }
        }
        self.opened.retain(|w| w.strong_count() > 0);
        self.alive = self.opened.len();
        for file in self.opened.iter().filter_map(Weak::upgrade) {
            if let Ok(meta) = file.metadata()
                && seen.insert((meta.dev(), meta.ino()))
            {
                total = total.saturating_add(blocks(meta.len()));
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn only_a_quota_that_charged_no_entry_created_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let quota = ScratchQuota::new(dir.path(), BLOCK, Instant::now());
        assert!(quota.created_nothing());
        quota.charge_entry().unwrap();
        assert!(!quota.created_nothing());
        // A refused entry was never created.
        let full = ScratchQuota::new(dir.path(), 0, Instant::now());
        assert_eq!(full.charge_entry(), Err(Full));
        assert!(full.created_nothing());
    }

    fn open(quota: &ScratchQuota, path: &Path) -> Arc<std::fs::File> {
        let file = Arc::new(
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(path)
                .unwrap(),
        );
        quota.opened(&file);
        file
    }

    fn write(quota: &ScratchQuota, file: &Arc<std::fs::File>, len: usize) -> Result<(), Full> {
        quota.charge_write(file, None, len as u64)?;
        (&**file).write_all(&vec![7; len]).unwrap();
        Ok(())
    }

    #[test]
    fn writes_past_the_limit_are_refused_and_deleting_frees_room() {
        let dir = tempfile::tempdir().unwrap();
        let quota = ScratchQuota::new(dir.path(), 64 * BLOCK, Instant::now());
        let a = open(&quota, &dir.path().join("a"));
        quota.charge_entry().unwrap();
        write(&quota, &a, 40 * BLOCK as usize).unwrap();
        let b = open(&quota, &dir.path().join("b"));
        quota.charge_entry().unwrap();
        assert_eq!(write(&quota, &b, 30 * BLOCK as usize), Err(Full));
        write(&quota, &b, 20 * BLOCK as usize).unwrap();

        drop(a);
        std::fs::remove_file(dir.path().join("a")).unwrap();
        write(&quota, &b, 30 * BLOCK as usize).unwrap();
        assert_eq!(quota.measure(), 50 * BLOCK);
        let warning = quota.take_log().unwrap();
        assert_eq!(warning.fields, [("refused".to_string(), "1".to_string())]);
        assert!(quota.take_log().is_none());
    }

    #[test]
    fn an_unlinked_file_still_open_still_counts() {
        let dir = tempfile::tempdir().unwrap();
        let quota = ScratchQuota::new(dir.path(), 64 * BLOCK, Instant::now());
        let written = open(&quota, &dir.path().join("held"));
        write(&quota, &written, 40 * BLOCK as usize).unwrap();
        drop(written);
        // Opened again, not written: it still holds its blocks once unlinked.
        let held = open(&quota, &dir.path().join("held"));
        std::fs::remove_file(dir.path().join("held")).unwrap();
        let b = open(&quota, &dir.path().join("b"));
        assert_eq!(write(&quota, &b, 30 * BLOCK as usize), Err(Full));
        drop(held);
        write(&quota, &b, 30 * BLOCK as usize).unwrap();
    }

    #[test]
    fn a_sparse_write_counts_its_whole_length() {
        let dir = tempfile::tempdir().unwrap();
        let quota = ScratchQuota::new(dir.path(), 64 * BLOCK, Instant::now());
        let f = open(&quota, &dir.path().join("sparse"));
        assert_eq!(quota.charge_write(&f, Some(1 << 30), 1), Err(Full));
        assert_eq!(quota.charge_resize(&f, 1 << 30), Err(Full));
        quota.charge_resize(&f, 8 * BLOCK).unwrap();
    }

    #[test]
    fn overwriting_in_place_costs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let quota = ScratchQuota::new(dir.path(), 64 * BLOCK, Instant::now());
        let f = open(&quota, &dir.path().join("f"));
        write(&quota, &f, 60 * BLOCK as usize).unwrap();
        for _ in 0..100 {
            quota.charge_write(&f, Some(0), 60 * BLOCK).unwrap();
        }
    }
}
