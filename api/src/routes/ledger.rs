//! The ledger for finance: an account's entries with running balance, the
//! trial balance, and the reconciliation with Stripe.

use axum::Json;
use axum::extract::State;
use events_schema::{Account, Role};
use projections::{PageRequest, Projection, ResolutionStatus, StripePaymentFilter};

use crate::error::{ApiResult, AppError, Problem};
use crate::extract::{ApiPath, ApiQuery, AuthUser, Consistency, FinanceOrAdmin, Privileged};
use crate::routes::doc::{NeedsFinanceOrAdmin, QueryRefusals, Unauthorized};
use crate::state::AppState;
use crate::views::{
    LedgerEntryPage, PageQuery, ReconciliationItem, ReconciliationQuery, ReconciliationView, ResolutionStatusParam,
    TrialBalanceView,
};

/// An account's entries, newest first, each with the balance after it.
/// Finance and admins read any account; a user reads their own
/// (`wallet:<id>`, `earnings:<id>`, `payout_hold:<id>`).
#[utoipa::path(
    get, path = "/api/v1/ledger/accounts/{account}/entries", tag = "ledger",
    params(
        ("account" = String, Path, description = "wallet:<user>, earnings:<user>, payout_hold:<user>, transit:gifts, platform:revenue, platform:adjustments, external:stripe, external:payouts"),
        PageQuery, Consistency,
    ),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, body = LedgerEntryPage),
        QueryRefusals, Unauthorized,
        (status = 403, description = "Another user's or the platform's account, without finance or admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not an account", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn entries(
    State(app): State<AppState>,
    caller: AuthUser,
    ApiPath(account): ApiPath<String>,
    ApiQuery(query): ApiQuery<PageQuery>,
    consistency: Consistency,
) -> ApiResult<Json<LedgerEntryPage>> {
    let account: Account = account.parse().map_err(|_| AppError::not_found("no such account"))?;
    if account.owner() != Some(caller.id) {
        let roles = app.roles_checked(&caller).await?;
        if !roles.iter().any(|r| matches!(r, Role::Admin | Role::Finance)) {
            return Err(AppError::Forbidden("only finance and admins read accounts other than one's own"));
        }
    }
    app.wait_for(consistency.min_position, &[Projection::Ledger]).await?;
    let page = PageRequest { limit: query.limit, cursor: query.cursor };
    Ok(Json(app.store.ledger_entries(account, &page).await?.into()))
}

/// Every account's balance and their total, which is always 0.
#[utoipa::path(
    get, path = "/api/v1/ledger/trial-balance", tag = "ledger",
    params(PageQuery, Consistency),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, body = TrialBalanceView),
        QueryRefusals, Unauthorized, NeedsFinanceOrAdmin,
    )
)]
pub async fn trial_balance(
    State(app): State<AppState>,
    _caller: Privileged<FinanceOrAdmin>,
    ApiQuery(query): ApiQuery<PageQuery>,
    consistency: Consistency,
) -> ApiResult<Json<TrialBalanceView>> {
    app.wait_for(consistency.min_position, &[Projection::Ledger]).await?;
    let page = PageRequest { limit: query.limit, cursor: query.cursor };
    let tb = app.store.trial_balance(&page).await?;
    Ok(Json(TrialBalanceView {
        items: tb.items.into_iter().map(Into::into).collect(),
        next_cursor: tb.next_cursor,
        total_coins: tb.total_coins,
        accounts_count: tb.accounts_count,
        position: tb.position,
    }))
}

/// Each Stripe payment against the coins issued and reversed for it, and
/// what does not match: flagged events (unknown user or package, a refund
/// that is not one), coins issued or reversed other than Stripe's amounts
/// say, coins issued with no Stripe payment. Paged by PaymentIntent id;
/// `mismatches` lists this page's.
#[utoipa::path(
    get, path = "/api/v1/ledger/reconciliation", tag = "ledger",
    params(ReconciliationQuery, Consistency),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, body = ReconciliationView),
        QueryRefusals, Unauthorized, NeedsFinanceOrAdmin,
    )
)]
pub async fn reconciliation(
    State(app): State<AppState>,
    _caller: Privileged<FinanceOrAdmin>,
    ApiQuery(query): ApiQuery<ReconciliationQuery>,
    consistency: Consistency,
) -> ApiResult<Json<ReconciliationView>> {
    app.wait_for(consistency.min_position, &[Projection::StripePayments]).await?;
    let page = PageRequest { limit: query.limit, cursor: query.cursor };
    let filter = StripePaymentFilter {
        flag: query.flag.map(|f| f.as_str().to_string()),
        status: query.status.map(|s| match s {
            ResolutionStatusParam::Open => ResolutionStatus::Open,
            ResolutionStatusParam::Resolved => ResolutionStatus::Resolved,
        }),
    };
    let found = app.store.stripe_payments(&filter, &page).await?;
    let items: Vec<ReconciliationItem> = found.items.iter().map(ReconciliationItem::from).collect();
    let coins_issued = items.iter().fold(0i64, |t, i| t.saturating_add(i.coins_issued));
    let coins_reversed = items.iter().fold(0i64, |t, i| t.saturating_add(i.coins_reversed));
    let mismatches = items.iter().filter(|i| !i.mismatches.is_empty()).cloned().collect();
    Ok(Json(ReconciliationView { items, next_cursor: found.next_cursor, mismatches, coins_issued, coins_reversed }))
}
