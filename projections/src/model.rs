//! The read models: one document type per collection, in the runbook's
//! camelCase names, and the collections and projections that own them.
//!
//! These types are the read side's own: they serialise (for checksums and
//! for whoever wants JSON) but are never an event's stored shape.

use chrono::{DateTime, NaiveDate, Utc};
use events_schema::{Account, Money, Role, StreamStatus};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ProjectionError;

/// A registered user (`users`). Login finds users here by email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserDoc {
    /// `_id`.
    pub id: Uuid,
    /// Normalised: trimmed and lower case.
    pub email: String,
    pub username: String,
    pub roles: Vec<Role>,
    /// argon2 PHC string.
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    /// Log position of the last event applied to this document.
    pub position: u64,
}

/// A user's balances (`wallets`), from the last ledger commit's `stateAfter`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WalletDoc {
    /// `_id`.
    pub user_id: Uuid,
    pub coins: i64,
    pub earnings: i64,
    pub held: i64,
    pub updated_at: DateTime<Utc>,
    /// Log position of the user's last ledger commit.
    pub position: u64,
}

/// What a transaction records: one per ledger commit of the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxType {
    Purchase,
    Refund,
    GiftSent,
    GiftReceived,
    PayoutRequested,
    PayoutPaid,
    PayoutRejected,
    Adjustment,
}

impl TxType {
    pub const ALL: [TxType; 8] = [
        TxType::Purchase,
        TxType::Refund,
        TxType::GiftSent,
        TxType::GiftReceived,
        TxType::PayoutRequested,
        TxType::PayoutPaid,
        TxType::PayoutRejected,
        TxType::Adjustment,
    ];

    /// The stored (and API) spelling; permanent once documents exist.
    pub fn as_str(self) -> &'static str {
        match self {
            TxType::Purchase => "purchase",
            TxType::Refund => "refund",
            TxType::GiftSent => "gift_sent",
            TxType::GiftReceived => "gift_received",
            TxType::PayoutRequested => "payout_requested",
            TxType::PayoutPaid => "payout_paid",
            TxType::PayoutRejected => "payout_rejected",
            TxType::Adjustment => "adjustment",
        }
    }

    pub fn parse(s: &str) -> Option<TxType> {
        TxType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A transaction's status. Every commit is `completed`, except a payout
/// request, which is `pending` until the payout is `paid` or `rejected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxStatus {
    Completed,
    Pending,
    Paid,
    Rejected,
}

impl TxStatus {
    pub const ALL: [TxStatus; 4] = [TxStatus::Completed, TxStatus::Pending, TxStatus::Paid, TxStatus::Rejected];

    pub fn as_str(self) -> &'static str {
        match self {
            TxStatus::Completed => "completed",
            TxStatus::Pending => "pending",
            TxStatus::Paid => "paid",
            TxStatus::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<TxStatus> {
        TxStatus::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// What is known about a transaction beyond its amount (`metadata.*`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TxMetadata {
    /// The Stripe PaymentIntent (purchases and refunds).
    pub payment_id: Option<String>,
    /// The Checkout Session, when the purchase came through one and its
    /// `checkout.session.completed` event was recorded.
    pub stripe_session_id: Option<String>,
    /// The stream of a sent gift, or of received gifts when they all came
    /// from one stream.
    pub stream_id: Option<Uuid>,
    /// The host of a sent gift.
    pub host_id: Option<Uuid>,
    pub gift_id: Option<String>,
    pub quantity: Option<i64>,
    /// How many viewer gifts a host credit covers.
    pub gifts_count: Option<i64>,
    pub payout_id: Option<Uuid>,
    pub external_ref: Option<String>,
    pub reason: Option<String>,
    pub admin_id: Option<Uuid>,
}

/// One ledger commit seen from its user (`transactions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionDoc {
    /// `_id`: the commit's event id (UUID v7, ordered by time).
    pub id: Uuid,
    pub user_id: Uuid,
    #[serde(rename = "type")]
    pub kind: TxType,
    pub status: TxStatus,
    /// Signed change of the user's wallet + earnings + hold: the sum of a
    /// user's transactions is their total balance. A payout request moves
    /// coins inside the user's accounts and is 0; its payment is negative.
    pub coins: i64,
    /// The user's balances after the commit.
    pub wallet_after: i64,
    pub earnings_after: i64,
    pub held_after: i64,
    pub metadata: TxMetadata,
    pub created_at: DateTime<Utc>,
    /// Log position of the commit (not changed by a later status change).
    pub position: u64,
}

/// A stream (`streams`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamDoc {
    /// `_id`.
    pub id: Uuid,
    pub host_id: Uuid,
    pub title: String,
    pub category: String,
    pub status: StreamStatus,
    pub is_live: bool,
    pub start_time: DateTime<Utc>,
    pub end_time: Option<DateTime<Utc>>,
    /// Distinct viewers present now (0 once ended).
    pub viewers: i64,
    /// Most distinct viewers present at once.
    pub peak_viewers: i64,
    /// Coins of every gift sent to the stream (the viewers' side).
    pub gifts_coins: i64,
    pub position: u64,
}

