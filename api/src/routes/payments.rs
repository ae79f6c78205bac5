//! Finance's resolution of a flagged Stripe payment: credit it to a named
//! user (a named package's coins, once, by the Stripe exactly-once
//! protocol) or dismiss its flags with a note. An event on the payment
//! aggregate, so that the reconciliation and the audit link it to the
//! payment.

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use domain::payment::{PaymentCommand, Resolve};
use events_schema::is_plain_stripe_id;

use crate::error::{ApiResult, AppError};
use crate::extract::{ApiJson, ApiPath, CommandMeta, FinanceOrAdmin, Privileged};
use crate::routes::doc::{BodyRefusals, CommandRefusals, Invalid, NeedsFinanceOrAdmin, Unauthorized};
use crate::state::AppState;
use crate::views::{PaymentResolvedView, ResolveActionParam, ResolvePaymentRequest};

/// `404`: no such payment, or (for a credit) no such user.
#[derive(Debug, utoipa::IntoResponses)]
#[response(
    status = 404,
    description = "`not_found`: no payment of this id, or (for a credit) no user of `userId` or no package on sale of `packageId`",
    content_type = "application/problem+json"
)]
pub struct UnknownPaymentOrUser(pub crate::error::Problem);

/// `409`: the payment is not flagged, or already resolved (or credited).
#[derive(Debug, utoipa::IntoResponses)]
#[response(
    status = 409,
    description = "`payment_not_resolvable`: not flagged, already resolved, or (for a credit) already credited",
    content_type = "application/problem+json"
)]
pub struct NotResolvable(pub crate::error::Problem);

/// Credits a flagged, uncredited payment once (to the named user, the named
/// package's coins), or dismisses its flags with a note. Nothing is
/// appended when it is refused.
#[utoipa::path(
    post, path = "/api/v1/admin/payments/{paymentId}/resolve", tag = "admin",
    request_body = ResolvePaymentRequest,
    params(("paymentId" = String, Path, description = "The PaymentIntent id", min_length = 1, max_length = 255,
        pattern = "^[A-Za-z0-9_-]{1,255}$")),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, body = PaymentResolvedView),
        BodyRefusals, CommandRefusals, Unauthorized, NeedsFinanceOrAdmin, UnknownPaymentOrUser, NotResolvable, Invalid,
    )
)]
pub async fn resolve(
    State(app): State<AppState>,
    caller: Privileged<FinanceOrAdmin>,
    ApiPath(payment_id): ApiPath<String>,
    _meta: CommandMeta,
    ApiJson(body): ApiJson<ResolvePaymentRequest>,
) -> ApiResult<impl IntoResponse> {
    if !is_plain_stripe_id(&payment_id) {
        return Err(AppError::validation("paymentId", "is not a Stripe id"));
    }
    let (answer, note, action) = match body {
        ResolvePaymentRequest::Dismiss { note } => (ResolveActionParam::Dismiss, note, Resolve::Dismiss),
        ResolvePaymentRequest::Credit { user_id, package_id, note } => {
            // Unknown package or user: 404, like an unknown payment (the
            // request is well formed; what it names does not exist).
            let package = app
                .config
                .coin_packages
                .iter()
                .find(|p| p.id == package_id)
                .ok_or_else(|| AppError::not_found("no such package on sale"))?;
            if app.user_from_log(user_id).await?.is_none() {
                return Err(AppError::not_found("no such user"));
            }
            (ResolveActionParam::Credit, note, Resolve::Credit { user_id, package_id, coins: package.coins })
        }
    };
    let command = PaymentCommand::Resolve { resolved_by: caller.user.id, note, action };
    let outcome = app
        .commands
        .resolve_payment(&payment_id, caller.user.id, command)
        .await?
        .ok_or_else(|| AppError::not_found("no such payment"))?;
    Ok(Json(PaymentResolvedView { payment_id, action: answer, position: outcome.position }))
}
