//! Every event of the design, as the payload types stored in the log.
//!
//! Type names (`ledger.gift_sent`, ...) and aggregate kinds are permanent once
//! events are stored: rename a Rust type freely, never a `#[serde(rename)]`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Account;

mod payment;
pub use payment::*;

/// A role a user holds. Everyone holds `user`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Admin,
    Finance,
    Ops,
}

/// An amount of money: an exact decimal (stored as a string) and a currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Money {
    pub amount: Decimal,
    /// ISO 4217 code in lower case, as Stripe writes it (`usd`).
    pub currency: String,
}

/// One movement of coins between two accounts. `amount_coins` is positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transfer {
    pub from: Account,
    pub to: Account,
    pub amount_coins: i64,
}

/// A payout that holds earnings until an admin approves or rejects it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingPayout {
    pub payout_id: Uuid,
    pub coins: i64,
}

/// A user ledger's state after a commit. Carried in every ledger commit so
/// that the aggregate loads from its last message alone.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerSnapshot {
    /// Balance of `wallet:<user>`; negative only after a refund.
    pub wallet_coins: i64,
    /// Balance of `earnings:<user>`; never negative.
    pub earnings_coins: i64,
    /// Balance of `payout_hold:<user>`; equals the sum of `pending_payouts`.
    pub held_coins: i64,
    /// Pending payouts, oldest first.
    pub pending_payouts: Vec<PendingPayout>,
    /// Log position of the last viewer-side gift credited to this user as a
    /// host: the reactor's exactly-once guard.
    pub last_credited_position: u64,
    /// Host earnings not yet payable (`EARNINGS_HOLD_HOURS`), by the hour
    /// they mature, earliest first; absent when everything is payable (and
    /// in commits written before earnings matured).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maturing: Vec<MaturingEarnings>,
}

/// Earnings that become payable at `matures_at_hour` (hours since the Unix
/// epoch, UTC): the coins credited from gifts whose hold ends within the
/// hour before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaturingEarnings {
    pub matures_at_hour: i64,
    pub coins: i64,
}

/// What every ledger event carries: its transfers and the state after them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerCommit {
    pub transfers: Vec<Transfer>,
    pub state_after: LedgerSnapshot,
}

/// A user's state after an event of the user aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserSnapshot {
    pub email: String,
    pub username: String,
    pub roles: Vec<Role>,
    /// How many times every session of the user was revoked: a token that
    /// carries a lower epoch is refused. Absent (0) in events stored before
    /// sessions could be revoked, and not written while 0, so that those
    /// events keep their bytes and hashes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sessions_epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserRegistered {
    pub user_id: Uuid,
    /// Normalised: trimmed and lower case.
    pub email: String,
    pub username: String,
    /// An argon2 PHC string; never the password.
    pub password_hash: String,
    pub roles: Vec<Role>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserRolesChanged {
    pub user_id: Uuid,
    pub granted: Vec<Role>,
    pub revoked: Vec<Role>,
    pub state_after: UserSnapshot,
}

/// Every session of a user revoked at once (an admin's decision): tokens
/// issued before carry a lower `sessions_epoch` than `state_after`'s and
/// are refused for refreshing, moving coins and privileged routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserSessionsRevoked {
    pub user_id: Uuid,
    /// The admin who revoked them.
    pub revoked_by: Uuid,
    pub state_after: UserSnapshot,
}

/// A login's refresh token was exchanged: `generation` is the one the new
/// refresh token carries, and only it is accepted from now on. The session
/// aggregate (one per login, `hb.session.<family id>`) has no event before
/// its first rotation: generation 0 with an empty subject is a live session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionRotated {
    pub family_id: Uuid,
    pub user_id: Uuid,
    pub generation: u64,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionEndReason {
    /// The user logged out.
    Logout,
    /// A refresh token that was already exchanged came back: whoever holds
    /// the family's tokens, it is no longer only its owner.
    Reuse,
}

/// A login's refresh tokens stop working, all generations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionEnded {
    pub family_id: Uuid,
    pub user_id: Uuid,
    /// The generation current when it ended.
    pub generation: u64,
    pub reason: SessionEndReason,
}