/// A payout's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutStatus {
    Pending,
    Paid,
    Rejected,
}

impl PayoutStatus {
    pub const ALL: [PayoutStatus; 3] = [PayoutStatus::Pending, PayoutStatus::Paid, PayoutStatus::Rejected];

    pub fn as_str(self) -> &'static str {
        match self {
            PayoutStatus::Pending => "pending",
            PayoutStatus::Paid => "paid",
            PayoutStatus::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<PayoutStatus> {
        PayoutStatus::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A payout (`payouts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayoutDoc {
    /// `_id`.
    pub id: Uuid,
    pub user_id: Uuid,
    pub coins: i64,
    /// `{amount: "12.34", currency: "usd"}`: the amount is a decimal string.
    pub fiat: Money,
    pub destination: String,
    pub status: PayoutStatus,
    pub external_ref: Option<String>,
    pub reason: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub settled_at: Option<DateTime<Utc>>,
    pub position: u64,
}

/// A proposed adjustment's lifecycle (four eyes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentStatus {
    Proposed,
    Applied,
    Rejected,
}

impl AdjustmentStatus {
    pub const ALL: [AdjustmentStatus; 3] =
        [AdjustmentStatus::Proposed, AdjustmentStatus::Applied, AdjustmentStatus::Rejected];

    pub fn as_str(self) -> &'static str {
        match self {
            AdjustmentStatus::Proposed => "proposed",
            AdjustmentStatus::Applied => "applied",
            AdjustmentStatus::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<AdjustmentStatus> {
        AdjustmentStatus::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A proposed adjustment (`adjustments`), kept by the payouts projection
/// beside the payout queue: what finance approves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdjustmentDoc {
    /// `_id`.
    pub id: Uuid,
    pub user_id: Uuid,
    /// Signed: positive credits the wallet.
    pub coins: i64,
    pub reason: String,
    pub status: AdjustmentStatus,
    pub proposed_by: Uuid,
    /// The admin who approved or rejected it.
    pub decided_by: Option<Uuid>,
    /// Why it was rejected.
    pub decision_reason: Option<String>,
    pub proposed_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub position: u64,
}

/// One side of one transfer, on one account (`ledger_entries`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntryDoc {
    pub account: Account,
    /// Log position of the commit.
    pub position: u64,
    /// Index of the entry in its commit: `2 * transfer index + (0 for the
    /// debited side, 1 for the credited side)`.
    pub seq: u32,
    /// The event type of the commit (`ledger.gift_sent`, ...).
    pub event_type: String,
    /// The other side of the transfer.
    pub counterparty: Account,
    /// Signed: positive into the account.
    pub coins: i64,
    /// The account's balance after this entry.
    pub balance_after: i64,
    pub created_at: DateTime<Utc>,
}

impl LedgerEntryDoc {
    /// `_id`: unique and, per account, ordered like the log.
    pub fn key(&self) -> String {
        entry_key(&self.account, self.position, self.seq)
    }
}

/// The `_id` of a ledger entry.
pub fn entry_key(account: &Account, position: u64, seq: u32) -> String {
    format!("{account}@{position:020}.{seq:04}")
}

/// An account's balance (`ledger_accounts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountBalance {
    /// `_id`.
    pub account: Account,
    pub balance: i64,
    /// Log position of the last entry on the account.
    pub position: u64,
}

/// A viewer's total of gifts to a stream (`gift_leaderboards`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderboardEntry {
    pub stream_id: Uuid,
    pub user_id: Uuid,
    pub coins: i64,
    pub position: u64,
}

/// Coins issued and reversed against one Stripe payment (`stripe_payments`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StripePaymentDoc {
    /// `_id`: the PaymentIntent id.
    pub payment_id: String,
    /// `None` when only the Checkout Session is known yet.
    pub user_id: Option<Uuid>,
    pub coins_issued: i64,
    pub coins_reversed: i64,
    pub stripe_session_id: Option<String>,
    /// What the payment aggregate established (`payment.*` events), beside
    /// what the ledger did (`coins_issued`, `coins_reversed`): the two
    /// sides of the reconciliation.
    #[serde(flatten)]
    pub stripe: StripeSide,
    pub position: u64,
}

/// What Stripe's events established about a payment: the state carried by
/// the payment aggregate's last event.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StripeSide {
    pub package_id: Option<String>,
    /// The package's coins, once the purchase was credited; 0 before.
    pub coins_expected: i64,
    pub amount_cents: i64,
    pub currency: Option<String>,
    pub charge_amount_cents: i64,
    pub amount_refunded_cents: i64,
    /// `unknown_user`, `unknown_package`, `no_payment_intent`,
    /// `invalid_refund`, `disputed`, in order.
    pub flags: Vec<String>,
    /// Every dispute of the payment, in the order first seen.
    pub disputes: Vec<DisputeDoc>,
    /// Coins the payment aggregate decided to reverse for refunds.
    pub coins_refund_reversed: i64,
    /// Coins it decided to reverse for disputes, in total, and to credit
    /// back after won disputes, in total.
    pub coins_dispute_withdrawn: i64,
    pub coins_dispute_reinstated: i64,
    /// The user and package the purchase's metadata named, as written
    /// (unknown ones included).
    pub claimed_user_id: Option<String>,
    pub claimed_package_id: Option<String>,
    /// How finance settled the payment's flags.
    pub resolution: Option<ResolutionDoc>,
}

