//! The production read store: MongoDB, with the runbook's collection names,
//! fields and indexes, so that the existing admin panel reads them.
//!
//! A batch becomes a few ordered `update` commands per collection it
//! touches (`writes::update_commands`), then the checkpoints. Where the
//! deployment runs transactions (a replica set or a sharded cluster), all
//! of it is one transaction (read preference primary, majority read and
//! write concerns, whatever the URI says); a batch of more than
//! `TRANSACTION_CHANGES_MAX` changes is cut, at event boundaries, into
//! transactions of its own, each with its checkpoint, so that none nears
//! MongoDB's 60 s transaction limit. Where the deployment runs no
//! transactions (a standalone server), the writes are idempotent and the
//! checkpoint goes last: every update is guarded by the event's position
//! (see `writes`), so a batch replayed after a crash changes nothing it
//! already changed.
//!
//! Reads go through the driver's typed API (retryable reads; every cursor
//! drained, with a batch size, whatever MongoDB's default first batch of
//! 101 documents). The batch's writes are raw `update` commands, because
//! an ordered list of upserts, pipelines and multi-updates in one round
//! trip has no typed form before MongoDB 8.0's `bulkWrite`; their replies
//! are read for write errors and `writeConcernError`, and their retry is
//! the runner's (the whole batch again, harmless under the guards).
//! Errors are classified once (`classify`): transient ones (labels, network,
//! server selection, elections) are retried by the runner, the others stop
//! it (`ProjectionError::StoreRefused`).
//!
//! - `apply`: a batch applied, in transactions of a bounded size or not;
//! - `documents`: the documents, written and read back;
//! - `writes`: the guarded writes a batch becomes, grouped into commands;
//! - `queries`: the filters and sorts of the API's queries;
//! - `registry`: indexes, checkpoints, leases, versions and views;
//! - `port`: the `ReadStore` port implemented with the above.

mod apply;
pub mod documents;
mod port;
pub mod queries;
pub mod registry;
pub mod writes;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use events_schema::Account;
use futures_util::TryStreamExt;
use futures_util::future::BoxFuture;
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;
use mongodb::options::{ClientOptions, ReadPreference, SelectionCriteria};
use mongodb::results::CollectionType;
use mongodb::{Client, ClientSession, Database};
use uuid::Uuid;

use crate::ProjectionError;
use crate::change::{ApplyOutcome, ProjectedBatch};
use crate::model::{
    AdjustmentDoc, AdjustmentStatus, Checkpoint, Collection, LeaderboardEntry, LedgerDayDoc, LedgerEntryDoc, Page,
    PageRequest, PayoutDoc, PayoutStatus, Projection, ProjectionVersion, StreamDoc, StripePaymentDoc,
    StripePaymentFilter, TransactionDoc, TransactionFilter, TrialBalance, UserDoc, WalletDoc, cursor,
};
use crate::store::{AnyDoc, ReadStore, SCAN_LIMIT_MAX, ScanPage, StoreResult, normalise_email};
pub use apply::split_batch;
use registry::{CHECKPOINTS, LEASES, NameHolder, VERSIONS, ViewStep};

/// MongoDB's "namespace exists", "namespace not found" and "unauthorized"
/// error codes.
const NAMESPACE_EXISTS: i32 = 48;
const NAMESPACE_NOT_FOUND: i32 = 26;
const UNAUTHORIZED: i32 = 13;

/// Changes in one transaction, at most: a 5,000-event catch-up batch of
/// gifts is about 25,000 changes; cut in two, each transaction is a dozen
/// commands and a few MB, far from the 60 s `transactionLifetimeLimitSeconds`
/// and the 16 MiB of a command.
pub const TRANSACTION_CHANGES_MAX: usize = 15_000;

/// Documents asked for in one batch of a cursor, at most (a scan page is at
/// most `SCAN_LIMIT_MAX` + 1).
const CURSOR_BATCH_SIZE_MAX: u32 = SCAN_LIMIT_MAX + 1;

/// Server error codes that say "try again" (elections, shutdowns, a
/// write conflict, an expired time limit, a transaction the server
/// forgot): the retryable codes of MongoDB's retryable reads and writes
/// specifications, which our raw commands get no label for.
const TRANSIENT_CODES: [i32; 18] =
    [6, 7, 50, 64, 89, 91, 112, 134, 189, 251, 262, 9001, 10107, 11600, 11602, 13435, 13436, 10058];

