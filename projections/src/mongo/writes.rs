//! The writes a projected batch becomes, as pure functions: guarded
//! `update` statements (one per change), grouped into few ordered commands.
//!
//! Every document keeps `position`, the log position of the last event
//! applied to it, and every update that depends on the current value is
//! filtered on `position < P`: replaying an event (after a crash between
//! the writes and the checkpoint, with no transaction) matches nothing. An
//! upsert whose guard fails tries to insert an existing `_id`, which MongoDB
//! refuses with a duplicate key error (11000) on `_id`: the adapter reads
//! that, and only that, as "already applied" and goes on with the next
//! write.

use std::collections::HashMap;

use events_schema::Account;
use mongodb::bson::{Bson, Document, doc};
use uuid::Uuid;

use super::documents::{
    R, adjustment_doc, entry_doc, leaderboard_id, nullable_string, payout_doc, position_value, roles, stream_doc,
    stripe_state_update, time, transaction_doc, user_doc,
};
use crate::ProjectionError;
use crate::change::{Change, ProjectedBatch};
use crate::model::{Collection, TxType};

/// MongoDB's duplicate key error.
pub const DUPLICATE_KEY: i32 = 11_000;

/// One write of a batch: an `update` statement (`q`, `u`, `upsert`,
/// `multi`) on a collection.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub collection: String,
    pub statement: Document,
}

pub(crate) fn update(collection: &str, q: Document, u: impl Into<Bson>, upsert: bool) -> Write {
    Write { collection: collection.to_string(), statement: doc! {"q": q, "u": u.into(), "upsert": upsert} }
}

/// Insert if absent: never an error, never a change when present.
fn insert_if_absent(collection: &str, mut document: Document) -> Write {
    let id = document.remove("_id").unwrap_or(Bson::Null);
    update(collection, doc! {"_id": id}, doc! {"$setOnInsert": document}, true)
}

/// The guard: only documents behind this event's position are updated.
fn guarded(id: impl Into<Bson>, p: &Bson) -> Document {
    doc! {"_id": id.into(), "position": {"$lt": p.clone()}}
}

/// The writes of a batch, for the changes past their target's checkpoint
/// (`checkpoints[i]` for `batch.targets[i]`), in event order within each
/// collection; the viewers' writes come after every other write (see
/// `PlanInputs::viewers`).
#[derive(Debug, Default)]
pub struct Plan {
    pub writes: Vec<Write>,
    pub applied: u64,
    pub skipped: u64,
}

/// What the plan needs to know of the store, read by the adapter before
/// planning, as of the targets' checkpoints; updated as the batch goes.
#[derive(Debug, Default)]
pub struct PlanInputs {
    /// The Checkout Sessions known for the purchases' payment ids.
    pub sessions: HashMap<String, String>,
    /// The balance of every account whose postings carry no balance.
    pub balances: HashMap<(u8, Account), i64>,
    /// `(target, stream, viewer)`: whether the viewer is present, for the
    /// viewers the batch's joins and leaves name (absent: not present).
    ///
    /// Without transactions, the viewers' writes go after the streams'
    /// (they are planned last): a viewer document written by a batch that
    /// died is then always one whose stream counted it, so a replay that
    /// starts from it counts nothing twice.
    pub viewers: HashMap<(u8, Uuid, Uuid), bool>,
    /// `(target, stream)`: whether the stream is live, for the streams of
    /// those joins (absent: no such stream).
    pub live: HashMap<(u8, Uuid), bool>,
}

