//! Reading rows of the embedded store back as documents.

use events_schema::{Account, Money};
use rusqlite::Row;
use uuid::Uuid;

use crate::ProjectionError;
use crate::model::{
    AccountBalance, LeaderboardEntry, LedgerEntryDoc, PayoutDoc, PayoutStatus, StreamDoc, StripePaymentDoc, StripeSide,
    TransactionDoc, TxMetadata, TxStatus, TxType, UserDoc, WalletDoc, from_micros, parse_role, parse_stream_status,
    pos_u64,
};

type R<T> = Result<T, ProjectionError>;

fn col<T: rusqlite::types::FromSql>(row: &Row<'_>, i: usize) -> R<T> {
    row.get(i).map_err(ProjectionError::store)
}

fn uuid(_table: &str, row: &Row<'_>, i: usize) -> R<Uuid> {
    Ok(Uuid::from_bytes(col(row, i)?))
}

fn opt_uuid(_table: &str, row: &Row<'_>, i: usize) -> R<Option<Uuid>> {
    Ok(col::<Option<[u8; 16]>>(row, i)?.map(Uuid::from_bytes))
}

fn time(table: &str, row: &Row<'_>, i: usize) -> R<chrono::DateTime<chrono::Utc>> {
    from_micros(table, col(row, i)?)
}

fn position(table: &str, row: &Row<'_>, i: usize) -> R<u64> {
    pos_u64(table, col(row, i)?)
}

fn account(table: &str, row: &Row<'_>, i: usize) -> R<Account> {
    super::keys::account_from_key(&col(row, i)?).ok_or_else(|| ProjectionError::corrupt(table, "account key"))
}

pub(super) fn user(row: &Row<'_>) -> R<UserDoc> {
    const T: &str = "users";
    let roles: String = col(row, 3)?;
    let roles = roles
        .split(',')
        .filter(|r| !r.is_empty())
        .map(|r| parse_role(r).ok_or_else(|| ProjectionError::corrupt(T, format!("unknown role {r:?}"))))
        .collect::<R<Vec<_>>>()?;
    Ok(UserDoc {
        id: uuid(T, row, 0)?,
        email: col(row, 1)?,
        username: col(row, 2)?,
        roles,
        password_hash: col(row, 4)?,
        created_at: time(T, row, 5)?,
        position: position(T, row, 6)?,
    })
}

pub(super) fn wallet(row: &Row<'_>) -> R<WalletDoc> {
    const T: &str = "wallets";
    Ok(WalletDoc {
        user_id: uuid(T, row, 0)?,
        coins: col(row, 1)?,
        earnings: col(row, 2)?,
        held: col(row, 3)?,
        updated_at: time(T, row, 4)?,
        position: position(T, row, 5)?,
    })
}

pub(super) fn transaction(row: &Row<'_>) -> R<TransactionDoc> {
    const T: &str = "transactions";
    let kind: String = col(row, 2)?;
    let status: String = col(row, 3)?;
    Ok(TransactionDoc {
        id: uuid(T, row, 0)?,
        user_id: uuid(T, row, 1)?,
        kind: TxType::parse(&kind).ok_or_else(|| ProjectionError::corrupt(T, format!("type {kind:?}")))?,
        status: TxStatus::parse(&status).ok_or_else(|| ProjectionError::corrupt(T, format!("status {status:?}")))?,
        coins: col(row, 4)?,
        wallet_after: col(row, 5)?,
        earnings_after: col(row, 6)?,
        held_after: col(row, 7)?,
        created_at: time(T, row, 8)?,
        position: position(T, row, 9)?,
        metadata: TxMetadata {
            payment_id: col(row, 10)?,
            stripe_session_id: col(row, 11)?,
            stream_id: opt_uuid(T, row, 12)?,
            host_id: opt_uuid(T, row, 13)?,
            gift_id: col(row, 14)?,
            quantity: col(row, 15)?,
            gifts_count: col(row, 16)?,
            payout_id: opt_uuid(T, row, 17)?,
            external_ref: col(row, 18)?,
            reason: col(row, 19)?,
            admin_id: opt_uuid(T, row, 20)?,
        },
    })
}

