//! A host's payouts: request one, list one's own.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use events_schema::{Actor, Event};
use projections::{PageRequest, Projection};
use uuid::Uuid;

use crate::error::{ApiResult, AppError, Problem};
use crate::extract::{ApiJson, ApiQuery, AuthUser, CommandMeta, Consistency};
use crate::routes::doc::{BodyRefusals, CommandRefusals, IdempotencyKey, QueryRefusals, Unauthorized};
use crate::routes::{find_event, guarded, replayed};
use crate::state::{AppState, command_context, fingerprint};
use crate::views::{MoneyView, PageQuery, PayoutCreated, PayoutPage, PayoutRequestBody};

/// Requests a payout of earnings; the coins are held until an admin approves
/// or rejects it.
#[utoipa::path(
    post, path = "/api/v1/payouts", tag = "payouts",
    request_body = PayoutRequestBody,
    params(IdempotencyKey),
    security(("bearerAuth" = [])),
    responses(
        (status = 201, body = PayoutCreated),
        BodyRefusals, CommandRefusals, Unauthorized,
        (status = 402, description = "`insufficient_earnings`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`too_many_pending_payouts`, `idempotency_key_reused`, `contention`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`below_minimum` (under `PAYOUT_MIN_COINS`), `validation_failed`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn request(
    State(app): State<AppState>,
    caller: AuthUser,
    meta: CommandMeta,
    ApiJson(body): ApiJson<PayoutRequestBody>,
) -> ApiResult<impl IntoResponse> {
    let ctx = command_context(
        format!("user:{}", caller.id),
        meta.idempotency_key.as_deref(),
        fingerprint(&meta.request_line, &body),
        meta.request_id.as_deref(),
        Actor::user(caller.id),
    );
    let result = async {
        app.commands
            .request_payout_by(&ctx, caller.caller(), Uuid::now_v7(), body.coins, body.destination)
            .await
            .map_err(AppError::from)
    };
    let outcome = guarded(&app, "request_payout", &ctx, meta.idempotency_key.is_some(), result).await?;
    let (requested, _) = find_event(&outcome.events, |e| match e {
        Event::PayoutRequested(p) => Some(p),
        _ => None,
    })?;
    let answer = PayoutCreated {
        payout_id: requested.payout_id,
        status: "pending".into(),
        coins: requested.coins,
        fiat: MoneyView::from(&requested.fiat),
        position: outcome.position,
    };
    Ok((StatusCode::CREATED, replayed(outcome.repeated), Json(answer)))
}

/// The caller's payouts, newest first.
#[utoipa::path(
    get, path = "/api/v1/payouts", tag = "payouts",
    params(PageQuery, Consistency),
    security(("bearerAuth" = [])),
    responses((status = 200, body = PayoutPage), QueryRefusals, Unauthorized)
)]
pub async fn list_own(
    State(app): State<AppState>,
    caller: AuthUser,
    ApiQuery(query): ApiQuery<PageQuery>,
    consistency: Consistency,
) -> ApiResult<Json<PayoutPage>> {
    app.wait_for(consistency.min_position, &[Projection::Payouts]).await?;
    let page = PageRequest { limit: query.limit, cursor: query.cursor };
    Ok(Json(app.store.user_payouts(caller.id, &page).await?.into()))
}
