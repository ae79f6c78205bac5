//! Reading rows of the embedded store back as documents.

use events_schema::{Account, Money};
use rusqlite::Row;
use uuid::Uuid;

use crate::ProjectionError;
use crate::model::{
    AccountBalance, AdjustmentDoc, AdjustmentStatus, DayTotals, LeaderboardEntry, LedgerDayDoc, LedgerEntryDoc,
    PayoutDoc, PayoutStatus, StreamDoc, StripePaymentDoc, StripeSide, TransactionDoc, TxMetadata, TxStatus, TxType,
    UserDoc, WalletDoc, from_micros, parse_role, parse_stream_status, pos_u64,
};

/// A document (or a field of one) read from a row.
type RowResult<T> = Result<T, ProjectionError>;

/// The value of the column at `index`.
fn column<T: rusqlite::types::FromSql>(row: &Row<'_>, index: usize) -> RowResult<T> {
    row.get(index).map_err(ProjectionError::store)
}

fn uuid(_table: &str, row: &Row<'_>, index: usize) -> RowResult<Uuid> {
    Ok(Uuid::from_bytes(column(row, index)?))
}

fn opt_uuid(_table: &str, row: &Row<'_>, index: usize) -> RowResult<Option<Uuid>> {
    Ok(column::<Option<[u8; 16]>>(row, index)?.map(Uuid::from_bytes))
}

fn time(table: &str, row: &Row<'_>, index: usize) -> RowResult<chrono::DateTime<chrono::Utc>> {
    from_micros(table, column(row, index)?)
}

fn position(table: &str, row: &Row<'_>, index: usize) -> RowResult<u64> {
    pos_u64(table, column(row, index)?)
}

fn account(table: &str, row: &Row<'_>, index: usize) -> RowResult<Account> {
    super::keys::account_from_key(&column(row, index)?).ok_or_else(|| ProjectionError::corrupt(table, "account key"))
}

pub(super) fn user(row: &Row<'_>) -> RowResult<UserDoc> {
    const TABLE: &str = "users";
    let roles: String = column(row, 3)?;
    let roles = roles
        .split(',')
        .filter(|r| !r.is_empty())
        .map(|r| parse_role(r).ok_or_else(|| ProjectionError::corrupt(TABLE, format!("unknown role {r:?}"))))
        .collect::<RowResult<Vec<_>>>()?;
    Ok(UserDoc {
        id: uuid(TABLE, row, 0)?,
        email: column(row, 1)?,
        username: column(row, 2)?,
        roles,
        password_hash: column(row, 4)?,
        created_at: time(TABLE, row, 5)?,
        position: position(TABLE, row, 6)?,
    })
}

pub(super) fn wallet(row: &Row<'_>) -> RowResult<WalletDoc> {
    const TABLE: &str = "wallets";
    Ok(WalletDoc {
        user_id: uuid(TABLE, row, 0)?,
        coins: column(row, 1)?,
        earnings: column(row, 2)?,
        held: column(row, 3)?,
        updated_at: time(TABLE, row, 4)?,
        position: position(TABLE, row, 5)?,
    })
}

pub(super) fn transaction(row: &Row<'_>) -> RowResult<TransactionDoc> {
    const TABLE: &str = "transactions";
    let kind: String = column(row, 2)?;
    let status: String = column(row, 3)?;
    Ok(TransactionDoc {
        id: uuid(TABLE, row, 0)?,
        user_id: uuid(TABLE, row, 1)?,
        kind: TxType::parse(&kind).ok_or_else(|| ProjectionError::corrupt(TABLE, format!("type {kind:?}")))?,
        status: TxStatus::parse(&status)
            .ok_or_else(|| ProjectionError::corrupt(TABLE, format!("status {status:?}")))?,
        coins: column(row, 4)?,
        wallet_after: column(row, 5)?,
        earnings_after: column(row, 6)?,
        held_after: column(row, 7)?,
        created_at: time(TABLE, row, 8)?,
        position: position(TABLE, row, 9)?,
        metadata: TxMetadata {
            payment_id: column(row, 10)?,
            stripe_session_id: column(row, 11)?,
            stream_id: opt_uuid(TABLE, row, 12)?,
            host_id: opt_uuid(TABLE, row, 13)?,
            gift_id: column(row, 14)?,
            quantity: column(row, 15)?,
            gifts_count: column(row, 16)?,
            payout_id: opt_uuid(TABLE, row, 17)?,
            external_ref: column(row, 18)?,
            reason: column(row, 19)?,
            admin_id: opt_uuid(TABLE, row, 20)?,
        },
    })
}

