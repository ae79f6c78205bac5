//! The embedded store's tables, indexes and statements, per projection
//! version (version 1 uses the runbook's names, later versions a suffix).

use rusqlite::Connection;

use crate::error::ProjectionError;
use crate::model::{Collection, Projection, ProjectionVersion};
use crate::store::StoreResult;

/// The tables every store has, whatever the versions.
pub(super) const META_DDL: &str = "
CREATE TABLE IF NOT EXISTS projector_checkpoints (
    projection TEXT NOT NULL, version INTEGER NOT NULL, position INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    PRIMARY KEY (projection, version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS projector_leases (
    key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS projection_versions (
    projection TEXT PRIMARY KEY, active INTEGER NOT NULL) WITHOUT ROWID;
";

/// The DDL of one projection's collections at a version. Indexes mirror the
/// runbook's MongoDB indexes, plus what the queries' keyset paging needs.
/// The runbook's `streams {category: 1, viewers: -1}` serves the live list
/// by category: here it is partial on live streams (ended ones are never
/// listed by viewers, and stop costing index updates), and it carries `id`
/// for keyset paging.
///
/// This is what a version needs from its first batch: its tables and its
/// unique indexes. The other indexes serve queries only, and come from
/// `projection_index_ddl` (see `Writer::index_when_near`).
pub(super) fn projection_ddl(projection: Projection, version: u32) -> String {
    statements(projection, version, false)
}

/// Fails with `SchemaMismatch` when a table of `target` already exists in
/// `conn` with other columns (names, declared types, NOT NULL, defaults,
/// primary key, in order: what `table_info` shows, not UNIQUE or CHECK
/// constraints) than `projection_ddl` makes; tables not created yet pass. Runs before
/// the DDL, so a mismatch changes nothing. The expected columns are read
/// off the DDL itself, run in a fresh in-memory database.
pub(super) fn check_columns(conn: &Connection, target: ProjectionVersion) -> StoreResult<()> {
    let expected = Connection::open_in_memory().map_err(ProjectionError::store)?;
    expected.execute_batch(&projection_ddl(target.projection, target.version)).map_err(ProjectionError::store)?;
    let tables = {
        let mut statement = expected
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .map_err(ProjectionError::store)?;
        statement
            .query_map([], |row| row.get::<_, String>(0))
            .and_then(Iterator::collect::<Result<Vec<String>, _>>)
            .map_err(ProjectionError::store)?
    };
    for table in tables {
        let found = columns(conn, &table)?;
        let wanted = columns(&expected, &table)?;
        if found.is_empty() || found == wanted {
            continue;
        }
        let names = |columns: &[Column], others: &[Column]| {
            let names: Vec<&str> = columns
                .iter()
                .filter(|column| !others.iter().any(|other| other.name == column.name))
                .map(|column| column.name.as_str())
                .collect();
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        };
        return Err(ProjectionError::SchemaMismatch {
            table,
            projection: target.projection.name().to_string(),
            difference: format!(
                "missing: {}; not made by this build: {}",
                names(&wanted, &found),
                names(&found, &wanted)
            ),
        });
    }
    Ok(())
}

/// One column as `PRAGMA table_info` describes it.
#[derive(Debug, PartialEq, Eq)]
struct Column {
    name: String,
    declared_type: String,
    not_null: bool,
    default: Option<String>,
    primary_key_index: i64,
}

/// A table's columns in order; none when the table does not exist.
fn columns(conn: &Connection, table: &str) -> StoreResult<Vec<Column>> {
    let mut statement = conn
        .prepare("SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?1) ORDER BY cid")
        .map_err(ProjectionError::store)?;
    statement
        .query_map([table], |row| {
            Ok(Column {
                name: row.get(0)?,
                declared_type: row.get(1)?,
                not_null: row.get(2)?,
                default: row.get(3)?,
                primary_key_index: row.get(4)?,
            })
        })
        .and_then(Iterator::collect::<Result<Vec<Column>, _>>)
        .map_err(ProjectionError::store)
}

/// The DDL of one projection's query indexes (the non-unique ones) at a
/// version; `IF NOT EXISTS`, so running it again changes nothing.
pub(super) fn projection_index_ddl(projection: Projection, version: u32) -> String {
    statements(projection, version, true)
}

/// The statements of a projection's DDL that create query indexes
/// (`deferred`), or all the others. A query index is neither unique nor
/// partial: the partial ones (`WHERE ... IS NOT NULL` on a payment, a
/// session, a payout) find the rows that later events update, so writes
/// need them from the start; they hold few rows. No statement holds a `;`
/// of its own.
fn statements(projection: Projection, version: u32, deferred: bool) -> String {
    let mut ddl = String::new();
    for collection in projection.collections() {
        for statement in collection_ddl(*collection, version).split(';') {
            let statement = statement.trim();
            let query_index = statement.starts_with("CREATE INDEX") && !statement.contains(" WHERE ");
            if !statement.is_empty() && query_index == deferred {
                ddl.push_str(statement);
                ddl.push_str(";\n");
            }
        }
    }
    ddl
}

fn collection_ddl(collection: Collection, version: u32) -> String {
    let t = collection.physical_name(version);
    match collection {
        Collection::Users => format!(
            "CREATE TABLE IF NOT EXISTS {t} (id BLOB PRIMARY KEY, email TEXT NOT NULL, username TEXT NOT NULL,
                roles TEXT NOT NULL, password_hash TEXT NOT NULL, created_at INTEGER NOT NULL,
                position INTEGER NOT NULL) WITHOUT ROWID;
             CREATE UNIQUE INDEX IF NOT EXISTS {t}_email ON {t}(email);
             CREATE UNIQUE INDEX IF NOT EXISTS {t}_username ON {t}(username);
             CREATE INDEX IF NOT EXISTS {t}_created ON {t}(created_at DESC);"
        ),
        Collection::Wallets => format!(
            "CREATE TABLE IF NOT EXISTS {t} (user_id BLOB PRIMARY KEY, coins INTEGER NOT NULL,
                earnings INTEGER NOT NULL, held INTEGER NOT NULL, updated_at INTEGER NOT NULL,
                position INTEGER NOT NULL) WITHOUT ROWID;"
        ),
        Collection::Transactions => format!(
            "CREATE TABLE IF NOT EXISTS {t} (id BLOB PRIMARY KEY, user_id BLOB NOT NULL, type TEXT NOT NULL,
                status TEXT NOT NULL, coins INTEGER NOT NULL, wallet_after INTEGER NOT NULL,
                earnings_after INTEGER NOT NULL, held_after INTEGER NOT NULL, created_at INTEGER NOT NULL,
                position INTEGER NOT NULL, payment_id TEXT, stripe_session_id TEXT, stream_id BLOB, host_id BLOB,
                gift_id TEXT, quantity INTEGER, gifts_count INTEGER, payout_id BLOB, external_ref TEXT,
                reason TEXT, admin_id BLOB) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS {t}_user_created ON {t}(user_id, created_at DESC, id DESC);
             CREATE INDEX IF NOT EXISTS {t}_type_status ON {t}(type, status);
             CREATE INDEX IF NOT EXISTS {t}_session ON {t}(stripe_session_id) WHERE stripe_session_id IS NOT NULL;
             CREATE INDEX IF NOT EXISTS {t}_payment ON {t}(payment_id) WHERE payment_id IS NOT NULL;
             CREATE INDEX IF NOT EXISTS {t}_payout ON {t}(payout_id) WHERE payout_id IS NOT NULL;"
        ),
        Collection::StripeSessions => format!(
            "CREATE TABLE IF NOT EXISTS {t} (payment_id TEXT PRIMARY KEY, session_id TEXT NOT NULL,
                position INTEGER NOT NULL) WITHOUT ROWID;"
        ),
        Collection::Streams => format!(
            "CREATE TABLE IF NOT EXISTS {t} (id BLOB PRIMARY KEY, host_id BLOB NOT NULL, title TEXT NOT NULL,
                category TEXT NOT NULL, status TEXT NOT NULL, is_live INTEGER NOT NULL,
                start_time INTEGER NOT NULL, end_time INTEGER, viewers INTEGER NOT NULL,
                peak_viewers INTEGER NOT NULL, gifts_coins INTEGER NOT NULL, position INTEGER NOT NULL) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS {t}_host_status ON {t}(host_id, status);
             CREATE INDEX IF NOT EXISTS {t}_live_start ON {t}(is_live, start_time DESC);
             CREATE INDEX IF NOT EXISTS {t}_live_viewers ON {t}(viewers DESC, id DESC) WHERE is_live = 1;
             CREATE INDEX IF NOT EXISTS {t}_category_viewers ON {t}(category, viewers DESC, id DESC)
                WHERE is_live = 1;"
        ),
        Collection::StreamViewers => format!(
            "CREATE TABLE IF NOT EXISTS {t} (stream_id BLOB NOT NULL, viewer_id BLOB NOT NULL,
                PRIMARY KEY (stream_id, viewer_id)) WITHOUT ROWID;"
        ),
        Collection::Payouts => format!(
            "CREATE TABLE IF NOT EXISTS {t} (id BLOB PRIMARY KEY, user_id BLOB NOT NULL, coins INTEGER NOT NULL,
                fiat_amount TEXT NOT NULL, fiat_currency TEXT NOT NULL, destination TEXT NOT NULL,
                status TEXT NOT NULL, external_ref TEXT, reason TEXT, requested_at INTEGER NOT NULL,
                settled_at INTEGER, position INTEGER NOT NULL) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS {t}_user_requested ON {t}(user_id, requested_at DESC, id DESC);
             CREATE INDEX IF NOT EXISTS {t}_status_requested ON {t}(status, requested_at DESC, id DESC);
             CREATE INDEX IF NOT EXISTS {t}_requested ON {t}(requested_at DESC, id DESC);"
        ),
        Collection::LedgerEntries => format!(
            "CREATE TABLE IF NOT EXISTS {t} (account BLOB NOT NULL, position INTEGER NOT NULL, seq INTEGER NOT NULL,
                event_type TEXT NOT NULL, counterparty BLOB NOT NULL, coins INTEGER NOT NULL,
                balance_after INTEGER NOT NULL, created_at INTEGER NOT NULL,
                PRIMARY KEY (account, position, seq)) WITHOUT ROWID;"
        ),
        Collection::LedgerAccounts => format!(
            "CREATE TABLE IF NOT EXISTS {t} (account BLOB PRIMARY KEY, balance INTEGER NOT NULL,
                position INTEGER NOT NULL) WITHOUT ROWID;"
        ),
        Collection::GiftLeaderboards => format!(
            "CREATE TABLE IF NOT EXISTS {t} (stream_id BLOB NOT NULL, user_id BLOB NOT NULL, coins INTEGER NOT NULL,
                position INTEGER NOT NULL, PRIMARY KEY (stream_id, user_id)) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS {t}_stream_coins ON {t}(stream_id, coins DESC, user_id DESC);"
        ),
        Collection::StripePayments => format!(
            "CREATE TABLE IF NOT EXISTS {t} (payment_id TEXT PRIMARY KEY, user_id BLOB, coins_issued INTEGER NOT NULL,
                coins_reversed INTEGER NOT NULL, stripe_session_id TEXT, position INTEGER NOT NULL,
                package_id TEXT, coins_expected INTEGER NOT NULL DEFAULT 0, amount_cents INTEGER NOT NULL DEFAULT 0,
                currency TEXT, charge_amount_cents INTEGER NOT NULL DEFAULT 0,
                amount_refunded_cents INTEGER NOT NULL DEFAULT 0, flags TEXT NOT NULL DEFAULT '',
                disputes TEXT NOT NULL DEFAULT '[]', coins_refund_reversed INTEGER NOT NULL DEFAULT 0,
                coins_dispute_withdrawn INTEGER NOT NULL DEFAULT 0,
                coins_dispute_reinstated INTEGER NOT NULL DEFAULT 0, claimed_user_id TEXT,
                claimed_package_id TEXT, resolution TEXT) WITHOUT ROWID;"
        ),
        Collection::Adjustments => format!(
            "CREATE TABLE IF NOT EXISTS {t} (id BLOB PRIMARY KEY, user_id BLOB NOT NULL, coins INTEGER NOT NULL,
                reason TEXT NOT NULL, status TEXT NOT NULL, proposed_by BLOB NOT NULL, decided_by BLOB,
                decision_reason TEXT, proposed_at INTEGER NOT NULL, decided_at INTEGER,
                position INTEGER NOT NULL) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS {t}_status_proposed ON {t}(status, proposed_at DESC, id DESC);
             CREATE INDEX IF NOT EXISTS {t}_proposed ON {t}(proposed_at DESC, id DESC);"
        ),
        Collection::LedgerDaily => format!(
            "CREATE TABLE IF NOT EXISTS {t} (day TEXT PRIMARY KEY, purchased_coins INTEGER NOT NULL,
                gifted_coins INTEGER NOT NULL, credited_coins INTEGER NOT NULL, paid_out_coins INTEGER NOT NULL,
                reversed_coins INTEGER NOT NULL, position INTEGER NOT NULL) WITHOUT ROWID;"
        ),
    }
}

