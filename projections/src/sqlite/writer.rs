//! The writer: one connection, group commits, WAL upkeep.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, OpenFlags};

use super::apply::apply_in_transaction;
use super::schema::{self, WriteSql};
use super::{Inner, db_err};
use crate::ProjectionError;
use crate::change::{ApplyOutcome, ProjectedBatch};
use crate::model::ProjectionVersion;
use crate::store::StoreResult;

/// How often the checkpointer copies the committed WAL into the database.
const CHECKPOINT_INTERVAL_MS: u64 = 1_000;
/// WAL frames (pages) past which the writer makes the WAL start over (256
/// MiB of 4 KiB pages), once at most `WAL_RESTART_UNCOPIED_MAX` of them
/// are left to copy.
const WAL_RESTART_FRAMES: u64 = 65_536;
const WAL_RESTART_UNCOPIED_MAX: u64 = 8_192;
/// The writer's page cache, and its size while query indexes are built
/// (the sort's memory is bounded by the cache size).
pub(super) const WRITER_CACHE_KIB: u32 = 65_536;
const INDEX_BUILD_CACHE_KIB: u32 = 16_384;

/// At most this many events gather in a transaction held open across
/// batches, and for at most this long, before it is committed.
const GROUP_EVENTS_MAX: u64 = 50_000;
const GROUP_MS_MAX: u128 = 500;
/// The same, while the batch is at least `FAR_BEHIND_EVENTS` behind the
/// log's head (a rebuild, a long catch-up): every commit rewrites the hot
/// pages (platform accounts, each user's newest entries), so fewer, larger
/// commits make a rebuild of 1,000,000 events a quarter faster; nothing
/// reads those positions yet. Memory is unchanged (pages past the cache
/// spill to the WAL).
const FAR_BEHIND_EVENTS: u64 = 100_000;
const FAR_GROUP_EVENTS_MAX: u64 = 1_000_000;
const FAR_GROUP_MS_MAX: u128 = 10_000;

#[derive(Debug)]
pub(super) struct Writer {
    pub(super) conn: Connection,
    sql: HashMap<u32, Arc<WriteSql>>,
    /// A transaction held open across batches (`hold_open`).
    open: Option<OpenGroup>,
    /// Versions whose query indexes this process has made sure of.
    pub(super) indexed: HashSet<ProjectionVersion>,
    /// The WAL as the checkpointer last saw it.
    wal: Arc<WalLength>,
}

/// Frames in the WAL, and how many of them are copied into the database,
/// at the checkpointer's last pass.
#[derive(Debug, Default)]
pub(super) struct WalLength {
    frames: AtomicU64,
    copied: AtomicU64,
}

impl WalLength {
    fn frames(&self) -> (u64, u64) {
        (self.frames.load(Ordering::Relaxed), self.copied.load(Ordering::Relaxed))
    }

    fn set(&self, frames: i64, copied: i64) {
        self.frames.store(u64::try_from(frames).unwrap_or(0), Ordering::Relaxed);
        self.copied.store(u64::try_from(copied).unwrap_or(0), Ordering::Relaxed);
    }

    fn reset(&self) {
        self.set(0, 0);
    }
}

#[derive(Debug)]
struct OpenGroup {
    since: std::time::Instant,
    events: u64,
}

impl Writer {
    pub(super) fn new(conn: Connection, wal: Arc<WalLength>) -> Writer {
        Writer { conn, sql: HashMap::new(), open: None, indexed: HashSet::new(), wal }
    }

    fn sql(&mut self, version: u32) -> Arc<WriteSql> {
        self.sql.entry(version).or_insert_with(|| Arc::new(WriteSql::new(version))).clone()
    }

    fn begin(&mut self) -> StoreResult<()> {
        if self.open.is_none() {
            self.conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
            self.open = Some(OpenGroup { since: std::time::Instant::now(), events: 0 });
        }
        Ok(())
    }

    pub(super) fn commit(&mut self) -> StoreResult<()> {
        if self.open.take().is_some() {
            if let Err(e) = self.conn.execute_batch("COMMIT") {
                // A failed commit may leave the transaction open.
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(db_err(e));
            }
            self.restart_wal_if_long();
        }
        Ok(())
    }

