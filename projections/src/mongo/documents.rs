//! The documents the MongoDB adapter stores and reads back: the values
//! (times to the millisecond, positions as Int64), one builder and one
//! reader per document type. Readers accept what MongoDB may hold for a
//! whole number (Int32, Int64, a Double or Decimal128 without a fraction,
//! written by hand or by another driver) and refuse anything else with a
//! `Corrupt` error naming the field, never a default.

use chrono::{DateTime, Utc};
use events_schema::{Account, Money, Role};
use mongodb::bson::{Bson, DateTime as BsonDateTime, Document, doc};
use uuid::Uuid;

use crate::ProjectionError;
use crate::model::{
    AccountBalance, AdjustmentDoc, AdjustmentStatus, DayTotals, LeaderboardEntry, LedgerDayDoc, LedgerEntryDoc,
    PayoutDoc, PayoutStatus, StreamDoc, StripePaymentDoc, StripeSide, TransactionDoc, TxMetadata, TxStatus, TxType,
    UserDoc, WalletDoc, parse_role, parse_stream_status, role_str, stream_status_str,
};

pub(crate) type R<T> = Result<T, ProjectionError>;

// ---------------------------------------------------------------------------
// Values

pub fn time(t: DateTime<Utc>) -> Bson {
    Bson::DateTime(BsonDateTime::from_millis(t.timestamp_millis()))
}

pub fn position_value(position: u64) -> R<Bson> {
    Ok(Bson::Int64(crate::model::pos_i64(position)?))
}

pub(crate) fn nullable_string(v: &Option<String>) -> Bson {
    v.as_ref().map_or(Bson::Null, |s| Bson::String(s.clone()))
}

pub(crate) fn roles(roles: &[Role]) -> Bson {
    Bson::Array(roles.iter().map(|r| Bson::String(role_str(*r).to_string())).collect())
}

// ---------------------------------------------------------------------------
// Documents

pub fn user_doc(u: &UserDoc) -> R<Document> {
    Ok(doc! {
        "_id": u.id.to_string(), "email": &u.email, "username": &u.username, "roles": roles(&u.roles),
        "passwordHash": &u.password_hash, "createdAt": time(u.created_at), "position": position_value(u.position)?,
    })
}

pub fn transaction_doc(t: &TransactionDoc, stripe_session_id: Option<&String>) -> R<Document> {
    let m = &t.metadata;
    let session = m.stripe_session_id.as_ref().or(stripe_session_id);
    // Only the fields that hold a value: the sparse indexes on
    // `metadata.stripeSessionId`, `metadata.paymentId` and
    // `metadata.payoutId` skip a missing field, not an explicit null.
    let mut metadata = Document::new();
    let strings = [
        ("paymentId", m.payment_id.clone()),
        ("stripeSessionId", session.cloned()),
        ("streamId", m.stream_id.map(|u| u.to_string())),
        ("hostId", m.host_id.map(|u| u.to_string())),
        ("giftId", m.gift_id.clone()),
        ("payoutId", m.payout_id.map(|u| u.to_string())),
        ("externalRef", m.external_ref.clone()),
        ("reason", m.reason.clone()),
        ("adminId", m.admin_id.map(|u| u.to_string())),
    ];
    for (field, value) in strings {
        if let Some(value) = value {
            metadata.insert(field, value);
        }
    }
    for (field, value) in [("quantity", m.quantity), ("giftsCount", m.gifts_count)] {
        if let Some(value) = value {
            metadata.insert(field, value);
        }
    }
    Ok(doc! {
        "_id": t.id.to_string(), "userId": t.user_id.to_string(), "type": t.kind.as_str(),
        "status": t.status.as_str(), "coins": t.coins, "walletAfter": t.wallet_after,
        "earningsAfter": t.earnings_after, "heldAfter": t.held_after,
        "metadata": metadata,
        "createdAt": time(t.created_at), "position": position_value(t.position)?,
    })
}

