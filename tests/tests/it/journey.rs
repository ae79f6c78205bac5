//! The whole user journey through HTTP, with exact balances at every step
//! and a trial balance of zero (transit back to zero) at the end.

use halobuzz_tests::http::{PASSWORD, Scene, TestApp, balance_of};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_gift_and_pay_out_keeps_every_balance_exact() {
    let app = TestApp::start().await;

    // Register and log in.
    let admin = app.admin().await;
    let [host, viewer, fan] = app.register_all(["host_1", "viewer_1", "fan_1"]).await;
    let me = app.get(&format!("/api/v1/users/me?minPosition={}", admin.position), Some(&admin.token)).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.body["roles"], json!(["user", "admin", "finance"]), "ADMIN_EMAILS grants admin and finance");
    let login = app.post("/api/v1/auth/login", None, json!({"email": viewer.email, "password": PASSWORD})).await;
    assert_eq!(login.status, 200, "{}", login.text);
    assert_eq!(login.body["user"]["id"], json!(viewer.id.to_string()));
    let viewer_token = login.body["accessToken"].as_str().expect("a token").to_string();
    let wrong =
        app.post("/api/v1/auth/login", None, json!({"email": viewer.email, "password": "not the password"})).await;
    assert_eq!((wrong.status, wrong.problem_code()), (401, "unauthorized"));
    let refreshed = app.post("/api/v1/auth/refresh", None, json!({"refreshToken": viewer.refresh_token})).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    assert!(refreshed.body["accessToken"].is_string() && refreshed.body["refreshToken"].is_string());

    // An admin credits the viewers.
    app.fund(&admin, &viewer, 10_000).await;
    let funded = app.fund(&admin, &fan, 5_000).await;
    let wallet = app.wallet(&fan, funded).await;
    assert_eq!(
        (wallet["coins"].clone(), wallet["earnings"].clone(), wallet["held"].clone()),
        (json!(5_000), json!(0), json!(0))
    );
    let as_of = wallet["position"].as_u64().unwrap_or(0);
    assert!(as_of > 0 && as_of <= funded, "the wallet is as of the adjustment's commit: {wallet}");

    // The host goes live; the viewers join.
    let stream = app.start_stream(&host, "Friday night").await;
    for user in [&viewer, &fan] {
        let r = app.post(&format!("/api/v1/streams/{stream}/join"), Some(&user.token), json!({})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.body["position"].as_u64().is_some());
    }

    // Gifts, priced by the catalog: rose 1, crown 100, castle 1000.
    let mut last = 0;
    for (user, gift, quantity, coins, balance) in
        [(&viewer, "rose", 10, 10, 9_990), (&viewer, "crown", 5, 500, 9_490), (&fan, "castle", 2, 2_000, 3_000)]
    {
        let token = if user.id == viewer.id { viewer_token.as_str() } else { user.token.as_str() };
        let r = app.gift(token, stream, gift, quantity).await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.body["giftId"], json!(gift));
        assert_eq!(r.body["coins"], json!(coins));
        assert_eq!(r.body["balance"], json!(balance));
        last = r.position();
    }
    let poor = app
        .post(&format!("/api/v1/streams/{stream}/gifts"), Some(&fan.token), json!({"giftId": "castle", "quantity": 4}))
        .await;
    assert_eq!((poor.status, poor.problem_code()), (402, "insufficient_funds"));
    let own = app
        .post(&format!("/api/v1/streams/{stream}/gifts"), Some(&host.token), json!({"giftId": "rose", "quantity": 1}))
        .await;
    assert_eq!((own.status, own.problem_code()), (403, "self_gift_forbidden"));

    // The leaderboard and the stream, read at the last gift's position.
    let board = app.get(&format!("/api/v1/streams/{stream}/leaderboard?minPosition={last}"), None).await;
    assert_eq!(board.status, 200, "{}", board.text);
    assert_eq!(
        board.body["items"],
        json!([{"userId": fan.id.to_string(), "coins": 2000}, {"userId": viewer.id.to_string(), "coins": 510}])
    );
    let live = app.get(&format!("/api/v1/streams/live?minPosition={last}"), None).await;
    assert!(
        live.body["items"].as_array().is_some_and(|items| items.iter().any(|s| s["id"] == json!(stream.to_string())))
    );
    let seen = app.get(&format!("/api/v1/streams/{stream}?minPosition={last}"), None).await;
    assert_eq!(seen.body["viewers"], json!(2));
    assert_eq!(seen.body["giftsCoins"], json!(2510));
    assert_eq!(seen.body["isLive"], json!(true));

    // The host ends the stream.
    let ended = app.post(&format!("/api/v1/streams/{stream}/end"), Some(&host.token), json!({})).await;
    assert_eq!(ended.status, 200, "{}", ended.text);
    let seen = app.get(&format!("/api/v1/streams/{stream}?minPosition={}", ended.position()), None).await;
    assert_eq!((seen.body["isLive"].clone(), seen.body["status"].clone()), (json!(false), json!("ended")));
    let late = app
        .post(&format!("/api/v1/streams/{stream}/gifts"), Some(&viewer.token), json!({"giftId": "rose", "quantity": 1}))
        .await;
    assert_eq!((late.status, late.problem_code()), (409, "stream_not_live"));

    // The reactor credits the host: floor(coins * 70%) per gift.
    let settled = app.settle_reactor().await;
    let host_earnings = 7 + 350 + 1_400;
    let wallet = app.wallet(&host, settled).await;
    assert_eq!(
        (wallet["coins"].clone(), wallet["earnings"].clone(), wallet["held"].clone()),
        (json!(0), json!(host_earnings), json!(0))
    );

    // Two payouts: one approved, one rejected.
    let first =
        app.post("/api/v1/payouts", Some(&host.token), json!({"coins": 1000, "destination": "iban:DE00"})).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.body["status"], json!("pending"));
    assert_eq!(first.body["fiat"], json!({"amount": "10.00", "currency": "usd"}));
    let second =
        app.post("/api/v1/payouts", Some(&host.token), json!({"coins": 500, "destination": "iban:DE00"})).await;
    assert_eq!(second.status, 201, "{}", second.text);
    let too_much =
        app.post("/api/v1/payouts", Some(&host.token), json!({"coins": 1000, "destination": "iban:DE00"})).await;
    assert_eq!((too_much.status, too_much.problem_code()), (402, "insufficient_earnings"));
    let held = app.wallet(&host, second.position()).await;
    assert_eq!((held["earnings"].clone(), held["held"].clone()), (json!(host_earnings - 1500), json!(1500)));

    let own_list = app.get(&format!("/api/v1/payouts?minPosition={}", second.position()), Some(&host.token)).await;
    assert_eq!(own_list.body["items"].as_array().map(Vec::len), Some(2));
    let pending = app
        .get(&format!("/api/v1/admin/payouts?status=pending&minPosition={}", second.position()), Some(&admin.token))
        .await;
    assert_eq!(pending.status, 200, "{}", pending.text);
    assert_eq!(pending.body["items"].as_array().map(Vec::len), Some(2));

    let first_id = first.body["payoutId"].as_str().expect("a payout id");
    let second_id = second.body["payoutId"].as_str().expect("a payout id");
    let approved = app.decide_payout(&admin, first_id, "approve", json!({"externalRef": "wire-1"})).await;
    assert_eq!(approved.status, 200, "{}", approved.text);
    assert_eq!(approved.body["status"], json!("paid"));
    let rejected = app.decide_payout(&admin, second_id, "reject", json!({"reason": "bank details"})).await;
    assert_eq!(rejected.status, 200, "{}", rejected.text);
    assert_eq!(rejected.body["status"], json!("rejected"));
    let again = app.decide_payout(&admin, first_id, "reject", json!({"reason": "twice"})).await;
    assert_eq!((again.status, again.problem_code()), (409, "payout_not_pending"));

    let after = app.wallet(&host, rejected.position()).await;
    assert_eq!((after["earnings"].clone(), after["held"].clone()), (json!(host_earnings - 1000), json!(0)));
    let paid = app
        .get(&format!("/api/v1/admin/payouts?status=paid&minPosition={}", rejected.position()), Some(&admin.token))
        .await;
    assert_eq!(paid.body["items"][0]["id"], json!(first_id));

    // Transactions and entries.
    let txs = app.get(&format!("/api/v1/transactions?minPosition={last}"), Some(&viewer.token)).await;
    let kinds: Vec<&str> =
        txs.body["items"].as_array().into_iter().flatten().filter_map(|t| t["type"].as_str()).collect();
    assert_eq!(kinds, vec!["gift_sent", "gift_sent", "adjustment"], "newest first");
    let sent = app.get(&format!("/api/v1/transactions?type=gift_sent&minPosition={last}"), Some(&viewer.token)).await;
    assert_eq!(sent.body["items"].as_array().map(Vec::len), Some(2));
    let entries = app
        .get(
            &format!("/api/v1/ledger/accounts/earnings:{}/entries?minPosition={}", host.id, rejected.position()),
            Some(&host.token),
        )
        .await;
    assert_eq!(entries.status, 200, "{}", entries.text);
    assert_eq!(entries.body["items"][0]["balanceAfter"], json!(host_earnings - 1000));

    // The books balance, and transit is empty once the reactor caught up.
    let end = app.settle_reactor().await;
    let trial = app.get(&format!("/api/v1/ledger/trial-balance?limit=200&minPosition={end}"), Some(&admin.token)).await;
    assert_eq!(trial.status, 200, "{}", trial.text);
    assert_eq!(trial.body["totalCoins"], json!(0));
    assert_eq!(balance_of(&trial.body, "transit:gifts"), 0);
    assert_eq!(balance_of(&trial.body, &format!("wallet:{}", viewer.id)), 9_490);
    assert_eq!(balance_of(&trial.body, &format!("wallet:{}", fan.id)), 3_000);
    assert_eq!(balance_of(&trial.body, "platform:revenue"), 2_510 - host_earnings);
    assert_eq!(balance_of(&trial.body, "external:payouts"), 1_000);
    assert_eq!(balance_of(&trial.body, "platform:adjustments"), -15_000);

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_returns_the_first_answer_and_a_changed_body_is_refused() {
    let app = TestApp::start().await;
    let Scene { admin, viewer, stream, .. } = app.stream_scene("idem", 1_000).await;
    let path = format!("/api/v1/streams/{stream}/gifts");
    let gift = json!({"giftId": "star", "quantity": 3});
    let send = |body: Value| {
        app.request_with(
            reqwest::Method::POST,
            &path,
            Some(&viewer.token),
            Some(body),
            &[("Idempotency-Key", "gift-1")],
        )
    };
    let first = send(gift.clone()).await;
    assert_eq!(first.status, 201, "{}", first.text);
    // The reactor's credit of the host must not count as an append below.
    let before = app.settle_reactor().await;
    let repeat = send(gift.clone()).await;
    assert_eq!((repeat.status, repeat.body.clone()), (first.status, first.body.clone()), "same status and body");
    assert_eq!(repeat.headers.get("idempotency-replayed").and_then(|v| v.to_str().ok()), Some("true"));
    let reused = send(json!({"giftId": "star", "quantity": 4})).await;
    assert_eq!((reused.status, reused.problem_code()), (409, "idempotency_key_reused"));
    assert_eq!(app.last_position().await, before, "neither the repeat nor the reuse appended anything");
    assert_eq!(app.wallet(&viewer, first.position()).await["coins"], json!(970));

    // The same key from another user is another command.
    let other = app.register("idem_other").await;
    app.fund(&admin, &other, 100).await;
    let theirs = app
        .request_with(reqwest::Method::POST, &path, Some(&other.token), Some(gift), &[("Idempotency-Key", "gift-1")])
        .await;
    assert_eq!(theirs.status, 201, "{}", theirs.text);
    assert_ne!(theirs.position(), first.position());

    // Registration: a repeat with the same key answers the first user.
    let body = json!({"email": "twice@test.halobuzz.com", "username": "twice", "password": PASSWORD});
    let register = |body: Value| {
        app.request_with(
            reqwest::Method::POST,
            "/api/v1/auth/register",
            None,
            Some(body),
            &[("Idempotency-Key", "reg-1")],
        )
    };
    let a = register(body.clone()).await;
    let b = register(body).await;
    assert_eq!((a.status, b.status), (201, 201));
    assert_eq!(a.body["user"], b.body["user"]);
    let c = register(json!({"email": "twice@test.halobuzz.com", "username": "twice", "password": "another password"}))
        .await;
    assert_eq!((c.status, c.problem_code()), (409, "idempotency_key_reused"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_command_repeated_with_its_key_gets_the_first_rejection_even_after_the_state_changed() {
    let app = TestApp::start().await;
    let admin = app.admin().await;
    let [host, viewer] = app.register_all(["memo_host", "memo_viewer"]).await;
    let stream = app.start_stream(&host, "remembered").await;
    let path = format!("/api/v1/streams/{stream}/gifts");
    let gift = json!({"giftId": "star", "quantity": 3});
    let send = |body: Value, key: &'static str| {
        let (app, path, token) = (&app, path.clone(), viewer.token.clone());
        async move {
            app.request_with(reqwest::Method::POST, &path, Some(&token), Some(body), &[("Idempotency-Key", key)]).await
        }
    };
    // Given an empty wallet, when a gift is sent: 402.
    let before = app.last_position().await;
    let first = send(gift.clone(), "poor-1").await;
    assert_eq!((first.status, first.problem_code()), (402, "insufficient_funds"), "{}", first.text);
    assert_eq!(app.last_position().await, before, "a rejection appends nothing to the log");
    // The wallet is funded; the same key still gets the first answer, and
    // nothing is spent.
    let funded = app.fund(&admin, &viewer, 1_000).await;
    let repeat = send(gift.clone(), "poor-1").await;
    assert_eq!((repeat.status, &repeat.body), (first.status, &first.body), "same status and body");
    assert_eq!(repeat.content_type(), "application/problem+json");
    assert_eq!(repeat.headers.get("idempotency-replayed").and_then(|v| v.to_str().ok()), Some("true"));
    assert_eq!(app.wallet(&viewer, funded).await["coins"], json!(1_000));
    // The same key with another body is refused; a new key is decided anew.
    let reused = send(json!({"giftId": "star", "quantity": 4}), "poor-1").await;
    assert_eq!((reused.status, reused.problem_code()), (409, "idempotency_key_reused"));
    let fresh = send(gift.clone(), "rich-1").await;
    assert_eq!(fresh.status, 201, "{}", fresh.text);
    // A request refused as invalid is not remembered: fixed, it goes through.
    let invalid = send(json!({"giftId": "star", "quantity": 0}), "fix-1").await;
    assert_eq!(invalid.status, 422, "{}", invalid.text);
    let fixed = send(json!({"giftId": "star", "quantity": 1}), "fix-1").await;
    assert_eq!(fixed.status, 201, "{}", fixed.text);
    // Without a key, every request is decided anew.
    let no_key = app.post(&path, Some(&viewer.token), json!({"giftId": "star", "quantity": 1})).await;
    assert_eq!(no_key.status, 201, "{}", no_key.text);
    app.stop().await;
}
