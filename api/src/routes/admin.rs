//! Admin and finance: the payout queue (list, approve, reject), manual
//! adjustments, role grants.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use commands::handler::CommandContext;
use domain::adjustment::{self, Propose};
use domain::ledger::LedgerCommand;
use domain::user::ChangeRoles;
use events_schema::{Actor, Event, Role};
use projections::{AdjustmentStatus, PageRequest, PayoutStatus, Projection};
use uuid::Uuid;

use crate::auth::parse_role;
use crate::error::{ApiResult, AppError, Problem};
use crate::extract::{AdminOnly, ApiJson, ApiPath, ApiQuery, CommandMeta, Consistency, FinanceOrAdmin, Privileged};
use crate::routes::doc::{
    AdjustmentNotProposed, BodyRefusals, CommandRefusals, IdempotencyKey, NeedsAdmin, NeedsFinanceOrAdmin,
    NeedsOtherAdmin, NotFound, PayoutNotPending, QueryRefusals, SettleLagging, Unauthorized, UnknownUser,
};
use crate::routes::{find_event, guarded, replayed};
use crate::state::{AppState, command_context, fingerprint};
use crate::views::{
    AdjustmentPage, AdjustmentProposedView, AdjustmentRequest, AdjustmentSettledView, AdjustmentView, AdjustmentsQuery,
    ApprovePayoutRequest, PayoutPage, PayoutSettled, PayoutsQuery, RejectAdjustmentRequest, RejectPayoutRequest,
    RiskFlagView, RolesRequest, RolesView, roles_view,
};

/// Roles named in one request, at most.
const ROLES_PER_REQUEST_MAX: usize = 8;

fn admin_ctx(admin: Uuid, meta: &CommandMeta, body: &impl serde::Serialize) -> CommandContext {
    command_context(
        format!("user:{admin}"),
        meta.idempotency_key.as_deref(),
        fingerprint(&meta.request_line, body),
        meta.request_id.as_deref(),
        Actor::admin(admin),
    )
}

/// Every payout, newest first, optionally of one status.
#[utoipa::path(
    get, path = "/api/v1/admin/payouts", tag = "admin",
    params(PayoutsQuery, Consistency),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, body = PayoutPage),
        QueryRefusals, Unauthorized, NeedsFinanceOrAdmin,
    )
)]
pub async fn list_payouts(
    State(app): State<AppState>,
    _caller: Privileged<FinanceOrAdmin>,
    ApiQuery(query): ApiQuery<PayoutsQuery>,
    consistency: Consistency,
) -> ApiResult<Json<PayoutPage>> {
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => {
            Some(PayoutStatus::parse(s).ok_or_else(|| AppError::validation("status", "is not a payout status"))?)
        }
    };
    app.wait_for(consistency.min_position, &[Projection::Payouts]).await?;
    let page = PageRequest { limit: query.limit, cursor: query.cursor };
    let mut page: PayoutPage = app.store.payouts(status, &page).await?.into();
    // Risk, for the payouts still to decide: one bounded query per host of
    // the page (at most a page's worth).
    let window_hours = i64::from(app.config.earnings_hold_hours).max(RISK_WINDOW_HOURS_MIN);
    let since = chrono::Utc::now() - chrono::Duration::hours(window_hours);
    let mut by_host: std::collections::HashMap<Uuid, i64> = std::collections::HashMap::new();
    for payout in page.items.iter_mut().filter(|p| p.status == "pending") {
        let coins = match by_host.get(&payout.user_id) {
            Some(coins) => *coins,
            None => {
                let coins = app.store.gifts_from_negative_wallets(payout.user_id, since).await?;
                by_host.insert(payout.user_id, coins);
                coins
            }
        };
        if coins > 0 {
            payout.risk.push(RiskFlagView { flag: "gifts_from_negative_wallets".into(), coins });
        }
    }
    Ok(Json(page))
}

/// The risk window looks back the hold, and at least a day: chargebacks
/// arrive long after a gift, even when earnings are payable at once.
pub const RISK_WINDOW_HOURS_MIN: i64 = 24;