pub fn stream_doc(s: &StreamDoc) -> R<Document> {
    Ok(doc! {
        "_id": s.id.to_string(), "hostId": s.host_id.to_string(), "title": &s.title, "category": &s.category,
        "status": stream_status_str(s.status), "isLive": s.is_live, "startTime": time(s.start_time),
        "endTime": s.end_time.map_or(Bson::Null, time), "viewers": s.viewers, "peakViewers": s.peak_viewers,
        "giftsCoins": s.gifts_coins, "position": position_value(s.position)?,
    })
}

pub fn payout_doc(p: &PayoutDoc) -> R<Document> {
    Ok(doc! {
        "_id": p.id.to_string(), "userId": p.user_id.to_string(), "coins": p.coins,
        "fiat": {"amount": p.fiat.amount.to_string(), "currency": &p.fiat.currency},
        "destination": &p.destination, "status": p.status.as_str(), "externalRef": nullable_string(&p.external_ref),
        "reason": nullable_string(&p.reason), "requestedAt": time(p.requested_at),
        "settledAt": p.settled_at.map_or(Bson::Null, time), "position": position_value(p.position)?,
    })
}

pub fn adjustment_doc(a: &AdjustmentDoc) -> R<Document> {
    Ok(doc! {
        "_id": a.id.to_string(), "userId": a.user_id.to_string(), "coins": a.coins, "reason": &a.reason,
        "status": a.status.as_str(), "proposedBy": a.proposed_by.to_string(),
        "decidedBy": a.decided_by.map_or(Bson::Null, |u| Bson::String(u.to_string())),
        "decisionReason": nullable_string(&a.decision_reason), "proposedAt": time(a.proposed_at),
        "decidedAt": a.decided_at.map_or(Bson::Null, time), "position": position_value(a.position)?,
    })
}

pub fn read_adjustment(d: &Document) -> R<AdjustmentDoc> {
    const C: &str = "adjustments";
    Ok(AdjustmentDoc {
        id: uuid_field(d, C, "_id")?,
        user_id: uuid_field(d, C, "userId")?,
        coins: whole_number_field(d, C, "coins")?,
        reason: required_string(d, C, "reason")?.to_string(),
        status: AdjustmentStatus::parse(required_string(d, C, "status")?).ok_or_else(|| corrupt(C, "status"))?,
        proposed_by: uuid_field(d, C, "proposedBy")?,
        decided_by: optional_uuid(d, C, "decidedBy")?,
        decision_reason: optional_string(d, "decisionReason"),
        proposed_at: date_time(d, C, "proposedAt")?,
        decided_at: optional_date_time(d, C, "decidedAt")?,
        position: position(d, C)?,
    })
}

pub fn entry_doc(e: &LedgerEntryDoc) -> R<Document> {
    Ok(doc! {
        "_id": e.key(), "account": e.account.to_string(), "position": position_value(e.position)?, "seq": i64::from(e.seq),
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

fn required_string<'a>(d: &'a Document, c: &str, f: &str) -> R<&'a str> {
    d.get_str(f).map_err(|_| corrupt(c, f))
}

/// A string field that may be absent (or null, as older builds wrote it).
fn optional_string(d: &Document, f: &str) -> Option<String> {
    d.get_str(f).ok().map(str::to_string)
}

/// A whole number as MongoDB may hold it: Int32, Int64, or a Double or
/// Decimal128 without a fraction (a value edited by hand in a shell that
/// writes numbers as doubles). `Ok(None)` when absent; anything else (a
/// fraction, a string, out of range) is an error, never a default.
pub fn whole_number(value: Option<&Bson>) -> Result<Option<i64>, String> {
    match value {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Int32(v)) => Ok(Some(i64::from(*v))),
        Some(Bson::Int64(v)) => Ok(Some(*v)),
        Some(Bson::Double(v)) => whole_double(*v).map(Some).ok_or_else(|| format!("{v} is not a whole number")),
        Some(Bson::Decimal128(v)) => {
            let text = v.to_string();
            text.parse::<i64>().map(Some).map_err(|_| format!("{text} is not a whole number"))
        }
        Some(other) => Err(format!("{other} is not a number")),
    }
}

