//! Stripe at the edge: the client that creates Checkout Sessions and
//! PaymentIntents (async-stripe, with `STRIPE_API_BASE` for a stand-in),
//! the webhook signature verifier, and the reading of webhook events by
//! the few fields the ledger needs.
//!
//! Responses and events are read by the fields we use, never into
//! async-stripe's full typed objects: any Stripe API version, and stand-ins
//! such as localstripe that send older shapes, then work. Secrets never
//! reach a log: the client's `Debug` prints none.

use std::collections::HashMap;
use std::time::Duration;

use domain::payment::{Buyer, DisputeSeen, Offered, PackageRef, PaymentCommand, Price};
use events_schema::stripe::{CHECKOUT_SESSION_COMPLETED, DISPUTE_EVENT_PREFIX, StripeEventBody, StripeObject};
use events_schema::{Money, PaymentFlag, StripeEventRecorded, is_plain_stripe_id};
use hmac::{Hmac, Mac};
use rust_decimal::Decimal;
use sha2::Sha256;
use stripe::StripeRequest;
use uuid::Uuid;

use crate::config::{CoinPackage, Config};

/// A signed webhook is accepted this long before or after its timestamp.
pub const SIGNATURE_TOLERANCE_S: i64 = 300;
/// The longest one call to Stripe may take before it is a provider error.
pub const STRIPE_CALL_TIMEOUT_MS: u64 = 10_000;
/// `v1` signatures read from one header at most (Stripe sends one per
/// active secret: a handful).
const SIGNATURES_MAX: usize = 16;

/// Why a webhook's signature was refused (answered `400`, nothing recorded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header has no timestamp or no v1 signature")]
    Malformed,
    #[error("the signature's timestamp is outside the tolerance")]
    Stale,
    #[error("no v1 signature matches the body")]
    Mismatch,
    #[error("no webhook secret is configured")]
    NoSecret,
}

