//! The authorization matrix: every route against anonymous, the user (the
//! owner of what the route names: the stream's host, the payout's
//! requester, the account's holder), another user, an admin, finance and
//! ops. One table, one expected status per role per route; the routes are
//! the OpenAPI document's, so that a route added without a row fails here.
//! And a revoked role stops working while its holder's token is valid.

use std::sync::atomic::{AtomicU32, Ordering};

use halobuzz_tests::http::{PASSWORD, TestApp, User};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    User,
    Other,
    Admin,
    Finance,
    Ops,
}

const EVERYONE: [Who; 6] = [Who::Anonymous, Who::User, Who::Other, Who::Admin, Who::Finance, Who::Ops];

/// One row: a route, its body, and the expected status for
/// [anonymous, user, other, admin, finance, ops].
struct Case {
    method: Method,
    /// Placeholders: `{user}`, `{other}` (ids), `{live_stream}` (a live stream
    /// hosted by the user, started anew when the last one ended),
    /// `{pending_payout}` (a fresh pending payout of the user).
    path: &'static str,
    /// The same placeholders, plus `{new_email}`, `{new_name}`, `{user_email}`,
    /// `{fresh_refresh}` (the refresh token of a new login of the user:
    /// refresh tokens rotate, each works once).
    body: Option<&'static str>,
    expect: [u16; 6],
}

struct World {
    app: TestApp,
    user: User,
    other: User,
    admin: User,
    finance: User,
    ops: User,
    live_stream: Mutex<Option<Uuid>>,
    counter: AtomicU32,
}

impl World {
    fn token(&self, who: Who) -> Option<&str> {
        match who {
            Who::Anonymous => None,
            Who::User => Some(&self.user.token),
            Who::Other => Some(&self.other.token),
            Who::Admin => Some(&self.admin.token),
            Who::Finance => Some(&self.finance.token),
            Who::Ops => Some(&self.ops.token),
        }
    }

    /// A live stream hosted by the user: the current one, or a new one when
    /// it was ended (by the `end` row).
    async fn live_stream(&self) -> Uuid {
        let mut current = self.live_stream.lock().await;
        if let Some(id) = *current {
            let r = self
                .app
                .get(&format!("/api/v1/streams/{id}?minPosition={}", self.app.last_position().await), None)
                .await;
            if r.body["isLive"] == json!(true) {
                return id;
            }
        }
        let id = self.app.start_stream(&self.user, "matrix").await;
        *current = Some(id);
        id
    }

    async fn pending_payout(&self) -> String {
        let r = self
            .app
            .post("/api/v1/payouts", Some(&self.user.token), json!({"coins": 100, "destination": "matrix"}))
            .await;
        assert_eq!(r.status, 201, "fixture payout: {}", r.text);
        // Approvals look the payout up in the read model.
        let position = r.position();
        self.app
            .eventually(&format!("/api/v1/payouts?minPosition={position}"), Some(&self.user.token), |p| p.status == 200)
            .await;
        r.body["payoutId"].as_str().unwrap_or_default().to_string()
    }

    async fn resolve(&self, template: &str) -> String {
        let mut text =
            template.replace("{user}", &self.user.id.to_string()).replace("{other}", &self.other.id.to_string());
        text = text.replace("{user_email}", &self.user.email);
        if text.contains("{fresh_refresh}") {
            text = text.replace("{fresh_refresh}", &fresh_refresh(&self.app, &self.user).await);
        }
        if text.contains("{new_email}") || text.contains("{new_name}") {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            text = text
                .replace("{new_email}", &format!("new{n}@test.halobuzz.com"))
                .replace("{new_name}", &format!("new_{n}"));
        }
        if text.contains("{live_stream}") {
            text = text.replace("{live_stream}", &self.live_stream().await.to_string());
        }
        if text.contains("{pending_payout}") {
            text = text.replace("{pending_payout}", &self.pending_payout().await);
        }
        text
    }
}

