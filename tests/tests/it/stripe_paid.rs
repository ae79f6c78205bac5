//! The amount paid is checked end to end: a confirmation is credited only
//! when what Stripe says was paid equals the price this service offered
//! (stated in the metadata as `priceCents` / `priceCurrency`, or, for an
//! object without them, the package's current price), and that price is
//! the catalogue's. Anything else is recorded and flagged
//! `amount_mismatch`, never credited.

use halobuzz_tests::http::{Resp, TestApp};
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

/// `POST .../resolve` by `token`, with `body`.
async fn resolve(app: &TestApp, token: &str, payment_id: &str, body: serde_json::Value) -> Resp {
    app.post(&format!("/api/v1/admin/payments/{payment_id}/resolve"), Some(token), body).await
}

/// Expects a `status` problem with `code`, and nothing appended.
async fn refused(app: &TestApp, token: &str, payment_id: &str, body: serde_json::Value, status: u16, code: &str) {
    let before = app.last_position().await;
    let r = resolve(app, token, payment_id, body.clone()).await;
    assert_eq!((r.status, r.problem_code()), (status, code), "{payment_id} {body}: {}", r.text);
    assert_eq!(r.content_type(), "application/problem+json");
    assert_eq!(app.last_position().await, before, "a refused resolution appends nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stripe_finance_credits_an_unknown_users_payment_once_and_dismisses_another() {
    let app = TestApp::start_with(&[("STRIPE_WEBHOOK_SECRET", SECRET)]).await;
    let admin = app.admin().await;
    let [erin, frank] = app.register_all(["erin", "frank"]).await;
    let finance = app.register("fiona").await;
    let granted = app
        .post(&format!("/api/v1/admin/users/{}/roles", finance.id), Some(&admin.token), json!({"grant": ["finance"]}))
        .await;
    assert_eq!(granted.status, 200, "{}", granted.text);

    // Paid by someone whose metadata names no user of ours (a typo'd id):
    // flagged, not credited.
    let (p, _) =
        accepted(&app, &crate::stripe::intent_succeeded("evt_typo", "pi_typo", "erin-typo", "coins_500")).await;
    assert_books(&app, &admin, &erin, 0, p).await;
    // Underpaid through a Payment Link: flagged.
    let (p, _) = accepted(&app, &payment_link_session("evt_pl", "cs_pl", "pi_pl", &frank.id.to_string(), 100)).await;
    assert_books(&app, &admin, &frank, 0, p).await;
    // A payment with no flag.
    let (p, _) =
        accepted(&app, &crate::stripe::intent_succeeded("evt_ok", "pi_ok", &frank.id.to_string(), "coins_100")).await;
    assert_books(&app, &admin, &frank, 100, p).await;

    // Bad input, nothing appended: a plain user; an unknown payment; an
    // unflagged payment; a credit without a user, with an unknown user or
    // package; an empty note.
    let credit = |user: &str, package: &str| json!({"action": "credit", "userId": user, "packageId": package, "note": "support ticket 42"});
    let erin_id = erin.id.to_string();
    refused(&app, &erin.token, "pi_typo", credit(&erin_id, "coins_500"), 403, "forbidden").await;
    refused(&app, &finance.token, "pi_nobody", credit(&erin_id, "coins_500"), 404, "not_found").await;
    refused(&app, &finance.token, "pi_ok", credit(&erin_id, "coins_500"), 409, "payment_not_resolvable").await;
    let dismiss = json!({"action": "dismiss", "note": "checked"});
    refused(&app, &finance.token, "pi_ok", dismiss.clone(), 409, "payment_not_resolvable").await;
    let no_user = json!({"action": "credit", "packageId": "coins_500", "note": "x"});
    refused(&app, &finance.token, "pi_typo", no_user, 422, "validation_failed").await;
    let ghost = uuid::Uuid::now_v7().to_string();
    refused(&app, &finance.token, "pi_typo", credit(&ghost, "coins_500"), 404, "not_found").await;
    refused(&app, &finance.token, "pi_typo", credit(&erin_id, "coins_9999"), 404, "not_found").await;
    let blank = json!({"action": "dismiss", "note": "   "});
    refused(&app, &finance.token, "pi_typo", blank, 422, "validation_failed").await;

    // Finance credits the typo'd payment to erin: once.
    let r = resolve(&app, &finance.token, "pi_typo", credit(&erin_id, "coins_500")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["action"], json!("credit"));
    assert_books(&app, &admin, &erin, 500, r.position()).await;
    refused(&app, &finance.token, "pi_typo", credit(&erin_id, "coins_500"), 409, "payment_not_resolvable").await;
    refused(&app, &admin.token, "pi_typo", dismiss.clone(), 409, "payment_not_resolvable").await;
    // Stripe's repeat of the purchase event changes nothing.
    let (p, repeat) =
        accepted(&app, &crate::stripe::intent_succeeded("evt_typo", "pi_typo", "erin-typo", "coins_500")).await;
    assert!(repeat);
    assert_books(&app, &admin, &erin, 500, p).await;

    // The admin dismisses the underpaid one (refunded in the dashboard).
    let r = resolve(&app, &admin.token, "pi_pl", json!({"action": "dismiss", "note": "refunded in Stripe"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_books(&app, &admin, &frank, 100, r.position()).await;
    refused(&app, &finance.token, "pi_pl", dismiss, 409, "payment_not_resolvable").await;
    refused(&app, &finance.token, "pi_pl", credit(&frank.id.to_string(), "coins_500"), 409, "payment_not_resolvable")
        .await;

    let p = app.last_position().await;
    let rec = reconciliation(&app, &admin, p).await;
    let typo = payment(&rec, "pi_typo");
    assert_eq!(typo["status"], json!("resolved"), "{typo}");
    assert_eq!(typo["resolution"]["action"], json!("credit"));
    assert_eq!(typo["resolution"]["userId"], json!(erin_id));
    assert_eq!(typo["resolution"]["resolvedBy"], json!(finance.id.to_string()));
    assert_eq!((typo["coinsIssued"].as_i64(), typo["coinsExpected"].as_i64()), (Some(500), Some(500)));
    assert_eq!(typo["claimedUserId"], json!("erin-typo"));
    let link = payment(&rec, "pi_pl");
    assert_eq!((link["status"].as_str(), link["resolution"]["action"].as_str()), (Some("resolved"), Some("dismiss")));
    assert_eq!(link["resolution"]["note"], json!("refunded in Stripe"));
    assert_eq!(link["coinsIssued"], json!(0));
    let r =
        app.get(&format!("/api/v1/ledger/reconciliation?status=resolved&minPosition={p}"), Some(&admin.token)).await;
    let ids: Vec<&str> =
        r.body["items"].as_array().expect("items").iter().filter_map(|i| i["paymentId"].as_str()).collect();
    assert_eq!(ids, vec!["pi_pl", "pi_typo"]);
    app.stop().await;
}
