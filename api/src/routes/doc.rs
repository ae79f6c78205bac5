//! The OpenAPI parts the routes share: error responses that many routes
//! answer alike, and the `Idempotency-Key` header. A route's own responses
//! (its success, its particular refusals) stay in its annotation, listed
//! after the shared ones (a status listed twice keeps the later
//! description).
//!
//! The document must state every status a route can answer (the fuzzing
//! test, `tests/it/fuzz.rs`, runs schemathesis with every check): the
//! bundles below are what the layers in front of a handler answer
//! (`routes::router`, `server`), whatever the handler does.

use utoipa::{IntoParams, IntoResponses};

use crate::error::Problem;

#[derive(Debug, IntoResponses)]
#[response(
    status = 401,
    description = "`unauthorized`: no valid bearer token (on logout: or the body's refresh token is not valid); `session_revoked`: on commands that move coins and privileged routes, a token issued before the user's sessions were revoked",
    content_type = "application/problem+json"
)]
pub struct Unauthorized(pub Problem);

#[derive(Debug, IntoResponses)]
#[response(status = 403, description = "Needs admin", content_type = "application/problem+json")]
pub struct NeedsAdmin(pub Problem);

#[derive(Debug, IntoResponses)]
#[response(
    status = 403,
    description = "Needs admin; `self_approval_forbidden`: one's own payout, wallet or proposal",
    content_type = "application/problem+json"
)]
pub struct NeedsOtherAdmin(pub Problem);

#[derive(Debug, IntoResponses)]
#[response(
    status = 409,
    description = "`adjustment_not_proposed` (already applied or rejected), `idempotency_key_reused`, `contention`",
    content_type = "application/problem+json"
)]
pub struct AdjustmentNotProposed(pub Problem);

#[derive(Debug, IntoResponses)]
#[response(status = 403, description = "Needs finance or admin", content_type = "application/problem+json")]
pub struct NeedsFinanceOrAdmin(pub Problem);

#[derive(Debug, IntoResponses)]
#[response(status = 403, description = "Needs finance, ops or admin", content_type = "application/problem+json")]
pub struct NeedsConsoleRole(pub Problem);

#[derive(Debug, IntoResponses)]
#[response(status = 404, content_type = "application/problem+json")]
pub struct NotFound(pub Problem);

#[derive(Debug, IntoResponses)]
#[response(status = 404, description = "Unknown user", content_type = "application/problem+json")]
pub struct UnknownUser(pub Problem);

#[derive(Debug, IntoResponses)]
#[response(status = 409, description = "`idempotency_key_reused`", content_type = "application/problem+json")]
pub struct KeyReused(pub Problem);

#[derive(Debug, IntoResponses)]
#[response(status = 409, description = "`stream_not_live`", content_type = "application/problem+json")]
pub struct StreamNotLive(pub Problem);

#[derive(Debug, IntoResponses)]
#[response(status = 409, description = "`payout_not_pending`", content_type = "application/problem+json")]
pub struct PayoutNotPending(pub Problem);

#[derive(Debug, IntoResponses)]
#[response(status = 422, description = "`validation_failed`", content_type = "application/problem+json")]
pub struct Invalid(pub Problem);

#[derive(Debug, IntoResponses)]
#[response(
    status = 422,
    description = "`validation_failed`: not a package on sale",
    content_type = "application/problem+json"
)]
pub struct NotAPackage(pub Problem);

#[derive(Debug, IntoResponses)]
#[response(
    status = 502,
    description = "`payment_provider_error`: Stripe refused or failed",
    content_type = "application/problem+json"
)]
pub struct ProviderFailed(pub Problem);

#[derive(Debug, IntoResponses)]
#[response(status = 503, description = "`projection_lagging`", content_type = "application/problem+json")]
pub struct ProjectionLagging(pub Problem);

#[derive(Debug, IntoResponses)]
#[response(
    status = 503,
    description = "`maintenance`: purchases pause with the commands",
    content_type = "application/problem+json"
)]
pub struct PurchasesPaused(pub Problem);

/// The `Idempotency-Key` header of the command routes.
#[derive(Debug, IntoParams)]
#[into_params(names("Idempotency-Key"), parameter_in = Header)]
pub struct IdempotencyKey(
    /// 1 to 255 visible ASCII characters (spaces inside), scoped to the
    /// caller: a repeat gets the first answer (`idempotency-replayed: true`);
    /// the key with another request is 409
    #[param(min_length = 1, max_length = 255, pattern = "^[!-~]([ -~]*[!-~])?$")]
    pub Option<String>,
);

