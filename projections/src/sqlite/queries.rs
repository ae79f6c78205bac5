//! The queries the API serves.

use events_schema::Account;
use rusqlite::{Transaction, params};
use uuid::Uuid;

use super::keys::account_key;
use super::schema::{
    ADJUSTMENT_COLS, DAY_COLS, ENTRY_COLS, LEADERBOARD_COLS, PAYOUT_COLS, STREAM_COLS, STRIPE_COLS, TX_COLS, USER_COLS,
    WALLET_COLS,
};
use super::{active_table, active_version, checkpoint_of, db_err, rows};
use crate::ProjectionError;
use crate::model::{
    AdjustmentDoc, AdjustmentStatus, Collection, LeaderboardEntry, LedgerDayDoc, LedgerEntryDoc, Page, PageRequest,
    PayoutDoc, PayoutStatus, Projection, ProjectionVersion, ResolutionStatus, StreamDoc, StripePaymentDoc,
    StripePaymentFilter, TransactionDoc, TransactionFilter, TrialBalance, UserDoc, WalletDoc, cursor, to_micros,
};
use crate::store::{StoreResult, into_page};

/// Runs a query that returns documents, mapping each row.
pub(super) fn query_docs<T>(
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

pub(super) fn user_by_id(tx: &Transaction<'_>, user_id: Uuid) -> StoreResult<Option<UserDoc>> {
    let table = active_table(tx, Projection::Users, Collection::Users)?;
    let sql = format!("SELECT {USER_COLS} FROM {table} WHERE id = ?1");
    Ok(query_docs(tx, &sql, params![user_id.as_bytes()], rows::user)?.pop())
}

pub(super) fn user_by_email(tx: &Transaction<'_>, email: &str) -> StoreResult<Option<UserDoc>> {
    let table = active_table(tx, Projection::Users, Collection::Users)?;
    let sql = format!("SELECT {USER_COLS} FROM {table} WHERE email = ?1");
    Ok(query_docs(tx, &sql, params![email], rows::user)?.pop())
}

pub(super) fn wallet(tx: &Transaction<'_>, user_id: Uuid) -> StoreResult<Option<WalletDoc>> {
    let table = active_table(tx, Projection::Wallets, Collection::Wallets)?;
    let sql = format!("SELECT {WALLET_COLS} FROM {table} WHERE user_id = ?1");
    Ok(query_docs(tx, &sql, params![user_id.as_bytes()], rows::wallet)?.pop())
}

pub(super) fn transactions(
    tx: &Transaction<'_>,
    user_id: Uuid,
    filter: TransactionFilter,
    page: &PageRequest,
) -> StoreResult<Page<TransactionDoc>> {
    let table = active_table(tx, Projection::Transactions, Collection::Transactions)?;
    let (c_time, c_id) = desc_cursor(page)?;
    let limit = page.limit();
    let sql = format!(
        "SELECT {TX_COLS} FROM {table} WHERE user_id = ?1 AND (?2 IS NULL OR type = ?2)
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
}

pub(super) fn live_streams(
    tx: &Transaction<'_>,
    category: Option<&str>,
    page: &PageRequest,
) -> StoreResult<Page<StreamDoc>> {
    let table = active_table(tx, Projection::Streams, Collection::Streams)?;
    let (c_viewers, c_id) = desc_cursor(page)?;
    let limit = page.limit();
    // Two statements so that each uses its partial index.
    let items = match &category {
        Some(category) => query_docs(
            tx,
            &format!(
                "SELECT {STREAM_COLS} FROM {table} WHERE is_live = 1 AND category = ?1
                 AND (viewers, id) < (?2, ?3) ORDER BY viewers DESC, id DESC LIMIT ?4"
            ),
            params![category, c_viewers, c_id, i64::from(limit) + 1],
            rows::stream,
        )?,
        None => query_docs(
            tx,
            &format!(
                "SELECT {STREAM_COLS} FROM {table} WHERE is_live = 1
                 AND (viewers, id) < (?1, ?2) ORDER BY viewers DESC, id DESC LIMIT ?3"
            ),
            params![c_viewers, c_id, i64::from(limit) + 1],
            rows::stream,
        )?,
    };
    Ok(into_page(items, limit, |d: &StreamDoc| cursor::encode(&[&d.viewers.to_string(), &d.id.to_string()])))
}

pub(super) fn stream(tx: &Transaction<'_>, stream_id: Uuid) -> StoreResult<Option<StreamDoc>> {
    let table = active_table(tx, Projection::Streams, Collection::Streams)?;
    let sql = format!("SELECT {STREAM_COLS} FROM {table} WHERE id = ?1");
    Ok(query_docs(tx, &sql, params![stream_id.as_bytes()], rows::stream)?.pop())
}

pub(super) fn leaderboard(
    tx: &Transaction<'_>,
    stream_id: Uuid,
    page: &PageRequest,
) -> StoreResult<Page<LeaderboardEntry>> {
    let table = active_table(tx, Projection::GiftLeaderboards, Collection::GiftLeaderboards)?;
    let (c_coins, c_user) = desc_cursor(page)?;
    let limit = page.limit();
    let sql = format!(
        "SELECT {LEADERBOARD_COLS} FROM {table} WHERE stream_id = ?1 AND (coins, user_id) < (?2, ?3)
         ORDER BY coins DESC, user_id DESC LIMIT ?4"
    );
    let items =
        query_docs(tx, &sql, params![stream_id.as_bytes(), c_coins, c_user, i64::from(limit) + 1], rows::leaderboard)?;
    Ok(into_page(items, limit, |d: &LeaderboardEntry| cursor::encode(&[&d.coins.to_string(), &d.user_id.to_string()])))
}

pub(super) fn payout(tx: &Transaction<'_>, payout_id: Uuid) -> StoreResult<Option<PayoutDoc>> {
    let table = active_table(tx, Projection::Payouts, Collection::Payouts)?;
    let sql = format!("SELECT {PAYOUT_COLS} FROM {table} WHERE id = ?1");
    Ok(query_docs(tx, &sql, params![payout_id.as_bytes()], rows::payout)?.pop())
}

pub(super) fn user_payouts(tx: &Transaction<'_>, user_id: Uuid, page: &PageRequest) -> StoreResult<Page<PayoutDoc>> {
    let table = active_table(tx, Projection::Payouts, Collection::Payouts)?;
    let (c_time, c_id) = desc_cursor(page)?;
    let limit = page.limit();
    let sql = format!(
        "SELECT {PAYOUT_COLS} FROM {table} WHERE user_id = ?1 AND (requested_at, id) < (?2, ?3)
         ORDER BY requested_at DESC, id DESC LIMIT ?4"
    );
    let items = query_docs(tx, &sql, params![user_id.as_bytes(), c_time, c_id, i64::from(limit) + 1], rows::payout)?;
    Ok(into_page(items, limit, payout_cursor))
}

pub(super) fn payouts(
    tx: &Transaction<'_>,
    status: Option<PayoutStatus>,
    page: &PageRequest,
) -> StoreResult<Page<PayoutDoc>> {
    let table = active_table(tx, Projection::Payouts, Collection::Payouts)?;
    let (c_time, c_id) = desc_cursor(page)?;
    let limit = page.limit();
    let items = match status {
        Some(status) => query_docs(
            tx,
            &format!(
                "SELECT {PAYOUT_COLS} FROM {table} WHERE status = ?1 AND (requested_at, id) < (?2, ?3)
                 ORDER BY requested_at DESC, id DESC LIMIT ?4"
            ),
            params![status.as_str(), c_time, c_id, i64::from(limit) + 1],
            rows::payout,
        )?,
        None => query_docs(
            tx,
            &format!(
                "SELECT {PAYOUT_COLS} FROM {table} WHERE (requested_at, id) < (?1, ?2)
                 ORDER BY requested_at DESC, id DESC LIMIT ?3"
            ),
            params![c_time, c_id, i64::from(limit) + 1],
            rows::payout,
        )?,
    };
    Ok(into_page(items, limit, payout_cursor))
}

pub(super) fn ledger_entries(
    tx: &Transaction<'_>,
    account: Account,
    page: &PageRequest,
) -> StoreResult<Page<LedgerEntryDoc>> {
    let table = active_table(tx, Projection::Ledger, Collection::LedgerEntries)?;
    let (c_pos, c_seq) = match &page.cursor {
        None => (TOP_INT, TOP_INT),
        Some(c) => {
            let parts = cursor::decode(c, 2)?;
            (cursor::int(&parts[0])?, cursor::int(&parts[1])?)
        }
    };
    let limit = page.limit();
    let sql = format!(
        "SELECT {ENTRY_COLS} FROM {table} WHERE account = ?1 AND (position, seq) < (?2, ?3)
         ORDER BY position DESC, seq DESC LIMIT ?4"
    );
    let items = query_docs(tx, &sql, params![account_key(&account), c_pos, c_seq, i64::from(limit) + 1], rows::entry)?;
    Ok(into_page(items, limit, |d: &LedgerEntryDoc| cursor::encode(&[&d.position.to_string(), &d.seq.to_string()])))
}

pub(super) fn ledger_entry_at(
    tx: &Transaction<'_>,
    account: Account,
    position_max: u64,
    time_max: Option<chrono::DateTime<chrono::Utc>>,
) -> StoreResult<Option<LedgerEntryDoc>> {
    let table = active_table(tx, Projection::Ledger, Collection::LedgerEntries)?;
    let position_max = i64::try_from(position_max).unwrap_or(TOP_INT);
    let time_max = time_max.map_or(TOP_INT, to_micros);
    let sql = format!(
        "SELECT {ENTRY_COLS} FROM {table} WHERE account = ?1 AND position <= ?2 AND created_at <= ?3
         ORDER BY position DESC, seq DESC LIMIT 1"
    );
    Ok(query_docs(tx, &sql, params![account_key(&account), position_max, time_max], rows::entry)?.pop())
}

pub(super) fn ledger_entries_window(
    tx: &Transaction<'_>,
    account: Account,
    time_min: chrono::DateTime<chrono::Utc>,
    after: (u64, u32),
    until: (u64, u32),
    limit: u32,
) -> StoreResult<Vec<LedgerEntryDoc>> {
    let table = active_table(tx, Projection::Ledger, Collection::LedgerEntries)?;
    let pos = |p: u64| i64::try_from(p).unwrap_or(TOP_INT);
    let sql = format!(
        "SELECT {ENTRY_COLS} FROM {table} WHERE account = ?1 AND (position, seq) > (?2, ?3)
         AND (position, seq) <= (?4, ?5) AND created_at >= ?6 ORDER BY position, seq LIMIT ?7"
    );
    query_docs(
        tx,
        &sql,
        params![
            account_key(&account),
            pos(after.0),
            after.1,
            pos(until.0),
            until.1,
            to_micros(time_min),
            i64::from(limit.max(1))
        ],
        rows::entry,
    )
}

pub(super) fn gifts_from_negative_wallets(
    tx: &Transaction<'_>,
    host_id: Uuid,
    since: chrono::DateTime<chrono::Utc>,
) -> StoreResult<i64> {
    let streams = active_table(tx, Projection::Streams, Collection::Streams)?;
    let boards = active_table(tx, Projection::GiftLeaderboards, Collection::GiftLeaderboards)?;
    let wallets = active_table(tx, Projection::Wallets, Collection::Wallets)?;
    let (streams_max, gifters_max) = (crate::store::RISK_STREAMS_MAX, crate::store::RISK_GIFTERS_MAX);
    let sql = format!(
        "SELECT COALESCE(SUM(g.coins), 0) FROM (
            SELECT l.user_id, l.coins FROM (
                SELECT id FROM {streams} WHERE host_id = ?1 AND (end_time IS NULL OR end_time >= ?2)
                ORDER BY start_time DESC LIMIT {streams_max}
            ) s JOIN {boards} l ON l.stream_id = s.id LIMIT {gifters_max}
         ) g JOIN {wallets} w ON w.user_id = g.user_id WHERE w.coins < 0"
    );
    tx.query_row(&sql, params![host_id.as_bytes(), to_micros(since)], |r| r.get::<_, i64>(0)).map_err(db_err)
}

pub(super) fn trial_balance(tx: &Transaction<'_>, page: &PageRequest) -> StoreResult<TrialBalance> {
    let version = active_version(tx, Projection::Ledger)?;
    let table = Collection::LedgerAccounts.physical_name(version);
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
        &format!("SELECT account, balance, position FROM {table} WHERE account > ?1 ORDER BY account LIMIT ?2"),
        params![after, i64::from(limit) + 1],
        rows::account_balance,
    )?;
    let (total, count): (i64, i64) = tx
        .query_row(&format!("SELECT COALESCE(SUM(balance), 0), COUNT(*) FROM {table}"), [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(db_err)?;
    let position = checkpoint_of(tx, ProjectionVersion::new(Projection::Ledger, version))?;
    let page = into_page(items, limit, |d: &crate::model::AccountBalance| cursor::encode(&[&d.account.to_string()]));
    Ok(TrialBalance {
        items: page.items,
        next_cursor: page.next_cursor,
        total_coins: total,
        accounts_count: u64::try_from(count).unwrap_or(0),
        position,
    })
}

pub(super) fn stripe_payment(tx: &Transaction<'_>, payment_id: &str) -> StoreResult<Option<StripePaymentDoc>> {
    let table = active_table(tx, Projection::StripePayments, Collection::StripePayments)?;
    let sql = format!("SELECT {STRIPE_COLS} FROM {table} WHERE payment_id = ?1");
    Ok(query_docs(tx, &sql, params![payment_id], rows::stripe_payment)?.pop())
}

pub(super) fn stripe_payments(
    tx: &Transaction<'_>,
    filter: &StripePaymentFilter,
    page: &PageRequest,
) -> StoreResult<Page<StripePaymentDoc>> {
    let table = active_table(tx, Projection::StripePayments, Collection::StripePayments)?;
    let after = match &page.cursor {
        None => String::new(),
        Some(c) => cursor::decode(c, 1)?.remove(0),
    };
    let limit = page.limit();
    // `flags` is a comma-separated list: a flag is in it when `,flag,` is
    // in `,flags,` (flags never hold commas).
    let status = match filter.status {
        None => "",
        Some(ResolutionStatus::Open) => " AND flags != '' AND resolution IS NULL",
        Some(ResolutionStatus::Resolved) => " AND resolution IS NOT NULL",
    };
    let sql = format!(
        "SELECT {STRIPE_COLS} FROM {table} WHERE payment_id > ?1
           AND (?3 IS NULL OR instr(',' || flags || ',', ',' || ?3 || ',') > 0){status}
         ORDER BY payment_id LIMIT ?2"
    );
    let items =
        query_docs(tx, &sql, params![after, i64::from(limit) + 1, filter.flag.as_deref()], rows::stripe_payment)?;
    Ok(into_page(items, limit, |d: &StripePaymentDoc| cursor::encode(&[&d.payment_id])))
}

/// The days' documents, oldest first: `day` is `YYYY-MM-DD` text, which
/// sorts as the dates do.
pub(super) fn ledger_days(
    tx: &Transaction<'_>,
    first: chrono::NaiveDate,
    last: chrono::NaiveDate,
) -> StoreResult<Vec<LedgerDayDoc>> {
    crate::store::check_day_range(first, last)?;
    let table = active_table(tx, Projection::LedgerDaily, Collection::LedgerDaily)?;
    let sql = format!("SELECT {DAY_COLS} FROM {table} WHERE day >= ?1 AND day <= ?2 ORDER BY day");
    query_docs(tx, &sql, params![first.to_string(), last.to_string()], rows::ledger_day)
}

pub(super) fn adjustments(
    tx: &Transaction<'_>,
    status: Option<AdjustmentStatus>,
    page: &PageRequest,
) -> StoreResult<Page<AdjustmentDoc>> {
    let table = active_table(tx, Projection::Payouts, Collection::Adjustments)?;
    let (c_time, c_id) = desc_cursor(page)?;
    let limit = page.limit();
    // An empty status matches every row: one statement for both cases.
    let status = status.map_or("", AdjustmentStatus::as_str);
    let sql = format!(
        "SELECT {ADJUSTMENT_COLS} FROM {table} WHERE (?1 = '' OR status = ?1) AND (proposed_at, id) < (?2, ?3)
         ORDER BY proposed_at DESC, id DESC LIMIT ?4"
    );
    let items = query_docs(tx, &sql, params![status, c_time, c_id, i64::from(limit) + 1], rows::adjustment)?;
    Ok(into_page(items, limit, |d: &AdjustmentDoc| {
        cursor::encode(&[&to_micros(d.proposed_at).to_string(), &d.id.to_string()])
    }))
}

fn payout_cursor(d: &PayoutDoc) -> String {
    cursor::encode(&[&to_micros(d.requested_at).to_string(), &d.id.to_string()])
}
