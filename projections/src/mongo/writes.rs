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
    R, entry_doc, leaderboard_id, nullable_string, payout_doc, position_value, roles, stream_doc, stripe_state_update,
    time, transaction_doc, user_doc,
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
mod tests {
    use super::super::documents::{read_stripe_payment, read_transaction};
    use super::*;
    use crate::change::{PositionedChange, Posting};
    use crate::model::{Projection, ProjectionVersion, StripeSide, TransactionDoc, TxMetadata, TxStatus, WalletDoc};
    use chrono::{DateTime, Utc};

    fn u(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_767_225_600_123).unwrap()
    }

    fn batch(targets: Vec<ProjectionVersion>, changes: Vec<(u64, u8, Change)>) -> ProjectedBatch {
        let to_position = changes.iter().map(|c| c.0).max().unwrap_or(0);
        ProjectedBatch {
            targets,
            to_position,
            changes: changes
                .into_iter()
                .map(|(position, target, change)| PositionedChange { position, target, change })
                .collect(),
            hold_open: false,
            behind_events: 0,
        }
    }

    #[test]
    fn every_dependent_update_is_guarded_by_the_event_position() {
        let targets =
            vec![Projection::Wallets.current(), Projection::Streams.current(), Projection::GiftLeaderboards.current()];
        let wallet = WalletDoc { user_id: u(1), coins: 10, earnings: 0, held: 0, updated_at: at(), position: 7 };
        let b = batch(
            targets,
            vec![
                (7, 0, Change::Wallet(wallet)),
                (8, 1, Change::StreamGifts { stream_id: u(5), coins: 30 }),
                (8, 2, Change::LeaderboardGift { stream_id: u(5), user_id: u(1), coins: 30 }),
            ],
        );
        let plan = plan_batch(&b, &[0, 0, 0], &mut PlanInputs::default()).unwrap();
        assert_eq!((plan.applied, plan.skipped), (3, 0));
        assert_eq!(plan.writes[0].collection, "wallets");
        assert_eq!(
            plan.writes[0].statement,
            doc! {"q": {"_id": u(1).to_string(), "position": {"$lt": 7i64}},
            "u": {"$set": {"coins": 10i64, "earnings": 0i64, "held": 0i64, "updatedAt": time(at()), "position": 7i64}},
            "upsert": true}
        );
        assert_eq!(
            plan.writes[1].statement,
            doc! {"q": {"_id": u(5).to_string(), "position": {"$lt": 8i64}},
            "u": {"$inc": {"giftsCoins": 30i64}, "$set": {"position": 8i64}}, "upsert": false}
        );
        assert_eq!(
            plan.writes[2].statement.get_document("q").unwrap(),
            &doc! {"_id": format!("{}|{}", u(5), u(1)), "position": {"$lt": 8i64}}
        );
        // Past the checkpoint only.
        let plan = plan_batch(&b, &[7, 8, 0], &mut PlanInputs::default()).unwrap();
        assert_eq!((plan.applied, plan.skipped, plan.writes.len()), (1, 2, 1));
    }

    #[test]
    fn viewers_count_once_on_live_streams_and_their_writes_come_last() {
        let target = Projection::Streams.current();
        let (stream, viewer) = (u(5), u(2));
        let join = || Change::ViewerJoined { stream_id: stream, viewer_id: viewer };
        let b = batch(
            vec![target],
            vec![
                (9, 0, join()),
                (10, 0, join()),
                (11, 0, Change::ViewerLeft { stream_id: stream, viewer_id: viewer }),
                (12, 0, Change::ViewerLeft { stream_id: stream, viewer_id: viewer }),
            ],
        );
        let mut inputs = PlanInputs { live: HashMap::from([((0u8, stream), true)]), ..PlanInputs::default() };
        let plan = plan_batch(&b, &[0], &mut inputs).unwrap();
        let collections: Vec<&str> = plan.writes.iter().map(|w| w.collection.as_str()).collect();
        assert_eq!(
            collections,
            ["streams", "streams", "stream_viewers", "stream_viewers"],
            "a second join counts nothing"
        );
        let up = &plan.writes[0].statement;
        assert_eq!(
            up.get_document("q").unwrap(),
            &doc! {"_id": stream.to_string(), "position": {"$lt": 9i64}, "isLive": true}
        );
        assert_eq!(up.get_array("u").unwrap().len(), 2, "count up, then the peak");
        let joined = &plan.writes[2].statement;
        assert_eq!(
            joined.get_document("q").unwrap(),
            &doc! {"_id": format!("{stream}|{viewer}"), "position": {"$lt": 9i64}}
        );
        assert_eq!(
            joined.get_document("u").unwrap().get_document("$set").unwrap(),
            &doc! {"present": true, "position": 9i64}
        );
        assert!(!inputs.viewers[&(0, stream, viewer)], "left");

        // Not live (or unknown): a join counts nothing.
        let plan = plan_batch(&b, &[0], &mut PlanInputs::default()).unwrap();
        assert!(plan.writes.is_empty(), "{:?}", plan.writes);
    }

    #[test]
    fn only_a_duplicate_on_id_is_already_applied() {
        assert_eq!(resume_after(&doc! {"ok": 1, "n": 3}).unwrap(), None);
        let on_id = doc! {"ok": 1, "n": 1, "writeErrors": [{"index": 1, "code": 11000, "errmsg": "E11000",
        "keyPattern": {"_id": 1}, "keyValue": {"_id": "a"}}]};
        assert_eq!(resume_after(&on_id).unwrap(), Some(1));
        let on_email = doc! {"ok": 1, "n": 0, "writeErrors": [{"index": 0, "code": 11000, "errmsg": "E11000",
        "keyPattern": {"email": 1}, "keyValue": {"email": "a@b.c"}}]};
        assert!(matches!(resume_after(&on_email), Err(ProjectionError::StoreRefused(_))), "another user holds it");
        let old_server = doc! {"ok": 1, "writeErrors": [{"index": 2, "code": 11000,
        "errmsg": "E11000 duplicate key error collection: db.users index: _id_ dup key: { _id: \"a\" }"}]};
        assert_eq!(resume_after(&old_server).unwrap(), Some(2));
        let other = doc! {"ok": 1, "writeErrors": [{"index": 0, "code": 121, "errmsg": "validation"}]};
        assert!(resume_after(&other).is_err());
        let concern = doc! {"ok": 1, "n": 1, "writeConcernError": {"code": 100, "errmsg": "no"}};
        assert!(matches!(resume_after(&concern), Err(ProjectionError::StoreRefused(_))));
        let timeout = doc! {"ok": 1, "n": 1, "writeConcernError": {"code": 64, "errmsg": "waiting"}};
        assert!(matches!(resume_after(&timeout), Err(ProjectionError::Store(_))), "a timeout may pass");
        let command = doc! {"update": "wallets", "updates": [{"q": 1}, {"q": 2}, {"q": 3}], "ordered": true};
        assert_eq!(
            command_from(&command, 2).unwrap(),
            doc! {"update": "wallets", "updates": [{"q": 3}], "ordered": true}
        );
        assert!(command_from(&command, 3).is_none());
    }

    #[test]
    fn writes_group_by_collection_into_commands_capped_by_statements_and_bytes() {
        let w = |c: &str, n: i32| Write { collection: c.into(), statement: doc! {"q": n} };
        let commands = update_commands(&[w("a", 1), w("b", 2), w("a", 3), w("b", 4)]).unwrap();
        assert_eq!(
            commands,
            vec![
                doc! {"update": "a", "updates": [{"q": 1}, {"q": 3}], "ordered": true},
                doc! {"update": "b", "updates": [{"q": 2}, {"q": 4}], "ordered": true},
            ],
            "one command per collection, its writes in order"
        );
        let many: Vec<Write> = (0..(COMMAND_STATEMENTS_MAX as i32 + 1)).map(|n| w("a", n)).collect();
        assert_eq!(update_commands(&many).unwrap().len(), 2);
        let big = |n: i32| Write { collection: "a".into(), statement: doc! {"q": n, "u": "x".repeat(3 * 1024 * 1024)} };
        let commands = update_commands(&[big(1), big(2), big(3)]).unwrap();
        assert_eq!(commands.len(), 2, "8 MiB a command at most");
        let huge = Write { collection: "a".into(), statement: doc! {"u": "x".repeat(COMMAND_BYTES_MAX)} };
        assert!(matches!(update_commands(&[huge]), Err(ProjectionError::StoreRefused(_))));
    }

    #[test]
    fn inserts_are_insert_if_absent_and_platform_balances_run_from_the_checkpoint() {
        let target = Projection::Ledger.current();
        let posting = |account, seq, coins, balance_after| {
            Change::Posting(Posting {
                account,
                seq,
                event_type: "ledger.gift_sent",
                counterparty: Account::PlatformRevenue,
                coins,
                balance_after,
                created_at: at(),
            })
        };
        let b = batch(
            vec![target],
            vec![
                (10, 0, posting(Account::Wallet(u(1)), 0, -5, Some(95))),
                (10, 0, posting(Account::TransitGifts, 1, 5, None)),
                (11, 0, posting(Account::TransitGifts, 1, 7, None)),
            ],
        );
        let mut inputs =
            PlanInputs { balances: HashMap::from([((0u8, Account::TransitGifts), 100i64)]), ..PlanInputs::default() };
        let plan = plan_batch(&b, &[9], &mut inputs).unwrap();
        let entries: Vec<&Write> = plan.writes.iter().filter(|w| w.collection == "ledger_entries").collect();
        assert_eq!(entries.len(), 3);
        let third = entries[2].statement.clone();
        assert_eq!(third.get_document("q").unwrap(), &doc! {"_id": format!("transit:gifts@{:020}.0001", 11)});
        let set = third.get_document("u").unwrap().get_document("$setOnInsert").unwrap();
        assert_eq!(set.get_i64("balanceAfter").unwrap(), 112);
        assert!(third.get_bool("upsert").unwrap());
        let accounts: Vec<&Write> = plan.writes.iter().filter(|w| w.collection == "ledger_accounts").collect();
        assert_eq!(
            accounts.iter().map(|w| w.statement.clone()).collect::<Vec<_>>(),
            vec![
                doc! {"q": {"_id": format!("wallet:{}", u(1)), "position": {"$lt": 10i64}},
                "u": {"$set": {"balance": 95i64, "position": 10i64}}, "upsert": true},
                doc! {"q": {"_id": "transit:gifts", "position": {"$lt": 11i64}},
                "u": {"$set": {"balance": 112i64, "position": 11i64}}, "upsert": true},
            ]
        );
        assert_eq!(inputs.balances[&(0, Account::TransitGifts)], 112);
    }

    #[test]
    fn a_purchase_takes_its_checkout_session_whichever_came_first() {
        let target = Projection::Transactions.current();
        let tx = |payment: &str| TransactionDoc {
            id: u(3),
            user_id: u(1),
            kind: TxType::Purchase,
            status: TxStatus::Completed,
            coins: 5,
            wallet_after: 5,
            earnings_after: 0,
            held_after: 0,
            metadata: TxMetadata { payment_id: Some(payment.into()), ..TxMetadata::default() },
            created_at: at(),
            position: 4,
        };
        let b = batch(
            vec![target],
            vec![
                (3, 0, Change::TransactionStripeSession { payment_id: "pi_1".into(), session_id: "cs_1".into() }),
                (4, 0, Change::Transaction(tx("pi_1"))),
            ],
        );
        let plan = plan_batch(&b, &[0], &mut PlanInputs::default()).unwrap();
        assert_eq!(
            plan.writes[1].statement,
            doc! {"q": {"metadata.paymentId": "pi_1"},
            "u": {"$set": {"metadata.stripeSessionId": "cs_1"}}, "upsert": false, "multi": true}
        );
        let inserted = plan.writes[2].statement.get_document("u").unwrap().get_document("$setOnInsert").unwrap();
        assert_eq!(inserted.get_document("metadata").unwrap().get_str("stripeSessionId").unwrap(), "cs_1");
        assert_eq!(
            read_transaction(&{
                let mut d = inserted.clone();
                d.insert("_id", u(3).to_string());
                d
            })
            .unwrap()
            .metadata
            .stripe_session_id
            .as_deref(),
            Some("cs_1")
        );
    }

    #[test]
    fn a_payments_stripe_side_is_set_whole_and_reads_back() {
        let target = Projection::StripePayments.current();
        let side = StripeSide {
            package_id: Some("coins_500".into()),
            coins_expected: 500,
            amount_cents: 499,
            currency: Some("usd".into()),
            charge_amount_cents: 499,
            amount_refunded_cents: 100,
            flags: vec!["unknown_package".into()],
        };
        let b = batch(
            vec![target],
            vec![
                (7, 0, Change::StripeState { payment_id: "pi_1".into(), user_id: Some(u(1)), state: side.clone() }),
                (8, 0, Change::StripeState { payment_id: "pi_2".into(), user_id: None, state: StripeSide::default() }),
            ],
        );
        let plan = plan_batch(&b, &[0], &mut PlanInputs::default()).unwrap();
        let first = plan.writes.iter().find(|w| w.statement.get_document("q").unwrap().get_str("_id") == Ok("pi_1"));
        let update = first.expect("an update of pi_1").statement.get_document("u").unwrap().clone();
        let set = update.get_document("$set").unwrap();
        assert_eq!(set.get_str("userId").unwrap(), u(1).to_string());
        assert_eq!(set.get_i64("coinsExpected").unwrap(), 500);
        assert_eq!(set.get_array("flags").unwrap(), &vec![Bson::String("unknown_package".into())]);
        assert!(update.get_document("$setOnInsert").unwrap().get("userId").is_none(), "the user is set, not defaulted");
        let second = plan.writes.iter().find(|w| w.statement.get_document("q").unwrap().get_str("_id") == Ok("pi_2"));
        let update = second.expect("an update of pi_2").statement.get_document("u").unwrap().clone();
        assert_eq!(update.get_document("$setOnInsert").unwrap().get("userId"), None, "no explicit null");
        assert!(update.get_document("$set").unwrap().get("userId").is_none());

        // What an upsert stores reads back as the document.
        let mut stored = set.clone();
        stored.extend(update_defaults());
        stored.insert("_id", "pi_1");
        let doc = read_stripe_payment(&stored).unwrap();
        assert_eq!(doc.stripe, side);
        assert_eq!((doc.payment_id.as_str(), doc.user_id, doc.position), ("pi_1", Some(u(1)), 7));
    }

    fn update_defaults() -> Document {
        doc! {"coinsIssued": 500i64, "coinsReversed": 101i64}
    }
}