/// What a reservation holds unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReservationKind {
    Email,
    Username,
    /// A payout id, claimed for the user who requested it in the same
    /// atomic batch as the request: the log's own reference from a payout
    /// to its ledger, so that approving it reads no read model.
    Payout,
}

/// A unique value (an email, a username) claimed by a user. Appended to its
/// own subject with expected sequence 0, so that only one claim can exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservationClaimed {
    pub kind: ReservationKind,
    /// The normalised value (lower case).
    pub value: String,
    pub user_id: Uuid,
}

/// Coins credited for a Stripe payment: the posting of the payment
/// aggregate's `payment.purchase_credited` decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoinsPurchased {
    pub user_id: Uuid,
    /// The Stripe PaymentIntent id the coins were bought with.
    pub payment_id: String,
    pub coins: i64,
    /// Log position of the payment's decision this commit posts, so that a
    /// decision is posted once. 0 (absent) in commits written in one atomic
    /// batch with their decision, before decisions were posted apart.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub source_position: u64,
    pub commit: LedgerCommit,
}

/// Coins taken back after a Stripe refund: the posting of the payment
/// aggregate's `payment.refund_recorded` decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PurchaseRefunded {
    pub user_id: Uuid,
    pub payment_id: String,
    pub coins: i64,
    /// As in `CoinsPurchased`: the payment decision posted, 0 for commits
    /// of the atomic-batch era.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub source_position: u64,
    pub commit: LedgerCommit,
}

/// Serde's test for fields added after events were stored: absent reads as
/// zero, and zero is not written, so older events keep their bytes (and
/// their hashes) when encoded again.
fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// The viewer's side of a gift: coins leave the wallet for `transit:gifts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GiftSent {
    /// The viewer.
    pub user_id: Uuid,
    pub stream_id: Uuid,
    pub host_id: Uuid,
    pub gift_id: String,
    pub quantity: i64,
    /// The gift's price in coins, per unit.
    pub unit_coins: i64,
    /// `unit_coins * quantity`.
    pub coins: i64,
    /// The host share in force when the gift was sent, in basis points, so
    /// that the host's credit does not depend on the reactor's configuration.
    pub host_share_bps: u32,
    pub commit: LedgerCommit,
}

/// One viewer-side gift credited in a host's batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedGift {
    /// Log position of the `ledger.gift_sent` commit.
    pub source_position: u64,
    pub viewer_id: Uuid,
    pub stream_id: Uuid,
    pub coins: i64,
    /// `floor(coins * host_share_bps / 10000)`; the rest is the platform's.
    pub host_coins: i64,
}

