//! Issue 17, "safe to expose to the internet": the bootstrap of the first
//! admin, slow clients, the limits that protect the service, the ops
//! endpoints' answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use commands::log::EventLog;
use events_schema::{ActorKind, Envelope, Event, Role};
use halobuzz_tests::http::{ADMIN_EMAIL, PASSWORD, Scene, TestApp, test_env};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a production-like environment requires on top of the test's.
const STAGING: &[(&str, &str)] =
    &[("APP_ENV", "staging"), ("CORS_ORIGIN", "https://console.halobuzz.com"), ("METRICS_TOKEN", "scrape-me")];

/// The service's configuration as the operator command reads it.
fn config_of(app: &TestApp, overrides: &[(&str, &str)]) -> api::Config {
    let mut env = test_env(&app.nats_url, &app.data_path);
    for (k, v) in overrides {
        env.insert((*k).to_string(), (*v).to_string());
    }
    api::Config::from_lookup(|name| env.get(name).cloned()).expect("a valid configuration")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_development_admin_emails_grant_nothing_and_the_operator_grants_the_first_admin() {
    let app = TestApp::start_with(STAGING).await;
    // ADMIN_EMAILS still names the test admin: registering it proves nothing.
    let claimed = app.register_email("claimer", ADMIN_EMAIL).await;
    let me = app.get("/api/v1/users/me", Some(&claimed.token)).await;
    assert_eq!(me.body["roles"], json!(["user"]), "{}", me.text);
    let refused = app.get("/api/v1/admin/payouts", Some(&claimed.token)).await;
    assert_eq!((refused.status, refused.problem_code()), (403, "forbidden"));

    let config = config_of(&app, STAGING);
    let log: Arc<dyn EventLog> = Arc::new(app.log.clone());
    let call = api::operator::parse_roles_args(
        &["grant", "--email", &ADMIN_EMAIL.to_uppercase(), "--role", "admin", "--operator", "alice"]
            .map(str::to_string),
        None,
    )
    .expect("arguments");
    let done = api::operator::change_roles(log.clone(), &config, &call).await.expect("the grant");
    assert_eq!(done.user_id, claimed.id);
    assert_eq!(done.roles, vec![Role::User, Role::Admin]);
    let position = done.position.expect("a change");
    // The same role event as the admin route's, with the operator as actor.
    let stored = log.read_from(position.saturating_sub(1), 2).await.expect("the command's events");
    let envelope = stored
        .iter()
        .map(|m| Envelope::decode(&m.payload).expect("an envelope"))
        .find(|e| matches!(&e.event, Event::UserRolesChanged(c) if c.user_id == claimed.id))
        .expect("a role change");
    assert_eq!(envelope.header.actor.kind, ActorKind::System);
    assert_eq!(envelope.header.actor.id.as_deref(), Some("operator:alice"));
    // Privileged routes read roles from the log: the old token works now.
    assert_eq!(app.get("/api/v1/admin/payouts", Some(&claimed.token)).await.status, 200);

    // Granting again changes nothing; revoking takes it away.
    let again = api::operator::change_roles(log.clone(), &config, &call).await.expect("a repeat");
    assert_eq!((again.position, again.roles.clone()), (None, vec![Role::User, Role::Admin]));
    let revoke = api::operator::parse_roles_args(
        &["revoke", "--email", ADMIN_EMAIL, "--role", "admin"].map(str::to_string),
        Some("bob".into()),
    )
    .expect("arguments");
    let revoked = api::operator::change_roles(log.clone(), &config, &revoke).await.expect("the revocation");
    assert_eq!(revoked.roles, vec![Role::User]);
    assert_eq!(app.get("/api/v1/admin/payouts", Some(&claimed.token)).await.status, 403);

    // An email nobody registered is an error, and appends nothing.
    let before = app.last_position().await;
    let unknown = api::operator::parse_roles_args(
        &["grant", "--email", "nobody@test.halobuzz.com", "--role", "admin"].map(str::to_string),
        None,
    )
    .expect("arguments");
    let e = api::operator::change_roles(log, &config, &unknown).await.expect_err("unknown email");
    assert!(e.to_string().contains("no user"), "{e}");
    assert_eq!(app.last_position().await, before);
    app.stop().await;
}

/// How a dribbling connection ended.
#[derive(Debug)]
struct Dribbled {
    /// When the server closed it, from the start; `None`: still open at
    /// the end of the test's patience.
    closed_after: Option<Duration>,
    /// What the server answered before closing, if anything.
    answer: String,
}

/// Opens a connection, sends `head`, then one byte of `drip` every
/// `interval` until the server closes the connection (or `patience` ends).
async fn dribble(
    addr: std::net::SocketAddr,
    head: String,
    drip: &'static [u8],
    interval: Duration,
    patience: Duration,
) -> Dribbled {
    let started = Instant::now();
    let stream = TcpStream::connect(addr).await.expect("a connection");
    let (mut read, mut write) = stream.into_split();
    if write.write_all(head.as_bytes()).await.is_err() {
        return Dribbled { closed_after: Some(started.elapsed()), answer: String::new() };
    }
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    let mut next = 0usize;
    let mut ticker = tokio::time::interval(interval);
    loop {
        if started.elapsed() > patience {
            return Dribbled { closed_after: None, answer: String::from_utf8_lossy(&answer).into_owned() };
        }
        tokio::select! {
            read = read.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            },
            _ = ticker.tick() => {
                let byte = drip[next % drip.len()];
                next += 1;
                // A refused write is a closed connection too (reset); what
                // the server answered before may still be readable.
                if write.write_all(&[byte]).await.is_err() {
                    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), read.read(&mut buffer)).await {
                        if n == 0 {
                            break;
                        }
                        answer.extend_from_slice(&buffer[..n]);
                    }
                    break;
                }
            }
        }
    }
    Dribbled { closed_after: Some(started.elapsed()), answer: String::from_utf8_lossy(&answer).into_owned() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_closed_by_the_timeouts_and_never_starve_health_or_a_gift() {
    const HEADER_TIMEOUT_MS: u64 = 1_500;
    const BODY_TIMEOUT_MS: u64 = 2_000;
    const DRIBBLERS_EACH: usize = 150;
    const WEBHOOK_SLOTS: usize = 50;
    let app = TestApp::start_with(&[
        ("HTTP_HEADER_TIMEOUT_MS", &HEADER_TIMEOUT_MS.to_string()),
        ("HTTP_BODY_TIMEOUT_MS", &BODY_TIMEOUT_MS.to_string()),
        ("HTTP_WEBHOOK_IN_FLIGHT_MAX", &WEBHOOK_SLOTS.to_string()),
    ])
    .await;
    let Scene { viewer, stream, .. } = app.stream_scene("slow", 1_000).await;
    let gift_path = format!("/api/v1/streams/{stream}/gifts");
    let patience = Duration::from_secs(30);
    let interval = Duration::from_millis(200);

    let mut dribblers = Vec::new();
    // Headers that never end.
    for i in 0..DRIBBLERS_EACH {
        let head = format!("POST {gift_path} HTTP/1.1\r\nHost: halobuzz\r\nX-Slow-{i}: ");
        dribblers.push(("headers", tokio::spawn(dribble(app.addr, head, b"abcdefgh", interval, patience))));
    }
    // Webhook bodies that declare about 500 KB and send a byte at a time: they
    // hold every webhook slot.
    for _ in 0..DRIBBLERS_EACH {
        let head = "POST /api/v1/webhooks/stripe HTTP/1.1\r\nHost: halobuzz\r\nContent-Type: application/json\r\n\
                    Stripe-Signature: t=1,v1=00\r\nContent-Length: 500000\r\n\r\n{"
            .to_string();
        dribblers.push(("body", tokio::spawn(dribble(app.addr, head, b" ", interval, patience))));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Meanwhile health and a gift answer at their normal pace.
    for round in 0..5 {
        let started = Instant::now();
        let health = app.get("/health", None).await;
        assert_eq!(health.status, 200, "{}", health.text);
        let gift = app.post(&gift_path, Some(&viewer.token), json!({"giftId": "rose", "quantity": 1})).await;
        assert_eq!(gift.status, 201, "{}", gift.text);
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1_500), "round {round}: health and a gift took {took:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Every dribbler is closed by its timeout: the headers' at once, the
    // bodies' once they got a webhook slot (a few rounds of the body
    // timeout), answered 408.
    let header_bound = Duration::from_millis(HEADER_TIMEOUT_MS + 3_000);
    let rounds = DRIBBLERS_EACH.div_ceil(WEBHOOK_SLOTS) as u64;
    let body_bound = Duration::from_millis(BODY_TIMEOUT_MS * rounds + 4_000);
    // A body dribbler may lose the server's 408 to a reset: its next byte,
    // written after the server closed, makes the peer answer RST, and
    // Linux drops the unread answer with it (seen on a loaded machine).
    // So every answer that arrived is the 408, and most did.
    let (mut bodies, mut answered_408) = (0usize, 0usize);
    for (kind, dribbler) in dribblers {
        let ended = dribbler.await.expect("the dribbler");
        let closed = ended.closed_after.unwrap_or_else(|| panic!("a {kind} dribbler was never closed: {ended:?}"));
        match kind {
            "headers" => assert!(closed < header_bound, "headers closed after {closed:?}"),
            _ => {
                bodies += 1;
                assert!(closed < body_bound, "body closed after {closed:?}");
                if !ended.answer.is_empty() {
                    assert!(ended.answer.starts_with("HTTP/1.1 408"), "{:?}", ended.answer);
                    assert!(ended.answer.contains("request_timeout"), "{:?}", ended.answer);
                    answered_408 += 1;
                }
            }
        }
    }
    assert!(answered_408 * 2 > bodies, "only {answered_408} of {bodies} slow bodies were answered 408");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_position_beyond_the_log_is_refused_at_once() {
    let app = TestApp::start().await;
    let user = app.register("ahead").await;
    let last = app.last_position().await;
    for path in ["/api/v1/wallet", "/api/v1/transactions", "/api/v1/streams/live"] {
        let started = Instant::now();
        let r = app.get(&format!("{path}?minPosition={}", last + 1_000), Some(&user.token)).await;
        assert_eq!((r.status, r.problem_code()), (422, "validation_failed"), "{path}: {}", r.text);
        assert_eq!(r.body["field"], json!("minPosition"));
        assert!(started.elapsed() < Duration::from_millis(1_000), "{path}: took {:?}", started.elapsed());
    }
    // A position the log has reached is waited for as before.
    let r = app.get(&format!("/api/v1/wallet?minPosition={last}"), Some(&user.token)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_registration_are_limited_per_email_too() {
    let app = TestApp::start_with(&[("RATE_LIMIT_MAX_REQUESTS", "1000"), ("RATE_LIMIT_EMAIL_MAX_REQUESTS", "3")]).await;
    let user = app.register("guessed").await;
    let login = |email: String, password: &'static str| {
        let app = &app;
        async move { app.post("/api/v1/auth/login", None, json!({"email": email, "password": password})).await }
    };
    // The registration counted once; two more tries, then refused, the
    // right password included, whatever the case of the address.
    assert_eq!(login(user.email.clone(), "wrong password 1").await.status, 401);
    assert_eq!(login(user.email.to_uppercase(), PASSWORD).await.status, 200);
    let refused = login(user.email.clone(), PASSWORD).await;
    assert_eq!((refused.status, refused.problem_code()), (429, "rate_limited"), "{}", refused.text);
    assert!(refused.headers.get("retry-after").is_some());
    let again = app
        .post("/api/v1/auth/register", None, json!({"email": user.email, "username": "another", "password": PASSWORD}))
        .await;
    assert_eq!(again.status, 429, "{}", again.text);
    // Another email, from the same address, is not limited by it.
    let other = app.register("unrelated").await;
    assert_eq!(login(other.email.clone(), PASSWORD).await.status, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_flood_gets_429_at_once_and_invalid_input_never_waits_for_a_hash() {
    let app = TestApp::start().await;
    let valid = (0..96).map(|i| {
        let app = &app;
        async move {
            let body = json!({"email": format!("flood{i}@test.halobuzz.com"), "username": format!("flood{i}"), "password": PASSWORD});
            app.post("/api/v1/auth/register", None, body).await
        }
    });
    let invalid = (0..16).map(|i| {
        let app = &app;
        async move {
            let body =
                json!({"email": format!("not-an-email-{i}"), "username": format!("bad{i}"), "password": PASSWORD});
            app.post("/api/v1/auth/register", None, body).await
        }
    });
    let (valid, invalid) = tokio::join!(futures_util::future::join_all(valid), futures_util::future::join_all(invalid));
    for r in &invalid {
        assert_eq!((r.status, r.problem_code()), (422, "validation_failed"), "{}", r.text);
    }
    let refused: Vec<_> = valid.iter().filter(|r| r.status == 429).collect();
    assert!(
        !refused.is_empty(),
        "a full hashing queue answers 429: {:?}",
        valid.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in &valid {
        assert!(r.status == 201 || r.status == 429, "{} {}", r.status, r.text);
    }
    for r in refused {
        assert_eq!(r.problem_code(), "rate_limited");
        assert!(r.headers.get("retry-after").is_some(), "{:?}", r.headers);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_carry_nosniff_tokens_are_not_stored_and_health_names_states() {
    let mut app = TestApp::start().await;
    let user = app.register("headers").await;
    let register = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "store@test.halobuzz.com", "username": "store", "password": PASSWORD}),
        )
        .await;
    let login = app.post("/api/v1/auth/login", None, json!({"email": user.email, "password": PASSWORD})).await;
    let refresh = app.post("/api/v1/auth/refresh", None, json!({"refreshToken": user.refresh_token})).await;
    for r in [&register, &login, &refresh] {
        assert!(r.status < 300, "{}", r.text);
        assert_eq!(r.headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"), "{:?}", r.headers);
    }
    let wallet = app.get("/api/v1/wallet", Some(&user.token)).await;
    let missing = app.get("/api/v1/nothing-here", None).await;
    let health = app.get("/health", None).await;
    for r in [&register, &login, &refresh, &wallet, &missing, &health] {
        assert_eq!(
            r.headers.get("x-content-type-options").and_then(|v| v.to_str().ok()),
            Some("nosniff"),
            "{:?}",
            r.headers
        );
    }

    // A dependency that is down is named by its state, never the error's text.
    app.nats.as_mut().expect("the app's own server").kill9();
    let down = app.get("/health", None).await;
    assert_eq!(down.status, 503, "{}", down.text);
    let detail = down.body["checks"]["nats"]["detail"].as_str().unwrap_or_default().to_string();
    assert!(["unreachable", "timeout"].contains(&detail.as_str()), "{}", down.text);
    app.nats.as_mut().expect("the app's own server").restart().await;
    app.eventually("/health", None, |r| r.status == 200).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_are_normalised_with_nfkc_and_refuse_invisible_characters() {
    let app = TestApp::start().await;
    app.register_email("wide", "ＷＩＤＥ@test.halobuzz.com").await;
    let twin = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "wide@test.halobuzz.com", "username": "twin", "password": PASSWORD}),
        )
        .await;
    assert_eq!((twin.status, twin.problem_code()), (409, "email_taken"), "{}", twin.text);
    let login =
        app.post("/api/v1/auth/login", None, json!({"email": "wide@test.halobuzz.com", "password": PASSWORD})).await;
    assert_eq!(login.status, 200, "{}", login.text);
    for email in
        ["ev\u{202E}il@test.halobuzz.com", "zero\u{200B}width@test.halobuzz.com", "bell\u{0007}@test.halobuzz.com"]
    {
        let r = app
            .post("/api/v1/auth/register", None, json!({"email": email, "username": "sneaky", "password": PASSWORD}))
            .await;
        assert_eq!((r.status, r.problem_code()), (422, "validation_failed"), "{email:?}: {}", r.text);
    }
    app.stop().await;
}
