//! Whether the database takes writes, as the writes themselves find out.
//!
//! A full disk or a read-only database is a state, not a stream of errors:
//! the first write that meets it enters the state (one warning), every
//! write refused meanwhile is counted, and the first write that commits
//! again leaves it (one line, with the count). There is no probe of its
//! own: writes keep being tried as they come (a request, a timer's tick, a
//! heartbeat), and each one fails fast while the disk stays full, so the
//! first to find space ends the state.
//!
//! The files the server opened (the SQLite database, the data directory's
//! lock file) are remembered by device and inode. A write that finds one
//! of them gone or replaced is refused, and so is every later one: the
//! data directory is no longer the one this server holds, and writing on
//! would acknowledge into a deleted file. That state has no way out but a
//! restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Why the database takes no writes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The disk holding the database is full (SQLite `SQLITE_FULL`,
    /// PostgreSQL `53100 disk_full`); it passes when space is freed.
    DiskFull,
    /// The database takes no writes at all (a read-only file or mount, a
    /// PostgreSQL hot standby).
    ReadOnly,
    /// The data directory or database file was deleted or replaced under
    /// the server; it stops.
    Gone,
}

impl Refusal {
    /// The reason, for answers, `/readyz` and the log.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::DiskFull => {
                "the disk holding the database is full; writes resume once space is freed"
            }
            Refusal::ReadOnly => "the database is read-only; writes resume once it takes them",
            Refusal::Gone => {
                "the data directory was deleted or replaced under the server; it is stopping"
            }
        }
    }

    /// What a `sqlx` error says about writes, when it says anything:
    /// SQLite's result codes (primary code in the low byte), PostgreSQL's
    /// SQLSTATE.
    pub(super) fn of(e: &sqlx::Error) -> Option<Refusal> {
        let sqlx::Error::Database(db) = e else {
            return None;
        };
        let code = db.code()?;
        match &*code {
            // PostgreSQL's SQLSTATEs, five characters: disk_full (`could
            // not extend file`, no space for a temporary file) and
            // read_only_sql_transaction (a hot standby,
            // `default_transaction_read_only`).
            "53100" => return Some(Refusal::DiskFull),
            "25006" => return Some(Refusal::ReadOnly),
            _ => {}
        }
        // SQLite's extended result codes, the primary code in the low byte.
        match code.parse::<i32>().ok()? {
            // SQLITE_READONLY_DBMOVED: the file was unlinked or renamed.
            1032 => Some(Refusal::Gone),
            // SQLITE_IOERR_SHMSIZE: the shared-memory file could not grow.
            4874 => Some(Refusal::DiskFull),
            n if n & 0xff == 13 => Some(Refusal::DiskFull), // SQLITE_FULL
            n if n & 0xff == 8 => Some(Refusal::ReadOnly),  // SQLITE_READONLY
            _ => None,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

/// A file as opened: where, and which one.
struct Opened {
    path: PathBuf,
    id: (u64, u64),
}

/// Device and inode of `path`, or `None` when it is gone.
fn identity(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        std::fs::metadata(path).ok().map(|_| (0, 0))
    }
}

/// The refusal now in force, or just ended: which, since when, how many
/// writes it refused, and whether it ended (and which ending, so a spell
/// that came back is not reported as ended by an older ending).
struct Spell {
    refusal: Refusal,
    since: Instant,
    refused: u64,
    ended: Option<u64>,
}

/// How long a spell must stay ended before its end is logged. On a disk at
/// the edge of full, a small write may fit (into log pages SQLite reuses)
/// between two that do not: the state flips, but the log says one spell.
const SETTLED: std::time::Duration = std::time::Duration::from_secs(2);

/// Shared by every clone of a storage.
#[derive(Default)]
pub(super) struct Health {
    /// Set while a spell lasts, so a write that commits checks a flag, not
    /// a lock.
    refusing: AtomicBool,
    spell: Mutex<Option<Spell>>,
    /// Counts endings, to tell them apart.
    endings: std::sync::atomic::AtomicU64,
    /// Set for good once an opened file is found gone.
    gone: AtomicBool,
    opened: Mutex<Vec<Opened>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Health {
    /// Remembers `path` as opened now; false when it does not exist.
    pub(super) fn watch(&self, path: &Path) -> bool {
        let Some(id) = identity(path) else {
            return false;
        };
        lock(&self.opened).push(Opened {
            path: path.to_path_buf(),
            id,
        });
        true
    }

    /// The refusal in force, if any.
    pub(super) fn refusal(&self) -> Option<Refusal> {
        if self.gone.load(Ordering::Acquire) {
            return Some(Refusal::Gone);
        }
        if !self.refusing.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.spell).as_ref().map(|s| s.refusal)
    }

    /// Whether every opened file is still the one opened (a `stat` each);
    /// the first time one is not, the storage is gone for good.
    pub(super) fn files_in_place(&self) -> bool {
        if self.gone.load(Ordering::Acquire) {
            return false;
        }
        let moved = lock(&self.opened)
            .iter()
            .find(|o| identity(&o.path) != Some(o.id))
            .map(|o| o.path.clone());
        match moved {
            None => true,
            Some(path) => {
                self.gone(&path);
                false
            }
        }
    }

    /// Refuses every write from now on, saying so once.
    fn gone(&self, path: &Path) {
        if !self.gone.swap(true, Ordering::AcqRel) {
            tracing::error!(
                file = %path.display(),
                "the database or the data directory's lock file was deleted or replaced \
                 under the server; refusing every write"
            );
        }
    }

    /// A write met `refusal`: enters the spell, or counts one more write
    /// refused in it.
    pub(super) fn refused(&self, refusal: Refusal) {
        if refusal == Refusal::Gone {
            self.gone(Path::new("the database file"));
            return;
        }
        let mut spell = lock(&self.spell);
        match spell.as_mut() {
            Some(s) if s.refusal == refusal => {
                // Still on, or back within `SETTLED` of its ending: the
                // same spell.
                s.refused += 1;
                s.ended = None;
                self.refusing.store(true, Ordering::Release);
            }
            _ => {
                if let Some(s) = spell.take().filter(|s| s.ended.is_some()) {
                    log_end(&s);
                }
                tracing::warn!("{}", refusal.reason());
                *spell = Some(Spell {
                    refusal,
                    since: Instant::now(),
                    refused: 1,
                    ended: None,
                });
                self.refusing.store(true, Ordering::Release);
            }
        }
    }

    /// A write committed: ends the spell, if one lasts; its end is logged
    /// once it has stayed ended for [`SETTLED`].
    pub(super) fn committed(self: &std::sync::Arc<Self>) {
        if !self.refusing.load(Ordering::Acquire) {
            return;
        }
        let ending = self.endings.fetch_add(1, Ordering::AcqRel);
        {
            let mut spell = lock(&self.spell);
            let Some(s) = spell.as_mut() else {
                return;
            };
            s.ended = Some(ending);
            self.refusing.store(false, Ordering::Release);
        }
        let health = self.clone();
        let report = async move {
            tokio::time::sleep(SETTLED).await;
            health.settle(ending);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(report)),
            Err(_) => self.settle(ending),
        }
    }

    /// Logs the end of the spell, if it is still the `ending` one.
    fn settle(&self, ending: u64) {
        let mut spell = lock(&self.spell);
        if spell.as_ref().is_some_and(|s| s.ended == Some(ending))
            && let Some(s) = spell.take()
        {
            log_end(&s);
        }
    }
}

