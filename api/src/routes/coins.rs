//! Buying coins: a Stripe Checkout Session or a PaymentIntent for a coin
//! package, and the Stripe webhook that credits (and reverses) the coins.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::config::CoinPackage;
use crate::error::{ApiResult, AppError, Problem};
use crate::extract::{ApiJson, AuthUser, CommandMeta};
use crate::routes::doc::{
    BodyRefusals, CommandRefusals, IdempotencyKey, NotAPackage, ProviderFailed, PurchasesPaused, Unauthorized,
};
use crate::routes::replayed;
use crate::state::{AppState, fingerprint};
use crate::stripe::{SignatureError, read_event, verify_signature};
use crate::views::{CheckoutCreated, CoinPurchaseBody, PaymentIntentCreated, WebhookAck};

fn package<'a>(app: &'a AppState, package_id: &str) -> ApiResult<&'a CoinPackage> {
    app.config
        .coin_packages
        .iter()
        .find(|p| p.id == package_id)
        .ok_or_else(|| AppError::validation("packageId", "is not a coin package on sale"))
}

/// A Stripe Checkout Session for a coin package; the buyer and the package
/// are in its metadata (and its PaymentIntent's), the buyer is its
/// `client_reference_id`. The coins arrive with the webhook.
#[utoipa::path(
    post, path = "/api/v1/coins/checkout", tag = "coins",
    request_body = CoinPurchaseBody,
    params(IdempotencyKey),
    security(("bearerAuth" = [])),
    responses(
        (status = 201, body = CheckoutCreated),
        BodyRefusals, CommandRefusals, Unauthorized, NotAPackage, ProviderFailed, PurchasesPaused,
    )
)]
pub async fn checkout(
    State(app): State<AppState>,
    caller: AuthUser,
    meta: CommandMeta,
    ApiJson(body): ApiJson<CoinPurchaseBody>,
) -> ApiResult<Response> {
    let package = package(&app, &body.package_id)?;
    let create = async {
        let session = app.stripe.create_checkout_session(caller.id, package, meta.idempotency_key.as_deref()).await?;
        tracing::info!(user_id = %caller.id, package_id = %package.id, session_id = %session.id, "checkout session created");
        Ok(session)
    };
    let (session, repeated) = match remembered_purchase(&app, &caller, &meta, &body, create, |s| &s.id).await? {
        Purchase::Made(session) => (session, false),
        Purchase::Repeated(id) => (app.stripe.retrieve_checkout_session(&id).await?, true),
    };
    let created = CheckoutCreated { checkout_session_id: session.id, url: session.url };
    Ok((StatusCode::CREATED, replayed(repeated), Json(created)).into_response())
}

/// What the memory keeps of a purchase made under an `Idempotency-Key`:
/// the request's fingerprint and the Stripe object's id, never the
/// object's client secret or payment link (those are read again).
#[derive(Debug, Serialize, Deserialize)]
struct RememberedPurchase {
    fingerprint: String,
    object_id: String,
}

/// A purchase's Stripe object: made by this request, or the id of the one
/// an earlier request with the same key made (read it again from Stripe).
enum Purchase<T> {
    Made(T),
    Repeated(String),
}

/// Makes a purchase's Stripe object (`create` calls Stripe, `id_of` reads
/// the object's id) under the idempotency contract. A purchase appends
/// nothing (the webhook does), so the log cannot remember it: with an
/// `Idempotency-Key`, the object's id is kept in the rejection memory
/// (scope `user:<id>:purchases`, as long as a rejection). A repeat gets
/// that id (`Purchase::Repeated`: the caller reads the object again and
/// answers with `idempotency-replayed: true`); the key with another
/// package or on the other purchase route is `409 idempotency_key_reused`.
/// Two first tries at once both reach `create`, where Stripe's own
/// idempotency key (`stripe_strategy`) gives both the same object.
async fn remembered_purchase<T>(
    app: &AppState,
    caller: &AuthUser,
    meta: &CommandMeta,
    body: &CoinPurchaseBody,
    create: impl Future<Output = ApiResult<T>>,
    id_of: impl Fn(&T) -> &String,
) -> ApiResult<Purchase<T>> {
    let Some(key) = meta.idempotency_key.as_deref() else {
        return Ok(Purchase::Made(create.await?));
    };
    let scope = format!("user:{}:purchases", caller.id);
    let print = fingerprint(&meta.request_line, body);
    if let Some(bytes) = app.rejections.get(&scope, key).await.map_err(AppError::from)? {
        let remembered: RememberedPurchase = serde_json::from_slice(&bytes)
            .map_err(|e| AppError::Internal(format!("a remembered purchase does not read: {e}")))?;
        if remembered.fingerprint != print {
            return Err(AppError::IdempotencyKeyReused);
        }
        return Ok(Purchase::Repeated(remembered.object_id));
    }
    let object = create.await?;
    let remembered = serde_json::to_vec(&RememberedPurchase { fingerprint: print, object_id: id_of(&object).clone() })
        .map_err(|e| AppError::Internal(format!("a purchase does not serialise: {e}")))?;
    // The purchase stands even when it cannot be remembered; a repeat then
    // reaches `create` again, under the same Stripe idempotency key.
    if let Err(cause) = app.rejections.remember(&scope, key, remembered.into()).await {
        tracing::warn!(%cause, "a purchase could not be remembered");
    }
    Ok(Purchase::Made(object))
}

