//! The ledger for finance: an account's entries with running balance, the
//! trial balance, and the reconciliation with Stripe.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use events_schema::{Account, Role};
use futures_util::StreamExt;
use projections::{LedgerEntryDoc, PageRequest, Projection, ResolutionStatus, StripePaymentFilter};

use crate::error::{ApiResult, AppError, Problem};
use crate::extract::{ApiPath, ApiQuery, AuthUser, Consistency, ConsoleReader, FinanceOrAdmin, Privileged};
use crate::routes::doc::{NeedsConsoleRole, NeedsFinanceOrAdmin, QueryRefusals, Unauthorized};
use crate::state::AppState;
use crate::views::{
    AsOfView, BalanceAtView, BalanceQuery, DailyQuery, LedgerDailyView, LedgerDayView, LedgerEntryPage,
    LedgerEntryView, PageQuery, ReconciliationItem, ReconciliationQuery, ReconciliationView, ResolutionStatusParam,
    StatementQuery, StatementView, TrialBalanceView,
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
    let account = readable_account(&app, &caller, &account).await?;
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

/// Coins moved per UTC day, for the last `days` days (today, UTC, last;
/// every day present, 0 when nothing moved), from the ledger commits of
/// each day (their `occurredAt`), in five kinds, each the sum of one kind
/// of transfer in one event type, integers, none netted against another:
/// - `purchasedCoins`: `external:stripe -> wallet` in
///   `ledger.coins_purchased`: Stripe purchases, finance's credits of
///   flagged payments, and coins credited back when a dispute is won
///   (funds reinstated);
/// - `giftedCoins`: `wallet -> transit:gifts` in `ledger.gift_sent`: the
///   viewers' side of gifts, when sent;
/// - `creditedCoins`: `transit:gifts -> earnings` in
///   `ledger.gifts_received`: the hosts' share of gifts, when the gift
///   reactor credited it (the platform's commission is not counted);
/// - `paidOutCoins`: `payout_hold -> external:payouts` in
///   `ledger.payout_approved`: payouts approved and paid;
/// - `reversedCoins`: `wallet -> external:stripe` in
///   `ledger.purchase_refunded`: coins taken back for Stripe refunds and
///   for disputes whose funds were withdrawn (chargebacks).
///
/// Payout requests and rejections (coins that stay the host's) and admin
/// adjustments are in no kind. Finance, ops and admins.
#[utoipa::path(
    get, path = "/api/v1/ledger/daily", tag = "ledger",
    params(DailyQuery, Consistency),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, body = LedgerDailyView),
        QueryRefusals, Unauthorized, NeedsConsoleRole,
    )
)]
pub async fn daily(
    State(app): State<AppState>,
    _caller: Privileged<ConsoleReader>,
    ApiQuery(query): ApiQuery<DailyQuery>,
    consistency: Consistency,
) -> ApiResult<Json<LedgerDailyView>> {
    app.wait_for(consistency.min_position, &[Projection::LedgerDaily]).await?;
    let days = query.days.unwrap_or(DAILY_DAYS_DEFAULT);
    let to = Utc::now().date_naive();
    let from = to - chrono::Days::new(u64::from(days.saturating_sub(1)));
    let found = app.store.ledger_days(from, to).await?;
    // The checkpoint of the version that serves (the figures' as-of).
    let position = app
        .store
        .checkpoints()
        .await?
        .into_iter()
        .find(|c| c.projection == Projection::LedgerDaily && c.active)
        .map_or(0, |c| c.position);
    let mut found = found.into_iter().peekable();
    let mut out = Vec::with_capacity(usize::try_from(days).unwrap_or(0));
    // Bounded by `days` (at most 366): one entry per day, zero-filled.
    for day in from.iter_days().take_while(|d| *d <= to) {
        let totals = match found.next_if(|d| d.day == day) {
            Some(d) => d.totals,
            None => projections::DayTotals::default(),
        };
        out.push(LedgerDayView::new(day, totals));
    }
    Ok(Json(LedgerDailyView { days: out, from, to, position }))
}

/// Days the daily route answers when the caller does not say.
pub const DAILY_DAYS_DEFAULT: u32 = 30;

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

/// The longest statement window: a year and a month-end's slack.
pub const STATEMENT_WINDOW_DAYS_MAX: i64 = 400;
/// Entries read per page while a statement streams: the server holds one
/// page at a time, whatever the window's length.
const STATEMENT_PAGE_ENTRIES: u32 = 1_000;

