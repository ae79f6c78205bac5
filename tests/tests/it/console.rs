//! The finance and ops console in a real browser: Debian's headless
//! Chromium driven by playwright-core (`tests/support/console-check.js`)
//! against the real service. Each role signs in and sees what it may see;
//! a plain user is turned away; a page that fails to load or logs a
//! JavaScript error fails the test. Screenshots go to the test's output
//! folder (`target/tmp/console/`).

use std::process::Command;

use halobuzz_tests::http::{PASSWORD, TestApp};
use serde_json::json;

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
    let app = TestApp::start_with(&[("EARNINGS_HOLD_HOURS", "0")]).await;
    // Some history, so that the trial balance has accounts to sum.
    let scene = app.stream_scene("console", 1_000).await;
    let admin = &scene.admin;
    let [finance, ops, viewer] = app.register_all(["console_finance", "console_ops", "console_plain"]).await;
    for (user, role) in [(&finance, "finance"), (&ops, "ops")] {
        let granted = app
            .post(&format!("/api/v1/admin/users/{}/roles", user.id), Some(&admin.token), json!({"grant": [role]}))
            .await;
        assert_eq!(granted.status, 200, "{}", granted.text);
    }
    let gift = app.gift(&scene.viewer.token, scene.stream, "crown", 2).await;
    assert_eq!(gift.status, 201, "{}", gift.text);
    let settled = app.settle_reactor().await;
    let wallet = app.wallet(&scene.host, settled).await;
    let earnings = wallet["earnings"].as_i64().expect("earnings");
    let payout =
        app.post("/api/v1/payouts", Some(&scene.host.token), json!({"coins": 100, "destination": "iban:DE00"})).await;
    assert_eq!(payout.status, 201, "{}", payout.text);
    let payout_id = payout.body["payoutId"].as_str().expect("a payout id").to_string();
    let scene_json = json!({
        "payoutId": payout_id,
        "account": format!("earnings:{}", scene.host.id),
        "balance": earnings - 100,
    });

    let page = app.get("/console", None).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let policy = page.headers.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(policy.contains("script-src 'self'") && !policy.contains("unsafe"), "{policy}");

    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&out).expect("the screenshot folder");
    let accounts = json!([
        {"name": "admin", "email": admin.email, "password": PASSWORD, "sees": "trial", "decides": true},
        {"name": "finance", "email": finance.email, "password": PASSWORD, "sees": "trial"},
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
    for name in ["overview-admin", "payouts-admin", "reconciliation-admin", "accounts-admin", "refused-viewer"] {
        let shot = out.join(format!("{name}.png"));
        assert!(shot.metadata().is_ok_and(|m| m.len() > 0), "no screenshot {}", shot.display());
    }
    // The payout left the queue for good: approved in the log.
    let after = app.get("/api/v1/admin/payouts?status=pending", Some(&admin.token)).await;
    assert!(!after.text.contains(&payout_id), "{}", after.text);
    app.stop().await;
}
