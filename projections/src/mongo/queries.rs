//! The filters and sorts of the queries the API serves: keyset pages on
//! the sort key and `_id`, each backed by an index of `registry::indexes`.

use events_schema::Account;
use mongodb::bson::{Bson, DateTime as BsonDateTime, Document, doc};
use uuid::Uuid;

use super::documents::{R, position_value};
use crate::model::{AdjustmentStatus, PayoutStatus, ResolutionStatus, StripePaymentFilter, TransactionFilter};

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

/// Proposed adjustments (of a status, or all) after `(proposedAt ms, _id)`.
pub fn adjustments_query(status: Option<AdjustmentStatus>, after: Option<(i64, &str)>) -> (Document, Document) {
    let mut q = Document::new();
    if let Some(status) = status {
        q.insert("status", status.as_str());
    }
    if let Some((ms, id)) = after {
        q.extend(before("proposedAt", Bson::DateTime(BsonDateTime::from_millis(ms)), "_id", id));
    }
    (q, doc! {"proposedAt": -1, "_id": -1})
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
    Ok((
        doc! {"account": account.to_string(), "position": {"$lte": position_value(position)?}},
        doc! {"position": -1, "seq": -1},
    ))
}

/// The last entry of an account at or before a position and a time.
pub fn entry_at_query(
    account: Account,
    position_max: u64,
    time_max: Option<chrono::DateTime<chrono::Utc>>,
) -> (Document, Document) {
    let mut q = doc! {"account": account.to_string(),
    "position": {"$lte": i64::try_from(position_max).unwrap_or(i64::MAX)}};
    if let Some(t) = time_max {
        q.insert("createdAt", doc! {"$lte": Bson::DateTime(BsonDateTime::from_millis(t.timestamp_millis()))});
    }
    (q, doc! {"position": -1, "seq": -1})
}

/// A page of an account's entries in a window, oldest first.
pub fn entries_window_query(
    account: Account,
    time_min: chrono::DateTime<chrono::Utc>,
    after: (u64, u32),
    until: (u64, u32),
) -> (Document, Document) {
    let pos = |p: u64| i64::try_from(p).unwrap_or(i64::MAX);
    let q = doc! {
        "account": account.to_string(),
        "createdAt": {"$gte": Bson::DateTime(BsonDateTime::from_millis(time_min.timestamp_millis()))},
        "$and": [
            {"$or": [{"position": {"$gt": pos(after.0)}}, {"position": pos(after.0), "seq": {"$gt": i64::from(after.1)}}]},
            {"$or": [{"position": {"$lt": pos(until.0)}}, {"position": pos(until.0), "seq": {"$lte": i64::from(until.1)}}]},
        ],
    };
    (q, doc! {"position": 1, "seq": 1})
}

pub fn stripe_payments_query(after: Option<&str>, filter: &StripePaymentFilter) -> (Document, Document) {
    let mut query = match after {
        Some(id) => doc! {"_id": {"$gt": id}},
        None => doc! {},
    };
    if let Some(flag) = &filter.flag {
        // An array field matches a value it contains.
        query.insert("flags", flag.as_str());
    }
    match filter.status {
        None => {}
        // Absent or null: not resolved; `flags.0` exists: flagged.
        Some(ResolutionStatus::Open) => {
            query.insert("resolution", Bson::Null);
            query.insert("flags.0", doc! {"$exists": true});
        }
        Some(ResolutionStatus::Resolved) => {
            query.insert("resolution", doc! {"$ne": Bson::Null});
        }
    }
    (query, doc! {"_id": 1})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{TxStatus, TxType};

    fn u(n: u128) -> Uuid {
        Uuid::from_u128(n)
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
        let all = StripePaymentFilter::default();
        assert_eq!(stripe_payments_query(Some("pi_1"), &all), (doc! {"_id": {"$gt": "pi_1"}}, doc! {"_id": 1}));
        let open = StripePaymentFilter { flag: Some("unknown_user".into()), status: Some(ResolutionStatus::Open) };
        assert_eq!(
            stripe_payments_query(None, &open).0,
            doc! {"flags": "unknown_user", "resolution": Bson::Null, "flags.0": {"$exists": true}}
        );
        let resolved = StripePaymentFilter { flag: None, status: Some(ResolutionStatus::Resolved) };
        assert_eq!(stripe_payments_query(None, &resolved).0, doc! {"resolution": {"$ne": Bson::Null}});
    }
}
