//! Verified Stripe webhooks per second, and their latency, through the real
//! route (`POST /api/v1/webhooks/stripe` of the service the binary serves,
//! started in this process by the test harness against a real nats-server
//! with `NATS_SYNC=interval` and the SQLite read store, projectors and
//! reactor running):
//!
//! - purchases: `payment_intent.succeeded` for distinct PaymentIntents of
//!   `BENCH_USERS` buyers, each verified (HMAC-SHA256), read, and credited
//!   in four single appends (event record, payment decision, buyer's
//!   ledger commit, payment's mark);
//! - records: events of a type the ledger does not use (`customer.updated`),
//!   verified and recorded (one append);
//! - repeats: the purchases delivered again (verified, found recorded,
//!   answered `200` with nothing appended);
//! - disputes: a `charge.dispute.funds_withdrawn` (a dispute object shaped
//!   like Stripe's, its funds withdrawn) for each purchase, each reversing
//!   the purchase's coins in the same four single appends (record, the
//!   payment's dispute decision, the buyer's ledger commit, the mark).
//!
//! Closed loop: `BENCH_CONCURRENCY` (default 64) connections send the
//! pre-signed events as fast as answers come; latency is per request.
//! Sizes: `BENCH_EVENTS` per phase (default 20000), `BENCH_USERS` (200).
//!
//! Run: `cargo bench -p halobuzz-tests --bench webhooks`.

// Rates and latencies are measurements, not money.
#![allow(clippy::float_arithmetic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use halobuzz_tests::http::TestApp;
use halobuzz_tests::latency::{ms, percentile};
use halobuzz_tests::stripe::{DisputeFixture, DisputeMovement, dispute_event};
use serde_json::json;

const SECRET: &str = "whsec_bench_0123456789";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.trim().replace('_', "").parse().ok()).unwrap_or(default)
}

fn now_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(0)).unwrap_or(0)
}

/// `(body, Stripe-Signature)` pairs.
type Signed = Vec<(String, String)>;

fn purchases(users: &[String], count: usize, run: &str) -> Signed {
    (0..count)
        .map(|i| {
            let user = &users[i % users.len()];
            let body = json!({
                "id": format!("evt_{run}_p{i}"), "object": "event", "type": "payment_intent.succeeded",
                "created": now_s(), "api_version": "2025-06-30.basil",
                "data": {"object": {"id": format!("pi_{run}_{i}"), "object": "payment_intent", "amount": 99,
                    "amount_received": 99, "currency": "usd", "status": "succeeded",
                    "metadata": {"userId": user, "packageId": "coins_100"}}},
            })
            .to_string();
            let header = api::stripe::sign(body.as_bytes(), SECRET, now_s());
            (body, header)
        })
        .collect()
}

/// A lost dispute of each purchase of `purchases` (same `count` and `run`):
/// the whole 0.99 usd withdrawn, with Stripe's fee.
fn disputes(count: usize, run: &str) -> Signed {
    let withdrawal = [DisputeMovement { amount_cents: -99, fee_cents: 1500 }];
    (0..count)
        .map(|i| {
            let (dispute_id, payment_intent) = (format!("dp_{run}_{i}"), format!("pi_{run}_{i}"));
            let dispute = DisputeFixture {
                dispute_id: &dispute_id,
                payment_intent: &payment_intent,
                amount_cents: 99,
                status: "needs_response",
                movements: &withdrawal,
            };
            let body = dispute_event(&format!("evt_{run}_d{i}"), "funds_withdrawn", &dispute, now_s());
            let header = api::stripe::sign(body.as_bytes(), SECRET, now_s());
            (body, header)
        })
        .collect()
}

fn records(count: usize, run: &str) -> Signed {
    (0..count)
        .map(|i| {
            let body = json!({
                "id": format!("evt_{run}_c{i}"), "object": "event", "type": "customer.updated", "created": now_s(),
                "data": {"object": {"id": format!("cus_{i}"), "object": "customer", "email": "a@example.com"}},
            })
            .to_string();
            let header = api::stripe::sign(body.as_bytes(), SECRET, now_s());
            (body, header)
        })
        .collect()
}

/// Sends every event, `concurrency` at a time; prints the rate and latency.
async fn phase(app: &TestApp, name: &'static str, events: Arc<Signed>, concurrency: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (client, url, events, next) =
            (app.client.clone(), format!("{}/api/v1/webhooks/stripe", app.base), events.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((body, header)) = events.get(i) else { break };
                let sent = Instant::now();
                let answer = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("stripe-signature", header)
                    .body(body.clone())
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        latencies.push(sent.elapsed());
                    }
                    Ok(r) => {
                        failures += 1;
                        if failures <= 3 {
                            eprintln!("{name}: {} {}", r.status(), r.text().await.unwrap_or_default());
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        eprintln!("{name}: {e}");
                    }
                }
            }
            (latencies, failures)
        }));
    }
    let mut latencies = Vec::with_capacity(events.len());
    let mut failures = 0;
    for task in tasks {
        let (l, f) = task.await.expect("a sender task");
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    println!(
        "{name:<10} {:>6} verified webhooks in {:.2} s: {rate:>7.0}/s   p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms   (failures {failures})",
        latencies.len(),
        elapsed.as_secs_f64(),
        ms(percentile(&latencies, 500)),
        ms(percentile(&latencies, 990)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let events = usize::try_from(env_number("BENCH_EVENTS", 20_000)).unwrap_or(20_000);
        let users = usize::try_from(env_number("BENCH_USERS", 200)).unwrap_or(200).max(1);
        let concurrency = usize::try_from(env_number("BENCH_CONCURRENCY", 64)).unwrap_or(64).max(1);
        let app = TestApp::start_with(&[("STRIPE_WEBHOOK_SECRET", SECRET)]).await;
        let mut buyers = Vec::with_capacity(users);
        for i in 0..users {
            buyers.push(app.register(&format!("buyer{i}")).await.id.to_string());
        }
        println!("webhooks: {events} per phase, {users} buyers, {concurrency} connections, NATS_SYNC=interval");
        let run = format!("{:x}", now_s());
        // Signed just before each phase: a phase must end within the 300 s
        // tolerance of its signatures.
        let signed = Arc::new(purchases(&buyers, events, &run));
        phase(&app, "purchases", signed.clone(), concurrency).await;
        phase(&app, "repeats", signed, concurrency).await;
        phase(&app, "records", Arc::new(records(events, &run)), concurrency).await;
        phase(&app, "disputes", Arc::new(disputes(events, &run)), concurrency).await;
        app.stop().await;
    });
}
