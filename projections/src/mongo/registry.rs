//! The adapter's own bookkeeping, as pure functions: the indexes of every
//! collection, the checkpoints, the leases (on the server's clock), the
//! registry of active versions, and the runbook names made views of the
//! active version after a switch.

use std::time::Duration;

use chrono::{DateTime, Utc};
use mongodb::IndexModel;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::IndexOptions;

use super::documents::{R, position_value, time};
use super::writes::{Write, update};
use crate::model::{Collection, Projection};

pub const CHECKPOINTS: &str = "projector_checkpoints";
pub const LEASES: &str = "projector_leases";
pub const VERSIONS: &str = "projection_versions";

/// How long one `createIndexes` may run on the server (`maxTimeMS`): an
/// index build on a large existing collection is an operator's job, not a
/// start-up's.
pub const CREATE_INDEXES_TIME_MAX: Duration = Duration::from_secs(60);

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
            // The runbook's index, with the `_id` tie-breaker the keyset
            // pages sort on, so that no page is sorted in memory.
            index("userId_1_createdAt_-1__id_-1", doc! {"userId": 1, "createdAt": -1, "_id": -1}),
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
        Collection::StreamViewers => vec![index("streamId_1_present_1", doc! {"streamId": 1, "present": 1})],
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
        Collection::Adjustments => vec![
            index("status_1_proposedAt_-1__id_-1", doc! {"status": 1, "proposedAt": -1, "_id": -1}),
            index("proposedAt_-1__id_-1", doc! {"proposedAt": -1, "_id": -1}),
        ],
        Collection::StripePayments => {
            vec![IndexSpec { sparse: true, ..index("stripeSessionId_1", doc! {"stripeSessionId": 1}) }]
        }
        // Days are read by `_id` ranges.
        Collection::Wallets | Collection::StripeSessions | Collection::LedgerAccounts | Collection::LedgerDaily => {
            vec![]
        }
    }
}

/// The typed index models of a collection (`createIndexes` through the
/// driver).
pub fn index_models(collection: Collection) -> Vec<IndexModel> {
    indexes(collection)
        .into_iter()
        .map(|spec| {
            let options = IndexOptions::builder()
                .name(spec.name.to_string())
                .unique(spec.unique.then_some(true))
                .sparse(spec.sparse.then_some(true))
                .build();
            IndexModel::builder().keys(spec.keys).options(options).build()
        })
        .collect()
}

/// The index names a collection lacks, from the names it has
/// (`listIndexes`): `createIndexes` runs only when one is missing, not at
/// every start.
pub fn missing_indexes(collection: Collection, existing: &[String]) -> Vec<&'static str> {
    indexes(collection).into_iter().map(|s| s.name).filter(|name| !existing.iter().any(|e| e == name)).collect()
}

// ---------------------------------------------------------------------------
// Checkpoints

/// The checkpoint moves forward only.
pub fn checkpoint_write(projection: Projection, version: u32, to_position: u64, now: DateTime<Utc>) -> R<Write> {
    let key = crate::model::ProjectionVersion::new(projection, version).key();
    Ok(update(
        CHECKPOINTS,
        doc! {"_id": key},
        doc! {"$max": {"position": position_value(to_position)?}, "$set": {"updatedAt": time(now)},
        "$setOnInsert": {"projection": projection.name(), "version": i64::from(version)}},
        true,
    ))
}

// ---------------------------------------------------------------------------
// Leases, on the server's clock

/// The lease is taken when free, expired, or already ours, on the server's
/// clock (`$$NOW`): the holders' clocks may disagree, the server's is one.
/// A lease held by another matches nothing, and the upsert then fails on
/// the duplicate `_id`: not granted.
pub fn lease_filter(key: &str, owner: &str) -> Document {
    doc! {"_id": key, "$or": [
        {"owner": owner},
        // Compared as milliseconds since the epoch (`$toLong` of a date):
        // an older build's `expiresAt` (a number of milliseconds) compares
        // right, and so does the surrogate, whose date comparisons with
        // `$$NOW` are broken (it finds every date equal to it).
        {"$expr": {"$lte": [{"$toLong": "$expiresAt"}, {"$toLong": "$$NOW"}]}},
    ]}
}

/// The update (a pipeline, for `$$NOW`): ours until the server's now plus
/// the lease's lifetime.
pub fn lease_update(owner: &str, ttl_ms: u64) -> Vec<Document> {
    let ttl_ms = i64::try_from(ttl_ms).unwrap_or(i64::MAX);
    vec![doc! {"$set": {"owner": owner, "expiresAt": {"$add": ["$$NOW", ttl_ms]}}}]
}

/// Gives a lease up: expired now, on the server's clock.
pub fn lease_release() -> Vec<Document> {
    vec![doc! {"$set": {"expiresAt": "$$NOW"}}]
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

/// What holds a runbook name (`users`, ...) now (`listCollections`
/// filtered on that name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameHolder {
    Nothing,
    /// A view, on this collection.
    View(String),
    Collection,
}

