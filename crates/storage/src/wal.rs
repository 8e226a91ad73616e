//! SQLite's write-ahead log, checkpointed beside the writer instead of by it.
//!
//! By default SQLite checkpoints inside the commit that takes the log past
//! 1,000 pages: that commit copies the logged pages into the database file
//! and waits for two `fsync`s, and every write queued behind it waits too
//! (at a few thousand events a second, a stall of milliseconds several times
//! a second). Here the writer checkpoints only as a backstop, at
//! [`BACKSTOP_PAGES`]; a task checkpoints (`PASSIVE`: it copies what no
//! reader still needs and never blocks a writer) on a reader connection
//! [`SETTLE`] after writes begin, while the writer goes on appending.

use std::time::Duration;

use sqlx::sqlite::SqlitePool;
use tokio::sync::mpsc;

/// Log size (pages) at which the writer checkpoints itself: far more than
/// the log grows between the task's checkpoints, so only a task held up
/// for long (or a reader holding an old snapshot) leaves it to the writer.
pub(super) const BACKSTOP_PAGES: u32 = 16_384;

/// How long the task lets writes gather before a checkpoint, and the least
/// time between two.
const SETTLE: Duration = Duration::from_millis(100);

/// The writers' side: says that a write is coming.
#[derive(Clone)]
pub(super) struct Wal {
    /// Holds at most one wake-up, so writes while one waits add nothing;
    /// the task ends when every sender (every clone of the storage) is gone.
    wrote: mpsc::Sender<()>,
}

impl Wal {
    /// Starts the checkpointing task on `read`.
    pub(super) fn start(read: SqlitePool) -> Self {
        let (wrote, woken) = mpsc::channel(1);
        tokio::spawn(checkpoints(read, woken));
        Wal { wrote }
    }

    /// A write is about to go through the writer.
    pub(super) fn wrote(&self) {
        let _ = self.wrote.try_send(());
    }
}

async fn checkpoints(read: SqlitePool, mut woken: mpsc::Receiver<()>) {
    while woken.recv().await.is_some() {
        tokio::time::sleep(SETTLE).await;
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&read)
            .await
        {
            if matches!(e, sqlx::Error::PoolClosed) {
                return;
            }
            // A full disk is logged by the writes it refuses, once.
            if super::Refusal::of(&e).is_none() {
                tracing::warn!(error = %e, "checkpointing the database's log");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{NewEvent, Storage};
    use serde_json::json;
    use std::time::Duration;

    /// Writes that stay far below the writer's backstop still reach the
    /// database file soon: the task checkpoints them, not the writer.
    #[tokio::test]
    async fn the_log_is_checkpointed_beside_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("attune.db");
        let storage = Storage::connect(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        // Let the checkpoint after the migrations happen first.
        tokio::time::sleep(super::SETTLE * 3).await;
        let before = std::fs::metadata(&file).unwrap().len();
        let payload = json!({"padding": "x".repeat(2000)});
        let events: Vec<NewEvent<'_>> = (0..500)
            .map(|_| NewEvent::of("core.manual", &payload))
            .collect();
        storage.insert_events(&events).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&file).unwrap().len() < before + 500 * 2000 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the log was not checkpointed into the database file"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
