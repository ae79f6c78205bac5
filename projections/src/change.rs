//! Document changes: what a projection makes of an event, as store
//! operations that every adapter implements the same way.
//!
//! Most changes carry absolute values (the ledger commits carry the state
//! after them). The few that depend on the current value are named for it
//! (`ViewerJoined` = "add the viewer if absent, then count"; `StreamGifts`
//! and `LeaderboardGift` = increments; a `Posting` without a balance =
//! "append the entry with the account's running balance"), so that the
//! projection itself stays pure.

use chrono::{DateTime, Utc};
use events_schema::{Account, Role};
use uuid::Uuid;

use crate::model::{
    AdjustmentDoc, AdjustmentStatus, LedgerEntryDoc, PayoutDoc, PayoutStatus, ProjectionVersion, StreamDoc,
    TransactionDoc, TxStatus, UserDoc, WalletDoc,
};

/// One store operation on one projection's collections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `users`: insert or replace the user.
    UserRegistered(UserDoc),
    /// `users`: the user's identity and roles after a change of roles.
    UserUpdated { user_id: Uuid, email: String, username: String, roles: Vec<Role> },
    /// `wallets`: the balances after a commit (absolute).
    Wallet(WalletDoc),
    /// `transactions`: insert if absent (keyed by the commit's event id).
    Transaction(TransactionDoc),
    /// `transactions`: the payout request's transaction follows its payout.
    PayoutTransactionStatus { user_id: Uuid, payout_id: Uuid, status: TxStatus },
    /// `transactions`: a Checkout Session paid for a PaymentIntent; every
    /// purchase of that payment, now or later, carries the session's id.
    TransactionStripeSession { payment_id: String, session_id: String },
    /// `streams`: insert the stream (live, no viewers).
    StreamStarted(StreamDoc),
    /// `streams`: add the viewer if not present; `viewers` = distinct viewers
    /// present, `peakViewers` = max(peak, viewers).
    ViewerJoined { stream_id: Uuid, viewer_id: Uuid },
    /// `streams`: remove the viewer if present.
    ViewerLeft { stream_id: Uuid, viewer_id: Uuid },
    /// `streams`: ended; nobody is present any more.
    StreamEnded { stream_id: Uuid, end_time: DateTime<Utc> },
    /// `streams`: increment `giftsCoins`.
    StreamGifts { stream_id: Uuid, coins: i64 },
    /// `payouts`: insert the pending payout.
    PayoutRequested(PayoutDoc),
    /// `payouts`: paid or rejected.
    PayoutSettled {
        payout_id: Uuid,
        status: PayoutStatus,
        external_ref: Option<String>,
        reason: Option<String>,
        settled_at: DateTime<Utc>,
    },
    /// `adjustments`: insert the proposal.
    AdjustmentProposed(AdjustmentDoc),
    /// `adjustments`: applied or rejected, by whom (and why, when rejected).
    AdjustmentDecided {
        adjustment_id: Uuid,
        status: AdjustmentStatus,
        decided_by: Uuid,
        reason: Option<String>,
        decided_at: DateTime<Utc>,
    },
    /// `ledger_entries` + `ledger_accounts`: append the entry (if absent)
    /// and set the account's balance. `balance_after` is `None` for the
    /// platform's accounts, whose running balance the store keeps.
    Posting(Posting),
    /// `gift_leaderboards`: increment the viewer's coins for the stream.
    LeaderboardGift { stream_id: Uuid, user_id: Uuid, coins: i64 },
    /// `stripe_payments`: coins issued against the payment.
    StripeIssued { payment_id: String, user_id: Uuid, coins: i64 },
    /// `stripe_payments`: coins reversed by a refund.
    StripeReversed { payment_id: String, user_id: Uuid, coins: i64 },
    /// `stripe_payments`: the Checkout Session that paid the payment.
    StripeSession { payment_id: String, session_id: String },
    /// `stripe_payments`: the payment aggregate's state (the Stripe side).
    StripeState { payment_id: String, user_id: Option<Uuid>, state: crate::model::StripeSide },
    /// `ledger_daily`: add to the day's totals (one change per commit).
    LedgerDay { day: chrono::NaiveDate, totals: crate::model::DayTotals },
}

/// One side of one transfer. When `balance_after` is `None`, the store
/// computes it: the account's balance before it plus `coins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub account: Account,
    pub seq: u32,
    pub event_type: &'static str,
    pub counterparty: Account,
    pub coins: i64,
    pub balance_after: Option<i64>,
    pub created_at: DateTime<Utc>,
}

impl Posting {
    /// The entry, once its balance is known.
    pub fn to_entry(&self, position: u64, balance_after: i64) -> LedgerEntryDoc {
        LedgerEntryDoc {
            account: self.account,
            position,
            seq: self.seq,
            event_type: self.event_type.to_string(),
            counterparty: self.counterparty,
            coins: self.coins,
            balance_after,
            created_at: self.created_at,
        }
    }
}

/// A change with the log position of its event and the projection (an
/// index into `ProjectedBatch::targets`) it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionedChange {
    pub position: u64,
    pub target: u8,
    pub change: Change,
}

/// Everything a run of events does to a set of projections: applied
/// atomically (embedded) or idempotently (MongoDB) with the checkpoints,
/// which all move to `to_position`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProjectedBatch {
    /// The projections the batch is for; at most 255.
    pub targets: Vec<ProjectionVersion>,
    /// The last log position the batch covers (events without changes
    /// included): every target's checkpoint moves there.
    pub to_position: u64,
    /// In log order.
    pub changes: Vec<PositionedChange>,
    /// The store may keep this batch in a transaction left open for the
    /// batches after it, and commit them together (the runner sets it while
    /// catching up; the embedded store uses it to amortise its commits). A
    /// batch without it, `ReadStore::flush`, or any other write commits.
    /// Atomicity is unchanged: batches and checkpoints commit together.
    pub hold_open: bool,
    /// How far the log's head was past `to_position` when the batch was
    /// read: far behind (a rebuild, a long catch-up), nobody reads these
    /// positions yet, so the store may hold its transaction open longer.
    pub behind_events: u64,
}

/// What applying a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApplyOutcome {
    /// Changes applied.
    pub applied: u64,
    /// Changes skipped because their projection's checkpoint was already at
    /// or past their position (a batch applied again).
    pub skipped: u64,
    /// Whether the batch (and any held open before it) is committed: durable
    /// and visible to queries.
    pub committed: bool,
}
