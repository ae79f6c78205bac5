//! The OpenAPI 3.1 document, generated from the handlers' annotations: a
//! route added to the router without its annotation here fails the test
//! that compares the two (`tests/it/openapi.rs`).
//!
//! The served document (`document`) adds what the annotations cannot say:
//! every constraint of a field, taken from the constants that enforce it,
//! and what the configuration and the log decide (the gift and package ids
//! on sale, `PAYOUT_MIN_COINS`, the log's last position for `minPosition`).
//! A client generated from it never sends what the service refuses (the
//! fuzzing test, `tests/it/fuzz.rs`, holds both to that).

use events_schema::Account;
use projections::{PAGE_LIMIT_MAX, PayoutStatus, TxStatus, TxType};
use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::config::Config;

use crate::error::Problem;
use crate::routes::{account, admin, auth, coins, ledger, ops, payments, payouts, sessions, streams};
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
        admin::approve_adjustment, admin::reject_adjustment, admin::list_adjustments,
        ledger::entries, ledger::trial_balance, ledger::daily, ledger::reconciliation, ledger::balance, ledger::statement,
        sessions::logout, sessions::revoke_sessions, payments::resolve,
    ),
    components(schemas(
        Problem,
        views::RegisterRequest, views::LoginRequest, views::RefreshRequest, views::StartStreamRequest,
        views::SendGiftRequest, views::PayoutRequestBody, views::ApprovePayoutRequest, views::RejectPayoutRequest,
        views::AdjustmentRequest, views::RolesRequest, views::RejectAdjustmentRequest,
        views::AdjustmentProposedView, views::AdjustmentSettledView, views::AdjustmentItemView, views::AdjustmentPage,
        views::BalanceAtView, views::AsOfView, views::StatementView, views::RiskFlagView,
        views::UserView, views::AuthResponse, views::TokensResponse, views::WalletView, views::MoneyView,
        views::CoinPackageView, views::GiftCatalogItem, views::TransactionView, views::TransactionMetadataView,
        views::StreamCreated, views::PositionView, views::StreamView, views::LeaderboardEntryView, views::GiftSentView,
        views::PayoutCreated, views::PayoutSettled, views::PayoutView, views::AdjustmentView, views::RolesView,
        views::LedgerEntryView, views::AccountBalanceView, views::TrialBalanceView, views::LedgerDayView,
        views::LedgerDailyView,
        views::TransactionPage, views::StreamPage, views::LeaderboardPage, views::PayoutPage, views::LedgerEntryPage,
        views::CoinPurchaseBody, views::CheckoutCreated, views::PaymentIntentCreated, views::WebhookAck,
        views::ReconciliationItem, views::ReconciliationView, views::DisputeView, views::ResolutionView, views::ResolvePaymentRequest, views::PaymentResolvedView, views::ResolveActionParam,
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

/// Unicode's White_Space characters, which Rust's `str::trim` removes: a
/// class for patterns, in the notation both ECMA-262 and Python read.
const WHITE_SPACE: &str = r"\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// The longest cursor the stores decode (`projections::model::cursor`).
const CURSOR_CHARS_MAX: u64 = 1024;

/// Text that must not be blank (`domain::ledger::require_text`): at least
/// one character that is not white space.
fn not_blank(chars_max: usize) -> Value {
    json!({"type": "string", "pattern": format!("[^{WHITE_SPACE}]"), "maxLength": chars_max})
}

/// The shape of the email addresses this service registers
/// (`views::check_email_shape`), white space around it aside.
fn email_pattern() -> String {
    format!(r"^[{WHITE_SPACE}]*[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+[{WHITE_SPACE}]*$")
}

/// A cursor's parts, as the stores encode them (hex of the parts joined by
/// U+001F, `projections::model::cursor`).
#[derive(Debug, Clone, Copy)]
enum CursorPart {
    /// A decimal integer.
    Int,
    /// A UUID, lower-case hyphenated.
    Uuid,
    /// An account's name (`wallet:<uuid>`, `platform:revenue`...).
    Account,
    /// Printable ASCII (a Stripe PaymentIntent id).
    Text,
}

/// The hex of one ASCII byte.
fn hex_byte(byte: u8) -> String {
    format!("{byte:02x}")
}

fn hex_text(text: &str) -> String {
    text.bytes().map(hex_byte).collect()
}

/// The hex of a lower-case hyphenated UUID.
fn hex_uuid() -> String {
    let digit = "(3[0-9]|6[1-6])";
    let dash = hex_byte(b'-');
    [8, 4, 4, 4, 12].iter().map(|n| format!("{digit}{{{n}}}")).collect::<Vec<_>>().join(dash.as_str())
}

fn part_pattern(part: CursorPart) -> String {
    match part {
        // At most 18 digits: every value fits an i64.
        CursorPart::Int => format!("({})?(3[0-9]){{1,18}}", hex_byte(b'-')),
        CursorPart::Uuid => hex_uuid(),
        CursorPart::Account => {
            let nil = uuid::Uuid::nil().to_string();
            let names: Vec<String> = Account::every_kind(uuid::Uuid::nil())
                .iter()
                .map(|account| {
                    let name = account.to_string();
                    match name.strip_suffix(&nil) {
                        Some(kind) => format!("{}{}", hex_text(kind), hex_uuid()),
                        None => hex_text(&name),
                    }
                })
                .collect();
            format!("({})", names.join("|"))
        }
        CursorPart::Text => "([2-6][0-9a-f]|7[0-9a-e])*".to_string(),
    }
}

/// The pattern of a cursor made of `parts`.
fn cursor_pattern(parts: &[CursorPart]) -> String {
    let separator = hex_byte(0x1f);
    let inner: Vec<String> = parts.iter().map(|p| part_pattern(*p)).collect();
    format!("^{}$", inner.join(separator.as_str()))
}

/// Each list's cursor (its sort key), by path.
fn cursor_parts(path: &str) -> Option<&'static [CursorPart]> {
    use CursorPart::{Account, Int, Text, Uuid};
    Some(match path {
        "/api/v1/transactions"
        | "/api/v1/payouts"
        | "/api/v1/admin/payouts"
        | "/api/v1/admin/adjustments"
        | "/api/v1/streams/live"
        | "/api/v1/streams/{id}/leaderboard" => &[Int, Uuid],
        "/api/v1/ledger/accounts/{account}/entries" => &[Int, Int],
        "/api/v1/ledger/trial-balance" => &[Account],
        "/api/v1/ledger/reconciliation" => &[Text],
        _ => return None,
    })
}

/// The document as served: the annotations' document with every field's
/// constraints, the catalogue's ids, and `last_position` (when the log
/// answered) as the largest `minPosition`: a position beyond the log's
/// last one is refused, and the log only grows.
pub fn document(config: &Config, last_position: Option<u64>) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    let gift_ids: Vec<&str> = config.gift_catalog.iter().map(|g| g.id.as_str()).collect();
    let package_ids: Vec<&str> = config.coin_packages.iter().map(|p| p.id.as_str()).collect();
    let text_max = domain::ledger::TEXT_CHARS_MAX;
    let fields: Vec<(&str, &str, Value)> = vec![
        (
            "RegisterRequest",
            "email",
            json!({"type": "string", "pattern": email_pattern(), "maxLength": domain::user::EMAIL_CHARS_MAX}),
        ),
        (
            "RegisterRequest",
            "username",
            json!({"type": "string", "pattern": format!(
                "^[{WHITE_SPACE}]*[A-Za-z0-9_.]{{{},{}}}[{WHITE_SPACE}]*$",
                domain::user::USERNAME_CHARS_MIN,
                domain::user::USERNAME_CHARS_MAX
            )}),
        ),
        (
            "RegisterRequest",
            "password",
            json!({"type": "string", "minLength": crate::auth::PASSWORD_CHARS_MIN, "maxLength": crate::auth::PASSWORD_CHARS_MAX}),
        ),
        ("StartStreamRequest", "title", not_blank(domain::stream::TITLE_CHARS_MAX)),
        ("StartStreamRequest", "category", not_blank(domain::stream::CATEGORY_CHARS_MAX)),
        ("SendGiftRequest", "giftId", json!({"type": "string", "enum": gift_ids})),
        (
            "SendGiftRequest",
            "quantity",
            json!({"type": "integer", "minimum": 1, "maximum": domain::gift::GIFT_QUANTITY_MAX}),
        ),
        ("CoinPurchaseBody", "packageId", json!({"type": "string", "enum": package_ids})),
        (
            "PayoutRequestBody",
            "coins",
            json!({"type": "integer", "minimum": config.payout_policy.min_coins, "maximum": crate::views::WHOLE_NUMBER_MAX}),
        ),
        ("PayoutRequestBody", "destination", not_blank(text_max)),
        ("ApprovePayoutRequest", "externalRef", not_blank(text_max)),
        ("RejectPayoutRequest", "reason", not_blank(text_max)),
        (
            "AdjustmentRequest",
            "coins",
            json!({"type": "integer", "minimum": -domain::ledger::ADJUSTMENT_COINS_MAX, "maximum": domain::ledger::ADJUSTMENT_COINS_MAX, "not": {"const": 0}}),
        ),
        ("AdjustmentRequest", "reason", not_blank(text_max)),
        ("RejectAdjustmentRequest", "reason", not_blank(text_max)),
        (
            "RolesRequest",
            "grant",
            json!({"type": "array", "uniqueItems": true, "items": {"type": "string", "enum": ["user", "admin", "finance", "ops"]}}),
        ),
        (
            "RolesRequest",
            "revoke",
            json!({"type": "array", "uniqueItems": true, "items": {"type": "string", "enum": ["admin", "finance", "ops"]}}),
        ),
    ];
    let schemas = &mut doc["components"]["schemas"];
    for (schema, field, constraint) in fields {
        let property = &mut schemas[schema]["properties"][field];
        if let (Some(property), Value::Object(constraint)) = (property.as_object_mut(), constraint) {
            // The description stays; the type and its constraints are ours.
            property.remove("format");
            property.extend(constraint);
        }
    }
    // A role is not granted and revoked at once.
    let neither_both: Vec<Value> = ["admin", "finance", "ops"]
        .iter()
        .map(|role| {
            json!({"not": {"required": ["grant", "revoke"], "properties": {
                "grant": {"contains": {"const": role}},
                "revoke": {"contains": {"const": role}},
            }}})
        })
        .collect();
    schemas["RolesRequest"]["allOf"] = json!(neither_both);

    add_links(&mut doc);

    let tx_types: Vec<&str> = TxType::ALL.iter().map(|t| t.as_str()).collect();
    let tx_statuses: Vec<&str> = TxStatus::ALL.iter().map(|t| t.as_str()).collect();
    let payout_statuses: Vec<&str> = PayoutStatus::ALL.iter().map(|t| t.as_str()).collect();
    let Some(paths) = doc["paths"].as_object_mut() else { return doc };
    for (path, operations) in paths.iter_mut() {
        let Some(operations) = operations.as_object_mut() else { continue };
        for operation in operations.values_mut() {
            let Some(parameters) = operation.get_mut("parameters").and_then(Value::as_array_mut) else { continue };
            for parameter in parameters {
                let name = parameter["name"].as_str().unwrap_or_default().to_string();
                let schema = &mut parameter["schema"];
                match name.as_str() {
                    "limit" => *schema = json!({"type": "integer", "minimum": 1, "maximum": PAGE_LIMIT_MAX}),
                    "minPosition" => {
                        *schema = json!({"type": "integer", "minimum": 0});
                        if let Some(last) = last_position {
                            schema["maximum"] = json!(last);
                        }
                    }
                    "cursor" => {
                        if let Some(parts) = cursor_parts(path) {
                            *schema = json!({"type": "string", "pattern": cursor_pattern(parts), "maxLength": CURSOR_CHARS_MAX});
                        }
                    }
                    "type" if path == "/api/v1/transactions" => *schema = json!({"type": "string", "enum": tx_types}),
                    "status" if path == "/api/v1/transactions" => {
                        *schema = json!({"type": "string", "enum": tx_statuses})
                    }
                    "status" if path == "/api/v1/admin/payouts" => {
                        *schema = json!({"type": "string", "enum": payout_statuses})
                    }
                    "at" | "from" | "to" if path.starts_with("/api/v1/ledger/accounts/") => {
                        *schema = json!({"type": "string", "format": "date-time"})
                    }
                    "format" if path == "/api/v1/ledger/accounts/{account}/statement" => {
                        *schema = json!({"type": "string", "enum": ["csv", "json"]})
                    }
                    "position" if path == "/api/v1/ledger/accounts/{account}/balance" => {
                        *schema = json!({"type": "integer", "minimum": 0})
                    }
                    "days" if path == "/api/v1/ledger/daily" => {
                        *schema =
                            json!({"type": "integer", "minimum": 1, "maximum": projections::store::LEDGER_DAYS_MAX})
                    }
                    "status" if path == "/api/v1/admin/adjustments" => {
                        *schema = json!({"type": "string", "enum": ["proposed", "applied", "rejected"]})
                    }
                    _ => {}
                }
            }
        }
    }
    doc
}

