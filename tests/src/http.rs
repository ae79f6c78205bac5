//! A running service for tests, and an HTTP client for it.
//!
//! Panics on setup failures: tests fail, they never skip.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use commands::log::{EventLog, JetStreamLog};
use commands::testing::{NatsServer, SyncMode};
use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The access-token secret of test services (tests forge tokens with it).
pub const TEST_JWT_SECRET: &str = "test-access-secret-0123456789-0123456789";
pub const TEST_JWT_REFRESH_SECRET: &str = "test-refresh-secret-0123456789-012345678";
/// Registered with this email, a user is admin and finance.
pub const ADMIN_EMAIL: &str = "admin@test.halobuzz.com";
/// Every test user's password.
pub const PASSWORD: &str = "correct horse battery";
/// Retries of a registration answered 429 (see `register_email`).
const REGISTER_RETRIES_MAX: u32 = 10;
/// How long tests poll for asynchronous effects (the reactor) at most.
pub const EVENTUALLY_MS_MAX: u64 = 20_000;

/// A service on a loopback port, with its own nats-server and data folder.
pub struct TestApp {
    pub base: String,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    /// The event log, read directly (positions before and after).
    pub log: JetStreamLog,
    /// `None` when sharing another app's server (see `start_sharing`).
    pub nats: Option<NatsServer>,
    pub nats_url: String,
    pub data_path: std::path::PathBuf,
    pub data_dir: Option<TempDir>,
    /// Dropping it stops the service too.
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp").field("base", &self.base).finish_non_exhaustive()
    }
}

/// An answer: status, headers and body (JSON when it is, else a string).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    pub fn content_type(&self) -> &str {
        self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The problem's `code`, checking that it is a problem+json document.
    pub fn problem_code(&self) -> &str {
        assert_eq!(self.content_type(), "application/problem+json", "not a problem: {} {}", self.status, self.text);
        for field in ["type", "title", "status", "detail", "code"] {
            assert!(self.body.get(field).is_some(), "problem without {field}: {}", self.text);
        }
        assert_eq!(self.body["status"], json!(self.status), "status field mismatch: {}", self.text);
        self.body["code"].as_str().unwrap_or("")
    }

    pub fn position(&self) -> u64 {
        self.body["position"].as_u64().unwrap_or_else(|| panic!("no position in {} {}", self.status, self.text))
    }
}

/// What most tests start from: see [`TestApp::stream_scene`].
#[derive(Debug, Clone)]
pub struct Scene {
    pub admin: User,
    pub host: User,
    pub viewer: User,
    pub stream: Uuid,
}

/// A registered user with tokens.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub username: String,
    pub token: String,
    pub refresh_token: String,
    pub position: u64,
}