    /// The WAL starts over only when a write begins after a checkpoint that
    /// copied all of it; back-to-back groups leave the checkpointer no such
    /// moment, and the file would grow with the catch-up. So between
    /// commits, once the checkpointer reports a long WAL that it has
    /// nearly all copied, the writer copies the rest itself (a small part
    /// of a second's writes) and the next write starts the WAL over.
    fn restart_wal_if_long(&mut self) {
        let (frames, copied) = self.wal.frames();
        if frames < WAL_RESTART_FRAMES || frames.saturating_sub(copied) > WAL_RESTART_UNCOPIED_MAX {
            return;
        }
        self.wal.reset();
        if let Err(e) = self.conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "sqlite wal restart failed");
        }
    }

    /// Creates the query indexes of the batch's targets, unless the batch
    /// is far behind the head. A version built from far behind (a rebuild,
    /// a first start on a long log) gets its query indexes in bulk once it
    /// comes near the head: sorting a million rows once costs about a
    /// second, keeping the indexes up to date row by row costs a quarter
    /// of the build. Until then queries on it scan; nothing serves a
    /// version that far behind but a fresh store's first catch-up, whose
    /// answers are that far behind anyway.
    fn index_when_near(&mut self, batch: &ProjectedBatch) -> StoreResult<()> {
        if batch.behind_events >= FAR_BEHIND_EVENTS {
            return Ok(());
        }
        for target in &batch.targets {
            if !self.indexed.contains(target) {
                // The sort keeps at most a cache's worth in memory and
                // spills the rest to temporary files (not to memory, which
                // would grow with the table); a smaller cache meanwhile
                // keeps the two together within the writer's usual cache.
                let ddl = schema::projection_index_ddl(target.projection, target.version);
                self.conn
                    .execute_batch(&format!(
                        "PRAGMA temp_store = FILE; PRAGMA cache_size = -{INDEX_BUILD_CACHE_KIB};
                         {ddl}
                         PRAGMA cache_size = -{WRITER_CACHE_KIB}; PRAGMA temp_store = MEMORY;"
                    ))
                    .map_err(db_err)?;
                self.indexed.insert(*target);
            }
        }
        Ok(())
    }

    fn rollback(&mut self) {
        if self.open.take().is_some()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::warn!(error = %e, "sqlite rollback failed");
        }
    }
}

/// Starts the thread that checkpoints the WAL (copies committed pages into
/// the database file), so that the writer, the pipeline's bound, never
/// does: the writer's connection has `wal_autocheckpoint = 0`. PASSIVE:
/// it never waits for, nor blocks, the writer or the readers; the writer
/// starts the WAL over once a checkpoint has copied all of it (see
/// `Writer::restart_wal_if_long`). Each pass stores the WAL's length in
/// `wal`. The thread ends when the returned sender is dropped (with the
/// store).
pub(super) fn spawn_checkpointer(path: &Path, wal: Arc<WalLength>) -> StoreResult<std::sync::mpsc::Sender<()>> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(db_err)?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            let interval = std::time::Duration::from_millis(CHECKPOINT_INTERVAL_MS);
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(1)?, r.get(2)?))) {
                    Ok((frames, copied)) => wal.set(frames, copied),
                    Err(e) => tracing::warn!(error = %e, "sqlite checkpoint failed"),
                }
            }
        })
        .map_err(|e| ProjectionError::Store(format!("cannot start the checkpointer: {e}")))?;
    Ok(stop)
}

/// Applies a batch in the writer's transaction (opened if needed), then
/// commits unless the batch may be held open and the group is still small
/// and young. Any failure rolls the whole group back: the runner then
/// resumes from the committed checkpoints.
pub(super) fn apply_blocking(writer: &mut Writer, inner: &Inner, batch: ProjectedBatch) -> StoreResult<ApplyOutcome> {
    let sqls: Vec<Arc<WriteSql>> = batch.targets.iter().map(|t| writer.sql(t.version)).collect();
    writer.begin()?;
    let applied = writer.index_when_near(&batch).and_then(|()| apply_in_transaction(&writer.conn, inner, &batch, sqls));
    let mut outcome = match applied {
        Ok(outcome) => outcome,
        Err(e) => {
            writer.rollback();
            return Err(e);
        }
    };
    let due = match writer.open.as_mut() {
        Some(group) => {
            group.events = group.events.saturating_add(outcome.applied + outcome.skipped + 1);
            let (events_max, ms_max) = if batch.behind_events >= FAR_BEHIND_EVENTS {
                (FAR_GROUP_EVENTS_MAX, FAR_GROUP_MS_MAX)
            } else {
                (GROUP_EVENTS_MAX, GROUP_MS_MAX)
            };
            !batch.hold_open || group.events >= events_max || group.since.elapsed().as_millis() >= ms_max
        }
        None => true,
    };
    if due {
        writer.commit()?;
        outcome.committed = true;
    }
    Ok(outcome)
}
