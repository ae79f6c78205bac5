//! Stripe stand-ins for the end-to-end tests: a `localstripe` server on a
//! free loopback port, and Stripe's own Node library as an independent
//! webhook signer. Both are installed, pinned, by
//! `scripts/ensure-stripe-tools.sh` (which `scripts/test.sh` runs first);
//! the harness runs it too when `LOCALSTRIPE_BIN` / `STRIPE_SIGNER_DIR` are
//! not set, so a lone `cargo test` works as well.
//!
//! Panics when a stand-in cannot be had: those tests fail, never skip.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

/// How long localstripe may take to listen.
const START_MS_MAX: u64 = 30_000;

/// The repository's root (the tests crate is one folder down).
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `(localstripe executable, folder of the stripe npm package)`, installed
/// when needed.
pub fn tools() -> (PathBuf, PathBuf) {
    if let (Ok(bin), Ok(signer)) = (std::env::var("LOCALSTRIPE_BIN"), std::env::var("STRIPE_SIGNER_DIR")) {
        return (PathBuf::from(bin), PathBuf::from(signer));
    }
    let script = repo_root().join("scripts/ensure-stripe-tools.sh");
    let output = std::process::Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(output.status.success(), "{} failed: the Stripe stand-ins are needed", script.display());
    let text = String::from_utf8_lossy(&output.stdout);
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("{} printed no {key}", script.display()))
    };
    (value("LOCALSTRIPE_BIN"), value("STRIPE_SIGNER_DIR"))
}

/// A running localstripe, killed when dropped.
#[derive(Debug)]
pub struct LocalStripe {
    /// `http://127.0.0.1:<port>`: the `STRIPE_API_BASE` of the service.
    pub base: String,
    child: Child,
    _cwd: tempfile::TempDir,
}

impl LocalStripe {
    pub async fn start() -> LocalStripe {
        let (bin, _) = tools();
        let port = free_port();
        let cwd = tempfile::Builder::new().prefix("localstripe-").tempdir().expect("a temporary folder");
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--from-scratch"])
            .current_dir(cwd.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_millis(START_MS_MAX);
        loop {
            // Any HTTP answer means it listens.
            if client.get(format!("{base}/v1/customers")).send().await.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "localstripe did not listen on {base} within {START_MS_MAX} ms");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        LocalStripe { base, child, _cwd: cwd }
    }

    /// Makes localstripe deliver its events to `url`, signed with `secret`.
    pub async fn register_webhook(&self, url: &str, secret: &str) {
        let r = reqwest::Client::new()
            .post(format!("{}/_config/webhooks/halobuzz", self.base))
            .form(&[("url", url), ("secret", secret)])
            .send()
            .await
            .expect("localstripe answers");
        assert!(r.status().is_success(), "webhook registration: {}", r.status());
    }

    /// A call to localstripe's API as a client (the buyer's device would
    /// make these).
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .bearer_auth(TEST_STRIPE_KEY)
            .form(form)
            .send()
            .await
            .expect("localstripe answers");
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// The secret key the tests configure (localstripe takes any `sk_test_`).
pub const TEST_STRIPE_KEY: &str = "sk_test_halobuzz";

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("an address").port()
}

/// One payload to sign with Stripe's Node library.
#[derive(Debug, Clone)]
pub struct ToSign {
    pub payload: String,
    pub secret: String,
    pub timestamp: i64,
}

/// `Stripe-Signature` headers from Stripe's own library
/// (`stripe.webhooks.generateTestHeaderString`), one per payload, in order.
pub async fn sign_with_stripe_node(batch: &[ToSign]) -> Vec<String> {
    let (_, signer_dir) = tools();
    let script = repo_root().join("tests/support/sign-stripe-events.js");
    let input: Vec<Value> =
        batch.iter().map(|s| json!({"payload": s.payload, "secret": s.secret, "timestamp": s.timestamp})).collect();
    let mut child = Command::new("node")
        .arg(&script)
        .arg(&signer_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node: {e}"));
    let mut stdin = child.stdin.take().expect("a stdin");
    stdin.write_all(Value::Array(input).to_string().as_bytes()).await.expect("the payloads are written");
    drop(stdin);
    let output = child.wait_with_output().await.expect("the signer ends");
    assert!(output.status.success(), "the Node signer failed");
    serde_json::from_slice(&output.stdout).expect("a JSON array of headers")
}
