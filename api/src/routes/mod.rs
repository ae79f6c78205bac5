//! The router: every route of the contract, the cross-cutting layers, and
//! the helpers the handlers share.
//!
//! Layers, outermost first: request metrics; CORS; the bound on requests in
//! flight; the body size limit; the per-IP rate limit (API routes only, not
//! health, metrics or docs); on command routes, the maintenance switch.

pub mod account;
pub mod admin;
pub mod auth;
pub mod coins;
pub mod ledger;
pub mod ops;
pub mod payouts;
pub mod streams;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{AppendHeaders, IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use commands::handler::{CommandContext, CommandError, Outcome};
use events_schema::{Envelope, Event};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::error::{ApiResult, AppError, Problem};
use crate::state::AppState;

/// Requests handled at once; more wait for a slot (backpressure, not
/// unbounded memory).
pub const REQUESTS_IN_FLIGHT_MAX: usize = 2_048;
/// The largest Stripe event accepted (Stripe's own are far smaller).
pub const STRIPE_EVENT_BYTES_MAX: usize = 512 * 1024;

/// The whole HTTP API of this process. `HALOBUZZ_ROLE=workers` serves only
/// health, metrics and the docs.
pub fn router(state: AppState) -> Router {
    let ops = Router::new()
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route("/docs", get(ops::docs))
        .route("/api/v1/openapi.json", get(ops::openapi_json));
    let app = if state.config.role.serves_api() {
        let webhook = Router::new().route(
            "/api/v1/webhooks/stripe",
            post(coins::stripe_webhook)
                .route_layer(middleware::from_fn_with_state(state.clone(), maintenance_guard))
                .route_layer(DefaultBodyLimit::max(STRIPE_EVENT_BYTES_MAX)),
        );
        api_routes(&state).layer(middleware::from_fn_with_state(state.clone(), ip_rate_limit)).merge(ops).merge(webhook)
    } else {
        ops
    };
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.body_bytes_max))
        .layer(GlobalConcurrencyLimitLayer::new(REQUESTS_IN_FLIGHT_MAX))
        .layer(cors(&state))
        .layer(middleware::from_fn_with_state(state.clone(), track_request))
        .with_state(state)
}

fn api_routes(state: &AppState) -> Router<AppState> {
    // Commands append to the log: paused in maintenance.
    let command = |route: MethodRouter<AppState>| {
        route.route_layer(middleware::from_fn_with_state(state.clone(), maintenance_guard))
    };
    Router::new()
        .route("/api/v1/auth/register", command(post(auth::register)))
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/refresh", post(auth::refresh))
        .route("/api/v1/users/me", get(account::me))
        .route("/api/v1/wallet", get(account::wallet))
        .route("/api/v1/transactions", get(account::transactions))
        .route("/api/v1/coins/packages", get(account::coin_packages))
        // Purchases start a payment whose coins a webhook appends: paused
        // too, or buyers would pay for coins that wait for maintenance's end.
        .route("/api/v1/coins/checkout", command(post(coins::checkout)))
        .route("/api/v1/coins/payment-intent", command(post(coins::payment_intent)))
        .route("/api/v1/gifts/catalog", get(streams::gift_catalog))
        .route("/api/v1/streams", command(post(streams::start)))
        .route("/api/v1/streams/live", get(streams::live))
        .route("/api/v1/streams/{id}", get(streams::get_stream))
        .route("/api/v1/streams/{id}/end", command(post(streams::end)))
        .route("/api/v1/streams/{id}/join", command(post(streams::join)))
        .route("/api/v1/streams/{id}/leave", command(post(streams::leave)))
        .route("/api/v1/streams/{id}/leaderboard", get(streams::leaderboard))
        .route("/api/v1/streams/{id}/gifts", command(post(streams::send_gift)))
        .route("/api/v1/payouts", command(post(payouts::request)).merge(get(payouts::list_own)))
        .route("/api/v1/admin/payouts", get(admin::list_payouts))
        .route("/api/v1/admin/payouts/{id}/approve", command(post(admin::approve_payout)))
        .route("/api/v1/admin/payouts/{id}/reject", command(post(admin::reject_payout)))
        .route("/api/v1/admin/adjustments", command(post(admin::adjust)))
        .route("/api/v1/admin/users/{id}/roles", command(post(admin::change_roles)))
        .route("/api/v1/ledger/accounts/{account}/entries", get(ledger::entries))
        .route("/api/v1/ledger/trial-balance", get(ledger::trial_balance))
        .route("/api/v1/ledger/reconciliation", get(ledger::reconciliation))
}

fn cors(state: &AppState) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("idempotency-key"),
            header::HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([header::RETRY_AFTER]);
    match &state.config.cors_origins {
        None => layer.allow_origin(Any),
        Some(origins) => {
            let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
            layer.allow_origin(AllowOrigin::list(origins))
        }
    }
}

