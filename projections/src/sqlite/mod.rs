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

mod apply;
mod keys;
mod queries;
mod rows;
mod scan;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use events_schema::Account;
use futures_util::future::BoxFuture;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::ProjectionError;
use crate::change::{ApplyOutcome, ProjectedBatch};
use crate::model::{
    AdjustmentDoc, AdjustmentStatus, Checkpoint, Collection, LeaderboardEntry, LedgerDayDoc, LedgerEntryDoc, Page,
    PageRequest, PayoutDoc, PayoutStatus, Projection, ProjectionVersion, StreamDoc, StripePaymentDoc,
    StripePaymentFilter, TransactionDoc, TransactionFilter, TrialBalance, UserDoc, WalletDoc, from_micros, pos_u64,
};
use crate::store::{ReadStore, ScanPage, StoreResult, normalise_email};
use schema::META_DDL;
use writer::{WRITER_CACHE_KIB, WalLength, Writer, apply_blocking, spawn_checkpointer};

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
                writer: Mutex::new(Writer::new(conn, wal)),
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
        Box::pin(self.read(move |tx| scan::scan_blocking(tx, target, collection, after, limit)))
    }

    fn user_by_id(&self, user_id: Uuid) -> BoxFuture<'_, StoreResult<Option<UserDoc>>> {
        Box::pin(self.read(move |tx| queries::user_by_id(tx, user_id)))
    }

    fn user_by_email<'a>(&'a self, email: &'a str) -> BoxFuture<'a, StoreResult<Option<UserDoc>>> {
        let email = normalise_email(email);
        Box::pin(self.read(move |tx| queries::user_by_email(tx, &email)))
    }

    fn wallet(&self, user_id: Uuid) -> BoxFuture<'_, StoreResult<Option<WalletDoc>>> {
        Box::pin(self.read(move |tx| queries::wallet(tx, user_id)))
    }

    fn transactions<'a>(
        &'a self,
        user_id: Uuid,
        filter: TransactionFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TransactionDoc>>> {
        let page = page.clone();
        Box::pin(self.read(move |tx| queries::transactions(tx, user_id, filter, &page)))
    }

    fn live_streams<'a>(
        &'a self,
        category: Option<&'a str>,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<StreamDoc>>> {
        let page = page.clone();
        let category = category.map(|c| c.trim().to_lowercase());
        Box::pin(self.read(move |tx| queries::live_streams(tx, category.as_deref(), &page)))
    }

    fn stream(&self, stream_id: Uuid) -> BoxFuture<'_, StoreResult<Option<StreamDoc>>> {
        Box::pin(self.read(move |tx| queries::stream(tx, stream_id)))
    }

    fn leaderboard<'a>(
        &'a self,
        stream_id: Uuid,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<LeaderboardEntry>>> {
        let page = page.clone();
        Box::pin(self.read(move |tx| queries::leaderboard(tx, stream_id, &page)))
    }

    fn ledger_entry_at(
        &self,
        account: Account,
        position_max: u64,
        time_max: Option<chrono::DateTime<chrono::Utc>>,
    ) -> BoxFuture<'_, StoreResult<Option<LedgerEntryDoc>>> {
        Box::pin(self.read(move |tx| queries::ledger_entry_at(tx, account, position_max, time_max)))
    }

    fn ledger_entries_window(
        &self,
        account: Account,
        time_min: chrono::DateTime<chrono::Utc>,
        after: (u64, u32),
        until: (u64, u32),
        limit: u32,
    ) -> BoxFuture<'_, StoreResult<Vec<LedgerEntryDoc>>> {
        Box::pin(self.read(move |tx| queries::ledger_entries_window(tx, account, time_min, after, until, limit)))
    }

    fn gifts_from_negative_wallets(
        &self,
        host_id: Uuid,
        since: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'_, StoreResult<i64>> {
        Box::pin(self.read(move |tx| queries::gifts_from_negative_wallets(tx, host_id, since)))
    }

    fn adjustments<'a>(
        &'a self,
        status: Option<AdjustmentStatus>,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<AdjustmentDoc>>> {
        let page = page.clone();
        Box::pin(self.read(move |tx| queries::adjustments(tx, status, &page)))
    }

    fn payout(&self, payout_id: Uuid) -> BoxFuture<'_, StoreResult<Option<PayoutDoc>>> {
        Box::pin(self.read(move |tx| queries::payout(tx, payout_id)))
    }

    fn user_payouts<'a>(&'a self, user_id: Uuid, page: &'a PageRequest) -> BoxFuture<'a, StoreResult<Page<PayoutDoc>>> {
        let page = page.clone();
        Box::pin(self.read(move |tx| queries::user_payouts(tx, user_id, &page)))
    }

    fn payouts<'a>(
        &'a self,
        status: Option<PayoutStatus>,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<PayoutDoc>>> {
        let page = page.clone();
        Box::pin(self.read(move |tx| queries::payouts(tx, status, &page)))
    }

    fn ledger_entries<'a>(
        &'a self,
        account: Account,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<LedgerEntryDoc>>> {
        let page = page.clone();
        Box::pin(self.read(move |tx| queries::ledger_entries(tx, account, &page)))
    }

    fn trial_balance<'a>(&'a self, page: &'a PageRequest) -> BoxFuture<'a, StoreResult<TrialBalance>> {
        let page = page.clone();
        Box::pin(self.read(move |tx| queries::trial_balance(tx, &page)))
    }

    fn stripe_payment<'a>(&'a self, payment_id: &'a str) -> BoxFuture<'a, StoreResult<Option<StripePaymentDoc>>> {
        let payment_id = payment_id.to_string();
        Box::pin(self.read(move |tx| queries::stripe_payment(tx, &payment_id)))
    }

    fn stripe_payments<'a>(
        &'a self,
        filter: &'a StripePaymentFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<StripePaymentDoc>>> {
        let page = page.clone();
        let filter = filter.clone();
        Box::pin(self.read(move |tx| queries::stripe_payments(tx, &filter, &page)))
    }

    fn ledger_days(
        &self,
        first: chrono::NaiveDate,
        last: chrono::NaiveDate,
    ) -> BoxFuture<'_, StoreResult<Vec<LedgerDayDoc>>> {
        Box::pin(self.read(move |tx| queries::ledger_days(tx, first, last)))
    }
}
