//! What clients send: request bodies and query strings, with the bounds
//! the OpenAPI document states.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// The largest whole number a request body carries: 2^53 - 1, the largest
/// that every JSON parser (a double) reads exactly.
pub const WHOLE_NUMBER_MAX: i64 = (1 << 53) - 1;

/// A whole number of a request body: `12` or `12.0` (JSON Schema's
/// `integer` admits both, and some clients write every number with a
/// fraction), within ±`WHOLE_NUMBER_MAX`. A fraction, or a number past
/// that, is refused (`validation_failed`).
fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    struct Whole;
    impl serde::de::Visitor<'_> for Whole {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a whole number within ±{WHOLE_NUMBER_MAX}")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            if (-WHOLE_NUMBER_MAX..=WHOLE_NUMBER_MAX).contains(&v) {
                Ok(v)
            } else {
                Err(E::custom(format!("{v} is not within ±{WHOLE_NUMBER_MAX}")))
            }
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            let v = i64::try_from(v).map_err(|_| E::custom(format!("{v} is not within ±{WHOLE_NUMBER_MAX}")))?;
            self.visit_i64(v)
        }
        // Below 2^53 in magnitude a double holds every whole number
        // exactly, so the casts are exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
            if v.fract() == 0.0 && v.abs() <= WHOLE_NUMBER_MAX as f64 {
                return Ok(v as i64);
            }
            Err(E::custom(format!("{v} is not a whole number within ±{WHOLE_NUMBER_MAX}")))
        }
    }
    deserializer.deserialize_any(Whole)
}

#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    #[schema(example = "viewer@example.com")]
    pub email: String,
    /// 3 to 30 letters, digits, `_` or `.`.
    #[schema(example = "viewer_1")]
    pub username: String,
    /// 8 to 128 characters.
    #[schema(example = "correct horse battery")]
    pub password: String,
}

#[derive(Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartStreamRequest {
    /// At most 140 characters.
    pub title: String,
    /// At most 40 characters; stored lower case.
    pub category: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendGiftRequest {
    /// An id of `GET /api/v1/gifts/catalog`; the price comes from the catalog.
    pub gift_id: String,
    /// 1 to 10,000 units.
    #[serde(deserialize_with = "whole_number")]
    pub quantity: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayoutRequestBody {
    /// At least `PAYOUT_MIN_COINS`, at most the caller's earnings.
    #[serde(deserialize_with = "whole_number")]
    pub coins: i64,
    /// Where the money goes (free text, at most 500 characters).
    pub destination: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovePayoutRequest {
    /// The payment's reference at the payment provider.
    pub external_ref: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RejectPayoutRequest {
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdjustmentRequest {
    pub user_id: Uuid,
    /// Signed, not zero: positive credits the wallet, negative debits it
    /// (never below zero).
    #[serde(deserialize_with = "whole_number")]
    pub coins: i64,
    pub reason: String,
}

/// Why a proposed adjustment is turned down.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RejectAdjustmentRequest {
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolesRequest {
    /// Roles to grant: `admin`, `finance`, `ops`.
    #[serde(default)]
    pub grant: Vec<String>,
    /// Roles to revoke (`user` cannot be revoked).
    #[serde(default)]
    pub revoke: Vec<String>,
}

// ---------------------------------------------------------------------------
// Query strings

/// `limit`: 1 to `PAGE_LIMIT_MAX`. Out of range is refused (it was once
/// clamped, which made the documented range a lie either way).
fn page_limit<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    let limit = u32::deserialize(deserializer)?;
    if !(1..=projections::PAGE_LIMIT_MAX).contains(&limit) {
        return Err(serde::de::Error::custom(format!("limit must be 1 to {}", projections::PAGE_LIMIT_MAX)));
    }
    Ok(Some(limit))
}

/// The addresses this service registers: ASCII `local@label.label...`
/// (local: letters, digits, `._%+-`; labels: letters, digits, `-`) once
/// normalised (NFKC, trimmed, lower case: `domain::user::normalize_email`),
/// at most `EMAIL_CHARS_MAX` characters as sent. The OpenAPI document
/// states the same as a pattern (which reads compatibility forms such as
/// full-width letters only through that normalisation), so that what a
/// client generated from it sends is accepted.
pub fn check_email_shape(email: &str) -> Result<(), crate::error::AppError> {
    let refused = || crate::error::AppError::validation("email", "is not an email address");
    if email.chars().count() > domain::user::EMAIL_CHARS_MAX {
        return Err(refused());
    }
    let normalized = domain::user::normalize_email(email);
    let (local, domain_part) = normalized.split_once('@').ok_or_else(refused)?;
    let local_ok = !local.is_empty() && local.bytes().all(|b| b.is_ascii_alphanumeric() || b"._%+-".contains(&b));
    let labels: Vec<&str> = domain_part.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if local_ok && domain_ok { Ok(()) } else { Err(refused()) }
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 200, default 50
    #[serde(default, deserialize_with = "page_limit")]
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TransactionsQuery {
    /// purchase, refund, gift_sent, gift_received, payout_requested, payout_paid, payout_rejected, adjustment
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// completed, pending, paid, rejected
    pub status: Option<String>,
    /// 1 to 200, default 50
    #[serde(default, deserialize_with = "page_limit")]
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page
    pub cursor: Option<String>,
}

/// A flag a Stripe payment may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentFlagParam {
    UnknownUser,
    UnknownPackage,
    NoPaymentIntent,
    InvalidRefund,
    Disputed,
    AmountMismatch,
}

impl PaymentFlagParam {
    /// The flag as the read models write it.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentFlagParam::UnknownUser => "unknown_user",
            PaymentFlagParam::UnknownPackage => "unknown_package",
            PaymentFlagParam::NoPaymentIntent => "no_payment_intent",
            PaymentFlagParam::InvalidRefund => "invalid_refund",
            PaymentFlagParam::Disputed => "disputed",
            PaymentFlagParam::AmountMismatch => "amount_mismatch",
        }
    }
}

/// What a resolution does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResolveActionParam {
    /// Credit the payment to `userId`, `packageId`'s coins.
    Credit,
    /// Close the flags without coins.
    Dismiss,
}