/// The labels MongoDB and the driver put on errors worth retrying.
const TRANSIENT_LABELS: [&str; 3] =
    ["TransientTransactionError", "RetryableWriteError", "UnknownTransactionCommitResult"];

/// Whether a driver error is worth retrying: a transient label, a network
/// error, no server selected, or a transient server code. Everything else
/// (a write to a view, an index conflict, a document too large, a read
/// preference refused, unauthorized) fails again if retried.
pub fn is_transient(error: &mongodb::error::Error) -> bool {
    if TRANSIENT_LABELS.iter().any(|label| error.contains_label(label)) {
        return true;
    }
    match error.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::DnsResolve { .. } => true,
        ErrorKind::Command(c) => TRANSIENT_CODES.contains(&c.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(c)) => TRANSIENT_CODES.contains(&c.code),
        _ => false,
    }
}

/// A driver error as the runner needs it: `Store` (retried) or
/// `StoreRefused` (stops the runner).
pub fn classify(error: mongodb::error::Error) -> ProjectionError {
    if is_transient(&error) {
        ProjectionError::Store(error.to_string())
    } else {
        ProjectionError::StoreRefused(error.to_string())
    }
}

fn server_code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

fn primary() -> SelectionCriteria {
    SelectionCriteria::ReadPreference(ReadPreference::Primary)
}

/// The MongoDB read store. Cheap to clone (the client is shared).
#[derive(Debug, Clone)]
pub struct MongoStore {
    client: Client,
    db: Database,
    transactions: bool,
    /// Commands this store's client has sent (the bench's and tests'
    /// "commands per 1,000 events").
    commands_started: Arc<AtomicU64>,
}

/// The database when neither `MONGODB_DB` nor the URI names one.
pub const DEFAULT_DATABASE: &str = "halobuzz";

/// MongoDB's own databases: a URI naming one names where to authenticate
/// (`mongodb://user:pw@host/admin`), not where the read models go.
const SYSTEM_DATABASES: [&str; 3] = ["admin", "local", "config"];

/// `explicit`, else the client's URI's database unless it is a system one,
/// else [`DEFAULT_DATABASE`].
fn database_of(client: &Client, explicit: Option<&str>) -> Database {
    match explicit {
        Some(name) => client.database(name),
        None => client
            .default_database()
            .filter(|db| !SYSTEM_DATABASES.contains(&db.name()))
            .unwrap_or_else(|| client.database(DEFAULT_DATABASE)),
    }
}

