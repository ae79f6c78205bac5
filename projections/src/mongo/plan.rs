//! The MongoDB adapter's logic as pure functions: index definitions, the
//! documents, the guarded write commands a batch becomes, lease and
//! checkpoint updates, and query filters. Unit-tested without a server.
//!
//! Every document keeps `position`, the log position of the last event
//! applied to it, and every update that depends on the current value is
//! filtered on `position < P`: replaying an event (after a crash between
//! the writes and the checkpoint, with no transaction) matches nothing. An
//! upsert whose guard fails tries to insert an existing `_id`, which MongoDB
//! refuses with a duplicate key error (11000): the adapter reads that as
//! "already applied" and goes on with the next write.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use events_schema::{Account, Money, Role};
use mongodb::bson::{Bson, DateTime as BsonDateTime, Document, doc};
use uuid::Uuid;

use crate::ProjectionError;
use crate::change::{Change, ProjectedBatch};
use crate::model::{
    AccountBalance, Collection, LeaderboardEntry, LedgerEntryDoc, PayoutDoc, PayoutStatus, Projection, StreamDoc,
    StripePaymentDoc, StripeSide, TransactionDoc, TransactionFilter, TxMetadata, TxStatus, TxType, UserDoc, WalletDoc,
    parse_role, parse_stream_status, role_str, stream_status_str,
};

pub const CHECKPOINTS: &str = "projector_checkpoints";
pub const LEASES: &str = "projector_leases";
pub const VERSIONS: &str = "projection_versions";
/// Writes in one `update` command, at most (the server's limit is 100,000).
pub const COMMAND_WRITES_MAX: usize = 10_000;
/// MongoDB's duplicate key error.
pub const DUPLICATE_KEY: i32 = 11_000;

type R<T> = Result<T, ProjectionError>;

// ---------------------------------------------------------------------------
// Values

pub fn time(t: DateTime<Utc>) -> Bson {
    Bson::DateTime(BsonDateTime::from_millis(t.timestamp_millis()))
}

pub fn pos(position: u64) -> R<Bson> {
    Ok(Bson::Int64(crate::model::pos_i64(position)?))
}

fn opt_str(v: &Option<String>) -> Bson {
    v.as_ref().map_or(Bson::Null, |s| Bson::String(s.clone()))
}

fn opt_uuid(v: Option<Uuid>) -> Bson {
    v.map_or(Bson::Null, |u| Bson::String(u.to_string()))
}

fn roles(roles: &[Role]) -> Bson {
    Bson::Array(roles.iter().map(|r| Bson::String(role_str(*r).to_string())).collect())
}

// ---------------------------------------------------------------------------
// Indexes: the runbook's, plus what keyset paging needs.

/// One index: its keys, name and options.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexSpec {
    pub name: &'static str,
    pub keys: Document,
    pub unique: bool,
    pub sparse: bool,
}

fn index(name: &'static str, keys: Document) -> IndexSpec {
    IndexSpec { name, keys, unique: false, sparse: false }
}

/// The indexes of a collection.
pub fn indexes(collection: Collection) -> Vec<IndexSpec> {
    match collection {
        Collection::Users => vec![
            IndexSpec { unique: true, ..index("email_1", doc! {"email": 1}) },
            IndexSpec { unique: true, ..index("username_1", doc! {"username": 1}) },
            index("createdAt_-1", doc! {"createdAt": -1}),
        ],
        Collection::Transactions => vec![
            index("userId_1_createdAt_-1", doc! {"userId": 1, "createdAt": -1}),
            index("type_1_status_1", doc! {"type": 1, "status": 1}),
            IndexSpec { sparse: true, ..index("metadata.stripeSessionId_1", doc! {"metadata.stripeSessionId": 1}) },
            IndexSpec { sparse: true, ..index("metadata.paymentId_1", doc! {"metadata.paymentId": 1}) },
            IndexSpec { sparse: true, ..index("metadata.payoutId_1", doc! {"metadata.payoutId": 1}) },
        ],
        Collection::Streams => vec![
            index("hostId_1_status_1", doc! {"hostId": 1, "status": 1}),
            index("isLive_1_startTime_-1", doc! {"isLive": 1, "startTime": -1}),
            index("category_1_viewers_-1", doc! {"category": 1, "viewers": -1}),
            index("isLive_1_viewers_-1__id_-1", doc! {"isLive": 1, "viewers": -1, "_id": -1}),
            index("isLive_1_category_1_viewers_-1__id_-1", doc! {"isLive": 1, "category": 1, "viewers": -1, "_id": -1}),
        ],
        Collection::Payouts => vec![
            index("userId_1_requestedAt_-1__id_-1", doc! {"userId": 1, "requestedAt": -1, "_id": -1}),
            index("status_1_requestedAt_-1__id_-1", doc! {"status": 1, "requestedAt": -1, "_id": -1}),
            index("requestedAt_-1__id_-1", doc! {"requestedAt": -1, "_id": -1}),
        ],
        Collection::LedgerEntries => {
            vec![index("account_1_position_-1_seq_-1", doc! {"account": 1, "position": -1, "seq": -1})]
        }
        Collection::GiftLeaderboards => {
            vec![index("streamId_1_coins_-1_userId_-1", doc! {"streamId": 1, "coins": -1, "userId": -1})]
        }
        Collection::StripePayments => {
            vec![IndexSpec { sparse: true, ..index("stripeSessionId_1", doc! {"stripeSessionId": 1}) }]
        }
        Collection::Wallets | Collection::StripeSessions | Collection::StreamViewers | Collection::LedgerAccounts => {
            vec![]
        }
    }
}

