//! Money out, with controls, through HTTP on both read stores: a payout
//! settled the moment it was requested (found from the log, no read model
//! involved), nobody approving their own money, four eyes on large
//! adjustments.

use halobuzz_tests::http::{ADMIN_EMAIL, Scene, TestApp, User, balance_of};
use projections::mongo_server::{Topology, database_name, surrogate_target};
use reqwest::Method;
use serde_json::{Value, json};

const SECOND_ADMIN_EMAIL: &str = "second.admin@test.halobuzz.com";

/// Both read stores: the embedded SQLite store, then MongoDB (the
/// surrogate, as a replica set), each with `overrides`.
async fn on_both_stores(overrides: &[(&str, &str)], run: impl AsyncFn(&TestApp, &str)) {
    let app = TestApp::start_with(overrides).await;
    run(&app, "sqlite").await;
    app.stop().await;

    let uri = surrogate_target(Topology::ReplicaSet).await.uri;
    let database = database_name("controls");
    let mut with_mongo = overrides.to_vec();
    with_mongo.extend([("MONGODB_URI", uri.as_str()), ("MONGODB_DB", database.as_str())]);
    let app = TestApp::start_with(&with_mongo).await;
    run(&app, "mongodb").await;
    app.stop().await;
    let store = projections::MongoStore::connect(&uri, Some(&database)).await.expect("connect");
    store.drop_database().await.expect("drop");
}

fn two_admins() -> String {
    format!("{ADMIN_EMAIL},{SECOND_ADMIN_EMAIL}")
}

/// A host with `earnings` coins credited (gifts of 100-coin crowns at 70%).
async fn host_with_earnings(app: &TestApp, name: &str, crowns: i64) -> Scene {
    let scene = app.stream_scene(name, crowns * 100).await;
    let gift = app.gift(&scene.viewer.token, scene.stream, "crown", crowns).await;
    assert_eq!(gift.status, 201, "{}", gift.text);
    let settled = app.settle_reactor().await;
    let wallet = app.wallet(&scene.host, settled).await;
    assert_eq!(wallet["earnings"], json!(crowns * 70), "{wallet}");
    scene
}

