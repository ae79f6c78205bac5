//! Applying a projected batch in the writer's transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, NaiveDate, Utc};
use events_schema::{Account, Role};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::keys::{AccountKey, account_key, opt_id};
use super::schema::{ENTRY_ROWS_PER_INSERT, WriteSql};
use super::{Inner, active_version, checkpoint_of, db_err};
use crate::ProjectionError;
use crate::change::{ApplyOutcome, Change, PositionedChange, Posting, ProjectedBatch};
use crate::model::{
    DayTotals, PayoutDoc, PayoutStatus, StreamDoc, StripeSide, TransactionDoc, TxStatus, UserDoc, WalletDoc, pos_i64,
    role_str, stream_status_str, to_micros,
};
use crate::store::StoreResult;

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

pub(super) fn apply_in_transaction(
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
        apply_change(&Statements { tx, sql: &target.sql }, pc, &mut acc, &mut counter)?;
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
    wallets: HashMap<(u8, Uuid), WalletDoc>,
    /// Ledger entries to insert, in order, per target (written in bulk).
    entries: Vec<(u8, EntryRow)>,
    /// (target, day) -> (coins to add, last position).
    days: HashMap<(u8, NaiveDate), (DayTotals, u64)>,
}

impl Accumulated {
    fn add_day(&mut self, target: u8, day: NaiveDate, totals: &DayTotals, position: u64) -> StoreResult<()> {
        let slot = self.days.entry((target, day)).or_default();
        slot.0 =
            slot.0.checked_add(totals).ok_or_else(|| ProjectionError::Store(format!("coins of {day} overflow i64")))?;
        slot.1 = position;
        Ok(())
    }

    fn set_wallet(&mut self, target: u8, wallet: &WalletDoc) {
        self.wallets.insert((target, wallet.user_id), wallet.clone());
    }

    fn add_stream_gifts(&mut self, target: u8, stream_id: Uuid, coins: i64, position: u64) -> StoreResult<()> {
        add_coins(self.stream_gifts.entry((target, stream_id)).or_default(), coins, position)
    }

    fn add_leaderboard_gift(
        &mut self,
        target: u8,
        stream_id: Uuid,
        user_id: Uuid,
        coins: i64,
        position: u64,
    ) -> StoreResult<()> {
        add_coins(self.leaderboard.entry((target, stream_id, user_id)).or_default(), coins, position)
    }
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
    for ((target, day), (added, position)) in acc.days {
        let Some(sql) = sql(target) else { continue };
        let day_text = day.to_string();
        let stored = tx
            .prepare_cached(&sql.day_get)
            .and_then(|mut s| s.query_row([&day_text], |row| Ok(super::rows::ledger_day(row))).optional())
            .map_err(db_err)?
            .transpose()?;
        let before = stored.map(|d| d.totals).unwrap_or_default();
        let t =
            before.checked_add(&added).ok_or_else(|| ProjectionError::Store(format!("coins of {day} overflow i64")))?;
        exec(
            &sql.day_put,
            params![
                day_text,
                t.purchased_coins,
                t.gifted_coins,
                t.credited_coins,
                t.paid_out_coins,
                t.reversed_coins,
                pos_i64(position)?
            ],
        )?;
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

/// The writer's connection with the statements of one target version.
struct Statements<'a> {
    tx: &'a Connection,
    sql: &'a WriteSql,
}

impl Statements<'_> {
    /// Runs a cached statement; returns the rows it changed.
    fn execute(&self, text: &str, values: &[&dyn rusqlite::ToSql]) -> StoreResult<usize> {
        self.tx.prepare_cached(text).and_then(|mut statement| statement.execute(values)).map_err(db_err)
    }
}