/// A flagged payment's resolution.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolutionDoc {
    /// `credit` or `dismiss`.
    pub action: String,
    pub resolved_by: Uuid,
    pub note: String,
    pub user_id: Option<Uuid>,
    pub package_id: Option<String>,
    pub coins: i64,
}

/// Which payments a reconciliation query lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StripePaymentFilter {
    /// Only payments carrying this flag (`unknown_user`, ...).
    pub flag: Option<String>,
    /// Only flagged payments not resolved (`Open`) or resolved ones.
    pub status: Option<ResolutionStatus>,
}

/// Whether a flagged payment still needs finance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolutionStatus {
    /// Flagged and not resolved.
    Open,
    /// Resolved (credited or dismissed).
    Resolved,
}

/// A dispute (chargeback) as the payment aggregate remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisputeDoc {
    pub dispute_id: String,
    pub amount_cents: i64,
    pub currency: String,
    pub status: String,
    pub reason: String,
    /// Stripe's dispute fee, in the minor unit.
    pub fee_cents: i64,
    pub funds_withdrawn: bool,
    pub funds_reinstated: bool,
    /// Coins this dispute holds reversed now.
    pub coins_reversed: i64,
}

impl StripePaymentDoc {
    /// Coins the refunds should have taken back: `ceil(coins_expected *
    /// amount_refunded / charge_amount)` (saturating: a read model must
    /// not panic on a bad log). With disputes, refunds and disputes share
    /// the coins bought (neither takes back more than the other left): the
    /// coins the payment aggregate decided, refunds' and disputes'.
    pub fn coins_reversal_expected(&self) -> i64 {
        let s = &self.stripe;
        if !s.disputes.is_empty() {
            return s.coins_refund_reversed.saturating_add(s.coins_dispute_withdrawn);
        }
        if s.charge_amount_cents <= 0 || s.amount_refunded_cents <= 0 || s.coins_expected <= 0 {
            return 0;
        }
        let refunded = i128::from(s.amount_refunded_cents.min(s.charge_amount_cents));
        let amount = i128::from(s.charge_amount_cents);
        let due = (i128::from(s.coins_expected) * refunded + amount - 1) / amount;
        i64::try_from(due).unwrap_or(i64::MAX)
    }

    /// Coins the payment should have issued: its package's, and again what
    /// won disputes credited back.
    pub fn coins_issue_expected(&self) -> i64 {
        self.stripe.coins_expected.saturating_add(self.stripe.coins_dispute_reinstated)
    }

