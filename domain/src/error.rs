//! Domain rejections. Each maps to exactly one stable code of the HTTP
//! contract; none of them is a technical failure.

use thiserror::Error;

/// Why a command was rejected. A rejected command appends nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    #[error("{field}: {reason}")]
    Validation { field: &'static str, reason: String },
    #[error("the amount is out of range")]
    AmountOutOfRange,
    #[error("insufficient funds: {needed_coins} coins needed, {available_coins} available")]
    InsufficientFunds { needed_coins: i64, available_coins: i64 },
    #[error("insufficient earnings: {needed_coins} coins needed, {available_coins} available")]
    InsufficientEarnings { needed_coins: i64, available_coins: i64 },
    #[error("a payout is at least {min_coins} coins, not {coins}")]
    BelowMinimum { coins: i64, min_coins: i64 },
    #[error("at most {max} payouts may be pending at once")]
    TooManyPendingPayouts { max: usize },
    #[error("the payout is unknown or no longer pending")]
    PayoutNotPending,
    #[error("the stream does not exist")]
    StreamNotFound,
    #[error("the stream is not live")]
    StreamNotLive,
    #[error("the host already has a live stream")]
    StreamAlreadyLive,
    #[error("a stream with this id already exists")]
    StreamAlreadyExists,
    #[error("a host cannot send gifts to their own stream")]
    SelfGift,
    #[error("only the stream's host or an admin may end it")]
    NotStreamHost,
    #[error("the user does not exist")]
    UserNotFound,
    #[error("the user is already registered")]
    UserAlreadyRegistered,
    #[error("the email is already registered")]
    EmailTaken,
    #[error("the username is already taken")]
    UsernameTaken,
    /// The token's session was ended (logout, reuse) or revoked (every
    /// session of the user, by an admin): log in again.
    #[error("the session was ended or revoked; log in again")]
    SessionRevoked,
    /// A refresh token that was already exchanged: its whole family ends.
    #[error("the refresh token was already used; every token of this login is revoked")]
    RefreshTokenReused,
    #[error("the session belongs to another user")]
    NotSessionOwner,
    /// A resolution of a payment that is not flagged, already resolved, or
    /// (for a credit) already credited.
    #[error("the payment is not flagged, or already resolved or credited")]
    PaymentNotResolvable,
    /// Four eyes: nobody approves or rejects their own payout, adjusts
    /// their own wallet, or approves their own proposed adjustment.
    #[error("an admin may not approve, reject or adjust their own money")]
    SelfApprovalForbidden,
    /// No payout with this id was ever requested (the log keeps a
    /// reference from each payout id to its ledger).
    #[error("no such payout")]
    PayoutNotFound,
    #[error("no such adjustment")]
    AdjustmentNotFound,
    #[error("the adjustment was already approved or rejected")]
    AdjustmentNotProposed,
    #[error("an adjustment with this id already exists")]
    AdjustmentAlreadyExists,
}

impl DomainError {
    /// The stable machine word of the HTTP contract (`code` in problem+json).
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::Validation { .. } => "validation_failed",
            DomainError::AmountOutOfRange => "amount_out_of_range",
            DomainError::InsufficientFunds { .. } => "insufficient_funds",
            DomainError::InsufficientEarnings { .. } => "insufficient_earnings",
            DomainError::BelowMinimum { .. } => "below_minimum",
            DomainError::TooManyPendingPayouts { .. } => "too_many_pending_payouts",
            DomainError::PayoutNotPending => "payout_not_pending",
            DomainError::StreamNotFound => "not_found",
            DomainError::StreamNotLive => "stream_not_live",
            DomainError::StreamAlreadyLive => "stream_already_live",
            DomainError::StreamAlreadyExists => "conflict",
            DomainError::SelfGift => "self_gift_forbidden",
            DomainError::NotStreamHost => "forbidden",
            DomainError::UserNotFound => "not_found",
            DomainError::UserAlreadyRegistered => "conflict",
            DomainError::EmailTaken => "email_taken",
            DomainError::UsernameTaken => "username_taken",
            DomainError::SessionRevoked => "session_revoked",
            DomainError::RefreshTokenReused => "refresh_token_reused",
            DomainError::NotSessionOwner => "forbidden",
            DomainError::PaymentNotResolvable => "payment_not_resolvable",
            DomainError::SelfApprovalForbidden => "self_approval_forbidden",
            DomainError::PayoutNotFound => "not_found",
            DomainError::AdjustmentNotFound => "not_found",
            DomainError::AdjustmentNotProposed => "adjustment_not_proposed",
            DomainError::AdjustmentAlreadyExists => "conflict",
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> DomainError {
        DomainError::Validation { field, reason: reason.into() }
    }
}

/// A broken invariant found in a stored commit: evidence of a bug or of
/// tampering, reported by replay and audit.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Violation {
    #[error("transfer {index}: amount {amount_coins} is not positive")]
    NonPositiveTransfer { index: usize, amount_coins: i64 },
    #[error("transfer {index}: from and to are the same account")]
    SelfTransfer { index: usize },
    #[error("transfer {index} touches {account}, which is not this aggregate's")]
    ForeignAccount { index: usize, account: String },
    #[error("the commit has no transfer")]
    EmptyCommit,
    #[error("the stored state after the commit is not what its transfers give")]
    StateMismatch,
    #[error("{account} is negative: {balance_coins}")]
    NegativeBalance { account: &'static str, balance_coins: i64 },
    #[error("the hold ({held_coins}) is not the sum of pending payouts ({pending_coins})")]
    HoldMismatch { held_coins: i64, pending_coins: i64 },
    #[error("a balance overflowed")]
    Overflow,
    #[error(
        "the maturing earnings ({maturing_coins}) are out of order, unbounded or over the earnings ({earnings_coins})"
    )]
    MaturingMismatch { maturing_coins: i64, earnings_coins: i64 },
    #[error("the event is not a ledger commit")]
    NotALedgerCommit,
}