/// Checks a `Stripe-Signature` header (`t=...,v1=...[,v1=...]`) against the
/// raw body: some `v1` must be the hex HMAC-SHA256, under one of `secrets`,
/// of `"{t}.{body}"`, and `t` within `SIGNATURE_TOLERANCE_S` of `now_s`
/// either way. Comparisons are constant-time.
pub fn verify_signature(header: &str, body: &[u8], secrets: &[String], now_s: i64) -> Result<(), SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let mut timestamp: Option<&str> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else { continue };
        match key {
            "t" if timestamp.is_none() => timestamp = Some(value),
            "v1" if signatures.len() < SIGNATURES_MAX => {
                // A v1 that is not hex cannot match; the others still may.
                if let Ok(bytes) = hex::decode(value) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed)?;
    let t_s: i64 = t.parse().map_err(|_| SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now_s.abs_diff(t_s) > SIGNATURE_TOLERANCE_S.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    for secret in secrets {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { continue };
        mac.update(t.as_bytes());
        mac.update(b".");
        mac.update(body);
        for signature in &signatures {
            if mac.clone().verify_slice(signature).is_ok() {
                return Ok(());
            }
        }
    }
    Err(SignatureError::Mismatch)
}

/// The `Stripe-Signature` header Stripe would send for `body` at `t_s`
/// under `secret` (tests and the benchmark sign with it; the end-to-end
/// tests also use Stripe's own Node signer).
pub fn sign(body: &[u8], secret: &str, t_s: i64) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(t_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t_s},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A verified event that cannot be read as a Stripe event (answered `400`,
/// nothing recorded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the event has no valid `{0}`")]
    Missing(&'static str),
}

/// A verified event, read: its record, and what it asks of which payment.
#[derive(Debug, Clone)]
pub struct ReadEvent {
    pub record: StripeEventRecorded,
    /// `(PaymentIntent id, command)`; `None` for an event the ledger does
    /// not use (it is only recorded).
    pub payment: Option<(String, PaymentCommand)>,
}

/// Reads a verified event by the fields the ledger needs (through
/// `events_schema::stripe`, the reader the read models use too).
pub fn read_event(body: &[u8], packages: &[CoinPackage]) -> Result<ReadEvent, EventError> {
    let text = std::str::from_utf8(body).map_err(|e| EventError::NotJson(e.to_string()))?;
    let event = StripeEventBody::parse(text).map_err(|e| EventError::NotJson(e.to_string()))?;
    let id = event.id().filter(|id| is_plain_stripe_id(id)).ok_or(EventError::Missing("id"))?;
    let kind = event.kind().filter(|t| !t.is_empty() && t.len() <= 255).ok_or(EventError::Missing("type"))?;
    let object = event.object();
    let record = StripeEventRecorded {
        stripe_event_id: id.to_string(),
        stripe_event_type: kind.to_string(),
        stripe_created: event.created_s().unwrap_or(0),
        body: text.to_string(),
    };
    let payment = match kind {
        "payment_intent.succeeded" => {
            let amount = object.integer("amount_received").filter(|a| *a > 0).or_else(|| object.integer("amount"));
            object.text("id").map(|pi| (pi.to_string(), confirm(id, object, None, amount, packages)))
        }
        CHECKOUT_SESSION_COMPLETED if object.text("payment_status") == Some("paid") => {
            let client_reference = object.text("client_reference_id");
            let amount = object.integer("amount_total");
            match object.id_of("payment_intent") {
                Some(pi) => Some((pi.to_string(), confirm(id, object, client_reference, amount, packages))),
                None => object.text("id").map(|session| {
                    let flag = PaymentCommand::Flag {
                        stripe_event_id: id.into(),
                        flag: PaymentFlag::NoPaymentIntent,
                        detail: session.to_string(),
                    };
                    (session.to_string(), flag)
                }),
            }
        }
        "charge.refunded" => object.id_of("payment_intent").map(|pi| {
            let command = PaymentCommand::RecordRefund {
                stripe_event_id: id.into(),
                charge_amount_cents: object.integer("amount").unwrap_or(0),
                amount_refunded_cents: object.integer("amount_refunded").unwrap_or(0),
            };
            (pi.to_string(), command)
        }),
        // A dispute of a charge without a PaymentIntent names no payment of
        // ours: recorded only.
        dispute if dispute.starts_with(DISPUTE_EVENT_PREFIX) => events_schema::stripe::dispute(&event).and_then(|d| {
            let command = PaymentCommand::RecordDispute {
                stripe_event_id: id.into(),
                dispute: DisputeSeen {
                    dispute_id: d.dispute_id,
                    amount_cents: d.amount_cents,
                    currency: d.currency,
                    status: d.status,
                    reason: d.reason,
                    fee_cents: d.fee_cents,
                    balance_transactions: d.balance_transactions,
                    funds_withdrawn: d.funds_withdrawn,
                    funds_reinstated: d.funds_reinstated,
                },
            };
            Some((d.payment_id?, command))
        }),
        _ => None,
    };
    // A payment id that is not a Stripe id is keyed by its hash; it still
    // needs a sane length.
    let payment = payment.filter(|(pi, _)| !pi.is_empty() && pi.len() <= 255);
    Ok(ReadEvent { record, payment })
}

/// A purchase confirmation: the buyer from `metadata.userId` (or the
/// session's `client_reference_id`), the package from `metadata.packageId`.
fn confirm(
    event_id: &str,
    object: StripeObject<'_>,
    client_reference: Option<&str>,
    amount_cents: Option<i64>,
    packages: &[CoinPackage],
) -> PaymentCommand {
    let metadata = object.nested("metadata");
    let named_user =
        metadata.and_then(|m| m.text("userId")).or(client_reference).map(str::to_string).unwrap_or_default();
    let buyer = match Uuid::parse_str(&named_user) {
        Ok(user) => Buyer::Known(user),
        Err(_) => Buyer::Unknown(named_user),
    };
    let package_id = metadata.and_then(|m| m.text("packageId")).map(str::to_string).unwrap_or_default();
    let package = packages.iter().find(|p| p.id == package_id);
    PaymentCommand::ConfirmPurchase {
        stripe_event_id: event_id.into(),
        buyer,
        package: PackageRef {
            id: package_id,
            coins: package.map(|p| p.coins),
            price: package.and_then(catalogue_price),
        },
        amount_cents: amount_cents.unwrap_or(0).max(0),
        currency: object.text("currency").unwrap_or("usd").to_ascii_lowercase(),
        offered: offered(metadata),
    }
}

/// The price this service offered, from the object's metadata
/// (`priceCents`: minor units as a string, as metadata values are;
/// `priceCurrency`).
fn offered(metadata: Option<StripeObject<'_>>) -> Offered {
    let cents = metadata.and_then(|m| m.text(PRICE_CENTS_KEY));
    let currency = metadata.and_then(|m| m.text(PRICE_CURRENCY_KEY));
    match (cents, currency) {
        (None, None) => Offered::NotStated,
        (Some(cents), Some(currency)) => match cents.parse::<i64>() {
            Ok(amount_cents) if amount_cents >= 0 && !currency.is_empty() => {
                Offered::Stated(Price { amount_cents, currency: currency.to_ascii_lowercase() })
            }
            _ => Offered::Unreadable(format!("{PRICE_CENTS_KEY} {cents:?}, {PRICE_CURRENCY_KEY} {currency:?}")),
        },
        (cents, currency) => {
            Offered::Unreadable(format!("{PRICE_CENTS_KEY} {cents:?}, {PRICE_CURRENCY_KEY} {currency:?}"))
        }
    }
}

/// The price the catalogue offers for `package`, as Stripe counts it.
pub fn catalogue_price(package: &CoinPackage) -> Option<Price> {
    Some(Price { amount_cents: minor_units(&package.price)?, currency: package.price.currency.to_ascii_lowercase() })
}

/// The metadata keys of the price offered (the contract's names).
pub const PRICE_CENTS_KEY: &str = "priceCents";
pub const PRICE_CURRENCY_KEY: &str = "priceCurrency";

/// Currencies without a minor unit at Stripe (amounts are whole units).
const ZERO_DECIMAL_CURRENCIES: &[&str] =
    &["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"];

/// A price in the currency's minor unit, as Stripe takes it; `None` when it
/// is not a whole number of them.
pub fn minor_units(price: &Money) -> Option<i64> {
    let scale = if ZERO_DECIMAL_CURRENCIES.contains(&price.currency.as_str()) { 1 } else { 100 };
    let units = price.amount.checked_mul(Decimal::from(scale))?;
    if units.fract() != Decimal::ZERO || units.is_sign_negative() {
        return None;
    }
    i64::try_from(units).ok()
}

/// Why a call to Stripe failed (answered `502 payment_provider_error`).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("Stripe is not configured (STRIPE_SECRET_KEY)")]
    NotConfigured,
    #[error("the package's price is not a whole number of the currency's minor unit")]
    BadPrice,
    #[error("Stripe refused or failed the call: {0}")]
    Provider(String),
}

/// A Checkout Session, as the client needs it.
#[derive(Debug, Clone, miniserde::Deserialize)]
pub struct CreatedSession {
    pub id: String,
    pub url: Option<String>,
}

/// A PaymentIntent, as the mobile payment sheet needs it.
#[derive(Debug, Clone, miniserde::Deserialize)]
pub struct CreatedIntent {
    pub id: String,
    pub client_secret: Option<String>,
}

/// The Stripe API client of the coin shop.
#[derive(Clone)]
pub struct Gateway {
    client: Option<stripe::Client>,
    success_url: String,
    cancel_url: String,
}

impl std::fmt::Debug for Gateway {
    // The client holds the secret key: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("configured", &self.client.is_some()).finish_non_exhaustive()
    }
}