/// The `createIndexes` command of a collection, or `None` when it has no
/// index beyond `_id`. Creating an existing index is a no-op.
pub fn create_indexes_command(collection: Collection, version: u32) -> Option<Document> {
    let specs = indexes(collection);
    if specs.is_empty() {
        return None;
    }
    let indexes: Vec<Bson> = specs
        .into_iter()
        .map(|s| {
            let mut d = doc! {"key": s.keys, "name": s.name};
            if s.unique {
                d.insert("unique", true);
            }
            if s.sparse {
                d.insert("sparse", true);
            }
            Bson::Document(d)
        })
        .collect();
    Some(doc! {"createIndexes": collection.physical_name(version), "indexes": indexes})
}

// ---------------------------------------------------------------------------
// Documents

pub fn user_doc(u: &UserDoc) -> R<Document> {
    Ok(doc! {
        "_id": u.id.to_string(), "email": &u.email, "username": &u.username, "roles": roles(&u.roles),
        "passwordHash": &u.password_hash, "createdAt": time(u.created_at), "position": pos(u.position)?,
    })
}

pub fn transaction_doc(t: &TransactionDoc, stripe_session_id: Option<&String>) -> R<Document> {
    let m = &t.metadata;
    let session = m.stripe_session_id.as_ref().or(stripe_session_id);
    Ok(doc! {
        "_id": t.id.to_string(), "userId": t.user_id.to_string(), "type": t.kind.as_str(),
        "status": t.status.as_str(), "coins": t.coins, "walletAfter": t.wallet_after,
        "earningsAfter": t.earnings_after, "heldAfter": t.held_after,
        "metadata": {
            "paymentId": opt_str(&m.payment_id), "stripeSessionId": opt_str(&session.cloned()),
            "streamId": opt_uuid(m.stream_id), "hostId": opt_uuid(m.host_id), "giftId": opt_str(&m.gift_id),
            "quantity": m.quantity.map_or(Bson::Null, Bson::Int64),
            "giftsCount": m.gifts_count.map_or(Bson::Null, Bson::Int64),
            "payoutId": opt_uuid(m.payout_id), "externalRef": opt_str(&m.external_ref),
            "reason": opt_str(&m.reason), "adminId": opt_uuid(m.admin_id),
        },
        "createdAt": time(t.created_at), "position": pos(t.position)?,
    })
}

pub fn stream_doc(s: &StreamDoc) -> R<Document> {
    Ok(doc! {
        "_id": s.id.to_string(), "hostId": s.host_id.to_string(), "title": &s.title, "category": &s.category,
        "status": stream_status_str(s.status), "isLive": s.is_live, "startTime": time(s.start_time),
        "endTime": s.end_time.map_or(Bson::Null, time), "viewers": s.viewers, "peakViewers": s.peak_viewers,
        "giftsCoins": s.gifts_coins, "viewerIds": [], "position": pos(s.position)?,
    })
}

pub fn payout_doc(p: &PayoutDoc) -> R<Document> {
    Ok(doc! {
        "_id": p.id.to_string(), "userId": p.user_id.to_string(), "coins": p.coins,
        "fiat": {"amount": p.fiat.amount.to_string(), "currency": &p.fiat.currency},
        "destination": &p.destination, "status": p.status.as_str(), "externalRef": opt_str(&p.external_ref),
        "reason": opt_str(&p.reason), "requestedAt": time(p.requested_at),
        "settledAt": p.settled_at.map_or(Bson::Null, time), "position": pos(p.position)?,
    })
}

pub fn entry_doc(e: &LedgerEntryDoc) -> R<Document> {
    Ok(doc! {
        "_id": e.key(), "account": e.account.to_string(), "position": pos(e.position)?, "seq": i64::from(e.seq),
        "eventType": &e.event_type, "counterparty": e.counterparty.to_string(), "coins": e.coins,
        "balanceAfter": e.balance_after, "createdAt": time(e.created_at),
    })
}

/// `_id` of a leaderboard row.
pub fn leaderboard_id(stream_id: Uuid, user_id: Uuid) -> String {
    format!("{stream_id}|{user_id}")
}

// Reading documents back.

fn corrupt(collection: &str, field: &str) -> ProjectionError {
    ProjectionError::corrupt(collection, format!("field {field} missing or mistyped"))
}

fn s<'a>(d: &'a Document, c: &str, f: &str) -> R<&'a str> {
    d.get_str(f).map_err(|_| corrupt(c, f))
}

fn opt_s(d: &Document, f: &str) -> Option<String> {
    d.get_str(f).ok().map(str::to_string)
}

fn int(d: &Document, c: &str, f: &str) -> R<i64> {
    match d.get(f) {
        Some(Bson::Int64(v)) => Ok(*v),
        Some(Bson::Int32(v)) => Ok(i64::from(*v)),
        _ => Err(corrupt(c, f)),
    }
}

fn opt_int(d: &Document, f: &str) -> Option<i64> {
    match d.get(f) {
        Some(Bson::Int64(v)) => Some(*v),
        Some(Bson::Int32(v)) => Some(i64::from(*v)),
        _ => None,
    }
}

fn position(d: &Document, c: &str) -> R<u64> {
    crate::model::pos_u64(c, int(d, c, "position")?)
}

fn id(d: &Document, c: &str, f: &str) -> R<Uuid> {
    Uuid::parse_str(s(d, c, f)?).map_err(|_| corrupt(c, f))
}

fn opt_id(d: &Document, c: &str, f: &str) -> R<Option<Uuid>> {
    opt_s(d, f).map(|v| Uuid::parse_str(&v).map_err(|_| corrupt(c, f))).transpose()
}

fn dt(d: &Document, c: &str, f: &str) -> R<DateTime<Utc>> {
    let ms = d.get_datetime(f).map_err(|_| corrupt(c, f))?.timestamp_millis();
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt(c, f))
}

fn opt_dt(d: &Document, c: &str, f: &str) -> R<Option<DateTime<Utc>>> {
    match d.get(f) {
        None | Some(Bson::Null) => Ok(None),
        Some(_) => dt(d, c, f).map(Some),
    }
}

