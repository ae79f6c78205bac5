//! The amount paid is checked end to end: a confirmation is credited only
//! when what Stripe says was paid equals the price this service offered
//! (stated in the metadata as `priceCents` / `priceCurrency`, or, for an
//! object without them, the package's current price), and that price is
//! the catalogue's. Anything else is recorded and flagged
//! `amount_mismatch`, never credited.

use halobuzz_tests::http::TestApp;
use serde_json::json;

use crate::stripe::{SECRET, accepted, assert_books, now_s, payment, reconciliation};

/// A Checkout Session of a Payment Link made in Stripe's dashboard: the
/// link's metadata names the package, but nothing states the price, and
/// the buyer paid `paid_cents`.
fn payment_link_session(event: &str, session: &str, intent: &str, user: &str, paid_cents: i64) -> String {
    json!({
        "id": event, "object": "event", "api_version": "2025-06-30.basil", "created": now_s(),
        "livemode": false, "pending_webhooks": 1, "type": "checkout.session.completed",
        "request": {"id": null, "idempotency_key": null},
        "data": {"object": {
            "id": session, "object": "checkout.session", "mode": "payment", "status": "complete",
            "payment_status": "paid", "payment_intent": intent, "payment_link": "plink_1Q2w3E4r5T6y",
            "client_reference_id": user, "amount_subtotal": paid_cents, "amount_total": paid_cents,
            "currency": "usd", "metadata": {"packageId": "coins_500"},
        }},
    })
    .to_string()
}

/// A `payment_intent.succeeded` stating the price offered.
fn intent_with_price(event: &str, intent: &str, user: &str, paid_cents: i64, stated_cents: &str) -> String {
    json!({
        "id": event, "object": "event", "api_version": "2025-06-30.basil", "created": now_s(),
        "livemode": false, "pending_webhooks": 1, "type": "payment_intent.succeeded",
        "data": {"object": {
            "id": intent, "object": "payment_intent", "amount": paid_cents, "amount_received": paid_cents,
            "currency": "usd", "status": "succeeded",
            "metadata": {"userId": user, "packageId": "coins_500", "priceCents": stated_cents, "priceCurrency": "usd"},
        }},
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stripe_an_underpaid_payment_link_is_flagged_amount_mismatch_and_never_credited() {
    let app = TestApp::start_with(&[("STRIPE_WEBHOOK_SECRET", SECRET)]).await;
    let admin = app.admin().await;
    let dana = app.register("dana").await;
    let d = dana.id.to_string();

    // A Payment Link for 1.00 usd that names the 4.99 package: recorded,
    // flagged, not credited; its repeat changes nothing.
    let underpaid = payment_link_session("evt_link", "cs_link", "pi_link", &d, 100);
    let (p, repeat) = accepted(&app, &underpaid).await;
    assert!(!repeat);
    assert_books(&app, &admin, &dana, 0, p).await;
    let (p, repeat) = accepted(&app, &underpaid).await;
    assert!(repeat);
    assert_books(&app, &admin, &dana, 0, p).await;

    // An intent stating a price the catalogue does not offer, paid in full:
    // not credited either.
    let forged = intent_with_price("evt_forged", "pi_forged", &d, 100, "100");
    let (p, _) = accepted(&app, &forged).await;
    assert_books(&app, &admin, &dana, 0, p).await;

    // The price stated, the catalogue's, paid: credited; so is an object
    // without a stated price that paid the current one.
    let (p, _) = accepted(&app, &intent_with_price("evt_good", "pi_good", &d, 499, "499")).await;
    assert_books(&app, &admin, &dana, 500, p).await;
    let (p, _) = accepted(&app, &payment_link_session("evt_link_ok", "cs_link_ok", "pi_link_ok", &d, 499)).await;
    assert_books(&app, &admin, &dana, 1000, p).await;

    let rec = reconciliation(&app, &admin, p).await;
    for flagged in ["pi_link", "pi_forged"] {
        let item = payment(&rec, flagged);
        assert_eq!(item["flags"], json!(["amount_mismatch"]), "{item}");
        assert_eq!((item["coinsIssued"].as_i64(), item["coinsExpected"].as_i64()), (Some(0), Some(0)), "{item}");
    }
    let link = payment(&rec, "pi_link");
    assert_eq!((link["amountCents"].as_i64(), link["currency"].as_str()), (Some(100), Some("usd")), "{link}");
    assert_eq!(
        (link["claimedUserId"].as_str(), link["claimedPackageId"].as_str()),
        (Some(d.as_str()), Some("coins_500"))
    );
    assert_eq!(link["status"], json!("open"));
    assert_eq!(payment(&rec, "pi_good")["mismatches"], json!([]));
    assert_eq!(payment(&rec, "pi_link_ok")["mismatches"], json!([]));
    app.stop().await;
}
