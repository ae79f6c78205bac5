//! The embedded read store: SQLite (through rusqlite, compiled in), one file
//! in `DATA_DIR`, in WAL mode so that queries read while the projector
//! writes.
//!
//! Documents are rows with one column per field, so that the runbook's
//! indexes are plain column indexes; UUIDs and accounts are stored as binary
//! keys (`keys`). A batch is one transaction with its checkpoints: it is
//! applied whole or not at all, which is what makes a crash at any point
//! harmless here (no per-document position guard is needed, unlike MongoDB
//! without transactions). While the runner catches up, consecutive batches
//! share one transaction (up to 50,000 events or 500 ms; 1,000,000 or 10 s
//! while 100,000 or more behind the log's head): a commit writes
//! every page its transaction touched, and the hot pages (the platform's
//! accounts, each user's newest entries) are then written once per group
//! instead of once per batch. Changes that only add to a row (gift totals,
//! leaderboards, wallets, running balances) are gathered per batch and
//! written once per row. A version's query indexes (neither unique nor
//! partial) are created when it first comes within 100,000 events of the
//! head: a version built from far behind gets them in one sort each
//! instead of row by row.
//!
//! rusqlite is synchronous: every call runs on tokio's blocking pool. One
//! writer connection (SQLite has one writer anyway), a bounded pool of
//! reader connections, and a thread that checkpoints the WAL every second
//! so that the writer never does.

mod keys;
mod rows;
mod schema;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use events_schema::Account;
use futures_util::future::BoxFuture;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::ProjectionError;
use crate::change::{ApplyOutcome, Change, PositionedChange, ProjectedBatch};
use crate::model::{
    Checkpoint, Collection, LeaderboardEntry, LedgerEntryDoc, Page, PageRequest, PayoutDoc, PayoutStatus, Projection,
    ProjectionVersion, StreamDoc, StripePaymentDoc, TransactionDoc, TransactionFilter, TrialBalance, UserDoc,
    WalletDoc, cursor, from_micros, pos_i64, pos_u64, role_str, stream_status_str, to_micros,
};
use crate::store::{AnyDoc, ReadStore, SCAN_LIMIT_MAX, ScanPage, StoreResult, normalise_email};
use keys::{AccountKey, account_key, opt_id};
use schema::{
    ENTRY_COLS, ENTRY_ROWS_PER_INSERT, LEADERBOARD_COLS, META_DDL, PAYOUT_COLS, STREAM_COLS, STRIPE_COLS, TX_COLS,
    USER_COLS, WALLET_COLS, WriteSql,
};

/// The store's file in the data directory.
pub const SQLITE_FILE_NAME: &str = "read-models.sqlite3";
/// At most this many queries read at once; more wait for a connection.
const READERS_MAX: usize = 8;
/// How long a connection waits for a lock held by another before failing.
const BUSY_TIMEOUT_MS: u64 = 5_000;
/// Prepared statements kept per connection: every write statement of two
/// versions side by side, and the queries.
const STATEMENT_CACHE_MAX: usize = 256;

/// The embedded read store. Cheap to clone: clones share the connections.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    writer: Mutex<Writer>,
    readers: Mutex<Vec<Connection>>,
    reader_permits: Semaphore,
    /// Crash tests: fail the next apply after this many statements (0: off).
    fail_after_writes: AtomicU64,
    /// Dropped with the store: stops the checkpointer thread.
    _checkpointer: std::sync::mpsc::Sender<()>,
}

/// How often the checkpointer copies the committed WAL into the database.
const CHECKPOINT_INTERVAL_MS: u64 = 1_000;
/// WAL frames (pages) past which the writer makes the WAL start over (256
/// MiB of 4 KiB pages), once at most `WAL_RESTART_UNCOPIED_MAX` of them
/// are left to copy.
const WAL_RESTART_FRAMES: u64 = 65_536;
const WAL_RESTART_UNCOPIED_MAX: u64 = 8_192;
/// The writer's page cache, and its size while query indexes are built
/// (the sort's memory is bounded by the cache size).
const WRITER_CACHE_KIB: u32 = 65_536;
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
struct Writer {
    conn: Connection,
    sql: HashMap<u32, Arc<WriteSql>>,
    /// A transaction held open across batches (`hold_open`).
    open: Option<OpenGroup>,
    /// Versions whose query indexes this process has made sure of.
    indexed: HashSet<ProjectionVersion>,
    /// The WAL as the checkpointer last saw it.
    wal: Arc<WalLength>,
}

/// Frames in the WAL, and how many of them are copied into the database,
/// at the checkpointer's last pass.
#[derive(Debug, Default)]
struct WalLength {
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