pub(super) fn stream(row: &Row<'_>) -> RowResult<StreamDoc> {
    const TABLE: &str = "streams";
    let status: String = column(row, 4)?;
    let end_time: Option<i64> = column(row, 7)?;
    Ok(StreamDoc {
        id: uuid(TABLE, row, 0)?,
        host_id: uuid(TABLE, row, 1)?,
        title: column(row, 2)?,
        category: column(row, 3)?,
        status: parse_stream_status(&status)
            .ok_or_else(|| ProjectionError::corrupt(TABLE, format!("status {status:?}")))?,
        is_live: column::<i64>(row, 5)? != 0,
        start_time: time(TABLE, row, 6)?,
        end_time: end_time.map(|us| from_micros(TABLE, us)).transpose()?,
        viewers: column(row, 8)?,
        peak_viewers: column(row, 9)?,
        gifts_coins: column(row, 10)?,
        position: position(TABLE, row, 11)?,
    })
}

pub(super) fn payout(row: &Row<'_>) -> RowResult<PayoutDoc> {
    const TABLE: &str = "payouts";
    let amount: String = column(row, 3)?;
    let status: String = column(row, 6)?;
    let settled_at: Option<i64> = column(row, 10)?;
    Ok(PayoutDoc {
        id: uuid(TABLE, row, 0)?,
        user_id: uuid(TABLE, row, 1)?,
        coins: column(row, 2)?,
        fiat: Money {
            amount: amount.parse().map_err(|e| ProjectionError::corrupt(TABLE, format!("fiat amount: {e}")))?,
            currency: column(row, 4)?,
        },
        destination: column(row, 5)?,
        status: PayoutStatus::parse(&status)
            .ok_or_else(|| ProjectionError::corrupt(TABLE, format!("status {status:?}")))?,
        external_ref: column(row, 7)?,
        reason: column(row, 8)?,
        requested_at: time(TABLE, row, 9)?,
        settled_at: settled_at.map(|us| from_micros(TABLE, us)).transpose()?,
        position: position(TABLE, row, 11)?,
    })
}

pub(super) fn adjustment(row: &Row<'_>) -> RowResult<AdjustmentDoc> {
    const TABLE: &str = "adjustments";
    let status: String = column(row, 4)?;
    let decided_by: Option<Vec<u8>> = column(row, 6)?;
    let decided_at: Option<i64> = column(row, 9)?;
    Ok(AdjustmentDoc {
        id: uuid(TABLE, row, 0)?,
        user_id: uuid(TABLE, row, 1)?,
        coins: column(row, 2)?,
        reason: column(row, 3)?,
        status: AdjustmentStatus::parse(&status)
            .ok_or_else(|| ProjectionError::corrupt(TABLE, format!("status {status:?}")))?,
        proposed_by: uuid(TABLE, row, 5)?,
        decided_by: decided_by
            .map(|b| Uuid::from_slice(&b).map_err(|_| ProjectionError::corrupt(TABLE, "decided_by")))
            .transpose()?,
        decision_reason: column(row, 7)?,
        proposed_at: time(TABLE, row, 8)?,
        decided_at: decided_at.map(|us| from_micros(TABLE, us)).transpose()?,
        position: position(TABLE, row, 10)?,
    })
}

