//! Applying a projected batch in the writer's transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use events_schema::Account;
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::keys::{AccountKey, account_key, opt_id};
use super::schema::{ENTRY_ROWS_PER_INSERT, WriteSql};
use super::{Inner, active_version, checkpoint_of, db_err};
use crate::ProjectionError;
use crate::change::{ApplyOutcome, Change, PositionedChange, ProjectedBatch};
use crate::model::{pos_i64, role_str, stream_status_str, to_micros};
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