/// The integer a double holds exactly, when it holds one in the range
/// where doubles are exact (|v| < 2^53).
fn whole_double(v: f64) -> Option<i64> {
    const EXACT_MAX: f64 = 9_007_199_254_740_992.0;
    const EXACT_MIN: f64 = -9_007_199_254_740_992.0;
    if !v.is_finite() || v.trunc() != v || !(EXACT_MIN..=EXACT_MAX).contains(&v) {
        return None;
    }
    // Exact: a whole double within 2^53 converts without rounding.
    #[allow(clippy::cast_possible_truncation)]
    Some(v as i64)
}

fn whole_number_field(d: &Document, c: &str, f: &str) -> R<i64> {
    whole_number(d.get(f))
        .map_err(|reason| ProjectionError::corrupt(c, format!("field {f}: {reason}")))?
        .ok_or_else(|| corrupt(c, f))
}

fn optional_whole_number(d: &Document, c: &str, f: &str) -> R<Option<i64>> {
    whole_number(d.get(f)).map_err(|reason| ProjectionError::corrupt(c, format!("field {f}: {reason}")))
}

fn position(d: &Document, c: &str) -> R<u64> {
    crate::model::pos_u64(c, whole_number_field(d, c, "position")?)
}

fn uuid_field(d: &Document, c: &str, f: &str) -> R<Uuid> {
    Uuid::parse_str(required_string(d, c, f)?).map_err(|_| corrupt(c, f))
}

fn optional_uuid(d: &Document, c: &str, f: &str) -> R<Option<Uuid>> {
    optional_string(d, f).map(|v| Uuid::parse_str(&v).map_err(|_| corrupt(c, f))).transpose()
}

fn date_time(d: &Document, c: &str, f: &str) -> R<DateTime<Utc>> {
    let ms = d.get_datetime(f).map_err(|_| corrupt(c, f))?.timestamp_millis();
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt(c, f))
}

fn optional_date_time(d: &Document, c: &str, f: &str) -> R<Option<DateTime<Utc>>> {
    match d.get(f) {
        None | Some(Bson::Null) => Ok(None),
        Some(_) => date_time(d, c, f).map(Some),
    }
}

fn account(d: &Document, c: &str, f: &str) -> R<Account> {
    required_string(d, c, f)?.parse().map_err(|_| corrupt(c, f))
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
        id: uuid_field(d, C, "_id")?,
        email: required_string(d, C, "email")?.to_string(),
        username: required_string(d, C, "username")?.to_string(),
        roles,
        password_hash: required_string(d, C, "passwordHash")?.to_string(),
        created_at: date_time(d, C, "createdAt")?,
        position: position(d, C)?,
    })
}

pub fn read_wallet(d: &Document) -> R<WalletDoc> {
    const C: &str = "wallets";
    Ok(WalletDoc {
        user_id: uuid_field(d, C, "_id")?,
        coins: whole_number_field(d, C, "coins")?,
        earnings: whole_number_field(d, C, "earnings")?,
        held: whole_number_field(d, C, "held")?,
        updated_at: date_time(d, C, "updatedAt")?,
        position: position(d, C)?,
    })
}