pub fn plan_batch(batch: &ProjectedBatch, checkpoints: &[u64], inputs: &mut PlanInputs) -> R<Plan> {
    let mut plan = Plan::default();
    let PlanInputs { sessions, balances, viewers, live } = inputs;
    let mut viewer_writes: Vec<Write> = Vec::new();
    // The last balance and position of every account touched: one guarded
    // write per account per batch, after the entries.
    let mut accounts: HashMap<(u8, Account), (i64, u64)> = HashMap::new();
    let mut account_order: Vec<(u8, Account)> = Vec::new();
    for pc in &batch.changes {
        let index = usize::from(pc.target);
        let (Some(target), Some(checkpoint)) = (batch.targets.get(index), checkpoints.get(index)) else {
            return Err(ProjectionError::InvalidInput(format!("change for unknown target {}", pc.target)));
        };
        if pc.position <= *checkpoint {
            plan.skipped += 1;
            continue;
        }
        plan.applied += 1;
        let v = target.version;
        let name = |c: Collection| c.physical_name(v);
        let p = position_value(pc.position)?;
        let w = &mut plan.writes;
        match &pc.change {
            Change::UserRegistered(u) => {
                let mut d = user_doc(u)?;
                d.insert("position", p.clone());
                let id = d.remove("_id").unwrap_or(Bson::Null);
                w.push(update(&name(Collection::Users), guarded(id, &p), doc! {"$set": d}, true));
            }
            Change::UserUpdated { user_id, email, username, roles: r } => w.push(update(
                &name(Collection::Users),
                guarded(user_id.to_string(), &p),
                doc! {"$set": {"email": email, "username": username, "roles": roles(r), "position": p.clone()}},
                false,
            )),
            Change::Wallet(wd) => w.push(update(
                &name(Collection::Wallets),
                guarded(wd.user_id.to_string(), &p),
                doc! {"$set": {"coins": wd.coins, "earnings": wd.earnings, "held": wd.held,
                "updatedAt": time(wd.updated_at), "position": p.clone()}},
                true,
            )),
            Change::Transaction(t) => {
                let session = t.metadata.payment_id.as_ref().and_then(|id| sessions.get(id));
                w.push(insert_if_absent(&name(Collection::Transactions), transaction_doc(t, session)?));
            }
            Change::PayoutTransactionStatus { user_id, payout_id, status } => w.push(update(
                &name(Collection::Transactions),
                doc! {"userId": user_id.to_string(), "type": TxType::PayoutRequested.as_str(),
                "metadata.payoutId": payout_id.to_string()},
                doc! {"$set": {"status": status.as_str()}},
                false,
            )),
            Change::TransactionStripeSession { payment_id, session_id } => {
                sessions.insert(payment_id.clone(), session_id.clone());
                w.push(update(
                    &name(Collection::StripeSessions),
                    doc! {"_id": payment_id},
                    doc! {"$set": {"sessionId": session_id, "position": p.clone()}},
                    true,
                ));
                let mut link = update(
                    &name(Collection::Transactions),
                    doc! {"metadata.paymentId": payment_id},
                    doc! {"$set": {"metadata.stripeSessionId": session_id}},
                    false,
                );
                link.statement.insert("multi", true);
                w.push(link);
            }
            Change::StreamStarted(s) => {
                live.entry((pc.target, s.id)).or_insert(s.is_live);
                w.push(insert_if_absent(&name(Collection::Streams), stream_doc(s)?));
            }
            Change::ViewerJoined { stream_id, viewer_id } => {
                let key = (pc.target, *stream_id, *viewer_id);
                let is_live = live.get(&(pc.target, *stream_id)).copied().unwrap_or(false);
                if is_live && !viewers.get(&key).copied().unwrap_or(false) {
                    viewers.insert(key, true);
                    w.push(viewer_count_write(&name(Collection::Streams), *stream_id, &p, true));
                    viewer_writes.push(viewer_write(
                        &name(Collection::StreamViewers),
                        *stream_id,
                        *viewer_id,
                        &p,
                        true,
                    ));
                }
            }
            Change::ViewerLeft { stream_id, viewer_id } => {
                let key = (pc.target, *stream_id, *viewer_id);
                if viewers.get(&key).copied().unwrap_or(false) {
                    viewers.insert(key, false);
                    w.push(viewer_count_write(&name(Collection::Streams), *stream_id, &p, false));
                    viewer_writes.push(viewer_write(
                        &name(Collection::StreamViewers),
                        *stream_id,
                        *viewer_id,
                        &p,
                        false,
                    ));
                }
            }
            Change::StreamEnded { stream_id, end_time } => {
                live.insert((pc.target, *stream_id), false);
                for (key, present) in viewers.iter_mut() {
                    if key.0 == pc.target && key.1 == *stream_id {
                        *present = false;
                    }
                }
                w.push(update(
                    &name(Collection::Streams),
                    guarded(stream_id.to_string(), &p),
                    doc! {"$set": {"status": "ended", "isLive": false, "endTime": time(*end_time), "viewers": 0i64,
                    "position": p.clone()}},
                    false,
                ));
                // Nobody is present any more.
                let mut everyone = update(
                    &name(Collection::StreamViewers),
                    doc! {"streamId": stream_id.to_string(), "present": true, "position": {"$lt": p.clone()}},
                    doc! {"$set": {"present": false, "position": p.clone()}},
                    false,
                );
                everyone.statement.insert("multi", true);
                viewer_writes.push(everyone);
            }
            Change::StreamGifts { stream_id, coins } => w.push(update(
                &name(Collection::Streams),
                guarded(stream_id.to_string(), &p),
                doc! {"$inc": {"giftsCoins": coins}, "$set": {"position": p.clone()}},
                false,
            )),
            Change::PayoutRequested(po) => w.push(insert_if_absent(&name(Collection::Payouts), payout_doc(po)?)),
            Change::PayoutSettled { payout_id, status, external_ref, reason, settled_at } => w.push(update(
                &name(Collection::Payouts),
                guarded(payout_id.to_string(), &p),
                doc! {"$set": {"status": status.as_str(), "externalRef": nullable_string(external_ref),
                "reason": nullable_string(reason), "settledAt": time(*settled_at), "position": p.clone()}},
                false,
            )),
            Change::AdjustmentProposed(a) => {
                w.push(insert_if_absent(&name(Collection::Adjustments), adjustment_doc(a)?))
            }
            Change::AdjustmentDecided { adjustment_id, status, decided_by, reason, decided_at } => w.push(update(
                &name(Collection::Adjustments),
                guarded(adjustment_id.to_string(), &p),
                doc! {"$set": {"status": status.as_str(), "decidedBy": decided_by.to_string(),
                "decisionReason": nullable_string(reason), "decidedAt": time(*decided_at), "position": p.clone()}},
                false,
            )),
            Change::Posting(posting) => {
                let key = (pc.target, posting.account);
                let balance_after = match posting.balance_after {
                    Some(b) => b,
                    None => {
                        let before = balances.get(&key).copied().unwrap_or(0);
                        before.checked_add(posting.coins).ok_or_else(|| {
                            ProjectionError::Store(format!("balance of {} overflows i64", posting.account))
                        })?
                    }
                };
                balances.insert(key, balance_after);
                if accounts.insert(key, (balance_after, pc.position)).is_none() {
                    account_order.push(key);
                }
                let entry = posting.to_entry(pc.position, balance_after);
                w.push(insert_if_absent(&name(Collection::LedgerEntries), entry_doc(&entry)?));
            }
            Change::LeaderboardGift { stream_id, user_id, coins } => w.push(update(
                &name(Collection::GiftLeaderboards),
                guarded(leaderboard_id(*stream_id, *user_id), &p),
                doc! {"$inc": {"coins": coins}, "$set": {"position": p.clone()},
                "$setOnInsert": {"streamId": stream_id.to_string(), "userId": user_id.to_string()}},
                true,
            )),
            Change::StripeIssued { payment_id, user_id, coins } => w.push(update(
                &name(Collection::StripePayments),
                guarded(payment_id.as_str(), &p),
                doc! {"$inc": {"coinsIssued": coins}, "$set": {"userId": user_id.to_string(), "position": p.clone()},
                "$setOnInsert": {"coinsReversed": 0i64}},
                true,
            )),
            Change::StripeReversed { payment_id, user_id, coins } => w.push(update(
                &name(Collection::StripePayments),
                guarded(payment_id.as_str(), &p),
                doc! {"$inc": {"coinsReversed": coins}, "$set": {"userId": user_id.to_string(), "position": p.clone()},
                "$setOnInsert": {"coinsIssued": 0i64}},
                true,
            )),
            Change::StripeSession { payment_id, session_id } => w.push(update(
                &name(Collection::StripePayments),
                guarded(payment_id.as_str(), &p),
                doc! {"$set": {"stripeSessionId": session_id, "position": p.clone()},
                "$setOnInsert": {"coinsIssued": 0i64, "coinsReversed": 0i64}},
                true,
            )),
            Change::StripeState { payment_id, user_id, state } => w.push(update(
                &name(Collection::StripePayments),
                guarded(payment_id.as_str(), &p),
                stripe_state_update(user_id.as_ref(), state, &p),
                true,
            )),
            Change::LedgerDay { day, totals: t } => w.push(update(
                &name(Collection::LedgerDaily),
                guarded(day.to_string(), &p),
                doc! {"$inc": {"purchasedCoins": t.purchased_coins, "giftedCoins": t.gifted_coins,
                "creditedCoins": t.credited_coins, "paidOutCoins": t.paid_out_coins,
                "reversedCoins": t.reversed_coins}, "$set": {"position": p.clone()}},
                true,
            )),
        }
    }
    for key in account_order {
        let (Some((balance, position)), Some(target)) = (accounts.get(&key), batch.targets.get(usize::from(key.0)))
        else {
            continue;
        };
        let p = position_value(*position)?;
        plan.writes.push(update(
            &Collection::LedgerAccounts.physical_name(target.version),
            guarded(key.1.to_string(), &p),
            doc! {"$set": {"balance": balance, "position": p.clone()}},
            true,
        ));
    }
    plan.writes.append(&mut viewer_writes);
    Ok(plan)
}