impl Gateway {
    /// The client of `STRIPE_SECRET_KEY` at `STRIPE_API_BASE` (Stripe's own
    /// by default); unconfigured without a key.
    pub fn new(config: &Config) -> Result<Gateway, GatewayError> {
        let client = match &config.stripe_secret_key {
            None => None,
            Some(key) => {
                let mut builder =
                    stripe::ClientBuilder::new(key.clone()).timeout(Duration::from_millis(STRIPE_CALL_TIMEOUT_MS));
                if let Some(base) = &config.stripe_api_base {
                    // async-stripe appends `v1/...` to the base.
                    let base = base.trim_end_matches('/').trim_end_matches("/v1");
                    builder = builder.url(format!("{base}/"));
                }
                Some(builder.build().map_err(|e| GatewayError::Provider(e.to_string()))?)
            }
        };
        Ok(Gateway {
            client,
            success_url: config.stripe_success_url.clone(),
            cancel_url: config.stripe_cancel_url.clone(),
        })
    }

    fn client(&self) -> Result<&stripe::Client, GatewayError> {
        self.client.as_ref().ok_or(GatewayError::NotConfigured)
    }

    /// A PaymentIntent for `package`, with the buyer and package in its
    /// metadata. With the client's `Idempotency-Key`, Stripe answers a
    /// repeat with the same PaymentIntent (see `stripe_strategy`).
    pub async fn create_payment_intent(
        &self,
        user_id: Uuid,
        package: &CoinPackage,
        idempotency_key: Option<&str>,
    ) -> Result<CreatedIntent, GatewayError> {
        let client = self.client()?;
        let amount = minor_units(&package.price).ok_or(GatewayError::BadPrice)?;
        let currency = currency(&package.price.currency)?;
        // Only what localstripe also takes: it refuses unknown parameters.
        let request = stripe_core::payment_intent::CreatePaymentIntent::new(amount, currency)
            .metadata(metadata(user_id, package)?);
        // Our own response type: only the fields we use (see the module).
        let strategy = stripe_strategy(user_id, "payment-intent", package, idempotency_key)?;
        request.build().customize::<CreatedIntent>().request_strategy(strategy).send(client).await.map_err(provider)
    }

