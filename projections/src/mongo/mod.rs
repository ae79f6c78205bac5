//! The production read store: MongoDB, with the runbook's collection names,
//! fields and indexes, so that the existing admin panel reads them.
//!
//! A batch becomes ordered `update` commands (one per run of writes on one
//! collection: the bulk write), then the checkpoints. Where the deployment
//! runs transactions (a replica set or a sharded cluster), all of it is one
//! transaction. Where it does not (a standalone server), the writes are
//! idempotent and the checkpoint goes last: every update is guarded by the
//! event's position (see `plan`), so a batch replayed after a crash changes
//! nothing it already changed.
//!
//! Every read and write is a database command built by the pure functions of
//! `plan` (unit-tested without a server); this module only sends them.

pub mod plan;

use std::collections::{BTreeSet, HashMap};

use events_schema::Account;
use futures_util::future::BoxFuture;
use mongodb::bson::{Bson, Document, doc};
use mongodb::{Client, ClientSession, Database};
use uuid::Uuid;

use crate::ProjectionError;
use crate::change::{ApplyOutcome, Change, ProjectedBatch};
use crate::model::{
    Checkpoint, Collection, LeaderboardEntry, LedgerEntryDoc, Page, PageRequest, PayoutDoc, PayoutStatus, Projection,
    ProjectionVersion, StreamDoc, StripePaymentDoc, TransactionDoc, TransactionFilter, TrialBalance, UserDoc,
    WalletDoc, cursor,
};
use crate::store::{AnyDoc, ReadStore, SCAN_LIMIT_MAX, ScanPage, StoreResult, normalise_email};
use plan::{CHECKPOINTS, LEASES, VERSIONS};

/// MongoDB's "namespace exists" and "namespace not found" error codes.
const NAMESPACE_EXISTS: i32 = 48;
const NAMESPACE_NOT_FOUND: i32 = 26;

/// The MongoDB read store. Cheap to clone (the client is shared).
#[derive(Debug, Clone)]
pub struct MongoStore {
    client: Client,
    db: Database,
    transactions: bool,
}