/// Column lists, in the order the row readers expect them.
pub(super) const USER_COLS: &str = "id, email, username, roles, password_hash, created_at, position";
pub(super) const WALLET_COLS: &str = "user_id, coins, earnings, held, updated_at, position";
pub(super) const TX_COLS: &str = "id, user_id, type, status, coins, wallet_after, earnings_after, held_after, \
    created_at, position, payment_id, stripe_session_id, stream_id, host_id, gift_id, quantity, gifts_count, \
    payout_id, external_ref, reason, admin_id";
pub(super) const STREAM_COLS: &str =
    "id, host_id, title, category, status, is_live, start_time, end_time, viewers, peak_viewers, gifts_coins, position";
pub(super) const PAYOUT_COLS: &str = "id, user_id, coins, fiat_amount, fiat_currency, destination, status, \
    external_ref, reason, requested_at, settled_at, position";
pub(super) const ADJUSTMENT_COLS: &str = "id, user_id, coins, reason, status, proposed_by, decided_by, \
    decision_reason, proposed_at, decided_at, position";
/// Ledger entries written by one statement (the bulk of a batch's rows:
/// one statement's setup, cursors and bindings serve them all).
pub(super) const ENTRY_ROWS_PER_INSERT: usize = 32;

pub(super) const ENTRY_COLS: &str =
    "account, position, seq, event_type, counterparty, coins, balance_after, created_at";
