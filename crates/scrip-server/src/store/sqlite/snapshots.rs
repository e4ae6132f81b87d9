//! Read snapshots that charge pre-checks keep for a few milliseconds.
//!
//! A read connection in WAL mode empties its page cache whenever the
//! database has changed since its last read transaction, which under load
//! is every time: a pre-check that misses the kept contexts (many tokens,
//! each charged rarely) read every page of its lookups again, the root and
//! inner pages of every b-tree included. A pre-check may read a slightly
//! older state (it only refuses early: the writer decides again, and a
//! refusal on what it read is decided again on a fresh read), so a
//! connection here keeps its read transaction open across pre-checks for
//! up to [`limits::SQLITE_PRECHECK_SNAPSHOT_MAX_MS`], and its page cache
//! stays warm meanwhile.
//!
//! A snapshot is let go as soon as the contexts' generation moves on (a
//! revocation is seen at once), and while the write-ahead log is long: a
//! reader holding a snapshot keeps the writer from starting the log over
//! after a checkpoint, so past [`limits::SQLITE_WAL_LONG_PAGES`] every
//! pre-check ends its snapshot when done, and the checkpoint thread ends
//! the idle ones ([`Snapshots::sweep`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use scrip_core::limits;

use super::super::StoreResult;
use super::open_connection;

/// Most idle connections kept (pre-checks run on the calling thread, so
/// about as many run at once as there are request threads).
const IDLE_MAX: usize = 8;

const SNAPSHOT_MAX: Duration = Duration::from_millis(limits::SQLITE_PRECHECK_SNAPSHOT_MAX_MS);

/// Connections for charge pre-checks, each possibly inside a read
/// transaction.
#[derive(Default)]
pub(super) struct Snapshots {
    idle: Mutex<Vec<Kept>>,
    /// Set by the checkpoint thread while the write-ahead log is long.
    let_go: AtomicBool,
}

struct Kept {
    conn: Connection,
    /// When its open snapshot began, and the contexts' generation then.
    began: Option<(Instant, u64)>,
}

impl Kept {
    /// Ends the open snapshot, if any.
    fn end(&mut self) -> StoreResult<()> {
        self.began = None;
        if !self.conn.is_autocommit() {
            self.conn.prepare_cached("COMMIT")?.execute([])?;
        }
        Ok(())
    }
}

impl Snapshots {
    /// Runs `op` on a snapshot no older than `SNAPSHOT_MAX`, begun after
    /// the contexts' generation was `generation` (taken by the caller
    /// before this call): a snapshot begun in an earlier generation is
    /// never used.
    pub(super) fn read<T>(
        &self,
        path: &Path,
        generation: u64,
        op: impl FnOnce(&Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut kept = match idle {
            Some(kept) => kept,
            None => Kept {
                conn: open_connection(path)?,
                began: None,
            },
        };
        let usable = !self.let_go.load(Ordering::Acquire)
            && !kept.conn.is_autocommit()
            && kept
                .began
                .is_some_and(|(at, g)| g == generation && at.elapsed() < SNAPSHOT_MAX);
        if !usable {
            kept.end()?;
            kept.conn.prepare_cached("BEGIN")?.execute([])?;
            kept.began = Some((Instant::now(), generation));
        }
        let result = op(&kept.conn);
        if result.is_err() || self.let_go.load(Ordering::Acquire) {
            kept.end()?;
        }
        if kept.conn.is_autocommit() {
            kept.began = None;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < IDLE_MAX {
                idle.push(kept);
            }
        }
        result
    }

    /// The checkpoint thread, with the log's length in pages as its last
    /// checkpoint found it: ends every idle snapshot past its age, and
    /// every one while the log is long (and has pre-checks end theirs).
    pub(super) fn sweep(&self, log_pages: i64) {
        let long = log_pages >= limits::SQLITE_WAL_LONG_PAGES;
        self.let_go.store(long, Ordering::Release);
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        idle.retain_mut(|kept| {
            let stale = long
                || kept
                    .began
                    .is_some_and(|(at, _)| at.elapsed() >= SNAPSHOT_MAX);
            // A connection whose snapshot cannot be ended is dropped.
            !stale || kept.end().is_ok()
        });
    }

    /// Idle connections holding a snapshot (for tests).
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.idle
            .lock()
            .map(|idle| idle.iter().filter(|k| !k.conn.is_autocommit()).count())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(conn: &Connection) -> StoreResult<i64> {
        Ok(conn.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?)
    }

    #[test]
    fn a_snapshot_serves_its_generation_until_it_is_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let writer = open_connection(&path).unwrap();
        writer
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        let snapshots = Snapshots::default();
        assert_eq!(snapshots.read(&path, 0, count).unwrap(), 1);
        assert_eq!(snapshots.held(), 1);
        // Kept: a write since is not seen in the same generation...
        writer.execute("INSERT INTO t VALUES (2)", []).unwrap();
        assert_eq!(snapshots.read(&path, 0, count).unwrap(), 1);
        // ...and is in the next one.
        assert_eq!(snapshots.read(&path, 1, count).unwrap(), 2);
        // Past its age, the checkpoint thread ends it.
        writer.execute("INSERT INTO t VALUES (3)", []).unwrap();
        std::thread::sleep(SNAPSHOT_MAX);
        snapshots.sweep(0);
        assert_eq!(snapshots.held(), 0);
        assert_eq!(snapshots.read(&path, 1, count).unwrap(), 3);
        // While the log is long, no snapshot outlives its read.
        assert_eq!(snapshots.held(), 1);
        snapshots.sweep(limits::SQLITE_WAL_LONG_PAGES);
        assert_eq!(snapshots.held(), 0);
        writer.execute("INSERT INTO t VALUES (4)", []).unwrap();
        assert_eq!(snapshots.read(&path, 1, count).unwrap(), 4);
        assert_eq!(snapshots.held(), 0);
        snapshots.sweep(0);
        assert_eq!(snapshots.read(&path, 1, count).unwrap(), 4);
        assert_eq!(snapshots.held(), 1);
        // A read that fails ends its snapshot.
        let failed = snapshots.read(&path, 1, |conn| {
            conn.query_row("SELECT nothing FROM nowhere", [], |r| r.get::<_, i64>(0))?;
            Ok(())
        });
        assert!(failed.is_err());
        assert_eq!(snapshots.held(), 0);
    }
}