fn store_err(e: mongodb::error::Error) -> ProjectionError {
    ProjectionError::store(e)
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

fn server_code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

impl MongoStore {
    /// Connects to `uri` (`MONGODB_URI`) and uses `database` (`MONGODB_DB`),
    /// else the database the URI names (the runbook's
    /// `mongodb+srv://.../halobuzz`), else [`DEFAULT_DATABASE`]; finds out
    /// whether the deployment runs transactions.
    pub async fn connect(uri: &str, database: Option<&str>) -> StoreResult<MongoStore> {
        let client = Client::with_uri_str(uri).await.map_err(store_err)?;
        let db = database_of(&client, database);
        let hello = db.run_command(doc! {"hello": 1}).await.map_err(store_err)?;
        let transactions = plan::supports_transactions(&hello);
        tracing::info!(database = db.name(), transactions, "mongodb read store connected");
        Ok(MongoStore { client, db, transactions })
    }

    /// Whether batches are applied in transactions (otherwise idempotently).
    pub fn uses_transactions(&self) -> bool {
        self.transactions
    }

    /// Drops the whole database (tests).
    pub async fn drop_database(&self) -> StoreResult<()> {
        self.db.drop().await.map_err(store_err)
    }

    async fn command(&self, command: Document, session: Option<&mut ClientSession>) -> StoreResult<Document> {
        let action = self.db.run_command(command);
        match session {
            Some(s) => action.session(s).await,
            None => action.await,
        }
        .map_err(store_err)
    }

    /// A `find` of at most `limit` documents, in one batch.
    async fn find(
        &self,
        collection: &str,
        filter: Document,
        sort: Document,
        limit: u32,
        session: Option<&mut ClientSession>,
    ) -> StoreResult<Vec<Document>> {
        let reply = self
            .command(
                doc! {"find": collection, "filter": filter, "sort": sort, "limit": i64::from(limit), "singleBatch": true},
                session,
            )
            .await?;
        first_batch(&reply)
    }

    /// Runs an ordered `update` command; an upsert that hits a duplicate key
    /// (already applied) is passed over and the rest sent again. In a
    /// transaction the server aborts on any write error, so the batch fails
    /// and is retried whole.
    async fn run_update(&self, command: Document, mut session: Option<&mut ClientSession>) -> StoreResult<u64> {
        let in_transaction = session.is_some();
        let mut command = command;
        let mut matched = 0u64;
        // Bounded: each round starts after a statement that failed.
        for _ in 0..=plan::COMMAND_WRITES_MAX {
            let reply = self.command(command.clone(), session.as_deref_mut()).await?;
            matched += reply.get_i32("n").ok().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
            match plan::resume_after(&reply)? {
                None => return Ok(matched),
                Some(_) if in_transaction => {
                    return Err(ProjectionError::Store(
                        "duplicate key inside a transaction (a concurrent writer?)".into(),
                    ));
                }
                Some(index) => match plan::command_from(&command, index + 1) {
                    Some(rest) => command = rest,
                    None => return Ok(matched),
                },
            }
        }
        Err(ProjectionError::Store("update command did not finish".into()))
    }

    /// Points the runbook names of `projection`'s collections at its active
    /// version, as read-only views (`plan::runbook_view_commands`). It
    /// runs after the switch or drop that calls it has taken effect, so a
    /// failure is a warning naming the collection, not an error.
    async fn point_runbook_names(&self, projection: Projection) {
        let first = ProjectionVersion::new(projection, 1);
        let state = async {
            let active = self.active_version_with(projection, None).await?;
            let kept = !self.find(CHECKPOINTS, doc! {"_id": first.key()}, doc! {}, 1, None).await?.is_empty();
            Ok::<_, ProjectionError>((active, kept))
        };
        let (active, kept) = match state.await {
            Ok(state) => state,
            Err(error) => {
                tracing::warn!(projection = projection.name(), %error, "runbook names not pointed at the active version");
                return;
            }
        };
        // Viewers live in their stream's document here: no collection.
        for collection in projection.collections().iter().filter(|c| **c != Collection::StreamViewers) {
            let (base, target) = (collection.base_name(), collection.physical_name(active));
            let pointed = async {
                let listed = self
                    .command(doc! {"listCollections": 1, "filter": {"name": base}, "nameOnly": false}, None)
                    .await?;
                let commands = plan::runbook_view_commands(base, &target, plan::name_holder(&listed), kept);
                let changed = !commands.is_empty();
                for command in commands {
                    match self.db.run_command(command).await {
                        Ok(_) => {}
                        Err(e) if server_code(&e) == Some(NAMESPACE_NOT_FOUND) => {}
                        Err(e) => return Err(store_err(e)),
                    }
                }
                Ok::<_, ProjectionError>(changed)
            };
            match pointed.await {
                Ok(true) => tracing::info!(base, target, "the runbook name reads the active version"),
                Ok(false) if base != target => {
                    tracing::warn!(base, target, "kept version 1 holds the runbook name until it is dropped");
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(base, target, %error, "the runbook name could not be pointed at the active version")
                }
            }
        }
    }

    async fn active_version_with(
        &self,
        projection: Projection,
        session: Option<&mut ClientSession>,
    ) -> StoreResult<u32> {
        let docs = self.find(VERSIONS, doc! {"_id": projection.name()}, doc! {}, 1, session).await?;
        Ok(docs.first().and_then(|d| d.get_i64("active").ok()).and_then(|v| u32::try_from(v).ok()).unwrap_or(1))
    }

    async fn active_collection(&self, projection: Projection, collection: Collection) -> StoreResult<String> {
        Ok(collection.physical_name(self.active_version_with(projection, None).await?))
    }

    async fn apply_in(
        &self,
        batch: &ProjectedBatch,
        mut session: Option<&mut ClientSession>,
    ) -> StoreResult<ApplyOutcome> {
        let mut checkpoints = Vec::with_capacity(batch.targets.len());
        for target in &batch.targets {
            let active = self.active_version_with(target.projection, session.as_deref_mut()).await?;
            if target.version < active {
                return Err(ProjectionError::Retired {
                    projection: target.projection.name().to_string(),
                    version: target.version,
                    active,
                });
            }
            let docs = self.find(CHECKPOINTS, doc! {"_id": target.key()}, doc! {}, 1, session.as_deref_mut()).await?;
            let position = docs.first().and_then(|d| d.get_i64("position").ok()).unwrap_or(0);
            checkpoints.push(crate::model::pos_u64(CHECKPOINTS, position)?);
        }
        // What the plan needs to know: the platform accounts' balances as of
        // the checkpoint (the last entry at or before it), and the Checkout
        // Sessions of the purchases.
        let mut balances: HashMap<(u8, Account), i64> = HashMap::new();
        let mut payments: BTreeSet<String> = BTreeSet::new();
        for pc in &batch.changes {
            let index = usize::from(pc.target);
            let (Some(target), Some(checkpoint)) = (batch.targets.get(index), checkpoints.get(index)) else {
                continue;
            };
            if pc.position <= *checkpoint {
                continue;
            }
            match &pc.change {
                Change::Posting(p) if p.balance_after.is_none() && !balances.contains_key(&(pc.target, p.account)) => {
                    let (filter, sort) = plan::balance_at_query(p.account, *checkpoint)?;
                    let entries = Collection::LedgerEntries.physical_name(target.version);
                    let last = self.find(&entries, filter, sort, 1, session.as_deref_mut()).await?;
                    let balance = last.first().map(plan::read_entry).transpose()?.map_or(0, |e| e.balance_after);
                    balances.insert((pc.target, p.account), balance);
                }
                Change::Transaction(t) => {
                    if let Some(payment) = &t.metadata.payment_id {
                        payments.insert(payment.clone());
                    }
                }
                _ => {}
            }
        }
        let mut sessions = HashMap::new();
        if let Some(target) = batch.targets.iter().find(|t| t.projection == Projection::Transactions)
            && !payments.is_empty()
        {
            let ids: Vec<Bson> = payments.into_iter().map(Bson::String).collect();
            let limit = u32::try_from(ids.len()).unwrap_or(u32::MAX);
            let found = self
                .find(
                    &Collection::StripeSessions.physical_name(target.version),
                    doc! {"_id": {"$in": ids}},
                    doc! {},
                    limit,
                    session.as_deref_mut(),
                )
                .await?;
            for d in found {
                if let (Ok(payment), Ok(s)) = (d.get_str("_id"), d.get_str("sessionId")) {
                    sessions.insert(payment.to_string(), s.to_string());
                }
            }
        }
        let planned = plan::plan_batch(batch, &checkpoints, &mut sessions, &mut balances)?;
        for command in plan::update_commands(&planned.writes) {
            self.run_update(command, session.as_deref_mut()).await?;
        }
        // Checkpoints last: without a transaction, a crash before them means
        // the batch is replayed, which the guards make harmless.
        let now = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now());
        let mut writes = Vec::with_capacity(batch.targets.len());
        for target in &batch.targets {
            writes.push(plan::checkpoint_write(target.projection, target.version, batch.to_position, now)?);
        }
        for command in plan::update_commands(&writes) {
            self.run_update(command, session.as_deref_mut()).await?;
        }
        Ok(ApplyOutcome { applied: planned.applied, skipped: planned.skipped, committed: true })
    }

    async fn apply_batch(&self, batch: ProjectedBatch) -> StoreResult<ApplyOutcome> {
        if !self.transactions {
            return self.apply_in(&batch, None).await;
        }
        let mut session = self.client.start_session().await.map_err(store_err)?;
        session.start_transaction().await.map_err(store_err)?;
        match self.apply_in(&batch, Some(&mut session)).await {
            Ok(outcome) => {
                session.commit_transaction().await.map_err(store_err)?;
                Ok(outcome)
            }
            Err(e) => {
                if let Err(abort) = session.abort_transaction().await {
                    tracing::warn!(error = %abort, "mongodb transaction abort failed");
                }
                Err(e)
            }
        }
    }

    async fn create_collection(&self, name: &str) -> StoreResult<()> {
        match self.db.run_command(doc! {"create": name}).await {
            Ok(_) => Ok(()),
            Err(e) if server_code(&e) == Some(NAMESPACE_EXISTS) => Ok(()),
            Err(e) => Err(store_err(e)),
        }
    }

    async fn prepare_all(&self, targets: Vec<ProjectionVersion>) -> StoreResult<()> {
        for meta in [CHECKPOINTS, LEASES, VERSIONS] {
            self.create_collection(meta).await?;
        }
        for target in targets {
            // Viewers live in their stream's document here.
            for collection in target.projection.collections().iter().filter(|c| **c != Collection::StreamViewers) {
                self.create_collection(&collection.physical_name(target.version)).await?;
                if let Some(command) = plan::create_indexes_command(*collection, target.version) {
                    self.command(command, None).await?;
                }
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
        let mut items = docs.iter().map(read).collect::<StoreResult<Vec<T>>>()?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(cursor_of)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn one<T>(
        &self,
        projection: Projection,
        collection: Collection,
        filter: Document,
        read: fn(&Document) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        let name = self.active_collection(projection, collection).await?;
        let docs = self.find(&name, filter, doc! {}, 1, None).await?;
        docs.first().map(read).transpose()
    }

    async fn scan_collection(
        &self,
        target: ProjectionVersion,
        collection: Collection,
        after: Option<String>,
        limit: u32,
    ) -> StoreResult<ScanPage> {
        if !target.projection.collections().contains(&collection) {
            return Err(ProjectionError::InvalidInput(format!("{collection:?} is not a collection of {target}")));
        }
        let limit = limit.clamp(1, SCAN_LIMIT_MAX);
        let name = collection.physical_name(target.version);
        let after_filter = after.as_ref().map_or_else(Document::new, |a| doc! {"_id": {"$gt": a}});
        let docs = if collection == Collection::StreamViewers {
            // Viewers live in their stream's document here.
            let streams = Collection::Streams.physical_name(target.version);
            let reply = self
                .command(
                    doc! {"aggregate": streams, "pipeline": [
                        {"$match": {"viewerIds.0": {"$exists": true}}},
                        {"$unwind": "$viewerIds"},
                        {"$project": {"_id": {"$concat": ["$_id", "|", "$viewerIds"]}, "s": "$_id", "v": "$viewerIds"}},
                        {"$match": after_filter},
                        {"$sort": {"_id": 1}},
                        {"$limit": i64::from(limit) + 1},
                    ], "cursor": {}},
                    None,
                )
                .await?;
            first_batch(&reply)?
        } else {
            self.find(&name, after_filter, doc! {"_id": 1}, limit + 1, None).await?
        };
        let mut out = Vec::with_capacity(docs.len());
        let mut keys = Vec::with_capacity(docs.len());
        for d in &docs {
            keys.push(d.get_str("_id").map(str::to_string).unwrap_or_default());
            out.push(read_any(collection, d)?);
        }
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let next_key = if out.len() > limit {
            out.truncate(limit);
            keys.get(limit - 1).cloned()
        } else {
            None
        };
        Ok(ScanPage { docs: out, next_key })
    }
}

fn first_batch(reply: &Document) -> StoreResult<Vec<Document>> {
    let batch = reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .map_err(|e| ProjectionError::Store(format!("unexpected reply: {e}")))?;
    Ok(batch.iter().filter_map(|b| b.as_document().cloned()).collect())
}

fn read_any(collection: Collection, d: &Document) -> StoreResult<AnyDoc> {
    let c = collection.base_name();
    let text =
        |f: &str| d.get_str(f).map(str::to_string).map_err(|_| ProjectionError::corrupt(c, format!("field {f}")));
    let id = |f: &str| Uuid::parse_str(&text(f)?).map_err(|_| ProjectionError::corrupt(c, format!("field {f}")));
    Ok(match collection {
        Collection::Users => AnyDoc::User(plan::read_user(d)?),
        Collection::Wallets => AnyDoc::Wallet(plan::read_wallet(d)?),
        Collection::Transactions => AnyDoc::Transaction(plan::read_transaction(d)?),
        Collection::StripeSessions => AnyDoc::StripeSession(text("_id")?, text("sessionId")?),
        Collection::Streams => AnyDoc::Stream(plan::read_stream(d)?),
        Collection::StreamViewers => AnyDoc::StreamViewer(id("s")?, id("v")?),
        Collection::Payouts => AnyDoc::Payout(plan::read_payout(d)?),
        Collection::LedgerEntries => AnyDoc::LedgerEntry(plan::read_entry(d)?),
        Collection::LedgerAccounts => AnyDoc::LedgerAccount(plan::read_account(d)?),
        Collection::GiftLeaderboards => AnyDoc::Leaderboard(plan::read_leaderboard(d)?),
        Collection::StripePayments => AnyDoc::StripePayment(plan::read_stripe_payment(d)?),
    })
}

/// A descending cursor `(integer key, id)`.
fn int_id_cursor(page: &PageRequest) -> StoreResult<Option<(i64, String)>> {
    page.cursor
        .as_ref()
        .map(|c| {
            let parts = cursor::decode(c, 2)?;
            Ok((cursor::int(&parts[0])?, parts[1].clone()))
        })
        .transpose()
}

impl ReadStore for MongoStore {
    fn backend(&self) -> &'static str {
        "mongodb"
    }

    fn prepare<'a>(&'a self, targets: &'a [ProjectionVersion]) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(self.prepare_all(targets.to_vec()))
    }

    fn apply(&self, batch: ProjectedBatch) -> BoxFuture<'_, StoreResult<ApplyOutcome>> {
        Box::pin(self.apply_batch(batch))
    }

    fn checkpoints(&self) -> BoxFuture<'_, StoreResult<Vec<Checkpoint>>> {
        Box::pin(async move {
            let versions = self.find(VERSIONS, doc! {}, doc! {}, 1_000, None).await?;
            let docs = self.find(CHECKPOINTS, doc! {}, doc! {"_id": 1}, 10_000, None).await?;
            let mut out = Vec::with_capacity(docs.len());
            for d in docs {
                let Some(projection) = d.get_str("projection").ok().and_then(Projection::parse) else { continue };
                let version = d.get_i64("version").ok().and_then(|v| u32::try_from(v).ok()).unwrap_or(1);
                let active = versions
                    .iter()
                    .find(|v| v.get_str("_id").is_ok_and(|n| n == projection.name()))
                    .and_then(|v| v.get_i64("active").ok())
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or(1);
                let position = crate::model::pos_u64(CHECKPOINTS, d.get_i64("position").unwrap_or(0))?;
                let updated_at = d
                    .get_datetime("updatedAt")
                    .ok()
                    .and_then(|t| chrono::DateTime::from_timestamp_millis(t.timestamp_millis()))
                    .unwrap_or_default();
                out.push(Checkpoint { projection, version, position, active: version == active, updated_at });
            }
            out.sort_by_key(|c| (c.projection.name(), c.version));
            Ok(out)
        })
    }

    fn acquire_lease<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        ttl_ms: u64,
        now_ms: i64,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        Box::pin(async move {
            let expires = now_ms.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
            let command = doc! {"update": LEASES, "updates": [{
                "q": plan::lease_filter(key, owner, now_ms), "u": plan::lease_update(owner, expires), "upsert": true,
            }], "ordered": true};
            let reply = self.command(command, None).await?;
            // Held by another: the filter matched nothing and the upsert hit
            // the existing `_id`.
            Ok(plan::resume_after(&reply)?.is_none() && reply.get_i32("n").unwrap_or(0) >= 1)
        })
    }

    fn release_lease<'a>(&'a self, key: &'a str, owner: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(async move {
            let command = doc! {"update": LEASES, "updates": [{
                "q": {"_id": key, "owner": owner}, "u": {"$set": {"expiresAt": 0i64}}, "upsert": false,
            }]};
            self.run_update(command, None).await.map(|_| ())
        })
    }

    fn active_version(&self, projection: Projection) -> BoxFuture<'_, StoreResult<u32>> {
        Box::pin(self.active_version_with(projection, None))
    }

    fn activate(&self, target: ProjectionVersion) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            // Forward only: a registry at a newer version matches nothing,
            // and the upsert then hits its `_id`.
            let version = i64::from(target.version);
            let command = doc! {"update": VERSIONS, "updates": [{
                "q": {"_id": target.projection.name(), "active": {"$lte": version}},
                "u": {"$set": {"active": version}}, "upsert": true,
            }]};
            let reply = self.command(command, None).await?;
            if plan::resume_after(&reply)?.is_some() {
                return Err(ProjectionError::InvalidInput(format!("{target} is older than the active version")));
            }
            self.point_runbook_names(target.projection).await;
            Ok(())
        })
    }

    fn drop_version(&self, target: ProjectionVersion) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            if self.active_version_with(target.projection, None).await? == target.version {
                return Err(ProjectionError::InvalidInput(format!("{target} is the active version")));
            }
            for collection in target.projection.collections() {
                let name = collection.physical_name(target.version);
                match self.db.run_command(doc! {"drop": &name}).await {
                    Ok(_) => {}
                    Err(e) if server_code(&e) == Some(NAMESPACE_NOT_FOUND) => {}
                    Err(e) => return Err(store_err(e)),
                }
            }
            self.command(doc! {"delete": CHECKPOINTS, "deletes": [{"q": {"_id": target.key()}, "limit": 1}]}, None)
                .await?;
            // Dropping version 1 frees the runbook names.
            self.point_runbook_names(target.projection).await;
            Ok(())
        })
    }

    fn scan<'a>(
        &'a self,
        target: ProjectionVersion,
        collection: Collection,
        after_key: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, StoreResult<ScanPage>> {
        Box::pin(self.scan_collection(target, collection, after_key.map(str::to_string), limit))
    }

    fn user_by_id(&self, user_id: Uuid) -> BoxFuture<'_, StoreResult<Option<UserDoc>>> {
        Box::pin(self.one(Projection::Users, Collection::Users, doc! {"_id": user_id.to_string()}, plan::read_user))
    }

    fn user_by_email<'a>(&'a self, email: &'a str) -> BoxFuture<'a, StoreResult<Option<UserDoc>>> {
        let email = normalise_email(email);
        Box::pin(
            async move { self.one(Projection::Users, Collection::Users, doc! {"email": email}, plan::read_user).await },
        )
    }

    fn wallet(&self, user_id: Uuid) -> BoxFuture<'_, StoreResult<Option<WalletDoc>>> {
        Box::pin(self.one(
            Projection::Wallets,
            Collection::Wallets,
            doc! {"_id": user_id.to_string()},
            plan::read_wallet,
        ))
    }

    fn transactions<'a>(
        &'a self,
        user_id: Uuid,
        filter: TransactionFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TransactionDoc>>> {
        Box::pin(async move {
            let after = int_id_cursor(page)?;
            let name = self.active_collection(Projection::Transactions, Collection::Transactions).await?;
            let query = plan::transactions_query(user_id, filter, after.as_ref().map(|(t, id)| (*t, id.as_str())));
            self.page_of(&name, query, page.limit(), plan::read_transaction, |t: &TransactionDoc| {
                cursor::encode(&[&t.created_at.timestamp_millis().to_string(), &t.id.to_string()])
            })
            .await
        })
    }

    fn live_streams<'a>(
        &'a self,
        category: Option<&'a str>,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<StreamDoc>>> {
        Box::pin(async move {
            let after = int_id_cursor(page)?;
            let category = category.map(|c| c.trim().to_lowercase());
            let name = self.active_collection(Projection::Streams, Collection::Streams).await?;
            let query = plan::live_streams_query(category.as_deref(), after.as_ref().map(|(v, id)| (*v, id.as_str())));
            self.page_of(&name, query, page.limit(), plan::read_stream, |s: &StreamDoc| {
                cursor::encode(&[&s.viewers.to_string(), &s.id.to_string()])
            })
            .await
        })
    }

    fn stream(&self, stream_id: Uuid) -> BoxFuture<'_, StoreResult<Option<StreamDoc>>> {
        Box::pin(self.one(
            Projection::Streams,
            Collection::Streams,
            doc! {"_id": stream_id.to_string()},
            plan::read_stream,
        ))
    }

    fn leaderboard<'a>(
        &'a self,
        stream_id: Uuid,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<LeaderboardEntry>>> {
        Box::pin(async move {
            let after = int_id_cursor(page)?;
            let name = self.active_collection(Projection::GiftLeaderboards, Collection::GiftLeaderboards).await?;
            let query = plan::leaderboard_query(stream_id, after.as_ref().map(|(c, u)| (*c, u.as_str())));
            self.page_of(&name, query, page.limit(), plan::read_leaderboard, |e: &LeaderboardEntry| {
                cursor::encode(&[&e.coins.to_string(), &e.user_id.to_string()])
            })
            .await
        })
    }

    fn payout(&self, payout_id: Uuid) -> BoxFuture<'_, StoreResult<Option<PayoutDoc>>> {
        Box::pin(self.one(
            Projection::Payouts,
            Collection::Payouts,
            doc! {"_id": payout_id.to_string()},
            plan::read_payout,
        ))
    }

    fn user_payouts<'a>(&'a self, user_id: Uuid, page: &'a PageRequest) -> BoxFuture<'a, StoreResult<Page<PayoutDoc>>> {
        Box::pin(async move {
            let after = int_id_cursor(page)?;
            let name = self.active_collection(Projection::Payouts, Collection::Payouts).await?;
            let query = plan::payouts_query(Some(user_id), None, after.as_ref().map(|(t, id)| (*t, id.as_str())));
            self.page_of(&name, query, page.limit(), plan::read_payout, payout_cursor).await
        })
    }

    fn payouts<'a>(
        &'a self,
        status: Option<PayoutStatus>,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<PayoutDoc>>> {
        Box::pin(async move {
            let after = int_id_cursor(page)?;
            let name = self.active_collection(Projection::Payouts, Collection::Payouts).await?;
            let query = plan::payouts_query(None, status, after.as_ref().map(|(t, id)| (*t, id.as_str())));
            self.page_of(&name, query, page.limit(), plan::read_payout, payout_cursor).await
        })
    }

    fn ledger_entries<'a>(
        &'a self,
        account: Account,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<LedgerEntryDoc>>> {
        Box::pin(async move {
            let after = match &page.cursor {
                None => None,
                Some(c) => {
                    let parts = cursor::decode(c, 2)?;
                    Some((cursor::int(&parts[0])?, cursor::int(&parts[1])?))
                }
            };
            let name = self.active_collection(Projection::Ledger, Collection::LedgerEntries).await?;
            self.page_of(
                &name,
                plan::entries_query(account, after),
                page.limit(),
                plan::read_entry,
                |e: &LedgerEntryDoc| cursor::encode(&[&e.position.to_string(), &e.seq.to_string()]),
            )
            .await
        })
    }

    fn trial_balance<'a>(&'a self, page: &'a PageRequest) -> BoxFuture<'a, StoreResult<TrialBalance>> {
        Box::pin(async move {
            let after = match &page.cursor {
                None => None,
                Some(c) => Some(cursor::decode(c, 1)?.remove(0)),
            };
            let version = self.active_version_with(Projection::Ledger, None).await?;
            let name = Collection::LedgerAccounts.physical_name(version);
            let filter = after.map_or_else(Document::new, |a| doc! {"_id": {"$gt": a}});
            let page = self
                .page_of(&name, (filter, doc! {"_id": 1}), page.limit(), plan::read_account, |a| {
                    cursor::encode(&[&a.account.to_string()])
                })
                .await?;
            let reply = self
                .command(
                    doc! {"aggregate": &name, "pipeline": [
                        {"$group": {"_id": Bson::Null, "total": {"$sum": "$balance"}, "count": {"$sum": 1}}}
                    ], "cursor": {}},
                    None,
                )
                .await?;
            let totals = first_batch(&reply)?;
            let number = |field: &str| match totals.first().and_then(|d| d.get(field)) {
                Some(Bson::Int64(v)) => *v,
                Some(Bson::Int32(v)) => i64::from(*v),
                _ => 0,
            };
            let (total, count) = (number("total"), number("count"));
            let key = ProjectionVersion::new(Projection::Ledger, version).key();
            let checkpoint = self.find(CHECKPOINTS, doc! {"_id": key}, doc! {}, 1, None).await?;
            let position = checkpoint.first().and_then(|d| d.get_i64("position").ok()).unwrap_or(0);
            Ok(TrialBalance {
                items: page.items,
                next_cursor: page.next_cursor,
                total_coins: total,
                accounts_count: u64::try_from(count).unwrap_or(0),
                position: crate::model::pos_u64(CHECKPOINTS, position)?,
            })
        })
    }

    fn stripe_payment<'a>(&'a self, payment_id: &'a str) -> BoxFuture<'a, StoreResult<Option<StripePaymentDoc>>> {
        Box::pin(self.one(
            Projection::StripePayments,
            Collection::StripePayments,
            doc! {"_id": payment_id},
            plan::read_stripe_payment,
        ))
    }

    fn stripe_payments<'a>(&'a self, page: &'a PageRequest) -> BoxFuture<'a, StoreResult<Page<StripePaymentDoc>>> {
        Box::pin(async move {
            let after = match &page.cursor {
                None => None,
                Some(c) => Some(cursor::decode(c, 1)?.remove(0)),
            };
            let name = self.active_collection(Projection::StripePayments, Collection::StripePayments).await?;
            self.page_of(
                &name,
                plan::stripe_payments_query(after.as_deref()),
                page.limit(),
                plan::read_stripe_payment,
                |d: &StripePaymentDoc| cursor::encode(&[&d.payment_id]),
            )
            .await
        })
    }
}

fn payout_cursor(p: &PayoutDoc) -> String {
    cursor::encode(&[&p.requested_at.timestamp_millis().to_string(), &p.id.to_string()])
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
}