/// Proposed adjustments (four eyes), newest first, optionally of one status
/// (`proposed`: the ones waiting for a second admin).
#[utoipa::path(
    get, path = "/api/v1/admin/adjustments", tag = "admin",
    params(AdjustmentsQuery, Consistency),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, body = AdjustmentPage),
        QueryRefusals, Unauthorized, NeedsFinanceOrAdmin,
    )
)]
pub async fn list_adjustments(
    State(app): State<AppState>,
    _caller: Privileged<FinanceOrAdmin>,
    ApiQuery(query): ApiQuery<AdjustmentsQuery>,
    consistency: Consistency,
) -> ApiResult<Json<AdjustmentPage>> {
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => Some(
            AdjustmentStatus::parse(s).ok_or_else(|| AppError::validation("status", "is not an adjustment status"))?,
        ),
    };
    app.wait_for(consistency.min_position, &[Projection::Payouts]).await?;
    let page = PageRequest { limit: query.limit, cursor: query.cursor };
    Ok(Json(app.store.adjustments(status, &page).await?.into()))
}

enum Settle {
    Approve(String),
    Reject(String),
}

/// Approves or rejects: the payout's ledger comes from the log's reference
/// to it, written with the request, so this works the moment the request
/// was answered; never from a read model (but for a payout requested
/// before payouts carried a reference, whose ledger the payouts read model
/// names as a hint the log's decision checks).
async fn settle(
    app: &AppState,
    ctx: CommandContext,
    admin_id: Uuid,
    payout_id: Uuid,
    min_position: Option<u64>,
    keyed: bool,
    settle: Settle,
) -> ApiResult<impl IntoResponse + use<>> {
    let (name, status) = match settle {
        Settle::Approve(_) => ("approve_payout", "paid"),
        Settle::Reject(_) => ("reject_payout", "rejected"),
    };
    app.wait_for(min_position, &[Projection::Payouts]).await?;
    let command = match settle {
        Settle::Approve(external_ref) => LedgerCommand::ApprovePayout { payout_id, external_ref },
        Settle::Reject(reason) => LedgerCommand::RejectPayout { payout_id, reason },
    };
    let run = async {
        let hint = match app.commands.payout_owner(payout_id).await.map_err(AppError::from)? {
            Some(_) => None,
            None => app.store.payout(payout_id).await?.map(|p| p.user_id),
        };
        app.commands.settle_payout(&ctx, admin_id, payout_id, hint, command).await.map_err(AppError::from)
    };
    let outcome = guarded(app, name, &ctx, keyed, run).await?;
    let settled = outcome.events.iter().any(|e| match (&e.event, status) {
        (Event::PayoutApproved(p), "paid") => p.payout_id == payout_id,
        (Event::PayoutRejected(p), "rejected") => p.payout_id == payout_id,
        _ => false,
    });
    if !settled {
        return Err(AppError::Internal("a settlement's outcome lacks its event".into()));
    }
    let view = PayoutSettled { payout_id, status: status.into(), position: outcome.position };
    Ok((StatusCode::OK, replayed(outcome.repeated), Json(view)))
}

/// Approves a pending payout: the held coins are paid out.
#[utoipa::path(
    post, path = "/api/v1/admin/payouts/{id}/approve", tag = "admin",
    request_body = ApprovePayoutRequest,
    params(("id" = Uuid, Path), IdempotencyKey, Consistency),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, body = PayoutSettled),
        BodyRefusals, CommandRefusals, Unauthorized, NeedsOtherAdmin, NotFound, PayoutNotPending, SettleLagging,
    )
)]
pub async fn approve_payout(
    State(app): State<AppState>,
    admin: Privileged<AdminOnly>,
    ApiPath(payout_id): ApiPath<Uuid>,
    meta: CommandMeta,
    consistency: Consistency,
    ApiJson(body): ApiJson<ApprovePayoutRequest>,
) -> ApiResult<impl IntoResponse> {
    let ctx = admin_ctx(admin.user.id, &meta, &body);
    settle(
        &app,
        ctx,
        admin.user.id,
        payout_id,
        consistency.min_position,
        meta.idempotency_key.is_some(),
        Settle::Approve(body.external_ref),
    )
    .await
}

/// Rejects a pending payout: the held coins go back to the host's earnings.
#[utoipa::path(
    post, path = "/api/v1/admin/payouts/{id}/reject", tag = "admin",
    request_body = RejectPayoutRequest,
    params(("id" = Uuid, Path), IdempotencyKey, Consistency),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, body = PayoutSettled),
        BodyRefusals, CommandRefusals, Unauthorized, NeedsOtherAdmin, NotFound, PayoutNotPending, SettleLagging,
    )
)]
pub async fn reject_payout(
    State(app): State<AppState>,
    admin: Privileged<AdminOnly>,
    ApiPath(payout_id): ApiPath<Uuid>,
    meta: CommandMeta,
    consistency: Consistency,
    ApiJson(body): ApiJson<RejectPayoutRequest>,
) -> ApiResult<impl IntoResponse> {
    let ctx = admin_ctx(admin.user.id, &meta, &body);
    let keyed = meta.idempotency_key.is_some();
    settle(&app, ctx, admin.user.id, payout_id, consistency.min_position, keyed, Settle::Reject(body.reason)).await
}

