//! The read-store port: applying projected batches with their checkpoints,
//! leases for active/standby projectors, the registry of active projection
//! versions, and the queries the API serves.
//!
//! Methods return boxed futures (rather than `async fn`) so that the trait is
//! dyn-compatible: the API holds an `Arc<dyn ReadStore>` chosen at start
//! (MongoDB when `MONGODB_URI` is set, the embedded store otherwise).

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use events_schema::Account;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::ProjectionError;
use crate::change::{ApplyOutcome, ProjectedBatch};
use crate::model::{
    AccountBalance, AdjustmentDoc, AdjustmentStatus, Checkpoint, Collection, LeaderboardEntry, LedgerDayDoc,
    LedgerEntryDoc, Page, PageRequest, PayoutDoc, PayoutStatus, Projection, ProjectionVersion, StreamDoc,
    StripePaymentDoc, StripePaymentFilter, TransactionDoc, TransactionFilter, TrialBalance, UserDoc, WalletDoc,
};

pub type StoreResult<T> = Result<T, ProjectionError>;

/// Any stored document, for scans (checksums, verification, export).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "collection", content = "doc", rename_all = "snake_case")]
pub enum AnyDoc {
    User(UserDoc),
    Wallet(WalletDoc),
    Transaction(TransactionDoc),
    /// `(paymentId, sessionId)`.
    StripeSession(String, String),
    Stream(StreamDoc),
    /// `(streamId, viewerId)`: a viewer present now.
    StreamViewer(Uuid, Uuid),
    Payout(PayoutDoc),
    LedgerEntry(LedgerEntryDoc),
    LedgerAccount(AccountBalance),
    Leaderboard(LeaderboardEntry),
    StripePayment(StripePaymentDoc),
    Adjustment(AdjustmentDoc),
    LedgerDay(LedgerDayDoc),
}

/// One page of a scan: documents in key order and the key to continue after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    pub docs: Vec<AnyDoc>,
    /// `None` when the collection has no more documents.
    pub next_key: Option<String>,
}

/// The read-store port. Every adapter passes the same conformance suite
/// (`projections/tests/it/conformance.rs`).
pub trait ReadStore: Send + Sync + fmt::Debug {
    /// A short name for logs and metrics (`sqlite`, `mongodb`).
    fn backend(&self) -> &'static str;

    /// Creates what is missing for these projection versions: collections
    /// (tables) and their indexes. Idempotent; called by the runner at start.
    fn prepare<'a>(&'a self, targets: &'a [ProjectionVersion]) -> BoxFuture<'a, StoreResult<()>>;

    /// Applies a batch and moves every target's checkpoint to its
    /// `to_position`, all or nothing (embedded store) or idempotently
    /// (MongoDB without transactions: checkpoint last). Changes at or before
    /// their projection's checkpoint are skipped, so applying a batch again
    /// changes nothing. Fails with `Retired` when a target's version was
    /// replaced, and nothing is applied then.
    fn apply(&self, batch: ProjectedBatch) -> BoxFuture<'_, StoreResult<ApplyOutcome>>;

    /// Commits any batch held open (see `ProjectedBatch::hold_open`).
    fn flush(&self) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Every checkpoint, with whether its version is the active one.
    fn checkpoints(&self) -> BoxFuture<'_, StoreResult<Vec<Checkpoint>>>;