/// What a route that reads a JSON body may answer before its own checks:
/// the body cannot be read, is too slow, too large, not JSON, or not of
/// the documented shape.
#[derive(Debug, IntoResponses)]
pub enum BodyRefusals {
    #[response(status = 400, description = "`malformed_json`: not JSON", content_type = "application/problem+json")]
    Malformed(Problem),
    #[response(
        status = 408,
        description = "`request_timeout`: the body did not arrive within `HTTP_BODY_TIMEOUT_MS`",
        content_type = "application/problem+json"
    )]
    TimedOut(Problem),
    #[response(
        status = 413,
        description = "`payload_too_large`: over `BODY_BYTES_MAX`",
        content_type = "application/problem+json"
    )]
    TooLarge(Problem),
    #[response(
        status = 415,
        description = "`unsupported_media_type`: not `Content-Type: application/json`",
        content_type = "application/problem+json"
    )]
    NotJson(Problem),
    #[response(
        status = 422,
        description = "`validation_failed`: a field missing, of another type, or out of its documented range",
        content_type = "application/problem+json"
    )]
    Invalid(Problem),
}

/// What every command may answer besides its own outcome.
#[derive(Debug, IntoResponses)]
pub enum CommandRefusals {
    #[response(
        status = 409,
        description = "`idempotency_key_reused` (the key with another request), `contention` (retry)",
        content_type = "application/problem+json"
    )]
    Conflict(Problem),
    #[response(
        status = 422,
        description = "`validation_failed`: a malformed `Idempotency-Key`",
        content_type = "application/problem+json"
    )]
    Invalid(Problem),
    #[response(
        status = 429,
        description = "`rate_limited`: per client address or per user",
        headers(("Retry-After" = u64, description = "Seconds to wait")),
        content_type = "application/problem+json"
    )]
    Throttled(Problem),
    #[response(
        status = 503,
        description = "`maintenance` (`MAINTENANCE_MODE`), `unavailable` (the event log); with `Retry-After`",
        headers(("Retry-After" = u64, description = "Seconds to wait")),
        content_type = "application/problem+json"
    )]
    Unavailable(Problem),
}

/// What every query of the read models may answer besides its page.
#[derive(Debug, IntoResponses)]
pub enum QueryRefusals {
    #[response(
        status = 422,
        description = "`validation_failed`: a parameter out of its documented range, or `minPosition` beyond the log's last position",
        content_type = "application/problem+json"
    )]
    Invalid(Problem),
    #[response(
        status = 429,
        description = "`rate_limited`: per client address or per user",
        headers(("Retry-After" = u64, description = "Seconds to wait")),
        content_type = "application/problem+json"
    )]
    Throttled(Problem),
    #[response(
        status = 503,
        description = "`projection_lagging` (`minPosition` not reached within 5 s), `unavailable`; with `Retry-After`",
        headers(("Retry-After" = u64, description = "Seconds to wait")),
        content_type = "application/problem+json"
    )]
    Unavailable(Problem),
}

/// What a route of the API answers that reads nothing but the
/// configuration: the per-address limit.
#[derive(Debug, IntoResponses)]
#[response(
    status = 429,
    description = "`rate_limited`: per client address",
    headers(("Retry-After" = u64, description = "Seconds to wait")),
    content_type = "application/problem+json"
)]
pub struct Throttled(pub Problem);

/// A dependency (the event log, the read store) cannot answer now.
#[derive(Debug, IntoResponses)]
#[response(
    status = 503,
    description = "`unavailable`: the event log or the read store; with `Retry-After`",
    headers(("Retry-After" = u64, description = "Seconds to wait")),
    content_type = "application/problem+json"
)]
pub struct Unavailable(pub Problem);

/// A settlement waits for `minPosition` before it looks the payout up.
#[derive(Debug, IntoResponses)]
#[response(
    status = 503,
    description = "`projection_lagging` (`minPosition` not reached within 5 s), `maintenance`, `unavailable`; with `Retry-After`",
    headers(("Retry-After" = u64, description = "Seconds to wait")),
    content_type = "application/problem+json"
)]
pub struct SettleLagging(pub Problem);