/// Credits (positive) or debits (negative) a user's wallet, with a reason.
/// One of `ADJUSTMENT_APPROVAL_COINS` or more either way is only proposed
/// (`202`): a different admin approves or rejects it.
#[utoipa::path(
    post, path = "/api/v1/admin/adjustments", tag = "admin",
    request_body = AdjustmentRequest,
    params(IdempotencyKey),
    security(("bearerAuth" = [])),
    responses(
        (status = 201, body = AdjustmentView),
        (status = 202, description = "Proposed: moves nothing until another admin approves it", body = AdjustmentProposedView),
        BodyRefusals, CommandRefusals, Unauthorized,
        (status = 402, description = "A debit larger than the wallet", body = Problem, content_type = "application/problem+json"),
        NeedsOtherAdmin, UnknownUser,
    )
)]
pub async fn adjust(
    State(app): State<AppState>,
    admin: Privileged<AdminOnly>,
    meta: CommandMeta,
    ApiJson(body): ApiJson<AdjustmentRequest>,
) -> ApiResult<Response> {
    let ctx = admin_ctx(admin.user.id, &meta, &body);
    let keyed = meta.idempotency_key.is_some();
    if adjustment::needs_approval(body.coins, app.config.adjustment_approval_coins) {
        let command = Propose {
            adjustment_id: Uuid::now_v7(),
            user_id: body.user_id,
            coins: body.coins,
            reason: body.reason,
            admin_id: admin.user.id,
        };
        let run = async {
            if app.user_from_log(body.user_id).await?.is_none() {
                return Err(AppError::not_found("no such user"));
            }
            app.commands.propose_adjustment(&ctx, command).await.map_err(AppError::from)
        };
        let outcome = guarded(&app, "propose_adjustment", &ctx, keyed, run).await?;
        let (proposed, _) = find_event(&outcome.events, |e| match e {
            Event::AdjustmentProposed(a) => Some(a),
            _ => None,
        })?;
        let answer = AdjustmentProposedView {
            adjustment_id: proposed.adjustment_id,
            status: "proposed".into(),
            user_id: proposed.user_id,
            coins: proposed.coins,
            position: outcome.position,
        };
        return Ok((StatusCode::ACCEPTED, replayed(outcome.repeated), Json(answer)).into_response());
    }
    let command = LedgerCommand::Adjust { coins: body.coins, reason: body.reason, admin_id: admin.user.id };
    let run = async {
        // A ledger exists for any id; an adjustment is for registered users
        // only (a decision from the log: remembered like the command's).
        if app.user_from_log(body.user_id).await?.is_none() {
            return Err(AppError::not_found("no such user"));
        }
        app.commands.ledger(&ctx, body.user_id, command).await.map_err(AppError::from)
    };
    let outcome = guarded(&app, "adjust", &ctx, keyed, run).await?;
    let (adjusted, _) = find_event(&outcome.events, |e| match e {
        Event::LedgerAdjusted(a) => Some(a),
        _ => None,
    })?;
    let answer = AdjustmentView {
        user_id: adjusted.user_id,
        coins: adjusted.coins,
        balance: adjusted.commit.state_after.wallet_coins,
        position: outcome.position,
    };
    Ok((StatusCode::CREATED, replayed(outcome.repeated), Json(answer)).into_response())
}

