//! 100 concurrent clients gifting to one stream, each gift sent twice at
//! once and retried later with the same `Idempotency-Key`: every balance is
//! exact, every repeat answers the first answer.

use std::sync::Arc;

use futures_util::future::join_all;
use halobuzz_tests::http::{TestApp, User, balance_of};
use reqwest::Method;
use serde_json::{Value, json};

const CLIENTS: usize = 100;
const GIFTS_PER_CLIENT: usize = 5;
/// `heart` costs 5 coins; the host keeps floor(5 * 70%) = 3 of each.
const HEART_COINS: i64 = 5;
const HOST_SHARE_PER_HEART: i64 = 3;
const FUNDS: i64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_clients_retrying_gifts_leave_exact_balances() {
    let app = Arc::new(TestApp::start().await);
    let admin = app.admin().await;
    let host = app.register("crowd_host").await;
    let stream = app.start_stream(&host, "crowd").await;
    let viewers: Vec<User> = join_all((0..CLIENTS).map(|i| {
        let app = app.clone();
        async move { app.register(&format!("crowd_{i}")).await }
    }))
    .await;
    join_all(viewers.iter().map(|v| app.fund(&admin, v, FUNDS))).await;

    let path = format!("/api/v1/streams/{stream}/gifts");
    let body = json!({"giftId": "heart", "quantity": 1});
    let send = |viewer: &User, key: String| {
        let app = app.clone();
        let (path, body, token) = (path.clone(), body.clone(), viewer.token.clone());
        async move { app.request_with(Method::POST, &path, Some(&token), Some(body), &[("Idempotency-Key", &key)]).await }
    };
    // Every client sends its gifts one after the other, each twice at once
    // (a retry racing the original); all clients at once.
    let firsts: Vec<Vec<(String, u16, Value)>> = join_all(viewers.iter().map(|viewer| {
        let send = &send;
        async move {
            let mut answers = Vec::with_capacity(GIFTS_PER_CLIENT);
            for g in 0..GIFTS_PER_CLIENT {
                let key = format!("{}-gift-{g}", viewer.username);
                let (a, b) = tokio::join!(send(viewer, key.clone()), send(viewer, key.clone()));
                assert_eq!(a.status, 201, "{}", a.text);
                assert_eq!((b.status, &b.body), (a.status, &a.body), "a racing retry answers the first answer");
                answers.push((key, a.status, a.body));
            }
            answers
        }
    }))
    .await;
    // Late retries of every gift: the first answer again, nothing appended
    // (once the reactor has credited the host, which appends).
    let before = app.settle_reactor().await;
    let retries = join_all(viewers.iter().zip(&firsts).flat_map(|(viewer, answers)| {
        answers.iter().map(move |(key, status, body)| {
            let fut = send(viewer, key.clone());
            async move {
                let r = fut.await;
                assert_eq!((r.status, &r.body), (*status, body), "a late retry answers the first answer");
                assert_eq!(r.headers.get("idempotency-replayed").and_then(|v| v.to_str().ok()), Some("true"));
            }
        })
    }));
    retries.await;
    assert_eq!(app.last_position().await, before, "retries appended nothing");

    // Exact balances, once the reactor credited the host.
    let gifts = i64::try_from(CLIENTS * GIFTS_PER_CLIENT).unwrap_or(i64::MAX);
    let end = app.settle_reactor().await;
    let trial = app.get(&format!("/api/v1/ledger/trial-balance?limit=200&minPosition={end}"), Some(&admin.token)).await;
    assert_eq!(trial.status, 200, "{}", trial.text);
    assert_eq!(trial.body["totalCoins"], json!(0));
    assert_eq!(balance_of(&trial.body, "transit:gifts"), 0);
    assert_eq!(balance_of(&trial.body, &format!("earnings:{}", host.id)), gifts * HOST_SHARE_PER_HEART);
    assert_eq!(balance_of(&trial.body, "platform:revenue"), gifts * (HEART_COINS - HOST_SHARE_PER_HEART));
    let per_viewer = FUNDS - HEART_COINS * i64::try_from(GIFTS_PER_CLIENT).unwrap_or(0);
    for viewer in &viewers {
        assert_eq!(balance_of(&trial.body, &format!("wallet:{}", viewer.id)), per_viewer, "{}", viewer.username);
    }
    let seen = app.get(&format!("/api/v1/streams/{stream}?minPosition={end}"), None).await;
    assert_eq!(seen.body["giftsCoins"], json!(gifts * HEART_COINS));
    let board = app.get(&format!("/api/v1/streams/{stream}/leaderboard?limit=200&minPosition={end}"), None).await;
    let items = board.body["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), CLIENTS);
    assert!(items.iter().all(|i| i["coins"] == json!(HEART_COINS * 5)), "{}", board.text);
    let host_wallet = app.wallet(&host, end).await;
    assert_eq!(host_wallet["earnings"], json!(gifts * HOST_SHARE_PER_HEART));
    match Arc::try_unwrap(app) {
        Ok(app) => app.stop().await,
        Err(_) => panic!("the app is still shared"),
    }
}