/// Applies one change: written now (one statement, two for the changes
/// that touch two rows), or gathered into `acc` for the batch's end.
fn apply_change(
    db: &Statements<'_>,
    pc: &PositionedChange,
    acc: &mut Accumulated,
    counter: &mut WriteCounter<'_>,
) -> StoreResult<()> {
    let position = pos_i64(pc.position)?;
    match &pc.change {
        Change::UserRegistered(user) => put_user(db, user, position)?,
        Change::UserUpdated { user_id, email, username, roles } => {
            update_user(db, *user_id, email, username, roles, position)?
        }
        Change::Wallet(wallet) => {
            acc.set_wallet(pc.target, wallet);
            return Ok(());
        }
        Change::Transaction(transaction) => insert_transaction(db, transaction, position)?,
        Change::PayoutTransactionStatus { user_id, payout_id, status } => {
            set_payout_transaction_status(db, *user_id, *payout_id, *status)?
        }
        Change::TransactionStripeSession { payment_id, session_id } => {
            link_transactions_to_session(db, counter, payment_id, session_id, position)?
        }
        Change::StreamStarted(stream) => insert_stream(db, stream, position)?,
        Change::ViewerJoined { stream_id, viewer_id } => {
            let sql = (db.sql.viewer_add.as_str(), db.sql.viewer_count_up.as_str());
            count_viewer(db, counter, sql, *stream_id, *viewer_id, position)?;
        }
        Change::ViewerLeft { stream_id, viewer_id } => {
            let sql = (db.sql.viewer_remove.as_str(), db.sql.viewer_count_down.as_str());
            count_viewer(db, counter, sql, *stream_id, *viewer_id, position)?;
        }
        Change::StreamEnded { stream_id, end_time } => end_stream(db, counter, *stream_id, *end_time, position)?,
        Change::StreamGifts { stream_id, coins } => {
            return acc.add_stream_gifts(pc.target, *stream_id, *coins, pc.position);
        }
        Change::PayoutRequested(payout) => insert_payout(db, payout, position)?,
        Change::PayoutSettled { payout_id, status, external_ref, reason, settled_at } => {
            settle_payout(db, *payout_id, *status, external_ref, reason, *settled_at, position)?
        }
        Change::AdjustmentProposed(a) => {
            db.execute(
                &db.sql.adjustment_insert,
                params![
                    a.id.as_bytes(),
                    a.user_id.as_bytes(),
                    a.coins,
                    a.reason,
                    a.status.as_str(),
                    a.proposed_by.as_bytes(),
                    a.decided_by.as_ref().map(|u| u.as_bytes().to_vec()),
                    a.decision_reason,
                    to_micros(a.proposed_at),
                    a.decided_at.map(to_micros),
                    position
                ],
            )?;
        }
        Change::AdjustmentDecided { adjustment_id, status, decided_by, reason, decided_at } => {
            db.execute(
                &db.sql.adjustment_decide,
                params![
                    adjustment_id.as_bytes(),
                    status.as_str(),
                    decided_by.as_bytes(),
                    reason,
                    to_micros(*decided_at),
                    position
                ],
            )?;
        }
        Change::Posting(posting) => return post_entry(db, acc, pc.target, posting, pc.position),
        Change::LeaderboardGift { stream_id, user_id, coins } => {
            return acc.add_leaderboard_gift(pc.target, *stream_id, *user_id, *coins, pc.position);
        }
        Change::StripeIssued { payment_id, user_id, coins } => {
            db.execute(&db.sql.stripe_issued, params![payment_id, user_id.as_bytes(), coins, position])?;
        }
        Change::StripeReversed { payment_id, user_id, coins } => {
            db.execute(&db.sql.stripe_reversed, params![payment_id, user_id.as_bytes(), coins, position])?;
        }
        Change::StripeSession { payment_id, session_id } => {
            db.execute(&db.sql.stripe_session, params![payment_id, session_id, position])?;
        }
        Change::StripeState { payment_id, user_id, state } => {
            set_stripe_state(db, payment_id, user_id.as_ref(), state, position)?
        }
        Change::LedgerDay { day, totals } => return acc.add_day(pc.target, *day, totals, pc.position),
    }
    counter.tick()
}