pub fn read_transaction(d: &Document) -> R<TransactionDoc> {
    const C: &str = "transactions";
    let m = d.get_document("metadata").map_err(|_| corrupt(C, "metadata"))?;
    let kind = required_string(d, C, "type")?;
    let status = required_string(d, C, "status")?;
    Ok(TransactionDoc {
        id: uuid_field(d, C, "_id")?,
        user_id: uuid_field(d, C, "userId")?,
        kind: TxType::parse(kind).ok_or_else(|| corrupt(C, "type"))?,
        status: TxStatus::parse(status).ok_or_else(|| corrupt(C, "status"))?,
        coins: whole_number_field(d, C, "coins")?,
        wallet_after: whole_number_field(d, C, "walletAfter")?,
        earnings_after: whole_number_field(d, C, "earningsAfter")?,
        held_after: whole_number_field(d, C, "heldAfter")?,
        metadata: TxMetadata {
            payment_id: optional_string(m, "paymentId"),
            stripe_session_id: optional_string(m, "stripeSessionId"),
            stream_id: optional_uuid(m, C, "streamId")?,
            host_id: optional_uuid(m, C, "hostId")?,
            gift_id: optional_string(m, "giftId"),
            quantity: optional_whole_number(m, C, "quantity")?,
            gifts_count: optional_whole_number(m, C, "giftsCount")?,
            payout_id: optional_uuid(m, C, "payoutId")?,
            external_ref: optional_string(m, "externalRef"),
            reason: optional_string(m, "reason"),
            admin_id: optional_uuid(m, C, "adminId")?,
        },
        created_at: date_time(d, C, "createdAt")?,
        position: position(d, C)?,
    })
}

pub fn read_stream(d: &Document) -> R<StreamDoc> {
    const C: &str = "streams";
    Ok(StreamDoc {
        id: uuid_field(d, C, "_id")?,
        host_id: uuid_field(d, C, "hostId")?,
        title: required_string(d, C, "title")?.to_string(),
        category: required_string(d, C, "category")?.to_string(),
        status: parse_stream_status(required_string(d, C, "status")?).ok_or_else(|| corrupt(C, "status"))?,
        is_live: d.get_bool("isLive").map_err(|_| corrupt(C, "isLive"))?,
        start_time: date_time(d, C, "startTime")?,
        end_time: optional_date_time(d, C, "endTime")?,
        viewers: whole_number_field(d, C, "viewers")?,
        peak_viewers: whole_number_field(d, C, "peakViewers")?,
        gifts_coins: whole_number_field(d, C, "giftsCoins")?,
        position: position(d, C)?,
    })
}

pub fn read_payout(d: &Document) -> R<PayoutDoc> {
    const C: &str = "payouts";
    let fiat = d.get_document("fiat").map_err(|_| corrupt(C, "fiat"))?;
    Ok(PayoutDoc {
        id: uuid_field(d, C, "_id")?,
        user_id: uuid_field(d, C, "userId")?,
        coins: whole_number_field(d, C, "coins")?,
        fiat: Money {
            amount: required_string(fiat, C, "amount")?.parse().map_err(|_| corrupt(C, "fiat.amount"))?,
            currency: required_string(fiat, C, "currency")?.to_string(),
        },
        destination: required_string(d, C, "destination")?.to_string(),
        status: PayoutStatus::parse(required_string(d, C, "status")?).ok_or_else(|| corrupt(C, "status"))?,
        external_ref: optional_string(d, "externalRef"),
        reason: optional_string(d, "reason"),
        requested_at: date_time(d, C, "requestedAt")?,
        settled_at: optional_date_time(d, C, "settledAt")?,
        position: position(d, C)?,
    })
}

pub fn read_entry(d: &Document) -> R<LedgerEntryDoc> {
    const C: &str = "ledger_entries";
    Ok(LedgerEntryDoc {
        account: account(d, C, "account")?,
        position: position(d, C)?,
        seq: u32::try_from(whole_number_field(d, C, "seq")?).map_err(|_| corrupt(C, "seq"))?,
        event_type: required_string(d, C, "eventType")?.to_string(),
        counterparty: account(d, C, "counterparty")?,
        coins: whole_number_field(d, C, "coins")?,
        balance_after: whole_number_field(d, C, "balanceAfter")?,
        created_at: date_time(d, C, "createdAt")?,
    })
}

pub fn read_account(d: &Document) -> R<AccountBalance> {
    const C: &str = "ledger_accounts";
    Ok(AccountBalance {
        account: account(d, C, "_id")?,
        balance: whole_number_field(d, C, "balance")?,
        position: position(d, C)?,
    })
}