/// OpenAPI links from what a command creates to the routes that act on
/// it: a client (and schemathesis' stateful phase) follows a new stream
/// to its join, gifts and end, and a new payout to its settlement.
fn add_links(doc: &mut Value) {
    let links: [(&str, &str, &str, &[&str]); 2] = [
        ("/api/v1/streams", "201", "/streamId", &["get_stream", "leaderboard", "join", "leave", "send_gift", "end"]),
        ("/api/v1/payouts", "201", "/payoutId", &["approve_payout", "reject_payout"]),
    ];
    for (path, status, pointer, operations) in links {
        let response = &mut doc["paths"][path]["post"]["responses"][status];
        if !response.is_object() {
            continue;
        }
        let mut named = serde_json::Map::new();
        for operation in operations {
            named.insert(
                (*operation).to_string(),
                json!({"operationId": operation, "parameters": {"path.id": format!("$response.body#{pointer}")}}),
            );
        }
        response["links"] = Value::Object(named);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_list_has_its_cursor_pattern_and_every_pattern_its_list() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("the document");
        let mut lists = Vec::new();
        for (path, operations) in doc["paths"].as_object().expect("paths") {
            for operation in operations.as_object().expect("operations").values() {
                let has_cursor = operation["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == json!("cursor")));
                if has_cursor {
                    assert!(cursor_parts(path).is_some(), "{path} has a cursor of no known shape");
                    lists.push(path.clone());
                }
            }
        }
        // The table's eight paths and the adjustments queue, each a list.
        assert_eq!(lists.len(), 9, "{lists:?}");
    }
}