fn account(d: &Document, c: &str, f: &str) -> R<Account> {
    s(d, c, f)?.parse().map_err(|_| corrupt(c, f))
}

pub fn read_user(d: &Document) -> R<UserDoc> {
    const C: &str = "users";
    let roles = d
        .get_array("roles")
        .map_err(|_| corrupt(C, "roles"))?
        .iter()
        .map(|r| r.as_str().and_then(parse_role).ok_or_else(|| corrupt(C, "roles")))
        .collect::<R<Vec<_>>>()?;
    Ok(UserDoc {
        id: id(d, C, "_id")?,
        email: s(d, C, "email")?.to_string(),
        username: s(d, C, "username")?.to_string(),
        roles,
        password_hash: s(d, C, "passwordHash")?.to_string(),
        created_at: dt(d, C, "createdAt")?,
        position: position(d, C)?,
    })
}

pub fn read_wallet(d: &Document) -> R<WalletDoc> {
    const C: &str = "wallets";
    Ok(WalletDoc {
        user_id: id(d, C, "_id")?,
        coins: int(d, C, "coins")?,
        earnings: int(d, C, "earnings")?,
        held: int(d, C, "held")?,
        updated_at: dt(d, C, "updatedAt")?,
        position: position(d, C)?,
    })
}

pub fn read_transaction(d: &Document) -> R<TransactionDoc> {
    const C: &str = "transactions";
    let m = d.get_document("metadata").map_err(|_| corrupt(C, "metadata"))?;
    let kind = s(d, C, "type")?;
    let status = s(d, C, "status")?;
    Ok(TransactionDoc {
        id: id(d, C, "_id")?,
        user_id: id(d, C, "userId")?,
        kind: TxType::parse(kind).ok_or_else(|| corrupt(C, "type"))?,
        status: TxStatus::parse(status).ok_or_else(|| corrupt(C, "status"))?,
        coins: int(d, C, "coins")?,
        wallet_after: int(d, C, "walletAfter")?,
        earnings_after: int(d, C, "earningsAfter")?,
        held_after: int(d, C, "heldAfter")?,
        metadata: TxMetadata {
            payment_id: opt_s(m, "paymentId"),
            stripe_session_id: opt_s(m, "stripeSessionId"),
            stream_id: opt_id(m, C, "streamId")?,
            host_id: opt_id(m, C, "hostId")?,
            gift_id: opt_s(m, "giftId"),
            quantity: opt_int(m, "quantity"),
            gifts_count: opt_int(m, "giftsCount"),
            payout_id: opt_id(m, C, "payoutId")?,
            external_ref: opt_s(m, "externalRef"),
            reason: opt_s(m, "reason"),
            admin_id: opt_id(m, C, "adminId")?,
        },
        created_at: dt(d, C, "createdAt")?,
        position: position(d, C)?,
    })
}

pub fn read_stream(d: &Document) -> R<StreamDoc> {
    const C: &str = "streams";
    Ok(StreamDoc {
        id: id(d, C, "_id")?,
        host_id: id(d, C, "hostId")?,
        title: s(d, C, "title")?.to_string(),
        category: s(d, C, "category")?.to_string(),
        status: parse_stream_status(s(d, C, "status")?).ok_or_else(|| corrupt(C, "status"))?,
        is_live: d.get_bool("isLive").map_err(|_| corrupt(C, "isLive"))?,
        start_time: dt(d, C, "startTime")?,
        end_time: opt_dt(d, C, "endTime")?,
        viewers: int(d, C, "viewers")?,
        peak_viewers: int(d, C, "peakViewers")?,
        gifts_coins: int(d, C, "giftsCoins")?,
        position: position(d, C)?,
    })
}

pub fn read_payout(d: &Document) -> R<PayoutDoc> {
    const C: &str = "payouts";
    let fiat = d.get_document("fiat").map_err(|_| corrupt(C, "fiat"))?;
    Ok(PayoutDoc {
        id: id(d, C, "_id")?,
        user_id: id(d, C, "userId")?,
        coins: int(d, C, "coins")?,
        fiat: Money {
            amount: s(fiat, C, "amount")?.parse().map_err(|_| corrupt(C, "fiat.amount"))?,
            currency: s(fiat, C, "currency")?.to_string(),
        },
        destination: s(d, C, "destination")?.to_string(),
        status: PayoutStatus::parse(s(d, C, "status")?).ok_or_else(|| corrupt(C, "status"))?,
        external_ref: opt_s(d, "externalRef"),
        reason: opt_s(d, "reason"),
        requested_at: dt(d, C, "requestedAt")?,
        settled_at: opt_dt(d, C, "settledAt")?,
        position: position(d, C)?,
    })
}

pub fn read_entry(d: &Document) -> R<LedgerEntryDoc> {
    const C: &str = "ledger_entries";
    Ok(LedgerEntryDoc {
        account: account(d, C, "account")?,
        position: position(d, C)?,
        seq: u32::try_from(int(d, C, "seq")?).map_err(|_| corrupt(C, "seq"))?,
        event_type: s(d, C, "eventType")?.to_string(),
        counterparty: account(d, C, "counterparty")?,
        coins: int(d, C, "coins")?,
        balance_after: int(d, C, "balanceAfter")?,
        created_at: dt(d, C, "createdAt")?,
    })
}

pub fn read_account(d: &Document) -> R<AccountBalance> {
    const C: &str = "ledger_accounts";
    Ok(AccountBalance { account: account(d, C, "_id")?, balance: int(d, C, "balance")?, position: position(d, C)? })
}

pub fn read_leaderboard(d: &Document) -> R<LeaderboardEntry> {
    const C: &str = "gift_leaderboards";
    Ok(LeaderboardEntry {
        stream_id: id(d, C, "streamId")?,
        user_id: id(d, C, "userId")?,
        coins: int(d, C, "coins")?,
        position: position(d, C)?,
    })
}