pub(super) fn entry(row: &Row<'_>) -> RowResult<LedgerEntryDoc> {
    const TABLE: &str = "ledger_entries";
    let seq: i64 = column(row, 2)?;
    Ok(LedgerEntryDoc {
        account: account(TABLE, row, 0)?,
        position: position(TABLE, row, 1)?,
        seq: u32::try_from(seq).map_err(|e| ProjectionError::corrupt(TABLE, e))?,
        event_type: column(row, 3)?,
        counterparty: account(TABLE, row, 4)?,
        coins: column(row, 5)?,
        balance_after: column(row, 6)?,
        created_at: time(TABLE, row, 7)?,
    })
}

pub(super) fn account_balance(row: &Row<'_>) -> RowResult<AccountBalance> {
    const TABLE: &str = "ledger_accounts";
    Ok(AccountBalance {
        account: account(TABLE, row, 0)?,
        balance: column(row, 1)?,
        position: position(TABLE, row, 2)?,
    })
}

pub(super) fn leaderboard(row: &Row<'_>) -> RowResult<LeaderboardEntry> {
    const TABLE: &str = "gift_leaderboards";
    Ok(LeaderboardEntry {
        stream_id: uuid(TABLE, row, 0)?,
        user_id: uuid(TABLE, row, 1)?,
        coins: column(row, 2)?,
        position: position(TABLE, row, 3)?,
    })
}

pub(super) fn ledger_day(row: &Row<'_>) -> RowResult<LedgerDayDoc> {
    const TABLE: &str = "ledger_daily";
    let day: String = column(row, 0)?;
    Ok(LedgerDayDoc {
        day: day.parse().map_err(|_| ProjectionError::corrupt(TABLE, format!("day {day:?}")))?,
        totals: DayTotals {
            purchased_coins: column(row, 1)?,
            gifted_coins: column(row, 2)?,
            credited_coins: column(row, 3)?,
            paid_out_coins: column(row, 4)?,
            reversed_coins: column(row, 5)?,
        },
        position: position(TABLE, row, 6)?,
    })
}

pub(super) fn stripe_payment(row: &Row<'_>) -> RowResult<StripePaymentDoc> {
    const TABLE: &str = "stripe_payments";
    Ok(StripePaymentDoc {
        payment_id: column(row, 0)?,
        user_id: opt_uuid(TABLE, row, 1)?,
        coins_issued: column(row, 2)?,
        coins_reversed: column(row, 3)?,
        stripe_session_id: column(row, 4)?,
        position: position(TABLE, row, 5)?,
        stripe: StripeSide {
            package_id: column(row, 6)?,
            coins_expected: column(row, 7)?,
            amount_cents: column(row, 8)?,
            currency: column(row, 9)?,
            charge_amount_cents: column(row, 10)?,
            amount_refunded_cents: column(row, 11)?,
            flags: {
                let flags: String = column(row, 12)?;
                flags.split(',').filter(|f| !f.is_empty()).map(str::to_string).collect()
            },
            disputes: {
                let disputes: String = column(row, 13)?;
                serde_json::from_str(&disputes)
                    .map_err(|e| ProjectionError::corrupt(TABLE, format!("disputes: {e}")))?
            },
            coins_refund_reversed: column(row, 14)?,
            coins_dispute_withdrawn: column(row, 15)?,
            coins_dispute_reinstated: column(row, 16)?,
            claimed_user_id: column(row, 17)?,
            claimed_package_id: column(row, 18)?,
            resolution: {
                let resolution: Option<String> = column(row, 19)?;
                match resolution {
                    None => None,
                    Some(text) => Some(
                        serde_json::from_str(&text)
                            .map_err(|e| ProjectionError::corrupt(TABLE, format!("resolution: {e}")))?,
                    ),
                }
            },
        },
    })
}

pub(super) fn viewer(row: &Row<'_>) -> RowResult<(Uuid, Uuid)> {
    const TABLE: &str = "stream_viewers";
    Ok((uuid(TABLE, row, 0)?, uuid(TABLE, row, 1)?))
}

pub(super) fn session(row: &Row<'_>) -> RowResult<(String, String)> {
    Ok((column(row, 0)?, column(row, 1)?))
}