async fn keyed_post(app: &TestApp, path: &str, user: &User, key: &str, body: Value) -> halobuzz_tests::http::Resp {
    app.request_with(Method::POST, path, Some(&user.token), Some(body), &[("Idempotency-Key", key)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payout_is_approved_or_rejected_the_moment_it_was_requested() {
    let hold = [("EARNINGS_HOLD_HOURS", "0")];
    on_both_stores(&hold, async |app, store| {
        let scene = host_with_earnings(app, "instant", 30).await;
        let (host, admin) = (&scene.host, &scene.admin);
        for (verdict, body, status) in [
            ("reject", json!({"reason": "bank details"}), "rejected"),
            ("approve", json!({"externalRef": "wire-1"}), "paid"),
        ] {
            let requested =
                app.post("/api/v1/payouts", Some(&host.token), json!({"coins": 1000, "destination": "iban"})).await;
            assert_eq!(requested.status, 201, "{store}: {}", requested.text);
            let id = requested.body["payoutId"].as_str().expect("a payout id").to_string();
            // At once: no minPosition, no waiting for any read model.
            let path = format!("/api/v1/admin/payouts/{id}/{verdict}");
            let first = keyed_post(app, &path, admin, &format!("{verdict}-{id}"), body.clone()).await;
            assert_eq!(first.status, 200, "{store} {verdict}: {}", first.text);
            assert_eq!(first.body["status"], json!(status));
            let again = keyed_post(app, &path, admin, &format!("{verdict}-{id}"), body.clone()).await;
            assert_eq!((again.status, again.body.clone()), (200, first.body.clone()), "{store}: the first answer");
            assert_eq!(again.headers.get("idempotency-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
            // Another key: decided afresh, and the payout is settled.
            let other = keyed_post(app, &path, admin, &format!("other-{id}"), body).await;
            assert_eq!((other.status, other.problem_code()), (409, "payout_not_pending"), "{store}");
        }
        let unknown =
            app.decide_payout(admin, &uuid::Uuid::now_v7().to_string(), "approve", json!({"externalRef": "x"})).await;
        assert_eq!((unknown.status, unknown.problem_code()), (404, "not_found"), "{store}: {}", unknown.text);
        let end = app.settle_reactor().await;
        let wallet = app.wallet(host, end).await;
        // 2100 earned, 1000 paid, 1000 rejected back.
        assert_eq!((wallet["earnings"].clone(), wallet["held"].clone()), (json!(1100), json!(0)), "{store}");
        let trial =
            app.get(&format!("/api/v1/ledger/trial-balance?limit=200&minPosition={end}"), Some(&admin.token)).await;
        assert_eq!(balance_of(&trial.body, "external:payouts"), 1000, "{store}");
        assert_eq!(trial.body["totalCoins"], json!(0), "{store}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_approves_their_own_payout_or_adjusts_their_own_wallet() {
    let admins = two_admins();
    let env = [("EARNINGS_HOLD_HOURS", "0"), ("ADMIN_EMAILS", admins.as_str())];
    let app = TestApp::start_with(&env).await;
    let admin = app.admin().await;
    let second = app.register_email("second_admin", SECOND_ADMIN_EMAIL).await;
    let viewer = app.register("own_viewer").await;
    // The admin hosts a stream and earns from it.
    app.fund(&second, &viewer, 3_000).await;
    let stream = app.start_stream(&admin, "admin live").await;
    let gift = app.gift(&viewer.token, stream, "crown", 30).await;
    assert_eq!(gift.status, 201, "{}", gift.text);
    app.settle_reactor().await;

    let own = app
        .post("/api/v1/admin/adjustments", Some(&admin.token), json!({"userId": admin.id, "coins": 50, "reason": "me"}))
        .await;
    assert_eq!((own.status, own.problem_code()), (403, "self_approval_forbidden"), "{}", own.text);

    let requested =
        app.post("/api/v1/payouts", Some(&admin.token), json!({"coins": 1000, "destination": "iban"})).await;
    assert_eq!(requested.status, 201, "{}", requested.text);
    let id = requested.body["payoutId"].as_str().expect("a payout id").to_string();
    for (verdict, body) in [("approve", json!({"externalRef": "self"})), ("reject", json!({"reason": "self"}))] {
        let refused = app.decide_payout(&admin, &id, verdict, body).await;
        assert_eq!((refused.status, refused.problem_code()), (403, "self_approval_forbidden"), "{}", refused.text);
    }
    let approved = app.decide_payout(&second, &id, "approve", json!({"externalRef": "wire-2"})).await;
    assert_eq!((approved.status, approved.body["status"].clone()), (200, json!("paid")), "{}", approved.text);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_adjustment_is_applied_only_when_a_second_admin_approves_it() {
    let admins = two_admins();
    let env = [("ADJUSTMENT_APPROVAL_COINS", "10000"), ("ADMIN_EMAILS", admins.as_str())];
    on_both_stores(&env, async |app, store| {
        let admin = app.admin().await;
        let second = app.register_email("second_admin", SECOND_ADMIN_EMAIL).await;
        let user = app.register("big_credit").await;
        // Under the threshold: applied at once.
        let small = app
            .post(
                "/api/v1/admin/adjustments",
                Some(&admin.token),
                json!({"userId": user.id, "coins": 9_999, "reason": "small"}),
            )
            .await;
        assert_eq!(small.status, 201, "{store}: {}", small.text);

        let mut ids = vec![];
        for (coins, key) in [(25_000, "big-1"), (-10_000, "big-2")] {
            let body = json!({"userId": user.id, "coins": coins, "reason": "migration"});
            let proposed = keyed_post(app, "/api/v1/admin/adjustments", &admin, key, body.clone()).await;
            assert_eq!(proposed.status, 202, "{store}: {}", proposed.text);
            assert_eq!(proposed.body["status"], json!("proposed"));
            assert!(proposed.body["position"].as_u64().is_some_and(|p| p > 0));
            let repeat = keyed_post(app, "/api/v1/admin/adjustments", &admin, key, body).await;
            assert_eq!(
                (repeat.status, repeat.body.clone()),
                (202, proposed.body.clone()),
                "{store}: one proposal per key"
            );
            ids.push(proposed.body["adjustmentId"].as_str().expect("an id").to_string());
        }
        // Nothing moved yet.
        let wallet = app.wallet(&user, app.last_position().await).await;
        assert_eq!(wallet["coins"], json!(9_999), "{store}");
        let listed = app
            .get(
                &format!("/api/v1/admin/adjustments?status=proposed&minPosition={}", app.last_position().await),
                Some(&second.token),
            )
            .await;
        assert_eq!(listed.status, 200, "{store}: {}", listed.text);
        let listed_ids: Vec<&str> =
            listed.body["items"].as_array().expect("items").iter().filter_map(|i| i["id"].as_str()).collect();
        assert_eq!(listed_ids.len(), 2, "{store}: {}", listed.text);
        assert!(ids.iter().all(|id| listed_ids.contains(&id.as_str())), "{store}: {}", listed.text);

        // The proposer cannot approve; the adjusted user is no admin.
        let own =
            app.post(&format!("/api/v1/admin/adjustments/{}/approve", ids[0]), Some(&admin.token), json!({})).await;
        assert_eq!((own.status, own.problem_code()), (403, "self_approval_forbidden"), "{store}: {}", own.text);
        let not_admin =
            app.post(&format!("/api/v1/admin/adjustments/{}/approve", ids[0]), Some(&user.token), json!({})).await;
        assert_eq!(not_admin.status, 403, "{store}");

        // A second admin approves the first (same key twice: one answer).
        let path = format!("/api/v1/admin/adjustments/{}/approve", ids[0]);
        let approved = keyed_post(app, &path, &second, "ok-1", json!({})).await;
        assert_eq!(approved.status, 200, "{store}: {}", approved.text);
        assert_eq!(
            (approved.body["status"].clone(), approved.body["balance"].clone()),
            (json!("applied"), json!(34_999))
        );
        let again = keyed_post(app, &path, &second, "ok-1", json!({})).await;
        assert_eq!((again.status, again.body.clone()), (200, approved.body.clone()), "{store}");
        let twice = keyed_post(app, &path, &second, "ok-2", json!({})).await;
        assert_eq!((twice.status, twice.problem_code()), (409, "adjustment_not_proposed"), "{store}");

        // And rejects the second: nothing moves.
        let reject = format!("/api/v1/admin/adjustments/{}/reject", ids[1]);
        let rejected = app.post(&reject, Some(&second.token), json!({"reason": "no ticket"})).await;
        assert_eq!(
            (rejected.status, rejected.body["status"].clone()),
            (200, json!("rejected")),
            "{store}: {}",
            rejected.text
        );
        let late =
            app.post(&format!("/api/v1/admin/adjustments/{}/approve", ids[1]), Some(&second.token), json!({})).await;
        assert_eq!((late.status, late.problem_code()), (409, "adjustment_not_proposed"), "{store}");
        let unknown = app
            .post(
                &format!("/api/v1/admin/adjustments/{}/approve", uuid::Uuid::now_v7()),
                Some(&second.token),
                json!({}),
            )
            .await;
        assert_eq!((unknown.status, unknown.problem_code()), (404, "not_found"), "{store}");

        // Visible in the ledger and the trial balance.
        let end = rejected.position().max(approved.position());
        let entries = app
            .get(&format!("/api/v1/ledger/accounts/wallet:{}/entries?minPosition={end}", user.id), Some(&admin.token))
            .await;
        assert_eq!(entries.status, 200, "{store}: {}", entries.text);
        let amounts: Vec<i64> =
            entries.body["items"].as_array().expect("items").iter().filter_map(|e| e["coins"].as_i64()).collect();
        assert!(amounts.contains(&25_000) && !amounts.contains(&-10_000), "{store}: {}", entries.text);
        let trial =
            app.get(&format!("/api/v1/ledger/trial-balance?limit=200&minPosition={end}"), Some(&admin.token)).await;
        assert_eq!(balance_of(&trial.body, "platform:adjustments"), -34_999, "{store}: {}", trial.text);
        assert_eq!(trial.body["totalCoins"], json!(0), "{store}");
        let open =
            app.get(&format!("/api/v1/admin/adjustments?status=proposed&minPosition={end}"), Some(&admin.token)).await;
        assert_eq!(open.body["items"], json!([]), "{store}: {}", open.text);
        let applied =
            app.get(&format!("/api/v1/admin/adjustments?status=applied&minPosition={end}"), Some(&admin.token)).await;
        let item = &applied.body["items"][0];
        assert_eq!(
            (item["proposedBy"].clone(), item["decidedBy"].clone()),
            (json!(admin.id.to_string()), json!(second.id.to_string())),
            "{store}: {}",
            applied.text
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earnings_are_payable_only_after_the_hold() {
    on_both_stores(&[("EARNINGS_HOLD_HOURS", "72")], async |app, store| {
        let scene = app.stream_scene("held", 3_000).await;
        let gift = app.gift(&scene.viewer.token, scene.stream, "crown", 30).await;
        assert_eq!(gift.status, 201, "{}", gift.text);
        let settled = app.settle_reactor().await;
        let wallet = app.wallet(&scene.host, settled).await;
        assert_eq!(
            (wallet["earnings"].clone(), wallet["earningsAvailable"].clone()),
            (json!(2_100), json!(0)),
            "{store}: {wallet}"
        );
        let refused =
            app.post("/api/v1/payouts", Some(&scene.host.token), json!({"coins": 1000, "destination": "iban"})).await;
        assert_eq!(
            (refused.status, refused.problem_code()),
            (402, "insufficient_earnings"),
            "{store}: {}",
            refused.text
        );
        // A viewer's wallet has no earnings to hold.
        let viewer = app.wallet(&scene.viewer, settled).await;
        assert_eq!(viewer["earningsAvailable"], json!(0), "{store}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_hold_earnings_are_payable_at_once() {
    let app = TestApp::start_with(&[("EARNINGS_HOLD_HOURS", "0")]).await;
    let scene = host_with_earnings(&app, "unheld", 30).await;
    let wallet = app.wallet(&scene.host, app.last_position().await).await;
    assert_eq!(wallet["earningsAvailable"], json!(2_100), "{wallet}");
    app.stop().await;
}