/// The host's side of one or more gifts, batched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GiftsReceived {
    /// The host.
    pub user_id: Uuid,
    pub gifts: Vec<ReceivedGift>,
    pub commit: LedgerCommit,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayoutRequested {
    pub user_id: Uuid,
    pub payout_id: Uuid,
    pub coins: i64,
    /// What the coins are worth, at the rate in force when requested.
    pub fiat: Money,
    pub destination: String,
    pub commit: LedgerCommit,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayoutApproved {
    pub user_id: Uuid,
    pub payout_id: Uuid,
    pub coins: i64,
    pub external_ref: String,
    pub commit: LedgerCommit,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayoutRejected {
    pub user_id: Uuid,
    pub payout_id: Uuid,
    pub coins: i64,
    pub reason: String,
    pub commit: LedgerCommit,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerAdjusted {
    pub user_id: Uuid,
    /// Signed: positive credits the wallet, negative debits it.
    pub coins: i64,
    pub reason: String,
    pub admin_id: Uuid,
    pub commit: LedgerCommit,
}

/// Whether a stream is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamStatus {
    Live,
    Ended,
}

/// A stream's state after an event of the stream aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamSnapshot {
    pub host_id: Uuid,
    pub status: StreamStatus,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamStarted {
    pub stream_id: Uuid,
    pub host_id: Uuid,
    pub title: String,
    /// Added in schema version 2; version 1 streams read as `general`.
    pub category: String,
    pub state_after: StreamSnapshot,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViewerJoined {
    pub stream_id: Uuid,
    pub viewer_id: Uuid,
    pub state_after: StreamSnapshot,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViewerLeft {
    pub stream_id: Uuid,
    pub viewer_id: Uuid,
    pub state_after: StreamSnapshot,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamEnded {
    pub stream_id: Uuid,
    pub host_id: Uuid,
    /// The host, or the admin who ended it.
    pub ended_by: Uuid,
    pub state_after: StreamSnapshot,
}

/// The host's channel: which stream, if any, is live. One live stream per
/// host is enforced here, appended atomically with the stream's own event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelWentLive {
    pub host_id: Uuid,
    pub stream_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelWentOffline {
    pub host_id: Uuid,
    pub stream_id: Uuid,
}

/// The record of a completed command, appended in the same atomic batch as
/// the command's events, on a subject of its own that must be empty: a
/// repeated command finds it and gets the first answer, however late.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandRecorded {
    /// Whose id space the command id belongs to: `user:<id>` for an
    /// `Idempotency-Key`, `stripe` for a Stripe object id, `system:<name>`.
    pub scope: String,
    pub command_id: String,
    /// SHA-256 of the command's content: the same id with other content is
    /// a reused key, not a repeat.
    pub fingerprint: String,
    /// How many events the command appended. Without `eventPositions`,
    /// they are the messages just before the record (one atomic batch).
    pub event_count: u32,
    /// Where the command's events are, when they were appended before the
    /// record rather than in one batch with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_positions: Vec<u64>,
}

/// An adjustment of `ADJUSTMENT_APPROVAL_COINS` or more coins (either way),
/// proposed by one admin: it moves nothing until another admin approves it.
/// The first event on its own subject (`hb.adjustment.<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdjustmentProposed {
    pub adjustment_id: Uuid,
    pub user_id: Uuid,
    /// Signed: positive credits the wallet, negative debits it.
    pub coins: i64,
    pub reason: String,
    pub proposed_by: Uuid,
}

/// A proposed adjustment approved by a second admin: appended in one atomic
/// batch with the `ledger.adjusted` that applies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdjustmentApproved {
    pub adjustment_id: Uuid,
    pub user_id: Uuid,
    pub coins: i64,
    pub proposed_by: Uuid,
    pub approved_by: Uuid,
}

/// A proposed adjustment turned down: it never moves coins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdjustmentRejected {
    pub adjustment_id: Uuid,
    pub user_id: Uuid,
    pub coins: i64,
    pub proposed_by: Uuid,
    pub rejected_by: Uuid,
    pub reason: String,
}

/// Every event of the system. Serialised adjacently tagged, as the envelope's
/// `type` and `payload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum Event {
    #[serde(rename = "user.registered")]
    UserRegistered(UserRegistered),
    #[serde(rename = "user.roles_changed")]
    UserRolesChanged(UserRolesChanged),
    #[serde(rename = "reservation.claimed")]
    ReservationClaimed(ReservationClaimed),
    #[serde(rename = "ledger.coins_purchased")]
    CoinsPurchased(CoinsPurchased),
    #[serde(rename = "ledger.purchase_refunded")]
    PurchaseRefunded(PurchaseRefunded),
    #[serde(rename = "ledger.gift_sent")]
    GiftSent(GiftSent),
    #[serde(rename = "ledger.gifts_received")]
    GiftsReceived(GiftsReceived),
    #[serde(rename = "ledger.payout_requested")]
    PayoutRequested(PayoutRequested),
    #[serde(rename = "ledger.payout_approved")]
    PayoutApproved(PayoutApproved),
    #[serde(rename = "ledger.payout_rejected")]
    PayoutRejected(PayoutRejected),
    #[serde(rename = "ledger.adjusted")]
    LedgerAdjusted(LedgerAdjusted),
    #[serde(rename = "stream.started")]
    StreamStarted(StreamStarted),
    #[serde(rename = "stream.viewer_joined")]
    ViewerJoined(ViewerJoined),
    #[serde(rename = "stream.viewer_left")]
    ViewerLeft(ViewerLeft),
    #[serde(rename = "stream.ended")]
    StreamEnded(StreamEnded),
    #[serde(rename = "channel.went_live")]
    ChannelWentLive(ChannelWentLive),
    #[serde(rename = "channel.went_offline")]
    ChannelWentOffline(ChannelWentOffline),
    #[serde(rename = "stripe.event_recorded")]
    StripeEventRecorded(StripeEventRecorded),
    #[serde(rename = "command.recorded")]
    CommandRecorded(CommandRecorded),
    #[serde(rename = "payment.purchase_credited")]
    PaymentPurchaseCredited(PaymentPurchaseCredited),
    #[serde(rename = "payment.refund_recorded")]
    PaymentRefundRecorded(PaymentRefundRecorded),
    #[serde(rename = "payment.flagged")]
    PaymentFlagged(PaymentFlagged),
    #[serde(rename = "payment.posted")]
    PaymentPosted(PaymentPosted),
    #[serde(rename = "payment.dispute_recorded")]
    PaymentDisputeRecorded(PaymentDisputeRecorded),
    #[serde(rename = "payment.resolved")]
    PaymentResolved(PaymentResolved),
    #[serde(rename = "user.sessions_revoked")]
    UserSessionsRevoked(UserSessionsRevoked),
    #[serde(rename = "session.rotated")]
    SessionRotated(SessionRotated),
    #[serde(rename = "session.ended")]
    SessionEnded(SessionEnded),
    #[serde(rename = "adjustment.proposed")]
    AdjustmentProposed(AdjustmentProposed),
    #[serde(rename = "adjustment.approved")]
    AdjustmentApproved(AdjustmentApproved),
    #[serde(rename = "adjustment.rejected")]
    AdjustmentRejected(AdjustmentRejected),
}

