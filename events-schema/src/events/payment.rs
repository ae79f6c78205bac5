//! The payloads of the Stripe protocol: a verified webhook event, and a
//! payment's purchase, refunds, disputes, posting and flags.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A verified Stripe webhook event, recorded once, whatever its type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StripeEventRecorded {
    pub stripe_event_id: String,
    pub stripe_event_type: String,
    /// Stripe's `created`, in seconds since the epoch.
    pub stripe_created: i64,
    /// The body exactly as Stripe sent it.
    pub body: String,
}

/// What a Stripe payment bought, once a purchase event named a known user
/// and package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPurchase {
    pub user_id: Uuid,
    pub package_id: String,
    /// The package's coins, credited once.
    pub coins: i64,
    /// What Stripe says was paid, in the currency's minor unit.
    pub amount_cents: i64,
    /// ISO 4217 code in lower case, as Stripe writes it.
    pub currency: String,
}

/// Why a verified Stripe event was recorded but not credited: finance sees
/// it in the reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentFlag {
    /// `metadata.userId` is missing, not a user id, or names no user.
    UnknownUser,
    /// `metadata.packageId` is missing or names no coin package on sale.
    UnknownPackage,
    /// A paid Checkout Session without a PaymentIntent: nothing to key the
    /// payment by (the session id stands for it).
    NoPaymentIntent,
    /// A refund event whose amounts are not a refund (`amount_refunded`
    /// negative or above `amount`).
    InvalidRefund,
    /// The card holder disputed the payment (a chargeback): the payment
    /// has at least one dispute (`PaymentSnapshot::disputes`).
    Disputed,
    /// What was paid is not the price offered (`metadata.priceCents` and
    /// `priceCurrency`, or the package's current price for an object
    /// without them), or the price offered is not one the catalogue offers
    /// for the package: recorded, never credited.
    AmountMismatch,
}

/// A dispute (chargeback) of the payment's charge, as Stripe's dispute
/// events described it, merged over every event seen: facts only grow
/// (funds once withdrawn stay withdrawn), so that any order of the events
/// leaves the same dispute.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentDispute {
    /// Stripe's dispute id (`dp_...`).
    pub dispute_id: String,
    /// The disputed amount, in the currency's minor unit.
    pub amount_cents: i64,
    /// ISO 4217 code in lower case, as Stripe writes it.
    pub currency: String,
    /// Stripe's `status` (`needs_response`, `under_review`, `won`, `lost`,
    /// ...): a final one (`won`, `lost`) is kept over any other.
    pub status: String,
    /// Stripe's `reason` (`fraudulent`, ...).
    pub reason: String,
    /// The dispute fee Stripe charged, net of fees it gave back (the sum of
    /// the balance transactions' `fee`), in the minor unit, as the event
    /// listing the most balance transactions gave it.
    pub fee_cents: i64,
    /// How many balance transactions that event listed: Stripe adds one per
    /// movement of funds, so more is later.
    #[serde(default)]
    pub balance_transactions: u32,
    /// Stripe withdrew the disputed funds (`charge.dispute.funds_withdrawn`,
    /// or a balance transaction taking money out).
    pub funds_withdrawn: bool,
    /// Stripe gave them back: the dispute was won
    /// (`charge.dispute.funds_reinstated`, or a balance transaction putting
    /// money back).
    pub funds_reinstated: bool,
    /// Coins this dispute holds reversed now (withdrawn, not reinstated).
    pub coins_reversed: i64,
}

/// What the first purchase confirmation said about a payment, as Stripe
/// described it, whether or not it was credited: finance sees it in the
/// reconciliation even when the user or package is unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentClaim {
    /// `metadata.userId` (or the session's `client_reference_id`) as
    /// written, possibly empty or not a user id.
    pub user_id: String,
    /// `metadata.packageId` as written, possibly empty.
    pub package_id: String,
    /// What Stripe says was paid, in the currency's minor unit.
    pub amount_cents: i64,
    pub currency: String,
}

/// How finance settled a flagged payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResolutionAction {
    /// The payment was credited to a named user, a named package's coins.
    Credit,
    /// The flag was closed without coins (refunded in Stripe's dashboard,
    /// a test, ...).
    Dismiss,
}

/// A flagged payment's resolution, by finance or an admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentResolution {
    pub action: ResolutionAction,
    /// Who resolved it.
    pub resolved_by: Uuid,
    pub note: String,
    /// For a credit: the user credited, the package and its coins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_id: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub coins: i64,
}