pub fn read_stripe_payment(d: &Document) -> R<StripePaymentDoc> {
    const C: &str = "stripe_payments";
    Ok(StripePaymentDoc {
        payment_id: s(d, C, "_id")?.to_string(),
        user_id: opt_id(d, C, "userId")?,
        coins_issued: opt_int(d, "coinsIssued").unwrap_or(0),
        coins_reversed: opt_int(d, "coinsReversed").unwrap_or(0),
        stripe_session_id: opt_s(d, "stripeSessionId"),
        position: position(d, C)?,
        stripe: StripeSide {
            package_id: opt_s(d, "packageId"),
            coins_expected: opt_int(d, "coinsExpected").unwrap_or(0),
            amount_cents: opt_int(d, "amountCents").unwrap_or(0),
            currency: opt_s(d, "currency"),
            charge_amount_cents: opt_int(d, "chargeAmountCents").unwrap_or(0),
            amount_refunded_cents: opt_int(d, "amountRefundedCents").unwrap_or(0),
            flags: d
                .get_array("flags")
                .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
        },
    })
}

/// The update of a payment's Stripe side: every field of the payment
/// aggregate's state, and the user only when the ledger did not set it.
pub fn stripe_state_update(user_id: Option<&Uuid>, state: &StripeSide, p: &Bson) -> Document {
    let mut set = doc! {
        "position": p.clone(),
        "packageId": opt_str(&state.package_id),
        "coinsExpected": state.coins_expected,
        "amountCents": state.amount_cents,
        "currency": opt_str(&state.currency),
        "chargeAmountCents": state.charge_amount_cents,
        "amountRefundedCents": state.amount_refunded_cents,
        "flags": state.flags.iter().map(|f| Bson::String(f.clone())).collect::<Vec<Bson>>(),
    };
    let mut on_insert = doc! {"coinsIssued": 0i64, "coinsReversed": 0i64, "stripeSessionId": Bson::Null};
    match user_id {
        // A pipeline-free upsert cannot say "if null": the user of the
        // Stripe side is the buyer the ledger credits, so setting it is the
        // same value whenever both are known.
        Some(user) => {
            set.insert("userId", user.to_string());
        }
        None => {
            on_insert.insert("userId", Bson::Null);
        }
    }
    doc! {"$set": set, "$setOnInsert": on_insert}
}

/// Stripe payments after `after` (a PaymentIntent id), by id.
pub fn stripe_payments_query(after: Option<&str>) -> (Document, Document) {
    let filter = match after {
        Some(id) => doc! {"_id": {"$gt": id}},
        None => doc! {},
    };
    (filter, doc! {"_id": 1})
}

// ---------------------------------------------------------------------------
// Writes

/// One write of a batch: an `update` statement (`q`, `u`, `upsert`,
/// `multi`) on a collection.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub collection: String,
    pub statement: Document,
}

fn update(collection: &str, q: Document, u: impl Into<Bson>, upsert: bool) -> Write {
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

/// The writes of a batch, in order, for the changes past their target's
/// checkpoint (`checkpoints[i]` for `batch.targets[i]`).
///
/// `sessions` holds the Checkout Sessions known for the purchases' payment
/// ids (read by the adapter beforehand); `balances` the balance, as of the
/// target's checkpoint, of every account whose postings carry no balance.
/// Both are updated as the batch goes.
#[derive(Debug, Default)]
pub struct Plan {
    pub writes: Vec<Write>,
    pub applied: u64,
    pub skipped: u64,
}

pub fn plan_batch(
    batch: &ProjectedBatch,
    checkpoints: &[u64],
    sessions: &mut HashMap<String, String>,
    balances: &mut HashMap<(u8, Account), i64>,
) -> R<Plan> {
    let mut plan = Plan::default();
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
        let p = pos(pc.position)?;
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
            Change::StreamStarted(s) => w.push(insert_if_absent(&name(Collection::Streams), stream_doc(s)?)),
            Change::ViewerJoined { stream_id, viewer_id } => {
                w.push(viewer_write(&name(Collection::Streams), *stream_id, *viewer_id, &p, true))
            }
            Change::ViewerLeft { stream_id, viewer_id } => {
                w.push(viewer_write(&name(Collection::Streams), *stream_id, *viewer_id, &p, false))
            }
            Change::StreamEnded { stream_id, end_time } => w.push(update(
                &name(Collection::Streams),
                guarded(stream_id.to_string(), &p),
                doc! {"$set": {"status": "ended", "isLive": false, "endTime": time(*end_time), "viewers": 0i64,
                "viewerIds": [], "position": p.clone()}},
                false,
            )),
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
                doc! {"$set": {"status": status.as_str(), "externalRef": opt_str(external_ref),
                "reason": opt_str(reason), "settledAt": time(*settled_at), "position": p.clone()}},
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
                "$setOnInsert": {"coinsReversed": 0i64, "stripeSessionId": Bson::Null}},
                true,
            )),
            Change::StripeReversed { payment_id, user_id, coins } => w.push(update(
                &name(Collection::StripePayments),
                guarded(payment_id.as_str(), &p),
                doc! {"$inc": {"coinsReversed": coins}, "$set": {"userId": user_id.to_string(), "position": p.clone()},
                "$setOnInsert": {"coinsIssued": 0i64, "stripeSessionId": Bson::Null}},
                true,
            )),
            Change::StripeSession { payment_id, session_id } => w.push(update(
                &name(Collection::StripePayments),
                guarded(payment_id.as_str(), &p),
                doc! {"$set": {"stripeSessionId": session_id, "position": p.clone()},
                "$setOnInsert": {"coinsIssued": 0i64, "coinsReversed": 0i64, "userId": Bson::Null}},
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
        let p = pos(*position)?;
        plan.writes.push(update(
            &Collection::LedgerAccounts.physical_name(target.version),
            guarded(key.1.to_string(), &p),
            doc! {"$set": {"balance": balance, "position": p.clone()}},
            true,
        ));
    }
    Ok(plan)
}

