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

/// A balance transaction of a dispute: `amount_cents` (negative: funds
/// withdrawn; positive: reinstated) and Stripe's `fee_cents` for it.
#[derive(Debug, Clone, Copy)]
pub struct DisputeMovement {
    pub amount_cents: i64,
    pub fee_cents: i64,
}

/// A dispute (chargeback) as Stripe describes it at one moment.
#[derive(Debug, Clone, Copy)]
pub struct DisputeFixture<'a> {
    pub dispute_id: &'a str,
    /// The disputed PaymentIntent (its charge is `ch_<intent>`).
    pub payment_intent: &'a str,
    pub amount_cents: i64,
    /// `warning_needs_response`, `needs_response`, `under_review`, `won`,
    /// `lost`, ...
    pub status: &'a str,
    /// Its `balance_transactions` so far, as Stripe lists them.
    pub movements: &'a [DisputeMovement],
}

/// A `charge.dispute.<kind>` event (`created`, `funds_withdrawn`,
/// `funds_reinstated`, `closed`) whose object is shaped like Stripe's
/// documented dispute object (API reference, "The Dispute object", API
/// version 2025-06-30.basil): localstripe has no disputes.
pub fn dispute_event(event_id: &str, kind: &str, dispute: &DisputeFixture<'_>, created_s: i64) -> String {
    let DisputeFixture { dispute_id, payment_intent, amount_cents, status, movements } = *dispute;
    let balance_transactions: Vec<Value> = movements
        .iter()
        .enumerate()
        .map(|(n, m)| {
            json!({
                "id": format!("txn_{dispute_id}_{n}"), "object": "balance_transaction",
                "amount": m.amount_cents, "currency": "usd",
                "description": if m.amount_cents < 0 { format!("Chargeback withdrawal for ch_{payment_intent}") }
                    else { format!("Chargeback reversal for ch_{payment_intent}") },
                "fee": m.fee_cents,
                "fee_details": if m.fee_cents == 0 { json!([]) } else {
                    json!([{"amount": m.fee_cents, "currency": "usd", "description": "Dispute fee",
                        "type": "stripe_fee"}])
                },
                "net": m.amount_cents - m.fee_cents, "reporting_category": "dispute",
                "status": "available", "type": "adjustment", "created": created_s,
            })
        })
        .collect();
    json!({
        "id": event_id, "object": "event", "api_version": "2025-06-30.basil", "created": created_s,
        "livemode": false, "pending_webhooks": 1, "type": format!("charge.dispute.{kind}"),
        "request": {"id": null, "idempotency_key": null},
        "data": {"object": {
            "id": dispute_id, "object": "dispute", "amount": amount_cents,
            "balance_transactions": balance_transactions,
            "charge": format!("ch_{payment_intent}"), "created": created_s, "currency": "usd",
            "enhanced_eligibility_types": [],
            "evidence": {"customer_name": null, "product_description": null, "uncategorized_text": null},
            "evidence_details": {"due_by": created_s + 7 * 86_400, "enhanced_eligibility": {},
                "has_evidence": false, "past_due": false, "submission_count": 0},
            "is_charge_refundable": false, "livemode": false, "metadata": {},
            "payment_intent": payment_intent,
            "payment_method_details": {"card": {"brand": "visa", "case_type": "chargeback",
                "network_reason_code": "10.4"}, "type": "card"},
            "reason": "fraudulent", "status": status,
        }},
    })
    .to_string()
}