/// Counts and times every request by matched route (never the raw path, so
/// that ids do not explode the label space).
async fn track_request(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let response = next.run(request).await;
    let route = route.as_deref().unwrap_or("unmatched");
    app.metrics.observe_request(method.as_str(), route, response.status().as_u16(), started.elapsed());
    response
}

/// The per-IP limit. The peer address is the client (behind a proxy, the
/// proxy: limit at the edge then, or set the limit high).
async fn ip_rate_limit(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(limiter) = &app.limiter
        && let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>()
        && let Err(refused) = limiter.check(&format!("ip:{}", peer.ip()))
    {
        app.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
        return AppError::RateLimited { retry_after_s: refused.retry_after.as_secs().max(1) }.into_response();
    }
    next.run(request).await
}

async fn maintenance_guard(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if app.config.maintenance_mode {
        return AppError::Maintenance.into_response();
    }
    next.run(request).await
}

async fn not_found() -> AppError {
    AppError::not_found("no route matches this path")
}

async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}

/// Runs a command route's work (its look-ups and its command) under the
/// idempotency contract, and counts its outcome.
///
/// Accepted commands are remembered by the log (`command.recorded`). A
/// rejection decided from the ledger's state (`AppError::is_decided_rejection`)
/// appends nothing, so when the client gave an `Idempotency-Key` its answer
/// is remembered in the rejection memory, and a repeat of the key gets that
/// same status and body (`idempotency-replayed: true`) however the state
/// changed since; a repeat with another body gets `idempotency_key_reused`.
/// Invalid requests are not remembered (they are refused again anyway).
pub(crate) async fn guarded(
    app: &AppState,
    command: &'static str,
    ctx: &CommandContext,
    keyed: bool,
    work: impl Future<Output = ApiResult<Outcome>>,
) -> ApiResult<Outcome> {
    if keyed && let Some(bytes) = app.rejections.get(&ctx.scope, &ctx.command_id).await.map_err(AppError::from)? {
        let remembered: RememberedRejection = serde_json::from_slice(&bytes)
            .map_err(|e| AppError::Internal(format!("a remembered rejection does not read: {e}")))?;
        let e = if remembered.fingerprint == ctx.fingerprint {
            AppError::Remembered(Box::new(remembered.problem))
        } else {
            AppError::IdempotencyKeyReused
        };
        app.metrics.count_command(command, e.status_and_code().1);
        return Err(e);
    }
    let result = work.await;
    match &result {
        Ok(outcome) => app.metrics.count_command(command, if outcome.repeated { "repeated" } else { "accepted" }),
        Err(e) => app.metrics.count_command(command, e.status_and_code().1),
    }
    if let (true, Err(e)) = (keyed, &result)
        && e.is_decided_rejection()
    {
        let remembered = RememberedRejection { fingerprint: ctx.fingerprint.clone(), problem: e.problem() };
        let bytes = serde_json::to_vec(&remembered).unwrap_or_default();
        // The answer stands even when it cannot be remembered; a repeat is
        // then decided again.
        if let Err(cause) = app.rejections.remember(&ctx.scope, &ctx.command_id, bytes.into()).await {
            tracing::warn!(command, %cause, "a rejection could not be remembered");
        }
    }
    result
}

/// What the rejection memory keeps of a rejected command.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct RememberedRejection {
    fingerprint: String,
    problem: Problem,
}

/// Counts a Stripe event's outcome and turns its error into the API's.
pub(crate) fn counted_stripe(
    app: &AppState,
    result: Result<commands::handler::StripeOutcome, CommandError>,
) -> ApiResult<commands::handler::StripeOutcome> {
    match result {
        Ok(outcome) => {
            app.metrics.count_command("stripe_event", if outcome.recorded { "accepted" } else { "repeated" });
            Ok(outcome)
        }
        Err(e) => {
            let e = AppError::from(e);
            app.metrics.count_command("stripe_event", e.status_and_code().1);
            Err(e)
        }
    }
}

/// The first event of the outcome that `pick` recognises: a command's answer
/// is built from its own events (also on a repeat), never from a read model.
pub(crate) fn find_event<'a, T>(
    events: &'a [Envelope],
    pick: impl Fn(&'a Event) -> Option<&'a T>,
) -> ApiResult<(&'a T, &'a Envelope)> {
    events
        .iter()
        .find_map(|e| pick(&e.event).map(|t| (t, e)))
        .ok_or_else(|| AppError::Internal("a command's outcome lacks the event its answer is built from".into()))
}

/// A repeat answers with the first answer's status and body, plus this
/// header saying it is a replay.
pub(crate) fn replayed(repeated: bool) -> AppendHeaders<Option<(header::HeaderName, HeaderValue)>> {
    AppendHeaders(
        repeated.then(|| (header::HeaderName::from_static("idempotency-replayed"), HeaderValue::from_static("true"))),
    )
}