    /// A hosted Checkout Session for `package`: the buyer and package in
    /// the session's and its PaymentIntent's metadata, the buyer as
    /// `client_reference_id`.
    pub async fn create_checkout_session(
        &self,
        user_id: Uuid,
        package: &CoinPackage,
        idempotency_key: Option<&str>,
    ) -> Result<CreatedSession, GatewayError> {
        use stripe_checkout::checkout_session::{
            CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData,
            CreateCheckoutSessionPaymentIntentData, ProductData,
        };
        let client = self.client()?;
        let amount = minor_units(&package.price).ok_or(GatewayError::BadPrice)?;
        let mut price = CreateCheckoutSessionLineItemsPriceData::new(currency(&package.price.currency)?);
        price.unit_amount = Some(amount);
        price.product_data = Some(ProductData::new(format!("{} HaloBuzz coins", package.coins)));
        let mut item = CreateCheckoutSessionLineItems::new();
        item.price_data = Some(price);
        item.quantity = Some(1);
        let mut intent_data = CreateCheckoutSessionPaymentIntentData::new();
        intent_data.metadata = Some(metadata(user_id, package)?);
        let request = CreateCheckoutSession::new()
            .mode(stripe_checkout::CheckoutSessionMode::Payment)
            .line_items(vec![item])
            .client_reference_id(user_id.to_string())
            .metadata(metadata(user_id, package)?)
            .payment_intent_data(intent_data)
            .success_url(self.success_url.clone())
            .cancel_url(self.cancel_url.clone());
        let strategy = stripe_strategy(user_id, "checkout", package, idempotency_key)?;
        request.build().customize::<CreatedSession>().request_strategy(strategy).send(client).await.map_err(provider)
    }

    /// A PaymentIntent this shop created, read again (a repeated purchase
    /// answers with it: its client secret is never stored here).
    pub async fn retrieve_payment_intent(&self, id: &str) -> Result<CreatedIntent, GatewayError> {
        let client = self.client()?;
        let request = stripe_core::payment_intent::RetrievePaymentIntent::new(id.to_string());
        request.build().customize::<CreatedIntent>().send(client).await.map_err(provider)
    }

