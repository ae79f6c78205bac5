//! The finance and ops console in a real browser: Debian's headless
//! Chromium driven by playwright-core (`tests/support/console-check.js`)
//! against the real service, with a seeded history (a purchase flagged
//! through a signed webhook, a purchase credited then refunded in full
//! after its coins were gifted, gifts, a pending payout with a risk flag,
//! a proposed adjustment). Each role signs in and sees what it may see,
//! the 30-day chart among it (for the admin, today's bars are the daily
//! route's figures); a plain user is turned away; every control has a
//! label, no page is wider than 1280 or 1440 pixels, a confirmation opens
//! by keyboard with focus inside and closes on Escape with focus back; an admin approves the payout and sees it leave the
//! queue, and is refused their own proposal with the API's message; a
//! second admin approves it; finance credits the flagged payment, reads a
//! balance at a time and downloads a statement whose rows match the
//! entries route. A page that fails to load or logs a JavaScript error
//! fails the test. Screenshots go to `target/tmp/console/`.

use std::process::Command;

use halobuzz_tests::http::{PASSWORD, TestApp};
use serde_json::json;

use crate::stripe::{SECRET, accepted, charge_refunded, intent_succeeded};

/// The tools `scripts/ensure-browser.sh` installs (`scripts/test.sh` exports
/// them); the test fails without them.
fn browser_tools() -> (String, String) {
    let chromium = std::env::var("CHROMIUM_BIN").expect("CHROMIUM_BIN: run scripts/ensure-browser.sh (test.sh does)");
    let driver = std::env::var("PLAYWRIGHT_DIR").expect("PLAYWRIGHT_DIR: run scripts/ensure-browser.sh (test.sh does)");
    (chromium, driver)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_signs_in_to_the_console_and_sees_what_it_may() {
    let (chromium, driver) = browser_tools();
    // Earnings payable at once, so that the host can ask for a payout.
    let app = TestApp::start_with(&[
        ("EARNINGS_HOLD_HOURS", "0"),
        ("ADJUSTMENT_APPROVAL_COINS", "10000"),
        ("STRIPE_WEBHOOK_SECRET", SECRET),
    ])
    .await;
    // Some history, so that the trial balance has accounts to sum.
    let scene = app.stream_scene("console", 1_000).await;
    let admin = &scene.admin;
    let [finance, ops, viewer, deputy] =
        app.register_all(["console_finance", "console_ops", "console_plain", "console_deputy"]).await;
    for (user, role) in [(&finance, "finance"), (&ops, "ops"), (&deputy, "admin")] {
        let granted = app
            .post(&format!("/api/v1/admin/users/{}/roles", user.id), Some(&admin.token), json!({"grant": [role]}))
            .await;
        assert_eq!(granted.status, 200, "{}", granted.text);
    }
    let gift = app.gift(&scene.viewer.token, scene.stream, "crown", 2).await;
    assert_eq!(gift.status, 201, "{}", gift.text);
    // A buyer pays through Stripe (a signed webhook), gifts most of the
    // coins, and is refunded in full: the wallet goes negative, so the
    // host's payout carries a risk flag; the chart has purchased and
    // reversed coins.
    let buyer = app.register("console_buyer").await;
    accepted(&app, &intent_succeeded("evt_console_buy", "pi_console_buy", &buyer.id.to_string(), "coins_500")).await;
    let bought = app
        .eventually(&format!("/api/v1/wallet?minPosition={}", app.last_position().await), Some(&buyer.token), |r| {
            r.body["coins"] == json!(500)
        })
        .await;
    assert_eq!(bought.status, 200, "{}", bought.text);
    let buyer_gift = app.gift(&buyer.token, scene.stream, "crown", 4).await;
    assert_eq!(buyer_gift.status, 201, "{}", buyer_gift.text);
    let settled = app.settle_reactor().await;
    let wallet = app.wallet(&scene.host, settled).await;
    let earnings = wallet["earnings"].as_i64().expect("earnings");
    let payout =
        app.post("/api/v1/payouts", Some(&scene.host.token), json!({"coins": 100, "destination": "iban:DE00"})).await;
    assert_eq!(payout.status, 201, "{}", payout.text);
    let payout_id = payout.body["payoutId"].as_str().expect("a payout id").to_string();
    // A purchase whose metadata names nobody of ours: flagged, not credited.
    accepted(&app, &intent_succeeded("evt_console", "pi_console", "console-typo", "coins_500")).await;
    // A large adjustment: proposed by the admin, for another admin to approve.
    let proposed = app
        .post(
            "/api/v1/admin/adjustments",
            Some(&admin.token),
            json!({"userId": scene.viewer.id, "coins": 20_000, "reason": "console migration"}),
        )
        .await;
    assert_eq!(proposed.status, 202, "{}", proposed.text);
    let adjustment_id = proposed.body["adjustmentId"].as_str().expect("an adjustment id").to_string();
    // The full refund: 500 coins back, the buyer's wallet at -400.
    accepted(&app, &charge_refunded("evt_console_refund", "pi_console_buy", 499)).await;
    let risky = app
        .eventually(
            &format!("/api/v1/admin/payouts?status=pending&minPosition={}", app.last_position().await),
            Some(&admin.token),
            |r| r.text.contains("gifts_from_negative_wallets"),
        )
        .await;
    assert_eq!(risky.body["items"][0]["risk"][0]["coins"], json!(400), "{}", risky.text);
    // Today's coins as the API counts them, once every posting is in: the
    // admin's chart must draw these.
    let gifts = [&gift, &buyer_gift].map(|g| g.body["coins"].as_i64().expect("the gift's coins"));
    let gifted: i64 = gifts.iter().sum();
    let credited: i64 = gifts.iter().map(|coins| coins * 7_000 / 10_000).sum();
    let end = app.last_position().await;
    let daily = app
        .eventually(&format!("/api/v1/ledger/daily?days=30&minPosition={end}"), Some(&admin.token), |r| {
            r.status == 200 && r.body["days"][29]["reversedCoins"] != json!(0)
        })
        .await;
    let today = daily.body["days"][29].clone();
    assert_eq!(today["day"], json!(chrono::Utc::now().date_naive().to_string()), "{}", daily.text);
    // coins_500 bought and reversed; the host's 70% of each gift.
    let counted = [500, gifted, credited, 0, 500];
    for (kind, coins) in
        ["purchasedCoins", "giftedCoins", "creditedCoins", "paidOutCoins", "reversedCoins"].iter().zip(counted)
    {
        assert_eq!(today[kind], json!(coins), "{kind}: {}", daily.text);
    }
    let now = chrono::Utc::now();
    let local = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let scene_json = json!({
        "payoutId": payout_id,
        "account": format!("earnings:{}", scene.host.id),
        "balance": earnings - 100,
        "adjustmentId": adjustment_id,
        "paymentId": "pi_console",
        "creditUserId": viewer.id,
        "from": local(now - chrono::Duration::days(1)),
        "to": local(now + chrono::Duration::hours(1)),
        "today": today,
        "risk": "gifts_from_negative_wallets: 400 coins",
    });

    let page = app.get("/console", None).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let policy = page.headers.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(policy.contains("script-src 'self'") && !policy.contains("unsafe"), "{policy}");

    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&out).expect("the screenshot folder");
    let accounts = json!([
        {"name": "admin", "email": admin.email, "password": PASSWORD, "sees": "trial", "chart": "today", "does": ["payout", "own-adjustment"]},
        {"name": "deputy", "email": deputy.email, "password": PASSWORD, "sees": "trial", "does": ["adjustment"]},
        {"name": "finance", "email": finance.email, "password": PASSWORD, "sees": "trial", "does": ["resolve", "account"]},
        {"name": "ops", "email": ops.email, "password": PASSWORD, "sees": "workers-only"},
        {"name": "viewer", "email": viewer.email, "password": PASSWORD, "sees": "refused"},
    ]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/support/console-check.js");
    let output = Command::new("node")
        .arg(script)
        .env("CHROMIUM_BIN", chromium)
        .env("PLAYWRIGHT_DIR", driver)
        .env("CONSOLE_URL", &app.base)
        .env("CONSOLE_OUT", &out)
        .env("CONSOLE_ACCOUNTS", accounts.to_string())
        .env("CONSOLE_SCENE", scene_json.to_string())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser check failed:\n{stderr}\n{stdout}");
    for name in [
        "overview-admin",
        "payouts-admin",
        "adjustment-refused-admin",
        "adjustment-applied-deputy",
        "reconciliation-finance",
        "accounts-finance",
        "refused-viewer",
    ] {
        let shot = out.join(format!("{name}.png"));
        assert!(shot.metadata().is_ok_and(|m| m.len() > 0), "no screenshot {}", shot.display());
    }
    // What the console did is in the log: the payout approved, the
    // adjustment applied, the payment credited to the viewer.
    let after = app.get("/api/v1/admin/payouts?status=pending", Some(&admin.token)).await;
    assert!(!after.text.contains(&payout_id), "{}", after.text);
    let proposals = app.get("/api/v1/admin/adjustments?status=proposed", Some(&admin.token)).await;
    assert!(!proposals.text.contains(&adjustment_id), "{}", proposals.text);
    let end = app.last_position().await;
    let wallet = app.wallet(&viewer, end).await;
    assert_eq!(wallet["coins"], json!(500), "the credited package: {wallet}");
    app.stop().await;
}