    /// `open` (flagged, not resolved), `resolved`, or `clear` (no flag).
    pub fn status(&self) -> &'static str {
        if self.stripe.resolution.is_some() {
            "resolved"
        } else if self.stripe.flags.is_empty() {
            "clear"
        } else {
            "open"
        }
    }

    /// Stripe's dispute fees on this payment, in the minor unit.
    pub fn dispute_fee_cents(&self) -> i64 {
        self.stripe.disputes.iter().fold(0i64, |total, d| total.saturating_add(d.fee_cents))
    }

    /// Why the payment does not match its coins (empty when it does): its
    /// flags; `no_stripe_payment` (coins issued with no credited purchase);
    /// `issued_mismatch`; `reversed_mismatch`.
    pub fn mismatches(&self) -> Vec<String> {
        let mut found = self.stripe.flags.clone();
        if self.coins_issued != 0 && self.stripe.coins_expected == 0 {
            found.push("no_stripe_payment".into());
        } else if self.coins_issued != self.coins_issue_expected() {
            found.push("issued_mismatch".into());
        }
        if self.coins_reversed != self.coins_reversal_expected() {
            found.push("reversed_mismatch".into());
        }
        found
    }
}

/// The coins that moved on one UTC day, by kind (`ledger_daily`), from the
/// ledger commits that occurred that day (the envelope's `occurredAt`).
/// Every figure is a sum of positive transfer amounts; none nets another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerDayDoc {
    /// `_id`: the UTC day (`YYYY-MM-DD`).
    pub day: NaiveDate,
    #[serde(flatten)]
    pub totals: DayTotals,
    /// Log position of the last commit counted.
    pub position: u64,
}

/// One day's coins by kind; see `projection::day_totals` for which
/// transfers count where.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DayTotals {
    /// `external:stripe -> wallet` (`ledger.coins_purchased`): Stripe
    /// purchases, finance's credits of flagged payments, and coins credited
    /// back when a dispute is won.
    pub purchased_coins: i64,
    /// `wallet -> transit:gifts` (`ledger.gift_sent`): the viewers' side.
    pub gifted_coins: i64,
    /// `transit:gifts -> earnings` (`ledger.gifts_received`): the hosts'
    /// share, credited by the gift reactor (the platform's commission is
    /// not counted).
    pub credited_coins: i64,
    /// `payout_hold -> external:payouts` (`ledger.payout_approved`).
    pub paid_out_coins: i64,
    /// `wallet -> external:stripe` (`ledger.purchase_refunded`): refunds and
    /// coins withdrawn by disputes (chargebacks).
    pub reversed_coins: i64,
}

impl DayTotals {
    pub fn is_zero(&self) -> bool {
        *self == DayTotals::default()
    }

    /// Adds `other`, checked: a day's total past i64 is an error, never a
    /// wrap.
    pub fn checked_add(&self, other: &DayTotals) -> Option<DayTotals> {
        Some(DayTotals {
            purchased_coins: self.purchased_coins.checked_add(other.purchased_coins)?,
            gifted_coins: self.gifted_coins.checked_add(other.gifted_coins)?,
            credited_coins: self.credited_coins.checked_add(other.credited_coins)?,
            paid_out_coins: self.paid_out_coins.checked_add(other.paid_out_coins)?,
            reversed_coins: self.reversed_coins.checked_add(other.reversed_coins)?,
        })
    }
}

/// A projector's checkpoint (`projector_checkpoints`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub projection: Projection,
    pub version: u32,
    /// Every event up to this log position is applied.
    pub position: u64,
    /// Whether this version serves the queries.
    pub active: bool,
    pub updated_at: DateTime<Utc>,
}

/// The trial balance: every account's balance (paged) and their total, which
/// is 0 whenever the ledger projection is consistent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrialBalance {
    pub items: Vec<AccountBalance>,
    pub next_cursor: Option<String>,
    pub total_coins: i64,
    pub accounts_count: u64,
    /// The ledger projection's checkpoint the figures are as of.
    pub position: u64,
}

/// The collections (tables) of the read store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Collection {
    Users,
    Wallets,
    Transactions,
    /// The transactions projection's own memory of Checkout Sessions, so that
    /// a purchase finds its session whichever is recorded first.
    StripeSessions,
    Streams,
    /// Who is in which stream now; the embedded store's way to count distinct
    /// viewers (MongoDB keeps them in the stream document).
    StreamViewers,
    Payouts,
    LedgerEntries,
    LedgerAccounts,
    GiftLeaderboards,
    StripePayments,
    /// Proposed adjustments (four eyes), owned by the payouts projection.
    Adjustments,
    /// Coins moved per UTC day, by kind.
    LedgerDaily,
}

