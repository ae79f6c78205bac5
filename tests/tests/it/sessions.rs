//! Issue 17, item 4, "sessions cannot be ended": refresh tokens rotate on
//! use, a reused one ends its whole login, logout ends a login, and an
//! admin revokes every session of a user (their old access tokens refused
//! for moving coins and on privileged routes).

use halobuzz_tests::http::{PASSWORD, Resp, TEST_JWT_REFRESH_SECRET, TestApp, User, forge_token};
use serde_json::json;

fn refresh_body(token: &str) -> serde_json::Value {
    json!({"refreshToken": token})
}

async fn refresh(app: &TestApp, token: &str) -> Resp {
    app.post("/api/v1/auth/refresh", None, refresh_body(token)).await
}

/// A fresh login of `user`: (access token, refresh token).
async fn login(app: &TestApp, user: &User) -> (String, String) {
    let r = app.post("/api/v1/auth/login", None, json!({"email": user.email, "password": PASSWORD})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    (r.body["accessToken"].as_str().expect("access").into(), r.body["refreshToken"].as_str().expect("refresh").into())
}

fn tokens(r: &Resp) -> (String, String) {
    assert_eq!(r.status, 200, "{}", r.text);
    (r.body["accessToken"].as_str().expect("access").into(), r.body["refreshToken"].as_str().expect("refresh").into())
}

fn no_store(r: &Resp) -> bool {
    r.headers.get("cache-control").and_then(|v| v.to_str().ok()) == Some("no-store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_a_reused_token_ends_the_whole_login() {
    let app = TestApp::start().await;
    let user = app.register("rotator").await;
    let first = refresh(&app, &user.refresh_token).await;
    assert!(no_store(&first), "{:?}", first.headers);
    let (access_1, refresh_1) = tokens(&first);
    assert_ne!(refresh_1, user.refresh_token, "a new refresh token");
    assert_eq!(app.get("/api/v1/users/me", Some(&access_1)).await.status, 200);
    // The new one works, once.
    let (_, refresh_2) = tokens(&refresh(&app, &refresh_1).await);

    // The first token again: already rotated, so a reuse.
    let reused = refresh(&app, &user.refresh_token).await;
    assert_eq!((reused.status, reused.problem_code()), (401, "refresh_token_reused"), "{}", reused.text);
    assert!(reused.content_type().starts_with("application/problem+json"), "{}", reused.content_type());
    // The whole family is revoked: the newest token too, and the reused one
    // stays a reuse.
    let newest = refresh(&app, &refresh_2).await;
    assert_eq!((newest.status, newest.problem_code()), (401, "session_revoked"), "{}", newest.text);
    let again = refresh(&app, &refresh_1).await;
    assert_eq!((again.status, again.problem_code()), (401, "refresh_token_reused"), "{}", again.text);
    // Another login of the same user is another family: untouched.
    let (_, other_login) = login(&app, &user).await;
    assert_eq!(refresh(&app, &other_login).await.status, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_issued_before_sessions_rotates_once_into_a_family() {
    let app = TestApp::start().await;
    let user = app.register("veteran").await;
    // As issued before: no family, generation or epoch; its jti a UUID.
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "sub": user.id.to_string(), "typ": "refresh", "roles": ["user"],
        "iat": now - 60, "exp": now + 3600, "jti": uuid::Uuid::now_v7().to_string(),
    });
    let old = forge_token(&claims, jsonwebtoken::Algorithm::HS256, TEST_JWT_REFRESH_SECRET);
    let (_, rotated) = tokens(&refresh(&app, &old).await);
    assert_eq!(refresh(&app, &rotated).await.status, 200, "its successor rotates on");
    let reused = refresh(&app, &old).await;
    assert_eq!((reused.status, reused.problem_code()), (401, "refresh_token_reused"), "{}", reused.text);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_concurrent_refreshes_with_one_token_exactly_one_wins() {
    const RACERS: usize = 6;
    let app = TestApp::start().await;
    let user = app.register("racer").await;
    let racers = (0..RACERS).map(|_| refresh(&app, &user.refresh_token));
    let answers = futures_util::future::join_all(racers).await;
    let won: Vec<&Resp> = answers.iter().filter(|r| r.status == 200).collect();
    assert_eq!(won.len(), 1, "{:?}", answers.iter().map(|r| (r.status, r.text.clone())).collect::<Vec<_>>());
    for lost in answers.iter().filter(|r| r.status != 200) {
        // The first loser ends the family as a reuse; the later ones find
        // it ended (a reuse still, or nothing else).
        assert_eq!((lost.status, lost.problem_code()), (401, "refresh_token_reused"), "{}", lost.text);
    }
    // The winner's token belongs to the family the reuse ended.
    let (_, winner) = tokens(won[0]);
    assert_eq!(refresh(&app, &winner).await.problem_code(), "session_revoked");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_login_and_never_anothers() {
    let app = TestApp::start().await;
    let [user, other] = app.register_all(["leaver", "bystander"]).await;
    let (access, refresh_token) = login(&app, &user).await;
    let (_, kept) = login(&app, &user).await;

    // Someone else's refresh token: refused, and their session lives on.
    let foreign = app.post("/api/v1/auth/logout", Some(&access), refresh_body(&other.refresh_token)).await;
    assert_eq!((foreign.status, foreign.problem_code()), (403, "forbidden"), "{}", foreign.text);
    // Not a refresh token (an access token), no caller: refused.
    let wrong = app.post("/api/v1/auth/logout", Some(&access), refresh_body(&access)).await;
    assert_eq!((wrong.status, wrong.problem_code()), (401, "unauthorized"), "{}", wrong.text);
    let anonymous = app.post("/api/v1/auth/logout", None, refresh_body(&refresh_token)).await;
    assert_eq!((anonymous.status, anonymous.problem_code()), (401, "unauthorized"), "{}", anonymous.text);

    let out = app.post("/api/v1/auth/logout", Some(&access), refresh_body(&refresh_token)).await;
    assert_eq!(out.status, 204, "{}", out.text);
    assert!(no_store(&out), "{:?}", out.headers);
    let after = refresh(&app, &refresh_token).await;
    assert_eq!((after.status, after.problem_code()), (401, "session_revoked"), "{}", after.text);
    // Logging out again changes nothing and answers alike.
    assert_eq!(app.post("/api/v1/auth/logout", Some(&access), refresh_body(&refresh_token)).await.status, 204);
    // The user's other login and the bystander's still refresh.
    assert_eq!(refresh(&app, &kept).await.status, 200);
    assert_eq!(refresh(&app, &other.refresh_token).await.status, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_revocation_refuses_old_tokens_for_coins_and_privileges_and_a_new_login_works() {
    let app = TestApp::start().await;
    let admin = app.admin().await;
    let [host, viewer, deputy] = app.register_all(["revhost", "revviewer", "revdeputy"]).await;
    let granted = app
        .post(&format!("/api/v1/admin/users/{}/roles", deputy.id), Some(&admin.token), json!({"grant": ["admin"]}))
        .await;
    assert_eq!(granted.status, 200, "{}", granted.text);
    let (deputy_token, _) = login(&app, &deputy).await;
    app.fund(&admin, &viewer, 1_000).await;
    let stream = app.start_stream(&host, "revocation").await;
    let gift_path = format!("/api/v1/streams/{stream}/gifts");
    let gift = json!({"giftId": "rose", "quantity": 1});
    let payout = json!({"coins": 100, "destination": "acct"});
    // Before: the tokens work.
    assert_eq!(app.post(&gift_path, Some(&viewer.token), gift.clone()).await.status, 201);
    assert_eq!(app.get("/api/v1/admin/payouts", Some(&deputy_token)).await.status, 200);

    // Only an admin revokes; an unknown user has no sessions.
    let path = |id: uuid::Uuid| format!("/api/v1/admin/users/{id}/sessions/revoke");
    assert_eq!(app.post(&path(viewer.id), Some(&host.token), json!({})).await.status, 403);
    let unknown = app.post(&path(uuid::Uuid::now_v7()), Some(&admin.token), json!({})).await;
    assert_eq!((unknown.status, unknown.problem_code()), (404, "not_found"), "{}", unknown.text);
    for target in [&viewer, &deputy] {
        let r = app.post(&path(target.id), Some(&admin.token), json!({})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.position() > 0);
        assert_eq!(r.body["sessionsEpoch"], json!(1));
    }

    // The viewer's old access token moves no coin, and the refresh token
    // renews nothing.
    let refused_gift = app.post(&gift_path, Some(&viewer.token), gift.clone()).await;
    assert_eq!((refused_gift.status, refused_gift.problem_code()), (401, "session_revoked"), "{}", refused_gift.text);
    assert!(refused_gift.content_type().starts_with("application/problem+json"));
    let refused_payout = app.post("/api/v1/payouts", Some(&viewer.token), payout.clone()).await;
    assert_eq!(
        (refused_payout.status, refused_payout.problem_code()),
        (401, "session_revoked"),
        "{}",
        refused_payout.text
    );
    let refused_refresh = refresh(&app, &viewer.refresh_token).await;
    assert_eq!((refused_refresh.status, refused_refresh.problem_code()), (401, "session_revoked"));
    // The deputy's old token opens no privileged route, money or not.
    for r in [
        app.get("/api/v1/admin/payouts", Some(&deputy_token)).await,
        app.get("/api/v1/ledger/trial-balance", Some(&deputy_token)).await,
        app.post(
            "/api/v1/admin/adjustments",
            Some(&deputy_token),
            json!({"userId": viewer.id, "coins": 5, "reason": "stolen token"}),
        )
        .await,
    ] {
        assert_eq!((r.status, r.problem_code()), (401, "session_revoked"), "{}", r.text);
    }

    // A login after the revocation works everywhere.
    let (viewer_token, viewer_refresh) = login(&app, &viewer).await;
    let sent = app.post(&gift_path, Some(&viewer_token), gift).await;
    assert_eq!(sent.status, 201, "{}", sent.text);
    assert_eq!(sent.body["balance"], json!(1_000 - 2), "only the gifts of valid tokens moved coins");
    let (_, renewed) = tokens(&refresh(&app, &viewer_refresh).await);
    assert!(!renewed.is_empty());
    let (deputy_token, _) = login(&app, &deputy).await;
    assert_eq!(app.get("/api/v1/admin/payouts", Some(&deputy_token)).await.status, 200);
    app.stop().await;
}
