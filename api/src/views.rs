//! The API's own request and response types (camelCase JSON), and their
//! conversion from the read models and the events. Events and read-model
//! documents are never serialised to clients directly: their shapes may
//! change with the storage, these may not.

use chrono::{DateTime, SecondsFormat, Utc};
use events_schema::{Money, Role};
use projections::{
    AccountBalance, LeaderboardEntry, LedgerEntryDoc, PayoutDoc, PayoutStatus, StreamDoc, TransactionDoc, TxMetadata,
    UserDoc,
};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::role_name;

mod requests;
pub use requests::*;

/// Times are RFC 3339 in UTC with milliseconds, as in the runbook
/// (`2025-01-25T10:00:00.000Z`).
pub fn ts<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn ts_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ts(t, s),
        None => s.serialize_none(),
    }
}

// ---------------------------------------------------------------------------
// Responses

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub username: String,
    /// `user`, and any of `admin`, `finance`, `ops`.
    pub roles: Vec<String>,
    #[serde(serialize_with = "ts")]
    pub created_at: DateTime<Utc>,
}

impl UserView {
    pub fn new(id: Uuid, email: &str, username: &str, roles: &[Role], created_at: DateTime<Utc>) -> UserView {
        UserView { id, email: email.to_string(), username: username.to_string(), roles: roles_view(roles), created_at }
    }
}

impl From<UserDoc> for UserView {
    fn from(d: UserDoc) -> UserView {
        UserView::new(d.id, &d.email, &d.username, &d.roles, d.created_at)
    }
}