impl MongoStore {
    /// Connects to `uri` (`MONGODB_URI`) and uses `database` (`MONGODB_DB`),
    /// else the database the URI names (the runbook's
    /// `mongodb+srv://.../halobuzz`), else [`DEFAULT_DATABASE`]; finds out
    /// whether the deployment runs transactions.
    pub async fn connect(uri: &str, database: Option<&str>) -> StoreResult<MongoStore> {
        let mut options = ClientOptions::parse(uri).await.map_err(classify)?;
        let commands_started = Arc::new(AtomicU64::new(0));
        let counter = commands_started.clone();
        options.command_event_handler = Some(EventHandler::callback(move |event| {
            if matches!(event, CommandEvent::Started(_)) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
        let client = Client::with_options(options).map_err(classify)?;
        let db = database_of(&client, database);
        // `hello` has no typed form; it is a read of the server's state.
        let hello = db.run_command(doc! {"hello": 1}).selection_criteria(primary()).await.map_err(classify)?;
        let transactions = registry::supports_transactions(&hello);
        tracing::info!(database = db.name(), transactions, "mongodb read store connected");
        Ok(MongoStore { client, db, transactions, commands_started })
    }

    /// Whether batches are applied in transactions (otherwise idempotently).
    pub fn uses_transactions(&self) -> bool {
        self.transactions
    }

    /// How many commands this store has sent so far.
    pub fn commands_started(&self) -> u64 {
        self.commands_started.load(Ordering::Relaxed)
    }

    /// The database the read models are in.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Drops the whole database (tests).
    pub async fn drop_database(&self) -> StoreResult<()> {
        self.db.drop().await.map_err(classify)
    }

    /// A raw write command (`update`) on the primary, in `session` when
    /// given; its reply's `writeConcernError` is an error.
    async fn write_command(&self, command: Document, session: Option<&mut ClientSession>) -> StoreResult<Document> {
        let action = self.db.run_command(command).selection_criteria(primary());
        let reply = match session {
            Some(s) => action.session(s).await,
            None => action.await,
        }
        .map_err(classify)?;
        writes::check_write_concern(&reply)?;
        Ok(reply)
    }

    /// Every document `filter` matches, at most `limit`, through a cursor
    /// with a batch size, drained. A cursor that yields more than asked is
    /// an error, not a silent truncation.
    async fn find(
        &self,
        collection: &str,
        filter: Document,
        sort: Document,
        limit: u32,
        session: Option<&mut ClientSession>,
    ) -> StoreResult<Vec<Document>> {
        let limit = limit.max(1);
        let handle = self.db.collection::<Document>(collection);
        let find = handle.find(filter).sort(sort).limit(i64::from(limit)).batch_size(limit.min(CURSOR_BATCH_SIZE_MAX));
        let mut found = Vec::new();
        let bound = usize::try_from(limit).unwrap_or(usize::MAX);
        match session {
            Some(session) => {
                let mut cursor = find.session(&mut *session).await.map_err(classify)?;
                while let Some(document) = cursor.next(session).await {
                    found.push(document.map_err(classify)?);
                    if found.len() > bound {
                        return Err(overflowing_cursor(collection, limit));
                    }
                }
            }
            None => {
                let mut cursor = find.await.map_err(classify)?;
                while let Some(document) = cursor.try_next().await.map_err(classify)? {
                    found.push(document);
                    if found.len() > bound {
                        return Err(overflowing_cursor(collection, limit));
                    }
                }
            }
        }
        Ok(found)
    }

    /// One document by filter (`find` with a limit of 1).
    async fn find_first(
        &self,
        collection: &str,
        filter: Document,
        session: Option<&mut ClientSession>,
    ) -> StoreResult<Option<Document>> {
        Ok(self.find(collection, filter, doc! {}, 1, session).await?.into_iter().next())
    }

    /// Every document of an aggregation, at most `limit`, drained.
    async fn aggregate(&self, collection: &str, pipeline: Vec<Document>, limit: u32) -> StoreResult<Vec<Document>> {
        let handle = self.db.collection::<Document>(collection);
        let mut cursor =
            handle.aggregate(pipeline).batch_size(limit.clamp(1, CURSOR_BATCH_SIZE_MAX)).await.map_err(classify)?;
        let mut found = Vec::new();
        while let Some(document) = cursor.try_next().await.map_err(classify)? {
            found.push(document);
            if found.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
                return Err(overflowing_cursor(collection, limit));
            }
        }
        Ok(found)
    }

    /// Runs an ordered `update` command; an upsert that hits a duplicate key
    /// on `_id` (already applied) is passed over and the rest sent again. In
    /// a transaction the server aborts on any write error, so the batch
    /// fails and is retried whole.
    async fn run_update(&self, command: Document, mut session: Option<&mut ClientSession>) -> StoreResult<u64> {
        let in_transaction = session.is_some();
        let mut command = command;
        let mut matched = 0u64;
        // Bounded: each round starts after a statement that failed.
        for _ in 0..=writes::COMMAND_STATEMENTS_MAX {
            let reply = self.write_command(command.clone(), session.as_deref_mut()).await?;
            matched +=
                documents::whole_number(reply.get("n")).ok().flatten().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
            match writes::resume_after(&reply)? {
                None => return Ok(matched),
                Some(_) if in_transaction => {
                    // A transaction's write error aborts it: a concurrent
                    // writer got there first. The batch is retried whole.
                    return Err(ProjectionError::Store(
                        "duplicate key inside a transaction (a concurrent writer?)".into(),
                    ));
                }
                Some(index) => match writes::command_from(&command, index + 1) {
                    Some(rest) => command = rest,
                    None => return Ok(matched),
                },
            }
        }
        Err(ProjectionError::Store("update command did not finish".into()))
    }

    /// Points the runbook names of `projection`'s collections at its active
    /// version, as read-only views (`registry::runbook_view_step`). It
    /// runs after the switch or drop that calls it has taken effect, so a
    /// failure is a warning naming the collection, not an error.
    async fn point_runbook_names(&self, projection: Projection) {
        let first = ProjectionVersion::new(projection, 1);
        let state = async {
            let active = self.active_version_with(projection, None).await?;
            let kept = self.find_first(CHECKPOINTS, doc! {"_id": first.key()}, None).await?.is_some();
            Ok::<_, ProjectionError>((active, kept))
        };
        let (active, kept) = match state.await {
            Ok(state) => state,
            Err(error) => {
                tracing::warn!(projection = projection.name(), %error, "runbook names not pointed at the active version");
                return;
            }
        };
        for collection in projection.collections() {
            let (base, target) = (collection.base_name(), collection.physical_name(active));
            match self.point_runbook_name(base, &target, kept).await {
                Ok(ViewStep::Keep) if base != target && kept => {
                    tracing::warn!(base, target, "kept version 1 holds the runbook name until it is dropped");
                }
                Ok(ViewStep::Keep) => {}
                Ok(step) => tracing::info!(base, target, ?step, "the runbook name reads the active version"),
                Err(error) => {
                    tracing::warn!(base, target, %error, "the runbook name could not be pointed at the active version")
                }
            }
        }
    }

    async fn name_holder(&self, name: &str) -> StoreResult<NameHolder> {
        let mut cursor = self.db.list_collections().filter(doc! {"name": name}).await.map_err(classify)?;
        let Some(spec) = cursor.try_next().await.map_err(classify)? else { return Ok(NameHolder::Nothing) };
        Ok(match spec.collection_type {
            CollectionType::View => NameHolder::View(spec.options.view_on.unwrap_or_default()),
            _ => NameHolder::Collection,
        })
    }

    async fn create_view(&self, base: &str, target: &str) -> StoreResult<()> {
        match self.db.create_collection(base).view_on(target.to_string()).pipeline(Vec::new()).await {
            Ok(()) => Ok(()),
            Err(e) if server_code(&e) == Some(NAMESPACE_EXISTS) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    async fn drop_collection(&self, name: &str) -> StoreResult<()> {
        match self.db.collection::<Document>(name).drop().await {
            Ok(()) => Ok(()),
            Err(e) if server_code(&e) == Some(NAMESPACE_NOT_FOUND) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    async fn point_runbook_name(&self, base: &str, target: &str, kept: bool) -> StoreResult<ViewStep> {
        let holder = self.name_holder(base).await?;
        let step = registry::runbook_view_step(base, target, &holder, kept);
        match step {
            ViewStep::Keep => {}
            ViewStep::Create => self.create_view(base, target).await?,
            ViewStep::Replace => {
                self.drop_collection(base).await?;
                self.create_view(base, target).await?;
            }
            ViewStep::Repoint => {
                // `collMod` has no typed form. It re-points the view in
                // place; checked after, since a server may accept it and
                // keep the old definition.
                let repointed = self.db.run_command(registry::repoint_view_command(base, target)).await;
                let pointed = match repointed {
                    Ok(_) => self.name_holder(base).await? == NameHolder::View(target.to_string()),
                    Err(e) if server_code(&e) == Some(UNAUTHORIZED) => false,
                    Err(e) => return Err(classify(e)),
                };
                if !pointed {
                    // The runbook's `readWrite` user may not run `collMod`:
                    // the view is dropped and made again, and the admin
                    // panel misses the name for that one round trip.
                    tracing::warn!(base, target, "collMod refused or ignored: the view is dropped and created again");
                    self.drop_collection(base).await?;
                    self.create_view(base, target).await?;
                }
            }
        }
        Ok(step)
    }

    /// The active version of `projection` (1 when the registry has none).
    async fn active_version_with(
        &self,
        projection: Projection,
        session: Option<&mut ClientSession>,
    ) -> StoreResult<u32> {
        let found = self.find_first(VERSIONS, doc! {"_id": projection.name()}, session).await?;
        match found {
            None => Ok(1),
            Some(d) => bookkeeping_u32(&d, VERSIONS, "active")?.map_or(Ok(1), Ok),
        }
    }

    async fn active_collection(&self, projection: Projection, collection: Collection) -> StoreResult<String> {
        Ok(collection.physical_name(self.active_version_with(projection, None).await?))
    }

    async fn checkpoint_of(&self, key: &str, session: Option<&mut ClientSession>) -> StoreResult<u64> {
        match self.find_first(CHECKPOINTS, doc! {"_id": key}, session).await? {
            None => Ok(0),
            Some(d) => {
                let position = bookkeeping_number(&d, CHECKPOINTS, "position")?.unwrap_or(0);
                crate::model::pos_u64(CHECKPOINTS, position)
            }
        }
    }

    async fn create_collection(&self, name: &str) -> StoreResult<()> {
        match self.db.create_collection(name).await {
            Ok(()) => Ok(()),
            Err(e) if server_code(&e) == Some(NAMESPACE_EXISTS) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    async fn index_names(&self, name: &str) -> StoreResult<Vec<String>> {
        match self.db.collection::<Document>(name).list_index_names().await {
            Ok(names) => Ok(names),
            Err(e) if server_code(&e) == Some(NAMESPACE_NOT_FOUND) => Ok(Vec::new()),
            Err(e) => Err(classify(e)),
        }
    }

    async fn prepare_all(&self, targets: Vec<ProjectionVersion>) -> StoreResult<()> {
        let existing = self.db.list_collection_names().await.map_err(classify)?;
        for meta in [CHECKPOINTS, LEASES, VERSIONS] {
            if !existing.iter().any(|e| e == meta) {
                self.create_collection(meta).await?;
            }
        }
        for target in targets {
            for collection in target.projection.collections() {
                let name = collection.physical_name(target.version);
                if !existing.contains(&name) {
                    self.create_collection(&name).await?;
                }
                // Only what is missing, and within a time limit: at a later
                // start nothing is sent but `listIndexes`.
                let missing = registry::missing_indexes(*collection, &self.index_names(&name).await?);
                if missing.is_empty() {
                    continue;
                }
                let models: Vec<_> = registry::index_models(*collection)
                    .into_iter()
                    .filter(|m| {
                        m.options.as_ref().and_then(|o| o.name.as_deref()).is_some_and(|n| missing.contains(&n))
                    })
                    .collect();
                self.db
                    .collection::<Document>(&name)
                    .create_indexes(models)
                    .max_time(registry::CREATE_INDEXES_TIME_MAX)
                    .await
                    .map_err(classify)?;
            }
        }
        Ok(())
    }

    async fn page_of<T>(
        &self,
        collection: &str,
        (filter, sort): (Document, Document),
        limit: u32,
        read: fn(&Document) -> StoreResult<T>,
        cursor_of: impl Fn(&T) -> String,
    ) -> StoreResult<Page<T>> {
        let docs = self.find(collection, filter, sort, limit + 1, None).await?;
        let items = docs.iter().map(read).collect::<StoreResult<Vec<T>>>()?;
        Ok(crate::store::into_page(items, limit, cursor_of))
    }

    async fn one<T>(
        &self,
        projection: Projection,
        collection: Collection,
        filter: Document,
        read: fn(&Document) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        let name = self.active_collection(projection, collection).await?;
        self.find_first(&name, filter, None).await?.as_ref().map(read).transpose()
    }

    async fn scan_collection(
        &self,
        target: ProjectionVersion,
        collection: Collection,
        after: Option<String>,
        limit: u32,
    ) -> StoreResult<ScanPage> {
        let limit = crate::store::scan_limit(target, collection, limit)?;
        let name = collection.physical_name(target.version);
        let mut filter = after.as_ref().map_or_else(Document::new, |a| doc! {"_id": {"$gt": a}});
        if collection == Collection::StreamViewers {
            // A viewer who left keeps a document (its position guards a
            // replay): only the present ones are viewers.
            filter.insert("present", true);
        }
        let docs = self.find(&name, filter, doc! {"_id": 1}, limit + 1, None).await?;
        let keyed = docs
            .iter()
            .map(|d| Ok((d.get_str("_id").map(str::to_string).unwrap_or_default(), read_any(collection, d)?)))
            .collect::<StoreResult<Vec<(String, AnyDoc)>>>()?;
        let page = crate::store::into_page(keyed, limit, |(key, _)| key.clone());
        Ok(ScanPage { docs: page.items.into_iter().map(|(_, doc)| doc).collect(), next_key: page.next_cursor })
    }
}

fn overflowing_cursor(collection: &str, limit: u32) -> ProjectionError {
    ProjectionError::Store(format!("a cursor on {collection} returned more than the {limit} documents asked"))
}

/// A bookkeeping number (a checkpoint, a version) as MongoDB may hold it:
/// any whole number; anything else is an error, never a default.
fn bookkeeping_number(d: &Document, collection: &str, field: &str) -> StoreResult<Option<i64>> {
    documents::whole_number(d.get(field))
        .map_err(|reason| ProjectionError::corrupt(collection, format!("field {field}: {reason}")))
}

fn bookkeeping_u32(d: &Document, collection: &str, field: &str) -> StoreResult<Option<u32>> {
    bookkeeping_number(d, collection, field)?
        .map(|v| {
            u32::try_from(v)
                .map_err(|_| ProjectionError::corrupt(collection, format!("field {field}: {v} is not a version")))
        })
        .transpose()
}

fn read_any(collection: Collection, d: &Document) -> StoreResult<AnyDoc> {
    let c = collection.base_name();
    let text =
        |f: &str| d.get_str(f).map(str::to_string).map_err(|_| ProjectionError::corrupt(c, format!("field {f}")));
    Ok(match collection {
        Collection::Users => AnyDoc::User(documents::read_user(d)?),
        Collection::Wallets => AnyDoc::Wallet(documents::read_wallet(d)?),
        Collection::Transactions => AnyDoc::Transaction(documents::read_transaction(d)?),
        Collection::StripeSessions => AnyDoc::StripeSession(text("_id")?, text("sessionId")?),
        Collection::Streams => AnyDoc::Stream(documents::read_stream(d)?),
        Collection::StreamViewers => {
            let (stream, viewer, _) = documents::read_viewer(d)?;
            AnyDoc::StreamViewer(stream, viewer)
        }
        Collection::Payouts => AnyDoc::Payout(documents::read_payout(d)?),
        Collection::LedgerEntries => AnyDoc::LedgerEntry(documents::read_entry(d)?),
        Collection::LedgerAccounts => AnyDoc::LedgerAccount(documents::read_account(d)?),
        Collection::GiftLeaderboards => AnyDoc::Leaderboard(documents::read_leaderboard(d)?),
        Collection::StripePayments => AnyDoc::StripePayment(documents::read_stripe_payment(d)?),
        Collection::Adjustments => AnyDoc::Adjustment(documents::read_adjustment(d)?),
        Collection::LedgerDaily => AnyDoc::LedgerDay(documents::read_ledger_day(d)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client connects lazily: no server is needed to read the names.
    #[tokio::test]
    async fn the_database_is_mongodb_db_else_the_uris_else_halobuzz() {
        let named = Client::with_uri_str("mongodb://127.0.0.1:1/halobuzz_prod").await.expect("a client");
        assert_eq!(database_of(&named, None).name(), "halobuzz_prod");
        assert_eq!(database_of(&named, Some("other")).name(), "other");
        let unnamed = Client::with_uri_str("mongodb://127.0.0.1:1").await.expect("a client");
        assert_eq!(database_of(&unnamed, None).name(), DEFAULT_DATABASE);
        let auth_only = Client::with_uri_str("mongodb://u:p@127.0.0.1:1/admin").await.expect("a client");
        assert_eq!(database_of(&auth_only, None).name(), DEFAULT_DATABASE, "admin is where to log in");
    }

    #[test]
    fn only_transient_errors_are_retried() {
        use mongodb::error::{CommandError, Error};
        let command = |code: i32| {
            let e: CommandError =
                mongodb::bson::from_document(doc! {"code": code, "codeName": "", "errmsg": ""}).expect("an error");
            Error::from(ErrorKind::Command(e))
        };
        assert!(is_transient(&command(10107)), "not writable primary: an election");
        assert!(is_transient(&command(112)), "a write conflict");
        assert!(!is_transient(&command(166)), "a write to a view");
        assert!(!is_transient(&command(86)), "an index conflict");
        assert!(!is_transient(&command(10334)), "a document too large");
        // Labelled errors (the driver's and the server's) are retried too:
        // `tests/it/mongo.rs` injects one with the `failCommand` fail point.
        assert!(matches!(classify(command(166)), ProjectionError::StoreRefused(_)));
        assert!(matches!(classify(command(91)), ProjectionError::Store(_)));
    }
}