/// How to make runbook name `base` a read-only view of `target`, the
/// active version's collection, so that the admin panel, which reads the
/// runbook's names, reads the serving version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewStep {
    /// Nothing to do.
    Keep,
    /// The name is free: create the view.
    Create,
    /// A view on another collection: re-point it in place with `collMod`
    /// (no moment without the name). Where the user may not run `collMod`
    /// (the runbook's `readWrite` role does not grant it), the adapter
    /// falls back to dropping and creating it, and says so in its log.
    Repoint,
    /// A collection left over from a write after version 1 was dropped
    /// (its runner retiring): dropped, then the view created.
    Replace,
}

/// - The active version has the name itself (version 1): keep.
/// - The name is free (version 1 dropped): create the view.
/// - It is a view already on `target`: keep; on another: re-point.
/// - A collection holds it: keep while version 1 is `kept` (its
///   checkpoint exists: `--keep-old`; the panel reads it until it is
///   dropped); otherwise replace it.
pub fn runbook_view_step(base: &str, target: &str, holder: &NameHolder, kept: bool) -> ViewStep {
    match holder {
        _ if base == target => ViewStep::Keep,
        NameHolder::Nothing => ViewStep::Create,
        NameHolder::View(on) if on == target => ViewStep::Keep,
        NameHolder::View(_) => ViewStep::Repoint,
        NameHolder::Collection if kept => ViewStep::Keep,
        NameHolder::Collection => ViewStep::Replace,
    }
}

/// `collMod` re-pointing view `base` at `target`.
pub fn repoint_view_command(base: &str, target: &str) -> Document {
    doc! {"collMod": base, "viewOn": target, "pipeline": Bson::Array(vec![])}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runbook_names_become_views_of_the_active_version_where_free() {
        let step = |holder: NameHolder, kept| runbook_view_step("users", "users__v3", &holder, kept);
        assert_eq!(step(NameHolder::Nothing, false), ViewStep::Create);
        assert_eq!(step(NameHolder::View("users__v2".into()), false), ViewStep::Repoint, "re-pointed in place");
        assert_eq!(step(NameHolder::View("users__v3".into()), false), ViewStep::Keep, "already there");
        assert_eq!(step(NameHolder::Collection, true), ViewStep::Keep, "1 kept");
        assert_eq!(step(NameHolder::Collection, false), ViewStep::Replace, "left over from a late write");
        assert_eq!(runbook_view_step("users", "users", &NameHolder::Collection, true), ViewStep::Keep, "1 active");
        assert_eq!(
            repoint_view_command("users", "users__v3"),
            doc! {"collMod": "users", "viewOn": "users__v3", "pipeline": []}
        );
    }

    #[test]
    fn indexes_are_the_runbooks_with_paging_tie_breakers() {
        let names: Vec<&str> = indexes(Collection::Users).iter().map(|s| s.name).collect();
        assert_eq!(names, ["email_1", "username_1", "createdAt_-1"]);
        let users = index_models(Collection::Users);
        assert_eq!(users[0].keys, doc! {"email": 1});
        assert_eq!(users[0].options.as_ref().and_then(|o| o.unique), Some(true));
        assert_eq!(users[2].options.as_ref().and_then(|o| o.unique), None);
        let txs = indexes(Collection::Transactions);
        assert_eq!(txs[0].keys, doc! {"userId": 1, "createdAt": -1, "_id": -1}, "the pages' sort, whole");
        assert!(txs[2].sparse && txs[2].keys == doc! {"metadata.stripeSessionId": 1});
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
        assert!(index_models(Collection::Wallets).is_empty());
        let existing = vec!["_id_".to_string(), "email_1".to_string()];
        assert_eq!(missing_indexes(Collection::Users, &existing), ["username_1", "createdAt_-1"]);
        let all: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        assert!(missing_indexes(Collection::Users, &all).is_empty(), "nothing to create at a later start");
    }

    #[test]
    fn leases_use_the_servers_clock_and_checkpoints_only_move_forward() {
        assert_eq!(
            lease_filter("projector", "a"),
            doc! {"_id": "projector", "$or": [{"owner": "a"},
            {"$expr": {"$lte": [{"$toLong": "$expiresAt"}, {"$toLong": "$$NOW"}]}}]}
        );
        assert_eq!(
            lease_update("a", 5_000),
            vec![doc! {"$set": {"owner": "a", "expiresAt": {"$add": ["$$NOW", 5_000i64]}}}]
        );
        let at = DateTime::from_timestamp_millis(1_767_225_600_123).unwrap();
        let c = checkpoint_write(Projection::Users, 2, 42, at).unwrap();
        assert_eq!(c.collection, CHECKPOINTS);
        assert_eq!(c.statement.get_document("q").unwrap(), &doc! {"_id": "users@2"});
        assert_eq!(c.statement.get_document("u").unwrap().get_document("$max").unwrap(), &doc! {"position": 42i64});
        assert!(supports_transactions(&doc! {"setName": "rs0", "logicalSessionTimeoutMinutes": 30}));
        assert!(supports_transactions(&doc! {"msg": "isdbgrid", "logicalSessionTimeoutMinutes": 30}));
        assert!(!supports_transactions(&doc! {"isWritablePrimary": true, "logicalSessionTimeoutMinutes": 30}));
    }
}