pub fn roles_view(roles: &[Role]) -> Vec<String> {
    roles.iter().map(|r| role_name(*r).to_string()).collect()
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthResponse {
    pub user: UserView,
    /// HS256 JWT, 15 minutes.
    pub access_token: String,
    /// HS256 JWT, 30 days; exchange it at `/api/v1/auth/refresh`.
    pub refresh_token: String,
    /// The registration's log position (registration only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokensResponse {
    pub access_token: String,
    pub refresh_token: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WalletView {
    /// Coins the user can spend (`wallet:<id>`).
    pub coins: i64,
    /// A host's earnings from gifts (`earnings:<id>`).
    pub earnings: i64,
    /// Earnings reserved by pending payouts (`payout_hold:<id>`).
    pub held: i64,
    /// Earnings payable now: those whose gifts are at least
    /// `EARNINGS_HOLD_HOURS` old (rounded up to the hour). From the ledger
    /// in the log, as a payout request is decided.
    pub earnings_available: i64,
    /// Log position of the user's last ledger commit these figures include.
    pub position: u64,
}

/// Money: an exact decimal as a string, and an ISO 4217 code in lower case.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MoneyView {
    #[schema(example = "9.99")]
    pub amount: String,
    #[schema(example = "usd")]
    pub currency: String,
}

impl From<&Money> for MoneyView {
    fn from(m: &Money) -> MoneyView {
        MoneyView { amount: m.amount.to_string(), currency: m.currency.clone() }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoinPackageView {
    pub id: String,
    pub coins: i64,
    pub price: MoneyView,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GiftCatalogItem {
    pub id: String,
    pub name: String,
    /// Price of one unit, in coins.
    pub coins: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransactionMetadataView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripe_session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gift_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gifts_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payout_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_id: Option<Uuid>,
}

impl From<TxMetadata> for TransactionMetadataView {
    fn from(m: TxMetadata) -> Self {
        TransactionMetadataView {
            payment_id: m.payment_id,
            stripe_session_id: m.stripe_session_id,
            stream_id: m.stream_id,
            host_id: m.host_id,
            gift_id: m.gift_id,
            quantity: m.quantity,
            gifts_count: m.gifts_count,
            payout_id: m.payout_id,
            external_ref: m.external_ref,
            reason: m.reason,
            admin_id: m.admin_id,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransactionView {
    pub id: Uuid,
    pub user_id: Uuid,
    /// `purchase`, `refund`, `gift_sent`, `gift_received`, `payout_requested`,
    /// `payout_paid`, `payout_rejected`, `adjustment`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `completed`, `pending`, `paid`, `rejected`.
    pub status: String,
    /// Signed change of the user's wallet + earnings + hold.
    pub coins: i64,
    pub wallet_after: i64,
    pub earnings_after: i64,
    pub held_after: i64,
    pub metadata: TransactionMetadataView,
    #[serde(serialize_with = "ts")]
    pub created_at: DateTime<Utc>,
    pub position: u64,
}

impl From<TransactionDoc> for TransactionView {
    fn from(d: TransactionDoc) -> Self {
        TransactionView {
            id: d.id,
            user_id: d.user_id,
            kind: d.kind.as_str().to_string(),
            status: d.status.as_str().to_string(),
            coins: d.coins,
            wallet_after: d.wallet_after,
            earnings_after: d.earnings_after,
            held_after: d.held_after,
            metadata: d.metadata.into(),
            created_at: d.created_at,
            position: d.position,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamCreated {
    pub stream_id: Uuid,
    pub position: u64,
}

/// The log position of a command's commit.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PositionView {
    pub position: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamView {
    pub id: Uuid,
    pub host_id: Uuid,
    pub title: String,
    pub category: String,
    /// `live` or `ended`.
    pub status: String,
    pub is_live: bool,
    pub viewers: i64,
    pub peak_viewers: i64,
    /// Coins of every gift sent to the stream.
    pub gifts_coins: i64,
    #[serde(serialize_with = "ts")]
    pub start_time: DateTime<Utc>,
    #[serde(serialize_with = "ts_opt")]
    pub end_time: Option<DateTime<Utc>>,
    pub position: u64,
}

impl From<StreamDoc> for StreamView {
    fn from(d: StreamDoc) -> Self {
        StreamView {
            id: d.id,
            host_id: d.host_id,
            title: d.title,
            category: d.category,
            status: if d.is_live { "live".into() } else { "ended".into() },
            is_live: d.is_live,
            viewers: d.viewers,
            peak_viewers: d.peak_viewers,
            gifts_coins: d.gifts_coins,
            start_time: d.start_time,
            end_time: d.end_time,
            position: d.position,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaderboardEntryView {
    pub user_id: Uuid,
    pub coins: i64,
}

impl From<LeaderboardEntry> for LeaderboardEntryView {
    fn from(e: LeaderboardEntry) -> Self {
        LeaderboardEntryView { user_id: e.user_id, coins: e.coins }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GiftSentView {
    pub gift_id: String,
    pub quantity: i64,
    /// Coins the gift cost (unit price × quantity).
    pub coins: i64,
    /// The sender's wallet after the gift.
    pub balance: i64,
    pub position: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayoutCreated {
    pub payout_id: Uuid,
    /// `pending`.
    pub status: String,
    pub coins: i64,
    pub fiat: MoneyView,
    pub position: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayoutSettled {
    pub payout_id: Uuid,
    /// `paid` or `rejected`.
    pub status: String,
    pub position: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayoutView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub coins: i64,
    pub fiat: MoneyView,
    pub destination: String,
    /// `pending`, `paid` or `rejected`.
    pub status: String,
    pub external_ref: Option<String>,
    pub reason: Option<String>,
    #[serde(serialize_with = "ts")]
    pub requested_at: DateTime<Utc>,
    #[serde(serialize_with = "ts_opt")]
    pub settled_at: Option<DateTime<Utc>>,
    pub position: u64,
    /// Risk flags for the admin deciding it (the decision stays theirs):
    /// `gifts_from_negative_wallets` with the coins concerned. Computed for
    /// the payout queue (`GET /admin/payouts`), empty elsewhere.
    pub risk: Vec<RiskFlagView>,
}

pub fn payout_status_name(s: PayoutStatus) -> &'static str {
    s.as_str()
}

impl From<PayoutDoc> for PayoutView {
    fn from(d: PayoutDoc) -> Self {
        PayoutView {
            id: d.id,
            user_id: d.user_id,
            coins: d.coins,
            fiat: MoneyView::from(&d.fiat),
            destination: d.destination,
            status: payout_status_name(d.status).to_string(),
            external_ref: d.external_ref,
            reason: d.reason,
            requested_at: d.requested_at,
            settled_at: d.settled_at,
            position: d.position,
            risk: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdjustmentView {
    pub user_id: Uuid,
    pub coins: i64,
    /// The user's wallet after the adjustment.
    pub balance: i64,
    pub position: u64,
}

/// One risk flag of a payout.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RiskFlagView {
    /// `gifts_from_negative_wallets`: the host received, within the hold
    /// window (at least a day), gifts from viewers whose wallet is now
    /// negative after a refund or a chargeback.
    pub flag: String,
    /// The coins of those gifts.
    pub coins: i64,
}

/// An account's balance at a time or position.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BalanceAtView {
    pub account: String,
    pub balance: i64,
    pub as_of: AsOfView,
}

/// The entry a balance is as of: its log position and time (0 and null:
/// no entry yet).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AsOfView {
    pub position: u64,
    #[serde(serialize_with = "ts_opt")]
    pub time: Option<DateTime<Utc>>,
}

/// A statement (JSON): opening and closing balances and the window's
/// entries, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatementView {
    pub account: String,
    pub from: String,
    pub to: String,
    /// The balance before `from`.
    pub opening_balance: i64,
    /// The balance at `to`.
    pub closing_balance: i64,
    pub entries: Vec<LedgerEntryView>,
}

/// A proposed adjustment in the four-eyes queue.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdjustmentItemView {
    pub id: Uuid,
    pub user_id: Uuid,
    /// Signed: positive credits the wallet.
    pub coins: i64,
    pub reason: String,
    /// `proposed`, `applied` or `rejected`.
    pub status: String,
    pub proposed_by: Uuid,
    /// The admin who approved or rejected it.
    pub decided_by: Option<Uuid>,
    /// Why it was rejected.
    pub decision_reason: Option<String>,
    #[serde(serialize_with = "ts")]
    pub proposed_at: DateTime<Utc>,
    #[serde(serialize_with = "ts_opt")]
    pub decided_at: Option<DateTime<Utc>>,
    pub position: u64,
}

impl From<projections::AdjustmentDoc> for AdjustmentItemView {
    fn from(d: projections::AdjustmentDoc) -> Self {
        AdjustmentItemView {
            id: d.id,
            user_id: d.user_id,
            coins: d.coins,
            reason: d.reason,
            status: d.status.as_str().to_string(),
            proposed_by: d.proposed_by,
            decided_by: d.decided_by,
            decision_reason: d.decision_reason,
            proposed_at: d.proposed_at,
            decided_at: d.decided_at,
            position: d.position,
        }
    }
}

/// A large adjustment, proposed: it moves nothing until another admin
/// approves it (`202`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdjustmentProposedView {
    pub adjustment_id: Uuid,
    /// `proposed`.
    pub status: String,
    pub user_id: Uuid,
    pub coins: i64,
    pub position: u64,
}

/// A proposed adjustment approved (`applied`) or rejected.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdjustmentSettledView {
    pub adjustment_id: Uuid,
    /// `applied` or `rejected`.
    pub status: String,
    pub user_id: Uuid,
    pub coins: i64,
    /// The user's wallet after an applied adjustment; absent when rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<i64>,
    pub position: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolesView {
    pub user_id: Uuid,
    pub roles: Vec<String>,
    pub position: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntryView {
    pub account: String,
    pub position: u64,
    /// Index of the entry in its commit.
    pub seq: u32,
    /// The event type of the commit (`ledger.gift_sent`, ...).
    pub event_type: String,
    pub counterparty: String,
    /// Signed: positive into the account.
    pub coins: i64,
    /// The account's balance after this entry.
    pub balance_after: i64,
    #[serde(serialize_with = "ts")]
    pub created_at: DateTime<Utc>,
}

impl From<LedgerEntryDoc> for LedgerEntryView {
    fn from(d: LedgerEntryDoc) -> Self {
        LedgerEntryView {
            account: d.account.to_string(),
            position: d.position,
            seq: d.seq,
            event_type: d.event_type,
            counterparty: d.counterparty.to_string(),
            coins: d.coins,
            balance_after: d.balance_after,
            created_at: d.created_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountBalanceView {
    pub account: String,
    pub balance: i64,
    pub position: u64,
}

impl From<AccountBalance> for AccountBalanceView {
    fn from(b: AccountBalance) -> Self {
        AccountBalanceView { account: b.account.to_string(), balance: b.balance, position: b.position }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrialBalanceView {
    /// Every account's balance (paged, by account).
    pub items: Vec<AccountBalanceView>,
    pub next_cursor: Option<String>,
    /// The sum of every account's balance: always 0.
    pub total_coins: i64,
    pub accounts_count: u64,
    /// The ledger projection's checkpoint the figures are as of.
    pub position: u64,
}

/// The coins that moved on one UTC day, by kind (see the daily route).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerDayView {
    /// The UTC day.
    pub day: chrono::NaiveDate,
    pub purchased_coins: i64,
    pub gifted_coins: i64,
    pub credited_coins: i64,
    pub paid_out_coins: i64,
    pub reversed_coins: i64,
}

impl LedgerDayView {
    pub fn new(day: chrono::NaiveDate, t: projections::DayTotals) -> LedgerDayView {
        LedgerDayView {
            day,
            purchased_coins: t.purchased_coins,
            gifted_coins: t.gifted_coins,
            credited_coins: t.credited_coins,
            paid_out_coins: t.paid_out_coins,
            reversed_coins: t.reversed_coins,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerDailyView {
    /// Every UTC day from `from` to `to`, oldest first; a day nothing
    /// moved on reads 0 in every kind.
    pub days: Vec<LedgerDayView>,
    /// The first day (UTC).
    pub from: chrono::NaiveDate,
    /// The last day: today (UTC).
    pub to: chrono::NaiveDate,
    /// The daily projection's checkpoint the figures are as of.
    pub position: u64,
}

/// Pages: `{items, nextCursor}`; `nextCursor` is null on the last page.
macro_rules! page_type {
    ($name:ident, $item:ty) => {
        #[derive(Debug, Clone, Serialize, ToSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            pub items: Vec<$item>,
            /// Pass as `cursor` for the next page; null on the last page.
            pub next_cursor: Option<String>,
        }

        impl<D: Into<$item>> From<projections::Page<D>> for $name {
            fn from(page: projections::Page<D>) -> Self {
                $name { items: page.items.into_iter().map(Into::into).collect(), next_cursor: page.next_cursor }
            }
        }
    };
}

page_type!(TransactionPage, TransactionView);
page_type!(StreamPage, StreamView);
page_type!(LeaderboardPage, LeaderboardEntryView);
page_type!(PayoutPage, PayoutView);
page_type!(AdjustmentPage, AdjustmentItemView);
page_type!(LedgerEntryPage, LedgerEntryView);

/// `POST /coins/checkout` and `POST /coins/payment-intent`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoinPurchaseBody {
    /// One of `GET /coins/packages`.
    pub package_id: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutCreated {
    pub checkout_session_id: String,
    /// Stripe's hosted page to send the buyer to.
    pub url: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentIntentCreated {
    pub payment_intent_id: String,
    /// For the mobile payment sheet.
    pub client_secret: Option<String>,
}

/// The answer to Stripe for a verified event.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAck {
    pub received: bool,
    /// The event id was recorded before: nothing changed.
    pub duplicate: bool,
    /// The log position of the event's record (or the first delivery's).
    pub position: u64,
}

/// One Stripe payment against the coins issued and reversed for it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReconciliationItem {
    /// The PaymentIntent id.
    pub payment_id: String,
    pub user_id: Option<Uuid>,
    pub package_id: Option<String>,
    pub stripe_session_id: Option<String>,
    /// What Stripe says was paid, in the currency's minor unit.
    pub amount_cents: i64,
    pub currency: Option<String>,
    /// Stripe's running `amount_refunded` (the highest seen) and the
    /// charge's `amount` it is a part of.
    pub amount_refunded_cents: i64,
    pub charge_amount_cents: i64,
    /// Coins the payment should have issued (its package's), and issued
    /// (including coins credited back after won disputes).
    pub coins_expected: i64,
    pub coins_issued: i64,
    /// Coins the refunds should have reversed (`ceil(coins * refunded /
    /// amount)`), and reversed.
    pub coins_reversal_expected: i64,
    pub coins_reversed: i64,
    /// `unknown_user`, `unknown_package`, `no_payment_intent`,
    /// `invalid_refund`: events recorded and not credited.
    pub flags: Vec<String>,
    /// Why this payment does not match (empty when it does): the flags,
    /// `issued_mismatch`, `reversed_mismatch`, `no_stripe_payment` (coins
    /// issued with no payment recorded).
    pub mismatches: Vec<String>,
    /// Every dispute (chargeback) of the payment, as Stripe described it.
    pub disputes: Vec<DisputeView>,
    /// Coins disputes reversed, in total, and credited back after won
    /// disputes, in total (both included in `coinsReversed` and
    /// `coinsIssued`, and in their expected figures).
    pub coins_dispute_withdrawn: i64,
    pub coins_dispute_reinstated: i64,
    /// Stripe's dispute fees on this payment, in the minor unit.
    pub dispute_fee_cents: i64,
    /// The user and package the purchase's metadata named, as written,
    /// even when unknown (`userId` and `packageId` are the ones credited).
    pub claimed_user_id: Option<String>,
    pub claimed_package_id: Option<String>,
    /// `open` (flagged, not resolved), `resolved`, or `clear` (no flag).
    pub status: String,
    /// How finance settled the flags.
    pub resolution: Option<ResolutionView>,
    pub position: u64,
}

/// A flagged payment's resolution.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolutionView {
    /// `credit` or `dismiss`.
    pub action: String,
    pub resolved_by: Uuid,
    pub note: String,
    pub user_id: Option<Uuid>,
    pub package_id: Option<String>,
    /// Coins credited (0 for a dismissal).
    pub coins: i64,
}

/// One dispute of a payment.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisputeView {
    /// Stripe's dispute id (`dp_...`).
    pub dispute_id: String,
    /// The disputed amount, in the minor unit.
    pub amount_cents: i64,
    pub currency: String,
    /// Stripe's status (`needs_response`, `under_review`, `won`, `lost`, ...).
    pub status: String,
    pub reason: String,
    /// Stripe's dispute fee, in the minor unit.
    pub fee_cents: i64,
    pub funds_withdrawn: bool,
    pub funds_reinstated: bool,
    /// Coins this dispute holds reversed now.
    pub coins_reversed: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReconciliationView {
    /// Every payment of this page, by PaymentIntent id.
    pub items: Vec<ReconciliationItem>,
    pub next_cursor: Option<String>,
    /// The payments of this page that do not match.
    pub mismatches: Vec<ReconciliationItem>,
    /// Totals of this page.
    pub coins_issued: i64,
    pub coins_reversed: i64,
}

impl From<&projections::StripePaymentDoc> for ReconciliationItem {
    fn from(d: &projections::StripePaymentDoc) -> ReconciliationItem {
        ReconciliationItem {
            payment_id: d.payment_id.clone(),
            user_id: d.user_id,
            package_id: d.stripe.package_id.clone(),
            stripe_session_id: d.stripe_session_id.clone(),
            amount_cents: d.stripe.amount_cents,
            currency: d.stripe.currency.clone(),
            amount_refunded_cents: d.stripe.amount_refunded_cents,
            charge_amount_cents: d.stripe.charge_amount_cents,
            coins_expected: d.stripe.coins_expected,
            coins_issued: d.coins_issued,
            coins_reversal_expected: d.coins_reversal_expected(),
            coins_reversed: d.coins_reversed,
            flags: d.stripe.flags.clone(),
            mismatches: d.mismatches(),
            disputes: d
                .stripe
                .disputes
                .iter()
                .map(|x| DisputeView {
                    dispute_id: x.dispute_id.clone(),
                    amount_cents: x.amount_cents,
                    currency: x.currency.clone(),
                    status: x.status.clone(),
                    reason: x.reason.clone(),
                    fee_cents: x.fee_cents,
                    funds_withdrawn: x.funds_withdrawn,
                    funds_reinstated: x.funds_reinstated,
                    coins_reversed: x.coins_reversed,
                })
                .collect(),
            coins_dispute_withdrawn: d.stripe.coins_dispute_withdrawn,
            coins_dispute_reinstated: d.stripe.coins_dispute_reinstated,
            dispute_fee_cents: d.dispute_fee_cents(),
            claimed_user_id: d.stripe.claimed_user_id.clone(),
            claimed_package_id: d.stripe.claimed_package_id.clone(),
            status: d.status().to_string(),
            resolution: d.stripe.resolution.as_ref().map(|r| ResolutionView {
                action: r.action.clone(),
                resolved_by: r.resolved_by,
                note: r.note.clone(),
                user_id: r.user_id,
                package_id: r.package_id.clone(),
                coins: r.coins,
            }),
            position: d.position,
        }
    }
}

/// `POST /api/v1/auth/logout`: the refresh token of the login to end.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogoutRequest {
    /// A refresh token of the caller's (any generation of the login).
    #[schema(min_length = 1, max_length = 4096)]
    pub refresh_token: String,
}

/// Every session of a user revoked.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionsRevokedView {
    pub user_id: Uuid,
    /// The user's sessions epoch now: tokens carrying a lower one are refused.
    pub sessions_epoch: u64,
    pub position: u64,
}
