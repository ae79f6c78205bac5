//! Disputes (chargebacks) end to end: signed `charge.dispute.*` webhooks
//! (Stripe's own Node library signs them; the dispute objects are shaped
//! like Stripe's documented ones, since localstripe has no disputes)
//! reverse a purchase's coins once, give them back once when the dispute
//! is won, wait for a purchase that comes later, and show in the
//! reconciliation with their amounts, status and fee. After every delivery
//! the balances are exact and the trial balance is zero.

use halobuzz_tests::http::{TestApp, User};
use halobuzz_tests::stripe::{DisputeFixture, DisputeMovement, dispute_event};
use serde_json::json;

use crate::stripe::{SECRET, accepted, assert_books, intent_succeeded, now_s, payment, reconciliation};

/// Stripe's dispute fee, as its balance transaction states it.
const FEE_CENTS: i64 = 1500;
const WITHDRAWAL: DisputeMovement = DisputeMovement { amount_cents: -499, fee_cents: FEE_CENTS };
const REINSTATEMENT: DisputeMovement = DisputeMovement { amount_cents: 499, fee_cents: -FEE_CENTS };

/// The four events of a dispute's life, as Stripe sends them: opened with
/// its funds withdrawn at once (the balance transaction is listed from the
/// start), then `funds_withdrawn`, and the outcome: `closed` as lost, or
/// `funds_reinstated` and `closed` as won.
struct DisputeLife {
    created: String,
    withdrawn: String,
    reinstated: String,
    closed: String,
}

fn dispute_life(prefix: &str, intent: &str, won: bool) -> DisputeLife {
    let dispute_id = format!("dp_{prefix}");
    let fixture = |status: &'static str, movements: &'static [DisputeMovement]| DisputeFixture {
        dispute_id: &dispute_id,
        payment_intent: intent,
        amount_cents: 499,
        status,
        movements,
    };
    let t = now_s();
    let won_movements: &'static [DisputeMovement] = &[WITHDRAWAL, REINSTATEMENT];
    DisputeLife {
        created: dispute_event(
            &format!("evt_{prefix}_created"),
            "created",
            &fixture("needs_response", &[WITHDRAWAL]),
            t,
        ),
        withdrawn: dispute_event(
            &format!("evt_{prefix}_withdrawn"),
            "funds_withdrawn",
            &fixture("needs_response", &[WITHDRAWAL]),
            t,
        ),
        reinstated: dispute_event(
            &format!("evt_{prefix}_reinstated"),
            "funds_reinstated",
            &fixture("won", won_movements),
            t,
        ),
        closed: if won {
            dispute_event(&format!("evt_{prefix}_closed"), "closed", &fixture("won", won_movements), t)
        } else {
            dispute_event(&format!("evt_{prefix}_closed"), "closed", &fixture("lost", &[WITHDRAWAL]), t)
        },
    }
}