/// Approves a proposed adjustment: it is applied to the user's wallet now.
/// The approver is not its proposer, nor the adjusted user.
#[utoipa::path(
    post, path = "/api/v1/admin/adjustments/{id}/approve", tag = "admin",
    params(("id" = Uuid, Path), IdempotencyKey),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, body = AdjustmentSettledView),
        CommandRefusals, Unauthorized, NeedsOtherAdmin, NotFound, AdjustmentNotProposed,
        (status = 402, description = "`insufficient_funds`: a debit larger than the wallet is now", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`amount_out_of_range`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn approve_adjustment(
    State(app): State<AppState>,
    admin: Privileged<AdminOnly>,
    ApiPath(adjustment_id): ApiPath<Uuid>,
    meta: CommandMeta,
) -> ApiResult<impl IntoResponse> {
    let ctx = admin_ctx(admin.user.id, &meta, &serde_json::Value::Null);
    let run =
        async { app.commands.approve_adjustment(&ctx, adjustment_id, admin.user.id).await.map_err(AppError::from) };
    let outcome = guarded(&app, "approve_adjustment", &ctx, meta.idempotency_key.is_some(), run).await?;
    let (adjusted, _) = find_event(&outcome.events, |e| match e {
        Event::LedgerAdjusted(a) => Some(a),
        _ => None,
    })?;
    let answer = AdjustmentSettledView {
        adjustment_id,
        status: "applied".into(),
        user_id: adjusted.user_id,
        coins: adjusted.coins,
        balance: Some(adjusted.commit.state_after.wallet_coins),
        position: outcome.position,
    };
    Ok((StatusCode::OK, replayed(outcome.repeated), Json(answer)))
}

/// Rejects a proposed adjustment: nothing moves. Any admin but the
/// adjusted user may (the proposer withdrawing it too).
#[utoipa::path(
    post, path = "/api/v1/admin/adjustments/{id}/reject", tag = "admin",
    request_body = RejectAdjustmentRequest,
    params(("id" = Uuid, Path), IdempotencyKey),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, body = AdjustmentSettledView),
        BodyRefusals, CommandRefusals, Unauthorized, NeedsOtherAdmin, NotFound, AdjustmentNotProposed,
    )
)]
pub async fn reject_adjustment(
    State(app): State<AppState>,
    admin: Privileged<AdminOnly>,
    ApiPath(adjustment_id): ApiPath<Uuid>,
    meta: CommandMeta,
    ApiJson(body): ApiJson<RejectAdjustmentRequest>,
) -> ApiResult<impl IntoResponse> {
    let ctx = admin_ctx(admin.user.id, &meta, &body);
    let run = async {
        app.commands.reject_adjustment(&ctx, adjustment_id, admin.user.id, body.reason).await.map_err(AppError::from)
    };
    let outcome = guarded(&app, "reject_adjustment", &ctx, meta.idempotency_key.is_some(), run).await?;
    let (rejected, _) = find_event(&outcome.events, |e| match e {
        Event::AdjustmentRejected(a) => Some(a),
        _ => None,
    })?;
    let answer = AdjustmentSettledView {
        adjustment_id,
        status: "rejected".into(),
        user_id: rejected.user_id,
        coins: rejected.coins,
        balance: None,
        position: outcome.position,
    };
    Ok((StatusCode::OK, replayed(outcome.repeated), Json(answer)))
}

/// Grants and revokes roles (`admin`, `finance`, `ops`).
#[utoipa::path(
    post, path = "/api/v1/admin/users/{id}/roles", tag = "admin",
    request_body = RolesRequest,
    params(("id" = Uuid, Path), IdempotencyKey),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, body = RolesView),
        BodyRefusals, CommandRefusals, Unauthorized, NeedsAdmin, UnknownUser,
    )
)]
pub async fn change_roles(
    State(app): State<AppState>,
    admin: Privileged<AdminOnly>,
    ApiPath(user_id): ApiPath<Uuid>,
    meta: CommandMeta,
    ApiJson(body): ApiJson<RolesRequest>,
) -> ApiResult<impl IntoResponse> {
    if body.grant.len() + body.revoke.len() > ROLES_PER_REQUEST_MAX {
        return Err(AppError::validation("grant", format!("at most {ROLES_PER_REQUEST_MAX} roles per request")));
    }
    let parse = |field: &'static str, names: &[String]| -> ApiResult<Vec<Role>> {
        // Each list names a role once (the document says `uniqueItems`).
        if names.iter().enumerate().any(|(i, n)| names[..i].contains(n)) {
            return Err(AppError::validation(field, "names a role twice"));
        }
        names
            .iter()
            .map(|n| parse_role(n).ok_or_else(|| AppError::validation(field, format!("unknown role {n:?}"))))
            .collect()
    };
    let command = ChangeRoles { user_id, grant: parse("grant", &body.grant)?, revoke: parse("revoke", &body.revoke)? };
    let ctx = admin_ctx(admin.user.id, &meta, &body);
    let run = async { app.commands.change_roles(&ctx, command).await.map_err(AppError::from) };
    let outcome = guarded(&app, "change_roles", &ctx, meta.idempotency_key.is_some(), run).await?;
    let roles = match outcome.events.iter().find_map(|e| match &e.event {
        Event::UserRolesChanged(c) => Some(c.state_after.roles.clone()),
        _ => None,
    }) {
        Some(roles) => roles,
        // Nothing changed: the roles are what they were.
        None => app.roles_of(user_id).await?,
    };
    let answer = RolesView { user_id, roles: roles_view(&roles), position: outcome.position };
    Ok((StatusCode::OK, replayed(outcome.repeated), Json(answer)))
}
