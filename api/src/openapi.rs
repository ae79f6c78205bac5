//! The OpenAPI 3.1 document, generated from the handlers' annotations: a
//! route added to the router without its annotation here fails the test
//! that compares the two (`tests/it/openapi.rs`).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::Problem;
use crate::routes::{account, admin, auth, coins, ledger, ops, payouts, sessions, streams};
use crate::views;

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "HaloBuzz Ledger API",
        version = "1",
        description = "Coins, gifts, streams and payouts. Errors are RFC 9457 problem+json with a stable `code`. \
Commands accept `Idempotency-Key` and answer a log `position`; queries accept `minPosition`."
    ),
    paths(
        ops::health, ops::metrics, ops::openapi_json, ops::docs,
        auth::register, auth::login, auth::refresh,
        account::me, account::wallet, account::transactions, account::coin_packages,
        coins::checkout, coins::payment_intent, coins::stripe_webhook,
        streams::gift_catalog, streams::start, streams::end, streams::join, streams::leave, streams::live,
        streams::get_stream, streams::leaderboard, streams::send_gift,
        payouts::request, payouts::list_own,
        admin::list_payouts, admin::approve_payout, admin::reject_payout, admin::adjust, admin::change_roles,
        ledger::entries, ledger::trial_balance, ledger::reconciliation,
        sessions::logout, sessions::revoke_sessions,
    ),
    components(schemas(
        Problem,
        views::RegisterRequest, views::LoginRequest, views::RefreshRequest, views::StartStreamRequest,
        views::SendGiftRequest, views::PayoutRequestBody, views::ApprovePayoutRequest, views::RejectPayoutRequest,
        views::AdjustmentRequest, views::RolesRequest,
        views::UserView, views::AuthResponse, views::TokensResponse, views::WalletView, views::MoneyView,
        views::CoinPackageView, views::GiftCatalogItem, views::TransactionView, views::TransactionMetadataView,
        views::StreamCreated, views::PositionView, views::StreamView, views::LeaderboardEntryView, views::GiftSentView,
        views::PayoutCreated, views::PayoutSettled, views::PayoutView, views::AdjustmentView, views::RolesView,
        views::LedgerEntryView, views::AccountBalanceView, views::TrialBalanceView,
        views::TransactionPage, views::StreamPage, views::LeaderboardPage, views::PayoutPage, views::LedgerEntryPage,
        views::CoinPurchaseBody, views::CheckoutCreated, views::PaymentIntentCreated, views::WebhookAck,
        views::ReconciliationItem, views::ReconciliationView,
        views::LogoutRequest, views::SessionsRevokedView,
        ops::HealthView, ops::HealthChecks, ops::DependencyCheck, ops::ProjectorCheck, ops::ReactorCheck,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Registration, login, tokens"),
        (name = "account", description = "The caller's profile, wallet and transactions"),
        (name = "coins", description = "Coin packages, buying coins through Stripe, Stripe's webhook"),
        (name = "gifts", description = "The gift catalog and sending gifts"),
        (name = "streams", description = "Stream lifecycle, live list, leaderboards"),
        (name = "payouts", description = "A host's payouts"),
        (name = "admin", description = "Payout queue, adjustments, roles"),
        (name = "ledger", description = "Entries, trial balance and reconciliation with Stripe, for finance"),
        (name = "operations", description = "Health, metrics, this document"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}