impl Collection {
    /// The runbook's name, and the base of every version's physical name.
    pub fn base_name(self) -> &'static str {
        match self {
            Collection::Users => "users",
            Collection::Wallets => "wallets",
            Collection::Transactions => "transactions",
            Collection::StripeSessions => "transaction_stripe_sessions",
            Collection::Streams => "streams",
            Collection::StreamViewers => "stream_viewers",
            Collection::Payouts => "payouts",
            Collection::LedgerEntries => "ledger_entries",
            Collection::LedgerAccounts => "ledger_accounts",
            Collection::GiftLeaderboards => "gift_leaderboards",
            Collection::StripePayments => "stripe_payments",
            Collection::Adjustments => "adjustments",
            Collection::LedgerDaily => "ledger_daily",
        }
    }

    /// The name of this collection for a projection version: version 1 uses
    /// the runbook's name, later versions build beside it with a suffix.
    pub fn physical_name(self, version: u32) -> String {
        if version <= 1 { self.base_name().to_string() } else { format!("{}__v{version}", self.base_name()) }
    }
}

/// The projections: each owns its collections, its checkpoint and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Projection {
    Users,
    Wallets,
    Transactions,
    Streams,
    Payouts,
    Ledger,
    GiftLeaderboards,
    StripePayments,
    /// Coins moved per UTC day (the console's chart): a projection of its
    /// own, so that adding it built it from the log beside the others
    /// rather than changing the ledger projection's version.
    LedgerDaily,
}

impl Projection {
    pub const ALL: [Projection; 9] = [
        Projection::Users,
        Projection::Wallets,
        Projection::Transactions,
        Projection::Streams,
        Projection::Payouts,
        Projection::Ledger,
        Projection::GiftLeaderboards,
        Projection::StripePayments,
        Projection::LedgerDaily,
    ];

    /// Permanent: the key of its checkpoint, lease and version registry.
    pub fn name(self) -> &'static str {
        match self {
            Projection::Users => "users",
            Projection::Wallets => "wallets",
            Projection::Transactions => "transactions",
            Projection::Streams => "streams",
            Projection::Payouts => "payouts",
            Projection::Ledger => "ledger",
            Projection::GiftLeaderboards => "gift_leaderboards",
            Projection::StripePayments => "stripe_payments",
            Projection::LedgerDaily => "ledger_daily",
        }
    }

    pub fn parse(name: &str) -> Option<Projection> {
        Projection::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The collections it owns (and only it writes).
    pub fn collections(self) -> &'static [Collection] {
        match self {
            Projection::Users => &[Collection::Users],
            Projection::Wallets => &[Collection::Wallets],
            Projection::Transactions => &[Collection::Transactions, Collection::StripeSessions],
            Projection::Streams => &[Collection::Streams, Collection::StreamViewers],
            Projection::Payouts => &[Collection::Payouts, Collection::Adjustments],
            Projection::Ledger => &[Collection::LedgerEntries, Collection::LedgerAccounts],
            Projection::GiftLeaderboards => &[Collection::GiftLeaderboards],
            Projection::StripePayments => &[Collection::StripePayments],
            Projection::LedgerDaily => &[Collection::LedgerDaily],
        }
    }

    /// The version this code builds. Raise it when the projection's output
    /// changes for the same events: the new version then builds side by side
    /// and takes over once caught up.
    pub fn code_version(self) -> u32 {
        1
    }

    /// The projection at the version this code builds.
    pub fn current(self) -> ProjectionVersion {
        ProjectionVersion { projection: self, version: self.code_version() }
    }
}

/// A projection at one version: what a checkpoint and a set of physical
/// collections belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProjectionVersion {
    pub projection: Projection,
    pub version: u32,
}

impl ProjectionVersion {
    pub fn new(projection: Projection, version: u32) -> ProjectionVersion {
        ProjectionVersion { projection, version: version.max(1) }
    }

    /// Every projection at the version this code builds.
    pub fn all_current() -> Vec<ProjectionVersion> {
        Projection::ALL.into_iter().map(Projection::current).collect()
    }

    /// `users@1`: the checkpoint's key.
    pub fn key(self) -> String {
        format!("{}@{}", self.projection.name(), self.version)
    }
}

impl std::fmt::Display for ProjectionVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.projection.name(), self.version)
    }
}

/// The role's stored spelling (as in the events).
pub fn role_str(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Admin => "admin",
        Role::Finance => "finance",
        Role::Ops => "ops",
    }
}