/// The account of the path, if the caller may read it (the entries route's
/// rule: finance and admins any account, a user their own); the entries,
/// balance and statement routes all check it here.
async fn readable_account(app: &AppState, caller: &AuthUser, account: &str) -> ApiResult<Account> {
    let account: Account = account.parse().map_err(|_| AppError::not_found("no such account"))?;
    if account.owner() != Some(caller.id) {
        let roles = app.roles_checked(caller).await?;
        if !roles.iter().any(|r| matches!(r, Role::Admin | Role::Finance)) {
            return Err(AppError::Forbidden("only finance and admins read accounts other than one's own"));
        }
    }
    Ok(account)
}

fn rfc3339(field: &'static str, text: &str) -> ApiResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| AppError::validation(field, "must be an RFC 3339 time, such as 2026-01-31T23:59:59Z"))
}

/// An account's balance at a time or a log position: the balance after the
/// last entry at or before it.
#[utoipa::path(
    get, path = "/api/v1/ledger/accounts/{account}/balance", tag = "ledger",
    params(
        ("account" = String, Path, description = "As for the entries route"),
        BalanceQuery, Consistency,
    ),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, body = BalanceAtView),
        QueryRefusals, Unauthorized,
        (status = 403, description = "Another user's or the platform's account, without finance or admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not an account", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn balance(
    State(app): State<AppState>,
    caller: AuthUser,
    ApiPath(account): ApiPath<String>,
    ApiQuery(query): ApiQuery<BalanceQuery>,
    consistency: Consistency,
) -> ApiResult<Json<BalanceAtView>> {
    let account = readable_account(&app, &caller, &account).await?;
    let time_max = match (&query.at, query.position) {
        (Some(_), Some(_)) => return Err(AppError::validation("at", "give `at` or `position`, not both")),
        (Some(at), None) => Some(rfc3339("at", at)?),
        _ => None,
    };
    app.wait_for(consistency.min_position, &[Projection::Ledger]).await?;
    let entry = app.store.ledger_entry_at(account, query.position.unwrap_or(u64::MAX), time_max).await?;
    Ok(Json(BalanceAtView {
        account: account.to_string(),
        balance: entry.as_ref().map_or(0, |e| e.balance_after),
        as_of: AsOfView {
            position: entry.as_ref().map_or(0, |e| e.position),
            time: entry.as_ref().map(|e| e.created_at),
        },
    }))
}

/// An account's statement over `[from, to]`: the opening balance (before
/// `from`), every entry in the window oldest first, the closing balance (at
/// `to`). JSON, or CSV with `Accept: text/csv` or `format=csv` (a header
/// row, an `opening_balance` row, then the entries: the `coins` column sums
/// to the closing balance). Streamed page by page: the server's memory does
/// not grow with the number of entries.
#[utoipa::path(
    get, path = "/api/v1/ledger/accounts/{account}/statement", tag = "ledger",
    params(
        ("account" = String, Path, description = "As for the entries route"),
        StatementQuery, Consistency,
    ),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The statement: JSON, or CSV with `Accept: text/csv` or `format=csv`", content(
            (StatementView = "application/json"),
            (String = "text/csv"),
        )),
        QueryRefusals, Unauthorized,
        (status = 403, description = "Another user's or the platform's account, without finance or admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not an account", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn statement(
    State(app): State<AppState>,
    caller: AuthUser,
    ApiPath(account): ApiPath<String>,
    ApiQuery(query): ApiQuery<StatementQuery>,
    consistency: Consistency,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let account = readable_account(&app, &caller, &account).await?;
    let from = rfc3339("from", query.from.as_deref().ok_or_else(|| AppError::validation("from", "is required"))?)?;
    let to = rfc3339("to", query.to.as_deref().ok_or_else(|| AppError::validation("to", "is required"))?)?;
    if from > to {
        return Err(AppError::validation("from", "must not be after `to`"));
    }
    if to - from > chrono::Duration::days(STATEMENT_WINDOW_DAYS_MAX) {
        return Err(AppError::validation("to", format!("a statement covers at most {STATEMENT_WINDOW_DAYS_MAX} days")));
    }
    let csv = match query.format.as_deref() {
        Some("csv") => true,
        Some("json") => false,
        Some(_) => return Err(AppError::validation("format", "must be `csv` or `json`")),
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/csv") && !accept.contains("application/json")),
    };
    app.wait_for(consistency.min_position, &[Projection::Ledger]).await?;
    // Both ends are fixed before the first byte: the closing entry bounds
    // the stream, so entries appended meanwhile never enter it.
    let opening = match from.checked_sub_signed(chrono::Duration::milliseconds(1)) {
        Some(before) => app.store.ledger_entry_at(account, u64::MAX, Some(before)).await?,
        None => None,
    };
    let closing = app.store.ledger_entry_at(account, u64::MAX, Some(to)).await?;
    let opening_balance = opening.as_ref().map_or(0, |e| e.balance_after);
    let closing_balance = closing.as_ref().map_or(opening_balance, |e| e.balance_after);
    let after = opening.as_ref().map_or((0, 0), |e| (e.position, e.seq));
    let until = closing.as_ref().map_or((0, 0), |e| (e.position, e.seq));
    let pages = statement_pages(app.store.clone(), account, from, after, until);
    let (content_type, head, rows, tail): (&str, String, RowFormat, String) = if csv {
        let head = format!(
            "position,seq,time,eventType,counterparty,coins,balanceAfter\n{},0,{},opening_balance,,{opening_balance},{opening_balance}\n",
            opening.as_ref().map_or(0, |e| e.position),
            from.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
        ("text/csv; charset=utf-8", head, RowFormat::Csv, String::new())
    } else {
        let head = serde_json::json!({
            "account": account.to_string(),
            "from": from.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "to": to.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "openingBalance": opening_balance,
            "closingBalance": closing_balance,
        })
        .to_string();
        // The object without its closing brace, then the streamed entries.
        let head = format!("{},\"entries\":[", head.trim_end_matches('}'));
        ("application/json", head, RowFormat::Json, "]}".to_string())
    };
    let body = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(Bytes::from(head)) })
        .chain(pages.map(move |page| page.map(|(first, entries)| rows.render(first, &entries))))
        .chain(futures_util::stream::once(async move { Ok(Bytes::from(tail)) }));
    Ok(([(header::CONTENT_TYPE, content_type)], Body::from_stream(body)).into_response())
}