/// The stream's count when a viewer joins (present now, was not) or
/// leaves (was present): `viewers` one up (`peakViewers` its maximum) or
/// one down, and the position moves, as in the embedded store. A join
/// counts only on a live stream.
fn viewer_count_write(collection: &str, stream_id: Uuid, p: &Bson, join: bool) -> Write {
    let mut q = guarded(stream_id.to_string(), p);
    let pipeline = if join {
        q.insert("isLive", true);
        vec![
            doc! {"$set": {"viewers": {"$add": [{"$ifNull": ["$viewers", 0i64]}, 1i64]}, "position": p.clone()}},
            doc! {"$set": {"peakViewers": {"$max": [{"$ifNull": ["$peakViewers", 0i64]}, "$viewers"]}}},
        ]
    } else {
        vec![doc! {"$set": {
            "viewers": {"$max": [{"$subtract": [{"$ifNull": ["$viewers", 0i64]}, 1i64]}, 0i64]},
            "position": p.clone(),
        }}]
    };
    update(collection, q, Bson::Array(pipeline.into_iter().map(Bson::Document).collect()), false)
}

/// A viewer's own document (`stream|viewer`): present or not, as of the
/// event at `p`. Kept when the viewer leaves (`present: false`), so that
/// its position still guards a replay.
fn viewer_write(collection: &str, stream_id: Uuid, viewer_id: Uuid, p: &Bson, join: bool) -> Write {
    update(
        collection,
        guarded(viewer_id_key(stream_id, viewer_id), p),
        doc! {"$set": {"present": join, "position": p.clone()},
        "$setOnInsert": {"streamId": stream_id.to_string(), "viewerId": viewer_id.to_string()}},
        join,
    )
}

