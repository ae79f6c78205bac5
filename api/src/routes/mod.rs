//! The router: every route of the contract, the cross-cutting layers, and
//! the helpers the handlers share.
//!
//! Layers, outermost first (inside `server`'s per-kind in-flight pools and
//! timeouts): request metrics; CORS; the body size limit; the per-IP rate limit (API routes only, not
//! health, metrics or docs; behind trusted proxies, see `client_ip`); on
//! command routes, the maintenance switch.

pub mod account;
pub mod admin;
pub mod auth;
pub mod coins;
pub mod console;
pub mod doc;
pub mod ledger;
pub mod ops;
pub mod payments;
pub mod payouts;
pub mod sessions;
pub mod streams;

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{AppendHeaders, IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use commands::handler::{CommandContext, CommandError, Outcome};
use events_schema::{Envelope, Event};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::error::{ApiResult, AppError, Problem};
use crate::state::AppState;

/// The largest Stripe event accepted (Stripe's own are far smaller).
pub const STRIPE_EVENT_BYTES_MAX: usize = 512 * 1024;

/// The whole HTTP API of this process, and the console (`/console`).
/// `HALOBUZZ_ROLE=workers` serves only health, metrics and the docs.
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
        api_routes(&state)
            .layer(middleware::from_fn_with_state(state.clone(), ip_rate_limit))
            .merge(ops)
            .merge(webhook)
            .merge(console::routes())
    } else {
        ops
    };
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.body_bytes_max))
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
        // Both append to the session's log: paused in maintenance.
        .route("/api/v1/auth/refresh", command(post(auth::refresh)))
        .route("/api/v1/auth/logout", command(post(sessions::logout)))
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
        .route("/api/v1/admin/payments/{paymentId}/resolve", command(post(payments::resolve)))
        .route("/api/v1/admin/adjustments", command(post(admin::adjust)).merge(get(admin::list_adjustments)))
        .route("/api/v1/admin/adjustments/{id}/approve", command(post(admin::approve_adjustment)))
        .route("/api/v1/admin/adjustments/{id}/reject", command(post(admin::reject_adjustment)))
        .route("/api/v1/admin/users/{id}/roles", command(post(admin::change_roles)))
        .route("/api/v1/admin/users/{id}/sessions/revoke", command(post(sessions::revoke_sessions)))
        .route("/api/v1/ledger/accounts/{account}/entries", get(ledger::entries))
        .route("/api/v1/ledger/accounts/{account}/balance", get(ledger::balance))
        .route("/api/v1/ledger/accounts/{account}/statement", get(ledger::statement))
        .route("/api/v1/ledger/trial-balance", get(ledger::trial_balance))
        .route("/api/v1/ledger/daily", get(ledger::daily))
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
/// that ids do not explode the label space), and counts those in flight.
async fn track_request(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let _in_flight = app.metrics.request_in_flight();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let response = next.run(request).await;
    let route = route.as_deref().unwrap_or("unmatched");
    app.metrics.observe_request(method.as_str(), route, response.status().as_u16(), started.elapsed());
    response
}

/// The per-IP limit, keyed by `client_ip`.
async fn ip_rate_limit(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(limiter) = &app.limiter
        && let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>()
        && let client = client_ip(peer.ip(), request.headers(), app.config.trust_proxy_hops)
        && let Err(refused) = limiter.check(&crate::ratelimit::ip_key(client))
    {
        app.metrics.rate_limited.inc();
        return AppError::RateLimited { retry_after_s: refused.retry_after.as_secs().max(1) }.into_response();
    }
    next.run(request).await
}

/// The client's address, for the per-IP limit.
///
/// With `trust_proxy_hops` 0 (the default) it is the peer: the service
/// faces the clients itself, and `X-Forwarded-For` is whatever a client
/// wrote. Behind that many trusted proxies, each appending the address it
/// saw (Nginx's `$proxy_add_x_forwarded_for`), it is the entry that many
/// places from the right of `X-Forwarded-For` (all its lines, in order):
/// the address the outermost trusted proxy saw. Entries further left were
/// written by the client and are never believed. A header with fewer
/// entries gives its leftmost; an entry that is not an address stops the
/// walk at the last one that was (the peer when none was).
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trust_proxy_hops: u32) -> IpAddr {
    if trust_proxy_hops == 0 {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev().take(usize::try_from(trust_proxy_hops).unwrap_or(usize::MAX)) {
        match forwarded_address(entry) {
            Some(address) => client = address,
            None => break,
        }
    }
    client
}

/// An `X-Forwarded-For` entry's address: `1.2.3.4`, `2001:db8::1`, or with
/// a port (`1.2.3.4:80`, `[2001:db8::1]:80`).
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    entry.parse::<IpAddr>().ok().or_else(|| entry.parse::<SocketAddr>().ok().map(|address| address.ip()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append("x-forwarded-for", HeaderValue::from_str(line).expect("a header value"));
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    const PEER: &str = "10.0.0.9";

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says() {
        assert_eq!(client_ip(ip(PEER), &forwarded(&["203.0.113.7"]), 0), ip(PEER));
    }

    #[test]
    fn behind_trusted_proxies_the_entry_that_many_from_the_right_is_the_client() {
        // The client wrote 198.51.100.1; Nginx appended what it saw.
        let headers = forwarded(&["198.51.100.1, 203.0.113.7"]);
        assert_eq!(client_ip(ip(PEER), &headers, 1), ip("203.0.113.7"));
        // Two proxies: the outer one saw the client, the inner one the outer.
        let two = forwarded(&["198.51.100.1, 203.0.113.7", "172.16.0.2"]);
        assert_eq!(client_ip(ip(PEER), &two, 2), ip("203.0.113.7"));
        assert_eq!(client_ip(ip(PEER), &two, 1), ip("172.16.0.2"));
    }

    #[test]
    fn a_short_or_broken_header_stops_at_its_last_address() {
        // Fewer entries than hops: the leftmost.
        assert_eq!(client_ip(ip(PEER), &forwarded(&["203.0.113.7"]), 3), ip("203.0.113.7"));
        // No header: the peer.
        assert_eq!(client_ip(ip(PEER), &HeaderMap::new(), 1), ip(PEER));
        // Not an address: the walk stops at the last good one.
        assert_eq!(client_ip(ip(PEER), &forwarded(&["198.51.100.1, unknown"]), 2), ip(PEER));
        assert_eq!(client_ip(ip(PEER), &forwarded(&["unknown, 203.0.113.7"]), 2), ip("203.0.113.7"));
        // Ports and IPv6.
        assert_eq!(client_ip(ip(PEER), &forwarded(&["[2001:db8::1]:443"]), 1), ip("2001:db8::1"));
        assert_eq!(client_ip(ip(PEER), &forwarded(&["203.0.113.7:5555"]), 1), ip("203.0.113.7"));
        assert_eq!(client_ip(ip(PEER), &forwarded(&["2001:db8::2"]), 1), ip("2001:db8::2"));
    }
}