fn log_end(s: &Spell) {
    tracing::warn!(
        refused = s.refused,
        lasted = ?s.since.elapsed(),
        "the database takes writes again"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_read_only_databases_are_told_apart_from_other_failures() {
        struct Code(&'static str);
        impl std::fmt::Display for Code {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::fmt::Debug for Code {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Code {}
        impl sqlx::error::DatabaseError for Code {
            fn message(&self) -> &str {
                self.0
            }
            fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
                Some(self.0.into())
            }
            fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
                self
            }
            fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
                self
            }
            fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
                self
            }
            fn kind(&self) -> sqlx::error::ErrorKind {
                sqlx::error::ErrorKind::Other
            }
        }
        let of = |code| Refusal::of(&sqlx::Error::Database(Box::new(Code(code))));
        assert_eq!(of("13"), Some(Refusal::DiskFull));
        assert_eq!(of("53100"), Some(Refusal::DiskFull));
        assert_eq!(of("8"), Some(Refusal::ReadOnly));
        assert_eq!(of("25006"), Some(Refusal::ReadOnly));
        assert_eq!(of("1032"), Some(Refusal::Gone));
        assert_eq!(of("2067"), None); // SQLITE_CONSTRAINT_UNIQUE
        assert_eq!(of("23505"), None); // unique_violation
        assert_eq!(of("5"), None); // SQLITE_BUSY
    }

    #[tokio::test]
    async fn a_spell_is_entered_once_and_left_by_a_commit() {
        let health = std::sync::Arc::new(Health::default());
        assert_eq!(health.refusal(), None);
        health.refused(Refusal::DiskFull);
        health.refused(Refusal::DiskFull);
        assert_eq!(health.refusal(), Some(Refusal::DiskFull));
        assert_eq!(lock(&health.spell).as_ref().unwrap().refused, 2);
        health.committed();
        assert_eq!(health.refusal(), None);
        // Full again before the end was logged: the same spell goes on.
        health.refused(Refusal::DiskFull);
        assert_eq!(lock(&health.spell).as_ref().unwrap().refused, 3);
        health.committed();
        tokio::time::sleep(SETTLED + std::time::Duration::from_millis(500)).await;
        assert!(lock(&health.spell).is_none());
    }

    #[test]
    fn a_file_deleted_under_the_storage_refuses_writes_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("attune.pid");
        std::fs::write(&file, "1").unwrap();
        let health = std::sync::Arc::new(Health::default());
        assert!(health.watch(&file));
        assert!(health.files_in_place());
        // Another file put in its place is not the one opened.
        let other = dir.path().join("other");
        std::fs::write(&other, "2").unwrap();
        std::fs::rename(&other, &file).unwrap();
        assert!(!health.files_in_place());
        assert_eq!(health.refusal(), Some(Refusal::Gone));
        health.committed();
        assert_eq!(health.refusal(), Some(Refusal::Gone));
    }
}