    /// A Checkout Session this shop created, read again (its `url` is the
    /// buyer's link to pay, so it is never stored here either).
    pub async fn retrieve_checkout_session(&self, id: &str) -> Result<CreatedSession, GatewayError> {
        let client = self.client()?;
        let request = stripe_checkout::checkout_session::RetrieveCheckoutSession::new(id.to_string());
        request.build().customize::<CreatedSession>().send(client).await.map_err(provider)
    }
}

/// How a call to Stripe is made: once without a client key; with one,
/// under Stripe's own `Idempotency-Key`, derived from the buyer, the route,
/// the package and the client's key (a SHA-256, so that any client key fits
/// Stripe's 255 characters and no two buyers' keys meet).
fn stripe_strategy(
    user_id: Uuid,
    route: &str,
    package: &CoinPackage,
    client_key: Option<&str>,
) -> Result<stripe::RequestStrategy, GatewayError> {
    let Some(client_key) = client_key else { return Ok(stripe::RequestStrategy::Once) };
    use sha2::Digest;
    let mut hasher = Sha256::new();
    for part in [user_id.to_string().as_str(), route, package.id.as_str(), client_key] {
        hasher.update(part.as_bytes());
        hasher.update(b"\n");
    }
    let key = stripe::IdempotencyKey::new(format!("halobuzz-{:x}", hasher.finalize()))
        .map_err(|e| GatewayError::Provider(e.to_string()))?;
    Ok(stripe::RequestStrategy::Idempotent(key))
}

/// The buyer, the package and the price offered: what a confirmation is
/// checked against (`read_event`).
fn metadata(user_id: Uuid, package: &CoinPackage) -> Result<HashMap<String, String>, GatewayError> {
    let price = catalogue_price(package).ok_or(GatewayError::BadPrice)?;
    Ok(HashMap::from([
        ("userId".to_string(), user_id.to_string()),
        ("packageId".to_string(), package.id.clone()),
        (PRICE_CENTS_KEY.to_string(), price.amount_cents.to_string()),
        (PRICE_CURRENCY_KEY.to_string(), price.currency),
    ]))
}

fn currency(code: &str) -> Result<stripe_types::Currency, GatewayError> {
    code.parse().map_err(|_| GatewayError::Provider(format!("currency {code} is not one Stripe knows")))
}

