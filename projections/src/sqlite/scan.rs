//! Scans of whole collections in key order.

use events_schema::Account;
use rusqlite::{OptionalExtension, Transaction, params};
use uuid::Uuid;

use super::keys::account_key;
use super::queries::query_docs;
use super::schema::{
    ADJUSTMENT_COLS, DAY_COLS, ENTRY_COLS, LEADERBOARD_COLS, PAYOUT_COLS, STREAM_COLS, STRIPE_COLS, TX_COLS, USER_COLS,
    WALLET_COLS,
};
use super::{db_err, rows};
use crate::ProjectionError;
use crate::model::{Collection, ProjectionVersion, cursor};
use crate::store::{AnyDoc, ScanPage, StoreResult};

type RowReader = fn(&rusqlite::Row<'_>) -> StoreResult<AnyDoc>;

/// Scan keys of composite primary keys join their parts with `|`, which no
/// id or account contains.
pub(super) fn scan_blocking(
    tx: &Transaction<'_>,
    target: ProjectionVersion,
    collection: Collection,
    after: Option<String>,
    limit: u32,
) -> StoreResult<ScanPage> {
    let limit = crate::store::scan_limit(target, collection, limit)?;
    let table = collection.physical_name(target.version);
    let exists: Option<i64> = tx
        .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", [&table], |r| r.get(0))
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
        Collection::Adjustments => (ADJUSTMENT_COLS, "id", 1, |r| rows::adjustment(r).map(AnyDoc::Adjustment)),
        Collection::LedgerDaily => (DAY_COLS, "day", 1, |r| rows::ledger_day(r).map(AnyDoc::LedgerDay)),
    };
    let fetch = i64::from(limit) + 1;
    let docs = match after {
        None => {
            query_docs(tx, &format!("SELECT {cols} FROM {table} ORDER BY {key_cols} LIMIT ?1"), params![fetch], map)?
        }
        Some(key) => {
            let parts: Vec<&str> = key.split('|').collect();
            if parts.len() != key_parts {
                return Err(ProjectionError::BadCursor);
            }
            let placeholders = (1..=key_parts).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
            let sql = format!(
                "SELECT {cols} FROM {table} WHERE ({key_cols}) > ({placeholders}) ORDER BY {key_cols} LIMIT ?{}",
                key_parts + 1
            );
            let mut values = scan_key_values(collection, &parts)?;
            values.push(rusqlite::types::Value::Integer(fetch));
            let refs: Vec<&dyn rusqlite::ToSql> = values.iter().map(|v| v as &dyn rusqlite::ToSql).collect();
            query_docs(tx, &sql, &refs, map)?
        }
    };
    let page = crate::store::into_page(docs, limit, scan_key);
    Ok(ScanPage { docs: page.items, next_key: page.next_cursor })
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
        (Collection::StripeSessions | Collection::StripePayments | Collection::LedgerDaily, [p]) => {
            Ok(vec![Value::Text((*p).to_string())])
        }
        (Collection::LedgerAccounts, [a]) => Ok(vec![account(a)?]),
        (Collection::LedgerEntries, [a, position, seq]) => Ok(vec![account(a)?, int(position)?, int(seq)?]),
        (Collection::StreamViewers | Collection::GiftLeaderboards, [a, b]) => Ok(vec![id(a)?, id(b)?]),
        (
            Collection::Users
            | Collection::Wallets
            | Collection::Transactions
            | Collection::Streams
            | Collection::Payouts
            | Collection::Adjustments,
            [a],
        ) => Ok(vec![id(a)?]),
        _ => Err(ProjectionError::BadCursor),
    }
}

/// The scan key of a document (its primary key, parts joined by `|`).
fn scan_key(doc: &AnyDoc) -> String {
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
        AnyDoc::Adjustment(d) => d.id.to_string(),
        AnyDoc::LedgerDay(d) => d.day.to_string(),
    }
}