#[derive(Clone, Copy)]
enum RowFormat {
    Csv,
    Json,
}

impl RowFormat {
    /// One page of entries as bytes; `first`: the page opens the list.
    fn render(self, first: bool, entries: &[LedgerEntryDoc]) -> Bytes {
        let mut out = String::with_capacity(entries.len() * 160);
        for (i, e) in entries.iter().enumerate() {
            match self {
                RowFormat::Csv => {
                    // Accounts and event types hold no comma or quote.
                    out.push_str(&format!(
                        "{},{},{},{},{},{},{}\n",
                        e.position,
                        e.seq,
                        e.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        e.event_type,
                        e.counterparty,
                        e.coins,
                        e.balance_after
                    ));
                }
                RowFormat::Json => {
                    if !(first && i == 0) {
                        out.push(',');
                    }
                    let view = LedgerEntryView::from(e.clone());
                    out.push_str(&serde_json::to_string(&view).unwrap_or_default());
                }
            }
        }
        Bytes::from(out)
    }
}

/// The window's entries, a page at a time: `(whether it is the first page,
/// its entries)`. A failed read ends the stream with an error (the client
/// sees a cut body, never a wrong total).
fn statement_pages(
    store: std::sync::Arc<dyn projections::ReadStore>,
    account: Account,
    from: DateTime<Utc>,
    after: (u64, u32),
    until: (u64, u32),
) -> impl futures_util::Stream<Item = Result<(bool, Vec<LedgerEntryDoc>), std::io::Error>> {
    futures_util::stream::try_unfold((after, true, false), move |(after, first, done)| {
        let store = store.clone();
        async move {
            if done || after >= until {
                return Ok(None);
            }
            let page = store
                .ledger_entries_window(account, from, after, until, STATEMENT_PAGE_ENTRIES)
                .await
                .map_err(std::io::Error::other)?;
            let Some(last) = page.last() else { return Ok(None) };
            let next = (last.position, last.seq);
            let done = page.len() < usize::try_from(STATEMENT_PAGE_ENTRIES).unwrap_or(usize::MAX);
            Ok(Some(((first, page), (next, false, done))))
        }
    })
}