pub(super) const LEADERBOARD_COLS: &str = "stream_id, user_id, coins, position";
pub(super) const DAY_COLS: &str =
    "day, purchased_coins, gifted_coins, credited_coins, paid_out_coins, reversed_coins, position";
pub(super) const STRIPE_COLS: &str = "payment_id, user_id, coins_issued, coins_reversed, stripe_session_id, position, \
    package_id, coins_expected, amount_cents, currency, charge_amount_cents, amount_refunded_cents, flags, \
    disputes, coins_refund_reversed, coins_dispute_withdrawn, coins_dispute_reinstated, claimed_user_id, \
    claimed_package_id, resolution";
/// The columns the first statements write (the Stripe side keeps its
/// defaults until a payment event sets it).
const STRIPE_LEDGER_COLS: &str = "payment_id, user_id, coins_issued, coins_reversed, stripe_session_id, position";

/// Every write statement of one version, built once per version and kept,
/// so that `prepare_cached` finds the same text every time.
///
/// Inserts and updates are `OR FAIL`: a statement that fails keeps its
/// earlier rows instead of undoing them, which spares SQLite a statement
/// journal (a copy of every page a statement touches, 5% of a rebuild);
/// any failure rolls back the whole batch's transaction anyway.
#[derive(Debug)]
pub(super) struct WriteSql {
    pub user_upsert: String,
    pub user_update: String,
    pub wallet_upsert: String,
    pub tx_insert: String,
    pub tx_payout_status: String,
    pub tx_session_link: String,
    pub tx_session_remember: String,
    pub stream_insert: String,
    pub viewer_add: String,
    pub viewer_count_up: String,
    pub viewer_remove: String,
    pub viewer_count_down: String,
    pub stream_end: String,
    pub stream_viewers_clear: String,
    pub stream_gifts: String,
    pub payout_insert: String,
    pub payout_settle: String,
    pub adjustment_insert: String,
    pub adjustment_decide: String,
    pub entry_insert: String,
    /// `entry_insert` for `ENTRY_ROWS_PER_INSERT` rows at once.
    pub entry_insert_many: String,
    pub account_balance: String,
    pub account_upsert: String,
    pub leaderboard_inc: String,
    pub stripe_issued: String,
    pub stripe_reversed: String,
    pub stripe_session: String,
    pub stripe_state: String,
    pub day_get: String,
    pub day_put: String,
}