fn put_user(db: &Statements<'_>, user: &UserDoc, position: i64) -> StoreResult<()> {
    let roles = roles_text(&user.roles);
    let created_at = to_micros(user.created_at);
    db.execute(
        &db.sql.user_upsert,
        params![user.id.as_bytes(), user.email, user.username, roles, user.password_hash, created_at, position],
    )?;
    Ok(())
}

fn update_user(
    db: &Statements<'_>,
    user_id: Uuid,
    email: &str,
    username: &str,
    roles: &[Role],
    position: i64,
) -> StoreResult<()> {
    db.execute(&db.sql.user_update, params![user_id.as_bytes(), email, username, roles_text(roles), position])?;
    Ok(())
}

fn insert_transaction(db: &Statements<'_>, transaction: &TransactionDoc, position: i64) -> StoreResult<()> {
    let metadata = &transaction.metadata;
    db.execute(
        &db.sql.tx_insert,
        params![
            transaction.id.as_bytes(),
            transaction.user_id.as_bytes(),
            transaction.kind.as_str(),
            transaction.status.as_str(),
            transaction.coins,
            transaction.wallet_after,
            transaction.earnings_after,
            transaction.held_after,
            to_micros(transaction.created_at),
            position,
            metadata.payment_id,
            opt_id(metadata.stream_id),
            opt_id(metadata.host_id),
            metadata.gift_id,
            metadata.quantity,
            metadata.gifts_count,
            opt_id(metadata.payout_id),
            metadata.external_ref,
            metadata.reason,
            opt_id(metadata.admin_id),
        ],
    )?;
    Ok(())
}

fn set_payout_transaction_status(
    db: &Statements<'_>,
    user_id: Uuid,
    payout_id: Uuid,
    status: TxStatus,
) -> StoreResult<()> {
    db.execute(&db.sql.tx_payout_status, params![user_id.as_bytes(), payout_id.as_bytes(), status.as_str()])?;
    Ok(())
}

/// Remembers the payment's session (for purchases projected later) and
/// names it on the payment's purchases projected already.
fn link_transactions_to_session(
    db: &Statements<'_>,
    counter: &mut WriteCounter<'_>,
    payment_id: &str,
    session_id: &str,
    position: i64,
) -> StoreResult<()> {
    db.execute(&db.sql.tx_session_remember, params![payment_id, session_id, position])?;
    counter.tick()?;
    db.execute(&db.sql.tx_session_link, params![payment_id, session_id])?;
    Ok(())
}

fn insert_stream(db: &Statements<'_>, stream: &StreamDoc, position: i64) -> StoreResult<()> {
    db.execute(
        &db.sql.stream_insert,
        params![
            stream.id.as_bytes(),
            stream.host_id.as_bytes(),
            stream.title,
            stream.category,
            stream_status_str(stream.status),
            i64::from(stream.is_live),
            to_micros(stream.start_time),
            stream.end_time.map(to_micros),
            stream.viewers,
            stream.peak_viewers,
            stream.gifts_coins,
            position
        ],
    )?;
    Ok(())
}

/// Counts a viewer in or out: `membership` adds (only when not present
/// already: viewers are distinct) or removes (only when present) the
/// viewer, and `count` moves the stream's count only when it did.
fn count_viewer(
    db: &Statements<'_>,
    counter: &mut WriteCounter<'_>,
    (membership, count): (&str, &str),
    stream_id: Uuid,
    viewer_id: Uuid,
    position: i64,
) -> StoreResult<()> {
    let stream = stream_id.as_bytes();
    if db.execute(membership, params![stream, viewer_id.as_bytes()])? == 1 {
        counter.tick()?;
        db.execute(count, params![stream, position])?;
    }
    Ok(())
}