fn cases() -> Vec<Case> {
    let get = |path, expect| Case { method: Method::GET, path, body: None, expect };
    let post = |path, body, expect| Case { method: Method::POST, path, body: Some(body), expect };
    const ALL_200: [u16; 6] = [200; 6];
    const USERS_200: [u16; 6] = [401, 200, 200, 200, 200, 200];
    const FINANCE_READ: [u16; 6] = [401, 403, 403, 200, 200, 403];
    const ADMIN_ONLY: [u16; 6] = [401, 403, 403, 200, 403, 403];
    vec![
        get("/health", ALL_200),
        get("/metrics", ALL_200),
        get("/docs", ALL_200),
        get("/api/v1/openapi.json", ALL_200),
        post(
            "/api/v1/auth/register",
            r#"{"email":"{new_email}","username":"{new_name}","password":"correct horse battery"}"#,
            [201; 6],
        ),
        post("/api/v1/auth/login", r#"{"email":"{user_email}","password":"correct horse battery"}"#, ALL_200),
        post("/api/v1/auth/refresh", r#"{"refreshToken":"{fresh_refresh}"}"#, ALL_200),
        // The user's own login only: never someone else's session.
        post("/api/v1/auth/logout", r#"{"refreshToken":"{fresh_refresh}"}"#, [401, 204, 403, 403, 403, 403]),
        get("/api/v1/users/me", USERS_200),
        get("/api/v1/wallet", USERS_200),
        get("/api/v1/transactions", USERS_200),
        get("/api/v1/coins/packages", ALL_200),
        // No STRIPE_SECRET_KEY in this service: the provider's problem.
        post("/api/v1/coins/checkout", r#"{"packageId":"coins_100"}"#, [401, 502, 502, 502, 502, 502]),
        post("/api/v1/coins/payment-intent", r#"{"packageId":"coins_100"}"#, [401, 502, 502, 502, 502, 502]),
        // Stripe's route: a token is no signature.
        post("/api/v1/webhooks/stripe", r#"{"id":"evt_1","type":"x"}"#, [400; 6]),
        get("/api/v1/gifts/catalog", ALL_200),
        // The user already hosts a live stream.
        post("/api/v1/streams", r#"{"title":"t","category":"c"}"#, [401, 409, 201, 201, 201, 201]),
        get("/api/v1/streams/live", ALL_200),
        get("/api/v1/streams/{live_stream}", ALL_200),
        get("/api/v1/streams/{live_stream}/leaderboard", ALL_200),
        post("/api/v1/streams/{live_stream}/join", "{}", USERS_200),
        post("/api/v1/streams/{live_stream}/leave", "{}", USERS_200),
        // The host cannot gift to their own stream.
        post(
            "/api/v1/streams/{live_stream}/gifts",
            r#"{"giftId":"rose","quantity":1}"#,
            [401, 403, 201, 201, 201, 201],
        ),
        // Only the user has earnings.
        post("/api/v1/payouts", r#"{"coins":100,"destination":"x"}"#, [401, 201, 402, 402, 402, 402]),
        get("/api/v1/payouts", USERS_200),
        get("/api/v1/admin/payouts", FINANCE_READ),
        get("/api/v1/admin/payouts?status=pending", FINANCE_READ),
        post("/api/v1/admin/payouts/{pending_payout}/approve", r#"{"externalRef":"ref"}"#, ADMIN_ONLY),
        post("/api/v1/admin/payouts/{pending_payout}/reject", r#"{"reason":"no"}"#, ADMIN_ONLY),
        post(
            "/api/v1/admin/adjustments",
            r#"{"userId":"{other}","coins":1,"reason":"matrix"}"#,
            [401, 403, 403, 201, 403, 403],
        ),
        post("/api/v1/admin/users/{other}/roles", r#"{"grant":["ops"]}"#, ADMIN_ONLY),
        // Finance or admin; no such payment here.
        post(
            "/api/v1/admin/payments/pi_matrix_unknown/resolve",
            r#"{"action":"dismiss","note":"matrix"}"#,
            [401, 403, 403, 404, 404, 403],
        ),
        get("/api/v1/admin/adjustments?status=proposed", FINANCE_READ),
        // No such proposal: admins learn so, nobody else gets that far.
        post(
            "/api/v1/admin/adjustments/0190aaaa-0000-7000-8000-000000000001/approve",
            "{}",
            [401, 403, 403, 404, 403, 403],
        ),
        post(
            "/api/v1/admin/adjustments/0190aaaa-0000-7000-8000-000000000001/reject",
            r#"{"reason":"no"}"#,
            [401, 403, 403, 404, 403, 403],
        ),
        get("/api/v1/ledger/accounts/wallet:{user}/balance", [401, 200, 403, 200, 200, 403]),
        get(
            "/api/v1/ledger/accounts/wallet:{user}/statement?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z",
            [401, 200, 403, 200, 200, 403],
        ),
        get("/api/v1/ledger/accounts/wallet:{user}/entries", [401, 200, 403, 200, 200, 403]),
        get("/api/v1/ledger/accounts/earnings:{user}/entries", [401, 200, 403, 200, 200, 403]),
        get("/api/v1/ledger/accounts/payout_hold:{user}/entries", [401, 200, 403, 200, 200, 403]),
        get("/api/v1/ledger/accounts/platform:revenue/entries", FINANCE_READ),
        get("/api/v1/ledger/trial-balance", FINANCE_READ),
        // The console's chart: ops too (the other user holds ops since the
        // roles row above).
        get("/api/v1/ledger/daily", [401, 403, 200, 200, 200, 200]),
        get("/api/v1/ledger/reconciliation", FINANCE_READ),
        // Last but one: ends the user's stream (host and admin may).
        post("/api/v1/streams/{live_stream}/end", "{}", [401, 200, 403, 200, 403, 403]),
        // Last: the other user's tokens stop working for coins from here on.
        post("/api/v1/admin/users/{other}/sessions/revoke", "{}", ADMIN_ONLY),
    ]
}

/// Whether a row's path (placeholders filled or not, query string aside)
/// is an instance of the documented path template: same segments, a
/// `{parameter}` of the template standing for any one segment.
fn instance_of(path: &str, template: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    let (ours, theirs): (Vec<&str>, Vec<&str>) = (path.split('/').collect(), template.split('/').collect());
    ours.len() == theirs.len()
        && ours.iter().zip(&theirs).all(|(segment, documented)| {
            (documented.starts_with('{') && documented.ends_with('}') && !segment.is_empty()) || segment == documented
        })
}

/// Every (method, path template) of the OpenAPI document.
fn documented_routes(document: &Value) -> Vec<(Method, String)> {
    let paths = document["paths"].as_object().expect("the document has paths");
    let mut routes = Vec::new();
    for (template, operations) in paths {
        for method in operations.as_object().expect("a path's operations").keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("an HTTP method");
            routes.push((method, template.clone()));
        }
    }
    routes
}

#[test]
fn a_path_is_matched_to_its_template_segment_by_segment() {
    assert!(instance_of("/api/v1/streams/{live_stream}/join", "/api/v1/streams/{id}/join"));
    assert!(instance_of("/api/v1/admin/payouts?status=pending", "/api/v1/admin/payouts"));
    assert!(!instance_of("/api/v1/streams/live", "/api/v1/streams/{id}/join"));
    assert!(!instance_of("/api/v1/streams/{live_stream}/join", "/api/v1/streams/{id}"));
    // `live` is an instance of `{id}` as well: the method and the table's
    // other rows tell them apart, and both must be documented anyway.
    assert!(instance_of("/api/v1/streams/live", "/api/v1/streams/{id}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_role_as_the_matrix_says() {
    let app = TestApp::start().await;
    let admin = app.admin().await;
    let [user, other] = app.register_all(["matrix_user", "matrix_other"]).await;
    let finance = granted(&app, &admin, "matrix_finance", "finance").await;
    let ops = granted(&app, &admin, "matrix_ops", "ops").await;
    // The routes to check: the document's. Each needs a row; each row is
    // one of them.
    let document = app.get("/api/v1/openapi.json", None).await.body;
    let documented = documented_routes(&document);
    let table = cases();
    let unchecked: Vec<String> = documented
        .iter()
        .filter(|(method, template)| !table.iter().any(|c| c.method == *method && instance_of(c.path, template)))
        .map(|(method, template)| format!("{method} {template}"))
        .collect();
    assert!(unchecked.is_empty(), "documented routes with no row in the matrix: {unchecked:?}");
    let undocumented: Vec<String> = table
        .iter()
        .filter(|c| !documented.iter().any(|(method, template)| c.method == *method && instance_of(c.path, template)))
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert!(undocumented.is_empty(), "rows of routes the document does not have: {undocumented:?}");
    for funded in [&other, &finance, &ops] {
        app.fund(&admin, funded, 100_000).await;
    }
    // Nobody adjusts their own wallet: a second admin funds the first.
    let deputy = granted(&app, &admin, "matrix_deputy", "admin").await;
    app.fund(&deputy, &admin, 100_000).await;
    // Earnings for the user: another viewer's gifts, credited by the reactor.
    let stream = app.start_stream(&user, "matrix").await;
    let gift = app.gift(&other.token, stream, "castle", 10).await;
    assert_eq!(gift.status, 201, "{}", gift.text);
    let settled = app.settle_reactor().await;
    assert_eq!(app.wallet(&user, settled).await["earnings"], json!(7_000));

    let world = World {
        app,
        user,
        other,
        admin,
        finance,
        ops,
        live_stream: Mutex::new(Some(stream)),
        counter: AtomicU32::new(0),
    };
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in table {
        for (index, who) in EVERYONE.into_iter().enumerate() {
            let path = world.resolve(case.path).await;
            let body = match case.body {
                Some(template) => {
                    Some(serde_json::from_str::<Value>(&world.resolve(template).await).expect("a JSON body"))
                }
                None => None,
            };
            let r = world.app.request(case.method.clone(), &path, world.token(who), body).await;
            checked += 1;
            if r.status != case.expect[index] {
                failures.push(format!(
                    "{} {} as {who:?}: expected {}, got {} {}",
                    case.method, case.path, case.expect[index], r.status, r.text
                ));
            }
            if r.status >= 400 {
                // Every refusal is a problem document.
                r.problem_code();
            }
        }
    }
    assert!(failures.is_empty(), "{} of {checked} checks failed:\n{}", failures.len(), failures.join("\n"));
    world.app.stop().await;
}

/// A new user granted `role` by `admin`, with a token from a login after
/// the grant.
async fn granted(app: &TestApp, admin: &User, name: &str, role: &str) -> User {
    let mut user = app.register(name).await;
    let granted =
        app.post(&format!("/api/v1/admin/users/{}/roles", user.id), Some(&admin.token), json!({"grant": [role]})).await;
    assert_eq!(granted.status, 200, "{}", granted.text);
    assert_eq!(granted.body["roles"], json!(["user", role]));
    user.token = login(app, &user).await;
    user
}

/// The refresh token of a new login of `user`.
async fn fresh_refresh(app: &TestApp, user: &User) -> String {
    let login = app.post("/api/v1/auth/login", None, json!({"email": user.email, "password": PASSWORD})).await;
    assert_eq!(login.status, 200, "{}", login.text);
    login.body["refreshToken"].as_str().expect("a refresh token").to_string()
}

async fn login(app: &TestApp, user: &User) -> String {
    let login = app.post("/api/v1/auth/login", None, json!({"email": user.email, "password": PASSWORD})).await;
    assert_eq!(login.status, 200, "{}", login.text);
    login.body["accessToken"].as_str().expect("an access token").to_string()
}

/// The token says what the roles were at login; the privileged routes go
/// by what they are now. A revoked role stops working at once for a token
/// still valid, and the holder's other rights stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_role_stops_working_while_the_token_is_still_valid() {
    let app = TestApp::start().await;
    let admin = app.admin().await;
    let finance = granted(&app, &admin, "revoked_finance", "finance").await;
    let deputy = granted(&app, &admin, "revoked_admin", "admin").await;
    let target = app.register("revoked_target").await;
    let adjust = json!({"userId": target.id, "coins": 5, "reason": "before"});
    // Both roles work with the tokens issued after the grants.
    assert_eq!(app.get("/api/v1/ledger/trial-balance", Some(&finance.token)).await.status, 200);
    assert_eq!(app.get("/api/v1/admin/payouts", Some(&finance.token)).await.status, 200);
    let r = app.post("/api/v1/admin/adjustments", Some(&deputy.token), adjust.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text);

    for (holder, role) in [(&finance, "finance"), (&deputy, "admin")] {
        let revoked = app
            .post(&format!("/api/v1/admin/users/{}/roles", holder.id), Some(&admin.token), json!({"revoke": [role]}))
            .await;
        assert_eq!(revoked.status, 200, "{}", revoked.text);
        assert_eq!(revoked.body["roles"], json!(["user"]));
    }
    // The same tokens, still valid: refused on every privileged route.
    for (path, token) in [
        ("/api/v1/ledger/trial-balance", &finance.token),
        ("/api/v1/ledger/reconciliation", &finance.token),
        ("/api/v1/admin/payouts", &finance.token),
        (&format!("/api/v1/ledger/accounts/wallet:{}/entries", target.id), &finance.token),
        ("/api/v1/admin/payouts", &deputy.token),
    ] {
        let r = app.get(path, Some(token)).await;
        assert_eq!((r.status, r.problem_code()), (403, "forbidden"), "{path}: {}", r.text);
    }
    let adjust = json!({"userId": target.id, "coins": 5, "reason": "after"});
    let r = app.post("/api/v1/admin/adjustments", Some(&deputy.token), adjust).await;
    assert_eq!((r.status, r.problem_code()), (403, "forbidden"), "{}", r.text);
    let r = app
        .post(&format!("/api/v1/admin/users/{}/roles", target.id), Some(&deputy.token), json!({"grant": ["admin"]}))
        .await;
    assert_eq!((r.status, r.problem_code()), (403, "forbidden"), "a revoked admin grants nothing: {}", r.text);
    // The tokens are valid: what any user may do still works.
    assert_eq!(app.get("/api/v1/wallet", Some(&finance.token)).await.status, 200);
    assert_eq!(app.get("/api/v1/users/me", Some(&deputy.token)).await.status, 200);
    // Only the one adjustment made before the revocation moved coins.
    let wallet = app.wallet(&target, app.last_position().await).await;
    assert_eq!(wallet["coins"], json!(5), "{wallet}");
    app.stop().await;
}