impl WriteSql {
    pub(super) fn new(version: u32) -> WriteSql {
        let users = Collection::Users.physical_name(version);
        let wallets = Collection::Wallets.physical_name(version);
        let txs = Collection::Transactions.physical_name(version);
        let sessions = Collection::StripeSessions.physical_name(version);
        let streams = Collection::Streams.physical_name(version);
        let viewers = Collection::StreamViewers.physical_name(version);
        let payouts = Collection::Payouts.physical_name(version);
        let adjustments = Collection::Adjustments.physical_name(version);
        let entries = Collection::LedgerEntries.physical_name(version);
        let accounts = Collection::LedgerAccounts.physical_name(version);
        let boards = Collection::GiftLeaderboards.physical_name(version);
        let stripe = Collection::StripePayments.physical_name(version);
        let daily = Collection::LedgerDaily.physical_name(version);
        WriteSql {
            user_upsert: format!(
                "INSERT OR FAIL INTO {users} ({USER_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(id) DO UPDATE SET email = excluded.email, username = excluded.username,
                 roles = excluded.roles, password_hash = excluded.password_hash,
                 created_at = excluded.created_at, position = excluded.position"
            ),
            user_update: format!(
                "UPDATE OR FAIL {users} SET email = ?2, username = ?3, roles = ?4, position = ?5 WHERE id = ?1"
            ),
            wallet_upsert: format!(
                "INSERT OR FAIL INTO {wallets} ({WALLET_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(user_id) DO UPDATE SET coins = excluded.coins, earnings = excluded.earnings,
                 held = excluded.held, updated_at = excluded.updated_at, position = excluded.position"
            ),
            // A purchase recorded after its Checkout Session finds the
            // session in the projection's own memory of sessions.
            tx_insert: format!(
                "INSERT OR FAIL INTO {txs} ({TX_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,
                 CASE WHEN ?11 IS NULL THEN NULL
                      ELSE (SELECT session_id FROM {sessions} WHERE payment_id = ?11) END,
                 ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)
                 ON CONFLICT(id) DO NOTHING"
            ),
            tx_payout_status: format!(
                "UPDATE OR FAIL {txs} SET status = ?3 WHERE payout_id = ?2 AND user_id = ?1 AND type = 'payout_requested'"
            ),
            tx_session_link: format!("UPDATE OR FAIL {txs} SET stripe_session_id = ?2 WHERE payment_id = ?1"),
            tx_session_remember: format!(
                "INSERT OR FAIL INTO {sessions} (payment_id, session_id, position) VALUES (?1, ?2, ?3)
                 ON CONFLICT(payment_id) DO UPDATE SET session_id = excluded.session_id, position = excluded.position"
            ),
            stream_insert: format!(
                "INSERT OR FAIL INTO {streams} ({STREAM_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT(id) DO NOTHING"
            ),
            // Only a live stream counts viewers: a join recorded after the
            // end (which the domain refuses anyway) counts nobody.
            viewer_add: format!(
                "INSERT OR FAIL INTO {viewers} (stream_id, viewer_id)
                 SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM {streams} WHERE id = ?1 AND is_live = 1)
                 ON CONFLICT(stream_id, viewer_id) DO NOTHING"
            ),
            viewer_count_up: format!(
                "UPDATE OR FAIL {streams} SET viewers = viewers + 1, peak_viewers = MAX(peak_viewers, viewers + 1),
                 position = ?2 WHERE id = ?1"
            ),
            viewer_remove: format!("DELETE FROM {viewers} WHERE stream_id = ?1 AND viewer_id = ?2"),
            viewer_count_down: format!(
                "UPDATE OR FAIL {streams} SET viewers = MAX(viewers - 1, 0), position = ?2 WHERE id = ?1"
            ),
            stream_end: format!(
                "UPDATE OR FAIL {streams} SET status = 'ended', is_live = 0, end_time = ?2, viewers = 0, position = ?3
                 WHERE id = ?1"
            ),
            stream_viewers_clear: format!("DELETE FROM {viewers} WHERE stream_id = ?1"),
            stream_gifts: format!(
                "UPDATE OR FAIL {streams} SET gifts_coins = gifts_coins + ?2, position = MAX(position, ?3) WHERE id = ?1"
            ),
            payout_insert: format!(
                "INSERT OR FAIL INTO {payouts} ({PAYOUT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT(id) DO NOTHING"
            ),
            payout_settle: format!(
                "UPDATE OR FAIL {payouts} SET status = ?2, external_ref = ?3, reason = ?4, settled_at = ?5, position = ?6
                 WHERE id = ?1"
            ),
            adjustment_insert: format!(
                "INSERT OR FAIL INTO {adjustments} ({ADJUSTMENT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT(id) DO NOTHING"
            ),
            adjustment_decide: format!(
                "UPDATE OR FAIL {adjustments} SET status = ?2, decided_by = ?3, decision_reason = ?4, decided_at = ?5,
                 position = ?6 WHERE id = ?1"
            ),
            entry_insert: format!(
                "INSERT OR FAIL INTO {entries} ({ENTRY_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(account, position, seq) DO NOTHING"
            ),
            entry_insert_many: format!(
                "INSERT OR FAIL INTO {entries} ({ENTRY_COLS}) VALUES {}
                 ON CONFLICT(account, position, seq) DO NOTHING",
                vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; ENTRY_ROWS_PER_INSERT].join(", ")
            ),
            account_balance: format!("SELECT balance FROM {accounts} WHERE account = ?1"),
            account_upsert: format!(
                "INSERT OR FAIL INTO {accounts} (account, balance, position) VALUES (?1, ?2, ?3)
                 ON CONFLICT(account) DO UPDATE SET balance = excluded.balance, position = excluded.position"
            ),
            leaderboard_inc: format!(
                "INSERT OR FAIL INTO {boards} ({LEADERBOARD_COLS}) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(stream_id, user_id) DO UPDATE SET coins = coins + excluded.coins,
                 position = MAX(position, excluded.position)"
            ),
            stripe_issued: format!(
                "INSERT OR FAIL INTO {stripe} ({STRIPE_LEDGER_COLS}) VALUES (?1, ?2, ?3, 0, NULL, ?4)
                 ON CONFLICT(payment_id) DO UPDATE SET user_id = excluded.user_id,
                 coins_issued = coins_issued + excluded.coins_issued, position = excluded.position"
            ),
            stripe_reversed: format!(
                "INSERT OR FAIL INTO {stripe} ({STRIPE_LEDGER_COLS}) VALUES (?1, ?2, 0, ?3, NULL, ?4)
                 ON CONFLICT(payment_id) DO UPDATE SET user_id = excluded.user_id,
                 coins_reversed = coins_reversed + excluded.coins_reversed, position = excluded.position"
            ),
            stripe_session: format!(
                "INSERT OR FAIL INTO {stripe} ({STRIPE_LEDGER_COLS}) VALUES (?1, NULL, 0, 0, ?2, ?3)
                 ON CONFLICT(payment_id) DO UPDATE SET stripe_session_id = excluded.stripe_session_id,
                 position = excluded.position"
            ),
            // The user is the ledger's when it has one (a purchase sets both).
            stripe_state: format!(
                "INSERT OR FAIL INTO {stripe} ({STRIPE_COLS}) VALUES (?1, ?2, 0, 0, NULL, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
                 ON CONFLICT(payment_id) DO UPDATE SET user_id = COALESCE(user_id, excluded.user_id),
                 position = excluded.position, package_id = excluded.package_id,
                 coins_expected = excluded.coins_expected, amount_cents = excluded.amount_cents,
                 currency = excluded.currency, charge_amount_cents = excluded.charge_amount_cents,
                 amount_refunded_cents = excluded.amount_refunded_cents, flags = excluded.flags,
                 disputes = excluded.disputes, coins_refund_reversed = excluded.coins_refund_reversed,
                 coins_dispute_withdrawn = excluded.coins_dispute_withdrawn,
                 coins_dispute_reinstated = excluded.coins_dispute_reinstated,
                 claimed_user_id = excluded.claimed_user_id, claimed_package_id = excluded.claimed_package_id,
                 resolution = excluded.resolution"
            ),
            day_get: format!("SELECT {DAY_COLS} FROM {daily} WHERE day = ?1"),
            // The day's new totals, summed in Rust with checked arithmetic
            // (SQLite's `+` turns an overflow into a float).
            day_put: format!(
                "INSERT OR FAIL INTO {daily} ({DAY_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(day) DO UPDATE SET purchased_coins = excluded.purchased_coins,
                 gifted_coins = excluded.gifted_coins, credited_coins = excluded.credited_coins,
                 paid_out_coins = excluded.paid_out_coins, reversed_coins = excluded.reversed_coins,
                 position = excluded.position"
            ),
        }
    }
}