    fn commit(&mut self) -> StoreResult<()> {
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

fn db_err(e: rusqlite::Error) -> ProjectionError {
    ProjectionError::store(e)
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`, in WAL mode.
    pub async fn open(data_dir: impl AsRef<Path>) -> StoreResult<SqliteStore> {
        let dir = data_dir.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || SqliteStore::open_blocking(&dir))
            .await
            .map_err(|e| ProjectionError::Store(format!("open task failed: {e}")))?
    }

    fn open_blocking(dir: &Path) -> StoreResult<SqliteStore> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ProjectionError::Store(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(SQLITE_FILE_NAME);
        let conn = Connection::open(&path).map_err(db_err)?;
        configure(&conn, true)?;
        conn.execute_batch(META_DDL).map_err(db_err)?;
        let wal = Arc::new(WalLength::default());
        let checkpointer = spawn_checkpointer(&path, wal.clone())?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(Writer { conn, sql: HashMap::new(), open: None, indexed: HashSet::new(), wal }),
                readers: Mutex::new(Vec::new()),
                reader_permits: Semaphore::new(READERS_MAX),
                fail_after_writes: AtomicU64::new(0),
                _checkpointer: checkpointer,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Crash tests: the next `apply` fails after `writes` statements, inside
    /// its transaction, which is then rolled back, as when the process dies
    /// mid-batch. One shot; 0 turns it off.
    pub fn fail_after_writes(&self, writes: u64) {
        self.inner.fail_after_writes.store(writes, Ordering::SeqCst);
    }

    /// Runs `f` on the writer, after committing any batch held open: every
    /// write but `apply` must see (and keep) what was applied before it.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer, &Inner) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.write_raw(move |w, inner| {
            w.commit()?;
            f(w, inner)
        })
        .await
    }

    async fn write_raw<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer, &Inner) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut writer = inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut writer, &inner)
        })
        .await
        .map_err(|e| ProjectionError::Store(format!("write task failed: {e}")))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let _permit = self
            .inner
            .reader_permits
            .acquire()
            .await
            .map_err(|e| ProjectionError::Store(format!("reader pool closed: {e}")))?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => {
                    let conn = Connection::open_with_flags(
                        &inner.path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )
                    .map_err(db_err)?;
                    configure(&conn, false)?;
                    conn
                }
            };
            // One read transaction: the registry lookup and the query see
            // the same snapshot, even across a version switch.
            let result = conn.transaction().map_err(db_err).and_then(|tx| {
                let out = f(&tx);
                tx.finish().map_err(db_err)?;
                out
            });
            inner.readers.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
            result
        })
        .await
        .map_err(|e| ProjectionError::Store(format!("read task failed: {e}")))?
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
fn spawn_checkpointer(path: &Path, wal: Arc<WalLength>) -> StoreResult<std::sync::mpsc::Sender<()>> {
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

fn configure(conn: &Connection, writer: bool) -> StoreResult<()> {
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS)).map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_MAX);
    if writer {
        // WAL: readers never block the writer. synchronous=NORMAL: a power
        // loss may lose the last batches, never corrupt; read models are
        // rebuilt from the log, and a batch's checkpoint is in the same
        // transaction, so the projector resumes exactly where it stopped.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY;
                 PRAGMA cache_size = -{WRITER_CACHE_KIB}; PRAGMA wal_autocheckpoint = 0;
                 PRAGMA journal_size_limit = 67108864;"
        ))
        .map_err(db_err)?;
    } else {
        conn.execute_batch("PRAGMA cache_size = -16384;").map_err(db_err)?;
    }
    Ok(())
}

fn active_version(conn: &Connection, projection: Projection) -> StoreResult<u32> {
    let active: Option<i64> = conn
        .prepare_cached("SELECT active FROM projection_versions WHERE projection = ?1")
        .and_then(|mut s| s.query_row([projection.name()], |r| r.get(0)).optional())
        .map_err(db_err)?;
    Ok(active.and_then(|v| u32::try_from(v).ok()).unwrap_or(1))
}

fn checkpoint_of(conn: &Connection, target: ProjectionVersion) -> StoreResult<u64> {
    let position: Option<i64> = conn
        .prepare_cached("SELECT position FROM projector_checkpoints WHERE projection = ?1 AND version = ?2")
        .and_then(|mut s| s.query_row(params![target.projection.name(), target.version], |r| r.get(0)).optional())
        .map_err(db_err)?;
    position.map(|p| pos_u64("projector_checkpoints", p)).transpose().map(|p| p.unwrap_or(0))
}

/// A table name of the active version of the projection owning `collection`.
fn active_table(conn: &Connection, projection: Projection, collection: Collection) -> StoreResult<String> {
    Ok(collection.physical_name(active_version(conn, projection)?))
}

struct TargetState {
    checkpoint: u64,
    sql: Arc<WriteSql>,
}

/// Counts statements, for the crash tests' injected fault.
struct WriteCounter<'a> {
    writes: u64,
    fail_after: u64,
    inner: &'a Inner,
}

impl WriteCounter<'_> {
    fn tick(&mut self) -> StoreResult<()> {
        self.writes += 1;
        if self.fail_after > 0 && self.writes >= self.fail_after {
            self.inner.fail_after_writes.store(0, Ordering::SeqCst);
            return Err(ProjectionError::InjectedFault { writes: self.writes });
        }
        Ok(())
    }
}

/// Applies a batch in the writer's transaction (opened if needed), then
/// commits unless the batch may be held open and the group is still small
/// and young. Any failure rolls the whole group back: the runner then
/// resumes from the committed checkpoints.
fn apply_blocking(writer: &mut Writer, inner: &Inner, batch: ProjectedBatch) -> StoreResult<ApplyOutcome> {
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

fn apply_in_transaction(
    tx: &Connection,
    inner: &Inner,
    batch: &ProjectedBatch,
    sqls: Vec<Arc<WriteSql>>,
) -> StoreResult<ApplyOutcome> {
    let mut targets = Vec::with_capacity(batch.targets.len());
    for (target, sql) in batch.targets.iter().zip(sqls) {
        let active = active_version(tx, target.projection)?;
        if target.version < active {
            return Err(ProjectionError::Retired {
                projection: target.projection.name().to_string(),
                version: target.version,
                active,
            });
        }
        targets.push(TargetState { checkpoint: checkpoint_of(tx, *target)?, sql });
    }
    let mut counter = WriteCounter { writes: 0, fail_after: inner.fail_after_writes.load(Ordering::SeqCst), inner };
    let mut outcome = ApplyOutcome::default();
    let mut acc = Accumulated::default();
    for pc in &batch.changes {
        let Some(target) = targets.get(usize::from(pc.target)) else {
            return Err(ProjectionError::InvalidInput(format!("change for unknown target {}", pc.target)));
        };
        if pc.position <= target.checkpoint {
            outcome.skipped += 1;
            continue;
        }
        apply_change(tx, &target.sql, pc, &mut acc, &mut counter)?;
        outcome.applied += 1;
    }
    write_accumulated(tx, &targets, acc, &mut counter)?;
    let now_us = to_micros(DateTime::<Utc>::from(std::time::SystemTime::now()));
    let to_position = pos_i64(batch.to_position)?;
    for target in &batch.targets {
        tx.prepare_cached(
            "INSERT INTO projector_checkpoints (projection, version, position, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(projection, version) DO UPDATE SET position = MAX(position, excluded.position),
             updated_at = excluded.updated_at",
        )
        .and_then(|mut s| s.execute(params![target.projection.name(), target.version, to_position, now_us]))
        .map_err(db_err)?;
        counter.tick()?;
    }
    Ok(outcome)
}

/// Changes that only add to (or overwrite) a row, gathered over the batch
/// and written once per row at its end: a stream's gifts, a leaderboard
/// row, a wallet, an account's running balance. The rows end as if written
/// one event at a time (the position kept is the last event's), with far
/// fewer statements: the platform's accounts and a live stream's counters
/// are touched by nearly every gift.
#[derive(Default)]
struct Accumulated {
    /// (target, account) -> (balance, position of the last entry).
    balances: HashMap<(u8, Account), (i64, u64)>,
    /// (target, stream) -> (coins to add, last position).
    stream_gifts: HashMap<(u8, Uuid), (i64, u64)>,
    /// (target, stream, viewer) -> (coins to add, last position).
    leaderboard: HashMap<(u8, Uuid, Uuid), (i64, u64)>,
    /// (target, user) -> the last wallet.
    wallets: HashMap<(u8, Uuid), crate::model::WalletDoc>,
    /// Ledger entries to insert, in order, per target (written in bulk).
    entries: Vec<(u8, EntryRow)>,
}

/// One `ledger_entries` row, ready to bind.
struct EntryRow {
    account: AccountKey,
    position: i64,
    seq: u32,
    event_type: &'static str,
    counterparty: AccountKey,
    coins: i64,
    balance_after: i64,
    created_at: i64,
}

impl EntryRow {
    fn bind<'a>(&'a self, out: &mut Vec<&'a dyn rusqlite::ToSql>) {
        out.extend([
            &self.account as &dyn rusqlite::ToSql,
            &self.position,
            &self.seq,
            &self.event_type,
            &self.counterparty,
            &self.coins,
            &self.balance_after,
            &self.created_at,
        ]);
    }
}

fn add_coins(slot: &mut (i64, u64), coins: i64, position: u64) -> StoreResult<()> {
    slot.0 = slot.0.checked_add(coins).ok_or_else(|| ProjectionError::Store("coins overflow i64".into()))?;
    slot.1 = position;
    Ok(())
}

fn write_accumulated(
    tx: &Connection,
    targets: &[TargetState],
    acc: Accumulated,
    counter: &mut WriteCounter<'_>,
) -> StoreResult<()> {
    let sql = |target: u8| targets.get(usize::from(target)).map(|t| t.sql.clone());
    let exec = |text: &str, p: &[&dyn rusqlite::ToSql]| -> StoreResult<usize> {
        tx.prepare_cached(text).and_then(|mut s| s.execute(p)).map_err(db_err)
    };
    // Entries: whole chunks in one statement each, the rest one by one.
    let mut by_target: HashMap<u8, Vec<EntryRow>> = HashMap::new();
    for (target, row) in acc.entries {
        by_target.entry(target).or_default().push(row);
    }
    for (target, rows) in by_target {
        let Some(sql) = sql(target) else { continue };
        let mut chunks = rows.chunks_exact(ENTRY_ROWS_PER_INSERT);
        for chunk in &mut chunks {
            let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(ENTRY_ROWS_PER_INSERT * 8);
            chunk.iter().for_each(|r| r.bind(&mut values));
            exec(&sql.entry_insert_many, &values)?;
            for _ in chunk {
                counter.tick()?;
            }
        }
        for r in chunks.remainder() {
            let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(8);
            r.bind(&mut values);
            exec(&sql.entry_insert, &values)?;
            counter.tick()?;
        }
    }
    for ((target, account), (balance, position)) in acc.balances {
        let Some(sql) = sql(target) else { continue };
        exec(&sql.account_upsert, params![account_key(&account), balance, pos_i64(position)?])?;
        counter.tick()?;
    }
    for ((target, stream), (coins, position)) in acc.stream_gifts {
        let Some(sql) = sql(target) else { continue };
        exec(&sql.stream_gifts, params![stream.as_bytes(), coins, pos_i64(position)?])?;
        counter.tick()?;
    }
    for ((target, stream, user), (coins, position)) in acc.leaderboard {
        let Some(sql) = sql(target) else { continue };
        exec(&sql.leaderboard_inc, params![stream.as_bytes(), user.as_bytes(), coins, pos_i64(position)?])?;
        counter.tick()?;
    }
    for ((target, user), w) in acc.wallets {
        let Some(sql) = sql(target) else { continue };
        exec(
            &sql.wallet_upsert,
            params![user.as_bytes(), w.coins, w.earnings, w.held, to_micros(w.updated_at), pos_i64(w.position)?],
        )?;
        counter.tick()?;
    }
    Ok(())
}

fn apply_change(
    tx: &Connection,
    sql: &WriteSql,
    pc: &PositionedChange,
    acc: &mut Accumulated,
    counter: &mut WriteCounter<'_>,
) -> StoreResult<()> {
    let pos = pos_i64(pc.position)?;
    let exec = |text: &str, p: &[&dyn rusqlite::ToSql]| -> StoreResult<usize> {
        tx.prepare_cached(text).and_then(|mut s| s.execute(p)).map_err(db_err)
    };
    match &pc.change {
        Change::UserRegistered(u) => {
            let roles = roles_text(&u.roles);
            exec(
                &sql.user_upsert,
                params![u.id.as_bytes(), u.email, u.username, roles, u.password_hash, to_micros(u.created_at), pos],
            )?;
        }
        Change::UserUpdated { user_id, email, username, roles } => {
            exec(&sql.user_update, params![user_id.as_bytes(), email, username, roles_text(roles), pos])?;
        }
        Change::Wallet(w) => {
            acc.wallets.insert((pc.target, w.user_id), w.clone());
            return Ok(());
        }
        Change::Transaction(t) => {
            let m = &t.metadata;
            exec(
                &sql.tx_insert,
                params![
                    t.id.as_bytes(),
                    t.user_id.as_bytes(),
                    t.kind.as_str(),
                    t.status.as_str(),
                    t.coins,
                    t.wallet_after,
                    t.earnings_after,
                    t.held_after,
                    to_micros(t.created_at),
                    pos,
                    m.payment_id,
                    opt_id(m.stream_id),
                    opt_id(m.host_id),
                    m.gift_id,
                    m.quantity,
                    m.gifts_count,
                    opt_id(m.payout_id),
                    m.external_ref,
                    m.reason,
                    opt_id(m.admin_id),
                ],
            )?;
        }
        Change::PayoutTransactionStatus { user_id, payout_id, status } => {
            exec(&sql.tx_payout_status, params![user_id.as_bytes(), payout_id.as_bytes(), status.as_str()])?;
        }
        Change::TransactionStripeSession { payment_id, session_id } => {
            exec(&sql.tx_session_remember, params![payment_id, session_id, pos])?;
            counter.tick()?;
            exec(&sql.tx_session_link, params![payment_id, session_id])?;
        }
        Change::StreamStarted(s) => {
            exec(
                &sql.stream_insert,
                params![
                    s.id.as_bytes(),
                    s.host_id.as_bytes(),
                    s.title,
                    s.category,
                    stream_status_str(s.status),
                    i64::from(s.is_live),
                    to_micros(s.start_time),
                    s.end_time.map(to_micros),
                    s.viewers,
                    s.peak_viewers,
                    s.gifts_coins,
                    pos
                ],
            )?;
        }
        Change::ViewerJoined { stream_id, viewer_id } => {
            let stream = stream_id.as_bytes();
            if exec(&sql.viewer_add, params![stream, viewer_id.as_bytes()])? == 1 {
                counter.tick()?;
                exec(&sql.viewer_count_up, params![stream, pos])?;
            }
        }
        Change::ViewerLeft { stream_id, viewer_id } => {
            let stream = stream_id.as_bytes();
            if exec(&sql.viewer_remove, params![stream, viewer_id.as_bytes()])? == 1 {
                counter.tick()?;
                exec(&sql.viewer_count_down, params![stream, pos])?;
            }
        }
        Change::StreamEnded { stream_id, end_time } => {
            let stream = stream_id.as_bytes();
            exec(&sql.stream_end, params![stream, to_micros(*end_time), pos])?;
            counter.tick()?;
            exec(&sql.stream_viewers_clear, params![stream])?;
        }
        Change::StreamGifts { stream_id, coins } => {
            return add_coins(acc.stream_gifts.entry((pc.target, *stream_id)).or_default(), *coins, pc.position);
        }
        Change::PayoutRequested(p) => {
            exec(
                &sql.payout_insert,
                params![
                    p.id.as_bytes(),
                    p.user_id.as_bytes(),
                    p.coins,
                    p.fiat.amount.to_string(),
                    p.fiat.currency,
                    p.destination,
                    p.status.as_str(),
                    p.external_ref,
                    p.reason,
                    to_micros(p.requested_at),
                    p.settled_at.map(to_micros),
                    pos
                ],
            )?;
        }
        Change::PayoutSettled { payout_id, status, external_ref, reason, settled_at } => {
            exec(
                &sql.payout_settle,
                params![payout_id.as_bytes(), status.as_str(), external_ref, reason, to_micros(*settled_at), pos],
            )?;
        }
        Change::Posting(p) => {
            let key = (pc.target, p.account);
            let balance_after = match p.balance_after {
                Some(b) => b,
                None => {
                    let before = match acc.balances.get(&key) {
                        Some((b, _)) => *b,
                        None => tx
                            .prepare_cached(&sql.account_balance)
                            .and_then(|mut s| s.query_row([account_key(&p.account)], |r| r.get(0)).optional())
                            .map_err(db_err)?
                            .unwrap_or(0),
                    };
                    before
                        .checked_add(p.coins)
                        .ok_or_else(|| ProjectionError::Store(format!("balance of {} overflows i64", p.account)))?
                }
            };
            acc.balances.insert(key, (balance_after, pc.position));
            acc.entries.push((
                pc.target,
                EntryRow {
                    account: account_key(&p.account),
                    position: pos,
                    seq: p.seq,
                    event_type: p.event_type,
                    counterparty: account_key(&p.counterparty),
                    coins: p.coins,
                    balance_after,
                    created_at: to_micros(p.created_at),
                },
            ));
            return Ok(());
        }
        Change::LeaderboardGift { stream_id, user_id, coins } => {
            let slot = acc.leaderboard.entry((pc.target, *stream_id, *user_id)).or_default();
            return add_coins(slot, *coins, pc.position);
        }
        Change::StripeIssued { payment_id, user_id, coins } => {
            exec(&sql.stripe_issued, params![payment_id, user_id.as_bytes(), coins, pos])?;
        }
        Change::StripeReversed { payment_id, user_id, coins } => {
            exec(&sql.stripe_reversed, params![payment_id, user_id.as_bytes(), coins, pos])?;
        }
        Change::StripeSession { payment_id, session_id } => {
            exec(&sql.stripe_session, params![payment_id, session_id, pos])?;
        }
        Change::StripeState { payment_id, user_id, state } => {
            exec(
                &sql.stripe_state,
                params![
                    payment_id,
                    user_id.as_ref().map(|u| u.as_bytes().to_vec()),
                    pos,
                    state.package_id,
                    state.coins_expected,
                    state.amount_cents,
                    state.currency,
                    state.charge_amount_cents,
                    state.amount_refunded_cents,
                    state.flags.join(","),
                ],
            )?;
        }
    }
    counter.tick()
}

fn roles_text(roles: &[events_schema::Role]) -> String {
    roles.iter().map(|r| role_str(*r)).collect::<Vec<_>>().join(",")
}

/// Runs a query that returns documents, mapping each row.
fn query_docs<T>(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
    map: fn(&rusqlite::Row<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = tx.prepare_cached(sql).map_err(db_err)?;
    let mut rows = stmt.query(params).map_err(db_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db_err)? {
        out.push(map(row)?);
    }
    Ok(out)
}

/// Cuts the `limit + 1` rows fetched into a page, with the cursor of its last
/// item when more follow.
fn into_page<T>(mut items: Vec<T>, limit: u32, cursor_of: impl Fn(&T) -> String) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if items.len() > limit {
        items.truncate(limit);
        let next_cursor = items.last().map(cursor_of);
        Page { items, next_cursor }
    } else {
        Page { items, next_cursor: None }
    }
}

/// Sort keys above every real one, for the first page of a descending list.
const TOP_INT: i64 = i64::MAX;
const TOP_ID: [u8; 16] = [0xff; 16];

/// A descending cursor `(integer key, id)`; the id travels as its text.
fn desc_cursor(page: &PageRequest) -> StoreResult<(i64, [u8; 16])> {
    match &page.cursor {
        None => Ok((TOP_INT, TOP_ID)),
        Some(c) => {
            let parts = cursor::decode(c, 2)?;
            let id = Uuid::parse_str(&parts[1]).map_err(|_| ProjectionError::BadCursor)?;
            Ok((cursor::int(&parts[0])?, *id.as_bytes()))
        }
    }
}

impl ReadStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn prepare<'a>(&'a self, targets: &'a [ProjectionVersion]) -> BoxFuture<'a, StoreResult<()>> {
        let targets = targets.to_vec();
        Box::pin(self.write(move |w, _| {
            let mut ddl = String::from(META_DDL);
            for t in &targets {
                schema::check_columns(&w.conn, *t)?;
                ddl.push_str(&schema::projection_ddl(t.projection, t.version));
            }
            w.conn.execute_batch(&ddl).map_err(db_err)
        }))
    }

    fn apply(&self, batch: ProjectedBatch) -> BoxFuture<'_, StoreResult<ApplyOutcome>> {
        Box::pin(self.write_raw(move |w, inner| apply_blocking(w, inner, batch)))
    }

    fn flush(&self) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.write(|_, _| Ok(())))
    }

    fn checkpoints(&self) -> BoxFuture<'_, StoreResult<Vec<Checkpoint>>> {
        Box::pin(self.read(|tx| {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT c.projection, c.version, c.position, c.updated_at, COALESCE(v.active, 1)
                     FROM projector_checkpoints c LEFT JOIN projection_versions v ON v.projection = c.projection
                     ORDER BY c.projection, c.version",
                )
                .map_err(db_err)?;
            let mut rows = stmt.query([]).map_err(db_err)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db_err)? {
                let name: String = row.get(0).map_err(db_err)?;
                // A checkpoint of a projection this code no longer has.
                let Some(projection) = Projection::parse(&name) else { continue };
                let version: u32 = row.get(1).map_err(db_err)?;
                let active: u32 = row.get(4).map_err(db_err)?;
                out.push(Checkpoint {
                    projection,
                    version,
                    position: pos_u64("projector_checkpoints", row.get(2).map_err(db_err)?)?,
                    active: version == active,
                    updated_at: from_micros("projector_checkpoints", row.get(3).map_err(db_err)?)?,
                });
            }
            Ok(out)
        }))
    }

    fn acquire_lease<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        ttl_ms: u64,
        now_ms: i64,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        let (key, owner) = (key.to_string(), owner.to_string());
        let expires = now_ms.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
        Box::pin(self.write(move |w, _| {
            // Compare and set: the upsert only takes a row that is ours or
            // expired; SQLite's single writer makes it atomic.
            let changed = w
                .conn
                .prepare_cached(
                    "INSERT INTO projector_leases (key, owner, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(key) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
                     WHERE projector_leases.owner = excluded.owner OR projector_leases.expires_at <= ?4",
                )
                .and_then(|mut s| s.execute(params![key, owner, expires, now_ms]))
                .map_err(db_err)?;
            Ok(changed == 1)
        }))
    }

    fn release_lease<'a>(&'a self, key: &'a str, owner: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        let (key, owner) = (key.to_string(), owner.to_string());
        Box::pin(self.write(move |w, _| {
            w.conn
                .prepare_cached("UPDATE projector_leases SET expires_at = 0 WHERE key = ?1 AND owner = ?2")
                .and_then(|mut s| s.execute(params![key, owner]))
                .map_err(db_err)?;
            Ok(())
        }))
    }

    fn active_version(&self, projection: Projection) -> BoxFuture<'_, StoreResult<u32>> {
        Box::pin(self.read(move |tx| active_version(tx, projection)))
    }

    fn activate(&self, target: ProjectionVersion) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.write(move |w, _| {
            let tx = w.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
            let active = active_version(&tx, target.projection)?;
            if target.version < active {
                return Err(ProjectionError::InvalidInput(format!(
                    "{target} is older than the active version {active}"
                )));
            }
            tx.execute(
                "INSERT INTO projection_versions (projection, active) VALUES (?1, ?2)
                 ON CONFLICT(projection) DO UPDATE SET active = excluded.active",
                params![target.projection.name(), target.version],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)
        }))
    }

    fn drop_version(&self, target: ProjectionVersion) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.write(move |w, _| {
            w.indexed.remove(&target);
            let tx = w.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
            if active_version(&tx, target.projection)? == target.version {
                return Err(ProjectionError::InvalidInput(format!("{target} is the active version")));
            }
            for c in target.projection.collections() {
                tx.execute_batch(&format!("DROP TABLE IF EXISTS {}", c.physical_name(target.version)))
                    .map_err(db_err)?;
            }
            tx.execute(
                "DELETE FROM projector_checkpoints WHERE projection = ?1 AND version = ?2",
                params![target.projection.name(), target.version],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)
        }))
    }

    fn scan<'a>(
        &'a self,
        target: ProjectionVersion,
        collection: Collection,
        after_key: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, StoreResult<ScanPage>> {
        let after = after_key.map(str::to_string);
        Box::pin(self.read(move |tx| scan_blocking(tx, target, collection, after, limit)))
    }

    fn user_by_id(&self, user_id: Uuid) -> BoxFuture<'_, StoreResult<Option<UserDoc>>> {
        Box::pin(self.read(move |tx| {
            let t = active_table(tx, Projection::Users, Collection::Users)?;
            let sql = format!("SELECT {USER_COLS} FROM {t} WHERE id = ?1");
            Ok(query_docs(tx, &sql, params![user_id.as_bytes()], rows::user)?.pop())
        }))
    }

    fn user_by_email<'a>(&'a self, email: &'a str) -> BoxFuture<'a, StoreResult<Option<UserDoc>>> {
        let email = normalise_email(email);
        Box::pin(self.read(move |tx| {
            let t = active_table(tx, Projection::Users, Collection::Users)?;
            let sql = format!("SELECT {USER_COLS} FROM {t} WHERE email = ?1");
            Ok(query_docs(tx, &sql, params![email], rows::user)?.pop())
        }))
    }

    fn wallet(&self, user_id: Uuid) -> BoxFuture<'_, StoreResult<Option<WalletDoc>>> {
        Box::pin(self.read(move |tx| {
            let t = active_table(tx, Projection::Wallets, Collection::Wallets)?;
            let sql = format!("SELECT {WALLET_COLS} FROM {t} WHERE user_id = ?1");
            Ok(query_docs(tx, &sql, params![user_id.as_bytes()], rows::wallet)?.pop())
        }))
    }

    fn transactions<'a>(
        &'a self,
        user_id: Uuid,
        filter: TransactionFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TransactionDoc>>> {
        let page = page.clone();
        Box::pin(self.read(move |tx| {
            let t = active_table(tx, Projection::Transactions, Collection::Transactions)?;
            let (c_time, c_id) = desc_cursor(&page)?;
            let limit = page.limit();
            let sql = format!(
                "SELECT {TX_COLS} FROM {t} WHERE user_id = ?1 AND (?2 IS NULL OR type = ?2)
                 AND (?3 IS NULL OR status = ?3) AND (created_at, id) < (?4, ?5)
                 ORDER BY created_at DESC, id DESC LIMIT ?6"
            );
            let items = query_docs(
                tx,
                &sql,
                params![
                    user_id.as_bytes(),
                    filter.kind.map(|k| k.as_str()),
                    filter.status.map(|s| s.as_str()),
                    c_time,
                    c_id,
                    i64::from(limit) + 1
                ],
                rows::transaction,
            )?;
            Ok(into_page(items, limit, |d: &TransactionDoc| {
                cursor::encode(&[&to_micros(d.created_at).to_string(), &d.id.to_string()])
            }))
        }))
    }

    fn live_streams<'a>(
        &'a self,
        category: Option<&'a str>,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<StreamDoc>>> {
        let page = page.clone();
        let category = category.map(|c| c.trim().to_lowercase());
        Box::pin(self.read(move |tx| {
            let t = active_table(tx, Projection::Streams, Collection::Streams)?;
            let (c_viewers, c_id) = desc_cursor(&page)?;
            let limit = page.limit();
            // Two statements so that each uses its partial index.
            let items = match &category {
                Some(category) => query_docs(
                    tx,
                    &format!(
                        "SELECT {STREAM_COLS} FROM {t} WHERE is_live = 1 AND category = ?1
                         AND (viewers, id) < (?2, ?3) ORDER BY viewers DESC, id DESC LIMIT ?4"
                    ),
                    params![category, c_viewers, c_id, i64::from(limit) + 1],
                    rows::stream,
                )?,
                None => query_docs(
                    tx,
                    &format!(
                        "SELECT {STREAM_COLS} FROM {t} WHERE is_live = 1
                         AND (viewers, id) < (?1, ?2) ORDER BY viewers DESC, id DESC LIMIT ?3"
                    ),
                    params![c_viewers, c_id, i64::from(limit) + 1],
                    rows::stream,
                )?,
            };
            Ok(into_page(items, limit, |d: &StreamDoc| cursor::encode(&[&d.viewers.to_string(), &d.id.to_string()])))
        }))
    }

    fn stream(&self, stream_id: Uuid) -> BoxFuture<'_, StoreResult<Option<StreamDoc>>> {
        Box::pin(self.read(move |tx| {
            let t = active_table(tx, Projection::Streams, Collection::Streams)?;
            let sql = format!("SELECT {STREAM_COLS} FROM {t} WHERE id = ?1");
            Ok(query_docs(tx, &sql, params![stream_id.as_bytes()], rows::stream)?.pop())
        }))
    }

    fn leaderboard<'a>(
        &'a self,
        stream_id: Uuid,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<LeaderboardEntry>>> {
        let page = page.clone();
        Box::pin(self.read(move |tx| {
            let t = active_table(tx, Projection::GiftLeaderboards, Collection::GiftLeaderboards)?;
            let (c_coins, c_user) = desc_cursor(&page)?;
            let limit = page.limit();
            let sql = format!(
                "SELECT {LEADERBOARD_COLS} FROM {t} WHERE stream_id = ?1 AND (coins, user_id) < (?2, ?3)
                 ORDER BY coins DESC, user_id DESC LIMIT ?4"
            );
            let items = query_docs(
                tx,
                &sql,
                params![stream_id.as_bytes(), c_coins, c_user, i64::from(limit) + 1],
                rows::leaderboard,
            )?;
            Ok(into_page(items, limit, |d: &LeaderboardEntry| {
                cursor::encode(&[&d.coins.to_string(), &d.user_id.to_string()])
            }))
        }))
    }

    fn payout(&self, payout_id: Uuid) -> BoxFuture<'_, StoreResult<Option<PayoutDoc>>> {
        Box::pin(self.read(move |tx| {
            let t = active_table(tx, Projection::Payouts, Collection::Payouts)?;
            let sql = format!("SELECT {PAYOUT_COLS} FROM {t} WHERE id = ?1");
            Ok(query_docs(tx, &sql, params![payout_id.as_bytes()], rows::payout)?.pop())
        }))
    }

    fn user_payouts<'a>(&'a self, user_id: Uuid, page: &'a PageRequest) -> BoxFuture<'a, StoreResult<Page<PayoutDoc>>> {
        let page = page.clone();
        Box::pin(self.read(move |tx| {
            let t = active_table(tx, Projection::Payouts, Collection::Payouts)?;
            let (c_time, c_id) = desc_cursor(&page)?;
            let limit = page.limit();
            let sql = format!(
                "SELECT {PAYOUT_COLS} FROM {t} WHERE user_id = ?1 AND (requested_at, id) < (?2, ?3)
                 ORDER BY requested_at DESC, id DESC LIMIT ?4"
            );
            let items =
                query_docs(tx, &sql, params![user_id.as_bytes(), c_time, c_id, i64::from(limit) + 1], rows::payout)?;
            Ok(into_page(items, limit, payout_cursor))
        }))
    }

    fn payouts<'a>(
        &'a self,
        status: Option<PayoutStatus>,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<PayoutDoc>>> {
        let page = page.clone();
        Box::pin(self.read(move |tx| {
            let t = active_table(tx, Projection::Payouts, Collection::Payouts)?;
            let (c_time, c_id) = desc_cursor(&page)?;
            let limit = page.limit();
            let items = match status {
                Some(status) => query_docs(
                    tx,
                    &format!(
                        "SELECT {PAYOUT_COLS} FROM {t} WHERE status = ?1 AND (requested_at, id) < (?2, ?3)
                         ORDER BY requested_at DESC, id DESC LIMIT ?4"
                    ),
                    params![status.as_str(), c_time, c_id, i64::from(limit) + 1],
                    rows::payout,
                )?,
                None => query_docs(
                    tx,
                    &format!(
                        "SELECT {PAYOUT_COLS} FROM {t} WHERE (requested_at, id) < (?1, ?2)
                         ORDER BY requested_at DESC, id DESC LIMIT ?3"
                    ),
                    params![c_time, c_id, i64::from(limit) + 1],
                    rows::payout,
                )?,
            };
            Ok(into_page(items, limit, payout_cursor))
        }))
    }

    fn ledger_entries<'a>(
        &'a self,
        account: Account,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<LedgerEntryDoc>>> {
        let page = page.clone();
        Box::pin(self.read(move |tx| {
            let t = active_table(tx, Projection::Ledger, Collection::LedgerEntries)?;
            let (c_pos, c_seq) = match &page.cursor {
                None => (TOP_INT, TOP_INT),
                Some(c) => {
                    let parts = cursor::decode(c, 2)?;
                    (cursor::int(&parts[0])?, cursor::int(&parts[1])?)
                }
            };
            let limit = page.limit();
            let sql = format!(
                "SELECT {ENTRY_COLS} FROM {t} WHERE account = ?1 AND (position, seq) < (?2, ?3)
                 ORDER BY position DESC, seq DESC LIMIT ?4"
            );
            let items =
                query_docs(tx, &sql, params![account_key(&account), c_pos, c_seq, i64::from(limit) + 1], rows::entry)?;
            Ok(into_page(items, limit, |d: &LedgerEntryDoc| {
                cursor::encode(&[&d.position.to_string(), &d.seq.to_string()])
            }))
        }))
    }

    fn trial_balance<'a>(&'a self, page: &'a PageRequest) -> BoxFuture<'a, StoreResult<TrialBalance>> {
        let page = page.clone();
        Box::pin(self.read(move |tx| {
            let version = active_version(tx, Projection::Ledger)?;
            let t = Collection::LedgerAccounts.physical_name(version);
            // Accounts sort by their key; an empty blob is below them all.
            let after: Vec<u8> = match &page.cursor {
                None => Vec::new(),
                Some(c) => {
                    let text = cursor::decode(c, 1)?.remove(0);
                    let account: Account = text.parse().map_err(|_| ProjectionError::BadCursor)?;
                    account_key(&account).to_vec()
                }
            };
            let limit = page.limit();
            let items = query_docs(
                tx,
                &format!("SELECT account, balance, position FROM {t} WHERE account > ?1 ORDER BY account LIMIT ?2"),
                params![after, i64::from(limit) + 1],
                rows::account_balance,
            )?;
            let (total, count): (i64, i64) = tx
                .query_row(&format!("SELECT COALESCE(SUM(balance), 0), COUNT(*) FROM {t}"), [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(db_err)?;
            let position = checkpoint_of(tx, ProjectionVersion::new(Projection::Ledger, version))?;
            let page =
                into_page(items, limit, |d: &crate::model::AccountBalance| cursor::encode(&[&d.account.to_string()]));
            Ok(TrialBalance {
                items: page.items,
                next_cursor: page.next_cursor,
                total_coins: total,
                accounts_count: u64::try_from(count).unwrap_or(0),
                position,
            })
        }))
    }

    fn stripe_payment<'a>(&'a self, payment_id: &'a str) -> BoxFuture<'a, StoreResult<Option<StripePaymentDoc>>> {
        let payment_id = payment_id.to_string();
        Box::pin(self.read(move |tx| {
            let t = active_table(tx, Projection::StripePayments, Collection::StripePayments)?;
            let sql = format!("SELECT {STRIPE_COLS} FROM {t} WHERE payment_id = ?1");
            Ok(query_docs(tx, &sql, params![payment_id], rows::stripe_payment)?.pop())
        }))
    }

    fn stripe_payments<'a>(&'a self, page: &'a PageRequest) -> BoxFuture<'a, StoreResult<Page<StripePaymentDoc>>> {
        let page = page.clone();
        Box::pin(self.read(move |tx| {
            let t = active_table(tx, Projection::StripePayments, Collection::StripePayments)?;
            let after = match &page.cursor {
                None => String::new(),
                Some(c) => cursor::decode(c, 1)?.remove(0),
            };
            let limit = page.limit();
            let sql = format!("SELECT {STRIPE_COLS} FROM {t} WHERE payment_id > ?1 ORDER BY payment_id LIMIT ?2");
            let items = query_docs(tx, &sql, params![after, i64::from(limit) + 1], rows::stripe_payment)?;
            Ok(into_page(items, limit, |d: &StripePaymentDoc| cursor::encode(&[&d.payment_id])))
        }))
    }
}

fn payout_cursor(d: &PayoutDoc) -> String {
    cursor::encode(&[&to_micros(d.requested_at).to_string(), &d.id.to_string()])
}

type RowReader = fn(&rusqlite::Row<'_>) -> StoreResult<AnyDoc>;

/// Scan keys of composite primary keys join their parts with `|`, which no
/// id or account contains.
fn scan_blocking(
    tx: &Transaction<'_>,
    target: ProjectionVersion,
    collection: Collection,
    after: Option<String>,
    limit: u32,
) -> StoreResult<ScanPage> {
    if !target.projection.collections().contains(&collection) {
        return Err(ProjectionError::InvalidInput(format!("{collection:?} is not a collection of {target}")));
    }
    let limit = limit.clamp(1, SCAN_LIMIT_MAX);
    let t = collection.physical_name(target.version);
    let exists: Option<i64> = tx
        .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", [&t], |r| r.get(0))
        .optional()
        .map_err(db_err)?;
    if exists.is_none() {
        return Ok(ScanPage { docs: Vec::new(), next_key: None });
    }
    let (cols, key_cols, key_parts, map): (&str, &str, usize, RowReader) = match collection {
        Collection::Users => (USER_COLS, "id", 1, |r| rows::user(r).map(AnyDoc::User)),
        Collection::Wallets => (WALLET_COLS, "user_id", 1, |r| rows::wallet(r).map(AnyDoc::Wallet)),
        Collection::Transactions => (TX_COLS, "id", 1, |r| rows::transaction(r).map(AnyDoc::Transaction)),
        Collection::StripeSessions => {
            ("payment_id, session_id", "payment_id", 1, |r| rows::session(r).map(|(p, s)| AnyDoc::StripeSession(p, s)))
        }
        Collection::Streams => (STREAM_COLS, "id", 1, |r| rows::stream(r).map(AnyDoc::Stream)),
        Collection::StreamViewers => ("stream_id, viewer_id", "stream_id, viewer_id", 2, |r| {
            rows::viewer(r).map(|(s, v)| AnyDoc::StreamViewer(s, v))
        }),
        Collection::Payouts => (PAYOUT_COLS, "id", 1, |r| rows::payout(r).map(AnyDoc::Payout)),
        Collection::LedgerEntries => {
            (ENTRY_COLS, "account, position, seq", 3, |r| rows::entry(r).map(AnyDoc::LedgerEntry))
        }
        Collection::LedgerAccounts => {
            ("account, balance, position", "account", 1, |r| rows::account_balance(r).map(AnyDoc::LedgerAccount))
        }
        Collection::GiftLeaderboards => {
            (LEADERBOARD_COLS, "stream_id, user_id", 2, |r| rows::leaderboard(r).map(AnyDoc::Leaderboard))
        }
        Collection::StripePayments => {
            (STRIPE_COLS, "payment_id", 1, |r| rows::stripe_payment(r).map(AnyDoc::StripePayment))
        }
    };
    let fetch = i64::from(limit) + 1;
    let docs = match after {
        None => query_docs(tx, &format!("SELECT {cols} FROM {t} ORDER BY {key_cols} LIMIT ?1"), params![fetch], map)?,
        Some(key) => {
            let parts: Vec<&str> = key.split('|').collect();
            if parts.len() != key_parts {
                return Err(ProjectionError::BadCursor);
            }
            let placeholders = (1..=key_parts).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
            let sql = format!(
                "SELECT {cols} FROM {t} WHERE ({key_cols}) > ({placeholders}) ORDER BY {key_cols} LIMIT ?{}",
                key_parts + 1
            );
            let mut values = scan_key_values(collection, &parts)?;
            values.push(rusqlite::types::Value::Integer(fetch));
            let refs: Vec<&dyn rusqlite::ToSql> = values.iter().map(|v| v as &dyn rusqlite::ToSql).collect();
            query_docs(tx, &sql, &refs, map)?
        }
    };
    let mut docs = docs;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next_key = if docs.len() > limit {
        docs.truncate(limit);
        docs.last().map(scan_key)
    } else {
        None
    };
    Ok(ScanPage { docs, next_key })
}

/// The values of a scan key's parts, as stored: UUIDs and accounts as their
/// binary keys, positions as integers, Stripe ids as text.
fn scan_key_values(collection: Collection, parts: &[&str]) -> StoreResult<Vec<rusqlite::types::Value>> {
    use rusqlite::types::Value;
    let id = |p: &str| -> StoreResult<Value> {
        Ok(Value::Blob(Uuid::parse_str(p).map_err(|_| ProjectionError::BadCursor)?.as_bytes().to_vec()))
    };
    let account = |p: &str| -> StoreResult<Value> {
        let account: Account = p.parse().map_err(|_| ProjectionError::BadCursor)?;
        Ok(Value::Blob(account_key(&account).to_vec()))
    };
    let int = |p: &str| -> StoreResult<Value> { Ok(Value::Integer(cursor::int(p)?)) };
    match (collection, parts) {
        (Collection::StripeSessions | Collection::StripePayments, [p]) => Ok(vec![Value::Text((*p).to_string())]),
        (Collection::LedgerAccounts, [a]) => Ok(vec![account(a)?]),
        (Collection::LedgerEntries, [a, position, seq]) => Ok(vec![account(a)?, int(position)?, int(seq)?]),
        (Collection::StreamViewers | Collection::GiftLeaderboards, [a, b]) => Ok(vec![id(a)?, id(b)?]),
        (
            Collection::Users
            | Collection::Wallets
            | Collection::Transactions
            | Collection::Streams
            | Collection::Payouts,
            [a],
        ) => Ok(vec![id(a)?]),
        _ => Err(ProjectionError::BadCursor),
    }
}

/// The scan key of a document (its primary key, parts joined by `|`).
pub(crate) fn scan_key(doc: &AnyDoc) -> String {
    match doc {
        AnyDoc::User(d) => d.id.to_string(),
        AnyDoc::Wallet(d) => d.user_id.to_string(),
        AnyDoc::Transaction(d) => d.id.to_string(),
        AnyDoc::StripeSession(p, _) => p.clone(),
        AnyDoc::Stream(d) => d.id.to_string(),
        AnyDoc::StreamViewer(s, v) => format!("{s}|{v}"),
        AnyDoc::Payout(d) => d.id.to_string(),
        AnyDoc::LedgerEntry(d) => format!("{}|{}|{}", d.account, d.position, d.seq),
        AnyDoc::LedgerAccount(d) => d.account.to_string(),
        AnyDoc::Leaderboard(d) => format!("{}|{}", d.stream_id, d.user_id),
        AnyDoc::StripePayment(d) => d.payment_id.clone(),
    }
}