/// `_id` of a viewer's document.
pub fn viewer_id_key(stream_id: Uuid, viewer_id: Uuid) -> String {
    format!("{stream_id}|{viewer_id}")
}

/// Statements in one `update` command, at most (the server's limit is
/// 100,000 writes a command).
pub const COMMAND_STATEMENTS_MAX: usize = 10_000;
/// Bytes of statements in one `update` command, at most: a command is one
/// BSON document, at most 16 MiB (`maxBsonObjectSize`, plus 16 KiB for the
/// command itself); half leaves room for the envelope.
pub const COMMAND_BYTES_MAX: usize = 8 * 1024 * 1024;

/// The ordered `update` commands of a batch's writes: grouped by
/// collection (in the order each collection first appears; the order of
/// the writes within a collection kept), each group cut at
/// `COMMAND_STATEMENTS_MAX` statements or `COMMAND_BYTES_MAX` bytes. A
/// batch costs a few commands per collection it touches, not one per run
/// of writes: every write is guarded on its own document, and documents
/// of different collections never depend on each other's order.
pub fn update_commands(writes: &[Write]) -> R<Vec<Document>> {
    let mut groups: Vec<(&str, Vec<&Document>)> = Vec::new();
    for write in writes {
        match groups.iter_mut().find(|(collection, _)| *collection == write.collection) {
            Some((_, statements)) => statements.push(&write.statement),
            None => groups.push((&write.collection, vec![&write.statement])),
        }
    }
    let mut commands = Vec::new();
    for (collection, statements) in groups {
        let mut current: Vec<Bson> = Vec::new();
        let mut bytes = 0usize;
        for statement in statements {
            let size = statement_bytes(statement)?;
            if size > COMMAND_BYTES_MAX {
                return Err(ProjectionError::StoreRefused(format!(
                    "a write to {collection} is {size} bytes, more than a command may carry"
                )));
            }
            if !current.is_empty() && (current.len() >= COMMAND_STATEMENTS_MAX || bytes + size > COMMAND_BYTES_MAX) {
                commands.push(doc! {"update": collection, "updates": std::mem::take(&mut current), "ordered": true});
                bytes = 0;
            }
            bytes += size;
            current.push(Bson::Document(statement.clone()));
        }
        if !current.is_empty() {
            commands.push(doc! {"update": collection, "updates": current, "ordered": true});
        }
    }
    Ok(commands)
}

