//! Health, metrics, maintenance mode, rate limits, the API/workers split,
//! and graceful shutdown.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use halobuzz_tests::http::{TEST_JWT_SECRET, TestApp, forge_token};
use jsonwebtoken::Algorithm;
use serde_json::json;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_the_dependencies_and_turns_unhealthy_when_nats_is_down() {
    let mut app = TestApp::start().await;
    let r = app.get("/health", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], json!("healthy"));
    assert_eq!(r.body["environment"], json!("test"));
    assert!(r.body["uptime"].is_u64());
    let timestamp = r.body["timestamp"].as_str().unwrap_or_default();
    assert!(chrono::DateTime::parse_from_rfc3339(timestamp).is_ok() && timestamp.ends_with('Z'), "{timestamp}");
    assert_eq!(r.body["checks"]["nats"]["status"], json!("up"));
    assert_eq!(r.body["checks"]["readStore"]["status"], json!("up"));
    assert_eq!(r.body["checks"]["readStore"]["backend"], json!("sqlite"));
    assert!(r.body["checks"]["projector"]["lagEvents"].is_u64());
    assert!(r.body["checks"]["reactor"]["position"].is_u64());
    let reactor_lag = r.body["checks"]["reactor"]["lagEvents"].as_u64();
    let last = r.body["checks"]["nats"]["lastPosition"].as_u64();
    let reactor_position = r.body["checks"]["reactor"]["position"].as_u64();
    assert_eq!(reactor_lag, last.zip(reactor_position).map(|(l, p)| l.saturating_sub(p)), "{}", r.text);

    app.nats.as_mut().expect("the app's own server").kill9();
    let down = app.get("/health", None).await;
    assert_eq!(down.status, 503, "{}", down.text);
    assert_eq!(down.body["status"], json!("unhealthy"));
    assert_eq!(down.body["checks"]["nats"]["status"], json!("down"));
    // Queries of the read store still answer.
    assert_eq!(app.get("/api/v1/streams/live", None).await.status, 200);

    app.nats.as_mut().expect("the app's own server").restart().await;
    app.eventually("/health", None, |r| r.status == 200).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_appends_and_workers_behind_an_optional_token() {
    let app = TestApp::start_with(&[("METRICS_TOKEN", "scrape-me")]).await;
    let user = app.register("metered").await;
    let refused = app.get("/metrics", None).await;
    assert_eq!((refused.status, refused.problem_code()), (401, "unauthorized"));
    assert_eq!(app.get("/metrics", Some("wrong")).await.status, 401);
    let r = app.get("/metrics", Some("scrape-me")).await;
    assert_eq!(r.status, 200);
    assert!(r.content_type().starts_with("text/plain"));
    for needle in [
        r#"http_requests_total{method="POST",route="/api/v1/auth/register",status="201"} 1"#,
        r#"http_request_duration_seconds_bucket{method="POST",route="/api/v1/auth/register",status="201",le="+Inf"} 1"#,
        r#"halobuzz_commands_total{command="register",outcome="accepted"} 1"#,
        "halobuzz_log_appends_total 1",
        "halobuzz_log_append_conflicts_total 0",
        "halobuzz_projector_lag_events",
        "halobuzz_reactor_commits_total 0",
        "process_resident_memory_bytes",
    ] {
        assert!(r.text.contains(needle), "metrics lack {needle:?}:\n{}", r.text);
    }
    assert!(user.position > 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_mode_pauses_commands_while_queries_and_health_answer() {
    let app = TestApp::start_with(&[("MAINTENANCE_MODE", "true")]).await;
    let before = app.last_position().await;
    let r = app
        .post("/api/v1/auth/register", None, json!({"email": "m@x.io", "username": "mmm", "password": "long enough"}))
        .await;
    assert_eq!((r.status, r.problem_code()), (503, "maintenance"));
    assert!(r.headers.get("retry-after").is_some());
    let now = chrono::Utc::now().timestamp();
    let token = forge_token(
        &json!({"sub": Uuid::now_v7().to_string(), "typ": "access", "roles": ["user"], "iat": now, "exp": now + 600, "jti": "m"}),
        Algorithm::HS256,
        TEST_JWT_SECRET,
    );
    let gift = app
        .post(
            &format!("/api/v1/streams/{}/gifts", Uuid::now_v7()),
            Some(&token),
            json!({"giftId": "rose", "quantity": 1}),
        )
        .await;
    assert_eq!((gift.status, gift.problem_code()), (503, "maintenance"));
    // Purchases too: their coins would wait for maintenance's end.
    let packages = app.get("/api/v1/coins/packages", None).await;
    assert_eq!(packages.status, 200, "{}", packages.text);
    let package_id = packages.body[0]["id"].as_str().expect("a package id").to_string();
    for route in ["/api/v1/coins/checkout", "/api/v1/coins/payment-intent"] {
        let purchase = app.post(route, Some(&token), json!({"packageId": package_id})).await;
        assert_eq!((purchase.status, purchase.problem_code()), (503, "maintenance"), "{route}: {}", purchase.text);
    }
    let wallet = app.get("/api/v1/wallet", Some(&token)).await;
    assert_eq!(wallet.status, 200, "{}", wallet.text);
    assert_eq!(app.get("/api/v1/gifts/catalog", None).await.status, 200);
    assert_eq!(app.get("/health", None).await.status, 200);
    assert_eq!(app.last_position().await, before);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_apply_per_ip_and_per_user_with_retry_after() {
    let app = TestApp::start_with(&[("RATE_LIMIT_MAX_REQUESTS", "3"), ("RATE_LIMIT_WINDOW_MS", "60000")]).await;
    for _ in 0..3 {
        assert_eq!(app.get("/api/v1/gifts/catalog", None).await.status, 200);
    }
    let limited = app.get("/api/v1/gifts/catalog", None).await;
    assert_eq!((limited.status, limited.problem_code()), (429, "rate_limited"));
    let retry: u64 =
        limited.headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(app.get("/health", None).await.status, 200, "health is not limited");

    // Per user: a user's token, from two addresses, shares one window.
    let now = chrono::Utc::now().timestamp();
    let token = forge_token(
        &json!({"sub": Uuid::now_v7().to_string(), "typ": "access", "roles": ["user"], "iat": now, "exp": now + 600, "jti": "r"}),
        Algorithm::HS256,
        TEST_JWT_SECRET,
    );
    let from = |last_octet: u8| {
        reqwest::Client::builder()
            .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet)))
            .build()
            .expect("a client")
    };
    let url = format!("http://127.0.0.1:{}/api/v1/wallet", app.addr.port());
    for octet in [2, 3, 4] {
        let r = from(octet).get(&url).bearer_auth(&token).send().await.expect("an answer");
        assert_eq!(r.status(), 200);
    }
    let r = from(5).get(&url).bearer_auth(&token).send().await.expect("an answer");
    assert_eq!(r.status(), 429, "the fourth request of the user, from a fresh address");
    app.stop().await;
}