/// The kind of aggregate an event belongs to: the second token of its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggregateKind {
    User,
    Reservation,
    Ledger,
    Stream,
    Channel,
    Stripe,
    Command,
    /// A Stripe payment (PaymentIntent): what it bought, refunded, reversed.
    Payment,
    /// One login's refresh-token family: its rotations and its end.
    Session,
    /// A proposed adjustment (four eyes): proposed, then approved or
    /// rejected.
    Adjustment,
}

impl AggregateKind {
    /// Permanent: part of every stored subject.
    pub fn as_str(self) -> &'static str {
        match self {
            AggregateKind::User => "user",
            AggregateKind::Reservation => "reservation",
            AggregateKind::Ledger => "ledger",
            AggregateKind::Stream => "stream",
            AggregateKind::Channel => "channel",
            AggregateKind::Stripe => "stripe",
            AggregateKind::Command => "command",
            AggregateKind::Payment => "payment",
            AggregateKind::Session => "session",
            AggregateKind::Adjustment => "adjustment",
        }
    }
}

/// Every event type with its current schema version, in a stable order.
pub const EVENT_TYPES: &[(&str, u16)] = &[
    ("user.registered", 1),
    ("user.roles_changed", 1),
    ("reservation.claimed", 1),
    ("ledger.coins_purchased", 1),
    ("ledger.purchase_refunded", 1),
    ("ledger.gift_sent", 1),
    ("ledger.gifts_received", 1),
    ("ledger.payout_requested", 1),
    ("ledger.payout_approved", 1),
    ("ledger.payout_rejected", 1),
    ("ledger.adjusted", 1),
    ("stream.started", 2),
    ("stream.viewer_joined", 1),
    ("stream.viewer_left", 1),
    ("stream.ended", 1),
    ("channel.went_live", 1),
    ("channel.went_offline", 1),
    ("stripe.event_recorded", 1),
    ("command.recorded", 1),
    ("payment.purchase_credited", 1),
    ("payment.refund_recorded", 1),
    ("payment.flagged", 1),
    ("payment.posted", 1),
    ("payment.dispute_recorded", 1),
    ("payment.resolved", 1),
    ("user.sessions_revoked", 1),
    ("session.rotated", 1),
    ("session.ended", 1),
    ("adjustment.proposed", 1),
    ("adjustment.approved", 1),
    ("adjustment.rejected", 1),
];