fn provider(error: stripe::StripeError) -> GatewayError {
    GatewayError::Provider(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";

    #[test]
    fn a_signature_of_the_body_under_the_secret_verifies() {
        let header = sign(b"{}", SECRET, 1_000);
        assert_eq!(verify_signature(&header, b"{}", &[SECRET.into()], 1_000), Ok(()));
    }

    #[test]
    fn a_tampered_body_or_a_wrong_secret_does_not_verify() {
        let header = sign(b"{\"a\":1}", SECRET, 1_000);
        assert_eq!(verify_signature(&header, b"{\"a\":2}", &[SECRET.into()], 1_000), Err(SignatureError::Mismatch));
        assert_eq!(
            verify_signature(&header, b"{\"a\":1}", &["whsec_other".into()], 1_000),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_tolerance_is_300_seconds_either_way() {
        let header = sign(b"{}", SECRET, 1_000);
        let secrets = [SECRET.to_string()];
        assert_eq!(verify_signature(&header, b"{}", &secrets, 1_300), Ok(()));
        assert_eq!(verify_signature(&header, b"{}", &secrets, 700), Ok(()));
        assert_eq!(verify_signature(&header, b"{}", &secrets, 1_301), Err(SignatureError::Stale));
        assert_eq!(verify_signature(&header, b"{}", &secrets, 699), Err(SignatureError::Stale));
    }

    #[test]
    fn any_v1_may_match_and_any_secret_may_sign() {
        let good = sign(b"{}", SECRET, 1_000);
        let good_v1 = good.split_once("v1=").map(|(_, v)| v).unwrap_or_default();
        let header = format!("t=1000,v1={},v1={good_v1},v0=abc", "00".repeat(32));
        assert_eq!(verify_signature(&header, b"{}", &["whsec_old".into(), SECRET.into()], 1_000), Ok(()));
        let not_hex = format!("t=1000,v1=zz,v1={good_v1}");
        assert_eq!(verify_signature(&not_hex, b"{}", &[SECRET.into()], 1_000), Ok(()));
    }

    #[test]
    fn a_header_without_timestamp_or_signature_is_malformed() {
        let secrets = [SECRET.to_string()];
        assert_eq!(verify_signature("", b"{}", &secrets, 0), Err(SignatureError::Malformed));
        assert_eq!(verify_signature("t=5", b"{}", &secrets, 5), Err(SignatureError::Malformed));
        assert_eq!(verify_signature("v1=00", b"{}", &secrets, 5), Err(SignatureError::Malformed));
        assert_eq!(verify_signature("t=x,v1=00", b"{}", &secrets, 5), Err(SignatureError::Malformed));
        assert_eq!(verify_signature("t=5,v1=00", b"{}", &[], 5), Err(SignatureError::NoSecret));
    }

    #[test]
    fn a_known_vector_verifies() {
        // HMAC-SHA256 computed independently (Python's hmac module).
        let header = "t=1700000000,v1=248a374f50f943a28b0f6ab50faf9a7e7e29b710fa26df9fb1618b9bf8ea9c9a";
        let body = br#"{"id":"evt_1"}"#;
        assert_eq!(verify_signature(header, body, &[SECRET.into()], 1_700_000_000), Ok(()));
        assert_eq!(sign(body, SECRET, 1_700_000_000), header);
    }

    fn packages() -> Vec<CoinPackage> {
        vec![CoinPackage {
            id: "coins_500".into(),
            coins: 500,
            price: Money { amount: Decimal::new(499, 2), currency: "usd".into() },
        }]
    }

    #[test]
    fn a_payment_intent_event_of_an_old_api_version_is_read_by_its_fields() {
        let user = Uuid::from_u128(7);
        let body = format!(
            r#"{{"id":"evt_1","type":"payment_intent.succeeded","created":5,"api_version":"2017-08-15",
               "data":{{"object":{{"id":"pi_1","object":"payment_intent","amount":499,"currency":"usd",
               "metadata":{{"userId":"{user}","packageId":"coins_500"}},"charges":{{"data":[]}}}}}}}}"#
        );
        let read = read_event(body.as_bytes(), &packages()).expect("readable");
        assert_eq!(read.record.stripe_event_id, "evt_1");
        let Some((pi, PaymentCommand::ConfirmPurchase { buyer, package, amount_cents, .. })) = read.payment else {
            panic!("a purchase: {:?}", read.payment)
        };
        assert_eq!((pi.as_str(), buyer, package.coins, amount_cents), ("pi_1", Buyer::Known(user), Some(500), 499));
    }

    #[test]
    fn the_price_offered_is_read_from_the_metadata() {
        let read = |stated: &str| {
            let body = format!(
                r#"{{"id":"evt_1","type":"payment_intent.succeeded","created":5,"data":{{"object":{{"id":"pi_1",
                   "amount":499,"amount_received":499,"currency":"USD","metadata":{stated}}}}}}}"#
            );
            let read = read_event(body.as_bytes(), &packages()).expect("readable");
            let Some((_, PaymentCommand::ConfirmPurchase { offered, package, currency, .. })) = read.payment else {
                panic!("a purchase: {:?}", read.payment)
            };
            assert_eq!(package.price, Some(Price { amount_cents: 499, currency: "usd".into() }));
            assert_eq!(currency, "usd", "lower case");
            offered
        };
        assert_eq!(read(r#"{"packageId":"coins_500"}"#), Offered::NotStated);
        assert_eq!(
            read(r#"{"packageId":"coins_500","priceCents":"499","priceCurrency":"USD"}"#),
            Offered::Stated(Price { amount_cents: 499, currency: "usd".into() })
        );
        for bad in [
            r#"{"packageId":"coins_500","priceCents":"4.99","priceCurrency":"usd"}"#,
            r#"{"packageId":"coins_500","priceCents":"-1","priceCurrency":"usd"}"#,
            r#"{"packageId":"coins_500","priceCents":"499"}"#,
            r#"{"packageId":"coins_500","priceCurrency":"usd"}"#,
            r#"{"packageId":"coins_500","priceCents":499,"priceCurrency":"usd"}"#,
        ] {
            assert!(matches!(read(bad), Offered::Unreadable(_)), "{bad}");
        }
    }

    #[test]
    fn what_this_service_creates_states_the_price_it_offers() {
        let stated = metadata(Uuid::from_u128(7), &packages()[0]).expect("a price Stripe takes");
        assert_eq!(stated.get("priceCents").map(String::as_str), Some("499"));
        assert_eq!(stated.get("priceCurrency").map(String::as_str), Some("usd"));
        assert_eq!(stated.get("packageId").map(String::as_str), Some("coins_500"));
        let odd = CoinPackage {
            id: "odd".into(),
            coins: 1,
            price: Money { amount: Decimal::new(4999, 3), currency: "usd".into() },
        };
        assert!(matches!(metadata(Uuid::from_u128(7), &odd), Err(GatewayError::BadPrice)));
    }

    #[test]
    fn a_session_paid_names_its_payment_intent_expanded_or_not() {
        let body = r#"{"id":"evt_2","type":"checkout.session.completed","created":5,"data":{"object":{
            "id":"cs_1","payment_status":"paid","payment_intent":{"id":"pi_9"},"client_reference_id":"x",
            "amount_total":499,"currency":"usd","metadata":{"packageId":"coins_500"}}}}"#;
        let read = read_event(body.as_bytes(), &packages()).expect("readable");
        let Some((pi, PaymentCommand::ConfirmPurchase { buyer, .. })) = read.payment else { panic!("a purchase") };
        assert_eq!((pi.as_str(), buyer), ("pi_9", Buyer::Unknown("x".into())));
        let by_id = body.replace(r#"{"id":"pi_9"}"#, r#""pi_9""#);
        let read_by_id = read_event(by_id.as_bytes(), &packages()).expect("readable");
        assert!(matches!(read_by_id.payment, Some((pi, PaymentCommand::ConfirmPurchase { .. })) if pi == "pi_9"));
        let unpaid = body.replace("\"paid\"", "\"unpaid\"");
        assert!(read_event(unpaid.as_bytes(), &packages()).expect("readable").payment.is_none());
    }

    #[test]
    fn a_refund_names_its_payment_intent_expanded_or_not() {
        for payment_intent in [r#""pi_5""#, r#"{"id":"pi_5","object":"payment_intent"}"#] {
            let body = format!(
                r#"{{"id":"evt_3","type":"charge.refunded","created":5,"data":{{"object":{{"id":"ch_1",
                   "payment_intent":{payment_intent},"amount":499,"amount_refunded":200}}}}}}"#
            );
            let read = read_event(body.as_bytes(), &packages()).expect("readable");
            let Some((pi, PaymentCommand::RecordRefund { charge_amount_cents, amount_refunded_cents, .. })) =
                read.payment
            else {
                panic!("a refund: {:?}", read.payment)
            };
            assert_eq!((pi.as_str(), charge_amount_cents, amount_refunded_cents), ("pi_5", 499, 200));
        }
    }

    #[test]
    fn an_unreadable_event_is_refused() {
        assert!(matches!(read_event(b"{", &packages()), Err(EventError::NotJson(_))));
        assert_eq!(read_event(br#"{"type":"x"}"#, &packages()).err(), Some(EventError::Missing("id")));
        assert_eq!(read_event(br#"{"id":"evt.1","type":"x"}"#, &packages()).err(), Some(EventError::Missing("id")));
        assert_eq!(read_event(br#"{"id":"evt_1"}"#, &packages()).err(), Some(EventError::Missing("type")));
    }

    #[test]
    fn prices_become_minor_units_exactly() {
        let money = |a: i64, s: u32, c: &str| Money { amount: Decimal::new(a, s), currency: c.into() };
        assert_eq!(minor_units(&money(499, 2, "usd")), Some(499));
        assert_eq!(minor_units(&money(500, 0, "jpy")), Some(500));
        assert_eq!(minor_units(&money(4999, 3, "usd")), None);
    }
}