/// Behind Nginx (`TRUST_PROXY_HOPS=1`) every request comes from the proxy;
/// clients are told apart by the address it appended to `X-Forwarded-For`,
/// whatever the client wrote before it. Without trusted proxies (the
/// default) the header changes nothing: a client cannot escape its limit
/// by writing one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let limit = [("RATE_LIMIT_MAX_REQUESTS", "2"), ("RATE_LIMIT_WINDOW_MS", "60000")];
    let catalog = |app: &TestApp, forwarded_for: String| {
        let url = format!("http://127.0.0.1:{}/api/v1/gifts/catalog", app.addr.port());
        async move {
            let answer = reqwest::Client::new()
                .get(url)
                .header("x-forwarded-for", forwarded_for)
                .send()
                .await
                .expect("an answer");
            answer.status().as_u16()
        }
    };

    let proxied = TestApp::start_with(&[limit[0], limit[1], ("TRUST_PROXY_HOPS", "1")]).await;
    let mut statuses = Vec::new();
    for (claimed, seen_by_proxy) in [("1.1.1.1", "203.0.113.7"), ("2.2.2.2", "203.0.113.7"), ("3.3.3.3", "203.0.113.7")]
    {
        statuses.push(catalog(&proxied, format!("{claimed}, {seen_by_proxy}")).await);
    }
    assert_eq!(statuses, [200, 200, 429], "one client, whatever it claims");
    assert_eq!(catalog(&proxied, "203.0.113.8".into()).await, 200, "another client behind the same proxy");
    proxied.stop().await;

    let direct = TestApp::start_with(&limit).await;
    let mut statuses = Vec::new();
    for claimed in ["203.0.113.7", "203.0.113.8", "203.0.113.9"] {
        statuses.push(catalog(&direct, claimed.into()).await);
    }
    assert_eq!(statuses, [200, 200, 429], "an untrusted header changes nothing");
    direct.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_replica_and_a_workers_replica_split_the_work() {
    let workers = TestApp::start_with(&[("HALOBUZZ_ROLE", "workers")]).await;
    let r = workers.get("/api/v1/gifts/catalog", None).await;
    assert_eq!((r.status, r.problem_code()), (404, "not_found"), "workers serve no API");
    let health = workers.get("/health", None).await;
    assert_eq!((health.status, health.body["role"].clone()), (200, json!("workers")));

    let api = TestApp::start_sharing(&workers, &[("HALOBUZZ_ROLE", "api")]).await;
    let h = api.get("/health", None).await;
    assert_eq!(h.body["checks"]["projector"]["status"], json!("remote"));
    let admin = api.admin().await;
    let host = api.register("split_host").await;
    let viewer = api.register("split_viewer").await;
    api.fund(&admin, &viewer, 100).await;
    let stream = api.start_stream(&host, "split").await;
    let gift = api
        .post(&format!("/api/v1/streams/{stream}/gifts"), Some(&viewer.token), json!({"giftId": "star", "quantity": 2}))
        .await;
    assert_eq!(gift.status, 201, "{}", gift.text);
    // Read your writes through the API replica: it waits for the workers'
    // projector by polling the store's checkpoints.
    assert_eq!(api.wallet(&viewer, gift.position()).await["coins"], json!(80));
    // The workers' reactor credits the host.
    let end = workers.settle_reactor().await;
    assert_eq!(api.wallet(&host, end).await["earnings"], json!(14));
    api.stop().await;
    workers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_requests_in_flight() {
    // No projector: a written position the read models never reach.
    let app = TestApp::start_with(&[("HALOBUZZ_ROLE", "api")]).await;
    let far = app.register("unprojected").await.position;
    // A query waiting for a position no projector applies: in flight for 5 s.
    let client = app.client.clone();
    let url = format!("{}/api/v1/streams/live?minPosition={far}", app.base);
    let waiting = tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) });
    // Shut down once the server has the query in hand: two requests in
    // flight, the query and the scrape that counts itself.
    app.eventually("/metrics", None, |r| in_flight(&r.text) >= 2).await;
    let base = app.base.clone();
    let started = Instant::now();
    app.stop().await;
    // The request was answered (the lagging read model's 503), not cut off.
    assert_eq!(waiting.await.expect("the task").expect("an answer, not a reset"), 503);
    assert!(started.elapsed() >= Duration::from_secs(3), "shutdown waited for the request");
    assert!(reqwest::get(format!("{base}/health")).await.is_err(), "no longer listening");
}

/// `http_requests_in_flight` in a scrape (0 when absent).
fn in_flight(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("http_requests_in_flight "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}