/// A Stripe PaymentIntent for a coin package, for the mobile payment sheet;
/// the buyer and the package are in its metadata. The coins arrive with the
/// webhook.
#[utoipa::path(
    post, path = "/api/v1/coins/payment-intent", tag = "coins",
    request_body = CoinPurchaseBody,
    params(IdempotencyKey),
    security(("bearerAuth" = [])),
    responses(
        (status = 201, body = PaymentIntentCreated),
        BodyRefusals, CommandRefusals, Unauthorized, NotAPackage, ProviderFailed, PurchasesPaused,
    )
)]
pub async fn payment_intent(
    State(app): State<AppState>,
    caller: AuthUser,
    meta: CommandMeta,
    ApiJson(body): ApiJson<CoinPurchaseBody>,
) -> ApiResult<Response> {
    let package = package(&app, &body.package_id)?;
    let create = async {
        let intent = app.stripe.create_payment_intent(caller.id, package, meta.idempotency_key.as_deref()).await?;
        tracing::info!(user_id = %caller.id, package_id = %package.id, payment_id = %intent.id, "payment intent created");
        Ok(intent)
    };
    let (intent, repeated) = match remembered_purchase(&app, &caller, &meta, &body, create, |i| &i.id).await? {
        Purchase::Made(intent) => (intent, false),
        Purchase::Repeated(id) => (app.stripe.retrieve_payment_intent(&id).await?, true),
    };
    let created = PaymentIntentCreated { payment_intent_id: intent.id, client_secret: intent.client_secret };
    Ok((StatusCode::CREATED, replayed(repeated), Json(created)).into_response())
}

/// Stripe's webhook. The signature is verified over the raw body first
/// (any `v1`, any of the `STRIPE_WEBHOOK_SECRET` secrets, 300 s either
/// way): a bad one is `400 invalid_signature` and nothing is recorded.
/// Every verified event is recorded once; a purchase is credited once per
/// PaymentIntent; `charge.refunded` reverses coins from its running
/// `amount_refunded`; a repeat answers `200` and changes nothing.
#[utoipa::path(
    post, path = "/api/v1/webhooks/stripe", tag = "coins",
    request_body(content = String, description = "A Stripe event, exactly as Stripe sent it", content_type = "application/json"),
    params(("Stripe-Signature" = String, Header, description = "`t=<unix s>,v1=<hex HMAC-SHA256 of \"{t}.{body}\">[,v1=...]`")),
    responses(
        (status = 200, body = WebhookAck),
        BodyRefusals,
        (status = 400, description = "`invalid_signature`, `malformed_json` (nothing recorded)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`contention`: Stripe retries later", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`, `maintenance`: Stripe retries later", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn stripe_webhook(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<WebhookAck>> {
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or(AppError::InvalidSignature(SignatureError::Missing))?;
    let now_s = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let now_s = i64::try_from(now_s).unwrap_or(i64::MAX);
    verify_signature(header, &body, &app.config.stripe_webhook_secrets, now_s)?;
    let event = read_event(&body, &app.config.coin_packages)?;
    let event_id = event.record.stripe_event_id.clone();
    let event_type = event.record.stripe_event_type.clone();
    let result = app.commands.stripe_event(event.record, event.payment).await;
    let outcome = crate::routes::counted_stripe(&app, result)?;
    tracing::info!(
        stripe_event_id = %event_id,
        stripe_event_type = %event_type,
        duplicate = !outcome.recorded,
        position = outcome.position,
        "stripe event"
    );
    Ok(Json(WebhookAck { received: true, duplicate: !outcome.recorded, position: outcome.position }))
}