/// A viewer's document: `(stream, viewer, present)`.
pub fn read_viewer(d: &Document) -> R<(Uuid, Uuid, bool)> {
    const C: &str = "stream_viewers";
    let present = d.get_bool("present").map_err(|_| corrupt(C, "present"))?;
    Ok((uuid_field(d, C, "streamId")?, uuid_field(d, C, "viewerId")?, present))
}

pub fn read_leaderboard(d: &Document) -> R<LeaderboardEntry> {
    const C: &str = "gift_leaderboards";
    Ok(LeaderboardEntry {
        stream_id: uuid_field(d, C, "streamId")?,
        user_id: uuid_field(d, C, "userId")?,
        coins: whole_number_field(d, C, "coins")?,
        position: position(d, C)?,
    })
}

pub fn read_ledger_day(d: &Document) -> R<LedgerDayDoc> {
    const C: &str = "ledger_daily";
    let day = required_string(d, C, "_id")?;
    Ok(LedgerDayDoc {
        day: day.parse().map_err(|_| corrupt(C, "_id"))?,
        totals: DayTotals {
            purchased_coins: whole_number_field(d, C, "purchasedCoins")?,
            gifted_coins: whole_number_field(d, C, "giftedCoins")?,
            credited_coins: whole_number_field(d, C, "creditedCoins")?,
            paid_out_coins: whole_number_field(d, C, "paidOutCoins")?,
            reversed_coins: whole_number_field(d, C, "reversedCoins")?,
        },
        position: position(d, C)?,
    })
}

pub fn read_stripe_payment(d: &Document) -> R<StripePaymentDoc> {
    const C: &str = "stripe_payments";
    Ok(StripePaymentDoc {
        payment_id: required_string(d, C, "_id")?.to_string(),
        user_id: optional_uuid(d, C, "userId")?,
        coins_issued: optional_whole_number(d, C, "coinsIssued")?.unwrap_or(0),
        coins_reversed: optional_whole_number(d, C, "coinsReversed")?.unwrap_or(0),
        stripe_session_id: optional_string(d, "stripeSessionId"),
        position: position(d, C)?,
        stripe: StripeSide {
            package_id: optional_string(d, "packageId"),
            coins_expected: optional_whole_number(d, C, "coinsExpected")?.unwrap_or(0),
            amount_cents: optional_whole_number(d, C, "amountCents")?.unwrap_or(0),
            currency: optional_string(d, "currency"),
            charge_amount_cents: optional_whole_number(d, C, "chargeAmountCents")?.unwrap_or(0),
            amount_refunded_cents: optional_whole_number(d, C, "amountRefundedCents")?.unwrap_or(0),
            flags: d
                .get_array("flags")
                .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
            disputes: match d.get("disputes") {
                None | Some(Bson::Null) => Vec::new(),
                Some(disputes) => mongodb::bson::from_bson(disputes.clone())
                    .map_err(|e| ProjectionError::corrupt(C, format!("disputes: {e}")))?,
            },
            coins_refund_reversed: optional_whole_number(d, C, "coinsRefundReversed")?.unwrap_or(0),
            coins_dispute_withdrawn: optional_whole_number(d, C, "coinsDisputeWithdrawn")?.unwrap_or(0),
            coins_dispute_reinstated: optional_whole_number(d, C, "coinsDisputeReinstated")?.unwrap_or(0),
            claimed_user_id: optional_string(d, "claimedUserId"),
            claimed_package_id: optional_string(d, "claimedPackageId"),
            resolution: match d.get("resolution") {
                None | Some(Bson::Null) => None,
                Some(resolution) => Some(
                    mongodb::bson::from_bson(resolution.clone())
                        .map_err(|e| ProjectionError::corrupt(C, format!("resolution: {e}")))?,
                ),
            },
        },
    })
}