impl Event {
    /// The permanent type name, as stored in the envelope's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::UserRegistered(_) => "user.registered",
            Event::UserRolesChanged(_) => "user.roles_changed",
            Event::ReservationClaimed(_) => "reservation.claimed",
            Event::CoinsPurchased(_) => "ledger.coins_purchased",
            Event::PurchaseRefunded(_) => "ledger.purchase_refunded",
            Event::GiftSent(_) => "ledger.gift_sent",
            Event::GiftsReceived(_) => "ledger.gifts_received",
            Event::PayoutRequested(_) => "ledger.payout_requested",
            Event::PayoutApproved(_) => "ledger.payout_approved",
            Event::PayoutRejected(_) => "ledger.payout_rejected",
            Event::LedgerAdjusted(_) => "ledger.adjusted",
            Event::StreamStarted(_) => "stream.started",
            Event::ViewerJoined(_) => "stream.viewer_joined",
            Event::ViewerLeft(_) => "stream.viewer_left",
            Event::StreamEnded(_) => "stream.ended",
            Event::ChannelWentLive(_) => "channel.went_live",
            Event::ChannelWentOffline(_) => "channel.went_offline",
            Event::StripeEventRecorded(_) => "stripe.event_recorded",
            Event::CommandRecorded(_) => "command.recorded",
            Event::PaymentPurchaseCredited(_) => "payment.purchase_credited",
            Event::PaymentRefundRecorded(_) => "payment.refund_recorded",
            Event::PaymentFlagged(_) => "payment.flagged",
            Event::PaymentPosted(_) => "payment.posted",
            Event::PaymentDisputeRecorded(_) => "payment.dispute_recorded",
            Event::PaymentResolved(_) => "payment.resolved",
            Event::UserSessionsRevoked(_) => "user.sessions_revoked",
            Event::SessionRotated(_) => "session.rotated",
            Event::SessionEnded(_) => "session.ended",
            Event::AdjustmentProposed(_) => "adjustment.proposed",
            Event::AdjustmentApproved(_) => "adjustment.approved",
            Event::AdjustmentRejected(_) => "adjustment.rejected",
        }
    }

    /// The schema version this code writes for the event's type.
    pub fn schema_version(&self) -> u16 {
        current_version(self.type_name()).unwrap_or(1)
    }

    pub fn aggregate_kind(&self) -> AggregateKind {
        match self {
            Event::UserRegistered(_) | Event::UserRolesChanged(_) | Event::UserSessionsRevoked(_) => {
                AggregateKind::User
            }
            Event::ReservationClaimed(_) => AggregateKind::Reservation,
            Event::CoinsPurchased(_)
            | Event::PurchaseRefunded(_)
            | Event::GiftSent(_)
            | Event::GiftsReceived(_)
            | Event::PayoutRequested(_)
            | Event::PayoutApproved(_)
            | Event::PayoutRejected(_)
            | Event::LedgerAdjusted(_) => AggregateKind::Ledger,
            Event::StreamStarted(_) | Event::ViewerJoined(_) | Event::ViewerLeft(_) | Event::StreamEnded(_) => {
                AggregateKind::Stream
            }
            Event::ChannelWentLive(_) | Event::ChannelWentOffline(_) => AggregateKind::Channel,
            Event::StripeEventRecorded(_) => AggregateKind::Stripe,
            Event::CommandRecorded(_) => AggregateKind::Command,
            Event::PaymentPurchaseCredited(_)
            | Event::PaymentRefundRecorded(_)
            | Event::PaymentFlagged(_)
            | Event::PaymentPosted(_)
            | Event::PaymentDisputeRecorded(_)
            | Event::PaymentResolved(_) => AggregateKind::Payment,
            Event::SessionRotated(_) | Event::SessionEnded(_) => AggregateKind::Session,
            Event::AdjustmentProposed(_) | Event::AdjustmentApproved(_) | Event::AdjustmentRejected(_) => {
                AggregateKind::Adjustment
            }
        }
    }

    /// The id of the aggregate the event belongs to, as it appears in the
    /// subject. Reservations are keyed by a hash of their value, so that any
    /// email or username makes a valid subject token.
    pub fn aggregate_id(&self) -> String {
        match self {
            Event::UserRegistered(e) => e.user_id.to_string(),
            Event::UserRolesChanged(e) => e.user_id.to_string(),
            Event::ReservationClaimed(e) => reservation_id(e.kind, &e.value),
            Event::CoinsPurchased(e) => e.user_id.to_string(),
            Event::PurchaseRefunded(e) => e.user_id.to_string(),
            Event::GiftSent(e) => e.user_id.to_string(),
            Event::GiftsReceived(e) => e.user_id.to_string(),
            Event::PayoutRequested(e) => e.user_id.to_string(),
            Event::PayoutApproved(e) => e.user_id.to_string(),
            Event::PayoutRejected(e) => e.user_id.to_string(),
            Event::LedgerAdjusted(e) => e.user_id.to_string(),
            Event::StreamStarted(e) => e.stream_id.to_string(),
            Event::ViewerJoined(e) => e.stream_id.to_string(),
            Event::ViewerLeft(e) => e.stream_id.to_string(),
            Event::StreamEnded(e) => e.stream_id.to_string(),
            Event::ChannelWentLive(e) => e.host_id.to_string(),
            Event::ChannelWentOffline(e) => e.host_id.to_string(),
            Event::StripeEventRecorded(e) => e.stripe_event_id.clone(),
            Event::CommandRecorded(e) => command_record_id(&e.scope, &e.command_id),
            Event::PaymentPurchaseCredited(e) => payment_token(&e.payment_id),
            Event::PaymentRefundRecorded(e) => payment_token(&e.payment_id),
            Event::PaymentFlagged(e) => payment_token(&e.payment_id),
            Event::PaymentPosted(e) => payment_token(&e.payment_id),
            Event::PaymentDisputeRecorded(e) => payment_token(&e.payment_id),
            Event::PaymentResolved(e) => payment_token(&e.payment_id),
            Event::UserSessionsRevoked(e) => e.user_id.to_string(),
            Event::SessionRotated(e) => e.family_id.to_string(),
            Event::SessionEnded(e) => e.family_id.to_string(),
            Event::AdjustmentProposed(e) => e.adjustment_id.to_string(),
            Event::AdjustmentApproved(e) => e.adjustment_id.to_string(),
            Event::AdjustmentRejected(e) => e.adjustment_id.to_string(),
        }
    }

    /// The ledger commit, for ledger events.
    pub fn ledger_commit(&self) -> Option<&LedgerCommit> {
        match self {
            Event::CoinsPurchased(e) => Some(&e.commit),
            Event::PurchaseRefunded(e) => Some(&e.commit),
            Event::GiftSent(e) => Some(&e.commit),
            Event::GiftsReceived(e) => Some(&e.commit),
            Event::PayoutRequested(e) => Some(&e.commit),
            Event::PayoutApproved(e) => Some(&e.commit),
            Event::PayoutRejected(e) => Some(&e.commit),
            Event::LedgerAdjusted(e) => Some(&e.commit),
            _ => None,
        }
    }
}

/// The schema version this code writes for a type, or `None` for an unknown
/// type.
pub fn current_version(type_name: &str) -> Option<u16> {
    EVENT_TYPES.iter().find(|(t, _)| *t == type_name).map(|(_, v)| *v)
}

/// The subject token of a reservation: the kind and a SHA-256 of the value.
pub fn reservation_id(kind: ReservationKind, value: &str) -> String {
    let prefix = match kind {
        ReservationKind::Email => "email",
        ReservationKind::Username => "username",
        ReservationKind::Payout => "payout",
    };
    format!("{prefix}-{}", crate::canonical::sha256_hex(value.as_bytes()))
}

/// The subject token of a command record: a SHA-256 of its scope and id, so
/// that any client's key makes a valid subject token.
pub fn command_record_id(scope: &str, command_id: &str) -> String {
    let mut key = String::with_capacity(scope.len() + command_id.len() + 1);
    key.push_str(scope);
    key.push('\n');
    key.push_str(command_id);
    crate::canonical::sha256_hex(key.as_bytes())
}