/// Delivers `body` twice: the repeat changes nothing. Returns the last
/// position.
async fn delivered_twice(app: &TestApp, admin: &User, user: &User, body: &str, coins: i64) -> u64 {
    let (p, repeat) = accepted(app, body).await;
    assert!(!repeat, "a new event");
    assert_books(app, admin, user, coins, p).await;
    let (p, repeat) = accepted(app, body).await;
    assert!(repeat, "the same event again");
    assert_books(app, admin, user, coins, p).await;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stripe_a_dispute_lost_after_the_coins_were_gifted_leaves_the_wallet_negative_and_blocks_spending() {
    let app = TestApp::start_with(&[("STRIPE_WEBHOOK_SECRET", SECRET)]).await;
    let admin = app.admin().await;
    let [ann, host] = app.register_all(["ann", "ann_host"]).await;
    let stream = app.start_stream(&host, "colluding").await;
    delivered_twice(
        &app,
        &admin,
        &ann,
        &intent_succeeded("evt_a_intent", "pi_a", &ann.id.to_string(), "coins_500"),
        500,
    )
    .await;
    // The coins bought with a stolen card are gifted away.
    let gift = app.gift(&ann.token, stream, "rose", 400).await;
    assert_eq!(gift.status, 201, "{}", gift.text);
    assert_books(&app, &admin, &ann, 100, gift.position()).await;

    // The card holder disputes: the funds are withdrawn, the 500 coins
    // reversed once, whichever of the two events says so first and however
    // often; the wallet goes negative.
    let life = dispute_life("a", "pi_a", false);
    delivered_twice(&app, &admin, &ann, &life.created, -400).await;
    delivered_twice(&app, &admin, &ann, &life.withdrawn, -400).await;
    let p = delivered_twice(&app, &admin, &ann, &life.closed, -400).await;
    // Spending is blocked.
    let blocked = app.gift(&ann.token, stream, "rose", 1).await;
    assert_eq!((blocked.status, blocked.problem_code()), (402, "insufficient_funds"), "{}", blocked.text);
    assert_eq!(blocked.content_type(), "application/problem+json");

    let rec = reconciliation(&app, &admin, p).await;
    let item = payment(&rec, "pi_a");
    assert_eq!((item["coinsIssued"].as_i64(), item["coinsReversed"].as_i64()), (Some(500), Some(500)), "{item}");
    assert_eq!(item["coinsReversalExpected"], json!(500));
    assert_eq!(item["coinsDisputeWithdrawn"], json!(500));
    assert_eq!(item["disputeFeeCents"], json!(FEE_CENTS));
    assert_eq!(item["flags"], json!(["disputed"]));
    assert_eq!(item["mismatches"], json!(["disputed"]), "coins match; the dispute is flagged");
    let disputes = item["disputes"].as_array().expect("disputes");
    assert_eq!(disputes.len(), 1, "{item}");
    let dispute = &disputes[0];
    assert_eq!(dispute["disputeId"], json!("dp_a"));
    assert_eq!((dispute["amountCents"].as_i64(), dispute["status"].as_str()), (Some(499), Some("lost")));
    assert_eq!((dispute["reason"].as_str(), dispute["feeCents"].as_i64()), (Some("fraudulent"), Some(FEE_CENTS)));
    assert_eq!((dispute["fundsWithdrawn"].as_bool(), dispute["fundsReinstated"].as_bool()), (Some(true), Some(false)));
    assert_eq!(dispute["coinsReversed"], json!(500));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stripe_a_won_dispute_credits_the_coins_back_once() {
    let app = TestApp::start_with(&[("STRIPE_WEBHOOK_SECRET", SECRET)]).await;
    let admin = app.admin().await;
    let bob = app.register("bob").await;
    delivered_twice(
        &app,
        &admin,
        &bob,
        &intent_succeeded("evt_b_intent", "pi_b", &bob.id.to_string(), "coins_500"),
        500,
    )
    .await;
    let life = dispute_life("b", "pi_b", true);
    delivered_twice(&app, &admin, &bob, &life.withdrawn, 0).await;
    delivered_twice(&app, &admin, &bob, &life.created, 0).await;
    delivered_twice(&app, &admin, &bob, &life.reinstated, 500).await;
    delivered_twice(&app, &admin, &bob, &life.closed, 500).await;
    // Late repeats of the opening events change nothing.
    let (p, _) = accepted(&app, &life.withdrawn).await;
    assert_books(&app, &admin, &bob, 500, p).await;
    let (p, _) = accepted(&app, &life.created).await;
    assert_books(&app, &admin, &bob, 500, p).await;

    let rec = reconciliation(&app, &admin, p).await;
    let item = payment(&rec, "pi_b");
    assert_eq!((item["coinsIssued"].as_i64(), item["coinsReversed"].as_i64()), (Some(1000), Some(500)), "{item}");
    assert_eq!(
        (item["coinsDisputeWithdrawn"].as_i64(), item["coinsDisputeReinstated"].as_i64()),
        (Some(500), Some(500))
    );
    assert_eq!(item["disputes"][0]["status"], json!("won"));
    assert_eq!(item["disputes"][0]["fundsReinstated"], json!(true));
    assert_eq!(item["disputes"][0]["coinsReversed"], json!(0));
    assert_eq!(item["disputeFeeCents"], json!(0), "a won dispute's fee is given back");
    assert_eq!(item["mismatches"], json!(["disputed"]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stripe_a_dispute_before_its_purchase_is_kept_and_applied_when_the_purchase_comes() {
    let app = TestApp::start_with(&[("STRIPE_WEBHOOK_SECRET", SECRET)]).await;
    let admin = app.admin().await;
    let cara = app.register("cara").await;
    let life = dispute_life("c", "pi_c", false);
    delivered_twice(&app, &admin, &cara, &life.withdrawn, 0).await;
    delivered_twice(&app, &admin, &cara, &life.created, 0).await;
    let purchase = intent_succeeded("evt_c_intent", "pi_c", &cara.id.to_string(), "coins_500");
    let p = delivered_twice(&app, &admin, &cara, &purchase, 0).await;
    let rec = reconciliation(&app, &admin, p).await;
    let item = payment(&rec, "pi_c");
    assert_eq!((item["coinsIssued"].as_i64(), item["coinsReversed"].as_i64()), (Some(500), Some(500)), "{item}");
    assert_eq!(item["mismatches"], json!(["disputed"]));
    // Won later, after all: the coins come back once.
    let won = dispute_life("c", "pi_c", true);
    delivered_twice(&app, &admin, &cara, &won.reinstated, 500).await;
    delivered_twice(&app, &admin, &cara, &won.closed, 500).await;
    app.stop().await;
}