/// `POST /api/v1/admin/payments/{paymentId}/resolve`: `action` says
/// which.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
// Fields renamed one by one: the OpenAPI document reads field-level
// renames, not `rename_all_fields`.
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ResolvePaymentRequest {
    /// Credit the payment once to a registered user, a package's coins.
    Credit {
        #[serde(rename = "userId")]
        user_id: uuid::Uuid,
        /// A package on sale.
        #[serde(rename = "packageId")]
        #[schema(min_length = 1, max_length = 255)]
        package_id: String,
        /// Why (1 to 500 characters, not only spaces).
        #[schema(min_length = 1, max_length = 500, pattern = "\\S")]
        note: String,
    },
    /// Close the flags without coins.
    Dismiss {
        /// Why (1 to 500 characters, not only spaces).
        #[schema(min_length = 1, max_length = 500, pattern = "\\S")]
        note: String,
    },
}

/// A payment resolved.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentResolvedView {
    pub payment_id: String,
    pub action: ResolveActionParam,
    /// Query at this position (`minPosition`) to see it, and a credit's
    /// coins.
    pub position: u64,
}

/// Whether a flagged payment is still open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResolutionStatusParam {
    /// Flagged and not resolved.
    Open,
    /// Resolved (credited or dismissed).
    Resolved,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReconciliationQuery {
    /// Only payments carrying this flag
    #[param(inline)]
    pub flag: Option<PaymentFlagParam>,
    /// `open`: flagged and not resolved; `resolved`
    #[param(inline)]
    pub status: Option<ResolutionStatusParam>,
    /// 1 to 200, default 50
    #[serde(default, deserialize_with = "page_limit")]
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LiveStreamsQuery {
    pub category: Option<String>,
    /// 1 to 200, default 50
    #[serde(default, deserialize_with = "page_limit")]
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BalanceQuery {
    /// An RFC 3339 time: the balance after the last entry at or before it.
    pub at: Option<String>,
    /// A log position: the balance after the last entry at or before it.
    pub position: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DailyQuery {
    /// 1 to 366, default 30: that many UTC days, today's last
    #[serde(default, deserialize_with = "ledger_days")]
    pub days: Option<u32>,
}

fn ledger_days<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    let days = u32::deserialize(deserializer)?;
    if !(1..=projections::store::LEDGER_DAYS_MAX).contains(&days) {
        return Err(serde::de::Error::custom(format!("days must be 1 to {}", projections::store::LEDGER_DAYS_MAX)));
    }
    Ok(Some(days))
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatementQuery {
    /// Start of the window (RFC 3339, inclusive).
    pub from: Option<String>,
    /// End of the window (RFC 3339, inclusive); at most 400 days after `from`.
    pub to: Option<String>,
    /// `csv` or `json` (default: by `Accept`, else JSON).
    pub format: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AdjustmentsQuery {
    /// proposed, applied or rejected
    pub status: Option<String>,
    /// 1 to 200, default 50
    #[serde(default, deserialize_with = "page_limit")]
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PayoutsQuery {
    /// pending, paid or rejected
    pub status: Option<String>,
    /// 1 to 200, default 50
    #[serde(default, deserialize_with = "page_limit")]
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page
    pub cursor: Option<String>,
}