/// The update of a payment's Stripe side: every field of the payment
/// aggregate's state, and the user only when the ledger did not set it.
pub fn stripe_state_update(user_id: Option<&Uuid>, state: &StripeSide, p: &Bson) -> Document {
    let mut set = doc! {
        "position": p.clone(),
        "packageId": nullable_string(&state.package_id),
        "coinsExpected": state.coins_expected,
        "amountCents": state.amount_cents,
        "currency": nullable_string(&state.currency),
        "chargeAmountCents": state.charge_amount_cents,
        "amountRefundedCents": state.amount_refunded_cents,
        "flags": state.flags.iter().map(|f| Bson::String(f.clone())).collect::<Vec<Bson>>(),
        // Plain fields only: converting them cannot fail.
        "disputes": mongodb::bson::to_bson(&state.disputes).unwrap_or(Bson::Array(Vec::new())),
        "coinsRefundReversed": state.coins_refund_reversed,
        "coinsDisputeWithdrawn": state.coins_dispute_withdrawn,
        "coinsDisputeReinstated": state.coins_dispute_reinstated,
        "claimedUserId": nullable_string(&state.claimed_user_id),
        "claimedPackageId": nullable_string(&state.claimed_package_id),
        // Null until resolved, so that the open filter matches it.
        "resolution": state.resolution.as_ref().map_or(Bson::Null, |r| mongodb::bson::to_bson(r).unwrap_or(Bson::Null)),
    };
    // No `stripeSessionId: null`: its index is sparse.
    let on_insert = doc! {"coinsIssued": 0i64, "coinsReversed": 0i64};
    // A pipeline-free upsert cannot say "if null": the user of the Stripe
    // side is the buyer the ledger credits, so setting it is the same value
    // whenever both are known; unknown, it is left absent (not null).
    if let Some(user) = user_id {
        set.insert("userId", user.to_string());
    }
    doc! {"$set": set, "$setOnInsert": on_insert}
}

#[cfg(test)]
mod tests {
    use super::*;
    use events_schema::StreamStatus;

    fn u(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_767_225_600_123).unwrap()
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
            status: StreamStatus::Ended,
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
    fn whole_numbers_of_any_numeric_type_are_read_and_the_rest_refused() {
        assert_eq!(whole_number(Some(&Bson::Int32(7))), Ok(Some(7)));
        assert_eq!(whole_number(Some(&Bson::Int64(7))), Ok(Some(7)));
        assert_eq!(whole_number(Some(&Bson::Double(7.0))), Ok(Some(7)), "a version edited by hand in a shell");
        assert_eq!(whole_number(None), Ok(None));
        assert!(whole_number(Some(&Bson::Double(7.5))).is_err(), "never rounded");
        assert!(whole_number(Some(&Bson::Double(f64::NAN))).is_err());
        assert!(whole_number(Some(&Bson::Double(1e300))).is_err());
        assert!(whole_number(Some(&Bson::String("7".into()))).is_err(), "never a default");
        let decimal: mongodb::bson::Decimal128 = "12".parse().unwrap();
        assert_eq!(whole_number(Some(&Bson::Decimal128(decimal))), Ok(Some(12)));
        let mut wallet = doc! {"_id": u(1).to_string(), "coins": 10.0, "earnings": 0i32, "held": 0i64,
        "updatedAt": time(at()), "position": 3.0};
        assert_eq!(read_wallet(&wallet).unwrap().position, 3);
        wallet.insert("position", 3.5);
        assert!(matches!(read_wallet(&wallet), Err(ProjectionError::Corrupt { .. })));
    }

    #[test]
    fn sparse_fields_are_absent_not_null() {
        let tx = TransactionDoc {
            id: u(3),
            user_id: u(1),
            kind: TxType::GiftSent,
            status: TxStatus::Completed,
            coins: -5,
            wallet_after: 5,
            earnings_after: 0,
            held_after: 0,
            metadata: TxMetadata { stream_id: Some(u(5)), ..TxMetadata::default() },
            created_at: at(),
            position: 4,
        };
        let d = transaction_doc(&tx, None).unwrap();
        let metadata = d.get_document("metadata").unwrap();
        assert_eq!(metadata, &doc! {"streamId": u(5).to_string()}, "no stripeSessionId: null in a sparse index");
        assert_eq!(read_transaction(&d).unwrap(), tx);
    }
}