pub fn parse_role(s: &str) -> Option<Role> {
    [Role::User, Role::Admin, Role::Finance, Role::Ops].into_iter().find(|r| role_str(*r) == s)
}

pub(crate) fn stream_status_str(status: StreamStatus) -> &'static str {
    match status {
        StreamStatus::Live => "live",
        StreamStatus::Ended => "ended",
    }
}

pub(crate) fn parse_stream_status(s: &str) -> Option<StreamStatus> {
    match s {
        "live" => Some(StreamStatus::Live),
        "ended" => Some(StreamStatus::Ended),
        _ => None,
    }
}

/// How many items a list answers when the caller does not say.
pub const PAGE_LIMIT_DEFAULT: u32 = 50;
/// The most items a list answers, whatever the caller asks.
pub const PAGE_LIMIT_MAX: u32 = 200;

/// A page request: `limit` (default 50, clamped to 1..=200) and the opaque
/// `cursor` of the previous page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl PageRequest {
    pub fn first(limit: u32) -> PageRequest {
        PageRequest { limit: Some(limit), cursor: None }
    }

    pub fn after(limit: u32, cursor: Option<String>) -> PageRequest {
        PageRequest { limit: Some(limit), cursor }
    }

    /// The effective limit.
    pub fn limit(&self) -> u32 {
        self.limit.unwrap_or(PAGE_LIMIT_DEFAULT).clamp(1, PAGE_LIMIT_MAX)
    }
}

/// One page of a list: `{items, nextCursor}`; `next_cursor` is `None` on the
/// last page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Filters of a user's transactions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransactionFilter {
    pub kind: Option<TxType>,
    pub status: Option<TxStatus>,
}

/// Keyset cursors: the sort key of the last item of a page, so that a page
/// does not shift when documents are inserted before it (an offset would).
/// Opaque to clients: the parts are joined and hex-encoded.
pub(crate) mod cursor {
    use super::ProjectionError;

    /// At most this many parts in a cursor (every sort key has 2 or 3).
    const PARTS_MAX: usize = 4;
    /// A cursor longer than this was not issued by us.
    const CURSOR_CHARS_MAX: usize = 1024;

    pub fn encode(parts: &[&str]) -> String {
        let joined = parts.join("\u{1f}");
        let mut out = String::with_capacity(joined.len() * 2);
        for b in joined.bytes() {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        out
    }

    const HEX: &[u8; 16] = b"0123456789abcdef";

    pub fn decode(cursor: &str, parts_wanted: usize) -> Result<Vec<String>, ProjectionError> {
        if cursor.len() > CURSOR_CHARS_MAX || !cursor.len().is_multiple_of(2) || parts_wanted > PARTS_MAX {
            return Err(ProjectionError::BadCursor);
        }
        let digit = |c: u8| -> Result<u8, ProjectionError> {
            match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                _ => Err(ProjectionError::BadCursor),
            }
        };
        let bytes = cursor.as_bytes();
        let mut raw = Vec::with_capacity(bytes.len() / 2);
        for pair in bytes.chunks_exact(2) {
            raw.push(digit(pair[0])? << 4 | digit(pair[1])?);
        }
        let text = String::from_utf8(raw).map_err(|_| ProjectionError::BadCursor)?;
        let parts: Vec<String> = text.split('\u{1f}').map(str::to_string).collect();
        if parts.len() != parts_wanted {
            return Err(ProjectionError::BadCursor);
        }
        Ok(parts)
    }

    pub fn int(s: &str) -> Result<i64, ProjectionError> {
        s.parse().map_err(|_| ProjectionError::BadCursor)
    }
}

/// Microseconds since the epoch: how the embedded store keeps times, so
/// that they sort as integers.
pub(crate) fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_micros(collection: &str, us: i64) -> Result<DateTime<Utc>, ProjectionError> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| ProjectionError::corrupt(collection, "time out of range"))
}

/// Log positions are u64; stores keep i64. Positions past i64::MAX do not
/// occur (JetStream sequences are far smaller), but the conversion is checked.
pub(crate) fn pos_i64(position: u64) -> Result<i64, ProjectionError> {
    i64::try_from(position).map_err(|_| ProjectionError::InvalidInput(format!("position {position} out of range")))
}

pub(crate) fn pos_u64(collection: &str, position: i64) -> Result<u64, ProjectionError> {
    u64::try_from(position).map_err(|_| ProjectionError::corrupt(collection, "negative position"))
}
