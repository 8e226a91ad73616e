//! SQLite's one writer connection, and what keeps it clean between writes.
//!
//! Every write goes through this connection, one at a time (see
//! [`on_writer!`](super)). A write that fails must not leave a transaction
//! open on it: the driver counts transactions itself, and after some
//! failures (a full disk, which may make SQLite roll back on its own, so
//! the driver's own `ROLLBACK` then fails) its count and SQLite's disagree.
//! A count left above zero turns every later `BEGIN` into a savepoint
//! inside a transaction nobody commits: writes that report success and are
//! never stored. So after a failed write the count is checked (once the
//! driver's queued rollback has run), and a connection that is still inside
//! a transaction is closed, which makes SQLite roll it back, and a new one
//! is opened for the next write.

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, TransactionManager};

/// The writer connection, reopened after a failure that left it unclean.
pub(super) struct Writer {
    conn: Option<SqliteConnection>,
    /// How to open it again: as first opened, except that the file must
    /// exist (a data directory deleted under the server is not recreated
    /// empty).
    options: SqliteConnectOptions,
    closed: bool,
}

/// Transactions the driver counts open on `conn`.
fn depth(conn: &SqliteConnection) -> usize {
    <sqlx::Sqlite as sqlx::Database>::TransactionManager::get_transaction_depth(conn)
}

impl Writer {
    pub(super) fn new(conn: SqliteConnection, options: SqliteConnectOptions) -> Self {
        Writer {
            conn: Some(conn),
            options: options.create_if_missing(false),
            closed: false,
        }
    }

    /// The connection, clean: outside any transaction, opened again if the
    /// last failure discarded it. A storage that was closed answers
    /// `PoolClosed`.
    pub(super) async fn ready(&mut self) -> Result<&mut SqliteConnection, sqlx::Error> {
        if self.closed {
            return Err(sqlx::Error::PoolClosed);
        }
        // A write cancelled midway (its request dropped) skips `settle`.
        if self.conn.as_ref().is_some_and(|c| depth(c) != 0) {
            self.settle(None).await;
        }
        if self.conn.is_none() {
            let conn = self.options.connect().await?;
            tracing::debug!("opened a new writer connection");
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("opened above"))
    }

    /// After a write failed with `error`: keeps the connection if no
    /// transaction is left open on it, else closes it (SQLite rolls back
    /// what it held).
    pub(super) async fn settle(&mut self, error: Option<&super::StorageError>) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let crashed = matches!(
            error,
            Some(super::StorageError::Database(sqlx::Error::WorkerCrashed))
        );
        if crashed {
            // Its thread is gone: nothing more goes through it.
        } else if depth(conn) != 0 {
            // The dropped transaction queued its rollback on the
            // connection's thread; a round trip there lets it run first.
            let reached = conn.lock_handle().await.is_ok();
            if reached && depth(conn) == 0 {
                return;
            }
        } else {
            return;
        }
        if let Some(conn) = self.conn.take()
            && let Err(e) = conn.close().await
        {
            tracing::debug!(error = %e, "closing a writer connection left in a transaction");
        }
    }

    /// Closes the connection for good.
    pub(super) async fn close(&mut self) {
        self.closed = true;
        if let Some(conn) = self.conn.take()
            && let Err(e) = conn.close().await
        {
            tracing::warn!(error = %e, "closing the database's writer");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{NewEvent, Refusal, Role, Storage, StorageError};
    use serde_json::{Value, json};

    async fn open(dir: &tempfile::TempDir) -> (Storage, String) {
        let url = format!("sqlite://{}", dir.path().join("attune.db").display());
        (Storage::connect(&url).await.unwrap(), url)
    }

    fn event(payload: &Value) -> [NewEvent<'_>; 1] {
        [NewEvent::of("core.manual", payload)]
    }

    /// Records one event through the event door's transaction.
    async fn record(storage: &Storage, payload: &Value) -> Result<i64, StorageError> {
        let (records, _) = storage
            .record_events(&event(payload), |records| async move {
                (records, Ok::<_, ()>(vec![]))
            })
            .await?;
        Ok(records[0].id)
    }

    /// A statement that makes SQLite roll the whole transaction back on its
    /// own (as a full disk may) left the driver counting a transaction that
    /// no longer existed: every later write then failed, or nested in a
    /// transaction that was never committed.
    #[tokio::test]
    async fn a_failed_write_fails_its_own_batch_and_never_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, url) = open(&dir).await;
        storage
            .writer_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON event \
                 WHEN json_extract(NEW.payload, '$.refuse') \
                 BEGIN SELECT RAISE(ROLLBACK, 'refused by the test'); END",
            )
            .await
            .unwrap();
        for _ in 0..3 {
            let refused = record(&storage, &json!({"refuse": true})).await;
            assert!(refused.is_err(), "{refused:?}");
            // The next writes, through the event door and through a custom
            // BEGIN, commit.
            let id = record(&storage, &json!({"refuse": false})).await.unwrap();
            let token = storage
                .insert_token(&format!("t{id}"), Role::Viewer, &format!("h{id}"))
                .await
                .unwrap();
            assert!(storage.revoke_token(token.id).await.unwrap());
            // Committed: another connection sees them.
            let other = Storage::connect(&url).await.unwrap();
            assert!(other.get_event(id).await.unwrap().is_some());
            other.close().await;
        }
        assert_eq!(storage.count_tokens().await.unwrap(), 3);
    }

    /// A database that cannot grow refuses writes as a state, which the
    /// first write to commit again ends; reads go on meanwhile.
    #[tokio::test]
    async fn a_full_disk_refuses_writes_until_space_returns() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, url) = open(&dir).await;
        let stored = record(&storage, &json!({"n": 0})).await.unwrap();
        // No page more than it has now: as full a disk as SQLite can see.
        storage
            .writer_sql("PRAGMA max_page_count = 1")
            .await
            .unwrap();
        let big = json!({"padding": "x".repeat(64 * 1024)});
        let refused = record(&storage, &big).await;
        assert!(
            matches!(refused, Err(StorageError::Refused(Refusal::DiskFull))),
            "{refused:?}"
        );
        assert_eq!(storage.refusal(), Some(Refusal::DiskFull));
        assert!(storage.get_event(stored).await.unwrap().is_some());
        // Space returns.
        storage
            .writer_sql("PRAGMA max_page_count = 1073741823")
            .await
            .unwrap();
        let id = record(&storage, &big).await.unwrap();
        assert_eq!(storage.refusal(), None);
        let token = storage.insert_token("t", Role::Viewer, "h").await.unwrap();
        assert!(storage.revoke_token(token.id).await.unwrap());
        let other = Storage::connect(&url).await.unwrap();
        assert_eq!(other.get_event(id).await.unwrap().unwrap().payload, big);
        other.close().await;
    }

    /// The database file deleted under the storage: the write is not
    /// acknowledged, nor is any after it, and no new file is created.
    #[tokio::test]
    async fn a_database_deleted_under_the_storage_takes_no_more_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = open(&dir).await;
        record(&storage, &json!({"n": 0})).await.unwrap();
        let file = dir.path().join("attune.db");
        std::fs::remove_file(&file).unwrap();
        for _ in 0..2 {
            let refused = record(&storage, &json!({"n": 1})).await;
            assert!(
                matches!(refused, Err(StorageError::Refused(Refusal::Gone))),
                "{refused:?}"
            );
        }
        assert_eq!(storage.refusal(), Some(Refusal::Gone));
        assert!(!file.exists());
    }
}