/// Add (or remove) a viewer if absent (present), in one pipeline update:
/// `viewers` is the size of the set, `peakViewers` its maximum, and the
/// position moves only when the set changes, as in the embedded store.
fn viewer_write(collection: &str, stream_id: Uuid, viewer_id: Uuid, p: &Bson, join: bool) -> Write {
    let v = viewer_id.to_string();
    let present = doc! {"$in": [&v, {"$ifNull": ["$viewerIds", []]}]};
    let (unchanged, changed) = if join {
        (Bson::Boolean(true), doc! {"$concatArrays": [{"$ifNull": ["$viewerIds", []]}, [&v]]})
    } else {
        (Bson::Boolean(false), doc! {"$setDifference": [{"$ifNull": ["$viewerIds", []]}, [&v]]})
    };
    // For a join nothing changes when present; for a leave when absent.
    let no_change = doc! {"$eq": ["$_present", unchanged]};
    let pipeline = vec![
        doc! {"$set": {"_present": present}},
        doc! {"$set": {
            "viewerIds": {"$cond": [no_change.clone(), "$viewerIds", changed]},
            "position": {"$cond": [no_change, "$position", p.clone()]},
        }},
        doc! {"$set": {"viewers": {"$size": "$viewerIds"}}},
        doc! {"$set": {"peakViewers": {"$max": ["$peakViewers", "$viewers"]}}},
        doc! {"$unset": "_present"},
    ];
    let mut q = guarded(stream_id.to_string(), p);
    if join {
        q.insert("isLive", true);
    }
    update(collection, q, Bson::Array(pipeline.into_iter().map(Bson::Document).collect()), false)
}

/// Groups consecutive writes on one collection into ordered `update`
/// commands of at most `COMMAND_WRITES_MAX` statements.
pub fn update_commands(writes: &[Write]) -> Vec<Document> {
    let mut commands = Vec::new();
    let mut start = 0;
    while start < writes.len() {
        let collection = &writes[start].collection;
        let mut end = start + 1;
        while end < writes.len() && end - start < COMMAND_WRITES_MAX && writes[end].collection == *collection {
            end += 1;
        }
        let updates: Vec<Bson> = writes[start..end].iter().map(|w| Bson::Document(w.statement.clone())).collect();
        commands.push(doc! {"update": collection, "updates": updates, "ordered": true});
        start = end;
    }
    commands
}