/// The same refusals on PostgreSQL, raised by a trigger with the SQLSTATEs
/// a full disk (`could not extend file`) and a hot standby answer with.
#[cfg(test)]
mod postgres {
    use crate::{NewEvent, Refusal, Storage, StorageError};
    use sqlx::Connection as _;

    const ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

    #[tokio::test]
    async fn a_full_or_read_only_postgres_refuses_writes_until_it_takes_them_again() {
        let Ok(mut admin) = sqlx::PgConnection::connect(ADMIN).await else {
            eprintln!("skipped: no PostgreSQL at {ADMIN}");
            return;
        };
        let db = format!("attune_refusal_{}", hex::encode(rand::random::<[u8; 6]>()));
        sqlx::raw_sql(&format!("CREATE DATABASE {db}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
        let storage = Storage::connect(&url).await.unwrap();
        let mut direct = sqlx::PgConnection::connect(&url).await.unwrap();
        let payload = serde_json::json!({"n": 1});
        let event = [NewEvent::of("core.manual", &payload)];
        for (state, refusal) in [
            ("disk_full", Refusal::DiskFull),
            ("read_only_sql_transaction", Refusal::ReadOnly),
        ] {
            sqlx::raw_sql(&format!(
                "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'refused by the test' USING ERRCODE = '{state}'; END $$; \
                 CREATE TRIGGER refuse BEFORE INSERT ON event FOR EACH ROW EXECUTE FUNCTION refuse();"
            ))
            .execute(&mut direct)
            .await
            .unwrap();
            let refused = storage.insert_events(&event).await;
            assert!(
                matches!(refused, Err(StorageError::Refused(r)) if r == refusal),
                "{refused:?}"
            );
            assert_eq!(storage.refusal(), Some(refusal));
            sqlx::raw_sql("DROP TRIGGER refuse ON event")
                .execute(&mut direct)
                .await
                .unwrap();
            let stored = storage.insert_events(&event).await.unwrap();
            assert!(storage.get_event(stored[0].id).await.unwrap().is_some());
            assert_eq!(storage.refusal(), None);
        }
        direct.close().await.unwrap();
        storage.close().await;
        sqlx::raw_sql(&format!("DROP DATABASE {db} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}
