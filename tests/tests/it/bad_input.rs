//! Bad input on every command route (and a few queries): missing fields,
//! wrong types, zero, negative and huge quantities, unknown ids, oversized
//! bodies, malformed JSON, bad, expired and unsigned tokens. Each gets a 4xx
//! problem+json with the right code, never a 5xx, and nothing is appended
//! to the log.

use halobuzz_tests::http::{Scene, TEST_JWT_SECRET, TestApp, alg_none_token, forge_token};
use jsonwebtoken::Algorithm;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

enum Body {
    Json(Value),
    Raw(&'static str, Vec<u8>),
    None,
}

struct Case {
    what: &'static str,
    method: Method,
    path: String,
    token: Option<String>,
    body: Body,
    headers: Vec<(&'static str, String)>,
    status: u16,
    code: &'static str,
}

fn case(
    what: &'static str,
    method: Method,
    path: impl Into<String>,
    token: Option<&str>,
    body: Body,
    status: u16,
    code: &'static str,
) -> Case {
    Case { what, method, path: path.into(), token: token.map(str::to_string), body, headers: vec![], status, code }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_problem_with_the_right_code_and_appends_nothing() {
    let app = TestApp::start().await;
    let Scene { admin, host, viewer, stream } = app.stream_scene("bad", 20_000).await;
    let other_host = app.register("bad_host_2").await;
    let ended = app.start_stream(&other_host, "ended").await;
    let r = app.post(&format!("/api/v1/streams/{ended}/end"), Some(&other_host.token), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The host earns 7,000 coins and asks for a payout.
    let r = app.gift(&viewer.token, stream, "castle", 10).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let settled = app.settle_reactor().await;
    assert_eq!(app.wallet(&host, settled).await["earnings"], json!(7_000));
    let payout = app.post("/api/v1/payouts", Some(&host.token), json!({"coins": 1000, "destination": "iban"})).await;
    assert_eq!(payout.status, 201, "{}", payout.text);
    let payout_id = payout.body["payoutId"].as_str().unwrap_or_default().to_string();
    app.eventually(
        &format!("/api/v1/admin/payouts?status=pending&minPosition={}", payout.position()),
        Some(&admin.token),
        |r| r.body["items"].as_array().is_some_and(|i| !i.is_empty()),
    )
    .await;

    let now = chrono::Utc::now().timestamp();
    let claims = |exp: i64| json!({"sub": viewer.id.to_string(), "typ": "access", "roles": ["admin"], "iat": now - 7200, "exp": exp, "jti": "t"});
    let expired = forge_token(&claims(now - 3600), Algorithm::HS256, TEST_JWT_SECRET);
    let wrong_secret =
        forge_token(&claims(now + 600), Algorithm::HS256, "not-the-secret-not-the-secret-not-the-secret");
    let hs512 = forge_token(&claims(now + 600), Algorithm::HS512, TEST_JWT_SECRET);
    let unsigned = alg_none_token(admin.id);
    let unknown = Uuid::now_v7();
    let big = vec![b' '; 70 * 1024];
    let oversized = {
        let mut body = br#"{"giftId":"rose","quantity":1,"padding":""#.to_vec();
        body.extend(std::iter::repeat_n(b'x', 70 * 1024));
        body.extend(br#""}"#);
        body
    };
    let gifts = format!("/api/v1/streams/{stream}/gifts");
    let (v, h, a) = (Some(viewer.token.as_str()), Some(host.token.as_str()), Some(admin.token.as_str()));
    use Body::{Json as J, Raw};
    let post = Method::POST;
    let get = Method::GET;
    let mut cases = vec![
        // Registration.
        case(
            "malformed JSON",
            post.clone(),
            "/api/v1/auth/register",
            None,
            Raw("application/json", br#"{"email":"#.to_vec()),
            400,
            "malformed_json",
        ),
        case(
            "empty body",
            post.clone(),
            "/api/v1/auth/register",
            None,
            Raw("application/json", vec![]),
            400,
            "malformed_json",
        ),
        case(
            "not JSON",
            post.clone(),
            "/api/v1/auth/register",
            None,
            Raw("text/plain", b"email=a".to_vec()),
            415,
            "unsupported_media_type",
        ),
        case("missing fields", post.clone(), "/api/v1/auth/register", None, J(json!({})), 422, "validation_failed"),
        case("a JSON array", post.clone(), "/api/v1/auth/register", None, J(json!([1, 2])), 422, "validation_failed"),
        case(
            "wrong types",
            post.clone(),
            "/api/v1/auth/register",
            None,
            J(json!({"email": 5, "username": [], "password": true})),
            422,
            "validation_failed",
        ),
        case(
            "not an email",
            post.clone(),
            "/api/v1/auth/register",
            None,
            J(json!({"email": "nope", "username": "nope", "password": "long enough"})),
            422,
            "validation_failed",
        ),
        case(
            "bad username",
            post.clone(),
            "/api/v1/auth/register",
            None,
            J(json!({"email": "u@x.io", "username": "a b", "password": "long enough"})),
            422,
            "validation_failed",
        ),
        case(
            "short password",
            post.clone(),
            "/api/v1/auth/register",
            None,
            J(json!({"email": "u@x.io", "username": "ux", "password": "short"})),
            422,
            "validation_failed",
        ),
        case(
            "email taken",
            post.clone(),
            "/api/v1/auth/register",
            None,
            J(json!({"email": viewer.email, "username": "fresh_name", "password": "long enough"})),
            409,
            "email_taken",
        ),
        case(
            "username taken",
            post.clone(),
            "/api/v1/auth/register",
            None,
            J(json!({"email": "fresh@x.io", "username": "BAD_VIEWER", "password": "long enough"})),
            409,
            "username_taken",
        ),
        case(
            "oversized body",
            post.clone(),
            "/api/v1/auth/register",
            None,
            Raw("application/json", big.clone()),
            413,
            "payload_too_large",
        ),
        // Login and refresh (no appends, but the same rules).
        case(
            "wrong password",
            post.clone(),
            "/api/v1/auth/login",
            None,
            J(json!({"email": viewer.email, "password": "wrong password"})),
            401,
            "unauthorized",
        ),
        case(
            "unknown email",
            post.clone(),
            "/api/v1/auth/login",
            None,
            J(json!({"email": "nobody@x.io", "password": "wrong password"})),
            401,
            "unauthorized",
        ),
        case(
            "login without password",
            post.clone(),
            "/api/v1/auth/login",
            None,
            J(json!({"email": viewer.email})),
            422,
            "validation_failed",
        ),
        case(
            "garbage refresh token",
            post.clone(),
            "/api/v1/auth/refresh",
            None,
            J(json!({"refreshToken": "garbage"})),
            401,
            "unauthorized",
        ),
        case(
            "access token as refresh token",
            post.clone(),
            "/api/v1/auth/refresh",
            None,
            J(json!({"refreshToken": viewer.token})),
            401,
            "unauthorized",
        ),
        // Tokens, on a command route.
        case(
            "no token",
            post.clone(),
            "/api/v1/streams",
            None,
            J(json!({"title": "t", "category": "c"})),
            401,
            "unauthorized",
        ),
        case(
            "garbage token",
            post.clone(),
            "/api/v1/streams",
            Some("garbage"),
            J(json!({"title": "t", "category": "c"})),
            401,
            "unauthorized",
        ),
        case(
            "expired token",
            post.clone(),
            "/api/v1/streams",
            Some(&expired),
            J(json!({"title": "t", "category": "c"})),
            401,
            "unauthorized",
        ),
        case(
            "token with another secret",
            post.clone(),
            "/api/v1/streams",
            Some(&wrong_secret),
            J(json!({"title": "t", "category": "c"})),
            401,
            "unauthorized",
        ),
        case(
            "HS512 token",
            post.clone(),
            "/api/v1/streams",
            Some(&hs512),
            J(json!({"title": "t", "category": "c"})),
            401,
            "unauthorized",
        ),
        case(
            "alg none token",
            post.clone(),
            "/api/v1/admin/adjustments",
            Some(&unsigned),
            J(json!({"userId": viewer.id, "coins": 1000, "reason": "forged"})),
            401,
            "unauthorized",
        ),
        case(
            "refresh token as access token",
            post.clone(),
            "/api/v1/streams",
            Some(&viewer.refresh_token),
            J(json!({"title": "t", "category": "c"})),
            401,
            "unauthorized",
        ),
        // Streams.
        case(
            "empty title",
            post.clone(),
            "/api/v1/streams",
            v,
            J(json!({"title": " ", "category": "c"})),
            422,
            "validation_failed",
        ),
        case(
            "title too long",
            post.clone(),
            "/api/v1/streams",
            v,
            J(json!({"title": "x".repeat(500), "category": "c"})),
            422,
            "validation_failed",
        ),
        case(
            "missing category",
            post.clone(),
            "/api/v1/streams",
            v,
            J(json!({"title": "t"})),
            422,
            "validation_failed",
        ),
        case(
            "title of the wrong type",
            post.clone(),
            "/api/v1/streams",
            v,
            J(json!({"title": 7, "category": "c"})),
            422,
            "validation_failed",
        ),
        case(
            "already live",
            post.clone(),
            "/api/v1/streams",
            h,
            J(json!({"title": "t", "category": "c"})),
            409,
            "stream_already_live",
        ),
        case(
            "end an unknown stream",
            post.clone(),
            format!("/api/v1/streams/{unknown}/end"),
            h,
            J(json!({})),
            404,
            "not_found",
        ),
        case(
            "end by a viewer",
            post.clone(),
            format!("/api/v1/streams/{stream}/end"),
            v,
            J(json!({})),
            403,
            "forbidden",
        ),
        case(
            "end an ended stream",
            post.clone(),
            format!("/api/v1/streams/{ended}/end"),
            Some(&other_host.token),
            J(json!({})),
            409,
            "stream_not_live",
        ),
        case(
            "join an unknown stream",
            post.clone(),
            format!("/api/v1/streams/{unknown}/join"),
            v,
            J(json!({})),
            404,
            "not_found",
        ),
        case("join a non-id", post.clone(), "/api/v1/streams/not-an-id/join", v, J(json!({})), 404, "not_found"),
        case(
            "join an ended stream",
            post.clone(),
            format!("/api/v1/streams/{ended}/join"),
            v,
            J(json!({})),
            409,
            "stream_not_live",
        ),
        case(
            "leave an unknown stream",
            post.clone(),
            format!("/api/v1/streams/{unknown}/leave"),
            v,
            J(json!({})),
            404,
            "not_found",
        ),
        // Gifts.
        case(
            "zero quantity",
            post.clone(),
            gifts.clone(),
            v,
            J(json!({"giftId": "rose", "quantity": 0})),
            422,
            "validation_failed",
        ),
        case(
            "negative quantity",
            post.clone(),
            gifts.clone(),
            v,
            J(json!({"giftId": "rose", "quantity": -1})),
            422,
            "validation_failed",
        ),
        case(
            "quantity over the maximum",
            post.clone(),
            gifts.clone(),
            v,
            J(json!({"giftId": "rose", "quantity": 10_001})),
            422,
            "validation_failed",
        ),
        case(
            "i64::MAX quantity",
            post.clone(),
            gifts.clone(),
            v,
            J(json!({"giftId": "castle", "quantity": i64::MAX})),
            422,
            "validation_failed",
        ),
        case(
            "quantity beyond i64",
            post.clone(),
            gifts.clone(),
            v,
            Raw("application/json", br#"{"giftId":"rose","quantity":100000000000000000000000}"#.to_vec()),
            422,
            "validation_failed",
        ),
        case(
            "fractional quantity",
            post.clone(),
            gifts.clone(),
            v,
            J(json!({"giftId": "rose", "quantity": 1.5})),
            422,
            "validation_failed",
        ),
        case(
            "quantity as a string",
            post.clone(),
            gifts.clone(),
            v,
            J(json!({"giftId": "rose", "quantity": "ten"})),
            422,
            "validation_failed",
        ),
        case("missing giftId", post.clone(), gifts.clone(), v, J(json!({"quantity": 1})), 422, "validation_failed"),
        case(
            "unknown gift",
            post.clone(),
            gifts.clone(),
            v,
            J(json!({"giftId": "unicorn", "quantity": 1})),
            422,
            "validation_failed",
        ),
        case(
            "gift: malformed JSON",
            post.clone(),
            gifts.clone(),
            v,
            Raw("application/json", b"{giftId: rose}".to_vec()),
            400,
            "malformed_json",
        ),
        case(
            "gift: oversized body",
            post.clone(),
            gifts.clone(),
            v,
            Raw("application/json", oversized),
            413,
            "payload_too_large",
        ),
        case(
            "gift to an unknown stream",
            post.clone(),
            format!("/api/v1/streams/{unknown}/gifts"),
            v,
            J(json!({"giftId": "rose", "quantity": 1})),
            404,
            "not_found",
        ),
        case(
            "gift to an ended stream",
            post.clone(),
            format!("/api/v1/streams/{ended}/gifts"),
            v,
            J(json!({"giftId": "rose", "quantity": 1})),
            409,
            "stream_not_live",
        ),
        case(
            "gift beyond the wallet",
            post.clone(),
            gifts.clone(),
            v,
            J(json!({"giftId": "castle", "quantity": 10_000})),
            402,
            "insufficient_funds",
        ),
        case(
            "gift to one's own stream",
            post.clone(),
            gifts.clone(),
            h,
            J(json!({"giftId": "rose", "quantity": 1})),
            403,
            "self_gift_forbidden",
        ),
        // Payouts.
        case(
            "zero payout",
            post.clone(),
            "/api/v1/payouts",
            h,
            J(json!({"coins": 0, "destination": "iban"})),
            422,
            "validation_failed",
        ),
        case(
            "negative payout",
            post.clone(),
            "/api/v1/payouts",
            h,
            J(json!({"coins": -100, "destination": "iban"})),
            422,
            "validation_failed",
        ),
        case(
            "payout below the minimum",
            post.clone(),
            "/api/v1/payouts",
            h,
            J(json!({"coins": 50, "destination": "iban"})),
            422,
            "below_minimum",
        ),
        case(
            "payout beyond the earnings",
            post.clone(),
            "/api/v1/payouts",
            h,
            J(json!({"coins": 1_000_000_000_000_000_i64, "destination": "iban"})),
            402,
            "insufficient_earnings",
        ),
        case(
            "payout beyond i64",
            post.clone(),
            "/api/v1/payouts",
            h,
            Raw("application/json", br#"{"coins":1e30,"destination":"iban"}"#.to_vec()),
            422,
            "validation_failed",
        ),
        case(
            "empty destination",
            post.clone(),
            "/api/v1/payouts",
            h,
            J(json!({"coins": 100, "destination": ""})),
            422,
            "validation_failed",
        ),
        case(
            "payout without destination",
            post.clone(),
            "/api/v1/payouts",
            h,
            J(json!({"coins": 100})),
            422,
            "validation_failed",
        ),
        // Payout settlement.
        case(
            "approve without reference",
            post.clone(),
            format!("/api/v1/admin/payouts/{payout_id}/approve"),
            a,
            J(json!({})),
            422,
            "validation_failed",
        ),
        case(
            "approve with an empty reference",
            post.clone(),
            format!("/api/v1/admin/payouts/{payout_id}/approve"),
            a,
            J(json!({"externalRef": ""})),
            422,
            "validation_failed",
        ),
        case(
            "approve an unknown payout",
            post.clone(),
            format!("/api/v1/admin/payouts/{unknown}/approve"),
            a,
            J(json!({"externalRef": "r"})),
            404,
            "not_found",
        ),
        case(
            "approve a non-id",
            post.clone(),
            "/api/v1/admin/payouts/42/approve",
            a,
            J(json!({"externalRef": "r"})),
            404,
            "not_found",
        ),
        case(
            "approve as the host",
            post.clone(),
            format!("/api/v1/admin/payouts/{payout_id}/approve"),
            h,
            J(json!({"externalRef": "r"})),
            403,
            "forbidden",
        ),
        case(
            "reject with an empty reason",
            post.clone(),
            format!("/api/v1/admin/payouts/{payout_id}/reject"),
            a,
            J(json!({"reason": "  "})),
            422,
            "validation_failed",
        ),
        case(
            "reject an unknown payout",
            post.clone(),
            format!("/api/v1/admin/payouts/{unknown}/reject"),
            a,
            J(json!({"reason": "r"})),
            404,
            "not_found",
        ),
        // Adjustments.
        case(
            "zero adjustment",
            post.clone(),
            "/api/v1/admin/adjustments",
            a,
            J(json!({"userId": viewer.id, "coins": 0, "reason": "r"})),
            422,
            "validation_failed",
        ),
        case(
            "adjustment of an unknown user",
            post.clone(),
            "/api/v1/admin/adjustments",
            a,
            J(json!({"userId": unknown, "coins": 10, "reason": "r"})),
            404,
            "not_found",
        ),
        case(
            "adjustment of a non-id",
            post.clone(),
            "/api/v1/admin/adjustments",
            a,
            J(json!({"userId": "abc", "coins": 10, "reason": "r"})),
            422,
            "validation_failed",
        ),
        case(
            "adjustment without reason",
            post.clone(),
            "/api/v1/admin/adjustments",
            a,
            J(json!({"userId": viewer.id, "coins": 10, "reason": ""})),
            422,
            "validation_failed",
        ),
        case(
            "debit beyond the wallet",
            post.clone(),
            "/api/v1/admin/adjustments",
            a,
            J(json!({"userId": viewer.id, "coins": -1_000_000, "reason": "r"})),
            402,
            "insufficient_funds",
        ),
        // Past ±(2^53 - 1), a number is refused as it is read.
        case(
            "i64::MIN adjustment",
            post.clone(),
            "/api/v1/admin/adjustments",
            a,
            J(json!({"userId": viewer.id, "coins": i64::MIN, "reason": "r"})),
            422,
            "validation_failed",
        ),
        case(
            "adjustment beyond i64",
            post.clone(),
            "/api/v1/admin/adjustments",
            a,
            Raw(
                "application/json",
                format!(r#"{{"userId":"{}","coins":99999999999999999999,"reason":"r"}}"#, viewer.id).into_bytes(),
            ),
            422,
            "validation_failed",
        ),
        case(
            "adjustment by a viewer",
            post.clone(),
            "/api/v1/admin/adjustments",
            v,
            J(json!({"userId": viewer.id, "coins": 10, "reason": "r"})),
            403,
            "forbidden",
        ),
        // Roles.
        case(
            "unknown role",
            post.clone(),
            format!("/api/v1/admin/users/{}/roles", viewer.id),
            a,
            J(json!({"grant": ["superuser"]})),
            422,
            "validation_failed",
        ),
        case(
            "revoke the user role",
            post.clone(),
            format!("/api/v1/admin/users/{}/roles", viewer.id),
            a,
            J(json!({"revoke": ["user"]})),
            422,
            "validation_failed",
        ),
        case(
            "roles not a list",
            post.clone(),
            format!("/api/v1/admin/users/{}/roles", viewer.id),
            a,
            J(json!({"grant": "admin"})),
            422,
            "validation_failed",
        ),
        case(
            "roles of an unknown user",
            post.clone(),
            format!("/api/v1/admin/users/{unknown}/roles"),
            a,
            J(json!({"grant": ["ops"]})),
            404,
            "not_found",
        ),
        // Queries.
        case(
            "unknown transaction type",
            get.clone(),
            "/api/v1/transactions?type=bogus",
            v,
            Body::None,
            422,
            "validation_failed",
        ),
        case(
            "limit not a number",
            get.clone(),
            "/api/v1/transactions?limit=abc",
            v,
            Body::None,
            422,
            "validation_failed",
        ),
        case(
            "negative minPosition",
            get.clone(),
            "/api/v1/wallet?minPosition=-1",
            v,
            Body::None,
            422,
            "validation_failed",
        ),
        case("foreign cursor", get.clone(), "/api/v1/transactions?cursor=zz", v, Body::None, 422, "validation_failed"),
        case(
            "unknown payout status",
            get.clone(),
            "/api/v1/admin/payouts?status=lost",
            a,
            Body::None,
            422,
            "validation_failed",
        ),
        case("unknown stream", get.clone(), format!("/api/v1/streams/{unknown}"), None, Body::None, 404, "not_found"),
        case("not an account", get.clone(), "/api/v1/ledger/accounts/bogus/entries", a, Body::None, 404, "not_found"),
        case("unknown route", get.clone(), "/api/v1/nothing-here", None, Body::None, 404, "not_found"),
        case("wrong method", Method::PUT, "/api/v1/wallet", v, Body::None, 405, "method_not_allowed"),
    ];
    let mut long_key = case(
        "Idempotency-Key over 255 characters",
        post.clone(),
        gifts.clone(),
        v,
        J(json!({"giftId": "rose", "quantity": 1})),
        422,
        "validation_failed",
    );
    long_key.headers.push(("Idempotency-Key", "k".repeat(256)));
    cases.push(long_key);

    let before = app.settle_reactor().await;
    let mut failures = Vec::new();
    for c in &cases {
        let mut request = app.client.request(c.method.clone(), format!("{}{}", app.base, c.path));
        if let Some(token) = &c.token {
            request = request.bearer_auth(token);
        }
        for (k, val) in &c.headers {
            request = request.header(*k, val);
        }
        request = match &c.body {
            Body::Json(value) => request.json(value),
            Body::Raw(content_type, bytes) => request.header("content-type", *content_type).body(bytes.clone()),
            Body::None => request,
        };
        let response = request.send().await.expect("an answer");
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let text = response.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let ok = status == c.status
            && content_type == "application/problem+json"
            && body["code"] == json!(c.code)
            && body["status"] == json!(status)
            && ["type", "title", "detail"].iter().all(|f| body[*f].is_string());
        assert!(status < 500, "{}: a 5xx for bad input: {status} {text}", c.what);
        if !ok {
            failures.push(format!("{}: expected {} {}, got {status} {content_type} {text}", c.what, c.status, c.code));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    assert_eq!(app.last_position().await, before, "bad input appended to the log");
    app.stop().await;
}