fn end_stream(
    db: &Statements<'_>,
    counter: &mut WriteCounter<'_>,
    stream_id: Uuid,
    end_time: DateTime<Utc>,
    position: i64,
) -> StoreResult<()> {
    let stream = stream_id.as_bytes();
    db.execute(&db.sql.stream_end, params![stream, to_micros(end_time), position])?;
    counter.tick()?;
    db.execute(&db.sql.stream_viewers_clear, params![stream])?;
    Ok(())
}

fn insert_payout(db: &Statements<'_>, payout: &PayoutDoc, position: i64) -> StoreResult<()> {
    db.execute(
        &db.sql.payout_insert,
        params![
            payout.id.as_bytes(),
            payout.user_id.as_bytes(),
            payout.coins,
            payout.fiat.amount.to_string(),
            payout.fiat.currency,
            payout.destination,
            payout.status.as_str(),
            payout.external_ref,
            payout.reason,
            to_micros(payout.requested_at),
            payout.settled_at.map(to_micros),
            position
        ],
    )?;
    Ok(())
}

fn settle_payout(
    db: &Statements<'_>,
    payout_id: Uuid,
    status: PayoutStatus,
    external_ref: &Option<String>,
    reason: &Option<String>,
    settled_at: DateTime<Utc>,
    position: i64,
) -> StoreResult<()> {
    db.execute(
        &db.sql.payout_settle,
        params![payout_id.as_bytes(), status.as_str(), external_ref, reason, to_micros(settled_at), position],
    )?;
    Ok(())
}

/// Gathers a ledger entry with the account's balance after it: the
/// commit's own for a user's account, else the running balance (gathered
/// in this batch, or the stored one) plus the entry's coins.
fn post_entry(
    db: &Statements<'_>,
    acc: &mut Accumulated,
    target: u8,
    posting: &Posting,
    position: u64,
) -> StoreResult<()> {
    let key = (target, posting.account);
    let balance_after = match posting.balance_after {
        Some(balance) => balance,
        None => {
            let before = match acc.balances.get(&key) {
                Some((balance, _)) => *balance,
                None => db
                    .tx
                    .prepare_cached(&db.sql.account_balance)
                    .and_then(|mut s| s.query_row([account_key(&posting.account)], |row| row.get(0)).optional())
                    .map_err(db_err)?
                    .unwrap_or(0),
            };
            before
                .checked_add(posting.coins)
                .ok_or_else(|| ProjectionError::Store(format!("balance of {} overflows i64", posting.account)))?
        }
    };
    acc.balances.insert(key, (balance_after, position));
    acc.entries.push((
        target,
        EntryRow {
            account: account_key(&posting.account),
            position: pos_i64(position)?,
            seq: posting.seq,
            event_type: posting.event_type,
            counterparty: account_key(&posting.counterparty),
            coins: posting.coins,
            balance_after,
            created_at: to_micros(posting.created_at),
        },
    ));
    Ok(())
}

fn set_stripe_state(
    db: &Statements<'_>,
    payment_id: &str,
    user_id: Option<&Uuid>,
    state: &StripeSide,
    position: i64,
) -> StoreResult<()> {
    db.execute(
        &db.sql.stripe_state,
        params![
            payment_id,
            user_id.map(|u| u.as_bytes().to_vec()),
            position,
            state.package_id,
            state.coins_expected,
            state.amount_cents,
            state.currency,
            state.charge_amount_cents,
            state.amount_refunded_cents,
            state.flags.join(","),
            // Plain fields only: serializing them cannot fail.
            serde_json::to_string(&state.disputes).unwrap_or_else(|_| "[]".to_string()),
            state.coins_refund_reversed,
            state.coins_dispute_withdrawn,
            state.coins_dispute_reinstated,
            state.claimed_user_id,
            state.claimed_package_id,
            // Plain fields only, as above.
            state.resolution.as_ref().map(|r| serde_json::to_string(r).unwrap_or_default()),
        ],
    )?;
    Ok(())
}

fn roles_text(roles: &[Role]) -> String {
    roles.iter().map(|r| role_str(*r)).collect::<Vec<_>>().join(",")
}