pub(super) fn stream(row: &Row<'_>) -> R<StreamDoc> {
    const T: &str = "streams";
    let status: String = col(row, 4)?;
    let end_time: Option<i64> = col(row, 7)?;
    Ok(StreamDoc {
        id: uuid(T, row, 0)?,
        host_id: uuid(T, row, 1)?,
        title: col(row, 2)?,
        category: col(row, 3)?,
        status: parse_stream_status(&status)
            .ok_or_else(|| ProjectionError::corrupt(T, format!("status {status:?}")))?,
        is_live: col::<i64>(row, 5)? != 0,
        start_time: time(T, row, 6)?,
        end_time: end_time.map(|us| from_micros(T, us)).transpose()?,
        viewers: col(row, 8)?,
        peak_viewers: col(row, 9)?,
        gifts_coins: col(row, 10)?,
        position: position(T, row, 11)?,
    })
}

pub(super) fn payout(row: &Row<'_>) -> R<PayoutDoc> {
    const T: &str = "payouts";
    let amount: String = col(row, 3)?;
    let status: String = col(row, 6)?;
    let settled_at: Option<i64> = col(row, 10)?;
    Ok(PayoutDoc {
        id: uuid(T, row, 0)?,
        user_id: uuid(T, row, 1)?,
        coins: col(row, 2)?,
        fiat: Money {
            amount: amount.parse().map_err(|e| ProjectionError::corrupt(T, format!("fiat amount: {e}")))?,
            currency: col(row, 4)?,
        },
        destination: col(row, 5)?,
        status: PayoutStatus::parse(&status)
            .ok_or_else(|| ProjectionError::corrupt(T, format!("status {status:?}")))?,
        external_ref: col(row, 7)?,
        reason: col(row, 8)?,
        requested_at: time(T, row, 9)?,
        settled_at: settled_at.map(|us| from_micros(T, us)).transpose()?,
        position: position(T, row, 11)?,
    })
}

pub(super) fn entry(row: &Row<'_>) -> R<LedgerEntryDoc> {
    const T: &str = "ledger_entries";
    let seq: i64 = col(row, 2)?;
    Ok(LedgerEntryDoc {
        account: account(T, row, 0)?,
        position: position(T, row, 1)?,
        seq: u32::try_from(seq).map_err(|e| ProjectionError::corrupt(T, e))?,
        event_type: col(row, 3)?,
        counterparty: account(T, row, 4)?,
        coins: col(row, 5)?,
        balance_after: col(row, 6)?,
        created_at: time(T, row, 7)?,
    })
}

pub(super) fn account_balance(row: &Row<'_>) -> R<AccountBalance> {
    const T: &str = "ledger_accounts";
    Ok(AccountBalance { account: account(T, row, 0)?, balance: col(row, 1)?, position: position(T, row, 2)? })
}

pub(super) fn leaderboard(row: &Row<'_>) -> R<LeaderboardEntry> {
    const T: &str = "gift_leaderboards";
    Ok(LeaderboardEntry {
        stream_id: uuid(T, row, 0)?,
        user_id: uuid(T, row, 1)?,
        coins: col(row, 2)?,
        position: position(T, row, 3)?,
    })
}

pub(super) fn stripe_payment(row: &Row<'_>) -> R<StripePaymentDoc> {
    const T: &str = "stripe_payments";
    Ok(StripePaymentDoc {
        payment_id: col(row, 0)?,
        user_id: opt_uuid(T, row, 1)?,
        coins_issued: col(row, 2)?,
        coins_reversed: col(row, 3)?,
        stripe_session_id: col(row, 4)?,
        position: position(T, row, 5)?,
        stripe: StripeSide {
            package_id: col(row, 6)?,
            coins_expected: col(row, 7)?,
            amount_cents: col(row, 8)?,
            currency: col(row, 9)?,
            charge_amount_cents: col(row, 10)?,
            amount_refunded_cents: col(row, 11)?,
            flags: {
                let flags: String = col(row, 12)?;
                flags.split(',').filter(|f| !f.is_empty()).map(str::to_string).collect()
            },
        },
    })
}

pub(super) fn viewer(row: &Row<'_>) -> R<(Uuid, Uuid)> {
    const T: &str = "stream_viewers";
    Ok((uuid(T, row, 0)?, uuid(T, row, 1)?))
}

pub(super) fn session(row: &Row<'_>) -> R<(String, String)> {
    Ok((col(row, 0)?, col(row, 1)?))
}
