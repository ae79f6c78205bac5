//! The OpenAPI parts the routes share: error responses that many routes
//! answer alike, and the `Idempotency-Key` header. A route's own responses
//! (its success, its particular refusals) stay in its annotation.

use utoipa::{IntoParams, IntoResponses};

use crate::error::Problem;

#[derive(Debug, IntoResponses)]
#[response(
    status = 401,
    description = "`unauthorized`: no valid bearer token; `session_revoked`: on commands that move coins and privileged routes, a token issued before the user's sessions were revoked",
    content_type = "application/problem+json"
)]
pub struct Unauthorized(pub Problem);

#[derive(Debug, IntoResponses)]
#[response(status = 403, description = "Needs admin", content_type = "application/problem+json")]
pub struct NeedsAdmin(pub Problem);

#[derive(Debug, IntoResponses)]
#[response(status = 403, description = "Needs finance or admin", content_type = "application/problem+json")]
pub struct NeedsFinanceOrAdmin(pub Problem);

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
    /// Up to 255 characters; a repeat returns the first answer
    pub Option<String>,
);
