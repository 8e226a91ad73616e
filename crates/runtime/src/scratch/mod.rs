//! Per-execution scratch directories, prepared off the hot path.
//!
//! Every execution gets an empty directory of its own, preopened at
//! `/scratch`. Creating and removing a directory costs tens of microseconds
//! on a real disk — more than instantiating and calling a small component —
//! so a janitor thread keeps a few empty directories ready and removes used
//! ones in the background. A directory is handed out again only if it is
//! still empty when the execution ends — known without listing it when the
//! quota charged no entry, since every entry is charged before it is
//! created; anything the guest left behind is deleted before its directory
//! could be seen by anyone else.

pub mod fs;
pub mod quota;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

/// How many empty directories the janitor keeps ready.
const READY_TARGET: usize = 16;

enum Job {
    Remove(PathBuf),
    Refill,
}

struct Shared {
    root: tempfile::TempDir,
    ready: Mutex<Vec<PathBuf>>,
}

/// A pool of empty scratch directories under one private root.
pub struct ScratchPool {
    shared: Arc<Shared>,
    janitor: Mutex<Option<Sender<Job>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ScratchPool {
    fn drop(&mut self) {
        // Closing the channel ends the janitor, which then drops the root
        // directory; wait for it so nothing is left behind at exit.
        lock(&self.janitor).take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One execution's scratch directory; returns to the pool (or is removed) on drop.
pub struct Scratch {
    path: PathBuf,
    /// Known to be empty (nothing was created in it): handed out again
    /// without listing it.
    unused: bool,
    shared: Arc<Shared>,
    janitor: Sender<Job>,
}

impl Scratch {
    /// The host path of the directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives the directory back; `known_empty` (its quota charged no
    /// entry) makes it ready again without being listed.
    pub fn give_back(mut self, known_empty: bool) {
        self.unused = known_empty;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let path = std::mem::take(&mut self.path);
        let empty = self.unused || std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none());
        if empty {
            lock(&self.shared.ready).push(path);
        } else if let Err(e) = self.janitor.send(Job::Remove(path)) {
            // The janitor is gone (shutting down): clean up here.
            let Job::Remove(path) = e.0 else { return };
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ScratchPool {
    /// Creates a private root under `parent` and starts the janitor.
    pub fn new(parent: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(parent)?;
        remove_orphans(parent);
        let root = tempfile::Builder::new()
            .prefix(&format!("run-{}-", std::process::id()))
            .tempdir_in(parent)?;
        let shared = Arc::new(Shared {
            root,
            ready: Mutex::new(Vec::new()),
        });
        let (tx, rx) = channel();
        let janitor_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("attune-scratch".into())
            .spawn(move || janitor(rx, &janitor_shared))?;
        let _ = tx.send(Job::Refill);
        Ok(Self {
            shared,
            janitor: Mutex::new(Some(tx)),
            thread: Some(thread),
        })
    }

    /// Hands out an empty directory, creating one on the spot if none is ready.
    pub fn take(&self) -> std::io::Result<Scratch> {
        let janitor = lock(&self.janitor)
            .clone()
            .ok_or_else(|| std::io::Error::other("scratch pool is shutting down"))?;
        let (ready, remaining) = {
            let mut ready = lock(&self.shared.ready);
            (ready.pop(), ready.len())
        };
        if remaining < READY_TARGET / 2 {
            let _ = janitor.send(Job::Refill);
        }
        let path = match ready {
            Some(path) => path,
            None => create(self.shared.root.path())?,
        };
        Ok(Scratch {
            path,
            unused: false,
            shared: self.shared.clone(),
            janitor,
        })
    }
}

/// Removes roots left by processes that died without cleaning up (`run-<pid>-…`
/// whose pid is gone). Only meaningful where `/proc` exists.
fn remove_orphans(parent: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("run-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn create(root: &Path) -> std::io::Result<PathBuf> {
    Ok(tempfile::Builder::new()
        .prefix("exec-")
        .tempdir_in(root)?
        .keep())
}

fn janitor(jobs: Receiver<Job>, shared: &Shared) {
    for job in jobs {
        match job {
            Job::Remove(path) => {
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove scratch directory");
                }
            }
            Job::Refill => {}
        }
        while lock(&shared.ready).len() < READY_TARGET {
            match create(shared.root.path()) {
                Ok(path) => lock(&shared.ready).push(path),
                Err(e) => {
                    tracing::warn!(error = %e, "could not create scratch directory");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_untouched_directory_is_reused_and_a_used_one_is_removed() {
        let parent = tempfile::tempdir().unwrap();
        let pool = ScratchPool::new(parent.path()).unwrap();
        let first = pool.take().unwrap();
        let clean = first.path().to_path_buf();
        drop(first);
        // Empty on return: back in the pool.
        assert!(lock(&pool.shared.ready).contains(&clean));

        let used = pool.take().unwrap();
        let used_path = used.path().to_path_buf();
        std::fs::write(used_path.join("left-behind"), b"x").unwrap();
        drop(used);
        assert!(!lock(&pool.shared.ready).contains(&used_path));
        for _ in 0..200 {
            if !used_path.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!used_path.exists(), "used directory still there");

        // Given back as known to be empty: trusted, not listed (the
        // caller vouches that nothing was created; here something was, to
        // show the listing is skipped).
        let vouched = pool.take().unwrap();
        let vouched_path = vouched.path().to_path_buf();
        std::fs::write(vouched_path.join("unlisted"), b"x").unwrap();
        vouched.give_back(true);
        assert!(lock(&pool.shared.ready).contains(&vouched_path));
    }

    #[test]
    fn dropping_the_pool_removes_its_root_and_orphans_are_swept() {
        let parent = tempfile::tempdir().unwrap();
        let orphan = parent.path().join("run-4294967295-dead");
        std::fs::create_dir_all(orphan.join("exec-x")).unwrap();
        let pool = ScratchPool::new(parent.path()).unwrap();
        assert!(!orphan.exists(), "orphan of a dead process not removed");
        let root = pool.shared.root.path().to_path_buf();
        drop(pool.take().unwrap());
        drop(pool);
        assert!(!root.exists());
    }

    #[test]
    fn every_handed_out_directory_is_empty() {
        let parent = tempfile::tempdir().unwrap();
        let pool = ScratchPool::new(parent.path()).unwrap();
        for i in 0..40 {
            let s = pool.take().unwrap();
            assert_eq!(std::fs::read_dir(s.path()).unwrap().count(), 0);
            if i % 2 == 0 {
                std::fs::write(s.path().join("f"), b"x").unwrap();
            }
        }
    }
}