    /// Takes or renews the lease `key` for `owner` until `now_ms + ttl_ms`:
    /// granted when free, expired, or already `owner`'s (compare and set).
    /// `now_ms` is the caller's clock (milliseconds since the epoch); a
    /// store with a clock of its own uses that instead (MongoDB: the
    /// server's, `$$NOW`, so that holders whose clocks disagree still see
    /// one expiry).
    fn acquire_lease<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        ttl_ms: u64,
        now_ms: i64,
    ) -> BoxFuture<'a, StoreResult<bool>>;

    /// Gives the lease up, if `owner` holds it, so a standby takes over now.
    fn release_lease<'a>(&'a self, key: &'a str, owner: &'a str) -> BoxFuture<'a, StoreResult<()>>;

    /// The version of `projection` that serves queries (1 until another is
    /// activated).
    fn active_version(&self, projection: Projection) -> BoxFuture<'_, StoreResult<u32>>;

    /// Makes `target` the version that serves queries (an atomic switch of
    /// the registry). Refuses to go back to an older version.
    fn activate(&self, target: ProjectionVersion) -> BoxFuture<'_, StoreResult<()>>;

    /// Drops a version's collections and checkpoint. Refuses the active one.
    fn drop_version(&self, target: ProjectionVersion) -> BoxFuture<'_, StoreResult<()>>;

    /// Up to `limit` documents of `collection` of `target`, in key order,
    /// after `after_key`.
    fn scan<'a>(
        &'a self,
        target: ProjectionVersion,
        collection: Collection,
        after_key: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, StoreResult<ScanPage>>;

    // Queries. Each reads the active version of the projection it needs.

    fn user_by_id(&self, user_id: Uuid) -> BoxFuture<'_, StoreResult<Option<UserDoc>>>;

    /// `email` is normalised (trimmed, lower case) before the lookup.
    fn user_by_email<'a>(&'a self, email: &'a str) -> BoxFuture<'a, StoreResult<Option<UserDoc>>>;

    fn wallet(&self, user_id: Uuid) -> BoxFuture<'_, StoreResult<Option<WalletDoc>>>;

    /// A user's transactions, newest first.
    fn transactions<'a>(
        &'a self,
        user_id: Uuid,
        filter: TransactionFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TransactionDoc>>>;

    /// Live streams, most viewers first (ties: newest id first).
    fn live_streams<'a>(
        &'a self,
        category: Option<&'a str>,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<StreamDoc>>>;

    fn stream(&self, stream_id: Uuid) -> BoxFuture<'_, StoreResult<Option<StreamDoc>>>;

    /// Top gifters of a stream, most coins first.
    fn leaderboard<'a>(
        &'a self,
        stream_id: Uuid,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<LeaderboardEntry>>>;

    /// A user's payouts, newest first.
    fn user_payouts<'a>(&'a self, user_id: Uuid, page: &'a PageRequest) -> BoxFuture<'a, StoreResult<Page<PayoutDoc>>>;

    /// All payouts, newest first, optionally of one status.
    fn payouts<'a>(
        &'a self,
        status: Option<PayoutStatus>,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<PayoutDoc>>>;

    /// Proposed adjustments (four eyes), newest first, optionally of one
    /// status.
    fn adjustments<'a>(
        &'a self,
        status: Option<AdjustmentStatus>,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<AdjustmentDoc>>>;

    /// One payout by id, whatever its status.
    fn payout(&self, payout_id: Uuid) -> BoxFuture<'_, StoreResult<Option<PayoutDoc>>>;

    /// An account's entries with running balance, newest first.
    fn ledger_entries<'a>(
        &'a self,
        account: Account,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<LedgerEntryDoc>>>;

    /// The last entry of an account at or before log position
    /// `position_max` and time `time_max` (when given): its `balance_after`
    /// is the account's balance there. `None`: no entry yet (balance 0).
    fn ledger_entry_at(
        &self,
        account: Account,
        position_max: u64,
        time_max: Option<DateTime<Utc>>,
    ) -> BoxFuture<'_, StoreResult<Option<LedgerEntryDoc>>>;

    /// An account's entries created at or after `time_min`, with `(position,
    /// seq)` after `after` and at most `until`, oldest first, at most
    /// `limit` (one page of a streamed statement).
    fn ledger_entries_window(
        &self,
        account: Account,
        time_min: DateTime<Utc>,
        after: (u64, u32),
        until: (u64, u32),
        limit: u32,
    ) -> BoxFuture<'_, StoreResult<Vec<LedgerEntryDoc>>>;

    /// Risk of a host's payout: the coins gifted to the host's streams live
    /// at or after `since` by viewers whose wallet is negative now (after
    /// a refund or a chargeback), from the streams, leaderboards and
    /// wallets read models. Bounded: at most `RISK_STREAMS_MAX` streams
    /// and `RISK_GIFTERS_MAX` gifters are looked at.
    fn gifts_from_negative_wallets(&self, host_id: Uuid, since: DateTime<Utc>) -> BoxFuture<'_, StoreResult<i64>>;

    /// Every account's balance (paged, by account) and the total of all.
    fn trial_balance<'a>(&'a self, page: &'a PageRequest) -> BoxFuture<'a, StoreResult<TrialBalance>>;

    fn stripe_payment<'a>(&'a self, payment_id: &'a str) -> BoxFuture<'a, StoreResult<Option<StripePaymentDoc>>>;

    /// Every Stripe payment, by PaymentIntent id (the reconciliation).
    fn stripe_payments<'a>(
        &'a self,
        filter: &'a StripePaymentFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<StripePaymentDoc>>>;

    /// The coins moved on each UTC day from `first` to `last` (both
    /// included), oldest first; a day nothing moved on has no document.
    /// At most `LEDGER_DAYS_MAX` days: a longer range is `InvalidInput`.
    fn ledger_days(&self, first: NaiveDate, last: NaiveDate) -> BoxFuture<'_, StoreResult<Vec<LedgerDayDoc>>>;
}

/// The most days one `ledger_days` query spans (a leap year).
pub const LEDGER_DAYS_MAX: u32 = 366;

/// Checks a `ledger_days` range (both adapters alike): `first` not after
/// `last`, at most `LEDGER_DAYS_MAX` days.
pub(crate) fn check_day_range(first: NaiveDate, last: NaiveDate) -> StoreResult<()> {
    let days = last.signed_duration_since(first).num_days();
    if days < 0 || days >= i64::from(LEDGER_DAYS_MAX) {
        return Err(ProjectionError::InvalidInput(format!(
            "a range of days runs forward over at most {LEDGER_DAYS_MAX} days"
        )));
    }
    Ok(())
}

/// Streams of one host a risk check looks at, at most.
pub const RISK_STREAMS_MAX: u32 = 1_000;
/// Gifters (stream and viewer) a risk check looks at, at most.
pub const RISK_GIFTERS_MAX: u32 = 10_000;

/// How many documents a scan page holds at most.
pub const SCAN_LIMIT_MAX: u32 = 5_000;

/// A scan's page size, clamped to `1..=SCAN_LIMIT_MAX`, once the collection
/// is known to belong to the scanned projection (both adapters check alike).
pub(crate) fn scan_limit(target: ProjectionVersion, collection: Collection, limit: u32) -> StoreResult<u32> {
    if !target.projection.collections().contains(&collection) {
        return Err(ProjectionError::InvalidInput(format!("{collection:?} is not a collection of {target}")));
    }
    Ok(limit.clamp(1, SCAN_LIMIT_MAX))
}

/// Email normalisation, as at registration: trimmed and lower case.
pub(crate) fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// A page from `items` fetched with one more than `limit` (whether more
/// follow costs no count): the first `limit`, and the cursor of the last
/// of them when more follow.
pub(crate) fn into_page<T>(mut items: Vec<T>, limit: u32, cursor_of: impl Fn(&T) -> String) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(cursor_of)
    } else {
        None
    };
    Page { items, next_cursor }
}