/// A Stripe payment's state after an event of the payment aggregate
/// (`hb.payment.<PaymentIntent id>`), carried in every such event.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentSnapshot {
    /// `None` until a purchase event with a known user and package.
    pub purchase: Option<PaymentPurchase>,
    /// The charge's `amount` as the latest refund event gave it; 0 before.
    pub charge_amount_cents: i64,
    /// The highest running `amount_refunded` seen: refunds only grow, so a
    /// lower one arrived out of order.
    pub amount_refunded_cents: i64,
    /// Coins taken back from the wallet so far, never more than
    /// `ceil(coins * amount_refunded / amount)`.
    pub coins_reversed: i64,
    /// Every reason this payment was flagged, in order, without repeats.
    pub flags: Vec<PaymentFlag>,
    /// Every dispute of the payment, in the order first seen; remembered
    /// forever, also when seen before the purchase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disputes: Vec<PaymentDispute>,
    /// Coins disputes took back so far, in total (never less over time).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub coins_dispute_withdrawn: i64,
    /// Coins credited again after won disputes, in total: never more than
    /// `coins_dispute_withdrawn`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub coins_dispute_reinstated: i64,
    /// What the first purchase confirmation said (absent in events written
    /// before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<PaymentClaim>,
    /// How finance settled the payment's flags, once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<PaymentResolution>,
    /// Log position of the payment's last decision whose ledger effect is
    /// posted (its commit is on the buyer's ledger): a decision that moves
    /// coins at a later position is pending. Absent in events written
    /// before decisions were posted apart, whose effects were appended in
    /// the same atomic batch: none of them is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posted_position: Option<u64>,
}

/// A purchase credited: the coins are due to the buyer. The decision is
/// appended alone; its `ledger.coins_purchased` posting follows on the
/// buyer's ledger, then `payment.posted` (older logs hold all three in one
/// atomic batch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPurchaseCredited {
    pub payment_id: String,
    /// The Stripe event that confirmed the payment.
    pub stripe_event_id: String,
    pub purchase: PaymentPurchase,
    pub state_after: PaymentSnapshot,
}

/// A refund seen (a `charge.refunded`), or a refund seen earlier applied
/// now that the purchase is known (`stripeEventId` then absent). `coins`
/// is what this event reverses (0 when nothing more is due).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRefundRecorded {
    pub payment_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe_event_id: Option<String>,
    pub charge_amount_cents: i64,
    pub amount_refunded_cents: i64,
    pub coins: i64,
    pub state_after: PaymentSnapshot,
}

/// A dispute event seen (`charge.dispute.*`), or a dispute seen earlier
/// applied now that the purchase is known, or once refunds left room for
/// it (`stripeEventId` then absent). `coins` is what this event moves:
/// positive, coins reversed (`wallet -> external:stripe`, posted as
/// `ledger.purchase_refunded`); negative, coins credited again after a won
/// dispute (`external:stripe -> wallet`, posted as
/// `ledger.coins_purchased`); 0, nothing (the dispute's facts changed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentDisputeRecorded {
    pub payment_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe_event_id: Option<String>,
    /// The dispute after this event (merged with what was known of it).
    pub dispute: PaymentDispute,
    pub coins: i64,
    pub state_after: PaymentSnapshot,
}

/// Finance resolved a flagged payment: credited it (its ledger effect, the
/// purchase's coins on the named user's wallet, is posted like a
/// purchase's: `ledger.coins_purchased`, then `payment.posted`) or
/// dismissed its flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentResolved {
    pub payment_id: String,
    pub resolution: PaymentResolution,
    /// For a credit: what it credits (then also `stateAfter.purchase`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchase: Option<PaymentPurchase>,
    pub state_after: PaymentSnapshot,
}

/// A decision's ledger effect is posted: the commit carrying
/// `sourcePosition = postedPosition` is on the buyer's ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPosted {
    pub payment_id: String,
    /// The log position of the decision posted.
    pub posted_position: u64,
    /// Where its ledger commit is.
    pub ledger_position: u64,
    pub state_after: PaymentSnapshot,
}

/// A verified event about the payment that could not be credited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentFlagged {
    pub payment_id: String,
    pub stripe_event_id: String,
    pub flag: PaymentFlag,
    /// What the event said (the user id or package id it named), for finance.
    pub detail: String,
    pub state_after: PaymentSnapshot,
}

/// Whether a Stripe id can stand in a subject as it is: Stripe's ids
/// (`pi_3Q...`, `evt_1N...`) are letters, digits and underscores.
pub fn is_plain_stripe_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 255 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The subject token of a payment: its PaymentIntent id, or a SHA-256 of
/// any id that could not stand in a subject (never expected from Stripe).
pub fn payment_token(payment_id: &str) -> String {
    if is_plain_stripe_id(payment_id) {
        payment_id.to_string()
    } else {
        format!("sha256-{}", crate::canonical::sha256_hex(payment_id.as_bytes()))
    }
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}