/// After an ordered `update` command: `Ok(None)` when every statement ran,
/// `Ok(Some(i))` when statement `i` hit a duplicate key (an upsert whose
/// guard found the document already at or past the event: already applied;
/// the statements after `i` must be sent again), an error otherwise.
pub fn resume_after(reply: &Document) -> R<Option<usize>> {
    let Ok(errors) = reply.get_array("writeErrors") else { return Ok(None) };
    let Some(Bson::Document(first)) = errors.first() else { return Ok(None) };
    let code = first.get_i32("code").unwrap_or(0);
    let index = first.get_i32("index").ok().and_then(|i| usize::try_from(i).ok());
    match (code, index) {
        (DUPLICATE_KEY, Some(i)) => Ok(Some(i)),
        _ => Err(ProjectionError::Store(format!("write error: {first}"))),
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

/// The checkpoint moves forward only.
pub fn checkpoint_write(projection: Projection, version: u32, to_position: u64, now: DateTime<Utc>) -> R<Write> {
    let key = crate::model::ProjectionVersion::new(projection, version).key();
    Ok(update(
        CHECKPOINTS,
        doc! {"_id": key},
        doc! {"$max": {"position": pos(to_position)?}, "$set": {"updatedAt": time(now)},
        "$setOnInsert": {"projection": projection.name(), "version": i64::from(version)}},
        true,
    ))
}

/// The lease is taken when free, expired, or already ours. A lease held by
/// another matches nothing, and the upsert then fails on the duplicate
/// `_id`: not granted.
pub fn lease_filter(key: &str, owner: &str, now_ms: i64) -> Document {
    doc! {"_id": key, "$or": [{"owner": owner}, {"expiresAt": {"$lte": now_ms}}]}
}

pub fn lease_update(owner: &str, expires_at_ms: i64) -> Document {
    doc! {"$set": {"owner": owner, "expiresAt": expires_at_ms}}
}

/// Whether a deployment runs multi-document transactions: a replica set
/// member or a mongos, with sessions (`hello`'s answer).
pub fn supports_transactions(hello: &Document) -> bool {
    let sessions = hello.contains_key("logicalSessionTimeoutMinutes");
    let replica_set = hello.get_str("setName").is_ok();
    let mongos = hello.get_str("msg").is_ok_and(|m| m == "isdbgrid");
    sessions && (replica_set || mongos)
}

// ---------------------------------------------------------------------------
// Runbook names after a switch

/// What holds a runbook name (`users`, ...) now, from a `listCollections`
/// reply filtered on that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameHolder {
    Nothing,
    View,
    Collection,
}

/// Reads a `listCollections` reply (`{cursor: {firstBatch: [{type}]}}`).
pub fn name_holder(reply: &Document) -> NameHolder {
    let first = reply.get_document("cursor").ok().and_then(|c| c.get_array("firstBatch").ok()).and_then(|b| b.first());
    match first.and_then(Bson::as_document).and_then(|d| d.get_str("type").ok()) {
        None => NameHolder::Nothing,
        Some("view") => NameHolder::View,
        Some(_) => NameHolder::Collection,
    }
}

/// The commands that make runbook name `base` a read-only view of
/// `target`, the active version's collection, so that the admin panel,
/// which reads the runbook's names, reads the serving version.
///
/// - The active version has the name itself (version 1): nothing.
/// - The name is free (version 1 dropped): `create` the view.
/// - It is a view (an earlier switch): `drop` it and `create` it again.
///   (`collMod` would re-point it in one step, but the runbook's database
///   user has `readWrite`, which does not grant `collMod`.)
/// - A collection holds it: nothing while version 1 is `kept` (its
///   checkpoint exists: `--keep-old`; the panel reads it until it is
///   dropped); otherwise it is left over from a write after version 1 was
///   dropped (its runner retiring), and is replaced.
pub fn runbook_view_commands(base: &str, target: &str, holder: NameHolder, kept: bool) -> Vec<Document> {
    let create = doc! {"create": base, "viewOn": target, "pipeline": []};
    match holder {
        _ if base == target => vec![],
        NameHolder::Nothing => vec![create],
        NameHolder::Collection if kept => vec![],
        NameHolder::View | NameHolder::Collection => vec![doc! {"drop": base}, create],
    }
}

// ---------------------------------------------------------------------------
// Queries

/// Below every real sort key, for the first page of a descending list.
pub const TOP_ID: &str = "\u{10ffff}";

/// A descending keyset condition: `(k, _id) < (value, id)`.
fn before(field: &str, value: Bson, id_field: &str, id: &str) -> Document {
    doc! {"$or": [
        {field: {"$lt": value.clone()}},
        {field: value, id_field: {"$lt": id}},
    ]}
}

/// A user's transactions after a cursor `(createdAt ms, _id)`, and the sort.
pub fn transactions_query(
    user_id: Uuid,
    filter: TransactionFilter,
    after: Option<(i64, &str)>,
) -> (Document, Document) {
    let mut q = doc! {"userId": user_id.to_string()};
    if let Some(kind) = filter.kind {
        q.insert("type", kind.as_str());
    }
    if let Some(status) = filter.status {
        q.insert("status", status.as_str());
    }
    if let Some((ms, id)) = after {
        q.extend(before("createdAt", Bson::DateTime(BsonDateTime::from_millis(ms)), "_id", id));
    }
    (q, doc! {"createdAt": -1, "_id": -1})
}

/// Live streams after a cursor `(viewers, _id)`, most viewers first.
pub fn live_streams_query(category: Option<&str>, after: Option<(i64, &str)>) -> (Document, Document) {
    let mut q = doc! {"isLive": true};
    if let Some(category) = category {
        q.insert("category", category);
    }
    if let Some((viewers, id)) = after {
        q.extend(before("viewers", Bson::Int64(viewers), "_id", id));
    }
    (q, doc! {"viewers": -1, "_id": -1})
}

pub fn leaderboard_query(stream_id: Uuid, after: Option<(i64, &str)>) -> (Document, Document) {
    let mut q = doc! {"streamId": stream_id.to_string()};
    if let Some((coins, user)) = after {
        q.extend(before("coins", Bson::Int64(coins), "userId", user));
    }
    (q, doc! {"coins": -1, "userId": -1})
}

/// Payouts (of a user, or of a status, or all) after `(requestedAt ms, _id)`.
pub fn payouts_query(
    user_id: Option<Uuid>,
    status: Option<PayoutStatus>,
    after: Option<(i64, &str)>,
) -> (Document, Document) {
    let mut q = Document::new();
    if let Some(user) = user_id {
        q.insert("userId", user.to_string());
    }
    if let Some(status) = status {
        q.insert("status", status.as_str());
    }
    if let Some((ms, id)) = after {
        q.extend(before("requestedAt", Bson::DateTime(BsonDateTime::from_millis(ms)), "_id", id));
    }
    (q, doc! {"requestedAt": -1, "_id": -1})
}

/// An account's entries after `(position, seq)`, newest first.
pub fn entries_query(account: Account, after: Option<(i64, i64)>) -> (Document, Document) {
    let mut q = doc! {"account": account.to_string()};
    if let Some((position, seq)) = after {
        q.extend(doc! {"$or": [
            {"position": {"$lt": position}},
            {"position": position, "seq": {"$lt": seq}},
        ]});
    }
    (q, doc! {"position": -1, "seq": -1})
}

/// The last entry of an account at or before a position: its balance is
/// the account's balance there.
pub fn balance_at_query(account: Account, position: u64) -> R<(Document, Document)> {
    Ok((doc! {"account": account.to_string(), "position": {"$lte": pos(position)?}}, doc! {"position": -1, "seq": -1}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runbook_names_become_views_of_the_active_version_where_free() {
        let reply = |batch: Vec<Document>| doc! {"cursor": {"firstBatch": batch, "id": 0i64}, "ok": 1};
        assert_eq!(name_holder(&reply(vec![])), NameHolder::Nothing);
        assert_eq!(name_holder(&reply(vec![doc! {"name": "users", "type": "view"}])), NameHolder::View);
        assert_eq!(name_holder(&reply(vec![doc! {"name": "users", "type": "collection"}])), NameHolder::Collection);

        let create = doc! {"create": "users", "viewOn": "users__v2", "pipeline": []};
        let drop = doc! {"drop": "users"};
        assert_eq!(runbook_view_commands("users", "users__v2", NameHolder::Nothing, false), vec![create.clone()]);
        assert_eq!(
            runbook_view_commands("users", "users__v2", NameHolder::View, false),
            vec![drop.clone(), create.clone()],
            "re-pointed without collMod"
        );
        assert!(runbook_view_commands("users", "users__v2", NameHolder::Collection, true).is_empty(), "1 kept");
        assert_eq!(
            runbook_view_commands("users", "users__v2", NameHolder::Collection, false),
            vec![drop, create],
            "left over from a late write"
        );
        assert!(runbook_view_commands("users", "users", NameHolder::Collection, true).is_empty(), "1 active");
        assert!(runbook_view_commands("users", "users", NameHolder::Nothing, false).is_empty(), "1 active");
    }
    use crate::change::{PositionedChange, Posting};
    use crate::model::ProjectionVersion;

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
    fn indexes_are_the_runbooks() {
        let users = create_indexes_command(Collection::Users, 1).unwrap();
        assert_eq!(
            users,
            doc! {"createIndexes": "users", "indexes": [
                {"key": {"email": 1}, "name": "email_1", "unique": true},
                {"key": {"username": 1}, "name": "username_1", "unique": true},
                {"key": {"createdAt": -1}, "name": "createdAt_-1"},
            ]}
        );
        let txs = create_indexes_command(Collection::Transactions, 1).unwrap();
        let specs = txs.get_array("indexes").unwrap();
        assert_eq!(specs[0].as_document().unwrap().get_document("key").unwrap(), &doc! {"userId": 1, "createdAt": -1});
        assert_eq!(specs[1].as_document().unwrap().get_document("key").unwrap(), &doc! {"type": 1, "status": 1});
        assert_eq!(
            specs[2].as_document().unwrap(),
            &doc! {"key": {"metadata.stripeSessionId": 1}, "name": "metadata.stripeSessionId_1", "sparse": true}
        );
        let streams = indexes(Collection::Streams);
        let keys: Vec<&Document> = streams.iter().map(|s| &s.keys).collect();
        assert_eq!(
            keys[..3],
            [
                &doc! {"hostId": 1, "status": 1},
                &doc! {"isLive": 1, "startTime": -1},
                &doc! {"category": 1, "viewers": -1}
            ]
        );
        // A new version's indexes go on its own collection.
        assert_eq!(
            create_indexes_command(Collection::Streams, 2).unwrap().get_str("createIndexes").unwrap(),
            "streams__v2"
        );
        assert!(create_indexes_command(Collection::Wallets, 1).is_none());
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
        let plan = plan_batch(&b, &[0, 0, 0], &mut HashMap::new(), &mut HashMap::new()).unwrap();
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
        let plan = plan_batch(&b, &[7, 8, 0], &mut HashMap::new(), &mut HashMap::new()).unwrap();
        assert_eq!((plan.applied, plan.skipped, plan.writes.len()), (1, 2, 1));
    }

    #[test]
    fn viewer_join_is_a_pipeline_that_adds_if_absent_and_counts() {
        let b = batch(
            vec![Projection::Streams.current()],
            vec![(9, 0, Change::ViewerJoined { stream_id: u(5), viewer_id: u(2) })],
        );
        let plan = plan_batch(&b, &[0], &mut HashMap::new(), &mut HashMap::new()).unwrap();
        let s = &plan.writes[0].statement;
        assert_eq!(
            s.get_document("q").unwrap(),
            &doc! {"_id": u(5).to_string(), "position": {"$lt": 9i64}, "isLive": true}
        );
        let pipeline = s.get_array("u").unwrap();
        assert_eq!(pipeline.len(), 5);
        assert_eq!(
            pipeline[0].as_document().unwrap(),
            &doc! {"$set": {"_present": {"$in": [u(2).to_string(), {"$ifNull": ["$viewerIds", []]}]}}}
        );
        assert_eq!(pipeline[2].as_document().unwrap(), &doc! {"$set": {"viewers": {"$size": "$viewerIds"}}});
        assert_eq!(
            pipeline[3].as_document().unwrap(),
            &doc! {"$set": {"peakViewers": {"$max": ["$peakViewers", "$viewers"]}}}
        );
        assert!(!s.get_bool("upsert").unwrap());
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
        let mut balances = HashMap::from([((0u8, Account::TransitGifts), 100i64)]);
        let plan = plan_batch(&b, &[9], &mut HashMap::new(), &mut balances).unwrap();
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
        assert_eq!(balances[&(0, Account::TransitGifts)], 112);
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
        let plan = plan_batch(&b, &[0], &mut HashMap::new(), &mut HashMap::new()).unwrap();
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
        let plan = plan_batch(&b, &[0], &mut HashMap::new(), &mut HashMap::new()).unwrap();
        let first = plan.writes.iter().find(|w| w.statement.get_document("q").unwrap().get_str("_id") == Ok("pi_1"));
        let update = first.expect("an update of pi_1").statement.get_document("u").unwrap().clone();
        let set = update.get_document("$set").unwrap();
        assert_eq!(set.get_str("userId").unwrap(), u(1).to_string());
        assert_eq!(set.get_i64("coinsExpected").unwrap(), 500);
        assert_eq!(set.get_array("flags").unwrap(), &vec![Bson::String("unknown_package".into())]);
        assert!(update.get_document("$setOnInsert").unwrap().get("userId").is_none(), "the user is set, not defaulted");
        let second = plan.writes.iter().find(|w| w.statement.get_document("q").unwrap().get_str("_id") == Ok("pi_2"));
        let update = second.expect("an update of pi_2").statement.get_document("u").unwrap().clone();
        assert_eq!(update.get_document("$setOnInsert").unwrap().get("userId"), Some(&Bson::Null));
        assert!(update.get_document("$set").unwrap().get("userId").is_none());

        // What an upsert stores reads back as the document.
        let mut stored = set.clone();
        stored.extend(update_defaults());
        stored.insert("_id", "pi_1");
        let doc = read_stripe_payment(&stored).unwrap();
        assert_eq!(doc.stripe, side);
        assert_eq!((doc.payment_id.as_str(), doc.user_id, doc.position), ("pi_1", Some(u(1)), 7));
        assert_eq!(stripe_payments_query(Some("pi_1")), (doc! {"_id": {"$gt": "pi_1"}}, doc! {"_id": 1}));
    }

    fn update_defaults() -> Document {
        doc! {"coinsIssued": 500i64, "coinsReversed": 101i64, "stripeSessionId": Bson::Null}
    }

    #[test]
    fn documents_read_back_as_written() {
        let user = UserDoc {
            id: u(1),
            email: "a@b.c".into(),
            username: "a".into(),
            roles: vec![Role::User, Role::Ops],
            password_hash: "h".into(),
            created_at: at(),
            position: 3,
        };
        assert_eq!(read_user(&user_doc(&user).unwrap()).unwrap(), user);
        let stream = StreamDoc {
            id: u(5),
            host_id: u(1),
            title: "t".into(),
            category: "music".into(),
            status: events_schema::StreamStatus::Ended,
            is_live: false,
            start_time: at(),
            end_time: Some(at()),
            viewers: 0,
            peak_viewers: 4,
            gifts_coins: 9,
            position: 12,
        };
        assert_eq!(read_stream(&stream_doc(&stream).unwrap()).unwrap(), stream);
        let payout = PayoutDoc {
            id: u(7),
            user_id: u(1),
            coins: 1_234,
            fiat: Money { amount: "12.34".parse().unwrap(), currency: "usd".into() },
            destination: "acct".into(),
            status: PayoutStatus::Paid,
            external_ref: Some("po".into()),
            reason: None,
            requested_at: at(),
            settled_at: Some(at()),
            position: 20,
        };
        let d = payout_doc(&payout).unwrap();
        assert_eq!(d.get_document("fiat").unwrap(), &doc! {"amount": "12.34", "currency": "usd"});
        assert_eq!(read_payout(&d).unwrap(), payout);
        let entry = LedgerEntryDoc {
            account: Account::PlatformRevenue,
            position: 4,
            seq: 3,
            event_type: "ledger.gifts_received".into(),
            counterparty: Account::TransitGifts,
            coins: 3,
            balance_after: 10,
            created_at: at(),
        };
        assert_eq!(read_entry(&entry_doc(&entry).unwrap()).unwrap(), entry);
    }

    #[test]
    fn duplicate_keys_resume_after_the_statement_other_errors_fail() {
        assert_eq!(resume_after(&doc! {"ok": 1, "n": 3}).unwrap(), None);
        let dup = doc! {"ok": 1, "n": 1, "writeErrors": [{"index": 1, "code": 11000, "errmsg": "E11000"}]};
        assert_eq!(resume_after(&dup).unwrap(), Some(1));
        let other = doc! {"ok": 1, "writeErrors": [{"index": 0, "code": 121, "errmsg": "validation"}]};
        assert!(resume_after(&other).is_err());
        let command = doc! {"update": "wallets", "updates": [{"q": 1}, {"q": 2}, {"q": 3}], "ordered": true};
        assert_eq!(
            command_from(&command, 2).unwrap(),
            doc! {"update": "wallets", "updates": [{"q": 3}], "ordered": true}
        );
        assert!(command_from(&command, 3).is_none());
    }

    #[test]
    fn writes_group_into_ordered_commands_per_collection_run() {
        let w = |c: &str, n: i32| Write { collection: c.into(), statement: doc! {"q": n} };
        let commands = update_commands(&[w("a", 1), w("a", 2), w("b", 3), w("a", 4)]);
        assert_eq!(
            commands,
            vec![
                doc! {"update": "a", "updates": [{"q": 1}, {"q": 2}], "ordered": true},
                doc! {"update": "b", "updates": [{"q": 3}], "ordered": true},
                doc! {"update": "a", "updates": [{"q": 4}], "ordered": true},
            ]
        );
        let many: Vec<Write> = (0..(COMMAND_WRITES_MAX as i32 + 1)).map(|n| w("a", n)).collect();
        assert_eq!(update_commands(&many).len(), 2);
    }

    #[test]
    fn leases_checkpoints_and_transactions_support() {
        assert_eq!(
            lease_filter("projector", "a", 1_000),
            doc! {"_id": "projector", "$or": [{"owner": "a"}, {"expiresAt": {"$lte": 1_000i64}}]}
        );
        assert_eq!(lease_update("a", 6_000), doc! {"$set": {"owner": "a", "expiresAt": 6_000i64}});
        let c = checkpoint_write(Projection::Users, 2, 42, at()).unwrap();
        assert_eq!(c.collection, CHECKPOINTS);
        assert_eq!(c.statement.get_document("q").unwrap(), &doc! {"_id": "users@2"});
        assert_eq!(c.statement.get_document("u").unwrap().get_document("$max").unwrap(), &doc! {"position": 42i64});
        assert!(supports_transactions(&doc! {"setName": "rs0", "logicalSessionTimeoutMinutes": 30}));
        assert!(supports_transactions(&doc! {"msg": "isdbgrid", "logicalSessionTimeoutMinutes": 30}));
        assert!(!supports_transactions(&doc! {"isWritablePrimary": true, "logicalSessionTimeoutMinutes": 30}));
    }

    #[test]
    fn query_filters_are_keyset_on_the_sort_key_and_id() {
        let filter = TransactionFilter { kind: Some(TxType::GiftSent), status: Some(TxStatus::Completed) };
        let (q, sort) = transactions_query(u(1), filter, Some((1_000, "abc")));
        let t = Bson::DateTime(BsonDateTime::from_millis(1_000));
        assert_eq!(
            q,
            doc! {"userId": u(1).to_string(), "type": "gift_sent", "status": "completed",
            "$or": [{"createdAt": {"$lt": t.clone()}}, {"createdAt": t, "_id": {"$lt": "abc"}}]}
        );
        assert_eq!(sort, doc! {"createdAt": -1, "_id": -1});
        let (q, sort) = live_streams_query(Some("music"), None);
        assert_eq!((q, sort), (doc! {"isLive": true, "category": "music"}, doc! {"viewers": -1, "_id": -1}));
        let (q, _) = entries_query(Account::TransitGifts, Some((5, 1)));
        assert_eq!(
            q,
            doc! {"account": "transit:gifts", "$or": [{"position": {"$lt": 5i64}}, {"position": 5i64, "seq": {"$lt": 1i64}}]}
        );
        let (q, _) = payouts_query(None, Some(PayoutStatus::Pending), None);
        assert_eq!(q, doc! {"status": "pending"});
    }
}