/// The environment of a test service, overridable per test.
pub fn test_env(nats_url: &str, data_dir: &std::path::Path) -> HashMap<String, String> {
    [
        ("APP_ENV", "test"),
        ("NATS_URL", nats_url),
        ("DATA_DIR", data_dir.to_str().unwrap_or("/tmp")),
        ("JWT_SECRET", TEST_JWT_SECRET),
        ("JWT_REFRESH_SECRET", TEST_JWT_REFRESH_SECRET),
        ("ADMIN_EMAILS", ADMIN_EMAIL),
        ("RATE_LIMIT_MAX_REQUESTS", "0"),
        ("PAYOUT_MIN_COINS", "100"),
        // `fund` credits test users with adjustments of any size: four eyes
        // is tested where a test sets a threshold (`payout_controls`).
        ("ADJUSTMENT_APPROVAL_COINS", "1000000000000"),
        // Most journeys pay out right after gifts: the hold is tested where
        // a test sets one (`payout_controls`).
        ("EARNINGS_HOLD_HOURS", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl TestApp {
    pub async fn start() -> TestApp {
        TestApp::start_with(&[]).await
    }

    /// A service with the test environment plus `overrides`.
    pub async fn start_with(overrides: &[(&str, &str)]) -> TestApp {
        let nats = NatsServer::start_with(SyncMode::Interval).await;
        let data_dir = tempfile::Builder::new().prefix("halobuzz-api-test-").tempdir().expect("a temporary folder");
        TestApp::launch(Some(nats), |n| n.map(NatsServer::url).unwrap_or_default(), Some(data_dir), None, overrides)
            .await
    }

    /// Another service on the same nats-server and data folder as `other`
    /// (replicas side by side, or an API beside the workers).
    pub async fn start_sharing(other: &TestApp, overrides: &[(&str, &str)]) -> TestApp {
        let url = other.nats_url.clone();
        TestApp::launch(None, move |_| url.clone(), None, Some(other.data_path.clone()), overrides).await
    }

    /// A service on an existing nats-server and data folder (a restore:
    /// the disaster-recovery drill).
    pub async fn start_on(nats_url: &str, data_path: &std::path::Path, overrides: &[(&str, &str)]) -> TestApp {
        let url = nats_url.to_string();
        TestApp::launch(None, move |_| url.clone(), None, Some(data_path.to_path_buf()), overrides).await
    }

    async fn launch(
        nats: Option<NatsServer>,
        url_of: impl Fn(Option<&NatsServer>) -> String,
        data_dir: Option<TempDir>,
        data_path: Option<std::path::PathBuf>,
        overrides: &[(&str, &str)],
    ) -> TestApp {
        let nats_url = url_of(nats.as_ref());
        let data_path = data_path.or_else(|| data_dir.as_ref().map(|d| d.path().to_path_buf())).expect("a data folder");
        let mut env = test_env(&nats_url, &data_path);
        for (k, v) in overrides {
            env.insert((*k).to_string(), (*v).to_string());
        }
        let config = api::Config::from_lookup(|name| env.get(name).cloned()).expect("a valid test configuration");
        let service = api::Service::start(config).await.expect("the service starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let signal = async move {
                let _ = stopped.await;
            };
            if let Err(e) = service.serve(listener, signal).await {
                panic!("the service failed: {e:#}");
            }
        });
        let log = JetStreamLog::connect(commands::log::LogConfig::new([nats_url.clone()]))
            .await
            .expect("the test's own connection to the log");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build()
            .expect("an HTTP client");
        TestApp {
            base: format!("http://{addr}"),
            addr,
            client,
            log,
            nats,
            nats_url,
            data_path,
            data_dir,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// Graceful shutdown (drain, workers, then the end of `serve`).
    pub async fn stop(mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
        }
    }

    pub async fn last_position(&self) -> u64 {
        self.log.last_position().await.expect("the log's last position")
    }

    /// Any request; `body` as JSON when given.
    pub async fn request(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        self.request_with(method, path, token, body, &[]).await
    }

    pub async fn request_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        into_resp(request.send().await.expect("the request is answered")).await
    }

    /// A request with a raw body and content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Resp {
        let mut request =
            self.client.request(method, format!("{}{path}", self.base)).header("content-type", content_type);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        into_resp(request.body(body).send().await.expect("the request is answered")).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.request(Method::POST, path, token, Some(body)).await
    }

    /// Registers a user (`name` becomes the username and the email's local
    /// part) and returns it with its tokens.
    pub async fn register(&self, name: &str) -> User {
        self.register_email(name, &format!("{name}@test.halobuzz.com")).await
    }

    /// Registers each of `names`, in order.
    pub async fn register_all<const N: usize>(&self, names: [&str; N]) -> [User; N] {
        let mut users = Vec::with_capacity(N);
        for name in names {
            users.push(self.register(name).await);
        }
        users.try_into().unwrap_or_else(|_| unreachable!("one user per name"))
    }

    pub async fn register_email(&self, name: &str, email: &str) -> User {
        let body = json!({"email": email, "username": name, "password": PASSWORD});
        let mut r = self.post("/api/v1/auth/register", None, body.clone()).await;
        // A full password-hashing queue answers 429 with Retry-After (a
        // burst of registrations): retried as a client would, a few times.
        for _ in 0..REGISTER_RETRIES_MAX {
            if r.status != 429 {
                break;
            }
            let retry_after_s = r.headers.get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(retry_after_s)).await;
            r = self.post("/api/v1/auth/register", None, body.clone()).await;
        }
        assert_eq!(r.status, 201, "register {name}: {}", r.text);
        User {
            id: r.body["user"]["id"].as_str().and_then(|s| s.parse().ok()).expect("a user id"),
            email: email.to_string(),
            username: name.to_string(),
            token: r.body["accessToken"].as_str().expect("an access token").to_string(),
            refresh_token: r.body["refreshToken"].as_str().expect("a refresh token").to_string(),
            position: r.position(),
        }
    }

    /// The admin of `ADMIN_EMAILS`.
    pub async fn admin(&self) -> User {
        self.register_email("admin", ADMIN_EMAIL).await
    }

    /// Credits `coins` to `user` by an admin adjustment; returns the position.
    pub async fn fund(&self, admin: &User, user: &User, coins: i64) -> u64 {
        let r = self
            .post(
                "/api/v1/admin/adjustments",
                Some(&admin.token),
                json!({"userId": user.id, "coins": coins, "reason": "test funding"}),
            )
            .await;
        assert_eq!(r.status, 201, "adjustment: {}", r.text);
        r.position()
    }

    /// Starts a stream hosted by `host`; returns its id.
    pub async fn start_stream(&self, host: &User, title: &str) -> Uuid {
        let r = self.post("/api/v1/streams", Some(&host.token), json!({"title": title, "category": "music"})).await;
        assert_eq!(r.status, 201, "start stream: {}", r.text);
        r.body["streamId"].as_str().and_then(|s| s.parse().ok()).expect("a stream id")
    }

    /// `quantity` of `gift_id` sent by the holder of `token` in `stream`.
    pub async fn gift(&self, token: &str, stream: Uuid, gift_id: &str, quantity: impl Into<Value>) -> Resp {
        let body = json!({"giftId": gift_id, "quantity": quantity.into()});
        self.post(&format!("/api/v1/streams/{stream}/gifts"), Some(token), body).await
    }

    /// The admin, a host `<name>_host` live on a stream titled `name`, and
    /// a viewer `<name>_viewer` funded with `viewer_coins`.
    pub async fn stream_scene(&self, name: &str, viewer_coins: i64) -> Scene {
        let admin = self.admin().await;
        let host = self.register(&format!("{name}_host")).await;
        let viewer = self.register(&format!("{name}_viewer")).await;
        self.fund(&admin, &viewer, viewer_coins).await;
        let stream = self.start_stream(&host, name).await;
        Scene { admin, host, viewer, stream }
    }

    /// An admin's `verdict` on a payout (`approve` or `reject`, perhaps with
    /// a query), with its body.
    pub async fn decide_payout(&self, admin: &User, payout_id: &str, verdict: &str, body: Value) -> Resp {
        self.post(&format!("/api/v1/admin/payouts/{payout_id}/{verdict}"), Some(&admin.token), body).await
    }

    /// The caller's wallet once the read models reached `min_position`.
    pub async fn wallet(&self, user: &User, min_position: u64) -> Value {
        let r = self.get(&format!("/api/v1/wallet?minPosition={min_position}"), Some(&user.token)).await;
        assert_eq!(r.status, 200, "wallet: {}", r.text);
        r.body
    }

    /// Polls until `check` holds for the answer of GET `path` (bounded).
    pub async fn eventually(&self, path: &str, token: Option<&str>, check: impl Fn(&Resp) -> bool) -> Resp {
        let deadline = Instant::now() + Duration::from_millis(EVENTUALLY_MS_MAX);
        loop {
            let r = self.get(path, token).await;
            if check(&r) {
                return r;
            }
            assert!(Instant::now() < deadline, "GET {path} never satisfied the check; last: {} {}", r.status, r.text);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the gift reactor has credited every gift in the log so
    /// far, then returns the log's last position: a `minPosition` at which
    /// every host credit is in the read models. The reactor reads only
    /// ledger subjects, so its checkpoint is compared with the log's last
    /// ledger message (its own credits included: it reads those too).
    pub async fn settle_reactor(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_millis(EVENTUALLY_MS_MAX);
        loop {
            let last_ledger = self.last_ledger_position().await;
            let health = self.get("/health", None).await;
            let reactor = health.body["checks"]["reactor"]["position"].as_u64().unwrap_or(0);
            if reactor >= last_ledger {
                return self.last_position().await;
            }
            assert!(
                Instant::now() < deadline,
                "the reactor stays at {reactor}, the last ledger commit is at {last_ledger}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Position of the log's last message on a ledger subject (0 if none),
    /// looked for in the log's tail.
    pub async fn last_ledger_position(&self) -> u64 {
        const TAIL_MESSAGES: u64 = 5_000;
        let last = self.last_position().await;
        let from = last.saturating_sub(TAIL_MESSAGES).max(1);
        let tail =
            self.log.read_from(from, u32::try_from(TAIL_MESSAGES).unwrap_or(u32::MAX)).await.expect("the log's tail");
        tail.iter().rev().find(|m| m.subject.starts_with("hb.ledger.")).map_or(0, |m| m.position)
    }
}

pub(crate) async fn into_resp(response: reqwest::Response) -> Resp {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp { status, headers, body, text }
}

/// A token signed with the test secret, with any claims (expired ones,
/// other algorithms...).
pub fn forge_token(claims: &Value, algorithm: jsonwebtoken::Algorithm, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(algorithm),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("a token")
}

/// An unsigned token (`alg: none`), claiming to be `user_id`.
pub fn alg_none_token(user_id: Uuid) -> String {
    let now = chrono::Utc::now().timestamp();
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = json!({"sub": user_id.to_string(), "typ": "access", "roles": ["admin"], "iat": now, "exp": now + 600, "jti": "forged"});
    let payload = base64url(serde_json::to_string(&claims).unwrap_or_default().as_bytes());
    format!("{header}.{payload}.")
}

/// Unpadded URL-safe base64.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// An account's balance in a trial balance (`GET /api/v1/ledger/trial-balance`),
/// 0 when the account is not listed.
pub fn balance_of(trial: &Value, account: &str) -> i64 {
    trial["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["account"] == account)
        .map_or(0, |i| i["balance"].as_i64().unwrap_or(0))
}