/// The encoded size of a statement.
fn statement_bytes(statement: &Document) -> R<usize> {
    let raw = mongodb::bson::RawDocumentBuf::from_document(statement)
        .map_err(|e| ProjectionError::StoreRefused(format!("a write cannot be encoded: {e}")))?;
    Ok(raw.as_bytes().len())
}

/// After an ordered `update` command: `Ok(None)` when every statement ran,
/// `Ok(Some(i))` when statement `i` hit a duplicate key on `_id` (an
/// upsert whose guard found the document already at or past the event:
/// already applied; the statements after `i` must be sent again).
///
/// A duplicate on any other unique index (`email_1`, `username_1`) is an
/// error, as on the embedded store: the document is not "already applied",
/// another document holds the value. Every other write error, and a
/// `writeConcernError` (the write may not be durable), is an error too.
pub fn resume_after(reply: &Document) -> R<Option<usize>> {
    check_write_concern(reply)?;
    let Ok(errors) = reply.get_array("writeErrors") else { return Ok(None) };
    let Some(Bson::Document(first)) = errors.first() else { return Ok(None) };
    let code = first.get_i32("code").unwrap_or(0);
    let index = first.get_i32("index").ok().and_then(|i| usize::try_from(i).ok());
    match (code, index) {
        (DUPLICATE_KEY, Some(i)) if duplicate_is_on_id(first) => Ok(Some(i)),
        _ => Err(ProjectionError::StoreRefused(format!("write error: {first}"))),
    }
}

/// Whether a duplicate key error is on `_id`: its `keyPattern` (MongoDB
/// 4.4 and later) is `{_id: 1}`; without one, the message names the index
/// `_id_`.
fn duplicate_is_on_id(error: &Document) -> bool {
    match error.get_document("keyPattern") {
        Ok(pattern) => pattern.len() == 1 && pattern.contains_key("_id"),
        Err(_) => error.get_str("errmsg").is_ok_and(|m| m.contains("index: _id_ ")),
    }
}

/// A reply's `writeConcernError`: the writes were applied on the primary
/// but not acknowledged as the write concern asks. A timeout (64) may pass
/// (transient); any other is refused.
pub fn check_write_concern(reply: &Document) -> R<()> {
    let Ok(error) = reply.get_document("writeConcernError") else { return Ok(()) };
    const WRITE_CONCERN_FAILED: i32 = 64;
    if error.get_i32("code") == Ok(WRITE_CONCERN_FAILED) {
        Err(ProjectionError::Store(format!("write concern not satisfied in time: {error}")))
    } else {
        Err(ProjectionError::StoreRefused(format!("write concern error: {error}")))
    }
}

/// The statements of a command from `index` on.
pub fn command_from(command: &Document, index: usize) -> Option<Document> {
    let updates = command.get_array("updates").ok()?;
    if index >= updates.len() {
        return None;
    }
    let mut resumed = command.clone();
    resumed.insert("updates", Bson::Array(updates[index..].to_vec()));
    Some(resumed)
}

#[cfg(test)]
mod tests;
