//! The caller's own account: profile, wallet, transactions; and the coin
//! packages on sale.

use axum::Json;
use axum::extract::State;
use projections::{PageRequest, Projection, TransactionFilter, TxStatus, TxType};

use crate::error::{ApiResult, AppError};
use crate::extract::{ApiQuery, AuthUser, Consistency};
use crate::routes::doc::{NotFound, QueryRefusals, Throttled, Unauthorized};
use crate::state::AppState;
use crate::views::{CoinPackageView, MoneyView, TransactionPage, TransactionsQuery, UserView, WalletView};

/// The caller's profile.
#[utoipa::path(
    get, path = "/api/v1/users/me", tag = "account",
    params(Consistency),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, body = UserView),
        QueryRefusals, Unauthorized, NotFound,
    )
)]
pub async fn me(State(app): State<AppState>, caller: AuthUser, consistency: Consistency) -> ApiResult<Json<UserView>> {
    app.wait_for(consistency.min_position, &[Projection::Users]).await?;
    if let Some(doc) = app.store.user_by_id(caller.id).await? {
        return Ok(Json(doc.into()));
    }
    // Registered a moment ago: the read model has not caught up, the log
    // knows.
    let Some(user) = app.user_from_log(caller.id).await? else { return Err(AppError::not_found("no such user")) };
    let (_, envelope) =
        app.registration_from_log(&user.email).await?.ok_or_else(|| AppError::not_found("no such user"))?;
    Ok(Json(UserView::new(caller.id, &user.email, &user.username, &user.roles, envelope.header.occurred_at)))
}

/// The caller's balances.
#[utoipa::path(
    get, path = "/api/v1/wallet", tag = "account",
    params(Consistency),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, body = WalletView),
        QueryRefusals, Unauthorized,
    )
)]
pub async fn wallet(
    State(app): State<AppState>,
    caller: AuthUser,
    consistency: Consistency,
) -> ApiResult<Json<WalletView>> {
    app.wait_for(consistency.min_position, &[Projection::Wallets]).await?;
    // What a payout request would be decided against now: the ledger's
    // last commit in the log (one direct get), never the read model.
    let (ledger, _) = app.commands.ledger_state(caller.id).await.map_err(AppError::from)?;
    let earnings_available = domain::ledger::earnings_available(&ledger.snapshot, chrono::Utc::now());
    let view = match app.store.wallet(caller.id).await? {
        Some(w) => {
            WalletView { coins: w.coins, earnings: w.earnings, held: w.held, earnings_available, position: w.position }
        }
        None => WalletView { coins: 0, earnings: 0, held: 0, earnings_available, position: 0 },
    };
    Ok(Json(view))
}

/// The caller's transactions, newest first.
#[utoipa::path(
    get, path = "/api/v1/transactions", tag = "account",
    params(TransactionsQuery, Consistency),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, body = TransactionPage),
        QueryRefusals, Unauthorized,
    )
)]
pub async fn transactions(
    State(app): State<AppState>,
    caller: AuthUser,
    ApiQuery(query): ApiQuery<TransactionsQuery>,
    consistency: Consistency,
) -> ApiResult<Json<TransactionPage>> {
    let kind = match query.kind.as_deref() {
        None => None,
        Some(k) => Some(TxType::parse(k).ok_or_else(|| AppError::validation("type", "is not a transaction type"))?),
    };
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => {
            Some(TxStatus::parse(s).ok_or_else(|| AppError::validation("status", "is not a transaction status"))?)
        }
    };
    app.wait_for(consistency.min_position, &[Projection::Transactions]).await?;
    let page = PageRequest { limit: query.limit, cursor: query.cursor };
    let found = app.store.transactions(caller.id, TransactionFilter { kind, status }, &page).await?;
    Ok(Json(found.into()))
}

/// The coin packages on sale (`COIN_PACKAGES`).
#[utoipa::path(
    get, path = "/api/v1/coins/packages", tag = "coins",
    responses((status = 200, body = [CoinPackageView]), Throttled)
)]
pub async fn coin_packages(State(app): State<AppState>) -> Json<Vec<CoinPackageView>> {
    Json(
        app.config
            .coin_packages
            .iter()
            .map(|p| CoinPackageView { id: p.id.clone(), coins: p.coins, price: MoneyView::from(&p.price) })
            .collect(),
    )
}
